"""Listing a server's tools, prompts and resources with the official MCP client, in either era.
``egress``: the server is a user's remote, reached only through the egress policy's connections."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from wemcp.common.events.servers import PromptInfo, ResourceInfo, ToolInfo
from wemcp.common.netpolicy import EgressPolicy


@dataclass
class Listing:
    protocol_version: str
    server_name: str | None = None
    server_version: str | None = None
    tools: list[ToolInfo] = field(default_factory=list)
    prompts: list[PromptInfo] = field(default_factory=list)
    resources: list[ResourceInfo] = field(default_factory=list)


def _dump(obj: Any) -> dict[str, Any]:
    return obj.model_dump(by_alias=True, mode="json", exclude_none=True) if obj is not None else {}


async def introspect(url: str, *, mode: str = "legacy", headers: dict[str, str] | None = None,
                     timeout: float = 60.0, transport: str = "streamable-http",  # noqa: ASYNC109
                     egress: EgressPolicy | None = None) -> Listing:
    server: Any = url
    if transport == "sse":
        server = _SseTransport(url, headers, egress)
    elif headers or egress is not None:
        import httpx2

        http = (egress.client(headers=headers, timeout=timeout) if egress is not None
                else httpx2.AsyncClient(headers=headers, timeout=timeout))
        server = streamable_http_client(url, http_client=http)
    async with asyncio.timeout(timeout):
        async with Client(server, mode=mode, read_timeout_seconds=timeout, cache=None) as client:
            caps = client.server_capabilities
            info = client.server_info
            out = Listing(protocol_version=client.protocol_version,
                          server_name=getattr(info, "name", None), server_version=getattr(info, "version", None))
            if caps is None or caps.tools is not None:
                out.tools = await _tools(client)
            if caps is not None and caps.prompts is not None:
                prompts = await client.list_prompts()
                out.prompts = [PromptInfo(name=p.name, title=getattr(p, "title", None), description=p.description,
                                          arguments=[_dump(a) for a in (p.arguments or [])]) for p in prompts.prompts]
            if caps is not None and caps.resources is not None:
                resources = await client.list_resources()
                out.resources = [ResourceInfo(uri=str(r.uri), name=r.name, title=getattr(r, "title", None),
                                              description=r.description, mime_type=r.mime_type)
                                 for r in resources.resources]
            return out


async def _tools(client: Client) -> list[ToolInfo]:
    tools: list[ToolInfo] = []
    cursor = None
    for _ in range(50):
        res = await client.list_tools(cursor=cursor) if cursor else await client.list_tools()
        for t in res.tools:
            output_schema = getattr(t, "output_schema", None)
            tools.append(ToolInfo(name=t.name, title=getattr(t, "title", None), description=t.description,
                                  input_schema=dict(t.input_schema or {}),
                                  output_schema=dict(output_schema) if output_schema else None,
                                  annotations=_dump(t.annotations) or None))
        cursor = getattr(res, "next_cursor", None)
        if not cursor:
            break
    return tools


def _SseTransport(url: str, headers: dict[str, str] | None, egress: EgressPolicy | None) -> Any:
    from mcp.client.sse import sse_client

    if egress is None:
        return sse_client(url, headers=headers)

    def checked(headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None) -> Any:
        return egress.client(headers=headers, timeout=timeout, auth=auth)

    return sse_client(url, headers=headers, httpx_client_factory=checked)
