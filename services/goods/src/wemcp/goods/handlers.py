"""Event handlers: products kept in step with the server and agent lifecycle, merchants' roles, and
calls per product and day.

Every handler runs exactly once in effect (the bus records the event id in the same transaction)
and is order-safe: each fact a product holds is guarded by the producer's own counter — the
submission ``revision``, the deployment ``(generation, seq)``, the disable/enable ``decision_seq``,
the agent's ``saved_at``, the role's ``occurred_at`` — so an event older than what was applied
changes nothing, whichever order the subjects' consumers see them in.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import httpx2 as httpx
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common.events.agents import AgentSaved
from wemcp.common.events.base import Event
from wemcp.common.events.calls import completed_calls
from wemcp.common.events.servers import (
    ServerDeployed,
    ServerDisabled,
    ServerEnabled,
    ServerSubmitted,
    ServerUpdated,
)
from wemcp.common.events.users import UserRegistered, UserRoleChanged
from wemcp.common.logging import get_logger
from wemcp.common.trust import KeyRing
from wemcp.goods import service

log = get_logger("wemcp.goods.handlers")
NIL_USER = uuid.UUID(int=0)


def _settings(runtime: Any) -> Any:
    return runtime.settings


async def on_server_submitted(event: ServerSubmitted, session: AsyncSession, runtime: Any) -> None:
    p = await service.product_of_subject(session, "server", event.server_id, _settings(runtime))
    if event.revision is not None and event.revision < p.revision:
        return  # an older submission: what a newer one said stands
    p.revision = event.revision or p.revision
    p.slug = event.slug
    p.name = event.name[:200]
    p.owner_id = event.owner_id
    if not p.copy_edited:
        p.title = str(event.spec.title or p.title or event.name)[:200]
        p.description = str(event.spec.description or p.description or "")
    await service.settle(session, p)


async def on_server_deployed(event: ServerDeployed, session: AsyncSession, runtime: Any) -> None:
    p = await service.product_of_subject(session, "server", event.server_id, _settings(runtime))
    pos = event.position
    if pos is not None and p.deploy_position is not None and tuple(pos) <= tuple(p.deploy_position):
        return
    p.slug = event.slug
    p.deployed = True
    if pos is not None:
        p.deploy_position = list(pos)
    p.refreshed_at = event.occurred_at
    await service.settle(session, p)


async def _decision(
    session: AsyncSession, event: ServerDisabled | ServerEnabled, disabled: bool, settings: Any
) -> None:
    p = await service.product_of_subject(session, "server", event.server_id, settings)
    seq = event.decision_seq
    if seq is not None:
        if seq <= p.decision_seq:
            return  # an older decision, or this one again
        p.decision_seq = seq
    p.slug = p.slug or event.slug
    p.disabled = disabled
    await service.settle(session, p)


async def on_server_disabled(event: ServerDisabled, session: AsyncSession, runtime: Any) -> None:
    await _decision(session, event, True, _settings(runtime))


async def on_server_enabled(event: ServerEnabled, session: AsyncSession, runtime: Any) -> None:
    await _decision(session, event, False, _settings(runtime))


async def on_server_updated(event: ServerUpdated, session: AsyncSession, runtime: Any) -> None:
    """The event names the changed fields only: the copy is read again from the catalog's public
    detail (the current state, so the order of updates does not matter)."""
    p = await service.product_of_subject(session, "server", event.server_id, _settings(runtime))
    p.slug = p.slug or event.slug
    p.refreshed_at = event.occurred_at
    detail = await _catalog_detail(runtime, event.slug)
    if detail is not None:
        p.name = str(detail.get("name") or p.name)[:200]
        if not p.copy_edited:
            p.title = str(detail.get("title") or p.title)[:200]
            p.description = str(detail.get("description") or p.description)
    await service.settle(session, p)


async def _catalog_detail(runtime: Any, slug: str) -> dict[str, Any] | None:
    url = getattr(runtime.settings, "catalog_url", None)
    if not url:
        return None
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5, headers=runtime.issuer.headers("catalog")) as c:
            r = await c.get(f"/api/v1/servers/{slug}")
        if r.status_code == 200:
            return dict(r.json())
        log.warning("catalog_detail_refused", slug=slug, status=r.status_code)
    except httpx.HTTPError as exc:
        log.warning("catalog_detail_failed", slug=slug, error=type(exc).__name__)
    return None


async def on_agent_saved(event: AgentSaved, session: AsyncSession, runtime: Any) -> None:
    p = await service.product_of_subject(session, "agent", event.agent_id, _settings(runtime))
    if p.source_saved_at is not None and event.saved_at <= p.source_saved_at:
        return
    p.source_saved_at = event.saved_at
    p.slug = str(event.agent_id)
    p.name = event.name[:200]
    p.owner_id = event.owner_id
    if not p.copy_edited:
        p.title = event.name[:200]
        p.description = event.description
    # a public agent is published; private or deleted, it is not
    p.deployed = event.visibility == "public" and not event.deleted
    p.disabled = event.deleted
    await service.settle(session, p)


async def on_user_registered(event: UserRegistered, session: AsyncSession) -> None:
    await service.apply_role(session, event.user_id, event.role, event.occurred_at)


async def on_user_role_changed(event: UserRoleChanged, session: AsyncSession) -> None:
    await service.apply_role(session, event.user_id, event.role, event.occurred_at)


# ---- calls per product and day ------------------------------------------------------------------


def pseudonym(
    ring: KeyRing, kind: str, slug: str, user_id: uuid.UUID | None, keys: dict[tuple[str, str], bytes] | None = None
) -> str:
    """A caller as a merchant sees them: stable for one product, unlinkable across products and to
    the account (an HMAC under a key derived from the platform's key ring for that product).
    ``keys`` caches the derived keys (one derivation per product in a batch)."""
    if user_id is None or user_id == NIL_USER:
        return "anonymous"
    key = keys.get((kind, slug)) if keys is not None else None
    if key is None:
        key = ring.derive(f"goods-pseudonym:{kind}:{slug}").keys[0][1]
        if keys is not None:
            keys[(kind, slug)] = key
    return "u_" + hmac.new(key, user_id.bytes, hashlib.sha256).hexdigest()[:20]


async def on_calls_completed(events: Sequence[Event], session: AsyncSession, runtime: Any) -> None:
    """Sums per (day, product) and per (day, product, pseudonymised user): sums commute, so batches
    may be applied in any order (each once: the bus records their ids)."""
    zone = ZoneInfo(runtime.settings.day_zone)
    ring = runtime.settings.key_ring
    daily: dict[tuple[date, str, str], list[int]] = {}
    users: dict[tuple[date, str, str, str], list[int]] = {}
    derived: dict[tuple[str, str], bytes] = {}
    for call in completed_calls(events):
        if call.agent_id is not None and not call.in_agent_run:
            kind, slug = "agent", str(call.agent_id)
        else:
            kind, slug = "server", call.server_slug
        day = call.occurred_at.astimezone(zone).date()
        refused = int(call.status == "refused")
        errors = int(call.status in ("error", "timeout"))
        metered = int(
            call.metered
            and call.key_source not in ("request", "vault", "oauth")
            and not call.in_agent_run
            and not refused
        )
        d = daily.setdefault((day, kind, slug), [0, 0, 0, 0])
        d[0] += 1
        d[1] += refused
        d[2] += errors
        d[3] += metered
        u = users.setdefault((day, kind, slug, pseudonym(ring, kind, slug, call.user_id, derived)), [0, 0])
        u[0] += 1
        u[1] += refused
    await service.add_usage(session, daily, users)
