"""The development stand-ins ``make run`` adds, so trying a tool and chatting with an agent work
with nothing configured. Development stacks only: every entry point refuses ``WEMCP_ENV=production``.

- the **stand-in model provider** (:mod:`wemcp.devstack.standin`), a supervised process on a loopback
  port, registered through the public admin API as the agents service's model provider
  ``dev-stand-in`` (model ``dev-stand-in``);
- the **demo server** (``demo_server/``: echo, add, current_time, greet), submitted as a source archive
  through the public API by the development platform account and deployed by the deployer into the
  sandbox like any server.

Both go through the gateway with the API key of the development platform account (login
``wemcp-dev``, a superadmin made by auth's operator command, as ``make admin`` makes one); the key is
kept in ``<data>/dev-platform-key`` (0600) so restarts reuse it. Re-running is idempotent: the
provider is updated in place (its port changes per run), the archive's name and version are the same
submission, so nothing is listed twice.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx

from wemcp.devstack.standin import MODEL, PROVIDER, production

DEMO_DIR = Path(__file__).with_name("demo_server")
PLATFORM_LOGIN = "wemcp-dev"
KEY_FILE = "dev-platform-key"


class StandInRefused(RuntimeError):
    """The stand-ins exist only on development stacks."""


def refuse_in_production() -> None:
    if production():
        raise StandInRefused("WEMCP_ENV=production: the development stand-ins (model provider, demo server) "
                             "are never run in production")


def demo_manifest() -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((DEMO_DIR / "manifest.json").read_text())
    return manifest


def demo_archive() -> bytes:
    """The demo server as a .tar.gz, byte for byte the same on every run (no times in it)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tf:
        for name in ("server.py", "requirements.txt"):
            data = (DEMO_DIR / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def stand_in_process(stack: Any) -> Any:
    """Add the stand-in model provider to ``stack`` as a supervised process (not started)."""
    from wemcp.devstack.infra import free_port
    from wemcp.devstack.stack import ServiceProcess

    refuse_in_production()
    port = free_port()
    env = {**os.environ, "WEMCP_ENV": os.environ.get("WEMCP_ENV", "development")}
    proc = ServiceProcess("standin", port, stack.data_dir / "logs" / "standin.log", env,
                          module="wemcp.devstack.standin", args=("--port", str(port)))
    stack.services["standin"] = proc
    return proc


def start_stand_in(stack: Any, wait: float = 30.0) -> Any:
    proc = stand_in_process(stack)
    proc.start()
    stack.wait_healthy(["standin"], wait)
    return proc


def platform_key(stack: Any, gateway_url: str) -> str:
    """The development platform account's API key: the one kept under the data directory while it
    still works, else a new one from auth's operator command (the account is made once)."""
    refuse_in_production()
    path = stack.data_dir / KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        with httpx.Client(timeout=15) as c:
            if c.get(f"{gateway_url}/api/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200:
                return key
    env = {**os.environ, **stack.infra_env(), "WEMCP_AUTH_DEV_KEK_FILE": str(stack.data_dir / "auth-dev-kek"),
           "WEMCP_SERVICE_KEYS": stack.service_keys()}
    out = subprocess.run([sys.executable, "-m", "wemcp.auth.admin", "create-superadmin", "--login", PLATFORM_LOGIN],
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    key = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if out.returncode != 0 or not key.startswith("wmk_"):
        raise RuntimeError(f"could not make the development platform account: {out.stderr.strip()[-500:]}")
    path.write_text(key)
    path.chmod(0o600)
    return key


@dataclass
class Seeded:
    provider_id: str
    model: str
    demo_slug: str
    demo_status: str


def register_provider(c: httpx.Client, headers: dict[str, str], base_url: str) -> str:
    """The stand-in as model provider ``dev-stand-in`` (created, or pointed at ``base_url``)."""
    r = c.get("/api/v1/model-providers", headers=headers)
    r.raise_for_status()
    found = next((p for p in r.json() if p["name"] == PROVIDER), None)
    if found is None:
        r = c.post("/api/v1/model-providers", headers=headers,
                   json={"name": PROVIDER, "base_url": base_url, "models": [MODEL]})
    elif found["base_url"] != base_url or found["models"] != [MODEL] or not found["enabled"]:
        r = c.patch(f"/api/v1/model-providers/{found['id']}", headers=headers,
                    json={"base_url": base_url, "models": [MODEL], "enabled": True})
    else:
        return str(found["id"])
    r.raise_for_status()
    return str(r.json()["id"])


def submit_demo(c: httpx.Client, headers: dict[str, str]) -> tuple[str, str]:
    """Submit the demo server's archive; the same name and version again is the same submission."""
    r = c.post("/api/v1/servers/archive", headers=headers, data={"manifest": json.dumps(demo_manifest())},
               files={"archive": ("demo-server.tar.gz", demo_archive(), "application/gzip")})
    r.raise_for_status()
    body = r.json()
    return str(body["slug"]), str(body["status"])


def seed(stack: Any, gateway_url: str, standin_url: str) -> Seeded:
    """Register the stand-in provider and publish the demo server, through the gateway's public API."""
    refuse_in_production()
    key = platform_key(stack, gateway_url)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=gateway_url, timeout=60) as c:
        provider_id = register_provider(c, headers, f"{standin_url}/v1")
        slug, status = submit_demo(c, headers)
    return Seeded(provider_id, MODEL, slug, status)


def start(stack: Any, wait: float = 30.0) -> Seeded:
    """What ``make run`` does once the services are healthy: the stand-in process, then the seed."""
    proc = start_stand_in(stack, wait)
    return seed(stack, f"http://127.0.0.1:{stack.gateway_port}", proc.url)
