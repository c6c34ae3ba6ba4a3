"""Both sandbox modes contain hostile code; the platform is unaffected. Every test runs on the bwrap path
(`make test` installs bubblewrap through `make sandbox-tools`; one that is missing or broken shows up as
the probe's refusal, with bwrap's own error) and, as root, on the restricted path too. Attacks on a
real hosted server, and the deployer run as an unprivileged uid, are in tests/security/test_sandbox.py."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from services.deployer.tests.deployer_testkit import CACHE_DIR
from wemcp.deployer import sandbox

CAPS = sandbox.probe("bwrap")
MODES = [*(["restricted"] if os.geteuid() == 0 else []), "bwrap"]  # restricted needs root


@pytest.fixture(params=MODES, autouse=True)
def caps(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> sandbox.Capabilities:
    c = sandbox.probe(request.param)
    assert c.refusal is None, c.refusal  # bubblewrap missing or broken: the refusal says why
    monkeypatch.setitem(globals(), "CAPS", c)
    # a uid per mode: processes of one mode's fork bomb still being reaped must not count against the other
    monkeypatch.setitem(globals(), "UID", 260001 + MODES.index(request.param))
    return c
LIMITS = sandbox.Limits(memory_mb=256, cpu_seconds=30, max_processes=32, max_open_files=64)
UID = 260001


async def run_confined(code: str, tmp: Path, *, timeout: float = 30) -> tuple[int, str]:
    home = CACHE_DIR / "run" / f"t-{os.getpid()}-{time.monotonic_ns()}"
    home.mkdir(parents=True, mode=0o700)
    if CAPS.own_uid:
        os.chown(home, UID, UID)
    launch = sandbox.build_launch(CAPS, ["/usr/bin/python3", "-c", code], root=tmp, home=home, env={},
                                  limits=LIMITS, uid=UID)
    proc = await asyncio.create_subprocess_exec(*launch.argv, env=launch.env, cwd=launch.cwd,
                                                preexec_fn=launch.preexec, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        await asyncio.to_thread(sandbox.kill_tree, proc.pid, uid=UID if CAPS.own_uid else None)
    return proc.returncode or 0, out.decode()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = CACHE_DIR / "run" / f"root-{tmp_path.name}"
    r.mkdir(parents=True, exist_ok=True)
    os.chmod(r, 0o755)
    return r


def test_probe_reports_a_working_mode(caps, request):
    assert caps.mode == request.node.callspec.params["caps"]
    assert caps.netns
    if os.geteuid() == 0:
        assert caps.own_uid
    if caps.mode == "restricted":
        assert caps.hide_proc, caps.notes  # a root deployer outside a container may mount a private /proc
    if caps.mode == "bwrap":
        argv = sandbox.build_launch(caps, ["/bin/true"], root=Path("/"), home=Path("/tmp"), env={},
                                    limits=LIMITS, uid=UID).argv
        assert {"--unshare-all", "--unshare-user", "--disable-userns", "--clearenv"} <= set(argv)
        assert "--share-net" not in argv and argv[argv.index("--") + 1] == "/bin/true"
        assert argv[argv.index("--proc") + 1] == "/proc"


def test_without_bubblewrap_an_unprivileged_deployer_refuses(monkeypatch):
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 10001)
    caps = sandbox.probe("auto", "/nonexistent/bwrap")
    assert caps.mode == "none" and not caps.own_uid and not caps.netns
    assert caps.refusal == ("wemcp-deployer: no working sandbox (bubblewrap not found at /nonexistent/bwrap): "
                            "install bubblewrap (make sandbox-tools, or apt-get install bubblewrap) or run the "
                            "deployer as root; see README#isolation")
    with pytest.raises(sandbox.Unavailable, match="no working sandbox"):
        sandbox.build_launch(caps, ["/bin/true"], root=Path("/"), home=Path("/tmp"), env={}, limits=LIMITS,
                             uid=None)
    # asking for the restricted sandbox explicitly says it needs root
    assert "needs the deployer to run as root" in (sandbox.probe("restricted").refusal or "")


def test_a_broken_bubblewrap_is_reported_with_its_error(root):
    fake = root / "bwrap"  # where the probe's uid can run it (not the 0700 pytest tmp dir)
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    caps = sandbox.probe("bwrap", str(fake))
    assert caps.mode == "none"
    assert "bubblewrap does not work here: bwrap: No permissions to create new namespace" in (caps.refusal or "")


async def test_environment_is_cleared(root):
    os.environ["WEMCP_TEST_LEAK"] = "should-not-pass"
    code, out = await run_confined("import os; print(sorted(os.environ))", root)
    assert code == 0, out
    assert "WEMCP_TEST_LEAK" not in out and "DATABASE_URL" not in out


async def test_cannot_read_private_files_outside_its_root(root, tmp_path):
    secret = CACHE_DIR / f"secret-{tmp_path.name}"
    secret.write_text("platform secret")
    os.chmod(secret, 0o600)
    code, out = await run_confined(f"print(open({str(secret)!r}).read())", root)
    # restricted: the file is there but not readable; bwrap: outside its mounts it does not exist at all
    denied = "PermissionError" if CAPS.mode == "restricted" else "FileNotFoundError"
    assert code != 0 and denied in out and "platform secret" not in out
    # nor the deployer's own environment (DATABASE_URL, keys)
    code, out = await run_confined(f"print(open('/proc/{os.getpid()}/environ').read())", root)
    assert code != 0 and ("PermissionError" in out or "FileNotFoundError" in out)


async def test_cannot_write_outside_tmp(root):
    target = root / "planted.txt"
    code, out = await run_confined(f"open({str(target)!r}, 'w').write('x')", root)
    denied = "PermissionError" if CAPS.mode == "restricted" else "Read-only file system"  # bwrap: ro bind
    assert code != 0 and denied in out, out
    assert not target.exists()
    code, out = await run_confined("import os; p=os.environ['HOME']+'/ok'; open(p,'w').write('x'); print('wrote')",
                                   root)
    assert code == 0 and "wrote" in out


async def test_loopback_services_unreachable(root, infra):
    pg = urlsplit(infra.database_url)
    nats_port = urlsplit(infra.nats_url).port
    probe = ("import socket\n"
             "for port in ({pg}, {nats}):\n"
             "    s = socket.socket(); s.settimeout(2)\n"
             "    try:\n        s.connect(('127.0.0.1', port)); print('CONNECTED', port)\n"
             "    except OSError as e:\n        print('refused', port, e.errno)\n")
    _, out = await run_confined(probe.format(pg=pg.port, nats=nats_port), root)
    assert "CONNECTED" not in out and out.count("refused") == 2, out
    # control: the same probe outside the sandbox does connect, so the test can fail
    plain = await asyncio.create_subprocess_exec("/usr/bin/python3", "-c", probe.format(pg=pg.port, nats=nats_port),
                                                 stdout=asyncio.subprocess.PIPE)
    out = (await plain.communicate())[0].decode()
    assert out.count("CONNECTED") == 2, out


async def test_fork_bomb_is_contained_and_platform_unaffected(root, infra):
    bomb = ("import os, time\n"
            "n = 0\n"
            "for _ in range(10000):\n"
            "    try:\n        pid = os.fork()\n    except OSError:\n        n += 1; continue\n"
            "    if pid == 0:\n        os.closerange(0, 3); time.sleep(30); os._exit(0)\n"
            "print('fork refused', n, 'times', flush=True)\n"
            "time.sleep(1)\n")
    _, out = await run_confined(bomb, root, timeout=60)
    assert "fork refused" in out and int(out.split()[2]) > 0, out
    assert sandbox.processes_of_uid(UID) == []  # killed with all its children
    conn = await asyncpg.connect("postgresql://" + infra.database_url.split("://", 1)[1])
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    proc = await asyncio.create_subprocess_exec("/bin/true")
    assert await proc.wait() == 0


async def test_memory_bomb_is_contained(root):
    code, out = await run_confined("b = bytearray(2 * 1024**3); print('allocated')", root)
    assert code != 0 and "MemoryError" in out and "allocated" not in out
