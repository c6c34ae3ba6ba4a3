"""The admin area is split by owner: every ``/api/v1/admin/...`` route auth and the catalog serve is
routed to that service, and an admin area nobody serves is no service's (the gateway answers 404)."""

from __future__ import annotations

from fastapi.routing import APIRoute

from wemcp.gateway.routing import owner_of


def _admin_paths(router: object) -> set[str]:
    return {r.path.removeprefix("/api/v1/") for r in router.routes  # type: ignore[attr-defined]
            if isinstance(r, APIRoute) and r.path.startswith("/api/v1/admin/")}


def test_every_served_admin_route_reaches_its_service() -> None:
    from wemcp.auth.admin_api import admin_router as auth_admin
    from wemcp.catalog.review import admin_router as catalog_admin

    auth_paths, catalog_paths = _admin_paths(auth_admin), _admin_paths(catalog_admin)
    assert {"admin/users", "admin/audit", "admin/invites"} <= auth_paths
    assert {"admin/review", "admin/servers", "admin/publishers", "admin/categories"} <= catalog_paths
    for path in auth_paths:
        assert owner_of(path.replace("{", "").replace("}", "")) == "auth", path
    for path in catalog_paths:
        assert owner_of(path.replace("{", "").replace("}", "")) == "catalog", path


def test_unknown_admin_areas_belong_to_nobody() -> None:
    for path in ("admin", "admin/", "admin/secrets", "admin/internal/users", "admin/../internal/auth/jwks"):
        assert owner_of(path) is None, path
    assert owner_of("admin/users/123/ban") == "auth"
    assert owner_of("admin/review/some-slug/approve") == "catalog"
