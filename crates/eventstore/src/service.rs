//! [`EventStoreService`]: the engine handle, readiness, subscriber wake-ups and shutdown.

use std::sync::{Arc, OnceLock};

use eventlog::Store;
use tokio::sync::watch;

use crate::config::EventsSettings;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// JSON framing allowed per event on top of its counted bytes (keys, id, quotes, escapes in the
/// stream name and type). The body limit is derived from the engine's limits with it, so there
/// is no second hard-coded size: `max_batch_size_bytes + max_batch_events * this`.
pub const JSON_OVERHEAD_PER_EVENT_BYTES: usize = 2048;

/// The event store service. Cheap to clone; clones share one store.
#[derive(Clone)]
pub struct EventStoreService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub settings: EventsSettings,
    /// Set once recovery has finished; until then every route answers 503.
    pub store: OnceLock<Store>,
    /// The log head (next position), published after every durable commit; SSE subscribers
    /// wait on it.
    pub head: Arc<watch::Sender<u64>>,
    /// Becomes `true` when the process begins to shut down; SSE streams end on it.
    pub shutdown: watch::Sender<bool>,
    pub metrics: Arc<Metrics>,
    /// Largest request body accepted, derived from the engine limits.
    pub body_limit_bytes: usize,
    /// Tokens and subscription slots.
    pub guard: crate::access::Guard,
}

impl EventStoreService {
    /// A service that is not ready yet: call [`open`](Self::open) (the router answers 503
    /// meanwhile, so a process can listen, and report health, while a long log replays).
    pub fn new(settings: EventsSettings) -> EventStoreService {
        let limits = settings.options.limits;
        let body_limit_bytes = (limits.max_batch_size_bytes as usize).saturating_add(
            (limits.max_batch_events as usize).saturating_mul(JSON_OVERHEAD_PER_EVENT_BYTES),
        );
        let guard = crate::access::Guard::new(
            settings.token.as_ref(),
            settings.tokens_file.clone(),
            settings.max_subscriptions,
        );
        EventStoreService {
            inner: Arc::new(Inner {
                guard,
                settings,
                store: OnceLock::new(),
                head: Arc::new(watch::channel(0).0),
                shutdown: watch::channel(false).0,
                metrics: Arc::new(Metrics::default()),
                body_limit_bytes,
            }),
        }
    }

    /// Opens the log (recovery and replay run on a blocking thread and log their progress) and
    /// makes the service ready.
    pub async fn open(&self) -> Result<(), eventlog::Error> {
        let dir = self.inner.settings.dir.clone();
        let options = self.inner.settings.options.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(dir, options))
            .await
            .map_err(|e| eventlog::Error::InvalidOptions(format!("open panicked: {e}")))??;
        let head = Arc::clone(&self.inner.head);
        let metrics = Arc::clone(&self.inner.metrics);
        store.on_commit(move |commit| {
            metrics.commit(commit);
            head.send_replace(commit.head);
        });
        self.inner.head.send_replace(store.head());
        if self.inner.store.set(store).is_err() {
            tracing::warn!("the event store was opened twice; keeping the first");
        }
        Ok(())
    }

    /// [`new`](Self::new) and [`open`](Self::open) in one step.
    pub async fn start(settings: EventsSettings) -> Result<EventStoreService, eventlog::Error> {
        let service = EventStoreService::new(settings);
        service.open().await?;
        Ok(service)
    }

    /// `true` once the log is open (recovery finished).
    pub fn is_ready(&self) -> bool {
        self.inner.store.get().is_some()
    }

    /// The open store, if ready (for tools and tests).
    pub fn store(&self) -> Option<&Store> {
        self.inner.store.get()
    }

    /// The largest request body the append routes accept.
    pub fn body_limit_bytes(&self) -> usize {
        self.inner.body_limit_bytes
    }

    /// All event store routes (without `/health`, `/metrics`, `/openapi.json`: the binary
    /// serves those for every service).
    pub fn router(&self) -> axum::Router {
        crate::routes::router(self.clone())
    }

    /// Appends the Prometheus text of the event store to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        let stats = self.inner.store.get().map(Store::stats);
        self.inner.metrics.render(stats.as_ref(), out);
    }

    /// Tells long-lived responses (SSE subscriptions) to finish, so that a graceful shutdown
    /// can drain every connection.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Ends subscriptions, then closes the log: the writer answers everything queued, fsyncs,
    /// and writes a checkpoint. Later appends answer 503; reads keep working.
    pub async fn close(&self) {
        self.begin_shutdown();
        if let Some(store) = self.inner.store.get().cloned() {
            let closed = tokio::task::spawn_blocking(move || store.close()).await;
            if let Err(error) = closed {
                tracing::error!(error = %error, "closing the event log failed");
            }
        }
    }

    pub(crate) fn ready_store(&self) -> Result<&Store, ApiError> {
        self.inner.store.get().ok_or(ApiError::NotReady)
    }
}
