"""Announcements: public while published and unexpired (pinned first, newest first); written,
scheduled, edited and deleted by the superadmin only; each change emitted with a higher version."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.goods.tests.goods_helpers import as_user, outbox
from wemcp.common.identity import Identity
from wemcp.common.trust import PlatformHeaders

# minted on every read (an assertion made at import would expire in a long test session)
SUPER = PlatformHeaders("goods", Identity(uuid.uuid4(), "superadmin"), issuer="gateway")  # type: ignore[arg-type]


def iso(delta_minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=delta_minutes)).isoformat()


def problem(r: Any, status: int) -> bool:
    return r.status_code == status and r.headers["content-type"].startswith("application/problem+json")


async def post(http: Any, **body: Any) -> dict[str, Any]:
    r = await http.post("/api/v1/admin/announcements", json=body, headers=SUPER)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def public_ids(http: Any) -> list[str]:
    r = await http.get("/api/v1/announcements")
    assert r.status_code == 200
    return [i["id"] for i in r.json()["items"]]


async def test_the_public_sees_published_unexpired_pinned_first(goods):
    rt, http = goods
    old = await post(http, title={"en": "Old news"}, publish_at=iso(-120))
    pinned = await post(
        http,
        title={"zh": "置顶公告", "en": "Pinned"},
        body={"zh": "内容", "en": "text"},
        pinned=True,
        publish_at=iso(-240),
    )
    new = await post(http, title={"zh": "新功能"})
    scheduled = await post(http, title={"en": "Next week"}, publish_at=iso(60 * 24 * 7))
    expired = await post(http, title={"en": "Gone"}, publish_at=iso(-60), expire_at=iso(-1))
    assert (scheduled["state"], expired["state"], new["state"]) == ("scheduled", "expired", "published")
    assert await public_ids(http) == [pinned["id"], new["id"], old["id"]]
    one = (await http.get(f"/api/v1/announcements/{pinned['id']}")).json()
    assert one["title"] == {"zh": "置顶公告", "en": "Pinned"} and one["body"]["zh"] == "内容"
    for hidden in (scheduled, expired):
        assert problem(await http.get(f"/api/v1/announcements/{hidden['id']}"), 404)
    # the superadmin's list has everything not deleted
    every = (await http.get("/api/v1/admin/announcements", headers=SUPER)).json()
    assert every["total"] == 5

    # reschedule: the scheduled one is published now; unpin; delete
    r = await http.patch(f"/api/v1/admin/announcements/{scheduled['id']}", json={"publish_at": iso(-1)}, headers=SUPER)
    assert r.status_code == 200 and r.json()["state"] == "published" and r.json()["version"] == 2
    await http.patch(f"/api/v1/admin/announcements/{pinned['id']}", json={"pinned": False}, headers=SUPER)
    assert (await http.delete(f"/api/v1/admin/announcements/{new['id']}", headers=SUPER)).status_code == 204
    assert problem(await http.delete(f"/api/v1/admin/announcements/{new['id']}", headers=SUPER), 404)
    assert problem(
        await http.patch(f"/api/v1/admin/announcements/{new['id']}", json={"pinned": True}, headers=SUPER), 404
    )
    assert await public_ids(http) == [scheduled["id"], old["id"], pinned["id"]]

    events = await outbox(rt, "goods.announcement_changed")
    mine = [(e["action"], e["version"]) for e in events if e["announcement_id"] == new["id"]]
    assert mine == [("created", 1), ("deleted", 2)]
    assert [(e["action"], e["version"]) for e in events if e["announcement_id"] == scheduled["id"]] == [
        ("created", 1),
        ("updated", 2),
    ]
    audit = [(e["action"], e["target_id"]) for e in await outbox(rt, "admin.action_recorded")]
    assert ("announcement.delete", new["id"]) in audit and len(audit) == 8  # 5 creates, 2 edits, 1 delete


async def test_only_the_superadmin_writes(goods):
    _, http = goods
    a = await post(http, title={"en": "Hello"})
    body = {"title": {"en": "Hijack"}}
    for who in (as_user(uuid.uuid4(), "admin"), as_user(uuid.uuid4(), "merchant"), as_user(uuid.uuid4(), "user")):
        assert problem(await http.post("/api/v1/admin/announcements", json=body, headers=who), 403)
        assert problem(await http.patch(f"/api/v1/admin/announcements/{a['id']}", json=body, headers=who), 403)
        assert problem(await http.delete(f"/api/v1/admin/announcements/{a['id']}", headers=who), 403)
        assert problem(await http.get("/api/v1/admin/announcements", headers=who), 403)
    assert problem(await http.post("/api/v1/admin/announcements", json=body), 401)
    assert problem(await http.delete(f"/api/v1/admin/announcements/{a['id']}"), 401)
    assert problem(await http.delete(f"/api/v1/admin/announcements/{uuid.uuid4()}", headers=SUPER), 404)
    r = await http.get(f"/api/v1/announcements/{a['id']}")
    assert r.status_code == 200 and r.json()["title"]["en"] == "Hello"


async def test_bad_announcements_are_refused_clearly(goods):
    _, http = goods
    bad = [
        {"title": {}},
        {"title": {"en": ""}},
        {"title": {"en": "x" * 201}},
        {"title": {"en": "x"}, "publish_at": iso(10), "expire_at": iso(5)},
        {"title": {"en": "x"}, "publish_at": "2027-01-01T00:00:00"},  # no time zone
        {"title": {"en": "x"}, "colour": "red"},
        {"title": "plain"},
    ]
    for body in bad:
        r = await http.post("/api/v1/admin/announcements", json=body, headers=SUPER)
        assert problem(r, 422), (body, r.status_code, r.text)
    a = await post(http, title={"en": "x"}, publish_at=iso(-5))
    r = await http.patch(f"/api/v1/admin/announcements/{a['id']}", json={"expire_at": iso(-10)}, headers=SUPER)
    assert problem(r, 422)
    assert problem(await http.get("/api/v1/announcements", params={"page_size": 1000}), 422)
    assert problem(await http.get("/api/v1/announcements/nope"), 422)
