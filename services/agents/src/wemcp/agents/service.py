"""Use cases: providers, agents, and running a chat completion (plain or as an agent)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.agents import repository
from wemcp.agents.config import Settings
from wemcp.agents.errors import NotFound, TooManyRequests, oai
from wemcp.agents.loop import Caller, ChatRequest, Run, check_urls, parse_mcp_tool, parse_request
from wemcp.agents.mcp_pool import McpPool
from wemcp.agents.mcp_tools import McpHub
from wemcp.agents.models import Agent, ModelProvider, bus_tables, provider_key_context
from wemcp.agents.providers import ProviderClient, resolve_model
from wemcp.agents.quota import AgentQuota
from wemcp.agents.schemas import AgentCreate, AgentUpdate, ProviderCreate, ProviderUpdate
from wemcp.common.errors import Conflict, Forbidden, ServiceUnavailable
from wemcp.common.events.agents import AgentSaved
from wemcp.common.identity import HEADER_AGENT_RUN, Identity
from wemcp.common.logging import get_logger
from wemcp.common.outbox import add_event
from wemcp.quota.runcontext import sign_run_context

log = get_logger("wemcp.agents.service")


@dataclass
class AgentsState:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    provider: ProviderClient
    quota: AgentQuota
    pool: McpPool


# -- providers ----------------------------------------------------------------------------------
def _sealed(settings: Settings, pid: uuid.UUID, key: str) -> str:
    ring = settings.provider_keyring()
    if ring is None:
        raise ServiceUnavailable("storing a provider API key needs WEMCP_AGENTS_PROVIDER_KEY_SECRET "
                                 "(at least 16 characters) on the agents service")
    return ring.seal(key.encode(), provider_key_context(pid))


async def create_provider(st: AgentsState, who: Identity, body: ProviderCreate) -> ModelProvider:
    async with st.sessions() as s, s.begin():
        if await repository.provider_named(s, body.name):
            raise Conflict(f"a model provider named {body.name!r} already exists")
        p = ModelProvider(id=uuid.uuid4(), name=body.name, base_url=body.base_url, models=body.models,
                          enabled=body.enabled, created_by=who.user_id)
        if body.api_key is not None and body.api_key.get_secret_value():
            p.api_key_sealed = _sealed(st.settings, p.id, body.api_key.get_secret_value())
        s.add(p)
    log.info("model_provider_created", provider=p.name, has_key=p.api_key_sealed is not None)
    return p


async def list_providers(st: AgentsState) -> list[ModelProvider]:
    async with st.sessions() as s:
        return list(await repository.providers(s))


async def delete_provider(st: AgentsState, pid: uuid.UUID) -> None:
    async with st.sessions() as s, s.begin():
        if not await repository.delete_provider(s, pid):
            raise NotFound("no such model provider")


async def update_provider(st: AgentsState, pid: uuid.UUID, body: ProviderUpdate) -> ModelProvider:
    async with st.sessions() as s, s.begin():
        p = await s.get(ModelProvider, pid)
        if p is None:
            raise NotFound("no such model provider")
        if body.base_url is not None:
            p.base_url = body.base_url
        if body.models is not None:
            p.models = list(dict.fromkeys(body.models))
        if body.enabled is not None:
            p.enabled = body.enabled
        if body.api_key is not None:
            key = body.api_key.get_secret_value()
            p.api_key_sealed = _sealed(st.settings, p.id, key) if key else None
    return p


# -- agents -------------------------------------------------------------------------------------
def can_call(agent: Agent, who: Identity) -> bool:
    return agent.visibility == "public" or agent.owner_id == who.user_id or who.at_least("admin")


def can_edit(agent: Agent, who: Identity) -> bool:
    return agent.owner_id == who.user_id or who.at_least("admin")


async def get_agent(st: AgentsState, agent_id: uuid.UUID, who: Identity, *, edit: bool = False) -> Agent:
    async with st.sessions() as s:
        agent = await s.get(Agent, agent_id)
    if agent is None or not can_call(agent, who):
        raise oai(NotFound, f"no agent {agent_id}", "agent_not_found")
    if edit and not can_edit(agent, who):
        raise Forbidden("only the agent's owner (or an admin) can change it")
    return agent


def saved_event(agent: Agent, *, deleted: bool = False) -> AgentSaved:
    """What goods learns of an agent (its listing fields; never instructions or keys)."""
    return AgentSaved(agent_id=agent.id, owner_id=agent.owner_id, owner_kind=agent.owner_kind,
                      name=agent.name, description=agent.description or "",
                      visibility=agent.visibility, deleted=deleted,
                      saved_at=datetime.now(UTC))


async def create_agent(st: AgentsState, who: Identity, body: AgentCreate) -> Agent:
    if body.owner_kind == "merchant" and not who.at_least("merchant"):
        raise Forbidden("owner_kind merchant needs the merchant role")
    agent = Agent(id=uuid.uuid4(), owner_id=who.user_id, owner_kind=body.owner_kind, name=body.name,
                  description=body.description, model=body.model, instructions=body.instructions,
                  mcp_servers=[m.model_dump(exclude_none=True) for m in body.mcp_servers],
                  visibility=body.visibility, max_tool_rounds=body.max_tool_rounds)
    async with st.sessions() as s, s.begin():
        s.add(agent)
        await s.flush()
        await add_event(s, bus_tables, saved_event(agent))
    async with st.sessions() as s:
        fresh = await s.get(Agent, agent.id)
    assert fresh is not None
    return fresh


async def update_agent(st: AgentsState, agent_id: uuid.UUID, who: Identity, body: AgentUpdate) -> Agent:
    await get_agent(st, agent_id, who, edit=True)
    async with st.sessions() as s, s.begin():
        agent = await s.get(Agent, agent_id)
        assert agent is not None
        for k, v in body.model_dump(exclude_unset=True).items():
            if k == "mcp_servers":
                v = [m.model_dump(exclude_none=True) for m in (body.mcp_servers or [])]
            elif v is None and k != "max_tool_rounds":
                continue
            setattr(agent, k, v)
        repository.touch(agent)
        await add_event(s, bus_tables, saved_event(agent))
    async with st.sessions() as s:
        fresh = await s.get(Agent, agent_id)
    assert fresh is not None
    return fresh


async def delete_agent(st: AgentsState, agent_id: uuid.UUID, who: Identity) -> None:
    await get_agent(st, agent_id, who, edit=True)
    async with st.sessions() as s, s.begin():
        agent = await s.get(Agent, agent_id)
        if agent is not None:
            await add_event(s, bus_tables, saved_event(agent, deleted=True))
            await s.delete(agent)


async def list_agents(st: AgentsState, who: Identity, page: int, page_size: int,
                      include_public: bool) -> tuple[list[Agent], int]:
    async with st.sessions() as s:
        rows, total = await repository.agents_page(s, who.user_id, include_public, page, page_size)
    return list(rows), total


# -- runs ---------------------------------------------------------------------------------------
def caller_for(st: AgentsState, who: Identity, authorization: str | None, agent: Agent | None) -> Caller:
    """What MCP calls through the gateway carry: the caller's identity and their own credentials (the
    gateway verifies them again). Only a saved agent's run — itself metered at 100 calls a day — signs a
    run context that makes its MCP calls unmetered, and only calls to the servers the agent lists
    (the context names them; the quota client counts a call to any other server); a plain chat
    completion's MCP calls count against each server's daily quota like any other call, or the chat
    API would be a way around it.

    The context names this run, so it goes on each MCP request (``run_headers``) and is not part of
    what pooled connections are keyed by; the agent is (``scope``)."""
    # the gateway is the public edge: it takes identity only from the caller's own credential
    headers: dict[str, str] = {}
    if authorization:
        headers["authorization"] = authorization
    run_headers = {}
    if agent is not None and st.settings.agent_run_secret is not None:
        run_headers[HEADER_AGENT_RUN] = sign_run_context(
            st.settings.agent_run_secret.get_secret_value(), user_id=who.user_id, agent_id=agent.id,
            run_id=uuid.uuid4().hex, servers=[m["ref"] for m in agent.mcp_servers if m.get("ref")],
            ttl_seconds=st.settings.agent_run_ttl_seconds)
    scope = "chat" if agent is None else f"agent:{agent.id}"
    return Caller(headers, str(who.user_id), scope, run_headers)


def agent_tools(agent: Agent) -> list[dict[str, Any]]:
    return [{"type": "mcp", **m} for m in agent.mcp_servers]


async def admit_agent_call(st: AgentsState, who: Identity, agent: Agent) -> dict[str, str]:
    d = await st.quota.admit(who.user_id, agent.id)
    if not d.allowed:
        problem = d.problem()
        cls = TooManyRequests if problem["status"] == 429 else ServiceUnavailable
        raise oai(cls, d.message, "agent_quota_exceeded" if d.reason != "unavailable" else "quota_unavailable",
                  headers=d.headers(), reason=d.reason, limit=d.limit, reset_at=problem["reset_at"],
                  retry_after=d.retry_after)
    return d.headers()


@dataclass
class Prepared:
    req: ChatRequest
    caller: Caller
    extra_messages: list[dict[str, Any]]
    model: str


def prepare_chat(st: AgentsState, raw: Any, who: Identity, authorization: str | None) -> Prepared:
    caller = caller_for(st, who, authorization, None)
    req = parse_request(raw, st.settings, caller)
    return Prepared(req, caller, [], req.model)


def prepare_agent(st: AgentsState, raw: Any, who: Identity, authorization: str | None, agent: Agent) -> Prepared:
    caller = caller_for(st, who, authorization, agent)
    if isinstance(raw, dict):
        raw = {**raw}
        raw.pop("model", None)  # the agent's model answers
        if "max_tool_rounds" not in raw and agent.max_tool_rounds:
            raw["max_tool_rounds"] = min(agent.max_tool_rounds, st.settings.max_tool_rounds_limit)
    # Tools the caller adds are theirs, not the agent's: their MCP calls carry no run context and are
    # metered like any other call (the agent's pool scope is kept).
    req = parse_request(raw, st.settings, replace(caller, run_headers={}), model_required=False)
    for i, t in enumerate(agent_tools(agent)):
        spec = parse_mcp_tool(t, i, st.settings, caller)
        spec.param = f"agent.mcp_servers[{i}]"
        req.mcp_specs.append(spec)
    extra = [{"role": "system", "content": agent.instructions}] if agent.instructions else []
    return Prepared(req, caller, extra, agent.model)


async def start_run(st: AgentsState, p: Prepared) -> tuple[Run, McpHub]:
    await check_urls(p.req, st.settings)
    async with st.sessions() as s:
        model = await resolve_model(s, st.settings, p.model)
    hub = McpHub(p.req.mcp_specs, st.settings, st.pool)
    run = Run(p.req, model, hub, st.provider, st.settings, p.model, p.extra_messages)
    return run, hub


async def complete(st: AgentsState, p: Prepared) -> dict[str, Any]:
    run, hub = await start_run(st, p)
    async with hub:
        return await run.complete()


async def stream(st: AgentsState, p: Prepared) -> AsyncIterator[dict[str, Any]]:
    run, hub = await start_run(st, p)
    async with hub:
        async for chunk in run.stream():
            yield chunk



_END = object()


class StreamPump:
    """Runs a chunk generator in a task of its own (the MCP clients' task groups must open and close
    in one task) and hands chunks over a queue. ``first()`` raises the generator's early errors, so
    they become ordinary HTTP errors; later errors become an SSE ``error`` event."""

    def __init__(self, agen: AsyncIterator[dict[str, Any]]) -> None:
        import asyncio

        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
        self._task = asyncio.create_task(self._pump(agen))

    async def _pump(self, agen: AsyncIterator[dict[str, Any]]) -> None:
        try:
            async for chunk in agen:
                await self._queue.put(chunk)
            await self._queue.put(_END)
        except Exception as exc:
            await self._queue.put(exc)

    async def first(self) -> dict[str, Any] | None:
        item = await self._queue.get()
        if isinstance(item, Exception):
            raise item
        return None if item is _END else item

    async def rest(self) -> AsyncIterator[dict[str, Any] | Exception]:
        try:
            while True:
                item = await self._queue.get()
                if item is _END:
                    return
                yield item
                if isinstance(item, Exception):
                    return
        finally:
            if not self._task.done():
                self._task.cancel()

    def cancel(self) -> None:
        if not self._task.done():
            self._task.cancel()
