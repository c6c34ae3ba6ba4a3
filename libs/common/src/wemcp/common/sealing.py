"""Encryption at rest, the one scheme every service uses (auth's vault, OAuth tokens and app secrets,
private signing keys; the agents service's model-provider keys).

Envelope encryption: each value gets its own random 256-bit data key (DEK); the value is sealed with
AES-GCM under the DEK, with a context string as associated data (so a ciphertext cannot be moved to
another row); the DEK is sealed with AES-GCM under a key-encryption key (KEK) of a key ring. Each KEK
has an id, written into the sealed value, so a ring may hold several: the active one seals, every one
opens. Rotating a KEK only re-wraps DEKs (:meth:`Keyring.rewrap`); the values are never re-encrypted.

Format: ``v1.<kek id>.<b64(nonce + wrapped DEK)>.<b64(nonce + ciphertext)>``.

A ring is configured one of two ways:

- :meth:`Keyring.parse`: ``kid:base64key[,kid2:base64key]`` (32-byte keys; the last, or the one named
  active, seals) — ``WEMCP_AUTH_KEKS``;
- :meth:`Keyring.from_passphrases`: ``passphrase[,passphrase2]`` (each at least 16 characters, its KEK
  derived with SHA-256, its id a hash of it; the first seals) — ``WEMCP_AGENTS_PROVIDER_KEY_SECRET``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wemcp.common.errors import ConfigError
from wemcp.common.logging import get_logger

log = get_logger("wemcp.common.sealing")
KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
VERSION = "v1"
MIN_PASSPHRASE = 16


class SealError(Exception):
    """A sealed value could not be opened (wrong KEK, wrong context, tampered, malformed)."""


def b64(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    """Unpadded (or padded) base64url; ``ValueError`` when it is not."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def passphrase_kek(passphrase: str) -> tuple[str, bytes]:
    """``(kid, KEK)`` of a passphrase: the KEK is SHA-256 of it (domain-separated), the id names it
    without revealing it."""
    raw = passphrase.encode()
    kid = "p" + hashlib.sha256(b"wemcp-kek-id\x00" + raw).hexdigest()[:12]
    return kid, hashlib.sha256(b"wemcp-kek\x00" + raw).digest()


class Keyring:
    """KEKs by id; ``active`` seals. ``setting`` names the configuration in error messages."""

    def __init__(self, keks: dict[str, bytes], active: str, *, setting: str = "WEMCP_AUTH_KEKS") -> None:
        if active not in keks:
            raise ConfigError(f"{setting}: the active key {active!r} is not among its keys")
        for kid, key in keks.items():
            if not KID.match(kid):
                raise ConfigError(f"{setting}: key id {kid!r} must match {KID.pattern}")
            if len(key) != 32:
                raise ConfigError(f"{setting}: key {kid!r} must be 32 bytes (base64), got {len(key)}")
        self._keks = {kid: AESGCM(key) for kid, key in keks.items()}
        self.active = active

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keks)

    @classmethod
    def parse(cls, spec: str, active: str | None = None, *, setting: str = "WEMCP_AUTH_KEKS") -> Keyring:
        """``kid:base64key[,kid2:base64key]``; without ``active`` the last key seals."""
        keks: dict[str, bytes] = {}
        last = None
        for part in filter(None, (p.strip() for p in spec.split(","))):
            kid, sep, key = part.partition(":")
            if not sep:
                raise ConfigError(f"{setting}: expected 'kid:base64key[,kid2:base64key]'")
            try:
                keks[kid] = unb64(key.strip().replace("+", "-").replace("/", "_"))
            except ValueError:
                raise ConfigError(f"{setting}: key {kid!r} is not base64") from None
            last = kid
        if not keks or last is None:
            raise ConfigError(f"{setting}: no key given")
        return cls(keks, active or last, setting=setting)

    @classmethod
    def from_passphrases(cls, spec: str, *, setting: str) -> Keyring:
        """``passphrase[,passphrase2]``: the first seals, every one opens (:func:`passphrase_kek`)."""
        parts = [p.strip() for p in spec.split(",")]
        if not any(parts):
            raise ConfigError(f"{setting}: no key given")
        if any(len(p) < MIN_PASSPHRASE for p in parts):
            raise ConfigError(f"{setting}: each secret must be at least {MIN_PASSPHRASE} characters")
        keks = dict(passphrase_kek(p) for p in parts)
        return cls(keks, passphrase_kek(parts[0])[0], setting=setting)

    @classmethod
    def from_settings(cls, keks: str | None, active: str | None, dev_file: str, *,
                      setting: str = "WEMCP_AUTH_KEKS") -> Keyring:
        """:meth:`parse` of ``keks``; without it (development) a key generated once into ``dev_file``."""
        if keks:
            return cls.parse(keks, active, setting=setting)
        path = Path(dev_file)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"dev:{b64(AESGCM.generate_key(256))}")
            log.warning("dev_kek_generated", path=str(path),
                        hint=f"set {setting} in production; this file protects every sealed value")
        return cls.parse(path.read_text().strip(), active, setting=setting)

    @staticmethod
    def generate_spec(kid: str) -> str:
        return f"{kid}:{b64(AESGCM.generate_key(256))}"

    def seal(self, plaintext: bytes, context: str) -> str:
        dek = AESGCM.generate_key(256)
        n1, n2 = os.urandom(12), os.urandom(12)
        ct = AESGCM(dek).encrypt(n1, plaintext, context.encode())
        wrapped = self._keks[self.active].encrypt(n2, dek, f"kek:{self.active}".encode())
        return f"{VERSION}.{self.active}.{b64(n2 + wrapped)}.{b64(n1 + ct)}"

    def _unwrap(self, sealed: str) -> tuple[str, bytes, bytes]:
        try:
            version, kid, wrapped_b64, ct_b64 = sealed.split(".")
        except (ValueError, AttributeError):
            raise SealError("malformed sealed value") from None
        if version != VERSION:
            raise SealError(f"unknown format {version[:8]!r}")
        kek = self._keks.get(kid)
        if kek is None:
            raise SealError(f"KEK {kid[:32]!r} is not configured")
        try:
            wrapped, blob = unb64(wrapped_b64), unb64(ct_b64)
            dek = kek.decrypt(wrapped[:12], wrapped[12:], f"kek:{kid}".encode())
        except (InvalidTag, ValueError):
            raise SealError("the data key does not open under its KEK") from None
        return kid, dek, blob

    def open(self, sealed: str, context: str) -> bytes:
        _, dek, blob = self._unwrap(sealed)
        try:
            return AESGCM(dek).decrypt(blob[:12], blob[12:], context.encode())
        except (InvalidTag, ValueError):
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
        return f"{VERSION}.{self.active}.{b64(n2 + wrapped)}.{b64(blob)}"


def mask(value: str) -> str:
    """What a user sees of a stored secret: never more than its last four characters, and only
    when the secret is long enough for them not to matter."""
    return f"****{value[-4:]}" if len(value) >= 16 else "****"
