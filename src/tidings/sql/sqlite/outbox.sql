-- Named queries of the transactional outbox on SQLite, apart from the event store's tables.

-- name: create_table
-- held_until_ms is set on a key's rows while a relay publishes them (its claim, for a
-- lease) and on a key's oldest row when a publish failed (until the retry is due): a key
-- with a row held in the future is left alone by every relay.
CREATE TABLE IF NOT EXISTS tidings_outbox (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    held_until_ms INTEGER,
    claim TEXT,
    last_error TEXT
);

-- name: create_key_index
CREATE INDEX IF NOT EXISTS tidings_outbox_key ON tidings_outbox (key, id);

-- name: create_held_index
CREATE INDEX IF NOT EXISTS tidings_outbox_held ON tidings_outbox (held_until_ms)
WHERE held_until_ms IS NOT NULL;

-- name: save
INSERT INTO tidings_outbox (key, channel, payload, created_ms) VALUES (?, ?, ?, ?);

-- name: due_rows
-- The oldest rows, leaving out keys another relay holds or a retry puts off.
SELECT id, key, channel, payload, attempts FROM tidings_outbox
WHERE key NOT IN (SELECT key FROM tidings_outbox WHERE held_until_ms > ?)
ORDER BY id LIMIT ?;

-- name: hold
UPDATE tidings_outbox SET held_until_ms = ?, claim = ? WHERE id = ?;

-- name: delete
DELETE FROM tidings_outbox WHERE id = ? AND claim = ?;

-- name: retry_later
UPDATE tidings_outbox
SET attempts = attempts + 1, held_until_ms = ?, claim = NULL, last_error = ?
WHERE id = ? AND claim = ?;

-- name: release
UPDATE tidings_outbox SET held_until_ms = NULL, claim = NULL WHERE id = ? AND claim = ?;

-- name: count
SELECT count(*) FROM tidings_outbox;
