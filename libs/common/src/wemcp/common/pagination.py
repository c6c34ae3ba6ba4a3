"""Pagination in the request body (the product asks for it) and the list response shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

MAX_PAGE_SIZE = 100


class PageRequest(BaseModel):
    """Body fields every ``POST .../search`` endpoint accepts."""

    model_config = ConfigDict(extra="forbid")

    page: int = Field(default=1, ge=1, le=10_000, description="1-based page number")
    page_size: int = Field(default=20, ge=1, le=MAX_PAGE_SIZE)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    @property
    def limit(self) -> int:
        return self.page_size


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(ge=0)
    page: int = Field(ge=1)
    page_size: int = Field(ge=1)

    @classmethod
    def of(cls, items: Sequence[T], total: int, request: PageRequest) -> Page[T]:
        return cls(items=list(items), total=total, page=request.page, page_size=request.page_size)
