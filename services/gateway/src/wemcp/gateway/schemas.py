"""HTTP shapes of the gateway's own REST routes (rest.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    # a body key the route does not take is refused; a response key the model does not list fails the
    # request (the tests see it) instead of vanishing
    model_config = ConfigDict(extra="forbid")


class ToolCall(_Strict):
    arguments: dict[str, Any] = Field(default_factory=dict)


class BundleCreate(_Strict):
    servers: list[str] = Field(min_length=1, max_length=50)
    name: str = Field(default="", max_length=100)


class ToolList(_Strict):
    """A server's tools as MCP lists them (``name``, ``title``, ``description``, ``inputSchema``, and
    whatever else the server's listing carries)."""

    server: str
    items: list[dict[str, Any]]
    total: int


class BundleRead(_Strict):
    """A bundle: ``servers`` served as one MCP server at ``url``; only its ``owner`` sees it."""

    id: str
    owner: str
    servers: list[str]
    name: str
    url: str
