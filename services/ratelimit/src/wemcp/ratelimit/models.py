"""Tables of the ratelimit service, all in the ``ratelimit`` schema."""

from __future__ import annotations

from wemcp.common.db import declarative_base_for
from wemcp.common.outbox import outbox_tables
from wemcp.common.probes import probe_table

Base = declarative_base_for("ratelimit")
bus_tables = outbox_tables(Base.metadata)
probe_receipts = probe_table(Base.metadata)
