-- Stream lifecycle (soft delete, tombstone, metadata and retention). Each change is first of
-- all an event of the log, as on the embedded engine: a `$metadata` or `$streamDeleted` event
-- of the stream's metastream `$$<stream>` (KurrentDB's JSON). This table is derived from the
-- last such event of each metastream, written in the same transaction, so reads can skip dead
-- events with one primary-key lookup per event.
CREATE TABLE stream_lifecycle (
    name text COLLATE "C" PRIMARY KEY,
    -- `$tb`: versions below it are dead (a soft delete sets it past the last version).
    truncate_before bigint,
    -- `$maxCount`: only the newest N events are live.
    max_count bigint CHECK (max_count > 0),
    -- `$maxAge`: events older than this many seconds are dead.
    max_age_seconds bigint CHECK (max_age_seconds > 0),
    -- A tombstone: every event is dead and the stream can never be written again.
    tombstoned boolean NOT NULL DEFAULT false
);

-- The live events: what every read serves. A metastream's events other than its last are
-- dead too (a metastream is implicitly `$maxCount` 1, as in KurrentDB).
CREATE VIEW live_events AS
SELECT e.*
FROM events e
LEFT JOIN stream_lifecycle l ON l.name = e.stream
LEFT JOIN streams s ON s.name = e.stream AND (l.max_count IS NOT NULL OR e.stream LIKE '$$%')
WHERE (e.stream NOT LIKE '$$%' OR e.version = s.version)
  AND (l.name IS NULL OR (
        NOT l.tombstoned
        AND e.version >= coalesce(l.truncate_before, 0)
        AND (l.max_count IS NULL OR e.version > s.version - l.max_count)
        AND (l.max_age_seconds IS NULL OR e.recorded_at_micros >=
             (extract(epoch FROM clock_timestamp()) * 1000000)::bigint - l.max_age_seconds * 1000000)
  ));
