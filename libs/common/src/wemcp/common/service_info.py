"""``GET /api/v1/services/<name>``: what a service is and which events it consumes, for operators
and for the gateway's routing test."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from wemcp.common.bus import Subscription, consumer_name

if TYPE_CHECKING:
    from wemcp.common.service import ServiceSpec


def service_info_router(spec: ServiceSpec) -> APIRouter:
    router = APIRouter(prefix="/api/v1/services", tags=["services"])

    @router.get(f"/{spec.name}", summary=f"About the {spec.name} service")
    async def about(request: Request) -> dict[str, Any]:
        runtime = request.app.state.runtime
        return {
            "service": spec.name,
            "title": spec.title,
            "version": spec.version,
            "consumes": [{"subject": sub.event.subject,
                          "durable": sub.durable or consumer_name(spec.name, sub.event),
                          "max_workers": sub.max_workers}
                         for sub in (s if isinstance(s, Subscription) else Subscription(*s)
                                     for s in spec.subscriptions)],
            "outbox": spec.tables.schema if spec.tables else None,
            "relayed_events": runtime.relay.published_total if runtime.relay else 0,
        }

    return router
