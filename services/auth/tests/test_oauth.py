"""Sign-in through a real OAuth 2.0 server on loopback, with authlib's client: the same code
path for GitHub, Gitee and Google; only the URLs differ."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx2 as httpx
import jwt
import pytest

from wemcp.testkit.auth import as_user, browser_login, new_id


async def test_first_github_login_creates_user_from_profile_and_issues_tokens(client, provider):
    r = await browser_login(client, "github")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["created"] is True
    user = body["user"]
    assert (user["login"], user["name"], user["email"]) == ("octocat", "The Octocat", "octocat@example.com")
    assert user["avatar_url"] == "https://avatars.example/u/583231"
    assert user["role"] == "user"
    # PKCE was used for GitHub: S256 challenge sent, verifier checked by the provider
    assert provider.authorize_requests[-1]["code_challenge_method"] == "S256"
    assert provider.token_requests[-1]["code_verifier"]
    # the access token is an EdDSA JWT naming the user, verifiable with the published JWKS
    jwks = (await client.get("/api/v1/auth/jwks")).json()
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "EdDSA" and header["kid"] in {k["kid"] for k in jwks["keys"]}
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    claims = jwt.decode(body["access_token"], key.key, algorithms=["EdDSA"], audience="wemcp", issuer="wemcp")
    assert claims["sub"] == user["id"] and claims["role"] == "user" and claims["exp"] - claims["iat"] == 600
    assert body["refresh_token"].startswith("wmr_")
    assert "wemcp_refresh" in r.headers.get("set-cookie", "")

    # the second login finds the same account
    again = await browser_login(client, "github")
    assert again.json()["created"] is False and again.json()["user"]["id"] == user["id"]

    me = await client.get("/api/v1/me", headers=as_user(user))
    assert me.status_code == 200
    assert me.json()["identities"][0]["provider"] == "github"


async def test_gitee_without_pkce_and_google_profile_mapping(client, provider):
    provider.profile = {
        "login": "gitee-user",
        "id": new_id(),
        "avatar_url": None,
        "name": "码云用户",
        "email": None,
    }
    r = await browser_login(client, "gitee")
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    assert "code_challenge" not in provider.authorize_requests[-1]
    assert "code_verifier" not in provider.token_requests[-1]
    # no avatar from the provider: the pixel avatar seeded with the user id
    assert user["avatar_url"] == f"https://api.dicebear.com/7.x/bottts/svg?seed={user['id']}"
    assert user["name"] == "码云用户"

    provider.profile = {
        "id": new_id(),
        "email": "someone@gmail.example",
        "name": "Some One",
        "avatar_url": "https://lh3.example/p.png",
    }
    g = await browser_login(client, "google")
    assert g.status_code == 200, g.text
    gu = g.json()["user"]
    assert (gu["login"], gu["email"], gu["avatar_url"]) == (
        "someone",
        "someone@gmail.example",
        "https://lh3.example/p.png",
    )


async def test_github_hidden_email_is_read_from_the_emails_endpoint(client, provider):
    provider.profile = {
        "login": "private",
        "id": new_id(),
        "avatar_url": None,
        "name": None,
        "email": None,
        "private_email": "hidden@example.com",
    }
    r = await browser_login(client, "github")
    assert r.json()["user"]["email"] == "hidden@example.com"


async def test_one_account_links_several_providers(client, provider):
    first = (await browser_login(client, "github")).json()["user"]
    provider.profile = {"id": new_id(), "email": "octo@gmail.example", "name": "Octo G", "avatar_url": None}
    linked = await browser_login(client, "google", link_as=first)
    assert linked.status_code == 200, linked.text
    assert linked.json()["user"]["id"] == first["id"] and linked.json()["created"] is False
    # signing in with Google alone now lands on the same account
    again = await browser_login(client, "google")
    assert again.json()["user"]["id"] == first["id"]
    me = (await client.get("/api/v1/me", headers=as_user(first))).json()
    assert sorted(i["provider"] for i in me["identities"]) == ["github", "google"]

    # a provider account already linked elsewhere cannot be stolen by linking
    provider.profile = {"login": "other", "id": new_id(), "avatar_url": None, "name": None, "email": None}
    other = (await browser_login(client, "github")).json()["user"]
    provider.profile = {"login": "octocat", "id": 583231, "avatar_url": None, "name": None, "email": None}
    steal = await browser_login(client, "github", link_as=other)
    assert steal.status_code == 409


async def test_link_endpoint_returns_authorization_url(client, provider):
    user = (await browser_login(client, "github")).json()["user"]
    r = await client.post("/api/v1/auth/google/link", headers=as_user(user))
    assert r.status_code == 200
    assert urlsplit(r.json()["authorization_url"]).path == "/authorize"
    anon = await client.post("/api/v1/auth/google/link")
    assert anon.status_code == 401 and anon.headers["content-type"] == "application/problem+json"


async def test_providers_lists_the_configured_ones(client):
    r = await client.get("/api/v1/auth/providers")
    assert r.status_code == 200
    assert r.json() == {"providers": ["github", "gitee", "google"]}


async def test_unknown_or_unconfigured_provider_is_404(client):
    r = await client.get("/api/v1/auth/facebook/login")
    assert r.status_code == 404 and r.json()["status"] == 404


async def test_mismatched_state_is_refused(client, provider):
    start = await client.get("/api/v1/auth/github/login")
    async with httpx.AsyncClient() as browser:
        back = urlsplit((await browser.get(start.headers["location"])).headers["location"])
    q = {k: v[0] for k, v in parse_qs(back.query).items()}
    bad = await client.get(f"{back.path}", params={"code": q["code"], "state": "forged-state"})
    assert bad.status_code == 400 and "state" in bad.json()["detail"]
    missing = await client.get(f"{back.path}", params={"code": q["code"]})
    assert missing.status_code == 400
    # the state of a github flow does not finish a gitee flow
    cross = await client.get("/api/v1/auth/gitee/callback", params=q)
    assert cross.status_code == 400


async def test_replayed_code_and_replayed_callback_are_refused(client, provider):
    start = await client.get("/api/v1/auth/github/login")
    async with httpx.AsyncClient() as browser:
        back = urlsplit((await browser.get(start.headers["location"])).headers["location"])
    first = await client.get(f"{back.path}?{back.query}")
    assert first.status_code == 200
    # the same callback URL again: the state was consumed
    replay = await client.get(f"{back.path}?{back.query}")
    assert replay.status_code == 400
    # the same code with a fresh state: the provider refuses the used code
    start2 = await client.get("/api/v1/auth/github/login")
    state2 = parse_qs(urlsplit(start2.headers["location"]).query)["state"][0]
    code = parse_qs(back.query)["code"][0]
    again = await client.get(back.path, params={"code": code, "state": state2})
    assert again.status_code == 400 and "refused the code" in again.json()["detail"]


async def test_repeated_failed_logins_are_throttled(client, provider):
    for _ in range(5):
        r = await client.get("/api/v1/auth/github/callback", params={"code": "x", "state": "nope"})
        assert r.status_code == 400
    blocked = await client.get("/api/v1/auth/github/callback", params={"code": "x", "state": "nope"})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    # even a valid sign-in from the same address waits
    ok_elsewhere = await browser_login(client, "github", headers={"x-forwarded-for": "203.0.113.9"})
    assert ok_elsewhere.status_code == 200
    start = await client.get("/api/v1/auth/github/login")
    async with httpx.AsyncClient() as browser:
        back = urlsplit((await browser.get(start.headers["location"])).headers["location"])
    assert (await client.get(f"{back.path}?{back.query}")).status_code == 429


@pytest.mark.parametrize("query", ["?code=" + "x" * 3000 + "&state=s", "?state=" + "s" * 500])
async def test_oversized_callback_parameters_are_a_clean_400(client, query):
    r = await client.get(f"/api/v1/auth/github/callback{query}")
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
