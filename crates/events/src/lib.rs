//! # events: the event store's contract
//!
//! What every face of the event store (HTTP JSON + SSE today; gRPC and the console later)
//! calls, and what every backend (the embedded `eventlog` engine, PostgreSQL) implements. No
//! I/O here, no HTTP type, no database type: a face maps [`Error`] to its protocol in one
//! place, a backend maps its own types to these.
//!
//! ```
//! use events::{ExpectedVersion, NewEvent, ReadAll};
//!
//! let event = NewEvent::json("orders-42", "OrderPlaced", br#"{"item":"book"}"#.to_vec());
//! assert_eq!(event.stream, "orders-42");
//! let request = ReadAll::forward(0, 100);
//! assert_eq!(request.limit, 100);
//! assert_eq!(ExpectedVersion::NoStream.to_string(), "no stream");
//! ```
//!
//! # Layout
//! - [`event`]: [`NewEvent`], [`RecordedEvent`], [`ContentType`], [`Placed`], [`Appended`],
//!   [`ExpectedVersion`].
//! - [`read`]: read requests and pages ([`ReadAll`], [`ReadStream`], [`Direction`],
//!   [`Start`]), [`Filter`], stream listings and state, [`Stats`].
//! - [`limits`]: [`Limits`] and [`check_append`], the shape and size checks an append passes
//!   before a backend looks at it (the engine has the same checks with the same messages).
//! - [`store`]: the [`EventStore`] trait and [`Subscription`] (catch up, then follow live),
//!   which is written once over the trait's reads and its head wait.
//! - [`error`]: [`Error`], the one error of the contract.
//! - `conformance` (feature `conformance`): the store-level tests every backend runs, through
//!   `conformance_tests!`.
//!
//! # Guarantees every backend gives
//! - An append is atomic (all of a batch or nothing), durable when acknowledged, and visible
//!   to readers only once durable.
//! - Positions are strictly increasing, with holes where dead events were: an append takes the
//!   positions right after the last one, and they become visible in position order (no
//!   reader sees position N+1 while N is not yet visible); reads skip dead events (deleted,
//!   truncated, past `max_count` or `max_age_seconds`), so `$all` has holes once streams are
//!   deleted or retention applies; a scavenge (embedded engine) then removes their bytes.
//! - Deletes, tombstones and metadata are records of the log (events of the metastream
//!   `$$<stream>`, KurrentDB's representation): a backend rebuilt from its log knows them; a
//!   tombstone is final ([`Error::StreamDeleted`], also after a restart).
//! - Versions are gap-free from 0 within a stream (a soft delete does not reset them: a
//!   re-append continues after the last version); an expected version is checked atomically
//!   with the append.
//! - Idempotency by event id is permanent: a repeat with identical content answers the
//!   original placement, with other content [`Error::IdConflict`].

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod error;
pub mod event;
pub mod limits;
pub mod read;
pub mod scavenge;
pub mod store;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::{Error, Result};
pub use event::{Appended, ContentType, ExpectedVersion, NewEvent, Placed, RecordedEvent};
pub use limits::{Limits, check_append};
pub use read::{
    AllPage, DeleteMode, Direction, FILTER_SCAN_MAX_EVENTS, Filter, FilterTarget, ListStreams,
    METADATA_EVENT_TYPE, METASTREAM_PREFIX, ReadAll, ReadStream, Start, Stats, StreamList,
    StreamMetadata, StreamPage, StreamState, TOMBSTONE_EVENT_TYPE,
};
pub use scavenge::{ScavengeState, ScavengeStatus};
pub use store::{EventStore, Subscription};
