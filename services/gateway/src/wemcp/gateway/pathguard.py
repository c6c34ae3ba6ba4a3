"""The gateway forwards only paths it validated.

The gateway joins a client's path to a service's base URL. Anything in that path that a later parser
may read differently from the gateway's router — a dot segment (``..``, ``%2e%2E``: the HTTP client
resolves them, so ``/api/v1/me/../../../internal/auth/vault/...`` reached auth's internal vault), an
encoded slash or backslash (a segment boundary the router did not see), a control character (the
HTTP client refuses the URL: a 500), bytes that are not UTF-8 — is refused with 400 before routing,
and the upstream URL is built from the raw path as the client sent it, never from the decoded one.

The one exception: a registry name under ``/v0.1/servers/`` is sent URL-encoded by clients of the
official registry API (``io.github.user%2Fweather``); that segment is decoded, checked against the
registry's name syntax and re-encoded, so its ``%2F`` is the only encoded slash that passes.

:func:`check` is pure and cheap (one regex scan for an ordinary path: it runs on every request, the
MCP hot path included); :class:`PathGuard` applies it to every request ahead of routing.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from wemcp.common.errors import BadRequest
from wemcp.common.http import problem

# What an ordinary path never holds: a byte outside visible ASCII, "%", a backslash, or "/." (where
# a dot segment would start). A path without any of these is forwarded after this one scan and a
# look at its first byte. (Written this way it costs about half of a regex that spells out the dot
# segment, ``(?:^|/)\.\.?(?:/|$)``, as an alternative: measured with timeit, ~0.5 vs ~1.1 us on a
# loaded 2-core box.)
_SUSPECT = re.compile(rb"[^!-$&-\[\]-~]|/\.")
_INVISIBLE = re.compile(rb"[^!-~]")
_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")  # a "%" not followed by two hex digits
_ENCODED_SLASH = re.compile(rb"%(?:2[fF]|5[cC])")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_DOTS = (b".", b"..")

REGISTRY_PREFIX = b"/v0.1/servers/"
# The registry's server name, reverse-DNS namespace "/" name (the catalog's ``schemas.NAME_RE``; a
# test keeps the two equal).
REGISTRY_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9.-]{0,100}/[a-zA-Z0-9][a-zA-Z0-9._-]{0,100}$")


class BadPath(BadRequest):
    """A path the gateway will not route (400)."""


def check(raw_path: bytes) -> bytes:
    """The path to forward for ``raw_path`` (the request target's path as the client sent it, still
    percent-encoded): ``raw_path`` itself, or, under ``/v0.1/servers/``, the same path with the
    registry name re-encoded. Raises :class:`BadPath` for anything that could be read two ways."""
    if _SUSPECT.search(raw_path) is None and raw_path[:1] != b".":
        return raw_path
    if raw_path.startswith(REGISTRY_PREFIX):
        name, sep, rest = raw_path[len(REGISTRY_PREFIX):].partition(b"/")
        if _ENCODED_SLASH.search(name):
            _plain(REGISTRY_PREFIX + b"-" + sep + rest)  # everything but the name, by the usual rules
            return REGISTRY_PREFIX + _registry_name(name) + sep + rest
    _plain(raw_path)
    return raw_path


def _plain(raw: bytes) -> None:
    if _INVISIBLE.search(raw):
        raise BadPath("the path holds control characters, spaces or non-ASCII bytes; percent-encode them")
    if b"\\" in raw:
        raise BadPath("the path holds a backslash")
    if _ESCAPE.search(raw):
        raise BadPath("the path holds a malformed percent-escape")
    if _ENCODED_SLASH.search(raw):
        raise BadPath("the path holds an encoded slash or backslash (%2F, %5C)")
    decoded = unquote_to_bytes(raw)
    if _CONTROL.search(decoded):
        raise BadPath("the path holds an encoded control character")
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPath("the path is not UTF-8 once decoded") from None
    # No encoded slash got this far, so the raw segments are the decoded ones.
    if any(unquote_to_bytes(seg) in _DOTS for seg in raw.split(b"/")):
        raise BadPath("the path holds a dot segment (. or ..)")


def _registry_name(segment: bytes) -> bytes:
    try:
        name = unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise BadPath("the server name is not UTF-8 once decoded") from None
    # fullmatch: with match, the pattern's "$" would let a final "\n" through
    if _INVISIBLE.search(segment) or _ESCAPE.search(segment) or not REGISTRY_NAME.fullmatch(name):
        raise BadPath("not a registry server name (namespace/name, e.g. io.github.user%2Fweather)")
    return quote(name, safe="").encode("ascii")


def _raw_path(scope: dict[str, Any]) -> bytes:
    raw = scope.get("raw_path")
    if raw is None:  # optional in ASGI; every server the gateway runs on sets it
        raw = quote(scope["path"]).encode("ascii")
    return raw


def check_query(query_string: bytes) -> None:
    """The query is forwarded as sent, so it must be a valid URL part too (httptools already refuses
    most; a server that lets them through must not turn them into a 500 at the HTTP client)."""
    if query_string and _INVISIBLE.search(query_string):
        raise BadPath("the query holds control characters, spaces or non-ASCII bytes; percent-encode them")


def upstream_target(scope: dict[str, Any]) -> str:
    """What to put after a service's base URL for this request: the validated raw path and the query
    as the client sent them."""
    target = check(_raw_path(scope))
    query = scope.get("query_string", b"")
    if query:
        check_query(query)
        target += b"?" + query
    return target.decode("ascii")


class PathGuard:
    """Pure ASGI middleware: every request's raw path is checked before anything routes it (API
    routes, the MCP paths and their fast path, 404s); a refused path is a 400 problem+json."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            try:
                check(_raw_path(scope))
                check_query(scope.get("query_string", b""))
            except BadPath as exc:
                await problem(exc.status, exc.title, exc.detail)(scope, receive, send)
                return
        await self.app(scope, receive, send)
