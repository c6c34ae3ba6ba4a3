"""The request log's use cases (``logs_api.py``): which calls a caller may see (``view``), one page of
them with its cursor, and the CSV export.

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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.common.errors import BadRequest, Forbidden, NotFound
from wemcp.common.identity import Identity
from wemcp.crawler.config import Settings
from wemcp.crawler.repository.logs import CallQuery, owned_servers, query_calls
from wemcp.crawler.schemas import CallLogItem, CallLogPage

MAX_PAGE = 100
EXPORT_PAGE = 2000
# fmt: off
CSV_COLUMNS = (
    "at", "id", "caller", "server", "method", "tool", "key_source", "metered", "status", "error_code",
    "latency_ms", "request_bytes", "response_bytes"
)
# fmt: on


@dataclass(frozen=True)
class Asked:
    """What a caller asked the log for (the query string of ``GET /api/v1/logs/calls``)."""

    view: str = "own"
    server: str | None = None
    tool: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None


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


async def _build_query(s: AsyncSession, settings: Settings, who: Identity, asked: Asked, limit: int) -> CallQuery:
    now = datetime.now(UTC)
    until_ = _utc(asked.until, "until") or now + timedelta(minutes=5)  # a little ahead: clocks of gateways
    since_ = _utc(asked.since, "since") or now - timedelta(days=settings.logs_retention_days + 1)
    if since_ >= until_:
        raise BadRequest("since must be before until")
    after = decode_cursor(asked.cursor) if asked.cursor else None
    q = CallQuery(
        since=since_, until=until_, limit=limit, server=asked.server, tool=asked.tool, status=asked.status, after=after
    )
    if asked.view == "own":
        return CallQuery(**{**q.__dict__, "user_id": who.user_id})
    if asked.view == "all":
        if not who.at_least("admin"):
            raise Forbidden("view=all needs the admin role")
        return q
    owned = await owned_servers(s, who.user_id)
    if asked.server is not None:
        if asked.server not in owned:
            raise NotFound(f"no server {asked.server!r} among yours")
        return q  # the one server: its own index
    return CallQuery(**{**q.__dict__, "servers": tuple(owned)})


def _items(rows: list[dict[str, Any]], view: str, key: bytes) -> list[CallLogItem]:
    out = []
    for r in rows:
        uid = r["user_id"]
        caller = pseudonym(key, r["server_slug"], uid) if view == "servers" else (str(uid) if uid else None)
        out.append(
            CallLogItem(
                at=r["at"],
                id=r["event_id"],
                caller=caller,
                server=r["server_slug"],
                method=r["method"],
                tool=r["tool"],
                key_source=r["key_source"],
                metered=r["metered"],
                status=r["status"],
                error_code=r["error_code"],
                latency_ms=r["latency_ms"],
                request_bytes=r["request_bytes"],
                response_bytes=r["response_bytes"],
            )
        )
    return out


async def calls_page(
    s: AsyncSession, settings: Settings, who: Identity, asked: Asked, limit: int | None
) -> CallLogPage:
    """A page of ``limit`` (at most 100, default 50) calls, newest first, and the cursor of the next."""
    key = pseudonym_key(settings)
    n = limit or 50
    if n > MAX_PAGE:
        raise BadRequest(f"limit: at most {MAX_PAGE} per page (format=csv exports more)")
    q = await _build_query(s, settings, who, asked, n)
    rows = await query_calls(s, q)
    nxt = encode_cursor(rows[-1]["at"], rows[-1]["event_id"]) if len(rows) == n else None
    return CallLogPage(items=_items(rows, asked.view, key), next_cursor=nxt)


async def export(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, who: Identity, asked: Asked, limit: int | None
) -> AsyncIterator[str]:
    """Every matching row from the cursor on, at most ``limit`` (default and most: the
    ``logs_export_max_rows`` setting), as CSV text. The query is checked now (bad input is refused
    before the answer starts); the rows are read a page at a time while the answer streams, each page
    in a session of its own (none is held between pages)."""
    key = pseudonym_key(settings)
    cap = min(limit or settings.logs_export_max_rows, settings.logs_export_max_rows)
    async with sessions() as s:
        q = await _build_query(s, settings, who, asked, min(cap, EXPORT_PAGE))
    return _csv(sessions, q, cap, asked.view, key)


def _cell(value: str) -> str:
    """Text a client or server chose (method, tool) never starts a spreadsheet formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


async def _csv(
    sessions: async_sessionmaker[AsyncSession], q: CallQuery, cap: int, view: str, key: bytes
) -> AsyncIterator[str]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    sent = 0
    while True:
        page = CallQuery(**{**q.__dict__, "limit": min(q.limit, cap - sent)})
        async with sessions() as s:
            rows = await query_calls(s, page)
        for it in _items(rows, view, key):
            w.writerow(
                (
                    it.at.isoformat(),
                    it.id,
                    it.caller or "",
                    _cell(it.server),
                    _cell(it.method),
                    _cell(it.tool or ""),
                    it.key_source,
                    str(it.metered).lower(),
                    it.status,
                    "" if it.error_code is None else it.error_code,
                    it.latency_ms,
                    it.request_bytes,
                    it.response_bytes,
                )
            )
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
        sent += len(rows)
        if len(rows) < page.limit or sent >= cap:
            return
        q = CallQuery(**{**q.__dict__, "after": (rows[-1]["at"], rows[-1]["event_id"])})
