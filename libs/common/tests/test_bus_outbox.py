"""The outbox and the consumers against real Postgres and real JetStream."""

from __future__ import annotations

import asyncio
import uuid

import httpx2 as httpx
import nats
import pytest
from sqlalchemy import func, select, update

from wemcp.common.config import ServiceSettings
from wemcp.common.events.base import ProbeRecorded
from wemcp.common.outbox import add_event
from wemcp.common.probes import make_probe_handler, probe_router
from wemcp.common.service import ServiceSpec, running
from wemcp.common.trust import platform_headers
from wemcp.deployer.models import bus_tables as deployer_tables
from wemcp.deployer.models import probe_receipts as deployer_receipts
from wemcp.devstack.testing import wait_for
from wemcp.goods.models import bus_tables as goods_tables
from wemcp.goods.models import probe_receipts as goods_receipts

pytestmark = pytest.mark.usefixtures("clean_db", "clean_bus")


def producer_spec() -> ServiceSpec:
    return ServiceSpec(name="goods", title="producer", routers=[probe_router(goods_tables, goods_receipts)],
                       tables=goods_tables)


def consumer_spec(handler=None) -> ServiceSpec:
    return ServiceSpec(name="deployer", title="consumer", tables=deployer_tables,
                       subscriptions=[(ProbeRecorded, handler or make_probe_handler(deployer_receipts))])


async def receipts(app, note: str | None = None) -> list[int]:
    async with app.state.runtime.sessions() as s:
        q = select(deployer_receipts.c.seq).order_by(deployer_receipts.c.seq)
        if note is not None:
            q = q.where(deployer_receipts.c.note == note)
        return [r[0] for r in (await s.execute(q)).all()]


async def test_committed_event_reaches_consumer_once(settings_for):
    settings = settings_for(ServiceSettings)
    async with running(producer_spec(), settings) as producer, running(consumer_spec(), settings) as consumer:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=producer), base_url="http://p") as c:
            r = await c.post("/internal/bus/probes", json={"count": 50, "note": "once"},
                             headers=platform_headers("goods"))
            assert r.status_code == 202, r.text
        got = await wait_for(lambda: _len_is(consumer, "once", 50))
        assert got == list(range(50))


async def _len_is(app, note: str, n: int):
    rows = await receipts(app, note)
    return rows if len(rows) >= n else None


async def test_rolled_back_transaction_emits_nothing(settings_for):
    settings = settings_for(ServiceSettings)
    async with running(producer_spec(), settings) as producer, running(consumer_spec(), settings) as consumer:
        sessions = producer.state.runtime.sessions
        with pytest.raises(RuntimeError):
            async with sessions() as s, s.begin():
                await add_event(s, goods_tables, ProbeRecorded(seq=1, note="rolled-back"))
                raise RuntimeError("the state change failed")
        async with sessions() as s, s.begin():
            await add_event(s, goods_tables, ProbeRecorded(seq=2, note="committed"))
        await wait_for(lambda: _len_is(consumer, "committed", 1))
        await asyncio.sleep(0.3)
        assert await receipts(consumer, "rolled-back") == []
        async with sessions() as s:
            assert (await s.execute(select(func.count()).select_from(goods_tables.outbox))).scalar_one() == 1


async def test_republished_event_is_applied_once(settings_for):
    """A relay that dies after publishing but before marking the row sent publishes it again;
    JetStream's dedup window and the consumer's processed_events table make that harmless."""
    settings = settings_for(ServiceSettings)
    async with running(producer_spec(), settings) as producer, running(consumer_spec(), settings) as consumer:
        sessions = producer.state.runtime.sessions
        async with sessions() as s, s.begin():
            await add_event(s, goods_tables, ProbeRecorded(seq=7, note="dup"))
        await wait_for(lambda: _len_is(consumer, "dup", 1))
        for _ in range(3):  # the relay "forgot" it sent the row
            async with sessions() as s, s.begin():
                await s.execute(update(goods_tables.outbox).values(published_at=None))
            await producer.state.runtime.relay.relay_once()
        await asyncio.sleep(0.5)
        assert await receipts(consumer, "dup") == [7]


async def test_same_event_published_past_dedup_window_is_applied_once(settings_for, infra):
    """Beyond JetStream's duplicate window only the consumer's idempotency protects us: publish the
    same event id twice with different Nats-Msg-Id headers (as if the window had passed)."""
    settings = settings_for(ServiceSettings)
    event = ProbeRecorded(seq=9, note="late-dup")
    async with running(consumer_spec(), settings) as consumer:
        nc = await nats.connect(infra.nats_url)
        js = nc.jetstream()
        for i in range(3):
            await js.publish(event.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": f"x-{i}"})
        await nc.close()
        await wait_for(lambda: _len_is(consumer, "late-dup", 1))
        await asyncio.sleep(0.5)
        assert await receipts(consumer, "late-dup") == [9]


async def test_failing_handler_is_retried_and_leaves_no_partial_write(settings_for):
    settings = settings_for(ServiceSettings)
    attempts: list[int] = []
    real = make_probe_handler(deployer_receipts)

    async def flaky(event, session):
        attempts.append(event.seq)
        await real(event, session)  # written, then rolled back by the failure below
        if len(attempts) < 3:
            raise RuntimeError("transient failure")

    async with running(producer_spec(), settings) as producer, running(consumer_spec(flaky), settings) as consumer:
        async with producer.state.runtime.sessions() as s, s.begin():
            await add_event(s, goods_tables, ProbeRecorded(seq=3, note="flaky"))
        await wait_for(lambda: _len_is(consumer, "flaky", 1), timeout=15)
        assert attempts == [3, 3, 3]
        assert await receipts(consumer, "flaky") == [3]


async def test_unparseable_message_is_parked_not_lost(settings_for, infra):
    settings = settings_for(ServiceSettings)
    async with running(consumer_spec(), settings) as consumer:
        nc = await nats.connect(infra.nats_url)
        js = nc.jetstream()
        await js.publish("probe.recorded", b'{"seq": "not a number"}', headers={"Nats-Msg-Id": str(uuid.uuid4())})
        good = ProbeRecorded(seq=11, note="after-poison")
        await js.publish(good.subject, good.model_dump_json().encode(), headers={"Nats-Msg-Id": str(good.event_id)})
        await nc.close()
        await wait_for(lambda: _len_is(consumer, "after-poison", 1))
        async with consumer.state.runtime.sessions() as s:
            dead = (await s.execute(select(deployer_tables.dead_letters))).all()
        assert len(dead) == 1
        assert dead[0].consumer == "deployer-probe-recorded"
        assert "not a number" in dead[0].payload


async def test_trace_context_travels_from_producer_to_consumer(settings_for):
    from opentelemetry import trace

    seen: list[str] = []
    real = make_probe_handler(deployer_receipts)

    async def tracing_handler(event, session):
        seen.append(format(trace.get_current_span().get_span_context().trace_id, "032x"))
        await real(event, session)

    settings = settings_for(ServiceSettings)
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    async with running(producer_spec(), settings) as producer, \
            running(consumer_spec(tracing_handler), settings) as consumer:
        with provider.get_tracer("test").start_as_current_span("submit") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            async with producer.state.runtime.sessions() as s, s.begin():
                await add_event(s, goods_tables, ProbeRecorded(seq=21, note="traced"))
        await wait_for(lambda: _len_is(consumer, "traced", 1))
    async with running(producer_spec(), settings) as producer:
        async with producer.state.runtime.sessions() as s:
            headers = (await s.execute(select(goods_tables.outbox.c.headers))).scalar_one()
    assert headers.get("traceparent", "").split("-")[1] == trace_id
    assert seen == [trace_id]


async def test_handler_may_take_the_runtime(settings_for):
    settings = settings_for(ServiceSettings)
    seen = []
    real = make_probe_handler(deployer_receipts)

    async def with_runtime(event, session, runtime):
        seen.append(runtime.spec.name)
        await real(event, session)

    async with running(producer_spec(), settings) as producer, \
            running(consumer_spec(with_runtime), settings) as consumer:
        async with producer.state.runtime.sessions() as s, s.begin():
            await add_event(s, goods_tables, ProbeRecorded(seq=31, note="rt"))
        await wait_for(lambda: _len_is(consumer, "rt", 1))
        assert seen == ["deployer"] and consumer.state.runtime.spec.name == "deployer"


async def test_a_refused_publish_stops_the_batch_at_that_row(settings_for):
    """Order is kept: the event JetStream does not take is counted as an attempt and left pending,
    and the events after it wait for it; those before it are marked sent."""
    settings = settings_for(ServiceSettings)
    async with running(producer_spec(), settings) as producer:
        relay = producer.state.runtime.relay
        await relay.stop()  # driven by hand below
        relay.publish_timeout = 2.0
        async with producer.state.runtime.sessions() as s, s.begin():
            await add_event(s, goods_tables, ProbeRecorded(seq=1, note="before"))
            await s.execute(goods_tables.outbox.insert().values(event_id=uuid.uuid4(), subject="no.stream.here",
                                                                payload="{}"))
            await add_event(s, goods_tables, ProbeRecorded(seq=2, note="after"))
        with pytest.raises((RuntimeError, TimeoutError)):
            await relay.relay_once()
        async with producer.state.runtime.sessions() as s:
            rows = (await s.execute(select(goods_tables.outbox.c.subject, goods_tables.outbox.c.published_at,
                                           goods_tables.outbox.c.attempts).order_by(goods_tables.outbox.c.id))).all()
        assert [(r.subject, r.published_at is not None, r.attempts) for r in rows] == [
            ("probe.recorded", True, 0), ("no.stream.here", False, 1), ("probe.recorded", False, 0)]


async def test_consumers_start_only_after_the_start_hooks(settings_for, infra):
    """An event already waiting in the stream (a restart with a backlog) reaches its handler only once
    the service's start hooks have run: the catalog's handlers need the embedder its hook builds, and
    a consumer started first failed with "state is not initialised" and retried with backoff."""
    settings = settings_for(ServiceSettings)
    event = ProbeRecorded(seq=41, note="after-hooks")
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    await js.publish(event.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.event_id)})
    await nc.close()
    real = make_probe_handler(deployer_receipts)
    ready_when_handled = []

    async def needs_the_hook(event, session, runtime):
        ready_when_handled.append(runtime.extras.get("ready", False))
        await real(event, session)

    async def slow_hook(runtime):
        await asyncio.sleep(0.5)  # a hook that takes a while (loading a model)
        runtime.extras["ready"] = True

    spec = ServiceSpec(name="deployer", title="consumer", tables=deployer_tables,
                       subscriptions=[(ProbeRecorded, needs_the_hook)], on_start=[slow_hook])
    async with running(spec, settings) as consumer:
        await wait_for(lambda: _len_is(consumer, "after-hooks", 1))
        assert ready_when_handled == [True]
