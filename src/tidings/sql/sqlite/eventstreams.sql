-- Managed event streams (tables: the eventstreams migration). Numbered parameters (:1, :2...),
-- the same names and order as in PostgreSQL's file: tidings.delivery calls them through a
-- room. A query may be several statements: they run in order, in one transaction.
-- Times are the process clock in ms.

-- name: insert
INSERT INTO tidings_eventstreams
    (id, name, type, status, definition, signing, checkpoint, created_ms, updated_ms)
VALUES (:1, :2, :3, :4, :5, :6, :7, :8, :8)
ON CONFLICT DO NOTHING;

-- name: by_name
SELECT id, name, type, status, definition, signing, generation, checkpoint, batch_number, inflight_last, reason, owner, lease_until_ms, dispatch, failing_since_ms, last_error, started_ms, last_dispatch_ms, delivered, batches, attempts, failures, created_ms, updated_ms, inflight_number FROM tidings_eventstreams WHERE name = :1;

-- name: by_id
SELECT id, name, type, status, definition, signing, generation, checkpoint, batch_number, inflight_last, reason, owner, lease_until_ms, dispatch, failing_since_ms, last_error, started_ms, last_dispatch_ms, delivered, batches, attempts, failures, created_ms, updated_ms, inflight_number FROM tidings_eventstreams WHERE id = :1;

-- name: list
-- Filters are optional (NULL: any); paging by name, after the cursor :4.
SELECT id, name, type, status, definition, signing, generation, checkpoint, batch_number, inflight_last, reason, owner, lease_until_ms, dispatch, failing_since_ms, last_error, started_ms, last_dispatch_ms, delivered, batches, attempts, failures, created_ms, updated_ms, inflight_number FROM tidings_eventstreams
WHERE (:1 IS NULL OR name = :1)
  AND (:2 IS NULL OR status = :2)
  AND (:3 IS NULL OR type = :3)
  AND name > :4
ORDER BY name
LIMIT :5;

-- name: redefine
-- A new definition (PUT, PATCH): whatever runs it stops at its next write and the
-- stream runs again from its checkpoint with the new settings.
UPDATE tidings_eventstreams
SET definition = :2, type = :3, signing = :4, generation = generation + 1, updated_ms = :5
WHERE id = :1 AND status <> 'deleting';

-- name: start
UPDATE tidings_eventstreams
SET status = 'started', reason = NULL, failing_since_ms = NULL, last_error = NULL,
    dispatch = 'idle', generation = generation + 1, updated_ms = :2
WHERE id = :1 AND status <> 'deleting';

-- name: stop
UPDATE tidings_eventstreams
SET status = 'stopped', reason = :2, dispatch = 'idle', generation = generation + 1,
    updated_ms = :3
WHERE id = :1 AND status <> 'deleting';

-- name: reset
-- The batch in flight is forgotten: the next batch starts after the new checkpoint.
UPDATE tidings_eventstreams
SET checkpoint = :2, inflight_last = NULL, inflight_number = NULL, failing_since_ms = NULL,
    last_error = NULL,
    generation = generation + 1, updated_ms = :3
WHERE id = :1 AND status <> 'deleting';

-- name: mark_deleting
UPDATE tidings_eventstreams
SET status = 'deleting', generation = generation + 1, updated_ms = :2
WHERE id = :1;

-- name: delete_attempts
DELETE FROM tidings_eventstream_attempts WHERE stream_id = :1;

-- name: delete_parked
DELETE FROM tidings_eventstream_parked WHERE stream_id = :1;

-- name: delete_stream
DELETE FROM tidings_eventstreams WHERE id = :1 AND status = 'deleting';

-- name: deleting
SELECT id, owner, lease_until_ms FROM tidings_eventstreams WHERE status = 'deleting';

-- name: runnable
-- Started websocket streams no live node holds: free, or their lease ran out before :1.
SELECT id FROM tidings_eventstreams
WHERE status = 'started' AND type = 'websocket' AND (owner IS NULL OR lease_until_ms < :1)
ORDER BY id;

-- name: claim
UPDATE tidings_eventstreams SET owner = :2, lease_until_ms = :4, started_ms = :3
WHERE id = :1 AND status = 'started' AND (owner IS NULL OR owner = :2 OR lease_until_ms < :3);

-- name: renew
-- Held by :2 at generation :3: anything else (a restart, a reset, a stop, another node
-- that took it over) changes no row, and the runner stops.
UPDATE tidings_eventstreams SET lease_until_ms = :4
WHERE id = :1 AND owner = :2 AND generation = :3 AND status = 'started';

-- name: release
UPDATE tidings_eventstreams SET owner = NULL, lease_until_ms = 0 WHERE id = :1 AND owner = :2;

-- name: hand_out
-- Before a batch is sent: its number and last position, so that whoever sends it again
-- (this node after a failure, another after a crash) sends the same batch.
UPDATE tidings_eventstreams
SET batch_number = :4, inflight_number = :4, inflight_last = :5, dispatch = 'dispatching'
WHERE id = :1 AND owner = :2 AND generation = :3;

-- name: skip_to
-- A filtered-out stretch: nothing the stream delivers lies up to :4.
UPDATE tidings_eventstreams SET checkpoint = :4, dispatch = 'complete'
WHERE id = :1 AND owner = :2 AND generation = :3 AND checkpoint < :4 AND inflight_last IS NULL;

-- name: failing
UPDATE tidings_eventstreams
SET dispatch = :4, last_error = :5, failures = failures + 1,
    failing_since_ms = COALESCE(failing_since_ms, :6)
WHERE id = :1 AND owner = :2 AND generation = :3;

-- name: halt
-- The runtime stops the stream itself (410 Gone, failing for disable_after).
UPDATE tidings_eventstreams
SET status = 'stopped', reason = :4, dispatch = 'idle', owner = NULL, lease_until_ms = 0,
    generation = generation + 1, updated_ms = :5
WHERE id = :1 AND owner = :2 AND generation = :3;

-- name: attempt
-- One delivery attempt, counted on the stream's row.
INSERT INTO tidings_eventstream_attempts
    (stream_id, at_ms, batch_id, batch_number, first_position, last_position, events, outcome,
     status_code, duration_ms, error, response, consumer, redelivery)
VALUES (:1, :2, :3, :4, :5, :6, :7, :8, :9, :10, :11, :12, :13, :14);
UPDATE tidings_eventstreams SET attempts = attempts + 1 WHERE id = :1;

-- name: landed
-- A batch arrived: its attempt; the checkpoint to its last position (:4), never back;
-- and, when the next batch is ready already, its hand-out (:7 number, :8 last position;
-- NULL: none yet).
INSERT INTO tidings_eventstream_attempts
    (stream_id, at_ms, batch_id, batch_number, first_position, last_position, events, outcome,
     status_code, duration_ms, error, response, consumer, redelivery)
VALUES (:1, :6, :9, :10, :11, :4, :5, :12, :13, :14, :15, :16, :17, 0);
UPDATE tidings_eventstreams
SET checkpoint = :4, inflight_last = :8, inflight_number = :7,
    batch_number = COALESCE(:7, batch_number),
    delivered = delivered + :5, batches = batches + 1, attempts = attempts + 1,
    last_dispatch_ms = :6, dispatch = 'dispatching', failing_since_ms = NULL, last_error = NULL
WHERE id = :1 AND owner = :2 AND generation = :3 AND checkpoint < :4;

-- name: attempts
-- Newest first; paging by attempt id, below the cursor :2.
SELECT id, at_ms, batch_id, batch_number, first_position, last_position, events, outcome,
       status_code, duration_ms, error, response, consumer, redelivery
FROM tidings_eventstream_attempts
WHERE stream_id = :1 AND id < :2
ORDER BY id DESC
LIMIT :3;

-- name: prune_attempts
DELETE FROM tidings_eventstream_attempts WHERE at_ms < :1;

-- name: park
INSERT INTO tidings_eventstream_parked (stream_id, position, batch_id, reason, parked_ms)
VALUES (:1, :2, :3, :4, :5)
ON CONFLICT (stream_id, position) DO NOTHING;

-- name: parked
SELECT position, batch_id, reason, parked_ms FROM tidings_eventstream_parked
WHERE stream_id = :1 AND position > :2
ORDER BY position
LIMIT :3;

-- name: parked_count
SELECT count(*) FROM tidings_eventstream_parked WHERE stream_id = :1;

-- name: unpark
DELETE FROM tidings_eventstream_parked WHERE stream_id = :1 AND position BETWEEN :2 AND :3;

-- name: passed
-- ``skip``: the batch's events are parked (in the same transaction) and the checkpoint
-- passes them.
UPDATE tidings_eventstreams
SET checkpoint = :4, inflight_last = NULL, inflight_number = NULL, batches = batches + 1,
    last_dispatch_ms = :5,
    dispatch = 'skipped', failing_since_ms = NULL
WHERE id = :1 AND owner = :2 AND generation = :3 AND checkpoint < :4;

-- name: mark
UPDATE tidings_eventstreams SET dispatch = :4 WHERE id = :1 AND owner = :2 AND generation = :3;

-- name: request_redelivery
-- Also moves the generation: the runner starts again and takes the request first.
INSERT INTO tidings_eventstream_redeliveries (stream_id, from_position, to_position, parked, created_ms)
VALUES (:1, :2, :3, :4, :5);
UPDATE tidings_eventstreams SET generation = generation + 1, updated_ms = :5
WHERE id = :1 AND status <> 'deleting';

-- name: redeliveries
SELECT id, from_position, to_position, parked FROM tidings_eventstream_redeliveries
WHERE stream_id = :1
ORDER BY id;

-- name: redelivered
DELETE FROM tidings_eventstream_redeliveries WHERE id = :1;

-- name: delete_redeliveries
DELETE FROM tidings_eventstream_redeliveries WHERE stream_id = :1;

-- name: number_batch
-- A redelivered batch takes the next number, and leaves the batch in flight alone.
UPDATE tidings_eventstreams SET batch_number = :4
WHERE id = :1 AND owner = :2 AND generation = :3;

-- name: parked_between
SELECT position FROM tidings_eventstream_parked
WHERE stream_id = :1 AND position BETWEEN :2 AND :3
ORDER BY position;

-- name: redelivery_attempt
INSERT INTO tidings_eventstream_attempts
    (stream_id, at_ms, batch_id, batch_number, first_position, last_position, events, outcome,
     status_code, duration_ms, error, response, consumer, redelivery)
VALUES (:1, :2, :3, :4, :5, :6, :7, :8, :9, :10, :11, :12, :13, 1);
UPDATE tidings_eventstreams SET attempts = attempts + 1 WHERE id = :1;

-- name: claim_webhooks
-- Every started webhook stream nobody holds, in one statement (websocket streams are
-- claimed one by one, by a node where their consumers are).
UPDATE tidings_eventstreams SET owner = :1, lease_until_ms = :3, started_ms = :2
WHERE status = 'started' AND type = 'webhook' AND (owner IS NULL OR lease_until_ms < :2)
RETURNING id, name, type, status, definition, signing, generation, checkpoint, batch_number, inflight_last, reason, owner, lease_until_ms, dispatch, failing_since_ms, last_error, started_ms, last_dispatch_ms, delivered, batches, attempts, failures, created_ms, updated_ms, inflight_number;
