"""Request bodies of the goods API (unknown fields refused: a typo is a 422, not silently ignored)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wemcp.common.pagination import PageRequest


def _aware(v: datetime | None) -> datetime | None:
    if v is not None and v.tzinfo is None:
        raise ValueError("give a time zone (e.g. 2027-01-01T00:00:00Z)")
    return v


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class GoodsSearch(PageRequest):
    query: str | None = Field(default=None, max_length=200)
    kind: Literal["server", "agent"] | None = None
    seller: Literal["platform", "merchant"] | None = None


class CopyEdit(_Body):
    title: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=20_000)


class ListingChange(_Body):
    reason: str | None = Field(default=None, max_length=500)


class PlanCreate(_Body):
    code: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="unique per product; 'free' is taken")
    name: str = Field(min_length=1, max_length=200)
    calls_per_day: int | None = Field(default=None, ge=0, le=100_000_000, description="None: unlimited")
    price_cents: int = Field(default=0, ge=0, le=10**12)
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    period: Literal["day", "month", "year", "once"] = "month"


class PlanUpdate(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    calls_per_day: int | None = Field(default=None, ge=0, le=100_000_000)
    price_cents: int | None = Field(default=None, ge=0, le=10**12)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    period: Literal["day", "month", "year", "once"] | None = None
    active: bool | None = None


class EntitlementGrant(_Body):
    plan_id: UUID
    expires_at: datetime | None = None
    note: str = Field(default="", max_length=500)

    @field_validator("expires_at")
    @classmethod
    def _tz(cls, v: datetime | None) -> datetime | None:
        return _aware(v)


class MerchantAssign(_Body):
    merchant_id: UUID | None = Field(default=None, description="a user with the merchant role; null: the platform")
    follow_owner: bool = Field(default=False, description="drop the assignment: the owner's role decides again")


class LocalText(_Body):
    zh: str = Field(default="", max_length=200)
    en: str = Field(default="", max_length=200)


class LocalBody(_Body):
    zh: str = Field(default="", max_length=50_000)
    en: str = Field(default="", max_length=50_000)


class AnnouncementCreate(_Body):
    title: LocalText
    body: LocalBody = Field(default_factory=LocalBody)
    pinned: bool = False
    publish_at: datetime | None = Field(default=None, description="when it appears; default now (schedule: later)")
    expire_at: datetime | None = None

    @field_validator("publish_at", "expire_at")
    @classmethod
    def _tz(cls, v: datetime | None) -> datetime | None:
        return _aware(v)


class AnnouncementUpdate(_Body):
    title: LocalText | None = None
    body: LocalBody | None = None
    pinned: bool | None = None
    publish_at: datetime | None = None
    expire_at: datetime | None = None
    clear_expire_at: bool = False

    @field_validator("publish_at", "expire_at")
    @classmethod
    def _tz(cls, v: datetime | None) -> datetime | None:
        return _aware(v)
