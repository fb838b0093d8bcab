//! Store options: durability, segment size, checkpoints, group commit. Every quantity has its
//! unit in its name. The append limits are [`Limits`] (in `limits`).

use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{MAX_RECORD_LEN, RECORD_HEADER_LEN};
use crate::limits::Limits;
use crate::vfs::{RealFs, Storage};

/// When appended bytes reach stable storage, and so what an acknowledgement promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `append` returns only after the batch has been written and `fdatasync`ed. An acknowledged
    /// event survives a crash or power loss. Concurrent appenders share one fsync (group commit).
    /// Events become visible to readers only once durable.
    #[default]
    Fsync,
    /// `append` returns after the write; the log is `fdatasync`ed at most `every` later by the
    /// writer. A crash of the process loses nothing, but a power loss may lose acknowledged events
    /// from the last `every`, and so does a failed fsync (the writer then cuts the log back to
    /// what it knows is durable, and stops). Events are visible as soon as written. The timer
    /// reads [`crate::vfs::Vfs::now`].
    Interval { every: Duration },
    /// Never fsync (the OS writes back when it likes). A process crash loses nothing; a power
    /// loss may lose any acknowledged event not yet written back. For tests and benchmarks.
    Never,
}

/// Everything configurable about a store.
#[derive(Debug, Clone)]
pub struct Options {
    pub durability: Durability,
    /// A segment is sealed and a new one started once it would grow past this. Default 128 MiB.
    /// A batch never spans segments, so one large batch may overshoot it.
    pub segment_size_bytes: u64,
    pub limits: Limits,
    /// Write an index checkpoint after this many new events (and always on close). 0 disables
    /// periodic checkpoints. Default 1,000,000.
    pub checkpoint_every_events: u64,
    /// Also write one when events were appended and this many seconds passed since the last
    /// one, so that a process that is killed (not closed) never leaves a long replay behind.
    /// 0 disables. Default 60. (An open that had to replay at least
    /// `checkpoint_every_events / 10` events writes one right away as well.)
    pub checkpoint_every_seconds: u64,
    /// Most bytes one group commit writes before it fsyncs, bounding latency. Default 8 MiB.
    pub group_commit_max_bytes: usize,
    /// Zero-fill the active segment a few MiB ahead of the writer in the background, so group
    /// commits overwrite existing blocks and their fsyncs need no metadata commit. Default on.
    pub preallocate: bool,
    /// The file system the store lives on: the real one, or a simulated one in tests
    /// (`eventlog::sim::SimFs`, with the `test-support` feature).
    pub storage: Storage,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Fsync,
            segment_size_bytes: 128 * 1024 * 1024,
            limits: Limits::default(),
            checkpoint_every_events: 1_000_000,
            checkpoint_every_seconds: 60,
            group_commit_max_bytes: 8 * 1024 * 1024,
            preallocate: true,
            storage: std::sync::Arc::new(RealFs),
        }
    }
}

/// Smallest segment size accepted, so that every segment holds at least a few records.
pub const MIN_SEGMENT_SIZE_BYTES: u64 = 1024;

impl Options {
    /// Checks the options against the format's bounds.
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(Error::InvalidOptions(message));
        // Offsets inside a segment are stored as u32, and one batch may overshoot the size.
        let max_segment = u64::from(u32::MAX) - u64::from(self.limits.max_batch_size_bytes);
        if !(MIN_SEGMENT_SIZE_BYTES..=max_segment).contains(&self.segment_size_bytes) {
            return fail(format!(
                "segment_size_bytes must be between {MIN_SEGMENT_SIZE_BYTES} and {max_segment}, got {}",
                self.segment_size_bytes
            ));
        }
        let max_event = (MAX_RECORD_LEN - RECORD_HEADER_LEN) as u32;
        if self.limits.max_event_size_bytes == 0 || self.limits.max_event_size_bytes > max_event {
            return fail(format!(
                "max_event_size_bytes must be between 1 and {max_event}, got {}",
                self.limits.max_event_size_bytes
            ));
        }
        if self.limits.max_batch_events == 0 {
            return fail("max_batch_events must be at least 1".into());
        }
        if self.limits.max_batch_size_bytes < self.limits.max_event_size_bytes {
            return fail("max_batch_size_bytes must be at least max_event_size_bytes".into());
        }
        if self.limits.max_stream_name_bytes == 0 || self.limits.max_event_type_bytes == 0 {
            return fail(
                "max_stream_name_bytes and max_event_type_bytes must be at least 1".into(),
            );
        }
        if let Durability::Interval { every } = self.durability
            && every.is_zero()
        {
            return fail("the fsync interval must be longer than zero".into());
        }
        Ok(())
    }
}
