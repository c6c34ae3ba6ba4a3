"""OAuth apps name the servers their connection tokens go to

Until now the gateway asked for "the connection of the app whose slug equals the server's slug", so
any server given that slug received users' tokens, and ``oauth_apps.servers`` was never consulted.
Tokens now go only to the servers an app lists. Backfill: an app that lists none keeps serving the
one server it served before (the server with its own slug), now explicitly.

Revision ID: auth_0003
Revises: auth_0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "auth_0003"
down_revision: str | None = "auth_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE auth.oauth_apps SET servers = jsonb_build_array(slug) "
               "WHERE servers IS NULL OR servers = '[]'::jsonb")
    # the gateway's lookup: which app lists this server (jsonb containment)
    op.create_index("ix_oauth_apps_servers", "oauth_apps", ["servers"], schema="auth", postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("ix_oauth_apps_servers", table_name="oauth_apps", schema="auth")
