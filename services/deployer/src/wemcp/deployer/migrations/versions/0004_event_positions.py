"""deployments.seq, decision_seq, decision_at, revision: the positions stamped on (and read from) lifecycle events

Revision ID: deployer_0004
Revises: deployer_0003
Create Date: 2026-12-01

Backfill: ``seq`` starts from the number of steps the row already recorded (the events of those
steps carry no seq; a deployment in flight goes on from there). ``decision_seq`` 0 and
``decision_at`` NULL: any decision still in the stream is applied in arrival order, as before;
``revision`` 0: any stamped submission is newer.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "deployer_0004"
down_revision: str | None = "deployer_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "deployer"


def upgrade() -> None:
    op.add_column("deployments", sa.Column("seq", sa.Integer, nullable=False, server_default="0"), schema=SCHEMA)
    op.add_column("deployments", sa.Column("decision_seq", sa.Integer, nullable=False, server_default="0"),
                  schema=SCHEMA)
    op.add_column("deployments", sa.Column("decision_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.add_column("deployments", sa.Column("revision", sa.Integer, nullable=False, server_default="0"),
                  schema=SCHEMA)
    op.execute("UPDATE deployer.deployments SET seq = jsonb_array_length(steps)")


def downgrade() -> None:
    for col in ("revision", "decision_at", "decision_seq", "seq"):
        op.drop_column("deployments", col, schema=SCHEMA)
