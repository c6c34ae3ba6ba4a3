"""OpenAPI → MCP: a server submitted as an OpenAPI 3 document is served as MCP tools.

One tool per operation (``operationId``, or ``<method>_<path>``), its input schema built from the
path/query/header parameters plus ``body`` for a JSON request body (local ``$ref`` resolved).
Credentials come from the declared inputs (the catalog names them ``<TITLE>_<SCHEME>`` after the
document's security schemes): ``apiKey`` in a header, query or cookie; ``http`` bearer/basic and
``oauth2`` as ``Authorization``.

Egress: the base URL is the submitter's, so requests go through the platform's egress policy
(``wemcp.common.netpolicy``): every new connection is checked at connect time against the resolved
address (DNS rebinding after a check does not help), IP literals included; only http(s), no
redirects followed, responses capped in size and time. Declared header names the platform reserves
(``X-WeMcp-*``, hop-by-hop ...) are never sent, whether a parameter or a key scheme names them.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
import orjson

from wemcp.common.netpolicy import EgressPolicy, refusal_in, reserved_header
from wemcp.gateway.keys import Resolved
from wemcp.gateway.routes import Route

METHODS = ("get", "post", "put", "patch", "delete")
MAX_RESPONSE = 1024 * 1024


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
                if p["in"] == "header" and reserved_header(str(p["name"])) is not None:
                    continue  # never sent (the catalog refuses such documents; older routes may have them)
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
            name = str(s.get("name") or "X-API-Key")
            if where is not headers or reserved_header(name) is None:
                where[name] = value
        elif s.get("type") == "http" and str(s.get("scheme", "")).lower() == "basic":
            raw = value if ":" in value else f"{value}:"
            headers["Authorization"] = "Basic " + base64.b64encode(raw.encode()).decode()
        elif s.get("type") in ("http", "oauth2"):
            headers["Authorization"] = f"Bearer {value}"


class OpenApiTools:
    def __init__(self, egress: EgressPolicy, timeout: float = 30.0) -> None:
        self.egress = egress
        self.timeout = httpx.Timeout(timeout, connect=5.0)
        self.http: httpx.AsyncClient | None = None
        self._ops: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}

    async def start(self) -> None:
        self.http = self.egress.client(timeout=self.timeout,
                                       limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))

    async def close(self) -> None:
        if self.http is not None:
            await self.http.aclose()

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
        try:
            self.egress.check_url(url)
        except ValueError as exc:
            return _result(f"refused: the base URL {exc}", True)
        data = None
        if op["body"] and "body" in args:
            data = orjson.dumps(args["body"])
            headers["content-type"] = "application/json"
        if cookies:  # one request's cookies, not a jar shared by every caller of the client
            headers["cookie"] = "; ".join(f"{k}={quote(v, safe='')}" for k, v in cookies.items())
        try:
            async with self.http.stream(op["method"].upper(), url, params=query, headers=headers, content=data) as r:
                chunks, size = [], 0
                async for chunk in r.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE:
                        return _result(f"the API answered more than {MAX_RESPONSE} bytes", True)
                    chunks.append(chunk)
                text = b"".join(chunks).decode("utf-8", "replace")
                if 300 <= r.status_code < 400:
                    return _result(f"the API redirected (HTTP {r.status_code}); redirects are not followed", True)
                return _result(text if r.status_code < 400 else f"HTTP {r.status_code}: {text[:4000]}",
                               r.status_code >= 400)
        except httpx.HTTPError as exc:
            refused = refusal_in(exc)
            if refused is not None:
                return _result(f"refused: {refused}", True)
            if isinstance(exc, httpx.TimeoutException):
                return _result(f"the API did not answer in time ({type(exc).__name__})", True)
            if isinstance(exc, httpx.ConnectError):
                return _result(f"the API is unreachable ({type(exc).__name__})", True)
            return _result(f"the API call failed ({type(exc).__name__})", True)


def _result(text: str, is_error: bool) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}
