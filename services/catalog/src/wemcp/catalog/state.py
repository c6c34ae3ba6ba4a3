"""Process-wide objects built in the service's start hook (event handlers have no request to read
them from): the embedder and the query-vector cache."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from wemcp.catalog.config import Settings
from wemcp.catalog.embedding import CachedQueries, Embedder, make_embedder
from wemcp.common.service import Runtime


@dataclass
class CatalogState:
    settings: Settings
    embedder: Embedder
    queries: CachedQueries


_state: CatalogState | None = None


def current() -> CatalogState:
    if _state is None:
        raise RuntimeError("catalog state is not initialised (the service's on_start hook did not run)")
    return _state


def catalog_settings(runtime_settings: object) -> Settings:
    if isinstance(runtime_settings, Settings):
        return runtime_settings
    # A plain ServiceSettings (tests of the shared runtime) still gets the catalog defaults.
    return Settings(**runtime_settings.model_dump(include=set(Settings.model_fields)))  # type: ignore[attr-defined]


async def on_start(runtime: Runtime) -> None:
    global _state
    from wemcp.catalog import text

    settings = catalog_settings(runtime.settings)
    embedder = make_embedder(settings)
    await asyncio.to_thread(text.warm_up)
    warm = getattr(embedder, "warm_up", None)
    if warm is not None:
        await asyncio.to_thread(warm)
    _state = CatalogState(settings, embedder, CachedQueries(embedder))
    runtime.extras["catalog"] = _state


async def on_stop(runtime: Runtime) -> None:
    state = runtime.extras.get("catalog")
    close = getattr(getattr(state, "embedder", None), "aclose", None)
    if close is not None:
        await close()
