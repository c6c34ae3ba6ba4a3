"""SQL of table A (servers) and what hangs off it: the reads behind the lists, feeds and the
registry-shaped feed, submissions and their limits, categories, counters, and the archive store.
Every function takes the caller's session; transactions are the caller's
(``wemcp.common.db.transaction``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, cast, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.catalog.models import Archive, Category, News, SearchDoc, Server, Submission


async def owned_servers(s: AsyncSession, owner_id: uuid.UUID, page: int, page_size: int,
                        ) -> tuple[Sequence[Server], int]:
    """One page of the servers ``owner_id`` submitted, newest change first, and their count."""
    where = Server.owner_id == owner_id
    total = (await s.execute(select(func.count()).select_from(Server).where(where))).scalar_one()
    rows = (await s.execute(select(Server).where(where).order_by(Server.updated_at.desc(), Server.id)
                            .limit(page_size).offset((page - 1) * page_size))).scalars().all()
    return rows, total


async def server_by_slug(s: AsyncSession, slug: str, *, lock: bool = False) -> Server | None:
    """The server ``slug``, row-locked with ``lock``."""
    q = select(Server).where(Server.slug == slug)
    if lock:
        q = q.with_for_update()
    return (await s.execute(q)).scalar_one_or_none()


async def server_by_id(s: AsyncSession, server_id: uuid.UUID, *, lock: bool = False) -> Server | None:
    """The server ``server_id``, row-locked with ``lock``."""
    q = select(Server).where(Server.id == server_id)
    return (await s.execute(q.with_for_update() if lock else q)).scalar_one_or_none()


async def inserted_server(s: AsyncSession, server_id: uuid.UUID) -> Server:
    """The row :func:`insert_server` just wrote."""
    return (await s.execute(select(Server).where(Server.id == server_id))).scalar_one()


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


# ---- submissions ---------------------------------------------------------------------------------

async def taken_slugs(s: AsyncSession, base: str) -> set[str]:
    """The slugs ``base`` and ``base-*`` already in use."""
    return set((await s.execute(
        select(Server.slug).where(or_(Server.slug == base, Server.slug.like(f"{base}-%"))))).scalars())


async def first_of_package(s: AsyncSession, package_key: str) -> Server | None:
    """The oldest row of a package, row-locked (a package's submissions take turns on it)."""
    return (await s.execute(
        select(Server).where(Server.package_key == package_key).order_by(Server.created_at).limit(1)
        .with_for_update())).scalar_one_or_none()


async def rows_of_package(s: AsyncSession, package_key: str) -> Sequence[Server]:
    """Every row of a package, oldest first, row-locked."""
    return (await s.execute(
        select(Server).where(Server.package_key == package_key).order_by(Server.created_at).with_for_update()
    )).scalars().all()


async def package_version(s: AsyncSession, package_key: str, version: str) -> Server:
    """The row of one version of a package (it exists)."""
    return (await s.execute(select(Server).where(
        Server.package_key == package_key, Server.version == version))).scalar_one()


async def insert_server(s: AsyncSession, values: dict[str, Any]) -> uuid.UUID | None:
    """Insert a server row; None when the same package and version is there already. A taken slug
    raises ``IntegrityError`` (the caller runs this in a savepoint and tries another)."""
    stmt = pg_insert(Server).values(**values).on_conflict_do_nothing(
        index_elements=[Server.package_key, Server.version]).returning(Server.id)
    new_id: uuid.UUID | None = (await s.execute(stmt)).scalar_one_or_none()
    return new_id


async def forget_old_submissions(s: AsyncSession, owner_id: uuid.UUID) -> None:
    """Drop a user's submission log older than a day (the limits look at the last hour)."""
    await s.execute(delete(Submission).where(Submission.owner_id == owner_id,
                                             Submission.at < func.now() - timedelta(days=1)))


async def recent_submissions(s: AsyncSession, owner_id: uuid.UUID) -> tuple[datetime, datetime | None, int]:
    """The database's time, the oldest of a user's submissions in the last hour, and their count."""
    now, oldest, recent = (await s.execute(
        select(func.now(), func.min(Submission.at), func.count()).where(
            Submission.owner_id == owner_id, Submission.at > func.now() - timedelta(hours=1)))).one()
    return now, oldest, recent


async def deployments_in_flight(s: AsyncSession, owner_id: uuid.UUID, resubmitting: uuid.UUID | None) -> int:
    """How many of a user's servers are being deployed, ``resubmitting`` left out."""
    return (await s.execute(select(func.count()).select_from(Server).where(
        Server.owner_id == owner_id, Server.status.in_(("submitted", "deploying")),
        Server.id != resubmitting if resubmitting is not None else Server.id.is_not(None)))).scalar_one()


# ---- reading -------------------------------------------------------------------------------------

async def is_searchable(s: AsyncSession, server_id: uuid.UUID) -> bool:
    """Whether the server has an enabled row in table B."""
    return bool((await s.execute(select(SearchDoc.enabled).where(SearchDoc.server_id == server_id)))
                .scalar_one_or_none())


async def published_versions(s: AsyncSession, name: str) -> list[Server]:
    """Published rows of one registry name, newest first."""
    return list((await s.execute(
        select(Server).where(Server.name == name, Server.status == "published")
        .order_by(Server.published_at.desc().nulls_last(), Server.updated_at.desc(), Server.id))).scalars())


async def add_counters(s: AsyncSession, server_id: uuid.UUID, calls: int, stars: int) -> None:
    await s.execute(update(Server).where(Server.id == server_id)
                    .values(calls=Server.calls + calls, stars=Server.stars + stars))


# ---- categories ----------------------------------------------------------------------------------

async def categories(s: AsyncSession) -> Sequence[Category]:
    """Every category, in position then slug order."""
    return (await s.execute(select(Category).order_by(Category.position, Category.slug))).scalars().all()


async def searchable_per_category(s: AsyncSession) -> dict[str | None, int]:
    """How many enabled servers of table B each category has."""
    return dict((await s.execute(
        select(SearchDoc.category, func.count()).where(SearchDoc.enabled).group_by(SearchDoc.category))).all())


async def servers_per_category(s: AsyncSession) -> dict[str | None, int]:
    """How many servers (any status) each category has."""
    return dict((await s.execute(
        select(Server.category, func.count()).group_by(Server.category))).all())


async def category_parents(s: AsyncSession) -> list[tuple[str, str | None]]:
    """Every category's (slug, parent slug)."""
    return [(c, p) for c, p in (await s.execute(select(Category.slug, Category.parent_slug))).all()]


async def category_has_children(s: AsyncSession, slug: str) -> bool:
    return (await s.execute(select(Category.slug).where(Category.parent_slug == slug).limit(1))).first() is not None


async def category_in_use(s: AsyncSession, slug: str) -> bool:
    return (await s.execute(select(Server.id).where(Server.category == slug).limit(1))).first() is not None
