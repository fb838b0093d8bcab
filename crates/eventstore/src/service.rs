//! [`EventStoreService`]: the backend handle, readiness and shutdown.

use std::sync::{Arc, OnceLock};

use events::EventStore;
use tokio::sync::watch;

use crate::backend::{Backend, Embedded, Postgres, postgres};
use crate::config::EventsSettings;
use crate::error::ApiError;
use crate::metrics::{BackendStats, Metrics};

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
    /// Set once the backend is open (the embedded log recovered); until then every route
    /// answers 503.
    pub backend: OnceLock<Backend>,
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
                backend: OnceLock::new(),
                shutdown: watch::channel(false).0,
                metrics: Arc::new(Metrics::default()),
                body_limit_bytes,
            }),
        }
    }

    /// Opens the backend (the embedded log's recovery and replay run on a blocking thread)
    /// and makes the service ready.
    pub async fn open(&self) -> Result<(), events::Error> {
        let metrics = Arc::clone(&self.inner.metrics);
        let settings = &self.inner.settings;
        let backend = match &settings.database {
            None => Backend::Embedded(
                Embedded::open(
                    settings.dir.clone(),
                    settings.options.clone(),
                    settings.scavenge_max_bytes_per_second,
                    move |commit| metrics.commit(commit.events, commit.fsync),
                )
                .await?,
            ),
            Some(database) => {
                let options = postgres::connect_options(database.url.expose())
                    .map_err(|reason| events::Error::Internal { reason })?;
                let limits = settings.options.limits;
                let limits = events::Limits {
                    max_event_size_bytes: limits.max_event_size_bytes,
                    max_batch_events: limits.max_batch_events,
                    max_batch_size_bytes: limits.max_batch_size_bytes,
                    max_stream_name_bytes: limits.max_stream_name_bytes,
                    max_event_type_bytes: limits.max_event_type_bytes,
                };
                Backend::Postgres(
                    Postgres::open(options, database.max_connections, limits, move |events| {
                        metrics.commit(events, None)
                    })
                    .await?,
                )
            }
        };
        if self.inner.backend.set(backend).is_err() {
            tracing::warn!("the event store was opened twice; keeping the first");
        }
        Ok(())
    }

    /// [`new`](Self::new) and [`open`](Self::open) in one step.
    pub async fn start(settings: EventsSettings) -> Result<EventStoreService, events::Error> {
        let service = EventStoreService::new(settings);
        service.open().await?;
        Ok(service)
    }

    /// `true` once the backend is open (the embedded log recovered).
    pub fn is_ready(&self) -> bool {
        self.inner.backend.get().is_some()
    }

    /// The open backend, if ready.
    pub fn backend(&self) -> Option<&Backend> {
        self.inner.backend.get()
    }

    /// The open embedded engine, if ready and embedded (for tools and tests).
    pub fn store(&self) -> Option<&eventlog::Store> {
        self.inner.backend.get().and_then(Backend::engine)
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
    pub async fn render_metrics(&self, out: &mut String) {
        let stats = match self.inner.backend.get() {
            None => None,
            Some(backend) => match backend.engine() {
                Some(engine) => Some(BackendStats::Engine(engine.stats())),
                None => backend.stats().await.ok().map(BackendStats::Contract),
            },
        };
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
        if let Some(backend) = self.inner.backend.get() {
            backend.close().await;
        }
    }

    pub(crate) fn ready_backend(&self) -> Result<&Backend, ApiError> {
        self.inner.backend.get().ok_or(ApiError::NotReady)
    }
}
