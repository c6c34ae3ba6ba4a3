"""Which service owns which public path. Longest prefix wins (``me/usage`` belongs to ratelimit,
the rest of ``me`` to auth)."""

from __future__ import annotations

from wemcp.gateway.config import SERVICES

# service -> the paths after /api/v1 it owns: a first segment, or two ("me/usage") for nested ownership
OWNED: dict[str, tuple[str, ...]] = {
    "auth": ("auth", "me", "users", "invites", "api-keys", "vault", "oauth", "connections", "jwks"),
    "catalog": ("servers", "categories", "feed", "news", "names", "me/servers"),
    "goods": ("goods", "products", "merchant", "announcements"),
    "deployer": ("deployments",),
    "ratelimit": ("usage", "policies", "me/usage"),
    "crawler": ("crawler", "request-logs", "logs"),
    "agents": ("agents", "model-providers"),
}
# /api/v1/admin/<area>, the admin system (docs/admin.md): each area to the service that owns its data
ADMIN: dict[str, tuple[str, ...]] = {
    "auth": ("users", "audit", "invites"),
    "catalog": ("review", "servers", "publishers", "categories"),
    "goods": ("goods", "announcements"),
    "crawler": ("crawls",),
}
# (first segment,) or (first, second) -> service
ROUTES: dict[tuple[str, ...], str] = {
    **{tuple(path.split("/")): service for service, paths in OWNED.items() for path in paths},
    **{("admin", area): service for service, areas in ADMIN.items() for area in areas},
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
