"""Event handlers: record intent in the consumer's transaction; the worker does the rest after commit."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common.events.servers import (
    ServerDeployFailed,
    ServerDeploying,
    ServerDisabled,
    ServerEnabled,
    ServerSubmitted,
)
from wemcp.common.outbox import add_event
from wemcp.deployer import service
from wemcp.deployer.models import Deployment, bus_tables
from wemcp.deployer.spec import SpecError, parse_spec


def _wake(session: AsyncSession) -> None:
    orch = service.current()
    if orch is not None:
        orch.wake_after_commit(session)


async def on_server_submitted(event: ServerSubmitted, session: AsyncSession) -> None:
    d = (await session.execute(select(Deployment).where(Deployment.slug == event.slug).with_for_update())
         ).scalar_one_or_none()
    if d is None:
        d = Deployment(slug=event.slug, server_id=event.server_id, spec=event.spec, generation=0, steps=[],
                       protocol_versions=[], introspection={}, log_tail="", name=event.name, backend="local")
        session.add(d)
    d.server_id, d.name, d.owner_id, d.spec = event.server_id, event.name, event.owner_id, event.spec
    d.generation = (d.generation or 0) + 1
    d.desired, d.reason, d.log_tail, d.lease_owner = "running", None, "", None
    try:
        spec = parse_spec(event.spec)
    except SpecError as exc:
        d.status = "failed"
        d.reason = str(exc)
        d.steps = [service.step("failed", str(exc))]
        await session.flush()
        await add_event(session, bus_tables, ServerDeployFailed(server_id=event.server_id, slug=event.slug,
                                                                deployment_id=d.id, reason=str(exc)))
        return
    d.backend = "remote" if spec.kind == "remote" else "local"
    d.status = "queued"
    d.steps = [service.step("queued", f"{spec.kind} server submitted")]
    await session.flush()
    await add_event(session, bus_tables, ServerDeploying(server_id=event.server_id, slug=event.slug,
                                                         deployment_id=d.id, step="queued", backend=d.backend))
    _wake(session)


async def on_server_disabled(event: ServerDisabled, session: AsyncSession) -> None:
    d = (await session.execute(select(Deployment).where(Deployment.slug == event.slug).with_for_update())
         ).scalar_one_or_none()
    if d is None:
        return
    d.desired = "stopped"
    if d.status != "disabled":
        d.steps = [*d.steps, service.step("stopping", event.reason or "disabled")]
    _wake(session)


async def on_server_enabled(event: ServerEnabled, session: AsyncSession) -> None:
    d = (await session.execute(select(Deployment).where(Deployment.slug == event.slug).with_for_update())
         ).scalar_one_or_none()
    if d is None or d.desired == "running":
        return
    d.desired = "running"
    d.generation += 1
    d.status = "queued"
    d.steps = [*d.steps, service.step("queued", "enabled again")]
    await add_event(session, bus_tables, ServerDeploying(server_id=d.server_id, slug=d.slug, deployment_id=d.id,
                                                         step="queued", backend=d.backend))
    _wake(session)
