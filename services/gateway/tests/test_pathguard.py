"""pathguard.check: which raw paths the gateway forwards, and as what (pure; no server)."""

from __future__ import annotations

import re

import pytest

from wemcp.gateway.pathguard import REGISTRY_NAME, BadPath, PathGuard, check, check_query, upstream_target

FORWARDED_AS_SENT = [
    b"/",
    b"/mcp/weather",
    b"/mcp/weather/",
    b"/mcp/my.server_v2-x",
    b"/mcp/weather/sse",
    b"/api/v1/servers/search",
    b"/api/v1/servers/a%20b",  # an encoded space
    b"/api/v1/servers/caf%C3%A9",  # encoded UTF-8
    b"/api/v1/servers/%E2%9C%93",
    b"/api/v1/servers/a%3Fb%23c",  # encoded ? and #: data, not syntax, and stay encoded upstream
    b"/api/v1/servers/a%252e%252e",  # a double-encoded dot is a literal "%2e" once decoded
    b"/api/v1/news/.well-known",
    b"/api/v1/x/...",  # three dots are a name, not a dot segment
    b"/api/v1/x/.a/a./..b/b..",
    b"/api/v1//servers",  # an empty segment is not a traversal
    b"/v0.1/servers/io.github.user/weather/versions",  # the unencoded form of a registry name
    b"/v0.1/servers",
]

DOT_SEGMENTS = [
    b"/.", b"/..", b"/./", b"/../", b"/api/v1/me/../../../internal/auth/vault/x",
    b"/api/v1/me/./x", b"/v1/..", b"/v0.1/../internal/archives/x", b"/mcp/..", b"/mcp/../",
    b"/api/v1/me/%2e%2e/%2e%2e/internal", b"/api/v1/me/%2E%2E/x", b"/api/v1/me/%2e%2E/x",
    b"/api/v1/me/.%2e/x", b"/api/v1/me/%2e./x", b"/api/v1/me/%2e/x", b"/mcp/%2e%2e", b"..", b".",
    b"/v0.1/servers/io.github.user%2Fweather/../x",
]

ENCODED_SLASHES = [
    b"/api/v1/me%2f..%2f..%2finternal", b"/api/v1/me%2F%2e%2e%2F%2e%2e%2Finternal/auth/vault/x",
    b"/api/v1/servers/a%2fb", b"/api/v1/servers/a%5cb", b"/api/v1/servers/a%5Cb", b"/mcp/a%2Fb",
    b"/v1/a%2Fb", b"/v0.1/x/io.github.user%2Fweather",  # the exception is only right after /v0.1/servers/
    b"/api/v1/me/..\\..\\internal", b"/api/v1/servers/a\\b",
]

CONTROL = [
    b"/api/v1/servers/%00", b"/api/v1/servers/a%0ab", b"/api/v1/servers/a%0Db", b"/api/v1/servers/%09",
    b"/api/v1/servers/%1f", b"/api/v1/servers/%7f", b"/api/v1/servers/%7F", b"/mcp/a%00",
    b"/api/v1/servers/a\x00b", b"/api/v1/servers/a\nb", b"/api/v1/servers/a b", b"/api/v1/servers/a\x7fb",
    b"/api/v1/servers/a\tb",
]

NOT_UTF8 = [
    b"/api/v1/servers/%ff", b"/api/v1/servers/%FF%FE", b"/api/v1/servers/%C3", b"/api/v1/servers/%C3%28",
    b"/api/v1/servers/%ED%A0%80",  # a UTF-16 surrogate, encoded
    b"/api/v1/servers/\xff", b"/api/v1/servers/caf\xc3\xa9",  # raw bytes >= 0x80 are never valid in a path
    b"/v0.1/servers/%ff%2Fx",
]

MALFORMED_ESCAPES = [b"/api/v1/servers/%", b"/api/v1/servers/%4", b"/api/v1/servers/%zz", b"/api/v1/a%g0"]


@pytest.mark.parametrize("raw", FORWARDED_AS_SENT)
def test_ordinary_paths_are_forwarded_as_sent(raw):
    assert check(raw) is raw


@pytest.mark.parametrize("raw", DOT_SEGMENTS + ENCODED_SLASHES + CONTROL + NOT_UTF8 + MALFORMED_ESCAPES)
def test_ambiguous_paths_are_refused(raw):
    with pytest.raises(BadPath) as info:
        check(raw)
    assert info.value.status == 400


@pytest.mark.parametrize(("raw", "reason"), [
    (DOT_SEGMENTS[4], "dot segment"), (DOT_SEGMENTS[10], "dot segment"), (ENCODED_SLASHES[0], "encoded slash"),
    (ENCODED_SLASHES[-1], "backslash"), (CONTROL[0], "control character"), (CONTROL[-2], "control characters"),
    (NOT_UTF8[0], "not UTF-8"), (MALFORMED_ESCAPES[0], "malformed"),
])
def test_the_refusal_names_the_reason(raw, reason):
    with pytest.raises(BadPath, match=reason):
        check(raw)


@pytest.mark.parametrize(("raw", "forwarded"), [
    (b"/v0.1/servers/io.github.user%2Fweather", b"/v0.1/servers/io.github.user%2Fweather"),
    (b"/v0.1/servers/io.github.user%2fweather/versions", b"/v0.1/servers/io.github.user%2Fweather/versions"),
    (b"/v0.1/servers/io%2Egithub.user%2Fweather/versions/1.0.0",
     b"/v0.1/servers/io.github.user%2Fweather/versions/1.0.0"),
    (b"/v0.1/servers/com.example%2Fmy_server-2/versions/latest",
     b"/v0.1/servers/com.example%2Fmy_server-2/versions/latest"),
])
def test_a_registry_name_is_decoded_checked_and_re_encoded(raw, forwarded):
    assert check(raw) == forwarded
    assert check(forwarded) == forwarded  # canonical: checking again changes nothing


@pytest.mark.parametrize("raw", [
    b"/v0.1/servers/..%2F..", b"/v0.1/servers/a%2F..", b"/v0.1/servers/%2e%2e%2Fx", b"/v0.1/servers/a%2Fb%2Fc",
    b"/v0.1/servers/a%2F", b"/v0.1/servers/%2Fa", b"/v0.1/servers/a%2Fb%00", b"/v0.1/servers/a%2Fb%0a",
    b"/v0.1/servers/a%5Cb", b"/v0.1/servers/a%2Fb\\c", b"/v0.1/servers/a%2Fb%", b"/v0.1/servers/a b%2Fc",
    b"/v0.1/servers/io.github.user%2Fweather/%2e%2e/x", b"/v0.1/servers/io.github.user%2Fweather/a%2Fb",
    b"/v0.1/servers/" + b"a" * 102 + b"%2Fb",
])
def test_a_registry_name_that_is_not_one_is_refused(raw):
    with pytest.raises(BadPath):
        check(raw)


def test_registry_name_syntax_is_the_catalogs():
    from wemcp.catalog.schemas import NAME_RE

    assert REGISTRY_NAME.pattern == NAME_RE


@pytest.mark.parametrize("byte", range(256))
def test_every_single_byte_in_a_segment(byte):
    """Raw and percent-encoded, every byte value: forwarded only when it is visible ASCII that is
    not a backslash or a bare percent, or (encoded) anything but a control, slash or backslash, or a
    lone UTF-8 continuation/lead byte."""
    raw = b"/api/v1/servers/a" + bytes([byte]) + b"z"
    ok = 0x21 <= byte <= 0x7e and byte not in (0x25, 0x5c)
    if ok:
        assert check(raw) is raw
    else:
        with pytest.raises(BadPath):
            check(raw)
    encoded = b"/api/v1/servers/a%" + f"{byte:02X}".encode() + b"z"
    ok = 0x20 <= byte <= 0x7e and byte not in (0x2f, 0x5c)
    if ok:
        assert check(encoded) is encoded
        assert check(encoded.lower()) == encoded.lower()
    else:
        with pytest.raises(BadPath):
            check(encoded)


def test_query_is_forwarded_as_sent_or_refused():
    check_query(b"")
    check_query(b"server=weather&q=a%00b%2F..%2F")  # encoded: data for the service to validate
    for bad in (b"a=\x00", b"a=b c", b"a=\xff", b"a=\n"):
        with pytest.raises(BadPath):
            check_query(bad)


def test_upstream_target_is_the_raw_path_and_query():
    scope = {"type": "http", "path": "/api/v1/servers/a b", "raw_path": b"/api/v1/servers/a%20b",
             "query_string": b"x=%2e%2e"}
    assert upstream_target(scope) == "/api/v1/servers/a%20b?x=%2e%2e"
    scope = {"type": "http", "path": "/v0.1/servers/io.github.user/weather",
             "raw_path": b"/v0.1/servers/io.github.user%2fweather", "query_string": b""}
    assert upstream_target(scope) == "/v0.1/servers/io.github.user%2Fweather"
    # no raw_path (optional in ASGI): the decoded path, re-encoded, so a decoded ".." still counts
    with pytest.raises(BadPath):
        upstream_target({"type": "http", "path": "/api/v1/me/../x", "query_string": b""})


async def test_the_middleware_answers_400_problem_before_the_app():
    reached: list[str] = []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    guard = PathGuard(app)
    await guard({"type": "http", "method": "GET", "path": "/mcp/..", "raw_path": b"/mcp/%2e%2e",
                 "query_string": b"", "headers": []}, None, send)
    assert reached == []
    assert sent[0]["status"] == 400
    assert (b"content-type", b"application/problem+json") in sent[0]["headers"]
    assert re.search(rb'"status":\s*400', sent[1]["body"])
    await guard({"type": "http", "method": "GET", "path": "/mcp/x", "raw_path": b"/mcp/x",
                 "query_string": b"", "headers": []}, None, send)
    assert reached == ["/mcp/x"]
