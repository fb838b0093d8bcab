//! The one place where contract errors and access failures become gRPC statuses, in the
//! shapes KurrentDB's clients parse (a message text and `exception` trailers).
//!
//! Nothing here answers a bare `INTERNAL`: every status carries a message that says what
//! happened (for store failures, without the internal cause, which goes to the log).

use events::{Error, ExpectedVersion};
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::convert::expected_number;

/// The status of a contract error.
pub fn from_error(error: Error) -> Status {
    match error {
        Error::InvalidAppend(reason) | Error::InvalidRead(reason) => {
            Status::invalid_argument(reason)
        }
        error @ Error::LimitExceeded { .. } => with_exception(
            Status::invalid_argument(error.to_string()),
            "maximum-append-size-exceeded",
        ),
        Error::WrongExpectedVersion {
            stream,
            expected,
            current,
        } => wrong_expected_version(&stream, expected, current),
        error @ Error::IdConflict { .. } => Status::already_exists(error.to_string()),
        Error::StreamDeleted { stream } => stream_deleted(&stream),
        Error::StreamNotFound { stream } => {
            let mut status = Status::not_found(format!("Event stream '{stream}' is not found."));
            status
                .metadata_mut()
                .insert("exception", MetadataValue::from_static("stream-not-found"));
            if let Ok(value) = MetadataValue::try_from(stream.as_str()) {
                status.metadata_mut().insert("stream-name", value);
            }
            status
        }
        Error::InvalidMetadata(reason) => {
            Status::invalid_argument(format!("invalid stream metadata: {reason}"))
        }
        error @ Error::Unsupported { .. } => Status::unimplemented(error.to_string()),
        Error::CannotWrite { reason } => {
            tracing::warn!(reason, "gRPC: the store cannot write");
            Status::unavailable("the store cannot write right now; retry with the same event ids")
        }
        Error::Unavailable { reason } => {
            tracing::warn!(reason, "gRPC: the store is unavailable");
            Status::unavailable("the store is unavailable right now; retry later")
        }
        Error::Corrupt { reason } => {
            tracing::error!(reason, "gRPC: stored data is damaged");
            Status::data_loss("stored data is damaged; the server log says where")
        }
        error => {
            tracing::error!(error = %error, "gRPC: event store failure");
            Status::unavailable("the event store failed; the server log says why")
        }
    }
}

/// `FAILED_PRECONDITION` with KurrentDB's text and trailers (what clients parse for Delete,
/// Tombstone and Read; Append and BatchAppend carry the mismatch in their answers instead).
pub fn wrong_expected_version(
    stream: &str,
    expected: ExpectedVersion,
    current: Option<u64>,
) -> Status {
    let expected = expected_number(expected);
    let actual = current.map_or(-1, |version| version as i64);
    let mut status = Status::failed_precondition(format!(
        "Append failed due to WrongExpectedVersion. Stream: {stream}, Expected version: {expected}, Actual version: {actual}"
    ));
    let metadata = status.metadata_mut();
    metadata.insert(
        "exception",
        MetadataValue::from_static("wrong-expected-version"),
    );
    if let Ok(value) = MetadataValue::try_from(stream) {
        metadata.insert("stream-name", value);
    }
    metadata.insert("expected-version", MetadataValue::from(expected));
    metadata.insert("actual-version", MetadataValue::from(actual));
    status
}

/// A tombstoned stream (`FAILED_PRECONDITION`, `exception: stream-deleted`).
pub fn stream_deleted(stream: &str) -> Status {
    let mut status = Status::failed_precondition(format!("Event stream '{stream}' is deleted."));
    status
        .metadata_mut()
        .insert("exception", MetadataValue::from_static("stream-deleted"));
    if let Ok(value) = MetadataValue::try_from(stream) {
        status.metadata_mut().insert("stream-name", value);
    }
    status
}

/// No or an unknown token.
pub fn unauthenticated() -> Status {
    Status::unauthenticated(
        "a valid token is required: `authorization: Bearer <token>`, or Basic credentials whose password is the token",
    )
}

/// A token without the scope or prefix the call needs.
pub fn denied(denied: web::auth::Denied) -> Status {
    with_exception(
        Status::permission_denied(denied.to_string()),
        "access-denied",
    )
}

/// The subscription cap is reached.
pub fn too_many_subscriptions(max: usize) -> Status {
    Status::resource_exhausted(format!(
        "at most {max} subscriptions at once (LOGBOOK_MAX_SUBSCRIPTIONS); retry later"
    ))
}

/// The server is shutting down: live subscriptions end with this.
pub fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down; resubscribe from your last position")
}

fn with_exception(mut status: Status, exception: &'static str) -> Status {
    status
        .metadata_mut()
        .insert("exception", MetadataValue::from_static(exception));
    status
}
