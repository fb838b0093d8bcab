//! `Idempotency-Key` on `POST /teams` and `POST /teams/{team_id}/invitations`.
//!
//! The first answer to a (route, key) is stored with a hash of the request, in the transaction
//! of the change itself, so the answer exists exactly when the change does. A retry with the
//! same key and the same body within [`IDEMPOTENCY_TTL`] gets that answer again (same status
//! and body, plus `Idempotent-Replayed: true`) and changes nothing; the same key with another
//! body is 422. Two requests with one key at the same moment: one wins, the other gets a 409
//! asking to retry (then it gets the replay). The worker forgets keys after a day.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;
use crate::store::{int, text};
use crate::time::ms;
use crate::token::sha256_hex;

/// How long an answer is kept (the mail worker's sweep forgets older ones).
pub(crate) const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Longest key accepted.
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;

/// The request's `Idempotency-Key`, if any: 1 to 255 visible ASCII characters, else 400.
pub(crate) struct IdempotencyKey(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let bytes = value.as_bytes();
        if bytes.is_empty()
            || bytes.len() > IDEMPOTENCY_KEY_MAX_CHARS
            || !bytes.iter().all(|byte| (0x21..=0x7e).contains(byte))
        {
            return Err(Error::BadRequest(format!(
                "`Idempotency-Key` must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} visible ASCII characters"
            )));
        }
        Ok(IdempotencyKey(Some(
            String::from_utf8_lossy(bytes).into_owned(),
        )))
    }
}

/// One key of one route, with the hash of the request that came with it.
pub(crate) struct Idempotency {
    scope: String,
    key: String,
    request_hash: String,
}

impl Idempotency {
    /// For `key` (if given) on `scope` (method and path), with the request `body`.
    pub(crate) fn new(
        key: IdempotencyKey,
        scope: String,
        body: &impl Serialize,
    ) -> Option<Idempotency> {
        let key = key.0?;
        let body = serde_json::to_string(body).unwrap_or_default();
        Some(Idempotency {
            request_hash: sha256_hex(format!("{scope}\n{body}").as_bytes()),
            scope,
            key,
        })
    }

    /// The stored answer for this key, if the same request came within a day; 422 if another
    /// request came with the key. A stored answer older than a day is forgotten here.
    pub(crate) async fn replay(
        &self,
        connection: &mut sqlx::AnyConnection,
        now: i64,
    ) -> Result<Option<Response>, Error> {
        let row = sqlx::query(
            "SELECT request_hash, status, body, created_at FROM idempotency_keys \
             WHERE scope = $1 AND idem_key = $2",
        )
        .bind(&self.scope)
        .bind(&self.key)
        .fetch_optional(&mut *connection)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        if int(&row, "created_at")? <= now.saturating_sub(ms(IDEMPOTENCY_TTL)) {
            sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2")
                .bind(&self.scope)
                .bind(&self.key)
                .execute(&mut *connection)
                .await?;
            return Ok(None);
        }
        if text(&row, "request_hash")? != self.request_hash {
            return Err(Error::Unprocessable(
                "this Idempotency-Key was used with a different request body; use a new key for a new request".into(),
            ));
        }
        let status = u16::try_from(int(&row, "status")?).unwrap_or(200);
        Ok(Some(json_response(status, text(&row, "body")?, true)))
    }

    /// Stores the answer, in the transaction of the change.
    pub(crate) async fn remember(
        &self,
        connection: &mut sqlx::AnyConnection,
        status: StatusCode,
        body: &str,
        now: i64,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, idem_key, request_hash, status, body, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&self.scope)
        .bind(&self.key)
        .bind(&self.request_hash)
        .bind(i64::from(status.as_u16()))
        .bind(body)
        .bind(now)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }
}

/// A JSON answer from its serialized body (`replayed` adds `Idempotent-Replayed: true`).
pub(crate) fn json_response(status: u16, body: String, replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
