"""HTTP shapes of the agents service's /api/v1 part."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, SecretStr, field_validator, model_validator

NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class _Out(BaseModel):
    """What a route answers: a key the use case adds but the model does not list fails the request
    (the tests see it) instead of vanishing."""

    model_config = ConfigDict(extra="forbid")


def _http_url(v: str) -> str:
    if not v.startswith(("http://", "https://")) or len(v) > 500 or " " in v:
        raise ValueError("must be an http(s) URL")
    return v.rstrip("/")


class ProviderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME, description="short unique name; also usable as `<name>/<model>`")
    base_url: str = Field(description="OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
    api_key: SecretStr | None = Field(default=None, description="write-only; stored encrypted")
    models: list[str] = Field(min_length=1, max_length=200)
    enabled: bool = True

    _url = field_validator("base_url")(classmethod(lambda cls, v: _http_url(v)))

    @field_validator("models")
    @classmethod
    def _models(cls, v: list[str]) -> list[str]:
        if any(not m or len(m) > 200 or m.strip() != m for m in v):
            raise ValueError("model names must be 1-200 characters without surrounding spaces")
        return list(dict.fromkeys(v))


class ProviderUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: str | None = None
    api_key: SecretStr | None = Field(default=None, description="write-only; empty string removes the key")
    models: list[str] | None = Field(default=None, min_length=1, max_length=200)
    enabled: bool | None = None

    _url = field_validator("base_url")(classmethod(lambda cls, v: v if v is None else _http_url(v)))


class ProviderRead(_Out):
    id: uuid.UUID
    name: str
    base_url: str
    has_api_key: bool
    models: list[str]
    enabled: bool
    created_at: datetime


class ProviderList(RootModel[list[ProviderRead]]):
    """``GET /api/v1/model-providers``: the providers as a bare JSON array, oldest first."""


class AgentMcpServer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ref: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]{0,99}$")
    server_url: str | None = None
    server_label: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    allowed_tools: list[str] | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _one(self) -> AgentMcpServer:
        if (self.ref is None) == (self.server_url is None):
            raise ValueError("give exactly one of ref (a catalog slug) or server_url")
        if self.server_url is not None:
            _http_url(self.server_url)
        return self


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=2000)
    model: str = Field(min_length=1, max_length=200)
    instructions: str = Field(default="", max_length=20000)
    mcp_servers: list[AgentMcpServer] = Field(default_factory=list, max_length=16)
    visibility: Literal["private", "public"] = "private"
    owner_kind: Literal["user", "merchant"] = "user"
    max_tool_rounds: int | None = Field(default=None, ge=1, le=64)


class AgentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=2000)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    instructions: str | None = Field(default=None, max_length=20000)
    mcp_servers: list[AgentMcpServer] | None = Field(default=None, max_length=16)
    visibility: Literal["private", "public"] | None = None
    max_tool_rounds: int | None = Field(default=None, ge=1, le=64)


class AgentRead(_Out):
    id: uuid.UUID
    owner_id: uuid.UUID
    owner_kind: str
    name: str
    description: str
    model: str
    instructions: str
    mcp_servers: list[dict]
    visibility: str
    max_tool_rounds: int | None
    created_at: datetime
    updated_at: datetime
    chat_completions_url: str
    mcp_url: str


class AgentList(_Out):
    items: list[AgentRead]
    total: int
    page: int
    page_size: int


class ModelEntry(_Out):
    """One model as OpenAI's ``/v1/models`` lists it (``<provider>/<model>`` when two providers serve it)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(_Out):
    object: Literal["list"] = "list"
    data: list[ModelEntry]
