//! The one error type of the HTTP layer and its one mapping to RFC 9457 problems.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use web::Problem;

/// Everything a route can answer with instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The store (whichever backend) refused or failed the operation.
    #[error(transparent)]
    Store(#[from] events::Error),
    /// The request is malformed (bad JSON, bad query parameter, bad id).
    #[error("{0}")]
    BadRequest(String),
    /// The named event or stream does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body is larger than the limit derived from the engine's limits.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The event API needs a bearer token and the request has none or a wrong one.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The token is valid but lacks the scope (or the stream prefix) the operation needs.
    #[error(transparent)]
    Denied(#[from] web::auth::Denied),
    /// Every subscription slot (`LOGBOOK_MAX_SUBSCRIPTIONS`) is taken.
    #[error("{0} subscriptions are open, the most allowed")]
    TooManySubscriptions(usize),
    /// The log is still being recovered.
    #[error("the event log is still opening")]
    NotReady,
}

impl ApiError {
    /// The problem body. 5xx problems carry a generic detail; the cause is logged here.
    pub fn to_problem(&self) -> Problem {
        use events::Error as E;
        match self {
            ApiError::BadRequest(detail) => Problem::bad_request(detail.clone()),
            ApiError::NotFound(detail) => Problem::not_found(detail.clone()),
            ApiError::UnsupportedMediaType(detail) => {
                Problem::unsupported_media_type(detail.clone())
            }
            ApiError::PayloadTooLarge(detail) => Problem::payload_too_large(detail.clone()),
            ApiError::Unauthorized => Problem::unauthorized(
                "this route needs `Authorization: Bearer <EVENTS_TOKEN>`",
            ),
            ApiError::Denied(denied) => denied.to_problem(),
            ApiError::TooManySubscriptions(max) => Problem::unavailable(format!(
                "{max} subscriptions are open, the most this server allows (LOGBOOK_MAX_SUBSCRIPTIONS); retry later"
            ))
            .with("max_subscriptions", *max)
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("5")),
            ApiError::NotReady => Problem::unavailable(
                "the event log is still being recovered; retry shortly",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            ApiError::Store(error) => match error {
                E::LimitExceeded {
                    limit, setting, ..
                } => Problem::payload_too_large(error.to_string())
                    .with("limit", *limit)
                    .with("setting", *setting),
                E::InvalidAppend(reason) => Problem::bad_request(reason.clone()),
                E::WrongExpectedVersion {
                    stream,
                    expected,
                    current,
                } => Problem::conflict(format!(
                    "stream {stream:?} is at {}, expected {expected}",
                    match current {
                        Some(version) => format!("version {version}"),
                        None => "no stream (no events)".to_owned(),
                    }
                ))
                .with("current_version", current.map(serde_json::Value::from)),
                E::IdConflict { id } => Problem::conflict(format!(
                    "event id {id} already exists with different content (or the batch repeats only part of an earlier one)"
                ))
                .with("id", id.to_string()),
                E::CannotWrite { .. } => {
                    tracing::error!(error = %error, "the event log cannot write");
                    Problem::unavailable(
                        "the event store cannot write right now; reads still work, retry later",
                    )
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("5"))
                }
                E::Unavailable { .. } => {
                    tracing::error!(error = %error, "the event store is unavailable");
                    Problem::unavailable("the event store is unavailable right now; retry later")
                        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
                }
                E::InvalidRead(reason) => Problem::bad_request(reason.clone()),
                E::ScavengeRunning { id } => {
                    Problem::conflict(error.to_string()).with("scavenge_id", id.to_string())
                }
                E::InvalidMetadata(reason) => Problem::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "invalid-metadata",
                    reason.clone(),
                ),
                E::StreamNotFound { stream } => {
                    Problem::not_found(format!("stream {stream:?} does not exist"))
                }
                E::StreamDeleted { stream } => Problem::new(
                    axum::http::StatusCode::GONE,
                    "stream-deleted",
                    format!("stream {stream:?} is deleted for good (tombstoned); it can never be read or written again"),
                )
                .with("stream", stream.clone()),
                E::Unsupported { operation, backend } => Problem::new(
                    axum::http::StatusCode::NOT_IMPLEMENTED,
                    "unsupported",
                    format!("{operation} is not supported by the {backend} backend"),
                ),
                error => {
                    tracing::error!(error = %error, "event store failure");
                    Problem::internal()
                }
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.to_problem().into_response()
    }
}
