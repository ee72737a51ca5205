-- Named queries of projection snapshots on PostgreSQL; {schema} is the store's schema.
-- The table sits beside the store's tables but is not part of its migrations: every
-- statement that creates it is idempotent and runs under an advisory lock, on first use.

-- name: migrate_lock
SELECT pg_advisory_xact_lock(hashtext('tidings-snapshots-migrate:' || $1));

-- name: create_table
-- One snapshot per stream and projection name: the state folded up to `version` (the
-- stream's last version folded) by the projection's code at `projection_version`.
CREATE TABLE IF NOT EXISTS {schema}.snapshots (
    stream text NOT NULL,
    name text NOT NULL,
    projection_version integer NOT NULL,
    version bigint NOT NULL,
    state jsonb NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, name)
);

-- name: load
SELECT version, state::text FROM {schema}.snapshots
WHERE stream = $1 AND name = $2 AND projection_version = $3;

-- name: save
-- Never backwards: a snapshot replaces the stored one only if it folds more of the
-- stream, or if it was taken by another projection version (the stored one is then
-- useless to the code writing this one).
INSERT INTO {schema}.snapshots AS s (stream, name, projection_version, version, state)
VALUES ($1, $2, $3, $4, $5::jsonb)
ON CONFLICT (stream, name) DO UPDATE
SET projection_version = excluded.projection_version,
    version = excluded.version,
    state = excluded.state,
    created = excluded.created
WHERE excluded.projection_version <> s.projection_version OR excluded.version > s.version;
