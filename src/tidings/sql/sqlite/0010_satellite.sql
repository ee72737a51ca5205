-- tidings schema for SQLite, version 10: a satellite's own state beside its replica.
-- A satellite's file is a tidings store holding the server's events of its categories
-- (with the server's positions), plus: where replication stands, the local
-- transactions not yet confirmed, and those the server refused. Empty in other stores.
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
