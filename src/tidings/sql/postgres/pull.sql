-- Pull consumers: definitions and the positions handed out (tables: 0006_pull_consumers.sql),
-- beside the checkpoints (0002_subscriptions.sql) and group partitions (0003_groups.sql)
-- they move.

-- name: create
INSERT INTO {schema}.pull (name, definition, handed) VALUES ($1, $2::jsonb, $3)
ON CONFLICT (name) DO NOTHING;

-- name: create_checkpoint
INSERT INTO {schema}.subscriptions (name, position, state, updated)
VALUES ($1, $2, 'idle', now())
ON CONFLICT (name) DO NOTHING;

-- name: load
SELECT definition::text, handed, grouped FROM {schema}.pull WHERE name = $1;

-- name: list
SELECT name, definition::text, handed, grouped FROM {schema}.pull ORDER BY name;

-- name: hand_out
UPDATE {schema}.pull SET handed = $2 WHERE name = $1 AND handed < $2;

-- name: ack
-- Forward only, and no further than what was handed out: one statement decides both.
UPDATE {schema}.subscriptions s
SET position = $2, state = 'running', last_error = NULL, updated = now()
FROM {schema}.pull p
WHERE s.name = $1 AND p.name = $1 AND s.position < $2 AND $2 <= p.handed;

-- name: mark_grouped
UPDATE {schema}.pull SET grouped = true WHERE name = $1 AND NOT grouped;

-- name: handed_to
SELECT partition, position FROM {schema}.pull_handed WHERE subscription = $1 AND member = $2;

-- name: hand_out_partitions
-- A partition's hand-out belongs to one member: another member's (before a takeover)
-- is replaced, not raised.
INSERT INTO {schema}.pull_handed AS h (subscription, partition, member, position)
SELECT $1, p, $2, $3 FROM unnest($4::integer[]) AS p
ON CONFLICT (subscription, partition) DO UPDATE SET
    position = CASE WHEN h.member = excluded.member THEN greatest(h.position, excluded.position)
                    ELSE excluded.position END,
    member = excluded.member;

-- name: group_state
-- A group's lowest partition checkpoint and its live members.
SELECT (SELECT min(position) FROM {schema}.partitions WHERE subscription = $1),
       (SELECT count(*) FROM {schema}.members WHERE subscription = $1);

-- name: lock_definition
SELECT name FROM {schema}.pull WHERE name = $1 FOR UPDATE;

-- name: reset_checkpoint
UPDATE {schema}.subscriptions SET position = $2, updated = now() WHERE name = $1;

-- name: reset_partitions
UPDATE {schema}.partitions SET position = $2 WHERE subscription = $1;

-- name: reset_handed
UPDATE {schema}.pull SET handed = $2 WHERE name = $1;

-- name: delete_handed
DELETE FROM {schema}.pull_handed WHERE subscription = $1;

-- name: delete_members
DELETE FROM {schema}.members WHERE subscription = $1;

-- name: delete_partitions
DELETE FROM {schema}.partitions WHERE subscription = $1;

-- name: delete_parked
DELETE FROM {schema}.parked WHERE subscription = $1;

-- name: delete_checkpoint
DELETE FROM {schema}.subscriptions WHERE name = $1;

-- name: delete_definition
DELETE FROM {schema}.pull WHERE name = $1;
