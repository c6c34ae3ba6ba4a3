"""agents_0003: stored model-provider keys move from the agents service's own scheme to the shared one
(wemcp.common.sealing), on a database of their own: rows sealed the old way, upgrade, read with the new
code; downgrade, read with the old; without the secret the migration stops and changes nothing."""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import pytest
from alembic import command

import wemcp.agents
from services.agents.tests.agents_testkit import scratch_database
from wemcp.agents.config import Settings
from wemcp.agents.models import provider_key_context
from wemcp.common.migrations import alembic_config, upgrade_async
from wemcp.common.sealing import Keyring, SealError

SECRET = "migration-test-provider-secret-0123"


def _migration() -> ModuleType:
    path = Path(wemcp.agents.__file__).parent / "migrations" / "versions" / "0003_provider_keys_sealing.py"
    spec = importlib.util.spec_from_file_location("agents_0003_provider_keys_sealing", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
async def db(infra: Any):
    async with scratch_database(infra, "migr") as (url, conn):
        yield url, conn


async def _insert(conn: asyncpg.Connection, name: str, sealed: bytes | None) -> uuid.UUID:
    pid = uuid.uuid4()
    await conn.execute("INSERT INTO agents.model_providers (id, name, base_url, api_key_sealed) "
                       "VALUES ($1, $2, 'http://model.test/v1', $3)", pid, name, sealed)
    return pid


def test_the_old_scheme_as_written_in_the_migration_round_trips():
    m = _migration()
    pid = uuid.uuid4()
    sealed = m.legacy_seal(SECRET, pid, "sk-1")
    assert sealed[:1] == b"\x01" and m.legacy_open(SECRET, pid, sealed) == "sk-1"
    with pytest.raises(m.MigrationError):
        m.legacy_open(SECRET, uuid.uuid4(), sealed)  # another row's key does not open here
    with pytest.raises(m.MigrationError):
        m.legacy_open("another-secret-of-16-chars", pid, sealed)
    with pytest.raises(m.MigrationError):
        m.legacy_open(SECRET, pid, b"v1.x")
    assert m.context(pid) == provider_key_context(pid)


async def test_keys_are_resealed_and_the_way_back_restores_them(db, monkeypatch):
    url, conn = db
    m = _migration()
    await upgrade_async("agents", url, "agents_0002")
    keys = {"openai": "sk-openai-0123456789", "local": "token-ü-with-unicode"}
    ids = {n: await _insert(conn, n, None) for n in keys}
    for n, pid in ids.items():
        await conn.execute("UPDATE agents.model_providers SET api_key_sealed = $1 WHERE id = $2",
                           m.legacy_seal(SECRET, pid, keys[n]), pid)
    keyless = await _insert(conn, "keyless", None)

    monkeypatch.setenv("WEMCP_AGENTS_PROVIDER_KEY_SECRET", SECRET)
    await upgrade_async("agents", url)
    assert await conn.fetchval("SELECT data_type FROM information_schema.columns WHERE table_schema = 'agents' "
                               "AND table_name = 'model_providers' AND column_name = 'api_key_sealed'") == "text"
    ring = Settings(provider_key_secret=SECRET).provider_keyring()
    assert ring is not None
    for n, pid in ids.items():
        stored = await conn.fetchval("SELECT api_key_sealed FROM agents.model_providers WHERE id = $1", pid)
        assert stored.startswith(f"v1.{ring.active}.") and keys[n] not in stored
        assert ring.open(stored, provider_key_context(pid)).decode() == keys[n]  # the new code reads it
        with pytest.raises(SealError):
            ring.open(stored, provider_key_context(keyless))  # bound to its row
    assert await conn.fetchval("SELECT api_key_sealed FROM agents.model_providers WHERE id = $1", keyless) is None

    await asyncio.to_thread(command.downgrade, alembic_config("agents", url), "agents_0002")
    for n, pid in ids.items():
        stored = await conn.fetchval("SELECT api_key_sealed FROM agents.model_providers WHERE id = $1", pid)
        assert isinstance(stored, bytes) and m.legacy_open(SECRET, pid, stored) == keys[n]  # the old code reads it
    assert await conn.fetchval("SELECT api_key_sealed FROM agents.model_providers WHERE id = $1", keyless) is None

    # and up again: the same keys under the new scheme
    await upgrade_async("agents", url)
    stored = await conn.fetchval("SELECT api_key_sealed FROM agents.model_providers WHERE id = $1", ids["openai"])
    assert ring.open(stored, provider_key_context(ids["openai"])).decode() == keys["openai"]


async def test_without_the_secret_the_migration_stops_and_changes_nothing(db, monkeypatch):
    url, conn = db
    m = _migration()
    await upgrade_async("agents", url, "agents_0002")
    pid = await _insert(conn, "openai", None)
    old = m.legacy_seal(SECRET, pid, "sk-x")
    await conn.execute("UPDATE agents.model_providers SET api_key_sealed = $1 WHERE id = $2", old, pid)
    monkeypatch.delenv("WEMCP_AGENTS_PROVIDER_KEY_SECRET", raising=False)
    with pytest.raises(Exception, match="WEMCP_AGENTS_PROVIDER_KEY_SECRET"):
        await upgrade_async("agents", url)
    monkeypatch.setenv("WEMCP_AGENTS_PROVIDER_KEY_SECRET", "a-different-secret-of-16+")
    with pytest.raises(Exception, match="does not open"):
        await upgrade_async("agents", url)
    assert await conn.fetchval("SELECT version_num FROM agents.alembic_version") == "agents_0002"
    assert await conn.fetchval("SELECT api_key_sealed FROM agents.model_providers WHERE id = $1", pid) == old


async def test_no_stored_keys_need_no_secret(db, monkeypatch):
    url, conn = db
    monkeypatch.delenv("WEMCP_AGENTS_PROVIDER_KEY_SECRET", raising=False)
    await upgrade_async("agents", url, "agents_0002")
    await _insert(conn, "keyless", None)
    await upgrade_async("agents", url)
    assert await conn.fetchval("SELECT version_num FROM agents.alembic_version") == "agents_0003"
    await asyncio.to_thread(command.downgrade, alembic_config("agents", url), "agents_0002")
    assert await conn.fetchval("SELECT version_num FROM agents.alembic_version") == "agents_0002"


def test_the_service_ring_is_the_shared_scheme():
    ring = Settings(provider_key_secret=f"{SECRET},older-secret-still-opens").provider_keyring()
    assert isinstance(ring, Keyring) and len(ring.kids) == 2
    assert Settings(provider_key_secret=None).provider_keyring() is None
    with pytest.raises(ValueError):
        Settings(provider_key_secret=f"{SECRET},short")
