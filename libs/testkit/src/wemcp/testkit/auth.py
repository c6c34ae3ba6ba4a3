"""Test support (used by the auth tests, the e2e tests and the benchmarks): a real OAuth 2.0
authorization server on loopback standing in for GitHub, Gitee and Google (authorize, token with
PKCE and refresh, profile endpoints), a helper to serve an ASGI app on a loopback port, and a helper
to walk a browser through a sign-in. Not imported by the service itself."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2 as httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from wemcp.auth.config import ProviderConfig
from wemcp.common.identity import Identity
from wemcp.common.trust import platform_headers

CLIENT_ID, CLIENT_SECRET = "wemcp-test-client", "test-client-secret-value"


@dataclass
class LoopbackProvider:
    """A small OAuth 2.0 authorization server. Tests set ``profile`` to the account that "signs in"."""

    base_url: str = ""
    profile: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    access: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh: dict[str, dict[str, Any]] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    expires_in: int = 3600

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/user", self.user),
                Route("/user/emails", self.emails),
                Route("/userinfo", self.userinfo),
            ]
        )

    async def authorize(self, request: Request) -> RedirectResponse:
        q = dict(request.query_params)
        self.authorize_requests.append(q)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "client_id": q.get("client_id"),
            "redirect_uri": q.get("redirect_uri"),
            "challenge": q.get("code_challenge"),
            "method": q.get("code_challenge_method"),
            "profile": dict(self.profile),
            "used": False,
        }
        return RedirectResponse(
            f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}", 302
        )

    def _error(self, error: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": error}, status_code=status)

    def _issue(self, profile: dict[str, Any]) -> JSONResponse:
        at, rt = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        self.access[at] = profile
        self.refresh[rt] = profile
        return JSONResponse(
            {
                "access_token": at,
                "token_type": "bearer",
                "expires_in": self.expires_in,
                "refresh_token": rt,
                "scope": "read",
            }
        )

    async def token(self, request: Request) -> JSONResponse:
        # the token endpoint takes application/x-www-form-urlencoded: every value is a str (no UploadFile)
        form = cast("dict[str, str]", dict(await request.form()))
        self.token_requests.append(form)
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if "authorization" in request.headers:
            raw = base64.b64decode(request.headers["authorization"].split(" ", 1)[1]).decode()
            client_id, _, secret = raw.partition(":")
        if client_id != CLIENT_ID or secret != CLIENT_SECRET:
            return self._error("invalid_client", 401)
        if form.get("grant_type") == "refresh_token":
            profile = self.refresh.pop(form.get("refresh_token", ""), None)
            return self._issue(profile) if profile is not None else self._error("invalid_grant")
        grant = self.codes.get(form.get("code", ""))
        if grant is None or grant["used"]:
            return self._error("invalid_grant")  # a code works once
        grant["used"] = True
        if grant["redirect_uri"] != form.get("redirect_uri"):
            return self._error("invalid_grant")
        if grant["challenge"]:
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
            if grant["method"] != "S256" or digest != grant["challenge"]:
                return self._error("invalid_grant")
        return self._issue(grant["profile"])

    def _who(self, request: Request) -> dict[str, Any] | None:
        auth = request.headers.get("authorization", "")
        return self.access.get(auth.split(" ", 1)[1]) if auth.lower().startswith("bearer ") else None

    async def user(self, request: Request) -> JSONResponse:
        p = self._who(request)
        if p is None:
            return self._error("invalid_token", 401)
        return JSONResponse({k: p.get(k) for k in ("login", "id", "avatar_url", "name", "email")})

    async def emails(self, request: Request) -> JSONResponse:
        p = self._who(request)
        if p is None:
            return self._error("invalid_token", 401)
        return JSONResponse([{"email": p.get("private_email"), "primary": True, "verified": True}])

    async def userinfo(self, request: Request) -> JSONResponse:
        p = self._who(request)
        if p is None:
            return self._error("invalid_token", 401)
        return JSONResponse(
            {
                "sub": str(p["id"]),
                "email": p.get("email"),
                "email_verified": True,
                "name": p.get("name"),
                "picture": p.get("avatar_url"),
            }
        )

    def config(self, *, pkce: bool, google: bool = False) -> ProviderConfig:
        return ProviderConfig(
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            authorize_url=f"{self.base_url}/authorize",
            token_url=f"{self.base_url}/token",
            userinfo_url=f"{self.base_url}/{'userinfo' if google else 'user'}",
            emails_url=None if google else f"{self.base_url}/user/emails",
            scope="read",
            pkce=pkce,
        )


def as_user(user: dict[str, Any], service: str = "auth") -> dict[str, str]:
    """What the gateway sends ``service`` after verifying ``user`` (``{"id", "role", "login"}``, as
    auth's API returns users): its signed service assertion (wemcp.common.trust), made with the
    environment's ``WEMCP_SERVICE_KEYS`` (the pytest plugin sets them per session)."""
    ident = Identity(user_id=uuid.UUID(str(user["id"])), role=user.get("role", "user"), login=user.get("login", ""))
    return platform_headers(service, ident, issuer="gateway")


async def browser_login(
    client: httpx.AsyncClient,
    provider_name: str = "github",
    *,
    headers: dict[str, str] | None = None,
    query: str = "",
    link_as: dict[str, Any] | None = None,
) -> httpx.Response:
    """Walk a browser through: /login -> provider /authorize -> /callback. Returns the callback
    response. ``client`` is the browser: its cookie jar carries the flow's cookie from the start to
    the callback. ``link_as`` (a user): link the provider account to that signed-in user instead
    (``POST /auth/{provider}/link`` with the user's identity, then the same walk)."""
    if link_as is not None:
        started = await client.post(f"/api/v1/auth/{provider_name}/link", headers={**as_user(link_as),
                                                                                  **(headers or {})})
        assert started.status_code == 200, started.text
        authorization_url = started.json()["authorization_url"]
    else:
        start = await client.get(f"/api/v1/auth/{provider_name}/login{query}", headers=headers or {})
        assert start.status_code == 302, start.text
        authorization_url = start.headers["location"]
    async with httpx.AsyncClient() as browser:
        at_provider = await browser.get(authorization_url)
    assert at_provider.status_code == 302, at_provider.text
    back = urlsplit(at_provider.headers["location"])
    return await client.get(f"{back.path}?{back.query}", headers=headers or {})


def callback_params(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def new_id() -> int:
    return uuid.uuid4().int % 10**9
