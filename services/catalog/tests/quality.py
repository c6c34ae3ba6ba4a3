"""Loading the labelled corpus into the catalog and measuring recall@10 (shared by the quality
test; bench/search_quality.py does the same on its own set)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wemcp.catalog.embedding import Embedder
from wemcp.testkit.catalog import add_corpus

DATA = Path(__file__).parent / "data"


def corpus() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if line]


def queries() -> list[dict[str, Any]]:
    return json.loads((DATA / "queries.json").read_text(encoding="utf-8"))


async def load(sessions: Any, embedder: Embedder) -> dict[str, str]:
    """Insert the corpus as published servers and project them into B. Returns slug → package."""
    docs = corpus()
    rows = await add_corpus(sessions, embedder, docs, DATA / "corpus_vectors.npz")
    return {r.slug: d["package"] for r, d in zip(rows, docs, strict=True)}


async def recall_at_10(client: Any, slug_to_pkg: dict[str, str], mode: str) -> tuple[float, list[dict[str, Any]]]:
    per_query = []
    for q in queries():
        r = await client.post("/api/v1/servers/search", json={"query": q["q"], "page_size": 10, "mode": mode})
        assert r.status_code == 200, r.text
        got = [slug_to_pkg.get(i["slug"]) for i in r.json()["items"]]
        hit = len(set(got) & set(q["expected"])) / len(q["expected"])
        per_query.append({"q": q["q"], "recall": hit, "top": got[:3]})
    return sum(p["recall"] for p in per_query) / len(per_query), per_query
