-- tidings schema for PostgreSQL, version 4: projection snapshots and state views.
-- One snapshot per stream and projection name: the state folded up to `version` (the
-- stream's last version folded) by the projection's code at `projection_version`.
CREATE TABLE {schema}.snapshots (
    stream text NOT NULL,
    name text NOT NULL,
    projection_version integer NOT NULL,
    version bigint NOT NULL,
    state jsonb NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, name)
);

-- The latest value per key of each view; `position` is the log position of the event
-- that last changed it. A deleted key keeps its row with a NULL value (a tombstone), so
-- that a reader following the view can tell a deletion from "nothing happened".
CREATE TABLE {schema}.views (
    view text NOT NULL,
    key text NOT NULL,
    value jsonb,
    position bigint NOT NULL,
    PRIMARY KEY (view, key)
);
CREATE INDEX views_by_position ON {schema}.views (view, position);
