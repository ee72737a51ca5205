-- Named queries of the transactional outbox on PostgreSQL; {schema} is filled in at open.
-- The outbox keeps its own table, apart from the event store's, and needs no migration
-- table: every statement that creates it is idempotent and runs under a lock.

-- name: migrate_lock
SELECT pg_advisory_xact_lock(hashtext('tidings-outbox-migrate:' || $1));

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema};

-- name: create_table
-- next_attempt_at is null until a publish fails; then only the key's oldest row has it,
-- and the whole key waits until it is due.
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    id bigserial PRIMARY KEY,
    key text NOT NULL,
    channel text NOT NULL,
    payload bytea NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error text
);

-- name: create_key_index
CREATE INDEX IF NOT EXISTS outbox_key_id ON {schema}.outbox (key, id);

-- name: create_retry_index
CREATE INDEX IF NOT EXISTS outbox_retry ON {schema}.outbox (next_attempt_at)
WHERE next_attempt_at IS NOT NULL;

-- name: save
INSERT INTO {schema}.outbox (key, channel, payload) VALUES ($1, $2, $3);

-- name: save_psycopg
INSERT INTO {schema}.outbox (key, channel, payload) VALUES (%s, %s, %s);

-- name: candidates
-- The keys of the oldest $1 rows, leaving out keys waiting for a retry, oldest first,
-- with how many of those rows each has.
SELECT key, count(*)::integer AS n, min(id) AS first
FROM (
    SELECT key, id FROM {schema}.outbox
    WHERE key <> ALL (ARRAY(
        SELECT key FROM {schema}.outbox WHERE next_attempt_at > statement_timestamp()
    ))
    ORDER BY id LIMIT $1
) AS oldest
GROUP BY key ORDER BY first;

-- name: try_lock
-- Lock the keys no other relay holds, until this transaction ends.
SELECT k.key FROM unnest($1::text[]) WITH ORDINALITY AS k(key, n)
WHERE pg_try_advisory_xact_lock(hashtextextended('tidings-outbox:' || $2 || ':' || k.key, 0))
ORDER BY k.n;

-- name: due_rows
-- Read after taking the locks, in a statement of its own: its snapshot is newer than
-- the commit of any relay that held one of these keys before, so nothing published
-- and deleted by that relay is read again.
SELECT id, key, channel, payload, attempts FROM {schema}.outbox
WHERE key = ANY ($1::text[])
  AND key <> ALL (ARRAY(
      SELECT key FROM {schema}.outbox WHERE next_attempt_at > statement_timestamp()
  ))
ORDER BY id LIMIT $2;

-- name: delete
DELETE FROM {schema}.outbox WHERE id = ANY ($1::bigint[]);

-- name: retry_later
UPDATE {schema}.outbox AS o
SET attempts = o.attempts + 1,
    next_attempt_at = statement_timestamp() + make_interval(secs => r.delay),
    last_error = r.error
FROM unnest($1::bigint[], $2::float8[], $3::text[]) AS r(id, delay, error)
WHERE o.id = r.id;

-- name: count
SELECT count(*) FROM {schema}.outbox;
