"""Account events (stream ``USERS``)."""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID

from wemcp.common.events.base import Event


class UserRegistered(Event):
    """A user account was created (first login or accepted invite).

    Emitted by auth; consumed by goods (merchant profile) and ratelimit (default policies)."""

    subject: ClassVar[str] = "user.registered"
    stream: ClassVar[str] = "USERS"

    user_id: UUID
    login: str
    role: Literal["user", "merchant", "admin", "superadmin"] = "user"
    provider: str | None = None
