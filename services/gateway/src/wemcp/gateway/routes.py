"""The route table: server slug -> where and how to call it, warm in memory (no query per call).

Fed by the ``SERVERS`` stream: ``server.submitted`` (the spec: declared inputs, remote headers, an
OpenAPI document), ``server.deployed`` (endpoints, protocol versions, tools), ``server.disabled`` /
``server.enabled``. Each gateway process reads the stream with an *ordered ephemeral consumer*
(no durable state on the server, every instance sees every event, in stream order) and applies
each event in memory the moment it arrives, so a disable is enforced within milliseconds.

The stream keeps 30 days of events. So that a server deployed long ago still routes after a
restart, the folded routes are also written to the JetStream KV bucket ``wemcp_gateway_routes``
(one key per slug, with the stream sequence of the last event applied). At start a process loads
the bucket, then replays the stream from the start, skipping events at or below a route's
sequence; it waits (bounded) until the replay has caught up before it reports ready.

Stream order is publication order, which is not always the order things happened (two outbox
relays, a retried publish). So a route also keeps the position of the newest deployment it applied
(``server.deployed``'s generation, seq), of the newest decision (``decision_seq`` of
``server.disabled``/``server.enabled``) and of the newest submission (``revision``) and ignores
older ones (docs/events.md, the ordering rule).
Events without positions (older producers) apply in stream order, unless a stamped one was applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from wemcp.common.events.spec import PLACEHOLDER, ServerSpec
from wemcp.common.logging import get_logger
from wemcp.common.netpolicy import outbound

log = get_logger("wemcp.gateway.routes")
KV_BUCKET = "wemcp_gateway_routes"
MODERN = "2026-07-28"
SUBJECTS = ("server.submitted", "server.deployed", "server.disabled", "server.enabled")


@dataclass(frozen=True)
class Input:
    name: str
    secret: bool = False
    required: bool = False
    default: str | None = None


@dataclass
class Route:
    slug: str
    server_id: str = ""
    enabled: bool = True
    kind: str = "pending"  # pending | mcp | openapi | local
    hosted: bool = True  # behind the deployer bridge: inputs travel as X-WeMcp-Env-<NAME>
    endpoint: str | None = None
    transport: str = "streamable-http"
    modern: bool | None = None  # the upstream speaks 2026-07-28 (None: unknown, probe once)
    legacy: bool | None = None  # it also speaks a 2025 revision (None: unknown, treated as no)
    inputs: list[Input] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)  # remote headers with {NAME}s
    tools: list[dict[str, Any]] = field(default_factory=list)
    openapi: dict[str, Any] | None = None  # {"baseUrl", "document", "inputs"}
    seq: int = 0  # stream sequence of the last event applied
    deployment: tuple[int, int] = (0, 0)  # (generation, seq) of the newest server.deployed applied
    decision_seq: int = 0  # of the newest server.disabled/enabled applied
    revision: int = 0  # of the newest server.submitted applied
    generation: int = 0  # bumped on every change; pooled upstream sessions die with it
    # what the caller's own values must cover for an own-key call (key_names); derived, not stored
    needs: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self) -> None:
        self.needs = key_names(self.inputs, self.headers)

    @property
    def routable(self) -> bool:
        return self.enabled and (self.kind == "openapi" or (self.kind == "mcp" and bool(self.endpoint)))

    @property
    def secret_inputs(self) -> list[Input]:
        return [i for i in self.inputs if i.secret]

    def to_json(self) -> bytes:
        d = asdict(self)
        del d["needs"]  # recomputed on load (so routes stored before it existed get it too)
        return orjson.dumps(d)

    @classmethod
    def from_json(cls, raw: bytes) -> Route:
        d = orjson.loads(raw)
        d["inputs"] = [Input(**i) for i in d.get("inputs", [])]
        d["headers"] = outbound(tuple(h) for h in d.get("headers", []))  # (snapshots from before the rule)
        d["deployment"] = tuple(d.get("deployment") or (0, 0))
        known = {f for f in cls.__dataclass_fields__} - {"needs"}
        return cls(**{k: v for k, v in d.items() if k in known})


def key_names(inputs: list[Input], headers: list[tuple[str, str]]) -> frozenset[str]:
    """The inputs a call must fill from the caller's own values (request headers, vault, OAuth) to be
    an own-key, unmetered call: every required secret, and every required ``{PLACEHOLDER}`` of a
    remote's headers (a pasted config marks ``X-Tenant: {TENANT}`` required but, by its name, not
    secret). Placeholders in URLs and package arguments are declared secret and required already
    (inputs_of). Empty: the server needs no key, and no call to it is own-key."""
    templated = {name for _, template in headers for name in PLACEHOLDER.findall(template)}
    return frozenset(i.name for i in inputs if i.required and (i.secret or i.name in templated))


def inputs_of(spec: ServerSpec) -> tuple[list[Input], list[tuple[str, str]], bool, dict[str, Any] | None]:
    """Declared inputs of a normalised spec: package/archive environment variables, remote headers
    and URL placeholders, OpenAPI security inputs. Returns (inputs, remote headers, hosted, openapi)."""
    found: dict[str, Input] = {}

    def add(name: str, secret: bool | None, required: bool | None, default: str | None = None) -> None:
        if name not in found:
            found[name] = Input(name, bool(secret), bool(required), default)

    hosted = True
    headers: list[tuple[str, str]] = []
    for pkg in spec.packages:
        for env in pkg.environment_variables:
            add(env.name, env.is_secret, env.is_required, env.default)
        for arg in [*pkg.package_arguments, *pkg.runtime_arguments]:
            for name in PLACEHOLDER.findall(arg.value or ""):
                add(name, True, True)
    archive = spec.archive
    for env in archive.environment_variables if archive is not None else []:
        add(env.name, env.is_secret, env.is_required, env.default)
    if spec.remotes and not spec.packages and archive is None:
        hosted = False
        remote = spec.remotes[0]
        for name in PLACEHOLDER.findall(remote.url):
            add(name, True, True)
        for h in remote.headers:
            value = h.value or ""
            names = PLACEHOLDER.findall(value)
            # a remote header is a secret the caller fills unless the spec says otherwise
            secret = True if h.is_secret is None else h.is_secret
            for name in names:
                add(name, secret, True if h.is_required is None else h.is_required)
            if not names and not value:  # a header the user supplies whole: input named after it
                env_name = re.sub(r"[^A-Za-z0-9_]", "_", h.name).upper()
                add(env_name, secret, h.is_required)
                value = "{" + env_name + "}"
            headers.append((h.name, value))
    # The catalog refuses reserved header names (422); a route folded from the bus still never sends
    # one: upstreams do not receive X-WeMcp-* or hop-by-hop headers from the gateway.
    headers = outbound(headers)
    openapi = spec.openapi.to_wire() if spec.openapi is not None else None
    if spec.openapi is not None:
        hosted = False
        for i in spec.openapi.inputs:
            add(i.name, True if i.is_secret is None else i.is_secret, i.is_required)
    return list(found.values()), headers, hosted, openapi


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _position(data: dict[str, Any]) -> tuple[int, int] | None:
    g, s = _int(data.get("generation")), _int(data.get("seq"))
    return (g, s) if g is not None and s is not None else None


def _newer(route: Route, subject: str, data: dict[str, Any]) -> bool:
    """Whether a submitted/deployed/disabled/enabled event is newer than what the route holds."""
    if subject == "server.deployed":
        pos = _position(data)
        return pos > route.deployment if pos is not None else route.deployment == (0, 0)
    if subject in ("server.disabled", "server.enabled"):
        d = _int(data.get("decision_seq"))
        return d > route.decision_seq if d is not None else route.decision_seq == 0
    if subject == "server.submitted":
        r = _int(data.get("revision"))
        return r > route.revision if r is not None else route.revision == 0
    return True


class RouteTable:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.ready = asyncio.Event()
        self.listeners: list[Callable[[Route, str], None]] = []  # (route, subject) after a change
        self._js: Any = None
        self._kv: Any = None
        self._sub: Any = None
        self._last_seq = 0
        self._target_seq = 0
        self._writes: set[asyncio.Task[Any]] = set()

    def get(self, slug: str) -> Route | None:
        return self.routes.get(slug)

    # -- folding events ----------------------------------------------------------------------------
    def apply(self, subject: str, data: dict[str, Any], seq: int = 0) -> Route | None:
        slug = data.get("slug")
        if not isinstance(slug, str) or not slug:
            return None
        route = self.routes.get(slug)
        if route is not None and seq and seq <= route.seq:
            return None  # already folded (from the KV snapshot)
        if route is not None and not _newer(route, subject, data):
            return None  # older than what the route holds (the ordering rule)
        spec = ServerSpec()
        if subject == "server.submitted":  # read before anything changes: an unreadable spec changes nothing
            try:
                spec = ServerSpec.model_validate(data.get("spec") or {})
            except ValidationError as exc:
                log.warning("route_spec_unreadable", slug=slug, error=str(exc.errors()[0].get("msg")))
                return None
        route = route or Route(slug=slug)
        route.server_id = str(data.get("server_id") or route.server_id)
        if subject == "server.submitted":
            route.revision = _int(data.get("revision")) or route.revision
            inputs, headers, hosted, openapi = inputs_of(spec)
            route.inputs, route.headers, route.hosted = inputs, headers, hosted
            route.needs = key_names(inputs, headers)
            if openapi:
                route.kind, route.openapi = "openapi", openapi
                route.tools = []
            elif route.kind == "openapi":
                route.kind, route.openapi = "pending", None
        elif subject == "server.deployed":
            route.deployment = _position(data) or route.deployment
            eps = data.get("endpoints") or []
            if eps:
                route.endpoint = eps[0]["url"]
                route.transport = eps[0].get("transport", "streamable-http")
            if route.kind != "openapi":  # "unhosted": a stdio-local server, listed but run by its users
                route.kind = "local" if data.get("backend") == "unhosted" else "mcp"
            versions = data.get("protocol_versions") or []
            route.modern = (MODERN in versions) if versions else None
            route.legacy = any(v != MODERN for v in versions) if versions else None
            route.tools = data.get("tools") or route.tools
        elif subject in ("server.disabled", "server.enabled"):
            route.enabled = subject == "server.enabled"
            route.decision_seq = _int(data.get("decision_seq")) or route.decision_seq
        else:
            return None
        if seq:
            route.seq = seq
        route.generation += 1
        self.routes[slug] = route
        for listener in self.listeners:
            try:
                listener(route, subject)
            except Exception:
                log.exception("route_listener_failed", slug=slug)
        return route

    # -- the bus -------------------------------------------------------------------------------------
    async def start(self, nc: Any, *, wait_seconds: float = 10.0) -> None:
        from nats.js.api import DeliverPolicy, KeyValueConfig

        js = nc.jetstream()
        self._js = js
        try:
            self._kv = await js.create_key_value(KeyValueConfig(bucket=KV_BUCKET, history=1,
                                                                description="gateway route table"))
        except Exception:
            with contextlib.suppress(Exception):
                self._kv = await js.key_value(KV_BUCKET)
        if self._kv is not None:
            await self._load_snapshot()
        info = await js.stream_info("SERVERS")
        self._target_seq = info.state.last_seq if info.state.messages else 0
        if self._target_seq == 0 or self._target_seq <= max((r.seq for r in self.routes.values()), default=0):
            self.ready.set()
        self._sub = await js.subscribe("server.>", stream="SERVERS", cb=self._on_msg, ordered_consumer=True,
                                       deliver_policy=DeliverPolicy.ALL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), wait_seconds)
        if not self.ready.is_set():
            log.warning("route_replay_slow", at=self._last_seq, target=self._target_seq)
        log.info("routes_loaded", routes=len(self.routes), seq=self._last_seq)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _load_snapshot(self) -> None:
        try:
            keys = await self._kv.keys()
        except Exception:  # an empty bucket raises NoKeysError
            return
        for key in keys:
            with contextlib.suppress(Exception):
                entry = await self._kv.get(key)
                if entry.value:
                    route = Route.from_json(entry.value)
                    self.routes[route.slug] = route

    async def _on_msg(self, msg: Any) -> None:
        seq = msg.metadata.sequence.stream
        self._last_seq = seq
        subject = msg.subject
        if subject in SUBJECTS:
            try:
                route = self.apply(subject, orjson.loads(msg.data), seq)
            except Exception as exc:
                route = None
                log.warning("route_event_ignored", subject=subject, seq=seq, error=type(exc).__name__)
            if route is not None and self._kv is not None:
                task = asyncio.create_task(self._persist(route))
                self._writes.add(task)
                task.add_done_callback(self._writes.discard)
        if not self.ready.is_set() and (seq >= self._target_seq or msg.metadata.num_pending == 0):
            self.ready.set()

    async def _persist(self, route: Route) -> None:
        try:
            await self._kv.put(route.slug, route.to_json())
        except Exception as exc:
            log.warning("route_persist_failed", slug=route.slug, error=type(exc).__name__)


def now() -> float:
    return time.monotonic()
