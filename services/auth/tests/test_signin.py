"""Development sign-in links (`make admin`): minted by the operator command, exchanged once by POST
for a session (access token in the body, refresh token in an httpOnly cookie), never twice, never
after ten minutes, never on a production stack."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import timedelta

import jwt
from sqlalchemy import select, update

from wemcp.auth import service
from wemcp.auth.models import SigninLink, User
from wemcp.auth.signin import mint


def _env(infra, auth_settings, **extra: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": infra.database_url, "WEMCP_AUTH_KEKS": auth_settings.keks,
            "WEMCP_AUTH_ACTIVE_KEK": "k1", "WEMCP_AUTH_PUBLIC_URL": "http://wemcp.test", "LOG_FORMAT": "console",
            **extra}


async def test_make_admin_prints_a_link_that_signs_in_once(client, infra, auth_settings):
    cmd = [sys.executable, "-m", "wemcp.auth.admin", "create-superadmin", "--login", "root", "--signin-link"]
    out = await asyncio.to_thread(subprocess.run, cmd, env=_env(infra, auth_settings), capture_output=True,
                                  text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("wmk_")  # the key stays the last line
    m = re.search(r"http://wemcp\.test/signin#token=([A-Za-z0-9_-]+)", out.stderr)
    assert m, out.stderr
    token = m.group(1)

    r = await client.post("/api/v1/auth/signin-link", json={"token": token})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"]["login"] == "root" and body["user"]["role"] == "superadmin"
    assert body["token_type"] == "Bearer" and body["access_token"]
    cookie = r.headers["set-cookie"]
    assert "wemcp_refresh=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == body["user"]["id"] and claims["sid"]  # a session of its own (logout revokes it)

    again = await client.post("/api/v1/auth/signin-link", json={"token": token})
    assert again.status_code == 401 and again.headers["content-type"].startswith("application/problem+json")

    # the stored value is the hash, never the token
    st = client._transport.app.state.runtime.extras["auth"]
    async with st.sessions() as s:
        hashes = (await s.execute(select(SigninLink.token_hash))).scalars().all()
    assert hashes and token not in hashes


async def test_expired_unknown_and_malformed_links_are_refused(client):
    st = client._transport.app.state.runtime.extras["auth"]
    async with st.sessions() as s, s.begin():
        user = await service.create_user(s, login="late", role="user")
        raw = await mint(s, user)
        await s.execute(update(SigninLink).values(expires_at=SigninLink.created_at - timedelta(seconds=1)))
    r = await client.post("/api/v1/auth/signin-link", json={"token": raw})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    r = await client.post("/api/v1/auth/signin-link", json={"token": "A" * 43})
    assert r.status_code == 401
    for bad in ({"token": "short"}, {"token": "has spaces and more than twenty"}, {}, {"token": 5}):
        r = await client.post("/api/v1/auth/signin-link", json=bad)
        assert r.status_code == 422, (bad, r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_a_disabled_account_cannot_use_its_link(client):
    st = client._transport.app.state.runtime.extras["auth"]
    async with st.sessions() as s, s.begin():
        user = await service.create_user(s, login="gone", role="user")
        raw = await mint(s, user)
        await s.execute(update(User).where(User.id == user.id).values(disabled=True))
    r = await client.post("/api/v1/auth/signin-link", json={"token": raw})
    assert r.status_code == 401


async def test_production_stacks_neither_mint_nor_accept_links(client, infra, auth_settings):
    st = client._transport.app.state.runtime.extras["auth"]
    async with st.sessions() as s, s.begin():
        user = await service.create_user(s, login="prod", role="user")
        raw = await mint(s, user)
    st.settings.environment = "production"
    try:
        r = await client.post("/api/v1/auth/signin-link", json={"token": raw})
        assert r.status_code == 404
    finally:
        st.settings.environment = "development"
    cmd = [sys.executable, "-m", "wemcp.auth.admin", "signin-link", "--login", "prod"]
    out = await asyncio.to_thread(subprocess.run, cmd, env=_env(infra, auth_settings, WEMCP_ENV="production",
                                                               NATS_URL=infra.nats_url, REDIS_URL=infra.redis_url),
                                  capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "development" in out.stderr and "token=" not in out.stdout
