"""``GET /api/v1/services/<name>``: what a service is and which events it consumes, for operators
and for the gateway's routing test."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from wemcp.common.bus import BatchSubscription, Subscription, consumer_name

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
            "consumes": [_consumes(spec.name, s) for s in spec.subscriptions],
            "outbox": spec.tables.schema if spec.tables else None,
            "relayed_events": runtime.relay.published_total if runtime.relay else 0,
        }

    return router


def _consumes(service: str, sub: Any) -> dict[str, Any]:
    if isinstance(sub, BatchSubscription):
        return {"subject": sub.events[0].subject, "subjects": [e.subject for e in sub.events],
                "durable": sub.durable or consumer_name(service, sub.events[0]), "batch": sub.max_batch}
    one = sub if isinstance(sub, Subscription) else Subscription(*sub)
    return {"subject": one.event.subject, "durable": one.durable or consumer_name(service, one.event),
            "max_workers": one.max_workers}
