"""Envelope encryption for everything auth keeps secret (vault values, third-party tokens, OAuth
app secrets, private signing keys).

Each value gets its own random 256-bit data key (DEK); the value is sealed with AES-GCM under the
DEK, with a context string as associated data (so a ciphertext cannot be moved to another row);
the DEK is sealed with AES-GCM under a key-encryption key (KEK) from configuration. Rotating the
KEK only re-wraps DEKs (:meth:`Keyring.rewrap`); the values are never re-encrypted.

Format: ``v1.<kek id>.<b64(nonce + wrapped DEK)>.<b64(nonce + ciphertext)>``.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wemcp.common.errors import ConfigError
from wemcp.common.logging import get_logger

log = get_logger("wemcp.auth.crypto")
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class SealError(Exception):
    """A sealed value could not be opened (wrong KEK, wrong context, tampered)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Keyring:
    def __init__(self, keks: dict[str, bytes], active: str) -> None:
        if active not in keks:
            raise ConfigError(f"WEMCP_AUTH_ACTIVE_KEK: {active!r} is not among WEMCP_AUTH_KEKS")
        for kid, key in keks.items():
            if not _KID.match(kid):
                raise ConfigError(f"WEMCP_AUTH_KEKS: key id {kid!r} must match {_KID.pattern}")
            if len(key) != 32:
                raise ConfigError(f"WEMCP_AUTH_KEKS: key {kid!r} must be 32 bytes (base64), got {len(key)}")
        self._keks = {kid: AESGCM(key) for kid, key in keks.items()}
        self.active = active

    @classmethod
    def parse(cls, spec: str, active: str | None = None) -> Keyring:
        keks: dict[str, bytes] = {}
        last = None
        for part in filter(None, (p.strip() for p in spec.split(","))):
            kid, sep, b64 = part.partition(":")
            if not sep:
                raise ConfigError("WEMCP_AUTH_KEKS: expected 'kid:base64key[,kid2:base64key]'")
            try:
                keks[kid] = _unb64(b64.strip().replace("+", "-").replace("/", "_"))
            except ValueError:
                raise ConfigError(f"WEMCP_AUTH_KEKS: key {kid!r} is not base64") from None
            last = kid
        if not keks or last is None:
            raise ConfigError("WEMCP_AUTH_KEKS: no key given")
        return cls(keks, active or last)

    @classmethod
    def from_settings(cls, keks: str | None, active: str | None, dev_file: str) -> Keyring:
        if keks:
            return cls.parse(keks, active)
        path = Path(dev_file)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"dev:{_b64(AESGCM.generate_key(256))}")
            log.warning(
                "dev_kek_generated",
                path=str(path),
                hint="set WEMCP_AUTH_KEKS in production; this file protects every vault value",
            )
        return cls.parse(path.read_text().strip(), active)

    @staticmethod
    def generate_spec(kid: str) -> str:
        return f"{kid}:{_b64(AESGCM.generate_key(256))}"

    def seal(self, plaintext: bytes, context: str) -> str:
        dek = AESGCM.generate_key(256)
        n1, n2 = os.urandom(12), os.urandom(12)
        ct = AESGCM(dek).encrypt(n1, plaintext, context.encode())
        wrapped = self._keks[self.active].encrypt(n2, dek, f"kek:{self.active}".encode())
        return f"v1.{self.active}.{_b64(n2 + wrapped)}.{_b64(n1 + ct)}"

    def _unwrap(self, sealed: str) -> tuple[str, bytes, bytes]:
        try:
            version, kid, wrapped_b64, ct_b64 = sealed.split(".")
        except ValueError:
            raise SealError("malformed sealed value") from None
        if version != "v1":
            raise SealError(f"unknown format {version!r}")
        kek = self._keks.get(kid)
        if kek is None:
            raise SealError(f"KEK {kid!r} is not configured")
        wrapped = _unb64(wrapped_b64)
        try:
            dek = kek.decrypt(wrapped[:12], wrapped[12:], f"kek:{kid}".encode())
        except InvalidTag:
            raise SealError("the data key does not open under its KEK") from None
        return kid, dek, _unb64(ct_b64)

    def open(self, sealed: str, context: str) -> bytes:
        _, dek, blob = self._unwrap(sealed)
        try:
            return AESGCM(dek).decrypt(blob[:12], blob[12:], context.encode())
        except InvalidTag:
            raise SealError("the value does not open in this context") from None

    def kek_of(self, sealed: str) -> str:
        return sealed.split(".", 2)[1]

    def rewrap(self, sealed: str) -> str:
        """The same value with its data key wrapped by the active KEK."""
        kid, dek, blob = self._unwrap(sealed)
        if kid == self.active:
            return sealed
        n2 = os.urandom(12)
        wrapped = self._keks[self.active].encrypt(n2, dek, f"kek:{self.active}".encode())
        return f"v1.{self.active}.{_b64(n2 + wrapped)}.{_b64(blob)}"


def mask(value: str) -> str:
    """What a user sees of a stored secret: never more than its last four characters, and only
    when the secret is long enough for them not to matter."""
    return f"****{value[-4:]}" if len(value) >= 16 else "****"
