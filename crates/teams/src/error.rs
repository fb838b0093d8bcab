//! The one error type of the crate, and the one place it becomes an HTTP answer.
//!
//! Handlers return `Result<_, Error>`; [`Error::to_problem`] is the single `match` from error
//! to status and RFC 9457 body. Database unique-constraint violations are told apart *by the
//! name of the index* (PostgreSQL reports it; SQLite reports the indexed columns, which
//! `UNIQUE_INDEXES` maps back to the name), so a conflict is a 409, never a blanket 500.
//! 5xx bodies are generic; the cause goes to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use web::Problem;

/// Everything that can go wrong in the teams service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed or a value in it is invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// The admin bearer token is missing or wrong (401).
    #[error("missing or wrong admin bearer token")]
    Unauthorized,
    /// The named resource does not exist or is deleted (404).
    #[error("{0}")]
    NotFound(String),
    /// The token was valid once but is used, revoked, superseded or expired (410).
    #[error("{0}")]
    Gone(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The invitation is not in a state that allows the action (409, with its `status`).
    #[error("{detail}")]
    InvitationState {
        /// Where the invitation stands.
        status: crate::domain::InvitationStatus,
        /// What could not be done, in a sentence.
        detail: String,
    },
    /// The request is well-formed but cannot be processed as given (422), e.g. an
    /// `Idempotency-Key` reused with another body.
    #[error("{0}")]
    Unprocessable(String),
    /// The action is throttled; try again after this many seconds (429).
    #[error("throttled for {retry_after_seconds} s")]
    TooManyRequests {
        /// Seconds until the action is allowed again.
        retry_after_seconds: u64,
    },
    /// The body is larger than the configured limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A request header field is larger than [`crate::HEADER_FIELD_MAX_BYTES`] (431).
    #[error("a request header field is too large")]
    HeaderFieldTooLarge {
        /// The (lowercase) name of the first oversized header field.
        name: String,
    },
    /// The body is not JSON (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The database failed (500, or 409 for a known unique index).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the embedded migrations failed (start-up only).
    #[error("migrations: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The OS random number generator failed (500).
    #[error("random number generator: {0}")]
    Random(#[from] getrandom::Error),
    /// Building or sending a message failed (worker only; never an HTTP answer).
    #[error("mail: {0}")]
    Mail(String),
    /// The audit relay's sink failed (relay only; never an HTTP answer).
    #[error("audit relay: {0}")]
    Relay(String),
}

/// A partial unique index of the schema, by meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UniqueIndex {
    /// One live team per case-insensitive name.
    TeamName,
    /// One live membership per (team, email).
    MemberEmail,
    /// One pending invitation per (team, email).
    PendingInvitation,
    /// Token hashes never repeat.
    TokenHash,
    /// One stored answer per (route, Idempotency-Key).
    IdempotencyKey,
}

/// Each unique index: meaning, its name (as PostgreSQL reports it) and its columns (as SQLite
/// reports them: `UNIQUE constraint failed: <columns>`). Must match migrations/.
pub(crate) const UNIQUE_INDEXES: &[(UniqueIndex, &str, &str)] = &[
    (
        UniqueIndex::TeamName,
        "teams_live_name_key",
        "teams.name_key",
    ),
    (
        UniqueIndex::MemberEmail,
        "members_live_email",
        "members.team_id, members.email",
    ),
    (
        UniqueIndex::PendingInvitation,
        "invitations_one_pending_per_email",
        "invitations.team_id, invitations.email",
    ),
    (
        UniqueIndex::TokenHash,
        "invitation_tokens_pkey",
        "invitation_tokens.token_hash",
    ),
    (
        UniqueIndex::IdempotencyKey,
        "idempotency_keys_pkey",
        "idempotency_keys.scope, idempotency_keys.idem_key",
    ),
];

/// Which unique index `error` violated, if it is a unique violation of a known index.
pub(crate) fn violated_unique_index(error: &sqlx::Error) -> Option<UniqueIndex> {
    let sqlx::Error::Database(db) = error else {
        return None;
    };
    if !db.is_unique_violation() {
        return None;
    }
    let by_name = db.constraint();
    let message = db.message();
    let sqlite_columns = message
        .strip_prefix("UNIQUE constraint failed: ")
        .map(str::trim);
    UNIQUE_INDEXES
        .iter()
        .find(|(_, name, columns)| by_name == Some(*name) || sqlite_columns == Some(*columns))
        .map(|(index, _, _)| *index)
}

impl Error {
    /// The RFC 9457 answer for this error. 5xx causes are logged here and kept out of the body.
    pub fn to_problem(&self) -> Problem {
        match self {
            Error::BadRequest(detail) => Problem::bad_request(detail.clone()),
            Error::Unauthorized => Problem::unauthorized(
                "this endpoint needs the header `Authorization: Bearer <ADMIN_TOKEN>`",
            ),
            Error::NotFound(detail) => Problem::not_found(detail.clone()),
            Error::Gone(detail) => Problem::new(StatusCode::GONE, "gone", detail.clone()),
            Error::Conflict(detail) => Problem::conflict(detail.clone()),
            Error::InvitationState { status, detail } => {
                Problem::conflict(detail.clone()).with("status", status.as_str())
            }
            Error::Unprocessable(detail) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable-content",
                detail.clone(),
            ),
            Error::TooManyRequests {
                retry_after_seconds,
            } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                format!("try again in {retry_after_seconds} s"),
            )
            .with("retry_after_seconds", *retry_after_seconds)
            .with_header(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds)),
            Error::PayloadTooLarge(detail) => Problem::payload_too_large(detail.clone()),
            Error::HeaderFieldTooLarge { name } => Problem::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request-header-fields-too-large",
                format!(
                    "the `{name}` header is larger than {} bytes",
                    crate::HEADER_FIELD_MAX_BYTES
                ),
            ),
            Error::UnsupportedMediaType(detail) => Problem::unsupported_media_type(detail.clone()),
            Error::Database(error) => match violated_unique_index(error) {
                Some(UniqueIndex::TeamName) => {
                    Problem::conflict("A live team already has this name (names ignore case)")
                }
                Some(UniqueIndex::MemberEmail) => {
                    Problem::conflict("this email is already a member of the team")
                }
                Some(UniqueIndex::PendingInvitation) => {
                    Problem::conflict("this email already has a pending invitation to the team")
                }
                Some(UniqueIndex::IdempotencyKey) => Problem::conflict(
                    "A request with this Idempotency-Key was being processed at the same time; retry it to get its answer",
                ),
                Some(UniqueIndex::TokenHash) | None => {
                    tracing::error!(error = %error, "database error");
                    Problem::internal()
                }
            },
            Error::Migration(_) | Error::Random(_) | Error::Mail(_) | Error::Relay(_) => {
                tracing::error!(error = %self, "internal error");
                Problem::internal()
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.to_problem().into_response()
    }
}
