"""Crawler events (stream ``CRAWLER``)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from wemcp.common.events.base import Event


class CrawlerDiscovered(Event):
    """The crawler found a public MCP server (npm, PyPI, another registry).

    Emitted by crawler; consumed by catalog (imports it as a submission when new)."""

    subject: ClassVar[str] = "crawler.discovered"
    stream: ClassVar[str] = "CRAWLER"

    source: str
    name: str
    version: str | None = None
    description: str | None = None
    server_json: dict[str, Any] = Field(default_factory=dict)
