"""HTTP shapes of the goods API: request bodies (unknown fields refused: a typo is a 422, not silently
ignored) and responses (``extra="forbid"``: a key the use case returns but the model does not list fails
the request instead of vanishing)."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wemcp.common.pagination import PageRequest

T = TypeVar("T")


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


# -- responses -----------------------------------------------------------------------------------
# Times are ISO 8601 strings and ids strings, as the use cases shape them (service.py's ``*_view``).


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanRead(_Out):
    id: str
    code: str
    name: str
    calls_per_day: int | None
    price_cents: int
    currency: str
    period: str
    is_free: bool
    active: bool


class PlanList(_Out):
    items: list[PlanRead]


class ProductRead(_Out):
    """A product as anyone sees it: no account named (``seller`` is platform or merchant)."""

    id: str
    kind: str
    slug: str
    name: str
    title: str
    description: str
    seller: str
    status: str
    listed_at: str | None
    plans: list[PlanRead]


class ProductDetail(ProductRead):
    """A product as its merchant, the admins and the platform's services see it."""

    subject_id: str
    owner_id: str | None
    merchant_id: str | None
    merchant_assigned: bool
    deployed: bool
    disabled: bool
    merchant_delisted: bool
    copy_edited: bool
    refreshed_at: str | None
    created_at: str
    updated_at: str


class _Page(_Out, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int


class ProductList(_Page[ProductRead]):
    pass


class ProductDetailList(_Page[ProductDetail]):
    pass


class EntitlementRead(_Out):
    id: str
    user_id: str
    product_id: str
    plan: PlanRead | None
    active: bool
    expires_at: str | None
    version: int
    note: str
    granted_by: str | None
    updated_at: str | None


class EntitlementList(_Page[EntitlementRead]):
    pass


class UsageDay(_Out):
    day: str
    calls: int
    refused: int
    errors: int
    metered: int
    distinct_users: int


class Caller(_Out):
    user: str  # a pseudonym, or "anonymous"
    calls: int
    refused: int


class ProductUsage(_Out):
    product_id: str
    kind: str
    slug: str
    zone: str  # the days are local days in this zone
    since: str
    until: str
    days: list[UsageDay]
    top_callers: list[Caller]


class MerchantUsage(_Out):
    products: int  # how many of the merchant's products the days sum up
    zone: str
    since: str
    until: str
    days: list[UsageDay]
    top_callers: list[Caller]


class Localized(_Out):
    zh: str
    en: str


class AnnouncementRead(_Out):
    id: str
    title: Localized
    body: Localized
    pinned: bool
    publish_at: str
    expire_at: str | None
    state: Literal["scheduled", "published", "expired", "deleted"]
    version: int
    updated_at: str | None


class AnnouncementList(_Page[AnnouncementRead]):
    pass


class EntitlementFor(_Out):
    """A user's plan for a server or agent (internal): their entitlement, else the free plan."""

    user_id: str
    kind: str
    subject_id: str
    product_id: str | None
    plan: PlanRead | None
    entitled: bool
    calls_per_day: int | None
    expires_at: str | None
