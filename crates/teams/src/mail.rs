//! Invitation mail: the message, the transports, and the delivery worker.
//!
//! Delivery loses nothing: an invitation is committed with its delivery `queued`, and the
//! worker ([`run_worker`]) picks due deliveries from the database, so a crash, a restart or an
//! SMTP outage only delays mail. Since the raw token is never stored, every attempt mints a
//! fresh token, stores its hash, and mails the token; a failed attempt is retried with
//! exponential backoff (`MAIL_RETRY_INITIAL_MS` doubling up to `MAIL_RETRY_MAX_MS`), forever.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::{Notify, watch};

use crate::config::{MailTarget, TeamsSettings};
use crate::error::Error;
use crate::routes::ms;
use crate::store::{Store, int, text};
use crate::time::{human, now_ms};
use crate::token::InviteToken;

/// Most deliveries the worker picks up per round.
const DELIVERY_BATCH_MAX: i64 = 32;
/// Longest the worker sleeps when nothing is due (it also wakes on every new invitation).
const IDLE_POLL: Duration = Duration::from_secs(30);
/// Longest stored failure text.
const LAST_ERROR_MAX_CHARS: usize = 500;

/// Checks an `SMTP_URL` the way the transport will read it.
pub(crate) fn check_smtp_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
        return Err("unsupported scheme; use smtp://host:port, smtp://user:pass@host:587?tls=required or smtps://user:pass@host".into());
    }
    AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map(|_| ())
        .map_err(|error| format!("cannot be read ({error}); use smtp://host:port, smtp://user:pass@host:587?tls=required or smtps://user:pass@host"))
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

    async fn send(&self, message: Message) -> Result<(), String> {
        match self {
            Transport::Smtp(smtp) => smtp
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Transport::Files(files) => files
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
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

/// The worker's fixed inputs.
pub(crate) struct Worker {
    pub(crate) store: Store,
    pub(crate) transport: Transport,
    pub(crate) from: Mailbox,
    pub(crate) frontend_url: String,
    pub(crate) invite_ttl: Duration,
    pub(crate) retry_initial: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) wakeup: Arc<Notify>,
}

/// The delay before attempt `attempts + 1`, after `attempts` failures.
pub(crate) fn backoff(initial: Duration, max: Duration, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(31));
    initial.saturating_mul(factor).min(max)
}

/// Delivers due invitations until `shutdown` turns `true`; a send in flight is finished first.
pub(crate) async fn run_worker(worker: Worker, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let pause = match worker.deliver_due().await {
            Ok(pause) => pause,
            Err(error) => {
                tracing::warn!(error = %error, "mail worker round failed; retrying");
                worker.retry_initial.max(Duration::from_millis(100))
            }
        };
        tokio::select! {
            _ = worker.wakeup.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
    }
}

struct Due {
    invitation_id: String,
    email: String,
    team_name: String,
    attempts: i64,
    requested_at: i64,
}

impl Worker {
    /// Sends every due delivery once; returns how long to wait for the next one.
    async fn deliver_due(&self) -> Result<Duration, Error> {
        let now = now_ms();
        let rows = sqlx::query(
            "SELECT i.id, i.email, i.delivery_attempts, i.delivery_requested_at, t.name AS team_name \
             FROM invitations i JOIN teams t ON t.id = i.team_id \
             WHERE i.status = 'pending' AND i.delivery_status <> 'sent' \
               AND i.delivery_next_attempt_at <= $1 \
             ORDER BY i.delivery_next_attempt_at LIMIT $2",
        )
        .bind(now)
        .bind(DELIVERY_BATCH_MAX)
        .fetch_all(self.store.pool())
        .await?;
        for row in &rows {
            let due = Due {
                invitation_id: text(row, "id")?,
                email: text(row, "email")?,
                team_name: text(row, "team_name")?,
                attempts: int(row, "delivery_attempts")?,
                requested_at: int(row, "delivery_requested_at")?,
            };
            self.deliver(due).await?;
        }
        if rows.len() as i64 == DELIVERY_BATCH_MAX {
            return Ok(Duration::ZERO);
        }
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(delivery_next_attempt_at) FROM invitations \
             WHERE status = 'pending' AND delivery_status <> 'sent'",
        )
        .fetch_one(self.store.pool())
        .await?;
        Ok(match next {
            Some(at) => {
                Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(IDLE_POLL)
            }
            None => IDLE_POLL,
        })
    }

    /// One attempt: mint a token, store its hash, send, record the outcome.
    async fn deliver(&self, due: Due) -> Result<(), Error> {
        let token = InviteToken::generate()?;
        let hash = token.hash();
        let now = now_ms();
        let expires_at = now.saturating_add(ms(self.invite_ttl));
        let mut write = self.store.write().await?;
        let minted = sqlx::query(
            "UPDATE invitations SET token_hash = $1, expires_at = $2 \
             WHERE id = $3 AND status = 'pending' AND delivery_requested_at = $4",
        )
        .bind(&hash)
        .bind(expires_at)
        .bind(&due.invitation_id)
        .bind(due.requested_at)
        .execute(&mut *write.tx)
        .await?;
        if minted.rows_affected() == 0 {
            // Revoked, accepted or resent meanwhile: nothing to send for this round.
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO invitation_tokens (token_hash, invitation_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&hash)
        .bind(&due.invitation_id)
        .bind(now)
        .execute(&mut *write.tx)
        .await?;
        write.commit().await?;

        let link = format!("{}/invite#token={}", self.frontend_url, token.expose());
        let outcome = match (InvitationMail {
            from: &self.from,
            to: &due.email,
            team_name: &due.team_name,
            link: &link,
            expires_at_ms: expires_at,
        })
        .build()
        {
            Ok(message) => self.transport.send(message).await,
            Err(error) => Err(error.to_string()),
        };
        drop(token);

        let attempts = due.attempts.saturating_add(1);
        let mut write = self.store.write().await?;
        match outcome {
            Ok(()) => {
                tracing::info!(invitation_id = %due.invitation_id, attempts, "invitation mail sent");
                sqlx::query(
                    "UPDATE invitations SET delivery_status = 'sent', delivery_attempts = $1, \
                     delivery_last_error = NULL, delivered_at = $2 \
                     WHERE id = $3 AND delivery_requested_at = $4",
                )
                .bind(attempts)
                .bind(now_ms())
                .bind(&due.invitation_id)
                .bind(due.requested_at)
                .execute(&mut *write.tx)
                .await?;
            }
            Err(error) => {
                let delay = backoff(
                    self.retry_initial,
                    self.retry_max,
                    u32::try_from(attempts).unwrap_or(u32::MAX),
                );
                tracing::warn!(invitation_id = %due.invitation_id, attempts, error = %error,
                    retry_in_ms = delay.as_millis() as u64, "invitation mail failed; will retry");
                let error: String = error.chars().take(LAST_ERROR_MAX_CHARS).collect();
                sqlx::query(
                    "UPDATE invitations SET delivery_status = 'failing', delivery_attempts = $1, \
                     delivery_last_error = $2, delivery_next_attempt_at = $3 \
                     WHERE id = $4 AND delivery_requested_at = $5",
                )
                .bind(attempts)
                .bind(error)
                .bind(now_ms().saturating_add(ms(delay)))
                .bind(&due.invitation_id)
                .bind(due.requested_at)
                .execute(&mut *write.tx)
                .await?;
            }
        }
        write.commit().await
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
