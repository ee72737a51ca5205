-- A satellite's local file (tables: the satellite migration), run on the satellite's own
-- connection with synchronous=FULL. Times are ms since the epoch.

-- name: state
SELECT satellite_id, categories, server_identity, cursor, last_seq, decided_seq, synced_ms
FROM tidings_satellite WHERE id = 1;

-- name: create_state
INSERT INTO tidings_satellite (id, satellite_id, categories, cursor, last_seq, decided_seq)
VALUES (1, ?, ?, 0, 0, 0);

-- name: set_last_seq
UPDATE tidings_satellite SET last_seq = ? WHERE id = 1;

-- name: set_decided
UPDATE tidings_satellite SET decided_seq = max(decided_seq, ?) WHERE id = 1;

-- name: set_cursor
UPDATE tidings_satellite SET cursor = ?, synced_ms = ? WHERE id = 1;

-- name: set_identity
UPDATE tidings_satellite SET server_identity = ? WHERE id = 1;

-- name: insert_pending
INSERT INTO tidings_satellite_pending (seq, body, created_ms) VALUES (?, ?, ?);

-- name: insert_pending_stream
INSERT INTO tidings_satellite_pending_streams (stream, seq, events) VALUES (?, ?, ?);

-- name: undecided
-- Pending transactions the server has not decided yet, in their order.
SELECT seq, body FROM tidings_satellite_pending
WHERE accepted_position IS NULL AND seq > ? ORDER BY seq LIMIT ?;

-- name: undecided_from
SELECT seq, body FROM tidings_satellite_pending
WHERE accepted_position IS NULL AND seq >= ? ORDER BY seq;

-- name: move_pending
-- A new seq, and the body that carries it (NULL: the body as it is).
UPDATE tidings_satellite_pending SET seq = ?, body = coalesce(?, body) WHERE seq = ?;

-- name: move_pending_streams
UPDATE tidings_satellite_pending_streams SET seq = ? WHERE seq = ?;

-- name: accept
UPDATE tidings_satellite_pending SET accepted_position = ? WHERE seq = ?;

-- name: pending_body
SELECT body FROM tidings_satellite_pending WHERE seq = ?;

-- name: drop_pending
DELETE FROM tidings_satellite_pending WHERE seq = ?;

-- name: drop_pending_streams
DELETE FROM tidings_satellite_pending_streams WHERE seq = ?;

-- name: confirmed_seqs
-- Accepted transactions whose every event is now in the replica.
SELECT seq FROM tidings_satellite_pending
WHERE accepted_position IS NOT NULL AND accepted_position <= ?;

-- name: pending_of_stream
SELECT p.seq, p.body FROM tidings_satellite_pending_streams s
JOIN tidings_satellite_pending p ON p.seq = s.seq
WHERE s.stream = ? ORDER BY p.seq;

-- name: pending_of_stream_full
SELECT p.seq, p.body, p.created_ms FROM tidings_satellite_pending_streams s
JOIN tidings_satellite_pending p ON p.seq = s.seq
WHERE s.stream = ? ORDER BY p.seq;

-- name: pending_count_of_stream
SELECT coalesce(sum(events), 0) FROM tidings_satellite_pending_streams WHERE stream = ?;

-- name: pending_counts
SELECT count(*), count(accepted_position) FROM tidings_satellite_pending;

-- name: insert_conflict
INSERT OR REPLACE INTO tidings_satellite_conflicts (seq, body, verdict, decided_ms)
VALUES (?, ?, ?, ?);

-- name: conflicts
SELECT seq, body, verdict, decided_ms FROM tidings_satellite_conflicts ORDER BY seq;

-- name: drop_conflict
DELETE FROM tidings_satellite_conflicts WHERE seq = ?;

-- name: conflict_count
SELECT count(*) FROM tidings_satellite_conflicts;

-- name: insert_event
INSERT INTO tidings_events
    (position, id, stream, version, type, data, metadata, time_ms, category, audit_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL);

-- name: upsert_stream
INSERT INTO tidings_streams (name, version) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET version = max(version, excluded.version);

-- name: set_head
UPDATE tidings_head SET position = max(position, ?), time_ms = max(time_ms, ?) WHERE id = 1;
