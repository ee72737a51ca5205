-- tidings schema for SQLite, version 5: pull consumers (definitions, positions handed out).
-- (SQLite has no version 4 -> 5 counterpart of PostgreSQL's json change: its next
-- number is 5, PostgreSQL's 6.)
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
