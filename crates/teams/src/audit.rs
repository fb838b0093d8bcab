//! The audit trail: every change to a team, written in the same transaction as the change, read
//! with `GET /teams/{team_id}/audit`, and relayed to an event store ([`AuditSink`]).
//!
//! # Writing
//! A handler that changes a team locks the team row first (`queries::lock_live_team`),
//! which also yields the team's last audit sequence number; an `AuditLog` collects the
//! entries of the change and `AuditLog::write` inserts them and moves the team's counter, in
//! the caller's transaction. An entry therefore exists if and only if its change committed, and
//! a team's entries are numbered 1, 2, 3... in commit order.
//!
//! # Relaying
//! `run_relay` reads entries not yet relayed (`relayed_at IS NULL`), team by team in sequence
//! order, appends each to the stream `team-<team id>` with the entry's id as the event id, and
//! then marks them relayed. It is at-least-once: a crash between the append and the mark
//! appends the entry again after the restart, which the event store treats as a success
//! because the id and content are identical. Before appending a team's entries it asks the sink
//! for the stream's last event id ([`AuditSink::last_event_id`]) and skips what the stream
//! already holds, so even a sink without idempotent appends would hold each entry once.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::Error;
use crate::store::{Store, int, new_id, opt_text, placeholders, text};
use crate::time::{now_ms, rfc3339};

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    /// A caller of the admin API.
    Admin,
    /// The invited person, through the accept endpoint.
    Invitee,
    /// The service itself: the mail worker (delivered, failed, expired).
    System,
}

impl Actor {
    fn as_str(self) -> &'static str {
        match self {
            Actor::Admin => "admin",
            Actor::Invitee => "invitee",
            Actor::System => "system",
        }
    }
}

/// The request a change came from: its id (`x-request-id`) and the client address (the TCP
/// peer, or the forwarded address behind a trusted proxy). Read from a request by the
/// extractor in `routes::audit`; empty for the worker's changes.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestMeta {
    pub(crate) request_id: Option<String>,
    pub(crate) client_address: Option<String>,
}

/// Longest request id stored.
pub(crate) const REQUEST_ID_MAX_CHARS: usize = 128;
/// Most rows in one multi-row INSERT (11 values each, well under both databases' limits).
const INSERT_ROWS_MAX: usize = 200;

/// One change, before it is written.
struct PendingEntry {
    id: String,
    action: &'static str,
    actor: Actor,
    subject_id: Option<String>,
    data: Value,
}

/// The entries of one transaction for one team.
pub(crate) struct AuditLog {
    team_id: String,
    last_seq: i64,
    meta: RequestMeta,
    entries: Vec<PendingEntry>,
}

impl AuditLog {
    /// Entries for `team_id`, numbered after `last_seq` (from the locked team row).
    pub(crate) fn new(team_id: &str, last_seq: i64, meta: RequestMeta) -> AuditLog {
        AuditLog {
            team_id: team_id.to_owned(),
            last_seq,
            meta,
            entries: Vec::new(),
        }
    }

    /// Adds an entry.
    pub(crate) fn push(
        &mut self,
        actor: Actor,
        action: &'static str,
        subject_id: Option<&str>,
        data: Value,
    ) {
        self.entries.push(PendingEntry {
            id: new_id(),
            action,
            actor,
            subject_id: subject_id.map(str::to_owned),
            data,
        });
    }

    /// Inserts the entries and moves the team's counter, in `connection`'s transaction.
    pub(crate) async fn write(
        self,
        connection: &mut sqlx::AnyConnection,
        now: i64,
    ) -> Result<(), Error> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let mut seq = self.last_seq;
        for chunk in self.entries.chunks(INSERT_ROWS_MAX) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|n| format!("({})", placeholders(n * 10 + 1, 10)))
                .collect();
            let sql = format!(
                "INSERT INTO audit_entries (id, team_id, seq, action, actor, request_id, \
                 client_address, subject_id, data, created_at) VALUES {}",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for entry in chunk {
                seq += 1;
                query = query
                    .bind(entry.id.clone())
                    .bind(self.team_id.clone())
                    .bind(seq)
                    .bind(entry.action)
                    .bind(entry.actor.as_str())
                    .bind(self.meta.request_id.clone())
                    .bind(self.meta.client_address.clone())
                    .bind(entry.subject_id.clone())
                    .bind(entry.data.to_string())
                    .bind(now);
            }
            query.execute(&mut *connection).await?;
        }
        sqlx::query("UPDATE teams SET audit_seq = $1 WHERE id = $2")
            .bind(seq)
            .bind(&self.team_id)
            .execute(&mut *connection)
            .await?;
        Ok(())
    }
}

/// One audit entry, as read back and as relayed (the event's data).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    /// UUIDv7; the event id in the stream `team-<team_id>`.
    pub id: String,
    /// The team.
    pub team_id: String,
    /// 1, 2, 3... per team, in commit order.
    pub seq: i64,
    /// What happened: `team.created`, `team.renamed`, `team.updated`, `team.deleted`,
    /// `invitation.created`, `invitation.delivered`, `invitation.delivery_failed`,
    /// `invitation.resent`, `invitation.revoked`, `invitation.accepted`, `invitation.expired`,
    /// `invitation.role_changed`, `member.removed`, `member.role_changed`.
    pub action: String,
    /// `admin`, `invitee` or `system`.
    pub actor: String,
    /// The `x-request-id` of the request that made the change.
    pub request_id: Option<String>,
    /// The client address of that request.
    pub client_address: Option<String>,
    /// The invitation or member the entry is about.
    pub subject_id: Option<String>,
    /// Details (e.g. the email, the old and new role).
    #[schema(value_type = Object)]
    pub data: Value,
    /// RFC 3339.
    pub at: String,
}

pub(crate) const ENTRY_COLUMNS: &str =
    "id, team_id, seq, action, actor, request_id, client_address, subject_id, data, created_at";

pub(crate) fn entry_from_row(row: &sqlx::any::AnyRow) -> Result<AuditEntry, Error> {
    let data = text(row, "data")?;
    Ok(AuditEntry {
        id: text(row, "id")?,
        team_id: text(row, "team_id")?,
        seq: int(row, "seq")?,
        action: text(row, "action")?,
        actor: text(row, "actor")?,
        request_id: opt_text(row, "request_id")?,
        client_address: opt_text(row, "client_address")?,
        subject_id: opt_text(row, "subject_id")?,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
        at: rfc3339(int(row, "created_at")?),
    })
}

/// Why a sink call failed; the relay logs it and retries.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuditSinkError(pub String);

/// Where the relay appends audit entries: an event store. Implemented by the binary over the
/// event store that runs in the same process.
///
/// Both calls may be retried. `append` must be idempotent by `event_id`: appending an id that
/// the stream already holds with identical content succeeds without writing anything (the
/// event store's rule), because the relay is at-least-once.
pub trait AuditSink: Send + Sync + 'static {
    /// Appends one event (`data` is the [`AuditEntry`] as JSON) to `stream`.
    fn append(
        &self,
        stream: &str,
        event_id: Uuid,
        event_type: &str,
        data: Value,
    ) -> impl Future<Output = Result<(), AuditSinkError>> + Send;

    /// The id of the last event of `stream`, `None` if the stream is empty or missing: where
    /// the relay resumes after a crash.
    fn last_event_id(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<Option<Uuid>, AuditSinkError>> + Send;
}

/// The event stream of a team's audit trail.
pub fn team_stream(team_id: &str) -> String {
    format!("team-{team_id}")
}

/// Most entries the relay reads per round.
const RELAY_BATCH_MAX: i64 = 500;
/// Longest the relay sleeps when idle (it is also woken after every change).
const RELAY_IDLE_POLL: Duration = Duration::from_secs(1);
/// Longest pause after a failed round.
const RELAY_RETRY_MAX: Duration = Duration::from_secs(5);

/// Relays audit entries to `sink` until `shutdown` turns `true`.
pub(crate) async fn run_relay<S: AuditSink>(
    store: Store,
    sink: S,
    wakeup: std::sync::Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let pause = match relay_round(&store, &sink).await {
            Ok(relayed) => {
                failures = 0;
                if relayed as i64 >= RELAY_BATCH_MAX {
                    Duration::ZERO
                } else {
                    RELAY_IDLE_POLL
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let pause =
                    crate::time::backoff(Duration::from_millis(100), RELAY_RETRY_MAX, failures);
                tracing::warn!(error = %error, retry_in_ms = pause.as_millis() as u64,
                    "audit relay round failed; retrying");
                pause
            }
        };
        tokio::select! {
            _ = wakeup.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One round: every unrelayed entry (up to a batch), team by team. Returns how many it read.
async fn relay_round<S: AuditSink>(store: &Store, sink: &S) -> Result<usize, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE relayed_at IS NULL \
         ORDER BY team_id, seq LIMIT $1"
    ))
    .bind(RELAY_BATCH_MAX)
    .fetch_all(store.pool())
    .await?;
    let mut by_team: BTreeMap<String, Vec<AuditEntry>> = BTreeMap::new();
    for row in &rows {
        let entry = entry_from_row(row)?;
        by_team
            .entry(entry.team_id.clone())
            .or_default()
            .push(entry);
    }
    for (team_id, entries) in by_team {
        relay_team(store, sink, &team_id, &entries).await?;
    }
    Ok(rows.len())
}

/// Appends a team's unrelayed entries (in `seq` order) that the stream does not hold yet, then
/// marks them all relayed.
async fn relay_team<S: AuditSink>(
    store: &Store,
    sink: &S,
    team_id: &str,
    entries: &[AuditEntry],
) -> Result<(), Error> {
    let stream = team_stream(team_id);
    let sink_error = |error: AuditSinkError| Error::Relay(error.to_string());
    let last = sink.last_event_id(&stream).await.map_err(sink_error)?;
    let held = last
        .and_then(|last| {
            entries
                .iter()
                .position(|entry| Uuid::parse_str(&entry.id).ok() == Some(last))
        })
        .map_or(0, |index| index + 1);
    for entry in &entries[held..] {
        let id = Uuid::parse_str(&entry.id)
            .map_err(|_| Error::Relay(format!("entry id {:?} is not a UUID", entry.id)))?;
        let data = serde_json::to_value(entry).unwrap_or(Value::Null);
        sink.append(&stream, id, &entry.action, data)
            .await
            .map_err(sink_error)?;
    }
    let ids: Vec<&str> = entries.iter().map(|entry| entry.id.as_str()).collect();
    let mut write = store.write().await?;
    let sql = format!(
        "UPDATE audit_entries SET relayed_at = $1 WHERE id IN ({})",
        placeholders(2, ids.len())
    );
    let mut query = sqlx::query(&sql).bind(now_ms());
    for id in ids {
        query = query.bind(id);
    }
    query.execute(&mut *write.tx).await?;
    write.commit().await
}
