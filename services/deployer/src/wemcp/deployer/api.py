"""HTTP API of the deployer: deployment status for pages, and side-effect-free plans.

A deployment shows a server's internals (endpoint, live output, failures): only the server's owner
and admins may read it; anyone else gets the same 404 as for a slug that does not exist."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from sqlalchemy import select

from wemcp.common.errors import BadRequest, NotFound, ServiceUnavailable
from wemcp.common.identity import CurrentUser, Identity
from wemcp.deployer.backends.base import Target
from wemcp.deployer.child import redact
from wemcp.deployer.models import Deployment
from wemcp.deployer.schemas import DeploymentRead, EgressHost, EgressRead, PlanRead, PlanRequest, StepRead
from wemcp.deployer.service import current
from wemcp.deployer.spec import SpecError, parse_spec

router = APIRouter(prefix="/api/v1", tags=["deployer"])
Slug = Annotated[str, Path(min_length=1, max_length=200)]
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


async def _readable(slug: str, request: Request, who: Identity) -> Deployment:
    """The deployment, for its owner and admins; the same 404 as for a slug that does not exist for
    anyone else."""
    if not _SLUG.match(slug):
        raise NotFound(f"no deployment {slug!r}")
    runtime = request.app.state.runtime
    async with runtime.sessions() as s:
        d = (await s.execute(select(Deployment).where(Deployment.slug == slug))).scalar_one_or_none()
    # owner-less servers (imported, crawled) are the admins' to look after
    if d is None or not (who.at_least("admin") or (d.owner_id is not None and d.owner_id == who.user_id)):
        raise NotFound(f"no deployment {slug!r}")
    return d


@router.get("/deployments/{slug}", response_model=DeploymentRead)
async def get_deployment(slug: Slug, request: Request, who: CurrentUser) -> DeploymentRead:
    d = await _readable(slug, request, who)
    orch = current()
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
async def get_egress(slug: Slug, request: Request, who: CurrentUser) -> EgressRead:
    """Where a hosted server with network connected through the egress proxy: host names and ports,
    counts and bytes (never paths, queries, headers or bodies), and its caps. Owner and admins."""
    d = await _readable(slug, request, who)
    orch = current()
    proxy = orch.bridge.egress if orch is not None else None
    report: dict[str, Any] = proxy.report(slug) if proxy is not None else {
        "hosts": [], "open_connections": 0, "bytes": 0, "limits": {}}
    return EgressRead(slug=d.slug, network=bool((d.spec or {}).get("network")),
                      hosts=[EgressHost(**h) for h in report["hosts"]], open_connections=report["open_connections"],
                      bytes=report["bytes"], limits=report["limits"])


@router.post("/deployments/plan", response_model=PlanRead)
async def plan_deployment(body: PlanRequest, _who: CurrentUser) -> PlanRead:
    """What a deployment of ``spec`` would do on a backend; nothing is installed, started or sent."""
    orch = current()
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
