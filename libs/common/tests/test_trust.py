"""The service assertion (wemcp.common.trust): signing, every way verification refuses, rotation, the
issuer's and verifier's caches, the runtime middleware and the production setting."""

from __future__ import annotations

import base64
import json
import time
import uuid
from unittest import mock

import httpx2 as httpx
import pytest
from fastapi import APIRouter

from wemcp.common.config import ServiceSettings, load_settings
from wemcp.common.errors import ConfigError
from wemcp.common.identity import CurrentUser, Identity, OptionalUser
from wemcp.common.service import Runtime, ServiceSpec, build_app
from wemcp.common.trust import (
    LEEWAY,
    MAX_LIFETIME,
    REUSE_SECONDS,
    BridgeGuard,
    InvalidAssertion,
    Issuer,
    KeyRing,
    Verifier,
    bridge_audience,
)

RING = KeyRing.parse("k2:second-secret-0123456789,k1:first-secret-0123456789")
ALICE = Identity(uuid.UUID(int=7), "admin", "alice")


def claims(**over) -> dict:
    now = int(time.time())
    return {"iss": "gateway", "aud": "catalog", "iat": now, "exp": now + 60, **over}


def test_a_signed_token_verifies_and_carries_the_identity():
    token = Issuer(RING, "gateway").token("catalog", ALICE)
    got = Verifier(RING, "catalog").verify(token)
    assert got.issuer == "gateway" and got.identity == ALICE
    assert Verifier(RING, "catalog").verify(Issuer(RING, "deployer").token("catalog")).identity is None
    assert token.startswith("v1.k2.")  # the first key signs


@pytest.mark.parametrize("bad", [
    "", "v1", "v1.k2.x", "v2.k2.e30.AAAA", "v1.k2.!!!.AAAA", "v1.k2.e30.!!!", "v1.nokid.e30.AAAA",
    "v1.k2.e30.AAAA.extra", "v1.k2.\u00e9.AAAA",
])
def test_malformed_tokens_are_401(bad):
    with pytest.raises(InvalidAssertion) as info:
        RING.verify(bad, "catalog")
    assert info.value.status == 401


def test_expired_future_and_overlong_tokens_are_refused():
    now = int(time.time())
    RING.verify(RING.sign(claims(iat=now - 100, exp=now - LEEWAY + 2)), "catalog")  # inside the skew bound
    for c, why in ((claims(iat=now - 100, exp=now - LEEWAY - 1), "expired"),
                   (claims(iat=now + LEEWAY + 5, exp=now + LEEWAY + 60), "future"),
                   (claims(iat=now, exp=now + MAX_LIFETIME + 1), "lifetime"),
                   (claims(iat=now, exp=now), "lifetime"),
                   (claims(iat="now"), "lifetime")):
        with pytest.raises(InvalidAssertion, match=why):
            RING.verify(RING.sign(c), "catalog")


def test_wrong_key_wrong_audience_and_tampering_are_refused():
    token = RING.sign(claims())
    other = KeyRing.parse("k2:another-secret-0123456789")  # same kid, another secret
    with pytest.raises(InvalidAssertion, match="signature"):
        other.verify(token, "catalog")
    with pytest.raises(InvalidAssertion, match="another receiver"):
        RING.verify(token, "auth")
    v, kid, payload, mac = token.split(".")
    raised = base64.urlsafe_b64encode(json.dumps({**claims(), "role": "superadmin", "sub": str(uuid.uuid4())})
                                      .encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidAssertion, match="signature"):
        RING.verify(f"{v}.{kid}.{raised}.{mac}", "catalog")
    with pytest.raises(InvalidAssertion, match="signature"):
        RING.verify(f"{v}.k1.{payload}.{mac}", "catalog")  # another kid of the ring: another key
    with pytest.raises(InvalidAssertion, match="identity"):
        Verifier(RING, "catalog").verify(RING.sign(claims(sub="x")))
    with pytest.raises(InvalidAssertion, match="identity"):
        Verifier(RING, "catalog").verify(RING.sign(claims(sub=str(uuid.uuid4()), role=["admin"])))


def test_rotation_prepend_roll_out_drop():
    old = KeyRing.parse("k1:first-secret-0123456789")
    token_old = old.sign(claims())
    both = KeyRing.parse("k2:second-secret-0123456789,k1:first-secret-0123456789")
    assert both.verify(token_old, "catalog")  # services already rolled out accept the old key's tokens
    token_new = both.sign(claims())
    assert old.verify(token_old, "catalog") and token_new.split(".")[1] == "k2"
    with pytest.raises(InvalidAssertion, match="unknown key"):
        old.verify(token_new, "catalog")  # why the new ring goes everywhere before it signs
    dropped = KeyRing.parse("k2:second-secret-0123456789")
    with pytest.raises(InvalidAssertion, match="unknown key"):
        dropped.verify(token_old, "catalog")


def test_key_ring_setting_and_repr():
    with pytest.raises(ValueError, match="kid:secret"):
        KeyRing.parse("nosecret")
    with pytest.raises(ValueError, match="shorter"):
        KeyRing.parse("k1:short")
    with pytest.raises(ValueError, match="twice"):
        KeyRing.parse("k1:0123456789abcdef,k1:0123456789abcdefg")
    with pytest.raises(ValueError, match="no keys"):
        KeyRing.parse(" , ")
    assert "second-secret" not in repr(RING) and "second-secret" not in repr(Issuer(RING, "x").ring)


def test_the_issuer_reuses_a_token_then_replaces_it_before_expiry():
    issuer = Issuer(RING, "gateway")
    t0 = 1_900_000_000.0
    with mock.patch("wemcp.common.trust.time.time", return_value=t0):
        first = issuer.token("catalog", ALICE)
        assert issuer.token("catalog", ALICE) is first  # cached: no signing per call
        assert issuer.token("auth", ALICE) != first and issuer.token("catalog") != first
    with mock.patch("wemcp.common.trust.time.time", return_value=t0 + REUSE_SECONDS - 1):
        assert issuer.token("catalog", ALICE) is first
    with mock.patch("wemcp.common.trust.time.time", return_value=t0 + REUSE_SECONDS):
        fresh = issuer.token("catalog", ALICE)
        assert fresh != first
        exp = RING.verify(fresh, "catalog")["exp"]
        assert exp - time.time() >= MAX_LIFETIME - 1  # a fresh token: a full lifetime ahead


def test_the_verifier_caches_until_expiry():
    verifier = Verifier(RING, "catalog")
    token = Issuer(RING, "gateway").token("catalog", ALICE)
    first = verifier.verify(token)
    with mock.patch.object(KeyRing, "verify", side_effect=AssertionError("not verified twice")):
        assert verifier.verify(token) is first
    with mock.patch("wemcp.common.trust.time.time", return_value=first.expires + LEEWAY + 1), \
            pytest.raises(InvalidAssertion, match="expired"):
        verifier.verify(token)


def test_bridge_keys_are_per_slug_and_reveal_nothing_of_the_ring():
    issuer = Issuer(RING, "gateway")
    guard = BridgeGuard(RING)
    token = issuer.bridge_token("weather")
    assert guard.check("weather", token) is None
    assert "another receiver" in (guard.check("maps", token) or "") or "signature" in (guard.check("maps", token) or "")
    assert guard.check("weather", None) is not None
    assert guard.check("weather", issuer.token(bridge_audience("weather"))) is not None  # platform key: refused
    derived = RING.derive(bridge_audience("weather"))
    assert derived.keys != RING.keys and [k for k, _ in derived.keys] == ["k2", "k1"]
    assert KeyRing.from_export(derived.export()) == derived
    # a function holding only its own derived keys verifies its own calls and nobody else's
    assert derived.verify(token, bridge_audience("weather"))
    with pytest.raises(InvalidAssertion):
        derived.verify(issuer.bridge_token("maps"), bridge_audience("weather"))


def test_production_refuses_to_start_without_service_keys(monkeypatch):
    monkeypatch.setenv("WEMCP_ENV", "production")
    for name, value in (("DATABASE_URL", "postgresql://u@db/wemcp"), ("NATS_URL", "nats://nats:4222"),
                        ("REDIS_URL", "redis://redis:6379/0")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WEMCP_SERVICE_KEYS", raising=False)
    with pytest.raises(ConfigError, match="WEMCP_SERVICE_KEYS must be set when WEMCP_ENV=production"):
        load_settings(ServiceSettings)
    monkeypatch.setenv("WEMCP_SERVICE_KEYS", "nope")
    with pytest.raises(ConfigError, match="WEMCP_SERVICE_KEYS: each entry"):
        load_settings(ServiceSettings)
    monkeypatch.setenv("WEMCP_SERVICE_KEYS", "p1:production-secret-0123456789")
    assert load_settings(ServiceSettings).key_ring.signing_kid == "p1"


router = APIRouter()


@router.get("/api/v1/who")
async def who(user: OptionalUser) -> dict:
    return {"user": str(user.user_id) if user else None, "role": user.role if user else None}


@router.get("/api/v1/me")
async def me(user: CurrentUser) -> dict:
    return {"user": str(user.user_id)}


@router.get("/internal/thing")
async def thing() -> dict:
    return {"ok": True}


async def test_the_runtime_middleware_guards_identity_and_internal_routes():
    settings = ServiceSettings(service_keys="k2:second-secret-0123456789")
    spec = ServiceSpec(name="catalog", title="t", routers=[router], uses_database=False, uses_bus=False)
    app = build_app(spec, Runtime(spec, settings))
    issuer = Issuer(settings.key_ring, "gateway")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        ok = await c.get("/api/v1/who", headers=issuer.headers("catalog", ALICE))
        assert ok.json() == {"user": str(ALICE.user_id), "role": "admin"}
        assert (await c.get("/api/v1/who")).json() == {"user": None, "role": None}  # anonymous stays anonymous
        assert (await c.get("/api/v1/me")).status_code == 401
        forged = await c.get("/api/v1/who", headers={"x-wemcp-user-id": str(ALICE.user_id),
                                                     "x-wemcp-user-role": "admin"})
        assert forged.status_code == 401 and forged.headers["content-type"] == "application/problem+json"
        # the assertion decides; headers beside it are ignored
        mixed = await c.get("/api/v1/who", headers={**issuer.headers("catalog", Identity(uuid.UUID(int=1))),
                                                    "x-wemcp-user-role": "superadmin"})
        assert mixed.json()["role"] == "user"
        assert (await c.get("/internal/thing")).status_code == 401
        assert (await c.get("/internal/thing", headers=issuer.headers("auth"))).status_code == 401  # not for us
        assert (await c.get("/internal/thing", headers=issuer.headers("catalog"))).json() == {"ok": True}
        assert (await c.get("/api/v1/who", headers={"x-wemcp-assertion": "junk"})).status_code == 401
