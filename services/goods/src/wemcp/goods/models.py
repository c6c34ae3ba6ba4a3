"""Tables of the goods service, all in the ``goods`` schema."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from wemcp.common.db import service_metadata
from wemcp.common.outbox import outbox_tables
from wemcp.common.probes import probe_table


class Base(DeclarativeBase):
    metadata = service_metadata("goods")


bus_tables = outbox_tables(Base.metadata)
probe_receipts = probe_table(Base.metadata)
