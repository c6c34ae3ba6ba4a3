"""pytest plugin: real Postgres (pgvector, pg_trgm), NATS JetStream and Redis for every test.

Where a Docker engine answers, testcontainers starts them; otherwise the embedded servers from pip
packages do (this machine). ``WEMCP_TEST_DATABASE_URL`` / ``WEMCP_TEST_NATS_URL`` /
``WEMCP_TEST_REDIS_URL`` point the suite at servers you run yourself.

Fixtures:
    infra           session: URLs (+ handles of embedded servers), every schema migrated
    clean_db        truncates every service table (not alembic_version) before the test
    clean_bus       deletes every JetStream consumer and purges every stream before the test
    clean_redis     FLUSHDB before the test
    settings_for    builds a service's Settings pointed at the test infrastructure

Helper:
    wait_for        polls a condition (sync or async) until it is truthy, instead of sleeping

The session's service-to-service keys (``WEMCP_SERVICE_KEYS``, wemcp.common.trust) are generated
at start-up unless set: every in-process service, every process a test starts and every test kit's
``platform_headers``/``as_user`` share them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from wemcp.devstack.infra import EmbeddedNats, EmbeddedPostgres, EmbeddedRedis
from wemcp.devstack.stack import MIGRATED


@contextlib.asynccontextmanager
async def serve_app(app: Any, port: int | None = None, lifespan: str = "off") -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a loopback port, in this event loop; yields its base URL.
    Start-up errors surface here; shutdown is bounded (a stuck connection must not hang a test run's
    teardown). ``log_config=None``: the process's logging set-up stays as it is."""
    import uvicorn

    from wemcp.devstack.infra import free_port

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan=lifespan, log_config=None,
                                           access_log=False, timeout_graceful_shutdown=2,
                                           proxy_headers=False))  # as services run (common/service.py)
    task = asyncio.create_task(server.serve())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not server.started:
        if task.done():
            task.result()  # its exception, if it failed to start
            raise RuntimeError(f"the server on port {port} stopped before it started")
        if loop.time() > deadline:
            server.force_exit = True
            raise RuntimeError(f"the server on port {port} did not start within 15 s")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            server.force_exit = True
            raise AssertionError(f"the server on port {port} did not shut down within 10 s") from None


def tar_gz(files: dict[str, str]) -> bytes:
    """A .tar.gz of text files (name -> content): the source archives tests submit and deploy."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def npm_install(directory: Path, done: Path, *, ci: bool = True, timeout: float = 600) -> None:
    """Install ``directory``'s npm packages once (``npm ci`` from its lock file, or ``npm install``
    where the project keeps none), unless ``done`` exists. ``make test`` runs on two workers that
    may ask for the same directory at once: an exclusive lock on ``<directory>/.npm-install.lock``
    lets one install while the other waits, so node_modules is never written by two npms."""
    import fcntl

    with open(directory / ".npm-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return
        cmd = ["npm", "ci" if ci else "install", "--no-audit", "--no-fund", "--loglevel=error"]
        out = subprocess.run(cmd, cwd=directory, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"{' '.join(cmd)} in {directory}: " + out.stdout[-2000:] + out.stderr[-2000:]
    assert done.exists(), f"{done} is missing after npm installed {directory}"


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:  # noqa: ASYNC109
    """Poll ``predicate`` (a function returning a value or an awaitable) until its value is truthy;
    return that value, or fail the test with the last value seen after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(interval)


@dataclass
class Infra:
    database_url: str
    nats_url: str
    redis_url: str
    workdir: Path
    postgres: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    redis: EmbeddedRedis | None = None

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.database_url, "NATS_URL": self.nats_url, "REDIS_URL": self.redis_url}


def _docker_available() -> bool:
    if not shutil.which("docker") or os.environ.get("WEMCP_TEST_NO_DOCKER"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _containers(stack: list[Any]) -> tuple[str, str, str]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.postgres import PostgresContainer
    from testcontainers.redis import RedisContainer

    pg = PostgresContainer("pgvector/pgvector:pg17", username="postgres", password="postgres",  # noqa: S106  (throwaway container)
                           dbname="wemcp")
    pg.start()
    stack.append(pg)
    nats = DockerContainer("nats:2.10").with_command("-js").with_exposed_ports(4222)
    nats.start()
    stack.append(nats)
    wait_for_logs(nats, "Server is ready")
    redis = RedisContainer("redis:7")
    redis.start()
    stack.append(redis)
    db = pg.get_connection_url().replace("postgresql+psycopg2://", "postgresql://")
    return (db, f"nats://{nats.get_container_host_ip()}:{nats.get_exposed_port(4222)}",
            f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0")


async def _prepare_database(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect("postgresql://" + url.split("://", 1)[1])
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector; CREATE EXTENSION IF NOT EXISTS pg_trgm;")
    finally:
        await conn.close()


def pytest_configure(config: pytest.Config) -> None:
    from wemcp.common.trust import SETTING, new_key_ring

    # a fresh ring per session (not the published development key): tests prove the credential works
    os.environ.setdefault(SETTING, new_key_ring("test"))


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    workdir = Path(tempfile.mkdtemp(prefix="wemcp-test-"))
    containers: list[Any] = []
    pg = nats = redis = None
    db_url = os.environ.get("WEMCP_TEST_DATABASE_URL")
    nats_url = os.environ.get("WEMCP_TEST_NATS_URL")
    redis_url = os.environ.get("WEMCP_TEST_REDIS_URL")
    try:
        if not (db_url and nats_url and redis_url) and _docker_available():
            c_db, c_nats, c_redis = _containers(containers)
            db_url, nats_url, redis_url = db_url or c_db, nats_url or c_nats, redis_url or c_redis
        if not db_url:
            pg = EmbeddedPostgres(workdir / "postgres", durable=False)
            pg.start()
            db_url = pg.url
        if not nats_url:
            nats = EmbeddedNats(workdir / "nats")
            nats.start()
            nats_url = nats.url
        if not redis_url:
            redis = EmbeddedRedis(workdir / "redis", persistent=False)
            redis.start()
            redis_url = redis.url
        asyncio.run(_prepare_database(db_url))
        from wemcp.common.migrations import upgrade

        for service in MIGRATED:
            upgrade(service, db_url)
        yield Infra(db_url, nats_url, redis_url, workdir, pg, nats, redis)
    finally:
        for server in (redis, nats, pg):
            if server is not None:
                server.stop()
        for c in reversed(containers):
            c.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest_asyncio.fixture
async def clean_db(infra: Infra) -> AsyncIterator[None]:
    import asyncpg

    conn = await asyncpg.connect("postgresql://" + infra.database_url.split("://", 1)[1])
    try:
        rows = await conn.fetch(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY($1::text[]) "
            "AND tablename <> 'alembic_version'", list(MIGRATED))
        if rows:
            names = ", ".join(f'"{r["schemaname"]}"."{r["tablename"]}"' for r in rows)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
    yield


@pytest_asyncio.fixture
async def clean_bus(infra: Infra) -> AsyncIterator[None]:
    import nats as nats_client
    from nats.js.errors import NotFoundError

    from wemcp.common.bus import ensure_streams
    from wemcp.common.events.base import STREAMS

    nc = await nats_client.connect(infra.nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        for spec in STREAMS:
            for info in await js.consumers_info(spec.name):
                # an ephemeral consumer of a client the last test closed (a KV watch, an ordered
                # consumer) may vanish on its own between the listing and the delete: gone is the goal
                with contextlib.suppress(NotFoundError):
                    await js.delete_consumer(spec.name, info.name)
            await js.purge_stream(spec.name)
    finally:
        await nc.close()
    yield


@pytest_asyncio.fixture
async def clean_redis(infra: Infra) -> AsyncIterator[None]:
    from redis.asyncio import Redis

    r = Redis.from_url(infra.redis_url)
    try:
        await r.flushdb()
    finally:
        await r.aclose()
    yield


@pytest.fixture
def settings_for(infra: Infra) -> Callable[..., Any]:
    """``settings_for(Settings, port=0, ...)``: a service's settings on the test infrastructure,
    with a short JetStream ack wait so redeliveries happen within a test."""

    def make(cls: type[Any], **overrides: Any) -> Any:
        values: dict[str, Any] = {"database_url": infra.database_url, "nats_url": infra.nats_url,
                                  "redis_url": infra.redis_url, "bus_ack_wait_seconds": 2.0,
                                  "log_format": "console",
                                  # the gateway's call-event spool: one fresh directory per instance
                                  # (other services' settings ignore it)
                                  "spool_dir": infra.workdir / "gateway-spool" / uuid.uuid4().hex}
        values.update(overrides)
        return cls(**values)

    return make


def metric_reader() -> Any:
    """An in-memory reader of the process's OpenTelemetry metrics, for tests that check what the code
    records: the first call installs an SDK meter provider with it (instruments already made through
    the API bind to it), later calls return the same reader."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    global _READER
    if _READER is None:
        _READER = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
    return _READER


def metric_points(reader: Any) -> dict[str, list[Any]]:
    """Every data point ``reader`` holds, by instrument name."""
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in (data.resource_metrics if data else []):
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


_READER: Any = None
