"""The gateway's pooled connections to the services and the services' keep-alive: a service keeps an
idle connection open longer than the gateway pools it, so the gateway always closes first. With
uvicorn's default (5 s) a service closed connections the gateway still held, and a request sent as
the close arrived failed with a 503 (seen once in a full run: the console's ``/api/v1/connections``)."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from wemcp.common.http import SERVER_KEEP_ALIVE_SECONDS
from wemcp.common.service import server_config
from wemcp.gateway.proxy import KEEP_ALIVE_SECONDS, make_client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_service_keeps_an_idle_connection_the_gateway_still_pools() -> None:
    assert KEEP_ALIVE_SECONDS < SERVER_KEEP_ALIVE_SECONDS

    async def peer(request: Request) -> PlainTextResponse:  # the client's port: which connection it came on
        assert request.client is not None
        return PlainTextResponse(str(request.client.port))

    port = _free_port()
    server = uvicorn.Server(server_config(Starlette(routes=[Route("/", peer)]), "127.0.0.1", port))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        async with make_client(4, timeout=5, connect_timeout=2) as client:
            first = (await client.get(f"http://127.0.0.1:{port}/")).text
            await asyncio.sleep(6)  # idle past uvicorn's default keep-alive (5 s)
            again = (await client.get(f"http://127.0.0.1:{port}/")).text
        assert again == first  # the same connection: the service did not close it under the pool
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
