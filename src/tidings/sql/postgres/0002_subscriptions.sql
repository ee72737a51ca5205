-- tidings schema for PostgreSQL, version 2: durable subscriptions and parked events.
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
