//! The checks an append passes before a backend looks at it: shape (non-empty batch, names,
//! one stream under an expected version, no id twice) and size limits.
//!
//! The embedded engine makes the same checks with the same messages on its own side (it has
//! no dependency on this crate); backends without such checks of their own call
//! [`check_append`], so a bad append answers the same problem whichever backend serves it.

use std::collections::HashSet;

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

/// Checks the shape and the limits of an append; nothing is stored when it fails.
pub fn check_append(events: &[NewEvent], expected: ExpectedVersion, limits: &Limits) -> Result<()> {
    let Some(first) = events.first() else {
        return Err(Error::InvalidAppend(
            "a batch needs at least one event".into(),
        ));
    };
    if events.len() > limits.max_batch_events as usize {
        return Err(Error::LimitExceeded {
            what: "the batch",
            actual: events.len() as u64,
            limit: u64::from(limits.max_batch_events),
            setting: "max_batch_events",
        });
    }
    let mut total = 0u64;
    let mut ids = HashSet::with_capacity(events.len());
    for event in events {
        check_name(
            "stream name",
            &event.stream,
            limits.max_stream_name_bytes,
            "max_stream_name_bytes",
        )?;
        check_name(
            "event type",
            &event.event_type,
            limits.max_event_type_bytes,
            "max_event_type_bytes",
        )?;
        let size = event.size_bytes();
        if size > u64::from(limits.max_event_size_bytes) {
            return Err(Error::LimitExceeded {
                what: "an event",
                actual: size,
                limit: u64::from(limits.max_event_size_bytes),
                setting: "max_event_size_bytes",
            });
        }
        total += size;
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
    if total > u64::from(limits.max_batch_size_bytes) {
        return Err(Error::LimitExceeded {
            what: "the batch",
            actual: total,
            limit: u64::from(limits.max_batch_size_bytes),
            setting: "max_batch_size_bytes",
        });
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stream: &str) -> NewEvent {
        NewEvent::json(stream, "T", b"1".to_vec())
    }

    #[test]
    fn an_empty_batch_and_a_control_character_are_invalid() {
        assert!(matches!(
            check_append(&[], ExpectedVersion::Any, &Limits::default()),
            Err(Error::InvalidAppend(_))
        ));
        assert!(matches!(
            check_append(&[event("a\nb")], ExpectedVersion::Any, &Limits::default()),
            Err(Error::InvalidAppend(reason)) if reason.contains("control")
        ));
    }

    #[test]
    fn an_expected_version_needs_one_stream() {
        let batch = [event("a"), event("b")];
        assert!(check_append(&batch, ExpectedVersion::Any, &Limits::default()).is_ok());
        assert!(matches!(
            check_append(&batch, ExpectedVersion::NoStream, &Limits::default()),
            Err(Error::InvalidAppend(_))
        ));
    }

    #[test]
    fn limits_name_their_setting() {
        let limits = Limits {
            max_event_size_bytes: 4,
            ..Limits::default()
        };
        assert!(matches!(
            check_append(&[event("stream")], ExpectedVersion::Any, &limits),
            Err(Error::LimitExceeded {
                setting: "max_event_size_bytes",
                ..
            })
        ));
    }
}
