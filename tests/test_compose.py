"""Static checks of the container deployment (no Docker engine runs here).

docker-compose.yml, the Dockerfile, .dockerignore and the configuration under deploy/ are parsed and
cross-checked against the code: the compose settings are fed through the image's entrypoint into
each service's real settings class, the dashboard's metric names are tied to the instrument names
the shared library emits, and the entrypoint and healthcheck scripts are executed.
"""

from __future__ import annotations

import fnmatch
import http.server
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from wemcp.common.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
CONTAINER_PORT = 8000
SERVICE_DIRS = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file())
INFRA = {"postgres", "nats", "redis"}
# Images without any tool to run a probe in (distroless); they are started, not probed.
NO_HEALTHCHECK_OK = {"otel-collector": "distroless image: no shell or wget; health_check extension on :13133"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

# OpenTelemetry instrument (name, unit) -> the Prometheus series the collector's exporter produces.
METRICS = {
    ("http.server.duration", "ms"): "http_server_duration_milliseconds_bucket",
    ("bus.messages", None): "bus_messages_total",
    ("outbox.published", None): "outbox_published_total",
    ("outbox.lag", "ms"): "outbox_lag_milliseconds_bucket",
}


# -- helpers ----------------------------------------------------------------------------------------

# Variables compose requires (``${NAME:?...}``): secrets the operator sets, never defaulted in the file.
# The static checks substitute these samples.
OPERATOR_SECRETS = {
    "WEMCP_SERVICE_KEYS": "compose:sample-service-key-for-static-checks",
    "AGENT_RUN_SECRET": "sample-agent-run-secret-for-static-checks",
    "WEMCP_AGENTS_PROVIDER_KEY_SECRET": "sample-provider-key-secret-for-static-checks",
}

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: Any) -> str:
    """Compose variable interpolation with every variable unset: the defaults apply."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group(2) and m.group(2).endswith("?"):
            if m.group(1) in OPERATOR_SECRETS:
                return OPERATOR_SECRETS[m.group(1)]
            raise AssertionError(f"{value!r} requires a variable to be set")
        return m.group(3) or ""

    return _VAR.sub(repl, str(value))


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): interpolate(v) for k, v in env.items()}


def depends_of(svc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):  # short form: no condition
        return {name: {} for name in deps}
    return {name: (spec or {}) for name, spec in deps.items()}


def healthcheck_test(svc: dict[str, Any]) -> list[str] | None:
    hc = svc.get("healthcheck")
    if not hc or hc.get("disable"):
        return None
    test = hc.get("test")
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    if not test or test[0] == "NONE":
        return None
    return [str(x) for x in test]


def published_ports(svc: dict[str, Any]) -> dict[int, int]:
    """container port -> host port (defaults interpolated)."""
    out: dict[int, int] = {}
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out[int(p["target"])] = int(interpolate(p.get("published", p["target"])))
            continue
        parts = interpolate(p).split("/")[0].split(":")
        out[int(parts[-1])] = int(parts[-2]) if len(parts) > 1 else int(parts[-1])
    return out


def bind_mounts(svc: dict[str, Any]) -> list[tuple[Path, str]]:
    mounts = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            if v.get("type") == "bind":
                mounts.append(((ROOT / v["source"]).resolve(), v["target"]))
            continue
        src, target = v.split(":")[:2]
        if src.startswith((".", "/")):
            mounts.append(((ROOT / src).resolve(), target))
    return mounts


def mount_target(svc: dict[str, Any], host_path: Path) -> str:
    for src, target in bind_mounts(svc):
        if src == host_path.resolve():
            return target
    raise AssertionError(f"{host_path.relative_to(ROOT)} is not mounted")


def load_yaml(path: Path) -> Any:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict) and data["services"]
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def one_shot(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services something waits for to *complete*."""
    return {
        dep
        for svc in services.values()
        for dep, spec in depends_of(svc).items()
        if spec.get("condition") == "service_completed_successfully"
    }


def wemcp_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The long-running services built from our Dockerfile."""
    done = one_shot(services)
    return {
        name: svc for name, svc in services.items() if isinstance(svc.get("build"), dict) and name not in done
    }


def run_entrypoint(
    env: dict[str, str], *cmd: str, path_prefix: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": (f"{path_prefix}:" if path_prefix else "") + os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *cmd], env={**base, **env}, capture_output=True, text=True, timeout=20
    )


def container_env(name: str, svc: dict[str, Any]) -> dict[str, str]:
    """The environment a service process sees: compose's, then the entrypoint's defaults."""
    proc = run_entrypoint({**env_of(svc), "SERVICE": svc["build"]["args"]["SERVICE"]}, "env")
    assert proc.returncode == 0, proc.stderr
    env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return {k: v for k, v in env.items() if k != "PATH"}


# -- docker-compose.yml -----------------------------------------------------------------------------


def test_every_service_has_build_or_image(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        assert svc.get("build") or svc.get("image"), f"{name}: neither build nor image"
        if isinstance(svc.get("build"), dict):
            assert (
                ROOT / svc["build"].get("context", ".") / svc["build"].get("dockerfile", "Dockerfile")
            ).is_file()


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    done = one_shot(services)
    assert done == {"migrate"}
    for name, svc in services.items():
        if name in done:
            assert str(svc.get("restart", "no")) == "no", f"{name} is one-shot and must not restart"
            continue
        test = healthcheck_test(svc)
        if name in NO_HEALTHCHECK_OK:
            assert test is None, f"{name} has a healthcheck now: drop it from NO_HEALTHCHECK_OK"
            continue
        assert test and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: no healthcheck"


def test_wemcp_services_are_the_services_directory(services: dict[str, dict[str, Any]]) -> None:
    ours = wemcp_services(services)
    assert sorted(ours) == SERVICE_DIRS
    for name, svc in ours.items():
        build = svc["build"]
        assert Path(ROOT / build.get("context", ".")).resolve() == ROOT, name
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile", name
        assert build.get("args", {}).get("SERVICE") == name, f"{name} builds SERVICE={build.get('args')}"
        assert "command" not in svc and "entrypoint" not in svc, f"{name} must run the image's CMD"
        assert str(svc.get("user", "")).split(":")[0] not in ("root", "0"), f"{name} runs as root"
        assert healthcheck_test(svc) == ["CMD", "python", "/usr/local/lib/wemcp/healthcheck.py"], name


@pytest.mark.parametrize("name", SERVICE_DIRS)
def test_service_settings(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = services[name]
    env = container_env(name, svc)
    required = {"NATS_URL", "REDIS_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "LOG_LEVEL"}
    required |= set() if name == "gateway" else {"DATABASE_URL"}
    assert required <= set(env_of(svc)), f"{name} lacks {sorted(required - set(env_of(svc)))}"

    # infrastructure URLs name the compose services and their ports
    expected_hosts = {
        "NATS_URL": ("nats", 4222),
        "REDIS_URL": ("redis", 6379),
        "OTEL_EXPORTER_OTLP_ENDPOINT": ("otel-collector", 4318),
        "DATABASE_URL": ("postgres", 5432),
    }
    for key, (host, port) in expected_hosts.items():
        if key in env:
            parts = urlsplit(env[key])
            assert (parts.hostname, parts.port) == (host, port), f"{name} {key}={env[key]}"
            assert host in services
    if name != "gateway":
        deps = depends_of(svc)
        for infra in INFRA:
            assert deps.get(infra, {}).get("condition") == "service_healthy", (
                f"{name} does not wait for {infra}"
            )
        assert deps.get("migrate", {}).get("condition") == "service_completed_successfully", name

    # the real settings class accepts that environment and listens on 0.0.0.0:8000
    for key in list(os.environ):
        if key.startswith("WEMCP_") or key in {
            "DATABASE_URL",
            "NATS_URL",
            "REDIS_URL",
            "LOG_LEVEL",
            "LOG_FORMAT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        }:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(importlib.import_module(f"wemcp.{name}.config").Settings)
    assert (settings.host, settings.port) == ("0.0.0.0", CONTAINER_PORT)
    assert urlsplit(settings.nats_url).hostname == "nats"
    assert settings.otel_endpoint == "http://otel-collector:4318"
    if name != "gateway":
        assert urlsplit(settings.database_url).hostname == "postgres"
    else:
        others = [s for s in SERVICE_DIRS if s != "gateway"]
        assert settings.service_urls() == {s: f"http://{s}:{CONTAINER_PORT}" for s in others}


def test_every_service_shares_the_operators_service_keys(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """WEMCP_SERVICE_KEYS: required from the operator (no key in the file), the same ring for every
    service, and accepted by the real settings in production."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, svc in wemcp_services(raw["services"]).items():
        value = (svc.get("environment") or {}).get("WEMCP_SERVICE_KEYS")
        assert isinstance(value, str) and re.fullmatch(r"\$\{WEMCP_SERVICE_KEYS:\?[^}]+\}", value), (name, value)
    for key in ("WEMCP_SERVICE_KEYS", "DATABASE_URL", "NATS_URL", "REDIS_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WEMCP_ENV", "production")
    from wemcp.common.config import ServiceSettings
    from wemcp.common.errors import ConfigError

    env = env_of(services["catalog"])
    for key in ("DATABASE_URL", "NATS_URL", "REDIS_URL"):
        monkeypatch.setenv(key, env[key])
    with pytest.raises(ConfigError, match="WEMCP_SERVICE_KEYS"):
        load_settings(ServiceSettings)
    monkeypatch.setenv("WEMCP_SERVICE_KEYS", env["WEMCP_SERVICE_KEYS"])
    assert load_settings(ServiceSettings).key_ring.signing_kid == "compose"


def test_gateway(services: dict[str, dict[str, Any]]) -> None:
    gw = services["gateway"]
    env = env_of(gw)
    deps = depends_of(gw)
    for svc in (s for s in SERVICE_DIRS if s != "gateway"):
        assert env.get(f"WEMCP_GATEWAY_{svc.upper()}_URL") == f"http://{svc}:{CONTAINER_PORT}", svc
        assert svc in services
        assert deps.get(svc, {}).get("condition") == "service_healthy", f"gateway does not wait for {svc}"
    assert published_ports(gw).get(CONTAINER_PORT) == 8000


def test_depends_on(services: dict[str, dict[str, Any]]) -> None:
    done = one_shot(services)
    for name, svc in services.items():
        for dep, spec in depends_of(svc).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert spec.get("condition") in CONDITIONS, f"{name} -> {dep}: no condition"
            if spec["condition"] == "service_healthy":
                assert healthcheck_test(services[dep]), (
                    f"{name} waits for {dep} healthy, which has no healthcheck"
                )
            if spec["condition"] == "service_completed_successfully":
                assert dep in done
    # no cycles
    state: dict[str, int] = {}

    def visit(n: str, trail: tuple[str, ...]) -> None:
        assert state.get(n) != 1, f"dependency cycle: {' -> '.join((*trail, n))}"
        if state.get(n) == 2:
            return
        state[n] = 1
        for dep in depends_of(services[n]):
            visit(dep, (*trail, n))
        state[n] = 2

    for n in services:
        visit(n, ())


def test_migrate(services: dict[str, dict[str, Any]]) -> None:
    mig = services["migrate"]
    assert mig["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
    assert mig["build"]["args"]["SERVICE"] in SERVICE_DIRS
    cmd = mig["command"] if isinstance(mig["command"], list) else shlex.split(mig["command"])
    assert cmd == ["python", "-m", "wemcp.devstack.cli", "migrate"]
    assert env_of(mig)["DATABASE_URL"] == env_of(services["catalog"])["DATABASE_URL"]
    # agents_0003 re-seals stored model-provider keys with the agents service's own secret
    secret = "WEMCP_AGENTS_PROVIDER_KEY_SECRET"
    assert env_of(mig)[secret] == env_of(services["agents"])[secret]
    assert depends_of(mig)["postgres"]["condition"] == "service_healthy"


def test_infrastructure(services: dict[str, dict[str, Any]]) -> None:
    pg = services["postgres"]
    assert pg["image"] == "pgvector/pgvector:pg17"
    init_dir = next(src for src, target in bind_mounts(pg) if target == "/docker-entrypoint-initdb.d")
    sql = "\n".join(p.read_text() for p in sorted(init_dir.glob("*.sql"))).lower()
    assert re.search(r"create database wemcp\b", sql)
    assert re.search(r"create extension if not exists vector\b", sql)
    assert re.search(r"create extension if not exists pg_trgm\b", sql)
    db_url = urlsplit(env_of(services["catalog"])["DATABASE_URL"])
    assert db_url.path == "/wemcp"
    assert db_url.password == env_of(pg)["POSTGRES_PASSWORD"]
    assert "POSTGRES_DB" not in env_of(pg)  # the init script creates wemcp
    # pg_isready over TCP: the socket-only server that runs the init scripts must not count as ready
    assert "-h" in " ".join(healthcheck_test(pg) or [])

    nats = services["nats"]
    args = nats["command"] if isinstance(nats["command"], list) else shlex.split(nats["command"])
    assert "-js" in args and args[args.index("-sd") + 1] == "/data"
    assert args[args.index("-m") + 1] == "8222"
    assert "8222/healthz" in " ".join(healthcheck_test(nats) or [])
    # the plain nats tag is a scratch image: a wget healthcheck needs the alpine variant
    assert nats["image"].startswith("nats:2.10") and "alpine" in nats["image"]

    redis = services["redis"]
    assert redis["image"].split(":")[0] == "redis" and redis["image"].split(":")[1].startswith("7")
    rargs = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--appendonly yes" in rargs


def test_bind_mounts_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for src, _target in bind_mounts(svc):
            assert src.exists(), f"{name} mounts missing {src}"
            assert ROOT in src.parents, f"{name} mounts {src} outside the repository"


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    expected = {
        "gateway": (8000, 8000),
        "jaeger": (16686, 16686),
        "prometheus": (9090, 9090),
        "grafana": (3000, 3000),
    }
    for name, (container, host) in expected.items():
        assert published_ports(services[name]).get(container) == host, name
    doc = (ROOT / "docs" / "containers.md").read_text()
    assert "docker compose up --build" in doc
    for _name, (_c, host) in expected.items():
        assert str(host) in doc


# -- Dockerfile, .dockerignore, entrypoint, healthcheck ---------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        if instr.upper() == "FROM":
            stages.append([])
        stages[-1].append((instr.upper(), rest.strip()))
    return stages[1:]


def test_dockerfile() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build expected"
    everything = [i for s in stages for i in s]
    final = stages[-1]
    runs = " ".join(rest for instr, rest in everything if instr == "RUN")
    uv_version = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert uv_version and f"pip install uv=={uv_version.group(1)}" in runs
    assert re.search(r"uv sync --frozen --all-packages --no-dev\b", runs)
    # test support (libs/testkit) is a workspace member: --all-packages alone would put it in the image
    assert re.search(r"uv sync [^&;]*--no-install-package wemcp-testkit\b", runs)

    kinds = [instr for instr, _ in final]
    assert "ARG" in kinds and any(rest.split("=")[0] == "SERVICE" for instr, rest in final if instr == "ARG")
    users = [rest for instr, rest in final if instr == "USER"]
    assert users, "no USER in the final stage"
    assert users[-1].split(":")[0] not in ("root", "0"), "the image runs as root"
    assert kinds.index("USER") < kinds.index("CMD")
    assert ("EXPOSE", str(CONTAINER_PORT)) in final
    health = [rest for instr, rest in final if instr == "HEALTHCHECK"]
    assert health and "/usr/local/lib/wemcp/healthcheck.py" in health[-1] and "NONE" not in health[-1]
    cmd = [rest for instr, rest in final if instr == "CMD"][-1]
    assert "python -m wemcp.${SERVICE}.main" in " ".join(json.loads(cmd))
    entry = [rest for instr, rest in final if instr == "ENTRYPOINT"][-1]
    assert json.loads(entry) == ["wemcp-entrypoint"]

    # what COPY takes from the build context exists and is not excluded by .dockerignore
    ignore = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    copied: dict[str, str] = {}
    for instr, rest in everything:
        if instr != "COPY" or "--from=" in rest:
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: missing"
            assert not ignored(src, ignore), f"COPY {src} is excluded by .dockerignore"
            copied[src] = parts[-1]
    assert copied.get("deploy/docker/healthcheck.py") == "/usr/local/lib/wemcp/healthcheck.py"
    assert copied.get("deploy/docker/entrypoint.sh", "").endswith("/wemcp-entrypoint")


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches decides; ``!`` re-includes."""
    out = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.lstrip("/")
        if fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/"):
            out = not neg
    return out


def test_the_console_is_built_into_the_image() -> None:
    stages = dockerfile_stages()
    everything = " ".join(f"{i} {r}" for s in stages for i, r in s)
    assert "node build.mjs" in everything
    final = " ".join(f"{i} {r}" for i, r in stages[-1])
    assert "/src/web/dist /app/web/dist" in final and "WEMCP_GATEWAY_CONSOLE_DIR=/app/web/dist" in final


def test_production_code_never_imports_test_support() -> None:
    """The images leave out wemcp.testkit, so code they run must not import it."""
    shipped = [*(ROOT / "services").glob("*/src"), *(p for p in (ROOT / "libs").glob("*/src")
                                                   if p.parent.name != "testkit")]
    offenders = [str(f.relative_to(ROOT)) for src in shipped for f in src.rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+wemcp\.testkit\b", f.read_text(), re.M)]
    assert shipped and offenders == []
    testkit = (ROOT / "libs" / "testkit" / "pyproject.toml").read_text()
    root = (ROOT / "pyproject.toml").read_text()
    assert 'name = "wemcp-testkit"' in testkit
    dev = root.split("[dependency-groups]", 1)[1]
    assert '"wemcp-testkit"' in dev.split("]", 1)[0]  # a dev-group dependency
    assert '"wemcp-testkit"' not in root.split("[project]", 1)[1].split("]", 1)[0]  # not a runtime one


def test_dockerignore() -> None:
    patterns = {
        ln.strip().lstrip("/").removeprefix("**/")
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    }
    for must in (
        ".venv",
        ".tools",
        ".data",
        ".git",
        "node_modules",
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
    ):
        assert must in patterns, f".dockerignore does not exclude {must}"
    for needed in ("pyproject.toml", "uv.lock", "libs", "services", "deploy/docker"):
        assert needed not in patterns


def test_entrypoint_sets_host_and_port() -> None:
    proc = run_entrypoint({"SERVICE": "catalog"}, "env")
    assert proc.returncode == 0, proc.stderr
    env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert env["WEMCP_CATALOG_HOST"] == "0.0.0.0" and env["WEMCP_CATALOG_PORT"] == "8000"
    # explicit settings win
    proc = run_entrypoint({"SERVICE": "catalog", "WEMCP_CATALOG_PORT": "9001"}, "env")
    assert "WEMCP_CATALOG_PORT=9001" in proc.stdout.splitlines()


@pytest.mark.parametrize("service", ["", "cat;touch /tmp/x", "Catalog", "../x"])
def test_entrypoint_rejects_bad_service(service: str) -> None:
    proc = run_entrypoint({"SERVICE": service}, "env")
    assert proc.returncode == 64, (proc.stdout, proc.stderr)


def test_entrypoint_default_command(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "ARGS $*"\n')
    fake.chmod(0o755)
    proc = run_entrypoint({"SERVICE": "goods"}, path_prefix=str(tmp_path))
    assert proc.stdout.strip() == "ARGS -m wemcp.goods.main", proc.stderr
    # the Dockerfile's CMD, as Docker passes it to the entrypoint
    cmd = json.loads([rest for instr, rest in dockerfile_stages()[-1] if instr == "CMD"][-1])
    proc = run_entrypoint({"SERVICE": "goods"}, *cmd, path_prefix=str(tmp_path))
    assert proc.stdout.strip() == "ARGS -m wemcp.goods.main", proc.stderr


@pytest.fixture
def health_server() -> Iterator[tuple[int, dict[str, int]]]:
    state = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = state["status"] if self.path == "/healthz" else 404
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], state
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(env: dict[str, str]) -> int:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        timeout=20,
    ).returncode


def test_healthcheck_script(health_server: tuple[int, dict[str, int]]) -> None:
    port, state = health_server
    env = {"SERVICE": "catalog", "WEMCP_CATALOG_PORT": str(port)}
    assert run_healthcheck(env) == 0
    state["status"] = 503
    assert run_healthcheck(env) == 1
    state["status"] = 200
    assert run_healthcheck({"SERVICE": "goods", "WEMCP_GOODS_PORT": str(port)}) == 0
    assert (
        run_healthcheck({"SERVICE": "goods", "WEMCP_CATALOG_PORT": str(port), "WEMCP_GOODS_PORT": "1"}) == 1
    )


# -- telemetry ------------------------------------------------------------------------------------


def collector_config(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    path = ROOT / "deploy" / "otel" / "collector.yaml"
    cfg = load_yaml(path)
    target = mount_target(services["otel-collector"], path)
    assert f"--config={target}" in services["otel-collector"].get("command", []), (
        "collector reads another file"
    )
    return cfg


def test_collector_config(services: dict[str, dict[str, Any]]) -> None:
    cfg = collector_config(services)
    protocols = cfg["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    svc = cfg["service"]
    for ext in svc.get("extensions", []):
        assert ext in cfg.get("extensions", {}), f"undefined extension {ext}"
    pipelines = svc["pipelines"]
    for pname, pipe in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for comp in pipe.get(kind, []):
                assert comp in (cfg.get(kind) or {}), f"pipeline {pname}: undefined {kind[:-1]} {comp}"
        assert pipe.get("receivers") and pipe.get("exporters"), pname

    traces = [e for e in pipelines["traces"]["exporters"] if e.split("/")[0] in ("otlp", "otlphttp")]
    assert traces, "traces are not exported over OTLP"
    host, port = cfg["exporters"][traces[0]]["endpoint"].rsplit(":", 1)
    assert host.split("//")[-1] == "jaeger" and port == "4317"
    assert (
        interpolate(services["jaeger"].get("environment", {}).get("COLLECTOR_OTLP_ENABLED", "true")) == "true"
    )
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one")

    prom = [e for e in pipelines["metrics"]["exporters"] if e.split("/")[0] == "prometheus"]
    assert prom, "metrics are not exported to Prometheus"
    assert cfg["exporters"][prom[0]]["endpoint"].endswith(":8889")
    assert cfg["exporters"][prom[0]].get("resource_to_telemetry_conversion", {}).get("enabled") is True


def test_prometheus_config(services: dict[str, dict[str, Any]]) -> None:
    path = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    cfg = load_yaml(path)
    target_path = mount_target(services["prometheus"], path)
    assert f"--config.file={target_path}" in services["prometheus"]["command"]
    targets = {
        t for job in cfg["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]
    }
    assert "otel-collector:8889" in targets


def test_grafana(services: dict[str, dict[str, Any]]) -> None:
    graf = services["grafana"]
    prov = ROOT / "deploy" / "grafana" / "provisioning"
    assert mount_target(graf, prov) == "/etc/grafana/provisioning"
    sources = [
        ds for f in sorted((prov / "datasources").glob("*.y*ml")) for ds in load_yaml(f)["datasources"]
    ]
    prom = [ds for ds in sources if ds["type"] == "prometheus"]
    assert (
        prom and urlsplit(prom[0]["url"]).hostname == "prometheus" and urlsplit(prom[0]["url"]).port == 9090
    )
    uid = prom[0]["uid"]

    providers = [p for f in sorted((prov / "dashboards").glob("*.y*ml")) for p in load_yaml(f)["providers"]]
    dash_dir = ROOT / "deploy" / "grafana" / "dashboards"
    assert providers and providers[0]["options"]["path"] == mount_target(graf, dash_dir)
    dashboards = sorted(dash_dir.glob("*.json"))
    assert dashboards
    # the overview (wemcp-platform.json is checked by test_telemetry_names.py)
    dash = json.loads((dash_dir / "wemcp.json").read_text())
    panels = [p for p in dash["panels"] if p.get("type") != "row"]
    assert len(panels) >= 4
    exprs = []
    for p in panels:
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert (t.get("datasource") or p["datasource"])["uid"] == uid, p["title"]
            exprs.append(t["expr"])
    text = "\n".join(exprs)
    assert re.search(r"by \([^)]*service_name", text), "no per-service breakdown"
    assert "http_response_status_code" in text and "consumer, outcome" in text

    # each series comes from an instrument the code really emits, with that unit
    code = "\n".join(p.read_text() for p in (ROOT / "libs" / "common" / "src").rglob("*.py"))
    for (instrument, unit), series in METRICS.items():
        assert series in text, f"dashboard lacks {series}"
        m = re.search(rf'create_\w+\(\s*"{re.escape(instrument)}"(?P<args>[^)]*)\)', code)
        assert m, f"the code no longer emits {instrument}"
        if unit:
            assert f'unit="{unit}"' in m.group("args"), f"{instrument} changed its unit"


# -- the deployer's sandbox (README.md#isolation) -----------------------------------------------------

SANDBOX_PRIVILEGE = {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"}
BROAD = ("privileged", "cap_add", "devices", "pid", "userns_mode", "network_mode")


def test_only_the_deployer_gets_the_sandbox_privilege(services: dict[str, dict[str, Any]]) -> None:
    """The deployer runs bubblewrap unprivileged: exactly the namespace privilege, nothing broader,
    and no other container gets any of it."""
    for name, svc in services.items():
        for key in BROAD:
            assert key not in svc, f"{name}: {key} grants more than any service needs"
        if name != "deployer":
            assert not svc.get("security_opt"), f"{name} needs no sandbox privilege"
    deployer = services["deployer"]
    assert set(deployer.get("security_opt") or []) == SANDBOX_PRIVILEGE
    assert str(deployer.get("user", "wemcp")).split(":")[0] not in ("root", "0")  # stays uid 10001
    # the settings do not turn the probe off or point it elsewhere: bubblewrap from the image is used
    env = container_env("deployer", deployer)
    assert env.get("WEMCP_DEPLOYER_SANDBOX", "auto") in ("auto", "bwrap")
    assert env.get("WEMCP_DEPLOYER_BWRAP", "bwrap") == "bwrap"
    readme = (ROOT / "README.md").read_text()
    assert "## Isolation" in readme and all(opt in readme for opt in SANDBOX_PRIVILEGE)


def test_dockerfile_installs_bubblewrap() -> None:
    final = dockerfile_stages()[-1]
    kinds = [instr for instr, _ in final]
    installs = [i for i, (instr, rest) in enumerate(final)
                if instr == "RUN" and re.search(r"apt-get install\b[^&;]*\bbubblewrap\b", rest)]
    assert installs, "the runtime image has no bubblewrap: hosted servers would be refused"
    assert installs[0] < kinds.index("USER"), "apt-get must run before the image drops root"
    assert "rm -rf /var/lib/apt/lists" in final[installs[0]][1]
    # before ARG SERVICE: one shared layer for all service images
    arg_service = next(i for i, (instr, rest) in enumerate(final) if instr == "ARG" and rest.startswith("SERVICE"))
    assert installs[0] < arg_service


# -- the image holds the whole workspace and what hosting servers needs ------------------------------


def workspace_members() -> list[str]:
    """The uv workspace's members (pyproject.toml [tool.uv.workspace] members, globs expanded)."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    members = sorted({p.relative_to(ROOT).as_posix() for pattern in cfg["members"] for p in ROOT.glob(pattern)
                      if (p / "pyproject.toml").is_file()})
    assert members, "the workspace lists no members"
    return members


def stage_named(name: str) -> list[tuple[str, str]]:
    for stage in dockerfile_stages():
        words = stage[0][1].split()
        if len(words) >= 3 and words[-2].upper() == "AS" and words[-1] == name:
            return stage
    raise AssertionError(f"no stage {name!r} in the Dockerfile")


def test_the_image_copies_every_workspace_member() -> None:
    """`uv sync --frozen --all-packages` fails at once on a member missing from the build context
    (issue 15: sdk/python was)."""
    builder = stage_named("builder")
    sync = next(i for i, (instr, rest) in enumerate(builder)
                if instr == "RUN" and "uv sync" in rest)
    workdir = "/"
    copied: list[str] = []  # paths relative to the workdir of the sync, as they land in the image
    for instr, rest in builder[:sync]:
        if instr == "WORKDIR":
            workdir = rest
        if instr == "COPY" and "--from=" not in rest:
            parts = [p for p in rest.split() if not p.startswith("--")]
            *srcs, dest = parts
            for src in srcs:
                target = dest if not dest.endswith("/") else dest + Path(src).name
                landed = os.path.normpath(os.path.join(workdir, target))
                # a member only builds where pyproject.toml's relative member paths expect it
                assert landed == os.path.normpath(os.path.join(workdir, src)), f"COPY {src} {dest} moves it"
                copied.append(src.rstrip("/"))
    for member in workspace_members():
        assert any(member == c or member.startswith(c + "/") for c in copied), (
            f"the Dockerfile does not copy workspace member {member} before `uv sync`")
        for f in ("pyproject.toml", "uv.lock"):
            assert any(f == c for c in copied), f"{f} is not copied"


def image_executables(stage: list[tuple[str, str]]) -> dict[str, int]:
    """Executable name -> index of the instruction in the stage that puts it on PATH."""
    apt = {"bubblewrap": ("bwrap",), "nodejs": ("node",), "npm": ("npm", "npx")}
    found: dict[str, int] = {}
    for i, (instr, rest) in enumerate(stage):
        if instr == "RUN":
            for m in re.finditer(r"apt-get install\b([^&;|]*)", rest):
                for pkg in m.group(1).split():
                    for exe in apt.get(pkg, ()):
                        found.setdefault(exe, i)
            for m in re.finditer(r"\bln -s\S*\s+\S+\s+/usr/(?:local/)?bin/([A-Za-z0-9_.-]+)", rest):
                found.setdefault(m.group(1), i)
            if re.search(r"pip install\b[^&;]*\buv==", rest):
                found.setdefault("uv", i)
                found.setdefault("uvx", i)
        if instr == "COPY" and "--from=" in rest:
            *srcs, dest = [p for p in rest.split() if not p.startswith("--")]
            if dest.rstrip("/") in ("/usr/local/bin", "/usr/bin"):
                for src in srcs:
                    found.setdefault(Path(src).name, i)
            elif len(srcs) == 1 and re.fullmatch(r"/usr/(local/)?bin/[A-Za-z0-9_.-]+", dest):
                found.setdefault(Path(dest).name, i)
    return found


def test_the_image_can_install_and_sandbox_servers() -> None:
    """The deployer installs npm packages (npm, node), PyPI packages (uv, a Python) and runs them in
    bubblewrap: all on PATH in the runtime image, before it drops root and before SERVICE (one layer
    for the eight images)."""
    final = dockerfile_stages()[-1]
    kinds = [instr for instr, _ in final]
    exes = image_executables(final)
    for need in ("node", "npm", "npx", "uv", "uvx", "bwrap"):
        assert need in exes, f"the runtime image has no {need}: the deployer could not host servers"
        assert exes[need] < kinds.index("USER"), f"{need} is installed after the image drops root"
        arg_service = next(i for i, (instr, rest) in enumerate(final) if instr == "ARG" and rest.startswith("SERVICE"))
        assert exes[need] < arg_service, f"{need}: installed per service instead of once for all images"
    # the Node.js hosted servers get is the one the deployer's Kubernetes manifests pin
    from wemcp.deployer.config import Settings as DeployerSettings

    node_stage = next(s for s in dockerfile_stages()
                      if any(instr == "COPY" and f"--from={s[0][1].split()[-1]}" in rest and "/bin/node" in rest
                             for instr, rest in final))
    args = top_level_args()
    image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], node_stage[0][1].split()[0])
    assert image.removeprefix("docker.io/library/") == \
        DeployerSettings.model_fields["kubernetes_node_image"].default.removeprefix("docker.io/library/")
    # uv: the Makefile's version (the builder's), not whatever is newest
    builder_runs = " ".join(rest for instr, rest in stage_named("builder") if instr == "RUN")
    uv_version = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert uv_version and f"uv=={uv_version.group(1)}" in builder_runs
    uv_copy = final[exes["uv"]][1]
    assert "--from=builder" in uv_copy or f"uv=={uv_version.group(1)}" in uv_copy
    # the deployer's per-package venvs use the image's Python
    env = container_env("deployer", yaml.safe_load(COMPOSE_FILE.read_text())["services"]["deployer"])
    assert env.get("WEMCP_DEPLOYER_VENV_PYTHON", "/usr/bin/python3").startswith("/usr/local/bin/python")


def top_level_args() -> dict[str, str]:
    out = {}
    for line in re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines():
        line = line.strip()
        if line.upper().startswith("FROM "):
            break
        if line.upper().startswith("ARG ") and "=" in line:
            k, _, v = line[4:].strip().partition("=")
            out[k] = v
    return out


# -- compose wires what `make run` wires -------------------------------------------------------------

_SECRET_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]+\}")


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict[str, str]], dict[str, int], Path]:
    """What `make run` gives each service: ``wemcp.devstack.cli run`` itself, from an empty operator
    environment, with only the infrastructure and the service processes stubbed out. Returns (per
    service its environment, per service its port, the data directory)."""
    from wemcp.devstack import cli
    from wemcp.devstack import stack as devstack

    data_dir = tmp_path_factory.mktemp("make-run")
    captured: dict[str, Any] = {}

    def start_infra(self: Any) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        self.database_url = "postgresql://postgres@127.0.0.1:1/wemcp"
        self.nats_url, self.redis_url = "nats://127.0.0.1:2", "redis://127.0.0.1:3/0"

    def wait_healthy(self: Any, names: Any, timeout: float) -> None:
        captured.update(self.services)
        raise RuntimeError("captured: no process was started")

    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            mp.delenv(key)
        mp.setattr(devstack.Stack, "start_infra", start_infra)
        mp.setattr(devstack.Stack, "migrate", lambda self, services=(): None)
        mp.setattr(devstack.ServiceProcess, "start", lambda self: None)
        mp.setattr(devstack.Stack, "wait_healthy", wait_healthy)
        mp.setattr(cli.signal, "signal", lambda *args: None)
        assert cli.main(["run", "--data-dir", str(data_dir)]) == 1
    assert captured, "make run started no service"
    return ({n: dict(p.env) for n, p in captured.items()}, {n: p.port for n, p in captured.items()}, data_dir)


def settings_env_names(cls: Any) -> set[str]:
    """The environment variables a settings class reads (upper case)."""
    from pydantic import AliasChoices, BaseModel

    prefix = (cls.model_config.get("env_prefix") or "").upper()
    nested = cls.model_config.get("env_nested_delimiter")
    names: set[str] = set()
    for fname, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c.upper() for c in alias.choices if isinstance(c, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{fname}".upper())
            ann = info.annotation
            if nested and isinstance(ann, type) and issubclass(ann, BaseModel):
                names |= {f"{prefix}{fname}{nested}{sub}".upper() for sub in ann.model_fields}
    return names


def reads(service: str, key: str) -> bool:
    """Whether a service uses an environment variable: its settings read it, or its code names it."""
    settings = importlib.import_module(f"wemcp.{service}.config").Settings
    if key.upper() in settings_env_names(settings):
        return True
    return any(f'"{key}"' in p.read_text() for p in (ROOT / "services" / service / "src").rglob("*.py"))


def settings_from(name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's real settings, from exactly ``env``."""
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(importlib.import_module(f"wemcp.{name}.config").Settings)


def test_compose_wires_what_make_run_wires(
    services: dict[str, dict[str, Any]], make_run: tuple[dict[str, dict[str, str]], dict[str, int], Path]
) -> None:
    """Every variable `make run` sets for a service that the service uses is set by compose too,
    with the container equivalent of its value: a URL of another service names that compose service,
    a secret `make run` generates into its data directory is required from the operator (no value in
    the file) and given only to the services that use it, a file in the data directory lies in the
    container's volume. The list comes from running the devstack's code, not from this test."""
    from wemcp.devstack.stack import MIGRATED

    run_env, ports, data_dir = make_run
    ours = wemcp_services(services)
    assert sorted(run_env) == sorted(ours), "make run and compose run different services"
    by_port = {port: name for name, port in ports.items()}
    generated = {p.read_text().strip() for p in data_dir.iterdir() if p.is_file()}
    assert generated, "make run generated no secret (the check below would prove nothing)"
    secrets_seen: dict[str, set[str]] = {}
    missing: list[str] = []
    for name, env in sorted(run_env.items()):
        raw = {k: str(v) for k, v in (ours[name].get("environment") or {}).items()}
        inside = container_env(name, ours[name])
        volumes = [str(v).split(":")[1] for v in ours[name].get("volumes") or [] if not str(v).startswith((".", "/"))]
        for key, value in sorted(env.items()):
            if key == "DATABASE_URL" and name not in MIGRATED:
                continue  # a service that owns no schema (the gateway) never connects to Postgres
            if not reads(name, key):
                continue
            if key not in inside:
                missing.append(f"{name}: {key}")
                continue
            if any(s in value for s in generated):
                secrets_seen.setdefault(key, set()).add(name)
                m = _SECRET_REF.fullmatch(raw.get(key, ""))
                assert m, f"{name}: {key} is a secret; compose must require it from the operator, not hold a value"
            parts = urlsplit(value)
            # where users (their browsers) reach the platform: the gateway's published port
            if key.endswith("_PUBLIC_URL") or key == "WEMCP_AUTH_POST_LOGIN_REDIRECT":
                there = urlsplit(inside[key])
                assert by_port.get(parts.port) == "gateway" and there.port == 8000, (
                    f"{name}: {key}={inside[key]} is not the gateway's published address")
                continue
            if parts.scheme in ("http", "https") and parts.hostname == "127.0.0.1" and parts.port in by_port:
                there = urlsplit(inside[key])
                assert (there.hostname, there.port) == (by_port[parts.port], CONTAINER_PORT), (
                    f"{name}: {key}={inside[key]} does not name the {by_port[parts.port]} service")
            if value.startswith(str(data_dir)):
                assert any(inside[key].startswith(v.rstrip("/") + "/") for v in volumes), (
                    f"{name}: {key}={inside[key]} is not in a volume of the container (lost on restart)")
    assert not missing, "`make run` sets these, docker-compose.yml does not:\n  " + "\n  ".join(missing)
    # a generated secret reaches exactly the services that use it
    for key, users in secrets_seen.items():
        holders = {n for n, svc in ours.items() if key in env_of(svc)}
        assert holders == users, f"{key} is given to {sorted(holders - users)} too, which never use it"


def test_compose_passes_the_operators_oauth_clients_to_auth(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make run` hands its whole environment down, so an exported WEMCP_AUTH_GITHUB__CLIENT_ID reaches
    auth; compose names each login provider's client id and secret (empty: that login stays off)."""
    from wemcp.auth.config import ProviderConfig
    from wemcp.auth.config import Settings as AuthSettings

    providers = [f for f, info in AuthSettings.model_fields.items() if info.annotation is ProviderConfig]
    assert providers
    raw = services["auth"].get("environment") or {}
    names = [f"WEMCP_AUTH_{p.upper()}__{part}" for p in providers for part in ("CLIENT_ID", "CLIENT_SECRET")]
    for n in names:
        assert raw.get(n) == f"${{{n}:-}}", f"auth: {n} is not passed from the operator's environment"
    env = container_env("auth", services["auth"])
    settings = settings_from("auth", env, monkeypatch)
    assert not any(settings.provider(p).enabled for p in providers)  # unset: off, and auth still starts
    given = {n: f"sample-{n.lower()}" for n in names}
    settings = settings_from("auth", {**env, **given}, monkeypatch)
    for p in providers:
        cfg = settings.provider(p)
        assert cfg.enabled and cfg.client_id == given[f"WEMCP_AUTH_{p.upper()}__CLIENT_ID"]
        assert cfg.authorize_url == AuthSettings.model_fields[p].default_factory().authorize_url  # defaults kept


def test_compose_passes_the_operators_egress_exceptions(services: dict[str, dict[str, Any]]) -> None:
    """The egress policy's exceptions (every service's settings read it) come from the operator, as
    with `make run`; the file itself allows nothing non-public."""
    from wemcp.common.config import ServiceSettings

    name = str(ServiceSettings.model_fields["egress_allow"].validation_alias.choices[0])
    for svc_name, svc in wemcp_services(services).items():
        assert (svc.get("environment") or {}).get(name) == f"${{{name}:-}}", svc_name
        assert env_of(svc)[name] == ""


def test_the_deployer_bridge_is_where_compose_announces_it(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway reaches hosted servers at the bridge's public URL: it must name the deployer
    container and the port the bridge really listens on, on every interface, and not be published."""
    deployer = services["deployer"]
    s = settings_from("deployer", container_env("deployer", deployer), monkeypatch)
    public = urlsplit(s.bridge_public_url or "")
    assert (public.hostname, public.port) == ("deployer", s.bridge_port)
    assert s.bridge_host == "0.0.0.0" and s.bridge_port != CONTAINER_PORT
    assert s.bridge_port not in published_ports(deployer), "the bridge must not be reachable from the host"
    assert s.catalog_url == f"http://catalog:{CONTAINER_PORT}"
