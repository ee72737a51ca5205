-- Named queries of projection snapshots on SQLite; the table comes with the store's
-- migrations (0004_snapshots_views.sql).

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
