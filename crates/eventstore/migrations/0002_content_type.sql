-- Events may carry data that is not JSON (binary, from the gRPC face). The data is stored byte
-- for byte either way; this says what the appender declared, so reads can tell JSON from other
-- bytes. Rows written before this migration are all JSON.
ALTER TABLE events ADD COLUMN is_binary boolean NOT NULL DEFAULT false;
