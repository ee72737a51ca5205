-- tidings schema for SQLite, version 2: durable subscriptions and parked events.
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
