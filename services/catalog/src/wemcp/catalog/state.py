"""Process-wide objects built in the service's start hook and kept in ``runtime.extras["catalog"]``:
the settings, the embedder, the query-vector cache and the package resolver. Request handlers reach them through
``request.app.state.runtime``; event handlers get the runtime as their third argument. No
module-level state: two catalogs in one process (tests, benchmarks) never share an embedder."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from wemcp.catalog.config import Settings
from wemcp.catalog.embedding import CachedQueries, Embedder, make_embedder
from wemcp.catalog.repository.search import install_settings
from wemcp.catalog.resolve import Resolver
from wemcp.catalog.search import TermStats
from wemcp.common.db import make_engine
from wemcp.common.logging import get_logger
from wemcp.common.service import Runtime

log = get_logger("wemcp.catalog.state")

KEY = "catalog"


@dataclass
class CatalogState:
    settings: Settings
    embedder: Embedder
    queries: CachedQueries
    resolver: Resolver
    terms: TermStats
    # Search's own small pool: autocommit (one statement, no BEGIN/COMMIT round trips) and no ping
    # at checkout; a search that meets a connection the database closed is retried once
    # (``search.run``). Measured at 10k: CPU per search p50 6.1 → 5.0 ms (bench/README.md).
    search_engine: AsyncEngine | None = None
    search_sessions: async_sessionmaker[AsyncSession] | None = None


def of(runtime: Runtime) -> CatalogState:
    state = runtime.extras.get(KEY)
    if state is None:
        raise RuntimeError("catalog state is not initialised (the service's on_start hook did not run)")
    return state


def from_request(request: Any) -> CatalogState:
    return of(request.app.state.runtime)


def catalog_settings(runtime_settings: object) -> Settings:
    if isinstance(runtime_settings, Settings):
        return runtime_settings
    # A plain ServiceSettings (tests of the shared runtime) still gets the catalog defaults.
    return Settings(**runtime_settings.model_dump(include=set(Settings.model_fields)))  # type: ignore[attr-defined]


async def on_start(runtime: Runtime) -> None:
    from wemcp.catalog import text

    settings = catalog_settings(runtime.settings)
    embedder = make_embedder(settings)
    await asyncio.to_thread(text.warm_up)
    warm = getattr(embedder, "warm_up", None)
    if warm is not None:
        await asyncio.to_thread(warm)
    resolver = Resolver(settings.egress, npm_registry=settings.npm_registry, pypi_url=settings.pypi_url,
                        ttl=settings.resolve_cache_seconds, timeout=settings.resolve_timeout_seconds)
    search_engine = search_sessions = None
    if runtime.engine is not None:
        install_settings(runtime.engine, settings)
        search_engine = make_engine(settings.database_url, pool_size=settings.search_pool_size, pre_ping=False,
                                    isolation_level="AUTOCOMMIT")
        install_settings(search_engine, settings)
        search_sessions = async_sessionmaker(search_engine, expire_on_commit=False)
    terms = TermStats(ttl=settings.term_stats_seconds, sync_budget=settings.term_stats_inline_seconds)
    runtime.extras[KEY] = CatalogState(settings, embedder, CachedQueries(embedder), resolver, terms, search_engine,
                                       search_sessions)
    if runtime.sessions is not None:
        try:
            await terms.warm(runtime.sessions)
        except Exception as exc:  # e.g. not migrated yet: the first search counts them
            log.warning("term_stats_warm_failed", error=str(exc)[:300])


async def on_stop(runtime: Runtime) -> None:
    state = runtime.extras.pop(KEY, None)
    if state is not None:
        state.terms.close()
        await state.resolver.aclose()
        if state.search_engine is not None:
            await state.search_engine.dispose()
    close = getattr(getattr(state, "embedder", None), "aclose", None)
    if close is not None:
        await close()
