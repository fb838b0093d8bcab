//! The Logbook teams service: teams, members and batch email invitations, over SQLite (the
//! embedded default) or PostgreSQL, served by `logbook serve`.
//!
//! # Layout
//! - [`config`]: [`TeamsArgs`] (flags and environment, via clap) checked completely into
//!   [`TeamsSettings`] by [`TeamsArgs::check`], which reports every problem at once.
//! - `store`: the connection pool over sqlx's `Any` driver (one query text for both
//!   databases), the embedded migrations in `migrations/`, SQLite pragmas, and the write queue.
//! - [`domain`]: validated values ([`domain::EmailAddress`], [`domain::TeamName`]); parse at
//!   the edge, trust inside.
//! - [`token`]: invitation tokens (256 bits from the OS, URL-safe base64; only SHA-256 is
//!   stored) and the constant-time secret comparison used for the admin token.
//! - `routes`: the HTTP handlers, one module per resource (`teams`, `members`,
//!   `invitations`, `accept`, `audit`), the admin bearer middleware, the per-address rate limit
//!   of the token endpoints (`rate_limit`, with `TRUSTED_PROXIES`), their CORS (`cors`), the
//!   header size guard, pagination and body extractors.
//! - [`error`]: the one [`Error`] enum and the one place it becomes an RFC 9457 problem,
//!   including unique-index violations told apart by index name.
//! - `mail`: the invitation message and the delivery worker (claims with a lease, a bounded
//!   pool of concurrent sends, retries with backoff, a fresh token per attempt that stays
//!   valid for its delivery generation, `failed` after a 5xx or `MAIL_MAX_ATTEMPTS`; `.eml`
//!   files in development), and its `/metrics`.
//! - [`audit`]: the audit trail (written in the transaction of each change, read at
//!   `GET /teams/{id}/audit`) and its relay to an event store through [`AuditSink`].
//! - `queries`: reading and locking a team, shared by handlers and the worker.
//! - `idempotency`: `Idempotency-Key` on `POST /teams` and batch invitations.
//! - [`openapi()`]: the OpenAPI 3.1 document of these routes, generated from the handlers.
//!
//! # Example
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let ctx = web::ServiceContext {
//!     production: false,
//!     data_dir: "./data".into(),
//!     local_addr: listener.local_addr()?,
//! };
//! let settings = teams::TeamsArgs::default()
//!     .check(&ctx)
//!     .await
//!     .map_err(|problems| format!("{problems:?}"))?;
//! let service = teams::TeamsService::start(settings).await?;
//! if let Some(banner) = service.dev_banner() {
//!     println!("{banner}");
//! }
//! // The common stack (request ids, the request span, the timeout), as the binary applies it.
//! let router = web::middleware::stack(web::middleware::timeout(
//!     service.router(),
//!     service.request_timeout(),
//! ));
//! axum::serve(
//!     listener,
//!     router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
//! )
//! .await?;
//! service.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod config;
pub mod domain;
pub mod error;
mod idempotency;
mod mail;
mod queries;
mod routes;
mod store;
mod time;
pub mod token;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use utoipa::OpenApi as _;

pub use audit::{AuditEntry, AuditSink, AuditSinkError, team_stream};
pub use config::{MailTarget, Secret, TeamsArgs, TeamsSettings};
pub use error::Error;
pub use routes::invitations::BATCH_MAX_EMAILS;
pub use routes::{HEADER_FIELD_MAX_BYTES, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX};

use routes::{AppState, Shared};

/// How long shutdown waits for the audit relay to finish an append in flight.
const RELAY_SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// A running teams service: the database pool, the mail delivery worker and, once started,
/// the audit relay.
pub struct TeamsService {
    state: AppState,
    worker: JoinHandle<()>,
    relay: Mutex<Option<JoinHandle<()>>>,
    stop_worker: watch::Sender<bool>,
}

impl TeamsService {
    /// Connects, applies embedded migrations, starts the mail delivery worker.
    pub async fn start(settings: TeamsSettings) -> Result<TeamsService, Error> {
        let store = store::Store::connect(
            settings.database_url.expose(),
            settings.database_max_connections,
        )
        .await?;
        let transport = mail::Transport::from_settings(&settings)?;
        let wakeup = Arc::new(Notify::new());
        let mail_metrics = Arc::new(mail::MailMetrics::default());
        let (stop_worker, stopped) = watch::channel(false);
        let worker = mail::Worker {
            store: store.clone(),
            transport,
            settings: mail::WorkerSettings::from_settings(&settings),
            wakeup: Arc::clone(&wakeup),
            metrics: Arc::clone(&mail_metrics),
            claimant: store::new_id(),
            gauges_refreshed: std::sync::Mutex::new(None),
        };
        let worker = tokio::spawn(mail::run_worker(worker, stopped));
        let accept_rate_limiter =
            routes::rate_limit::RateLimiter::new(settings.accept_rate_per_minute);
        let state = AppState {
            inner: Arc::new(Shared {
                store,
                settings,
                mail_wakeup: wakeup,
                audit_wakeup: Arc::new(Notify::new()),
                mail_metrics,
                accept_rate_limiter,
            }),
        };
        Ok(TeamsService {
            state,
            worker,
            relay: Mutex::new(None),
            stop_worker,
        })
    }

    /// Starts relaying the audit trail to `sink` (an event store in this process): every
    /// entry, at least once, to the stream `team-<team id>` with the entry id as the event id.
    /// It resumes after a crash with what was not relayed yet. A second call does nothing.
    pub fn start_audit_relay<S: AuditSink>(&self, sink: S) {
        let mut relay = self
            .relay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if relay.is_some() {
            return;
        }
        *relay = Some(tokio::spawn(audit::run_relay(
            self.state.store.clone(),
            sink,
            Arc::clone(&self.state.audit_wakeup),
            self.stop_worker.subscribe(),
        )));
    }

    /// Appends the Prometheus text of the teams service (the mail worker) to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        self.state.mail_metrics.render(out);
    }

    /// A cheap, cloneable handle that renders the same metrics (for a `/metrics` route).
    pub fn metrics_source(&self) -> MetricsSource {
        MetricsSource(Arc::clone(&self.state.mail_metrics))
    }

    /// All teams routes (admin API, POST /invitations/accept, GET /invite page), with their own
    /// body limit; bare of the common stack (`web::middleware`), which the binary applies. NOT /health and NOT /openapi.json: the binary serves those and merges
    /// documents.
    ///
    /// Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the token
    /// endpoints are rate-limited per client address (`ACCEPT_RATE_PER_MINUTE`), and without
    /// `ConnectInfo` every client shares one limit (a warning says so, once).
    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
    }

    /// How long a teams request may take (`TEAMS_REQUEST_TIMEOUT_SECONDS`): the binary wraps
    /// [`router`](Self::router) in `web::middleware::timeout` with it.
    pub fn request_timeout(&self) -> std::time::Duration {
        self.state.settings.request_timeout
    }

    /// Lines to print at start-up in development mode (generated admin token, where mail
    /// goes), else None.
    pub fn dev_banner(&self) -> Option<String> {
        let settings = &self.state.settings;
        if settings.production {
            return None;
        }
        let mut lines = vec!["teams: development mode".to_owned()];
        if settings.admin_token_generated {
            lines.push(format!(
                "teams: admin token (generated for this run; set ADMIN_TOKEN to keep one): {}",
                settings.admin_token.expose()
            ));
        }
        match &settings.mail {
            MailTarget::Directory(directory) => lines.push(format!(
                "teams: invitation mail is written to {}/ as .eml files",
                directory.display()
            )),
            MailTarget::Smtp(_) => lines.push("teams: invitation mail goes to SMTP_URL".into()),
        }
        lines.push(format!(
            "teams: invitation links start with {}/invite#token=",
            settings.frontend_url
        ));
        Some(lines.join("\n"))
    }

    /// Stops the mail worker and the relay and closes the pool. Bounded: sends in flight get
    /// at most `MAIL_SEND_TIMEOUT_SECONDS` (plus a 2 s margin), the relay 5 s.
    pub async fn shutdown(self) {
        let _ = self.stop_worker.send(true);
        if let Err(error) = self.worker.await {
            tracing::error!(error = %error, "mail worker ended abnormally");
        }
        let relay = self
            .relay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(mut relay) = relay
            && tokio::time::timeout(RELAY_SHUTDOWN_WAIT, &mut relay)
                .await
                .is_err()
        {
            tracing::warn!("the audit relay did not stop in time; abandoning it");
            relay.abort();
        }
        self.state.store.close().await;
    }
}

/// The teams service's metrics (the mail worker's queue depth, oldest due delivery, sends,
/// failures, retries), cheap to clone.
#[derive(Clone)]
pub struct MetricsSource(Arc<mail::MailMetrics>);

impl MetricsSource {
    /// Appends the Prometheus text to `out`.
    pub fn render(&self, out: &mut String) {
        self.0.render(out);
    }
}

/// The OpenAPI 3.1 document of the teams routes (utoipa), including every status and problem
/// body.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::ApiDoc::openapi()
}
