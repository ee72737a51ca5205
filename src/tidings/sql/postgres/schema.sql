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
    data jsonb NOT NULL,
    metadata jsonb NOT NULL,
    time timestamptz NOT NULL,
    category text NOT NULL,
    audit_id bigint REFERENCES {schema}.audit (id)
);
CREATE UNIQUE INDEX events_id ON {schema}.events (id);
CREATE UNIQUE INDEX events_stream_version ON {schema}.events (stream, version);
CREATE INDEX events_category ON {schema}.events (category, position);

-- Append a batch of groups (an append is a group of one; a transaction's appends share
-- a group). Every group lands whole or not at all; a failed group leaves its
-- neighbours alone. The head row lock serializes batches, so positions are contiguous,
-- commit order equals position order (readers never skip an event), and time never
-- decreases along positions.
-- status per append: 0 written, 1 replay of stored events, 2 wrong expected version,
-- 3 duplicate event id, 4 not written because another append of its group failed.
CREATE FUNCTION {schema}.append_batch(
    a_group integer[],        -- per append: its group (1-based, appends of a group adjacent)
    a_stream text[],
    a_expected bigint[],      -- >= 0 exact version; -1 any; -2 no stream; -3 stream exists
    a_count integer[],        -- number of events
    a_check boolean[],        -- the caller gave event ids: look for a replay first
    e_app integer[],          -- per event: its append (1-based)
    e_id uuid[],
    e_type text[],
    e_data text[],
    e_metadata text[],
    g_user text[],            -- per group: audit user, null for no audit record
    g_extra text[],
    g_created timestamptz[]
) RETURNS TABLE (
    status integer, first_version bigint, last_version bigint, last_position bigint,
    actual bigint, detail text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n integer := coalesce(array_length(a_stream, 1), 0);
    v_head bigint;
    v_pos bigint;
    v_time timestamptz;
    v_versions jsonb;
    t_versions jsonb;
    t_pos bigint;
    r_status integer[] := array_fill(0, ARRAY[n]);
    r_first bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    r_last bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    r_pos bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    r_actual bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    r_detail text[] := array_fill(NULL::text, ARRAY[n]);
    r_audit bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    r_evstart integer[] := array_fill(0, ARRAY[n]);
    i integer := 1;
    j integer;
    g integer;
    g_first integer;
    ev integer := 1;
    ok boolean;
    wrote boolean;
    cur bigint;
    exp bigint;
    cnt integer;
    c_found integer;
    c_same boolean;
    c_runs integer;
    c_stream text;
    c_bad uuid;
    c_first bigint;
    c_last bigint;
    c_lastpos bigint;
    v_audit bigint;
BEGIN
    SELECT h.position, h.time INTO v_head, v_time FROM {schema}.head h WHERE h.id = 1 FOR UPDATE;
    v_pos := v_head;
    v_time := greatest(date_trunc('milliseconds', clock_timestamp()), v_time);
    SELECT coalesce(jsonb_object_agg(s.name, s.version), '{}'::jsonb) INTO v_versions
    FROM {schema}.streams s WHERE s.name = ANY (a_stream);

    WHILE i <= n LOOP
        g := a_group[i];
        g_first := i;
        t_versions := v_versions;
        t_pos := v_pos;
        ok := true;
        wrote := false;
        WHILE i <= n AND a_group[i] = g LOOP
            cnt := a_count[i];
            r_evstart[i] := ev;
            IF ok THEN
                c_found := 0;
                IF a_check[i] THEN
                    SELECT count(s.id),
                           coalesce(bool_and(s.id IS NOT NULL AND s.stream = a_stream[i]
                                             AND s.type = x.type AND s.data = x.data::jsonb
                                             AND s.metadata = x.metadata::jsonb), false),
                           count(DISTINCT s.version - x.ord),
                           min(s.stream) FILTER (WHERE s.stream <> a_stream[i]),
                           (array_agg(x.id ORDER BY x.ord) FILTER (
                                WHERE s.id IS NULL OR s.stream <> a_stream[i] OR s.type <> x.type
                                   OR s.data <> x.data::jsonb OR s.metadata <> x.metadata::jsonb))[1],
                           min(s.version), max(s.version), max(s.position)
                    INTO c_found, c_same, c_runs, c_stream, c_bad, c_first, c_last, c_lastpos
                    FROM unnest(e_id[ev:ev + cnt - 1], e_type[ev:ev + cnt - 1],
                                e_data[ev:ev + cnt - 1], e_metadata[ev:ev + cnt - 1])
                         WITH ORDINALITY AS x(id, type, data, metadata, ord)
                    LEFT JOIN {schema}.events s ON s.id = x.id;
                END IF;
                IF c_found > 0 THEN
                    IF c_found = cnt AND c_same AND c_runs = 1 THEN
                        r_status[i] := 1;
                        r_first[i] := c_first;
                        r_last[i] := c_last;
                        r_pos[i] := c_lastpos;
                    ELSE
                        ok := false;
                        r_status[i] := 3;
                        r_detail[i] := coalesce(c_bad, e_id[ev])::text || ' ' || CASE
                            WHEN c_found < cnt THEN 'only some of the append''s events are stored'
                            WHEN c_stream IS NOT NULL THEN 'it is stored in stream ' || quote_literal(c_stream)
                            WHEN NOT c_same THEN 'different content'
                            ELSE 'its events are stored apart or in another order' END;
                    END IF;
                ELSE
                    cur := (t_versions ->> a_stream[i])::bigint;
                    exp := a_expected[i];
                    IF exp = -1 OR (exp = -2 AND cur IS NULL) OR (exp = -3 AND cur IS NOT NULL)
                       OR (exp >= 0 AND cur = exp) THEN
                        r_first[i] := coalesce(cur, -1) + 1;
                        r_last[i] := coalesce(cur, -1) + cnt;
                        r_pos[i] := t_pos + cnt;
                        t_pos := t_pos + cnt;
                        t_versions := t_versions || jsonb_build_object(a_stream[i], r_last[i]);
                        wrote := true;
                    ELSE
                        ok := false;
                        r_status[i] := 2;
                        r_actual[i] := cur;
                    END IF;
                END IF;
            ELSE
                r_status[i] := 4;
            END IF;
            ev := ev + cnt;
            i := i + 1;
        END LOOP;
        IF ok THEN
            v_versions := t_versions;
            v_pos := t_pos;
            IF wrote AND g_user[g] IS NOT NULL THEN
                INSERT INTO {schema}.audit ("user", extra, created, arrived)
                VALUES (g_user[g], g_extra[g]::jsonb, g_created[g], v_time)
                RETURNING id INTO v_audit;
                FOR j IN g_first .. i - 1 LOOP
                    r_audit[j] := v_audit;
                END LOOP;
            END IF;
        ELSE
            FOR j IN g_first .. i - 1 LOOP
                IF r_status[j] IN (0, 1) THEN
                    r_status[j] := 4;
                END IF;
            END LOOP;
        END IF;
    END LOOP;

    IF v_pos > v_head THEN
        INSERT INTO {schema}.events
            (position, id, stream, version, type, data, metadata, time, category, audit_id)
        SELECT a.pos - a.cnt + 1 + (x.ord - a.evstart), x.id, a.stream,
               a.first + (x.ord - a.evstart), x.type, x.data::jsonb, x.metadata::jsonb,
               v_time, split_part(a.stream, '-', 1), a.audit
        FROM unnest(e_app, e_id, e_type, e_data, e_metadata)
             WITH ORDINALITY AS x(app, id, type, data, metadata, ord)
        JOIN unnest(r_status, r_evstart, a_count, a_stream, r_first, r_pos, r_audit)
             WITH ORDINALITY AS a(status, evstart, cnt, stream, first, pos, audit, idx)
             ON a.idx = x.app
        WHERE a.status = 0;

        INSERT INTO {schema}.streams (name, version)
        SELECT a.stream, max(a.last)
        FROM unnest(a_stream, r_last, r_status) AS a(stream, last, status)
        WHERE a.status = 0
        GROUP BY a.stream
        ON CONFLICT (name) DO UPDATE SET version = excluded.version;

        UPDATE {schema}.head SET position = v_pos, time = v_time WHERE id = 1;
    END IF;

    RETURN QUERY SELECT * FROM unnest(r_status, r_first, r_last, r_pos, r_actual, r_detail);
END;
$$;
