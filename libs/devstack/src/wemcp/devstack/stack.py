"""The whole platform on one machine: infrastructure (embedded or given by URL), migrations and one
process per service, supervised. ``make run`` and the end-to-end tests both use :class:`Stack`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx

from wemcp.devstack.infra import EmbeddedNats, EmbeddedPostgres, EmbeddedRedis, free_port, port_open

SERVICES: tuple[str, ...] = ("auth", "catalog", "goods", "deployer", "ratelimit", "crawler", "agents")
MIGRATED: tuple[str, ...] = SERVICES  # every service but the gateway owns a schema


@dataclass
class ServiceProcess:
    name: str
    port: int
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    # the module run with ``python -m``: a service's ``wemcp.<name>.main`` unless given (the stand-ins)
    module: str | None = None
    args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", self.module or f"wemcp.{self.name}.main", *self.args],
                                     env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None:
            self.signal(signal.SIGKILL)
            self.proc.wait(5)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


@dataclass
class Stack:
    data_dir: Path
    gateway_port: int = 8000
    database_url: str | None = None
    nats_url: str | None = None
    redis_url: str | None = None
    durable: bool = True
    # Redis keeps an append-only file (survives a restart) — by default when ``durable``
    redis_persistent: bool | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    postgres: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    redis: EmbeddedRedis | None = None

    # -- infrastructure -------------------------------------------------------------------------
    def start_infra(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        if not self.database_url:
            self.postgres = EmbeddedPostgres(self.data_dir / "postgres", durable=self.durable)
            self.postgres.start()
            self.database_url = self.postgres.url
        if not self.nats_url:
            self.nats = EmbeddedNats(self.data_dir / "nats")
            self.nats.start()
            self.nats_url = self.nats.url
        if not self.redis_url:
            self.redis = EmbeddedRedis(self.data_dir / "redis", persistent=self.durable if self.redis_persistent is None
                                       else self.redis_persistent)
            self.redis.start()
            self.redis_url = self.redis.url

    def migrate(self, services: Iterable[str] = MIGRATED) -> None:
        assert self.database_url
        env = {**os.environ, **self.extra_env, "DATABASE_URL": self.database_url}
        # agents_0003 re-seals stored model-provider keys: it needs the secret the agents process gets
        env.setdefault("WEMCP_AGENTS_PROVIDER_KEY_SECRET", self._local_secret("agents-provider-key-secret"))
        subprocess.run([sys.executable, "-m", "wemcp.devstack.cli", "migrate", *services], env=env, check=True)

    def infra_env(self) -> dict[str, str]:
        assert self.database_url and self.nats_url and self.redis_url
        return {"DATABASE_URL": self.database_url, "NATS_URL": self.nats_url, "REDIS_URL": self.redis_url}

    def service_keys(self) -> str:
        """``WEMCP_SERVICE_KEYS`` of this stack: the environment's, else one generated into the data
        directory (like the KEK) so restarts keep it."""
        return os.environ.get("WEMCP_SERVICE_KEYS") or f"local:{self._local_secret('service-key')}"

    def _local_secret(self, name: str) -> str:
        """A random secret generated once per data directory (development stacks only)."""
        import secrets

        path = self.data_dir / name
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def env_file(self) -> Path:
        """Written while the stack runs, so operator commands (``make admin``) find it."""
        return self.data_dir / "stack.env"

    def write_env_file(self) -> None:
        env = {**self.infra_env(), "WEMCP_AUTH_DEV_KEK_FILE": str(self.data_dir / "auth-dev-kek"),
               "AGENT_RUN_SECRET": self._local_secret("agent-run-secret"),
               "WEMCP_SERVICE_KEYS": self.service_keys(),
               "WEMCP_GATEWAY_URL": f"http://127.0.0.1:{self.gateway_port}"}
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        self.env_file.chmod(0o600)

    # -- services -------------------------------------------------------------------------------
    def start_services(self, names: Iterable[str] = (*SERVICES, "gateway"), wait: float = 60.0) -> float:
        """Start the named services (the gateway last) and wait until each answers /healthz 200.
        Returns the seconds it took."""
        t0 = time.monotonic()
        names = list(names)
        base_env = {**os.environ, **self.infra_env(), **self.extra_env}
        base_env.setdefault("LOG_FORMAT", "json")
        # auth's development key-encryption key lives with the data it protects
        base_env.setdefault("WEMCP_AUTH_DEV_KEK_FILE", str(self.data_dir / "auth-dev-kek"))
        # agents sign run contexts that gateway and ratelimit verify: one shared secret per stack
        base_env.setdefault("AGENT_RUN_SECRET", self._local_secret("agent-run-secret"))
        # the platform's service-to-service credential (wemcp.common.trust): one key ring per stack
        base_env.setdefault("WEMCP_SERVICE_KEYS", self.service_keys())
        # model providers' API keys are sealed under this (development stacks only)
        base_env.setdefault("WEMCP_AGENTS_PROVIDER_KEY_SECRET", self._local_secret("agents-provider-key-secret"))
        base_env.setdefault("WEMCP_AGENTS_GATEWAY_URL", f"http://127.0.0.1:{self.gateway_port}")
        base_env.setdefault("WEMCP_CATALOG_GATEWAY_PUBLIC_URL", f"http://127.0.0.1:{self.gateway_port}")
        # a provider sign-in or a third-party connection ends in the console, not on a JSON page
        base_env.setdefault("WEMCP_AUTH_POST_LOGIN_REDIRECT", f"http://127.0.0.1:{self.gateway_port}/account")
        ports = {name: free_port() for name in names if name != "gateway"}
        ports.update({n: p.port for n, p in self.services.items() if n not in ports})
        if "catalog" in ports:  # the deployer fetches uploaded source archives from the catalog
            base_env.setdefault("WEMCP_DEPLOYER_CATALOG_URL", f"http://127.0.0.1:{ports['catalog']}")
            # goods refreshes a product's copy from the catalog's detail on server.updated
            base_env.setdefault("WEMCP_GOODS_CATALOG_URL", f"http://127.0.0.1:{ports['catalog']}")
        if "auth" in ports:  # the catalog asks auth which GitHub accounts a user linked (names)
            base_env.setdefault("WEMCP_CATALOG_AUTH_URL", f"http://127.0.0.1:{ports['auth']}")
        for name in names:
            if name == "gateway":
                continue
            port = ports[name]
            env = {**base_env, f"WEMCP_{name.upper()}_PORT": str(port), f"WEMCP_{name.upper()}_HOST": "127.0.0.1"}
            self.services[name] = ServiceProcess(name, port, self.data_dir / "logs" / f"{name}.log", env)
        if "gateway" in names:
            env = {**base_env, "WEMCP_GATEWAY_PORT": str(self.gateway_port), "WEMCP_GATEWAY_HOST": "127.0.0.1"}
            # call events NATS did not take wait here, with the stack's other data
            env.setdefault("WEMCP_GATEWAY_SPOOL_DIR", str(self.data_dir / "gateway" / "spool"))
            for svc in SERVICES:
                if svc in self.services:
                    env[f"WEMCP_GATEWAY_{svc.upper()}_URL"] = self.services[svc].url
            self.services["gateway"] = ServiceProcess("gateway", self.gateway_port,
                                                      self.data_dir / "logs" / "gateway.log", env)
        for name in names:
            self.services[name].start()
        self.wait_healthy(names, wait)
        return time.monotonic() - t0

    def wait_healthy(self, names: Iterable[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for name in list(pending):
                    svc = self.services[name]
                    if not svc.alive():
                        raise RuntimeError(f"service {name} exited with code {svc.proc.returncode if svc.proc else '?'}"
                                           f":\n{svc.log_tail()}")
                    if port_open(svc.port):
                        with contextlib.suppress(httpx.HTTPError):
                            if client.get(f"{svc.url}/healthz").status_code == 200:
                                pending.remove(name)
                if pending and time.monotonic() > deadline:
                    tails = "\n".join(f"--- {n}:\n{self.services[n].log_tail()}" for n in pending)
                    raise TimeoutError(f"not healthy within {timeout:g} s: {', '.join(pending)}\n{tails}")
                if pending:
                    time.sleep(0.05)

    def restart_service(self, name: str, wait: float = 30.0) -> None:
        svc = self.services[name]
        svc.stop()
        svc.start()
        self.wait_healthy([name], wait)

    def kill_service(self, name: str, wait: float = 60.0) -> float:
        """SIGKILL a service's process group (a crash), start it again as the supervisor would and
        wait until it is healthy. Returns the seconds from the kill until it answered /healthz."""
        t0 = time.monotonic()
        self.services[name].kill()
        self.services[name].start()
        self.wait_healthy([name], wait)
        return time.monotonic() - t0

    # -- restarting the embedded infrastructure ------------------------------------------------
    def infra_server(self, name: str) -> EmbeddedPostgres | EmbeddedNats | EmbeddedRedis:
        """The embedded server ``postgres`` / ``nats`` / ``redis`` this stack started (a server given by
        URL is not ours to restart)."""
        server = {"postgres": self.postgres, "nats": self.nats, "redis": self.redis}[name]
        if server is None:
            raise RuntimeError(f"{name} was given by URL, not started by this stack: it cannot be restarted here")
        return server

    def stop_infra(self, name: str) -> None:
        """Stop one embedded server by its PID (clean shutdown: SIGINT for Postgres, SIGTERM otherwise)."""
        self.infra_server(name).stop()

    def start_infra_again(self, name: str) -> None:
        """Start a stopped embedded server again on the same port and data directory."""
        self.infra_server(name).start()

    def stop_services(self) -> None:
        # the gateway first, so nothing new comes in while the others drain
        order = ["gateway", *[n for n in self.services if n != "gateway"]]
        for name in order:
            if name in self.services:
                self.services[name].signal(signal.SIGTERM)
        for name in order:
            if name in self.services:
                self.services[name].stop()

    def stop(self) -> None:
        self.stop_services()
        for server in (self.redis, self.nats, self.postgres):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
