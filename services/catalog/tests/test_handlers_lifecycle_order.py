"""State never goes backwards: the events of a deployment reach the catalog through three durable
consumers (deploying, deployed, deploy_failed) that run independently, so any order is possible.
Each test delivers the events of one or two deployments in EVERY order (a fresh server per order)
to the catalog's handlers, one transaction per event as the bus does, on the real Postgres, and
checks the state the server ends in. The ordering rule is in docs/events.md ("Server lifecycle")."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
import pytest_asyncio
from sqlalchemy import select

from services.catalog.tests.catalog_helpers import USER, as_user, npm_submission, trust
from wemcp.catalog import handlers, service
from wemcp.catalog.config import Settings
from wemcp.catalog.main import SPEC
from wemcp.catalog.models import SearchDoc, Server, bus_tables
from wemcp.common.events.servers import (
    Endpoint,
    ServerDeployed,
    ServerDeployFailed,
    ServerDeploying,
    ToolInfo,
)
from wemcp.common.identity import Identity
from wemcp.common.service import running

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TOOLS = [ToolInfo(name="echo", description="echoes")]
ADMIN = Identity(uuid.UUID(int=99), "admin")  # type: ignore[arg-type]

LifecycleEvent = ServerDeploying | ServerDeployed | ServerDeployFailed


@pytest_asyncio.fixture
async def app(settings_for: Any, clean_db: None, clean_bus: None) -> AsyncIterator[Any]:
    async with running(SPEC, settings_for(Settings, embedder="hash")) as app:
        await trust(app, USER)
        yield app


@pytest_asyncio.fixture
async def runtime(app: Any) -> Any:
    return app.state.runtime


class Deployment:
    """The events a deployer emits for one generation: steps, then deployed or failed. Times
    increase with seq, as the deployer stamps them."""

    def __init__(self, generation: int | None, steps: Sequence[str], outcome: str, *, start: int = 0) -> None:
        self.generation, self.steps, self.outcome, self.start = generation, steps, outcome, start

    def events(self, sid: uuid.UUID, slug: str) -> list[LifecycleEvent]:
        out: list[LifecycleEvent] = []
        g = self.generation
        for i, name in enumerate(self.steps, 1):
            out.append(ServerDeploying(server_id=sid, slug=slug, step=name, generation=g, seq=g and i,
                                       occurred_at=T0 + timedelta(seconds=self.start + i)))
        n = len(self.steps) + 1
        at = T0 + timedelta(seconds=self.start + n)
        if self.outcome == "deployed":
            out.append(ServerDeployed(server_id=sid, slug=slug, generation=g, seq=g and n, occurred_at=at,
                                      tools=TOOLS, endpoints=[Endpoint(url=f"http://127.0.0.1:9/g{g}")]))
        else:
            out.append(ServerDeployFailed(server_id=sid, slug=slug, generation=g, seq=g and n, occurred_at=at,
                                          reason=f"generation {g}: package does not exist"))
        return out


async def _server(runtime: Any) -> Server:
    n = uuid.uuid4().hex[:12]
    async with runtime.sessions() as s, s.begin():
        row = Server(slug=f"s-{n}", name=f"io.test/s-{n}", version="1.0.0", package_key=f"npm:s-{n}",
                     title=f"S {n}", icon="", source_kind="server.json", spec={}, status="submitted")
        s.add(row)
    return row


async def deliver(runtime: Any, event: LifecycleEvent) -> None:
    """One event to its handler, in its own transaction (as a consumer delivers it)."""
    async with runtime.sessions() as s, s.begin():
        if isinstance(event, ServerDeploying):
            await handlers.on_server_deploying(event, s)
        elif isinstance(event, ServerDeployFailed):
            await handlers.on_server_deploy_failed(event, s)
        else:
            await handlers.on_server_deployed(event, s, runtime)


async def _state(runtime: Any, sid: uuid.UUID) -> tuple[Server, SearchDoc | None]:
    async with runtime.sessions() as s:
        row = (await s.execute(select(Server).where(Server.id == sid))).scalar_one()
        doc = (await s.execute(select(SearchDoc).where(SearchDoc.server_id == sid))).scalar_one_or_none()
        return row, doc


async def every_order(runtime: Any, deployments: Sequence[Deployment], *, before: Any = None) -> list[Server]:
    """Deliver the deployments' events in every order, each order to a fresh server; returns the
    servers' final rows (``before(runtime, slug)`` runs first on each server). Orders run side by
    side (8 at a time, each on its own server): only the order within one server matters."""
    orders = list(itertools.permutations(range(sum(len(d.steps) + 1 for d in deployments))))
    slots = asyncio.Semaphore(8)

    async def one(order: tuple[int, ...]) -> Server:
        async with slots:
            row = await _server(runtime)
            if before is not None:
                await before(runtime, row.slug)
            events = [e for d in deployments for e in d.events(row.id, row.slug)]
            for i in order:
                await deliver(runtime, events[i])
            final, _doc = await _state(runtime, row.id)
            return final

    return list(await asyncio.gather(*(one(o) for o in orders)))


def _summary(rows: list[Server]) -> set[tuple[Any, ...]]:
    return {(r.status, r.status_detail, r.status_before_disable) for r in rows}


STEPS = ("queued", "planning", "installing", "introspecting")


async def test_a_failed_deployment_ends_failed_in_every_order(runtime: Any) -> None:
    rows = await every_order(runtime, [Deployment(1, STEPS, "failed")])
    assert len(rows) == 120
    assert _summary(rows) == {("failed", "generation 1: package does not exist", None)}
    assert {(r.lifecycle_generation, r.lifecycle_seq, r.lifecycle_terminal) for r in rows} == {(1, 5, True)}


async def test_a_deployment_ends_published_in_every_order(runtime: Any) -> None:
    rows = await every_order(runtime, [Deployment(1, STEPS, "deployed")])
    assert _summary(rows) == {("published", None, None)}
    assert {(r.endpoints[0]["url"], r.tools[0]["name"]) for r in rows} == {("http://127.0.0.1:9/g1", "echo")}


async def test_the_newer_generation_wins_in_every_order(runtime: Any) -> None:
    # a published deployment, then a new one that fails: "failed" whatever the order
    rows = await every_order(runtime, [Deployment(1, ("queued",), "deployed"),
                                       Deployment(2, ("queued", "installing"), "failed", start=10)])
    assert _summary(rows) == {("failed", "generation 2: package does not exist", None)}
    assert {(r.lifecycle_generation, r.lifecycle_seq) for r in rows} == {(2, 3)}
    # a failed deployment, then one that works: published with the second one's endpoint
    rows = await every_order(runtime, [Deployment(1, ("queued",), "failed"),
                                       Deployment(2, ("queued",), "deployed", start=10)])
    assert _summary(rows) == {("published", None, None)}
    assert {r.endpoints[0]["url"] for r in rows} == {"http://127.0.0.1:9/g2"}


async def test_disabled_composes_with_the_deployment_in_every_order(runtime: Any) -> None:
    """The admin disabled the server before the events arrive: it stays disabled, the deployment's
    outcome is what enabling restores; B (search) says disabled."""

    async def disable(rt: Any, slug: str) -> None:
        async with rt.sessions() as s, s.begin():
            await service.disable(s, slug, ADMIN, "paused")

    rows = await every_order(runtime, [Deployment(1, ("queued",), "deployed"),
                                       Deployment(2, ("queued",), "failed", start=10)], before=disable)
    assert _summary(rows) == {("disabled", "generation 2: package does not exist", "failed")}
    async with runtime.sessions() as s, s.begin():
        back, changed = await service.enable(s, rows[0].slug, ADMIN)
    assert changed and back.status == "failed"
    for r in rows[1:]:  # search: a B row exists where generation 1's deployed was applied, disabled
        _row, doc = await _state(runtime, r.id)
        assert doc is None or doc.enabled is False


async def test_events_of_older_producers_use_occurred_at_and_terminal_wins(runtime: Any) -> None:
    """Events without (generation, seq), already in the streams from an older deployer."""
    rows = await every_order(runtime, [Deployment(None, ("queued", "installing", "introspecting"), "failed")])
    assert _summary(rows) == {("failed", "generation None: package does not exist", None)}
    rows = await every_order(runtime, [Deployment(None, ("queued", "installing"), "deployed")])
    assert _summary(rows) == {("published", None, None)}


async def test_the_measured_race_a_late_deploying_after_failed(runtime: Any) -> None:
    """What was seen: deploy_failed applied, then the same deployment's "deploying" 0.1 ms later.
    Stamped, unstamped, and an unstamped step even with a later clock than the failure."""
    for g in (1, None):
        row = await _server(runtime)
        failed = ServerDeployFailed(server_id=row.id, slug=row.slug, generation=g, seq=g and 3, occurred_at=T0,
                                    reason="failed: package does not exist")
        late = ServerDeploying(server_id=row.id, slug=row.slug, generation=g, seq=g and 2, step="installing",
                               occurred_at=T0 - timedelta(microseconds=100))
        skewed = ServerDeploying(server_id=row.id, slug=row.slug, generation=g, seq=g and 2, step="installing",
                                 occurred_at=T0 + timedelta(microseconds=100))  # another clock, ahead
        for e in (failed, late, skewed):
            await deliver(runtime, e)
        final, _ = await _state(runtime, row.id)
        assert (final.status, final.status_detail) == ("failed", "failed: package does not exist"), g


async def test_an_unstamped_event_never_undoes_a_stamped_one(runtime: Any) -> None:
    row = await _server(runtime)
    for e in Deployment(3, ("queued",), "deployed").events(row.id, row.slug):
        await deliver(runtime, e)
    await deliver(runtime, ServerDeployFailed(server_id=row.id, slug=row.slug, reason="old",
                                              occurred_at=T0 + timedelta(days=1)))
    final, _ = await _state(runtime, row.id)
    assert (final.status, final.lifecycle_generation, final.lifecycle_seq) == ("published", 3, 2)


async def test_resubmission_lets_the_next_unstamped_deployment_show(app: Any, runtime: Any) -> None:
    """Older deployer (unstamped): after a terminal state, a resubmission starts a new deployment
    whose steps show again; a late step of the old one still does not."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://catalog") as c:
        r = await c.post("/api/v1/servers", json=npm_submission(version="1.0.0"), headers=as_user())
        assert r.status_code == 202, r.text
        sid, slug = uuid.UUID(r.json()["id"]), r.json()["slug"]
        await deliver(runtime, ServerDeployFailed(server_id=sid, slug=slug, reason="bad", occurred_at=T0))
        r = await c.post("/api/v1/servers", json=npm_submission(version="1.0.1"), headers=as_user())
        assert r.status_code == 202 and r.json()["status"] == "submitted", r.text
    async with runtime.sessions() as s:  # each submission is stamped with the next revision
        rows = (await s.execute(select(bus_tables.outbox.c.payload).where(
            bus_tables.outbox.c.subject == "server.submitted").order_by(bus_tables.outbox.c.id))).all()
    assert [json.loads(r.payload)["revision"] for r in rows] == [1, 2]
    await deliver(runtime, ServerDeploying(server_id=sid, slug=slug, step="x",
                                           occurred_at=T0 - timedelta(seconds=1)))  # late, of the old one
    assert (await _state(runtime, sid))[0].status == "submitted"
    await deliver(runtime, ServerDeploying(server_id=sid, slug=slug, step="queued",
                                           occurred_at=T0 + timedelta(seconds=5)))
    assert (await _state(runtime, sid))[0].status == "deploying"


async def test_a_late_step_on_the_real_bus_does_not_undo_the_failure(app: Any, runtime: Any, infra: Any) -> None:
    """The same race through JetStream and the catalog's own durable consumers: the failure is
    consumed first, the deployment's earlier step after it."""
    from services.catalog.tests.catalog_helpers import publish, wait_for

    async def processed(event_id: uuid.UUID) -> bool:
        async with runtime.sessions() as s:
            return (await s.execute(select(bus_tables.processed.c.event_id).where(
                bus_tables.processed.c.event_id == event_id))).first() is not None

    row = await _server(runtime)
    failed = ServerDeployFailed(server_id=row.id, slug=row.slug, generation=1, seq=3, reason="no such package")
    await publish(infra.nats_url, failed)
    await wait_for(lambda: processed(failed.event_id))
    late = ServerDeploying(server_id=row.id, slug=row.slug, generation=1, seq=2, step="installing")
    await publish(infra.nats_url, late)
    await wait_for(lambda: processed(late.event_id))
    final, _ = await _state(runtime, row.id)
    assert (final.status, final.status_detail, final.lifecycle_seq) == ("failed", "no such package", 3)
