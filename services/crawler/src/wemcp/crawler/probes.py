"""Health probes of published hosted and remote servers.

Targets are folded from the bus: ``server.deployed`` (a hosted or remote server, not a
``stdio-local`` one: backend ``unhosted``), ``server.disabled``/``server.enabled`` (disabled servers
are not probed), and the call events (``mcp.call.*``: the last call to each server, to tell idle
ones).

A probe takes the path users take: ``POST <gateway>/mcp/<slug>`` ``initialize`` (2025 handshake:
the gateway opens or reuses an upstream session, starting the hosted server if it was stopped),
``notifications/initialized``, ``tools/list`` (following ``nextCursor``), then ``DELETE`` of the
session. It presents the crawler's service credential (``X-WeMcp-Assertion`` for the audience
``gateway``, issuer ``crawler``, no user), which the gateway verifies: a probe may list but never
call a tool, so it is unmetered and outside call counts and request logs by construction.

Status: ``down`` when the handshake fails (HTTP error, timeout, JSON-RPC error), ``degraded`` when
it answers but tools/list fails or the whole probe took longer than ``probe_slow_ms``, else ``up``.
A hosted server without a call for ``idle_after_seconds`` (the deployer scales it to zero) whose
last probe succeeded shows ``idle`` and is probed once per ``idle_probe_interval_seconds``; a call
to it brings it back to the normal interval. A server that is down is probed every interval
whatever its calls, so a fix shows within two intervals.

Every real probe is one transaction: its result row, the target's new state and (when the status
or the tools changed, or ``health_report_seconds`` passed) a ``server.health`` event with uptime
over 24 h and 7 d and p50/p95 latency over 24 h. Changed tools travel in the event (the catalog
takes them: re-introspection by the probe itself)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common import sse
from wemcp.common.events.base import Event
from wemcp.common.events.calls import completed_calls
from wemcp.common.events.servers import ServerDeployed, ServerDisabled, ServerEnabled, ServerHealth, ToolInfo
from wemcp.common.logging import get_logger
from wemcp.common.netpolicy import EgressPolicy
from wemcp.common.outbox import add_event
from wemcp.common.service import Runtime
from wemcp.crawler import repository
from wemcp.crawler.config import Settings
from wemcp.crawler.models import ProbeResult, ProbeTarget, bus_tables
from wemcp.crawler.repository import probes as probes_db
from wemcp.crawler.telemetry import crawler_metrics

log = get_logger("wemcp.crawler.probes")
PROBE_VERSION = "2025-06-18"
NOT_PROBED = frozenset({"unhosted"})  # stdio-local servers: run by their users, nothing to reach
REMOTE = frozenset({"remote"})  # relayed, never scaled to zero by the platform
MAX_TOOL_PAGES = 10


def tools_hash(tools: Sequence[dict[str, Any]]) -> str:
    """Of what a client sees of the tools: name, description and input schema, in name order (the
    deployer's introspection and a probe's tools/list hash the same)."""
    norm = sorted(
        (
            {
                "name": t.get("name"),
                "description": t.get("description") or None,
                "inputSchema": t.get("inputSchema", t.get("input_schema")) or {},
            }
            for t in tools
        ),
        key=lambda t: str(t["name"]),
    )
    return hashlib.sha256(json.dumps(norm, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---- targets, from the bus --------------------------------------------------------------------------


async def on_server_deployed(event: ServerDeployed, session: AsyncSession) -> None:
    if event.backend in NOT_PROBED:
        await probes_db.forget_target(session, event.slug)
        return
    tools = [{"name": t.name, "description": t.description, "inputSchema": t.input_schema} for t in event.tools]
    values = {
        "slug": event.slug,
        "server_id": event.server_id,
        "backend": event.backend,
        "kind": "remote" if event.backend in REMOTE else "hosted",
        "deployed_at": event.occurred_at,
        "tools_hash": tools_hash(tools),
        "next_probe_at": repository.now_sql(),
        "probed_status": None,
    }
    await probes_db.put_target(session, values)  # a redelivered older deployment does not replace a newer one


async def _decide(session: AsyncSession, event: ServerDisabled | ServerEnabled, enabled: bool) -> None:
    row = await probes_db.lock_target(session, event.slug)
    if row is None or (row.decided_at is not None and event.occurred_at <= row.decided_at):
        return  # unknown (never deployed) or older than the decision applied
    row.enabled, row.decided_at = enabled, event.occurred_at
    if enabled:
        row.next_probe_at = repository.now_sql()


async def on_server_disabled(event: ServerDisabled, session: AsyncSession) -> None:
    await _decide(session, event, False)


async def on_server_enabled(event: ServerEnabled, session: AsyncSession) -> None:
    await _decide(session, event, True)


async def on_calls(events: Sequence[Event], session: AsyncSession) -> None:
    """The last call per server (a max: batches commute)."""
    last: dict[str, datetime] = {}
    for c in completed_calls(events):
        at = c.occurred_at
        if c.server_slug not in last or at > last[c.server_slug]:
            last[c.server_slug] = at
    for slug, at in last.items():
        await probes_db.called(session, slug, at)


# ---- one probe --------------------------------------------------------------------------------------


class ProbeOutcome:
    def __init__(
        self, status: str, latency_ms: float | None, error: str | None = None, tools: list[dict[str, Any]] | None = None
    ) -> None:
        self.status, self.latency_ms, self.error, self.tools = status, latency_ms, error, tools


def _reply(resp: httpx.Response, req_id: int) -> dict[str, Any]:
    """The JSON-RPC reply to ``req_id`` from a JSON or an SSE answer."""
    ctype = resp.headers.get("content-type", "")
    if "text/event-stream" in ctype:  # a body may end without the last blank line
        for event in sse.parse(resp.content, dispatch_incomplete=True):
            with contextlib.suppress(ValueError):
                msg = json.loads(event.data)
                if isinstance(msg, dict) and msg.get("id") == req_id:
                    return msg
        raise ValueError("no reply in the event stream")
    msg = resp.json()
    if not isinstance(msg, dict):
        raise ValueError("the reply is not a JSON-RPC object")
    return msg


async def probe_once(client: httpx.AsyncClient, url: str, headers: dict[str, str], slow_ms: float) -> ProbeOutcome:
    base = {**headers, "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    t0 = time.perf_counter()
    sid = None
    try:
        r = await client.post(
            url,
            headers=base,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": PROBE_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "wemcp-health-probe", "version": "1"},
                },
            },
        )
        if r.status_code != 200:
            return ProbeOutcome("down", None, f"initialize: HTTP {r.status_code}")
        init = _reply(r, 1)
        if "error" in init:
            return ProbeOutcome("down", None, f"initialize: {str(init['error'].get('message'))[:300]}")
        sid = r.headers.get("mcp-session-id")
        session_headers = {
            **base,
            "MCP-Protocol-Version": str(init.get("result", {}).get("protocolVersion") or PROBE_VERSION),
        }
        if sid:
            session_headers["Mcp-Session-Id"] = sid
        await client.post(url, headers=session_headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        tools: list[dict[str, Any]] = []
        cursor = None
        for page in range(MAX_TOOL_PAGES):
            params: dict[str, Any] = {"cursor": cursor} if cursor else {}
            r = await client.post(
                url,
                headers=session_headers,
                json={"jsonrpc": "2.0", "id": 2 + page, "method": "tools/list", "params": params},
            )
            latency = (time.perf_counter() - t0) * 1000
            if r.status_code != 200:
                return ProbeOutcome("degraded", latency, f"tools/list: HTTP {r.status_code}")
            reply = _reply(r, 2 + page)
            if "error" in reply:
                return ProbeOutcome("degraded", latency, f"tools/list: {str(reply['error'].get('message'))[:300]}")
            result = reply.get("result") or {}
            tools += [t for t in result.get("tools") or [] if isinstance(t, dict)]
            cursor = result.get("nextCursor")
            if not cursor:
                break
        latency = (time.perf_counter() - t0) * 1000
        if latency > slow_ms:
            return ProbeOutcome("degraded", latency, f"slow: {latency:.0f} ms", tools)
        return ProbeOutcome("up", latency, None, tools)
    except (httpx.HTTPError, ValueError) as exc:
        return ProbeOutcome("down", None, f"{type(exc).__name__}: {str(exc)[:200]}")
    finally:
        if sid:
            with contextlib.suppress(Exception):
                await client.request("DELETE", url, headers={**headers, "Mcp-Session-Id": sid})


# ---- the schedule -----------------------------------------------------------------------------------


async def _stats(session: AsyncSession, slug: str, now: datetime) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for label, days in (("uptime_24h", 1), ("uptime_7d", 7)):
        total, good = await probes_db.uptime(session, slug, now - timedelta(days=days))
        out[label] = round(good / total, 4) if total else None
    p50, p95 = await probes_db.latency(session, slug, now - timedelta(days=1))
    out["p50_ms"] = round(p50, 1) if p50 is not None else None
    out["p95_ms"] = round(p95, 1) if p95 is not None else None
    return out


def idle_now(t: ProbeTarget, now: datetime, settings: Settings) -> bool:
    """Scaled to zero for lack of calls, and healthy when last probed (a server that is down keeps
    being probed every interval)."""
    return (
        t.kind == "hosted"
        and t.probed_status in ("up", "degraded")
        and (t.last_call_at is None or t.last_call_at < now - timedelta(seconds=settings.idle_after_seconds))
        and (t.last_probe_at is None or t.last_probe_at < now - timedelta(seconds=settings.idle_after_seconds))
    )


async def _report(
    session: AsyncSession,
    t: ProbeTarget,
    status: str,
    now: datetime,
    settings: Settings,
    outcome: ProbeOutcome | None,
    tools_changed: list[dict[str, Any]] | None,
) -> None:
    due = t.last_reported_at is None or t.last_reported_at <= now - timedelta(seconds=settings.health_report_seconds)
    if status == t.status and tools_changed is None and not due:
        return
    stats = await _stats(session, t.slug, now)
    await add_event(
        session,
        bus_tables,
        ServerHealth(
            server_id=t.server_id,
            slug=t.slug,
            status=status,
            checked_at=now,
            latency_ms=round(outcome.latency_ms, 1) if outcome and outcome.latency_ms is not None else None,
            error=outcome.error if outcome else None,
            tool_count=len(outcome.tools) if outcome and outcome.tools is not None else None,
            tools=[
                ToolInfo(
                    name=str(x.get("name")),
                    title=x.get("title"),
                    description=x.get("description"),
                    input_schema=x.get("inputSchema") or {},
                    output_schema=x.get("outputSchema"),
                    annotations=x.get("annotations"),
                )
                for x in tools_changed
            ]
            if tools_changed is not None
            else None,
            **stats,
        ),
    )
    t.status, t.last_reported_at = status, now


async def probe_target(runtime: Runtime, client: httpx.AsyncClient, slug: str) -> str | None:
    """Probe one target if it is (still) due; returns the status recorded (None: not due)."""
    settings: Settings = runtime.settings
    assert runtime.sessions is not None
    async with runtime.sessions() as s:
        t = await probes_db.target(s, slug)
        if t is None or not t.enabled:
            return None
        now = await repository.now(s)
        idle = idle_now(t, now, settings)
        rare_due = t.last_probe_at is None or t.last_probe_at <= now - timedelta(
            seconds=settings.idle_probe_interval_seconds
        )
    if idle and not rare_due:  # scaled to zero: say so, do not wake it
        async with runtime.sessions() as s, s.begin():
            t = await probes_db.target(s, slug, for_update=True)
            if t is None:
                return None
            await _report(s, t, "idle", now, settings, None, None)
            t.next_probe_at = (t.last_probe_at or now) + timedelta(seconds=settings.idle_probe_interval_seconds)
        crawler_metrics().probe("idle", None)
        return "idle"
    url = f"{settings.gateway_url.rstrip('/')}/mcp/{slug}"
    outcome = await probe_once(client, url, runtime.issuer.headers("gateway"), settings.probe_slow_ms)
    async with runtime.sessions() as s, s.begin():
        t = await probes_db.target(s, slug, for_update=True)
        if t is None:
            return None
        now = await repository.now(s)
        repository.add(
            s, ProbeResult(slug=slug, at=now, status=outcome.status, latency_ms=outcome.latency_ms, error=outcome.error)
        )
        await s.flush()
        changed = None
        if outcome.tools is not None:
            h = tools_hash(outcome.tools)
            if h != t.tools_hash:
                changed, t.tools_hash = outcome.tools, h
        t.probed_status, t.last_probe_at = outcome.status, now
        shown = "idle" if outcome.status != "down" and idle else outcome.status
        await _report(s, t, shown, now, settings, outcome, changed)
        interval = settings.idle_probe_interval_seconds if shown == "idle" else settings.probe_interval_seconds
        t.next_probe_at = now + timedelta(seconds=interval)
    crawler_metrics().probe(outcome.status, outcome.latency_ms)
    if outcome.status != "up":
        log.info("probe_result", slug=slug, status=outcome.status, error=outcome.error)
    return outcome.status


def probe_client(settings: Settings) -> httpx.AsyncClient:
    """Through the egress policy, with the configured gateway admitted by name (it is the
    platform's own door, often on a private address)."""
    policy = EgressPolicy(settings.egress_allow)  # its own: the crawls' policy stays without the gateway
    host = urlsplit(settings.gateway_url).hostname
    if host:
        policy.add(host)
    client: httpx.AsyncClient = policy.client(timeout=settings.probe_timeout_seconds, follow_redirects=False)
    return client


async def due_slugs(runtime: Runtime, limit: int = 200) -> list[str]:
    assert runtime.sessions is not None
    async with runtime.sessions() as s:
        return await probes_db.due_slugs(s, limit)


async def probe_due(runtime: Runtime, client: httpx.AsyncClient) -> dict[str, str | None]:
    settings: Settings = runtime.settings
    sem = asyncio.Semaphore(settings.probe_concurrency)
    results: dict[str, str | None] = {}

    async def one(slug: str) -> None:
        async with sem:
            try:
                results[slug] = await probe_target(runtime, client, slug)
            except Exception as exc:  # one target's trouble must not stop the round
                log.error("probe_crashed", slug=slug, error=f"{type(exc).__name__}: {str(exc)[:300]}")

    await asyncio.gather(*(one(s) for s in await due_slugs(runtime)))
    return results


async def prune(runtime: Runtime) -> None:
    settings: Settings = runtime.settings
    assert runtime.sessions is not None
    async with runtime.sessions() as s, s.begin():
        await probes_db.prune_results(s, settings.probe_retention_days)


async def probe_loop(runtime: Runtime) -> None:
    settings: Settings = runtime.settings
    last_prune = 0.0
    async with probe_client(settings) as client:
        while True:
            try:
                await probe_due(runtime, client)
                if time.monotonic() - last_prune > 3600:
                    await prune(runtime)
                    last_prune = time.monotonic()
            except Exception as exc:
                log.error("probe_round_failed", error=f"{type(exc).__name__}: {str(exc)[:300]}")
            await asyncio.sleep(settings.probe_tick_seconds)
