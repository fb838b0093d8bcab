//! Who may use the event API, and how many subscriptions may be open: the settings
//! ([`AccessArgs`]), their start-up checks, and the glue between the routes and [`web::auth`].
//!
//! - Every event store route sits behind [`web::auth::require_access`]; handlers take the
//!   request's [`Access`] and make one check each: `check_read(stream)` for stream reads,
//!   `check_append(stream)` for every event of an append, `can_read` as a filter on `$all` pages
//!   and subscriptions (a prefix-scoped token sees only its streams' events, with `next` still
//!   moving past the others), and a 404 for `GET /events/{id}` of an event it may not read (so
//!   existence does not leak). Delete, tombstone and metadata routes take
//!   `check_admin_stream(stream)`, scavenge `check_admin()`.
//! - Production refuses to serve an open event API unless `EVENTS_AUTH=none` says so; that
//!   choice is logged as a warning at every start.
//! - `LOGBOOK_MAX_SUBSCRIPTIONS` bounds concurrent subscriptions (one semaphore for the process,
//!   shared with the gRPC face when it comes); beyond it `GET /subscribe` answers 503.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use web::auth::{Access, Authenticator};
use web::{ConfigProblem, Secret, ServiceContext};

use crate::error::ApiError;
use crate::service::EventStoreService;

/// Default cap on concurrent subscriptions (SSE, and gRPC subscriptions later).
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1024;

/// `EVENTS_AUTH`: how the event API authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// No authentication, on purpose (production logs a warning at every start).
    None,
}

/// Access and subscription settings, flattened into [`crate::EventsArgs`].
#[derive(Debug, Clone, clap::Args)]
pub struct AccessArgs {
    /// Token file: one `name scope[:stream-prefix] sha256-hex` a line (`logbook tokens new`
    /// prints one); re-read on SIGHUP.
    #[arg(long, env = "EVENTS_TOKENS_FILE")]
    pub events_tokens_file: Option<PathBuf>,
    /// `none`: serve the event API without tokens even in production (logged at every start).
    #[arg(long, env = "EVENTS_AUTH", value_enum)]
    pub events_auth: Option<AuthMode>,
    /// Most concurrent subscriptions (SSE); more are answered 503.
    #[arg(long, env = "LOGBOOK_MAX_SUBSCRIPTIONS", default_value_t = DEFAULT_MAX_SUBSCRIPTIONS)]
    pub max_subscriptions: usize,
}

impl Default for AccessArgs {
    fn default() -> Self {
        AccessArgs {
            events_tokens_file: None,
            events_auth: None,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
        }
    }
}

impl AccessArgs {
    /// Checks the access settings together with the single token (`EVENTS_TOKEN`); pushes
    /// every problem, logs the warnings an operator must see at start.
    pub(crate) fn check(
        &self,
        ctx: &ServiceContext,
        token: Option<&Secret>,
        problems: &mut Vec<ConfigProblem>,
    ) {
        if self.max_subscriptions == 0 {
            problems.push(ConfigProblem::new(
                "LOGBOOK_MAX_SUBSCRIPTIONS (--max-subscriptions)",
                "must be at least 1",
            ));
        }
        if let Some(file) = &self.events_tokens_file
            && let Err(message) = web::auth::read_tokens_file(file)
        {
            problems.push(ConfigProblem::new(
                "EVENTS_TOKENS_FILE (--events-tokens-file)",
                format!("{message}; fix the file (`logbook tokens new` prints valid lines)"),
            ));
        }
        let has_tokens = token.is_some() || self.events_tokens_file.is_some();
        match (self.events_auth, has_tokens) {
            (Some(AuthMode::None), true) => problems.push(ConfigProblem::new(
                "EVENTS_AUTH (--events-auth)",
                "is `none` but EVENTS_TOKEN or EVENTS_TOKENS_FILE is also set; unset one of them",
            )),
            (Some(AuthMode::None), false) => tracing::warn!(
                addr = %ctx.local_addr,
                "EVENTS_AUTH=none: the event API is open to anyone who can reach this address"
            ),
            (None, false) if ctx.production => problems.push(ConfigProblem::new(
                "EVENTS_TOKEN (--events-token) or EVENTS_TOKENS_FILE (--events-tokens-file)",
                "production needs a token for the event API; set one (`logbook tokens new` makes them), or EVENTS_AUTH=none to serve it open on purpose",
            )),
            (None, false) if !ctx.local_addr.ip().is_loopback() => tracing::warn!(
                addr = %ctx.local_addr,
                "the event API has no token and listens beyond this machine; anyone who can reach it may read and append (set EVENTS_TOKEN or EVENTS_TOKENS_FILE)"
            ),
            _ => {}
        }
    }
}

/// The access state of a running service: the tokens and the subscription slots.
#[derive(Debug)]
pub(crate) struct Guard {
    pub authenticator: Arc<Authenticator>,
    subscriptions: Arc<Semaphore>,
    max_subscriptions: usize,
}

impl Guard {
    /// Loads the tokens of `token` and `tokens_file`. A file that cannot be read now (it was
    /// checked at start-up) leaves no token accepted, never an open API, until a reload works.
    pub fn new(
        token: Option<&Secret>,
        tokens_file: Option<PathBuf>,
        max_subscriptions: usize,
    ) -> Guard {
        let authenticator = Authenticator::unloaded(token, tokens_file);
        if let Err(message) = authenticator.reload() {
            tracing::error!(error = %message, "cannot read EVENTS_TOKENS_FILE; no token of it is accepted until it is fixed and reloaded (SIGHUP)");
        }
        Guard {
            authenticator: Arc::new(authenticator),
            subscriptions: Arc::new(Semaphore::new(max_subscriptions)),
            max_subscriptions,
        }
    }

    /// A subscription slot, held for as long as the subscription lives.
    pub fn subscription_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.subscriptions)
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManySubscriptions(self.max_subscriptions))
    }
}

impl EventStoreService {
    /// Re-reads `EVENTS_TOKENS_FILE` (the binary calls this on SIGHUP); returns how many tokens
    /// are accepted now. On error the previous tokens stay in force.
    pub fn reload_tokens(&self) -> Result<usize, String> {
        self.inner.guard.authenticator.reload()
    }

    /// The authenticator of this service, for other faces (gRPC) to share.
    pub fn authenticator(&self) -> Arc<Authenticator> {
        Arc::clone(&self.inner.guard.authenticator)
    }

    /// The subscription slots and their number, for other faces (gRPC) to share: one cap
    /// (`LOGBOOK_MAX_SUBSCRIPTIONS`) over SSE and gRPC subscriptions together.
    pub fn subscription_slots(&self) -> (Arc<Semaphore>, usize) {
        (
            Arc::clone(&self.inner.guard.subscriptions),
            self.inner.guard.max_subscriptions,
        )
    }

    /// The append limits of the contract, the same for every face.
    pub fn limits(&self) -> events::Limits {
        let limits = self.inner.settings.options.limits;
        events::Limits {
            max_event_size_bytes: limits.max_event_size_bytes,
            max_batch_events: limits.max_batch_events,
            max_batch_size_bytes: limits.max_batch_size_bytes,
            max_stream_name_bytes: limits.max_stream_name_bytes,
            max_event_type_bytes: limits.max_event_type_bytes,
        }
    }
}

/// Keeps only the events `access` may read (a no-op for tokens without a prefix).
pub(crate) fn readable<T>(access: &Access, items: Vec<T>, stream: impl Fn(&T) -> &str) -> Vec<T> {
    if access.reads_everything() {
        items
    } else {
        items
            .into_iter()
            .filter(|item| access.can_read(stream(item)))
            .collect()
    }
}
