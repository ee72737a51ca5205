-- The declared tidings schema for PostgreSQL: what every migration together must produce.

CREATE TABLE {schema}.migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied timestamptz NOT NULL DEFAULT now()
);


CREATE TABLE {schema}.head (
    id integer PRIMARY KEY CHECK (id = 1),
    position bigint NOT NULL,
    time timestamptz NOT NULL
);
INSERT INTO {schema}.head (id, position, time) VALUES (1, 0, 'epoch');

CREATE TABLE {schema}.streams (
    name text PRIMARY KEY,
    version bigint NOT NULL
);

CREATE TABLE {schema}.audit (
    id bigserial PRIMARY KEY,
    "user" text NOT NULL,
    extra jsonb NOT NULL,
    created timestamptz NOT NULL,
    arrived timestamptz NOT NULL
);

CREATE TABLE {schema}.events (
    position bigint PRIMARY KEY,
    id uuid NOT NULL,
    stream text NOT NULL,
    version bigint NOT NULL,
    type text NOT NULL,
    data json NOT NULL,
    metadata json NOT NULL,
    time timestamptz NOT NULL,
    category text NOT NULL,
    audit_id bigint
);
CREATE UNIQUE INDEX events_id ON {schema}.events (id);
CREATE UNIQUE INDEX events_stream_version ON {schema}.events (stream, version);
CREATE INDEX events_category ON {schema}.events (category, position);

-- Write a batch planned by the client (tidings.store.planner) on the streams' versions
-- it read. The head row lock serializes writers, so positions are contiguous, commit
-- order equals position order (a reader of the log never skips an event) and time
-- never decreases along positions. If a stream the plan writes has moved since it was
-- read, nothing is written and -1 is returned: the client plans again. Otherwise the
-- events land after the current head, which is returned.
CREATE FUNCTION {schema}.apply_batch(
    c_stream text[],          -- every stream the batch writes...
    c_version bigint[],       -- ...the version it was planned on (null: no stream)...
    c_final bigint[],         -- ...and its version after the batch
    e_offset integer[],       -- per event: its place in the batch, 1-based
    e_id uuid[],
    e_stream text[],
    e_version bigint[],
    e_type text[],
    e_data text[],
    e_metadata text[],
    e_group integer[],        -- per event: its group, to find its audit record
    g_group integer[],        -- per audited group: the group...
    g_user text[],            -- ...and its audit record
    g_extra text[],
    g_created timestamptz[]
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_head bigint;
    v_time timestamptz;
    v_audit bigint[] := ARRAY[]::bigint[];
    v_id bigint;
    v_data json[];
    v_metadata json[];
    k integer;
BEGIN
    -- Check the JSON before taking the lock: concurrent writers do this part in parallel.
    v_data := e_data::json[];
    v_metadata := e_metadata::json[];
    SELECT h.position, h.time INTO v_head, v_time FROM {schema}.head h WHERE h.id = 1 FOR UPDATE;
    PERFORM 1
    FROM unnest(c_stream, c_version) AS c(stream, version)
    WHERE c.version IS DISTINCT FROM
          (SELECT s.version FROM {schema}.streams s WHERE s.name = c.stream)
    LIMIT 1;
    IF FOUND THEN
        RETURN -1;
    END IF;
    v_time := greatest(date_trunc('milliseconds', clock_timestamp()), v_time);
    FOR k IN 1 .. coalesce(cardinality(g_group), 0) LOOP
        INSERT INTO {schema}.audit ("user", extra, created, arrived)
        VALUES (g_user[k], g_extra[k]::jsonb, g_created[k], v_time)
        RETURNING id INTO v_id;
        v_audit := v_audit || v_id;
    END LOOP;
    INSERT INTO {schema}.events
        (position, id, stream, version, type, data, metadata, time, category, audit_id)
    SELECT v_head + e.off, e.id, e.stream, e.version, e.type, e.data, e.metadata,
           v_time, split_part(e.stream, '-', 1), a.audit_id
    FROM unnest(e_offset, e_id, e_stream, e_version, e_type, v_data, v_metadata, e_group)
         AS e(off, id, stream, version, type, data, metadata, grp)
    LEFT JOIN unnest(g_group, v_audit) AS a(grp, audit_id) ON a.grp = e.grp;
    INSERT INTO {schema}.streams (name, version)
    SELECT * FROM unnest(c_stream, c_final)
    ON CONFLICT (name) DO UPDATE SET version = excluded.version;
    UPDATE {schema}.head SET position = v_head + cardinality(e_id), time = v_time WHERE id = 1;
    RETURN v_head;
END;
$$;

-- The same as apply_batch, with each event's data and metadata as one JSON array text
-- apiece and its place in the batch from the arrays' order: what the client calls.
CREATE FUNCTION {schema}.write_batch(
    c_stream text[],          -- every stream the batch writes...
    c_version bigint[],       -- ...the version it was planned on (null: no stream)...
    c_final bigint[],         -- ...and its version after the batch
    e_id uuid[],
    e_stream text[],
    e_version bigint[],
    e_type text[],
    e_data text,              -- per event kind: one JSON array, in position order
    e_metadata text,
    e_group integer[],        -- per event: its group (empty when nothing is audited)
    g_group integer[],        -- per audited group: the group...
    g_user text[],            -- ...and its audit record
    g_extra text[],
    g_created timestamptz[]
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_head bigint;
    v_time timestamptz;
    v_audit bigint[] := ARRAY[]::bigint[];
    v_id bigint;
    k integer;
BEGIN
    SELECT h.position, h.time INTO v_head, v_time FROM {schema}.head h WHERE h.id = 1 FOR UPDATE;
    PERFORM 1
    FROM unnest(c_stream, c_version) AS c(stream, version)
    WHERE c.version IS DISTINCT FROM
          (SELECT s.version FROM {schema}.streams s WHERE s.name = c.stream)
    LIMIT 1;
    IF FOUND THEN
        RETURN -1;
    END IF;
    v_time := greatest(date_trunc('milliseconds', clock_timestamp()), v_time);
    FOR k IN 1 .. coalesce(cardinality(g_group), 0) LOOP
        INSERT INTO {schema}.audit ("user", extra, created, arrived)
        VALUES (g_user[k], g_extra[k]::jsonb, g_created[k], v_time)
        RETURNING id INTO v_id;
        v_audit := v_audit || v_id;
    END LOOP;
    INSERT INTO {schema}.events
        (position, id, stream, version, type, data, metadata, time, category, audit_id)
    SELECT v_head + e.off, e.id, e.stream, e.version, e.type, e.data, e.metadata,
           v_time, split_part(e.stream, '-', 1), a.audit_id
    FROM ROWS FROM (
            unnest(e_id), unnest(e_stream), unnest(e_version), unnest(e_type),
            json_array_elements(e_data::json), json_array_elements(e_metadata::json),
            unnest(e_group)  -- shorter (empty) when nothing is audited: padded with nulls
         ) WITH ORDINALITY AS e(id, stream, version, type, data, metadata, grp, off)
    LEFT JOIN unnest(g_group, v_audit) AS a(grp, audit_id) ON a.grp = e.grp;
    INSERT INTO {schema}.streams (name, version)
    SELECT * FROM unnest(c_stream, c_final)
    ON CONFLICT (name) DO UPDATE SET version = excluded.version;
    UPDATE {schema}.head SET position = v_head + cardinality(e_id), time = v_time WHERE id = 1;
    RETURN v_head;
END;
$$;

CREATE TABLE {schema}.subscriptions (
    name text PRIMARY KEY,
    position bigint NOT NULL,
    state text NOT NULL,
    last_error text,
    updated timestamptz NOT NULL
);

CREATE TABLE {schema}.parked (
    subscription text NOT NULL,
    position bigint NOT NULL,
    event_id uuid NOT NULL,
    stream text NOT NULL,
    error text NOT NULL,
    attempts integer NOT NULL,
    parked_at timestamptz NOT NULL,
    PRIMARY KEY (subscription, position)
);

CREATE TABLE {schema}.partitions (
    subscription text NOT NULL,
    partition integer NOT NULL,
    position bigint NOT NULL,
    owner text,
    lease_until timestamptz,
    PRIMARY KEY (subscription, partition)
);

CREATE TABLE {schema}.members (
    subscription text NOT NULL,
    member text NOT NULL,
    seen timestamptz NOT NULL,
    PRIMARY KEY (subscription, member)
);

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

-- Pull consumers (tidings.subscriptions.pull): the definition beside the checkpoint row
-- of the same name, and the highest position handed out (an ack may not pass it).
-- `grouped`: members share it as a consumer group. Per group partition, the highest
-- position handed out and to which member.
CREATE TABLE {schema}.pull (
    name text PRIMARY KEY,
    definition jsonb NOT NULL,
    handed bigint NOT NULL,
    grouped boolean NOT NULL DEFAULT false,
    created timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {schema}.pull_handed (
    subscription text NOT NULL,
    partition integer NOT NULL,
    member text NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (subscription, partition)
);

-- Managed event streams (tidings.delivery): one row per stream with its definition
-- (only what its creator set: defaults come from the server config, so a changed default
-- reaches every stream that did not set its own), its checkpoint (the last position
-- delivered: never past an event that was not), the batch number handed out, the lease of
-- the node running it and its statistics; every delivery attempt; the events `skip` parked.
-- `generation` moves on every reset, update or restart, so that a node running an older
-- generation stops writing. Times are the process clock in ms.
CREATE TABLE {schema}.eventstreams (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    definition TEXT NOT NULL,
    signing TEXT,
    generation BIGINT NOT NULL DEFAULT 0,
    checkpoint BIGINT NOT NULL,
    batch_number BIGINT NOT NULL DEFAULT 0,
    inflight_last BIGINT,
    reason TEXT,
    owner TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    dispatch TEXT NOT NULL DEFAULT 'idle',
    failing_since_ms BIGINT,
    last_error TEXT,
    started_ms BIGINT,
    last_dispatch_ms BIGINT,
    delivered BIGINT NOT NULL DEFAULT 0,
    batches BIGINT NOT NULL DEFAULT 0,
    attempts BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    inflight_number BIGINT
);

CREATE TABLE {schema}.eventstream_attempts (
    id BIGSERIAL PRIMARY KEY,
    stream_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    batch_id TEXT NOT NULL,
    batch_number BIGINT NOT NULL,
    first_position BIGINT NOT NULL,
    last_position BIGINT NOT NULL,
    events INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    status_code INTEGER,
    duration_ms double precision NOT NULL,
    error TEXT,
    response TEXT,
    consumer TEXT,
    redelivery BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX eventstream_attempts_by_stream ON {schema}.eventstream_attempts (stream_id, id);
CREATE INDEX eventstream_attempts_by_time ON {schema}.eventstream_attempts (at_ms);

CREATE TABLE {schema}.eventstream_parked (
    stream_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    batch_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    parked_ms BIGINT NOT NULL,
    PRIMARY KEY (stream_id, position)
);

-- Event-stream redeliveries: a range of a stream's log (or of its parked events) to send
-- again, without moving the checkpoint back; the stream's runner takes the requests in id
-- order when it starts.
CREATE TABLE {schema}.eventstream_redeliveries (
    id BIGSERIAL PRIMARY KEY,
    stream_id TEXT NOT NULL,
    from_position BIGINT NOT NULL,
    to_position BIGINT NOT NULL,
    parked BOOLEAN NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX eventstream_redeliveries_by_stream ON {schema}.eventstream_redeliveries (stream_id, id);

-- Named checkpoints moved by transactions (compare-and-set, only upwards).
CREATE TABLE {schema}.checkpoints (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

-- The store's identity: a UUID made with the schema, new after a restore.
CREATE TABLE {schema}.store (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    identity UUID NOT NULL DEFAULT gen_random_uuid(),
    created TIMESTAMPTZ NOT NULL DEFAULT now()
);
