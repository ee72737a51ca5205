-- tidings schema for PostgreSQL, version 6: pull consumers (definitions, positions
-- handed out).
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
