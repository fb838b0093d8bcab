//! The one error of the contract. Every face maps it to its protocol in one place (HTTP:
//! `eventstore::ApiError::to_problem`).

use uuid::Uuid;

use crate::event::ExpectedVersion;

/// Everything an event store operation can report instead of success.
///
/// The first group is about the request (nothing was stored); the second about the store
/// (retrying later may succeed); the last about the backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An event or batch is malformed (empty batch, empty stream name, duplicate id in a
    /// batch); nothing was stored.
    #[error("invalid append: {0}")]
    InvalidAppend(String),

    /// An event or batch breaks a configured limit; nothing was stored.
    #[error("{what} is {actual} bytes or items, over the limit of {limit} ({setting})")]
    LimitExceeded {
        /// What is over the limit (`"an event"`, `"the batch"`, `"stream name"`...).
        what: &'static str,
        /// Its size or count.
        actual: u64,
        /// The limit.
        limit: u64,
        /// Name of the setting that sets the limit.
        setting: &'static str,
    },

    /// The stream is not at the expected version; nothing was stored.
    #[error("stream {stream:?} is at version {current:?}, expected {expected}")]
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's current version (`None`: the stream has no events).
        current: Option<u64>,
    },

    /// An event with this id exists with different content (or a batch repeats only part of
    /// an earlier batch); nothing was stored.
    #[error("event id {id} already exists with different content")]
    IdConflict {
        /// The id.
        id: Uuid,
    },

    /// The stream has no events, or is soft-deleted (a delete of it found nothing).
    #[error("stream {stream:?} does not exist")]
    StreamNotFound {
        /// The stream.
        stream: String,
    },

    /// The stream is tombstoned: it can never be read or written again.
    #[error("stream {stream:?} is deleted for good (tombstoned)")]
    StreamDeleted {
        /// The stream.
        stream: String,
    },

    /// Stream metadata is malformed (not an object, a negative or zero limit, a custom key
    /// starting with `$`); nothing was stored.
    #[error("invalid stream metadata: {0}")]
    InvalidMetadata(String),

    /// A read request is malformed (for example an invalid filter).
    #[error("invalid read: {0}")]
    InvalidRead(String),

    /// The store cannot write right now (disk full, writer stopped after an fsync failure,
    /// closed, database down or read-only). Nothing of the failed append was acknowledged; an
    /// append whose outcome was not seen may still have been stored, so retry it with the
    /// same ids.
    #[error("the store cannot write: {reason}")]
    CannotWrite {
        /// The cause, for the log (never sent to clients).
        reason: String,
    },

    /// The store cannot be reached right now (a read failed because the database is down).
    #[error("the store is unavailable: {reason}")]
    Unavailable {
        /// The cause, for the log.
        reason: String,
    },

    /// Stored data is damaged; the backend refuses to serve it.
    #[error("stored data is damaged: {reason}")]
    Corrupt {
        /// Where and what.
        reason: String,
    },

    /// The backend does not implement this operation (yet).
    #[error("{operation} is not supported by the {backend} backend")]
    Unsupported {
        /// The operation (`"list streams"`, `"delete"`...).
        operation: &'static str,
        /// The backend (`"embedded"`, `"postgres"`).
        backend: &'static str,
    },

    /// A scavenge is running already (one at a time); follow it by its id.
    #[error("scavenge {id} is running; one runs at a time")]
    ScavengeRunning {
        /// The running scavenge.
        id: Uuid,
    },

    /// Any other backend failure.
    #[error("event store failure: {reason}")]
    Internal {
        /// The cause, for the log.
        reason: String,
    },
}

impl Error {
    /// Whether this error means the store cannot serve right now (a retry later may succeed),
    /// as opposed to something wrong with the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::CannotWrite { .. } | Error::Unavailable { .. })
    }
}

/// Shorthand for contract results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
