"""State never goes backwards in the deployer: ``server.submitted``, ``server.disabled`` and
``server.enabled`` come through three durable consumers that run independently. Every order of an
admin's decisions (and of a resubmission among them) is delivered to the handlers, one transaction
per event, on the real Postgres; the deployment ends as the newest decision says. The events the
deployer emits carry (generation, seq)."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from sqlalchemy import select

from wemcp.common.db import make_engine, make_session_factory
from wemcp.common.events.servers import ServerDisabled, ServerEnabled, ServerSubmitted
from wemcp.deployer import handlers
from wemcp.deployer.models import Deployment, bus_tables

SPEC_V1 = {"remotes": [{"type": "streamable-http", "url": "https://example.com/v1/mcp"}]}
SPEC_V2 = {"remotes": [{"type": "streamable-http", "url": "https://example.com/v2/mcp"}]}
HANDLERS: dict[str, Any] = {"server.submitted": handlers.on_server_submitted,
                            "server.disabled": handlers.on_server_disabled,
                            "server.enabled": handlers.on_server_enabled}


@pytest_asyncio.fixture
async def sessions(infra: Any, clean_db: None) -> AsyncIterator[Any]:
    engine = make_engine(infra.database_url, pool_size=2)
    try:
        yield make_session_factory(engine)
    finally:
        await engine.dispose()


async def deliver(sessions: Any, event: Any) -> None:
    async with sessions() as s, s.begin():
        await HANDLERS[event.subject](event, s)


async def _deployment(sessions: Any, slug: str) -> Deployment:
    async with sessions() as s:
        return (await s.execute(select(Deployment).where(Deployment.slug == slug))).scalar_one()


async def _positions(sessions: Any, slug: str) -> list[tuple[str, int, int]]:
    async with sessions() as s:
        rows = (await s.execute(select(bus_tables.outbox.c.subject, bus_tables.outbox.c.payload)
                                .order_by(bus_tables.outbox.c.id))).all()
    out = []
    for r in rows:
        p = json.loads(r.payload)
        if p["slug"] == slug:
            out.append((r.subject, p["generation"], p["seq"]))
    return out


async def _submitted(sessions: Any, slug: str, spec: dict[str, Any] = SPEC_V1) -> uuid.UUID:
    sid = uuid.uuid4()
    await deliver(sessions, ServerSubmitted(server_id=sid, slug=slug, name=slug, spec=spec))
    return sid


async def test_every_order_of_decisions_ends_as_the_newest_says(sessions: Any) -> None:
    for n_decisions, expected in ((3, "stopped"), (4, "running")):
        finals = set()
        for k, order in enumerate(itertools.permutations(range(n_decisions))):
            slug = f"d{n_decisions}-{k}"
            sid = await _submitted(sessions, slug)
            decisions = [(ServerDisabled if i % 2 == 0 else ServerEnabled)(server_id=sid, slug=slug, decision_seq=i + 1)
                         for i in range(n_decisions)]
            for i in order:
                await deliver(sessions, decisions[i])
            d = await _deployment(sessions, slug)
            finals.add((d.desired, d.decision_seq))
        assert finals == {(expected, n_decisions)}


async def test_a_resubmission_while_disabled_waits_for_enable_in_every_order(sessions: Any) -> None:
    finals = set()
    for k, order in enumerate(itertools.permutations(range(2))):
        slug = f"resub-{k}"
        sid = await _submitted(sessions, slug)
        events = [ServerSubmitted(server_id=sid, slug=slug, name=slug, spec=SPEC_V2),
                  ServerDisabled(server_id=sid, slug=slug, decision_seq=1)]
        for i in order:
            await deliver(sessions, events[i])
        d = await _deployment(sessions, slug)
        finals.add((d.desired, d.generation, d.spec["remotes"][0]["url"]))
    assert finals == {("stopped", 2, "https://example.com/v2/mcp")}
    for k in range(2):
        slug = f"resub-{k}"
        sid = (await _deployment(sessions, slug)).server_id
        await deliver(sessions, ServerEnabled(server_id=sid, slug=slug, decision_seq=2))
        d = await _deployment(sessions, slug)
        assert (d.desired, d.status, d.spec, d.generation, d.seq) == ("running", "queued", SPEC_V2, 3, 1)
        # every event the deployer emitted is stamped, the last one of the newest generation
        positions = await _positions(sessions, slug)
        assert positions[0] == ("server.deploying", 1, 1) and positions[-1] == ("server.deploying", 3, 1)


async def test_an_older_submission_never_replaces_a_newer_one(sessions: Any) -> None:
    finals = set()
    for k, order in enumerate(itertools.permutations(range(2))):
        slug, sid = f"rev-{k}", uuid.uuid4()
        events = [ServerSubmitted(server_id=sid, slug=slug, name=slug, spec=SPEC_V1, revision=1),
                  ServerSubmitted(server_id=sid, slug=slug, name=slug, spec=SPEC_V2, revision=2)]
        for i in order:
            await deliver(sessions, events[i])
        d = await _deployment(sessions, slug)
        finals.add((d.spec["remotes"][0]["url"], d.revision))
    assert finals == {("https://example.com/v2/mcp", 2)}


async def test_disabled_before_its_first_submission_is_not_deployed(sessions: Any) -> None:
    finals = set()
    for k, order in enumerate(itertools.permutations(range(2))):
        slug, sid = f"first-{k}", uuid.uuid4()
        events = [ServerSubmitted(server_id=sid, slug=slug, name=slug, spec=SPEC_V1),
                  ServerDisabled(server_id=sid, slug=slug, decision_seq=1)]
        for i in order:
            await deliver(sessions, events[i])
        d = await _deployment(sessions, slug)
        finals.add((d.desired, d.spec["remotes"][0]["url"], d.generation))
        await deliver(sessions, ServerEnabled(server_id=sid, slug=slug, decision_seq=2))
        d = await _deployment(sessions, slug)
        assert (d.desired, d.status, d.generation) == ("running", "queued", 2)
    assert finals == {("stopped", "https://example.com/v1/mcp", 1)}


async def test_decisions_before_any_submission_deploy_nothing_until_it_comes(sessions: Any) -> None:
    """A server the catalog holds for review reaches the deployer only when approved, but an admin
    may disable and enable it before that: in every order, no deployment starts (no event, nothing
    queued) until server.submitted comes, and then the newest decision says whether it deploys."""
    for k, order in enumerate(itertools.permutations(range(2))):
        for last in ("enabled", "disabled"):
            slug, sid = f"held-{last}-{k}", uuid.uuid4()
            first, second = (ServerDisabled(server_id=sid, slug=slug, decision_seq=1),
                             ServerEnabled(server_id=sid, slug=slug, decision_seq=2))
            if last == "disabled":
                first, second = (ServerEnabled(server_id=sid, slug=slug, decision_seq=1),
                                 ServerDisabled(server_id=sid, slug=slug, decision_seq=2))
            decisions = [first, second]
            for i in order:
                await deliver(sessions, decisions[i])
            d = await _deployment(sessions, slug)
            assert (d.status, d.generation) == ("disabled", 0), (last, order, d.status)
            assert await _positions(sessions, slug) == [], (last, order)  # no server.deploying
            await deliver(sessions, ServerSubmitted(server_id=sid, slug=slug, name=slug, spec=SPEC_V1))
            d = await _deployment(sessions, slug)
            want = ("running", "queued", 1) if last == "enabled" else ("stopped", "disabled", 1)
            assert (d.desired, d.status, d.generation) == want, (last, order)


async def test_unstamped_decisions_use_occurred_at(sessions: Any) -> None:
    """Decisions of an older catalog (no decision_seq): the later one wins whatever the arrival
    order; once a stamped decision was applied, unstamped ones are older."""
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    finals = set()
    for k, order in enumerate(itertools.permutations(range(3))):
        slug = f"legacy-{k}"
        sid = await _submitted(sessions, slug)
        decisions = [ServerDisabled(server_id=sid, slug=slug, occurred_at=t0),
                     ServerEnabled(server_id=sid, slug=slug, occurred_at=t0 + timedelta(seconds=1)),
                     ServerDisabled(server_id=sid, slug=slug, occurred_at=t0 + timedelta(seconds=2))]
        for i in order:
            await deliver(sessions, decisions[i])
        finals.add((await _deployment(sessions, slug)).desired)
    assert finals == {"stopped"}
    slug = "legacy-after-stamped"
    sid = await _submitted(sessions, slug)
    await deliver(sessions, ServerDisabled(server_id=sid, slug=slug, decision_seq=1))
    await deliver(sessions, ServerEnabled(server_id=sid, slug=slug, occurred_at=t0 + timedelta(days=3650)))
    assert (await _deployment(sessions, slug)).desired == "stopped"
