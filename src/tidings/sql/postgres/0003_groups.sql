-- tidings schema for PostgreSQL, version 3: consumer groups (partition leases, members).
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
