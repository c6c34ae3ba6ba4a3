"""Hybrid search over table B: full-text (jieba-segmented ``simple`` tsvector), trigram similarity
on names, and cosine distance on the embedding (HNSW), fused by reciprocal rank fusion (RRF).

Each retriever returns at most ``search_candidates`` ranked ids, filtered (enabled, category,
tags) inside its own query so the indexes do the work; RRF adds ``1 / (k + rank)`` per list."""

from __future__ import annotations

# ruff: noqa: S608  -- the f-strings splice fixed SQL fragments chosen from constants (sort
# orders, filters, retriever lists); every value from a request is a bound parameter.
import re
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.catalog.config import Settings
from wemcp.catalog.schemas import SearchRequest
from wemcp.catalog.text import tsquery_text

_CJK = re.compile(r"[\u3400-\u9fff]")

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


def _filters(categories: list[str] | None, tags: list[str], healthy: bool = False) -> tuple[str, dict[str, Any]]:
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


async def search(session: AsyncSession, req: SearchRequest, settings: Settings, *,
                 qvec: list[float] | None, categories: list[str] | None) -> tuple[list[dict[str, Any]], int]:
    where, params = _filters(categories, req.tags, req.healthy)
    params.update(limit=req.limit, offset=req.offset)
    query = req.query.strip()
    if not query:
        total = (await session.execute(text(f"SELECT count(*) FROM catalog.search_docs d WHERE {where}"),
                                       params)).scalar_one()
        rows = (await session.execute(text(f"""
            WITH page AS (SELECT d.server_id, NULL::float AS score, d.featured, d.popularity, d.published_at,
                                 d.sort_name, row_number() OVER (ORDER BY {BROWSE_SORTS[req.sort]}) AS pos
                          FROM catalog.search_docs d WHERE {where}
                          ORDER BY {BROWSE_SORTS[req.sort]} LIMIT :limit OFFSET :offset)
            SELECT {ITEM_COLUMNS}, page.score FROM page JOIN catalog.servers s ON s.id = page.server_id
            ORDER BY page.pos"""), params)).mappings().all()
        return _items(rows, total)

    k = settings.search_candidates
    params.update(k=k, rrf=settings.rrf_k, q=query.lower())
    parts: list[str] = []
    mode = req.mode
    tsq = tsquery_text(query)
    if mode in {"hybrid", "text", "fulltext"} and tsq:
        params["tsq"] = tsq
        parts.append(f"""(SELECT d.server_id, row_number() OVER (ORDER BY ts_rank_cd(d.tsv, q) DESC, d.server_id) AS r
            FROM catalog.search_docs d, to_tsquery('simple', :tsq) q
            WHERE d.tsv @@ q AND {where}
            ORDER BY ts_rank_cd(d.tsv, q) DESC, d.server_id LIMIT :k)""")
    # Trigrams catch misspelled *names*: short Latin-script queries. Chinese text has no useful
    # trigrams here and long queries are sentences (full-text and vector handle both), and the
    # trigram scan is the slowest retriever (measured), so it runs only where it can help.
    name_like = len(query) >= 3 and len(query.split()) <= 4 and not _CJK.search(query)
    if mode in {"hybrid", "text", "trigram"} and (name_like or mode == "trigram"):
        await session.execute(text("SELECT set_config('pg_trgm.word_similarity_threshold', :t, true)"),
                              {"t": str(settings.trigram_threshold)})
        parts.append(f"""(SELECT d.server_id,
                row_number() OVER (ORDER BY word_similarity(:q, d.name_trgm) DESC, d.server_id) AS r
            FROM catalog.search_docs d
            WHERE :q <% d.name_trgm AND {where}
            ORDER BY word_similarity(:q, d.name_trgm) DESC, d.server_id LIMIT :k)""")
    if mode in {"hybrid", "vector"} and qvec is not None:
        await session.execute(text("SELECT set_config('hnsw.ef_search', :e, true)"), {"e": str(max(k, 40))})
        params.update(qv=str(qvec), maxd=settings.vector_max_distance)
        parts.append(f"""(SELECT server_id, row_number() OVER (ORDER BY dist, server_id) AS r FROM (
              SELECT d.server_id, d.embedding <=> CAST(:qv AS vector) AS dist
              FROM catalog.search_docs d WHERE d.embedding IS NOT NULL AND {where}
              ORDER BY d.embedding <=> CAST(:qv AS vector) LIMIT :k) v
            WHERE dist <= :maxd)""")
    if not parts:
        return [], 0
    union = " UNION ALL ".join(parts)
    rows = (await session.execute(text(f"""
        WITH hits AS ({union}),
        f AS (SELECT server_id, sum(1.0 / (:rrf + r)) AS score FROM hits GROUP BY server_id),
        page AS (SELECT f.server_id, f.score, count(*) OVER () AS total,
                        row_number() OVER (ORDER BY {SORTS[req.sort]}) AS pos
                 FROM f JOIN catalog.search_docs d ON d.server_id = f.server_id
                 ORDER BY {SORTS[req.sort]} LIMIT :limit OFFSET :offset)
        SELECT {ITEM_COLUMNS}, page.score::float AS score, page.total
        FROM page JOIN catalog.servers s ON s.id = page.server_id ORDER BY page.pos"""), params)).mappings().all()
    total = int(rows[0]["total"]) if rows else 0
    if not rows and req.offset:
        total = (await session.execute(text(f"WITH hits AS ({union}) SELECT count(DISTINCT server_id) FROM hits"),
                                       params)).scalar_one()
    return _items(rows, total)


def _items(rows: Any, total: int) -> tuple[list[dict[str, Any]], int]:
    items = []
    for r in rows:
        item = dict(r)
        item.pop("total", None)
        item["tools"] = list(item["tools"] or [])
        items.append(item)
    return items, total
