//! JSON request bodies: the checks every service makes before it reads a body's fields.
//!
//! Every body of these APIs that is an object must really be one: serde would also read a
//! struct from a JSON array of its fields in order (`[null, null]` as an empty update), so an
//! array where an object belongs is a 400 before any field is read.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::Problem;

/// Whether a raw JSON value is an object (`{...}`).
pub fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

/// Why a JSON body was refused: the status and the problem detail, for a service to map onto
/// its own error type (or answer directly: it is [`IntoResponse`] as a problem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRejection {
    /// 400: not JSON, not an object, or not the expected fields.
    BadRequest(String),
    /// 413: larger than the route's body limit.
    TooLarge(String),
    /// 415: not `Content-Type: application/json`.
    UnsupportedMediaType(String),
}

impl BodyRejection {
    /// The problem this rejection answers.
    pub fn to_problem(&self) -> Problem {
        match self {
            BodyRejection::BadRequest(detail) => Problem::bad_request(detail.clone()),
            BodyRejection::TooLarge(detail) => Problem::payload_too_large(detail.clone()),
            BodyRejection::UnsupportedMediaType(detail) => {
                Problem::unsupported_media_type(detail.clone())
            }
        }
    }
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response {
        self.to_problem().into_response()
    }
}

/// Reads a request body that must be one JSON object and deserializes it into `T`.
pub async fn object_body<T: DeserializeOwned, S: Send + Sync>(
    request: Request,
    state: &S,
) -> Result<T, BodyRejection> {
    let Json(raw) = Json::<Box<RawValue>>::from_request(request, state)
        .await
        .map_err(rejection)?;
    if !is_object(&raw) {
        return Err(BodyRejection::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    }
    serde_json::from_str(raw.get()).map_err(|error| {
        BodyRejection::BadRequest(format!(
            "the JSON body does not have the expected fields: {error}"
        ))
    })
}

fn rejection(rejection: JsonRejection) -> BodyRejection {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            BodyRejection::TooLarge("the request body is larger than the configured limit".into())
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => BodyRejection::UnsupportedMediaType(
            "the request body must be JSON with `Content-Type: application/json`".into(),
        ),
        _ => BodyRejection::BadRequest(rejection.body_text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn only_objects_are_objects() {
        assert!(is_object(&raw(r#"{"a":1}"#)));
        assert!(is_object(&raw("{}")));
        assert!(!is_object(&raw("[null, null]")));
        assert!(!is_object(&raw("null")));
        assert!(!is_object(&raw(r#""{""#)));
        assert!(!is_object(&raw("12")));
    }
}
