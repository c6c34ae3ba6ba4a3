from __future__ import annotations

import os
from typing import Any

import openai


def _root(base_url: str | None) -> str:
    url = (base_url or os.environ.get("WEMCP_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


class _Agents:
    """Saved agents: CRUD under ``/api/v1/agents`` and chat under ``/v1/agents/{id}``."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def _url(self, path: str) -> str:
        return f"{self._owner.wemcp_url}/api/v1/agents{path}"

    def chat_client(self, agent_id: str) -> Any:
        """An OpenAI client whose ``chat.completions`` talk to this agent (100 calls/day each user)."""
        o = self._owner
        cls = openai.AsyncOpenAI if isinstance(o, openai.AsyncOpenAI) else openai.OpenAI
        return cls(api_key=o.api_key, base_url=f"{o.wemcp_url}/v1/agents/{agent_id}", max_retries=o.max_retries,
                   timeout=o.timeout)


class Agents(_Agents):
    def create(self, **definition: Any) -> dict[str, Any]:
        return self._owner.post(self._url(""), body=definition, cast_to=dict)

    def list(self, *, include_public: bool = False) -> dict[str, Any]:
        return self._owner.get(self._url(f"?include_public={str(include_public).lower()}"), cast_to=dict)

    def get(self, agent_id: str) -> dict[str, Any]:
        return self._owner.get(self._url(f"/{agent_id}"), cast_to=dict)

    def delete(self, agent_id: str) -> None:
        self._owner.delete(self._url(f"/{agent_id}"), cast_to=type(None))

    def chat(self, agent_id: str, messages: list[dict[str, Any]], **kw: Any) -> Any:
        return self.chat_client(agent_id).chat.completions.create(model="agent", messages=messages, **kw)


class AsyncAgents(_Agents):
    async def create(self, **definition: Any) -> dict[str, Any]:
        return await self._owner.post(self._url(""), body=definition, cast_to=dict)

    async def list(self, *, include_public: bool = False) -> dict[str, Any]:
        return await self._owner.get(self._url(f"?include_public={str(include_public).lower()}"), cast_to=dict)

    async def get(self, agent_id: str) -> dict[str, Any]:
        return await self._owner.get(self._url(f"/{agent_id}"), cast_to=dict)

    async def delete(self, agent_id: str) -> None:
        await self._owner.delete(self._url(f"/{agent_id}"), cast_to=type(None))

    async def chat(self, agent_id: str, messages: list[dict[str, Any]], **kw: Any) -> Any:
        return await self.chat_client(agent_id).chat.completions.create(model="agent", messages=messages, **kw)


class WeMcp(openai.OpenAI):
    """``openai.OpenAI`` on a WeMcp platform. ``base_url`` is the platform's root (the gateway);
    ``api_key`` a WeMcp API key or access token (default ``$WEMCP_API_KEY``)."""

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, **kw: Any) -> None:
        self.wemcp_url = _root(base_url)
        super().__init__(api_key=api_key or os.environ.get("WEMCP_API_KEY"), base_url=f"{self.wemcp_url}/v1", **kw)
        self.agents = Agents(self)



class AsyncWeMcp(openai.AsyncOpenAI):
    """``openai.AsyncOpenAI`` on a WeMcp platform (see :class:`WeMcp`)."""

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, **kw: Any) -> None:
        self.wemcp_url = _root(base_url)
        super().__init__(api_key=api_key or os.environ.get("WEMCP_API_KEY"), base_url=f"{self.wemcp_url}/v1", **kw)
        self.agents = AsyncAgents(self)

