"""The request log in-process: call events from NATS into day partitions, the query API's three views
(own, servers with pseudonymised callers, all), cursor pagination, filters, CSV export, partition
upkeep and the call metrics — on the real Postgres and NATS."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import httpx2 as httpx
import nats
import pytest

from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted
from wemcp.common.events.servers import ServerSubmitted
from wemcp.common.identity import Identity
from wemcp.common.service import LagWatcher, running
from wemcp.common.trust import PlatformHeaders
from wemcp.crawler.config import Settings
from wemcp.crawler.logs_store import Partitions
from wemcp.crawler.main import SPEC
from wemcp.crawler.repository.logs import partition_name
from wemcp.devstack.testing import metric_points, metric_reader, wait_for

pytestmark = pytest.mark.usefixtures("clean_db", "clean_bus")

_READER = metric_reader()  # the process's SDK meter provider, with an in-memory reader

ALICE, BOB, OWNER = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def as_user(uid: uuid.UUID, role: str = "user") -> PlatformHeaders:
    return PlatformHeaders("crawler", Identity(uid, role), issuer="gateway")  # type: ignore[arg-type]


ADMIN = as_user(uuid.uuid4(), "admin")


def call(
    user: uuid.UUID | None,
    server: str = "maps",
    *,
    at: datetime | None = None,
    status: str = "ok",
    tool: str | None = "route",
    method: str = "tools/call",
    code: int | None = None,
) -> McpCallCompleted:
    return McpCallCompleted(
        user_id=user,
        server_slug=server,
        method=method,
        tool=tool,
        key_source="vault",
        metered=True,
        status=status,
        error_code=code,
        latency_ms=12.5,
        request_bytes=100,
        response_bytes=2048,
        occurred_at=at or datetime.now(UTC),
    )  # type: ignore[arg-type]


@pytest.fixture
async def app(settings_for):
    async with running(SPEC, settings_for(Settings)) as app:
        yield app


@pytest.fixture
async def http(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://crawler") as c:
        yield c


@pytest.fixture
async def js(infra):
    nc = await nats.connect(infra.nats_url)
    yield nc.jetstream()
    await nc.close()


async def publish(js, *events) -> None:
    for e in events:
        await js.publish(e.subject, e.model_dump_json().encode(), headers={"Nats-Msg-Id": str(e.event_id)})


async def count_rows(app) -> int:
    rt = app.state.runtime
    async with rt.engine.connect() as conn:
        from sqlalchemy import text

        return (await conn.execute(text("SELECT count(*) FROM crawler.call_logs"))).scalar_one()


async def stored(app, n: int) -> None:
    async def enough() -> bool:
        return await count_rows(app) >= n

    await wait_for(enough, timeout=15)


def is_problem(r, status: int) -> bool:
    return r.status_code == status and r.headers["content-type"].startswith("application/problem+json")


async def test_a_user_reads_their_last_100_calls_and_no_one_elses(app, http, js):
    now = datetime.now(UTC)
    mine = [call(ALICE, at=now - timedelta(seconds=i)) for i in range(120)]
    theirs = [call(BOB, server="search", at=now - timedelta(seconds=i)) for i in range(10)]
    batch = McpCallsCompleted(gateway="gw-1", calls=mine[:100] + theirs)
    await publish(js, batch, *mine[100:])
    await publish(js, batch)  # the spool's replay of the same batch: written once
    await stored(app, 130)

    r = await http.get("/api/v1/logs/calls", params={"limit": 100}, headers=as_user(ALICE))
    assert r.status_code == 200, r.text
    page = r.json()
    assert len(page["items"]) == 100
    assert [i["id"] for i in page["items"]] == [str(c.event_id) for c in mine[:100]]  # newest first
    first = page["items"][0]
    assert first["caller"] == str(ALICE) and first["server"] == "maps" and first["tool"] == "route"
    assert first["key_source"] == "vault" and first["metered"] is True and first["status"] == "ok"
    assert first["latency_ms"] == 12.5 and first["request_bytes"] == 100 and first["response_bytes"] == 2048
    assert "arguments" not in first and "result" not in first
    r2 = await http.get(
        "/api/v1/logs/calls", params={"limit": 100, "cursor": page["next_cursor"]}, headers=as_user(ALICE)
    )
    rest = r2.json()
    assert [i["id"] for i in rest["items"]] == [str(c.event_id) for c in mine[100:]]
    assert rest["next_cursor"] is None
    assert await count_rows(app) == 130  # the replayed batch added nothing

    # Bob sees only his; asking for Alice's server does not reach her calls
    r = await http.get("/api/v1/logs/calls", params={"server": "maps"}, headers=as_user(BOB))
    assert r.status_code == 200 and r.json()["items"] == []
    r = await http.get("/api/v1/logs/calls", headers=as_user(BOB))
    assert {i["caller"] for i in r.json()["items"]} == {str(BOB)}
    # view=all is an admin's; the owner view of servers Bob does not own is refused without telling more
    assert is_problem(await http.get("/api/v1/logs/calls", params={"view": "all"}, headers=as_user(BOB)), 403)
    assert is_problem(
        await http.get("/api/v1/logs/calls", params={"view": "servers", "server": "maps"}, headers=as_user(BOB)), 404
    )
    assert is_problem(await http.get("/api/v1/logs/calls"), 401)
    # a bare identity header is no identity
    assert is_problem(await http.get("/api/v1/logs/calls", headers={"x-wemcp-user-id": str(ALICE)}), 401)


async def test_an_owner_sees_calls_to_their_server_with_callers_pseudonymised(app, http, js):
    await publish(
        js,
        ServerSubmitted(server_id=uuid.uuid4(), slug="maps", name="acme/maps", owner_id=OWNER, spec={}),
        ServerSubmitted(server_id=uuid.uuid4(), slug="search", name="acme/search", owner_id=BOB, spec={}),
    )
    now = datetime.now(UTC)
    calls = [
        call(ALICE, at=now - timedelta(seconds=1)),
        call(BOB, at=now - timedelta(seconds=2)),
        call(ALICE, at=now - timedelta(seconds=3), status="error", code=-32603),
        call(ALICE, server="search", at=now - timedelta(seconds=4)),
        call(None, at=now - timedelta(seconds=5)),
    ]
    await publish(js, McpCallsCompleted(gateway="gw", calls=calls))
    await stored(app, 5)

    async def owner_sees() -> list:
        r = await http.get("/api/v1/logs/calls", params={"view": "servers"}, headers=as_user(OWNER))
        assert r.status_code == 200, r.text
        return r.json()["items"]

    items = await wait_for(owner_sees, timeout=10)
    assert [i["id"] for i in items] == [str(c.event_id) for c in calls if c.server_slug == "maps"]
    callers = [i["caller"] for i in items]
    assert str(ALICE) not in callers and str(BOB) not in callers
    assert callers[0] == callers[2] != callers[1]  # the same caller, the same pseudonym
    assert callers[0].startswith("caller-") and callers[3] is None  # anonymous stays anonymous
    # Bob owns "search": Alice's pseudonym there differs (no following a caller across servers)
    r = await http.get("/api/v1/logs/calls", params={"view": "servers", "server": "search"}, headers=as_user(BOB))
    (search,) = r.json()["items"]
    assert search["caller"] not in callers and search["caller"].startswith("caller-")
    # status filter on the owner's server
    r = await http.get(
        "/api/v1/logs/calls", params={"view": "servers", "server": "maps", "status": "error"}, headers=as_user(OWNER)
    )
    assert [i["error_code"] for i in r.json()["items"]] == [-32603]
    # the owner's own view has none of this (the owner made no calls)
    assert (await http.get("/api/v1/logs/calls", headers=as_user(OWNER))).json()["items"] == []
    # an admin sees the account ids
    r = await http.get("/api/v1/logs/calls", params={"view": "all", "server": "maps"}, headers=ADMIN)
    assert [i["caller"] for i in r.json()["items"]] == [str(ALICE), str(BOB), str(ALICE), None]


async def test_filters_time_range_and_bad_input(app, http, js):
    now = datetime.now(UTC)
    calls = [
        call(ALICE, at=now - timedelta(hours=h), tool=f"t{h % 2}", status="ok" if h % 3 else "timeout")
        for h in range(30)
    ]
    await publish(js, McpCallsCompleted(gateway="gw", calls=calls))
    await stored(app, 30)
    q = {"tool": "t1", "status": "timeout", "since": (now - timedelta(hours=24)).isoformat()}
    r = await http.get("/api/v1/logs/calls", params=q, headers=as_user(ALICE))
    got = r.json()["items"]
    want = [c for c in calls if c.tool == "t1" and c.status == "timeout" and c.occurred_at >= now - timedelta(hours=24)]
    assert [i["id"] for i in got] == [str(c.event_id) for c in want] and got
    until = (now - timedelta(hours=10)).isoformat()
    r = await http.get("/api/v1/logs/calls", params={"until": until, "limit": 5}, headers=as_user(ALICE))
    assert [i["id"] for i in r.json()["items"]] == [str(c.event_id) for c in calls[11:16]]

    bad = [{"cursor": "not-a-cursor"}, {"limit": 101}, {"since": now.isoformat(), "until": now.isoformat()}]
    for params in bad:
        assert is_problem(await http.get("/api/v1/logs/calls", params=params, headers=as_user(ALICE)), 400), params
    for params in [{"status": "bogus"}, {"limit": 0}, {"since": "yesterday"}, {"view": "everyone"}, {"format": "xml"}]:
        assert is_problem(await http.get("/api/v1/logs/calls", params=params, headers=as_user(ALICE)), 422), params


async def test_an_admin_exports_csv(app, http, js):
    now = datetime.now(UTC)
    calls = [
        call(ALICE, at=now - timedelta(seconds=i), tool="=HYPERLINK(1)" if i == 0 else "route") for i in range(2500)
    ]
    await publish(
        js,
        McpCallsCompleted(gateway="gw", calls=calls[:1000]),
        McpCallsCompleted(gateway="gw", calls=calls[1000:2000]),
        McpCallsCompleted(gateway="gw", calls=calls[2000:]),
    )
    await stored(app, 2500)
    r = await http.get("/api/v1/logs/calls", params={"view": "all", "format": "csv"}, headers=ADMIN)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 2500  # more than one export page
    assert [row["id"] for row in rows] == [str(c.event_id) for c in calls]
    assert rows[0]["tool"] == "'=HYPERLINK(1)" and rows[1]["caller"] == str(ALICE)
    r = await http.get("/api/v1/logs/calls", params={"view": "all", "format": "csv", "limit": 10}, headers=ADMIN)
    assert len(list(csv.DictReader(io.StringIO(r.text)))) == 10
    # a user's export is their own log; view=all stays an admin's
    r = await http.get("/api/v1/logs/calls", params={"format": "csv"}, headers=as_user(BOB))
    assert r.status_code == 200 and list(csv.DictReader(io.StringIO(r.text))) == []
    assert is_problem(
        await http.get("/api/v1/logs/calls", params={"view": "all", "format": "csv"}, headers=as_user(BOB)), 403
    )


async def test_partitions_are_kept_ahead_and_dropped_past_retention(app, http, js):
    rt = app.state.runtime
    today = datetime.now(UTC).date()
    parts = Partitions()
    async with rt.engine.begin() as conn:
        existing = await parts.load(conn)
        assert {today + timedelta(days=n) for n in range(3)} <= set(existing)  # made at start
        # a day long gone and one far ahead (a gateway's wrong clock): the old one is dropped
        await parts.ensure(conn, [today - timedelta(days=40), today + timedelta(days=10)])
    # a call past the retention is not stored; one for a day with no partition yet makes it
    far = datetime.combine(today + timedelta(days=20), datetime.min.time(), UTC) + timedelta(hours=1)
    await publish(js, McpCallsCompleted(gateway="gw", calls=[call(ALICE, at=now_minus(days=45)), call(ALICE, at=far)]))
    await stored(app, 1)
    async with rt.engine.begin() as conn:
        created, dropped = await parts.maintain(conn, retention_days=30, ahead=3)
        assert created == [] and dropped == [today - timedelta(days=40)]  # the days ahead were there
        days = set(await parts.load(conn))
    assert today + timedelta(days=20) in days and today - timedelta(days=40) not in days
    assert partition_name(today) == f"call_logs_p{today:%Y%m%d}"
    assert await count_rows(app) == 1


def now_minus(**kw) -> datetime:
    return datetime.now(UTC) - timedelta(**kw)


async def test_calls_become_metrics_by_server_method_and_outcome(app, js):
    calls = [
        call(ALICE),
        call(ALICE, status="error", code=-32603),
        call(BOB, method="resources/read", tool=None),
        call(BOB, status="refused", code=-32029),
        call(BOB, method="weird/$method", tool=None),
    ]
    await publish(js, McpCallsCompleted(gateway="gw", calls=calls))
    await stored(app, 5)
    points = metric_points(_READER)
    calls_by = {
        (p.attributes["server"], p.attributes["method"], p.attributes["outcome"]): p.value
        for p in points["wemcp.mcp.calls"]
    }
    assert calls_by[("maps", "tools/call", "ok")] >= 1 and calls_by[("maps", "tools/call", "refused")] >= 1
    assert ("maps", "other", "ok") in calls_by and ("maps", "resources/read", "ok") in calls_by
    assert not any(m == "weird/$method" for _, m, _ in calls_by)
    assert any(p.count >= 1 for p in points["wemcp.mcp.call.duration"])
    quota = {p.attributes["outcome"]: p.value for p in points["wemcp.quota.decisions"]}
    assert quota["refused"] >= 1 and quota["allowed"] >= 2

    # the runtime's lag watcher: this process's durables and its outbox, as gauges
    (watcher,) = [w for w in LagWatcher.live if w.runtime is app.state.runtime]
    await watcher.poll()
    points = metric_points(_READER)
    lag = {p.attributes["durable"]: p.value for p in points["wemcp.bus.consumer.lag"]}
    assert lag["crawler-logs-calls"] == 0 and "crawler-logs-server-submitted" in lag
    assert {p.attributes["schema"] for p in points["wemcp.outbox.pending"]} >= {"crawler"}
