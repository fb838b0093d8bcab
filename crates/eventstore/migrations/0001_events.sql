-- The event store on PostgreSQL. Every table lives in the schema `logbook_events` (created at
-- start-up, and the search path of the backend's connections), so that the teams service may
-- share the database: its tables and its migration history stay apart.

-- The one counter row. Every append transaction updates it first, which takes its row lock:
-- appends are serialized, so positions are handed out gap-free and commits happen in
-- position order (docs/SCALING.md says why that is correct under READ COMMITTED).
CREATE TABLE events_head (
    id smallint PRIMARY KEY CHECK (id = 0),
    -- The position the next event gets; committed value = events visible.
    next_position bigint NOT NULL CHECK (next_position >= 0)
);
INSERT INTO events_head (id, next_position) VALUES (0, 0);

CREATE TABLE events (
    position bigint PRIMARY KEY,
    id uuid NOT NULL,
    stream text NOT NULL,
    version bigint NOT NULL CHECK (version >= 0),
    event_type text NOT NULL,
    data bytea NOT NULL,
    metadata bytea,
    recorded_at_micros bigint NOT NULL,
    -- Permanent idempotency by event id, across processes.
    CONSTRAINT events_id_key UNIQUE (id),
    -- Versions are unique per stream (the head lock already orders appends; this is the
    -- database's own guarantee beside it) and this index serves stream reads.
    CONSTRAINT events_stream_version_key UNIQUE (stream, version)
);

-- One row per stream: its last version and event, for expected-version checks, stream state
-- and listings in byte order of name (hence the "C" collation).
CREATE TABLE streams (
    name text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL CHECK (version >= 0),
    last_position bigint NOT NULL,
    updated_at_micros bigint NOT NULL
);
