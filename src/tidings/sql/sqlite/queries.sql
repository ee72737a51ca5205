-- Named queries of the SQLite backend.

-- name: create_migrations
CREATE TABLE IF NOT EXISTS tidings_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_ms INTEGER NOT NULL
);

-- name: migrations_table_exists
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tidings_migrations';

-- name: applied_migrations
SELECT version FROM tidings_migrations ORDER BY version;

-- name: record_migration
INSERT INTO tidings_migrations (version, name, applied_ms) VALUES (?, ?, ?);

-- name: head
SELECT position, time_ms FROM tidings_head WHERE id = 1;

-- name: set_head
UPDATE tidings_head SET position = ?, time_ms = ? WHERE id = 1;

-- name: insert_audit
INSERT INTO tidings_audit (user, extra, created_ms, arrived_ms) VALUES (?, ?, ?, ?);

-- name: insert_event
INSERT INTO tidings_events
    (position, id, stream, version, type, data, metadata, time_ms, category, audit_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: upsert_stream
INSERT INTO tidings_streams (name, version) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET version = excluded.version;

-- name: stream_version
SELECT version FROM tidings_streams WHERE name = ?;

-- name: read_stream_forward
SELECT position, id, stream, version, type, data, metadata, time_ms
FROM tidings_events WHERE stream = ? AND version >= ? ORDER BY version LIMIT ?;

-- name: read_stream_backward
SELECT position, id, stream, version, type, data, metadata, time_ms
FROM tidings_events WHERE stream = ? AND version <= ? ORDER BY version DESC LIMIT ?;

-- name: read_all
SELECT position, id, stream, version, type, data, metadata, time_ms
FROM tidings_events WHERE position > ? ORDER BY position LIMIT ?;

-- name: list_streams
SELECT name, version FROM tidings_streams
WHERE name > ? AND (? IS NULL OR substr(name, 1, length(?)) = ?)
ORDER BY name LIMIT ?;

-- name: audit_of
SELECT a.id, a.user, a.extra, a.created_ms, a.arrived_ms
FROM tidings_events e JOIN tidings_audit a ON a.id = e.audit_id
WHERE e.position = ?;

-- name: checkpoint
SELECT position FROM tidings_checkpoints WHERE name = ?;

-- name: move_checkpoint
INSERT INTO tidings_checkpoints (name, position, updated_ms) VALUES (?, ?, ?)
ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_ms = excluded.updated_ms;

-- name: store_identity
SELECT identity FROM tidings_store WHERE id = 1;
