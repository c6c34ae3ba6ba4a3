"""Search quality on real MCP server descriptions (tests/data: 259 npm/PyPI summaries, 79 labelled
queries in Chinese and English, with typos): hybrid must beat text-only and vector-only."""

from __future__ import annotations

from services.catalog.tests.quality import load, recall_at_10
from wemcp.catalog.state import of


async def test_hybrid_beats_text_only_and_vector_only(catalog):
    app, c = catalog
    slug_to_pkg = await load(app.state.runtime.sessions, of(app.state.runtime).embedder)
    results = {}
    for mode in ("fulltext", "trigram", "text", "vector", "hybrid"):
        results[mode], per_query = await recall_at_10(c, slug_to_pkg, mode)
        if mode == "hybrid":
            misses = [p for p in per_query if p["recall"] < 0.5]
    print("\nrecall@10 over", len(per_query), "queries:",
          ", ".join(f"{m}={v:.3f}" for m, v in results.items()))
    print("hybrid's weakest queries:", [(p["q"], round(p["recall"], 2)) for p in misses][:10])
    assert results["hybrid"] > results["text"], results
    assert results["hybrid"] > results["vector"], results
    assert results["hybrid"] >= 0.7, results
