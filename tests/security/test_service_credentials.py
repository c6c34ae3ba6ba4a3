"""Issue 13, item 2: service-to-service authentication, attacked from inside the service network.

Each test plays someone who reached a service's port, the deployer's bridge or a cloud function's
public trigger without holding the platform's keys. The assertions are built here by hand, in the
wire format of ``wemcp.common.trust`` (``v1.<kid>.<claims>.<HMAC-SHA256>``), so the tests run
unchanged on the commit before the fix (where they fail: the attack worked) and pin the format the
cloud bridges implement on their own.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio

from wemcp.devstack.infra import free_port
from wemcp.devstack.testing import serve_app, wait_for

RUNTIME = Path(__file__).resolve().parents[2] / "services/deployer/src/wemcp/deployer/runtime"
SYSTEM_USER = "00000000-0000-0000-0000-000000000000"
SYSTEM_KEY = "sk-system-" + secrets.token_hex(8)
# the session's ring (the devstack plugin sets it; on the old commit nothing read it)
RING = os.environ.setdefault("WEMCP_SERVICE_KEYS", f"sec:{secrets.token_urlsafe(32)}")
KID, _, SECRET = RING.split(",")[0].strip().partition(":")


ECHO_CHILD = textwrap.dedent('''
    import json, sys
    for line in sys.stdin:
        msg = json.loads(line)
        if "id" in msg and "method" in msg:
            print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"protocolVersion": "2025-06-18",
                  "capabilities": {}, "serverInfo": {"name": "echo", "version": "1"}}}), flush=True)
''')


# -- the wire format, by hand -------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims: dict[str, Any], key: bytes = SECRET.encode(), kid: str = KID) -> str:
    head = f"v1.{kid}.{_b64(json.dumps(claims).encode())}"
    return f"{head}.{_b64(hmac.new(key, head.encode(), hashlib.sha256).digest())}"


def claims(aud: str, *, age: int = 0, lifetime: int = 120, **extra: Any) -> dict[str, Any]:
    iat = int(time.time()) - age
    return {"iss": "gateway", "aud": aud, "iat": iat, "exp": iat + lifetime, **extra}


def bridge_key(slug: str, key: bytes = SECRET.encode()) -> bytes:
    return hmac.new(key, b"wemcp-derive:bridge:" + slug.encode(), hashlib.sha256).digest()


def tampered(token: str) -> str:
    """The same signature over claims raised to superadmin."""
    v, kid, payload, mac = token.split(".")
    raised = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raised.update(sub=str(uuid.uuid4()), role="superadmin")
    return f"{v}.{kid}.{_b64(json.dumps(raised).encode())}.{mac}"


def as_gateway(aud: str, user_id: str, role: str) -> dict[str, str]:
    """How the gateway speaks for a user, before and after the fix alike: the signed assertion (read
    since the fix) and the bare headers (trusted before it, ignored beside an assertion since)."""
    return {"x-wemcp-assertion": sign(claims(aud, sub=user_id, role=role, login="t")),
            "x-wemcp-user-id": user_id, "x-wemcp-user-role": role}


BAD_CREDENTIALS = {
    "none": lambda aud: {},
    "expired": lambda aud: {"x-wemcp-assertion": sign(claims(aud, age=200, lifetime=100))},
    "wrong-key": lambda aud: {"x-wemcp-assertion": sign(claims(aud), key=b"a-key-the-attacker-made-up-000")},
    "tampered": lambda aud: {"x-wemcp-assertion": tampered(sign(claims(aud, sub=str(uuid.uuid4()))))},
    "other-audience": lambda aud: {"x-wemcp-assertion": sign(claims("catalog" if aud != "catalog" else "auth"))},
    "bare-headers": lambda aud: {"x-wemcp-user-id": SYSTEM_USER, "x-wemcp-user-role": "superadmin"},
}


# -- the services, on real loopback ports ---------------------------------------------------------------
@pytest_asyncio.fixture
async def auth(settings_for, clean_db, clean_bus, clean_redis, tmp_path) -> AsyncIterator[tuple[str, str]]:
    """auth on a loopback port, holding an admin's system key; (its URL, the superadmin's id)."""
    from wemcp.auth import service
    from wemcp.auth.config import Settings
    from wemcp.auth.main import SPEC
    from wemcp.common.sealing import Keyring
    from wemcp.common.service import running

    settings = settings_for(Settings, keks=Keyring.generate_spec("k1"), active_kek="k1",
                            dev_kek_file=str(tmp_path / "kek"), public_url="http://wemcp.test")
    async with running(SPEC, settings) as app:
        st = app.state.runtime.extras["auth"]
        async with st.sessions() as s, s.begin():  # an admin's system key, as /api/v1/vault/system stores it
            root = await service.create_user(s, login="root", role="superadmin")
            await service.put_secret(s, st.keyring, uuid.UUID(SYSTEM_USER), "io.github.x/maps", "API_KEY", SYSTEM_KEY)
        async with serve_app(app) as url:
            yield url, str(root.id)


@pytest.fixture
def auth_url(auth: tuple[str, str]) -> str:
    return auth[0]


@pytest_asyncio.fixture
async def catalog_url(settings_for, clean_db, clean_bus) -> AsyncIterator[str]:
    from wemcp.catalog.config import Settings
    from wemcp.catalog.main import SPEC
    from wemcp.common.service import running

    async with running(SPEC, settings_for(Settings)) as app, serve_app(app) as url:
        yield url


async def test_forged_identity_headers_straight_to_a_service_port_are_401(auth):
    """Anyone on the service network speaks as the superadmin (whose id is public as an owner_id)
    by setting two headers."""
    url, root_id = auth
    async with httpx.AsyncClient(base_url=url) as c:
        me = await c.get("/api/v1/vault/system", headers={"x-wemcp-user-id": root_id,
                                                          "x-wemcp-user-role": "superadmin",
                                                          "x-wemcp-user-login": "mallory"})
        assert me.status_code == 401, me.text
        assert me.headers["content-type"] == "application/problem+json"
        assert "****" not in me.text


@pytest.mark.parametrize("credential", list(BAD_CREDENTIALS))
async def test_internal_vault_without_a_valid_credential_is_401(auth_url, credential):
    """`/internal/auth/vault/<nil user>` handed out the platform's decrypted system keys to anyone."""
    async with httpx.AsyncClient(base_url=auth_url) as c:
        r = await c.get(f"/internal/auth/vault/{SYSTEM_USER}", params={"server": "io.github.x/maps"},
                        headers=BAD_CREDENTIALS[credential]("auth"))
    assert r.status_code == 401, r.text
    assert SYSTEM_KEY not in r.text and r.headers["content-type"] == "application/problem+json"


async def test_internal_vault_with_the_platform_credential_works(auth_url):
    """The control: the gateway's assertion still reads the vault."""
    async with httpx.AsyncClient(base_url=auth_url) as c:
        r = await c.get(f"/internal/auth/vault/{SYSTEM_USER}", params={"server": "io.github.x/maps"},
                        headers={"x-wemcp-assertion": sign(claims("auth"))})
    assert r.status_code == 200 and r.json()["values"] == {"API_KEY": SYSTEM_KEY}


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/internal/auth/jwks", None),
    ("POST", "/internal/auth/api-keys/resolve", {"key_hash": "0" * 64}),
    ("GET", f"/internal/auth/connections/{uuid.UUID(int=3)}/maps", None),
    ("GET", f"/internal/auth/users/{uuid.UUID(int=3)}/identities", None),
    ("POST", "/internal/bus/probes", {"count": 1, "note": "attack"}),
    ("GET", "/internal/bus/outbox", None),
])
async def test_every_internal_route_of_auth_needs_the_credential(auth_url, method, path, body):
    async with httpx.AsyncClient(base_url=auth_url) as c:
        r = await c.request(method, path, json=body)
        assert r.status_code == 401, r.text
        ok = await c.request(method, path, json=body, headers={"x-wemcp-assertion": sign(claims("auth"))})
        assert ok.status_code < 400 or ok.status_code == 404, ok.text  # the platform gets through


async def test_stored_archives_need_the_credential(catalog_url):
    """`/internal/archives/<sha256>` served any uploaded source archive to whoever asked."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tf:
        data = b"console.log('private source')"
        info = tarfile.TarInfo("index.js")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    archive = raw.getvalue()
    user = as_gateway("catalog", str(uuid.uuid4()), "user")
    async with httpx.AsyncClient(base_url=catalog_url) as c:
        # the user's own namespace (names.py): a name they need not prove
        own = (await c.get("/api/v1/names/mine", headers=user)).json()["platform_namespace"]
        manifest = {"name": f"{own}/notes", "version": "0.1.0", "runtime": "node", "entrypoint": "index.js",
                    "description": "Notes"}
        up = await c.post("/api/v1/servers/archive", headers=user,
                          data={"manifest": json.dumps(manifest)},
                          files={"archive": ("src.tar.gz", archive, "application/octet-stream")})
        assert up.status_code == 202, up.text
        sha = hashlib.sha256(archive).hexdigest()
        for bad in ("none", "wrong-key", "other-audience", "expired"):
            r = await c.get(f"/internal/archives/{sha}", headers=BAD_CREDENTIALS[bad]("catalog"))
            assert r.status_code == 401 and r.content != archive, (bad, r.status_code)
        ok = await c.get(f"/internal/archives/{sha}",
                         headers={"x-wemcp-assertion": sign({**claims("catalog"), "iss": "deployer"})})
        assert ok.status_code == 200 and ok.content == archive


# -- the deployer's local bridge ---------------------------------------------------------------------------------
async def test_the_local_bridge_answers_only_the_platform(tmp_path):
    """Any local process (a hosted server's child included) could call every hosted server through
    the bridge, with whatever X-WeMcp-Env-* values it liked."""
    from wemcp.deployer import sandbox
    from wemcp.deployer.bridge import Bridge, Hosted
    from wemcp.deployer.child import Command

    (tmp_path / "echo.py").write_text(ECHO_CHILD)
    bridge = Bridge(caps=sandbox.Capabilities("restricted", own_uid=False, netns=False), limits=sandbox.Limits(),
                    run_dir=tmp_path / "run")
    for slug in ("weather", "maps"):
        bridge.register(Hosted(slug=slug, make_command=lambda env: Command(
            argv=[sys.executable, str(tmp_path / "echo.py")], root=tmp_path, env={}),
            allowed_env={"API_KEY"}))
    await bridge.start()
    try:
        url = bridge.endpoint("weather")
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}
        attempts = {
            "none": {},
            "another slug's credential": {"x-wemcp-assertion": sign(claims("bridge:maps"), key=bridge_key("maps"),
                                                                    kid=KID)},
            "platform key, not the slug's": {"x-wemcp-assertion": sign(claims("bridge:weather"))},
            "expired": {"x-wemcp-assertion": sign(claims("bridge:weather", age=200, lifetime=100),
                                                  key=bridge_key("weather"))},
        }
        async with httpx.AsyncClient(timeout=10) as c:
            for what, headers in attempts.items():
                r = await c.post(url, json=init, headers={**headers, "x-wemcp-env-api-key": "x"})
                assert r.status_code == 401, (what, r.status_code, r.text)
            sse = await c.get(url.removesuffix("/mcp") + "/sse")
            assert sse.status_code == 401
            assert not bridge.hosted["weather"].children  # nothing was started for the intruder
            # the control: the gateway's credential for this slug (DELETE needs no child)
            ok = await c.delete(url, headers={"x-wemcp-assertion": sign(claims("bridge:weather"),
                                                                        key=bridge_key("weather"))})
            assert ok.status_code == 204
    finally:
        await bridge.close()


# -- a cloud function's bundled bridge (runtime/wemcp_bridge.py and .js) -------------------------------------


@pytest.mark.parametrize("runtime", ["python", "node"])
async def test_a_cloud_function_refuses_a_credential_for_another_slug(tmp_path, runtime):
    """A function's HTTP trigger is public: it answered anyone. It now holds only the keys derived
    for its own slug, so even the platform's credential for another hosted server is refused."""
    if runtime == "node" and shutil.which("node") is None:
        pytest.fail("node is part of the development environment (make install)")
    (tmp_path / "echo.py").write_text(ECHO_CHILD)
    port = free_port()
    bridge = [sys.executable, str(RUNTIME / "wemcp_bridge.py")] if runtime == "python" else \
        ["node", str(RUNTIME / "wemcp_bridge.js")]
    env = {"PATH": os.environ["PATH"], "WEMCP_BRIDGE_KEYS": f"{KID}:{bridge_key('weather').hex()}",
           "WEMCP_BRIDGE_AUDIENCE": "bridge:weather"}
    proc = subprocess.Popen([*bridge, "--port", str(port), "--host", "127.0.0.1", "--", sys.executable,
                             str(tmp_path / "echo.py")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/mcp"
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            async def up() -> bool:
                assert proc.poll() is None, "the bridge exited"
                try:
                    return (await c.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(up, timeout=20)
            for what, token in (("none", None),
                                ("maps's credential", sign(claims("bridge:maps"), key=bridge_key("maps"))),
                                ("maps's key, weather's audience", sign(claims("bridge:weather"),
                                                                        key=bridge_key("maps"))),
                                ("the platform key itself", sign(claims("bridge:weather"))),
                                ("tampered", tampered(sign(claims("bridge:weather"), key=bridge_key("weather")))),
                                ("expired", sign(claims("bridge:weather", age=200, lifetime=100),
                                                 key=bridge_key("weather")))):
                r = await c.post(url, json=init, headers={"x-wemcp-assertion": token} if token else {})
                assert r.status_code == 401, (what, r.status_code, r.text)
            ok = await c.post(url, json=init, headers={
                "x-wemcp-assertion": sign(claims("bridge:weather"), key=bridge_key("weather"))})
            assert ok.status_code == 200 and ok.headers.get("mcp-session-id"), ok.text
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


# -- production never runs on the published development key ----------------------------------------------------
async def test_production_refuses_to_start_without_service_keys(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "WEMCP_SERVICE_KEYS"}
    env.update(WEMCP_ENV="production", DATABASE_URL="postgresql://u@127.0.0.1:1/db", NATS_URL="nats://127.0.0.1:1",
               REDIS_URL="redis://127.0.0.1:1/0", WEMCP_GOODS_STARTUP_TIMEOUT_SECONDS="1",
               WEMCP_GOODS_PORT=str(free_port()))
    exe = Path(sys.executable).with_name("wemcp-goods")
    out = await asyncio.to_thread(subprocess.run, [str(exe)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "WEMCP_SERVICE_KEYS" in lines[0], out.stderr
