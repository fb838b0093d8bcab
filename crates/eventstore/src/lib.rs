//! # eventstore: the Logbook event store over HTTP
//!
//! The HTTP face of the event store over the [`events`] seam: append JSON events (one or an
//! atomic batch), read them by id, page through the whole log or one stream, and follow it
//! live with Server-Sent Events. The routes call only [`events::EventStore`] methods on a
//! [`backend::Backend`]: the embedded [`eventlog`] engine (the default) or PostgreSQL
//! (`EVENTS_DATABASE_URL`). Every error is an RFC 9457 problem ([`web::Problem`]); the mapping
//! from [`events::Error`] to statuses lives in one place, [`ApiError::to_problem`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use eventstore::{EventStoreService, EventsSettings};
//!
//! let settings = EventsSettings::new("./data/events", eventlog::Options::default());
//! let service = EventStoreService::start(settings).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! axum::serve(listener, service.router()).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: [`EventsArgs`] (flags and env vars) checked into [`EventsSettings`], every
//!   problem reported at once.
//! - [`access`]: tokens and scopes on every route ([`web::auth`]), the production checks,
//!   the subscription cap.
//! - [`service`]: [`EventStoreService`]: opens the log (readiness), publishes the head to
//!   subscribers, closes cleanly.
//! - [`service`]: [`EventStoreService`]: opens the configured backend (readiness), closes
//!   cleanly.
//! - [`backend`]: [`backend::Backend`], the closed set of backends behind the seam:
//!   [`backend::Embedded`] (the engine, with all of its async wrapping) and
//!   [`backend::Postgres`] (sqlx, embedded migrations, `LISTEN/NOTIFY`).
//! - `routes`: the handlers and the OpenAPI document ([`openapi`]).
//! - `subscribe`: `GET /subscribe` (SSE), an [`events::Subscription`]: a cursor that never
//!   queues.
//! - [`model`]: the JSON shapes; `data` is kept as raw JSON text, byte for byte.
//! - [`error`]: [`ApiError`], the one error type, and its mapping to problems.
//! - [`metrics`]: hand-written Prometheus counters and histograms.
//!
//! # The engine is synchronous
//! [`backend::Embedded`] appends with [`eventlog::Store::submit`] and a `oneshot` channel, so
//! no task blocks a runtime thread while the group commit fsyncs. Reading one event by id is a
//! single `pread` of (usually) page-cached bytes and runs inline; pages of up to 1,000 events
//! go to the blocking pool. No route names the engine.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod access;
mod admin;
pub mod backend;
pub mod config;
pub mod error;
pub mod metrics;
pub mod model;
mod routes;
pub mod service;
mod subscribe;

pub use config::{
    DATABASE_URL_SETTING, DatabaseSettings, EVENTS_DIR, EventsArgs, EventsSettings, Secret,
};
pub use error::ApiError;
pub use service::{EventStoreService, JSON_OVERHEAD_PER_EVENT_BYTES};
pub use subscribe::SUBSCRIBE_BATCH_EVENTS;

/// A page of events (`GET /events`, `GET /streams/{stream}/events`, one SSE read) stops
/// after about this many bytes of stored events even below `limit`, so a page of large events
/// cannot make the server hold or send a gigabyte; `next` continues from where it stopped.
/// A page always holds at least one event when one follows.
pub const PAGE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// The OpenAPI 3.1 document of the event store routes, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    routes::ApiDoc::openapi()
}
