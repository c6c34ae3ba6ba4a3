"""Who is calling, as the gateway established it.

The gateway is the only public port: it verifies the caller once (JWT or platform API key), strips
any identity headers a client sent, and states the verified identity to the owning service in a
signed, short-lived service assertion (``X-WeMcp-Assertion``, :mod:`wemcp.common.trust`). The
service runtime verifies it before any route runs (``TrustMiddleware``) and leaves the identity in
the request's state; the dependencies below read it from there and nowhere else. Bare
``X-WeMcp-User-*`` headers are not trusted: without an assertion they are refused with 401.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal
from uuid import UUID

from fastapi import Depends, Request

from wemcp.common.errors import Forbidden, Unauthorized

Role = Literal["user", "merchant", "admin", "superadmin"]
ROLE_RANK: dict[str, int] = {"user": 0, "merchant": 1, "admin": 2, "superadmin": 3}

HEADER_USER_ID = "x-wemcp-user-id"
HEADER_ROLE = "x-wemcp-user-role"
HEADER_LOGIN = "x-wemcp-user-login"
HEADER_AGENT_RUN = "x-wemcp-agent-run"
HEADER_ASSERTION = "x-wemcp-assertion"  # wemcp.common.trust: the platform's signed credential
# what the gateway never takes from a client (it states identity itself)
IDENTITY_HEADERS = frozenset({HEADER_USER_ID, HEADER_ROLE, HEADER_LOGIN, HEADER_AGENT_RUN, HEADER_ASSERTION})
# the old bare identity headers, as raw ASGI names: a request carrying them without an assertion is refused
USER_HEADERS = frozenset(h.encode() for h in (HEADER_USER_ID, HEADER_ROLE, HEADER_LOGIN))
# where the trust middleware leaves the verified identity (request.scope["state"])
IDENTITY_STATE = "wemcp_identity"


@dataclass(frozen=True)
class Identity:
    user_id: UUID
    role: Role = "user"
    login: str = ""

    def at_least(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def identity_of(request: Request) -> Identity | None:
    """The user a verified service assertion speaks for; None when anonymous or the platform calls."""
    state = request.scope.get("state")
    return state.get(IDENTITY_STATE) if state else None


def _optional(request: Request) -> Identity | None:
    return identity_of(request)


def _required(request: Request) -> Identity:
    ident = identity_of(request)
    if ident is None:
        raise Unauthorized("sign in first", headers={"WWW-Authenticate": "Bearer"})
    return ident


def require_role(role: Role) -> Callable[[Request], Identity]:
    """``Depends(require_role("admin"))``: 401 when anonymous, 403 when the role is too low."""

    def dep(request: Request) -> Identity:
        ident = _required(request)
        if not ident.at_least(role):
            raise Forbidden(f"this needs the {role} role")
        return ident

    return dep


def platform_only(request: Request) -> None:
    """``/internal`` routes answer the platform's services. The trust middleware already refused them
    without a valid service assertion; a user's assertion (what the gateway would send, were a path to
    reach a service through it) is not the platform calling: 403."""
    if identity_of(request) is not None:
        raise Forbidden("internal routes answer the platform's services, not users")


OptionalUser = Annotated[Identity | None, Depends(_optional)]
CurrentUser = Annotated[Identity, Depends(_required)]
AdminUser = Annotated[Identity, Depends(require_role("admin"))]
SuperAdminUser = Annotated[Identity, Depends(require_role("superadmin"))]
MerchantUser = Annotated[Identity, Depends(require_role("merchant"))]
PlatformCaller = Annotated[None, Depends(platform_only)]  # an /internal route: services only, no user
