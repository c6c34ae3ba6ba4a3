"""Event handlers (the catalog worker). Each runs inside the consumer's transaction, exactly once
in effect (see wemcp.common.bus). These are the only writers of table B. Handlers that embed take
the process's runtime as their third argument (the embedder lives in ``runtime.extras``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TypeAlias

from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.catalog import service
from wemcp.catalog.models import Server
from wemcp.catalog.normalize import normalize_server_json
from wemcp.catalog.projection import add_calls, project, set_enabled_from_a
from wemcp.catalog.repository import db
from wemcp.catalog.repository import projection as search_docs
from wemcp.catalog.repository import servers as repository
from wemcp.catalog.schemas import ServerJson
from wemcp.catalog.state import of
from wemcp.common.bus import BatchSubscription, Handler, Subscription
from wemcp.common.events import servers
from wemcp.common.events.base import Event
from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted, completed_calls
from wemcp.common.events.crawler import CrawlerDiscovered
from wemcp.common.logging import get_logger
from wemcp.common.service import Runtime

log = get_logger("wemcp.catalog.handlers")
# the deployer's three events about one deployment, ordered by its position
DeployEvent: TypeAlias = servers.ServerDeploying | servers.ServerDeployed | servers.ServerDeployFailed


async def _row(session: AsyncSession, event: DeployEvent) -> Server | None:
    row = await repository.server_by_id(session, event.server_id, lock=True)
    if row is None:
        log.warning("event_for_unknown_server", subject=event.subject, server_id=str(event.server_id))
    return row


def admit(row: Server, event: DeployEvent) -> bool:
    """The ordering rule (docs/events.md, "Server lifecycle"): whether ``event`` is newer than what the
    row holds; if so the row's position moves to it. The deploying, deployed and deploy_failed
    consumers run independently, so the events of a deployment arrive in any order.

    - Stamped events (``generation``, ``seq``) apply when their position is above the row's; a
      terminal state (deployed/failed) of generation g is never replaced by a step of the same g; a
      newer generation supersedes whatever the row holds.
    - Events of older producers (no position) are older than any stamped event; among themselves
      they apply when ``occurred_at`` is later than the last applied one's and a step never replaces
      a terminal state (a resubmission clears that, see ``service.submit``).
    """
    pos = event.position
    if pos is not None:
        held = (row.lifecycle_generation, row.lifecycle_seq)
        if pos <= held or (pos[0] == held[0] and row.lifecycle_terminal and not event.terminal):
            return False
        row.lifecycle_generation, row.lifecycle_seq = pos
    else:
        if row.lifecycle_generation or (row.lifecycle_at is not None and event.occurred_at <= row.lifecycle_at) \
                or (row.lifecycle_terminal and not event.terminal):
            return False
    row.lifecycle_terminal = event.terminal
    row.lifecycle_at = event.occurred_at if row.lifecycle_at is None else max(row.lifecycle_at, event.occurred_at)
    return True


def _set_status(row: Server, status: str, detail: str | None) -> None:
    if row.status == "disabled":
        row.status_before_disable = status  # enabling later restores what deployment reached
    else:
        row.status = status
    row.status_detail = detail
    row.updated_at = db.now()


async def _project(session: AsyncSession, runtime: Runtime, row: Server) -> None:
    """B's row of ``row`` from A; search's idf statistics are stale once this commits."""
    state = of(runtime)
    await project(session, row, state.embedder)
    state.terms.changed(session)


async def on_server_deploying(event: servers.ServerDeploying, session: AsyncSession) -> None:
    row = await _row(session, event)
    if row is None or not admit(row, event):
        return
    _set_status(row, "deploying", f"{event.step}: {event.detail}" if event.detail else event.step)


async def on_server_deploy_failed(event: servers.ServerDeployFailed, session: AsyncSession) -> None:
    row = await _row(session, event)
    if row is None or not admit(row, event):
        return
    _set_status(row, "failed", event.reason[:2000])


async def on_server_deployed(event: servers.ServerDeployed, session: AsyncSession, runtime: Runtime) -> None:
    row = await _row(session, event)
    if row is None or not admit(row, event):
        return
    first_publish = row.published_at is None
    row.tools = [t.model_dump(exclude_none=True) for t in event.tools]
    row.prompts = [p.model_dump(exclude_none=True) for p in event.prompts]
    row.resources = [r.model_dump(exclude_none=True) for r in event.resources]
    row.endpoints = [e.model_dump() for e in event.endpoints]
    row.deploy_backend = event.backend
    row.deployed_at = event.occurred_at
    if row.published_at is None:
        row.published_at = db.now()
    _set_status(row, "published", None)
    await session.flush()
    await session.refresh(row)
    await _project(session, runtime, row)
    if first_publish:
        await service.add_news(session, "server_published", f"New server: {row.title}",
                               row.description[:500], server_slug=row.slug)


async def on_server_disabled(event: servers.ServerDisabled, session: AsyncSession, runtime: Runtime) -> None:
    await set_enabled_from_a(session, event.server_id)
    of(runtime).terms.changed(session)


async def on_server_enabled(event: servers.ServerEnabled, session: AsyncSession, runtime: Runtime) -> None:
    row = await repository.server_by_id(session, event.server_id)
    if row is None:
        return
    if row.deployed_at is not None:
        # Re-project fully (cheap when nothing embedded changed): B must match A, whatever happened.
        await _project(session, runtime, row)
    await set_enabled_from_a(session, event.server_id)
    of(runtime).terms.changed(session)


async def on_server_updated(event: servers.ServerUpdated, session: AsyncSession, runtime: Runtime) -> None:
    """An owner/admin edit reaches B now, not on the next deployment. The row lock serialises this
    with the deployed handler (another consumer); whichever runs last projects what A says then.
    ``project`` re-embeds only when the embedded text (title, name, description, tools) changed."""
    row = await repository.server_by_id(session, event.server_id, lock=True)
    if row is None or row.deployed_at is None:  # no B row before the first deployment
        return
    await _project(session, runtime, row)


# Which MCP requests count as a use of the server (initialize, tools/list ... do not).
COUNTED_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})


def counted(event: McpCallCompleted) -> bool:
    return event.method in COUNTED_METHODS and event.status != "refused"


async def on_calls_completed(events: Sequence[Event], session: AsyncSession) -> None:
    """Counts a batch of calls (``mcp.call.batch`` envelopes and single ``mcp.call.completed``
    events) in A, and B's popularity (see ``add_calls``): one statement for the whole batch, not
    one per call. Increments commute, so the order of batches does not matter."""
    await add_calls(session, Counter(c.server_slug for c in completed_calls(events) if counted(c)))


async def on_crawler_discovered(event: CrawlerDiscovered, session: AsyncSession, runtime: Runtime) -> None:
    """A server the crawler found is listed as an owner-less, *unhosted* server (searchable at once;
    nothing is deployed): new package keys are inserted, the crawler's own listings follow newer
    descriptions, and a listing someone else made (owned, submitted, imported by an admin) is
    never touched (``service.import_crawled``)."""
    if not event.server_json:
        return
    try:
        doc = ServerJson.model_validate({"description": event.description or "", **event.server_json})
        n = normalize_server_json(doc, kind="crawled")
    except Exception as exc:  # a bad discovery is not worth a redelivery loop
        log.info("crawler_discovery_rejected", name=event.name, error=str(exc)[:300])
        return
    row = await service.import_crawled(session, n, event.source)
    if row is not None:
        await _project(session, runtime, row)


async def on_server_health(event: servers.ServerHealth, session: AsyncSession, runtime: Runtime) -> None:
    """The crawler's latest probe of a server: status, last check, uptime, latency (the detail) and
    B's ``health`` (the ``healthy`` search filter). Order-safe: an older check than the one applied is
    ignored. Tools that changed since the deployment's introspection replace A's and are re-projected."""
    row = await repository.server_by_id(session, event.server_id, lock=True)
    if row is None or (row.health_checked_at is not None and event.checked_at <= row.health_checked_at):
        return
    row.health_status, row.health_checked_at = event.status, event.checked_at
    row.health = {"latency_ms": event.latency_ms, "error": event.error, "uptime_24h": event.uptime_24h,
                  "uptime_7d": event.uptime_7d, "p50_ms": event.p50_ms, "p95_ms": event.p95_ms,
                  "tool_count": event.tool_count}
    if event.tools is not None:
        row.tools = [t.model_dump(exclude_none=True) for t in event.tools]
        log.info("server_tools_changed", slug=row.slug, tools=len(event.tools))
    await session.flush()
    if row.deployed_at is None:
        return  # no B row yet
    if event.tools is not None:
        await session.refresh(row)
        await _project(session, runtime, row)
    else:
        await search_docs.set_health(session, row.id, event.status)


SUBSCRIPTIONS_EVENTS: list[tuple[type[Event], Handler] | Subscription | BatchSubscription] = [
    (servers.ServerDeploying, on_server_deploying),
    (servers.ServerDeployed, on_server_deployed),
    (servers.ServerDeployFailed, on_server_deploy_failed),
    (servers.ServerDisabled, on_server_disabled),
    (servers.ServerEnabled, on_server_enabled),
    (servers.ServerUpdated, on_server_updated),
    (CrawlerDiscovered, on_crawler_discovered),
    (servers.ServerHealth, on_server_health),
    # durable "catalog-mcp-call-completed", as when it took single events (its processed_events rows hold)
    BatchSubscription((McpCallCompleted, McpCallsCompleted), on_calls_completed),
]
