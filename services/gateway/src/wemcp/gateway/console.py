"""The web console (``web/``, built into ``web/dist`` by ``make install``), served at ``/``.

The console is a single-page client of the same public API as everyone else: this module only hands
out files. ``/`` and the console's own paths answer ``index.html`` (no cache); ``/assets/...``
answers the built files (content-hashed URLs, cached for a year). Nothing here reads a request body
or a credential."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from wemcp.common.errors import NotFound, ServiceUnavailable
from wemcp.gateway.config import Settings
from wemcp.gateway.deps import GatewaySettings

router = APIRouter(include_in_schema=False)

# The console's pages (the History-API router in web/src/main.js); anything else is not the console's.
PAGES: tuple[str, ...] = ("/", "/servers/{slug}", "/guide", "/guide/{page}", "/signin", "/account", "/publish",
                          "/admin")
PAGES += ("/agents", "/agents/new", "/agents/{agent_id}")  # web/src/pages/agents.js
PAGES += ("/merchant",)  # web/src/pages/merchant.js
PAGES += ("/invite",)  # an invite link (auth's invites: /invite#code=…, the code never reaches a server)

# The page's own policy: scripts, styles and requests only from this origin; avatars are data: URIs.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"}
mimetypes.add_type("text/markdown; charset=utf-8", ".md")


def _root(settings: Settings) -> Path:
    root = settings.console_path
    if not (root / "index.html").is_file():
        raise ServiceUnavailable(f"the console is not built ({root}): run `make install`")
    return root


async def page(settings: GatewaySettings) -> Response:
    return FileResponse(_root(settings) / "index.html", media_type="text/html; charset=utf-8",
                        headers={**HEADERS, "Cache-Control": "no-cache"})


for _path in PAGES:
    router.add_api_route(_path, page, methods=["GET", "HEAD"])


@router.api_route("/assets/{path:path}", methods=["GET", "HEAD"])
async def asset(path: str, request: Request, settings: GatewaySettings) -> Response:
    base = (_root(settings) / "assets").resolve()
    target = (base / path).resolve()
    if not target.is_relative_to(base) or not target.is_file():
        raise NotFound(f"no asset {path!r}")
    cache = "public, max-age=31536000, immutable" if request.query_params.get("v") else "no-cache"
    return FileResponse(target, headers={"X-Content-Type-Options": "nosniff", "Cache-Control": cache})
