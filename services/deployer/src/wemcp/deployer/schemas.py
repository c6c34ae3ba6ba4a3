"""HTTP shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class StepRead(BaseModel):
    step: str
    detail: str | None = None
    at: str


class DeploymentRead(BaseModel):
    slug: str
    server_id: str
    status: str = Field(description="queued | deploying | deployed | failed | stopping | disabled")
    desired: str
    backend: str
    generation: int
    steps: list[StepRead]
    endpoint: str | None
    transport: str | None
    protocol_versions: list[str]
    package_version: str | None
    tools: list[dict[str, Any]]
    prompts: list[dict[str, Any]]
    resources: list[dict[str, Any]]
    reason: str | None
    runtime: dict[str, Any]
    logs: str = Field(description="recent output, secrets redacted")
    updated_at: datetime
    deployed_at: datetime | None


class PlanRequest(BaseModel):
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,199}$")
    spec: dict[str, Any]
    backend: str | None = None


class PlanRead(BaseModel):
    backend: str
    slug: str
    kind: str
    actions: list[str]
    artifacts: dict[str, Any]
    requests: list[dict[str, Any]]


class EgressHost(BaseModel):
    host: str = Field(description="host:port the server connected to (or was refused); never a path or a body")
    connections: int
    refused: int
    bytes_out: int
    bytes_in: int
    last_at: str
    last_refusal: str | None = None


class EgressRead(BaseModel):
    slug: str
    network: bool = Field(description="the server asked for network; without it nothing of it leaves the sandbox")
    hosts: list[EgressHost] = Field(description="most recent first, since this deployer process started")
    open_connections: int
    bytes: int
    limits: dict[str, int]
