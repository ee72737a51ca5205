-- tidings schema for SQLite, version 8: named checkpoints moved by transactions.
-- A transaction may move one named checkpoint with its appends (compare-and-set: only
-- upwards), so a process that reads another log writes here exactly once per input.
CREATE TABLE tidings_checkpoints (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
