"""Search's idf statistics (``search.TermStats``) follow B: a small catalog is counted at its first
search (whatever it held at start), a change this process commits makes them stale (a rollback does
not), a costly count runs in the background while searches go on with the previous statistics, and a
count that fails leaves them stale for the next search to retry. The corrections of a misspelled word
come from these statistics, so a search for a typo is the end-to-end check."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio

from wemcp.catalog.config import Settings
from wemcp.catalog.handlers import _project
from wemcp.catalog.main import SPEC
from wemcp.catalog.projection import project
from wemcp.catalog.search import TermStats
from wemcp.catalog.state import of
from wemcp.common.service import running
from wemcp.testkit.catalog import server_for

# the full-text retriever alone (rows projected here may have vectors) finds this description for
# ``kubernetse`` only through the correction to ``kubernetes`` that the statistics give
DOC = {"package": "@acme/cluster-helper", "registry": "npm",
       "description": "Inspect kubernetes deployments and pods from chat."}


@pytest_asyncio.fixture
async def catalog(settings_for: Any, clean_db: None, clean_bus: None) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The catalog in-process, where a count of the statistics counts as cheap below 10 s (a loaded
    machine can take more than the default 50 ms over an empty table; these tests are about what
    happens on each side of the budget, not about the machine's speed)."""
    async with running(SPEC, settings_for(Settings, term_stats_inline_seconds=10.0)) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://catalog") as client:
            yield app, client


class _Abort(Exception):
    pass


async def _add(app: Any, doc: dict[str, Any], i: int, *, through_handlers: bool = False, abort: bool = False) -> str:
    """A server row and its B row, written as the handlers do (``_project``) or as the test kit seeds
    (``project``); ``abort``: the transaction is rolled back."""
    runtime = app.state.runtime
    row = server_for({**doc, "package": f"{doc['package']}-{i}"}, i)
    async with runtime.sessions() as s, s.begin():
        s.add(row)
        await s.flush()
        await s.refresh(row)
        if through_handlers:
            await _project(s, runtime, row)
            assert not of(runtime).terms.dirty  # marked at commit, not before
        else:
            await project(s, row, None)
        if abort:
            raise _Abort
    return row.slug


async def _weather_only(app: Any) -> TermStats:
    """One server, without the word; the catalog's statistics."""
    await _add(app, {**DOC, "description": "Weather forecasts."}, 1)
    return of(app.state.runtime).terms


async def _found(c: Any, query: str) -> list[str]:
    r = await c.post("/api/v1/servers/search", json={"query": query, "mode": "fulltext", "page_size": 10})
    assert r.status_code == 200, r.text
    return [i["slug"] for i in r.json()["items"]]


@pytest.mark.asyncio
async def test_a_small_catalog_is_counted_at_its_first_search_whatever_it_held_at_start(catalog):
    app, c = catalog
    terms = of(app.state.runtime).terms
    # counted at start (empty) and not kept: the catalog may be filled before the first search
    assert terms.loaded_at == -math.inf and terms.n_docs < terms.warm_min_docs
    slug = await _add(app, DOC, 1)
    assert await _found(c, "kubernetse") == [slug]
    assert terms.n_docs == 1 and "kubernetes" in terms.df


@pytest.mark.asyncio
async def test_a_change_committed_here_makes_the_statistics_stale_and_a_rollback_does_not(catalog):
    app, c = catalog
    terms = await _weather_only(app)
    assert await _found(c, "kubernetse") == []  # counted now: one document, no kubernetes
    assert terms.n_docs == 1 and not terms.dirty

    with pytest.raises(_Abort):
        await _add(app, DOC, 2, through_handlers=True, abort=True)
    assert not terms.dirty

    slug = await _add(app, DOC, 3, through_handlers=True)
    assert terms.dirty
    assert await _found(c, "kubernetse") == [slug]  # a cheap count is redone in the search itself
    assert terms.n_docs == 2 and not terms.dirty


@pytest.mark.asyncio
async def test_a_costly_count_runs_in_the_background_and_not_more_often_than_its_backoff(catalog):
    app, c = catalog
    runtime = app.state.runtime
    terms = await _weather_only(app)
    terms.sync_budget, terms.warm_min_docs = 0.0, 1  # every count is costly here; one document is big
    await terms.warm(runtime.sessions)
    assert terms.loaded_at > -math.inf and terms.n_docs == 1  # a big catalog's warm-up is kept

    terms.backoff = 1e9  # the last count's cost times this has not passed: no recount yet
    slug = await _add(app, DOC, 2, through_handlers=True)
    assert await _found(c, "kubernetse") == [] and terms.dirty and terms._task is None

    terms.backoff = 0.0
    assert await _found(c, "kubernetse") == []  # answered at once, on the previous statistics
    assert terms._task is not None
    await asyncio.wait_for(terms._task, 30)
    assert terms.n_docs == 2 and not terms.dirty
    assert await _found(c, "kubernetse") == [slug]


@asynccontextmanager
async def _unreachable() -> AsyncIterator[Any]:
    raise ConnectionRefusedError("the database is down")
    yield  # pragma: no cover


@pytest.mark.asyncio
async def test_a_failed_background_count_keeps_the_statistics_and_leaves_them_stale() -> None:
    terms = TermStats(sync_budget=0.0, backoff=0.0, n_docs=7, df={"weather": 3}, loaded_at=0.0, dirty=True)
    assert await terms.ready(_unreachable) is terms  # type: ignore[arg-type]
    assert terms._task is not None
    await terms._task  # logged, not raised
    assert terms.n_docs == 7 and terms.df == {"weather": 3} and terms.dirty
