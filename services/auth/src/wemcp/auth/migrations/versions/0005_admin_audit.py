"""The admin system: bans and account deletion on users, invites with a use count, the audit log

Revision ID: auth_0005_admin_audit
Revises: auth_0004
Create Date: 2026-12-02

Backfill: no user is banned or deleted (``users.disabled`` stays what it was: the system principal
keeps it); an invite already accepted has used its one use (``max_uses`` 1, ``uses`` 1), an open one
has it left. The audit log starts empty: the actions taken before it existed were not recorded.
``audit_log`` refuses UPDATE and DELETE with a trigger (TRUNCATE, an operator's act on the whole
table, is not guarded: the test suite resets tables with it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "auth_0005_admin_audit"
down_revision: str | None = "auth_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "auth"


def upgrade() -> None:
    op.add_column("users", sa.Column("banned_at", sa.DateTime(timezone=True)), schema=S)
    op.add_column("users", sa.Column("banned_by", UUID(as_uuid=True)), schema=S)
    op.add_column("users", sa.Column("ban_reason", sa.Text), schema=S)
    op.add_column("users", sa.Column("deleted_at", sa.DateTime(timezone=True)), schema=S)
    op.add_column("invites", sa.Column("max_uses", sa.Integer, nullable=False, server_default="1"), schema=S)
    op.add_column("invites", sa.Column("uses", sa.Integer, nullable=False, server_default="0"), schema=S)
    op.add_column("invites", sa.Column("revoked_at", sa.DateTime(timezone=True)), schema=S)
    op.execute("UPDATE auth.invites SET uses = 1 WHERE used_at IS NOT NULL")
    op.execute("ALTER TABLE auth.invites ADD CONSTRAINT ck_invites_uses "
               "CHECK (uses >= 0 AND uses <= max_uses AND max_uses >= 1)")
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("service", sa.String(40), nullable=False),
        sa.Column("action", sa.String(80), nullable=False),
        sa.Column("actor_id", UUID(as_uuid=True)),
        sa.Column("actor_role", sa.String(20)),
        sa.Column("target_type", sa.String(40), nullable=False),
        sa.Column("target_id", sa.String(300), nullable=False),
        sa.Column("before", JSONB),
        sa.Column("after", JSONB),
        sa.Column("reason", sa.Text),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=S,
    )
    op.create_index("ix_audit_log_occurred", "audit_log", ["occurred_at", "seq"], schema=S)
    op.create_index("ix_audit_log_actor", "audit_log", ["actor_id", "seq"], schema=S)
    op.create_index("ix_audit_log_target", "audit_log", ["target_type", "target_id", "seq"], schema=S)
    op.create_index("ix_audit_log_action", "audit_log", ["action", "seq"], schema=S)
    op.execute("""
        CREATE FUNCTION auth.audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'auth.audit_log is append-only (% refused)', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$""")
    op.execute("CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON auth.audit_log "
               "FOR EACH ROW EXECUTE FUNCTION auth.audit_log_append_only()")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON auth.audit_log")
    op.execute("DROP FUNCTION IF EXISTS auth.audit_log_append_only()")
    op.drop_table("audit_log", schema=S)
    op.execute("ALTER TABLE auth.invites DROP CONSTRAINT IF EXISTS ck_invites_uses")
    for col in ("revoked_at", "uses", "max_uses"):
        op.drop_column("invites", col, schema=S)
    for col in ("deleted_at", "ban_reason", "banned_by", "banned_at"):
        op.drop_column("users", col, schema=S)
