-- Named queries of state views on PostgreSQL; {schema} is the store's schema.
-- The table comes with the store's migrations (0004_snapshots_views.sql).
-- A view's folded-up-to position is the checkpoint of its subscription `view:<name>`,
-- moved in the same transaction as the rows (subscriptions.sql).

-- name: current
-- Inside the folding transaction: the stored state of the keys a batch touches.
SELECT key, value::text, position FROM {schema}.views WHERE view = $1 AND key = ANY($2::text[]);

-- name: write
-- Inside the folding transaction; never backwards.
INSERT INTO {schema}.views AS v (view, key, value, position)
SELECT $1, t.key, t.value::jsonb, t.position
FROM unnest($2::text[], $3::text[], $4::bigint[]) AS t(key, value, position)
ON CONFLICT (view, key) DO UPDATE
SET value = excluded.value, position = excluded.position
WHERE excluded.position > v.position;

-- name: read_keys
-- One statement, so one snapshot: the checkpoint (the row whose key is NULL) and the rows
-- of the given keys changed after $3, as they stood at that checkpoint.
SELECT NULL::text AS key, NULL::text AS value,
       COALESCE((SELECT position FROM {schema}.subscriptions WHERE name = $2), 0) AS position
UNION ALL
SELECT key, value::text, position FROM {schema}.views
WHERE view = $1 AND position > $3 AND key = ANY($4::text[]);

-- name: read_every
-- As read_keys, for every key of the view.
SELECT NULL::text AS key, NULL::text AS value,
       COALESCE((SELECT position FROM {schema}.subscriptions WHERE name = $2), 0) AS position
UNION ALL
SELECT key, value::text, position FROM {schema}.views
WHERE view = $1 AND position > $3;
