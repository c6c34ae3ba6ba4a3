-- Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d).
-- The database every WeMcp service uses (each in its own schema) and the extensions the
-- catalog's search projection needs: pgvector for embeddings, pg_trgm for fuzzy text.
CREATE DATABASE wemcp;
\connect wemcp
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
