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


class _Out(BaseModel):
    """A response: a key the use case adds but the model does not list fails the request (the tests see
    it) instead of vanishing."""

    model_config = ConfigDict(extra="forbid")


class LimitsRead(_Out):
    per_user_daily: int | None
    global_daily_cap: int | None = None


class OverrideRead(_Out):
    kind: Literal["server", "agent"]
    id: str
    per_user_daily: int | None
    global_daily_cap: int | None
    note: str = ""


class PoliciesRead(_Out):
    defaults: dict[str, LimitsRead]
    overrides: list[OverrideRead]


class SubjectPolicyRead(_Out):
    kind: Literal["server", "agent"]
    id: str
    effective: LimitsRead
    override: OverrideRead | None


class UsageSearch(PageRequest):
    """Body of ``POST /api/v1/usage/search``: one day's usage per server or agent, busiest first."""

    kind: Literal["server", "agent"] = "server"
    day: date | None = Field(default=None, description="local day; default today")


# A usage row's counters, shared by the rows below. A row's key (``id`` or ``day``) comes from a base
# listed after ``_Counters``, so it is the first key of the JSON (pydantic orders fields base-most first).
class _Counters(_Out):
    calls: int
    metered: int
    own_key: int
    in_agent_run: int
    refused: int
    errors: int


class _BySubject(_Out):
    id: str


class _ByDay(_Out):
    day: date


class SubjectDayUsage(_Counters, _BySubject):
    """One server's (or agent's) calls on one day, over every user."""

    users: int


class MyDay(_Counters, _ByDay):
    """The caller's calls on one local day, over every server and agent: ``metered`` counted in free
    quotas, ``own_key`` made with the caller's own upstream key, ``refused`` turned away."""


class MyDaysRead(_Out):
    since: date
    until: date
    zone: str
    days: list[MyDay]


class SubjectDay(MyDay):
    """One server's (or agent's) calls on one local day: ``users`` distinct callers."""

    users: int
    avg_latency_ms: float


class SubjectUsageRead(_Out):
    """``GET /api/v1/usage/{kind}/{id}``; the global cap and today's count against it for servers only
    (absent for agents: the route drops the fields not set)."""

    kind: Literal["server", "agent"]
    id: str
    since: date
    until: date
    zone: str
    per_user_daily: int | None
    days: list[SubjectDay]
    global_daily_cap: int | None = None
    global_used_today: int | None = None


class TodayUsage(_Out):
    """One server or agent the caller used (or asked about) today: ``used`` counts against ``limit``
    (None: unlimited); ``plan`` is ``entitled`` when a plan bought through goods sets the limit."""

    id: str
    used: int
    limit: int | None
    plan: Literal["entitled", "free"]
    remaining: int | None
    calls: int
    own_key: int
    in_agent_run: int
    refused: int


class MyUsageRead(_Out):
    """``GET /api/v1/me/usage``: today's usage and quota left; ``source`` says where ``used`` came from
    (``redis``: the live counters; ``database``: the usage rows, when Redis is away)."""

    day: date
    zone: str
    reset_at: str
    source: Literal["redis", "database"]
    servers: list[TodayUsage]
    agents: list[TodayUsage]
