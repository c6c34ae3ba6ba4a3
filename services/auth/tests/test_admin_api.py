"""The admin system's auth side: user search, role changes, bans, account deletion, invites with a
use count, OAuth app configuration, and the audit log every admin action lands in (read-only,
guarded against UPDATE/DELETE at the database)."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from wemcp.auth import service
from wemcp.auth.models import ApiKey, OAuthConnection, RefreshToken, User, UserIdentity, VaultSecret
from wemcp.auth.tokens import sha256, start_session
from wemcp.common.trust import PlatformHeaders
from wemcp.devstack.testing import wait_for
from wemcp.testkit.auth import CLIENT_ID, CLIENT_SECRET, as_user

GATEWAY = PlatformHeaders("auth", issuer="gateway")


def _st(auth_app):
    return auth_app.state.runtime.extras["auth"]


async def _user(st, login: str, role: str = "user") -> dict:
    async with st.sessions() as s, s.begin():
        return service.user_read(await service.create_user(s, login=login, role=role, email=f"{login}@x.example"))


async def _key(st, user: dict) -> str:
    async with st.sessions() as s, s.begin():
        _, raw = await service.create_api_key(s, uuid.UUID(user["id"]), "k", None, None)
    return raw


async def _session(st, user: dict) -> str:
    async with st.sessions() as s, s.begin():
        row = await s.get(User, uuid.UUID(user["id"]))
        return (await start_session(s, st.keys, row)).refresh_token


async def _subjects(st) -> list[str]:
    async with st.sessions() as s:
        return list((await s.execute(text("SELECT subject FROM auth.outbox ORDER BY id"))).scalars())


async def _audit(client, admin: dict, **params) -> list[dict]:
    r = await client.get("/api/v1/admin/audit", headers=as_user(admin), params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_a_ban_stops_keys_and_sessions_and_an_unban_restores_the_keys(client, auth_app):
    st = _st(auth_app)
    admin, user = await _user(st, "ops", "admin"), await _user(st, "mallory")
    key, refresh = await _key(st, user), await _session(st, user)
    resolve = {"key_hash": sha256(key)}
    assert (await client.post("/internal/auth/api-keys/resolve", json=resolve, headers=GATEWAY)).status_code == 200

    short = await client.post(f"/api/v1/admin/users/{user['id']}/ban", json={"reason": ""}, headers=as_user(admin))
    assert short.status_code == 422 and short.headers["content-type"] == "application/problem+json"
    r = await client.post(f"/api/v1/admin/users/{user['id']}/ban", json={"reason": "spam"}, headers=as_user(admin))
    assert r.status_code == 200 and r.json()["banned"] is True and r.json()["ban_reason"] == "spam", r.text
    assert (await client.post("/internal/auth/api-keys/resolve", json=resolve, headers=GATEWAY)).status_code == 404
    assert (await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})).status_code == 401
    subjects = await _subjects(st)
    assert {"user.banned", "user.session_revoked", "admin.action_recorded"} <= set(subjects)
    async with st.sessions() as s:
        banned = json.loads((await s.execute(text(
            "SELECT payload FROM auth.outbox WHERE subject = 'user.banned'"))).scalar_one())
    assert banned["user_id"] == user["id"] and banned["banned"] is True and banned["until"]

    ok = await client.post(f"/api/v1/admin/users/{user['id']}/unban", json={"reason": "appealed"},
                           headers=as_user(admin))
    assert ok.status_code == 200 and ok.json()["banned"] is False
    assert (await client.post("/internal/auth/api-keys/resolve", json=resolve, headers=GATEWAY)).status_code == 200
    assert (await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})).status_code == 401

    entries = await wait_for(lambda: _audit_n(client, admin, 2, target_id=user["id"]))
    assert [(e["action"], e["reason"], e["actor_id"], e["service"]) for e in entries] == [
        ("user.unban", "appealed", admin["id"], "auth"), ("user.ban", "spam", admin["id"], "auth")]
    assert entries[1]["before"]["banned"] is False and entries[1]["after"]["banned"] is True


async def _audit_n(client, admin, n, **params):
    items = await _audit(client, admin, **params)
    return items if len(items) >= n else None


async def test_who_may_ban_whom(client, auth_app):
    st = _st(auth_app)
    admin, other_admin = await _user(st, "ops", "admin"), await _user(st, "ops2", "admin")
    root, user = await _user(st, "root", "superadmin"), await _user(st, "plain")
    path = f"/api/v1/admin/users/{user['id']}/ban"
    assert (await client.post(path, json={"reason": "nope"})).status_code == 401
    for who in (user, await _user(st, "shop", "merchant")):
        r = await client.post(path, json={"reason": "nope"}, headers=as_user(who))
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    # an admin acts below their own role only; never on themselves; a superadmin on anyone else
    assert (await client.post(f"/api/v1/admin/users/{other_admin['id']}/ban", json={"reason": "nope"},
                              headers=as_user(admin))).status_code == 403
    assert (await client.post(f"/api/v1/admin/users/{admin['id']}/ban", json={"reason": "nope"},
                              headers=as_user(admin))).status_code == 403
    assert (await client.post(f"/api/v1/admin/users/{uuid.uuid4()}/ban", json={"reason": "nope"},
                              headers=as_user(admin))).status_code == 404
    assert (await client.post(f"/api/v1/admin/users/{service.SYSTEM_USER}/ban", json={"reason": "nope"},
                              headers=as_user(root))).status_code == 404
    assert (await client.post(f"/api/v1/admin/users/{other_admin['id']}/ban", json={"reason": "rogue"},
                              headers=as_user(root))).status_code == 200
    # a token that still says "admin" after a demotion does not do: the database's role counts
    async with st.sessions() as s, s.begin():
        await s.execute(text("UPDATE auth.users SET role = 'user' WHERE login = 'ops'"))
    assert (await client.post(path, json={"reason": "nope"}, headers=as_user(admin))).status_code == 403
    assert (await client.get("/api/v1/admin/users", headers=as_user(admin))).status_code == 403
    # a banned admin cannot act either
    assert (await client.get("/api/v1/admin/users", headers=as_user(other_admin))).status_code == 403


async def test_search_users_and_change_roles(client, auth_app):
    st = _st(auth_app)
    admin = await _user(st, "ops", "admin")
    for i in range(3):
        await _user(st, f"alice-{i}")
    bob = await _user(st, "bob", "merchant")
    r = await client.get("/api/v1/admin/users", headers=as_user(admin), params={"q": "alice", "limit": 2})
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["total"] == 3 and len(page["items"]) == 2 and page["next_cursor"]
    rest = (await client.get("/api/v1/admin/users", headers=as_user(admin),
                             params={"q": "alice", "limit": 2, "cursor": page["next_cursor"]})).json()
    logins = [u["login"] for u in page["items"] + rest["items"]]
    assert sorted(logins) == ["alice-0", "alice-1", "alice-2"] and rest["next_cursor"] is None
    merchants = (await client.get("/api/v1/admin/users", headers=as_user(admin), params={"role": "merchant"})).json()
    assert [u["login"] for u in merchants["items"]] == ["bob"]
    assert (await client.get("/api/v1/admin/users", headers=as_user(admin),
                             params={"cursor": "junk"})).status_code == 400
    assert (await client.get("/api/v1/admin/users", headers=as_user(admin),
                             params={"role": "emperor"})).status_code == 422
    one = await client.get(f"/api/v1/admin/users/{bob['id']}", headers=as_user(admin))
    assert one.status_code == 200 and one.json()["login"] == "bob" and one.json()["banned"] is False
    assert (await client.get(f"/api/v1/admin/users/{bob['id']}", headers=as_user(bob))).status_code == 403

    up = await client.put(f"/api/v1/admin/users/{bob['id']}/role", json={"role": "user", "reason": "closed shop"},
                          headers=as_user(admin))
    assert up.status_code == 200 and up.json()["role"] == "user", up.text
    # an admin never hands out their own rank or above
    assert (await client.put(f"/api/v1/admin/users/{bob['id']}/role", json={"role": "admin"},
                             headers=as_user(admin))).status_code == 403
    [entry] = await wait_for(lambda: _audit_n(client, admin, 1, action="user.role_change"))
    assert (entry["before"], entry["after"], entry["reason"]) == ({"role": "merchant"}, {"role": "user"},
                                                                 "closed shop")
    assert "user.role_changed" in await _subjects(st)


async def test_the_audit_log_is_read_only_and_filtered(client, auth_app):
    st = _st(auth_app)
    admin, user = await _user(st, "ops", "admin"), await _user(st, "plain")
    for role in ("merchant", "user", "merchant"):
        await client.put(f"/api/v1/admin/users/{user['id']}/role", json={"role": role}, headers=as_user(admin))
    await client.post("/api/v1/invites", json={"role": "merchant", "max_uses": 3}, headers=as_user(admin))
    all_ = await wait_for(lambda: _audit_n(client, admin, 4))
    assert [e["action"] for e in all_] == ["invite.create", "user.role_change", "user.role_change",
                                           "user.role_change"]
    first = await _audit(client, admin, limit=3)
    more = await client.get("/api/v1/admin/audit", headers=as_user(admin),
                            params={"limit": 3, "cursor": (await client.get(
                                "/api/v1/admin/audit", headers=as_user(admin), params={"limit": 3})
                                ).json()["next_cursor"]})
    assert [e["seq"] for e in first + more.json()["items"]] == [e["seq"] for e in all_]
    assert len(await _audit(client, admin, action="invite.create")) == 1
    assert len(await _audit(client, admin, action_prefix="user.")) == 3
    assert len(await _audit(client, admin, actor_id=admin["id"], target_type="user")) == 3
    assert await _audit(client, admin, service="catalog") == []
    assert await _audit(client, admin, since="2999-01-01T00:00:00Z") == []
    # nobody else reads it, and no route changes it
    assert (await client.get("/api/v1/admin/audit")).status_code == 401
    assert (await client.get("/api/v1/admin/audit", headers=as_user(user))).status_code == 403
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        r = await client.request(method, "/api/v1/admin/audit", headers=as_user(admin))
        assert r.status_code == 405, (method, r.status_code)
    # nor can the database be talked into it
    for stmt in ("UPDATE auth.audit_log SET reason = 'edited'", "DELETE FROM auth.audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with st.sessions() as s, s.begin():
                await s.execute(text(stmt))
    assert len(await _audit(client, admin)) == 4


async def test_deleting_an_account_removes_secrets_keys_and_sessions_at_once(client, auth_app):
    st = _st(auth_app)
    admin, user = await _user(st, "ops", "admin"), await _user(st, "leaving")
    key, refresh = await _key(st, user), await _session(st, user)
    put = await client.put("/api/v1/vault", json={"server": "maps", "name": "KEY", "value": "v-123456789"},
                           headers=as_user(user))
    assert put.status_code == 200, put.text
    async with st.sessions() as s, s.begin():
        s.add(UserIdentity(user_id=uuid.UUID(user["id"]), provider="github", subject="42", login="leaving-gh"))
    assert (await client.delete("/api/v1/me")).status_code == 401
    r = await client.delete("/api/v1/me", headers=as_user(user))
    assert r.status_code == 200, r.text
    assert "wemcp_refresh=" in r.headers.get("set-cookie", "") and "Max-Age=0" in r.headers["set-cookie"]
    assert r.json()["removed"] == {"secrets": 1, "connections": 0, "api_keys": 1, "sessions": 1, "identities": 1}
    uid = uuid.UUID(user["id"])
    async with st.sessions() as s:
        for model in (VaultSecret, ApiKey, RefreshToken, UserIdentity, OAuthConnection):
            assert (await s.execute(select(model).where(model.user_id == uid))).first() is None, model
        row = await s.get(User, uid)
    assert row is not None and row.deleted_at is not None and row.disabled
    assert row.email is None and row.name is None and "leaving" not in row.login
    assert (await client.post("/internal/auth/api-keys/resolve", json={"key_hash": sha256(key)},
                              headers=GATEWAY)).status_code == 404
    assert (await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})).status_code == 401
    assert {"user.deleted", "user.api_key_revoked", "user.secret_changed", "user.session_revoked"} <= \
        set(await _subjects(st))
    # gone for admins too: not listed, not found, not deletable twice; self-deletion is not an admin action
    listed = (await client.get("/api/v1/admin/users", headers=as_user(admin))).json()["items"]
    assert user["id"] not in [u["id"] for u in listed]
    assert (await client.delete(f"/api/v1/admin/users/{user['id']}", headers=as_user(admin))).status_code == 404
    assert (await client.delete("/api/v1/me", headers=as_user(user))).status_code == 404

    # an admin deletes someone else's account; audited
    other = await _user(st, "spammer")
    assert (await client.delete(f"/api/v1/admin/users/{other['id']}", headers=as_user(other))).status_code == 403
    gone = await client.delete(f"/api/v1/admin/users/{other['id']}", headers=as_user(admin),
                               params={"reason": "spam farm"})
    assert gone.status_code == 200, gone.text
    [entry] = await wait_for(lambda: _audit_n(client, admin, 1, action="user.delete"))
    assert entry["target_id"] == other["id"] and entry["reason"] == "spam farm"


async def test_the_last_superadmin_stays(client, auth_app):
    st = _st(auth_app)
    root = await _user(st, "root", "superadmin")
    r = await client.delete("/api/v1/me", headers=as_user(root))
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    second = await _user(st, "root2", "superadmin")
    assert (await client.delete(f"/api/v1/admin/users/{root['id']}", headers=as_user(second))).status_code == 200


async def test_invites_have_a_use_count_an_expiry_and_a_role_no_higher_than_their_maker(client, auth_app):
    st = _st(auth_app)
    admin, root = await _user(st, "ops", "admin"), await _user(st, "root", "superadmin")
    # nobody mints a role above their own
    assert (await client.post("/api/v1/invites", json={"role": "superadmin"},
                              headers=as_user(admin))).status_code == 403
    assert (await client.post("/api/v1/invites", json={"role": "admin"}, headers=as_user(admin))).status_code == 201
    assert (await client.post("/api/v1/invites", json={"role": "superadmin"},
                              headers=as_user(root))).status_code == 201
    bad = await client.post("/api/v1/invites", json={"role": "merchant", "max_uses": 0}, headers=as_user(admin))
    assert bad.status_code == 422
    inv = (await client.post("/api/v1/invites", json={"role": "merchant", "max_uses": 2, "expires_in_hours": 2},
                             headers=as_user(admin))).json()
    assert inv["max_uses"] == 2
    people = [await _user(st, f"p{i}") for i in range(3)]
    for p in people[:2]:
        r = await client.post("/api/v1/invites/accept", json={"code": inv["code"]}, headers=as_user(p))
        assert r.status_code == 200 and r.json()["role"] == "merchant", r.text
    assert (await client.post("/api/v1/invites/accept", json={"code": inv["code"]},
                              headers=as_user(people[2]))).status_code == 404
    listed = (await client.get("/api/v1/admin/invites", headers=as_user(admin))).json()["items"]
    mine = next(i for i in listed if i["id"] == inv["id"])
    assert (mine["uses"], mine["max_uses"], mine["state"]) == (2, 2, "used_up")
    assert inv["code"] not in json.dumps(listed)
    # revoked: nobody can use it any more
    open_ = (await client.post("/api/v1/invites", json={"role": "merchant", "max_uses": 5},
                               headers=as_user(admin))).json()
    assert (await client.delete(f"/api/v1/admin/invites/{open_['id']}", headers=as_user(people[2]))).status_code == 403
    assert (await client.delete(f"/api/v1/admin/invites/{uuid.uuid4()}", headers=as_user(admin))).status_code == 404
    assert (await client.delete(f"/api/v1/admin/invites/{open_['id']}", headers=as_user(admin))).status_code == 204
    assert (await client.post("/api/v1/invites/accept", json={"code": open_["code"]},
                              headers=as_user(people[2]))).status_code == 404
    assert (await client.get("/api/v1/admin/invites")).status_code == 401
    actions = [e["action"] for e in await wait_for(lambda: _audit_n(client, admin, 5))]
    assert actions == ["invite.revoke"] + ["invite.create"] * 4  # the refused ones were not made


async def test_only_signed_in_accounts_connect_and_only_admins_configure_oauth(client, auth_app, provider):
    st = _st(auth_app)
    admin, user = await _user(st, "ops", "admin"), await _user(st, "someone")
    body = {"slug": "netdisk", "name": "Netdisk", "authorize_url": f"{provider.base_url}/authorize",
            "token_url": f"{provider.base_url}/token", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "servers": ["netdisk"]}
    assert (await client.post("/api/v1/oauth/apps", json=body)).status_code == 401
    assert (await client.post("/api/v1/oauth/apps", json=body, headers=as_user(user))).status_code == 403
    created = await client.post("/api/v1/oauth/apps", json=body, headers=as_user(admin))
    assert created.status_code == 201, created.text
    for method, path in (("POST", "/api/v1/connections/netdisk/start"), ("GET", "/api/v1/connections"),
                         ("DELETE", "/api/v1/connections/netdisk"), ("GET", "/api/v1/oauth/apps")):
        r = await client.request(method, path)
        assert r.status_code == 401, (method, path, r.text)
    # a callback without the flow its signed-in user started is refused
    cb = await client.get("/api/v1/connections/netdisk/callback", params={"code": "x", "state": "forged"})
    assert cb.status_code in (400, 401) and cb.headers["content-type"] == "application/problem+json"
    assert (await client.delete("/api/v1/oauth/apps/netdisk", headers=as_user(user))).status_code == 403
    assert (await client.delete("/api/v1/oauth/apps/netdisk", headers=as_user(admin))).status_code == 204
    assert (await client.delete("/api/v1/oauth/apps/netdisk", headers=as_user(admin))).status_code == 404
    entries = await wait_for(lambda: _audit_n(client, admin, 2, target_type="oauth_app"))
    assert [e["action"] for e in entries] == ["oauth_app.delete", "oauth_app.create"]
    assert CLIENT_SECRET not in json.dumps(entries)
