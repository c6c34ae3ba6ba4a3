"""The gateway forwards only paths it validated (issue 13, item 1), against the real platform.

Each attack is sent byte for byte (``platform_kit.raw_request``: no client-side normalisation, as
``curl --path-as-is``) to a real gateway process in front of real services. Before the fix the
gateway joined the *decoded* path to the service's URL and the HTTP client resolved the dot
segments: ``/api/v1/me/../../../internal/auth/vault/<nil uuid>?server=<slug>`` returned the
decrypted system key to anyone, and control characters in a path were a 500.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import httpx2 as httpx
import pytest

from tests.security.platform_kit import RawResponse, platform, raw_request, superadmin_key

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

NIL = "00000000-0000-0000-0000-000000000000"  # the system principal: its vault holds the system keys
SLUG = "weather-path-test"
SECRET = "sk-path-test-" + uuid.uuid4().hex
ARCHIVE = b"stored archive " + uuid.uuid4().hex.encode()
DIGEST = hashlib.sha256(ARCHIVE).hexdigest()


@pytest.fixture(scope="module")
async def gw(request):
    """The platform, with a system key stored (as an admin does) and a source archive stored in the
    catalog: what the traversals went after."""
    stack = platform(request.config)
    admin = superadmin_key(stack, "paths-admin")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.gateway_port}", timeout=30) as c:
        r = await c.put("/api/v1/vault/system", headers={"Authorization": f"Bearer {admin}"},
                        json={"server": SLUG, "name": "API_KEY", "value": SECRET})
        assert r.status_code == 200, r.text
    await _store_archive(stack.database_url)
    return stack


async def _store_archive(database_url: str) -> None:
    from wemcp.catalog.models import Archive
    from wemcp.common.db import make_engine, make_session_factory

    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_session_factory(engine)() as s, s.begin():
            s.add(Archive(sha256=DIGEST, size=len(ARCHIVE), expanded_size=len(ARCHIVE), entries=1, format="tar.gz",
                          manifest={}, data=ARCHIVE))
    finally:
        await engine.dispose()


def refused(r: RawResponse, secret: bytes | None = None) -> None:
    """A 400 problem+json from the gateway, with nothing of the target in it."""
    assert r.status == 400, (r.status, r.body[:300])
    assert r.content_type.startswith("application/problem+json"), r.content_type
    assert json.loads(r.body)["status"] == 400
    if secret is not None:
        assert secret not in r.body


VAULT = f"internal/auth/vault/{NIL}?server={SLUG}".encode()
TRAVERSALS = {
    "raw": b"/api/v1/me/../../../" + VAULT,
    "encoded": b"/api/v1/me/%2e%2e/%2e%2e/%2e%2e/" + VAULT,
    "encoded-mixed-case": b"/api/v1/me/%2e%2E/%2E%2e/.%2e/" + VAULT,
    "services-prefix": b"/api/v1/services/auth/../../../../" + VAULT,
}


@pytest.mark.parametrize("name", list(TRAVERSALS))
async def test_dot_segments_on_api_v1_do_not_reach_the_vault(gw, name):
    """``curl --path-as-is .../api/v1/me/../../../internal/auth/vault/<nil>?server=<slug>``: the
    decrypted system key, to anyone signed out."""
    r = await raw_request(gw.gateway_port, "GET", TRAVERSALS[name])
    refused(r, SECRET.encode())


@pytest.mark.parametrize("target", [b"/v0.1/../internal/archives/" + DIGEST.encode(),
                                    b"/v0.1/%2e%2e/internal/archives/" + DIGEST.encode(),
                                    b"/v0.1/servers/%2E%2E/%2E%2E/internal/archives/" + DIGEST.encode()],
                         ids=["raw", "encoded", "encoded-upper"])
async def test_dot_segments_on_v0_1_do_not_reach_stored_archives(gw, target):
    """The registry API is the catalog's: a traversal there read its internal archive store."""
    r = await raw_request(gw.gateway_port, "GET", target)
    refused(r, ARCHIVE)


@pytest.mark.parametrize("target", [b"/v1/../openapi.json", b"/v1/%2e%2e/openapi.json",
                                    b"/v1/agents/%2e%2e/%2e%2e/openapi.json", b"/mcp/agents/%2e%2e",
                                    b"/mcp/%2e%2e", b"/mcp/..", b"/mcp/../api/v1/servers",
                                    b"/nothing/../v1/models"],
                         ids=["v1-raw", "v1-encoded", "v1-deep", "mcp-agents", "mcp-encoded", "mcp-raw",
                              "mcp-up", "404-path"])
async def test_dot_segments_anywhere_are_refused(gw, target):
    """``/v1`` is the agents service's: a traversal reached paths it never exposes publicly (its own
    OpenAPI document); the MCP paths and unknown paths get the same treatment before routing."""
    r = await raw_request(gw.gateway_port, "GET", target)
    refused(r, b"WeMcp agents")


@pytest.mark.parametrize("target", [
    b"/api/v1/me%2f..%2f..%2f..%2f" + VAULT,
    b"/api/v1/me%2F%2e%2e%2F%2e%2e%2F%2e%2e%2F" + VAULT,
    b"/api/v1/me/..%5c..%5c..%5c" + VAULT,
    b"/api/v1/me/..\\..\\..\\" + VAULT,
    b"/v0.1/servers%2f..%2f..%2finternal/archives/" + DIGEST.encode(),
    b"/mcp/agents%2F..%2F..%2Fopenapi.json",
], ids=["slash", "slash-upper", "encoded-backslash", "backslash", "v0.1", "mcp"])
async def test_encoded_slashes_and_backslashes_are_refused(gw, target):
    """An encoded slash is a segment boundary the gateway's router does not see (and the service's
    decoder, or the next proxy, may); combined with dot segments it reached the vault."""
    r = await raw_request(gw.gateway_port, "GET", target)
    refused(r, SECRET.encode())


@pytest.mark.parametrize("target", [
    b"/api/v1/servers/%00", b"/api/v1/servers/a%0ab", b"/api/v1/servers/a%0D%0Ax-injected:%201",
    b"/api/v1/users/%1f", b"/api/v1/deployments/%7f", b"/v1/models/%00", b"/v1/agents/%0a",
    b"/v0.1/servers/%00/versions", b"/mcp/%00", b"/mcp/agents/%0a", b"/mcp/x%09/sse",
])
async def test_control_characters_are_a_400_not_a_500(gw, target):
    """Control characters in a path parameter: the HTTP client refused the URL the gateway built
    (``InvalidURL``) and the gateway answered 500 (the schemathesis run's 26 distinct 500s)."""
    r = await raw_request(gw.gateway_port, "GET", target)
    refused(r)


@pytest.mark.parametrize("target", [b"/api/v1/servers/%ff", b"/api/v1/servers/caf%C3", b"/v1/models/%C3%28",
                                    b"/v0.1/servers/%ff%2Fx/versions", b"/mcp/%ED%A0%80",
                                    b"/api/v1/servers/\xff", b"/api/v1/servers/caf\xc3\xa9"],
                         ids=["ff", "truncated", "invalid-continuation", "registry-name", "surrogate",
                              "raw-ff", "raw-utf8"])
async def test_paths_that_are_not_utf8_are_refused(gw, target):
    """A path that does not decode as UTF-8 was forwarded with U+FFFD substituted (what the
    service saw was not what the client sent); raw non-ASCII bytes got uvicorn's text/plain 400."""
    r = await raw_request(gw.gateway_port, "GET", target)
    refused(r)


async def test_registry_names_with_an_encoded_slash_still_reach_the_catalog(gw):
    """The one encoded slash that passes: a registry server name under ``/v0.1/servers/``, as the
    official registry's clients send it; decoded, checked and re-encoded."""
    for target in (b"/v0.1/servers/io.github.nobody%2Fnothing/versions",
                   b"/v0.1/servers/io.github.nobody%2fnothing/versions/latest"):
        r = await raw_request(gw.gateway_port, "GET", target)
        # the catalog's answer, about the decoded name: it got there, as one segment
        assert r.status == 404, (target, r.status, r.body[:300])
        assert "io.github.nobody/nothing" in json.loads(r.body)["detail"], r.body
    r = await raw_request(gw.gateway_port, "GET", b"/v0.1/servers/io.github..%2F..%2Fx/versions")
    refused(r)


@pytest.mark.parametrize("target", [b"/api/v1/categories", b"/v1/models", b"/v0.1/servers?limit=1",
                                    b"/api/v1/servers/no-such-server", b"/healthz", b"/mcp/no-such-server",
                                    b"/api/v1/me/%2e%2e"])
async def test_each_response_header_appears_once(gw, target):
    """Proxied responses carried ``date`` and ``x-request-id`` twice: the service's, copied by the
    proxy, and the gateway's own (uvicorn's date, the request-id middleware)."""
    r = await raw_request(gw.gateway_port, "GET", target, headers={"x-request-id": "req-" + uuid.uuid4().hex})
    assert r.status < 500, (r.status, r.body[:300])
    names = [k for k, _ in r.headers]
    assert len(r.header(b"date")) == 1, r.headers
    assert len(r.header(b"x-request-id")) == 1, r.headers
    assert len(names) == len(set(names)) or b"set-cookie" in names, r.headers
