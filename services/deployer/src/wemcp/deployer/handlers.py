"""Event handlers: record intent in the consumer's transaction; the worker does the rest after commit.

``server.submitted``, ``server.disabled`` and ``server.enabled`` come through three durable consumers
that run independently, so they may be handled in any order. A decision (disable/enable) applies
only when it is newer than the one the row holds (``decision_seq``), a submission only when its
``revision`` is newer than the one recorded (unstamped: in arrival order); a submission of a server whose
last decision was to disable it is recorded (the next generation, the new spec) but not deployed
until it is enabled.
"""

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
        d = Deployment(slug=event.slug, server_id=event.server_id, spec=event.spec.to_wire(), generation=0, steps=[],
                       protocol_versions=[], introspection={}, log_tail="", name=event.name, backend="local")
        session.add(d)
    elif event.revision is not None and event.revision <= (d.revision or 0):
        return  # an older submission than the one deployed (published late, e.g. by another relay)
    if event.revision is not None:
        d.revision = event.revision
    d.server_id, d.name, d.owner_id, d.spec = event.server_id, event.name, event.owner_id, event.spec.to_wire()
    service.new_generation(d)
    if d.desired == "stopped":  # disabled: the new spec waits for server.enabled (which deploys it)
        d.steps = [*d.steps, service.step("submitted", "a new version, deployed when the server is enabled")]
        return
    d.desired, d.reason, d.log_tail, d.lease_owner = "running", None, "", None
    try:
        spec = parse_spec(event.spec)
    except SpecError as exc:
        d.status = "failed"
        d.reason = str(exc)
        d.steps = [service.step("failed", str(exc))]
        await session.flush()
        await add_event(session, bus_tables, ServerDeployFailed(server_id=event.server_id, slug=event.slug,
                                                                deployment_id=d.id, reason=str(exc),
                                                                generation=d.generation, seq=service.next_seq(d)))
        return
    d.backend = "remote" if spec.kind == "remote" else "local"
    d.status = "queued"
    d.steps = [service.step("queued", f"{spec.kind} server submitted")]
    await session.flush()
    await add_event(session, bus_tables, ServerDeploying(server_id=event.server_id, slug=event.slug,
                                                         deployment_id=d.id, step="queued", backend=d.backend,
                                                         generation=d.generation, seq=service.next_seq(d)))
    _wake(session)


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


def _awaiting_submission(event: ServerDisabled | ServerEnabled, desired: str) -> Deployment:
    """The row of a server whose decision reached us before its first submission (generation 0: no
    spec, nothing to deploy); a concurrent insert of the same slug makes the event retry."""
    d = Deployment(slug=event.slug, server_id=event.server_id, spec={}, generation=0, seq=0, steps=[],
                   protocol_versions=[], introspection={}, log_tail="", name="", backend="local",
                   status="disabled", desired=desired, decision_seq=0)
    newer_decision(d, event)
    return d


async def on_server_disabled(event: ServerDisabled, session: AsyncSession) -> None:
    d = (await session.execute(select(Deployment).where(Deployment.slug == event.slug).with_for_update())
         ).scalar_one_or_none()
    if d is None:
        # disabled before its submission reached us (another consumer, or a server the catalog still
        # holds for review): keep the decision, so the submission is recorded but not deployed
        d = _awaiting_submission(event, "stopped")
        session.add(d)
        d.steps = [service.step("stopped", event.reason or "disabled before it was deployed")]
        return
    if not newer_decision(d, event):
        return
    d.desired = "stopped"
    if d.status != "disabled":
        d.steps = [*d.steps, service.step("stopping", event.reason or "disabled")]
    _wake(session)


async def on_server_enabled(event: ServerEnabled, session: AsyncSession) -> None:
    d = (await session.execute(select(Deployment).where(Deployment.slug == event.slug).with_for_update())
         ).scalar_one_or_none()
    if d is None:
        # enabled before any submission reached us: the decision is kept (an older disable arriving
        # later must not win), and the submission, when it comes, deploys
        d = _awaiting_submission(event, "running")
        session.add(d)
        d.steps = [service.step("enabled", "enabled before it was submitted")]
        return
    if not newer_decision(d, event) or d.desired == "running":
        return
    d.desired = "running"
    if d.generation == 0:
        # no submission ever reached us (a server the catalog holds for review was disabled and
        # enabled again): there is nothing to deploy until server.submitted comes
        d.steps = [*d.steps, service.step("enabled", "enabled again; deployed when it is submitted")]
        return
    service.new_generation(d)
    d.status = "queued"
    d.steps = [*d.steps, service.step("queued", "enabled again")]
    await add_event(session, bus_tables, ServerDeploying(server_id=d.server_id, slug=d.slug, deployment_id=d.id,
                                                         step="queued", backend=d.backend,
                                                         generation=d.generation, seq=service.next_seq(d)))
    _wake(session)
