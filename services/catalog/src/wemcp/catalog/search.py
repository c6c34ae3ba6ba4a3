"""Hybrid search over table B in one SQL statement: three retrievers, each filtered (enabled,
category, tags) inside its own query so the indexes do the work, fused by a weighted score.

- **Full text, scored like BM25**: the query's terms (jieba words, Chinese character bigrams, ASCII
  words; ASCII words of 3+ letters also expanded to the indexed words they begin; the glossary's
  words in the other language, ``glossary.py``) are looked up in
  ``tsv`` (GIN). Each candidate scores ``sum(idf(t) * tf'(k1 + 1) / (tf' + k1 (1 - b + b dl/avgdl)))``
  where ``tf'`` is 1 plus a boost when the term is in the title/name (weight A) or in the tools and
  tags (weight B), ``dl`` the document's number of distinct lexemes. ``idf`` and ``avgdl`` come
  from :class:`TermStats` (document frequencies of B's lexemes, cached in the process). A Latin
  word no document has (a misspelling) is corrected to the indexed words one edit away
  (:meth:`TermStats.corrections`). In a large catalog the candidates are bounded
  (:func:`candidate_tsqueries`: rare words select on their own within a document budget, common
  words only together, capped), then cut to the best ``text_prefilter`` by Postgres's own
  ``ts_rank`` (C code, field weights, no idf) before the BM25 scoring (SQL, per term).
- **Trigram** similarity on names (``word_similarity``, GIN), only for short Latin-script queries
  with a word no document has: it catches misspelled names.
- **Vector**: cosine distance to the query's embedding through the HNSW index with pgvector's
  iterative scan, so filters never starve the candidate list.

Fusion (weights tuned on the tuning half of bench/search_set, see bench/search_quality.py)::

    score = w_text * bm25 / max(bm25) + w_vector * max(0, 1 - distance / max_distance)
          + w_trigram * similarity + w_rank * sum(1 / (rrf_k + rank))

where ``w_trigram`` is ``trigram_weight_no_words`` when the full-text retriever found nothing (a
misspelled name that no correction reaches: only the trigram and vector retrievers can find it).

The connection-level settings the retrievers need (``hnsw.ef_search``, ``hnsw.iterative_scan``,
``pg_trgm.word_similarity_threshold``) are set once per pooled connection (:func:`install_settings`),
so a search is one round trip; asyncpg prepares and caches each distinct statement per connection.
"""

from __future__ import annotations

# ruff: noqa: S608  -- the f-strings splice fixed SQL fragments chosen from constants (sort
# orders, filters, retriever lists); every value from a request is a bound parameter.
import asyncio
import bisect
import functools
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from wemcp.catalog.config import Settings
from wemcp.catalog.glossary import translations
from wemcp.catalog.schemas import SearchRequest
from wemcp.catalog.text import correctable, edits1, is_prefix_term, query_terms

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

MAX_EXPANSIONS = 6  # indexed words an ASCII prefix expands to (the most frequent first)
MAX_CORRECTIONS = 2  # indexed words one edit away that an unknown query word is corrected to


def install_settings(engine: AsyncEngine, settings: Settings) -> None:
    """Set the retrievers' session settings once on every pooled connection (at its first checkout),
    on the raw asyncpg connection outside any transaction, so they survive the pool's rollbacks."""
    # random_page_cost 1.1 (SSD): at the default 4 the planner scans B sequentially for a full-text
    # query matching ~10 % of it, testing every row's tsvector (EXPLAIN ANALYZE at 10k: 18 → 8 ms).
    stmt = (f"SET hnsw.ef_search = {max(settings.search_candidates, 40):d}; "
            f"SET hnsw.iterative_scan = relaxed_order; SET random_page_cost = 1.1; "
            f"SET pg_trgm.word_similarity_threshold = {float(settings.trigram_threshold):.4f}")

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if record.info.get("catalog_search") != stmt:
            dbapi_conn.run_async(lambda conn: conn.execute(stmt))
            record.info["catalog_search"] = stmt


@dataclass
class TermStats:
    """Document frequencies of B's lexemes (enabled rows), for idf. Loaded at the first search and
    refreshed in the background once older than ``ttl`` seconds: idf needs to be about right, not
    exact, and counting 100k documents' lexemes takes seconds. A word unseen at the last refresh
    counts as rare (document frequency 0)."""

    ttl: float = 600.0
    n_docs: int = 0
    avgdl: float = 1.0
    df: dict[str, int] = field(default_factory=dict)
    vocab: list[str] = field(default_factory=list)  # sorted ASCII words, for prefix expansion
    loaded_at: float = -math.inf
    plans: dict[tuple[Any, ...], tuple[TermPlan | None, bool]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _task: asyncio.Task[None] | None = None

    async def ready(self, sessions: async_sessionmaker[AsyncSession]) -> TermStats:
        if self.loaded_at == -math.inf:
            await self.refresh(sessions)
        elif time.monotonic() - self.loaded_at > self.ttl and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self.refresh(sessions))
        return self

    async def refresh(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        async with self._lock:
            if time.monotonic() - self.loaded_at <= self.ttl:
                return  # another caller refreshed while this one waited
            async with sessions() as s, s.begin():
                n, avgdl = (await s.execute(text(
                    "SELECT count(*), COALESCE(avg(length(tsv)), 1) FROM catalog.search_docs WHERE enabled"))).one()
                rows = (await s.execute(text(
                    "SELECT word, ndoc FROM ts_stat('SELECT tsv FROM catalog.search_docs WHERE enabled')"))).all()
            self.df = {w: int(c) for w, c in rows}
            self.vocab = sorted(w for w in self.df if not _CJK.search(w))
            self.n_docs, self.avgdl = int(n), max(float(avgdl), 1.0)
            self.plans = {}
            self.loaded_at = time.monotonic()

    def close(self) -> None:
        """Stop a background refresh still running (the service is stopping)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def idf(self, term: str) -> float:
        df = self.df.get(term, 0)
        return math.log(1 + (self.n_docs - df + 0.5) / (df + 0.5))

    def expansions(self, prefix: str) -> list[str]:
        i = bisect.bisect_left(self.vocab, prefix)
        found: list[str] = []
        while i < len(self.vocab) and self.vocab[i].startswith(prefix) and len(found) < 200:
            if self.vocab[i] != prefix:
                found.append(self.vocab[i])
            i += 1
        found.sort(key=lambda w: -self.df.get(w, 0))
        return found[:MAX_EXPANSIONS]

    def corrections(self, term: str) -> list[str]:
        """A word no document has (a misspelling, e.g. ``wether``), corrected to the indexed words
        one edit away (``weather``), the most frequent first; none for a known word."""
        if term in self.df or not correctable(term):
            return []
        found = [w for w in edits1(term) if w in self.df]
        found.sort(key=lambda w: (-self.df[w], w))
        return found[:MAX_CORRECTIONS]


@dataclass
class TermPlan:
    """What the full-text retriever looks up: every term with its BM25 weight (each scores every
    candidate) and the tsqueries that select the candidates: ``rare`` (all its matches) and
    ``common`` (matches not in ``rare``, at most ``text_scan_cap`` of them); either may be empty."""

    terms: list[str]
    weights: list[float]
    rare: str
    common: str


def term_groups(query: str, stats: TermStats, prefix_weight: float, translation_weight: float = 0.0,
                correction_weight: float = 0.0) -> list[dict[str, float]]:
    """One group per query word: the word and what stands in for it (its prefix expansions, its
    corrections when it is misspelled, the glossary's translations into the other language,
    ``glossary.py``; a Chinese bigram inside a longer query word joins that word's group), each
    term weighted by its idf, the stand-ins discounted."""
    terms = query_terms(query)
    words = [w for w in terms if len(w) > 2 and _CJK.match(w)]
    groups: list[dict[str, float]] = []
    inside: list[tuple[str, dict[str, float]]] = []  # a bigram's group, the longer word it is part of
    for t in terms:
        g = {t: stats.idf(t)}

        def add(term: str, weight: float, g: dict[str, float] = g) -> None:
            g[term] = max(g.get(term, 0.0), weight)

        if is_prefix_term(t):
            for w in stats.expansions(t):
                add(w, prefix_weight * stats.idf(w))
        if correction_weight > 0:
            # a corrected word stands in for the query word with what it would bring itself: its
            # prefix expansions (``postgress`` → postgres → postgresql) and its translations
            # (``xiaohongsu`` → xiaohongshu → 小红书), each at the product of the discounts
            for w in stats.corrections(t):
                add(w, correction_weight * stats.idf(w))
                for e in stats.expansions(w) if is_prefix_term(w) else ():
                    add(e, correction_weight * prefix_weight * stats.idf(e))
                for x in translations(w) if translation_weight > 0 else ():
                    add(x, correction_weight * translation_weight * stats.idf(x))
        if translation_weight > 0:
            for w in translations(t):
                add(w, translation_weight * stats.idf(w))
        home = next((w for w in words if len(t) == 2 and _CJK.match(t) and t in w), None)
        if home is None:
            groups.append(g)
        else:
            inside.append((home, g))
    for home, g in inside:
        target = next(h for h in groups if home in h)
        for term, weight in g.items():
            target[term] = max(target.get(term, 0.0), weight)
    return groups


MAX_COMMON_GROUPS = 6  # common words that take part in selecting candidates (the rarest of them)


def candidate_tsqueries(groups: list[dict[str, float]], stats: TermStats, budget: int) -> tuple[str, str]:
    """The tsqueries that select full-text candidates, ``(rare, common)``: the retriever's cost is
    fetching and ranking every matching row, so a query of common words must not select a large
    share of a big catalog (measured at 100k: 27k rows, 130 ms).

    Groups (a word and its stand-ins) are taken rarest first while the sum of their document
    frequencies stays within ``budget``; each selects on its own (``rare``). The remaining, common
    groups select together (``common``): a document must have both of two, all but one of three
    or more; a single common word selects only when there is no rare one. In a catalog no larger
    than the budget every group is rare."""

    def df(g: dict[str, float]) -> int:
        return min(stats.n_docs, sum(stats.df.get(t, 0) for t in g))

    def expr(g: dict[str, float]) -> str:
        # a word unseen at the last count of the statistics (a server published since) may be in
        # documents now: it selects like a rare word (looking up a missing lexeme costs nothing)
        return next(iter(g)) if len(g) == 1 else "(" + " | ".join(g) + ")"

    found = sorted(groups, key=df)
    if stats.n_docs <= budget:
        return " | ".join(expr(g) for g in found), ""
    rare: list[dict[str, float]] = []
    used = 0
    for g in found:
        if used + df(g) > budget:
            break
        rare.append(g)
        used += df(g)
    common = found[len(rare):][:MAX_COMMON_GROUPS]
    if len(common) <= 2:
        clauses = [" & ".join(expr(g) for g in common)] if common and (len(common) == 2 or not rare) else []
    else:
        clauses = ["(" + " & ".join(expr(g) for j, g in enumerate(common) if j != skip) + ")"
                   for skip in range(len(common))]
    return " | ".join(expr(g) for g in rare), " | ".join(clauses)


def plan_terms(query: str, stats: TermStats, settings: Settings) -> TermPlan | None:
    groups = term_groups(query, stats, settings.prefix_weight, settings.translation_weight,
                         settings.correction_weight)
    weights: dict[str, float] = {}
    for g in groups:
        for t, w in g.items():
            weights[t] = max(weights.get(t, 0.0), w)
    rare, common = candidate_tsqueries(groups, stats, settings.text_candidate_budget)
    if not rare and not common:
        return None  # the query has no terms
    return TermPlan(list(weights), list(weights.values()), rare, common)


MAX_CACHED_PLANS = 4096


def cached_plan(query: str, stats: TermStats, settings: Settings) -> tuple[TermPlan | None, bool]:
    """:func:`plan_terms` and :func:`has_unknown_word` of a query, cached with the statistics they
    were made from (a popular query costs jieba, prefix expansion and corrections once)."""
    key = (query, settings.prefix_weight, settings.translation_weight, settings.correction_weight,
           settings.text_candidate_budget)
    hit = stats.plans.get(key)
    if hit is None:
        if len(stats.plans) >= MAX_CACHED_PLANS:
            stats.plans.clear()
        hit = stats.plans[key] = (plan_terms(query, stats, settings), has_unknown_word(query, stats))
    return hit


@functools.lru_cache(maxsize=2048)
def vector_literal(vec: tuple[float, ...]) -> str:
    """pgvector's text form of a query vector (formatting 384 floats costs ~0.5 ms; cached)."""
    return "[" + ",".join(map(repr, vec)) + "]"


def has_unknown_word(query: str, stats: TermStats) -> bool:
    """Whether a word of the query is in no document and the full text has nothing to stand in for
    it: no correction one edit away, no prefix expansion (a name misspelled twice, a partial name
    inside a word). Those are what the trigram retriever is for."""
    terms = query_terms(query)
    return not terms or any(
        stats.df.get(t, 0) == 0 and not stats.corrections(t) and not (is_prefix_term(t) and stats.expansions(t))
        for t in terms
    )


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


def _retrievers(query: str, mode: str, settings: Settings, stats: TermStats, qvec: list[float] | None,
                where: str, params: dict[str, Any]) -> list[str]:
    """The candidate lists as SQL (columns: server_id, src, r, raw); fills ``params``."""
    k = settings.search_candidates
    params["k"] = k
    parts: list[str] = []
    plan, unknown = cached_plan(query, stats, settings) if mode != "vector" else (None, False)
    if mode in {"hybrid", "text", "fulltext"}:
        if plan is not None:
            params.update(terms=plan.terms, tw=plan.weights, pre=settings.text_prefilter,
                          tsr=" | ".join(t for t in plan.terms if stats.df.get(t, 0) > 0) or plan.terms[0],
                          k1=settings.bm25_k1, b=settings.bm25_b, avgdl=stats.avgdl,
                          wa=settings.title_boost, wb=settings.tools_boost)
            sources = []
            if plan.rare:
                params["rare"] = plan.rare
                sources.append(f"""SELECT d.server_id, d.tsv FROM catalog.search_docs d
                                   WHERE d.tsv @@ to_tsquery('simple', :rare) AND {where}""")
            if plan.common:
                params.update(common=plan.common, cap=settings.text_scan_cap)
                not_rare = "AND NOT d.tsv @@ to_tsquery('simple', :rare)" if plan.rare else ""
                sources.append(f"""(SELECT d.server_id, d.tsv FROM catalog.search_docs d
                                    WHERE d.tsv @@ to_tsquery('simple', :common) {not_rare} AND {where}
                                    LIMIT :cap)""")
            parts.append(f"""(SELECT server_id, 't' AS src, row_number() OVER (ORDER BY raw DESC, server_id) AS r, raw
              FROM (SELECT d.server_id, (SELECT sum(x.w * x.tf * (x.k1 + 1) / (x.tf + x.k1 * (1 - x.b + x.b * x.dl)))
                                         FROM (SELECT qt.w, qt.k1, qt.b, length(d.tsv) / qt.avgdl AS dl,
                                                      CASE WHEN d.tsv @@ qt.q THEN 1 + qt.wa * (d.tsv @@ qt.qa)::int
                                                           + qt.wb * (d.tsv @@ qt.qb)::int ELSE 0 END AS tf
                                               FROM qt) x) AS raw
                    FROM (SELECT d.server_id, d.tsv FROM ({" UNION ALL ".join(sources)}) d
                          ORDER BY ts_rank('{{0.1, 0.3, 0.6, 1.0}}', d.tsv, to_tsquery('simple', :tsr)) DESC
                          LIMIT :pre) d
                    ORDER BY raw DESC, d.server_id LIMIT :k) t)""")
    # Trigrams catch misspelled *names*: short Latin-script queries with a word no document has
    # (a query whose words are all known is served by the full text). Chinese text has no useful
    # trigrams here and long queries are sentences (full-text and vector handle both), and the
    # trigram scan is the slowest retriever at 100k (measured), so it runs only where it can help.
    name_like = len(query) >= 3 and len(query.split()) <= 4 and not _CJK.search(query)
    if mode == "trigram" or (mode in {"hybrid", "text"} and name_like and unknown):
        params["q"] = query.lower()
        parts.append(f"""(SELECT server_id, 'g' AS src, row_number() OVER (ORDER BY raw DESC, server_id) AS r, raw
            FROM (SELECT d.server_id, word_similarity(:q, d.name_trgm)::float8 AS raw
                  FROM catalog.search_docs d WHERE :q <% d.name_trgm AND {where}
                  ORDER BY raw DESC, d.server_id LIMIT :k) g)""")
    if mode in {"hybrid", "vector"} and qvec is not None:
        params.update(qv=vector_literal(tuple(qvec)), maxd=settings.vector_max_distance)
        parts.append(f"""(SELECT server_id, 'v' AS src, row_number() OVER (ORDER BY raw, server_id) AS r, raw FROM (
              SELECT d.server_id, (d.embedding <=> CAST(:qv AS vector))::float8 AS raw
              FROM catalog.search_docs d WHERE d.embedding IS NOT NULL AND {where}
              ORDER BY d.embedding <=> CAST(:qv AS vector) LIMIT :k) v
            WHERE raw <= CAST(:maxd AS float8))""")
    return parts


_TERMS_CTE = """qt AS MATERIALIZED (
    SELECT to_tsquery('simple', t) AS q, to_tsquery('simple', t || '\\:A') AS qa,
           to_tsquery('simple', t || '\\:B') AS qb, w, CAST(:k1 AS float8) AS k1, CAST(:b AS float8) AS b,
           CAST(:avgdl AS float8) AS avgdl, CAST(:wa AS float8) AS wa, CAST(:wb AS float8) AS wb
    FROM unnest(CAST(:terms AS text[]), CAST(:tw AS float8[])) AS x(t, w))"""


def _with(params: dict[str, Any], union: str) -> str:
    return ("WITH " + (_TERMS_CTE + ", " if "terms" in params else "")) + f"hits AS ({union})"


async def search(session: AsyncSession, req: SearchRequest, settings: Settings, *,
                 qvec: list[float] | None, categories: list[str] | None,
                 stats: TermStats | None = None) -> tuple[list[dict[str, Any]], int]:
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

    parts = _retrievers(query, req.mode, settings, stats or TermStats(), qvec, where, params)
    if not parts:
        return [], 0
    params.update(wt=settings.text_weight, wv=settings.vector_weight, wg=settings.trigram_weight,
                  wg2=settings.trigram_weight_no_words,
                  wr=settings.rank_weight, rrf=settings.rrf_k, vd=settings.vector_max_distance)
    union = " UNION ALL ".join(parts)
    rows = (await session.execute(text(f"""
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
                        row_number() OVER (ORDER BY {SORTS[req.sort]}) AS pos
                 FROM f JOIN catalog.search_docs d ON d.server_id = f.server_id
                 ORDER BY {SORTS[req.sort]} LIMIT :limit OFFSET :offset)
        SELECT {ITEM_COLUMNS}, page.score::float AS score, page.total
        FROM page JOIN catalog.servers s ON s.id = page.server_id ORDER BY page.pos"""), params)).mappings().all()
    total = int(rows[0]["total"]) if rows else 0
    if not rows and req.offset:
        union = " UNION ALL ".join(parts)
        total = (await session.execute(text(f"{_with(params, union)} SELECT count(DISTINCT server_id) FROM hits"),
                                       params)).scalar_one()
    return _items(rows, total)


async def run(sessions: async_sessionmaker[AsyncSession], req: SearchRequest, settings: Settings, *,
              qvec: list[float] | None, stats: TermStats | None,
              categories_of: Callable[[AsyncSession, str], Awaitable[list[str]]]) -> tuple[list[dict[str, Any]], int]:
    """:func:`search` on a session of ``sessions`` (the catalog's search pool: autocommit, no ping at
    checkout). A connection the database closed since its last use (a restart) fails the first
    statement; the pool then drops every connection older than that failure, and the search, a
    read, runs once more on a fresh one. Any other error is the caller's."""
    for attempt in (1, 2):
        try:
            async with sessions() as s:
                cats = await categories_of(s, req.category) if req.category else None
                return await search(s, req, settings, qvec=qvec, categories=cats, stats=stats)
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise
    raise AssertionError("unreachable")


async def candidates(session: AsyncSession, query: str, mode: str, settings: Settings, stats: TermStats,
                     qvec: list[float] | None) -> list[tuple[str, str, int, float]]:
    """Each retriever's candidate list, unfused: (src, server_id, rank, raw score). For tuning the
    fusion offline (bench/search_quality.py --tune); the same SQL as :func:`search`."""
    where, params = _filters(None, [])
    parts = _retrievers(query.strip(), mode, settings, stats, qvec, where, params)
    if not parts:
        return []
    rows = (await session.execute(text(f"{_with(params, ' UNION ALL '.join(parts))} "
                                       "SELECT src, server_id::text, r, raw FROM hits"), params)).all()
    return [(r[0], r[1], int(r[2]), float(r[3])) for r in rows]


def fuse(lists: list[tuple[str, str, int, float]], *, wt: float, wv: float, wg: float, wg2: float, wr: float,
         rrf: float, vd: float) -> list[str]:
    """:func:`search`'s fusion in Python (same formula), for tuning: ids, best first."""
    max_t = max((raw for src, _, _, raw in lists if src == "t"), default=0.0)
    if not any(src == "t" for src, _, _, _ in lists):
        wg = wg2
    score: dict[str, float] = {}
    for src, sid, r, raw in lists:
        if src == "v" and raw > vd:
            continue
        x = (raw / max_t if max_t else 0.0) if src == "t" else max(0.0, 1 - raw / vd) if src == "v" else raw
        w = wt if src == "t" else wv if src == "v" else wg
        score[sid] = score.get(sid, 0.0) + w * x + wr / (rrf + r)
    return sorted(score, key=lambda s: (-score[s], s))


def _items(rows: Any, total: int) -> tuple[list[dict[str, Any]], int]:
    items = []
    for r in rows:
        item = dict(r)
        item.pop("total", None)
        item["tools"] = list(item["tools"] or [])
        items.append(item)
    return items, total
