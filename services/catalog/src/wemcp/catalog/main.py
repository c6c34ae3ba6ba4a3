"""Composition root of the catalog service: `wemcp-catalog` serves its HTTP API and runs its consumers
(the catalog worker: table B's only writer) and outbox relay in one process."""

from __future__ import annotations

from fastapi import FastAPI

from wemcp.catalog.announcements import on_announcement_changed
from wemcp.catalog.api import internal_router, registry_router, router
from wemcp.catalog.config import Settings, get_settings
from wemcp.catalog.handlers import SUBSCRIPTIONS_EVENTS
from wemcp.catalog.models import bus_tables, probe_receipts
from wemcp.catalog.names_api import router as names_router
from wemcp.catalog.review import admin_router
from wemcp.catalog.state import of, on_start, on_stop
from wemcp.common.bodylimit import BodyLimitMiddleware
from wemcp.common.events.goods import AnnouncementChanged
from wemcp.common.service import ServiceSpec, run_service

SUBSCRIPTIONS = [
    *SUBSCRIPTIONS_EVENTS,
    # goods' announcements, projected into the news feed
    (AnnouncementChanged, on_announcement_changed),
]


def _limit_for(settings: Settings, path: str) -> int | None:
    if path == "/api/v1/servers/archive":
        return settings.max_archive_bytes + 64 * 1024  # room for the manifest and multipart framing
    if path.startswith("/api/v1/") or path.startswith("/internal/"):
        return settings.max_json_body_bytes
    return None


def _configure(app: FastAPI) -> None:
    # build_app runs after the runtime opened (on_start put the catalog's state in its extras)
    def limit_for(method: str, path: str) -> int | None:
        return _limit_for(of(app.state.runtime).settings, path)

    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)


SPEC = ServiceSpec(name="catalog", routers=[router, names_router, admin_router, registry_router, internal_router],
                   tables=bus_tables, probe_receipts=probe_receipts, subscriptions=SUBSCRIPTIONS,
                   on_start=[on_start], on_stop=[on_stop], configure_app=_configure)


def run() -> int:
    return run_service(SPEC, get_settings)


if __name__ == "__main__":
    raise SystemExit(run())
