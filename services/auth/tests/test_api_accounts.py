"""Refresh-token rotation and reuse, roles and invites, the vault, third-party connections."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx2 as httpx
from sqlalchemy import select, text

from wemcp.auth import service
from wemcp.auth.models import OAuthConnection, VaultSecret
from wemcp.common.trust import PlatformHeaders
from wemcp.testkit.auth import CLIENT_ID, CLIENT_SECRET, as_user, browser_login

# the gateway, reading secrets for a call (auth's internal routes need its service credential)
GATEWAY = PlatformHeaders("auth", issuer="gateway")


async def _user(client, st, login: str, role: str = "user") -> dict:
    async with st.sessions() as s, s.begin():
        u = await service.create_user(s, login=login, role=role)
        return service.user_read(u)


async def test_refresh_rotates_and_reuse_revokes_the_family(client):
    first = (await browser_login(client, "github")).json()
    r1 = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r1.status_code == 200, r1.text
    second = r1.json()
    assert second["refresh_token"] != first["refresh_token"] and second["access_token"]
    # the first token again: reuse, the whole session is revoked
    reuse = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401 and "reuse" in reuse.json()["detail"]
    # ... including the newest token of that family
    after = await client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert after.status_code == 401
    # the cookie works too, and garbage is a clean 401/422
    other = (await browser_login(client, "github")).json()
    client.cookies.set("wemcp_refresh", other["refresh_token"], path="/api/v1/auth")
    assert (await client.post("/api/v1/auth/refresh")).status_code == 200
    client.cookies.clear()
    assert (await client.post("/api/v1/auth/refresh", json={"refresh_token": "nope"})).status_code == 401
    assert (await client.post("/api/v1/auth/refresh", json={"refresh_token": 5})).status_code == 422
    assert (
        await client.post(
            "/api/v1/auth/refresh", content=b"{not json", headers={"content-type": "application/json"}
        )
    ).status_code == 400


async def test_roles_nobody_raises_their_own(client, auth_app):
    st = auth_app.state.runtime.extras["auth"]
    me = (await browser_login(client, "github")).json()["user"]
    admin = await _user(client, st, "admin1", "admin")
    other_admin = await _user(client, st, "admin2", "admin")
    # a user cannot set roles at all, not even their own; the header role is not trusted either
    for headers in (as_user(me), {**as_user(me), "x-wemcp-user-role": "superadmin"}):
        r = await client.put(f"/api/v1/users/{me['id']}/role", json={"role": "admin"}, headers=headers)
        assert r.status_code == 403
    forged = await client.put(
        f"/api/v1/users/{admin['id']}/role",
        json={"role": "user"},
        headers={**as_user(me), "x-wemcp-user-role": "superadmin"},
    )
    assert forged.status_code == 403
    # an admin cannot raise themselves, nor make admins, nor touch another admin
    assert (
        await client.put(
            f"/api/v1/users/{admin['id']}/role", json={"role": "superadmin"}, headers=as_user(admin)
        )
    ).status_code == 403
    assert (
        await client.put(f"/api/v1/users/{me['id']}/role", json={"role": "admin"}, headers=as_user(admin))
    ).status_code == 403
    assert (
        await client.put(
            f"/api/v1/users/{other_admin['id']}/role", json={"role": "user"}, headers=as_user(admin)
        )
    ).status_code == 403
    ok = await client.put(f"/api/v1/users/{me['id']}/role", json={"role": "merchant"}, headers=as_user(admin))
    assert ok.status_code == 200 and ok.json()["role"] == "merchant"
    bad = await client.put(f"/api/v1/users/{me['id']}/role", json={"role": "god"}, headers=as_user(admin))
    assert bad.status_code == 422
    async with st.sessions() as s:
        subjects = (await s.execute(text("SELECT subject FROM auth.outbox ORDER BY id"))).scalars().all()
    assert "user.role_changed" in subjects


async def test_invites_grant_a_role_once_and_expire(client, auth_app):
    st = auth_app.state.runtime.extras["auth"]
    merchant = await _user(client, st, "shop", "merchant")
    plain = await _user(client, st, "plain")
    newcomer = await _user(client, st, "newcomer")
    late = await _user(client, st, "late")
    assert (
        await client.post("/api/v1/invites", json={"role": "user"}, headers=as_user(plain))
    ).status_code == 403
    assert (
        await client.post("/api/v1/invites", json={"role": "admin"}, headers=as_user(merchant))
    ).status_code == 403
    inv = await client.post(
        "/api/v1/invites", json={"role": "merchant", "email": "a@b.example"}, headers=as_user(merchant)
    )
    assert inv.status_code == 201, inv.text
    code = inv.json()["code"]
    # the console's invite page: the code rides in the fragment, which no server ever receives
    assert inv.json()["url"].endswith(f"/invite#code={code}")
    listed = (await client.get("/api/v1/invites", headers=as_user(merchant))).json()
    assert code not in json.dumps(listed)
    # looking an invite up shows what it grants and uses nothing; signed-out callers and bad codes get nothing
    assert (await client.post("/api/v1/invites/lookup", json={"code": code})).status_code == 401
    assert (await client.post("/api/v1/invites/lookup", json={"code": "wmi_not-a-real-code"},
                              headers=as_user(late))).status_code == 404
    assert (await client.post("/api/v1/invites/lookup", json={"code": "x"}, headers=as_user(late))).status_code == 422
    seen = await client.post("/api/v1/invites/lookup", json={"code": code}, headers=as_user(newcomer))
    assert seen.status_code == 200 and set(seen.json()) == {"role", "expires_at"}
    assert seen.json()["role"] == "merchant"
    acc = await client.post("/api/v1/invites/accept", json={"code": code}, headers=as_user(newcomer))
    assert acc.status_code == 200 and acc.json()["role"] == "merchant"
    again = await client.post("/api/v1/invites/accept", json={"code": code}, headers=as_user(late))
    assert again.status_code == 404
    assert (await client.post("/api/v1/invites/lookup", json={"code": code},
                              headers=as_user(late))).status_code == 404  # used up
    # an expired invite grants nothing
    inv2 = (await client.post("/api/v1/invites", json={"role": "merchant"}, headers=as_user(merchant))).json()
    async with st.sessions() as s, s.begin():
        await s.execute(text("UPDATE auth.invites SET expires_at = now() - interval '1 second'"))
    assert (
        await client.post("/api/v1/invites/accept", json={"code": inv2["code"]}, headers=as_user(late))
    ).status_code == 404


async def test_invite_link_at_sign_in(client, auth_app, provider):
    st = auth_app.state.runtime.extras["auth"]
    admin = await _user(client, st, "boss", "admin")
    code = (await client.post("/api/v1/invites", json={"role": "merchant"}, headers=as_user(admin))).json()[
        "code"
    ]
    r = await browser_login(client, "github", query=f"?invite={code}")
    assert r.status_code == 200 and r.json()["user"]["role"] == "merchant"


async def test_vault_is_write_only_masked_and_never_logged(client, auth_app, caplog):
    st = auth_app.state.runtime.extras["auth"]
    user = await _user(client, st, "keeper")
    secret = "sk-live-THIS-IS-A-VERY-SECRET-VALUE-1234"
    caplog.set_level(logging.DEBUG)
    put = await client.put(
        "/api/v1/vault",
        json={"server": "io.github.x/weather", "name": "WEATHER_API_KEY", "value": secret},
        headers=as_user(user),
    )
    assert put.status_code == 200, put.text
    assert put.json()["value"] == "****1234"
    listed = await client.get("/api/v1/vault", headers=as_user(user))
    assert listed.json()["items"][0]["value"] == "****1234"
    for resp in (put, listed):
        assert secret not in resp.text and "VERY-SECRET" not in resp.text
    # stored encrypted: the database holds no plaintext
    async with st.sessions() as s:
        row = (await s.execute(select(VaultSecret))).scalar_one()
        dump = json.dumps([row.sealed, row.masked])
    assert "VERY-SECRET" not in dump and row.sealed.startswith("v1.k1.")
    # the gateway's internal read returns it
    internal = await client.get(
        f"/internal/auth/vault/{user['id']}", params={"server": "io.github.x/weather"}, headers=GATEWAY
    )
    assert internal.json()["values"] == {"WEATHER_API_KEY": secret}
    # another user sees nothing of it
    other = await _user(client, st, "nosy")
    assert (await client.get("/api/v1/vault", headers=as_user(other))).json()["items"] == []
    assert (
        await client.get(f"/internal/auth/vault/{other['id']}", params={"server": "io.github.x/weather"},
                         headers=GATEWAY)
    ).json()["values"] == {}
    assert secret not in caplog.text
    bad = await client.put(
        "/api/v1/vault", json={"server": "../etc", "name": "X", "value": "v"}, headers=as_user(user)
    )
    assert bad.status_code == 422 and secret not in bad.text
    assert (
        await client.delete(
            "/api/v1/vault",
            params={"server": "io.github.x/weather", "name": "WEATHER_API_KEY"},
            headers=as_user(user),
        )
    ).status_code == 204


async def test_kek_rotation_rewraps_without_losing_values(client, auth_app, auth_settings):
    from wemcp.auth.admin import rotate_kek
    from wemcp.common.sealing import Keyring

    st = auth_app.state.runtime.extras["auth"]
    user = await _user(client, st, "rotator")
    await client.put(
        "/api/v1/vault",
        json={"server": "maps", "name": "KEY", "value": "value-under-k1-0000"},
        headers=as_user(user),
    )
    k2 = Keyring.parse(auth_settings.keks, "k2")
    n = await rotate_kek(st.sessions, k2)
    assert n >= 2  # the secret and the signing key
    only_k2 = Keyring.parse(auth_settings.keks.split(",")[1], "k2")
    async with st.sessions() as s:
        row = (await s.execute(select(VaultSecret))).scalar_one()
    assert row.sealed.startswith("v1.k2.")
    assert only_k2.open(row.sealed, f"vault:{user['id']}:maps:KEY") == b"value-under-k1-0000"


async def test_third_party_connection_tokens_are_sealed_and_refreshed(client, auth_app, provider):
    st = auth_app.state.runtime.extras["auth"]
    admin = await _user(client, st, "ops", "admin")
    user = await _user(client, st, "netdisk-user")
    app_body = {
        "slug": "baidu-netdisk",
        "name": "Baidu Netdisk",
        "authorize_url": f"{provider.base_url}/authorize",
        "token_url": f"{provider.base_url}/token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "basic netdisk",
        "servers": ["baidu-netdisk"],
    }
    assert (await client.post("/api/v1/oauth/apps", json=app_body, headers=as_user(user))).status_code == 403
    created = await client.post("/api/v1/oauth/apps", json=app_body, headers=as_user(admin))
    assert created.status_code == 201 and CLIENT_SECRET not in created.text
    assert (await client.post("/api/v1/connections/baidu-netdisk/start")).status_code == 401
    start = await client.post("/api/v1/connections/baidu-netdisk/start", headers=as_user(user))
    async with httpx.AsyncClient() as browser:
        back = urlsplit((await browser.get(start.json()["authorization_url"])).headers["location"])
    done = await client.get(f"{back.path}?{back.query}")
    assert done.status_code == 200, done.text
    assert done.json()["app"] == "baidu-netdisk" and "access_token" not in done.text
    first_token = list(provider.access)[-1]
    got = (await client.get(f"/internal/auth/connections/{user['id']}/baidu-netdisk", headers=GATEWAY)).json()
    assert got["access_token"] == first_token
    # near expiry: the background pass refreshes it before it expires
    async with st.sessions() as s, s.begin():
        await s.execute(text("UPDATE auth.oauth_connections SET expires_at = now() + interval '60 seconds'"))
    from wemcp.auth.connections import refresh_due

    assert await refresh_due(st) == 1
    assert provider.token_requests[-1]["grant_type"] == "refresh_token"
    got2 = (await client.get(f"/internal/auth/connections/{user['id']}/baidu-netdisk", headers=GATEWAY)).json()
    assert got2["access_token"] != first_token and got2["access_token"] == list(provider.access)[-1]
    async with st.sessions() as s:
        row = (await s.execute(select(OAuthConnection))).scalar_one()
    assert row.expires_at > datetime.now(UTC) + timedelta(minutes=30)
    assert got2["access_token"] not in row.token_sealed
    mine = (await client.get("/api/v1/connections", headers=as_user(user))).json()["items"]
    assert mine[0]["app"] == "baidu-netdisk" and "token" not in json.dumps(mine).replace(
        "needs_reconnect", ""
    )


async def test_system_keys_admins_only_sealed_masked_and_announced(client, auth_app, infra, caplog):
    """Admins set a server's system key (the platform's built-in upstream key): write-only, sealed,
    masked on read; the gateway reads it under the nil user; every change (own keys too) announces
    ``user.secret_changed`` without the value."""
    import nats

    st = auth_app.state.runtime.extras["auth"]
    admin = await _user(client, st, "keymaster", "admin")
    user = await _user(client, st, "plain")
    secret = "sk-system-PLATFORM-KEY-9876"
    caplog.set_level(logging.DEBUG)
    nc = await nats.connect(infra.nats_url)
    seen: list[dict] = []

    async def on(msg) -> None:
        seen.append(json.loads(msg.data))

    await nc.subscribe("user.secret_changed", cb=on)
    try:
        body = {"server": "io.github.x/maps", "name": "MAPS_KEY", "value": secret}
        for headers in (as_user(user), {**as_user(user), "x-wemcp-user-role": "admin"}):
            assert (await client.put("/api/v1/vault/system", json=body, headers=headers)).status_code in (401, 403)
        put = await client.put("/api/v1/vault/system", json=body, headers=as_user(admin))
        assert put.status_code == 200, put.text
        assert put.json()["value"] == "****9876"
        listed = await client.get("/api/v1/vault/system", headers=as_user(admin))
        assert [(i["server"], i["name"], i["value"]) for i in listed.json()["items"]] == [
            ("io.github.x/maps", "MAPS_KEY", "****9876")]
        assert (await client.get("/api/v1/vault/system", headers=as_user(user))).status_code == 403
        # not the admin's own key, and not the user's
        assert (await client.get("/api/v1/vault", headers=as_user(admin))).json()["items"] == []
        internal = await client.get(f"/internal/auth/vault/{service.SYSTEM_USER}",
                                    params={"server": "io.github.x/maps"}, headers=GATEWAY)
        assert internal.json()["values"] == {"MAPS_KEY": secret}
        # the system principal can never sign in or act
        async with st.sessions() as s:
            row = (await s.execute(text("SELECT disabled FROM auth.users WHERE id = :i"),
                                   {"i": service.SYSTEM_USER})).scalar_one()
        assert row is True
        own = await client.put("/api/v1/vault", json={"server": "io.github.x/maps", "name": "MAPS_KEY",
                                                      "value": "mine-0000"}, headers=as_user(user))
        assert own.status_code == 200
        gone = await client.delete("/api/v1/vault/system", params={"server": "io.github.x/maps", "name": "MAPS_KEY"},
                                   headers=as_user(admin))
        assert gone.status_code == 204
        assert (await client.get(f"/internal/auth/vault/{service.SYSTEM_USER}",
                                 params={"server": "io.github.x/maps"}, headers=GATEWAY)).json()["values"] == {}
        assert (await client.delete("/api/v1/vault/system", params={"server": "io.github.x/maps", "name": "MAPS_KEY"},
                                    headers=as_user(admin))).status_code == 404

        async def announced() -> bool:
            return len(seen) >= 3

        from wemcp.devstack.testing import wait_for

        await wait_for(announced, timeout=5)
        assert [(e["user_id"], e["server"], e["name"], e["action"]) for e in seen] == [
            (str(service.SYSTEM_USER), "io.github.x/maps", "MAPS_KEY", "saved"),
            (user["id"], "io.github.x/maps", "MAPS_KEY", "saved"),
            (str(service.SYSTEM_USER), "io.github.x/maps", "MAPS_KEY", "deleted")]
        assert secret not in caplog.text and not any(secret in json.dumps(e) for e in seen)
    finally:
        await nc.close()


async def test_migration_gives_apps_without_servers_their_own_slug(infra, clean_db):
    """auth_0003: connection tokens now go only to the servers an app lists; an app stored before
    (listing none) keeps serving the server it served, the one with its own slug."""
    import asyncio

    import asyncpg
    from alembic import command

    from wemcp.common.migrations import alembic_config, upgrade_async

    cfg = alembic_config("auth", infra.database_url)
    conn = await asyncpg.connect("postgresql://" + infra.database_url.split("://", 1)[1])
    try:
        try:
            await asyncio.to_thread(command.downgrade, cfg, "auth_0002")
            await conn.execute(
                "INSERT INTO auth.oauth_apps (id, slug, name, authorize_url, token_url, client_id, "
                "client_secret_sealed, scope, pkce, token_endpoint_auth_method, servers) VALUES "
                "(gen_random_uuid(), 'old-app', 'Old', 'https://a', 'https://t', 'c', 's', '', true, "
                "'client_secret_post', '[]'), (gen_random_uuid(), 'listed-app', 'Listed', 'https://a', "
                "'https://t', 'c', 's', '', true, 'client_secret_post', '[\"some-server\"]')"
            )
        finally:  # the session's other tests want the schema at head whatever happens here
            await upgrade_async("auth", infra.database_url)
        rows = dict(await conn.fetch("SELECT slug, servers::text FROM auth.oauth_apps"))
    finally:
        await conn.close()
    assert rows == {"old-app": '["old-app"]', "listed-app": '["some-server"]'}
