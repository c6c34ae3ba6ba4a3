"""The fault suite (issue 14): the whole platform under a steady stream of ``tools/call`` and
deployments while one thing at a time fails, and an exact count of what the consumers applied.

Used by ``bench/faults.py`` (the long runs, numbers in bench/README.md) and ``tests/faults`` (a
few seconds per fault in ``make test``). Nothing here knows how the gateway publishes its events or
how the consumers apply them: what was *produced* is what the load clients saw answered, and what
was *applied* is read back through the platform's own admin APIs.

Per fault, a hosted stdio echo server and a user of its own (so the counts of one fault never mix
with another's), and:

- **calls**: ``clients`` workers send stateless 2026-07-28 ``tools/call echo`` POSTs through the
  gateway at ``rate`` calls/s in total. Every tools/call the gateway answers with a JSON-RPC reply
  or past its quota decision (the ``X-RateLimit-*`` headers: every server gets a limit no run
  reaches) emits one call event: a 429 is a refused call, anything else a counted one (a result, a
  JSON-RPC error, or an upstream's own reply passed through, such as the bridge's 404 while the
  deployer restarts). The
  daily usage rows of ratelimit (``GET /api/v1/usage/servers/{slug}``: ``calls``) must equal all
  answered calls; the catalog's call counter (``GET /api/v1/servers/{slug}``: ``calls``) the
  answered calls that were not refused. Anything else (transport errors, 5xx without a JSON-RPC
  body) emitted no event and is shown as *unanswered*.
- **deployments**: archives submitted through the gateway while the fault happens, half that deploy
  (the same echo server) and half that fail (a server that exits at start). Each ends in a terminal
  status at the deployer (``GET /api/v1/deployments/{slug}``); the catalog must show the same
  (``deployed`` = ``published``, ``failed`` = ``failed``).
- **the fault**: ``kill-<service>[+<service>...]`` SIGKILLs the services' process groups (every
  service has durable consumers) and starts them again as ``make run``'s supervisor does;
  ``restart-nats`` / ``restart-postgres`` / ``restart-redis`` stop the embedded server by its PID,
  keep it down for ``outage`` seconds and start it on the same port and data directory;
  ``restart-gateway`` is a SIGTERM of the gateway and a start.

The row of a fault: produced (calls answered, deployments ended), applied (per store), lost
(produced - applied, when positive), doubled (applied - produced, when positive), each summed over
the two stores (and lost deployments added), and catch-up: the
seconds from the end of the fault (the process or server back) until every call answered up to that
moment is applied in both stores. Deployments are compared at the end (they take the time an install
takes, which is not the consumers' lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2 as httpx

from wemcp.devstack.infra import free_port
from wemcp.devstack.sources import stdio_server
from wemcp.devstack.stack import SERVICES, Stack
from wemcp.devstack.testing import tar_gz

MODERN = "2026-07-28"
INFRA = ("nats", "postgres", "redis")
# every process with durable consumers (each service consumes at least the bus probes); the ones
# whose consumers apply the counted effects first
CONSUMERS: tuple[str, ...] = ("catalog", "ratelimit", "deployer", *[s for s in SERVICES
                                                                   if s not in ("catalog", "ratelimit", "deployer")])
ALL_FAULTS: tuple[str, ...] = (*(f"kill-{s}" for s in CONSUMERS), "restart-nats", "restart-postgres",
                               "restart-redis", "restart-gateway")

ECHO_SERVER = stdio_server("fault-echo", first="# fault suite echo server {tag}\n")
FAILING_SERVER = '''\
# fault suite: a server that cannot start ({tag})
import sys

sys.exit("fault suite: this server exits at start on purpose")
'''


def check_fault(name: str) -> str:
    """A fault name, validated: ``kill-<service>[+<service>...]``, ``restart-<nats|postgres|redis|gateway>``."""
    kind, _, what = name.partition("-")
    if kind == "kill" and what and all(s in SERVICES for s in what.split("+")):
        return name
    if kind == "restart" and what in (*INFRA, "gateway"):
        return name
    raise ValueError(f"unknown fault {name!r}: kill-<{'|'.join(SERVICES)}>[+<service>...] or "
                     f"restart-<nats|postgres|redis|gateway>")


def start_platform(data_dir: Path, *, durable: bool = True, ack_wait: float | None = None,
                   log_level: str = "info", wait: float = 180.0) -> Stack:
    """The whole platform as ``make run`` starts it, on embedded servers on free loopback ports.
    Redis always keeps its append-only file, so a restart keeps its counters as in production.
    ``ack_wait`` overrides JetStream's redelivery wait (the platform's default is 30 s)."""
    env = {"LOG_LEVEL": log_level, "WEMCP_DEPLOYER_BRIDGE_PORT": str(free_port())}
    if ack_wait is not None:
        env["WEMCP_BUS_ACK_WAIT_SECONDS"] = f"{ack_wait:g}"
    stack = Stack(data_dir=data_dir, gateway_port=free_port(), durable=durable, redis_persistent=True,
                  extra_env=env)
    try:
        stack.start_infra()
        stack.migrate()
        stack.start_services((*SERVICES, "gateway"), wait=wait)
    except BaseException:
        stack.stop()
        raise
    return stack


# -- results -------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the load clients saw, per fault."""

    ok: int = 0  # a JSON-RPC result
    errors: int = 0  # a JSON-RPC error (the upstream was away ...): an event all the same
    refused: int = 0  # 429 (quota): an event with status refused (ratelimit counts it, the catalog does not)
    unanswered: int = 0  # a transport error or a reply that is not JSON-RPC: no event
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def answered(self) -> int:
        return self.ok + self.errors + self.refused

    @property
    def counted(self) -> int:
        return self.ok + self.errors


@dataclass
class FaultResult:
    fault: str
    down_s: float = 0.0  # how long the fault lasted (killed until healthy / stopped until started)
    tally: Tally = field(default_factory=Tally)
    usage_applied: int = 0
    catalog_applied: int = 0
    deploys: int = 0  # deployments that reached a terminal status at the deployer
    deploys_applied: int = 0  # of those, how many the catalog shows the same
    deploys_unfinished: int = 0  # submitted but not terminal at the deployer when the wait ended
    mismatches: list[str] = field(default_factory=list)
    catchup_s: float | None = None  # None: not caught up within the wait
    wait_s: float = 0.0

    @property
    def produced(self) -> int:
        return self.tally.answered

    @property
    def lost(self) -> int:
        return (max(self.tally.answered - self.usage_applied, 0) + max(self.tally.counted - self.catalog_applied, 0)
                + (self.deploys - self.deploys_applied))

    @property
    def doubled(self) -> int:
        return max(self.usage_applied - self.tally.answered, 0) + max(self.catalog_applied - self.tally.counted, 0)

    def row(self) -> list[str]:
        t = self.tally
        return [self.fault, f"{self.down_s:.1f}", str(t.answered), str(t.refused), str(t.unanswered),
                f"{self.usage_applied}/{t.answered}", f"{self.catalog_applied}/{t.counted}",
                f"{self.deploys_applied}/{self.deploys}" + (f" (+{self.deploys_unfinished} unfinished)"
                                                            if self.deploys_unfinished else ""),
                str(self.lost), str(self.doubled),
                f"> {self.wait_s:g}" if self.catchup_s is None else f"{self.catchup_s:.1f}"]


def classify(tally: Tally, r: httpx.Response) -> bool:
    """Count one reply to a tools/call; False when it emitted no call event."""
    key = str(r.status_code)
    tally.statuses[key] = tally.statuses.get(key, 0) + 1
    try:
        body = r.json()
    except ValueError:
        body = None
    rpc = isinstance(body, dict) and body.get("jsonrpc") == "2.0" and ("result" in body or "error" in body)
    # the quota decision's headers (every server's limit is set, see ``prepare``): the call got past
    # the decision, and every path from there emits the event — also when the upstream's reply is not
    # JSON-RPC (the bridge's 404 while the deployer restarts travels through as it is)
    decided = "x-ratelimit-limit" in r.headers
    if not (rpc or decided):
        tally.unanswered += 1  # the gateway's problem+json (refused before the call), a transport 5xx ...
        return False
    if r.status_code == 429:
        tally.refused += 1
    elif rpc and "result" in body:
        tally.ok += 1
    else:
        tally.errors += 1  # a JSON-RPC error, or an upstream reply that is not JSON-RPC
    return True


HEADER = ["fault", "down s", "calls", "refused", "unanswered", "usage applied", "counter applied",
          "deploys applied", "lost", "doubled", "catch-up s"]


def table(results: Iterable[FaultResult]) -> str:
    rows = [HEADER, *(r.row() for r in results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# -- the suite -----------------------------------------------------------------------------------


@dataclass
class Subject:
    """What one fault uses alone: a user (its API key) and a hosted echo server it owns."""

    user_id: str
    key: str
    slug: str = ""
    tally: Tally = field(default_factory=Tally)  # every call made to its server, all faults included

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


class FaultSuite:
    def __init__(self, stack: Stack, *, clients: int = 8, rate: float = 100.0,
                 log: Callable[[str], None] = print) -> None:
        self.stack = stack
        self.url = f"http://127.0.0.1:{stack.gateway_port}"
        self.clients = clients
        self.rate = rate
        self.log = log
        self.admin: dict[str, str] = {}
        self.subjects: dict[str, Subject] = {}
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        assert self._http is not None, "use `async with suite:`"
        return self._http

    async def __aenter__(self) -> FaultSuite:
        self._http = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(30.0, read=60.0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- accounts and servers -------------------------------------------------------------------
    def _auth_env(self) -> dict[str, str]:
        assert self.stack.database_url
        return {**os.environ, "DATABASE_URL": self.stack.database_url,
                "WEMCP_AUTH_DEV_KEK_FILE": str(self.stack.data_dir / "auth-dev-kek")}

    async def prepare(self, faults: Iterable[str], within: float = 300.0) -> None:
        """An operator, one user per fault, one hosted echo server per fault (published), and calls
        to hosted servers not limited per user (the load would otherwise hit the free tier)."""
        faults = list(faults)
        out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "wemcp.auth.admin", "create-superadmin", "--login",
                             f"faults-admin-{uuid.uuid4().hex[:6]}"],
            env=self._auth_env(), capture_output=True, text=True, timeout=120, check=True)
        self.admin = {"Authorization": f"Bearer {out.stdout.strip().splitlines()[-1]}"}
        for fault in faults:
            uid, key = await self._user(f"faults-{fault}")
            self.subjects[fault] = Subject(uid, key)
        # a limit no run reaches, rather than none: a limited call carries X-RateLimit-* headers,
        # which tell a reply that passed the quota decision (and so emitted its event) — see classify
        r = await self.http.put("/api/v1/policies/defaults/servers", headers=self.admin,
                                json={"per_user_daily": 1_000_000_000, "global_daily_cap": None,
                                      "note": "fault suite: calls are not limited in practice"})
        assert r.status_code == 200, r.text
        t0 = time.monotonic()
        slugs = await asyncio.gather(*(self._submit(s, ECHO_SERVER, f"echo-{f}", requirements=True)
                                       for f, s in self.subjects.items()))
        for s, slug in zip(self.subjects.values(), slugs, strict=True):
            s.slug = slug
        await asyncio.gather(*(self._until_routed(s, within) for s in self.subjects.values()))
        self.log(f"{len(slugs)} echo servers hosted and answering through the gateway in "
                 f"{time.monotonic() - t0:.1f} s")

    async def _user(self, prefix: str) -> tuple[str, str]:
        from sqlalchemy import text

        from wemcp.auth import service as auth
        from wemcp.common.db import make_engine, make_session_factory

        assert self.stack.database_url
        engine = make_engine(self.stack.database_url, pool_size=1)
        try:
            async with make_session_factory(engine)() as s, s.begin():
                user = await auth.create_user(s, login=f"{prefix}-{uuid.uuid4().hex[:6]}", role="user")
                _, raw = await auth.create_api_key(s, user.id, "faults", None, None)
                # a trusted publisher (as an admin's PUT /api/v1/admin/publishers/{id} makes one): the
                # suite is about faults, not the review queue
                await s.execute(text("INSERT INTO catalog.publishers (user_id, trusted, note) "
                                     "VALUES (:id, true, 'fault suite')"), {"id": user.id})
            return str(user.id), raw
        finally:
            await engine.dispose()

    async def _submit(self, owner: Subject, source: str, name: str, requirements: bool,
                      within: float = 120.0) -> str:
        """Submit a source archive (retrying while the platform is down: only a 202 counts). Each
        attempt is a new name and archive, so an attempt that was accepted but not answered leaves
        an extra server nobody counts, never a conflict."""
        deadline = time.monotonic() + within
        last = ""
        namespace = ""
        while time.monotonic() < deadline:
            if not namespace:  # the owner's own namespace (io.wemcp.<handle>): needs no proof
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                    namespace = (await self.http.get("/api/v1/names/mine", headers=owner.auth)
                                 ).json()["platform_namespace"]
                if not namespace:
                    await asyncio.sleep(0.5)
                    continue
            tag = uuid.uuid4().hex[:8]
            files = {"server.py": source.format(tag=tag)}
            if requirements:
                files["requirements.txt"] = "mcp==2.3.0\n"
            data = tar_gz(files)
            safe = re.sub(r"[^a-zA-Z0-9._-]", "-", name)
            manifest = {"name": f"{namespace}/{safe}-{tag}", "version": "1.0.0", "runtime": "python",
                        "entrypoint": "server.py", "description": f"Fault suite server ({name})."}
            try:
                r = await self.http.post("/api/v1/servers/archive", headers=owner.auth,
                                         data={"manifest": json.dumps(manifest)},
                                         files={"archive": (f"{hashlib.sha256(data).hexdigest()[:8]}.tar.gz",
                                                            data, "application/gzip")})
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            else:
                if r.status_code == 202:
                    return str(r.json()["slug"])
                last = f"{r.status_code} {r.text[:300]}"
                if 400 <= r.status_code < 500 and r.status_code not in (408, 429):
                    raise RuntimeError(f"submitting {name} was refused: {last}")
            await asyncio.sleep(0.5)
        raise TimeoutError(f"could not submit {name} within {within:g} s: {last}")

    async def _until_routed(self, s: Subject, within: float) -> None:
        deadline = time.monotonic() + within
        last = ""
        while time.monotonic() < deadline:
            d = await self.http.get(f"/api/v1/deployments/{s.slug}", headers=s.auth)
            if d.status_code == 200 and d.json().get("status") == "failed":
                raise RuntimeError(f"the echo server {s.slug} failed to deploy: {d.json().get('reason')}")
            try:
                r = await self._call(s, 0)
                if classify(s.tally, r) and s.tally.ok:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{s.slug} not answering through the gateway within {within:g} s: {last}")

    async def _call(self, s: Subject, n: int, client: httpx.AsyncClient | None = None) -> httpx.Response:
        return await (client or self.http).post(
            f"/mcp/{s.slug}",
            headers={**s.auth, "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "echo",
                     "accept": "application/json, text/event-stream"},
            json={"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {
                "name": "echo", "arguments": {"text": f"call {n}"},
                "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                          "io.modelcontextprotocol/clientCapabilities": {}}}})

    # -- reading what was applied -------------------------------------------------------------
    async def applied(self, s: Subject) -> tuple[int, int] | None:
        """(ratelimit's usage calls, the catalog's call counter) of a fault's server, or None while
        either cannot be read (the service or a store is down)."""
        since = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
        try:
            u, c = await asyncio.gather(
                self.http.get(f"/api/v1/usage/servers/{s.slug}", params={"since": since}, headers=self.admin),
                self.http.get(f"/api/v1/servers/{s.slug}", headers=s.auth))
        except httpx.HTTPError:
            return None
        if u.status_code != 200 or c.status_code != 200:
            return None
        return sum(int(d["calls"]) for d in u.json()["days"]), int(c.json()["calls"])

    async def deploy_states(self, s: Subject, slugs: list[str]) -> dict[str, tuple[str | None, str | None]]:
        """slug -> (the deployer's status, the catalog's status); None where it could not be read."""

        async def one(slug: str) -> tuple[str | None, str | None]:
            try:
                d, c = await asyncio.gather(self.http.get(f"/api/v1/deployments/{slug}", headers=s.auth),
                                            self.http.get(f"/api/v1/servers/{slug}", headers=s.auth))
            except httpx.HTTPError:
                return None, None
            return (d.json().get("status") if d.status_code == 200 else None,
                    c.json().get("status") if c.status_code == 200 else None)

        states = await asyncio.gather(*(one(slug) for slug in slugs))
        return dict(zip(slugs, states, strict=True))

    # -- one fault ------------------------------------------------------------------------------
    async def run(self, fault: str, *, seconds: float = 10.0, outage: float = 5.0, deploys: int = 2,
                  wait: float = 120.0, settle: float = 3.0) -> FaultResult:
        """Traffic for ``seconds`` (the fault starts after a third of it and the traffic goes on for
        the rest after the fault ended), then wait up to ``wait`` s for every effect, then ``settle``
        s more and read again (a late redelivery applied twice would show there)."""
        check_fault(fault)
        s = self.subjects[fault]
        res = FaultResult(fault, wait_s=wait)
        tally = res.tally
        stop = asyncio.Event()
        # the bridge reaps idle children: one answered call first, so the traffic does not start
        # with a cold child (counted in the server's tally like every call)
        await self._until_routed(s, wait)
        # what the server's earlier calls (its readiness probes) came to, applied before we start
        base_usage, base_catalog = s.tally.answered, s.tally.counted
        before = await self._read_until(s, lambda a: a == (base_usage, base_catalog), wait)
        if before != (base_usage, base_catalog):
            raise AssertionError(f"{s.slug}: before the fault the stores show {before}, expected "
                                 f"{(base_usage, base_catalog)}")
        counter = iter(range(1, 1 << 62))

        async def worker(i: int) -> None:
            interval = self.clients / self.rate if self.rate > 0 else 0.0
            next_at = time.monotonic() + interval * i / self.clients
            async with httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(30.0, read=60.0)) as c:
                while not stop.is_set():
                    if interval:
                        delay = next_at - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        next_at = max(next_at + interval, time.monotonic() - interval)
                    try:
                        r = await self._call(s, next(counter), c)
                    except httpx.HTTPError as exc:
                        tally.unanswered += 1
                        key = type(exc).__name__
                        tally.statuses[key] = tally.statuses.get(key, 0) + 1
                        await asyncio.sleep(0.05)
                        continue
                    if not classify(tally, r):
                        await asyncio.sleep(0.05)

        submitted: list[str] = []

        async def submit(n: int) -> None:
            jobs = [self._submit(s, ECHO_SERVER if k % 2 == 0 else FAILING_SERVER,
                                 f"{fault}-{'ok' if k % 2 == 0 else 'fail'}-{k}", requirements=k % 2 == 0,
                                 within=wait) for k in range(n)]
            submitted.extend(await asyncio.gather(*jobs))

        workers = [asyncio.create_task(worker(i)) for i in range(self.clients)]
        subs = [asyncio.create_task(submit((deploys + 1) // 2))]
        # samples of (time, counted-so-far, answered-so-far) and of what was applied, for the catch-up
        produced: list[tuple[float, int, int]] = []
        try:
            await asyncio.sleep(seconds / 3)
            subs.append(asyncio.create_task(submit(deploys // 2)))
            t_fault = time.monotonic()
            await self.inject(fault, outage)
            t_end = time.monotonic()
            res.down_s = t_end - t_fault
            produced.append((t_end, tally.counted, tally.answered))
            self.log(f"{fault}: down {res.down_s:.1f} s; {tally.answered} calls answered so far")
            catchup = asyncio.create_task(self._catchup(s, base_usage + tally.answered,
                                                        base_catalog + tally.counted, t_end, wait))
            await asyncio.sleep(max(seconds * 2 / 3 - res.down_s, seconds / 3))
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
        await asyncio.gather(*subs)
        res.catchup_s = await catchup
        # every effect, then a while longer: a double applied late shows too
        final = await self._read_until(
            s, lambda a: a[0] >= base_usage + tally.answered and a[1] >= base_catalog + tally.counted, wait)
        await asyncio.sleep(settle)
        final = await self._read_until(s, lambda a: True, wait) or final
        if final is not None:
            res.usage_applied, res.catalog_applied = final[0] - base_usage, final[1] - base_catalog
        for name in ("ok", "errors", "refused", "unanswered"):
            setattr(s.tally, name, getattr(s.tally, name) + getattr(tally, name))
        await self._deployments(res, s, submitted, wait)
        return res

    async def _read_until(self, s: Subject, done: Callable[[tuple[int, int]], bool],
                          within: float) -> tuple[int, int] | None:
        deadline = time.monotonic() + within
        last = None
        while True:
            a = await self.applied(s)
            if a is not None:
                last = a
                if done(a):
                    return a
            if time.monotonic() > deadline:
                return last
            await asyncio.sleep(0.2)

    async def _catchup(self, s: Subject, usage: int, catalog: int, t_end: float, wait: float) -> float | None:
        """Seconds from ``t_end`` until both stores hold at least what was answered by then."""
        a = await self._read_until(s, lambda a: a[0] >= usage and a[1] >= catalog, wait)
        if a is None or a[0] < usage or a[1] < catalog:
            return None
        return time.monotonic() - t_end

    async def _deployments(self, res: FaultResult, s: Subject, slugs: list[str], wait: float) -> None:
        terminal = {"deployed": "published", "failed": "failed"}
        deadline = time.monotonic() + wait
        while True:
            states = await self.deploy_states(s, slugs)
            done = all(d in terminal and c == terminal[d] for d, c in states.values())
            if done or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        res.deploys = sum(1 for d, _ in states.values() if d in terminal)
        res.deploys_applied = sum(1 for d, c in states.values() if d in terminal and c == terminal[d])
        res.deploys_unfinished = len(slugs) - res.deploys
        res.mismatches = [f"{slug}: deployer {d}, catalog {c}" for slug, (d, c) in states.items()
                          if d not in terminal or c != terminal[d]]

    # -- injecting ------------------------------------------------------------------------------
    async def inject(self, fault: str, outage: float) -> None:
        """Make the fault happen and return once what failed is back (healthy / listening)."""
        kind, _, what = fault.partition("-")
        if kind == "kill":
            names = what.split("+")
            for name in names:
                self.stack.services[name].kill()
            for name in names:
                self.stack.services[name].start()
            await asyncio.to_thread(self.stack.wait_healthy, names, 120)
        elif what == "gateway":
            gw = self.stack.services["gateway"]
            gw.signal(signal.SIGTERM)
            await asyncio.to_thread(gw.stop, 30)
            gw.start()
            await asyncio.to_thread(self.stack.wait_healthy, ["gateway"], 120)
        else:
            await asyncio.to_thread(self.stack.stop_infra, what)
            await asyncio.sleep(outage)
            await asyncio.to_thread(self.stack.start_infra_again, what)


async def run_suite(faults: list[str], *, seconds: float, outage: float, clients: int, rate: float,
                    deploys: int, wait: float, nats_outage: float | None = None, durable: bool = True,
                    ack_wait: float | None = None,
                    keep: Path | None = None, log: Callable[[str], None] = print) -> list[FaultResult]:
    """Start a platform, prepare, run each fault in turn, stop the platform."""
    data = keep or Path(tempfile.mkdtemp(prefix="wemcp-faults-"))
    t0 = time.monotonic()
    stack = await asyncio.to_thread(start_platform, data, durable=durable, ack_wait=ack_wait)
    log(f"platform up in {time.monotonic() - t0:.1f} s (data {data}, gateway :{stack.gateway_port})")
    results: list[FaultResult] = []
    try:
        async with FaultSuite(stack, clients=clients, rate=rate, log=log) as suite:
            await suite.prepare(faults)
            for fault in faults:
                down = nats_outage if fault == "restart-nats" and nats_outage is not None else outage
                r = await suite.run(fault, seconds=seconds, outage=down, deploys=deploys, wait=wait)
                results.append(r)
                log(table([r]).splitlines()[-1] + (f"  {r.tally.statuses}" if r.tally.unanswered else ""))
                for m in r.mismatches:
                    log(f"  deployment not applied: {m}")
    finally:
        await asyncio.to_thread(stack.stop)
        if keep is None:
            with contextlib.suppress(Exception):
                shutil.rmtree(data, ignore_errors=True)
    return results
