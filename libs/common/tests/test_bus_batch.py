"""Batch consumers (wemcp.common.bus.BatchSubscription) against real Postgres and real JetStream:
exactly once per event across duplicate batches and redeliveries, batches mixing envelopes
(``mcp.call.batch``) and legacy single events (``mcp.call.completed``), a poison message parked
without holding the batch, a failing event retried alone, and a single-event consumer moved to
batches keeping what it had applied."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter

import nats
import pytest
from sqlalchemy import func, select

from wemcp.common.bus import BatchSubscription, Subscription
from wemcp.common.config import ServiceSettings
from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted, completed_calls
from wemcp.common.service import ServiceSpec, running
from wemcp.deployer.models import bus_tables
from wemcp.deployer.models import probe_receipts as receipts
from wemcp.devstack.testing import wait_for

pytestmark = pytest.mark.usefixtures("clean_db", "clean_bus")
DURABLE = "deployer-mcp-call-completed"  # what the single-event consumer of mcp.call.completed is named


class Recorder:
    """A batch handler that writes one receipt per call (note = the call's event id), so a call
    applied twice shows as two rows; it remembers the size of every batch it was given."""

    def __init__(self, fail_while=None) -> None:
        self.batches: list[int] = []
        self.fail_while = fail_while

    async def __call__(self, events, session) -> None:
        calls = completed_calls(events)
        self.batches.append(len(events))
        if calls:
            await session.execute(receipts.insert(), [
                {"event_id": uuid.uuid4(), "seq": 0, "note": str(c.event_id), "occurred_at": c.occurred_at,
                 "handled_by_pid": os.getpid()} for c in calls])
        if self.fail_while is not None and self.fail_while(calls):
            raise RuntimeError("cannot apply this one yet")


def batch_spec(handler) -> ServiceSpec:
    return ServiceSpec(name="deployer", title="batch consumer", tables=bus_tables,
                       subscriptions=[BatchSubscription((McpCallCompleted, McpCallsCompleted), handler)])


def call(slug: str = "echo") -> McpCallCompleted:
    return McpCallCompleted(server_slug=slug, method="tools/call", tool="echo", latency_ms=1.5, user_id=uuid.uuid4())


async def publish(nats_url: str, *items: McpCallCompleted | McpCallsCompleted | tuple[str, bytes],
                  msg_id_suffix: str = "") -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for item in items:
            if isinstance(item, tuple):  # (subject, raw body): what a broken producer might send
                subject, body, msg_id = item[0], item[1], str(uuid.uuid4())
            else:
                subject, body, msg_id = item.subject, item.model_dump_json().encode(), str(item.event_id)
            await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id + msg_id_suffix})
    finally:
        await nc.close()


async def applied(app) -> Counter[str]:
    async with app.state.runtime.sessions() as s:
        return Counter((await s.execute(select(receipts.c.note))).scalars().all())


def applied_at_least(app, n: int):
    async def check():
        got = await applied(app)
        return got if sum(got.values()) >= n else None
    return check


async def test_envelopes_and_single_events_are_applied_once_in_batches(settings_for, infra):
    envelopes = [McpCallsCompleted(gateway="gw-1", calls=[call() for _ in range(5)]) for _ in range(3)]
    singles = [call() for _ in range(4)]
    every_call = [c for e in envelopes for c in e.calls] + singles
    # published before the consumer starts: they are there together, so they come in one batch
    await publish(infra.nats_url, *envelopes, *singles)
    handler = Recorder()
    async with running(batch_spec(handler), settings_for(ServiceSettings)) as app:
        got = await wait_for(applied_at_least(app, len(every_call)))
        assert sum(handler.batches) == 7 and len(handler.batches) < 7  # batched, not one per message
        # the same batch and the same single event again, past JetStream's duplicate window (new
        # message ids): the consumer's processed_events table is what keeps them from counting twice
        await publish(infra.nats_url, envelopes[0], singles[0], msg_id_suffix="-again")
        late = call()
        await publish(infra.nats_url, late)  # published after the duplicates: once it is in, they were seen
        got = await wait_for(applied_at_least(app, len(every_call) + 1))
        assert got == Counter({str(c.event_id): 1 for c in [*every_call, late]})
        async with app.state.runtime.sessions() as s:
            recorded = (await s.execute(select(func.count()).select_from(bus_tables.processed)
                                        .where(bus_tables.processed.c.consumer == DURABLE))).scalar_one()
        assert recorded == 3 + 4 + 1  # one row per message applied: an envelope is one event


async def test_a_poison_message_is_parked_and_the_rest_of_its_batch_applied(settings_for, infra):
    good = [call(), call()]
    envelope = McpCallsCompleted(calls=[call(), call()])
    await publish(infra.nats_url, good[0], ("mcp.call.completed", b'{"server_slug": 7, "method": null}'),
                  envelope, ("mcp.call.batch", b"not json"), good[1])
    handler = Recorder()
    async with running(batch_spec(handler), settings_for(ServiceSettings)) as app:
        got = await wait_for(applied_at_least(app, 4))
        assert got == Counter({str(c.event_id): 1 for c in [*good, *envelope.calls]})
        async with app.state.runtime.sessions() as s:
            dead = (await s.execute(select(bus_tables.dead_letters).order_by(bus_tables.dead_letters.c.id))).all()
        assert [(d.consumer, d.subject) for d in dead] == [(DURABLE, "mcp.call.completed"), (DURABLE, "mcp.call.batch")]
        assert "server_slug" in dead[0].error and dead[1].payload == "not json"
        assert handler.batches == [3]  # the three good messages, in one batch, poison left out


async def test_a_failing_event_is_retried_alone_while_the_others_are_applied(settings_for, infra):
    stubborn = call("stubborn")
    others = [call() for _ in range(3)]
    attempts = Counter[str]()

    def fail_while(calls) -> bool:
        if any(c.event_id == stubborn.event_id for c in calls):
            attempts["stubborn"] += 1
            return attempts["stubborn"] < 3  # fails twice, then goes through
        return False

    await publish(infra.nats_url, others[0], stubborn, others[1], others[2])
    handler = Recorder(fail_while)
    async with running(batch_spec(handler), settings_for(ServiceSettings)) as app:
        got = await wait_for(applied_at_least(app, 4), timeout=20)
        await asyncio.sleep(0.3)
        # the failed attempts wrote nothing (rolled back); every call counted exactly once
        assert await applied(app) == got == Counter({str(c.event_id): 1 for c in [*others, stubborn]})
        assert attempts["stubborn"] == 3
        assert handler.batches[0] == 4  # the whole batch first, then one by one


async def test_a_single_event_consumer_moved_to_batches_keeps_what_it_applied(settings_for, infra):
    """The durable keeps its name: the events it applied one at a time are not applied again when
    they come back (redelivered, or republished past the duplicate window) to the batch consumer."""
    settings = settings_for(ServiceSettings)
    seen: list[str] = []

    async def one(event: McpCallCompleted, session) -> None:
        seen.append(str(event.event_id))
        await Recorder()([event], session)

    old = [call() for _ in range(3)]
    single = ServiceSpec(name="deployer", title="single-event consumer", tables=bus_tables,
                         subscriptions=[Subscription(McpCallCompleted, one)])
    async with running(single, settings) as app:
        await publish(infra.nats_url, *old)
        await wait_for(applied_at_least(app, 3))
    assert sorted(seen) == sorted(str(c.event_id) for c in old)

    new = [call(), McpCallsCompleted(calls=[call()])]
    await publish(infra.nats_url, old[0], old[2], msg_id_suffix="-again")
    await publish(infra.nats_url, *new)
    handler = Recorder()
    async with running(batch_spec(handler), settings) as app:
        got = await wait_for(applied_at_least(app, 5))
        assert got == Counter({str(c.event_id): 1 for c in [*old, new[0], *new[1].calls]})  # type: ignore[union-attr]
        nc = await nats.connect(infra.nats_url)
        try:
            info = await nc.jetstream().consumer_info("CALLS", DURABLE)
        finally:
            await nc.close()
        assert sorted(info.config.filter_subjects or []) == ["mcp.call.batch", "mcp.call.completed"]
