-- Named queries of state views on PostgreSQL; {schema} is the store's schema.
-- The table sits beside the store's tables but is not part of its migrations: every
-- statement that creates it is idempotent and runs under an advisory lock, on first use.
-- A view's folded-up-to position is the checkpoint of its subscription `view:<name>`,
-- moved in the same transaction as the rows (subscriptions.sql).

-- name: migrate_lock
SELECT pg_advisory_xact_lock(hashtext('tidings-views-migrate:' || $1));

-- name: create_table
-- The latest value per key of each view; `position` is the log position of the event
-- that last changed it. A deleted key keeps its row with a NULL value (a tombstone), so
-- that a reader following the view can tell a deletion from "nothing happened".
CREATE TABLE IF NOT EXISTS {schema}.views (
    view text NOT NULL,
    key text NOT NULL,
    value jsonb,
    position bigint NOT NULL,
    PRIMARY KEY (view, key)
);

-- name: create_index
CREATE INDEX IF NOT EXISTS views_by_position ON {schema}.views (view, position);

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
