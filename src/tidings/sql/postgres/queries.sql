-- Named queries of the PostgreSQL backend; {schema} is filled in at connect time.

-- name: migrate_lock
SELECT pg_advisory_xact_lock(hashtext('tidings-migrate:' || $1));

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema};

-- name: create_migrations
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
SELECT version FROM {schema}.migrations ORDER BY version;

-- name: record_migration
INSERT INTO {schema}.migrations (version, name) VALUES ($1, $2);

-- name: apply_batch
SELECT {schema}.apply_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15);

-- name: write_batch
SELECT {schema}.write_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14);

-- name: lock_head
SELECT position FROM {schema}.head WHERE id = 1 FOR UPDATE;

-- name: stream_versions
SELECT name, version FROM {schema}.streams WHERE name = ANY ($1::text[]);

-- name: stored_events
SELECT id, stream, version, position, type, data::text, metadata::text
FROM {schema}.events WHERE id = ANY ($1::uuid[]);

-- name: head
SELECT position FROM {schema}.head WHERE id = 1;

-- name: stream_version
SELECT version FROM {schema}.streams WHERE name = $1;

-- name: read_stream_forward
SELECT position, id, stream, version, type, data, metadata, time
FROM {schema}.events WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3;

-- name: read_stream_backward
SELECT position, id, stream, version, type, data, metadata, time
FROM {schema}.events WHERE stream = $1 AND version <= $2 ORDER BY version DESC LIMIT $3;

-- name: read_all
SELECT position, id, stream, version, type, data, metadata, time
FROM {schema}.events WHERE position > $1 ORDER BY position LIMIT $2;

-- name: list_streams
SELECT name, version FROM {schema}.streams
WHERE name > $1 AND ($2::text IS NULL OR starts_with(name, $2))
ORDER BY name LIMIT $3;

-- name: audit_of
SELECT a.id, a."user", a.extra, a.created, a.arrived
FROM {schema}.events e JOIN {schema}.audit a ON a.id = e.audit_id
WHERE e.position = $1;

-- name: checkpoint
SELECT position FROM {schema}.checkpoints WHERE name = $1;

-- name: checkpoints_for_update
SELECT name, position FROM {schema}.checkpoints WHERE name = ANY ($1::text[])
ORDER BY name FOR UPDATE;

-- name: move_checkpoints
INSERT INTO {schema}.checkpoints (name, position, updated_ms)
SELECT name, position, $3 FROM unnest($1::text[], $2::bigint[]) AS m (name, position)
ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_ms = excluded.updated_ms;

-- name: store_identity
SELECT identity::text FROM {schema}.store WHERE id = 1;
