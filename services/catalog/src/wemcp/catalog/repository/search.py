"""The search statements (``search.py`` plans a search, this module builds and runs its SQL): the
connection settings of the retrievers, the filters, each retriever's candidate list, the fused
page in one statement, the browse page, and the term statistics.

A search is one round trip (two for a browse page: its count and its rows); the statements are
built as text from fixed fragments and asyncpg prepares and caches each distinct statement per
connection."""

from __future__ import annotations

# ruff: noqa: S608  -- the f-strings splice fixed SQL fragments chosen from constants (sort
# orders, filters, retriever lists); every value from a request is a bound parameter.
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from wemcp.catalog.config import Settings

SORTS = {
    "relevance": "f.score DESC, d.popularity DESC, d.server_id",
    "newest": "d.published_at DESC, d.server_id",
    "popular": "d.popularity DESC, f.score DESC, d.server_id",
    "name": "d.sort_name ASC, d.server_id",
}
BROWSE_SORTS = {
    "relevance": "d.featured DESC, d.popularity DESC, d.published_at DESC, d.server_id",
    "newest": "d.published_at DESC, d.server_id",
    "popular": "d.popularity DESC, d.server_id",
    "name": "d.sort_name ASC, d.server_id",
}

ITEM_COLUMNS = """s.id, s.slug, s.name, s.title, s.description, s.icon, s.category, s.tags,
  COALESCE((SELECT array_agg(t->>'name') FROM jsonb_array_elements(s.tools) t), '{}') AS tools,
  s.calls, s.stars, s.featured, s.published_at,
  CASE WHEN s.spec->>'hosting' IN ('local', 'unhosted') THEN s.spec->>'hosting' ELSE 'hosted' END AS hosting,
  s.health_status AS health"""

HEALTHY = ("up", "idle")


def install_settings(engine: AsyncEngine, settings: Settings) -> None:
    """Set the retrievers' session settings once on every pooled connection (at its first checkout),
    on the raw asyncpg connection outside any transaction, so they survive the pool's rollbacks."""
    # random_page_cost 1.1 (SSD): at the default 4 the planner scans B sequentially for a full-text
    # query matching ~10 % of it, testing every row's tsvector (EXPLAIN ANALYZE at 10k: 18 → 8 ms).
    stmt = (
        f"SET hnsw.ef_search = {max(settings.search_candidates, 40):d}; "
        f"SET hnsw.iterative_scan = relaxed_order; SET random_page_cost = 1.1; "
        f"SET pg_trgm.word_similarity_threshold = {float(settings.trigram_threshold):.4f}"
    )

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if record.info.get("catalog_search") != stmt:
            dbapi_conn.run_async(lambda conn: conn.execute(stmt))
            record.info["catalog_search"] = stmt


async def term_stats(s: AsyncSession) -> tuple[int, float, list[Any]]:
    """B's enabled documents: their number, their average number of distinct lexemes, and each
    lexeme's document frequency (rows of word, ndoc)."""
    n, avgdl = (
        await s.execute(text("SELECT count(*), COALESCE(avg(length(tsv)), 1) FROM catalog.search_docs WHERE enabled"))
    ).one()
    rows = (
        await s.execute(text("SELECT word, ndoc FROM ts_stat('SELECT tsv FROM catalog.search_docs WHERE enabled')"))
    ).all()
    return n, avgdl, list(rows)


def filters(categories: list[str] | None, tags: list[str], healthy: bool = False) -> tuple[str, dict[str, Any]]:
    """The WHERE clause on B (``d``) every retriever applies, and its parameters."""
    sql, params = "d.enabled", {}
    if healthy:
        sql += " AND d.health = ANY(:healthy)"
        params["healthy"] = list(HEALTHY)
    if categories is not None:
        sql += " AND d.category = ANY(:cats)"
        params["cats"] = categories
    if tags:
        sql += " AND d.tags @> CAST(:tags AS varchar[])"
        params["tags"] = tags
    return sql, params


def text_retriever(where: str, params: dict[str, Any], rare: str, common: str, cap: int) -> str:
    """The full-text retriever's candidate list (BM25 over the terms of ``:terms``/``:tw``, the
    candidates cut by ``ts_rank``): ``rare`` selects all its matches, ``common`` at most ``cap``
    more. Fills ``params`` with what it adds."""
    sources = []
    if rare:
        params["rare"] = rare
        sources.append(f"""SELECT d.server_id, d.tsv FROM catalog.search_docs d
                           WHERE d.tsv @@ to_tsquery('simple', :rare) AND {where}""")
    if common:
        params.update(common=common, cap=cap)
        not_rare = "AND NOT d.tsv @@ to_tsquery('simple', :rare)" if rare else ""
        sources.append(f"""(SELECT d.server_id, d.tsv FROM catalog.search_docs d
                            WHERE d.tsv @@ to_tsquery('simple', :common) {not_rare} AND {where}
                            LIMIT :cap)""")
    return f"""(SELECT server_id, 't' AS src, row_number() OVER (ORDER BY raw DESC, server_id) AS r, raw
              FROM (SELECT d.server_id, (SELECT sum(x.w * x.tf * (x.k1 + 1) / (x.tf + x.k1 * (1 - x.b + x.b * x.dl)))
                                         FROM (SELECT qt.w, qt.k1, qt.b, length(d.tsv) / qt.avgdl AS dl,
                                                      CASE WHEN d.tsv @@ qt.q THEN 1 + qt.wa * (d.tsv @@ qt.qa)::int
                                                           + qt.wb * (d.tsv @@ qt.qb)::int ELSE 0 END AS tf
                                               FROM qt) x) AS raw
                    FROM (SELECT d.server_id, d.tsv FROM ({" UNION ALL ".join(sources)}) d
                          ORDER BY ts_rank('{{0.1, 0.3, 0.6, 1.0}}', d.tsv, to_tsquery('simple', :tsr)) DESC
                          LIMIT :pre) d
                    ORDER BY raw DESC, d.server_id LIMIT :k) t)"""


def trigram_retriever(where: str, params: dict[str, Any], query: str) -> str:
    """The trigram retriever's candidate list (``word_similarity`` on names)."""
    params["q"] = query.lower()
    return f"""(SELECT server_id, 'g' AS src, row_number() OVER (ORDER BY raw DESC, server_id) AS r, raw
            FROM (SELECT d.server_id, word_similarity(:q, d.name_trgm)::float8 AS raw
                  FROM catalog.search_docs d WHERE :q <% d.name_trgm AND {where}
                  ORDER BY raw DESC, d.server_id LIMIT :k) g)"""


def vector_retriever(where: str, params: dict[str, Any], qv: str, max_distance: float) -> str:
    """The vector retriever's candidate list (cosine distance to ``qv``, pgvector's text form)."""
    params.update(qv=qv, maxd=max_distance)
    return f"""(SELECT server_id, 'v' AS src, row_number() OVER (ORDER BY raw, server_id) AS r, raw FROM (
              SELECT d.server_id, (d.embedding <=> CAST(:qv AS vector))::float8 AS raw
              FROM catalog.search_docs d WHERE d.embedding IS NOT NULL AND {where}
              ORDER BY d.embedding <=> CAST(:qv AS vector) LIMIT :k) v
            WHERE raw <= CAST(:maxd AS float8))"""


_TERMS_CTE = """qt AS MATERIALIZED (
    SELECT to_tsquery('simple', t) AS q, to_tsquery('simple', t || '\\:A') AS qa,
           to_tsquery('simple', t || '\\:B') AS qb, w, CAST(:k1 AS float8) AS k1, CAST(:b AS float8) AS b,
           CAST(:avgdl AS float8) AS avgdl, CAST(:wa AS float8) AS wa, CAST(:wb AS float8) AS wb
    FROM unnest(CAST(:terms AS text[]), CAST(:tw AS float8[])) AS x(t, w))"""


def _with(params: dict[str, Any], union: str) -> str:
    return ("WITH " + (_TERMS_CTE + ", " if "terms" in params else "")) + f"hits AS ({union})"


async def browse(s: AsyncSession, where: str, sort: str, params: dict[str, Any]) -> tuple[Any, int]:
    """A page of B without a query (``:limit``, ``:offset``) in a browse order, and the count."""
    total = (await s.execute(text(f"SELECT count(*) FROM catalog.search_docs d WHERE {where}"), params)).scalar_one()
    rows = (
        (
            await s.execute(
                text(f"""
        WITH page AS (SELECT d.server_id, NULL::float AS score, d.featured, d.popularity, d.published_at,
                             d.sort_name, row_number() OVER (ORDER BY {BROWSE_SORTS[sort]}) AS pos
                      FROM catalog.search_docs d WHERE {where}
                      ORDER BY {BROWSE_SORTS[sort]} LIMIT :limit OFFSET :offset)
        SELECT {ITEM_COLUMNS}, page.score FROM page JOIN catalog.servers s ON s.id = page.server_id
        ORDER BY page.pos"""),
                params,
            )
        )
        .mappings()
        .all()
    )
    return rows, total


async def ranked(s: AsyncSession, parts: list[str], sort: str, params: dict[str, Any]) -> Any:
    """The retrievers' candidates fused by a weighted score (``:wt``, ``:wv``, ``:wg``, ``:wg2``,
    ``:wr``, ``:rrf``, ``:vd``), one page of them in ``sort`` order with the total, in one statement."""
    union = " UNION ALL ".join(parts)
    return (
        (
            await s.execute(
                text(f"""
        {_with(params, union)},
        w AS (SELECT CAST(:wt AS float8) AS wt, CAST(:wv AS float8) AS wv,
                     CASE WHEN EXISTS (SELECT 1 FROM hits WHERE src = 't') THEN CAST(:wg AS float8)
                          ELSE CAST(:wg2 AS float8) END AS wg,
                     CAST(:wr AS float8) AS wr, CAST(:rrf AS float8) AS rrf, CAST(:vd AS float8) AS vd),
        n AS (SELECT src, server_id, r, CASE src WHEN 't' THEN raw / NULLIF(max(raw) OVER (PARTITION BY src), 0)
                                                 WHEN 'v' THEN greatest(0, 1 - raw / w.vd) ELSE raw END AS x
              FROM hits, w),
        f AS (SELECT server_id, sum(CASE src WHEN 't' THEN w.wt WHEN 'v' THEN w.wv ELSE w.wg END * COALESCE(x, 0)
                                    + w.wr / (w.rrf + r)) AS score
              FROM n, w GROUP BY server_id),
        page AS (SELECT f.server_id, f.score, count(*) OVER () AS total,
                        row_number() OVER (ORDER BY {SORTS[sort]}) AS pos
                 FROM f JOIN catalog.search_docs d ON d.server_id = f.server_id
                 ORDER BY {SORTS[sort]} LIMIT :limit OFFSET :offset)
        SELECT {ITEM_COLUMNS}, page.score::float AS score, page.total
        FROM page JOIN catalog.servers s ON s.id = page.server_id ORDER BY page.pos"""),
                params,
            )
        )
        .mappings()
        .all()
    )


async def count_hits(s: AsyncSession, parts: list[str], params: dict[str, Any]) -> int:
    """How many servers the retrievers found (a page past the end has no total of its own)."""
    union = " UNION ALL ".join(parts)
    total: int = (
        await s.execute(text(f"{_with(params, union)} SELECT count(DISTINCT server_id) FROM hits"), params)
    ).scalar_one()
    return total


async def hits(s: AsyncSession, parts: list[str], params: dict[str, Any]) -> list[Any]:
    """Each retriever's candidates, unfused: rows of (src, server_id as text, rank, raw score)."""
    return list(
        (
            await s.execute(
                text(f"{_with(params, ' UNION ALL '.join(parts))} SELECT src, server_id::text, r, raw FROM hits"),
                params,
            )
        ).all()
    )
