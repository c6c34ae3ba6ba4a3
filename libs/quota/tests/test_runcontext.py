"""Signed agent-run contexts (wemcp.quota.runcontext): a JWT on PyJWT, HS256, audience-bound,
signed by the first key of the ring."""

from __future__ import annotations

import base64
import json
import uuid

import jwt
import pytest

from wemcp.quota.config import check_run_secret
from wemcp.quota.runcontext import (
    AUDIENCE,
    InvalidRunContext,
    key_id,
    keyring,
    sign_run_context,
    signing_key,
    verify_run_context,
)

SECRET = "s" * 32
OTHER = "o" * 32
KEY, OTHER_KEY = signing_key(SECRET.encode()), signing_key(OTHER.encode())


def _reason(token, secret=SECRET, **kw) -> str:
    with pytest.raises(InvalidRunContext) as e:
        verify_run_context(token, secret, **kw)
    return e.value.reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_round_trip_and_binding_to_the_user():
    user, agent = uuid.uuid4(), uuid.uuid4()
    token = sign_run_context(SECRET, user_id=user, agent_id=agent, run_id="r1", servers=["b", "a", "a"],
                             ttl_seconds=10, now=1000)
    ctx = verify_run_context(token, SECRET, user_id=user, now=1009)
    assert (ctx.user_id, ctx.agent_id, ctx.run_id, ctx.issued_at, ctx.expires_at) == (
        str(user), str(agent), "r1", 1000, 1010)
    assert ctx.servers == {"a", "b"}
    assert _reason(token, user_id=uuid.uuid4(), now=1009) == "wrong_user"
    assert _reason(token, now=1010) == "expired"  # expired at exp exactly, as before


def test_the_token_is_a_jwt_with_the_same_claims_audience_and_key_id():
    token = sign_run_context(SECRET, user_id="u", agent_id="a", run_id="r", servers=["x"], ttl_seconds=60, now=5)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256" and header["kid"] == key_id(SECRET.encode())
    claims = jwt.decode(token, KEY, algorithms=["HS256"], audience=AUDIENCE, options={"verify_exp": False})
    assert claims == {"u": "u", "a": "a", "r": "r", "s": ["x"], "iat": 5, "exp": 65, "aud": AUDIENCE}


def test_a_tampered_token_is_refused():
    token = sign_run_context(SECRET, user_id="u", agent_id="a", run_id="r", servers=["x"])
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["s"] = ["x", "bank"]  # widen the servers it covers
    forged = f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"
    assert _reason(forged) == "bad_signature"
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert _reason(flipped) == "bad_signature"


def test_a_token_signed_with_another_secret_is_refused():
    token = sign_run_context(OTHER, user_id="u", agent_id="a", run_id="r")
    assert _reason(token) == "bad_signature"  # its kid is not in the ring
    # the same kid, another secret (a forger who copies the header)
    kid = key_id(SECRET.encode())
    forged = jwt.encode({"u": "u", "a": "a", "r": "r", "s": [], "iat": 0, "exp": 2**31, "aud": AUDIENCE},
                        OTHER_KEY, algorithm="HS256", headers={"kid": kid})
    assert _reason(forged) == "bad_signature"


def test_an_expired_token_is_refused():
    token = sign_run_context(SECRET, user_id="u", agent_id="a", run_id="r", ttl_seconds=60, now=1000)
    assert verify_run_context(token, SECRET, now=1059).run_id == "r"
    assert _reason(token, now=1060) == "expired"
    assert _reason(sign_run_context(SECRET, user_id="u", agent_id="a", run_id="r", ttl_seconds=1, now=0)) == "expired"


def test_a_token_for_another_audience_is_refused():
    kid = key_id(SECRET.encode())
    claims = {"u": "u", "a": "a", "r": "r", "s": ["x"], "iat": 0, "exp": 2**31}
    other = jwt.encode({**claims, "aud": "wemcp:something-else"}, KEY, algorithm="HS256", headers={"kid": kid})
    assert _reason(other, now=1) == "wrong_audience"
    none = jwt.encode(claims, KEY, algorithm="HS256", headers={"kid": kid})
    assert _reason(none, now=1) == "malformed"  # no audience at all


def test_only_hs256_is_accepted():
    kid = key_id(SECRET.encode())
    claims = {"u": "u", "a": "a", "r": "r", "s": [], "iat": 0, "exp": 2**31, "aud": AUDIENCE}
    unsigned = f"{_b64(json.dumps({'alg': 'none', 'kid': kid}).encode())}.{_b64(json.dumps(claims).encode())}."
    assert _reason(unsigned, now=1) in {"bad_signature", "malformed"}
    hs512 = jwt.encode(claims, KEY + KEY, algorithm="HS512", headers={"kid": kid})
    assert _reason(hs512, now=1) in {"bad_signature", "malformed"}


@pytest.mark.parametrize("token,reason", [
    ("", "malformed"), ("v1.abc", "malformed"), ("v2.a.b", "malformed"), ("v1.a.!!!", "malformed"),
    ("v1.eyJ1IjoxfQ.AAAA", "malformed"), ("x" * 5000, "malformed"), ("a.b", "malformed"),
])
def test_garbage_is_rejected(token, reason):
    assert _reason(token, now=0) == reason


def test_a_payload_that_is_not_a_run_context_is_malformed():
    kid = key_id(SECRET.encode())
    for claims in ({"a": "a", "r": "r", "iat": 0, "exp": 2**31, "aud": AUDIENCE},  # no user
                   {"u": "u", "a": "a", "r": "r", "s": "x", "iat": 0, "exp": 2**31, "aud": AUDIENCE},  # s not a list
                   {"u": "u", "a": "a", "r": "r", "s": [1], "iat": 0, "exp": 2**31, "aud": AUDIENCE}):
        token = jwt.encode(claims, KEY, algorithm="HS256", headers={"kid": kid})
        assert _reason(token, now=1) == "malformed"


def test_sixteen_long_server_slugs_fit_and_no_list_covers_nothing():
    servers = [f"{i:02d}" + "s" * 98 for i in range(16)]  # the agents service's limits: 16 refs, 100 chars
    token = sign_run_context(SECRET, user_id=str(uuid.uuid4()), agent_id=str(uuid.uuid4()), run_id=uuid.uuid4().hex,
                             servers=servers)
    assert verify_run_context(token, SECRET).servers == set(servers)
    assert verify_run_context(sign_run_context(SECRET, user_id="u", agent_id="a", run_id="r"), SECRET).servers == set()


def test_no_secret_accepts_nothing_and_signs_nothing():
    token = sign_run_context(SECRET, user_id="u", agent_id="a", run_id="r")
    assert _reason(token, "") == "no_secret"
    assert _reason(token, b"") == "no_secret"
    with pytest.raises(InvalidRunContext):
        sign_run_context("", user_id="u", agent_id="a", run_id="r")
    with pytest.raises(ValueError):
        sign_run_context(SECRET, user_id="u", agent_id="a", run_id="r", ttl_seconds=0)


def test_key_ring_rotation():
    old_only, both_old_first, both_new_first, new_only = SECRET, f"{SECRET},{OTHER}", f"{OTHER}, {SECRET}", OTHER
    by_old = sign_run_context(old_only, user_id="u", agent_id="a", run_id="r")
    # step 1: verifiers learn the new key second; old tokens still pass
    assert verify_run_context(by_old, both_old_first).run_id == "r"
    # step 2: the signer moves the new key first; verifiers on either ring accept its tokens
    by_new = sign_run_context(both_new_first, user_id="u", agent_id="a", run_id="r2")
    assert jwt.get_unverified_header(by_new)["kid"] == key_id(OTHER.encode())
    assert verify_run_context(by_new, both_old_first).run_id == "r2"
    assert verify_run_context(by_old, both_new_first).run_id == "r"
    # step 3: the old key is removed; its tokens stop counting as runs
    assert verify_run_context(by_new, new_only).run_id == "r2"
    assert _reason(by_old, new_only) == "bad_signature"


def test_keyring_parsing():
    ring = keyring(f" {SECRET} ,{OTHER}")
    assert ring.signing == (key_id(SECRET.encode()), KEY)
    assert ring.get(key_id(OTHER.encode())) == OTHER_KEY and ring.get("nope") is None
    assert len(signing_key(b"x" * 16)) == 32 and KEY != SECRET.encode()
    assert keyring(ring) is ring
    assert key_id(b"a") != key_id(b"b") and len(key_id(b"a")) == 12
    with pytest.raises(ValueError):
        keyring(f"{SECRET},,{OTHER}")


def test_settings_check_every_secret_of_the_ring():
    from pydantic import SecretStr

    assert check_run_secret(None) is None
    assert check_run_secret(SecretStr(f"{SECRET},{OTHER}")) is not None
    for bad in ("short", f"{SECRET},short"):
        with pytest.raises(ValueError):
            check_run_secret(SecretStr(bad))


def test_a_verified_token_is_checked_once_but_expiry_and_user_every_time(monkeypatch):
    from wemcp.quota import runcontext

    calls: list[str] = []
    real = runcontext._authentic
    monkeypatch.setattr(runcontext, "_authentic", lambda t, r: calls.append(t) or real(t, r))
    user = str(uuid.uuid4())
    token = sign_run_context(SECRET, user_id=user, agent_id="a", run_id="cached", ttl_seconds=60, now=1000)
    for _ in range(3):
        assert verify_run_context(token, SECRET, user_id=user, now=1001).run_id == "cached"
    assert calls == [token]  # PyJWT ran once
    assert _reason(token, user_id=str(uuid.uuid4()), now=1001) == "wrong_user"
    assert _reason(token, user_id=user, now=1060) == "expired"
    assert _reason(token, OTHER, user_id=user, now=1001) == "bad_signature"  # another ring: checked anew
    # (the last base64url character of the signature carries 2 unused bits: change one before it)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert _reason(flipped, user_id=user, now=1001) == "bad_signature"


def test_the_cache_is_bounded(monkeypatch):
    from wemcp.quota import runcontext

    monkeypatch.setattr(runcontext, "_VERIFIED_MAX", 3)
    runcontext._verified.clear()
    for i in range(7):
        verify_run_context(sign_run_context(SECRET, user_id="u", agent_id="a", run_id=str(i)), SECRET)
        assert len(runcontext._verified) <= 3
