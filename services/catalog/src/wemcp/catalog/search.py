"""Hybrid search over table B: full-text (jieba-segmented ``simple`` tsvector), trigram similarity
on names, and cosine distance on the embedding (HNSW), fused by reciprocal rank fusion (RRF).

Each retriever returns at most ``search_candidates`` ranked ids, filtered (enabled, category,
tags) inside its own query so the indexes do the work; RRF adds ``1 / (k + rank)`` per list."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.catalog.config import Settings
from wemcp.catalog.schemas import SearchRequest
from wemcp.catalog.text import tsquery_text

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
  s.calls, s.stars, s.featured, s.published_at"""


def _filters(categories: list[str] | None, tags: list[str]) -> tuple[str, dict[str, Any]]:
    sql, params = "d.enabled", {}
    if categories is not None:
        sql += " AND d.category = ANY(:cats)"
        params["cats"] = categories
    if tags:
        sql += " AND d.tags @> CAST(:tags AS varchar[])"
        params["tags"] = tags
    return sql, params


async def search(session: AsyncSession, req: SearchRequest, settings: Settings, *,
                 qvec: list[float] | None, categories: list[str] | None) -> tuple[list[dict[str, Any]], int]:
    where, params = _filters(categories, req.tags)
    params.update(limit=req.limit, offset=req.offset)
    query = req.query.strip()
    if not query:
        rows = (await session.execute(text(f"""
            SELECT {ITEM_COLUMNS}, NULL::float AS score, count(*) OVER () AS total
            FROM catalog.search_docs d JOIN catalog.servers s ON s.id = d.server_id
            WHERE {where} ORDER BY {BROWSE_SORTS[req.sort]} LIMIT :limit OFFSET :offset"""), params)).mappings().all()
        return _items(rows)

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
    if mode in {"hybrid", "text", "trigram"}:
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
        f AS (SELECT server_id, sum(1.0 / (:rrf + r)) AS score FROM hits GROUP BY server_id)
        SELECT {ITEM_COLUMNS}, f.score::float AS score, count(*) OVER () AS total
        FROM f JOIN catalog.search_docs d ON d.server_id = f.server_id JOIN catalog.servers s ON s.id = f.server_id
        ORDER BY {SORTS[req.sort]} LIMIT :limit OFFSET :offset"""), params)).mappings().all()
    return _items(rows)


def _items(rows: Any) -> tuple[list[dict[str, Any]], int]:
    total = int(rows[0]["total"]) if rows else 0
    items = []
    for r in rows:
        item = dict(r)
        item.pop("total", None)
        item["tools"] = list(item["tools"] or [])
        items.append(item)
    return items, total
