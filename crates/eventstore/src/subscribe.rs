//! `GET /subscribe`: catch up from a position, then follow live, as Server-Sent Events.
//!
//! # Why a slow consumer cannot hold memory
//! A subscription is a cursor into the log, not a queue ([`events::Subscription`], written
//! once over the seam for every backend): it reads at most [`SUBSCRIBE_BATCH_EVENTS`] events
//! at a time, and only when the previous ones have been handed to the connection (the SSE
//! body is pulled by hyper as the socket drains). A consumer that falls behind simply reads
//! older parts of the log later; what it costs the server is one batch and the socket
//! buffers, whatever the rate of appends. New commits only bump the backend's head, which
//! never queues.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use events::{EventStore, RecordedEvent, Subscription};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::watch;
use utoipa::IntoParams;
use web::Problem;
use web::auth::Access;

use crate::backend::Backend;
use crate::error::ApiError;
use crate::metrics::{Metrics, Route};
use crate::model::EventBody;
use crate::service::EventStoreService;

/// Most events a subscription reads from the log at once (its whole buffer).
pub const SUBSCRIBE_BATCH_EVENTS: usize = 256;
/// Interval of the SSE keep-alive comment, so proxies keep idle subscriptions open.
pub const SUBSCRIBE_KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SubscribeQuery {
    /// Exclusive: deliver events after this position (omitted: from the start). A
    /// `Last-Event-ID` header, as sent by a reconnecting `EventSource`, takes precedence.
    after: Option<u64>,
}

/// Catch up, then follow live, as Server-Sent Events.
///
/// Each message is one event: `id:` is its position, `data:` its JSON (as `GET /events/{id}`).
/// When the server shuts down the stream ends with an `event: shutdown` message; reconnect
/// with `Last-Event-ID` to resume.
#[utoipa::path(
    get, path = "/subscribe", tag = "events",
    params(SubscribeQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this position")),
    responses(
        (status = 200, description = "An endless `text/event-stream`, one event per message", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad `after` or `Last-Event-ID`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown bearer token (EVENTS_TOKEN, EVENTS_TOKENS_FILE)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log is still opening, or LOGBOOK_MAX_SUBSCRIPTIONS subscriptions are open", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("events_token" = []))
)]
pub(crate) async fn subscribe(
    State(service): State<EventStoreService>,
    access: Access,
    headers: HeaderMap,
    params: Result<Query<SubscribeQuery>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let result = (|| {
        let after = match headers.get("last-event-id") {
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        ApiError::BadRequest("Last-Event-ID must be an event position".into())
                    })?,
            ),
            None => {
                params
                    .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?
                    .0
                    .after
            }
        };
        let from = after.map_or(0, |after| after.saturating_add(1));
        let slot = service.inner.guard.subscription_slot()?;
        let subscription = service
            .ready_backend()?
            .subscribe(from, None)
            .with_batch(SUBSCRIBE_BATCH_EVENTS, crate::PAGE_MAX_BYTES);
        let cursor = Cursor {
            access,
            _slot: slot,
            subscription,
            next: from,
            shutdown: service.inner.shutdown.subscribe(),
            finished: false,
            _guard: SubscriberGuard::new(service.inner.metrics.clone()),
        };
        Ok(Sse::new(events(cursor))
            .keep_alive(KeepAlive::new().interval(SUBSCRIBE_KEEP_ALIVE))
            .into_response())
    })();
    service.finish(Route::Subscribe, started, result)
}

struct Cursor {
    /// Events of streams it may not read are skipped (a prefix-scoped token sees only its own).
    access: Access,
    /// One of the LOGBOOK_MAX_SUBSCRIPTIONS slots, freed when the subscription ends.
    _slot: tokio::sync::OwnedSemaphorePermit,
    subscription: Subscription<Backend>,
    /// The next position to deliver (for the log line of a failure).
    next: u64,
    shutdown: watch::Receiver<bool>,
    finished: bool,
    _guard: SubscriberGuard,
}

/// Counts open subscriptions in the metrics while alive.
struct SubscriberGuard(std::sync::Arc<Metrics>);

impl SubscriberGuard {
    fn new(metrics: std::sync::Arc<Metrics>) -> SubscriberGuard {
        metrics.subscribers_add(1);
        SubscriberGuard(metrics)
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscribers_add(-1);
    }
}

fn events(cursor: Cursor) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(cursor, |mut cursor| async move {
        let event = cursor.next_message().await?;
        Some((Ok(event), cursor))
    })
}

impl Cursor {
    /// The next SSE message, or `None` when the stream is over.
    async fn next_message(&mut self) -> Option<Event> {
        if self.finished {
            return None;
        }
        // Events come first while they are ready; once the subscription has to wait, a
        // shutdown ends it (`Subscription::next` is cancel-safe: nothing is lost by racing it).
        let next = loop {
            let next = tokio::select! {
                biased;
                event = self.subscription.next() => Some(event),
                _ = self.shutdown.wait_for(|stop| *stop) => None,
            };
            match next {
                Some(Ok(event)) if !self.access.can_read(&event.stream) => {
                    self.next = event.position + 1;
                }
                next => break next,
            }
        };
        Some(match next {
            Some(Ok(event)) => self.message(event),
            Some(Err(error)) => self.fail(&error.to_string()),
            None => {
                self.finished = true;
                Event::default()
                    .event("shutdown")
                    .data("the server is shutting down; reconnect with Last-Event-ID to resume")
            }
        })
    }

    fn message(&mut self, event: RecordedEvent) -> Event {
        let position = event.position;
        self.next = position + 1;
        match EventBody::try_from(event).and_then(|body| {
            serde_json::to_string(&body).map_err(|e| ApiError::BadRequest(e.to_string()))
        }) {
            Ok(json) => Event::default().id(position.to_string()).data(json),
            Err(error) => self.fail(&error.to_string()),
        }
    }

    /// Ends the stream with a final `event: error` message; the cause is logged, not sent.
    fn fail(&mut self, cause: &str) -> Event {
        tracing::error!(error = cause, position = self.next, "subscription failed");
        self.finished = true;
        Event::default()
            .event("error")
            .data("the server could not read the log; reconnect with Last-Event-ID to resume")
    }
}

/// Describes each server-sent event of `GET /subscribe` in the OpenAPI document, the way
/// OpenAPI 3.2 does for sequential media types: `itemSchema` is one parsed message (`id`,
/// `event`, `data`), and `schema` the whole stream read as an array of them. Schemathesis
/// validates every message it reads against `itemSchema`, and the `data` of an event message
/// (`contentMediaType: application/json`) against [`EventBody`].
///
/// utoipa has no `itemSchema` (it writes OpenAPI 3.1), so this modifier adds it as a raw key
/// of the media type object, inline (a component would go through utoipa's schema type,
/// which drops `contentSchema`).
pub(crate) struct SseItemSchema;

impl utoipa::Modify for SseItemSchema {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::Schema;

        let message = serde_json::json!({
            "description": "One message of the stream: an event (`id` its position, `data` its JSON \
                as `GET /events/{id}` answers), or the last message, `shutdown` or `error`, whose \
                `data` is a sentence for the person reading it.",
            "oneOf": [
                {
                    "type": "object",
                    "required": ["event", "id", "data"],
                    "properties": {
                        "event": { "type": "string", "enum": ["message"] },
                        "id": { "type": "string", "pattern": "^[0-9]+$" },
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": { "$ref": "#/components/schemas/EventBody" }
                        }
                    }
                },
                {
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": { "type": "string", "enum": ["shutdown", "error"] },
                        "data": { "type": "string" }
                    }
                }
            ]
        });
        // The stream as an array of messages, for tools that read only `schema`. utoipa's
        // schema type has no `contentSchema`, so this copy omits it; `itemSchema` below is
        // the raw JSON and keeps it.
        let items: Schema = serde_json::from_value(message.clone())
            .expect("the SSE message schema is a valid schema");
        let stream = Schema::Array(utoipa::openapi::schema::Array::new(RefOr::T(items)));

        let content = openapi
            .paths
            .paths
            .get_mut("/subscribe")
            .and_then(|item| item.get.as_mut())
            .and_then(
                |operation| match operation.responses.responses.get_mut("200") {
                    Some(RefOr::T(response)) => response.content.get_mut("text/event-stream"),
                    _ => None,
                },
            )
            .expect("GET /subscribe documents a text/event-stream 200");
        content.schema = Some(RefOr::T(stream));
        content
            .extensions
            .get_or_insert_with(Default::default)
            .insert("itemSchema".to_owned(), message);
    }
}
