"""Who is calling, as the gateway established it.

The gateway is the only public port: it verifies the caller once (JWT or platform API key), strips
any identity headers a client sent, and forwards the verified identity to the owning service as
``X-WeMcp-User-Id``, ``X-WeMcp-User-Role`` and ``X-WeMcp-User-Login`` (plus
``X-WeMcp-Agent-Run`` for MCP calls made inside an agent run). Services are reachable only from the
gateway's network and read identity with the dependencies below; they never parse tokens.
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
IDENTITY_HEADERS = frozenset({HEADER_USER_ID, HEADER_ROLE, HEADER_LOGIN, HEADER_AGENT_RUN})


@dataclass(frozen=True)
class Identity:
    user_id: UUID
    role: Role = "user"
    login: str = ""

    def at_least(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def headers(self) -> dict[str, str]:
        return {HEADER_USER_ID: str(self.user_id), HEADER_ROLE: self.role, HEADER_LOGIN: self.login}


def identity_from_headers(request: Request) -> Identity | None:
    raw = request.headers.get(HEADER_USER_ID)
    if not raw:
        return None
    try:
        user_id = UUID(raw)
    except ValueError:
        raise Unauthorized("malformed identity") from None
    role = request.headers.get(HEADER_ROLE, "user")
    if role not in ROLE_RANK:
        raise Unauthorized("malformed identity")
    return Identity(user_id=user_id, role=role, login=request.headers.get(HEADER_LOGIN, ""))  # type: ignore[arg-type]


def _optional(request: Request) -> Identity | None:
    return identity_from_headers(request)


def _required(request: Request) -> Identity:
    ident = identity_from_headers(request)
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


OptionalUser = Annotated[Identity | None, Depends(_optional)]
CurrentUser = Annotated[Identity, Depends(_required)]
AdminUser = Annotated[Identity, Depends(require_role("admin"))]
SuperAdminUser = Annotated[Identity, Depends(require_role("superadmin"))]
MerchantUser = Annotated[Identity, Depends(require_role("merchant"))]
