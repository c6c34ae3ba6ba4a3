"""Names people can trust (names.py): ``io.github.<login>/`` only for that GitHub account or a member
of that organisation (auth's linked identities, GitHub's API on a loopback stand-in), reverse-DNS
names only after a DNS TXT or HTTP well-known proof (a DNS server and a web server on loopback), the
platform's own namespace per user otherwise; the badge in the detail; claiming a name whose holder
proved nothing; an admin's transfer. The auth service runs in-process on a loopback port."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from wemcp.auth.config import Settings as AuthSettings
from wemcp.auth.main import SPEC as AUTH_SPEC
from wemcp.auth.models import User, UserIdentity
from wemcp.catalog import names, service
from wemcp.catalog.config import Settings
from wemcp.catalog.main import SPEC
from wemcp.catalog.models import Server, bus_tables
from wemcp.common import netpolicy
from wemcp.common.identity import Identity
from wemcp.common.sealing import Keyring
from wemcp.common.service import running
from wemcp.common.trust import platform_headers
from wemcp.devstack.infra import free_port
from wemcp.devstack.testing import serve_app
from wemcp.testkit.names import GitHubStandIn, dns_stand_in, github_stand_in, well_known_stand_in

ALICE, BOB, CAROL, DAVE, MALLORY, ADMIN = (uuid.UUID(int=i) for i in (11, 12, 13, 14, 15, 99))
LOGINS = {ALICE: "alice", BOB: "bob", CAROL: "carol", DAVE: "dave", MALLORY: "mallory", ADMIN: "root"}
# linked GitHub accounts (auth): login and GitHub account id as of the last sign-in
GITHUB_IDENTITIES = {ALICE: ("Alice", 1001), CAROL: ("carol", 1003), DAVE: ("dave", 1004)}


def who(uid: uuid.UUID, role: str = "user") -> dict[str, str]:
    return platform_headers("catalog", Identity(uid, role, LOGINS[uid]), issuer="gateway")  # type: ignore[arg-type]


def server_json(name: str, ident: str, version: str = "1.0.0") -> dict[str, Any]:
    return {"server_json": {"name": name, "version": version, "description": "d",
                            "packages": [{"registryType": "npm", "identifier": ident, "version": version}]}}


@dataclass
class Env:
    app: Any
    c: httpx.AsyncClient
    github: GitHubStandIn
    dns: Any
    web: Any


@pytest_asyncio.fixture
async def env(settings_for: Any, clean_db: None, clean_bus: None, clean_redis: None, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    # GitHub today: alice is 1001, carol's login now belongs to another account (she renamed),
    # dave is a public member of pubco, alice a private member of acme
    gh = GitHubStandIn(users={"alice": 1001, "carol": 9999, "dave": 1004},
                       orgs={"pubco": {"dave": True}, "acme": {"alice": False}})
    real_resolve = netpolicy.resolve

    async def resolve(host: str, port: int) -> list[tuple[int, str]]:  # *.test names are this machine
        return [(2, "127.0.0.1")] if host.endswith(".test") else await real_resolve(host, port)

    monkeypatch.setattr(netpolicy, "resolve", resolve)
    auth_settings = settings_for(AuthSettings, keks=Keyring.generate_spec("k1"), active_kek="k1",
                                 dev_kek_file=str(tmp_path / "kek"), public_url="http://wemcp.test")
    async with github_stand_in(gh), dns_stand_in() as dns, well_known_stand_in() as web, \
            running(AUTH_SPEC, auth_settings) as auth_app:
        async with auth_app.state.runtime.sessions() as s, s.begin():
            for uid, login in LOGINS.items():
                s.add(User(id=uid, login=login, avatar_url="", role="admin" if uid == ADMIN else "user"))
            await s.flush()
            for uid, (login, sub) in GITHUB_IDENTITIES.items():
                s.add(UserIdentity(user_id=uid, provider="github", subject=str(sub), login=login, profile={}))
        auth_port = free_port()
        async with serve_app(auth_app, auth_port):
            settings = settings_for(
                Settings, egress_allow="127.0.0.1", embedder="hash", max_submissions_per_hour=10_000,
                max_deployments_in_flight=10_000, auth_url=f"http://127.0.0.1:{auth_port}", github_api_url=gh.url,
                dns_nameservers=f"127.0.0.1:{dns.port}",
                domain_proof_url=f"http://{{domain}}:{web.port}/.well-known/mcp-registry-auth")
            async with running(SPEC, settings) as app:
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://catalog") as c:
                    yield Env(app, c, gh, dns, web)


def problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    return body


async def badge(c: httpx.AsyncClient, slug: str, uid: uuid.UUID) -> dict[str, Any]:
    r = await c.get(f"/api/v1/servers/{slug}", headers=who(uid))
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()["name_verification"]
    return out


async def test_github_namespaces(env: Env) -> None:
    c = env.c
    # the squatter: nobody may publish under another's GitHub login
    body = problem(await c.post("/api/v1/servers", json=server_json("io.github.modelcontextprotocol/time",
                                                                   "@squat/time"), headers=who(MALLORY)), 403)
    assert body["namespace"] == "io.github.modelcontextprotocol" and body["reason"] == "name_not_yours"
    assert "link the GitHub account" in body["detail"]
    # the linked login itself (GitHub logins are case-insensitive), confirmed live with GitHub
    r = await c.post("/api/v1/servers", json=server_json("io.github.alice/weather", "@alice/weather"),
                     headers=who(ALICE))
    assert r.status_code == 202, r.text
    b = await badge(c, r.json()["slug"], ALICE)
    assert b["verified"] is True and b["method"] == "github" and b["namespace"] == "io.github.alice"
    assert "users/alice" in env.github.hits
    async with env.app.state.runtime.sessions() as s, s.begin():  # the registry feed shows it too
        row = (await s.execute(select(Server).where(Server.slug == r.json()["slug"]))).scalar_one()
        assert service.as_server_json(row)["_meta"]["com.wemcp/catalog"]["nameVerified"] is True
    # a renamed login now held by another GitHub account grants nothing
    problem(await c.post("/api/v1/servers", json=server_json("io.github.carol/x", "@carol/x"), headers=who(CAROL)), 403)
    # an organisation: a public membership counts without a token
    r = await c.post("/api/v1/servers", json=server_json("io.github.pubco/tool", "@pubco/tool"), headers=who(DAVE))
    assert r.status_code == 202, r.text
    assert (await badge(c, r.json()["slug"], DAVE))["method"] == "github_org"
    assert "orgs/pubco/public_members/dave" in env.github.hits  # after GitHub's 302 for a token-less caller
    # a private membership is invisible without a token: refused, not guessed
    problem(await c.post("/api/v1/servers", json=server_json("io.github.acme/x", "@acme/x"), headers=who(ALICE)), 403)
    # someone else's name, even inside a namespace they may use: 409 (one name, one owner)
    env.github.orgs["pubco"]["alice"] = True
    body = problem(await c.post("/api/v1/servers", json=server_json("io.github.pubco/tool", "@other/tool"),
                                headers=who(ALICE)), 409)
    assert body["name"] == "io.github.pubco/tool"
    # no GitHub account linked at all, and a malformed login
    problem(await c.post("/api/v1/servers", json=server_json("io.github.bob/x", "@bob/x"), headers=who(BOB)), 403)
    problem(await c.post("/api/v1/servers", json=server_json("io.github.a.b/x", "@ab/x"), headers=who(ALICE)), 403)
    # an admin is not refused (imports), but earns no badge for a namespace they did not prove
    r = await c.post("/api/v1/servers", json=server_json("io.github.someone/x", "@someone/x"),
                     headers=who(ADMIN, "admin"))
    assert r.status_code == 202, r.text
    assert (await badge(c, r.json()["slug"], ADMIN))["verified"] is False


async def test_private_org_membership_with_a_token(env: Env, settings_for: Any) -> None:
    settings = settings_for(Settings, github_api_url=env.github.url, github_token="ghp_test", egress_allow="127.0.0.1")
    async with names.GitHub(settings) as gh:
        assert await gh.is_member("acme", "alice") is True
        assert await gh.is_member("acme", "dave") is False
        assert await gh.is_member("no-such-org", "alice") is False
    assert "orgs/acme/public_members/alice" not in env.github.hits  # the token saw the private membership


async def test_platform_namespace_per_user(env: Env) -> None:
    c = env.c
    # a submission that names nothing is listed in its submitter's own namespace
    r = await c.post("/api/v1/servers", headers=who(BOB),
                     json={"mcpServers": {"weather": {"command": "npx", "args": ["-y", "@w/x@1.0.0"]}}})
    assert r.status_code == 202, r.text
    assert r.json()["name"] == "io.wemcp.bob/w-x"
    b = await badge(c, r.json()["slug"], BOB)
    assert b == {**b, "verified": False, "method": "platform", "namespace_kind": "platform"}
    mine = (await c.get("/api/v1/names/mine", headers=who(BOB))).json()
    assert mine["handle"] == "bob" and mine["platform_namespace"] == "io.wemcp.bob" and mine["github"] == []
    assert (await c.get("/api/v1/names/mine", headers=who(ALICE))).json()["github"] == [
        {"login": "Alice", "namespace": "io.github.alice"}]
    # bob's namespace is bob's; naming it explicitly works for him and nobody else
    r = await c.post("/api/v1/servers", json=server_json("io.wemcp.bob/second", "@bob/second"), headers=who(BOB))
    assert r.status_code == 202, r.text
    problem(await c.post("/api/v1/servers", json=server_json("io.wemcp.bob/evil", "@m/evil"), headers=who(MALLORY)),
            403)
    problem(await c.post("/api/v1/servers", json=server_json("io.wemcp/bare", "@m/bare"), headers=who(MALLORY)), 403)
    # a new version keeps the listing's name
    r = await c.post("/api/v1/servers", headers=who(BOB),
                     json={"mcpServers": {"weather": {"command": "npx", "args": ["-y", "@w/x@1.1.0"]}}})
    assert r.status_code == 202 and r.json()["name"] == "io.wemcp.bob/w-x" and r.json()["duplicate"] is False
    assert (await c.get("/api/v1/names/mine")).status_code == 401


async def test_domain_proof_by_dns(env: Env) -> None:
    c = env.c
    r = await c.post("/api/v1/names/domains", json={"domain": "Example.test"}, headers=who(ALICE))
    assert r.status_code == 201, r.text
    claim = r.json()
    assert claim["domain"] == "example.test" and claim["namespace"] == "test.example" and not claim["verified"]
    token = claim["proof"]["value"]
    assert token.startswith("wemcp-verify=")
    # the same domain again: the same claim
    assert (await c.post("/api/v1/names/domains", json={"domain": "example.test"}, headers=who(ALICE))
            ).json()["proof"]["value"] == token
    # not proven yet: refused, and verifying says what it looked at
    problem(await c.post("/api/v1/servers", json=server_json("test.example/tool", "@ex/tool"), headers=who(ALICE)), 403)
    body = problem(await c.post("/api/v1/names/domains/example.test/verify", json={"method": "dns"},
                                headers=who(ALICE)), 422)
    assert body["errors"][0]["type"] == "proof_not_found"
    # the record appears among others (long records come split in 255-byte strings, and the
    # answer only fits over TCP)
    env.dns.txt["example.test"] = ["v=spf1 -all", "x" * 600, token]
    r = await c.post("/api/v1/names/domains/example.test/verify", json={"method": "dns"}, headers=who(ALICE))
    assert r.status_code == 200, r.text
    assert r.json()["verified"] and r.json()["method"] == "dns" and "test.example.*/*" in r.json()["covers"]
    assert ("tcp", "example.test") in env.dns.queries
    r = await c.post("/api/v1/servers", json=server_json("test.example/tool", "@ex/tool"), headers=who(ALICE))
    assert r.status_code == 202, r.text
    assert (await badge(c, r.json()["slug"], ALICE))["method"] == "dns"
    # a DNS proof covers subdomains
    r = await c.post("/api/v1/servers", json=server_json("test.example.api/tool", "@ex/api"), headers=who(ALICE))
    assert r.status_code == 202, r.text
    # another user: refused the namespace; cannot see, verify or delete alice's claim
    problem(await c.post("/api/v1/servers", json=server_json("test.example/evil", "@m/e"), headers=who(MALLORY)), 403)
    problem(await c.post("/api/v1/names/domains/example.test/verify", json={"method": "dns"},
                         headers=who(MALLORY)), 404)
    problem(await c.delete("/api/v1/names/domains/example.test", headers=who(MALLORY)), 404)
    assert (await c.get("/api/v1/names/domains", headers=who(MALLORY))).json()["items"] == []
    # mallory's own claim on it needs her own token in DNS
    r = await c.post("/api/v1/names/domains", json={"domain": "example.test"}, headers=who(MALLORY))
    assert r.json()["proof"]["value"] != token
    problem(await c.post("/api/v1/names/domains/example.test/verify", json={"method": "dns"},
                         headers=who(MALLORY)), 422)
    # bad and reserved domains
    for bad in ("localhost", "not a domain", "x.github.io", "github.io", "wemcp.io", "bob.wemcp.io"):
        body = problem(await c.post("/api/v1/names/domains", json={"domain": bad}, headers=who(ALICE)), 422)
        assert body["errors"][0]["field"] == "domain", bad
    problem(await c.post("/api/v1/names/domains", json={"domain": "example.test"}), 401)
    # giving a claim up: new names need the proof again
    assert (await c.delete("/api/v1/names/domains/example.test", headers=who(ALICE))).status_code == 204
    problem(await c.post("/api/v1/servers", json=server_json("test.example/later", "@ex/later"), headers=who(ALICE)),
            403)


async def test_domain_proof_by_http_well_known(env: Env) -> None:
    c = env.c
    token = (await c.post("/api/v1/names/domains", json={"domain": "shop.test"}, headers=who(BOB))).json()[
        "proof"]["value"]
    problem(await c.post("/api/v1/names/domains/shop.test/verify", json={"method": "http"}, headers=who(BOB)), 422)
    env.web.files["shop.test"] = f"# the registry's file\n{token}\n"
    r = await c.post("/api/v1/names/domains/shop.test/verify", json={"method": "http"}, headers=who(BOB))
    assert r.status_code == 200, r.text
    assert r.json()["method"] == "http" and r.json()["covers"] == ["test.shop/*"]
    r = await c.post("/api/v1/servers", json=server_json("test.shop/cart", "@shop/cart"), headers=who(BOB))
    assert r.status_code == 202, r.text
    assert (await badge(c, r.json()["slug"], BOB)) == {**(await badge(c, r.json()["slug"], BOB)),
                                                       "verified": True, "method": "http"}
    # an HTTP proof is for that host only
    problem(await c.post("/api/v1/servers", json=server_json("test.shop.api/x", "@shop/api"), headers=who(BOB)), 403)


async def test_domain_proof_fetch_goes_through_the_address_policy(env: Env, settings_for: Any) -> None:
    settings = settings_for(Settings, egress_allow="",  # nothing internal allowed: *.test resolves to loopback
                            domain_proof_url=f"http://{{domain}}:{env.web.port}/.well-known/mcp-registry-auth")
    ok, why = await names.http_proof(settings, "shop.test")
    assert not ok and "loopback" in why


async def _owner_less(env: Env, name: str, ident: str, *, owner: uuid.UUID | None = None,
                      verification: str | None = None) -> str:
    slug = f"s-{uuid.uuid4().hex[:8]}"
    async with env.app.state.runtime.sessions() as s, s.begin():
        s.add(Server(slug=slug, name=name, version="1.0.0", package_key=f"npm:{ident}", title=slug, icon="",
                     owner_id=owner, source_kind="import", status="published", name_verification=verification,
                     spec={"name": name, "version": "1.0.0", "packages": [
                         {"registryType": "npm", "identifier": ident, "version": "1.0.0"}]}))
    return slug


async def test_claims(env: Env) -> None:
    c = env.c
    crawled = await _owner_less(env, "io.github.alice/old", "@alice/old")
    squatted = await _owner_less(env, "io.github.alice/squat", "@alice/squat", owner=MALLORY, verification="legacy")
    proven = await _owner_less(env, "io.github.dave/mine", "@dave/mine", owner=DAVE, verification="github")
    # before claiming, the owner-less listing is an admin's to change
    problem(await c.post("/api/v1/servers", json=server_json("io.github.alice/old", "@alice/old", "2.0.0"),
                         headers=who(ALICE)), 403)
    # someone who cannot prove the namespace cannot claim
    problem(await c.post(f"/api/v1/servers/{crawled}/claim", headers=who(BOB)), 403)
    problem(await c.post(f"/api/v1/servers/{crawled}/claim"), 401)
    problem(await c.post("/api/v1/servers/no-such/claim", headers=who(ALICE)), 404)
    r = await c.post(f"/api/v1/servers/{crawled}/claim", headers=who(ALICE))
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "io.github.alice/old", "slugs": [crawled], "method": "github", "verified": True}
    detail = (await c.get(f"/api/v1/servers/{crawled}")).json()
    assert detail["owner_id"] == str(ALICE) and detail["name_verification"]["verified"]
    # the slug and its URL did not change; the verified owner now publishes new versions
    assert detail["connect"]["url"].endswith(f"/mcp/{crawled}")
    r = await c.post("/api/v1/servers", json=server_json("io.github.alice/old", "@alice/old", "2.0.0"),
                     headers=who(ALICE))
    assert r.status_code == 202 and r.json()["slug"] == crawled
    # a name listed by someone who proved nothing (before the rules) goes to its namespace's prover
    assert (await c.post(f"/api/v1/servers/{squatted}/claim", headers=who(ALICE))).status_code == 200
    assert (await c.get(f"/api/v1/servers/{squatted}")).json()["owner_id"] == str(ALICE)
    # a proven holder keeps the name: only an admin transfers it
    problem(await c.post(f"/api/v1/servers/{proven}/claim", headers=who(ALICE)), 409)
    problem(await c.post(f"/api/v1/servers/{crawled}/claim", headers=who(ALICE)), 409)  # already hers
    async with env.app.state.runtime.sessions() as s:
        events = [json.loads(p) for p in (await s.execute(select(bus_tables.outbox.c.payload).where(
            bus_tables.outbox.c.subject == "server.updated"))).scalars()]
    assert {(e["slug"], tuple(e["changed"]), e["owner_id"]) for e in events} >= {
        (crawled, ("owner_id",), str(ALICE)), (squatted, ("owner_id",), str(ALICE))}


async def test_submission_409_points_a_prover_at_the_claim(env: Env) -> None:
    slug = await _owner_less(env, "io.github.alice/tool", "@other/tool", owner=MALLORY, verification="legacy")
    body = problem(await env.c.post("/api/v1/servers", json=server_json("io.github.alice/tool", "@alice/tool"),
                                    headers=who(ALICE)), 409)
    assert body["claim"] == f"/api/v1/servers/{slug}/claim"


async def test_admin_transfers_a_name(env: Env) -> None:
    c = env.c
    slug = await _owner_less(env, "io.github.dave/shared", "@dave/shared", owner=DAVE, verification="github")
    body = {"name": "io.github.dave/shared", "to_user_id": str(BOB), "reason": "dispute #7"}
    problem(await c.post("/api/v1/names/transfer", json=body, headers=who(DAVE)), 403)
    problem(await c.post("/api/v1/names/transfer", json=body), 401)
    problem(await c.post("/api/v1/names/transfer", json={**body, "name": "io.github.nobody/x"},
                         headers=who(ADMIN, "admin")), 404)
    problem(await c.post("/api/v1/names/transfer", json={**body, "to_user_id": str(uuid.uuid4())},
                         headers=who(ADMIN, "admin")), 422)
    r = await c.post("/api/v1/names/transfer", json=body, headers=who(ADMIN, "admin"))
    assert r.status_code == 200, r.text
    detail = (await c.get(f"/api/v1/servers/{slug}")).json()
    assert detail["owner_id"] == str(BOB) and detail["name_verification"]["method"] == "transferred"
    assert detail["name_verification"]["verified"] is False
    async with env.app.state.runtime.sessions() as s:
        actions = [json.loads(p) for p in (await s.execute(select(bus_tables.outbox.c.payload).where(
            bus_tables.outbox.c.subject == "admin.action_recorded"))).scalars()]
    assert len(actions) == 1
    a = actions[0]
    assert (a["service"], a["action"], a["target_type"], a["target_id"], a["actor_id"], a["reason"]) == (
        "catalog", "name.transfer", "name", "io.github.dave/shared", str(ADMIN), "dispute #7")
    assert a["before"]["owners"] == [str(DAVE)] and a["after"]["owners"] == [str(BOB)]


def test_namespaces_classified() -> None:
    cases = {"io.github.Alice/x": ("github", "alice"), "io.wemcp.bob/x": ("platform", "bob"),
             "com.example.api/x": ("domain", "api.example.com"), "io.github/x": ("reserved", "io.github"),
             "io.wemcp/x": ("reserved", "io.wemcp"), "io/x": ("reserved", "io")}
    for name, want in cases.items():
        ns = names.classify(name, "io.wemcp")
        assert (ns.kind, ns.value) == want, name


def test_the_gateway_routes_names_to_the_catalog() -> None:
    from wemcp.gateway.routing import owner_of

    assert owner_of("names/domains") == "catalog" and owner_of("servers/x/claim") == "catalog"


async def test_dns_failures_are_a_clean_503() -> None:
    from wemcp.catalog import domain_proof
    from wemcp.common.errors import ServiceUnavailable

    with pytest.raises(ServiceUnavailable):  # nothing listens there: no answer within the timeout
        await domain_proof.txt_records("x.test", [("127.0.0.1", free_port())], 0.3)
    with pytest.raises(ValueError):  # an answer to another query is not taken
        domain_proof.parse_txt_answer(b"\x00\x01\x81\x80" + b"\x00" * 8, qid=2)


async def test_bad_input_to_the_names_routes(env: Env) -> None:
    c = env.c
    await c.post("/api/v1/names/domains", json={"domain": "example.test"}, headers=who(ALICE))
    problem(await c.post("/api/v1/names/domains/example.test/verify", json={"method": "ftp"}, headers=who(ALICE)), 422)
    problem(await c.post("/api/v1/names/domains", json={}, headers=who(ALICE)), 422)
    problem(await c.post("/api/v1/names/transfer", json={"name": "no slash", "to_user_id": str(BOB)},
                         headers=who(ADMIN, "admin")), 422)
    # with the resolver down, verifying is a 503 (try again), not a refusal of the proof
    env.app.state.runtime.extras["catalog"].settings.dns_nameservers = f"127.0.0.1:{free_port()}"
    env.app.state.runtime.extras["catalog"].settings.names_timeout_seconds = 0.3
    r = await c.post("/api/v1/names/domains/example.test/verify", json={"method": "dns"}, headers=who(ALICE))
    assert problem(r, 503) and r.headers["retry-after"] == "30"
