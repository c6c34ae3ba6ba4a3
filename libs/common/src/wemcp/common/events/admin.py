"""Administrative actions (stream ``ADMIN``): the audit log's one input."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from wemcp.common.events.base import Event


class AdminActionRecorded(Event):
    """An administrator (or superadmin, or a merchant acting on their own products) changed something
    on the platform: a role, a ban, a review decision, a category, an announcement, a name transfer,
    a plan. Never carries a secret value.

    Emitted by every service that takes an admin action, in the same transaction as the change (through
    its outbox); consumed by the service that keeps the audit log, which stores each event once and
    offers it read-only to admins."""

    subject: ClassVar[str] = "admin.action_recorded"
    stream: ClassVar[str] = "ADMIN"

    service: str
    action: str  # dotted verb, e.g. "user.ban", "review.approve", "announcement.publish"
    actor_id: UUID | None = None  # None: the platform itself (a migration, a scheduled job)
    actor_role: str | None = None
    target_type: str  # "user", "server", "announcement", "product", "name", "category", "invite" ...
    target_id: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    reason: str | None = None
