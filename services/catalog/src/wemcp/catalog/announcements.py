"""The news feed's projection of goods' announcements (``goods.announcement_changed``).

An announcement is one ``news`` row with the announcement's id, kind ``announcement``. The event
carries the whole announcement and a version monotonic per announcement: a row is only overwritten
by a higher version, so redelivered or reordered events change nothing, and a deletion (the highest
version) unpublishes it for good. Scheduling and expiry are honoured where the feed is read
(``published_at <= now() < expires_at``)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.catalog.repository import announcements as repository
from wemcp.common.events.goods import AnnouncementChanged


async def on_announcement_changed(event: AnnouncementChanged, session: AsyncSession) -> None:
    title = (event.title_en or event.title_zh)[:200]
    body = event.body_en if event.title_en else event.body_zh
    values = dict(id=event.announcement_id, kind="announcement", title=title, body=body, server_slug=None,
                  published=event.action != "deleted", published_at=event.publish_at, author_id=event.actor_id,
                  expires_at=event.expire_at, pinned=event.pinned, source_version=event.version,
                  translations={"zh": {"title": event.title_zh, "body": event.body_zh},
                                "en": {"title": event.title_en, "body": event.body_en}})
    await repository.put_announcement(session, values)

