"""Sealing model-provider API keys at rest: AES-256-GCM, the key derived from
``WEMCP_AGENTS_PROVIDER_KEY_SECRET``, the provider id as associated data (a sealed key cannot be
moved to another provider's row). Stands in for the auth vault, whose internal API is per user and
per MCP server; provider keys are platform-wide."""

from __future__ import annotations

import hashlib
import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"\x01"


class SealError(Exception):
    pass


def _key(secret: str) -> bytes:
    return hashlib.sha256(b"wemcp-agents-provider-key:" + secret.encode()).digest()


def seal(secret: str, provider_id: uuid.UUID, plaintext: str) -> bytes:
    nonce = os.urandom(12)
    return VERSION + nonce + AESGCM(_key(secret)).encrypt(nonce, plaintext.encode(), provider_id.bytes)


def unseal(secret: str, provider_id: uuid.UUID, sealed: bytes) -> str:
    if not sealed or sealed[:1] != VERSION or len(sealed) < 13 + 16:
        raise SealError("malformed sealed key")
    try:
        return AESGCM(_key(secret)).decrypt(sealed[1:13], sealed[13:], provider_id.bytes).decode()
    except InvalidTag:
        raise SealError("the provider key cannot be decrypted with WEMCP_AGENTS_PROVIDER_KEY_SECRET") from None
