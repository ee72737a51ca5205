-- tidings schema for PostgreSQL, version 7: managed event streams.
-- Managed event streams (tidings.delivery): one row per stream with its definition
-- (only what its creator set: defaults come from the server config, so a changed default
-- reaches every stream that did not set its own), its checkpoint (the last position
-- delivered: never past an event that was not), the batch number handed out, the lease of
-- the node running it and its statistics; every delivery attempt; the events `skip` parked.
-- `generation` moves on every reset, update or restart, so that a node running an older
-- generation stops writing. Times are the process clock in ms.
CREATE TABLE {schema}.eventstreams (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    definition TEXT NOT NULL,
    signing TEXT,
    generation BIGINT NOT NULL DEFAULT 0,
    checkpoint BIGINT NOT NULL,
    batch_number BIGINT NOT NULL DEFAULT 0,
    inflight_last BIGINT,
    reason TEXT,
    owner TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    dispatch TEXT NOT NULL DEFAULT 'idle',
    failing_since_ms BIGINT,
    last_error TEXT,
    started_ms BIGINT,
    last_dispatch_ms BIGINT,
    delivered BIGINT NOT NULL DEFAULT 0,
    batches BIGINT NOT NULL DEFAULT 0,
    attempts BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE {schema}.eventstream_attempts (
    id BIGSERIAL PRIMARY KEY,
    stream_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    batch_id TEXT NOT NULL,
    batch_number BIGINT NOT NULL,
    first_position BIGINT NOT NULL,
    last_position BIGINT NOT NULL,
    events INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    status_code INTEGER,
    duration_ms double precision NOT NULL,
    error TEXT,
    response TEXT,
    consumer TEXT,
    redelivery BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX eventstream_attempts_by_stream ON {schema}.eventstream_attempts (stream_id, id);
CREATE INDEX eventstream_attempts_by_time ON {schema}.eventstream_attempts (at_ms);

CREATE TABLE {schema}.eventstream_parked (
    stream_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    batch_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    parked_ms BIGINT NOT NULL,
    PRIMARY KEY (stream_id, position)
);
