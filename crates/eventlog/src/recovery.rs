//! Rebuilding the index from the log, and telling a torn tail from damage in the middle.
//!
//! A scan visits segments in order and accepts a batch only when all its records are present
//! and valid, in position order. It stops at the first thing that is not a whole valid batch:
//! the *damage*. Damage is a **torn tail** when it is in the last segment and no valid record
//! starts anywhere after it: that is what an interrupted write leaves, and open cuts it off
//! (keeping the cut bytes in a side file). Anything else is **mid-log damage**: open refuses it
//! with [`Error::Corrupt`], and `repair` is the explicit way out.
//!
//! Here too: cutting a torn tail off at open ([`cut_torn_tail`], answering a [`TornTail`]).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::Claim;
use crate::error::{Error, Result};
use crate::format::{
    Decoded, MAX_RECORD_LEN, RECORD_MAGIC, RecordFields, RecordView, SEGMENT_HEADER_LEN,
    SEGMENT_VERSION_COMPACTED, decode_record, segment_header_version,
};
use crate::index::{Index, SegmentEntry};
use crate::reader::{ScanOutcome, ScanStop, scan_records};
use crate::segment::{copy_to_side_file, create_segment, fsync_dir, written_end};
use crate::vfs::{Vfs, VfsFile, read_at_most};

/// Where the scan found the log to stop being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Index of the damaged segment in the listing.
    pub segment: usize,
    pub path: PathBuf,
    /// First byte not part of a whole valid batch; everything from here on is suspect.
    pub offset: u64,
    pub reason: String,
    /// Length of the damaged segment file.
    pub file_len: u64,
    /// `true` when this is a torn tail (last segment, nothing valid after it).
    pub torn_tail: bool,
}

/// A torn tail cut off at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment that was cut.
    pub segment: PathBuf,
    /// Where the cut is: the segment's new length.
    pub offset: u64,
    /// Bytes cut off (and kept in `side_file`).
    pub bytes: u64,
    /// Where the cut bytes were kept.
    pub side_file: PathBuf,
}

/// The result of scanning a log.
#[derive(Debug)]
pub struct Scan {
    pub index: Index,
    pub damage: Option<Damage>,
    pub replayed_events: u64,
    pub replayed_bytes: u64,
}

/// Where a scan starts: from scratch, or after a checkpoint.
pub struct Resume {
    pub index: Index,
    /// Index (into the listing) of the segment the checkpoint ends in, and the offset there.
    pub segment: usize,
    pub offset: u64,
}

/// The reason given for a segment whose header is damaged.
pub const INVALID_HEADER: &str = "missing or invalid segment header";

/// How often a long replay logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Scans `segments` (sorted listing) into an index, starting from `resume` if given.
/// Only I/O errors are errors here; damage is reported in [`Scan::damage`].
pub fn scan_log(
    vfs: &dyn Vfs,
    segments: &[(u64, PathBuf)],
    resume: Option<Resume>,
) -> Result<Scan> {
    let resumed = resume.is_some();
    let (index, start_segment, start_offset) = match resume {
        Some(resume) => (resume.index, resume.segment, resume.offset),
        None => (Index::default(), 0, SEGMENT_HEADER_LEN),
    };
    let mut scan = Scan {
        index,
        damage: None,
        replayed_events: 0,
        replayed_bytes: 0,
    };
    let mut replay = Replay {
        last_progress: Instant::now(),
        after_compacted: false,
    };
    let last = segments.len().saturating_sub(1);
    for (number, (first_position, path)) in segments.iter().enumerate().skip(start_segment) {
        let segment = Listed {
            number,
            first_position: *first_position,
            path,
            is_last: number == last,
            // The segment a checkpoint ends in is already in the index, up to `start_offset`.
            continuing: resumed && number == start_segment,
            offset: if number == start_segment {
                start_offset
            } else {
                SEGMENT_HEADER_LEN
            },
        };
        if let Some(damage) = scan_segment(vfs, &mut scan, &mut replay, &segment)? {
            scan.damage = Some(damage);
            return Ok(scan);
        }
    }
    Ok(scan)
}

/// One segment of the listing, as [`scan_log`] hands it to [`scan_segment`].
struct Listed<'a> {
    /// Index of the segment in the listing.
    number: usize,
    /// The position its name says it starts at.
    first_position: u64,
    path: &'a PathBuf,
    is_last: bool,
    /// Whether the index already holds this segment up to `offset` (from a checkpoint).
    continuing: bool,
    /// Where the scan of this segment starts.
    offset: u64,
}

/// What a scan carries from one segment to the next besides the [`Scan`] itself.
struct Replay {
    /// When a long replay last logged its progress.
    last_progress: Instant,
    /// Whether the previous segment was rewritten by a scavenge: the log may then have a hole
    /// between its last event and the next segment's name.
    after_compacted: bool,
}

/// Scans one segment into `scan.index`; answers the damage that ends the scan, if any.
fn scan_segment(
    vfs: &dyn Vfs,
    scan: &mut Scan,
    replay: &mut Replay,
    segment: &Listed<'_>,
) -> Result<Option<Damage>> {
    let path = segment.path;
    let file = vfs.open(path, false).map_err(|e| Error::io(path, e))?;
    let file_len = file.len().map_err(|e| Error::io(path, e))?;
    // `offset` is where the valid log ends (the start of a partial batch); `stop` is where
    // the scan stopped. Records between the two are the valid start of a torn batch, so only
    // a valid record at or after `stop` shows damage in the middle.
    let damage = |offset: u64, stop: u64, reason: &str| -> Result<Damage> {
        let torn_tail = segment.is_last && is_torn(&*file, path, stop, file_len)?;
        Ok(Damage {
            segment: segment.number,
            path: path.clone(),
            offset,
            reason: reason.to_owned(),
            file_len,
            torn_tail,
        })
    };
    let index = &mut scan.index;
    if !segment.continuing && replay.after_compacted && segment.first_position > index.len() {
        index.skip_to(segment.first_position);
    }
    if !segment.continuing && segment.first_position != index.len() {
        return misnamed(segment, index.len(), damage).map(Some);
    }
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    let got = read_at_most(&*file, &mut header, 0).map_err(|e| Error::io(path, e))?;
    let version = segment_header_version(&header[..got]);
    if !segment.continuing && version.is_none() {
        return damage(0, 0, INVALID_HEADER).map(Some);
    }
    let compacted = version == Some(SEGMENT_VERSION_COMPACTED);
    replay.after_compacted = compacted;
    if !segment.continuing {
        index.segments.push(SegmentEntry {
            first_position: segment.first_position,
            path: path.clone(),
            file: Arc::clone(&file),
            visible_len: segment.offset,
        });
    }
    let mut batch = BatchAssembler::new(index, compacted, segment.offset);
    let outcome = replay_records(
        &*file,
        segment,
        file_len,
        &mut batch,
        &mut replay.last_progress,
    )?;
    let (whole, start_offset) = (batch.is_whole(), batch.start_offset);
    scan.replayed_events += batch.replayed_events;
    scan.replayed_bytes += batch.end_offset - segment.offset;
    let Some(reason) = stop_reason(outcome, whole, &*file, path, file_len)? else {
        return Ok(None);
    };
    // A partial batch is discarded whole: the damage starts where the batch started.
    let cut = if whole { outcome.offset } else { start_offset };
    damage(cut, outcome.offset, reason).map(Some)
}

/// Feeds the records of `segment` from its scan offset to `file_len` into `batch`, logging
/// the progress of a long replay; answers where and why the records stopped.
fn replay_records(
    file: &dyn VfsFile,
    segment: &Listed<'_>,
    file_len: u64,
    batch: &mut BatchAssembler<'_>,
    last_progress: &mut Instant,
) -> Result<ScanOutcome> {
    let path = segment.path;
    let compacted = batch.compacted;
    scan_records(file, segment.offset, file_len, |at, view| {
        batch.add(at, view)?;
        if !compacted && last_progress.elapsed() >= PROGRESS_EVERY {
            *last_progress = Instant::now();
            tracing::info!(
                events = batch.index.len(),
                segment = %path.display(),
                offset = at,
                "replaying the log"
            );
        }
        Ok(())
    })
    .map_err(|e| Error::io(path, e))
}

/// Why the records of a segment stopped where they did, or `None` when the segment ends
/// cleanly: after a whole batch (`whole`), at the end of the file or before nothing but zeros.
fn stop_reason(
    outcome: ScanOutcome,
    whole: bool,
    file: &dyn VfsFile,
    path: &Path,
    file_len: u64,
) -> Result<Option<&'static str>> {
    Ok(Some(match outcome.stop {
        ScanStop::End if whole => return Ok(None),
        // Zeros after the last whole batch are space the writer preallocated, not damage.
        ScanStop::Invalid(_) if whole && zeros_to_end(file, path, outcome.offset, file_len)? => {
            return Ok(None);
        }
        ScanStop::End | ScanStop::Incomplete => "the file ends inside a batch",
        ScanStop::Invalid(reason) => reason,
    }))
}

/// The damage of a segment whose name does not follow on from the log before it (`head`).
fn misnamed(
    segment: &Listed<'_>,
    head: u64,
    damage: impl Fn(u64, u64, &str) -> Result<Damage>,
) -> Result<Damage> {
    let first_position = segment.first_position;
    let reason = format!(
        "segment name says it starts at position {first_position}, but the log before it ends at {head}"
    );
    let mut found = damage(0, 0, &reason)?;
    // A last segment may only be a leftover of a roll that failed halfway, named
    // for a position the log has since passed. One named past the end of the log
    // proves that the events before its name were acknowledged: they are missing.
    if first_position > head {
        found.torn_tail = false;
        found.reason = format!(
            "{reason}: events {head} to {} were acknowledged (a later segment exists) and are missing",
            first_position - 1
        );
    }
    Ok(found)
}

/// One held-back event of an unfinished batch: id, offset in the segment, its stream name's
/// range in [`BatchAssembler::streams`], and its stream version.
type HeldEvent = ([u8; 16], u32, Range<usize>, u64);

/// Assembles the records of one segment into whole batches and pushes them into the index,
/// checking that positions, batch indexes and stream versions follow on. Events of a batch are
/// held back until the batch is whole; their stream names go into one reused buffer, so replay
/// allocates nothing per event. In a scavenged (compacted) segment every record stands alone.
struct BatchAssembler<'a> {
    index: &'a mut Index,
    /// The segment was rewritten by a scavenge (format [`SEGMENT_VERSION_COMPACTED`]).
    compacted: bool,
    /// The events of the unfinished batch.
    held: Vec<HeldEvent>,
    /// The stream names of `held`, one after the other.
    streams: String,
    /// The event count the unfinished batch's records state.
    batch_len: u32,
    /// Offset of the first record of the unfinished batch.
    start_offset: u64,
    /// Offset just past the last whole batch: where the valid log of the segment ends.
    end_offset: u64,
    /// Events pushed into the index.
    replayed_events: u64,
}

impl<'a> BatchAssembler<'a> {
    /// An assembler for a segment whose scan starts at `offset`.
    fn new(index: &'a mut Index, compacted: bool, offset: u64) -> Self {
        BatchAssembler {
            index,
            compacted,
            held: Vec::new(),
            streams: String::new(),
            batch_len: 0,
            start_offset: offset,
            end_offset: offset,
            replayed_events: 0,
        }
    }

    /// Whether no batch is unfinished.
    fn is_whole(&self) -> bool {
        self.held.is_empty()
    }

    /// Takes the record at offset `at`, or refuses it (which stops the scan there).
    fn add(&mut self, at: u64, view: &RecordView<'_>) -> Result<(), &'static str> {
        let Ok(offset) = u32::try_from(at) else {
            return Err("record offset beyond 4 GiB");
        };
        if self.compacted {
            return self.add_standalone(at, offset, view);
        }
        let fields = &view.fields;
        self.check_sequence(at, fields)?;
        self.batch_len = fields.batch_len;
        if self
            .expected_version(fields.stream)
            .is_some_and(|v| v != fields.stream_version)
        {
            return Err("stream version out of sequence");
        }
        if fields.batch_len == 1 {
            self.index.push_at(
                fields.position,
                fields.id,
                offset,
                fields.stream,
                fields.stream_version,
            );
        } else {
            self.hold(offset, fields);
        }
        if self.is_whole() {
            self.end_batch(at + view.record_len as u64, u64::from(fields.batch_len));
        }
        Ok(())
    }

    /// A record of a scavenged segment: positions and a stream's first version may skip (dead
    /// events were removed); the rest stays strict.
    fn add_standalone(
        &mut self,
        at: u64,
        offset: u32,
        view: &RecordView<'_>,
    ) -> Result<(), &'static str> {
        let fields = &view.fields;
        let index = &mut *self.index;
        if fields.position < index.len() {
            return Err("position out of sequence");
        }
        if index.stream(fields.stream).is_some()
            && fields.stream_version != index.stream_next_version(fields.stream)
        {
            return Err("stream version out of sequence");
        }
        index.push_at(
            fields.position,
            fields.id,
            offset,
            fields.stream,
            fields.stream_version,
        );
        self.end_batch(at + view.record_len as u64, 1);
        Ok(())
    }

    /// Checks that the record at `at` has the next position and its place in the batch.
    fn check_sequence(&mut self, at: u64, fields: &RecordFields<'_>) -> Result<(), &'static str> {
        let expected_position = self.index.len() + self.held.len() as u64;
        if fields.position != expected_position {
            return Err("position out of sequence");
        }
        if self.held.is_empty() {
            if fields.batch_index != 0 {
                return Err("batch does not start at its first event");
            }
            self.start_offset = at;
        } else if fields.batch_index as usize != self.held.len()
            || fields.batch_len != self.batch_len
        {
            return Err("batch events out of sequence");
        }
        Ok(())
    }

    /// The version this stream's next event must have; a stream not seen before may start
    /// anywhere (a scavenge may have removed all its earlier events).
    fn expected_version(&self, stream: &str) -> Option<u64> {
        let in_batch = self
            .held
            .iter()
            .rev()
            .find(|e| &self.streams[e.2.clone()] == stream)
            .map(|e| e.3 + 1);
        in_batch.or_else(|| {
            self.index
                .stream(stream)
                .map(|_| self.index.stream_next_version(stream))
        })
    }

    /// Holds back an event of a batch of several; pushes the whole batch with its last event.
    fn hold(&mut self, offset: u32, fields: &RecordFields<'_>) {
        let start = self.streams.len();
        self.streams.push_str(fields.stream);
        self.held.push((
            fields.id,
            offset,
            start..self.streams.len(),
            fields.stream_version,
        ));
        if fields.batch_index + 1 == fields.batch_len {
            for (id, offset, stream, version) in self.held.drain(..) {
                let position = self.index.len();
                self.index
                    .push_at(position, id, offset, &self.streams[stream], version);
            }
            self.streams.clear();
        }
    }

    /// A batch of `events` ended at `end`: the segment is visible up to there.
    fn end_batch(&mut self, end: u64, events: u64) {
        self.end_offset = end;
        let segment = self
            .index
            .segments
            .last_mut()
            .expect("segment pushed above");
        segment.visible_len = end;
        self.replayed_events += events;
    }
}

/// Whether every byte from `offset` to the end of the file is zero.
fn zeros_to_end(file: &dyn VfsFile, path: &Path, mut offset: u64, file_len: u64) -> Result<bool> {
    let mut chunk = vec![0u8; 1 << 20];
    while offset < file_len {
        let want = ((file_len - offset) as usize).min(chunk.len());
        let got = read_at_most(file, &mut chunk[..want], offset).map_err(|e| Error::io(path, e))?;
        if got == 0 {
            break;
        }
        if chunk[..got].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        offset += got as u64;
    }
    Ok(true)
}

/// Bytes read per window when searching a segment, so that memory stays bounded whatever a
/// (possibly damaged) file claims about lengths.
const SEARCH_WINDOW_BYTES: usize = 1 << 20;
/// Pages that writeback may persist in any order.
const PAGE_BYTES: u64 = 4096;

/// Whether the damage the scan stopped at (`stop`) is a torn tail: no valid record starting a
/// batch follows it, or the ones that do follow a lost page. Writeback may persist the pages
/// of the one unsynced write in any order, so a torn write can leave a valid record after a
/// hole; the hole reads as zeros (unwritten or preallocated space: the engine makes every cut
/// durable before it writes again). A flipped or rotten byte leaves no such hole.
fn is_torn(file: &dyn VfsFile, path: &Path, stop: u64, file_len: u64) -> Result<bool> {
    match batch_start_after(file, path, stop, file_len)? {
        None => Ok(true),
        Some(found) => lost_page_between(file, path, stop, found),
    }
}

/// The offset of the first valid record that starts a batch at or after `offset`.
fn batch_start_after(
    file: &dyn VfsFile,
    path: &Path,
    offset: u64,
    file_len: u64,
) -> Result<Option<u64>> {
    let read = |buf: &mut [u8], at: u64| -> Result<usize> {
        read_at_most(file, buf, at).map_err(|e| Error::io(path, e))
    };
    let mut window = vec![0u8; SEARCH_WINDOW_BYTES + 8];
    let mut start = offset;
    while start + 4 <= file_len {
        let want = ((file_len - start) as usize).min(window.len());
        let got = read(&mut window[..want], start)?;
        let bytes = &window[..got];
        let mut at = 0usize;
        while at + 4 <= bytes.len().min(SEARCH_WINDOW_BYTES + 3) {
            let Some(found) = bytes[at..].windows(4).position(|w| w == RECORD_MAGIC) else {
                break;
            };
            let candidate = at + found;
            if candidate >= SEARCH_WINDOW_BYTES {
                break;
            }
            let absolute = start + candidate as u64;
            if is_batch_start(file, path, absolute, file_len, &bytes[candidate..])? {
                return Ok(Some(absolute));
            }
            at = candidate + 1;
        }
        start += SEARCH_WINDOW_BYTES as u64;
    }
    Ok(None)
}

/// Whether a valid record with `batch_index` 0 starts at `offset` (`head` holds the bytes
/// from there that are already read).
fn is_batch_start(
    file: &dyn VfsFile,
    path: &Path,
    offset: u64,
    file_len: u64,
    head: &[u8],
) -> Result<bool> {
    if head.len() < 8 {
        let mut record = vec![0u8; (file_len - offset).min(MAX_RECORD_LEN as u64) as usize];
        let got = read_at_most(file, &mut record, offset).map_err(|e| Error::io(path, e))?;
        return Ok(batch_start(&record[..got]));
    }
    let len = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as u64;
    if len > MAX_RECORD_LEN as u64 || offset + len > file_len {
        return Ok(false);
    }
    if head.len() as u64 >= len {
        return Ok(batch_start(&head[..len as usize]));
    }
    let mut record = vec![0u8; len as usize];
    let got = read_at_most(file, &mut record, offset).map_err(|e| Error::io(path, e))?;
    Ok(batch_start(&record[..got]))
}

fn batch_start(bytes: &[u8]) -> bool {
    matches!(decode_record(bytes), Decoded::Record(view) if view.fields.batch_index == 0)
}

/// Whether, between `from` (where a record failed to decode) and `to`, writeback lost a page:
/// the bytes from `from` to the next page boundary, or some whole page, are all zero.
fn lost_page_between(file: &dyn VfsFile, path: &Path, from: u64, to: u64) -> Result<bool> {
    let mut page = vec![0u8; PAGE_BYTES as usize];
    let mut start = from;
    loop {
        let boundary = (start / PAGE_BYTES + 1) * PAGE_BYTES;
        if boundary > to {
            return Ok(false);
        }
        let len = (boundary - start) as usize;
        let got = read_at_most(file, &mut page[..len], start).map_err(|e| Error::io(path, e))?;
        if got == len && page[..len].iter().all(|&b| b == 0) {
            return Ok(true);
        }
        start = boundary;
    }
}

/// Cuts a torn tail off the last segment, keeping the cut bytes in a side file.
pub(crate) fn cut_torn_tail(
    vfs: &dyn Vfs,
    dir: &Path,
    index: &mut Index,
    damage: &Damage,
) -> Result<TornTail> {
    let path = &damage.path;
    let file = vfs.open(path, true).map_err(|e| Error::io(path, e))?;
    // Trailing zeros are preallocated space, not data: keep only up to the last written byte.
    let end = written_end(&*file, path, damage.offset, damage.file_len)?;
    let (side_file, bytes) = copy_to_side_file(vfs, path, "torn", &*file, damage.offset, end)?;
    if damage.offset < SEGMENT_HEADER_LEN {
        // The segment header itself is damaged: start the segment over, under the right name.
        drop(file);
        vfs.remove(path).map_err(|e| Error::io(path, e))?;
        fsync_dir(vfs, dir)?;
        if index.segments.last().is_some_and(|s| &s.path == path) {
            index.segments.pop();
        }
        let (new_path, new_file) =
            create_segment(vfs, dir, index.len()).map_err(|e| Error::io(dir, e.source))?;
        index.segments.push(SegmentEntry {
            first_position: index.len(),
            path: new_path,
            file: new_file,
            visible_len: SEGMENT_HEADER_LEN,
        });
    } else {
        file.set_len(damage.offset)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(path, e))?;
    }
    tracing::warn!(
        segment = %path.display(),
        offset = damage.offset,
        bytes,
        side_file = %side_file.display(),
        reason = %damage.reason,
        "cut a torn tail off the log; the cut bytes are kept in the side file"
    );
    Ok(TornTail {
        segment: path.clone(),
        offset: damage.offset,
        bytes,
        side_file,
    })
}

/// Open's and verify's use of a checkpoint's [`Claim`]: when the checkpoint belongs to this
/// log (its ids agree with the log where both have events), damage inside the bytes it covers
/// is media damage, not a torn tail, and a log that ends before its last event has lost
/// acknowledged events. Either way the scan reports damage that open refuses, instead of a
/// silently shorter log whose next append would reuse an acknowledged position.
pub fn apply_claim(scan: &mut Scan, claim: Option<&Claim>) {
    let Some(claim) = claim else {
        return;
    };
    let index = &scan.index;
    let head = index.len();
    let belongs = claim
        .samples
        .iter()
        .filter(|(position, _)| *position < head)
        .all(|(position, id)| index.id_at(*position) == Some(*id));
    if !belongs || claim.events == 0 {
        return;
    }
    if let Some(damage) = &mut scan.damage {
        let covered = claim.segments.get(damage.segment).map_or(0, |s| s.1);
        if damage.torn_tail && damage.offset < covered {
            damage.torn_tail = false;
            damage.reason = format!(
                "{}, inside the first {covered} bytes of this segment, which the index checkpoint shows were acknowledged (media damage, not an interrupted write)",
                damage.reason
            );
        }
        return;
    }
    if head < claim.events {
        let Some(last) = index.segments.last() else {
            return;
        };
        scan.damage = Some(Damage {
            segment: index.segments.len() - 1,
            path: last.path.clone(),
            offset: last.visible_len,
            reason: format!(
                "the log ends at position {head}, but the index checkpoint shows {} events were acknowledged",
                claim.events
            ),
            file_len: last.visible_len,
            torn_tail: false,
        });
    }
}
