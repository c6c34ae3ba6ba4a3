"""Use cases: the deployment worker (claim → install → start → introspect → publish) and its state.

The event handlers only record intent in ``deployments`` (one transaction with the ``queued`` step's
event) and wake the worker after commit; the worker does the slow part outside any consumer's
transaction, so progress events reach the catalog while a deployment runs. A worker claims a row
with a lease (``FOR UPDATE SKIP LOCKED``); a lease that expires (the process died) is claimed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.common import metrics
from wemcp.common.events.servers import (
    Endpoint,
    ServerDeployed,
    ServerDeployFailed,
    ServerDeploying,
    ServerDisabled,
    ServerEnabled,
    ServerSubmitted,
)
from wemcp.common.logging import get_logger
from wemcp.common.outbox import add_event
from wemcp.common.trust import HEADER_ASSERTION, Issuer
from wemcp.deployer import repository
from wemcp.deployer.artifacts import ArtifactBuilder
from wemcp.deployer.backends.base import Deployer, DeployError, Outcome, Target
from wemcp.deployer.backends.cloud import AliyunFcDeployer, TencentScfDeployer, credentials_from_env
from wemcp.deployer.backends.kubernetes import KubernetesDeployer
from wemcp.deployer.backends.local import LocalDeployer
from wemcp.deployer.backends.remote import RemoteDeployer
from wemcp.deployer.bridge import MODERN
from wemcp.deployer.child import redact
from wemcp.deployer.config import Settings
from wemcp.deployer.install import OUTPUT_SINK
from wemcp.deployer.introspect import Listing, introspect
from wemcp.deployer.models import Deployment, bus_tables
from wemcp.deployer.spec import SpecError, introspection_env, parse_spec

UNHOSTED = "unhosted"  # the backend of "hosting": "local" servers: listed here, run by users

log = get_logger("wemcp.deployer")
LEASE_SECONDS = 60
MAX_STEPS = 60
MAX_LOG_LINES = 2000  # per attempt; the rest is counted in one last line
MAX_LOG_LINE_CHARS = 2000
_current: Orchestrator | None = None


def current() -> Orchestrator | None:
    return _current


class _DeployMetrics:
    """``wemcp.deployments`` and ``wemcp.deployment.duration`` by backend and outcome."""

    def __init__(self) -> None:
        self.count = metrics.instrument(metrics.DEPLOYMENTS, "wemcp.deployer")
        self.duration = metrics.instrument(metrics.DEPLOYMENT_DURATION, "wemcp.deployer")

    def record(self, backend: str, outcome: str, seconds: float | None) -> None:
        attrs = {"backend": backend, "outcome": outcome}
        self.count.add(1, attrs)
        if seconds is not None:
            self.duration.record(seconds, attrs)


_deploy_metrics_made: list[_DeployMetrics] = []


def _deploy_metrics() -> _DeployMetrics:
    if not _deploy_metrics_made:
        _deploy_metrics_made.append(_DeployMetrics())
    return _deploy_metrics_made[0]


def step(name: str, detail: str | None = None) -> dict[str, Any]:
    return {"step": name, "detail": detail, "at": datetime.now(UTC).isoformat()}


def new_generation(d: Deployment) -> None:
    """A new deployment of the server (a submission, an enable): the next generation, steps from 1."""
    d.generation = (d.generation or 0) + 1
    d.seq = 0


def next_seq(d: Deployment) -> int:
    """The seq of the next event (with ``d.generation``) of the row's deployment. The caller holds the row lock
    and stages the event in the same transaction, so seq follows commit order within a generation
    and the final deployed/deploy_failed has the highest."""
    d.seq = (d.seq or 0) + 1
    return d.seq


# ------------------------------------------------------------------ intent (the event handlers')
# ``server.submitted``, ``server.disabled`` and ``server.enabled`` come through three durable consumers
# that run independently, so they may be handled in any order. A decision (disable/enable) applies
# only when it is newer than the one the row holds (``decision_seq``), a submission only when its
# ``revision`` is newer than the one recorded (unstamped: in arrival order); a submission of a server
# whose last decision was to disable it is recorded (the next generation, the new spec) but not
# deployed until it is enabled. Each records intent in the consumer's transaction and says whether the
# worker has something to do after commit.
async def record_submission(session: AsyncSession, event: ServerSubmitted) -> bool:
    d = await repository.deployment_by_slug(session, event.slug, for_update=True)
    if d is None:
        d = Deployment(slug=event.slug, server_id=event.server_id, spec=event.spec.to_wire(), generation=0, steps=[],
                       protocol_versions=[], introspection={}, log_tail="", name=event.name, backend="local")
        session.add(d)
    elif event.revision is not None and event.revision <= (d.revision or 0):
        return False  # an older submission than the one deployed (published late, e.g. by another relay)
    if event.revision is not None:
        d.revision = event.revision
    d.server_id, d.name, d.owner_id, d.spec = event.server_id, event.name, event.owner_id, event.spec.to_wire()
    new_generation(d)
    if d.desired == "stopped":  # disabled: the new spec waits for server.enabled (which deploys it)
        d.steps = [*d.steps, step("submitted", "a new version, deployed when the server is enabled")]
        return False
    d.desired, d.reason, d.log_tail, d.lease_owner = "running", None, "", None
    try:
        spec = parse_spec(event.spec)
    except SpecError as exc:
        d.status = "failed"
        d.reason = str(exc)
        d.steps = [step("failed", str(exc))]
        await session.flush()
        await add_event(session, bus_tables, ServerDeployFailed(server_id=event.server_id, slug=event.slug,
                                                                deployment_id=d.id, reason=str(exc),
                                                                generation=d.generation, seq=next_seq(d)))
        return False
    d.backend = "remote" if spec.kind == "remote" else "local"
    d.status = "queued"
    d.steps = [step("queued", f"{spec.kind} server submitted")]
    await session.flush()
    await add_event(session, bus_tables, ServerDeploying(server_id=event.server_id, slug=event.slug,
                                                         deployment_id=d.id, step="queued", backend=d.backend,
                                                         generation=d.generation, seq=next_seq(d)))
    return True


def newer_decision(d: Deployment, event: ServerDisabled | ServerEnabled) -> bool:
    """Whether ``event`` is newer than the decision the row holds (and if so, record it). Stamped
    events compare ``decision_seq``; an event of an older catalog (no decision_seq) is older than any
    stamped one, and otherwise compares ``occurred_at``."""
    if event.decision_seq is not None:
        if event.decision_seq <= (d.decision_seq or 0):
            return False
        d.decision_seq = event.decision_seq
    elif d.decision_seq or (d.decision_at is not None and event.occurred_at <= d.decision_at):
        return False
    d.decision_at = event.occurred_at
    return True


async def _decided(session: AsyncSession, event: ServerDisabled | ServerEnabled, desired: str,
                   first: dict[str, Any]) -> Deployment | None:
    """The row of the event's server, locked; None when the decision reached us before the server's
    first submission. Then the decision is kept in a row of its own (generation 0: no spec, nothing
    to deploy; its one step ``first``), so a decision older than it that arrives later does not win;
    a concurrent insert of the same slug makes the event retry."""
    d = await repository.deployment_by_slug(session, event.slug, for_update=True)
    if d is None:
        new = Deployment(slug=event.slug, server_id=event.server_id, spec={}, generation=0, seq=0, steps=[],
                         protocol_versions=[], introspection={}, log_tail="", name="", backend="local",
                         status="disabled", desired=desired, decision_seq=0)
        newer_decision(new, event)
        session.add(new)
        new.steps = [first]
    return d


async def record_disable(session: AsyncSession, event: ServerDisabled) -> bool:
    # disabled before its submission reached us (another consumer, or a server the catalog still
    # holds for review): the submission, when it comes, is recorded but not deployed
    d = await _decided(session, event, "stopped", step("stopped", event.reason or "disabled before it was deployed"))
    if d is None or not newer_decision(d, event):
        return False
    d.desired = "stopped"
    if d.status != "disabled":
        d.steps = [*d.steps, step("stopping", event.reason or "disabled")]
    return True


async def record_enable(session: AsyncSession, event: ServerEnabled) -> bool:
    # enabled before any submission reached us: the submission, when it comes, deploys
    d = await _decided(session, event, "running", step("enabled", "enabled before it was submitted"))
    if d is None or not newer_decision(d, event) or d.desired == "running":
        return False
    d.desired = "running"
    if d.generation == 0:
        # no submission ever reached us (a server the catalog holds for review was disabled and
        # enabled again): there is nothing to deploy until server.submitted comes
        d.steps = [*d.steps, step("enabled", "enabled again; deployed when it is submitted")]
        return False
    new_generation(d)
    d.status = "queued"
    d.steps = [*d.steps, step("queued", "enabled again")]
    await add_event(session, bus_tables, ServerDeploying(server_id=d.server_id, slug=d.slug, deployment_id=d.id,
                                                         step="queued", backend=d.backend,
                                                         generation=d.generation, seq=next_seq(d)))
    return True


# ------------------------------------------------------------------ the worker
class Superseded(Exception):
    """A newer submission (or a disable) replaced the one being deployed."""


class AttemptLog:
    """The log lines of one deployment attempt, redacted as they arrive and written in batches
    (``flush``: at every step, every half second while the installer prints, and at the end) to
    ``deployer.deployment_logs``, where the events stream reads them. Bounded per attempt."""

    def __init__(self, orch: Orchestrator, dep_id: uuid.UUID, generation: int) -> None:
        self.orch, self.dep_id, self.generation = orch, dep_id, generation
        self.pending: list[dict[str, Any]] = []
        self.count = self.dropped = 0

    def line(self, text_: str, source: str = "install") -> None:
        if not text_.strip():
            return
        if self.count >= MAX_LOG_LINES:
            self.dropped += 1
            return
        self.count += 1
        self.pending.append({"deployment_id": self.dep_id, "generation": self.generation, "source": source,
                             "line": redact(text_[:MAX_LOG_LINE_CHARS], [])})

    def lines(self, block: str, source: str) -> None:
        for ln in (block or "").splitlines():
            self.line(ln, source)

    async def start(self) -> None:
        """Attempts older than the previous one are not kept."""
        async with self.orch.sessions() as s, s.begin():
            await repository.drop_logs_before(s, self.dep_id, self.generation - 1)

    async def flush(self) -> None:
        rows, self.pending = self.pending, []
        if self.dropped and self.count >= MAX_LOG_LINES:
            rows.append({"deployment_id": self.dep_id, "generation": self.generation, "source": "deployer",
                         "line": f"... {self.dropped} more lines not kept"})
            self.dropped, self.count = 0, self.count + 1
        if not rows:
            return
        async with self.orch.sessions() as s, s.begin():
            await repository.add_log_lines(s, rows)
        self.orch.changed()

    async def pump(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            with contextlib.suppress(Exception):
                await self.flush()


class Orchestrator:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings
        data = settings.data_path
        # the deployer's service credential: archives from the catalog, introspection of its bridges
        self.issuer = Issuer(settings.key_ring, "deployer")
        self.local = LocalDeployer.from_settings(settings, signer=self.issuer)
        self.bridge, self.installer = self.local.bridge, self.local.installer
        self.caps, self.limits = self.bridge.caps, self.bridge.limits
        self.remote = RemoteDeployer(settings.egress)
        builder = ArtifactBuilder(self.installer, data / "cloud-artifacts")
        self.backends: dict[str, Deployer] = {
            "local": self.local, "remote": self.remote,
            "aliyun-fc": AliyunFcDeployer(account_id=settings.aliyun_account_id, region=settings.aliyun_region,
                                          credentials=credentials_from_env("WEMCP_DEPLOYER_ALIYUN"),
                                          endpoint=settings.aliyun_endpoint, live=settings.cloud_live, builder=builder,
                                          keys=settings.key_ring),
            "tencent-scf": TencentScfDeployer(region=settings.tencent_region,
                                              credentials=credentials_from_env("WEMCP_DEPLOYER_TENCENT"),
                                              endpoint=settings.tencent_endpoint, live=settings.cloud_live,
                                              builder=builder, keys=settings.key_ring),
            "kubernetes": KubernetesDeployer.from_settings(settings)}
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.max_concurrent_deploys)
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ watchers (the events stream)
    def changed(self) -> None:
        """A deployment's row or log changed here: wake every stream waiting in :meth:`wait_change`."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait_change(self, timeout: float) -> None:  # noqa: ASYNC109
        """Until this process records a change, or ``timeout`` (changes made by another deployer
        process are seen on the caller's next read)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        global _current
        await self.bridge.start()
        log.info("deployer_started", sandbox=self.caps.mode, own_uid=self.caps.own_uid, netns=self.caps.netns,
                 notes=self.caps.notes, bridge=self.bridge.base_url)
        if self.caps.refusal:
            # The deployer still serves remote and OpenAPI servers; every hosted deploy fails with this line.
            log.error(self.caps.refusal)
        await self._restore()
        self._loop_task = asyncio.create_task(self._loop(), name="deployer-worker")
        _current = self

    async def stop(self) -> None:
        global _current
        if _current is self:
            _current = None
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(BaseException):
                await self._loop_task
        for t in list(self._running.values()):
            t.cancel()
        for t in list(self._running.values()):
            with contextlib.suppress(BaseException):
                await t
        await self.bridge.close()

    def wake(self) -> None:
        self._wake.set()

    def wake_after_commit(self, session: AsyncSession) -> None:
        from sqlalchemy import event

        event.listen(session.sync_session, "after_commit", lambda _s: self.wake(), once=True)

    async def _restore(self) -> None:
        """Deployed local servers come back after a restart (their children start on the next call)."""
        async with self.sessions() as s:
            rows = await repository.deployed_locally(s)
        for row in rows:
            with contextlib.suppress(Exception):
                await self.local.restore(Target(row.slug, row.server_id, parse_spec(row.spec), row.generation))

    # ------------------------------------------------------------------ the worker
    async def _loop(self) -> None:
        while True:
            try:
                while await self._claim_stop() or await self._claim_deploy():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("deployer_loop_failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    async def _claim_deploy(self) -> bool:
        if self._slots.locked():
            return False
        async with self.sessions() as s, s.begin():
            row = await repository.claim_deploy(s, self.owner, LEASE_SECONDS)
        if row is None:
            return False
        await self._slots.acquire()
        task = asyncio.create_task(self._deploy(row.id, row.slug, row.generation))
        self._running[row.slug] = task
        slug: str = row.slug

        def done(_t: asyncio.Task[Any]) -> None:
            self._running.pop(slug, None)
            self._slots.release()

        task.add_done_callback(done)
        return True

    async def _claim_stop(self) -> bool:
        async with self.sessions() as s, s.begin():
            row = await repository.claim_stop(s, self.owner, LEASE_SECONDS)
        if row is None:
            return False
        running = self._running.get(row.slug)
        if running is not None:
            running.cancel()
            with contextlib.suppress(BaseException):
                await running
        for backend in self.backends.values():
            with contextlib.suppress(Exception):
                await backend.undeploy(row.slug)
        async with self.sessions() as s, s.begin():
            d = await s.get(Deployment, row.id, with_for_update=True)
            if d is not None and d.desired == "stopped":
                d.status = "disabled"
                d.lease_owner = None
                d.steps = [*d.steps, step("stopped", "the server was disabled; nothing of it runs")][-MAX_STEPS:]
        self.changed()
        log.info("deployment_stopped", slug=row.slug)
        return True

    async def _deploy(self, dep_id: uuid.UUID, slug: str, generation: int) -> None:
        t0 = time.perf_counter()
        async with self.sessions() as s:
            d = await s.get(Deployment, dep_id)
            assert d is not None
            raw_spec, server_id = d.spec, d.server_id

        attempt = AttemptLog(self, dep_id, generation)
        reached: list[str] = []

        async def progress(name: str, detail: str | None = None) -> None:
            reached.append(name)
            await attempt.flush()
            await self._record(dep_id, generation, name, detail)

        backend: Deployer | None = None
        token = OUTPUT_SINK.set(attempt.line)  # the installers' output, line by line, into this attempt's log
        pumping = asyncio.create_task(attempt.pump())
        try:
            await attempt.start()
            spec = parse_spec(raw_spec)
            target = Target(slug, server_id, spec, generation)
            if spec.hosting == "local":
                backend = self.local  # listed once in the local sandbox, whatever the default backend
            else:
                backend = self.remote if spec.kind == "remote" else self.backends[self.settings.default_backend]
            await progress("planning", "; ".join(backend.plan(target).actions))
            outcome = await backend.deploy(target, progress)
            await progress("introspecting", outcome.introspect_url and "listing tools, prompts and resources")
            listing, versions = await self._introspect(slug, outcome, remote=backend is self.remote,
                                                       env=introspection_env(spec))
            if backend is self.local:
                attempt.lines(await self.local.logs(slug), "server")  # its start-up output (stderr)
                await attempt.flush()
            if spec.hosting == "local":
                await self.local.undeploy(slug)  # runs on users' machines: nothing of it stays here
                await progress("stopped", "listed once in the sandbox without secrets; users run it locally")
                outcome = Outcome(endpoint="", transport="stdio", package_version=outcome.package_version)
            await self._finish_ok(dep_id, generation, UNHOSTED if spec.hosting == "local" else backend.name, outcome,
                                  listing, versions, round(time.perf_counter() - t0, 2))
        except Superseded:
            log.info("deployment_superseded", slug=slug)
        except asyncio.CancelledError:
            raise
        except (DeployError, SpecError) as exc:
            tail = getattr(exc, "tail", "")
            on_local = backend is self.local  # a plain bool: an `if ... is` would narrow self.local to backend's type
            if on_local:
                server_out = await self.local.logs(slug)
                # a crash at start is unregistered already: its output is the error's tail (an install
                # failure's tail is the installer's output, streamed as it came)
                attempt.lines(server_out or (tail if reached[-1:] == ["starting"] else ""), "server")
                tail = tail or server_out
                await self.local.undeploy(slug)
            await attempt.flush()
            await self._finish_failed(dep_id, generation, str(exc), tail, seconds=time.perf_counter() - t0,
                                      backend=backend.name if backend is not None else "none")
        except Exception as exc:
            tail = ""
            on_local = backend is self.local
            if on_local:
                tail = await self.local.logs(slug)
                attempt.lines(tail, "server")
                await self.local.undeploy(slug)
            with contextlib.suppress(Exception):
                await attempt.flush()
            reason = (f"the server started but listing its tools failed: {_first_line(exc)}"
                      if backend is not None else f"deployment failed: {_first_line(exc)}")
            log.warning("deployment_failed", slug=slug, error=_first_line(exc))
            await self._finish_failed(dep_id, generation, reason, tail, seconds=time.perf_counter() - t0,
                                      backend=backend.name if backend is not None else "none")
        finally:
            OUTPUT_SINK.reset(token)
            pumping.cancel()
            with contextlib.suppress(BaseException):
                await pumping

    async def _introspect(self, slug: str, outcome: Outcome, *, remote: bool,
                          env: dict[str, str] | None = None) -> tuple[Listing, list[str]]:
        assert outcome.introspect_url
        if remote:
            listing = await introspect(outcome.introspect_url, mode="auto", headers=outcome.introspect_headers,
                                       transport=outcome.transport, egress=self.settings.egress)
            return listing, [listing.protocol_version]
        # a hosted server's bridge (local, cloud function, pod) answers only its slug's credential;
        # a fresh token per listing: each has at least a minute left, more than either listing may take
        listing = await introspect(outcome.introspect_url, mode="legacy", headers=self._bridge_headers(slug, env))
        versions = [listing.protocol_version]
        with contextlib.suppress(Exception):
            modern = await introspect(outcome.introspect_url, mode="auto", timeout=20,
                                      headers=self._bridge_headers(slug, env))
            if modern.protocol_version == MODERN and [t.name for t in modern.tools] == [t.name for t in listing.tools]:
                versions.append(MODERN)
        return listing, versions

    def _bridge_headers(self, slug: str, env: dict[str, str] | None = None) -> dict[str, str]:
        """The slug's credential, and the values the listing child was started with (the same
        values reach the same child: spec.introspection_env)."""
        values = {f"X-WeMcp-Env-{k.replace('_', '-')}": v for k, v in (env or {}).items()}
        return {HEADER_ASSERTION: self.issuer.bridge_token(slug), **values}

    # ------------------------------------------------------------------ state
    async def _locked(self, s: AsyncSession, dep_id: uuid.UUID, generation: int) -> Deployment:
        d = await s.get(Deployment, dep_id, with_for_update=True, populate_existing=True)
        if d is None or d.generation != generation or d.desired != "running":
            raise Superseded()
        return d

    async def _record(self, dep_id: uuid.UUID, generation: int, name: str, detail: str | None) -> None:
        async with self.sessions() as s, s.begin():
            d = await self._locked(s, dep_id, generation)
            d.steps = [*d.steps, step(name, detail)][-MAX_STEPS:]
            d.lease_until = datetime.now(UTC).replace(microsecond=0) + _lease()
            await add_event(s, bus_tables, ServerDeploying(server_id=d.server_id, slug=d.slug, deployment_id=d.id,
                                                           step=name, detail=detail, backend=d.backend,
                                                           generation=d.generation, seq=next_seq(d)))
        self.changed()

    async def _finish_ok(self, dep_id: uuid.UUID, generation: int, backend: str, outcome: Outcome, listing: Listing,
                         versions: list[str], seconds: float) -> None:
        async with self.sessions() as s, s.begin():
            d = await self._locked(s, dep_id, generation)
            d.status, d.backend = "deployed", backend
            d.endpoint, d.transport = outcome.endpoint or None, outcome.transport
            d.protocol_versions, d.package_version = versions, outcome.package_version
            d.introspection = {"server_name": listing.server_name, "server_version": listing.server_version,
                               "tools": [t.model_dump() for t in listing.tools],
                               "prompts": [p.model_dump() for p in listing.prompts],
                               "resources": [r.model_dump() for r in listing.resources]}
            d.reason, d.log_tail, d.lease_owner = None, "", None
            d.deployed_at = datetime.now(UTC)
            d.steps = [*d.steps, step("deployed", f"{len(listing.tools)} tools, {len(listing.prompts)} prompts, "
                                                  f"{len(listing.resources)} resources in {seconds} s")][-MAX_STEPS:]
            await add_event(s, bus_tables, ServerDeployed(
                server_id=d.server_id, slug=d.slug, deployment_id=d.id, backend=backend,
                generation=d.generation, seq=next_seq(d),
                endpoints=([Endpoint(url=outcome.endpoint, transport=outcome.transport)] if outcome.endpoint else [])
                + ([Endpoint(url=self.bridge.endpoint(d.slug, "sse"), transport="sse")] if backend == "local" else []),
                protocol_versions=versions, package_version=outcome.package_version,
                tools=listing.tools, prompts=listing.prompts, resources=listing.resources))
        self.changed()
        _deploy_metrics().record(backend, "deployed", seconds)
        log.info("deployment_deployed", dep_id=str(dep_id), tools=len(listing.tools), seconds=seconds)

    async def _finish_failed(self, dep_id: uuid.UUID, generation: int, reason: str, tail: str, *,
                             seconds: float | None = None, backend: str = "none") -> None:
        tail = redact(tail or "", [])[-8000:]
        reason = redact(reason, [])  # it may quote the server (an error it answered), and travels on the bus
        try:
            async with self.sessions() as s, s.begin():
                d = await self._locked(s, dep_id, generation)
                d.status, d.reason, d.log_tail, d.lease_owner = "failed", reason, tail, None
                d.steps = [*d.steps, step("failed", reason)][-MAX_STEPS:]
                await add_event(s, bus_tables, ServerDeployFailed(server_id=d.server_id, slug=d.slug,
                                                                  deployment_id=d.id, reason=reason, log_tail=tail,
                                                                  generation=d.generation, seq=next_seq(d)))
        except Superseded:
            return
        self.changed()
        _deploy_metrics().record(backend, "failed", seconds)
        log.info("deployment_failed", dep_id=str(dep_id), reason=reason)


def _lease() -> Any:
    from datetime import timedelta

    return timedelta(seconds=LEASE_SECONDS)


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _first_line(exc.exceptions[0])
    msg = str(exc).strip().splitlines()
    return (msg[0] if msg else type(exc).__name__)[:300]
