"""Benchmark: identity verification at the gateway (wemcp.gateway.identity.Verifier).

Measures, per request, in one process on one core:
  1. JWT verification, cold: a token never seen before (header parse, kid lookup, Ed25519 verify,
     claim checks) -- the cost of the first request with a token;
  2. JWT verification, warm: the same token again (memoised until it expires);
  3. the whole verifier call on a Starlette Request carrying ``Authorization: Bearer <jwt>``;
  4. platform API key, warm cache (sha256 + dict lookup), via ``X-API-Key``.
The JWKS and the API-key resolve answer come from an in-memory transport standing in for the auth
service (only the cold fill touches it; the figures are for warm caches, as on the hot path).

Run: .venv/bin/python bench/auth_verifier.py [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import uuid

import httpx2 as httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.requests import Request

from wemcp.common.trust import Issuer, environment_ring
from wemcp.gateway.identity import Verifier


def _jwk(kid: str, key: Ed25519PrivateKey) -> dict:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": jwt.utils.base64url_encode(raw).decode(),
        "kid": kid,
        "alg": "EdDSA",
    }


def _pcts(samples: list[float]) -> str:
    s = sorted(samples)
    p = lambda q: s[min(len(s) - 1, int(q * len(s)))] * 1e6  # noqa: E731
    return f"p50 {p(0.5):7.2f} µs   p99 {p(0.99):7.2f} µs   mean {statistics.fmean(s) * 1e6:7.2f} µs"


async def main(n: int) -> None:
    key = Ed25519PrivateKey.generate()
    user_id = uuid.uuid4()
    api_key = "wmk_" + "A" * 43

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/jwks"):
            return httpx.Response(200, json={"keys": [_jwk("k1", key)]})
        return httpx.Response(
            200,
            json={
                "key_id": str(uuid.uuid4()),
                "user_id": str(user_id),
                "role": "user",
                "login": "bench",
                "servers": None,
            },
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        v = Verifier(client, "http://auth", issuer="wemcp", audience="wemcp",
                     signer=Issuer(environment_ring(), "gateway"))
        await v.refresh_jwks()
        now = int(time.time())

        def token(i: int) -> str:
            return jwt.encode(
                {
                    "iss": "wemcp",
                    "aud": "wemcp",
                    "sub": str(user_id),
                    "role": "user",
                    "login": "bench",
                    "sid": str(user_id),
                    "iat": now,
                    "nbf": now,
                    "exp": now + 600,
                    "jti": str(i),
                },
                key,
                algorithm="EdDSA",
                headers={"kid": "k1"},
            )

        tokens = [token(i) for i in range(n)]
        for t in tokens[:200]:  # warm up the code paths
            await v.verify_jwt(t)
        v._tokens.clear()

        cold = []
        for t in tokens:
            t0 = time.perf_counter()
            await v.verify_jwt(t)
            cold.append(time.perf_counter() - t0)
        warm = []
        t = tokens[0]
        for _ in range(n):
            t0 = time.perf_counter()
            await v.verify_jwt(t)
            warm.append(time.perf_counter() - t0)

        def req(headers: list[tuple[bytes, bytes]]) -> Request:
            return Request({"type": "http", "headers": headers, "query_string": b"", "state": {}})

        bearer = [(b"authorization", b"Bearer " + t.encode())]
        full = []
        for _ in range(n):
            r = req(bearer)
            t0 = time.perf_counter()
            await v(r)
            full.append(time.perf_counter() - t0)
        await v(req([(b"x-api-key", api_key.encode())]))  # the one cold fill
        keyed = []
        for _ in range(n):
            r = req([(b"x-api-key", api_key.encode())])
            t0 = time.perf_counter()
            await v(r)
            keyed.append(time.perf_counter() - t0)

    print(
        f"machine: {os.cpu_count()} cpus (nproc), Python {platform.python_version()} on {platform.platform()}"
    )
    print(f"method: {n} sequential calls each, time.perf_counter around one verifier call, one event loop")
    print(f"JWT EdDSA verify, cold (new token):     {_pcts(cold)}")
    print(f"JWT, warm (memoised token):             {_pcts(warm)}")
    print(f"verifier(Request) with Bearer JWT, warm: {_pcts(full)}")
    print(f"verifier(Request) with API key, warm:    {_pcts(keyed)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    asyncio.run(main(ap.parse_args().n))
    sys.exit(0)
