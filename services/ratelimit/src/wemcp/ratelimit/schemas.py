"""HTTP shapes of the ratelimit API."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from wemcp.common.pagination import PageRequest

KindPath = Literal["servers", "agents"]
KIND_OF: dict[str, str] = {"servers": "server", "agents": "agent"}
SUBJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@/:+-]{0,199}$"


class PolicyUpdate(BaseModel):
    """PUT body. ``null`` inherits the default (on an override) or means unlimited / no cap (on a default)."""

    model_config = ConfigDict(extra="forbid")

    per_user_daily: int | None = Field(default=None, ge=0, le=1_000_000_000)
    global_daily_cap: int | None = Field(default=None, ge=0, le=1_000_000_000)
    note: str = Field(default="", max_length=500)


class LimitsRead(BaseModel):
    per_user_daily: int | None
    global_daily_cap: int | None = None


class OverrideRead(BaseModel):
    kind: Literal["server", "agent"]
    id: str
    per_user_daily: int | None
    global_daily_cap: int | None
    note: str = ""


class PoliciesRead(BaseModel):
    defaults: dict[str, LimitsRead]
    overrides: list[OverrideRead]


class SubjectPolicyRead(BaseModel):
    kind: Literal["server", "agent"]
    id: str
    effective: LimitsRead
    override: OverrideRead | None


class UsageSearch(PageRequest):
    """Body of ``POST /api/v1/usage/search``: one day's usage per server or agent, busiest first."""

    kind: Literal["server", "agent"] = "server"
    day: date | None = Field(default=None, description="local day; default today")


class SubjectDayUsage(BaseModel):
    id: str
    calls: int
    metered: int
    own_key: int
    in_agent_run: int
    refused: int
    errors: int
    users: int


class MyDay(BaseModel):
    """The caller's calls on one local day, over every server and agent: ``metered`` counted in free
    quotas, ``own_key`` made with the caller's own upstream key, ``refused`` turned away."""

    day: date
    calls: int
    metered: int
    own_key: int
    in_agent_run: int
    refused: int
    errors: int


class MyDaysRead(BaseModel):
    since: date
    until: date
    zone: str
    days: list[MyDay]
