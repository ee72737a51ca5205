-- Backup and restore (tidings.backup): a backup file is a SQLite store file (this
-- dialect's schema) plus the tidings_backup table. The select_<table> queries read a
-- table in its key order, in the backup's canonical row form (tidings.backup.tables);
-- insert_<table> write that form. Lease columns are cleared on the way out.

-- name: build_pragmas
-- The file is built as FILE.partial and renamed only once complete: no journal is needed
-- for crash safety, and the final fsync is the backup's own.
PRAGMA journal_mode = MEMORY;
PRAGMA synchronous = OFF;

-- name: create_backup_table
CREATE TABLE tidings_backup (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    format INTEGER NOT NULL,
    identity TEXT NOT NULL,
    backend TEXT NOT NULL,
    position INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0,
    tables TEXT NOT NULL DEFAULT '{}'
);

-- name: start_backup
INSERT INTO tidings_backup (id, format, identity, backend, position, time_ms, created_ms)
VALUES (1, ?, ?, ?, ?, ?, ?);

-- name: complete_backup
UPDATE tidings_backup SET complete = 1, tables = ? WHERE id = 1;

-- name: backup_table_exists
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tidings_backup';

-- name: backup_row
SELECT format, identity, backend, position, time_ms, created_ms, complete, tables
FROM tidings_backup WHERE id = 1;

-- name: file_migrations
SELECT max(version) FROM tidings_migrations;

-- name: quick_check
PRAGMA quick_check;

-- name: head
SELECT position, time_ms FROM tidings_head WHERE id = 1;

-- name: set_head
UPDATE tidings_head SET position = ?, time_ms = ? WHERE id = 1;

-- name: identity
SELECT identity FROM tidings_store WHERE id = 1;

-- name: new_identity
UPDATE tidings_store SET identity = ?, created_ms = ? WHERE id = 1;

-- name: used
-- What makes a store non-empty: anything a restore would write or clear.
SELECT (SELECT position FROM tidings_head WHERE id = 1)
     + (SELECT count(*) FROM tidings_events)
     + (SELECT count(*) FROM tidings_streams)
     + (SELECT count(*) FROM tidings_audit)
     + (SELECT count(*) FROM tidings_subscriptions)
     + (SELECT count(*) FROM tidings_parked)
     + (SELECT count(*) FROM tidings_partitions)
     + (SELECT count(*) FROM tidings_members)
     + (SELECT count(*) FROM tidings_checkpoints)
     + (SELECT count(*) FROM tidings_snapshots)
     + (SELECT count(*) FROM tidings_views)
     + (SELECT count(*) FROM tidings_pull)
     + (SELECT count(*) FROM tidings_pull_handed)
     + (SELECT count(*) FROM tidings_eventstreams)
     + (SELECT count(*) FROM tidings_eventstream_attempts)
     + (SELECT count(*) FROM tidings_eventstream_parked)
     + (SELECT count(*) FROM tidings_eventstream_redeliveries);

-- name: empty_store
DELETE FROM tidings_events;
DELETE FROM tidings_streams;
DELETE FROM tidings_audit;
DELETE FROM tidings_subscriptions;
DELETE FROM tidings_parked;
DELETE FROM tidings_partitions;
DELETE FROM tidings_members;
DELETE FROM tidings_checkpoints;
DELETE FROM tidings_snapshots;
DELETE FROM tidings_views;
DELETE FROM tidings_pull;
DELETE FROM tidings_pull_handed;
DELETE FROM tidings_eventstreams;
DELETE FROM tidings_eventstream_attempts;
DELETE FROM tidings_eventstream_parked;
DELETE FROM tidings_eventstream_redeliveries;
UPDATE tidings_head SET position = 0, time_ms = 0 WHERE id = 1;

-- name: counts
SELECT 'streams', count(*) FROM tidings_streams
UNION ALL SELECT 'audit', count(*) FROM tidings_audit
UNION ALL SELECT 'events', count(*) FROM tidings_events
UNION ALL SELECT 'subscriptions', count(*) FROM tidings_subscriptions
UNION ALL SELECT 'parked', count(*) FROM tidings_parked
UNION ALL SELECT 'partitions', count(*) FROM tidings_partitions
UNION ALL SELECT 'checkpoints', count(*) FROM tidings_checkpoints
UNION ALL SELECT 'snapshots', count(*) FROM tidings_snapshots
UNION ALL SELECT 'views', count(*) FROM tidings_views
UNION ALL SELECT 'pull', count(*) FROM tidings_pull
UNION ALL SELECT 'eventstreams', count(*) FROM tidings_eventstreams
UNION ALL SELECT 'eventstream_attempts', count(*) FROM tidings_eventstream_attempts
UNION ALL SELECT 'eventstream_parked', count(*) FROM tidings_eventstream_parked
UNION ALL SELECT 'eventstream_redeliveries', count(*) FROM tidings_eventstream_redeliveries;

-- name: beyond_head
-- Checkpoints of this log past its head, and parked events that are not in the log: a
-- restored store must have none. (Named checkpoints count positions of other logs.)
SELECT (SELECT count(*) FROM tidings_subscriptions WHERE position > ?1)
     + (SELECT count(*) FROM tidings_partitions WHERE position > ?1)
     + (SELECT count(*) FROM tidings_pull WHERE handed > ?1)
     + (SELECT count(*) FROM tidings_eventstreams WHERE checkpoint > ?1)
     + (SELECT count(*) FROM tidings_eventstream_parked WHERE position > ?1)
     + (SELECT count(*) FROM tidings_parked p
        WHERE NOT EXISTS (SELECT 1 FROM tidings_events e
                          WHERE e.position = p.position AND e.id = p.event_id));

-- name: select_streams
SELECT name, version FROM tidings_streams ORDER BY name;

-- name: insert_streams
INSERT INTO tidings_streams (name, version) VALUES (?, ?);

-- name: select_audit
SELECT id, user, extra, created_ms, arrived_ms FROM tidings_audit ORDER BY id;

-- name: insert_audit
INSERT INTO tidings_audit (id, user, extra, created_ms, arrived_ms) VALUES (?, ?, ?, ?, ?);

-- name: select_events
SELECT position, id, stream, version, type, data, metadata, time_ms, category, audit_id
FROM tidings_events ORDER BY position;

-- name: insert_events
INSERT INTO tidings_events
    (position, id, stream, version, type, data, metadata, time_ms, category, audit_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: select_subscriptions
SELECT name, position, state, last_error, updated_ms FROM tidings_subscriptions ORDER BY name;

-- name: insert_subscriptions
INSERT INTO tidings_subscriptions (name, position, state, last_error, updated_ms)
VALUES (?, ?, ?, ?, ?);

-- name: select_parked
SELECT subscription, position, event_id, stream, error, attempts, parked_at_ms
FROM tidings_parked ORDER BY subscription, position;

-- name: insert_parked
INSERT INTO tidings_parked
    (subscription, position, event_id, stream, error, attempts, parked_at_ms)
VALUES (?, ?, ?, ?, ?, ?, ?);

-- name: select_partitions
-- A partition's checkpoint, not who holds it: the lease is cleared.
SELECT subscription, partition, position, NULL, NULL
FROM tidings_partitions ORDER BY subscription, partition;

-- name: insert_partitions
INSERT INTO tidings_partitions (subscription, partition, position, owner, lease_until_ms)
VALUES (?, ?, ?, ?, ?);

-- name: select_checkpoints
SELECT name, position, updated_ms FROM tidings_checkpoints ORDER BY name;

-- name: insert_checkpoints
INSERT INTO tidings_checkpoints (name, position, updated_ms) VALUES (?, ?, ?);

-- name: select_snapshots
SELECT stream, name, projection_version, version, state, created_ms
FROM tidings_snapshots ORDER BY stream, name;

-- name: insert_snapshots
INSERT INTO tidings_snapshots (stream, name, projection_version, version, state, created_ms)
VALUES (?, ?, ?, ?, ?, ?);

-- name: select_views
SELECT view, key, value, position FROM tidings_views ORDER BY view, key;

-- name: insert_views
INSERT INTO tidings_views (view, key, value, position) VALUES (?, ?, ?, ?);

-- name: select_pull
SELECT name, definition, handed, grouped, created_ms FROM tidings_pull ORDER BY name;

-- name: insert_pull
INSERT INTO tidings_pull (name, definition, handed, grouped, created_ms) VALUES (?, ?, ?, ?, ?);

-- name: select_eventstreams
-- The node running a stream holds a lease (owner, lease_until_ms): cleared.
SELECT id, name, type, status, definition, signing, generation, checkpoint, batch_number,
       inflight_last, reason, NULL, 0, dispatch, failing_since_ms, last_error, started_ms,
       last_dispatch_ms, delivered, batches, attempts, failures, created_ms, updated_ms,
       inflight_number
FROM tidings_eventstreams ORDER BY id;

-- name: insert_eventstreams
INSERT INTO tidings_eventstreams
    (id, name, type, status, definition, signing, generation, checkpoint, batch_number,
     inflight_last, reason, owner, lease_until_ms, dispatch, failing_since_ms, last_error,
     started_ms, last_dispatch_ms, delivered, batches, attempts, failures, created_ms,
     updated_ms, inflight_number)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: select_eventstream_attempts
SELECT id, stream_id, at_ms, batch_id, batch_number, first_position, last_position, events,
       outcome, status_code, duration_ms, error, response, consumer, redelivery
FROM tidings_eventstream_attempts ORDER BY id;

-- name: insert_eventstream_attempts
INSERT INTO tidings_eventstream_attempts
    (id, stream_id, at_ms, batch_id, batch_number, first_position, last_position, events,
     outcome, status_code, duration_ms, error, response, consumer, redelivery)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: select_eventstream_parked
SELECT stream_id, position, batch_id, reason, parked_ms
FROM tidings_eventstream_parked ORDER BY stream_id, position;

-- name: insert_eventstream_parked
INSERT INTO tidings_eventstream_parked (stream_id, position, batch_id, reason, parked_ms)
VALUES (?, ?, ?, ?, ?);

-- name: select_eventstream_redeliveries
SELECT id, stream_id, from_position, to_position, parked, created_ms
FROM tidings_eventstream_redeliveries ORDER BY id;

-- name: insert_eventstream_redeliveries
INSERT INTO tidings_eventstream_redeliveries
    (id, stream_id, from_position, to_position, parked, created_ms)
VALUES (?, ?, ?, ?, ?, ?);
