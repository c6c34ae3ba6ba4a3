"""The two clouds' request signatures, written from their published specifications, independently of
the SDKs: Aliyun ACS3-HMAC-SHA256 (OpenAPI V3) and Tencent Cloud TC3-HMAC-SHA256 (API 3.0 v3).

The backends send through the official SDKs; this module recomputes what a cloud's gateway checks,
so tests can verify the SDKs' real signatures (:func:`acs3_verify`, :func:`tc3_verify`) and pin both
algorithms to the clouds' published examples.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime
from urllib.parse import quote


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _canonical_query(query: dict[str, str]) -> str:
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))


def acs3_signature(*, method: str, path: str, query: dict[str, str], headers: dict[str, str], signed: list[str],
                   payload_hash: str, access_key_secret: str) -> str:
    h = {k.lower(): v.strip() for k, v in headers.items()}
    canonical = "\n".join([method.upper(), path or "/", _canonical_query(query),
                           "".join(f"{k}:{h[k]}\n" for k in signed), ";".join(signed), payload_hash])
    string_to_sign = "ACS3-HMAC-SHA256\n" + _sha256(canonical.encode())
    return hmac.new(access_key_secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def acs3_sign(*, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes,
              access_key_id: str, access_key_secret: str) -> dict[str, str]:
    """Return ``headers`` plus ``x-acs-content-sha256`` and ``authorization``; signs ``host``,
    ``content-type`` and every ``x-acs-*`` header."""
    h = {k.lower(): v.strip() for k, v in headers.items()}
    h["x-acs-content-sha256"] = _sha256(body)
    signed = sorted(k for k in h if k.startswith("x-acs-") or k in ("host", "content-type"))
    sig = acs3_signature(method=method, path=quote(path, safe="/-_.~"), query=query, headers=h, signed=signed,
                         payload_hash=h["x-acs-content-sha256"], access_key_secret=access_key_secret)
    h["authorization"] = f"ACS3-HMAC-SHA256 Credential={access_key_id},SignedHeaders={';'.join(signed)},Signature={sig}"
    return h


def _auth_fields(headers: dict[str, str], algorithm: str) -> dict[str, str] | str:
    """The fields of the ``Authorization`` header (``headers`` by lower-case name) of ``algorithm``, or
    why there are none."""
    value = headers.get("authorization", "")
    if not value.startswith(algorithm + " "):
        return f"not an {algorithm} authorization"
    fields = {}
    for part in value[len(algorithm) + 1:].split(","):
        k, _, v = part.strip().partition("=")
        fields[k] = v
    return fields


def acs3_verify(*, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes,
                secrets: dict[str, str], max_skew: float = 900.0, now: float | None = None) -> str | None:
    """What Aliyun's gateway checks. Returns ``None`` when the request is authentic, else the reason."""
    h = {k.lower(): v for k, v in headers.items()}
    f = _auth_fields(h, "ACS3-HMAC-SHA256")
    if isinstance(f, str):
        return f
    secret = secrets.get(f.get("Credential", ""))
    if secret is None:
        return "InvalidAccessKeyId"
    signed = f.get("SignedHeaders", "").split(";")
    required = {"host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"}
    if missing := required - set(signed):
        return f"unsigned headers: {sorted(missing)}"
    if any(k not in h for k in signed) or signed != sorted(signed):
        return "SignedHeaders names headers that are absent or unsorted"
    if h["x-acs-content-sha256"] != _sha256(body):
        return "x-acs-content-sha256 does not match the body"
    date = datetime.strptime(h["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    if abs((now if now is not None else time.time()) - date) > max_skew:
        return "x-acs-date is too far from now"
    expected = acs3_signature(method=method, path=path, query=query, headers=h, signed=signed,
                              payload_hash=h["x-acs-content-sha256"], access_key_secret=secret)
    return None if hmac.compare_digest(expected, f.get("Signature", "")) else "SignatureDoesNotMatch"


def tc3_signature(*, method: str, path: str, query: str, headers: dict[str, str], signed: list[str], payload: bytes,
                  timestamp: int, service: str, secret_key: str) -> str:
    h = {k.lower(): v.strip().lower() for k, v in headers.items()}  # the spec lowercases keys and values
    canonical = "\n".join([method.upper(), path or "/", query, "".join(f"{k}:{h[k]}\n" for k in signed),
                           ";".join(signed), _sha256(payload)])
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    string_to_sign = "\n".join(["TC3-HMAC-SHA256", str(timestamp), f"{date}/{service}/tc3_request",
                                _sha256(canonical.encode())])
    k = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac.new(k, string_to_sign.encode(), hashlib.sha256).hexdigest()


def tc3_sign(*, service: str, host: str, action: str, payload: bytes, timestamp: int, secret_id: str,
             secret_key: str, content_type: str = "application/json; charset=utf-8") -> dict[str, str]:
    """The ``Authorization`` header value of a POST (signed headers ``content-type;host``)."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    sig = tc3_signature(method="POST", path="/", query="", headers={"content-type": content_type, "host": host},
                        signed=["content-type", "host"], payload=payload, timestamp=timestamp, service=service,
                        secret_key=secret_key)
    return {"authorization": f"TC3-HMAC-SHA256 Credential={secret_id}/{date}/{service}/tc3_request, "
                             f"SignedHeaders=content-type;host, Signature={sig}", "signature": sig}


def tc3_verify(*, method: str, path: str, query: str, headers: dict[str, str], body: bytes, service: str,
               secrets: dict[str, str], max_skew: float = 300.0, now: float | None = None) -> str | None:
    """What Tencent Cloud's gateway checks. Returns ``None`` when authentic, else the reason."""
    h = {k.lower(): v for k, v in headers.items()}
    f = _auth_fields(h, "TC3-HMAC-SHA256")
    if isinstance(f, str):
        return f
    secret_id, _, scope = f.get("Credential", "").partition("/")
    secret = secrets.get(secret_id)
    if secret is None:
        return "AuthFailure.SecretIdNotFound"
    ts = int(h.get("x-tc-timestamp", "0"))
    date = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
    if scope != f"{date}/{service}/tc3_request":
        return f"credential scope {scope!r} does not match the timestamp and service"
    if abs((now if now is not None else time.time()) - ts) > max_skew:
        return "AuthFailure.SignatureExpire"
    signed = f.get("SignedHeaders", "").split(";")
    if not {"content-type", "host"} <= set(signed) or any(k not in h for k in signed):
        return "SignedHeaders must include content-type and host"
    expected = tc3_signature(method=method, path=path, query=query, headers=h, signed=signed, payload=body,
                             timestamp=ts, service=service, secret_key=secret)
    return None if hmac.compare_digest(expected, f.get("Signature", "")) else "AuthFailure.SignatureFailure"
