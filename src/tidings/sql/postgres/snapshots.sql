-- Named queries of projection snapshots on PostgreSQL; {schema} is the store's schema.
-- The table comes with the store's migrations (0004_snapshots_views.sql).

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
