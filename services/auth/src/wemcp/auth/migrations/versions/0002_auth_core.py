"""auth core: users, identities, refresh tokens, signing keys, API keys, invites, vault,
third-party OAuth apps and connections

Revision ID: auth_0002
Revises: auth_0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "auth_0002"
down_revision: str | None = "auth_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "auth"
UUID = postgresql.UUID(as_uuid=True)
JSONB = postgresql.JSONB


def _ts(name: str, nullable: bool = False, default: bool = True) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.func.now() if default and not nullable else None,
    )


def _user_fk(name: str = "user_id", table: str = "") -> sa.Column:
    return sa.Column(
        name,
        UUID,
        sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE", name=f"fk_{table}_{name}_users"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("login", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("email", sa.String(320)),
        sa.Column("avatar_url", sa.Text, nullable=False),
        sa.Column("role", sa.String(20), nullable=False, server_default="user"),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("login", name="uq_users_login"),
        sa.CheckConstraint("role IN ('user','merchant','admin','superadmin')", name="ck_users_role"),
        schema=SCHEMA,
    )
    op.create_table(
        "identities",
        sa.Column("id", UUID, nullable=False),
        _user_fk(table="identities"),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("login", sa.String(200)),
        sa.Column("email", sa.String(320)),
        sa.Column("profile", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_identities"),
        sa.UniqueConstraint("provider", "subject", name="uq_identities_provider_subject"),
        schema=SCHEMA,
    )
    op.create_index("ix_identities_user_id", "identities", ["user_id"], schema=SCHEMA)
    op.create_table(
        "refresh_tokens",
        sa.Column("id", UUID, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("family_id", UUID, nullable=False),
        _user_fk(table="refresh_tokens"),
        _ts("created_at"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_refresh_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_refresh_tokens_token_hash"),
        schema=SCHEMA,
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"], schema=SCHEMA)
    op.create_index("ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"], schema=SCHEMA)
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("alg", sa.String(20), nullable=False, server_default="EdDSA"),
        sa.Column("private_sealed", sa.Text, nullable=False),
        sa.Column("public_jwk", JSONB, nullable=False),
        _ts("created_at"),
        sa.Column("retired_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
        schema=SCHEMA,
    )
    op.create_table(
        "api_keys",
        sa.Column("id", UUID, nullable=False),
        _user_fk(table="api_keys"),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(20), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("servers", JSONB),
        _ts("created_at"),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        schema=SCHEMA,
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"], schema=SCHEMA)
    op.create_table(
        "invites",
        sa.Column("id", UUID, nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("email", sa.String(320)),
        _user_fk("created_by", table="invites"),
        _ts("created_at"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.Column("used_by", UUID),
        sa.PrimaryKeyConstraint("id", name="pk_invites"),
        sa.UniqueConstraint("code_hash", name="uq_invites_code_hash"),
        schema=SCHEMA,
    )
    op.create_table(
        "vault_secrets",
        sa.Column("id", UUID, nullable=False),
        _user_fk(table="vault_secrets"),
        sa.Column("server", sa.String(200), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("sealed", sa.Text, nullable=False),
        sa.Column("masked", sa.String(40), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_vault_secrets"),
        sa.UniqueConstraint("user_id", "server", "name", name="uq_vault_secrets_user_server_name"),
        schema=SCHEMA,
    )
    op.create_table(
        "oauth_apps",
        sa.Column("id", UUID, nullable=False),
        sa.Column("slug", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("authorize_url", sa.Text, nullable=False),
        sa.Column("token_url", sa.Text, nullable=False),
        sa.Column("client_id", sa.String(300), nullable=False),
        sa.Column("client_secret_sealed", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False, server_default=""),
        sa.Column("pkce", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column(
            "token_endpoint_auth_method", sa.String(40), nullable=False, server_default="client_secret_post"
        ),
        sa.Column("servers", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("created_by", UUID),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_oauth_apps"),
        sa.UniqueConstraint("slug", name="uq_oauth_apps_slug"),
        schema=SCHEMA,
    )
    op.create_table(
        "oauth_connections",
        sa.Column("id", UUID, nullable=False),
        _user_fk(table="oauth_connections"),
        sa.Column(
            "app_id",
            UUID,
            sa.ForeignKey(
                f"{SCHEMA}.oauth_apps.id", ondelete="CASCADE", name="fk_oauth_connections_app_id_oauth_apps"
            ),
            nullable=False,
        ),
        sa.Column("token_sealed", sa.Text, nullable=False),
        sa.Column("scope", sa.Text),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("refresh_failed_at", sa.DateTime(timezone=True)),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_oauth_connections"),
        sa.UniqueConstraint("user_id", "app_id", name="uq_oauth_connections_user_app"),
        schema=SCHEMA,
    )
    op.create_index("ix_oauth_connections_expires_at", "oauth_connections", ["expires_at"], schema=SCHEMA)


def downgrade() -> None:
    for name in (
        "oauth_connections",
        "oauth_apps",
        "vault_secrets",
        "invites",
        "api_keys",
        "signing_keys",
        "refresh_tokens",
        "identities",
        "users",
    ):
        op.drop_table(name, schema=SCHEMA)
