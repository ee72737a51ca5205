-- The declared tidings schema for SQLite: what every migration together must produce.
CREATE TABLE tidings_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_ms INTEGER NOT NULL
);

CREATE TABLE tidings_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL,
    time_ms INTEGER NOT NULL
);
INSERT INTO tidings_head (id, position, time_ms) VALUES (1, 0, 0);

CREATE TABLE tidings_streams (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE tidings_audit (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    extra TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    arrived_ms INTEGER NOT NULL
);

CREATE TABLE tidings_events (
    position INTEGER PRIMARY KEY,
    id BLOB NOT NULL,
    stream TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    metadata TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    category TEXT NOT NULL,
    audit_id INTEGER
);
CREATE UNIQUE INDEX tidings_events_id ON tidings_events (id);
CREATE UNIQUE INDEX tidings_events_stream_version ON tidings_events (stream, version);
CREATE INDEX tidings_events_category ON tidings_events (category, position);

CREATE TABLE tidings_subscriptions (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE tidings_parked (
    subscription TEXT NOT NULL,
    position INTEGER NOT NULL,
    event_id BLOB NOT NULL,
    stream TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    parked_at_ms INTEGER NOT NULL,
    PRIMARY KEY (subscription, position)
) WITHOUT ROWID;

CREATE TABLE tidings_partitions (
    subscription TEXT NOT NULL,
    partition INTEGER NOT NULL,
    position INTEGER NOT NULL,
    owner TEXT,
    lease_until_ms INTEGER,
    PRIMARY KEY (subscription, partition)
) WITHOUT ROWID;

CREATE TABLE tidings_members (
    subscription TEXT NOT NULL,
    member TEXT NOT NULL,
    seen_ms INTEGER NOT NULL,
    PRIMARY KEY (subscription, member)
) WITHOUT ROWID;

-- One snapshot per stream and projection name: the state folded up to `version` (the
-- stream's last version folded) by the projection's code at `projection_version`.
CREATE TABLE tidings_snapshots (
    stream TEXT NOT NULL,
    name TEXT NOT NULL,
    projection_version INTEGER NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (stream, name)
) WITHOUT ROWID;

-- The latest value per key of each view (JSON text); `position` is the log position of
-- the event that last changed it. A deleted key keeps its row with a NULL value (a
-- tombstone), so that a reader following the view can tell a deletion from nothing.
CREATE TABLE tidings_views (
    view TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    position INTEGER NOT NULL,
    PRIMARY KEY (view, key)
) WITHOUT ROWID;
CREATE INDEX tidings_views_by_position ON tidings_views (view, position);

-- Pull consumers (tidings.subscriptions.pull): the definition (JSON) beside the
-- checkpoint row of the same name, and the highest position handed out (an ack may not
-- pass it). `grouped`: members share it as a consumer group. Per group partition, the
-- highest position handed out and to which member.
CREATE TABLE tidings_pull (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    handed INTEGER NOT NULL,
    grouped INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE tidings_pull_handed (
    subscription TEXT NOT NULL,
    partition INTEGER NOT NULL,
    member TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (subscription, partition)
) WITHOUT ROWID;

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
    updated_ms INTEGER NOT NULL,
    inflight_number INTEGER
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

-- Event-stream redeliveries: a range of a stream's log (or of its parked events) to send
-- again, without moving the checkpoint back; the stream's runner takes the requests in id
-- order when it starts.
CREATE TABLE tidings_eventstream_redeliveries (
    id INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    from_position INTEGER NOT NULL,
    to_position INTEGER NOT NULL,
    parked INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX tidings_eventstream_redeliveries_by_stream
    ON tidings_eventstream_redeliveries (stream_id, id);

-- Named checkpoints moved by transactions (compare-and-set, only upwards).
CREATE TABLE tidings_checkpoints (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- The store's identity: a UUID made with the schema, new after a restore.
CREATE TABLE tidings_store (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    identity TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);

-- A satellite's state beside its replica (empty in other stores): where replication
-- stands, local transactions not yet confirmed (and the streams they write), and the
-- ones the server refused.
CREATE TABLE tidings_satellite (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    satellite_id TEXT NOT NULL,
    categories TEXT NOT NULL,
    server_identity TEXT,
    cursor INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    decided_seq INTEGER NOT NULL,
    synced_ms INTEGER
);

CREATE TABLE tidings_satellite_pending (
    seq INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    accepted_position INTEGER
);

CREATE TABLE tidings_satellite_pending_streams (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    events INTEGER NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;

CREATE TABLE tidings_satellite_conflicts (
    seq INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    verdict TEXT NOT NULL,
    decided_ms INTEGER NOT NULL
);
