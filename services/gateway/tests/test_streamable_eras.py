"""Each client gets exactly the protocol revision it negotiated, whatever the upstream speaks.

Every cell of client (Streamable HTTP with a 2025-06-18 or 2025-11-25 session, Streamable HTTP
2026-07-28, the legacy SSE transport) x upstream (a remote server of both eras, a 2025-only one, a
2026-07-28-only one, a stdio server hosted behind the deployer's bridge) makes the same calls with a
raw HTTP client and reads every answer as bytes: no 2026-07-28 field (``resultType``, ``ttlMs``,
``cacheScope``, the ``serverInfo`` stamp in ``_meta``) in a 2025 answer, and every 2026-07-28 answer
carries what that revision requires (``resultType``; the cache hints on lists and reads). The
official SDKs' clients judge the rest (test_mcp_router.py, test_relay.py, the conformance suite).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from wemcp.testkit.upstream import hosted_bridge, serve_upstream

pytestmark = pytest.mark.asyncio
MODERN = "2026-07-28"
MODERN_ONLY = ("resultType", "ttlMs", "cacheScope")
STAMP = "io.modelcontextprotocol/serverInfo"
CACHEABLE = {"tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"}
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("tools/list", {}),
    ("tools/call", {"name": "echo", "arguments": {"text": "hi"}}),
    ("prompts/list", {}),
    ("prompts/get", {"name": "greet", "arguments": {"who": "Ada"}}),
    ("resources/list", {}),
    ("resources/templates/list", {}),
    ("resources/read", {"uri": "note://today"}),
    ("ping", {}),
]
LEGACY_CALLS = [*CALLS, ("logging/setLevel", {"level": "info"})]  # no such method in 2026-07-28


@contextlib.asynccontextmanager
async def upstream(stack: Any, kind: str) -> AsyncIterator[str]:
    slug = f"eras-{kind}"
    if kind == "hosted":
        async with hosted_bridge(slug) as url:
            await stack.deploy(slug, url, versions=["2025-11-25", MODERN])  # what the deployer reports
            yield slug
        return
    async with serve_upstream(kind.removesuffix("-declared"), name=slug) as url:
        # "-declared": the deployment says which revisions it speaks (as the deployer's introspection
        # does); otherwise the gateway learns the era with one server/discover probe
        await stack.deploy(slug, url, versions=["2025-11-25", MODERN] if kind.endswith("-declared") else None)
        yield slug


def messages(r: httpx.Response) -> list[dict[str, Any]]:
    if "text/event-stream" in r.headers.get("content-type", ""):
        return [orjson.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
    return [r.json()] if r.content else []


def check_legacy(method: str, reply: dict[str, Any]) -> None:
    result = reply.get("result")
    if result is None:  # an error (a method the upstream lacks) carries no result fields
        assert "error" in reply, reply
        return
    leaked = [k for k in MODERN_ONLY if k in result]
    assert not leaked, f"{method}: 2026-07-28 fields {leaked} in a 2025 answer: {result}"
    assert STAMP not in (result.get("_meta") or {}), f"{method}: the 2026 serverInfo stamp in a 2025 answer"


def check_modern(method: str, reply: dict[str, Any]) -> None:
    result = reply.get("result")
    assert isinstance(result, dict), f"{method}: {reply}"
    assert result.get("resultType") == "complete", f"{method}: no resultType in a 2026-07-28 answer: {result}"
    if method in CACHEABLE:
        assert "ttlMs" in result and "cacheScope" in result, f"{method}: no cache hints: {result}"


async def streamable_2025(base: str, slug: str, version: str) -> list[tuple[str, dict[str, Any]]]:
    url = f"{base}/mcp/{slug}"
    accept = {"accept": "application/json, text/event-stream"}
    out: list[tuple[str, dict[str, Any]]] = []
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(url, headers=accept, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "eras", "version": "1"}}})
        assert r.status_code == 200, r.text
        init = messages(r)[0]
        assert init["result"]["protocolVersion"] == version
        out.append(("initialize", init))
        h = {**accept, "mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": version}
        await http.post(url, headers=h, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        for i, (method, params) in enumerate(LEGACY_CALLS, 1):
            r = await http.post(url, headers=h, json={"jsonrpc": "2.0", "id": i, "method": method, "params": params})
            assert r.status_code == 200, (method, r.status_code, r.text)
            reply = next(m for m in messages(r) if m.get("id") == i)
            out.append((method, reply))
    return out


async def streamable_modern(base: str, slug: str) -> list[tuple[str, dict[str, Any]]]:
    url = f"{base}/mcp/{slug}"
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "eras", "version": "1"}}
    out: list[tuple[str, dict[str, Any]]] = []
    async with httpx.AsyncClient(timeout=30) as http:
        for i, (method, params) in enumerate([("server/discover", {}), *CALLS], 1):
            r = await http.post(url, headers={"accept": "application/json, text/event-stream",
                                              "mcp-protocol-version": MODERN, "mcp-method": method},
                                json={"jsonrpc": "2.0", "id": i, "method": method, "params": {**params, "_meta": meta}})
            assert r.status_code == 200, (method, r.status_code, r.text)
            out.append((method, next(m for m in messages(r) if m.get("id") == i)))
    return out


async def legacy_sse(base: str, slug: str) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    async with httpx.AsyncClient(timeout=30) as http, http.stream("GET", f"{base}/mcp/{slug}/sse") as stream:
        lines = stream.aiter_lines()

        async def event() -> dict[str, Any] | str:
            data = None
            async for line in lines:
                if line.startswith("data:"):
                    data = line[5:].strip()
                elif not line and data is not None:
                    return orjson.loads(data) if data.startswith("{") else data
            raise AssertionError("the stream ended")

        endpoint = await event()
        assert isinstance(endpoint, str)
        calls = [("initialize", {"protocolVersion": "2024-11-05", "capabilities": {},
                                 "clientInfo": {"name": "eras", "version": "1"}}), *LEGACY_CALLS]
        for i, (method, params) in enumerate(calls):
            r = await http.post(base + endpoint, json={"jsonrpc": "2.0", "id": i, "method": method, "params": params})
            assert r.status_code == 202, r.text
            reply = await event()
            assert isinstance(reply, dict) and reply.get("id") == i, reply
            out.append((method, reply))
            if method == "initialize":
                await http.post(base + endpoint, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return out


@pytest.mark.parametrize("kind", ["both", "both-declared", "legacy", "modern", "hosted"])
async def test_every_client_gets_its_own_revision(stack, kind):
    async with upstream(stack, kind) as slug:
        cells = {"2025-06-18": await streamable_2025(stack.url, slug, "2025-06-18"),
                 "2025-11-25": await streamable_2025(stack.url, slug, "2025-11-25"),
                 "sse": await legacy_sse(stack.url, slug)}
        for cell, replies in cells.items():
            for method, reply in replies:
                check_legacy(f"{cell} {method}", reply)
            calls = dict(replies)
            # the calls themselves work in every cell (the upstream's own answers, its serverInfo)
            assert calls["tools/call"]["result"]["content"][0]["text"] == "hi", (cell, calls["tools/call"])
            assert calls["resources/read"]["result"]["contents"][0]["text"] == "nothing planned"
            assert calls["initialize"]["result"]["serverInfo"]["name"] == ("hosted" if kind == "hosted" else slug)
        modern = await streamable_modern(stack.url, slug)
        for method, reply in modern:
            check_modern(method, reply)
        # the server's own name and version, in the stamp 2026-07-28 defines (not the slug the gateway knows)
        discover = dict(modern)["server/discover"]["result"]
        assert discover["_meta"][STAMP]["name"] == ("hosted" if kind == "hosted" else slug), discover
