-- Teams, second wave: delivery generations and leases, the audit trail, idempotency keys.
-- Portable SQL, as 0001.

-- Every audit entry of a team has a sequence number, 1, 2, 3...; taking the next ones is an
-- UPDATE of the team row, so writes to one team serialize on that row (PostgreSQL row lock,
-- SQLite's single writer) and an entry's number is its commit order within the team.
ALTER TABLE teams ADD COLUMN audit_seq BIGINT NOT NULL DEFAULT 0;

-- A resend starts a new delivery generation; every token mailed for the current generation
-- stays valid (a duplicate mail never kills the link a person already holds).
ALTER TABLE invitations ADD COLUMN delivery_generation BIGINT NOT NULL DEFAULT 0;
-- The process that claimed the delivery (a lease until delivery_next_attempt_at).
ALTER TABLE invitations ADD COLUMN delivery_claimed_by TEXT;
ALTER TABLE invitation_tokens ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;

-- Deliveries still to be made, by due time (queued and failing; sent and failed are done).
CREATE INDEX invitations_delivery_open ON invitations (delivery_next_attempt_at)
    WHERE status = 'pending' AND delivery_status IN ('queued', 'failing');
CREATE INDEX invitations_team_email ON invitations (team_id, email);

-- The audit trail: every change, written in the transaction of the change.
CREATE TABLE audit_entries (
    -- UUIDv7; also the event id in the event stream team-<team_id>.
    id             TEXT PRIMARY KEY,
    team_id        TEXT NOT NULL REFERENCES teams (id),
    seq            BIGINT NOT NULL,
    -- e.g. team.created, invitation.accepted (docs/TEAMS.md lists them)
    action         TEXT NOT NULL,
    -- admin | invitee | system
    actor          TEXT NOT NULL,
    request_id     TEXT,
    client_address TEXT,
    -- The invitation or member the entry is about, if any.
    subject_id     TEXT,
    -- JSON object with the details.
    data           TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    -- When the relay appended it to the event store; NULL until then.
    relayed_at     BIGINT
);
CREATE UNIQUE INDEX audit_entries_team_seq ON audit_entries (team_id, seq);
CREATE INDEX audit_entries_unrelayed ON audit_entries (created_at) WHERE relayed_at IS NULL;

-- Idempotency-Key: the first answer to a (route, key), replayed for 24 h.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       BIGINT NOT NULL,
    body         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
