"""Which service owns which public path. Longest prefix wins (``me/usage`` belongs to ratelimit,
the rest of ``me`` to auth)."""

from __future__ import annotations

from wemcp.gateway.config import SERVICES

# first path segments after /api/v1 (or two segments, for nested ownership) -> service
ROUTES: dict[tuple[str, ...], str] = {
    ("auth",): "auth",
    ("me",): "auth",
    ("users",): "auth",
    ("invites",): "auth",
    ("api-keys",): "auth",
    ("vault",): "auth",
    ("oauth",): "auth",
    ("connections",): "auth",
    ("jwks",): "auth",
    ("servers",): "catalog",
    ("categories",): "catalog",
    ("feed",): "catalog",
    ("news",): "catalog",
    ("names",): "catalog",
    ("goods",): "goods",
    ("products",): "goods",
    ("merchant",): "goods",
    ("announcements",): "goods",
    ("admin", "goods"): "goods",
    ("admin", "announcements"): "goods",
    ("deployments",): "deployer",
    ("usage",): "ratelimit",
    ("policies",): "ratelimit",
    ("me", "usage"): "ratelimit",
    ("me", "servers"): "catalog",
    ("crawler",): "crawler",
    ("request-logs",): "crawler",
    ("admin", "crawls"): "crawler",
    ("logs",): "crawler",
    ("agents",): "agents",
    ("model-providers",): "agents",
    # the admin system (docs/admin.md): each area to the service that owns its data
    ("admin", "users"): "auth",
    ("admin", "audit"): "auth",
    ("admin", "invites"): "auth",
    ("admin", "review"): "catalog",
    ("admin", "servers"): "catalog",
    ("admin", "publishers"): "catalog",
    ("admin", "categories"): "catalog",
    **{("services", name): name for name in SERVICES},
}

_MAX_DEPTH = max(len(k) for k in ROUTES)


def owner_of(path_after_api: str) -> str | None:
    """``servers/search`` -> ``catalog``; unknown areas -> ``None``."""
    segments = tuple(p for p in path_after_api.split("/") if p)
    for depth in range(min(_MAX_DEPTH, len(segments)), 0, -1):
        service = ROUTES.get(segments[:depth])
        if service:
            return service
    return None
