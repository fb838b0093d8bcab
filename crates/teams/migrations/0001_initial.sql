-- The teams schema. Portable SQL: the same text runs on SQLite and PostgreSQL.
-- Ids are UUIDv7 text, times are BIGINT milliseconds since the Unix epoch (UTC).
-- Uniqueness that must ignore deleted or finished rows is a partial unique index; the
-- application maps a violation to an answer by the index name (see src/error.rs).

CREATE TABLE teams (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    -- The name lowercased by the application (Unicode-aware, identical on both databases).
    name_key    TEXT NOT NULL,
    description TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE UNIQUE INDEX teams_live_name_key ON teams (name_key) WHERE deleted_at IS NULL;

CREATE TABLE members (
    id            TEXT PRIMARY KEY,
    team_id       TEXT NOT NULL REFERENCES teams (id),
    email         TEXT NOT NULL,
    role          TEXT NOT NULL,
    invitation_id TEXT,
    joined_at     BIGINT NOT NULL,
    deleted_at    BIGINT
);
CREATE UNIQUE INDEX members_live_email ON members (team_id, email) WHERE deleted_at IS NULL;

CREATE TABLE invitations (
    id                       TEXT PRIMARY KEY,
    team_id                  TEXT NOT NULL REFERENCES teams (id),
    email                    TEXT NOT NULL,
    role                     TEXT NOT NULL,
    -- pending | accepted | revoked | expired
    status                   TEXT NOT NULL,
    -- Hex SHA-256 of the token most recently mailed; NULL until the first delivery attempt
    -- (and after a resend, until the next one). The raw token is never stored.
    token_hash               TEXT,
    expires_at               BIGINT NOT NULL,
    created_at               BIGINT NOT NULL,
    finished_at              BIGINT,
    -- queued | sent | failing
    delivery_status          TEXT NOT NULL,
    delivery_attempts        BIGINT NOT NULL,
    delivery_last_error      TEXT,
    delivery_next_attempt_at BIGINT,
    delivery_requested_at    BIGINT NOT NULL,
    delivered_at             BIGINT
);
CREATE UNIQUE INDEX invitations_one_pending_per_email ON invitations (team_id, email)
    WHERE status = 'pending';
CREATE INDEX invitations_team ON invitations (team_id, id);
CREATE INDEX invitations_delivery_due ON invitations (delivery_next_attempt_at)
    WHERE status = 'pending' AND delivery_status <> 'sent';

-- Every token ever minted, by hash, so that a superseded or used token answers 410 Gone
-- rather than 404 Not Found.
CREATE TABLE invitation_tokens (
    token_hash    TEXT PRIMARY KEY,
    invitation_id TEXT NOT NULL REFERENCES invitations (id),
    created_at    BIGINT NOT NULL
);
CREATE INDEX invitation_tokens_invitation ON invitation_tokens (invitation_id);
