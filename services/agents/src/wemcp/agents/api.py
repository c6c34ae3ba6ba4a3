"""HTTP API of the agents service.

``/api/v1/model-providers`` (admins) and ``/api/v1/agents`` (CRUD), and the OpenAI-compatible part
(``/v1/models``, ``/v1/chat/completions``, ``/v1/agents/{id}/chat/completions``) that the gateway
proxies unbuffered with the verified caller in the identity headers.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from wemcp.agents import service
from wemcp.agents.deps import State
from wemcp.agents.errors import BadRequest, NotFound, oai
from wemcp.agents.loop import sse
from wemcp.agents.models import Agent, ModelProvider
from wemcp.agents.providers import list_models
from wemcp.agents.schemas import (
    AgentCreate,
    AgentList,
    AgentRead,
    AgentUpdate,
    ModelEntry,
    ModelList,
    ProviderCreate,
    ProviderList,
    ProviderRead,
    ProviderUpdate,
)
from wemcp.common.errors import AppError
from wemcp.common.identity import AdminUser, CurrentUser, OptionalUser
from wemcp.common.logging import get_logger

log = get_logger("wemcp.agents.api")
router = APIRouter(prefix="/api/v1", tags=["agents"])
openai_router = APIRouter(prefix="/v1", tags=["openai-compatible"])


def _provider_read(p: ModelProvider) -> ProviderRead:
    return ProviderRead(id=p.id, name=p.name, base_url=p.base_url, has_api_key=p.api_key_sealed is not None,
                        models=list(p.models), enabled=p.enabled, created_at=p.created_at)


def _agent_read(a: Agent) -> AgentRead:
    return AgentRead(id=a.id, owner_id=a.owner_id, owner_kind=a.owner_kind, name=a.name,
                     description=a.description, model=a.model, instructions=a.instructions,
                     mcp_servers=list(a.mcp_servers), visibility=a.visibility, max_tool_rounds=a.max_tool_rounds,
                     created_at=a.created_at, updated_at=a.updated_at,
                     chat_completions_url=f"/v1/agents/{a.id}/chat/completions", mcp_url=f"/mcp/agents/{a.id}")


# -- model providers (admins) -------------------------------------------------------------------
@router.post("/model-providers", status_code=201, response_model=ProviderRead,
             summary="Register an OpenAI-compatible model provider (admin)")
async def create_provider(body: ProviderCreate, who: AdminUser, st: State) -> ProviderRead:
    return _provider_read(await service.create_provider(st, who, body))


@router.get("/model-providers", response_model=ProviderList, summary="Model providers (admin)")
async def providers(who: AdminUser, st: State) -> ProviderList:
    return ProviderList([_provider_read(p) for p in await service.list_providers(st)])


@router.patch("/model-providers/{provider_id}", response_model=ProviderRead, summary="Change a provider (admin)")
async def update_provider(provider_id: uuid.UUID, body: ProviderUpdate, who: AdminUser,
                          st: State) -> ProviderRead:
    return _provider_read(await service.update_provider(st, provider_id, body))


@router.delete("/model-providers/{provider_id}", status_code=204, summary="Remove a provider (admin)")
async def delete_provider(provider_id: uuid.UUID, who: AdminUser, st: State) -> Response:
    await service.delete_provider(st, provider_id)
    return Response(status_code=204)


# -- agents -------------------------------------------------------------------------------------
@router.post("/agents", status_code=201, response_model=AgentRead, summary="Save an agent")
async def create_agent(body: AgentCreate, who: CurrentUser, st: State) -> AgentRead:
    return _agent_read(await service.create_agent(st, who, body))


@router.get("/agents", response_model=AgentList, summary="My agents (and public ones with include_public)")
async def list_agents(who: CurrentUser, st: State, page: int = Query(1, ge=1, le=10_000),
                      page_size: int = Query(20, ge=1, le=100), include_public: bool = False) -> AgentList:
    rows, total = await service.list_agents(st, who, page, page_size, include_public)
    return AgentList(items=[_agent_read(a) for a in rows], total=total, page=page, page_size=page_size)


@router.get("/agents/{agent_id}", response_model=AgentRead, summary="One agent")
async def get_agent(agent_id: uuid.UUID, who: CurrentUser, st: State) -> AgentRead:
    return _agent_read(await service.get_agent(st, agent_id, who))


@router.patch("/agents/{agent_id}", response_model=AgentRead, summary="Change an agent (owner)")
async def update_agent(agent_id: uuid.UUID, body: AgentUpdate, who: CurrentUser, st: State) -> AgentRead:
    return _agent_read(await service.update_agent(st, agent_id, who, body))


@router.delete("/agents/{agent_id}", status_code=204, summary="Delete an agent (owner)")
async def delete_agent(agent_id: uuid.UUID, who: CurrentUser, st: State) -> Response:
    await service.delete_agent(st, agent_id, who)
    return Response(status_code=204)


# -- OpenAI-compatible --------------------------------------------------------------------------
@openai_router.get("/models", response_model=ModelList, summary="Models served by the registered providers")
async def models(who: OptionalUser, st: State) -> ModelList:
    async with st.sessions() as s:
        pairs = await list_models(s)
    seen: set[str] = set()
    data = []
    for p, m in pairs:
        mid = m if m not in seen else f"{p.name}/{m}"
        seen.add(m)
        data.append(ModelEntry(id=mid, created=int(p.created_at.timestamp()), owned_by=p.name))
    return ModelList(data=data)


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError:
        raise oai(BadRequest, "the request body is not valid JSON", "invalid_json") from None


async def _respond(st: service.AgentsState, p: service.Prepared, headers: dict[str, str]) -> Response:
    if not p.req.stream:
        return JSONResponse(await service.complete(st, p), headers=headers)
    pump = service.StreamPump(service.stream(st, p))
    try:
        first = await pump.first()
    except BaseException:
        pump.cancel()
        raise

    async def body() -> AsyncIterator[bytes]:
        if first is not None:
            yield sse(first)
        async for item in pump.rest():
            if isinstance(item, Exception):
                yield sse(_stream_error(item))
                break
            yield sse(item)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _stream_error(exc: Exception) -> dict[str, Any]:
    """Mid-stream failures as OpenAI streams them: a ``data:`` event with an ``error`` object."""
    if isinstance(exc, AppError):
        err = dict(exc.extra.get("error") or {"message": exc.detail, "type": "api_error", "code": None})
        err["status"] = exc.status
        out: dict[str, Any] = {"error": err}
        if "mcp_calls" in exc.extra:
            out["mcp_calls"] = exc.extra["mcp_calls"]
        return out
    log.error("stream_failed", error=type(exc).__name__)
    return {"error": {"message": "the run failed unexpectedly; it has been logged", "type": "api_error",
                      "code": "internal_error", "status": 500}}


@openai_router.post("/chat/completions", summary="Chat completions with MCP tools (OpenAI-compatible)")
async def chat_completions(who: CurrentUser, st: State, request: Request) -> Response:
    p = service.prepare_chat(st, await _body(request), who, request.headers.get("authorization"))
    return await _respond(st, p, {})


@openai_router.post("/agents/{agent_id}/chat/completions", summary="Chat with a saved agent (100 calls/day)")
async def agent_chat_completions(agent_id: str, who: CurrentUser, st: State, request: Request) -> Response:
    try:
        aid = uuid.UUID(agent_id)
    except ValueError:
        raise oai(NotFound, f"no agent {agent_id[:60]!r}", "agent_not_found") from None
    agent = await service.get_agent(st, aid, who)
    p = service.prepare_agent(st, await _body(request), who, request.headers.get("authorization"), agent)
    t0 = time.perf_counter()
    headers = await service.admit_agent_call(st, who, agent)
    log.info("agent_call_admitted", agent=str(aid), ms=round((time.perf_counter() - t0) * 1000, 2))
    return await _respond(st, p, headers)
