"""Tables of the deployer service, all in the ``deployer`` schema."""

from __future__ import annotations

from wemcp.common.db import declarative_base_for
from wemcp.common.outbox import outbox_tables
from wemcp.common.probes import probe_table

Base = declarative_base_for("deployer")
bus_tables = outbox_tables(Base.metadata)
probe_receipts = probe_table(Base.metadata)
