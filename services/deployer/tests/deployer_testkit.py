"""Deployer test helpers: the service in-process on the real infrastructure, events published to JetStream."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import nats

from wemcp.common.events.base import Event
from wemcp.common.events.servers import ServerSubmitted
from wemcp.deployer.config import Settings
from wemcp.devstack.testing import tar_gz
from wemcp.devstack.testing import wait_for as _wait_for
from wemcp.testkit.auth import as_user

REPO = Path(__file__).resolve().parents[3]
# Installed packages and the npm/uv caches persist between runs (a repo-ignored path), so only the
# first run downloads; every run still installs into fresh prefixes when a version is new.
CACHE_DIR = REPO / ".data" / "deployer-test"
ADMIN = {"id": "00000000-0000-0000-0000-0000000000ad", "role": "admin", "login": "deployer-test-admin"}


async def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.1) -> Any:
    return await _wait_for(predicate, timeout, interval)


async def _as_admin(request: httpx.Request) -> None:
    request.headers.update(as_user(ADMIN, service="deployer"))


class Harness:
    def __init__(self, app: Any, infra: Any) -> None:
        self.app = app
        self.infra = infra
        # deployments are readable by their owner and admins only: the harness reads them as an admin,
        # with an assertion signed per request (one kept from setup would expire in a long wait)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://deployer", event_hooks={"request": [_as_admin]}
        )

    @property
    def orch(self) -> Any:
        return self.app.state.runtime.extras["orchestrator"]

    async def publish(self, event: Event) -> None:
        nc = await nats.connect(self.infra.nats_url)
        try:
            await nc.jetstream().publish(
                event.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.event_id)}
            )
        finally:
            await nc.close()

    async def deployment(self, slug: str) -> dict[str, Any] | None:
        r = await self.client.get(f"/api/v1/deployments/{slug}")
        return r.json() if r.status_code == 200 else None

    async def until_status(self, slug: str, *statuses: str, timeout: float = 240.0) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            d = await self.deployment(slug)
            return d if d and d["status"] in statuses else None

        return await wait_for(check, timeout=timeout, interval=0.2)

    async def deploy(self, slug: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Submit ``spec`` as server ``slug`` and wait until it is deployed (a failed deployment fails
        the test with its reason and logs); the deployment as the API reads it."""
        await self.publish(ServerSubmitted(server_id=uuid.uuid4(), slug=slug, name=name, spec=spec))
        d = await self.until_status(slug, "deployed", "failed")
        assert d["status"] == "deployed", (d["reason"], d["logs"])
        return d

    async def outbox(self, subject: str | None = None) -> list[dict[str, Any]]:
        import json

        from sqlalchemy import select

        from wemcp.deployer.models import bus_tables

        async with self.app.state.runtime.sessions() as s:
            q = select(bus_tables.outbox.c.subject, bus_tables.outbox.c.payload).order_by(bus_tables.outbox.c.id)
            rows = (await s.execute(q)).all()
        return [{"subject": r.subject, **json.loads(r.payload)} for r in rows if subject in (None, r.subject)]


def deployer_settings(settings_for: Any, tmp_path: Path, **overrides: Any) -> Settings:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "data_dir": CACHE_DIR,
        "archive_dir": tmp_path / "archives",
        "bridge_port": 0,
        "start_timeout_seconds": 60.0,
        "reap_interval_seconds": 0.5,
    }
    values.update(overrides)
    return settings_for(Settings, **values)


@asynccontextmanager
async def running_deployer(settings_for: Any, infra: Any, tmp_path: Path, **overrides: Any) -> AsyncIterator[Harness]:
    """The deployer service in-process on the real infrastructure (its archive store under
    ``tmp_path``), driven through a :class:`Harness`."""
    from wemcp.common.service import running
    from wemcp.deployer.main import SPEC

    (tmp_path / "archives").mkdir(exist_ok=True)
    async with running(SPEC, deployer_settings(settings_for, tmp_path, **overrides)) as app:
        h = Harness(app, infra)
        try:
            yield h
        finally:
            await h.client.aclose()


def bridge_headers(endpoint: str) -> dict[str, str]:
    """The gateway's credential for the bridge behind ``endpoint`` (``.../s/<slug>/mcp``)."""
    from urllib.parse import urlsplit

    from wemcp.common.trust import platform_bridge_headers

    return platform_bridge_headers(urlsplit(endpoint).path.split("/")[2])


def bridge_client(endpoint: str, **kw: Any) -> Any:
    """The official MCP client on a bridge endpoint, with the gateway's credential."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx.AsyncClient(headers=bridge_headers(endpoint), timeout=30)
    return Client(streamable_http_client(endpoint, http_client=http), **kw)


def self_signed(
    directory: Path, common_name: str, *, dns_names: Sequence[str] = (), prefix: str = ""
) -> tuple[Path, Path]:
    """A self-signed CA certificate for 127.0.0.1 (and ``dns_names``) and its key, written to
    ``directory`` as ``<prefix>cert.pem`` (readable by all: a sandboxed server may trust it) and
    ``<prefix>key.pem``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    alt += [x509.DNSName(n) for n in dns_names]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{prefix}cert.pem", directory / f"{prefix}key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(cert_path, 0o644)
    return cert_path, key_path


def make_archive(directory: Path, files: dict[str, str]) -> str:
    """A source archive of ``files`` stored in ``directory`` under its SHA-256, as the catalog stores
    uploads; returns the digest."""
    data = tar_gz(files)
    digest = hashlib.sha256(data).hexdigest()
    (directory / f"{digest}.tar.gz").write_bytes(data)
    return digest


def python_server(directory: Path, entry: str, source: str, **archive: Any) -> dict[str, Any]:
    """The spec of an archived MCP server: ``source`` stored as ``entry`` (in ``directory``), run as
    ``python <entry>`` with mcp==2.3.0; ``archive`` adds to the spec's archive (``environmentVariables``)."""
    manifest = {"command": "python", "args": [entry], "requirements": ["mcp==2.3.0"]}
    return {"archive": {"sha256": make_archive(directory, {entry: source}), "manifest": manifest, **archive}}


def crashing_server(directory: Path, *stderr: str, requirements: list[str] | None = None) -> dict[str, Any]:
    """The spec of an archived server that prints ``stderr`` (Python expressions; ``os`` and ``sys`` are
    imported) and exits at once, as one missing its config file does."""
    source = (
        "import os, sys\n"
        + "".join(f"print({line}, file=sys.stderr)\n" for line in stderr)
        + 'raise SystemExit("config file /etc/tiny.conf missing")\n'
    )
    manifest: dict[str, Any] = {"command": "python", "args": ["crash.py"]}
    if requirements:
        manifest["requirements"] = requirements
    return {"archive": {"sha256": make_archive(directory, {"crash.py": source}), "manifest": manifest}}
