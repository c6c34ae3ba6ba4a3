"""Local development and test stack: embedded Postgres (pgvector, pg_trgm), NATS with JetStream and
Redis from pip packages, migrations, and a supervisor for every service process."""
