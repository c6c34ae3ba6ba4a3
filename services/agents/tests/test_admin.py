"""wemcp-agents-admin rotate-key (wemcp.agents.admin): stored provider keys re-wrapped under the
first secret of the ring, against a real Postgres."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import pytest

from services.agents.tests.agents_testkit import scratch_database
from wemcp.agents.admin import rotate_provider_keys
from wemcp.agents.config import Settings
from wemcp.agents.models import provider_key_context
from wemcp.common.db import make_engine, make_session_factory
from wemcp.common.migrations import upgrade_async
from wemcp.common.sealing import SealError

OLD, NEW = "old-provider-secret-0123", "new-provider-secret-4567"


@pytest.fixture
async def db(infra: Any):
    async with scratch_database(infra, "adm") as (url, conn):
        await upgrade_async("agents", url)
        yield url, conn


async def test_rotate_key_rewraps_every_stored_key(db):
    url, conn = db
    old_ring = Settings(provider_key_secret=OLD).provider_keyring()
    both = Settings(provider_key_secret=f"{NEW},{OLD}").provider_keyring()
    new_only = Settings(provider_key_secret=NEW).provider_keyring()
    assert old_ring and both and new_only
    ids = []
    for i in range(3):
        pid = uuid.uuid4()
        await conn.execute("INSERT INTO agents.model_providers (id, name, base_url, api_key_sealed) "
                           "VALUES ($1, $2, 'http://m.test', $3)", pid, f"p{i}",
                           old_ring.seal(f"sk-{i}".encode(), provider_key_context(pid)))
        ids.append(pid)
    await conn.execute("INSERT INTO agents.model_providers (id, name, base_url) VALUES ($1, 'keyless', 'http://m')",
                       uuid.uuid4())
    engine = make_engine(url, pool_size=1)
    try:
        sessions = make_session_factory(engine)
        assert await rotate_provider_keys(sessions, both) == 3
        assert await rotate_provider_keys(sessions, both) == 0  # already under the active KEK
    finally:
        await engine.dispose()
    for i, pid in enumerate(ids):
        stored = await conn.fetchval("SELECT api_key_sealed FROM agents.model_providers WHERE id = $1", pid)
        assert new_only.kek_of(stored) == new_only.active
        assert new_only.open(stored, provider_key_context(pid)) == f"sk-{i}".encode()  # the old secret can go
        with pytest.raises(SealError):
            old_ring.open(stored, provider_key_context(pid))


def test_the_command_needs_the_secret():
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}
    r = subprocess.run([sys.executable, "-m", "wemcp.agents.admin", "rotate-key"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "WEMCP_AGENTS_PROVIDER_KEY_SECRET" in r.stderr
