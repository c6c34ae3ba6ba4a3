"""OpenAPI → MCP: a server submitted as an OpenAPI 3 document is served as MCP tools.

One tool per operation (``operationId``, or ``<method>_<path>``), its input schema built from the
path/query/header parameters plus ``body`` for a JSON request body (local ``$ref`` resolved).
Credentials come from the declared inputs (the catalog names them ``<TITLE>_<SCHEME>`` after the
document's security schemes): ``apiKey`` in a header, query or cookie; ``http`` bearer/basic and
``oauth2`` as ``Authorization``.

SSRF: requests go through a connector whose resolver refuses loopback, private, link-local,
multicast and reserved addresses *at connect time* (so DNS rebinding after a check does not
help), only http(s), no redirects followed, responses capped in size and time. A host that is an
IP literal never reaches a resolver (aiohttp connects to it directly), so it is checked before the
request. Hosts listed in ``WEMCP_GATEWAY_OPENAPI_ALLOW_HOSTS`` (tests, an internal API on purpose)
skip the address check.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver

from wemcp.gateway.keys import Resolved
from wemcp.gateway.routes import Route

if TYPE_CHECKING:
    from aiohttp.abc import ResolveResult

METHODS = ("get", "post", "put", "patch", "delete")
MAX_RESPONSE = 1024 * 1024


class Blocked(Exception):
    pass


def _public(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
                or addr.is_reserved or addr.is_unspecified)


def _blocked_literal(host: str, port: int, allow: set[str]) -> bool:
    """An IP-literal host that is not public and not allowed (literals bypass the resolver)."""
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return not (f"{host}:{port}" in allow or host in allow or _public(host))


class SafeResolver(AbstractResolver):
    def __init__(self, allow: set[str]) -> None:
        self.allow = allow
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        infos = await self._inner.resolve(host, port, family)
        if f"{host}:{port}" in self.allow or host in self.allow:
            return infos
        for info in infos:
            if not _public(info["host"]):
                raise Blocked(f"{host} resolves to a non-public address")
        return infos

    async def close(self) -> None:
        await self._inner.close()


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name).strip("_")[:64] or "op"


def _resolve_refs(node: Any, doc: dict[str, Any], depth: int = 0) -> Any:
    if depth > 8:
        return {}
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = doc
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            return _resolve_refs(target, doc, depth + 1)
        return {k: _resolve_refs(v, doc, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_refs(v, doc, depth + 1) for v in node]
    return node


def operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """tool name -> {method, path, params: [...], body: bool, tool: MCP tool dict}."""
    doc = spec.get("document") or {}
    out: dict[str, dict[str, Any]] = {}
    for path, item in (doc.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        shared = item.get("parameters") or []
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            name = _sanitize(op.get("operationId") or f"{method}_{path}")
            base, n = name, 2
            while name in out:
                name, n = f"{base}_{n}"[:64], n + 1
            props: dict[str, Any] = {}
            required: list[str] = []
            params = []
            for p in _resolve_refs(list(shared) + list(op.get("parameters") or []), doc):
                if not isinstance(p, dict) or p.get("in") not in ("path", "query", "header") or not p.get("name"):
                    continue
                params.append({"name": p["name"], "in": p["in"]})
                schema = dict(p.get("schema") or {"type": "string"})
                if p.get("description"):
                    schema.setdefault("description", p["description"])
                props[p["name"]] = schema
                if p.get("required") or p["in"] == "path":
                    required.append(p["name"])
            body = False
            rb = _resolve_refs(op.get("requestBody") or {}, doc)
            content = rb.get("content") if isinstance(rb, dict) else None
            if isinstance(content, dict) and "application/json" in content:
                body = True
                props["body"] = content["application/json"].get("schema") or {"type": "object"}
                if rb.get("required"):
                    required.append("body")
            desc = op.get("summary") or op.get("description") or f"{method.upper()} {path}"
            tool = {"name": name, "description": str(desc)[:1000],
                    "inputSchema": {"type": "object", "properties": props, "required": required}}
            out[name] = {"method": method, "path": path, "params": params, "body": body, "tool": tool,
                         "security": op.get("security", doc.get("security"))}
    return out


def _auth(spec: dict[str, Any], resolved: Resolved, headers: dict[str, str], query: dict[str, str],
          cookies: dict[str, str]) -> None:
    schemes = ((spec.get("document") or {}).get("components") or {}).get("securitySchemes") or {}
    for sname, s in schemes.items():
        if not isinstance(s, dict):
            continue
        suffix = "_" + re.sub(r"[^A-Za-z0-9_]", "_", sname).upper()
        value = next((v for k, v in resolved.values.items() if k.upper().endswith(suffix)), None)
        if value is None:
            continue
        if s.get("type") == "apiKey":
            where = {"header": headers, "query": query, "cookie": cookies}.get(s.get("in", "header"), headers)
            where[str(s.get("name") or "X-API-Key")] = value
        elif s.get("type") == "http" and str(s.get("scheme", "")).lower() == "basic":
            raw = value if ":" in value else f"{value}:"
            headers["Authorization"] = "Basic " + base64.b64encode(raw.encode()).decode()
        elif s.get("type") in ("http", "oauth2"):
            headers["Authorization"] = f"Bearer {value}"


class OpenApiTools:
    def __init__(self, allow_hosts: list[str], timeout: float = 30.0) -> None:
        self.allow = set(allow_hosts)
        self.timeout = aiohttp.ClientTimeout(total=timeout, connect=5)
        self.http: aiohttp.ClientSession | None = None
        self._ops: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=SafeResolver(self.allow), limit=256)
        self.http = aiohttp.ClientSession(connector=connector, timeout=self.timeout, auto_decompress=True)

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()

    def ops(self, route: Route) -> dict[str, dict[str, Any]]:
        key = (route.slug, route.generation)
        hit = self._ops.get(key)
        if hit is None:
            hit = operations(route.openapi or {})
            self._ops = {k: v for k, v in self._ops.items() if k[0] != route.slug}
            self._ops[key] = hit
        return hit

    def tools(self, route: Route) -> list[dict[str, Any]]:
        return [o["tool"] for o in self.ops(route).values()]

    async def call(self, route: Route, resolved: Resolved, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """An MCP ``CallToolResult``; raises KeyError for an unknown tool."""
        assert self.http is not None
        op = self.ops(route)[name]
        spec = route.openapi or {}
        base = str(spec.get("baseUrl") or "").rstrip("/")
        path = op["path"]
        headers: dict[str, str] = {"accept": "application/json"}
        query: dict[str, str] = {}
        cookies: dict[str, str] = {}
        for p in op["params"]:
            if p["name"] not in args:
                continue
            value = args[p["name"]]
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            if p["in"] == "path":
                path = path.replace("{" + p["name"] + "}", quote(text, safe=""))
            elif p["in"] == "query":
                query[p["name"]] = text
            else:
                headers[p["name"]] = text
        _auth(spec, resolved, headers, query, cookies)
        url = base + path
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return _result(f"refused: {parts.scheme!r} is not http(s)", True)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return _result("refused: the base URL has an invalid port", True)
        if _blocked_literal(parts.hostname or "", port, self.allow):
            return _result(f"refused by SSRF protection: {parts.hostname} is not a public address", True)
        data = None
        if op["body"] and "body" in args:
            data = orjson.dumps(args["body"])
            headers["content-type"] = "application/json"
        try:
            async with self.http.request(op["method"].upper(), url, params=query, headers=headers, data=data,
                                         cookies=cookies, allow_redirects=False) as r:
                chunks, size = [], 0
                async for chunk in r.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > MAX_RESPONSE:
                        return _result(f"the API answered more than {MAX_RESPONSE} bytes", True)
                    chunks.append(chunk)
                text = b"".join(chunks).decode("utf-8", "replace")
                if 300 <= r.status < 400:
                    return _result(f"the API redirected (HTTP {r.status}); redirects are not followed", True)
                return _result(text if r.status < 400 else f"HTTP {r.status}: {text[:4000]}", r.status >= 400)
        except Blocked as exc:
            return _result(f"refused by SSRF protection: {exc}", True)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(getattr(exc, "os_error", None), Blocked) or "non-public" in str(exc):
                return _result(f"refused by SSRF protection: {exc.os_error}", True)
            return _result(f"the API is unreachable ({type(exc).__name__})", True)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _result(f"the API call failed ({type(exc).__name__})", True)


def _result(text: str, is_error: bool) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}
