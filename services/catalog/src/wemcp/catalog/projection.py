"""Table B's row for a server, built from table A. Used only by the event handlers."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.catalog.embedding import Embedder
from wemcp.catalog.models import Server
from wemcp.catalog.repository import db
from wemcp.catalog.repository import projection as repository
from wemcp.catalog.text import index_text, trigram_text


def embed_text(server: Server) -> str:
    """What the vector represents: name, title, description and tools (names and descriptions)."""
    tools = "; ".join(f"{t.get('name', '')}: {(t.get('description') or '')[:200]}" for t in (server.tools or [])[:30])
    tail = server.name.split("/")[-1]
    return f"{server.title} ({tail}). {server.description[:1500]} Tools: {tools}"[:4000]


def _tools_text(server: Server) -> str:
    return " ".join(f"{t.get('name', '')} {(t.get('description') or '')[:300]}" for t in (server.tools or [])[:50])


async def project(session: AsyncSession, server: Server, embedder: Embedder | None, *,
                  vector: list[float] | None = None) -> None:
    """Upsert B from A. Re-embeds only when the embedded text changed (redeploys of the same
    version cost no model call)."""
    etext = embed_text(server)
    ehash = hashlib.sha256(etext.encode()).hexdigest()
    current = await repository.embedded_text_hash(session, server.id)
    values: dict[str, Any] = {
        "server_id": server.id,
        "enabled": server.status != "disabled",
        "tsv": repository.weighted_tsv(index_text(server.title, server.slug, server.name),
                                       index_text(_tools_text(server), " ".join(server.tags or [])),
                                       index_text(server.description)),
        "name_trgm": trigram_text(server.slug, server.name, server.title),
        "category": server.category,
        "tags": list(server.tags or []),
        "sort_name": (server.title or server.slug).lower()[:200],
        "popularity": int(server.calls or 0) + 10 * int(server.stars or 0),
        "featured": bool(server.featured),
        "health": server.health_status,
        "published_at": server.published_at or db.now(),
        "updated_at": db.now(),
    }
    if vector is not None:
        values["embedding"], values["embedded_text_hash"] = vector, ehash
    elif current != ehash and embedder is not None:
        values["embedding"] = (await embedder.passages([etext]))[0]
        values["embedded_text_hash"] = ehash
    await repository.put_search_doc(session, values)


async def set_enabled_from_a(session: AsyncSession, server_id: Any) -> bool | None:
    """B.enabled follows A's status. Reading A (not the event) makes the disabled/enabled consumers
    order-independent: whichever runs last writes the current truth."""
    status = await repository.server_status(session, server_id)
    if status is None:
        return None
    enabled = status != "disabled"
    await repository.set_enabled(session, server_id, enabled)
    return enabled


def popularity_due(total: int, added: int) -> bool:
    """Whether B's popularity should follow A's call counter after ``added`` calls brought it to
    ``total``. Exact up to 100 calls, then every ~1 %: B's popularity column is indexed, so each
    write is a non-HOT update that inserts into every index of B (HNSW, GIN) — per call that would
    bloat the search table; this way B is written ~100 times per doubling of the count while the sort
    order stays within 1 % of the truth. ``project`` writes the exact value whenever it runs."""
    step = 1 << max(0, (total // 100).bit_length() - 1)  # a power of two <= total / 100: fixed per doubling
    return total // step != (total - added) // step


async def add_calls(session: AsyncSession, counts: dict[str, int]) -> dict[str, int]:
    """Add ``counts[slug]`` calls to A's counters, and to B's popularity where due, in one statement
    each whatever the number of servers. The rows are locked in slug order first, so two
    transactions adding to the same servers (two catalog processes) wait for each other instead of
    deadlocking. Returns the new totals by server id (unknown slugs are skipped)."""
    if not counts:
        return {}
    slugs = sorted(counts)
    rows = await repository.add_calls(session, slugs, [counts[s] for s in slugs])
    due = [(server_id, int(total) + 10 * int(stars or 0)) for server_id, total, stars, n in rows
           if popularity_due(int(total), int(n))]
    if due:
        await repository.set_popularity(session, [d[0] for d in due], [d[1] for d in due])
    return {str(server_id): int(total) for server_id, total, _, _ in rows}
