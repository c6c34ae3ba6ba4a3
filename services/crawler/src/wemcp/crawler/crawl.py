"""Discovery crawls: one run walks one source page by page (sources.py), and every page is one
transaction: the packages it found (``discovered``), their ``crawler.discovered`` events (outbox),
the run's counters and the source's position. A run that dies (process stopped, registry down)
leaves its position behind; the next run of that source resumes there (``resumed_from``).

One process crawls a source at a time: the run holds a lease on ``crawl_state`` (renewed with every
page), so several crawler replicas with schedules on do not crawl the same source twice.

Incremental: the registry is asked only for entries updated since the last complete run began
(``updated_since``); npm and PyPI have no such filter, so their unchanged packages are recognised by
fingerprint and not emitted again. Deduplication is by the catalog's package key: a key the
registry described is not re-described by npm or PyPI (the registry's entry is the richer one)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common.events.crawler import CrawlerDiscovered
from wemcp.common.logging import get_logger
from wemcp.common.service import Runtime
from wemcp.crawler import repository, sources
from wemcp.crawler.config import SOURCES, Settings
from wemcp.crawler.models import CrawlRun, Discovered
from wemcp.crawler.repository import crawls as crawls_db
from wemcp.crawler.telemetry import crawler_metrics

log = get_logger("wemcp.crawler.crawl")
RANK = {"registry": 2, "npm": 1, "pypi": 1}  # who may re-describe a package key another source found
MAX_ERROR_LINES = 20


def _owner() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def _claim(session: AsyncSession, source: str, owner: str, lease: float, trigger: str) -> CrawlRun | None:
    """Take the source's lease and open a run (resuming the position of one that did not finish).
    None: another process holds the lease."""
    st = await crawls_db.lock_state(session, source)
    now = await repository.now(session)
    if st.lease_until is not None and st.lease_until > now and st.lease_owner != owner:
        return None
    run = CrawlRun(id=uuid.uuid4(), source=source, trigger=trigger, status="running")
    if st.run_id is not None and st.cursor is not None:  # the last run stopped half-way: go on from there
        run.resumed_from = st.run_id
        run.since = st.since
        await crawls_db.interrupt(session, st.run_id, now)
    else:
        run.since = st.watermark if source == "registry" else None
        st.since = run.since
        st.cursor = {"pos": None, "started": now.isoformat()}
    repository.add(session, run)
    st.run_id = run.id
    st.lease_owner, st.lease_until = owner, now + timedelta(seconds=lease)
    await session.flush()
    return run


async def _apply(session: AsyncSession, run_id: uuid.UUID, source: str, page: sources.Page) -> tuple[int, int]:
    """Record one page's packages; emit those that are new or changed. Returns (new, updated).
    One locking read for the page's keys, one insert of the events (and one notify of the relay):
    a page costs a handful of statements, not a few per package."""
    items = list({f.key: f for f in page.items}.values())  # a key twice on one page: the last wins
    rows = await crawls_db.lock_discovered(session, [f.key for f in items])
    new = updated = 0
    events: list[CrawlerDiscovered] = []
    for f in items:
        row = rows.get(f.key)
        fp = f.fingerprint
        if row is None:
            row = Discovered(package_key=f.key, emitted=0)
            repository.add(session, row)
            new += 1
        elif row.source != source and RANK[source] <= RANK.get(row.source, 0):
            row.last_seen = repository.now_sql()  # another source's description stands
            continue
        elif row.fingerprint == fp:
            row.last_seen = repository.now_sql()
            continue
        else:
            row.last_seen = repository.now_sql()
            updated += 1
        row.source, row.name, row.version, row.fingerprint = source, f.name, f.version, fp
        row.pypi_name, row.emitted = f.pypi_name, row.emitted + 1
        events.append(
            CrawlerDiscovered(
                source=source, name=f.name, version=f.version, description=f.description, server_json=f.server_json
            )
        )
    if events:
        await crawls_db.add_events(session, events)
    await session.flush()
    return new, updated


async def _pypi_names(session: AsyncSession, settings: Settings) -> list[str]:
    named = await crawls_db.pypi_names(session)
    seen: dict[str, str] = {}
    for n in [*settings.pypi_packages, *named]:
        if n:
            seen.setdefault(sources.canonical(n), n)
    return [seen[k] for k in sorted(seen)]


async def run_crawl(runtime: Runtime, source: str, trigger: str = "schedule") -> uuid.UUID | None:
    """One run of one source, to its end or its first page that cannot be fetched. Returns the run's
    id (None when another process is crawling that source)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}")
    settings: Settings = runtime.settings
    assert runtime.sessions is not None
    owner = _owner()
    async with runtime.sessions() as s, s.begin():
        run = await _claim(s, source, owner, settings.crawl_lease_seconds, trigger)
        if run is None:
            log.info("crawl_busy", source=source)
            return None
        run_id, since = run.id, run.since
        st = await crawls_db.state(s, source)
        assert st is not None
        position = (st.cursor or {}).get("pos")
        started = (st.cursor or {}).get("started")
        names = await _pypi_names(s, settings) if source == "pypi" else []
    log.info("crawl_started", source=source, run=str(run_id), resumed=position is not None)
    status, error = "finished", None
    meters, t0 = crawler_metrics(), time.monotonic()
    async with settings.egress.client(timeout=settings.crawl_timeout_seconds, follow_redirects=False) as client:
        fetcher = sources.Fetcher(
            client,
            interval=settings.crawl_request_interval_seconds,
            retries=settings.crawl_retries,
            max_bytes=settings.crawl_max_response_bytes,
        )
        try:
            while True:
                requests_before = fetcher.requests
                try:
                    page = await _fetch(fetcher, settings, source, position, since, names)
                except sources.FetchError as exc:
                    status, error = "failed", str(exc)[:500]
                    break
                done = page.next is None
                async with runtime.sessions() as s, s.begin():
                    new, updated = await _apply(s, run_id, source, page)
                    run_row = await crawls_db.run(s, run_id, for_update=True)
                    assert run_row is not None
                    run_row.found += len(page.items)
                    run_row.new += new
                    run_row.updated += updated
                    run_row.pages += 1
                    run_row.requests += fetcher.requests - requests_before
                    if page.errors:
                        run_row.errors += len(page.errors)
                        run_row.error_detail = [*run_row.error_detail, *page.errors][:MAX_ERROR_LINES]
                    st = await crawls_db.state(s, source, for_update=True)
                    assert st is not None
                    now = await repository.now(s)
                    if done:
                        run_row.status, run_row.finished_at = "finished", now
                        if source == "registry" and started:
                            st.watermark = datetime.fromisoformat(started)
                        st.run_id, st.cursor, st.since = None, None, None
                        st.lease_owner, st.lease_until = None, None
                    else:
                        st.cursor = {"pos": page.next, "started": started}
                        st.lease_until = now + timedelta(seconds=settings.crawl_lease_seconds)
                meters.page(source, len(page.items), new, updated)
                position = page.next
                if done:
                    meters.run(source, "finished", time.monotonic() - t0)
                    log.info("crawl_finished", source=source, run=str(run_id))
                    return run_id
        except asyncio.CancelledError:
            status, error = "interrupted", "the crawler stopped during the run"
            meters.run(source, status, time.monotonic() - t0)
            with contextlib.suppress(Exception):
                await asyncio.shield(_end(runtime, run_id, source, status, error, fetcher.requests))
            raise
    await _end(runtime, run_id, source, status, error, 0)
    meters.run(source, status, time.monotonic() - t0)
    log.warning("crawl_failed", source=source, run=str(run_id), error=error)
    return run_id


async def _end(runtime: Runtime, run_id: uuid.UUID, source: str, status: str, error: str | None, requests: int) -> None:
    """A run that stops before its end: its position stays for the next run, the lease is freed."""
    assert runtime.sessions is not None
    async with runtime.sessions() as s, s.begin():
        run_row = await crawls_db.run(s, run_id, for_update=True)
        if run_row is None:
            return
        run_row.status, run_row.finished_at = status, repository.now_sql()
        if error:
            run_row.errors += 1
            run_row.error_detail = [*run_row.error_detail, error][:MAX_ERROR_LINES]
        await crawls_db.release_lease(s, source, run_id)


async def _fetch(
    f: sources.Fetcher,
    settings: Settings,
    source: str,
    position: dict[str, Any] | None,
    since: datetime | None,
    names: list[str],
) -> sources.Page:
    if source == "registry":
        return await sources.registry_page(f, settings.registry_url, position, since, settings.crawl_page_size)
    if source == "npm":
        return await sources.npm_page(
            f, settings.npm_search_url, settings.npm_queries, position, settings.npm_max_results
        )
    return await sources.pypi_page(f, settings.pypi_url, names, position)


def configured_sources(settings: Settings) -> list[str]:
    """The sources a crawl of all walks, in their order (the registry first: PyPI looks up what it names)."""
    return [s for s in SOURCES if s in settings.crawl_sources]


async def crawl_all(
    runtime: Runtime, trigger: str = "schedule", chosen: Sequence[str] | None = None
) -> list[uuid.UUID]:
    """Every configured source (or the ``chosen`` ones), one after the other."""
    settings: Settings = runtime.settings
    runs = []
    for source in configured_sources(settings) if chosen is None else chosen:
        try:
            run_id = await run_crawl(runtime, source, trigger)
        except Exception as exc:  # one source's bug must not stop the others
            log.error("crawl_crashed", source=source, error=f"{type(exc).__name__}: {str(exc)[:300]}")
            continue
        if run_id is not None:
            runs.append(run_id)
    return runs


async def schedule_loop(runtime: Runtime) -> None:
    settings: Settings = runtime.settings
    while True:
        await crawl_all(runtime, "schedule")
        await asyncio.sleep(settings.crawl_interval_seconds)


def utcnow() -> datetime:
    return datetime.now(UTC)
