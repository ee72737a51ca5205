-- tidings schema for PostgreSQL, version 10: the store's identity.
-- A UUID made with the schema (a restore makes a new one), sent beside positions so that
-- a reader resuming from a position of another store, or of this one before a restore,
-- is told to start over instead of trusting a reused position.
CREATE TABLE {schema}.store (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    identity UUID NOT NULL DEFAULT gen_random_uuid(),
    created TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO {schema}.store (id) VALUES (1);
