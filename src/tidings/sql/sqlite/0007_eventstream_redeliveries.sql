-- tidings schema for SQLite, version 7: event-stream redeliveries.
-- A range of a stream's log (or of its parked events) to send again, without moving the
-- checkpoint back; the stream's runner takes the requests in id order when it starts.
-- And the number of the batch in flight, kept apart from the last number handed out:
-- redelivered batches take numbers too, and the batch in flight keeps its own.
ALTER TABLE tidings_eventstreams ADD COLUMN inflight_number INTEGER;

CREATE TABLE tidings_eventstream_redeliveries (
    id INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    from_position INTEGER NOT NULL,
    to_position INTEGER NOT NULL,
    parked INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX tidings_eventstream_redeliveries_by_stream
    ON tidings_eventstream_redeliveries (stream_id, id);
