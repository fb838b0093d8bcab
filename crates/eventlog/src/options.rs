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
    Interval {
        /// The longest time an acknowledged write may stay unsynced.
        every: Duration,
    },
    /// Never fsync (the OS writes back when it likes). A process crash loses nothing; a power
    /// loss may lose any acknowledged event not yet written back. For tests and benchmarks.
    Never,
}

/// Everything configurable about a store.
#[derive(Debug, Clone)]
pub struct Options {
    /// When appended bytes reach stable storage. Default [`Durability::Fsync`].
    pub durability: Durability,
    /// A segment is sealed and a new one started once it would grow past this. Default 128 MiB.
    /// A batch never spans segments, so one large batch may overshoot it.
    pub segment_size_bytes: u64,
    /// What an append may carry.
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
    /// Most bytes of events [`crate::Store::get`] keeps in memory after reading them, so that
    /// an event read again is served without reading its record (`crate::cache`). 0: off.
    /// Default 64 MiB.
    pub read_cache_bytes: usize,
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
            read_cache_bytes: 64 * 1024 * 1024,
            storage: std::sync::Arc::new(RealFs),
        }
    }
}

/// Smallest segment size accepted, so that every segment holds at least a few records.
pub const MIN_SEGMENT_SIZE_BYTES: u64 = 1024;

/// One bad setting found by [`Options::problems`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionProblem {
    /// The setting's field name, as in [`Options`] or [`Limits`] (for example
    /// `segment_size_bytes`, `max_batch_events`, `durability`).
    pub setting: &'static str,
    /// What is wrong with it and what it must be; names the setting too.
    pub message: String,
}

impl std::fmt::Display for OptionProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Options {
    /// Checks the options against the format's bounds. Every bad setting is reported, each
    /// under its own name, in one [`Error::InvalidOptions`] (the messages of
    /// [`Options::problems`] joined by `; `).
    pub fn validate(&self) -> Result<()> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        let messages: Vec<String> = problems.into_iter().map(|p| p.message).collect();
        Err(Error::InvalidOptions(messages.join("; ")))
    }

    /// Every setting that breaks the format's bounds, in field order (empty when the options
    /// are valid): what [`Options::validate`] reports, one entry per setting.
    pub fn problems(&self) -> Vec<OptionProblem> {
        let mut problems = Vec::new();
        let mut fail = |setting: &'static str, message: String| {
            problems.push(OptionProblem { setting, message });
        };
        if let Durability::Interval { every } = self.durability
            && every.is_zero()
        {
            fail(
                "durability",
                "the fsync interval (durability) must be longer than zero".into(),
            );
        }
        // Offsets inside a segment are stored as u32, and one batch may overshoot the size.
        let max_segment = u64::from(u32::MAX) - u64::from(self.limits.max_batch_size_bytes);
        if !(MIN_SEGMENT_SIZE_BYTES..=max_segment).contains(&self.segment_size_bytes) {
            fail(
                "segment_size_bytes",
                format!(
                    "segment_size_bytes must be between {MIN_SEGMENT_SIZE_BYTES} and {max_segment}, got {}",
                    self.segment_size_bytes
                ),
            );
        }
        let limits = &self.limits;
        let max_event = (MAX_RECORD_LEN - RECORD_HEADER_LEN) as u32;
        if limits.max_event_size_bytes == 0 || limits.max_event_size_bytes > max_event {
            fail(
                "max_event_size_bytes",
                format!(
                    "max_event_size_bytes must be between 1 and {max_event}, got {}",
                    limits.max_event_size_bytes
                ),
            );
        }
        if limits.max_batch_events == 0 {
            fail(
                "max_batch_events",
                "max_batch_events must be at least 1".into(),
            );
        }
        if limits.max_batch_size_bytes < limits.max_event_size_bytes {
            fail(
                "max_batch_size_bytes",
                "max_batch_size_bytes must be at least max_event_size_bytes".into(),
            );
        }
        if limits.max_stream_name_bytes == 0 {
            fail(
                "max_stream_name_bytes",
                "max_stream_name_bytes must be at least 1".into(),
            );
        }
        if limits.max_event_type_bytes == 0 {
            fail(
                "max_event_type_bytes",
                "max_event_type_bytes must be at least 1".into(),
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_options_have_no_problems() {
        assert!(Options::default().problems().is_empty());
        assert!(Options::default().validate().is_ok());
    }

    #[test]
    fn every_bad_setting_is_reported_under_its_own_name_at_once() {
        let options = Options {
            durability: Durability::Interval {
                every: Duration::ZERO,
            },
            segment_size_bytes: 1,
            limits: Limits {
                max_event_size_bytes: 0,
                max_batch_events: 0,
                max_batch_size_bytes: 0,
                max_stream_name_bytes: 0,
                max_event_type_bytes: 0,
            },
            ..Options::default()
        };
        let settings: Vec<&str> = options.problems().iter().map(|p| p.setting).collect();
        assert_eq!(
            settings,
            [
                "durability",
                "segment_size_bytes",
                "max_event_size_bytes",
                "max_batch_events",
                "max_stream_name_bytes",
                "max_event_type_bytes",
            ]
        );
        let Err(Error::InvalidOptions(message)) = options.validate() else {
            panic!("invalid options were accepted");
        };
        for setting in settings {
            assert!(
                message.contains(setting),
                "{setting} missing from {message}"
            );
        }
    }

    #[test]
    fn a_batch_size_below_the_event_size_is_named() {
        let mut options = Options::default();
        options.limits.max_batch_size_bytes = options.limits.max_event_size_bytes - 1;
        let problems = options.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].setting, "max_batch_size_bytes");
    }
}
