"""``GET /api/v1/logs/calls``: the request log, newest first, with keyset pagination and CSV export.

Who sees what (``view``):

- ``own`` (the default, any signed-in user): the caller's own calls;
- ``servers`` (any signed-in user): calls to the servers the caller owns, the callers replaced by a
  pseudonym per (server, caller) — an owner can tell a returning caller apart but learns no account id,
  and cannot follow one caller from one server to another;
- ``all`` (admins): every call, with the caller's account id.

Never arguments or results: the log holds none.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import hmac
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from wemcp.common.errors import BadRequest, Forbidden, NotFound
from wemcp.common.identity import CurrentUser, Identity
from wemcp.common.service import Runtime
from wemcp.crawler.config import Settings
from wemcp.crawler.logs_store import CallQuery, owned_servers, query_calls

router = APIRouter(prefix="/api/v1/logs", tags=["logs"])

MAX_PAGE = 100
EXPORT_PAGE = 2000
CSV_COLUMNS = ("at", "id", "caller", "server", "method", "tool", "key_source", "metered", "status",
               "error_code", "latency_ms", "request_bytes", "response_bytes")


class CallLogItem(BaseModel):
    at: datetime
    id: UUID
    caller: str | None  # the account id (own, all) or a pseudonym (servers); None: anonymous
    server: str
    method: str
    tool: str | None
    key_source: str
    metered: bool
    status: str
    error_code: int | None
    latency_ms: float
    request_bytes: int
    response_bytes: int


class CallLogPage(BaseModel):
    items: list[CallLogItem]
    next_cursor: str | None  # pass as ``cursor`` for the next (older) page; None: no more


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _settings(rt: Runtime) -> Settings:
    assert isinstance(rt.settings, Settings)
    return rt.settings


def encode_cursor(at: datetime, event_id: UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{event_id}".encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> tuple[datetime, UUID]:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        at_s, _, id_s = text.partition("|")
        at = datetime.fromisoformat(at_s)
        if at.tzinfo is None:
            raise ValueError("naive")
        return at, UUID(id_s)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("cursor: not a cursor this API returned") from None


def pseudonym_key(settings: Settings) -> bytes:
    if settings.logs_pseudonym_key is not None:
        return settings.logs_pseudonym_key.get_secret_value().encode()
    return settings.key_ring.derive("crawler-logs-pseudonym").keys[0][1]


def pseudonym(key: bytes, server: str, user_id: UUID | None) -> str | None:
    if user_id is None:
        return None
    digest = hmac.new(key, f"{server}\0{user_id}".encode(), hashlib.sha256).hexdigest()
    return f"caller-{digest[:16]}"


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def _build_query(rt: Runtime, who: Identity, view: str, server: str | None, tool: str | None,
                       status: str | None, since: datetime | None, until: datetime | None,
                       cursor: str | None, limit: int) -> CallQuery:
    settings = _settings(rt)
    now = datetime.now(UTC)
    until_ = _utc(until, "until") or now + timedelta(minutes=5)  # a little ahead: clocks of gateways
    since_ = _utc(since, "since") or now - timedelta(days=settings.logs_retention_days + 1)
    if since_ >= until_:
        raise BadRequest("since must be before until")
    after = decode_cursor(cursor) if cursor else None
    q = CallQuery(since=since_, until=until_, limit=limit, server=server, tool=tool, status=status, after=after)
    if view == "own":
        return CallQuery(**{**q.__dict__, "user_id": who.user_id})
    if view == "all":
        if not who.at_least("admin"):
            raise Forbidden("view=all needs the admin role")
        return q
    assert rt.sessions is not None
    async with rt.sessions() as s:
        owned = await owned_servers(s, who.user_id)
    if server is not None:
        if server not in owned:
            raise NotFound(f"no server {server!r} among yours")
        return q  # the one server: its own index
    return CallQuery(**{**q.__dict__, "servers": tuple(owned)})


def _items(rows: list[dict[str, Any]], view: str, key: bytes) -> list[CallLogItem]:
    out = []
    for r in rows:
        uid = r["user_id"]
        caller = pseudonym(key, r["server_slug"], uid) if view == "servers" else (str(uid) if uid else None)
        out.append(CallLogItem(
            at=r["at"], id=r["event_id"], caller=caller, server=r["server_slug"], method=r["method"], tool=r["tool"],
            key_source=r["key_source"], metered=r["metered"], status=r["status"], error_code=r["error_code"],
            latency_ms=r["latency_ms"], request_bytes=r["request_bytes"], response_bytes=r["response_bytes"]))
    return out


Text = Annotated[str | None, Query(min_length=1, max_length=200)]


@router.get("/calls", response_model=CallLogPage, responses={200: {"content": {"text/csv": {}}}})
async def list_calls(
    request: Request, who: CurrentUser,
    view: Literal["own", "servers", "all"] = "own",
    server: Text = None, tool: Text = None,
    status: Literal["ok", "error", "refused", "timeout"] | None = None,
    since: datetime | None = None, until: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    format: Literal["json", "csv"] = "json",
) -> Any:
    """The calls ``view`` lets the caller see, newest first. JSON: a page of ``limit`` (at most 100,
    default 50) and ``next_cursor``. CSV (``format=csv``): every matching row from ``cursor`` on,
    at most ``limit`` (default and most: the ``logs_export_max_rows`` setting)."""
    rt = _runtime(request)
    settings = _settings(rt)
    key = pseudonym_key(settings)
    if format == "csv":
        cap = min(limit or settings.logs_export_max_rows, settings.logs_export_max_rows)
        q = await _build_query(rt, who, view, server, tool, status, since, until, cursor, min(cap, EXPORT_PAGE))
        return StreamingResponse(_csv(rt, q, cap, view, key), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="calls.csv"',
                                          "Cache-Control": "no-store"})
    n = limit or 50
    if n > MAX_PAGE:
        raise BadRequest(f"limit: at most {MAX_PAGE} per page (format=csv exports more)")
    q = await _build_query(rt, who, view, server, tool, status, since, until, cursor, n)
    assert rt.sessions is not None
    async with rt.sessions() as s:
        rows = await query_calls(s, q)
    nxt = encode_cursor(rows[-1]["at"], rows[-1]["event_id"]) if len(rows) == n else None
    return CallLogPage(items=_items(rows, view, key), next_cursor=nxt)


def _cell(value: str) -> str:
    """Text a client or server chose (method, tool) never starts a spreadsheet formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


async def _csv(rt: Runtime, q: CallQuery, cap: int, view: str, key: bytes) -> AsyncIterator[str]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    sent = 0
    assert rt.sessions is not None
    while True:
        page = CallQuery(**{**q.__dict__, "limit": min(q.limit, cap - sent)})
        async with rt.sessions() as s:
            rows = await query_calls(s, page)
        for it in _items(rows, view, key):
            w.writerow((it.at.isoformat(), it.id, it.caller or "", _cell(it.server), _cell(it.method),
                        _cell(it.tool or ""), it.key_source, str(it.metered).lower(), it.status,
                        "" if it.error_code is None else it.error_code, it.latency_ms, it.request_bytes,
                        it.response_bytes))
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
        sent += len(rows)
        if len(rows) < page.limit or sent >= cap:
            return
        q = CallQuery(**{**q.__dict__, "after": (rows[-1]["at"], rows[-1]["event_id"])})
