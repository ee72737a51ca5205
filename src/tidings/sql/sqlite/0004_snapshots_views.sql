-- tidings schema for SQLite, version 4: projection snapshots and state views.
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
