-- Pull consumers: definitions and the positions handed out (tables: 0005_pull_consumers.sql),
-- beside the checkpoints (0002_subscriptions.sql) and group partitions (0003_groups.sql)
-- they move. Times are the process clock in ms.

-- name: create
INSERT INTO tidings_pull (name, definition, handed, grouped, created_ms)
VALUES (?, ?, ?, 0, ?)
ON CONFLICT (name) DO NOTHING;

-- name: create_checkpoint
INSERT INTO tidings_subscriptions (name, position, state, updated_ms)
VALUES (?, ?, 'idle', ?)
ON CONFLICT (name) DO NOTHING;

-- name: load
SELECT definition, handed, grouped FROM tidings_pull WHERE name = ?;

-- name: list
SELECT name, definition, handed, grouped FROM tidings_pull ORDER BY name;

-- name: hand_out
UPDATE tidings_pull SET handed = ?1 WHERE name = ?2 AND handed < ?1;

-- name: ack
-- Forward only, and no further than what was handed out: one statement decides both.
UPDATE tidings_subscriptions
SET position = ?1, state = 'running', last_error = NULL, updated_ms = ?2
WHERE name = ?3 AND position < ?1
  AND ?1 <= (SELECT handed FROM tidings_pull WHERE name = ?3);

-- name: mark_grouped
UPDATE tidings_pull SET grouped = 1 WHERE name = ?;

-- name: handed_to
SELECT partition, position FROM tidings_pull_handed WHERE subscription = ? AND member = ?;

-- name: hand_out_partition
-- A partition's hand-out belongs to one member: another member's (before a takeover)
-- is replaced, not raised.
INSERT INTO tidings_pull_handed (subscription, partition, member, position)
VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (subscription, partition) DO UPDATE SET
    position = CASE WHEN member = excluded.member THEN max(position, excluded.position)
                    ELSE excluded.position END,
    member = excluded.member;

-- name: group_state
-- A group's lowest partition checkpoint and its live members.
SELECT (SELECT min(position) FROM tidings_partitions WHERE subscription = ?1),
       (SELECT count(*) FROM tidings_members WHERE subscription = ?1);

-- name: reset_checkpoint
UPDATE tidings_subscriptions SET position = ?1, updated_ms = ?2 WHERE name = ?3;

-- name: reset_partitions
UPDATE tidings_partitions SET position = ?1 WHERE subscription = ?2;

-- name: reset_handed
UPDATE tidings_pull SET handed = ?1 WHERE name = ?2;

-- name: delete_handed
DELETE FROM tidings_pull_handed WHERE subscription = ?;

-- name: delete_members
DELETE FROM tidings_members WHERE subscription = ?;

-- name: delete_partitions
DELETE FROM tidings_partitions WHERE subscription = ?;

-- name: delete_parked
DELETE FROM tidings_parked WHERE subscription = ?;

-- name: delete_checkpoint
DELETE FROM tidings_subscriptions WHERE name = ?;

-- name: delete_definition
DELETE FROM tidings_pull WHERE name = ?;
