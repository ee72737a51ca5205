-- tidings schema for SQLite, version 9: the store's identity.
-- A UUID made with the schema (a restore makes a new one), sent beside positions so that
-- a reader resuming from a position of another store, or of this one before a restore,
-- is told to start over instead of trusting a reused position.
CREATE TABLE tidings_store (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    identity TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
INSERT INTO tidings_store (id, identity, created_ms)
SELECT 1,
       lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
             substr(hex(randomblob(2)), 2) || '-' ||
             substr('89ab', 1 + abs(random()) % 4, 1) || substr(hex(randomblob(2)), 2) || '-' ||
             hex(randomblob(6))),
       CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER);
