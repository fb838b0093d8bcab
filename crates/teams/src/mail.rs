//! Invitation mail: the message, the transports, and the delivery worker.
//!
//! Delivery loses nothing: an invitation is committed with its delivery `queued`, and the
//! worker ([`run_worker`]) picks due deliveries from the database, so a crash, a restart or an
//! SMTP outage only delays mail.
//!
//! - **Claims.** Each due delivery is claimed in a transaction (`FOR UPDATE SKIP LOCKED` on
//!   PostgreSQL; SQLite has one writer): the claim moves its due time to the end of a lease
//!   ([`lease`]: the send timeout plus [`LEASE_MARGIN`]) and names this process, so several
//!   processes on one database mail it once, and a claim left by a killed process is taken
//!   over when its lease ends.
//! - **Tokens.** The raw token is never stored, so each attempt mints a fresh token and stores
//!   its hash, tagged with the invitation's delivery generation. Every token of the current
//!   generation stays valid: a duplicate mail (a lost reply after the final `.`, a crash
//!   between the send and recording it) never kills the link a person already holds. A resend
//!   starts a new generation, which ends the old links.
//! - **Bounds.** A whole SMTP transaction is bounded by `MAIL_SEND_TIMEOUT_SECONDS`; up to
//!   `MAIL_CONCURRENCY` run at once, so one silent server holds one slot, not the queue.
//!   Shutdown waits for sends in flight at most that timeout (plus [`SHUTDOWN_MARGIN`]).
//! - **Giving up.** A failed attempt is retried with exponential backoff
//!   (`MAIL_RETRY_INITIAL_MS` doubling up to `MAIL_RETRY_MAX_MS`); a permanent (5xx) reply or
//!   `MAIL_MAX_ATTEMPTS` failures end in delivery status `failed`, audited.
//! - **Sweeps.** Every [`SWEEP_EVERY`] the worker marks pending invitations past their expiry
//!   `expired` (audited) and forgets idempotency keys older than a day.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::audit::{Actor, AuditLog, RequestMeta};
use crate::config::{MailTarget, TeamsSettings};
use crate::domain::DeliveryStatus;
use crate::error::Error;
use crate::idempotency::IDEMPOTENCY_TTL;
use crate::queries::{expire_invitations, lock_team};
use crate::store::{Backend, Store, int, opt_int, placeholders, text};
use crate::time::{backoff, human, ms, now_ms};
use crate::token::InviteToken;

/// Longest the worker sleeps when nothing is due (it also wakes on every new invitation).
const IDLE_POLL: Duration = Duration::from_secs(30);
/// Longest stored failure text.
const LAST_ERROR_MAX_CHARS: usize = 500;
/// Time a claim lasts beyond the send timeout: for recording the outcome.
pub(crate) const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Time shutdown waits beyond the send timeout for sends in flight.
pub(crate) const SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);
/// How often the queue gauges are read while every send slot is busy.
const GAUGES_EVERY: Duration = Duration::from_secs(1);
/// How often expired invitations and old idempotency keys are swept.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Most invitations marked expired per sweep.
const SWEEP_BATCH_MAX: i64 = 500;

/// How long a claim lasts.
pub(crate) fn lease(send_timeout: Duration) -> Duration {
    send_timeout.saturating_add(LEASE_MARGIN)
}

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) struct SendFailure {
    /// A 5xx reply (or a message that cannot be built): retrying cannot help.
    permanent: bool,
    message: String,
}

/// Where messages go.
#[derive(Clone)]
pub(crate) enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(AsyncFileTransport<Tokio1Executor>),
}

impl Transport {
    pub(crate) fn from_settings(settings: &TeamsSettings) -> Result<Transport, Error> {
        match &settings.mail {
            MailTarget::Smtp(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|error| Error::Mail(format!("SMTP_URL: {error}")))?
                    .timeout(Some(settings.mail_send_timeout))
                    .build();
                Ok(Transport::Smtp(transport))
            }
            MailTarget::Directory(directory) => {
                std::fs::create_dir_all(directory).map_err(|error| {
                    Error::Mail(format!("cannot create {}: {error}", directory.display()))
                })?;
                Ok(Transport::Files(AsyncFileTransport::new(directory)))
            }
        }
    }

    async fn send(&self, message: Message) -> Result<(), SendFailure> {
        match self {
            Transport::Smtp(smtp) => {
                smtp.send(message)
                    .await
                    .map(|_| ())
                    .map_err(|error| SendFailure {
                        permanent: error.is_permanent(),
                        message: error.to_string(),
                    })
            }
            Transport::Files(files) => {
                files
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|error| SendFailure {
                        permanent: false,
                        message: error.to_string(),
                    })
            }
        }
    }
}

/// What an invitation message says.
pub(crate) struct InvitationMail<'a> {
    pub(crate) from: &'a Mailbox,
    pub(crate) to: &'a str,
    pub(crate) team_name: &'a str,
    pub(crate) link: &'a str,
    pub(crate) expires_at_ms: i64,
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

impl InvitationMail<'_> {
    /// The message: a plain-text and an HTML part, the team name, the expiry, the link.
    pub(crate) fn build(&self) -> Result<Message, Error> {
        let to: Mailbox = self
            .to
            .parse()
            .map_err(|error| Error::Mail(format!("recipient: {error}")))?;
        let expires = human(self.expires_at_ms);
        let text = format!(
            "You are invited to join the team \"{team}\".\n\n\
             Open this link to accept:\n{link}\n\n\
             The link works once and expires on {expires}.\n\
             If you did not expect this invitation, ignore this message.\n",
            team = self.team_name,
            link = self.link,
        );
        let team = html_escape(self.team_name);
        let link = html_escape(self.link);
        let html = format!(
            "<!doctype html><html><body>\
             <p>You are invited to join the team <strong>{team}</strong>.</p>\
             <p><a href=\"{link}\">Accept the invitation</a></p>\
             <p>The link works once and expires on {expires}.</p>\
             <p>If you did not expect this invitation, ignore this message.</p>\
             </body></html>"
        );
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(format!("You are invited to join {}", self.team_name))
            .multipart(
                MultiPart::alternative()
                    .singlepart(part(ContentType::TEXT_PLAIN, text))
                    .singlepart(part(ContentType::TEXT_HTML, html)),
            )
            .map_err(|error| Error::Mail(format!("building the message: {error}")))
    }
}

/// A part sent as 7bit when it is plain ASCII with short lines, so the link reads literally in
/// the raw message (quoted-printable would turn `#token=` into `#token=3D`); otherwise lettre
/// picks an encoding.
fn part(content_type: ContentType, text: String) -> SinglePart {
    let body =
        Body::new_with_encoding(text, ContentTransferEncoding::SevenBit).unwrap_or_else(Body::new);
    SinglePart::builder().header(content_type).body(body)
}

/// Counters and gauges of the worker, rendered into `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct MailMetrics {
    sends: AtomicU64,
    failures: AtomicU64,
    retries: AtomicU64,
    given_up: AtomicU64,
    in_flight: AtomicI64,
    queue_depth: AtomicI64,
    /// Milliseconds the oldest due delivery has waited past its due time.
    oldest_due_ms: AtomicI64,
}

impl MailMetrics {
    /// Appends the Prometheus text of these metrics.
    pub(crate) fn render(&self, out: &mut String) {
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        let gauge = |value: &AtomicI64| value.load(Ordering::Relaxed);
        let lines = [
            (
                "teams_mail_sends_total",
                "counter",
                "Invitation mails handed to the SMTP server (or written).",
                load(&self.sends) as f64,
            ),
            (
                "teams_mail_failures_total",
                "counter",
                "Failed delivery attempts (timeouts, refused connections, SMTP errors).",
                load(&self.failures) as f64,
            ),
            (
                "teams_mail_retries_total",
                "counter",
                "Failed attempts scheduled for a retry.",
                load(&self.retries) as f64,
            ),
            (
                "teams_mail_given_up_total",
                "counter",
                "Deliveries ended as failed (5xx reply or MAIL_MAX_ATTEMPTS).",
                load(&self.given_up) as f64,
            ),
            (
                "teams_mail_in_flight",
                "gauge",
                "SMTP transactions in flight in this process.",
                gauge(&self.in_flight) as f64,
            ),
            (
                "teams_mail_queue_depth",
                "gauge",
                "Deliveries not yet made (queued or failing) of pending invitations.",
                gauge(&self.queue_depth) as f64,
            ),
            (
                "teams_mail_oldest_due_seconds",
                "gauge",
                "How long the oldest due delivery has waited past its due time.",
                gauge(&self.oldest_due_ms) as f64 / 1000.0,
            ),
        ];
        for (name, kind, help, value) in lines {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
    }
}

/// What the worker needs from the settings.
pub(crate) struct WorkerSettings {
    pub(crate) from: Mailbox,
    pub(crate) frontend_url: String,
    pub(crate) retry_initial: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) concurrency: u32,
}

impl WorkerSettings {
    pub(crate) fn from_settings(settings: &TeamsSettings) -> WorkerSettings {
        WorkerSettings {
            from: settings.mail_from.clone(),
            frontend_url: settings.frontend_url.clone(),
            retry_initial: settings.mail_retry_initial,
            retry_max: settings.mail_retry_max,
            send_timeout: settings.mail_send_timeout,
            max_attempts: settings.mail_max_attempts,
            concurrency: settings.mail_concurrency,
        }
    }
}

/// The worker's fixed inputs.
pub(crate) struct Worker {
    pub(crate) store: Store,
    pub(crate) transport: Transport,
    pub(crate) settings: WorkerSettings,
    pub(crate) wakeup: Arc<Notify>,
    pub(crate) metrics: Arc<MailMetrics>,
    /// Names this process's claims (a UUIDv7 per start).
    pub(crate) claimant: String,
    /// When the queue gauges were last read from the database.
    pub(crate) gauges_refreshed: std::sync::Mutex<Option<Instant>>,
}

/// One claimed delivery, with the token minted for it.
struct Claim {
    invitation_id: String,
    team_id: String,
    email: String,
    team_name: String,
    attempts: i64,
    generation: i64,
    expires_at: i64,
    token: InviteToken,
}

/// What one attempt leaves in an invitation's delivery columns.
struct DeliveryOutcome {
    status: DeliveryStatus,
    /// The failure, cut to [`LAST_ERROR_MAX_CHARS`].
    last_error: Option<String>,
    next_attempt_at: Option<i64>,
    delivered_at: Option<i64>,
}

/// Delivers due invitations until `shutdown` turns `true`, up to `MAIL_CONCURRENCY` at once;
/// then waits for sends in flight at most the send timeout plus [`SHUTDOWN_MARGIN`].
pub(crate) async fn run_worker(worker: Worker, mut shutdown: watch::Receiver<bool>) {
    let worker = Arc::new(worker);
    let concurrency = worker.settings.concurrency.max(1) as usize;
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut last_sweep: Option<Instant> = None;
    let mut failed_rounds = 0u32;
    loop {
        if *shutdown.borrow() {
            break;
        }
        while in_flight.try_join_next().is_some() {}
        if last_sweep.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
            last_sweep = Some(Instant::now());
            if let Err(error) = worker.sweep().await {
                tracing::warn!(error = %error, "mail worker sweep failed; retrying later");
            }
        }
        let pause = match worker.round(concurrency - in_flight.len()).await {
            Ok((claims, pause)) => {
                failed_rounds = 0;
                for claim in claims {
                    in_flight.spawn(Arc::clone(&worker).deliver(claim));
                }
                pause
            }
            Err(error) => {
                failed_rounds = failed_rounds.saturating_add(1);
                let pause = backoff(
                    worker
                        .settings
                        .retry_initial
                        .max(Duration::from_millis(100)),
                    Duration::from_secs(5),
                    failed_rounds,
                );
                tracing::warn!(error = %error, "mail worker round failed; retrying");
                pause
            }
        };
        worker
            .metrics
            .in_flight
            .store(in_flight.len() as i64, Ordering::Relaxed);
        tokio::select! {
            _ = worker.wakeup.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    let limit = worker.settings.send_timeout.saturating_add(SHUTDOWN_MARGIN);
    let drained = tokio::time::timeout(limit, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            in_flight = in_flight.len(),
            "mail sends still in flight at shutdown; abandoning them (their claims expire and another round retries)"
        );
        in_flight.abort_all();
    }
}

impl Worker {
    /// Claims up to `free` due deliveries; returns them and how long to wait before the next
    /// round (also refreshing the queue gauges).
    async fn round(&self, free: usize) -> Result<(Vec<Claim>, Duration), Error> {
        let claims = if free > 0 {
            self.claim(free).await?
        } else {
            Vec::new()
        };
        let saturated = !claims.is_empty() && claims.len() == free;
        let gauges_fresh = self
            .gauges_refreshed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|at| at.elapsed() < GAUGES_EVERY);
        if saturated && gauges_fresh {
            // Every slot is busy: the next round starts when one frees up.
            return Ok((claims, IDLE_POLL));
        }
        let now = now_ms();
        let row = sqlx::query(
            "SELECT COUNT(*) AS depth, MIN(delivery_next_attempt_at) AS next_at FROM invitations \
             WHERE status = 'pending' AND delivery_status IN ('queued', 'failing') AND expires_at > $1",
        )
        .bind(now)
        .fetch_one(self.store.pool())
        .await?;
        *self
            .gauges_refreshed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
        let depth = int(&row, "depth")?;
        let next_at = opt_int(&row, "next_at")?;
        self.metrics.queue_depth.store(depth, Ordering::Relaxed);
        self.metrics.oldest_due_ms.store(
            next_at.map_or(0, |at| now.saturating_sub(at).max(0)),
            Ordering::Relaxed,
        );
        let pause = if saturated {
            IDLE_POLL
        } else {
            next_at.map_or(IDLE_POLL, |at| {
                Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(IDLE_POLL)
            })
        };
        Ok((claims, pause))
    }

    /// Claims up to `limit` due deliveries for this process and mints a token for each.
    async fn claim(&self, limit: usize) -> Result<Vec<Claim>, Error> {
        let now = now_ms();
        let lock = match self.store.backend() {
            Backend::Postgres => " FOR UPDATE OF i SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let mut write = self.store.write().await?;
        let rows = sqlx::query(&format!(
            "SELECT i.id, i.team_id, i.email, i.delivery_attempts, i.delivery_generation, \
                    i.expires_at, t.name AS team_name \
             FROM invitations i JOIN teams t ON t.id = i.team_id \
             WHERE i.status = 'pending' AND i.delivery_status IN ('queued', 'failing') \
               AND i.delivery_next_attempt_at <= $1 AND i.expires_at > $1 \
               AND t.deleted_at IS NULL \
             ORDER BY i.delivery_next_attempt_at LIMIT $2{lock}"
        ))
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *write.tx)
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut claims = Vec::with_capacity(rows.len());
        for row in &rows {
            claims.push(Claim {
                invitation_id: text(row, "id")?,
                team_id: text(row, "team_id")?,
                email: text(row, "email")?,
                team_name: text(row, "team_name")?,
                attempts: int(row, "delivery_attempts")?,
                generation: int(row, "delivery_generation")?,
                expires_at: int(row, "expires_at")?,
                token: InviteToken::generate()?,
            });
        }
        let lease_until = now.saturating_add(ms(lease(self.settings.send_timeout)));
        let sql = format!(
            "UPDATE invitations SET delivery_next_attempt_at = $1, delivery_claimed_by = $2 \
             WHERE id IN ({})",
            placeholders(3, claims.len())
        );
        let mut query = sqlx::query(&sql).bind(lease_until).bind(&self.claimant);
        for claim in &claims {
            query = query.bind(&claim.invitation_id);
        }
        query.execute(&mut *write.tx).await?;
        let values: Vec<String> = (0..claims.len())
            .map(|n| format!("({})", placeholders(n * 4 + 1, 4)))
            .collect();
        let sql = format!(
            "INSERT INTO invitation_tokens (token_hash, invitation_id, created_at, generation) \
             VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for claim in &claims {
            query = query
                .bind(claim.token.hash())
                .bind(&claim.invitation_id)
                .bind(now)
                .bind(claim.generation);
        }
        query.execute(&mut *write.tx).await?;
        write.commit().await?;
        Ok(claims)
    }

    /// One attempt: send (bounded by the send timeout), then record the outcome.
    async fn deliver(self: Arc<Self>, claim: Claim) {
        let outcome = self.send(&claim).await;
        match &outcome {
            Ok(()) => self.metrics.sends.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.metrics.failures.fetch_add(1, Ordering::Relaxed),
        };
        if let Err(error) = self.record(&claim, outcome).await {
            tracing::warn!(invitation_id = %claim.invitation_id, error = %error,
                "could not record a delivery outcome; the claim expires and another round retries");
        }
    }

    async fn send(&self, claim: &Claim) -> Result<(), SendFailure> {
        let link = format!(
            "{}/invite#token={}",
            self.settings.frontend_url,
            claim.token.expose()
        );
        let message = InvitationMail {
            from: &self.settings.from,
            to: &claim.email,
            team_name: &claim.team_name,
            link: &link,
            expires_at_ms: claim.expires_at,
        }
        .build()
        .map_err(|error| SendFailure {
            permanent: true,
            message: error.to_string(),
        })?;
        let timeout = self.settings.send_timeout;
        match tokio::time::timeout(timeout, self.transport.send(message)).await {
            Ok(result) => result,
            Err(_) => Err(SendFailure {
                permanent: false,
                message: format!(
                    "the SMTP server did not complete the transaction within {} s (MAIL_SEND_TIMEOUT_SECONDS)",
                    timeout.as_secs()
                ),
            }),
        }
    }

    /// Records `outcome` if this process still holds the claim of this generation.
    async fn record(&self, claim: &Claim, outcome: Result<(), SendFailure>) -> Result<(), Error> {
        let attempts = claim.attempts.saturating_add(1);
        let now = now_ms();
        let mut write = self.store.write().await?;
        let Some(locked) = lock_team(&mut write.tx, &claim.team_id, false).await? else {
            return Ok(());
        };
        let mut audit = AuditLog::new(&claim.team_id, locked.audit_seq, RequestMeta::default());
        let outcome = self.outcome(&outcome, attempts, now);
        let updated = sqlx::query(
            "UPDATE invitations SET delivery_status = $1, delivery_attempts = $2, \
             delivery_last_error = $3, delivery_next_attempt_at = $4, \
             delivered_at = COALESCE($5, delivered_at), delivery_claimed_by = NULL \
             WHERE id = $6 AND delivery_generation = $7 AND delivery_claimed_by = $8",
        )
        .bind(outcome.status.as_str())
        .bind(attempts)
        .bind(&outcome.last_error)
        .bind(outcome.next_attempt_at)
        .bind(outcome.delivered_at)
        .bind(&claim.invitation_id)
        .bind(claim.generation)
        .bind(&self.claimant)
        .execute(&mut *write.tx)
        .await?;
        if updated.rows_affected() == 0 {
            // Resent, revoked or taken over meanwhile: this attempt's outcome is history.
            return Ok(());
        }
        self.report(claim, attempts, &outcome, &mut audit);
        audit.write(&mut write.tx, now).await?;
        write.commit().await
    }

    /// What attempt number `attempts` leaves in the delivery columns: sent, given up (a
    /// permanent failure or the last attempt allowed), or failing with the next attempt due
    /// after the backoff.
    fn outcome(
        &self,
        outcome: &Result<(), SendFailure>,
        attempts: i64,
        now: i64,
    ) -> DeliveryOutcome {
        let (status, last_error, next_attempt_at, delivered_at) = match outcome {
            Ok(()) => (DeliveryStatus::Sent, None, None, Some(now)),
            Err(failure)
                if failure.permanent || attempts >= i64::from(self.settings.max_attempts) =>
            {
                (
                    DeliveryStatus::Failed,
                    Some(failure.message.as_str()),
                    None,
                    None,
                )
            }
            Err(failure) => {
                let delay = backoff(
                    self.settings.retry_initial,
                    self.settings.retry_max,
                    u32::try_from(attempts).unwrap_or(u32::MAX),
                );
                (
                    DeliveryStatus::Failing,
                    Some(failure.message.as_str()),
                    Some(now.saturating_add(ms(delay))),
                    None,
                )
            }
        };
        DeliveryOutcome {
            status,
            last_error: last_error.map(|error| error.chars().take(LAST_ERROR_MAX_CHARS).collect()),
            next_attempt_at,
            delivered_at,
        }
    }

    /// Counts, logs and audits an outcome that was recorded.
    fn report(
        &self,
        claim: &Claim,
        attempts: i64,
        outcome: &DeliveryOutcome,
        audit: &mut AuditLog,
    ) {
        let subject = Some(claim.invitation_id.as_str());
        let last_error = &outcome.last_error;
        match outcome.status {
            DeliveryStatus::Sent => {
                tracing::info!(invitation_id = %claim.invitation_id, attempts, "invitation mail sent");
                audit.push(
                    Actor::System,
                    "invitation.delivered",
                    subject,
                    json!({ "email": claim.email, "attempts": attempts }),
                );
            }
            DeliveryStatus::Failed => {
                self.metrics.given_up.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(invitation_id = %claim.invitation_id, attempts, error = ?last_error,
                    "invitation mail failed; giving up");
                audit.push(
                    Actor::System,
                    "invitation.delivery_failed",
                    subject,
                    json!({ "email": claim.email, "attempts": attempts, "error": last_error }),
                );
            }
            DeliveryStatus::Failing | DeliveryStatus::Queued => {
                self.metrics.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(invitation_id = %claim.invitation_id, attempts, error = ?last_error,
                    "invitation mail failed; will retry");
            }
        }
    }

    /// Marks pending invitations past their expiry `expired` (audited, team by team) and
    /// forgets old idempotency keys.
    async fn sweep(&self) -> Result<(), Error> {
        let now = now_ms();
        let rows = sqlx::query(
            "SELECT id, team_id, email FROM invitations WHERE status = 'pending' AND expires_at <= $1 \
             ORDER BY team_id LIMIT $2",
        )
        .bind(now)
        .bind(SWEEP_BATCH_MAX)
        .fetch_all(self.store.pool())
        .await?;
        let mut by_team: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for row in &rows {
            by_team
                .entry(text(row, "team_id")?)
                .or_default()
                .push((text(row, "id")?, text(row, "email")?));
        }
        for (team_id, invitations) in by_team {
            let mut write = self.store.write().await?;
            let Some(locked) = lock_team(&mut write.tx, &team_id, false).await? else {
                continue;
            };
            let mut audit = AuditLog::new(&team_id, locked.audit_seq, RequestMeta::default());
            expire_invitations(&mut write.tx, &mut audit, &invitations, now).await?;
            audit.write(&mut write.tx, now).await?;
            write.commit().await?;
        }
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(now.saturating_sub(ms(IDEMPOTENCY_TTL)))
            .execute(self.store.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_initial_delay_up_to_the_cap() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        assert_eq!(backoff(initial, max, 1), Duration::from_millis(100));
        assert_eq!(backoff(initial, max, 2), Duration::from_millis(200));
        assert_eq!(backoff(initial, max, 4), Duration::from_millis(800));
        assert_eq!(backoff(initial, max, 5), max);
        assert_eq!(backoff(initial, max, 500), max);
    }

    #[test]
    fn a_message_has_text_and_html_parts_with_the_team_link_and_expiry() {
        let from: Mailbox = "Logbook <noreply@example.com>".parse().unwrap();
        let message = InvitationMail {
            from: &from,
            to: "alice@example.com",
            team_name: "Core",
            link: "https://app.example.com/invite#token=abc",
            expires_at_ms: 1_795_773_600_123,
        }
        .build()
        .unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.contains("text/plain"), "{raw}");
        assert!(raw.contains("text/html"), "{raw}");
        assert!(raw.contains("https://app.example.com/invite#token=abc"));
        assert!(raw.contains("Core"));
        assert!(raw.contains("2026-11-27 10:00 UTC"));
    }
}
