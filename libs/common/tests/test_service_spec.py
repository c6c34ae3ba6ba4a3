"""What a ServiceSpec adds by itself (the bus canaries, the service-info route, its title), the
operator commands' shared pieces and the start hooks' task stop; no infrastructure needed."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import APIRouter
from sqlalchemy import MetaData

from wemcp.common.commands import command_parser
from wemcp.common.db import service_bus_tables, service_metadata
from wemcp.common.events.base import ProbeRecorded
from wemcp.common.events.calls import McpCallCompleted
from wemcp.common.service import ServiceSpec, cancel_task


def _paths(spec: ServiceSpec) -> list[str]:
    return [route.path for router in spec.routers for route in router.routes]


async def _handler(event: McpCallCompleted, session: object) -> None:
    return None


def test_a_spec_with_probe_receipts_has_the_canaries_and_the_service_info_route() -> None:
    bus, receipts = service_bus_tables(service_metadata("goods"))
    own = APIRouter(prefix="/api/v1/things")
    own.add_api_route("", lambda: None)
    spec = ServiceSpec(
        name="goods", routers=[own], tables=bus, probe_receipts=receipts, subscriptions=[(McpCallCompleted, _handler)]
    )
    assert spec.title == "WeMcp goods"
    assert [s[0] for s in spec.subscriptions] == [ProbeRecorded, McpCallCompleted]
    assert _paths(spec) == [
        "/api/v1/things",
        "/internal/bus/probes",
        "/internal/bus/probes",
        "/internal/bus/outbox",
        "/api/v1/services/goods",
    ]


def test_a_spec_without_them_keeps_its_own_routes_and_subscriptions() -> None:
    spec = ServiceSpec(
        name="gateway", title="The gateway", service_info=False, subscriptions=[(McpCallCompleted, _handler)]
    )
    assert spec.title == "The gateway"
    assert _paths(spec) == []
    assert [s[0] for s in spec.subscriptions] == [McpCallCompleted]


def test_probe_receipts_need_the_outbox_tables() -> None:
    _, receipts = service_bus_tables(MetaData(schema="x"))
    with pytest.raises(ValueError, match="outbox tables"):
        ServiceSpec(name="x", probe_receipts=receipts)


def test_the_bus_tables_are_declared_in_the_schema() -> None:
    metadata = service_metadata("crawler")
    bus, receipts = service_bus_tables(metadata)
    assert bus.schema == "crawler"
    assert sorted(metadata.tables) == [
        "crawler.dead_letters",
        "crawler.outbox",
        "crawler.probe_receipts",
        "crawler.processed_events",
    ]
    assert receipts.fullname == "crawler.probe_receipts"


async def test_cancel_task_stops_a_running_task_and_ignores_none() -> None:
    task = asyncio.get_running_loop().create_task(asyncio.sleep(60))
    await cancel_task(task)
    assert task.cancelled()
    await cancel_task(None)


async def test_cancel_task_swallows_the_tasks_own_error() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.get_running_loop().create_task(fails())
    await asyncio.sleep(0)
    await cancel_task(task)
    assert task.done() and isinstance(task.exception(), RuntimeError)


def test_command_parser_requires_a_subcommand() -> None:
    parser, sub = command_parser("wemcp-x-admin", "X operator commands")
    sub.add_parser("rotate-key")
    assert parser.parse_args(["rotate-key"]).command == "rotate-key"
    with pytest.raises(SystemExit):
        parser.parse_args([])
