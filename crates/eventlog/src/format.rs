//! Record and segment-header framing: encoding and decoding, a pure codec over byte slices.
//!
//! No I/O here: reading records from files (the forward scanner, span reads) is in `reader`,
//! and the positional-read helper is [`crate::vfs::read_at_most`].
//!
//! The byte layout is documented for reader authors in `docs/FORMAT.md`; keep the two in step.
//! Every integer is little-endian. A record is self-delimiting (`record_len`) and carries a
//! CRC32C over everything except the CRC field itself, so a reader can tell a whole record from
//! a torn or damaged one without any other file.

/// First four bytes of every record.
pub const RECORD_MAGIC: [u8; 4] = *b"LBEV";
/// The only record format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Fixed part of a record, before the variable-length fields.
pub const RECORD_HEADER_LEN: usize = 80;
/// Hard upper bound on a record's length, whatever the configured limits: a corrupted length
/// field can never make a reader allocate more than this.
pub const MAX_RECORD_LEN: usize = 64 * 1024 * 1024;

/// First eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LOGBKSEG";
/// Segment header: magic, format version (u32), CRC32C of the first 12 bytes (u32).
pub const SEGMENT_HEADER_LEN: u64 = 16;

const FLAG_HAS_METADATA: u8 = 1;
/// The data is not JSON (its content type is not `application/json`). Records written before
/// this flag existed have it clear: all their data is JSON.
const FLAG_BINARY: u8 = 2;

/// The fields of one event as written to disk.
#[derive(Debug, Clone, Copy)]
pub struct RecordFields<'a> {
    /// The event id (UUID bytes).
    pub id: [u8; 16],
    /// Global position.
    pub position: u64,
    /// 0-based version within the stream.
    pub stream_version: u64,
    /// When the writer recorded it, in microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
    /// This record's index within its batch.
    pub batch_index: u32,
    /// Number of events in its batch.
    pub batch_len: u32,
    /// Stream name (UTF-8).
    pub stream: &'a str,
    /// Event type (UTF-8).
    pub event_type: &'a str,
    /// Data bytes.
    pub data: &'a [u8],
    /// Metadata bytes (`None`: the record has none, as opposed to empty ones).
    pub metadata: Option<&'a [u8]>,
    /// The data is not JSON (the record's binary flag).
    pub binary: bool,
}

/// A decoded, checksum-verified record borrowing from the bytes it was read from.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// The record's fields.
    pub fields: RecordFields<'a>,
    /// Length of the whole record in bytes.
    pub record_len: usize,
}

/// What [`decode_record`] found at the start of a byte slice.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A whole, valid record.
    Record(RecordView<'a>),
    /// The slice is a prefix of what could be a valid record; `needed` bytes are required.
    Incomplete {
        /// Bytes from the start of the slice needed to tell more.
        needed: usize,
    },
    /// These bytes are not a valid record.
    Invalid(&'static str),
}

/// The encoded length of a record with these variable-length parts.
pub fn record_len(stream: usize, event_type: usize, data: usize, metadata: usize) -> usize {
    RECORD_HEADER_LEN + stream + event_type + data + metadata
}

/// Appends the encoding of `fields` to `out`.
///
/// The caller has checked the limits; this asserts the format's own bounds.
pub fn encode_record(out: &mut Vec<u8>, fields: &RecordFields<'_>) {
    let metadata = fields.metadata.unwrap_or(&[]);
    let total = record_len(
        fields.stream.len(),
        fields.event_type.len(),
        fields.data.len(),
        metadata.len(),
    );
    assert!(total <= MAX_RECORD_LEN, "record exceeds the format maximum");
    assert!(fields.stream.len() <= u16::MAX as usize);
    assert!(fields.event_type.len() <= u16::MAX as usize);
    let start = out.len();
    out.reserve(total);
    out.extend_from_slice(&RECORD_MAGIC);
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // CRC, filled in below
    out.push(FORMAT_VERSION);
    out.push(
        if fields.metadata.is_some() {
            FLAG_HAS_METADATA
        } else {
            0
        } | if fields.binary { FLAG_BINARY } else { 0 },
    );
    out.extend_from_slice(&(fields.stream.len() as u16).to_le_bytes());
    out.extend_from_slice(&(fields.event_type.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&fields.batch_index.to_le_bytes());
    out.extend_from_slice(&fields.batch_len.to_le_bytes());
    out.extend_from_slice(&(fields.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&fields.position.to_le_bytes());
    out.extend_from_slice(&fields.stream_version.to_le_bytes());
    out.extend_from_slice(&fields.recorded_at_micros.to_le_bytes());
    out.extend_from_slice(&fields.id);
    debug_assert_eq!(out.len() - start, RECORD_HEADER_LEN);
    out.extend_from_slice(fields.stream.as_bytes());
    out.extend_from_slice(fields.event_type.as_bytes());
    out.extend_from_slice(fields.data);
    out.extend_from_slice(metadata);
    debug_assert_eq!(out.len() - start, total);
    let crc = record_crc(&out[start..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

fn record_crc(record: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&record[0..8]), &record[12..])
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes the record at the start of `bytes`, verifying magic, bounds and checksum.
pub fn decode_record(bytes: &[u8]) -> Decoded<'_> {
    if bytes.len() < 8 {
        if !RECORD_MAGIC.starts_with(&bytes[..bytes.len().min(4)]) {
            return Decoded::Invalid("bad record magic");
        }
        return Decoded::Incomplete { needed: 8 };
    }
    if bytes[0..4] != RECORD_MAGIC {
        return Decoded::Invalid("bad record magic");
    }
    let total = u32_at(bytes, 4) as usize;
    if !(RECORD_HEADER_LEN..=MAX_RECORD_LEN).contains(&total) {
        return Decoded::Invalid("record length out of bounds");
    }
    if bytes.len() < total {
        return Decoded::Incomplete { needed: total };
    }
    let record = &bytes[..total];
    if u32_at(record, 8) != record_crc(record) {
        return Decoded::Invalid("record checksum mismatch");
    }
    if record[12] != FORMAT_VERSION {
        return Decoded::Invalid("unknown record format version");
    }
    let flags = record[13];
    if flags & !(FLAG_HAS_METADATA | FLAG_BINARY) != 0 {
        return Decoded::Invalid("unknown record flags");
    }
    let stream_len = u16_at(record, 14) as usize;
    let type_len = u16_at(record, 16) as usize;
    let batch_index = u32_at(record, 20);
    let batch_len = u32_at(record, 24);
    let data_len = u32_at(record, 28) as usize;
    let metadata_len = u32_at(record, 32) as usize;
    if record_len(stream_len, type_len, data_len, metadata_len) != total {
        return Decoded::Invalid("record field lengths do not add up");
    }
    if flags & FLAG_HAS_METADATA == 0 && metadata_len != 0 {
        return Decoded::Invalid("metadata bytes without the metadata flag");
    }
    if batch_len == 0 || batch_index >= batch_len {
        return Decoded::Invalid("batch index out of range");
    }
    let mut at = RECORD_HEADER_LEN;
    let mut take = |len: usize| {
        let part = &record[at..at + len];
        at += len;
        part
    };
    let Ok(stream) = std::str::from_utf8(take(stream_len)) else {
        return Decoded::Invalid("stream name is not UTF-8");
    };
    let Ok(event_type) = std::str::from_utf8(take(type_len)) else {
        return Decoded::Invalid("event type is not UTF-8");
    };
    let data = take(data_len);
    let metadata = take(metadata_len);
    Decoded::Record(RecordView {
        fields: RecordFields {
            id: record[64..80].try_into().expect("16 bytes"),
            position: u64_at(record, 40),
            stream_version: u64_at(record, 48),
            recorded_at_micros: u64_at(record, 56) as i64,
            batch_index,
            batch_len,
            stream,
            event_type,
            data,
            metadata: (flags & FLAG_HAS_METADATA != 0).then_some(metadata),
            binary: flags & FLAG_BINARY != 0,
        },
        record_len: total,
    })
}

/// Segment format version of the segments the writer appends to.
pub const SEGMENT_VERSION: u32 = 1;
/// Segment format version of a segment a scavenge rewrote: its records are those of the
/// original segment minus dead events, so positions (and a stream's first version) may skip,
/// and a batch may be incomplete; each record stands alone (the file was fsynced whole before
/// it was renamed into place, so it cannot hold a torn write).
pub const SEGMENT_VERSION_COMPACTED: u32 = 2;

/// The 16-byte header every segment file starts with.
pub fn segment_header() -> [u8; SEGMENT_HEADER_LEN as usize] {
    segment_header_of(SEGMENT_VERSION)
}

/// The 16-byte header of a segment of format `version`.
pub fn segment_header_of(version: u32) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..12]);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The format version of a valid segment header ([`SEGMENT_VERSION`] or
/// [`SEGMENT_VERSION_COMPACTED`]), `None` when `bytes` is not one.
pub fn segment_header_version(bytes: &[u8]) -> Option<u32> {
    let header = bytes.get(..SEGMENT_HEADER_LEN as usize)?;
    [SEGMENT_VERSION, SEGMENT_VERSION_COMPACTED]
        .into_iter()
        .find(|&version| header == segment_header_of(version))
}

/// Whether `bytes` (at least [`SEGMENT_HEADER_LEN`] long) is a valid segment header.
pub fn is_valid_segment_header(bytes: &[u8]) -> bool {
    segment_header_version(bytes).is_some()
}

/// The offset of the first valid record that starts a batch after `from` in `bytes`, if any.
/// Used to tell a torn tail from damage in the middle: valid records that continue a batch
/// whose start is damaged belong to the same interrupted write, but a whole new batch after
/// the damage shows that the log went on past it.
pub fn find_valid_record_after(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from + 1;
    while at + 4 <= bytes.len() {
        let found = bytes[at..]
            .windows(4)
            .position(|window| window == RECORD_MAGIC)?;
        let candidate = at + found;
        if let Decoded::Record(view) = decode_record(&bytes[candidate..])
            && view.fields.batch_index == 0
        {
            return Some(candidate);
        }
        at = candidate + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(data: &'a [u8], metadata: Option<&'a [u8]>) -> RecordFields<'a> {
        RecordFields {
            id: [7; 16],
            position: 42,
            stream_version: 3,
            recorded_at_micros: 1_764_000_000_000_000,
            batch_index: 1,
            batch_len: 2,
            stream: "orders-🔥",
            event_type: "OrderPlaced",
            data,
            metadata,
            binary: false,
        }
    }

    #[test]
    fn a_record_round_trips_byte_exactly_with_multibyte_text() {
        let data = "{\"note\":\"🔥 火 e\u{301}\\n\\u0000\"}".as_bytes();
        let mut out = Vec::new();
        encode_record(&mut out, &sample(data, Some(b"{}")));
        assert_eq!(out.len(), record_len("orders-🔥".len(), 11, data.len(), 2));
        let Decoded::Record(view) = decode_record(&out) else {
            panic!("expected a record")
        };
        assert_eq!(view.record_len, out.len());
        assert_eq!(view.fields.data, data);
        assert_eq!(view.fields.stream, "orders-🔥");
        assert_eq!(view.fields.metadata, Some(&b"{}"[..]));
        assert_eq!(view.fields.position, 42);
        assert_eq!(view.fields.batch_index, 1);
    }

    #[test]
    fn absent_and_empty_metadata_are_distinguished() {
        let mut out = Vec::new();
        encode_record(&mut out, &sample(b"1", None));
        let Decoded::Record(view) = decode_record(&out) else {
            panic!()
        };
        assert_eq!(view.fields.metadata, None);
        let mut out = Vec::new();
        encode_record(&mut out, &sample(b"1", Some(b"")));
        let Decoded::Record(view) = decode_record(&out) else {
            panic!()
        };
        assert_eq!(view.fields.metadata, Some(&b""[..]));
    }

    #[test]
    fn the_binary_flag_round_trips_and_old_records_read_as_json() {
        let mut out = Vec::new();
        let binary = RecordFields {
            binary: true,
            ..sample(&[0, 255, 1], Some(b"m"))
        };
        encode_record(&mut out, &binary);
        assert_eq!(out[13], FLAG_HAS_METADATA | FLAG_BINARY);
        let Decoded::Record(view) = decode_record(&out) else {
            panic!()
        };
        assert!(view.fields.binary);
        assert_eq!(view.fields.data, &[0, 255, 1]);
        let mut out = Vec::new();
        encode_record(&mut out, &sample(b"1", None));
        assert_eq!(
            out[13], 0,
            "a JSON record is laid out as before the flag existed"
        );
        let Decoded::Record(view) = decode_record(&out) else {
            panic!()
        };
        assert!(!view.fields.binary);
    }

    #[test]
    fn every_prefix_is_incomplete_and_every_flip_is_invalid() {
        let mut out = Vec::new();
        encode_record(&mut out, &sample(b"{\"a\":1}", None));
        for cut in 0..out.len() {
            assert!(
                matches!(decode_record(&out[..cut]), Decoded::Incomplete { .. }),
                "prefix of {cut} bytes"
            );
        }
        for at in 0..out.len() {
            let mut damaged = out.clone();
            damaged[at] ^= 0x01;
            assert!(
                !matches!(decode_record(&damaged), Decoded::Record(_)),
                "flip at {at} decoded as valid"
            );
        }
    }

    #[test]
    fn a_valid_record_is_found_after_garbage() {
        let mut bytes = vec![0xAB; 37];
        let mut record = Vec::new();
        encode_record(&mut record, &sample(b"[]", None));
        bytes.extend_from_slice(&record);
        // The sample continues a batch (index 1 of 2): not evidence of a later batch.
        assert_eq!(find_valid_record_after(&bytes, 0), None);
        let mut first = Vec::new();
        encode_record(
            &mut first,
            &RecordFields {
                batch_index: 0,
                ..sample(b"[]", None)
            },
        );
        bytes.extend_from_slice(&first);
        assert_eq!(find_valid_record_after(&bytes, 0), Some(37 + record.len()));
        assert_eq!(find_valid_record_after(&bytes, 37 + record.len()), None);
    }
}
