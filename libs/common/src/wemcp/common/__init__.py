"""WeMcp shared library: contracts (events, errors, pagination) and glue (settings, logging,
telemetry, database, bus, outbox). Nothing here connects at import time."""
