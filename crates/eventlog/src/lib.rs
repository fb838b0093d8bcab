//! # eventlog: Logbook's storage engine
//!
//! An append-only, checksummed, segmented event log with group commit, and an in-memory index
//! that is only a cache of it. No HTTP, no database: `cargo tree -p eventlog` shows it.
//!
//! ```
//! use eventlog::{ExpectedVersion, NewEvent, Options, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path(), Options::default())?;
//! let event = NewEvent {
//!     id: uuid::Uuid::now_v7(),
//!     stream: "orders-42".into(),
//!     event_type: "OrderPlaced".into(),
//!     data: r#"{"item":"🔥"}"#.as_bytes().to_vec(),
//!     metadata: None,
//!     binary: false,
//! };
//! let appended = store.append(vec![event.clone()], ExpectedVersion::NoStream)?;
//! assert_eq!(appended.events[0].position, 0);
//! // Acknowledged means fsynced; reading it back gives the same bytes.
//! assert_eq!(store.get(event.id)?.unwrap().data, event.data);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! - [`format`](mod@format): the record and segment-header framing, a pure codec with no I/O
//!   (documented for reader authors in `docs/FORMAT.md`).
//! - `reader`: reading records from segment files: the store's verified reads and the forward
//!   scanner.
//! - `segment`: segment file names, creation (with directory fsync), side files.
//! - `index`: id -> position -> (segment, offset), stream -> positions; ~40-50 bytes per event.
//! - `recovery`: rebuilding the index by scanning, torn tail vs mid-log damage, cutting a
//!   torn tail off.
//! - [`lifecycle`]: metadata, soft delete, tombstones and retention as events of metastreams
//!   (`$$<stream>`), the sorted catalog of stream names, and [`Liveness`].
//! - `checkpoint`: an atomically replaced snapshot of the index so that open replays only the
//!   tail; always optional.
//! - `shared`: what the writer and the store share (the index and catalog locks, [`Commit`],
//!   commit listeners, counters).
//! - `writer`: the one writer thread; group commit; segment rolling.
//! - [`Limits`] (`limits`): append limits and the batch checks made before queueing.
//! - `store`: [`Store`], the public face.
//! - [`tools`]: `verify` and `repair`, behind `logbook events verify|repair`.
//! - [`scavenge`]: rewriting sealed segments without dead events (erasure).
//! - [`backup`]: a consistent copy of a store beside the process serving it
//!   (`logbook events backup`).
//!
//! # Guarantees
//! - Under [`Durability::Fsync`] (the default) an append returns only after its bytes are
//!   `fdatasync`ed; events are visible to readers only then.
//! - A batch is atomic: all of it becomes durable and visible, or none (also across a crash:
//!   a half-written batch is discarded whole on recovery).
//! - Positions are strictly increasing, with holes where dead events were: the writer hands
//!   them out consecutively from 0, and reads that skip dead events ([`Store::retain_live`],
//!   [`lifecycle`]) see holes; a [`scavenge`] removes dead events from sealed segments for
//!   good and never moves a live one. Versions are gap-free within a stream; a scavenge
//!   removes only a stream's oldest events (its first version may then be above 0).
//! - Lifecycle records (metadata, soft delete, tombstone) are events of metastreams: the index
//!   rebuilt from the log or a checkpoint knows them; a tombstone is final.
//! - Offsets are `u64` bytes; data is stored and returned byte-exactly.
//! - A torn tail is cut off at open and kept in a side file; damage before the tail makes open
//!   fail with [`Error::Corrupt`] naming file and offset. Reads verify checksums and never
//!   serve a damaged record.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod background;
pub mod backup;
mod cache;
mod checkpoint;
mod error;
mod event;
pub mod format;
mod index;
pub mod lifecycle;
mod limits;
mod options;
mod prealloc;
mod reader;
mod recovery;
pub mod scavenge;
mod segment;
mod shared;
#[cfg(any(test, feature = "test-support"))]
pub mod sim;
mod store;
pub mod tools;
pub mod vfs;
mod writer;

pub use cache::SharedEvent;
pub use error::{Error, Result};
pub use event::{Appended, ExpectedVersion, NewEvent, Placed, RecordedEvent};
pub use lifecycle::{Liveness, Retention};
pub use limits::Limits;
pub use options::{Durability, MIN_SEGMENT_SIZE_BYTES, OptionProblem, Options};
pub use recovery::TornTail;
pub use shared::Commit;
pub use store::{LOCK_FILE, LivePage, OpenReport, Store, StoreStats};

/// File name of the index checkpoint inside a store directory.
pub const CHECKPOINT_FILE: &str = checkpoint::CHECKPOINT_FILE;
