"""OAuth 2.0 client side with authlib: login through GitHub, Gitee and Google, and third-party
connections (any OAuth 2.0 provider an admin configures).

The authorization-code flow keeps its ``state`` (and the PKCE ``code_verifier``) server-side in
Redis, single-use and short-lived, so any auth process can finish a flow another one started and a
callback replayed with the same state is refused.

A state is also bound to the browser that started the flow: ``begin`` returns a random value the
caller puts in an HttpOnly cookie, and ``take_state`` wants it back. Without that, whoever starts a
flow can hand its authorization URL to someone else, whose provider account then ends up signed in
or linked to the starter's account (login CSRF), or whose third-party token lands in it.

The token, profile and refresh endpoints are reached through the platform's egress policy
(``wemcp.common.netpolicy``: public addresses only, checked at connect time; ``WEMCP_EGRESS_ALLOW``
names an internal identity provider on purpose): the code and the client secret never go to an
address inside the platform's network. A refused endpoint is a 400 problem.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from redis.asyncio import Redis

from wemcp.auth.config import ProviderConfig
from wemcp.common.errors import BadGateway, BadRequest
from wemcp.common.logging import get_logger
from wemcp.common.netpolicy import EgressPolicy, refusal_in

log = get_logger("wemcp.auth.oauth")
STATE_KEY = "auth:oauth_state:{}"
BROWSER_COOKIE = "wemcp_oauth_flow"
HTTP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Profile:
    provider: str
    subject: str
    login: str
    name: str | None
    email: str | None
    avatar_url: str | None
    raw: dict[str, Any]


def client_for(cfg: ProviderConfig | Any, client_secret: str, redirect_uri: str,
               egress: EgressPolicy | None = None) -> AsyncOAuth2Client:
    """``egress``: for clients that connect (token, refresh); building an authorization URL needs none."""
    return AsyncOAuth2Client(
        **_through(egress),
        client_id=cfg.client_id,
        client_secret=client_secret,
        scope=cfg.scope or None,
        redirect_uri=redirect_uri,
        token_endpoint_auth_method=cfg.token_endpoint_auth_method,
        code_challenge_method="S256" if cfg.pkce else None,
        timeout=HTTP_TIMEOUT,
    )


def _digest(browser: str) -> str:
    return hashlib.sha256(browser.encode()).hexdigest()


async def begin(redis: Redis, cfg: Any, client_secret: str, redirect_uri: str, ttl: int,
                **flow: Any) -> tuple[str, str]:
    """The provider's authorization URL and the browser binding (for the cookie ``BROWSER_COOKIE``);
    ``flow`` (who, why) is kept with the state, with the binding's digest."""
    state = secrets.token_urlsafe(32)
    browser = secrets.token_urlsafe(32)
    verifier = generate_token(64) if cfg.pkce else None
    async with client_for(cfg, client_secret, redirect_uri) as client:
        url, _ = client.create_authorization_url(cfg.authorize_url, state=state, code_verifier=verifier)
    await redis.set(STATE_KEY.format(state),
                    json.dumps({**flow, "verifier": verifier, "browser": _digest(browser)}), ex=ttl)
    return url, browser


async def take_state(redis: Redis, state: str | None, browser: str | None) -> dict[str, Any]:
    """The flow a ``state`` belongs to, consumed (a second callback with it fails), if ``browser``
    (the cookie) is the one its flow was started with."""
    if not state or len(state) > 200:
        raise BadRequest("missing or malformed state")
    raw = await redis.getdel(STATE_KEY.format(state))
    if raw is None:
        raise BadRequest("unknown or expired state; start the sign-in again")
    flow: dict[str, Any] = json.loads(raw)
    expected = str(flow.get("browser") or "")
    if not browser or len(browser) > 200 or not expected or not hmac.compare_digest(expected, _digest(browser)):
        raise BadRequest("this sign-in was not started in this browser; start it again here")
    return flow


def _through(egress: EgressPolicy | None) -> dict[str, Any]:
    return {} if egress is None else {"transport": egress.transport(), "trust_env": False}


def _refused(exc: BaseException, what: str) -> BadRequest | None:
    refused = refusal_in(exc)
    if refused is None:
        return None
    return BadRequest(f"the provider's {what} endpoint is refused: {refused}")


async def exchange(
    cfg: Any, client_secret: str, redirect_uri: str, code: str | None, verifier: str | None, *,
    egress: EgressPolicy,
) -> dict[str, Any]:
    if not code or len(code) > 2000:
        raise BadRequest("missing or malformed code")
    async with client_for(cfg, client_secret, redirect_uri, egress) as client:
        try:
            token = await client.fetch_token(
                cfg.token_url,
                grant_type="authorization_code",
                code=code,
                code_verifier=verifier,
                headers={"Accept": "application/json"},
            )
        except OAuthError as exc:
            raise BadRequest(f"the provider refused the code ({exc.error})") from None
        except Exception as exc:
            refused = _refused(exc, "token")
            if refused is not None:
                raise refused from None
            log.warning("oauth_token_exchange_failed", token_url=cfg.token_url, error=type(exc).__name__)
            raise BadGateway("the provider's token endpoint did not answer usefully") from None
    if not token.get("access_token"):
        raise BadRequest("the provider returned no access token")
    return dict(token)


async def refresh(cfg: Any, client_secret: str, token: dict[str, Any], *, egress: EgressPolicy) -> dict[str, Any]:
    async with client_for(cfg, client_secret, "", egress) as client:
        new = await client.refresh_token(cfg.token_url, refresh_token=token["refresh_token"])
    merged = dict(new)
    merged.setdefault("refresh_token", token["refresh_token"])  # providers may not rotate it
    return merged


async def fetch_profile(provider: str, cfg: ProviderConfig, token: dict[str, Any], *,
                        egress: EgressPolicy) -> Profile:
    async with AsyncOAuth2Client(client_id=cfg.client_id, token=token, timeout=HTTP_TIMEOUT,
                                 **_through(egress)) as client:
        try:
            r = await client.get(cfg.userinfo_url, headers={"Accept": "application/json"})
            if r.status_code != 200:
                raise BadGateway(f"the provider's profile endpoint answered {r.status_code}")
            data = r.json()
            if provider == "github" and not data.get("email") and cfg.emails_url:
                e = await client.get(cfg.emails_url, headers={"Accept": "application/json"})
                if e.status_code == 200:
                    primary = [m for m in e.json() if m.get("primary") and m.get("verified")]
                    data["email"] = primary[0]["email"] if primary else None
        except BadGateway:
            raise
        except Exception as exc:
            refused = _refused(exc, "profile")
            if refused is not None:
                raise refused from None
            log.warning("oauth_profile_failed", provider=provider, error=type(exc).__name__)
            raise BadGateway("the provider's profile endpoint did not answer usefully") from None
    return profile_from(provider, data)


def profile_from(provider: str, data: dict[str, Any]) -> Profile:
    if provider == "google":
        subject = str(data.get("sub") or "")
        email = data.get("email") if data.get("email_verified", True) else None
        login = (email or "").split("@")[0] or f"google-{subject[-8:]}"
        name, avatar = data.get("name"), data.get("picture")
    else:  # github and gitee share the shape: login, id, avatar_url, name, email
        subject = str(data.get("id") or "")
        login, name, email, avatar = (
            data.get("login") or "",
            data.get("name"),
            data.get("email"),
            data.get("avatar_url"),
        )
    if not subject:
        raise BadGateway("the provider's profile has no stable id")
    return Profile(provider, subject, str(login)[:80], name, email, avatar or None, data)
