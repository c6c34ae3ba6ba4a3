"""Goods events (stream ``GOODS``): entitlements to plans and announcements."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from wemcp.common.events.base import Event


class EntitlementChanged(Event):
    """A user's entitlement to a plan of one product (a server or an agent) was granted, changed or
    revoked by an admin or the product's merchant. Carries the whole state, not a delta: a consumer
    keeps, per (user, subject), the state with the highest ``version`` and ignores older ones, so
    redelivery and reordering change nothing.

    Emitted by goods; consumed by ratelimit (the user's daily limit for that subject)."""

    subject: ClassVar[str] = "goods.entitlement_changed"
    stream: ClassVar[str] = "GOODS"

    entitlement_id: UUID
    user_id: UUID
    product_id: UUID
    subject_kind: Literal["server", "agent"]
    subject_id: str = Field(description="the server's slug or the agent's id, as quotas name them")
    plan_id: UUID | None = None
    plan_code: str = ""
    per_user_daily: int | None = Field(default=None, ge=0, description="calls per day; None = unlimited")
    expires_at: datetime | None = None
    active: bool = Field(default=True, description="False: revoked (the free plan applies again)")
    version: int = Field(ge=1, description="monotonic per (user, product): the highest is the latest state")
    actor_id: UUID | None = None


class AnnouncementChanged(Event):
    """An announcement was created, edited, (re)scheduled or deleted by the superadmin. Carries the
    whole announcement; ``version`` is monotonic per announcement (the highest wins).

    Emitted by goods; consumed by catalog (projects it into the news feed)."""

    subject: ClassVar[str] = "goods.announcement_changed"
    stream: ClassVar[str] = "GOODS"

    announcement_id: UUID
    action: Literal["created", "updated", "deleted"]
    version: int = Field(ge=1)
    title_zh: str = ""
    title_en: str = ""
    body_zh: str = ""
    body_en: str = ""
    pinned: bool = False
    publish_at: datetime
    expire_at: datetime | None = None
    actor_id: UUID | None = None
