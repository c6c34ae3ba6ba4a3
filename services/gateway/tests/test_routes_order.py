"""State never goes backwards in the gateway's route table. Stream order is publication order, which
is not always the order things happened (two outbox relays, a retried publish), so the table keeps
the position of the newest deployment (generation, seq) and decision (decision_seq) it applied and
ignores older ones. Every stream order of two deployments and three decisions ends in the same route."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import nats
import pytest

from wemcp.common.events.servers import Endpoint, ServerDeployed, ServerDisabled, ServerEnabled, ServerSubmitted
from wemcp.gateway.routes import MODERN, Route, RouteTable

pytestmark = pytest.mark.asyncio

SID = uuid.uuid4()


SPEC_A = {"remotes": [{"type": "streamable-http", "url": "https://a/mcp", "headers": [
    {"name": "X-Old", "value": "{OLD_KEY}", "isSecret": True, "isRequired": True}]}]}
SPEC_B = {"remotes": [{"type": "streamable-http", "url": "https://b/mcp", "headers": [
    {"name": "X-New", "value": "{NEW_KEY}", "isSecret": True, "isRequired": True}]}]}


def _events(slug: str = "s") -> list[Any]:
    return [
        ServerSubmitted(server_id=SID, slug=slug, name="io.test/s", spec=SPEC_A, revision=1),
        ServerSubmitted(server_id=SID, slug=slug, name="io.test/s", spec=SPEC_B, revision=2),
        ServerDeployed(server_id=SID, slug=slug, generation=1, seq=3, endpoints=[Endpoint(url="http://old/mcp")],
                       protocol_versions=["2025-06-18"]),
        ServerDeployed(server_id=SID, slug=slug, generation=2, seq=4, endpoints=[Endpoint(url="http://new/mcp")],
                       protocol_versions=["2025-06-18", MODERN]),
        ServerDisabled(server_id=SID, slug=slug, decision_seq=1),
        ServerEnabled(server_id=SID, slug=slug, decision_seq=2),
        ServerDisabled(server_id=SID, slug=slug, decision_seq=3),
    ]


def _fold(order: tuple[int, ...] | list[int], events: list[Any]) -> RouteTable:
    table = RouteTable()
    payloads = [e.model_dump(mode="json") for e in events]
    for stream_seq, i in enumerate(order, 1):
        table.apply(events[i].subject, payloads[i], stream_seq)
    return table


def _state(route: Route) -> tuple[Any, ...]:
    return (route.endpoint, route.modern, route.enabled, route.deployment, route.decision_seq, route.routable,
            route.revision, sorted(route.needs), route.headers)


FINAL = ("http://new/mcp", True, False, (2, 4), 3, False, 2, ["NEW_KEY"], [("X-New", "{NEW_KEY}")])


async def test_every_stream_order_ends_in_the_newest_submission_deployment_and_decision() -> None:
    events = _events()  # 7 events: 5040 stream orders
    finals = {repr(_state(_fold(order, events).routes["s"])) for order in itertools.permutations(range(len(events)))}
    assert finals == {repr(FINAL)}


async def test_positions_survive_the_snapshot() -> None:
    """A gateway restarting from its KV snapshot still refuses what is older than the snapshot."""
    events = _events()
    table = _fold((0, 3, 5), events)  # revision 1, generation 2 deployed, decision 2 (enabled)
    reloaded = RouteTable()
    route = Route.from_json(table.routes["s"].to_json())
    reloaded.routes["s"] = route
    assert reloaded.apply(events[2].subject, events[2].model_dump(mode="json"), 100) is None  # generation 1
    assert reloaded.apply(events[4].subject, events[4].model_dump(mode="json"), 101) is None  # decision 1
    assert (route.endpoint, route.enabled) == ("http://new/mcp", True)
    # a snapshot written before positions existed loads as "nothing stamped yet"
    old = Route.from_json(b'{"slug": "s", "endpoint": "http://x/mcp", "kind": "mcp", "seq": 7}')
    assert (old.deployment, old.decision_seq, old.revision, old.routable) == ((0, 0), 0, 0, True)


async def test_unstamped_events_apply_in_stream_order_until_a_stamped_one() -> None:
    table = RouteTable()
    table.apply("server.deployed", {"slug": "s", "endpoints": [{"url": "http://a/mcp"}]}, 1)
    table.apply("server.disabled", {"slug": "s"}, 2)
    table.apply("server.enabled", {"slug": "s"}, 3)
    assert (table.routes["s"].endpoint, table.routes["s"].enabled) == ("http://a/mcp", True)
    table.apply("server.deployed", {"slug": "s", "generation": 1, "seq": 2, "endpoints": [{"url": "http://b/mcp"}]}, 4)
    table.apply("server.disabled", {"slug": "s", "decision_seq": 1}, 5)
    # older producers' events published late: older than any stamped one
    assert table.apply("server.deployed", {"slug": "s", "endpoints": [{"url": "http://a/mcp"}]}, 6) is None
    assert table.apply("server.enabled", {"slug": "s"}, 7) is None
    assert (table.routes["s"].endpoint, table.routes["s"].enabled) == ("http://b/mcp", False)


async def test_out_of_order_on_the_real_stream(infra: Any, clean_bus: None) -> None:
    """The real consumer (ordered, from the stream) on JetStream: the newest events published first."""
    nc = await nats.connect(infra.nats_url)
    table = RouteTable()
    try:
        js = nc.jetstream()
        live, mark = f"live-{uuid.uuid4().hex[:8]}", f"marker-{uuid.uuid4().hex[:8]}"  # the KV bucket outlives tests
        for e in reversed(_events(live)):
            await js.publish(e.subject, e.model_dump_json().encode(), stream=e.stream,
                             headers={"Nats-Msg-Id": str(e.event_id)})
        marker = ServerDeployed(server_id=SID, slug=mark, generation=1, seq=1)  # published last
        await js.publish(marker.subject, marker.model_dump_json().encode(), stream=marker.stream)
        await table.start(nc, wait_seconds=5)
        for _ in range(500):
            if mark in table.routes:
                break
            await asyncio.sleep(0.01)
        assert _state(table.routes[live]) == FINAL
    finally:
        await table.stop()
        await nc.close()
