"""Request signatures of the two clouds: Aliyun ACS3-HMAC-SHA256 and Tencent Cloud TC3-HMAC-SHA256."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def acs3_sign(*, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes,
              access_key_id: str, access_key_secret: str) -> dict[str, str]:
    """Return ``headers`` plus ``x-acs-content-sha256`` and ``Authorization`` (ACS3-HMAC-SHA256)."""
    h = {k.lower(): v.strip() for k, v in headers.items()}
    h["x-acs-content-sha256"] = _sha256(body)
    signed = sorted(k for k in h if k.startswith("x-acs-") or k in ("host", "content-type"))
    canonical_headers = "".join(f"{k}:{h[k]}\n" for k in signed)
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))
    canonical = "\n".join([method.upper(), quote(path, safe="/-_.~"), canonical_query, canonical_headers,
                           ";".join(signed), h["x-acs-content-sha256"]])
    string_to_sign = "ACS3-HMAC-SHA256\n" + _sha256(canonical.encode())
    signature = hmac.new(access_key_secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    h["authorization"] = (f"ACS3-HMAC-SHA256 Credential={access_key_id},SignedHeaders={';'.join(signed)},"
                          f"Signature={signature}")
    return h


def tc3_sign(*, service: str, host: str, action: str, payload: bytes, timestamp: int, secret_id: str,
             secret_key: str, content_type: str = "application/json; charset=utf-8",
             sign_action: bool = False) -> dict[str, str]:
    """Return the ``Authorization`` header value and the canonical pieces (TC3-HMAC-SHA256, POST)."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    headers = {"content-type": content_type, "host": host}
    if sign_action:
        headers["x-tc-action"] = action.lower()
    signed = ";".join(sorted(headers))
    canonical_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(headers))
    canonical = "\n".join(["POST", "/", "", canonical_headers, signed, _sha256(payload)])
    scope = f"{date}/{service}/tc3_request"
    string_to_sign = "\n".join(["TC3-HMAC-SHA256", str(timestamp), scope, _sha256(canonical.encode())])
    k = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    signature = hmac.new(k, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return {"authorization": f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders={signed}, "
                             f"Signature={signature}", "signature": signature, "canonical": canonical}
