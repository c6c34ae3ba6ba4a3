"""Through the gateway: the auth service on a loopback port, the gateway in-process with its
verifier. Sign-in -> JWT -> GET /api/v1/me; forged, expired, wrong-algorithm and `alg: none`
tokens; API keys (header, X-API-Key, ?key=) and their revocation reaching the gateway by NATS."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import jwt
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wemcp.common.service import running
from wemcp.devstack.infra import free_port
from wemcp.devstack.testing import serve_app
from wemcp.gateway.config import Settings as GatewaySettings
from wemcp.gateway.main import SPEC as GATEWAY
from wemcp.testkit.auth import as_user, browser_login


@pytest_asyncio.fixture
async def stack(auth_app, settings_for) -> AsyncIterator[dict[str, Any]]:
    port = free_port()
    async with serve_app(auth_app, port) as auth_url:
        gw_settings = settings_for(GatewaySettings, auth_url=auth_url, jwks_min_refetch_seconds=0.2)
        async with running(GATEWAY, gw_settings) as gw:
            async with (
                httpx.AsyncClient(transport=httpx.ASGITransport(app=gw), base_url="http://wemcp.test") as c,
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=auth_app), base_url="http://wemcp.test"
                ) as a,
            ):
                yield {"gw": c, "auth": a, "verifier": gw.state.runtime.extras["gateway"].verifier}


async def _signed_in(stack) -> dict[str, Any]:
    r = await browser_login(stack["auth"], "github")
    assert r.status_code == 200, r.text
    return r.json()


def _b64(d: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")


async def test_login_to_me_through_the_gateway(stack):
    body = await _signed_in(stack)
    me = await stack["gw"].get("/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["login"] == "octocat" and me.json()["id"] == body["user"]["id"]
    # no credentials: anonymous, so /me says sign in
    anon = await stack["gw"].get("/api/v1/me")
    assert anon.status_code == 401
    # a client cannot speak for itself with identity headers
    spoof = await stack["gw"].get("/api/v1/me", headers=as_user(body["user"]))
    assert spoof.status_code == 401


async def test_bad_tokens_are_refused_with_401_problem(stack):
    body = await _signed_in(stack)
    good = body["access_token"]
    claims = jwt.decode(good, options={"verify_signature": False})
    kid = jwt.get_unverified_header(good)["kid"]
    now = int(time.time())
    forged = jwt.encode(
        claims | {"role": "superadmin"}, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
    )
    expired_claims = claims | {"iat": now - 4000, "nbf": now - 4000, "exp": now - 3000}
    h, _, s = good.split(".")
    tampered = f"{h}.{_b64(claims | {'role': 'superadmin'})}.{s}"
    alg_none = f"{_b64({'alg': 'none', 'kid': kid, 'typ': 'JWT'})}.{_b64(claims)}."
    # HS256 "signed" with the public key (the classic algorithm confusion)
    jwks = (await stack["auth"].get("/api/v1/auth/jwks")).json()
    hs256 = jwt.encode(
        claims, json.dumps(jwks["keys"][0]).encode() + b"-" * 32, algorithm="HS256", headers={"kid": kid}
    )
    es256 = jwt.encode(claims, generate_private_key(SECP256R1()), algorithm="ES256", headers={"kid": kid})
    unknown_kid = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "nope"})
    wrong_aud = jwt.encode(
        claims | {"aud": "other"}, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
    )
    cases = {
        "forged": forged,
        "tampered": tampered,
        "alg_none": alg_none,
        "hs256": hs256,
        "es256": es256,
        "unknown_kid": unknown_kid,
        "wrong_aud": wrong_aud,
        "garbage": "not.a.jwt",
        "expired_unsigned": jwt.encode(
            expired_claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
        ),
    }
    for name, token in cases.items():
        r = await stack["gw"].get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, (name, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json", name
    basic = await stack["gw"].get("/api/v1/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401
    # and the genuine token still works
    ok = await stack["gw"].get("/api/v1/me", headers={"Authorization": f"Bearer {good}"})
    assert ok.status_code == 200


async def test_expired_genuine_token_is_refused(stack, auth_app):
    body = await _signed_in(stack)
    keys = auth_app.state.runtime.extras["auth"].keys
    active = await keys.current()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    now = int(time.time())
    expired = jwt.encode(
        claims | {"iat": now - 4000, "nbf": now - 4000, "exp": now - 3000},
        active.key,
        algorithm="EdDSA",
        headers={"kid": active.kid},
    )
    r = await stack["gw"].get("/api/v1/me", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and "expired" in r.json()["detail"]


async def test_signing_key_rotation_is_picked_up_on_unknown_kid(stack, auth_app):
    from wemcp.auth.tokens import create_signing_key

    st = auth_app.state.runtime.extras["auth"]
    old = await _signed_in(stack)
    assert (
        await stack["gw"].get("/api/v1/me", headers={"Authorization": f"Bearer {old['access_token']}"})
    ).status_code == 200
    async with st.sessions() as s, s.begin():
        new_kid = await create_signing_key(s, st.keyring)
    await st.keys.load()
    new = await _signed_in(stack)
    assert jwt.get_unverified_header(new["access_token"])["kid"] == new_kid
    await asyncio.sleep(0.25)  # past the verifier's minimum refetch interval
    for token in (new["access_token"], old["access_token"]):  # the old key stays published for a grace period
        r = await stack["gw"].get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
    published = {k["kid"] for k in (await stack["auth"].get("/api/v1/auth/jwks")).json()["keys"]}
    assert new_kid in published and len(published) == 2


async def test_api_key_revocation_reaches_the_gateway_within_a_second(stack):
    body = await _signed_in(stack)
    user = body["user"]
    created = await stack["auth"].post(
        "/api/v1/api-keys", headers=as_user(user), json={"name": "laptop", "servers": ["weather", "maps"]}
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith("wmk_") and created.json()["prefix"] == key[:12]
    listed = (await stack["auth"].get("/api/v1/api-keys", headers=as_user(user))).json()["items"]
    assert listed[0]["prefix"] == key[:12] and "key" not in listed[0] and key not in json.dumps(listed)

    for how in (
        {"headers": {"Authorization": f"Bearer {key}"}},
        {"headers": {"X-API-Key": key}},
    ):
        r = await stack["gw"].get("/api/v1/me", **how)
        # verified, and limited: a server-scoped key calls its servers (/mcp/...), nothing else
        assert r.status_code == 403 and "'maps', 'weather'" in r.text, (how, r.text)
    # ?key= is a credential on /mcp/... only (MCP clients that cannot set headers); here: anonymous
    assert (await stack["gw"].get("/api/v1/me", params={"key": key})).status_code == 401

    # the verifier exposes the scope for the MCP router
    from starlette.requests import Request

    req = Request(
        {"type": "http", "headers": [(b"x-api-key", key.encode())], "query_string": b"", "state": {}}
    )
    ident = await stack["verifier"](req)
    assert str(ident.user_id) == user["id"] and req.state.api_key.allows("maps")
    assert not req.state.api_key.allows("other")

    revoked = await stack["auth"].delete(f"/api/v1/api-keys/{created.json()['id']}", headers=as_user(user))
    assert revoked.status_code == 204
    t0 = time.monotonic()
    while True:
        r = await stack["gw"].get("/api/v1/me", headers={"X-API-Key": key})
        if r.status_code == 401:
            break
        assert time.monotonic() - t0 < 1.0, "the revoked key still worked after 1 s"
        await asyncio.sleep(0.02)
    assert r.headers["content-type"] == "application/problem+json"
    unknown = await stack["gw"].get("/api/v1/me", params={"key": "wmk_" + "x" * 43})
    assert unknown.status_code == 401
    not_a_key = await stack["gw"].get("/api/v1/me", headers={"X-API-Key": "sk-something"})
    assert not_a_key.status_code == 401


async def test_logout_revokes_the_session_at_the_gateway(stack):
    body = await _signed_in(stack)
    auth_h = {"Authorization": f"Bearer {body['access_token']}"}
    assert (await stack["gw"].get("/api/v1/me", headers=auth_h)).status_code == 200
    out = await stack["gw"].post("/api/v1/auth/logout", json={"refresh_token": body["refresh_token"]})
    assert out.status_code == 204
    t0 = time.monotonic()
    while (await stack["gw"].get("/api/v1/me", headers=auth_h)).status_code != 401:
        assert time.monotonic() - t0 < 1.0, "the signed-out access token still worked after 1 s"
        await asyncio.sleep(0.02)
    again = await stack["gw"].post("/api/v1/auth/refresh", json={"refresh_token": body["refresh_token"]})
    assert again.status_code == 401


async def test_role_change_evicts_cached_api_key_identity(stack, auth_app):
    from wemcp.auth import service

    admin_body = await _signed_in(stack)
    st = auth_app.state.runtime.extras["auth"]
    async with st.sessions() as s, s.begin():
        admin = await service.create_user(s, login="root", role="superadmin")
        admin_id = admin.id
    user = admin_body["user"]
    key = (await stack["auth"].post("/api/v1/api-keys", headers=as_user(user), json={"name": "k"})).json()[
        "key"
    ]
    r = await stack["gw"].get("/api/v1/me", headers={"X-API-Key": key})
    assert r.status_code == 200
    ident = await stack["verifier"].verify_api_key(key)
    assert ident[0].role == "user"
    put = await stack["auth"].put(
        f"/api/v1/users/{user['id']}/role",
        json={"role": "merchant"},
        headers=as_user({"id": str(admin_id), "role": "superadmin", "login": ""}),
    )
    assert put.status_code == 200, put.text
    t0 = time.monotonic()
    while (await stack["verifier"].verify_api_key(key))[0].role != "merchant":
        assert time.monotonic() - t0 < 1.0
        await asyncio.sleep(0.02)
    assert uuid.UUID(user["id"]) == (await stack["verifier"].verify_api_key(key))[0].user_id
    # the access token minted before the change names the old role: refused within 1 s, and the
    # refreshed one carries the new role
    old_h = {"Authorization": f"Bearer {admin_body['access_token']}"}
    t0 = time.monotonic()
    while (r := await stack["gw"].get("/api/v1/me", headers=old_h)).status_code != 401:
        assert time.monotonic() - t0 < 1.0, "an access token with the old role still worked after 1 s"
        await asyncio.sleep(0.02)
    assert "role changed" in r.json()["detail"]
    fresh = await stack["gw"].post("/api/v1/auth/refresh", json={"refresh_token": admin_body["refresh_token"]})
    assert fresh.status_code == 200, fresh.text
    me = await stack["gw"].get("/api/v1/me", headers={"Authorization": f"Bearer {fresh.json()['access_token']}"})
    assert me.status_code == 200 and me.json()["role"] == "merchant"


async def test_a_banned_users_next_call_is_refused_within_a_second(stack, auth_app):
    """Ban through the gateway (``/api/v1/admin/users/...`` routes to auth): the user's API key and
    access token, both warm in the gateway's caches, are refused within 1 s; unbanning brings the key
    back (the signed-out session stays out)."""
    from wemcp.auth import service

    body = await _signed_in(stack)
    user = body["user"]
    st = auth_app.state.runtime.extras["auth"]
    async with st.sessions() as s, s.begin():
        admin = await service.create_user(s, login="ops", role="admin")
        _, admin_key = await service.create_api_key(s, admin.id, "ops", None, None)
    key = (await stack["auth"].post("/api/v1/api-keys", headers=as_user(user), json={"name": "k"})).json()["key"]
    as_key, as_jwt = {"X-API-Key": key}, {"Authorization": f"Bearer {body['access_token']}"}
    assert (await stack["gw"].get("/api/v1/me", headers=as_key)).status_code == 200  # both warm now
    assert (await stack["gw"].get("/api/v1/me", headers=as_jwt)).status_code == 200
    admin_h = {"X-API-Key": admin_key}
    assert (await stack["gw"].post(f"/api/v1/admin/users/{user['id']}/ban", json={"reason": "abuse"},
                                   headers=as_key)).status_code == 403  # not by a plain user
    r = await stack["gw"].post(f"/api/v1/admin/users/{user['id']}/ban", json={"reason": "abuse"}, headers=admin_h)
    assert r.status_code == 200, r.text
    t0 = time.monotonic()
    while True:
        k = (await stack["gw"].get("/api/v1/me", headers=as_key)).status_code
        j = (await stack["gw"].get("/api/v1/me", headers=as_jwt)).status_code
        if k == j == 401:
            break
        assert time.monotonic() - t0 < 1.0, f"a banned user's credentials still worked after 1 s ({k}, {j})"
        await asyncio.sleep(0.02)
    # the admin area is routed through the gateway: the list shows the ban
    listed = await stack["gw"].get("/api/v1/admin/users", headers=admin_h, params={"banned": "true"})
    assert listed.status_code == 200 and [u["id"] for u in listed.json()["items"]] == [user["id"]]
    assert (await stack["gw"].post("/api/v1/auth/refresh", json={"refresh_token": body["refresh_token"]})
            ).status_code == 401
    un = await stack["gw"].post(f"/api/v1/admin/users/{user['id']}/unban", headers=admin_h)
    assert un.status_code == 200, un.text
    t0 = time.monotonic()
    while (await stack["gw"].get("/api/v1/me", headers=as_key)).status_code != 200:
        assert time.monotonic() - t0 < 1.0, "an unbanned user's key still failed after 1 s"
        await asyncio.sleep(0.02)
    assert (await stack["gw"].get("/api/v1/me", headers=as_jwt)).status_code == 401  # that session is over
