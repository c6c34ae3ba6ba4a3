"""The typed context of one call through the gateway, and the ports the call path reaches.

A :class:`CallContext` is made by a transport adapter (Streamable HTTP, legacy SSE, bundles, REST
try-it-out) once it knows who calls what, and filled in by the pipeline's steps in order
(pipeline.py): identify → route → resolve keys → decide quota → forward → record. The call event
(``record``) is written from it, whatever the transport.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol
from uuid import UUID

from wemcp.common.identity import Identity
from wemcp.gateway.keys import Resolved
from wemcp.gateway.routes import Route
from wemcp.gateway.rpc import params_of, tool_of

if TYPE_CHECKING:
    from wemcp.gateway.sessions import ClientSession


class QuotaDecision(Protocol):
    """What the call path reads of a quota decision (``wemcp.ratelimit`` ``Decision``)."""

    @property
    def allowed(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def counted(self) -> bool: ...
    def headers(self) -> dict[str, str]: ...
    def jsonrpc_error(self) -> dict[str, Any]: ...
    def problem(self) -> dict[str, Any]: ...


class QuotaPort(Protocol):
    """The quota decision of a call (``wemcp.ratelimit`` ``QuotaClient``)."""

    async def decide(self, user_id: UUID | str, subject_kind: Literal["server", "agent"], subject_id: str,
                     key_source: str = "system", in_agent_run_token: str | None = None) -> Any: ...
    def decide_ahead(self, user_id: UUID | str, subject_kind: Literal["server", "agent"], subject_id: str,
                     key_source: str = "system", in_agent_run_token: str | None = None
                     ) -> asyncio.Future[Any] | None: ...
    async def aclose(self) -> None: ...


@dataclass(slots=True, eq=False)
class CallContext:
    """One JSON-RPC request on its way through the gateway."""

    # identify (the adapter: every transport identifies the caller its own way)
    scope: dict[str, Any]
    target: str  # the server's slug, or "bundle:<id>"
    identity: Identity | None
    user_key: str  # whose pooled upstream sessions: the user id, "anon" or "probe"
    grant: Any = None  # the API key's scope (identity.ApiKeyGrant), when the caller used one
    # the request
    msg: dict[str, Any] = field(default_factory=dict)
    raw: bytes = b""  # the client's bytes (forwarded untouched when the eras match)
    req_id: Any = None
    method: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    tool: str | None = None  # the tool of a tools/call
    client_modern: bool = False  # protocol era: True for a 2026-07-28 client (stateless)
    session: ClientSession | None = None  # the gateway session of a 2025 client
    extra: list[tuple[bytes, bytes]] = field(default_factory=list)  # headers of the reply
    # route
    route: Route | None = None
    # resolve keys
    resolved: Resolved | None = None
    # decide quota: the decision, or the future of one taken alongside the call
    decision: Any = None  # QuotaDecision | None
    ahead: asyncio.Future[Any] | None = None
    relayed: bool = False  # the server may ask the client something during the call (relay.py)
    t0: float = field(default_factory=time.perf_counter)  # reset by with_request and call_tool

    @property
    def slug(self) -> str:
        return self.route.slug if self.route is not None else self.target

    @property
    def request_id(self) -> str | None:
        """The request id the runtime's middleware gave this HTTP request (X-Request-Id)."""
        state = self.scope.get("state")
        return state.get("request_id") if isinstance(state, dict) else None

    def with_request(self, msg: dict[str, Any], raw: bytes = b"") -> CallContext:
        """This context for one JSON-RPC request (``msg`` is a request: classify() said so)."""
        self.t0 = time.perf_counter()  # a call's latency is counted from its request on
        self.msg, self.raw = msg, raw
        self.req_id, self.method = msg["id"], msg["method"]
        self.params = params_of(msg)
        self.tool = tool_of(self.method, self.params)
        return self
