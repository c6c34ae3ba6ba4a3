"""SQL of the catalog's HTTP handlers: the reads behind its lists, feeds and the registry-shaped
feed, and the archive store. Every function takes the caller's session; transactions are the
caller's (``wemcp.common.db.transaction``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.catalog.models import Archive, DomainClaim, News, SearchDoc, Server


async def owned_servers(s: AsyncSession, owner_id: uuid.UUID, page: int, page_size: int,
                        ) -> tuple[Sequence[Server], int]:
    """One page of the servers ``owner_id`` submitted, newest change first, and their count."""
    where = Server.owner_id == owner_id
    total = (await s.execute(select(func.count()).select_from(Server).where(where))).scalar_one()
    rows = (await s.execute(select(Server).where(where).order_by(Server.updated_at.desc(), Server.id)
                            .limit(page_size).offset((page - 1) * page_size))).scalars().all()
    return rows, total


async def server_by_slug(s: AsyncSession, slug: str) -> Server | None:
    return (await s.execute(select(Server).where(Server.slug == slug))).scalar_one_or_none()


async def published_between(s: AsyncSession, start: datetime, end: datetime, page: int, page_size: int,
                            ) -> tuple[Sequence[Server], int]:
    """One page of the enabled servers first published in [start, end), newest first, and their count."""
    where = (SearchDoc.enabled, SearchDoc.published_at >= start, SearchDoc.published_at < end)
    total = (await s.execute(select(func.count()).select_from(SearchDoc).where(*where))).scalar_one()
    rows = (await s.execute(select(Server).join(SearchDoc, SearchDoc.server_id == Server.id).where(*where)
                            .order_by(SearchDoc.published_at.desc(), Server.id)
                            .limit(page_size).offset((page - 1) * page_size))).scalars().all()
    return rows, total


def news_visible() -> list[Any]:
    """What the news feed shows: published, due, not expired."""
    return [News.published, News.published_at <= func.now(),
            or_(News.expires_at.is_(None), News.expires_at > func.now())]


async def visible_news(s: AsyncSession, kind: str | None, page: int, page_size: int,
                       ) -> tuple[Sequence[News], int]:
    """One page of the news feed (pinned first, then newest first), and its count."""
    where = news_visible()
    if kind:
        where.append(News.kind == kind)
    total = (await s.execute(select(func.count()).select_from(News).where(*where))).scalar_one()
    rows = (await s.execute(select(News).where(*where)
                            .order_by(News.pinned.desc(), News.published_at.desc(), News.id)
                            .limit(page_size).offset((page - 1) * page_size))).scalars().all()
    return rows, total


def registry_filter(search: str | None, updated_since: datetime | None) -> Any:
    """Published servers, those whose name, title or description contain ``search``, changed since
    ``updated_since``."""
    conds = [Server.status == "published"]
    if search:
        like = f"%{search.replace('%', '').replace('_', '')}%"
        conds.append(or_(Server.name.ilike(like), Server.title.ilike(like), Server.description.ilike(like)))
    if updated_since is not None:
        conds.append(Server.updated_at >= updated_since)
    return and_(*conds)


async def registry_page(s: AsyncSession, search: str | None, updated_since: datetime | None,
                        after: tuple[str, str] | None, limit: int) -> Sequence[Server]:
    """Up to ``limit`` published servers (``registry_filter``) in (name, id) order, after the
    ``(name, id)`` cursor."""
    q = select(Server).where(registry_filter(search, updated_since))
    if after is not None:
        name, sid = after
        q = q.where((Server.name > name) | ((Server.name == name) & (cast(Server.id, String) > sid)))
    return (await s.execute(q.order_by(Server.name, cast(Server.id, String)).limit(limit))).scalars().all()


async def get_archive(s: AsyncSession, sha256: str) -> Archive | None:
    return await s.get(Archive, sha256)


async def keep_archive(s: AsyncSession, archive: Archive) -> None:
    """Store an archive under its content address unless it is stored already (same address, same bytes)."""
    if await s.get(Archive, archive.sha256) is None:
        s.add(archive)


# ---- domain claims (names_api) --------------------------------------------------------------------

async def claims_of(s: AsyncSession, owner_id: uuid.UUID) -> Sequence[DomainClaim]:
    """A user's domain claims, in domain order."""
    return (await s.execute(select(DomainClaim).where(DomainClaim.owner_id == owner_id)
                            .order_by(DomainClaim.domain))).scalars().all()


async def claim_of(s: AsyncSession, owner_id: uuid.UUID, domain: str, *, lock: bool = False) -> DomainClaim | None:
    """A user's claim on ``domain`` (lower-cased), row-locked with ``lock``."""
    q = select(DomainClaim).where(DomainClaim.owner_id == owner_id, DomainClaim.domain == domain.lower())
    return (await s.execute(q.with_for_update() if lock else q)).scalar_one_or_none()


async def count_claims(s: AsyncSession, owner_id: uuid.UUID) -> int:
    return (await s.execute(select(func.count()).select_from(DomainClaim)
                            .where(DomainClaim.owner_id == owner_id))).scalar_one()


async def save_claim(s: AsyncSession, claim: DomainClaim) -> DomainClaim:
    """Write a new or changed claim and read back what the database filled in (times)."""
    s.add(claim)
    await s.flush()
    await s.refresh(claim)
    return claim


async def delete_claim(s: AsyncSession, claim: DomainClaim) -> None:
    await s.delete(claim)
