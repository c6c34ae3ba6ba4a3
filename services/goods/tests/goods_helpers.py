"""Shared helpers of the goods tests: callers as the gateway states them, events as producers
publish them, and driving the handlers one transaction per event as the bus does."""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
from sqlalchemy import select

from wemcp.common.events.base import Event
from wemcp.common.events.servers import ServerDeployed, ServerSubmitted
from wemcp.common.events.users import UserRegistered
from wemcp.common.identity import Identity
from wemcp.common.trust import platform_headers
from wemcp.goods import handlers as h
from wemcp.goods.models import Product, bus_tables

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def as_user(uid: uuid.UUID, role: str = "user") -> dict[str, str]:
    return platform_headers("goods", Identity(uid, role), issuer="gateway")  # type: ignore[arg-type]


def as_platform() -> dict[str, str]:
    return platform_headers("goods", issuer="ratelimit")


async def publish(nats_url: str, *events: Event) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for event in events:
            await js.publish(
                event.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.event_id)}
            )
    finally:
        await nc.close()


async def apply(runtime: Any, handler: Callable[..., Any], event: Any) -> None:
    """One event through a handler in its own transaction (as the bus runs it)."""
    async with runtime.sessions() as s, s.begin():
        if len(inspect.signature(handler).parameters) >= 3:
            await handler(event, s, runtime)
        else:
            await handler(event, s)


async def outbox(runtime: Any, subject: str) -> list[dict[str, Any]]:
    async with runtime.sessions() as s:
        rows = (
            (
                await s.execute(
                    select(bus_tables.outbox.c.payload)
                    .where(bus_tables.outbox.c.subject == subject)
                    .order_by(bus_tables.outbox.c.id)
                )
            )
            .scalars()
            .all()
        )
    return [json.loads(r) for r in rows]


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


async def product_of(rt: Any, ref: uuid.UUID) -> Product | None:
    async with rt.sessions() as s:
        return (await s.execute(select(Product).where(Product.subject_ref == ref))).scalar_one_or_none()


async def server(rt: Any, owner: uuid.UUID | None, slug: str, *, role: str | None = "merchant") -> Product:
    """A published server of ``owner`` (a user with ``role``), driven through goods' handlers."""
    sid = uuid.uuid4()
    if owner is not None and role is not None:
        await apply(
            rt,
            h.on_user_registered,
            UserRegistered(user_id=owner, login=f"u-{owner.hex[:6]}", role=role, occurred_at=at(0)),
        )
    await apply(
        rt,
        h.on_server_submitted,
        ServerSubmitted(
            server_id=sid,
            slug=slug,
            name=f"io.github.acme/{slug}",
            owner_id=owner,
            revision=1,
            spec={"title": f"{slug} title", "description": f"{slug} does things"},
        ),
    )
    await apply(rt, h.on_server_deployed, ServerDeployed(server_id=sid, slug=slug, generation=1, seq=3))
    p = await product_of(rt, sid)
    assert p is not None
    return p
