-- Named queries of state views on SQLite; the table comes with the store's migrations
-- (0004_snapshots_views.sql).
-- A view's folded-up-to position is the checkpoint of its subscription `view:<name>`,
-- moved in the same transaction as the rows (subscriptions.sql).

-- name: current
-- Inside the folding transaction: the stored state of the keys a batch touches ($2: JSON array).
SELECT key, value, position FROM tidings_views
WHERE view = ?1 AND key IN (SELECT value FROM json_each(?2));

-- name: write
-- Inside the folding transaction; never backwards.
INSERT INTO tidings_views (view, key, value, position) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (view, key) DO UPDATE
SET value = excluded.value, position = excluded.position
WHERE excluded.position > tidings_views.position;

-- name: read_keys
-- One statement, so one snapshot: the checkpoint (the row whose key is NULL) and the rows
-- of the given keys ($4: JSON array) changed after $3, as they stood at that checkpoint.
SELECT NULL AS key, NULL AS value,
       COALESCE((SELECT position FROM tidings_subscriptions WHERE name = ?2), 0) AS position
UNION ALL
SELECT key, value, position FROM tidings_views
WHERE view = ?1 AND position > ?3 AND key IN (SELECT value FROM json_each(?4));

-- name: read_every
-- As read_keys, for every key of the view.
SELECT NULL AS key, NULL AS value,
       COALESCE((SELECT position FROM tidings_subscriptions WHERE name = ?2), 0) AS position
UNION ALL
SELECT key, value, position FROM tidings_views
WHERE view = ?1 AND position > ?3;
