-- Durable subscriptions: checkpoints and parked events (tables: 0002_subscriptions.sql).

-- name: ensure
INSERT INTO tidings_subscriptions (name, position, state, updated_ms)
VALUES (?, ?, 'idle', ?)
ON CONFLICT (name) DO NOTHING;

-- name: load
SELECT position FROM tidings_subscriptions WHERE name = ?;

-- name: advance
UPDATE tidings_subscriptions
SET position = ?, state = 'running', last_error = NULL, updated_ms = ?
WHERE name = ? AND position = ?;

-- name: set_state
UPDATE tidings_subscriptions SET state = ?, last_error = ?, updated_ms = ? WHERE name = ?;

-- name: reset
UPDATE tidings_subscriptions SET position = ?, updated_ms = ? WHERE name = ?;

-- name: list
-- A consumer group's checkpoint is its lowest partition checkpoint (0003_groups.sql).
SELECT s.name,
       coalesce((SELECT min(g.position) FROM tidings_partitions g WHERE g.subscription = s.name),
                s.position) AS position,
       s.state, s.last_error, s.updated_ms,
       (SELECT count(*) FROM tidings_parked p WHERE p.subscription = s.name) AS parked,
       (SELECT count(*) FROM tidings_members m WHERE m.subscription = s.name) AS members,
       (SELECT count(*) FROM tidings_partitions g WHERE g.subscription = s.name) AS partitions
FROM tidings_subscriptions s ORDER BY s.name;

-- name: park
INSERT INTO tidings_parked (subscription, position, event_id, stream, error, attempts, parked_at_ms)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (subscription, position) DO NOTHING;

-- name: parked
SELECT position, event_id, stream, error, attempts, parked_at_ms
FROM tidings_parked WHERE subscription = ? ORDER BY position;

-- name: unpark
DELETE FROM tidings_parked WHERE subscription = ? AND position = ?;
