-- Consumer groups: partition checkpoints with leases, and live members
-- (tables: 0003_groups.sql). Times are the database's clock.

-- name: lock_subscription
SELECT name FROM {schema}.subscriptions WHERE name = $1 FOR UPDATE;

-- name: count_partitions
SELECT count(*) FROM {schema}.partitions WHERE subscription = $1;

-- name: create_partitions
INSERT INTO {schema}.partitions (subscription, partition, position)
SELECT $1, p, $3 FROM generate_series(0, $2 - 1) AS p
ON CONFLICT (subscription, partition) DO NOTHING;

-- name: see_member
INSERT INTO {schema}.members (subscription, member, seen) VALUES ($1, $2, now())
ON CONFLICT (subscription, member) DO UPDATE SET seen = now();

-- name: forget_gone_members
DELETE FROM {schema}.members
WHERE subscription = $1 AND seen < now() - make_interval(secs => $2);

-- name: count_members
SELECT count(*) FROM {schema}.members WHERE subscription = $1;

-- name: renew
UPDATE {schema}.partitions
SET lease_until = now() + make_interval(secs => $3)
WHERE subscription = $1 AND owner = $2
RETURNING partition, position;

-- name: release
UPDATE {schema}.partitions SET owner = NULL, lease_until = NULL
WHERE subscription = $1 AND owner = $2 AND partition = ANY($3::integer[]);

-- name: take
UPDATE {schema}.partitions p
SET owner = $2, lease_until = now() + make_interval(secs => $3)
FROM (
    SELECT partition FROM {schema}.partitions
    WHERE subscription = $1 AND (owner IS NULL OR lease_until < now())
    ORDER BY partition
    LIMIT $4
    FOR UPDATE SKIP LOCKED
) AS free
WHERE p.subscription = $1 AND p.partition = free.partition
RETURNING p.partition, p.position;

-- name: leave
DELETE FROM {schema}.members WHERE subscription = $1 AND member = $2;

-- name: release_all
UPDATE {schema}.partitions SET owner = NULL, lease_until = NULL
WHERE subscription = $1 AND owner = $2;

-- name: move
-- The fence: only the owner, within its lease, moves a checkpoint it read. The clock is
-- read at the statement (clock_timestamp), not at the start of a handler's transaction.
UPDATE {schema}.partitions SET position = $4
WHERE subscription = $1 AND partition = $2 AND position = $3
  AND owner = $5 AND lease_until > clock_timestamp();

-- name: move_lazy
-- The same move with no handler writes beside it: committed without waiting for the
-- WAL flush (see advance_lazy in subscriptions.sql).
WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true))
UPDATE {schema}.partitions SET position = $4
FROM lazy
WHERE subscription = $1 AND partition = $2 AND position = $3
  AND owner = $5 AND lease_until > clock_timestamp();

-- name: reset
UPDATE {schema}.partitions SET position = $2 WHERE subscription = $1;
