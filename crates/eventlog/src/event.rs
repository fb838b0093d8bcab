//! The event model: what an appender gives, what a reader gets back.

use std::fmt;

use uuid::Uuid;

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Client-chosen or generated (UUIDv7) id; re-appending the same id with the same content is
    /// idempotent.
    pub id: Uuid,
    /// The stream the event goes to; created by its first event.
    pub stream: String,
    /// The event's type name, as the appender gives it.
    pub event_type: String,
    /// JSON bytes, stored and returned byte-exactly.
    pub data: Vec<u8>,
    /// Optional JSON bytes.
    pub metadata: Option<Vec<u8>>,
    /// `true` when the data is not JSON (its appender said `application/octet-stream` or
    /// another non-JSON type); the engine stores the bytes the same way either way.
    pub binary: bool,
}

impl NewEvent {
    /// The size counted against `max_event_size_bytes`.
    pub fn size_bytes(&self) -> u64 {
        (self.stream.len()
            + self.event_type.len()
            + self.data.len()
            + self.metadata.as_ref().map_or(0, Vec::len)) as u64
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The id the event was appended with.
    pub id: Uuid,
    /// The stream the event belongs to.
    pub stream: String,
    /// 0-based index within the stream.
    pub version: u64,
    /// Global position: strictly increasing from 0 (handed out consecutively; reads that skip
    /// dead events see holes, and a scavenge removes dead events for good).
    pub position: u64,
    /// The event's type name.
    pub event_type: String,
    /// The data bytes, exactly as appended.
    pub data: Vec<u8>,
    /// The metadata bytes, exactly as appended (`None`: none given).
    pub metadata: Option<Vec<u8>>,
    /// As [`NewEvent::binary`].
    pub binary: bool,
    /// When the writer recorded the event, in microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
}

/// The optimistic-concurrency condition of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpectedVersion {
    /// No condition.
    #[default]
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream's last event must have this version.
    Exact(u64),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// Where one appended event landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The event's id.
    pub id: Uuid,
    /// The stream it went to.
    pub stream: String,
    /// Its version in that stream (0-based).
    pub version: u64,
    /// Its global position.
    pub position: u64,
}

/// The outcome of a successful append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// One entry per event, in batch order.
    pub events: Vec<Placed>,
    /// `true` when the whole batch was already stored with identical content: nothing new was
    /// written and `events` are the original locations.
    pub duplicate: bool,
}

impl RecordedEvent {
    /// Whether re-appending `event` would be a repeat of this one.
    pub(crate) fn same_content(&self, event: &NewEvent) -> bool {
        self.stream == event.stream
            && self.event_type == event.event_type
            && self.data == event.data
            && self.metadata == event.metadata
    }
}
