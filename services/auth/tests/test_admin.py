"""The operator command creates the first superadmin and prints an API key on its last line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from wemcp.common.trust import platform_headers
from wemcp.testkit.auth import as_user


async def test_create_superadmin_prints_a_working_key_last(client, infra, auth_settings):
    env = {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "WEMCP_AUTH_KEKS": auth_settings.keks,
        "WEMCP_AUTH_ACTIVE_KEK": "k1",
        "LOG_FORMAT": "console",
    }
    cmd = [sys.executable, "-m", "wemcp.auth.admin", "create-superadmin", "--login", "root"]
    out = await asyncio.to_thread(subprocess.run, cmd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("wmk_")
    from wemcp.auth.tokens import sha256

    found = await client.post("/internal/auth/api-keys/resolve", json={"key_hash": sha256(key)},
                              headers=platform_headers("auth", issuer="gateway"))
    assert (
        found.status_code == 200 and found.json()["role"] == "superadmin" and found.json()["login"] == "root"
    )
    # run again (in-process, the same code): the same account, a second key
    from wemcp.auth.admin import create_superadmin
    from wemcp.common.errors import ConfigError
    from wemcp.common.sealing import Keyring

    st = client._transport.app.state.runtime.extras["auth"]
    user, key2, created = await create_superadmin(st.sessions, "root", None)
    assert not created and key2 != key and str(user.id) == found.json()["user_id"]
    me = await client.get(
        "/api/v1/me", headers=as_user({"id": str(user.id), "role": "superadmin", "login": "root"})
    )
    assert me.json()["role"] == "superadmin"
    try:
        Keyring.parse("broken")
        raise AssertionError("a malformed KEK list was accepted")
    except ConfigError as exc:
        assert "WEMCP_AUTH_KEKS" in str(exc)
