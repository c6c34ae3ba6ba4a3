"""provider API keys under the shared sealing scheme (wemcp.common.sealing)

The agents service sealed provider keys with a scheme of its own: ``0x01 + nonce + AES-256-GCM``
under SHA-256("wemcp-agents-provider-key:" + secret), the provider id's 16 bytes as associated data,
in a ``bytea`` column. The platform now has one scheme (auth's envelope: a data key per value,
wrapped by a KEK with an id): ``v1.<kek id>.<wrapped DEK>.<ciphertext>`` in a ``text`` column, the
KEK derived from the same ``WEMCP_AGENTS_PROVIDER_KEY_SECRET``, associated data
``provider-key:<provider id>``.

Upgrade re-seals every stored key; downgrade converts back (the way back). Both need
``WEMCP_AGENTS_PROVIDER_KEY_SECRET`` in the environment when there are sealed keys (``make migrate``
and the Helm migrations job pass it); without it they stop with a clear error and change nothing.
The old scheme is written out here, not imported: this file must keep working after the code moves on.

Revision ID: agents_0003
Revises: agents_0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wemcp.common.sealing import Keyring

revision: str = "agents_0003"
down_revision: str | None = "agents_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "agents"
SETTING = "WEMCP_AGENTS_PROVIDER_KEY_SECRET"
LEGACY_VERSION = b"\x01"


class MigrationError(RuntimeError):
    pass


# -- the scheme that goes away (was wemcp/agents/crypto.py) ------------------------------------
def _legacy_key(secret: str) -> bytes:
    return hashlib.sha256(b"wemcp-agents-provider-key:" + secret.encode()).digest()


def legacy_seal(secret: str, provider_id: uuid.UUID, plaintext: str) -> bytes:
    nonce = os.urandom(12)
    return LEGACY_VERSION + nonce + AESGCM(_legacy_key(secret)).encrypt(nonce, plaintext.encode(), provider_id.bytes)


def legacy_open(secret: str, provider_id: uuid.UUID, sealed: bytes) -> str:
    if not sealed or sealed[:1] != LEGACY_VERSION or len(sealed) < 13 + 16:
        raise MigrationError(f"provider {provider_id}: the stored key is not in the old format")
    try:
        return AESGCM(_legacy_key(secret)).decrypt(sealed[1:13], sealed[13:], provider_id.bytes).decode()
    except InvalidTag:
        raise MigrationError(f"provider {provider_id}: the stored key does not open with {SETTING}") from None


# -- the shared scheme ----------------------------------------------------------------------------
def context(provider_id: uuid.UUID) -> str:
    return f"provider-key:{provider_id}"  # = wemcp.agents.models.provider_key_context


def _secret(rows: int) -> str:
    secret = os.environ.get(SETTING, "").strip()
    if not secret:
        raise MigrationError(f"{rows} model provider key(s) are stored sealed: set {SETTING} (the agents "
                             "service's value) for this migration to re-seal them")
    return secret


PROVIDERS = sa.table("model_providers", sa.column("id"), sa.column("api_key_sealed"), schema=SCHEMA)


def _sealed_rows() -> list[tuple[uuid.UUID, Any]]:
    rows = op.get_bind().execute(
        sa.select(PROVIDERS.c.id, PROVIDERS.c.api_key_sealed).where(PROVIDERS.c.api_key_sealed.is_not(None))).all()
    return [(r[0] if isinstance(r[0], uuid.UUID) else uuid.UUID(str(r[0])), r[1]) for r in rows]


def _store(values: list[tuple[uuid.UUID, Any]]) -> None:
    bind = op.get_bind()
    for pid, value in values:
        bind.execute(sa.update(PROVIDERS).where(PROVIDERS.c.id == pid).values(api_key_sealed=value))


def upgrade() -> None:
    rows = _sealed_rows()
    resealed: list[tuple[uuid.UUID, Any]] = []
    if rows:
        secret = _secret(len(rows))
        ring = Keyring.from_passphrases(secret, setting=SETTING)
        # the old code used the whole value as its one secret
        resealed = [(pid, ring.seal(legacy_open(secret, pid, bytes(v)).encode(), context(pid)))
                    for pid, v in rows]
    op.alter_column("model_providers", "api_key_sealed", type_=sa.Text(), existing_type=sa.LargeBinary(),
                    existing_nullable=True, postgresql_using="NULL", schema=SCHEMA)
    _store(resealed)


def downgrade() -> None:
    rows = _sealed_rows()
    back: list[tuple[uuid.UUID, Any]] = []
    if rows:
        secret = _secret(len(rows))
        ring = Keyring.from_passphrases(secret, setting=SETTING)
        back = [(pid, legacy_seal(secret, pid, ring.open(str(v), context(pid)).decode())) for pid, v in rows]
    op.alter_column("model_providers", "api_key_sealed", type_=sa.LargeBinary(), existing_type=sa.Text(),
                    existing_nullable=True, postgresql_using="NULL", schema=SCHEMA)
    _store(back)
