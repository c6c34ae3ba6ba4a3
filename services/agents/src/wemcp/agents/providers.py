"""Model providers: which registered endpoint serves a model, and the HTTP calls to it.

A provider is any OpenAI-compatible endpoint (``<base_url>/chat/completions``). Failures become
clear errors: unreachable → 502, no answer within the timeout → 504, the provider's own 4xx → 400
(its message relayed), its 5xx → 502. The key is never logged; error texts are cut to 300 chars.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.agents import repository
from wemcp.agents.config import Settings
from wemcp.agents.errors import BadGateway, BadRequest, GatewayTimeout, NotFound, ServiceUnavailable, oai
from wemcp.agents.models import ModelProvider, provider_key_context
from wemcp.common.errors import TooManyRequests
from wemcp.common.logging import get_logger
from wemcp.common.sealing import SealError
from wemcp.common.sse import SseParser, SseTooLarge, aiter_events

log = get_logger("wemcp.agents.providers")

MAX_STREAM_EVENT = 16 * 1024 * 1024  # one event of a provider's stream (wemcp.common.sse bounds it)
HOW_TO_ADD = ('an admin adds one with POST /api/v1/model-providers {"name": "openai", '
              '"base_url": "https://api.openai.com/v1", "api_key": "sk-...", "models": ["gpt-4o-mini"]}')


@dataclass(frozen=True)
class ResolvedModel:
    provider: str
    base_url: str
    model: str  # the name the provider knows
    api_key: str | None

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc


async def list_models(session: AsyncSession) -> list[tuple[ModelProvider, str]]:
    rows = await repository.providers(session, enabled_only=True)
    return [(p, m) for p in rows for m in p.models]


async def resolve_model(session: AsyncSession, settings: Settings, model: str) -> ResolvedModel:
    """``model`` is a model name one provider lists, or ``<provider>/<model>`` to pick a provider."""
    pairs = await list_models(session)
    if not pairs:
        raise oai(ServiceUnavailable, f"no model provider is configured on this platform; {HOW_TO_ADD}",
                  "no_model_provider")
    match = None
    if "/" in model:
        pname, _, mname = model.partition("/")
        match = next(((p, m) for p, m in pairs if p.name == pname and m == mname), None)
    if match is None:
        match = next(((p, m) for p, m in pairs if m == model), None)
    if match is None:
        known = ", ".join(sorted({m for _, m in pairs}))[:500]
        raise oai(NotFound, f"the model {model!r} is not served here; GET /v1/models lists them ({known})",
                  "model_not_found", param="model")
    p, m = match
    key = None
    if p.api_key_sealed:
        ring = settings.provider_keyring()
        if ring is None:
            raise oai(ServiceUnavailable, f"model provider {p.name!r} has a stored key but "
                      "WEMCP_AGENTS_PROVIDER_KEY_SECRET is not set", "provider_key_unavailable")
        try:
            key = ring.open(p.api_key_sealed, provider_key_context(p.id)).decode()
        except SealError as exc:
            raise oai(ServiceUnavailable, f"model provider {p.name!r}: {exc}", "provider_key_unavailable") from None
    return ResolvedModel(p.name, p.base_url.rstrip("/"), m, key)


class ProviderClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.provider_timeout_seconds, connect=settings.provider_connect_timeout_seconds),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50), follow_redirects=False)

    async def aclose(self) -> None:
        await self.http.aclose()

    def _headers(self, m: ResolvedModel) -> dict[str, str]:
        h = {"content-type": "application/json", "accept": "application/json"}
        if m.api_key:
            h["authorization"] = f"Bearer {m.api_key}"
        return h

    def _transport_error(self, m: ResolvedModel, exc: Exception) -> Exception:
        if isinstance(exc, httpx.TimeoutException):
            what = "connect" if isinstance(exc, httpx.ConnectTimeout) else "answer"
            limit = (self.settings.provider_connect_timeout_seconds if what == "connect"
                     else self.settings.provider_timeout_seconds)
            log.warning("provider_timeout", provider=m.provider, host=m.host, phase=what)
            return oai(GatewayTimeout, f"model provider {m.provider!r} ({m.host}) did not {what} within "
                       f"{limit:g} s (WEMCP_AGENTS_PROVIDER_TIMEOUT_SECONDS); try again later",
                       "provider_timeout")
        log.warning("provider_unreachable", provider=m.provider, host=m.host, error=type(exc).__name__)
        return oai(BadGateway, f"model provider {m.provider!r} ({m.host}) is unreachable: "
                   f"{type(exc).__name__}; check its base_url or try again later", "provider_unreachable")

    def _status_error(self, m: ResolvedModel, status: int, body: bytes) -> Exception:
        message = body[:300].decode("utf-8", "replace")
        try:
            parsed = json.loads(body)
            err = parsed.get("error") if isinstance(parsed, dict) else None
            if isinstance(err, dict) and err.get("message"):
                message = str(err["message"])[:300]
            elif isinstance(err, str):
                message = err[:300]
        except ValueError:
            pass
        text = f"model provider {m.provider!r} answered {status}: {message}"
        if status == 429:
            return oai(TooManyRequests, text, "provider_rate_limited")
        if status in (401, 403):
            return oai(BadGateway, f"model provider {m.provider!r} rejected the platform's key ({status}); "
                       "an admin should update it", "provider_auth_failed")
        if 400 <= status < 500:
            return oai(BadRequest, text, "provider_rejected_request")
        return oai(BadGateway, text, "provider_error")

    async def complete(self, m: ResolvedModel, body: dict[str, Any]) -> dict[str, Any]:
        try:
            r = await self.http.post(f"{m.base_url}/chat/completions", json={**body, "model": m.model,
                                                                              "stream": False},
                                     headers=self._headers(m))
        except httpx.TransportError as exc:
            raise self._transport_error(m, exc) from None
        if r.status_code >= 400:
            raise self._status_error(m, r.status_code, r.content)
        try:
            data = r.json()
            if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
                raise ValueError("no choices")
        except ValueError:
            raise oai(BadGateway, f"model provider {m.provider!r} sent a malformed completion",
                      "provider_malformed") from None
        return data

    async def stream(self, m: ResolvedModel, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The provider's stream as parsed chunks. Errors raised before the first chunk surface as
        HTTP errors; later ones are sent as an SSE ``error`` event by the caller."""
        payload = {**body, "model": m.model, "stream": True, "stream_options": {"include_usage": True}}
        try:
            async with self.http.stream("POST", f"{m.base_url}/chat/completions", json=payload,
                                        headers={**self._headers(m), "accept": "text/event-stream"}) as r:
                if r.status_code >= 400:
                    raise self._status_error(m, r.status_code, await r.aread())
                async for event in aiter_events(r.aiter_bytes(), SseParser(MAX_STREAM_EVENT), dispatch_incomplete=True):
                    data = event.data.strip()
                    if data == b"[DONE]":
                        return
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise oai(BadGateway, f"model provider {m.provider!r} sent a malformed stream chunk",
                                  "provider_malformed") from None
                    if isinstance(chunk, dict) and "error" in chunk:
                        err = chunk["error"]
                        msg = err.get("message") if isinstance(err, dict) else str(err)
                        raise oai(BadGateway, f"model provider {m.provider!r} failed mid-stream: {str(msg)[:300]}",
                                  "provider_error")
                    if isinstance(chunk, dict):
                        yield chunk
        except SseTooLarge:
            raise oai(BadGateway, f"model provider {m.provider!r} sent a stream event over 16 MiB",
                      "provider_malformed") from None
        except httpx.TransportError as exc:
            raise self._transport_error(m, exc) from None
