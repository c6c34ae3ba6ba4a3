"""Account events (stream ``USERS``)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

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


class UserRoleChanged(Event):
    """A user's role changed (an admin set it, or the user accepted an invite).

    Emitted by auth; consumed by gateway (drops cached API-key identities of that user) and by any
    service that keeps role-dependent state."""

    subject: ClassVar[str] = "user.role_changed"
    stream: ClassVar[str] = "USERS"

    user_id: UUID
    role: Literal["user", "merchant", "admin", "superadmin"]
    previous_role: Literal["user", "merchant", "admin", "superadmin"] | None = None
    actor_id: UUID | None = None


class ApiKeyRevoked(Event):
    """A platform API key was revoked by its owner (or an admin).

    Emitted by auth; consumed by gateway (removes the key from its warm cache, so it is refused
    within a second)."""

    subject: ClassVar[str] = "user.api_key_revoked"
    stream: ClassVar[str] = "USERS"

    key_id: UUID
    user_id: UUID
    prefix: str = ""


class SessionRevoked(Event):
    """A login session (a refresh-token family) was revoked: logout, or refresh-token reuse.

    Emitted by auth; consumed by gateway (refuses access tokens carrying this ``sid`` until
    ``expires_at``, when they would have expired anyway)."""

    subject: ClassVar[str] = "user.session_revoked"
    stream: ClassVar[str] = "USERS"

    user_id: UUID
    session_id: UUID
    reason: Literal["logout", "reuse", "admin"] = "logout"
    expires_at: datetime | None = None


class SecretChanged(Event):
    """An upstream secret in the vault was saved or deleted: a user's own key for a server, or a
    system key an admin set for a server (``user_id`` is the nil UUID). Never carries the value.

    Emitted by auth; consumed by gateway (drops its cached key values for this user and server, so
    the next call uses the new key within a second)."""

    subject: ClassVar[str] = "user.secret_changed"
    stream: ClassVar[str] = "USERS"

    user_id: UUID
    server: str
    name: str
    action: Literal["saved", "deleted"] = "saved"



class UserBanned(Event):
    """An admin banned a user (or unbanned them: ``banned`` false). While banned, the user's API keys
    and sessions are refused and no new session starts; unbanning lets the keys work again (the
    sessions revoked at the ban stay revoked).

    Emitted by auth; consumed by gateway (drops the user's cached API-key identities and refuses the
    user's access tokens at once, so the next call is refused within a second)."""

    subject: ClassVar[str] = "user.banned"
    stream: ClassVar[str] = "USERS"

    user_id: UUID
    banned: bool = True
    actor_id: UUID | None = None
    reason: str | None = None
    until: datetime | None = Field(default=None, description=(
        "when the gateway may forget the ban for access tokens: every token minted before the ban has "
        "expired by then (auth refuses to mint new ones while banned)"))


class UserDeleted(Event):
    """An account was deleted, by its user or by an admin. Auth removed its secrets, API keys,
    sessions, connections and linked identities and blanked its profile in the same transaction.

    Emitted by auth; consumed by gateway (as a ban that never lifts: cached keys dropped, tokens
    refused). Services that keep personal data of the user erase or pseudonymise it within the
    retention ``docs/admin.md`` states."""

    subject: ClassVar[str] = "user.deleted"
    stream: ClassVar[str] = "USERS"

    user_id: UUID
    actor_id: UUID | None = None
    by: Literal["self", "admin"] = "self"
