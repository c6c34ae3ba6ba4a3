"""Attacks by a hosted stdio server on the platform around it (issue 13, item 4: the sandbox fails
closed). Every attack runs through the deployer's own code — a deployer process built like the service
(sandbox_deployer.py) deploys a hostile archive (sandbox_attacker.py) with the local backend and calls
its ``attack`` tool — once per way the deployer can be run:

- ``root+bwrap``: the deployer as root with bubblewrap (what `make run` / CI give: `make sandbox-tools`);
- ``root+own-uid``: the deployer as root with bubblewrap unavailable (its setting points to a missing
  binary): a uid of its own per child, an empty network namespace, a /proc that hides other uids;
- ``user+bwrap``: the deployer as an unprivileged uid (the Docker image's 10001) with bubblewrap.

The deployer as an unprivileged uid without bubblewrap must refuse to host anything (last test).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
UNPRIVILEGED = 10001  # the uid the Docker image runs the services as
MISSING_BWRAP = "/nonexistent/bwrap"
REFUSAL = ("wemcp-deployer: no working sandbox (bubblewrap not found at /nonexistent/bwrap): install bubblewrap "
           "(make sandbox-tools, or apt-get install bubblewrap) or run the deployer as root; see README#isolation")


@dataclass(frozen=True)
class Deployer:
    uid: int
    env: dict[str, str]
    mode: str  # the sandbox mode the deployer must report


CONFIGS = {
    "root+bwrap": Deployer(0, {}, "bwrap"),
    "root+own-uid": Deployer(0, {"WEMCP_DEPLOYER_BWRAP": MISSING_BWRAP}, "restricted"),
    "user+bwrap": Deployer(UNPRIVILEGED, {}, "bwrap"),
}


def as_uid(uid: int) -> list[str]:
    """The command prefix that runs a process as ``uid`` with no capabilities (root: nothing). (The
    workspace's interpreter must be runnable by that uid; a pyenv under a 0700 /root here is exec'd by
    setpriv before it drops its capabilities, and then finds the system's 3.11 standard library.)"""
    if uid == 0:
        return []
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all"]


@dataclass
class Project:
    """A checkout's data as the deployer finds it under `make run`: .data/ with auth's key file."""

    root: Path
    kek: Path
    kek_value: str
    archive: str


@pytest.fixture
def project(request: pytest.FixtureRequest) -> Iterator[Project]:
    # under the repository (not the 0700 pytest tmp dir): an unprivileged deployer must reach it
    root = REPO / ".data" / "security-sandbox" / uuid.uuid4().hex[:12]
    data = root / ".data"
    (data / "archives").mkdir(parents=True)
    kek_value = "kek-" + secrets.token_hex(16)
    kek = data / "auth-dev-kek"
    kek.write_text(kek_value)
    kek.chmod(0o600)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        code = b"#!/usr/bin/python3\n" + (HERE / "sandbox_attacker.py").read_bytes()
        info = tarfile.TarInfo("server.py")
        info.size, info.mode = len(code), 0o755
        tf.addfile(info, io.BytesIO(code))
        loop = (REPO / "services" / "deployer" / "tests" / "egress" / "client_server.py").read_bytes()
        info = tarfile.TarInfo("client_server.py")  # its stdio loop
        info.size, info.mode = len(loop), 0o644
        tf.addfile(info, io.BytesIO(loop))
    (data / "archives" / "attacker.tar.gz").write_bytes(buf.getvalue())
    uid = getattr(request, "param", CONFIGS["root+bwrap"]).uid
    for path in [root, *root.rglob("*")]:  # the deployer's own files belong to the deployer's uid
        os.chown(path, uid, uid)
    try:
        yield Project(root, kek, kek_value, "attacker.tar.gz")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def deploy_and_attack(project: Project, deployer: Deployer, kind: str, arg: object) -> dict[str, object]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(project.root), "LOG_LEVEL": "error",
           "WEMCP_DEPLOYER_DATA_DIR": str(project.root / ".data" / "deployer"),
           "WEMCP_DEPLOYER_ARCHIVE_DIR": str(project.root / ".data" / "archives"),
           "WEMCP_DEPLOYER_BRIDGE_PORT": "0", **deployer.env}
    argv = [*as_uid(deployer.uid), sys.executable, str(HERE / "sandbox_deployer.py"), project.archive, kind, str(arg)]
    proc = subprocess.run(argv, env=env, cwd=project.root, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_confined(result: dict[str, object], deployer: Deployer) -> None:
    assert "refused" not in result, result
    assert result["mode"] == deployer.mode, result  # the configuration really ran the mode it names


@pytest.fixture
def sentinel(request: pytest.FixtureRequest) -> Iterator[tuple[int, str]]:
    """Another platform process (a stand-in for a service with DATABASE_URL in its environment),
    running as the deployer's uid like every service of the same install."""
    secret = "sentinel-" + secrets.token_hex(16)
    uid = request.node.callspec.params["project"].uid
    proc = subprocess.Popen([*as_uid(uid), "/usr/bin/python3", "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE, env={"SENTINEL_SECRET": secret})
    # until the uid wrapper has exec'd python with the secret in its environment (read too early, the
    # process's environ is still the wrapper's or empty, and the control read below would fail)
    deadline = time.monotonic() + 10
    while secret.encode() not in Path(f"/proc/{proc.pid}/environ").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield proc.pid, secret
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # it exits when its input closes
        proc.wait(timeout=10)


@pytest.fixture
def loopback_port() -> Iterator[int]:
    """A listening loopback TCP port: a stand-in for Postgres, Redis, NATS or a service port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


params = pytest.mark.parametrize("project", list(CONFIGS.values()), ids=list(CONFIGS), indirect=True)


@params
def test_child_cannot_read_another_process_environ(project: Project, sentinel: tuple[int, str],
                                                   request: pytest.FixtureRequest) -> None:
    pid, secret = sentinel
    own = Path(f"/proc/{pid}/environ").read_bytes()
    assert secret.encode() in own  # control: the secret is there to be read by the same uid outside
    deployer = request.node.callspec.params["project"]
    result = deploy_and_attack(project, deployer, "read", f"/proc/{pid}/environ")
    assert secret not in str(result["text"]) and str(result["text"]).startswith("DENIED"), result
    assert_confined(result, deployer)


@params
def test_child_cannot_read_the_platform_key_file(project: Project, request: pytest.FixtureRequest) -> None:
    deployer = request.node.callspec.params["project"]
    result = deploy_and_attack(project, deployer, "read", project.kek)
    assert project.kek_value not in str(result["text"]) and str(result["text"]).startswith("DENIED"), result
    assert_confined(result, deployer)


@params
def test_child_cannot_connect_to_a_loopback_port(project: Project, loopback_port: int,
                                                 request: pytest.FixtureRequest) -> None:
    with socket.create_connection(("127.0.0.1", loopback_port), timeout=3):
        pass  # control: the port does accept connections from outside the sandbox
    deployer = request.node.callspec.params["project"]
    result = deploy_and_attack(project, deployer, "connect", loopback_port)
    assert result["text"] != "CONNECTED" and str(result["text"]).startswith("DENIED"), result
    assert_confined(result, deployer)


@params
def test_child_runs_as_another_uid_or_in_a_user_namespace(project: Project, request: pytest.FixtureRequest) -> None:
    deployer = request.node.callspec.params["project"]
    result = deploy_and_attack(project, deployer, "identity", "")
    assert "refused" not in result, result
    seen = json.loads(str(result["text"]))
    host_wide = seen["uid_map"] == "0 0 4294967295"  # the initial user namespace
    assert seen["uid"] != result["deployer_uid"] or not host_wide, seen
    assert_confined(result, deployer)


@pytest.mark.parametrize("project", [Deployer(UNPRIVILEGED, {"WEMCP_DEPLOYER_BWRAP": MISSING_BWRAP}, "none")],
                         ids=["user-without-bwrap"], indirect=True)
def test_unprivileged_deployer_without_bubblewrap_refuses(project: Project, request: pytest.FixtureRequest) -> None:
    deployer = request.node.callspec.params["project"]
    result = deploy_and_attack(project, deployer, "identity", "")
    assert result == {"refused": REFUSAL}, result
