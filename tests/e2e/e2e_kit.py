"""Helpers of the end-to-end tests: accounts made the way operators and auth's use cases make them,
submissions through the gateway, and polling."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx

from wemcp.devstack.stack import Stack
from wemcp.devstack.testing import npm_install, tar_gz, wait_for

NODE_TOOLS = Path(__file__).resolve().parent / "node"


def auth_env(stack: Stack) -> dict[str, str]:
    assert stack.database_url
    return {**os.environ, "DATABASE_URL": stack.database_url,
            "WEMCP_AUTH_DEV_KEK_FILE": str(stack.data_dir / "auth-dev-kek")}


def superadmin_key(stack: Stack, login: str) -> str:
    """The operator command, as documented (docs/services/auth.md): the key is the last stdout line."""
    out = subprocess.run([sys.executable, "-m", "wemcp.auth.admin", "create-superadmin", "--login", login],
                         env=auth_env(stack), capture_output=True, text=True, timeout=60, check=True)
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("wmk_"), out.stdout + out.stderr
    return key


@dataclass(frozen=True)
class Account:
    id: str
    login: str
    key: str  # a platform API key

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def new_account(stack: Stack, login_prefix: str, role: str = "user", *, trusted: bool = False) -> Account:
    """An account with ``role`` and a platform API key, created with auth's own use cases (as its
    tests do); its login is the prefix and six random hex digits. ``trusted``: the user is a trusted
    publisher in the catalog (as an admin's ``PUT /api/v1/admin/publishers/{id}`` makes one)."""
    from sqlalchemy import text

    from wemcp.auth import service as auth
    from wemcp.common.db import make_engine, make_session_factory

    assert stack.database_url
    engine = make_engine(stack.database_url, pool_size=1)
    try:
        async with make_session_factory(engine)() as s, s.begin():
            user = await auth.create_user(s, login=f"{login_prefix}-{uuid.uuid4().hex[:6]}", role=role)
            _, raw = await auth.create_api_key(s, user.id, "e2e", None, None)
            if trusted:
                await s.execute(text("INSERT INTO catalog.publishers (user_id, trusted, note) "
                                     "VALUES (:id, true, 'e2e fixture')"), {"id": user.id})
        return Account(str(user.id), user.login, raw)
    finally:
        await engine.dispose()


async def user_key(stack: Stack, login_prefix: str = "e2e-user", *, trusted: bool = True) -> tuple[str, str]:
    """A plain user and a platform API key. ``trusted`` (by default): their submissions deploy without
    review — these tests are about deployment; the review queue has its own (test_admin_review.py)."""
    made = await new_account(stack, login_prefix, trusted=trusted)
    return made.id, made.key


async def published(c: httpx.AsyncClient, slug: str, headers: dict[str, str], timeout: float = 300) -> dict[str, Any]:
    """Poll the detail page until the server is published and searchable (fails fast on `failed`)."""
    last: dict[str, Any] = {}

    async def done() -> dict[str, Any] | None:
        d = await c.get(f"/api/v1/servers/{slug}", headers=headers)
        assert d.status_code == 200, d.text
        last.update(d.json())
        assert last["status"] != "failed", last["status_detail"]
        return last if last["status"] == "published" and last["searchable"] else None

    return await wait_for(done, timeout=timeout, interval=0.5)


async def submit_archive(c: httpx.AsyncClient, headers: dict[str, str], manifest: dict[str, Any],
                         files: dict[str, str]) -> dict[str, Any]:
    data = tar_gz(files)
    r = await c.post("/api/v1/servers/archive", headers=headers,
                     data={"manifest": json.dumps(manifest)},
                     files={"archive": (f"{hashlib.sha256(data).hexdigest()[:8]}.tar.gz", data, "application/gzip")})
    assert r.status_code == 202, r.text
    return r.json()


def node_tool(name: str) -> Path:
    """A Node tool pinned in tests/e2e/node/package.json, installed with `npm ci` on first use."""
    exe = NODE_TOOLS / "node_modules" / ".bin" / name
    npm_install(NODE_TOOLS, exe)
    return exe
