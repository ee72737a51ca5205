-- Durable subscriptions: checkpoints and parked events (tables: 0002_subscriptions.sql).

-- name: ensure
INSERT INTO {schema}.subscriptions (name, position, state, updated)
VALUES ($1, $2, 'idle', now())
ON CONFLICT (name) DO NOTHING;

-- name: load
SELECT position FROM {schema}.subscriptions WHERE name = $1;

-- name: advance
UPDATE {schema}.subscriptions
SET position = $3, state = 'running', last_error = NULL, updated = now()
WHERE name = $1 AND position = $2;

-- name: advance_lazy
-- A move with no handler writes beside it commits without waiting for the WAL flush
-- (synchronous_commit off, for this transaction only): a database crash can take back
-- the last moves, whose events are then delivered again (at least once); it halves
-- the commit's wait, which bounds catch-up with small batches.
WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true))
UPDATE {schema}.subscriptions
SET position = $3, state = 'running', last_error = NULL, updated = now()
FROM lazy WHERE name = $1 AND position = $2;

-- name: set_state
UPDATE {schema}.subscriptions SET state = $2, last_error = $3, updated = now() WHERE name = $1;

-- name: reset
UPDATE {schema}.subscriptions SET position = $2, updated = now() WHERE name = $1;

-- name: list
-- A consumer group's checkpoint is its lowest partition checkpoint (0003_groups.sql).
SELECT s.name,
       coalesce((SELECT min(g.position) FROM {schema}.partitions g WHERE g.subscription = s.name),
                s.position) AS position,
       s.state, s.last_error, s.updated,
       (SELECT count(*) FROM {schema}.parked p WHERE p.subscription = s.name) AS parked,
       (SELECT count(*) FROM {schema}.members m WHERE m.subscription = s.name) AS members,
       (SELECT count(*) FROM {schema}.partitions g WHERE g.subscription = s.name) AS partitions
FROM {schema}.subscriptions s ORDER BY s.name;

-- name: park
INSERT INTO {schema}.parked (subscription, position, event_id, stream, error, attempts, parked_at)
VALUES ($1, $2, $3, $4, $5, $6, now())
ON CONFLICT (subscription, position) DO NOTHING;

-- name: parked
SELECT position, event_id, stream, error, attempts, parked_at
FROM {schema}.parked WHERE subscription = $1 ORDER BY position;

-- name: unpark
DELETE FROM {schema}.parked WHERE subscription = $1 AND position = $2;
