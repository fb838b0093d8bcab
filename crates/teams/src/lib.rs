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
//!   `invitations`, `accept`), the admin bearer middleware, the per-address rate limit of the
//!   token endpoints (`rate_limit`), the header size guard, pagination and body extractors.
//! - [`error`]: the one [`Error`] enum and the one place it becomes an RFC 9457 problem,
//!   including unique-index violations told apart by index name.
//! - `mail`: the invitation message and the delivery worker (retries with backoff, a fresh
//!   token per attempt; `.eml` files in development).
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
//! axum::serve(
//!     listener,
//!     service
//!         .router()
//!         .into_make_service_with_connect_info::<std::net::SocketAddr>(),
//! )
//! .await?;
//! service.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod error;
mod mail;
mod routes;
mod store;
mod time;
pub mod token;

use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use utoipa::OpenApi as _;

pub use config::{MailTarget, Secret, TeamsArgs, TeamsSettings};
pub use error::Error;
pub use routes::invitations::BATCH_MAX_EMAILS;
pub use routes::{HEADER_FIELD_MAX_BYTES, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX};

use routes::{AppState, Shared};

/// A running teams service: the database pool and the mail delivery worker.
pub struct TeamsService {
    state: AppState,
    worker: JoinHandle<()>,
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
        let (stop_worker, stopped) = watch::channel(false);
        let worker = mail::Worker {
            store: store.clone(),
            transport,
            from: settings.mail_from.clone(),
            frontend_url: settings.frontend_url.clone(),
            invite_ttl: settings.invite_ttl,
            retry_initial: settings.mail_retry_initial,
            retry_max: settings.mail_retry_max,
            wakeup: Arc::clone(&wakeup),
        };
        let worker = tokio::spawn(mail::run_worker(worker, stopped));
        let accept_rate_limiter =
            routes::rate_limit::RateLimiter::new(settings.accept_rate_per_minute);
        let state = AppState {
            inner: Arc::new(Shared {
                store,
                settings,
                mail_wakeup: wakeup,
                accept_rate_limiter,
            }),
        };
        Ok(TeamsService {
            state,
            worker,
            stop_worker,
        })
    }

    /// All teams routes (admin API, POST /invitations/accept, GET /invite page), with their own
    /// body limit. NOT /health and NOT /openapi.json: the binary serves those and merges
    /// documents.
    ///
    /// Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the token
    /// endpoints are rate-limited per client address (`ACCEPT_RATE_PER_MINUTE`), and without
    /// `ConnectInfo` every client shares one limit (a warning says so, once).
    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
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

    /// Stops the mail worker (finishing an in-flight send) and closes the pool.
    pub async fn shutdown(self) {
        let _ = self.stop_worker.send(true);
        if let Err(error) = self.worker.await {
            tracing::error!(error = %error, "mail worker ended abnormally");
        }
        self.state.store.close().await;
    }
}

/// The OpenAPI 3.1 document of the teams routes (utoipa), including every status and problem
/// body.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::ApiDoc::openapi()
}
