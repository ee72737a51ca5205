-- Named queries of projection snapshots on SQLite, in the store's file, apart from its
-- migrations: the table is created on first use (idempotent, under the write lock).

-- name: create_table
-- One snapshot per stream and projection name: the state folded up to `version` (the
-- stream's last version folded) by the projection's code at `projection_version`.
CREATE TABLE IF NOT EXISTS tidings_snapshots (
    stream TEXT NOT NULL,
    name TEXT NOT NULL,
    projection_version INTEGER NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (stream, name)
) WITHOUT ROWID;

-- name: load
SELECT version, state FROM tidings_snapshots
WHERE stream = ? AND name = ? AND projection_version = ?;

-- name: save
-- Never backwards: a snapshot replaces the stored one only if it folds more of the
-- stream, or if it was taken by another projection version.
INSERT INTO tidings_snapshots (stream, name, projection_version, version, state, created_ms)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (stream, name) DO UPDATE
SET projection_version = excluded.projection_version,
    version = excluded.version,
    state = excluded.state,
    created_ms = excluded.created_ms
WHERE excluded.projection_version <> tidings_snapshots.projection_version
   OR excluded.version > tidings_snapshots.version;
