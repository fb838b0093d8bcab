//! The event model: what an appender gives, what a reader gets back.

use std::fmt;

use uuid::Uuid;

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Client-chosen or generated (UUIDv7) id; re-appending the same id with the same content
    /// is idempotent.
    pub id: Uuid,
    /// The stream the event joins.
    pub stream: String,
    /// The event type.
    pub event_type: String,
    /// The data, stored and returned byte-exactly (JSON text over HTTP today).
    pub data: Vec<u8>,
    /// Optional metadata bytes (a JSON object over HTTP).
    pub metadata: Option<Vec<u8>>,
    /// What the data is: JSON (every HTTP append) or other bytes (gRPC may send either).
    pub content_type: ContentType,
}

impl NewEvent {
    /// An event with a fresh UUIDv7 and no metadata.
    pub fn json(stream: impl Into<String>, event_type: impl Into<String>, data: Vec<u8>) -> Self {
        NewEvent {
            id: Uuid::now_v7(),
            stream: stream.into(),
            event_type: event_type.into(),
            data,
            metadata: None,
            content_type: ContentType::Json,
        }
    }

    /// The size counted against [`Limits::max_event_size_bytes`](crate::Limits).
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
    /// The event id.
    pub id: Uuid,
    /// The stream.
    pub stream: String,
    /// 0-based index within the stream.
    pub version: u64,
    /// Global position: strictly increasing, from 0.
    pub position: u64,
    /// The event type.
    pub event_type: String,
    /// The data bytes as appended.
    pub data: Vec<u8>,
    /// The metadata bytes as appended.
    pub metadata: Option<Vec<u8>>,
    /// What the appender said the data is.
    pub content_type: ContentType,
    /// When the backend recorded the event, in microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
}

impl RecordedEvent {
    /// Whether `event` has this event's content (what idempotency compares: stream, type,
    /// data and metadata bytes; the id is the key). The content type is not compared: the
    /// same bytes under another label are the same event, as in KurrentDB.
    pub fn same_content(&self, event: &NewEvent) -> bool {
        self.stream == event.stream
            && self.event_type == event.event_type
            && self.data == event.data
            && self.metadata == event.metadata
    }

    /// The bytes a page counts for this event against its byte bound.
    pub fn size_bytes(&self) -> usize {
        self.stream.len()
            + self.event_type.len()
            + self.data.len()
            + self.metadata.as_ref().map_or(0, Vec::len)
    }
}

/// What an event's data is, as its appender said (KurrentDB's `content-type`, which is
/// `application/json` or anything else). Data is stored byte for byte either way: nothing
/// validates it, and a JSON label does not make bytes JSON (the HTTP face checks before it
/// shows data as JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ContentType {
    /// `application/json`.
    #[default]
    Json,
    /// Other bytes (`application/octet-stream`).
    Binary,
}

impl ContentType {
    /// The MIME type clients see.
    pub fn mime(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Binary => "application/octet-stream",
        }
    }

    /// `Json` for `application/json` (parameters and case ignored), else `Binary`.
    pub fn from_mime(mime: &str) -> ContentType {
        let essence = mime.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/json") {
            ContentType::Json
        } else {
            ContentType::Binary
        }
    }
}

/// The optimistic-concurrency condition of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpectedVersion {
    /// No condition.
    #[default]
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must have this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream whose last version is `current` (`None`: no events) meets it.
    pub fn admits(self, current: Option<u64>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current.is_none(),
            ExpectedVersion::StreamExists => current.is_some(),
            ExpectedVersion::Exact(version) => current == Some(version),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// Where one appended event landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The event id.
    pub id: Uuid,
    /// Its stream.
    pub stream: String,
    /// Its version in the stream.
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
