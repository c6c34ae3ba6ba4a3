"""``wemcp-dev``: the local stack.

    wemcp-dev run        infrastructure + migrations + every service, gateway on :8000 (make run)
    wemcp-dev infra      only the infrastructure, printing the URLs to export
    wemcp-dev migrate    apply every service's migrations to DATABASE_URL
    wemcp-dev admin      create the first superadmin on the running stack; prints an API key last
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from wemcp.common.config import ServiceSettings, load_settings
from wemcp.common.errors import ConfigError


def _repo_root() -> Path:
    here = Path.cwd()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").exists() and (p / "services").is_dir():
            return p
    return here


def _banner(stack: object, took: float, extras: str = "") -> str:
    from wemcp.devstack.stack import Stack

    assert isinstance(stack, Stack)
    lines = ["", f"WeMcp is up  (healthy in {took:.1f} s)", ""]
    lines.append(f"  gateway     http://127.0.0.1:{stack.gateway_port}   (API docs: /docs, health: /healthz)")
    for name, svc in stack.services.items():
        if name != "gateway":
            lines.append(f"  {name:<11} {svc.url}   log: {svc.log_path}")
    lines += ["",
              f"  postgres    {_safe(stack.database_url)}" + ("  (embedded)" if stack.postgres else ""),
              f"  nats        {stack.nats_url}" + ("  (embedded, JetStream)" if stack.nats else ""),
              f"  redis       {stack.redis_url}" + ("  (embedded)" if stack.redis else ""),
              f"  data        {stack.data_dir}", "", *([extras] if extras else []), "Ctrl-C stops everything.", ""]
    return "\n".join(lines)


def _safe(url: str | None) -> str:
    from wemcp.common.logging import redact_value

    return str(redact_value(url or ""))


def cmd_run(args: argparse.Namespace) -> int:
    from wemcp.devstack.stack import SERVICES, Stack

    _check_urls()
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    data_dir = Path(args.data_dir).resolve()
    stack = Stack(data_dir=data_dir, gateway_port=args.port, database_url=os.environ.get("DATABASE_URL"),
                  nats_url=os.environ.get("NATS_URL"), redis_url=os.environ.get("REDIS_URL"),
                  extra_env={"LOG_FORMAT": os.environ.get("LOG_FORMAT", "json")})
    t0 = time.monotonic()
    try:
        print("starting infrastructure ...", flush=True)
        stack.start_infra()
        print("applying migrations ...", flush=True)
        stack.migrate()
        print("starting services ...", flush=True)
        stack.start_services((*SERVICES, "gateway"), wait=args.wait)
        stack.write_env_file()
        extras = _stand_ins(stack)
        print(_banner(stack, time.monotonic() - t0, extras), flush=True)
        while not stop.wait(0.5):
            for name, svc in stack.services.items():
                if not svc.alive() and not stop.is_set():
                    recent = [t for t in svc.restarts if time.monotonic() - t < 60]
                    if len(recent) >= 5:
                        print(f"{name} keeps crashing; giving up. Last lines:\n{svc.log_tail()}", flush=True)
                        return 1
                    print(f"{name} exited (code {svc.proc.returncode if svc.proc else '?'}); restarting. "
                          f"Last lines:\n{svc.log_tail(8)}", flush=True)
                    svc.restarts = [*recent, time.monotonic()]
                    svc.start()
        return 0
    except (RuntimeError, TimeoutError, ConfigError) as exc:
        print(f"wemcp-dev run: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("stopping ...", flush=True)
        stack.stop()
        stack.env_file.unlink(missing_ok=True)
        print("stopped.", flush=True)


def _stand_ins(stack: object) -> str:
    """The development stand-ins (wemcp.devstack.dev): the stand-in model provider and the demo server.
    Never in production; a failure here is reported and the stack runs on without them."""
    import subprocess

    import httpx2 as httpx

    from wemcp.devstack import dev

    if dev.production():
        return "  (WEMCP_ENV=production: no development stand-ins)\n"
    print("starting the development stand-ins ...", flush=True)
    try:
        seeded = dev.start(stack)
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError, httpx.HTTPError) as exc:
        return f"  development stand-ins not started: {str(exc)[:300]}\n"
    return (f"  Development stand-ins (not for production):\n"
            f"    model provider {dev.PROVIDER!r}, model {seeded.model!r}: a deterministic stand-in, not a real model\n"
            f"    demo server    /servers/{seeded.demo_slug} ({seeded.demo_status}; deployed by the deployer)\n")


def cmd_infra(args: argparse.Namespace) -> int:
    from wemcp.devstack.stack import Stack

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stack = Stack(data_dir=Path(args.data_dir).resolve())
    stack.start_infra()
    stack.migrate()
    for k, v in stack.infra_env().items():
        print(f"export {k}={v}", flush=True)
    try:
        stop.wait()
    finally:
        stack.stop()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from wemcp.common.migrations import upgrade
    from wemcp.devstack.stack import MIGRATED

    settings = load_settings(ServiceSettings)
    for service in args.services or MIGRATED:
        upgrade(service, settings.database_url)
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    """Create (or reuse) the first superadmin on the running stack and print a one-time console sign-in
    link (development stacks); the API key is the last line."""
    import subprocess

    env = dict(os.environ)
    env_file = Path(args.data_dir).resolve() / "stack.env"
    if "DATABASE_URL" not in env:
        if not env_file.exists():
            print("wemcp-dev admin: no running stack found (start it with `make run`, or set DATABASE_URL)",
                  file=sys.stderr)
            return 2
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            env.setdefault(key, value)
    # --signin-link: a one-time link to sign in to the console as this superadmin (development only)
    return subprocess.run([sys.executable, "-m", "wemcp.auth.admin", "create-superadmin", "--login", args.login,
                           "--signin-link"], env=env, check=False).returncode


def _check_urls() -> None:
    # Fail fast on a malformed URL before starting anything.
    overrides = {k.lower(): v for k in ("DATABASE_URL", "NATS_URL", "REDIS_URL") if (v := os.environ.get(k))}
    if overrides:
        load_settings(ServiceSettings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wemcp-dev", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the whole platform")
    p_run.add_argument("--port", type=int, default=int(os.environ.get("WEMCP_GATEWAY_PORT", "8000")))
    p_run.add_argument("--data-dir", default=str(_repo_root() / ".data"))
    p_run.add_argument("--wait", type=float, default=120.0, help="seconds to wait for health")
    p_run.set_defaults(func=cmd_run)
    p_infra = sub.add_parser("infra", help="run only Postgres, NATS and Redis")
    p_infra.add_argument("--data-dir", default=str(_repo_root() / ".data"))
    p_infra.set_defaults(func=cmd_infra)
    p_admin = sub.add_parser("admin", help="create the first superadmin and print an API key (last line)")
    p_admin.add_argument("--login", default=os.environ.get("WEMCP_ADMIN_LOGIN", "admin"))
    p_admin.add_argument("--data-dir", default=str(_repo_root() / ".data"))
    p_admin.set_defaults(func=cmd_admin)
    p_mig = sub.add_parser("migrate", help="apply migrations to DATABASE_URL")
    p_mig.add_argument("services", nargs="*")
    p_mig.set_defaults(func=cmd_migrate)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"wemcp-dev: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
