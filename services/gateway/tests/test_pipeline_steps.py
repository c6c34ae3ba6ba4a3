"""Unit tests of the call pipeline's decisions (pipeline.py) with fakes of its ports: the route
table, key resolution, the quota client, the call recorder, the upstream. The same steps serve
every transport; the end-to-end tests (test_mcp_router, test_legacy_sse, test_bundles, test_keys_quota ...)
run them for real."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest

from wemcp.common.clientaddr import ClientAddresses
from wemcp.common.errors import Unauthorized
from wemcp.common.identity import Identity
from wemcp.gateway.calls import CallRecord
from wemcp.gateway.context import CallContext
from wemcp.gateway.identity import ApiKeyGrant
from wemcp.gateway.keys import Resolved
from wemcp.gateway.pipeline import Pipeline, may_decide_ahead, metered, relays, user_key_of
from wemcp.gateway.relay import Relay
from wemcp.gateway.routes import Route
from wemcp.gateway.rpc import Refused
from wemcp.gateway.sessions import ClientSession
from wemcp.gateway.upstream import UpstreamError


@dataclass
class Decision:
    allowed: bool = True
    reason: str = "counted"
    counted: bool = True

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": "10", **({} if self.allowed else {"Retry-After": "60"})}

    def jsonrpc_error(self) -> dict[str, Any]:
        return {"code": -32029, "message": "daily limit", "data": {"reason": self.reason}}

    def problem(self) -> dict[str, Any]:
        return {"status": 429}


@dataclass
class Quota:
    decision: Decision | None = field(default_factory=Decision)
    ahead: bool = False  # decide_ahead gives a future
    asked: list[tuple[Any, ...]] = field(default_factory=list)

    async def decide(self, user_id: Any, kind: str, slug: str, key_source: str = "system",
                     in_agent_run_token: str | None = None) -> Any:
        self.asked.append(("decide", user_id, kind, slug, key_source, in_agent_run_token))
        return self.decision

    def decide_ahead(self, user_id: Any, kind: str, slug: str, key_source: str = "system",
                     in_agent_run_token: str | None = None) -> asyncio.Future[Any] | None:
        self.asked.append(("ahead", user_id, kind, slug, key_source, in_agent_run_token))
        if not self.ahead:
            return None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(self.decision)
        return fut

    async def aclose(self) -> None:
        pass


class Keys:
    def __init__(self, resolved: Resolved) -> None:
        self.resolved, self.calls = resolved, 0

    async def resolve(self, route: Route, user_id: UUID | None, headers: Any) -> Resolved:
        self.calls += 1
        return self.resolved


class Recorder:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def record(self, rec: CallRecord) -> None:
        self.records.append(rec)


class Upstream:
    def __init__(self, reply: dict[str, Any] | Exception) -> None:
        self.reply, self.calls = reply, []

    async def call(self, route: Route, resolved: Resolved, user_key: str, method: str,
                   params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((route.slug, user_key, method, params))
        if isinstance(self.reply, Exception):
            raise self.reply
        return dict(self.reply)


ROUTE = Route("clock", kind="mcp", endpoint="http://127.0.0.1:9/mcp", modern=True, legacy=True)
ALICE = Identity(uuid4())


def make(resolved: Resolved | None = None, quota: Quota | None = None, upstream: Upstream | None = None,
         routes: dict[str, Route] | None = None, anonymous: bool = True, verifier: Any = None) -> Any:
    settings = SimpleNamespace(anonymous_allowed=anonymous, free_key_url="/api/v1/api-keys",
                               client_addresses=ClientAddresses(), mcp_allowed_hosts=[], mcp_allowed_origins=[],
                               mcp_upstream_timeout_seconds=5.0)
    gw = SimpleNamespace(settings=settings, verifier=verifier,
                         routes=routes if routes is not None else {"clock": ROUTE},
                         keys=Keys(resolved or Resolved({}, "none")), quota=quota, recorder=Recorder(),
                         upstream=upstream or Upstream({"result": {}}), openapi=None)
    return Pipeline(gw, Relay(gw.upstream))  # type: ignore[arg-type]


def ctx_for(pipeline: Pipeline, msg: dict[str, Any] | None = None, ident: Identity | None = ALICE,
            raw: bytes = b"", session: ClientSession | None = None) -> CallContext:
    scope = {"headers": [], "client": ("2001:db8:1:2:3::9", 5000), "state": {"request_id": "r1"}}
    ctx = CallContext(scope, "clock", ident, user_key_of(ident), session=session)
    ctx.route = ROUTE
    return ctx.with_request(msg or {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                    "params": {"name": "now", "arguments": {}}}, raw)



def admitted(p: Pipeline, ctx: CallContext, *, may_defer: bool) -> bytes | None:
    """Resolve the keys, then admit (the quota), as the pipeline does before it forwards: the refusal's
    body, or None when the call may go on."""

    async def run() -> bytes | None:
        await p.resolve(ctx)
        return await p.admit(ctx, may_defer=may_defer)

    return asyncio.run(run())


# -- route ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("route,grant,status", [
    (None, None, 404),
    (Route("clock", enabled=False, kind="mcp", endpoint="http://x"), None, 403),
    (Route("clock", kind="local"), None, 404),
    (Route("clock", kind="pending"), None, 503),
    (ROUTE, ApiKeyGrant("k", ("other",)), 403),  # a key scoped to other servers
])
def test_route_for_refuses(route: Route | None, grant: Any, status: int) -> None:
    p = make(routes={"clock": route} if route is not None else {})
    with pytest.raises(Refused) as err:
        p.route_for("clock", grant)
    assert err.value.status == status
    if status == 503:
        assert err.value.headers == {"Retry-After": "5"}


def test_route_for_serves_a_routable_server_in_the_keys_scope() -> None:
    p = make()
    assert p.route_for("clock", None) is ROUTE
    assert p.route_for("clock", ApiKeyGrant("k", ("clock",))) is ROUTE


# -- identify -------------------------------------------------------------------------------------------
def test_identify_anonymous_off_is_401_naming_where_to_get_a_key() -> None:
    async def nobody(request: Any) -> None:
        return None

    p = make(anonymous=False, verifier=nobody)
    with pytest.raises(Refused) as err:
        asyncio.run(p.identify({"type": "http", "headers": []}))
    assert err.value.status == 401 and "key_uri=\"/api/v1/api-keys\"" in err.value.headers["WWW-Authenticate"]


def test_identify_passes_the_verifiers_refusal_on() -> None:
    async def bad(request: Any) -> None:
        raise Unauthorized("bad token")

    with pytest.raises(Refused) as err:
        asyncio.run(make(verifier=bad).identify({"type": "http", "headers": []}))
    assert (err.value.status, err.value.detail) == (401, "bad token")


def test_enter_gives_the_callers_context() -> None:
    async def alice(request: Any) -> Identity:
        request.scope["state"] = {"api_key": ApiKeyGrant("k", None)}
        return ALICE

    ctx = asyncio.run(make(verifier=alice).enter({"type": "http", "headers": []}, "clock"))
    assert (ctx.identity, ctx.user_key, ctx.target) == (ALICE, str(ALICE.user_id), "clock")
    assert ctx.grant == ApiKeyGrant("k", None)
    anon = asyncio.run(make().enter({"type": "http", "headers": []}, "clock"))
    assert (anon.identity, anon.user_key) == (None, "anon")


def test_quota_user_is_the_user_or_the_anonymous_callers_address_block() -> None:
    p = make()
    scope = {"headers": [], "client": ("2001:db8:1:2:3::9", 5000)}
    assert p.quota_user(ALICE, scope) == ALICE.user_id
    other = {"headers": [], "client": ("2001:db8:1:2:ffff::1", 5000)}
    assert p.quota_user(None, scope) == p.quota_user(None, other)  # one /64, one bucket
    assert str(p.quota_user(None, scope)).startswith("anon:")
    assert p.quota_user(None, {"headers": [], "client": ("192.0.2.1", 1)}) != \
        p.quota_user(None, {"headers": [], "client": ("192.0.2.2", 1)})


# -- resolve keys + decide quota ----------------------------------------------------------------------------
def test_admit_refuses_missing_keys_without_asking_the_quota() -> None:
    quota = Quota()
    p = make(Resolved({}, "none", ("API_KEY",)), quota)
    ctx = ctx_for(p, raw=b"x" * 12)
    body = admitted(p, ctx, may_defer=True)
    assert body is not None
    err = orjson.loads(body)["error"]
    assert err["code"] == -32602 and err["data"] == {"missing": ["API_KEY"]} and "API_KEY" in err["message"]
    assert quota.asked == [] and ctx.decision is None
    (rec,) = p.gw.recorder.records
    assert (rec.status, rec.error_code, rec.request_bytes, rec.response_bytes) == ("error", -32602, 12, len(body))


def test_admit_refused_by_the_quota_records_and_sets_the_headers() -> None:
    quota = Quota(Decision(allowed=False, reason="user_limit", counted=False))
    p = make(Resolved({"K": "v"}, "system"), quota)
    ctx = ctx_for(p)
    body = admitted(p, ctx, may_defer=False)
    assert body is not None and orjson.loads(body)["error"]["code"] == -32029
    assert (b"retry-after", b"60") in ctx.extra and (b"x-ratelimit-limit", b"10") in ctx.extra
    assert [a[0] for a in quota.asked] == ["decide"]  # may_defer=False: never ahead
    assert quota.asked[0][1:5] == (ALICE.user_id, "server", "clock", "system")
    (rec,) = p.gw.recorder.records
    assert (rec.status, rec.error_code, rec.metered, rec.key_source) == ("refused", -32029, False, "system")


def test_admit_decides_ahead_when_it_may_and_the_quota_can() -> None:
    quota = Quota(ahead=True)
    p = make(Resolved({}, "none"), quota)
    ctx = ctx_for(p)
    assert admitted(p, ctx, may_defer=True) is None
    assert ctx.ahead is not None and ctx.decision is None and ctx.extra == []
    assert [a[0] for a in quota.asked] == ["ahead"]
    assert p.gw.recorder.records == []  # recorded when the call ends


def test_admit_awaits_the_decision_when_the_quota_cannot_decide_ahead() -> None:
    quota = Quota(ahead=False)
    p = make(Resolved({}, "none"), quota)
    ctx = ctx_for(p)
    assert admitted(p, ctx, may_defer=True) is None
    assert [a[0] for a in quota.asked] == ["ahead", "decide"]
    assert ctx.decision is quota.decision and (b"x-ratelimit-limit", b"10") in ctx.extra


def test_admit_without_a_quota_client_lets_the_call_through_undecided() -> None:
    p = make(Resolved({}, "none"), None)
    ctx = ctx_for(p)
    assert admitted(p, ctx, may_defer=True) is None
    assert ctx.decision is None and ctx.ahead is None


def test_the_agent_run_header_reaches_the_quota() -> None:
    quota = Quota()
    p = make(Resolved({}, "none"), quota)
    ctx = ctx_for(p)
    ctx.scope["headers"].append((b"x-wemcp-agent-run", b"tok"))
    admitted(p, ctx, may_defer=False)
    assert quota.asked[0][-1] == "tok"


# -- record -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("resolved,decision,expected", [
    (Resolved({}, "vault"), None, False),  # own key, no decision: not metered
    (Resolved({}, "system"), None, True),
    (None, None, True),
    (Resolved({}, "vault"), Decision(counted=True), True),  # the decision says
    (Resolved({}, "system"), Decision(counted=False, reason="agent_run"), False),
])
def test_metered(resolved: Resolved | None, decision: Any, expected: bool) -> None:
    assert metered(resolved, decision) is expected


def test_record_writes_the_call_event_from_the_context() -> None:
    p = make()
    ctx = ctx_for(p, raw=b"r" * 40)
    ctx.resolved = Resolved({}, "oauth")
    ctx.decision = Decision(counted=False, reason="agent_run")
    p.record(ctx, "ok", None, 123)
    (rec,) = p.gw.recorder.records
    assert (rec.user_id, rec.server_slug, rec.method, rec.tool) == (ALICE.user_id, "clock", "tools/call", "now")
    assert (rec.key_source, rec.metered, rec.in_agent_run) == ("oauth", False, True)
    assert (rec.status, rec.error_code, rec.request_bytes, rec.response_bytes) == ("ok", None, 40, 123)
    assert rec.latency_ms >= 0
    p.record(ctx_for(p, ident=None), "error", -1, 0)
    assert p.gw.recorder.records[1].user_id is None and p.gw.recorder.records[1].key_source == "none"


# -- which path a request takes ----------------------------------------------------------------------------
def _session(queue: bool = False, version: str = "2025-11-25") -> ClientSession:
    return ClientSession("sid", "clock", "anon", None, version, {}, {}, asyncio.Queue() if queue else None)


@pytest.mark.parametrize("method,client_modern,session,route,expected", [
    ("tools/call", True, None, Route("s", kind="mcp", modern=True), False),  # 2026 both sides: forwarded
    ("tools/call", True, None, Route("s", kind="mcp", modern=False), True),  # 2026 client, 2025 upstream
    ("tools/call", True, None, Route("s", kind="mcp", modern=None), True),  # unknown era: may ask
    ("tools/call", False, "session", Route("s", kind="mcp", modern=True), True),  # a 2025 session
    ("tools/list", False, "session", Route("s", kind="mcp", modern=False), False),  # not a call
    ("prompts/get", False, "session", Route("s", kind="mcp", modern=False), True),
])
def test_relays(method: str, client_modern: bool, session: str | None, route: Route, expected: bool) -> None:
    ctx = CallContext({"headers": []}, "s", None, "anon", method=method, client_modern=client_modern,
                      session=_session() if session else None)
    ctx.route = route
    assert relays(ctx) is expected


@pytest.mark.parametrize("route,relayed,session,expected", [
    (Route("s", kind="mcp", modern=True), False, None, True),  # the plain forward
    (Route("s", kind="openapi"), False, None, False),  # answered by the gateway itself
    (Route("s", kind="mcp", modern=True), True, _session(), True),  # a 2025 session, 2026 upstream: one reply
    (Route("s", kind="mcp", modern=False), True, _session(), False),  # a 2025 upstream's stream
    (Route("s", kind="mcp", modern=True), True, _session(queue=True), False),  # legacy SSE: reply on the stream
    (Route("s", kind="mcp", modern=False), True, None, False),  # a 2026 client's parked call
])
def test_may_decide_ahead(route: Route, relayed: bool, session: ClientSession | None, expected: bool) -> None:
    ctx = CallContext({"headers": []}, "s", None, "anon", session=session, relayed=relayed)
    ctx.route = route
    assert may_decide_ahead(ctx) is expected


# -- one request, and the gateway's own calls ---------------------------------------------------------------
def test_ping_is_answered_without_resolving_keys() -> None:
    p = make()
    ctx = ctx_for(p, {"jsonrpc": "2.0", "id": 1, "method": "ping"})
    sent: list[dict[str, Any]] = []

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)
    asyncio.run(p.call(ctx, send))
    assert sent[0]["status"] == 200 and orjson.loads(sent[1]["body"]) == {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert p.gw.keys.calls == 0 and p.gw.recorder.records == []


def test_a_refused_call_is_answered_429_with_the_error_in_the_body() -> None:
    p = make(Resolved({}, "system"), Quota(Decision(allowed=False, reason="user_limit", counted=False)))
    ctx = ctx_for(p)
    sent: list[dict[str, Any]] = []

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)
    asyncio.run(p.call(ctx, send))
    assert sent[0]["status"] == 429 and (b"retry-after", b"60") in sent[0]["headers"]
    assert orjson.loads(sent[1]["body"])["error"]["code"] == -32029
    assert p.gw.upstream.calls == []  # never forwarded


def test_call_tool_records_what_the_upstream_answered() -> None:
    upstream = Upstream({"result": {"content": [{"type": "text", "text": "12:00"}]}})
    p = make(Resolved({}, "none"), Quota(), upstream)
    ctx = p.member(ctx_for(p), "clock", "tools/call", "now")
    reply = asyncio.run(p.call_tool(ctx, {"tz": "UTC"}))
    assert reply["result"]["content"][0]["text"] == "12:00" and ctx.decision is not None
    assert upstream.calls == [("clock", str(ALICE.user_id), "tools/call", {"name": "now", "arguments": {"tz": "UTC"}})]
    (rec,) = p.gw.recorder.records
    assert (rec.status, rec.tool, rec.request_bytes, rec.response_bytes) == ("ok", "now", 0, len(orjson.dumps(reply)))


def test_call_tool_upstream_failure_and_refusal() -> None:
    p = make(Resolved({}, "none"), None, Upstream(UpstreamError("slow", -32001, timeout=True)))
    ctx = p.member(ctx_for(p), "clock", "tools/call", "now")
    reply = asyncio.run(p.call_tool(ctx, {}))
    assert reply["error"]["code"] == -32001 and p.gw.recorder.records[0].status == "timeout"
    refused = make(Resolved({}, "system"), Quota(Decision(allowed=False, counted=False)))
    ctx = refused.member(ctx_for(refused), "clock", "tools/call", "now")
    reply = asyncio.run(refused.call_tool(ctx, {}))
    assert reply["error"]["code"] == -32029 and not ctx.decision.allowed
    assert refused.gw.upstream.calls == [] and refused.gw.recorder.records[0].status == "refused"
    missing = make(Resolved({}, "none", ("K",)), Quota())
    reply = asyncio.run(missing.call_tool(missing.member(ctx_for(missing), "clock", "tools/call", "now"), {}))
    assert reply["error"]["data"] == {"missing": ["K"]} and missing.gw.quota.asked == []


def test_member_routes_through_the_route_table() -> None:
    p = make(routes={"clock": ROUTE})
    parent = ctx_for(p)
    sub = p.member(parent, "clock", "tools/call", "now")
    assert (sub.route, sub.identity, sub.user_key, sub.tool, sub.raw) == (ROUTE, ALICE, parent.user_key, "now", b"")
    with pytest.raises(Refused):
        p.member(parent, "absent")
