//! Read requests and what they answer: pages of `$all` and of one stream, filters, stream
//! listings and state, store statistics; and the lifecycle's [`StreamMetadata`] and
//! [`DeleteMode`].

use crate::error::{Error, Result};
use crate::event::RecordedEvent;

/// Most events a filtered read examines before it answers with what it found (perhaps
/// nothing) and a `next` to continue from, so a filter that matches little cannot turn one
/// request into a scan of the whole store.
pub const FILTER_SCAN_MAX_EVENTS: usize = 4096;

/// Which way a read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forward,
    /// Newest first.
    Backward,
}

/// Where a read starts, inclusive: a position (`$all`) or a version (one stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first event.
    Beginning,
    /// The last event (the usual start of a backward read).
    End,
    /// This position or version, inclusive. Forward reads past the end are empty; backward
    /// reads from beyond the end start at the last event.
    At(u64),
}

/// A read of the whole store (`$all`).
#[derive(Debug, Clone)]
pub struct ReadAll {
    /// Where the read starts (inclusive).
    pub start: Start,
    /// Which way it goes.
    pub direction: Direction,
    /// Most events in the page.
    pub limit: usize,
    /// A page stops after about this many bytes of events (at least one event when one
    /// follows), so a page of large events stays bounded.
    pub max_bytes: usize,
    /// Only events that match; `None`: every event.
    pub filter: Option<Filter>,
}

impl ReadAll {
    /// Forward from `position` (inclusive), at most `limit` events, no byte bound, no filter.
    pub fn forward(position: u64, limit: usize) -> ReadAll {
        ReadAll {
            start: Start::At(position),
            direction: Direction::Forward,
            limit,
            max_bytes: usize::MAX,
            filter: None,
        }
    }

    /// Backward from `start`, at most `limit` events.
    pub fn backward(start: Start, limit: usize) -> ReadAll {
        ReadAll {
            start,
            direction: Direction::Backward,
            limit,
            max_bytes: usize::MAX,
            filter: None,
        }
    }

    /// With a byte bound.
    pub fn within(mut self, max_bytes: usize) -> ReadAll {
        self.max_bytes = max_bytes;
        self
    }

    /// With a filter.
    pub fn filtered(mut self, filter: Filter) -> ReadAll {
        self.filter = Some(filter);
        self
    }
}

/// A page of `$all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllPage {
    /// The events, in the read's direction.
    pub events: Vec<RecordedEvent>,
    /// The position to start the next page at (inclusive, same direction); `None` when the
    /// read reached the end (forward: the head it was bounded by; backward: position 0).
    /// A filtered page may be empty and still have a `next`.
    pub next: Option<u64>,
    /// The head the read was bounded by: the position the next appended event gets, as of
    /// the read. A forward page never holds an event at or past it.
    pub head: u64,
}

/// A read of one stream.
#[derive(Debug, Clone)]
pub struct ReadStream {
    /// Where the read starts (a version, inclusive).
    pub start: Start,
    /// Which way it goes.
    pub direction: Direction,
    /// Most events in the page.
    pub limit: usize,
    /// Byte bound, as [`ReadAll::max_bytes`].
    pub max_bytes: usize,
}

impl ReadStream {
    /// Forward from `version` (inclusive), at most `limit` events, no byte bound.
    pub fn forward(version: u64, limit: usize) -> ReadStream {
        ReadStream {
            start: Start::At(version),
            direction: Direction::Forward,
            limit,
            max_bytes: usize::MAX,
        }
    }

    /// Backward from `start`, at most `limit` events.
    pub fn backward(start: Start, limit: usize) -> ReadStream {
        ReadStream {
            start,
            direction: Direction::Backward,
            limit,
            max_bytes: usize::MAX,
        }
    }

    /// With a byte bound.
    pub fn within(mut self, max_bytes: usize) -> ReadStream {
        self.max_bytes = max_bytes;
        self
    }
}

/// A page of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPage {
    /// The events, in the read's direction.
    pub events: Vec<RecordedEvent>,
    /// The version to start the next page at (inclusive, same direction); `None` when the
    /// read reached the end of the stream (forward: its last version; backward: version 0).
    pub next: Option<u64>,
    /// The stream's last version as of the read.
    pub last_version: u64,
}

/// What a filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterTarget {
    /// The stream name.
    Stream,
    /// The event type.
    EventType,
}

/// A server-side filter on `$all` reads and subscriptions (KurrentDB's: on the stream name or
/// the event type, by prefixes or by a regular expression).
#[derive(Debug, Clone)]
pub enum Filter {
    /// Matches when the target starts with any of the prefixes.
    Prefixes {
        /// What is matched.
        target: FilterTarget,
        /// The prefixes (at least one).
        prefixes: Vec<String>,
    },
    /// Matches when the regular expression finds a match in the target.
    Regex {
        /// What is matched.
        target: FilterTarget,
        /// The compiled expression.
        regex: regex::Regex,
    },
}

impl Filter {
    /// A prefix filter; at least one prefix.
    pub fn prefixes(target: FilterTarget, prefixes: Vec<String>) -> Result<Filter> {
        if prefixes.is_empty() {
            return Err(Error::InvalidRead("a prefix filter needs a prefix".into()));
        }
        Ok(Filter::Prefixes { target, prefixes })
    }

    /// A regular-expression filter (Rust `regex` syntax).
    pub fn regex(target: FilterTarget, pattern: &str) -> Result<Filter> {
        regex::Regex::new(pattern)
            .map(|regex| Filter::Regex { target, regex })
            .map_err(|e| Error::InvalidRead(format!("invalid filter expression: {e}")))
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        let field = |target: &FilterTarget| match target {
            FilterTarget::Stream => event.stream.as_str(),
            FilterTarget::EventType => event.event_type.as_str(),
        };
        match self {
            Filter::Prefixes { target, prefixes } => {
                let value = field(target);
                prefixes
                    .iter()
                    .any(|prefix| value.starts_with(prefix.as_str()))
            }
            Filter::Regex { target, regex } => regex.is_match(field(target)),
        }
    }
}

/// A listing of streams in byte order of name.
#[derive(Debug, Clone, Default)]
pub struct ListStreams {
    /// Only names with this prefix.
    pub prefix: Option<String>,
    /// Exclusive: names after this one.
    pub after: Option<String>,
    /// Most streams in the answer.
    pub limit: usize,
}

/// A page of streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamList {
    /// The streams.
    pub streams: Vec<StreamState>,
    /// Pass as `after` for the next page; `None` when nothing follows.
    pub next: Option<String>,
}

/// One stream's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// The name.
    pub stream: String,
    /// Its last version.
    pub version: u64,
    /// Its first readable version (above 0 once truncated, soft-deleted and re-appended,
    /// or past `max_count`/`max_age_seconds`); `version + 1` when nothing is readable.
    pub first_version: u64,
    /// Readable events (`version + 1 - first_version`).
    pub events: u64,
    /// Position of its last event (perhaps a dead one).
    pub last_position: u64,
    /// When its last event was recorded, microseconds since the Unix epoch.
    pub updated_at_micros: i64,
}

/// A summary of the store for metrics and tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// The position the next event gets (events stored, while nothing is deleted).
    pub head: u64,
    /// Streams with events.
    pub streams: u64,
    /// Whether appends are accepted right now.
    pub writable: bool,
}

/// The prefix of metastream names: `$$orders` holds the lifecycle records of `orders`
/// (KurrentDB's naming; the embedded engine spells the same constants on its side).
pub const METASTREAM_PREFIX: &str = "$$";
/// The event type of a metadata record in a metastream (a soft delete is one too).
pub const METADATA_EVENT_TYPE: &str = "$metadata";
/// The event type of a tombstone in a metastream.
pub const TOMBSTONE_EVENT_TYPE: &str = "$streamDeleted";

/// Stream metadata (KurrentDB's `$maxAge`, `$maxCount`, `$tb` and custom keys).
///
/// Stored as KurrentDB stores it: an event of type `$metadata` in the stream's metastream
/// `$$<stream>`, whose data is one JSON object holding `$maxAge` (seconds), `$maxCount`,
/// `$tb` and the custom keys at its top level ([`StreamMetadata::to_json`],
/// [`StreamMetadata::from_json`]). A soft delete is such a record with `$tb` past the last
/// version; a tombstone is a `$streamDeleted` event in the metastream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamMetadata {
    /// Events older than this disappear from reads (at least 1).
    pub max_age_seconds: Option<u64>,
    /// Only the newest N events stay readable (at least 1).
    pub max_count: Option<u64>,
    /// Versions below this are not readable.
    pub truncate_before: Option<u64>,
    /// A JSON object of custom keys (none may start with `$`). It round-trips as JSON (the
    /// same keys and values), not byte for byte: it is merged into KurrentDB's object.
    pub custom: Option<Vec<u8>>,
}

/// The KurrentDB keys of stream metadata.
const MAX_AGE_KEY: &str = "$maxAge";
const MAX_COUNT_KEY: &str = "$maxCount";
const TRUNCATE_BEFORE_KEY: &str = "$tb";

impl StreamMetadata {
    /// Checks the limits (at least 1) and the custom object (an object, no `$` key).
    pub fn validate(&self) -> Result<()> {
        if self.max_age_seconds == Some(0) {
            return Err(Error::InvalidMetadata(
                "max_age_seconds must be at least 1".into(),
            ));
        }
        if self.max_count == Some(0) {
            return Err(Error::InvalidMetadata(
                "max_count must be at least 1".into(),
            ));
        }
        if self.truncate_before.is_some_and(|tb| tb > i64::MAX as u64) {
            return Err(Error::InvalidMetadata(
                "truncate_before is too large".into(),
            ));
        }
        self.custom_object().map(|_| ())
    }

    fn custom_object(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let Some(custom) = &self.custom else {
            return Ok(serde_json::Map::new());
        };
        match serde_json::from_slice(custom) {
            Ok(serde_json::Value::Object(object)) => {
                if let Some(key) = object.keys().find(|key| key.starts_with('$')) {
                    return Err(Error::InvalidMetadata(format!(
                        "custom key {key:?} starts with `$`, which is reserved for the store"
                    )));
                }
                Ok(object)
            }
            Ok(_) => Err(Error::InvalidMetadata(
                "custom must be a JSON object".into(),
            )),
            Err(e) => Err(Error::InvalidMetadata(format!("custom is not JSON: {e}"))),
        }
    }

    /// KurrentDB's JSON of this metadata (validated first).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let mut object = self.custom_object()?;
        let mut put = |key: &str, value: Option<u64>| {
            if let Some(value) = value {
                object.insert(key.to_owned(), value.into());
            }
        };
        put(MAX_AGE_KEY, self.max_age_seconds);
        put(MAX_COUNT_KEY, self.max_count);
        put(TRUNCATE_BEFORE_KEY, self.truncate_before);
        Ok(serde_json::to_vec(&object).expect("a JSON map serializes"))
    }

    /// Metadata from KurrentDB's JSON. Keys starting with `$` other than the three known
    /// ones (`$acl`, `$cacheControl`...) are dropped; everything else is custom.
    pub fn from_json(bytes: &[u8]) -> Result<StreamMetadata> {
        let object = match serde_json::from_slice(bytes) {
            Ok(serde_json::Value::Object(object)) => object,
            Ok(_) => {
                return Err(Error::InvalidMetadata(
                    "metadata must be a JSON object".into(),
                ));
            }
            Err(e) => return Err(Error::InvalidMetadata(format!("metadata is not JSON: {e}"))),
        };
        let number = |key: &str| match object.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or_else(|| {
                Error::InvalidMetadata(format!("{key} must be a non-negative integer"))
            }),
        };
        let custom: serde_json::Map<String, serde_json::Value> = object
            .iter()
            .filter(|(key, _)| !key.starts_with('$'))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let metadata = StreamMetadata {
            max_age_seconds: number(MAX_AGE_KEY)?,
            max_count: number(MAX_COUNT_KEY)?,
            truncate_before: number(TRUNCATE_BEFORE_KEY)?,
            custom: (!custom.is_empty())
                .then(|| serde_json::to_vec(&custom).expect("a JSON map serializes")),
        };
        metadata.validate()?;
        Ok(metadata)
    }
}

/// How a stream is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// Reads answer "not found"; appending again recreates it, versions continue.
    Soft,
    /// A tombstone: the name can never be written again.
    Hard,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stream: &str, event_type: &str) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::nil(),
            stream: stream.into(),
            version: 0,
            position: 0,
            event_type: event_type.into(),
            data: b"1".to_vec(),
            metadata: None,
            content_type: crate::ContentType::Json,
            recorded_at_micros: 0,
        }
    }

    #[test]
    fn metadata_round_trips_through_kurrentdb_json_and_rejects_what_is_invalid() {
        let metadata = StreamMetadata {
            max_age_seconds: Some(60),
            max_count: Some(5),
            truncate_before: Some(2),
            custom: Some(br#"{"owner":"ops"}"#.to_vec()),
        };
        let json = metadata.to_json().unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"$maxAge": 60, "$maxCount": 5, "$tb": 2, "owner": "ops"})
        );
        assert_eq!(StreamMetadata::from_json(&json).unwrap(), metadata);
        let bad = |m: StreamMetadata| matches!(m.validate(), Err(Error::InvalidMetadata(_)));
        assert!(bad(StreamMetadata {
            max_count: Some(0),
            ..StreamMetadata::default()
        }));
        assert!(bad(StreamMetadata {
            custom: Some(br#"{"$acl":1}"#.to_vec()),
            ..StreamMetadata::default()
        }));
        assert!(bad(StreamMetadata {
            custom: Some(b"[1]".to_vec()),
            ..StreamMetadata::default()
        }));
        assert!(StreamMetadata::from_json(br#"{"$maxCount":-1}"#).is_err());
    }

    #[test]
    fn filters_match_prefixes_and_expressions_of_their_target() {
        let by_stream =
            Filter::prefixes(FilterTarget::Stream, vec!["order-".into(), "cart-".into()]).unwrap();
        assert!(by_stream.matches(&event("cart-1", "X")));
        assert!(!by_stream.matches(&event("user-1", "order-")));
        let by_type = Filter::regex(FilterTarget::EventType, "^Order(Placed|Paid)$").unwrap();
        assert!(by_type.matches(&event("s", "OrderPaid")));
        assert!(!by_type.matches(&event("OrderPaid", "OrderShipped")));
        assert!(matches!(
            Filter::regex(FilterTarget::Stream, "("),
            Err(Error::InvalidRead(_))
        ));
        assert!(Filter::prefixes(FilterTarget::Stream, vec![]).is_err());
    }
}
