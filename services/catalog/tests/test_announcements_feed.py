"""goods' announcements projected into the news feed: the highest version wins in any order,
scheduling and expiry are honoured when the feed is read, deletions unpublish, and news an admin
posted before (or still posts) stays as it was."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
import pytest_asyncio

from services.catalog.tests.catalog_helpers import as_admin, publish, wait_for
from wemcp.catalog.announcements import on_announcement_changed
from wemcp.catalog.config import Settings
from wemcp.catalog.main import SPEC
from wemcp.common.events.goods import AnnouncementChanged
from wemcp.common.service import running


@pytest_asyncio.fixture
async def catalog_app(settings_for: Any, clean_db: None, clean_bus: None) -> AsyncIterator[tuple[Any, Any]]:
    async with running(SPEC, settings_for(Settings, embedder="hash")) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://catalog") as c:
            yield app.state.runtime, c


def ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


def ann(aid: uuid.UUID, version: int, action: str = "updated", **kw: Any) -> AnnouncementChanged:
    base: dict[str, Any] = dict(announcement_id=aid, action=action, version=version, title_en=f"v{version}",
                                title_zh=f"第{version}版", body_en="text", publish_at=ago(10))
    return AnnouncementChanged(**{**base, **kw})


async def apply(rt: Any, event: AnnouncementChanged) -> None:
    async with rt.sessions() as s, s.begin():
        await on_announcement_changed(event, s)


async def feed(c: Any) -> list[dict[str, Any]]:
    r = await c.get("/api/v1/news")
    assert r.status_code == 200
    return list(r.json()["items"])


async def test_the_highest_version_wins_in_any_order(catalog_app):
    rt, c = catalog_app
    for order in itertools.permutations(range(3)):
        aid = uuid.uuid4()
        events = [ann(aid, 1, "created"), ann(aid, 2), ann(aid, 3, pinned=True)]
        for i in order:
            await apply(rt, events[i])
        item = next(i for i in await feed(c) if i["id"] == str(aid))
        assert item["title"] == "v3" and item["pinned"] is True, order
        assert item["translations"]["zh"]["title"] == "第3版"
    gone = uuid.uuid4()
    for e in (ann(gone, 2, "deleted"), ann(gone, 1, "created")):  # the deletion first, the creation late
        await apply(rt, e)
    assert str(gone) not in [i["id"] for i in await feed(c)]


async def test_schedule_expiry_pinning_and_old_news_kept(catalog_app, infra):
    _, c = catalog_app
    r = await c.post("/api/v1/news", json={"title": "Admin-posted news"}, headers=as_admin())
    assert r.status_code == 201
    posted = r.json()["id"]
    soon, expired, pinned, plain = (uuid.uuid4() for _ in range(4))
    await publish(infra.nats_url, ann(soon, 1, "created", publish_at=datetime.now(UTC) + timedelta(days=1)))
    await publish(infra.nats_url, ann(expired, 1, "created", expire_at=ago(1)))
    await publish(infra.nats_url, ann(pinned, 1, "created", pinned=True, publish_at=ago(600)))
    await publish(infra.nats_url, ann(plain, 1, "created", title_en="", title_zh="只有中文", body_zh="正文"))

    async def arrived() -> list[str] | None:
        ids = [i["id"] for i in await feed(c)]
        return ids if str(plain) in ids and str(pinned) in ids else None

    ids = await wait_for(arrived, 15)
    assert ids[0] == str(pinned)  # pinned first, though oldest
    assert str(soon) not in ids and str(expired) not in ids  # not yet / no longer
    assert set(ids) == {str(pinned), str(plain), posted}
    item = next(i for i in await feed(c) if i["id"] == str(plain))
    assert (item["title"], item["body"]) == ("只有中文", "正文")  # a Chinese-only announcement
    only = (await c.get("/api/v1/news", params={"kind": "announcement"})).json()
    assert only["total"] == 3
