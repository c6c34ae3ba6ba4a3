"""Crawler events (stream ``CRAWLER``)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from wemcp.common.events.base import Event


class CrawlerDiscovered(Event):
    """The crawler found a public MCP server, new or changed since it last said so (the official MCP
    registry, npm's search, PyPI by name). ``server_json`` is a server.json the catalog accepts;
    ``source`` is ``registry``, ``npm`` or ``pypi``.

    Emitted by crawler; consumed by catalog (lists it owner-less and unhosted, deduplicated by
    package key; never over a listing someone else made)."""

    subject: ClassVar[str] = "crawler.discovered"
    stream: ClassVar[str] = "CRAWLER"

    source: str
    name: str
    version: str | None = None
    description: str | None = None
    server_json: dict[str, Any] = Field(default_factory=dict)
