"""HTTP API of the deployer: deployment status for pages, and side-effect-free plans.

A deployment shows a server's internals (endpoint, live output, failures): only the server's owner
and admins may read it; anyone else gets the same 404 as for a slug that does not exist."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import StreamingResponse

from wemcp.common.errors import BadRequest, NotFound, ServiceUnavailable
from wemcp.common.events.spec import ServerSpec
from wemcp.common.identity import CurrentUser
from wemcp.deployer import repository
from wemcp.deployer.backends.base import Target
from wemcp.deployer.child import redact
from wemcp.deployer.deps import Sessions, Worker
from wemcp.deployer.models import Deployment
from wemcp.deployer.schemas import DeploymentRead, EgressHost, EgressRead, PlanRead, PlanRequest, StepRead
from wemcp.deployer.service import Orchestrator
from wemcp.deployer.spec import SpecError, parse_spec

router = APIRouter(prefix="/api/v1", tags=["deployer"])
Slug = Annotated[str, Path(min_length=1, max_length=200)]
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


async def _readable(sessions: Sessions, slug: str, who: Any) -> Deployment:
    """The deployment of ``slug`` if ``who`` may read it: its server's owner, or an admin
    (owner-less servers — imported, crawled — are the admins' to look after). Anyone else gets the
    404 of a slug that does not exist."""
    if not _SLUG.match(slug):
        raise NotFound(f"no deployment {slug!r}")
    async with sessions() as s:
        d = await repository.deployment_by_slug(s, slug)
    if d is None or not (who.at_least("admin") or (d.owner_id is not None and d.owner_id == who.user_id)):
        raise NotFound(f"no deployment {slug!r}")
    return d


@router.get("/deployments/{slug}", response_model=DeploymentRead)
async def get_deployment(slug: Slug, who: CurrentUser, sessions: Sessions, orch: Worker) -> DeploymentRead:
    d = await _readable(sessions, slug, who)
    live: dict[str, object] = {"state": "unknown"}
    logs = d.log_tail
    if orch is not None and d.backend in orch.backends:
        st = await orch.backends[d.backend].status(slug)
        live = {"state": st.state, "replicas": st.replicas, **st.detail}
        logs = (await orch.backends[d.backend].logs(slug, 50)) or logs
    intro = d.introspection or {}
    return DeploymentRead(
        slug=d.slug, server_id=str(d.server_id), status=d.status, desired=d.desired, backend=d.backend,
        generation=d.generation, steps=[StepRead(**s) for s in d.steps], endpoint=d.endpoint, transport=d.transport,
        protocol_versions=d.protocol_versions, package_version=d.package_version, tools=intro.get("tools", []),
        prompts=intro.get("prompts", []), resources=intro.get("resources", []),
        reason=redact(d.reason, []) if d.reason else None, runtime=live,
        logs=redact(logs or "", []), updated_at=d.updated_at, deployed_at=d.deployed_at)


@router.get("/deployments/{slug}/egress", response_model=EgressRead)
async def get_egress(slug: Slug, who: CurrentUser, sessions: Sessions, orch: Worker) -> EgressRead:
    """Where a hosted server with network connected through the egress proxy: host names and ports,
    counts and bytes (never paths, queries, headers or bodies), and its caps. Owner and admins."""
    d = await _readable(sessions, slug, who)
    proxy = orch.bridge.egress if orch is not None else None
    report: dict[str, Any] = proxy.report(slug) if proxy is not None else {
        "hosts": [], "open_connections": 0, "bytes": 0, "limits": {}}
    return EgressRead(slug=d.slug, network=ServerSpec.model_validate(d.spec or {}).network,
                      hosts=[EgressHost(**h) for h in report["hosts"]], open_connections=report["open_connections"],
                      bytes=report["bytes"], limits=report["limits"])


@router.post("/deployments/plan", response_model=PlanRead)
async def plan_deployment(body: PlanRequest, _who: CurrentUser, orch: Worker) -> PlanRead:
    """What a deployment of ``spec`` would do on a backend; nothing is installed, started or sent."""
    if orch is None:
        raise ServiceUnavailable("the deployer worker is not running")
    try:
        spec = parse_spec(body.spec)
    except SpecError as exc:
        raise BadRequest(str(exc)) from None
    name = body.backend or ("remote" if spec.kind == "remote" else orch.settings.default_backend)
    backend = orch.backends.get(name)
    if backend is None:
        raise BadRequest(f"unknown backend {name!r}; one of {sorted(orch.backends)}")
    plan = backend.plan(Target(body.slug, uuid.UUID(int=0), spec))
    return PlanRead(backend=plan.backend, slug=plan.slug, kind=plan.kind, actions=plan.actions,
                    artifacts=plan.artifacts, requests=plan.requests)


# ---- the events stream -----------------------------------------------------------------------------

TERMINAL = frozenset({"deployed", "failed", "disabled"})
MAX_STREAM_SECONDS = 900.0  # then the stream ends; the client reconnects with Last-Event-ID
HEARTBEAT_SECONDS = 10.0
POLL_SECONDS = 1.0  # changes made by another deployer process are seen this late at most
LOG_BATCH = 500
_CURSOR = re.compile(r"^(\d{1,9})\.(\d{1,6})\.(\d{1,19})$")


def _sse(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str, ensure_ascii=False)}\n\n".encode()


def _final(d: Deployment) -> dict[str, Any]:
    intro = d.introspection or {}
    return {"status": d.status, "generation": d.generation, "backend": d.backend,
            "package_version": d.package_version, "endpoint": d.endpoint,
            "reason": redact(d.reason, []) if d.reason else None,
            "tools": [t.get("name") for t in intro.get("tools", [])]}


@router.get("/deployments/{slug}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def deployment_events(slug: Slug, request: Request, who: CurrentUser, sessions: Sessions, orch: Worker,
                            last_event_id: Annotated[str | None, Header(max_length=64)] = None) -> StreamingResponse:
    """Server-sent events of the deployment's current attempt, for its owner and admins: ``state``
    (first: status and generation), ``step`` (each step as recorded), ``log`` (installer and
    start-up output, redacted), then ``done`` with the final state (``deployed`` | ``failed`` |
    ``disabled``, or ``superseded`` when a newer submission started another attempt) and the end of
    the stream. A finished deployment replays its attempt and ends at once; one in progress is
    followed live. Event ids are cursors: ``Last-Event-ID`` resumes after the last event seen."""
    d = await _readable(sessions, slug, who)
    steps_sent, log_id = 0, 0
    m = _CURSOR.match(last_event_id or "")
    if m and int(m.group(1)) == d.generation:
        steps_sent, log_id = int(m.group(2)), int(m.group(3))
    return StreamingResponse(_follow(request, sessions, orch, d.id, d.generation, steps_sent, log_id),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _follow(request: Request, sessions: Sessions, orch: Orchestrator | None, dep_id: uuid.UUID,
                  generation: int, steps_sent: int, log_id: int) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_STREAM_SECONDS
    quiet_since = loop.time()
    first = True
    while True:
        async with sessions() as s:
            d = await repository.deployment(s, dep_id)
            if d is None:
                return
            logs = [] if d.generation != generation else list(
                await repository.log_lines_after(s, dep_id, generation, log_id, LOG_BATCH))
        if first:
            yield _sse("state", {"status": d.status, "generation": d.generation, "backend": d.backend})
            first = False
        if d.generation != generation:
            yield _sse("done", {"status": "superseded", "generation": d.generation})
            return
        steps = d.steps[steps_sent:] if steps_sent <= len(d.steps) else []
        items: list[tuple[str, int, dict[str, Any]]] = [(str(st.get("at") or ""), 0, st) for st in steps]
        items += [(lg.at.isoformat(), 1, {"id": lg.id, "source": lg.source, "line": lg.line, "at": lg.at})
                  for lg in logs]
        items.sort(key=lambda it: it[0])  # stable: a step and the lines before it stay in order
        for _, kind, data in items:
            if kind == 0:
                steps_sent += 1
                payload = {"step": data.get("step"), "detail": data.get("detail"), "at": data.get("at")}
                yield _sse("step", payload, f"{generation}.{steps_sent}.{log_id}")
            else:
                log_id = max(log_id, data.pop("id"))
                yield _sse("log", data, f"{generation}.{steps_sent}.{log_id}")
        if items:
            quiet_since = loop.time()
        if d.status in TERMINAL and len(logs) < LOG_BATCH:
            yield _sse("done", _final(d), f"{generation}.{steps_sent}.{log_id}")
            return
        if loop.time() > deadline or await request.is_disconnected():
            return
        if loop.time() - quiet_since > HEARTBEAT_SECONDS:
            quiet_since = loop.time()
            yield b": keep-alive\n\n"
        if len(logs) < LOG_BATCH:
            if orch is not None:
                await orch.wait_change(POLL_SECONDS)
            else:
                await asyncio.sleep(POLL_SECONDS)
