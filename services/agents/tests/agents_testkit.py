"""Helpers only the agents tests use; the platform they run on (the ``platform`` fixture and its test
doubles) is :mod:`wemcp.testkit.agents`, shared with the security tests."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse

from wemcp.devstack.testing import wait_for as _wait_for
from wemcp.gateway.replicas import replay
from wemcp.testkit.agents import calc_app


@asynccontextmanager
async def scratch_database(infra: Any, prefix: str) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A database of its own on the test Postgres (empty: no migration run), its URL and a connection
    to it; dropped at the end."""
    base = "postgresql://" + infra.database_url.split("://", 1)[1]
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(url)
    try:
        yield url, conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    return await _wait_for(predicate, timeout, interval)


def legacy_server(methods: list[str]) -> Any:
    """An MCP server that speaks only the 2025 revisions (sessions, ``initialize``): anything sent
    at 2026-07-28 is refused like an older server refuses an unknown method. Every JSON-RPC method
    (or bare HTTP method) it receives is appended to ``methods``."""
    inner = calc_app("calc-2025")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        request = Request(scope, receive)
        body = await request.body()
        try:
            msg = json.loads(body) if body else {}
        except ValueError:
            msg = {}
        methods.append(msg.get("method", scope["method"]) if isinstance(msg, dict) else scope["method"])
        if request.headers.get("mcp-protocol-version") == "2026-07-28":
            await JSONResponse(
                {"jsonrpc": "2.0", "id": msg.get("id"), "error": {"code": -32601, "message": "Method not found"}},
                status_code=400,
            )(scope, receive, send)
            return
        await inner(scope, replay(body, receive), send)

    return app
