//! Reading records back from segment files: the store's verified span and point reads (with
//! their per-thread read buffer), and the forward scanner that recovery and scavenge walk a
//! segment with. Decoding itself is [`crate::format`]'s; this module does the I/O around it.

use std::io;
use std::path::Path;
use std::sync::RwLock;

use uuid::Uuid;

use crate::cache::{ReadCache, SharedEvent};
use crate::error::{Error, Result};
use crate::event::RecordedEvent;
use crate::format::{Decoded, RecordFields, RecordView, decode_record};
use crate::index::{Index, Location, OwnedLocation};
use crate::segment::segment_path;
use crate::vfs::{VfsFile, read_at_most};

/// Largest contiguous read `read_all` does at once.
pub(crate) const READ_SPAN_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Reads up to `limit` live events from position `from` on of a scanned index (no store open).
pub(crate) fn read_index_range(
    index: &Index,
    from: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>> {
    let mut events = Vec::with_capacity(limit.min(1024));
    let mut slot = index.slot_at_or_after(from);
    let end = index.live().min(slot.saturating_add(limit));
    while slot < end {
        let (location, to) = index
            .span(slot, end, READ_SPAN_MAX_BYTES)
            .expect("slot below live");
        read_span(index, &location, slot, to, &|_| true, &mut events)?;
        slot = to;
    }
    Ok(events)
}

/// The live event `id`, read with the index lock held for the lookup only: the record's file
/// handle and byte range are copied out, the lock released, and then the record is read and
/// verified. A read that waits — for a cold page, or for the file system's journal while a
/// large checkpoint's fsync commits (with `relatime`, reading the active segment after a write
/// updates its atime, which starts a journal handle) — then holds up nobody. Were the lock
/// held, the writer's next publish would queue behind it, and every other reader behind the
/// writer (std's `RwLock` lets a waiting writer go first): one slow read stalled them all.
///
/// A record found in the read cache (`crate::cache`) is served from it, and `judge` (say, a
/// liveness check) is asked about it while the index lock is still held, so that a hot read
/// takes the lock once; one read from the file is put there.
pub(crate) fn read_one(
    index: &RwLock<Index>,
    cache: &ReadCache,
    dir: &Path,
    id: &[u8; 16],
    judge: impl FnOnce(&Index, &RecordedEvent) -> bool,
) -> Result<Lookup> {
    let (record, generation) = {
        let index = index.read().expect("index lock poisoned");
        let Some(position) = index.position_of(id) else {
            return Ok(Lookup::Missing);
        };
        // Under the index lock: a clear of the cache happens under its write lock.
        let generation = cache.generation();
        if let Some(event) = cache.get(position) {
            let verdict = judge(&index, &event);
            return Ok(Lookup::Judged(event, verdict));
        }
        let slot = index.slot_of(position).expect("a live position");
        (
            index.record_of_slot(slot).expect("slot below live"),
            generation,
        )
    };
    let event = SharedEvent::from(read_record(&record, dir)?);
    cache.insert(generation, &event);
    Ok(Lookup::Read(event))
}

/// What [`read_one`] found.
pub(crate) enum Lookup {
    /// No live record has the id.
    Missing,
    /// From the cache, with what `judge` said of it under the index lock.
    Judged(SharedEvent, bool),
    /// Read from its file (not judged: the lock was released for the read).
    Read(SharedEvent),
}

/// Reads and verifies one record where [`Index::record_of_slot`] said it lives (no lock held).
pub(crate) fn read_record(record: &OwnedLocation, dir: &Path) -> Result<RecordedEvent> {
    READ_BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        if buffer.len() < record.len {
            buffer.resize(record.len, 0);
        }
        let bytes = &mut buffer[..record.len];
        let path = || segment_path(dir, record.first_position);
        let got =
            read_at_most(&*record.file, bytes, record.offset).map_err(|e| Error::io(path(), e))?;
        let corrupt = |at: usize, reason: &str| Error::Corrupt {
            path: path(),
            offset: record.offset + at as u64,
            reason: reason.to_owned(),
        };
        let result = if got != bytes.len() {
            Err(corrupt(got, "the segment is shorter than the index says"))
        } else {
            match decode_record(bytes) {
                Decoded::Record(view) if view.fields.position == record.position => {
                    Ok(RecordedEvent::from_fields(&view.fields))
                }
                Decoded::Record(_) => Err(corrupt(0, "record has an unexpected position")),
                Decoded::Incomplete { .. } => Err(corrupt(0, "record is cut short")),
                Decoded::Invalid(reason) => Err(corrupt(0, reason)),
            }
        };
        if buffer.len() > READ_BUFFER_KEEP_BYTES {
            *buffer = Vec::new();
        }
        result
    })
}

/// Reads and verifies the record at `position`, which must be live.
pub(crate) fn read_at(index: &Index, position: u64) -> Result<RecordedEvent> {
    let slot = index.slot_of(position).expect("a live position");
    let location = index.location_of_slot(slot).expect("slot below live");
    let mut events = Vec::with_capacity(1);
    read_span(index, &location, slot, slot + 1, &|_| true, &mut events)?;
    Ok(events.pop().expect("one event read"))
}

thread_local! {
    /// Read buffer reused across reads on one thread (no allocation or zeroing per read).
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers larger than this are not kept between reads.
const READ_BUFFER_KEEP_BYTES: usize = 1024 * 1024;

/// Reads slots `from..to`, which `location` covers exactly, verifying every record.
pub(crate) fn read_span(
    index: &Index,
    location: &Location<'_>,
    from: usize,
    to: usize,
    keep: &dyn Fn(&RecordFields<'_>) -> bool,
    out: &mut Vec<RecordedEvent>,
) -> Result<()> {
    READ_BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        if buffer.len() < location.len {
            buffer.resize(location.len, 0);
        }
        let result = decode_span(
            index,
            location,
            from,
            to,
            &mut buffer[..location.len],
            keep,
            out,
        );
        if buffer.len() > READ_BUFFER_KEEP_BYTES {
            *buffer = Vec::new();
        }
        result
    })
}

fn decode_span(
    index: &Index,
    location: &Location<'_>,
    from: usize,
    to: usize,
    bytes: &mut [u8],
    keep: &dyn Fn(&RecordFields<'_>) -> bool,
    out: &mut Vec<RecordedEvent>,
) -> Result<()> {
    let got = read_at_most(location.file, bytes, location.offset)
        .map_err(|e| Error::io(location.path, e))?;
    let corrupt = |at: usize, reason: &str| Error::Corrupt {
        path: location.path.to_path_buf(),
        offset: location.offset + at as u64,
        reason: reason.to_owned(),
    };
    if got != bytes.len() {
        return Err(corrupt(got, "the segment is shorter than the index says"));
    }
    let mut at = 0usize;
    for slot in from..to {
        let position = index.position_of_slot(slot);
        match decode_record(&bytes[at..]) {
            Decoded::Record(view) if view.fields.position == position => {
                if keep(&view.fields) {
                    out.push(RecordedEvent::from_fields(&view.fields));
                }
                at += view.record_len;
            }
            Decoded::Record(_) => return Err(corrupt(at, "record has an unexpected position")),
            Decoded::Incomplete { .. } => return Err(corrupt(at, "record is cut short")),
            Decoded::Invalid(reason) => return Err(corrupt(at, reason)),
        }
    }
    Ok(())
}

impl RecordedEvent {
    fn from_fields(fields: &RecordFields<'_>) -> Self {
        RecordedEvent {
            id: Uuid::from_bytes(fields.id),
            stream: fields.stream.to_owned(),
            version: fields.stream_version,
            position: fields.position,
            event_type: fields.event_type.to_owned(),
            data: fields.data.to_vec(),
            metadata: fields.metadata.map(<[u8]>::to_vec),
            binary: fields.binary,
            recorded_at_micros: fields.recorded_at_micros,
        }
    }
}

/// Why a forward scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanStop {
    /// The scan reached the end of the file exactly at a record boundary.
    End,
    /// The file ends inside a record.
    Incomplete,
    /// The bytes at the stop offset are not a valid record (or the visitor rejected it).
    Invalid(&'static str),
}

/// Where and why a forward scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanOutcome {
    /// Offset of the first byte not consumed as a valid record.
    pub offset: u64,
    /// Why it stopped there.
    pub stop: ScanStop,
}

/// Bytes read per `pread` while scanning.
const SCAN_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Visits every valid record of `file` from `start` up to `end`, in order, with large
/// positional reads. The visitor may reject a record (for example a position out of sequence),
/// which stops the scan at that record as [`ScanStop::Invalid`].
pub(crate) fn scan_records(
    file: &dyn VfsFile,
    start: u64,
    end: u64,
    mut visit: impl FnMut(u64, &RecordView<'_>) -> Result<(), &'static str>,
) -> io::Result<ScanOutcome> {
    let mut buf = vec![0u8; SCAN_CHUNK_BYTES];
    let mut buf_offset = start; // file offset of buf[0]
    let mut lo = 0usize;
    let mut hi = 0usize;
    loop {
        match decode_record(&buf[lo..hi]) {
            Decoded::Record(view) => {
                let offset = buf_offset + lo as u64;
                if let Err(reason) = visit(offset, &view) {
                    return Ok(ScanOutcome {
                        offset,
                        stop: ScanStop::Invalid(reason),
                    });
                }
                lo += view.record_len;
            }
            Decoded::Invalid(reason) => {
                return Ok(ScanOutcome {
                    offset: buf_offset + lo as u64,
                    stop: ScanStop::Invalid(reason),
                });
            }
            Decoded::Incomplete { needed } => {
                let read_from = buf_offset + hi as u64;
                if read_from >= end {
                    let stop = if lo == hi {
                        ScanStop::End
                    } else {
                        ScanStop::Incomplete
                    };
                    return Ok(ScanOutcome {
                        offset: buf_offset + lo as u64,
                        stop,
                    });
                }
                buf.copy_within(lo..hi, 0);
                buf_offset += lo as u64;
                hi -= lo;
                lo = 0;
                if buf.len() < needed.max(SCAN_CHUNK_BYTES) {
                    buf.resize(needed.max(SCAN_CHUNK_BYTES), 0);
                }
                let want = ((buf.len() - hi) as u64).min(end - read_from) as usize;
                let got = read_at_most(file, &mut buf[hi..hi + want], read_from)?;
                if got == 0 {
                    // The file is shorter than `end` says; treat as its end.
                    return Ok(ScanOutcome {
                        offset: buf_offset,
                        stop: if hi == 0 {
                            ScanStop::End
                        } else {
                            ScanStop::Incomplete
                        },
                    });
                }
                hi += got;
            }
        }
    }
}
