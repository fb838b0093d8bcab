//! The engine's one error type.

use std::io;
use std::path::PathBuf;

use uuid::Uuid;

use crate::event::ExpectedVersion;

/// Everything the engine can report. Services map it to their protocol in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a store file failed (opening, reading, recovery).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file the operation was on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Another process (or another `Store` in this process) has the store open.
    #[error(
        "the store at {path} is locked by another process; stop it or choose another directory"
    )]
    Locked {
        /// The store directory.
        path: PathBuf,
    },

    /// The log is damaged before its tail; the store refuses to serve a silently shorter log.
    /// `logbook events repair` truncates at the damage and moves everything after it aside.
    #[error("the log is damaged in {path} at byte offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where in it the damage starts.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },

    /// The options are inconsistent (for example a segment size beyond what offsets can hold).
    #[error("invalid store options: {0}")]
    InvalidOptions(String),

    /// An event or batch breaks a configured limit; nothing was stored.
    #[error("{what} is {actual} bytes or items, over the limit of {limit} ({setting})")]
    LimitExceeded {
        /// What broke the limit ("an event", "the batch", "stream name", ...).
        what: &'static str,
        /// Its size or count.
        actual: u64,
        /// The configured limit.
        limit: u64,
        /// Name of the setting that sets the limit.
        setting: &'static str,
    },

    /// An event or batch is malformed (empty batch, empty stream name, duplicate id in a batch);
    /// nothing was stored.
    #[error("invalid append: {0}")]
    InvalidAppend(String),

    /// The stream is not at the expected version; nothing was stored.
    #[error("stream {stream:?} is at version {current:?}, expected {expected}")]
    WrongExpectedVersion {
        /// The stream whose version was checked.
        stream: String,
        /// The version the append expected.
        expected: ExpectedVersion,
        /// The stream's current version (`None`: the stream has no events).
        current: Option<u64>,
    },

    /// An event with this id exists with different content (or a batch repeats only part of
    /// an earlier batch); nothing was stored.
    #[error("event id {id} already exists with different content")]
    IdConflict {
        /// The id that is already taken.
        id: Uuid,
    },

    /// The stream is tombstoned: it can never be written again (nor its metadata); nothing
    /// was stored.
    #[error("stream {stream:?} is deleted for good (tombstoned)")]
    StreamDeleted {
        /// The tombstoned stream.
        stream: String,
    },

    /// Writing the batch failed (for example the disk is full); nothing of it was acknowledged or
    /// made visible, and the partial write was cut off. Retrying later may succeed.
    #[error("writing to the log failed: {source}")]
    WriteFailed {
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// An earlier fsync failed, so the writer no longer trusts what the kernel holds for the
    /// log ("fsyncgate"). Reads still work; reopen the store to append again.
    #[error("the log stopped accepting writes after an fsync failure; reopen the store")]
    WriterStopped,

    /// The store has been closed.
    #[error("the store is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether this error means the store cannot write right now (disk full, I/O error, writer
    /// stopped), as opposed to something wrong with the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::WriteFailed { .. } | Error::WriterStopped | Error::Closed | Error::Io { .. }
        )
    }
}

/// Shorthand for engine results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
