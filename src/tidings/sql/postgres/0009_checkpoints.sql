-- tidings schema for PostgreSQL, version 9: named checkpoints moved by transactions.
-- A transaction may move one named checkpoint with its appends (compare-and-set: only
-- upwards), so a process that reads another log writes here exactly once per input.
CREATE TABLE {schema}.checkpoints (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
