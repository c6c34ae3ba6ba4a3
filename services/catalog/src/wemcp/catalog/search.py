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
``pg_trgm.word_similarity_threshold``) are set once per pooled connection (``repository.search.install_settings``),
so a search is one round trip; asyncpg prepares and caches each distinct statement per connection.
This module plans a search (terms, weights, which retrievers run); ``repository/search.py`` builds and
runs its statements.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import itertools
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.catalog.config import Settings
from wemcp.catalog.glossary import ZH_EN, translations
from wemcp.catalog.products import BY_NEED, products_for
from wemcp.catalog.repository import search as repository
from wemcp.catalog.schemas import SearchRequest
from wemcp.catalog.text import correctable, edits1, is_prefix_term, query_terms
from wemcp.common.logging import get_logger

_CJK = re.compile(r"[\u3400-\u9fff]")

log = get_logger("wemcp.catalog.search")

MAX_EXPANSIONS = 6  # indexed words an ASCII prefix expands to (the most frequent first)
# Chinese words of the glossary and of the products' needs that jieba does not keep whole (持续集成
# comes out as 持续, 集成): a query containing one also looks it up as a word
COMPOUNDS = tuple(sorted({w for w in (*ZH_EN, *BY_NEED) if len(w) >= 3 and _CJK.match(w)}, key=len, reverse=True))
MAX_PRODUCTS = 3  # product names a need word brings (the most mentioned first)
MAX_CORRECTIONS = 2  # indexed words one edit away that an unknown query word is corrected to


@dataclass
class TermStats:
    """Document frequencies of B's lexemes (enabled rows), for idf. Counting them reads every
    enabled document (1-2 s at 100k), so they are kept and recounted when stale: after a change this
    process made to B (``changed``, marked at commit) or once older than ``ttl`` seconds (changes
    other replicas made). A count that took less than ``sync_budget`` seconds (a small catalog) is
    redone inside the search that finds the statistics stale; a costlier one runs in the background,
    at most once per ``cost * backoff`` seconds, while searches use the previous statistics. A
    catalog of ``warm_min_docs`` documents or more is counted at start (``warm``), so its first search
    does not wait. A word unseen at the last count counts as rare (document frequency 0)."""

    ttl: float = 600.0
    sync_budget: float = 0.05
    backoff: float = 20.0
    warm_min_docs: int = 1000
    n_docs: int = 0
    avgdl: float = 1.0
    df: dict[str, int] = field(default_factory=dict)
    vocab: list[str] = field(default_factory=list)  # sorted ASCII words, for prefix expansion
    loaded_at: float = -math.inf
    cost: float = 0.0  # seconds the last count took
    dirty: bool = False  # this process changed B since the last count began
    plans: dict[tuple[Any, ...], tuple[TermPlan | None, bool]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _task: asyncio.Task[None] | None = None

    async def warm(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Counted at start. Kept only for a big catalog: a small one (an empty one, being filled) is
        counted again at its first search, which is cheap for it. By the number of documents, not the
        count's duration, which a loaded machine stretches."""
        await self.refresh(sessions)
        if self.n_docs < self.warm_min_docs:
            self.loaded_at = -math.inf

    def changed(self, session: AsyncSession) -> None:
        """``session`` wrote B: the statistics are stale once it commits."""
        sa_event.listen(session.sync_session, "after_commit", self._mark, once=True)

    def _mark(self, _session: object) -> None:
        self.dirty = True

    def stale(self) -> bool:
        return self.dirty or time.monotonic() - self.loaded_at > self.ttl

    async def ready(self, sessions: async_sessionmaker[AsyncSession]) -> TermStats:
        stale = self.stale()
        if self.loaded_at == -math.inf or (stale and self.cost < self.sync_budget):
            await self.refresh(sessions)
        elif (stale and (self._task is None or self._task.done())
              and time.monotonic() - self.loaded_at > self.cost * self.backoff):
            self._task = asyncio.create_task(self._background(sessions))
        return self

    async def _background(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        try:
            await self.refresh(sessions)
        except Exception as exc:  # the searches go on with the previous statistics; the next one retries
            log.warning("term_stats_refresh_failed", error=str(exc)[:300])

    async def refresh(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        async with self._lock:
            if self.loaded_at != -math.inf and not self.stale():
                return  # another caller counted while this one waited
            self.dirty = False  # a change committed from here on marks the next count
            started = time.monotonic()
            try:
                async with sessions() as s, s.begin():
                    n, avgdl, rows = await repository.term_stats(s)
            except BaseException:
                self.dirty = True
                raise
            self.df = {w: int(c) for w, c in rows}
            self.vocab = sorted(w for w in self.df if not _CJK.search(w))
            self.n_docs, self.avgdl = int(n), max(float(avgdl), 1.0)
            self.plans = {}
            self.loaded_at = time.monotonic()
            self.cost = self.loaded_at - started

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

    def products(self, term: str, translated: Iterable[str] = (),
                 translation_weight: float = 1.0) -> list[tuple[str, float]]:
        """The products known for the need ``term`` (or one of its glossary translations, at
        ``translation_weight``) names that some document mentions, the most mentioned first, at most
        ``MAX_PRODUCTS``: ``(name, discount)``."""
        found: dict[str, float] = {}
        for word, discount in itertools.chain([(term, 1.0)], ((x, translation_weight) for x in translated)):
            for p in products_for(word):
                if self.df.get(p, 0) > 0 and p != term:
                    found[p] = max(found.get(p, 0.0), discount)
        return sorted(found.items(), key=lambda kv: (-self.df[kv[0]], kv[0]))[:MAX_PRODUCTS]

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
                correction_weight: float = 0.0, product_weight: float = 0.0) -> list[dict[str, float]]:
    """One group per query word: the word and what stands in for it (its prefix expansions, its
    corrections when it is misspelled, the glossary's translations into the other language,
    ``glossary.py``, the names of products known for the need it names, ``products.py``; a Chinese
    bigram inside a longer query word joins that word's group), each term weighted by its idf, the
    stand-ins discounted and only those some document had at the last count."""
    terms = query_terms(query)
    terms += [k for k in COMPOUNDS if k in query and k not in terms]
    words = [w for w in terms if len(w) > 2 and _CJK.match(w)]
    groups: list[dict[str, float]] = []
    inside: list[tuple[str, dict[str, float]]] = []  # a bigram's group, the longer word it is part of
    for t in terms:
        g = {t: stats.idf(t)}

        def add(term: str, weight: float, g: dict[str, float] = g) -> None:
            # a stand-in no document had at the last count would only cost the query a term to score
            if stats.df.get(term, 0) > 0:
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
        translated = translations(t) if translation_weight > 0 else []
        for w in translated:
            add(w, translation_weight * stats.idf(w))
        if product_weight > 0:
            for w, discount in stats.products(t, translated, translation_weight):
                add(w, product_weight * discount * stats.idf(w))
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
                         settings.correction_weight, settings.product_weight)
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
           settings.product_weight, settings.text_candidate_budget)
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
            parts.append(repository.text_retriever(where, params, plan.rare, plan.common, settings.text_scan_cap))
    # Trigrams catch misspelled *names*: short Latin-script queries with a word no document has
    # (a query whose words are all known is served by the full text). Chinese text has no useful
    # trigrams here and long queries are sentences (full-text and vector handle both), and the
    # trigram scan is the slowest retriever at 100k (measured), so it runs only where it can help.
    name_like = len(query) >= 3 and len(query.split()) <= 4 and not _CJK.search(query)
    if mode == "trigram" or (mode in {"hybrid", "text"} and name_like and unknown):
        parts.append(repository.trigram_retriever(where, params, query))
    if mode in {"hybrid", "vector"} and qvec is not None:
        parts.append(repository.vector_retriever(where, params, vector_literal(tuple(qvec)),
                                                 settings.vector_max_distance))
    return parts


async def search(session: AsyncSession, req: SearchRequest, settings: Settings, *,
                 qvec: list[float] | None, categories: list[str] | None,
                 stats: TermStats | None = None) -> tuple[list[dict[str, Any]], int]:
    where, params = repository.filters(categories, req.tags, req.healthy)
    params.update(limit=req.limit, offset=req.offset)
    query = req.query.strip()
    if not query:
        rows, total = await repository.browse(session, where, req.sort, params)
        return _items(rows, total)

    parts = _retrievers(query, req.mode, settings, stats or TermStats(), qvec, where, params)
    if not parts:
        return [], 0
    params.update(wt=settings.text_weight, wv=settings.vector_weight, wg=settings.trigram_weight,
                  wg2=settings.trigram_weight_no_words,
                  wr=settings.rank_weight, rrf=settings.rrf_k, vd=settings.vector_max_distance)
    rows = await repository.ranked(session, parts, req.sort, params)
    total = int(rows[0]["total"]) if rows else 0
    if not rows and req.offset:
        total = await repository.count_hits(session, parts, params)
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
    where, params = repository.filters(None, [])
    parts = _retrievers(query.strip(), mode, settings, stats, qvec, where, params)
    if not parts:
        return []
    rows = await repository.hits(session, parts, params)
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
