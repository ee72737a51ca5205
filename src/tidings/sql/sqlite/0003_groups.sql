-- tidings schema for SQLite, version 3: consumer groups (partition leases, members).
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
