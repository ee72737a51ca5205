-- Backup and restore (tidings.backup). The select_<table> queries read a table in its key
-- order, in the column order of tidings.backup.tables (which converts each value to the
-- backup file's SQLite form); a restore writes rows back with COPY into the same columns.
-- Lease columns are cleared on the way out.

-- name: head
SELECT position, time FROM {schema}.head WHERE id = 1;

-- name: lock_head
SELECT position FROM {schema}.head WHERE id = 1 FOR UPDATE;

-- name: set_head
UPDATE {schema}.head SET position = $1, time = $2 WHERE id = 1;

-- name: identity
SELECT identity::text FROM {schema}.store WHERE id = 1;

-- name: new_identity
UPDATE {schema}.store SET identity = gen_random_uuid(), created = now() WHERE id = 1
RETURNING identity::text;

-- name: used
-- What makes a store non-empty: anything a restore would write or clear.
SELECT (SELECT position FROM {schema}.head WHERE id = 1)
     + (SELECT count(*) FROM {schema}.events)
     + (SELECT count(*) FROM {schema}.streams)
     + (SELECT count(*) FROM {schema}.audit)
     + (SELECT count(*) FROM {schema}.subscriptions)
     + (SELECT count(*) FROM {schema}.parked)
     + (SELECT count(*) FROM {schema}.partitions)
     + (SELECT count(*) FROM {schema}.members)
     + (SELECT count(*) FROM {schema}.checkpoints)
     + (SELECT count(*) FROM {schema}.snapshots)
     + (SELECT count(*) FROM {schema}.views)
     + (SELECT count(*) FROM {schema}.pull)
     + (SELECT count(*) FROM {schema}.pull_handed)
     + (SELECT count(*) FROM {schema}.eventstreams)
     + (SELECT count(*) FROM {schema}.eventstream_attempts)
     + (SELECT count(*) FROM {schema}.eventstream_parked)
     + (SELECT count(*) FROM {schema}.eventstream_redeliveries);

-- name: empty_store
TRUNCATE {schema}.events, {schema}.streams, {schema}.audit, {schema}.subscriptions,
    {schema}.parked, {schema}.partitions, {schema}.members, {schema}.checkpoints,
    {schema}.snapshots, {schema}.views, {schema}.pull, {schema}.pull_handed,
    {schema}.eventstreams, {schema}.eventstream_attempts, {schema}.eventstream_parked,
    {schema}.eventstream_redeliveries;
UPDATE {schema}.head SET position = 0, time = 'epoch' WHERE id = 1;

-- name: move_sequences
-- Ids restored as they were: the sequences go on after the highest one.
SELECT setval(pg_get_serial_sequence('{schema}.audit', 'id'),
              coalesce((SELECT max(id) FROM {schema}.audit), 0) + 1, false),
       setval(pg_get_serial_sequence('{schema}.eventstream_attempts', 'id'),
              coalesce((SELECT max(id) FROM {schema}.eventstream_attempts), 0) + 1, false),
       setval(pg_get_serial_sequence('{schema}.eventstream_redeliveries', 'id'),
              coalesce((SELECT max(id) FROM {schema}.eventstream_redeliveries), 0) + 1, false);

-- name: counts
SELECT 'streams', count(*) FROM {schema}.streams
UNION ALL SELECT 'audit', count(*) FROM {schema}.audit
UNION ALL SELECT 'events', count(*) FROM {schema}.events
UNION ALL SELECT 'subscriptions', count(*) FROM {schema}.subscriptions
UNION ALL SELECT 'parked', count(*) FROM {schema}.parked
UNION ALL SELECT 'partitions', count(*) FROM {schema}.partitions
UNION ALL SELECT 'checkpoints', count(*) FROM {schema}.checkpoints
UNION ALL SELECT 'snapshots', count(*) FROM {schema}.snapshots
UNION ALL SELECT 'views', count(*) FROM {schema}.views
UNION ALL SELECT 'pull', count(*) FROM {schema}.pull
UNION ALL SELECT 'eventstreams', count(*) FROM {schema}.eventstreams
UNION ALL SELECT 'eventstream_attempts', count(*) FROM {schema}.eventstream_attempts
UNION ALL SELECT 'eventstream_parked', count(*) FROM {schema}.eventstream_parked
UNION ALL SELECT 'eventstream_redeliveries', count(*) FROM {schema}.eventstream_redeliveries;

-- name: beyond_head
-- Checkpoints of this log past its head, and parked events that are not in the log: a
-- restored store must have none. (Named checkpoints count positions of other logs.)
SELECT (SELECT count(*) FROM {schema}.subscriptions WHERE position > $1)
     + (SELECT count(*) FROM {schema}.partitions WHERE position > $1)
     + (SELECT count(*) FROM {schema}.pull WHERE handed > $1)
     + (SELECT count(*) FROM {schema}.eventstreams WHERE checkpoint > $1)
     + (SELECT count(*) FROM {schema}.eventstream_parked WHERE position > $1)
     + (SELECT count(*) FROM {schema}.parked p
        WHERE NOT EXISTS (SELECT 1 FROM {schema}.events e
                          WHERE e.position = p.position AND e.id = p.event_id));

-- name: select_streams
SELECT name, version FROM {schema}.streams ORDER BY name;

-- name: select_audit
SELECT id, "user", extra::text, created, arrived FROM {schema}.audit ORDER BY id;

-- name: select_events
SELECT position, id, stream, version, type, data::text, metadata::text, time, category, audit_id
FROM {schema}.events ORDER BY position;

-- name: select_subscriptions
SELECT name, position, state, last_error, updated FROM {schema}.subscriptions ORDER BY name;

-- name: select_parked
SELECT subscription, position, event_id, stream, error, attempts, parked_at
FROM {schema}.parked ORDER BY subscription, position;

-- name: select_partitions
-- A partition's checkpoint, not who holds it: the lease is cleared.
SELECT subscription, partition, position, NULL::text, NULL::timestamptz
FROM {schema}.partitions ORDER BY subscription, partition;

-- name: select_checkpoints
SELECT name, position, updated_ms FROM {schema}.checkpoints ORDER BY name;

-- name: select_snapshots
SELECT stream, name, projection_version, version, state::text, created
FROM {schema}.snapshots ORDER BY stream, name;

-- name: select_views
SELECT view, key, value::text, position FROM {schema}.views ORDER BY view, key;

-- name: select_pull
SELECT name, definition::text, handed, grouped, created FROM {schema}.pull ORDER BY name;

-- name: select_eventstreams
-- The node running a stream holds a lease (owner, lease_until_ms): cleared.
SELECT id, name, type, status, definition, signing, generation, checkpoint, batch_number,
       inflight_last, reason, NULL::text, 0::bigint, dispatch, failing_since_ms, last_error,
       started_ms, last_dispatch_ms, delivered, batches, attempts, failures, created_ms,
       updated_ms, inflight_number
FROM {schema}.eventstreams ORDER BY id;

-- name: select_eventstream_attempts
SELECT id, stream_id, at_ms, batch_id, batch_number, first_position, last_position, events,
       outcome, status_code, duration_ms, error, response, consumer, redelivery
FROM {schema}.eventstream_attempts ORDER BY id;

-- name: select_eventstream_parked
SELECT stream_id, position, batch_id, reason, parked_ms
FROM {schema}.eventstream_parked ORDER BY stream_id, position;

-- name: select_eventstream_redeliveries
SELECT id, stream_id, from_position, to_position, parked, created_ms
FROM {schema}.eventstream_redeliveries ORDER BY id;
