"""Who may call (wemcp.common.identity): ``PlatformCaller`` lets the platform's services through to an
``/internal`` route and refuses a user's assertion, whatever the role."""

from __future__ import annotations

import uuid

import httpx2 as httpx
from fastapi import APIRouter

from wemcp.common.config import ServiceSettings
from wemcp.common.identity import Identity, PlatformCaller
from wemcp.common.service import Runtime, ServiceSpec, build_app
from wemcp.common.trust import Issuer

router = APIRouter()


@router.get("/internal/thing")
async def thing(_: PlatformCaller) -> dict:
    return {"ok": True}


async def test_internal_routes_answer_the_platform_not_users():
    settings = ServiceSettings(service_keys="k2:second-secret-0123456789")
    spec = ServiceSpec(name="catalog", title="t", routers=[router], uses_database=False, uses_bus=False)
    app = build_app(spec, Runtime(spec, settings))
    gateway, deployer = Issuer(settings.key_ring, "gateway"), Issuer(settings.key_ring, "deployer")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        ok = await c.get("/internal/thing", headers=deployer.headers("catalog"))
        assert ok.status_code == 200 and ok.json() == {"ok": True}
        for role in ("user", "superadmin"):
            r = await c.get("/internal/thing", headers=gateway.headers("catalog", Identity(uuid.uuid4(), role)))
            assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
            assert r.json()["detail"] == "internal routes answer the platform's services, not users"
        assert (await c.get("/internal/thing")).status_code == 401  # no credential: the middleware refuses
