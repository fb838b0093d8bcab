//! Append limits: the [`Limits`] an append must stay within (sizes and counts, each with its
//! unit in its name) and the batch checks ([`Limits::check_batch`]) the store runs on the
//! caller's thread before anything is queued for the writer.

use crate::error::{Error, Result};
use crate::event::{ExpectedVersion, NewEvent};

/// Size limits on what an append may carry. Breaking one is [`Error::LimitExceeded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest event: stream name + type + data + metadata, in bytes. Default 1 MiB.
    pub max_event_size_bytes: u32,
    /// Most events in one atomic batch. Default 1,000.
    pub max_batch_events: u32,
    /// Largest batch, the sum of its events' sizes, in bytes. Default 16 MiB.
    pub max_batch_size_bytes: u32,
    /// Longest stream name, in UTF-8 bytes. Default 256.
    pub max_stream_name_bytes: u16,
    /// Longest event type, in UTF-8 bytes. Default 256.
    pub max_event_type_bytes: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_size_bytes: 1024 * 1024,
            max_batch_events: 1000,
            max_batch_size_bytes: 16 * 1024 * 1024,
            max_stream_name_bytes: 256,
            max_event_type_bytes: 256,
        }
    }
}

impl Limits {
    /// Checks the shape of a batch and every limit on it: at least one event, at most
    /// `max_batch_events`, each event as [`Limits::check_event`] checks it, no id twice, one
    /// stream when `expected` is not [`ExpectedVersion::Any`], and the whole batch within
    /// `max_batch_size_bytes`. The first problem found is the error.
    pub(crate) fn check_batch(&self, events: &[NewEvent], expected: ExpectedVersion) -> Result<()> {
        let Some(first) = events.first() else {
            return Err(Error::InvalidAppend(
                "a batch needs at least one event".into(),
            ));
        };
        if events.len() > self.max_batch_events as usize {
            return Err(Error::LimitExceeded {
                what: "the batch",
                actual: events.len() as u64,
                limit: u64::from(self.max_batch_events),
                setting: "max_batch_events",
            });
        }
        let mut total = 0u64;
        let mut ids = std::collections::HashSet::with_capacity(events.len());
        for event in events {
            total += self.check_event(event)?;
            if !ids.insert(event.id) {
                return Err(Error::InvalidAppend(format!(
                    "event id {} appears twice in one batch",
                    event.id
                )));
            }
            if expected != ExpectedVersion::Any && event.stream != first.stream {
                return Err(Error::InvalidAppend(
                    "an expected version needs every event of the batch in one stream".into(),
                ));
            }
        }
        if total > u64::from(self.max_batch_size_bytes) {
            return Err(Error::LimitExceeded {
                what: "the batch",
                actual: total,
                limit: u64::from(self.max_batch_size_bytes),
                setting: "max_batch_size_bytes",
            });
        }
        Ok(())
    }

    /// Checks one event: its stream name and event type (see [`check_name`]), then its size
    /// against `max_event_size_bytes`. Answers the size.
    fn check_event(&self, event: &NewEvent) -> Result<u64> {
        check_name(
            "stream name",
            &event.stream,
            self.max_stream_name_bytes,
            "max_stream_name_bytes",
        )?;
        check_name(
            "event type",
            &event.event_type,
            self.max_event_type_bytes,
            "max_event_type_bytes",
        )?;
        let size = event.size_bytes();
        if size > u64::from(self.max_event_size_bytes) {
            return Err(Error::LimitExceeded {
                what: "an event",
                actual: size,
                limit: u64::from(self.max_event_size_bytes),
                setting: "max_event_size_bytes",
            });
        }
        Ok(size)
    }
}

/// Checks a stream name or event type: non-empty, at most `max` bytes (`setting`), and free
/// of control characters.
fn check_name(what: &'static str, value: &str, max: u16, setting: &'static str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::InvalidAppend(format!("the {what} is empty")));
    }
    if value.len() > usize::from(max) {
        return Err(Error::LimitExceeded {
            what,
            actual: value.len() as u64,
            limit: u64::from(max),
            setting,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidAppend(format!(
            "the {what} contains a control character"
        )));
    }
    Ok(())
}
