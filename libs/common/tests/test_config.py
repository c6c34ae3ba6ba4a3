"""Bad configuration fails fast with one line that names the setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic_settings import SettingsConfigDict

from wemcp.common.config import ServiceSettings, TimeZoneName, load_settings
from wemcp.common.errors import ConfigError
from wemcp.devstack.infra import free_port


def test_malformed_database_url_names_the_setting(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://db:notaport/wemcp")
    with pytest.raises(ConfigError) as err:
        load_settings(ServiceSettings)
    assert "DATABASE_URL" in str(err.value) and "port" in str(err.value)


def test_wrong_scheme_names_the_setting(monkeypatch):
    monkeypatch.setenv("NATS_URL", "http://127.0.0.1:4222")
    with pytest.raises(ConfigError) as err:
        load_settings(ServiceSettings)
    assert str(err.value).startswith("invalid configuration: NATS_URL:")


def test_production_requires_explicit_infrastructure(monkeypatch):
    for name in ("DATABASE_URL", "NATS_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WEMCP_ENV", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/wemcp")
    with pytest.raises(ConfigError) as err:
        load_settings(ServiceSettings)
    assert "NATS_URL, REDIS_URL must be set when WEMCP_ENV=production" in str(err.value)


class _ZonedSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEMCP_ZONED_", extra="ignore", populate_by_name=True)

    day_zone: TimeZoneName = "Asia/Shanghai"


def test_an_unknown_time_zone_names_the_setting(monkeypatch):
    assert load_settings(_ZonedSettings).day_zone == "Asia/Shanghai"
    monkeypatch.setenv("WEMCP_ZONED_DAY_ZONE", "UTC")
    assert load_settings(_ZonedSettings).day_zone == "UTC"
    for bad in ("Mars/Olympus", "", "../etc/passwd"):
        monkeypatch.setenv("WEMCP_ZONED_DAY_ZONE", bad)
        with pytest.raises(ConfigError) as err:
            load_settings(_ZonedSettings)
        assert str(err.value) == f"invalid configuration: WEMCP_ZONED_DAY_ZONE: unknown time zone {bad!r}"


def test_async_and_plain_urls_are_derived():
    s = ServiceSettings(database_url="postgres://u:p@h:5/d")
    assert s.async_database_url == "postgresql+asyncpg://u:p@h:5/d"
    assert s.plain_database_url == "postgresql://u:p@h:5/d"


def run_service(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL", "REDIS_URL")}
    full.update({"WEMCP_GOODS_PORT": str(free_port()), "WEMCP_GOODS_STARTUP_TIMEOUT_SECONDS": "3"})
    full.update(env)
    return subprocess.run([sys.executable, "-m", "wemcp.goods.main"], env=full, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_clear_line(proc: subprocess.CompletedProcess[str], setting: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert setting in lines[0]
    return lines[0]


def test_unreachable_database_fails_fast_with_one_line(infra):
    line = assert_one_clear_line(
        run_service({"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/wemcp",
                     "NATS_URL": infra.nats_url, "REDIS_URL": infra.redis_url}), "DATABASE_URL")
    assert "cannot connect" in line


def test_malformed_url_fails_the_process_with_one_line(infra):
    assert_one_clear_line(run_service({"DATABASE_URL": "postgresql://h:port/x", "NATS_URL": infra.nats_url}),
                          "DATABASE_URL")


def test_unreachable_nats_fails_fast_with_one_line(infra):
    line = assert_one_clear_line(
        run_service({"DATABASE_URL": infra.database_url, "NATS_URL": f"nats://127.0.0.1:{free_port()}",
                     "REDIS_URL": infra.redis_url}), "NATS_URL")
    assert "cannot connect" in line


def test_missing_required_setting_fails_with_one_line(infra):
    assert_one_clear_line(run_service({"WEMCP_ENV": "production", "DATABASE_URL": infra.database_url}),
                          "NATS_URL, REDIS_URL must be set")


def test_unmigrated_schema_is_named(infra):
    import asyncio

    import asyncpg

    async def make_empty_db() -> str:
        conn = await asyncpg.connect(infra.database_url.replace("/wemcp", "/postgres"))
        try:
            await conn.execute("DROP DATABASE IF EXISTS wemcp_unmigrated")
            await conn.execute("CREATE DATABASE wemcp_unmigrated")
        finally:
            await conn.close()
        return infra.database_url.replace("/wemcp", "/wemcp_unmigrated")

    url = asyncio.run(make_empty_db())
    line = assert_one_clear_line(run_service({"DATABASE_URL": url, "NATS_URL": infra.nats_url}), "DATABASE_URL")
    assert "not migrated" in line
