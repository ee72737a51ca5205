-- Consumer groups: partition checkpoints with leases, and live members
-- (tables: 0003_groups.sql). Times are the process clock in ms (members share a machine).

-- name: count_partitions
SELECT count(*) FROM tidings_partitions WHERE subscription = ?;

-- name: create_partition
INSERT INTO tidings_partitions (subscription, partition, position) VALUES (?, ?, ?)
ON CONFLICT (subscription, partition) DO NOTHING;

-- name: see_member
INSERT INTO tidings_members (subscription, member, seen_ms) VALUES (?, ?, ?)
ON CONFLICT (subscription, member) DO UPDATE SET seen_ms = excluded.seen_ms;

-- name: forget_gone_members
DELETE FROM tidings_members WHERE subscription = ? AND seen_ms < ?;

-- name: count_members
SELECT count(*) FROM tidings_members WHERE subscription = ?;

-- name: renew
UPDATE tidings_partitions SET lease_until_ms = ?
WHERE subscription = ? AND owner = ?
RETURNING partition, position;

-- name: release
UPDATE tidings_partitions SET owner = NULL, lease_until_ms = NULL
WHERE subscription = ? AND owner = ? AND partition = ?;

-- name: free
SELECT partition FROM tidings_partitions
WHERE subscription = ? AND (owner IS NULL OR lease_until_ms < ?)
ORDER BY partition LIMIT ?;

-- name: take
UPDATE tidings_partitions SET owner = ?, lease_until_ms = ?
WHERE subscription = ? AND partition = ?
RETURNING partition, position;

-- name: leave
DELETE FROM tidings_members WHERE subscription = ? AND member = ?;

-- name: release_all
UPDATE tidings_partitions SET owner = NULL, lease_until_ms = NULL
WHERE subscription = ? AND owner = ?;

-- name: move
UPDATE tidings_partitions SET position = ?
WHERE subscription = ? AND partition = ? AND position = ? AND owner = ? AND lease_until_ms > ?;

-- name: reset
UPDATE tidings_partitions SET position = ? WHERE subscription = ?;
