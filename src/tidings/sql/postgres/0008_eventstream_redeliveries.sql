-- tidings schema for PostgreSQL, version 8: event-stream redeliveries.
-- A range of a stream's log (or of its parked events) to send again, without moving the
-- checkpoint back; the stream's runner takes the requests in id order when it starts.
-- And the number of the batch in flight, kept apart from the last number handed out:
-- redelivered batches take numbers too, and the batch in flight keeps its own.
ALTER TABLE {schema}.eventstreams ADD COLUMN inflight_number BIGINT;

CREATE TABLE {schema}.eventstream_redeliveries (
    id BIGSERIAL PRIMARY KEY,
    stream_id TEXT NOT NULL,
    from_position BIGINT NOT NULL,
    to_position BIGINT NOT NULL,
    parked BOOLEAN NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX eventstream_redeliveries_by_stream ON {schema}.eventstream_redeliveries (stream_id, id);
