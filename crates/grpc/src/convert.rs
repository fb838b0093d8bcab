//! The mapping between KurrentDB's protocol and the contract.
//!
//! - revision = version.
//! - commit position = prepare position = position + 1 (no event at commit position 0,
//!   which clients read as "the start"; `docs/KURRENTDB.md` says why).
//! - `created` = recorded time in 100 ns ticks since the Unix epoch.

use std::collections::BTreeMap;

use events::{ContentType, ExpectedVersion, NewEvent, RecordedEvent};
use tonic::Status;
use uuid::Uuid;

use crate::proto::shared::{self, StreamIdentifier, uuid::Structured};
use crate::proto::streams::read_resp::{ReadEvent, read_event};

/// The metadata key of the event type.
pub const TYPE_KEY: &str = "type";
/// The metadata key of the content type.
pub const CONTENT_TYPE_KEY: &str = "content-type";
/// The metadata key of the recorded time (100 ns ticks since the Unix epoch, decimal).
pub const CREATED_KEY: &str = "created";

/// The commit (and prepare) position of the event at `position`.
pub fn commit_position(position: u64) -> u64 {
    position + 1
}

/// The position of the event at commit position `commit` (`None` for commit position 0,
/// which no event has).
pub fn position_of_commit(commit: u64) -> Option<u64> {
    commit.checked_sub(1)
}

/// Microseconds since the epoch as 100 ns ticks.
pub fn ticks(micros: i64) -> i64 {
    micros.saturating_mul(10)
}

/// A stream name from its identifier: UTF-8, not empty.
pub fn stream_name(identifier: Option<&StreamIdentifier>) -> Result<String, Status> {
    let bytes = identifier
        .map(|identifier| identifier.stream_name.as_slice())
        .unwrap_or_default();
    if bytes.is_empty() {
        return Err(Status::invalid_argument("a stream name is required"));
    }
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Status::invalid_argument("the stream name is not UTF-8"))
}

/// The identifier of `name`.
pub fn identifier(name: &str) -> StreamIdentifier {
    StreamIdentifier {
        stream_name: name.as_bytes().to_vec(),
    }
}

/// An id from the protocol's UUID (either shape).
pub fn uuid_from(id: Option<&shared::Uuid>) -> Result<Uuid, Status> {
    match id.and_then(|id| id.value.as_ref()) {
        Some(shared::uuid::Value::String(text)) => Uuid::parse_str(text)
            .map_err(|e| Status::invalid_argument(format!("invalid event id {text:?}: {e}"))),
        Some(shared::uuid::Value::Structured(parts)) => {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&parts.most_significant_bits.to_be_bytes());
            bytes[8..].copy_from_slice(&parts.least_significant_bits.to_be_bytes());
            Ok(Uuid::from_bytes(bytes))
        }
        None => Err(Status::invalid_argument("an event id is required")),
    }
}

/// The protocol's UUID for `id`, as a string or structured.
pub fn uuid_to(id: Uuid, as_string: bool) -> shared::Uuid {
    let value = if as_string {
        shared::uuid::Value::String(id.hyphenated().to_string())
    } else {
        let bytes = id.as_bytes();
        shared::uuid::Value::Structured(Structured {
            most_significant_bits: i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
            least_significant_bits: i64::from_be_bytes(bytes[8..].try_into().expect("8 bytes")),
        })
    };
    shared::Uuid { value: Some(value) }
}

/// A proposed message as the contract's event: `type` is required, `content-type` says JSON
/// or not, empty custom metadata is no metadata.
pub fn new_event(
    stream: &str,
    id: Option<&shared::Uuid>,
    metadata: &BTreeMap<String, String>,
    custom_metadata: Vec<u8>,
    data: Vec<u8>,
) -> Result<NewEvent, Status> {
    let id = uuid_from(id)?;
    let event_type = metadata
        .get(TYPE_KEY)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Status::invalid_argument(format!("event {id} has no `type`")))?;
    let content_type = metadata
        .get(CONTENT_TYPE_KEY)
        .map_or(ContentType::Binary, |mime| ContentType::from_mime(mime));
    Ok(NewEvent {
        id,
        stream: stream.to_owned(),
        event_type: event_type.clone(),
        data,
        metadata: (!custom_metadata.is_empty()).then_some(custom_metadata),
        content_type,
    })
}

/// A read answer's event.
pub fn read_event(event: RecordedEvent, uuid_as_string: bool) -> ReadEvent {
    let commit = commit_position(event.position);
    let metadata = BTreeMap::from([
        (TYPE_KEY.to_owned(), event.event_type),
        (
            CONTENT_TYPE_KEY.to_owned(),
            event.content_type.mime().to_owned(),
        ),
        (
            CREATED_KEY.to_owned(),
            ticks(event.recorded_at_micros).to_string(),
        ),
    ]);
    ReadEvent {
        event: Some(read_event::RecordedEvent {
            id: Some(uuid_to(event.id, uuid_as_string)),
            stream_identifier: Some(identifier(&event.stream)),
            stream_revision: event.version,
            prepare_position: commit,
            commit_position: commit,
            metadata,
            custom_metadata: event.metadata.unwrap_or_default(),
            data: event.data,
        }),
        link: None,
        position: Some(read_event::Position::CommitPosition(commit)),
    }
}

/// The expected version of an append, delete or tombstone (the same four cases everywhere).
pub enum Expected {
    /// `revision`.
    Revision(u64),
    /// `no_stream`.
    NoStream,
    /// `any`.
    Any,
    /// `stream_exists`.
    StreamExists,
}

impl From<Expected> for ExpectedVersion {
    fn from(expected: Expected) -> ExpectedVersion {
        match expected {
            Expected::Revision(revision) => ExpectedVersion::Exact(revision),
            Expected::NoStream => ExpectedVersion::NoStream,
            Expected::Any => ExpectedVersion::Any,
            Expected::StreamExists => ExpectedVersion::StreamExists,
        }
    }
}

/// KurrentDB's number for an expected version in messages: the revision, or -1 (no stream),
/// -2 (any), -4 (stream exists).
pub fn expected_number(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Exact(version) => version as i64,
        ExpectedVersion::NoStream => -1,
        ExpectedVersion::Any => -2,
        ExpectedVersion::StreamExists => -4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip_in_both_shapes() {
        let id = Uuid::parse_str("0190c1e2-7a3b-7c4d-8e5f-0123456789ab").unwrap();
        for as_string in [true, false] {
            assert_eq!(uuid_from(Some(&uuid_to(id, as_string))).unwrap(), id);
        }
        let shared::uuid::Value::Structured(parts) = uuid_to(id, false).value.unwrap() else {
            panic!("structured")
        };
        assert_eq!(parts.most_significant_bits, 0x0190_c1e2_7a3b_7c4d);
    }

    #[test]
    fn positions_are_shifted_by_one_so_no_event_sits_at_commit_zero() {
        assert_eq!(commit_position(0), 1);
        assert_eq!(position_of_commit(1), Some(0));
        assert_eq!(position_of_commit(0), None);
    }

    #[test]
    fn a_proposed_message_needs_a_type_and_reads_its_content_type() {
        let id = uuid_to(Uuid::nil(), true);
        let metadata = BTreeMap::from([
            ("type".to_owned(), "T".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ]);
        let event = new_event("s", Some(&id), &metadata, vec![], b"{}".to_vec()).unwrap();
        assert_eq!(event.content_type, ContentType::Json);
        assert_eq!(event.metadata, None);
        let untyped = new_event("s", Some(&id), &BTreeMap::new(), vec![], vec![]);
        assert_eq!(untyped.unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
