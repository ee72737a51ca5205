-- tidings schema for SQLite, version 6: managed event streams.
-- Managed event streams (tidings.delivery): one row per stream with its definition
-- (only what its creator set: defaults come from the server config, so a changed default
-- reaches every stream that did not set its own), its checkpoint (the last position
-- delivered: never past an event that was not), the batch number handed out, the lease of
-- the node running it and its statistics; every delivery attempt; the events `skip` parked.
-- `generation` moves on every reset, update or restart, so that a node running an older
-- generation stops writing. Times are the process clock in ms.
CREATE TABLE tidings_eventstreams (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    definition TEXT NOT NULL,
    signing TEXT,
    generation INTEGER NOT NULL DEFAULT 0,
    checkpoint INTEGER NOT NULL,
    batch_number INTEGER NOT NULL DEFAULT 0,
    inflight_last INTEGER,
    reason TEXT,
    owner TEXT,
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    dispatch TEXT NOT NULL DEFAULT 'idle',
    failing_since_ms INTEGER,
    last_error TEXT,
    started_ms INTEGER,
    last_dispatch_ms INTEGER,
    delivered INTEGER NOT NULL DEFAULT 0,
    batches INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);

CREATE TABLE tidings_eventstream_attempts (
    id INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    batch_id TEXT NOT NULL,
    batch_number INTEGER NOT NULL,
    first_position INTEGER NOT NULL,
    last_position INTEGER NOT NULL,
    events INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    status_code INTEGER,
    duration_ms REAL NOT NULL,
    error TEXT,
    response TEXT,
    consumer TEXT,
    redelivery INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tidings_eventstream_attempts_by_stream ON tidings_eventstream_attempts (stream_id, id);
CREATE INDEX tidings_eventstream_attempts_by_time ON tidings_eventstream_attempts (at_ms);

CREATE TABLE tidings_eventstream_parked (
    stream_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    batch_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    parked_ms INTEGER NOT NULL,
    PRIMARY KEY (stream_id, position)
);
