//! Scavenge: rewriting sealed segments without their dead events, and erasing side files.
//!
//! Which events are dead is the caller's question, an [`IsDead`] (the embedded backend and
//! `logbook events scavenge` answer it from the lifecycle snapshot [`crate::Store::liveness`];
//! tests pass a synthetic one). The
//! engine removes an event only when the question says it is dead **and** every earlier
//! version of its stream is removed too: deleted, truncated, expired and surplus events are
//! always a stream's oldest, and keeping a stream's remaining versions contiguous keeps the
//! index small (a first version per stream) and recovery strict.
//!
//! Per sealed segment that holds a dead event, in position order (the active segment is never
//! rewritten; [`crate::Store::seal_active_segment`] seals it on demand):
//! 1. read it and write its live records, byte for byte, into `<segment>.scavenge-tmp` behind
//!    a header of format [`SEGMENT_VERSION_COMPACTED`], paced to `max_bytes_per_second`;
//!    fsync it;
//! 2. under the checkpoint lock: remove `index.ckpt` (fsync the directory), rename the
//!    temporary file over the segment (fsync the directory), and swap the new file into the
//!    index under its write lock (offsets of the live events change, positions never do);
//! 3. at the end, delete torn-tail side files (they hold only bytes that were never
//!    acknowledged) and write a new checkpoint.
//!
//! A crash at any moment leaves either the old segment or the new one under the segment's
//! name (both hold every live event at its position), no checkpoint or a checkpoint that
//! describes the files, and maybe a `*.scavenge-tmp` file, which open deletes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::background::{Courtesy, let_others_run};
use crate::checkpoint::checkpoint_path;
use crate::error::{Error, Result};
use crate::format::{SEGMENT_HEADER_LEN, SEGMENT_VERSION_COMPACTED, segment_header_of};
use crate::reader::{ScanStop, scan_records};
use crate::segment::fsync_dir;
use crate::shared::Shared;
use crate::vfs::{FileHandle, Vfs, VfsFile, read_at_most, write_all_at};

/// Suffix of a scavenged segment being written (deleted at open: a crash left it).
pub const SCAVENGE_TMP_SUFFIX: &str = ".scavenge-tmp";

/// Label of torn-tail side files (`<segment>.torn-<unix seconds>`).
const TORN_LABEL: &str = ".torn-";

/// Bytes of the source segment read per step (memory stays bounded whatever the segment size).
const COPY_CHUNK_BYTES: usize = 1 << 20;
/// Bytes of the scavenged file written per step, each step fsynced (and at its end). Small, so
/// that an appender's fsync never queues at the disk behind much of the scavenge's data: with
/// 1 MiB steps the appends' p99 during a scavenge was 3.4-3.9 ms, with 256 KiB 2.2-2.7 ms at
/// the same rewrite rate, with 128 KiB no better and the rewrite slower (docs/PERFORMANCE.md).
const WRITE_CHUNK_BYTES: usize = 256 << 10;
/// Old segment bytes renamed over before the index is updated (see `Batch`).
const SWAP_BATCH_BYTES: u64 = 1 << 30;

/// An event as the liveness question sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The event id (UUID bytes).
    pub id: [u8; 16],
    /// The event's stream.
    pub stream: &'a str,
    /// The event's type.
    pub event_type: &'a str,
    /// Its version in the stream.
    pub version: u64,
    /// Its global position.
    pub position: u64,
    /// When it was recorded, in microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
}

/// The question a scavenge asks of every event of a sealed segment: may it go?
pub trait IsDead: Sync {
    /// `true` when the event is dead (deleted, tombstoned, truncated, expired, surplus).
    fn is_dead(&self, event: &Candidate<'_>) -> bool;
}

impl<F: Fn(&Candidate<'_>) -> bool + Sync> IsDead for F {
    fn is_dead(&self, event: &Candidate<'_>) -> bool {
        self(event)
    }
}

/// The pace a server gives a scavenge unless told otherwise ([`ScavengeOptions`]): on this
/// project's 2-core reference machine, a rewrite of 230-245 MB/s of segment with the p99 of 16
/// appenders' durable appends at 1.4-1.9x its value without a scavenge; unpaced, the rewrite
/// ran at 250-400 MB/s and the p99 at 1.9-3x (docs/PERFORMANCE.md).
pub const DEFAULT_MAX_BYTES_PER_SECOND: u64 = 512 * 1024 * 1024;

/// How a scavenge runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScavengeOptions {
    /// Upper bound on the bytes of old segment a scavenge reads per second, so that it leaves
    /// the disk and a core to appends and reads (0: no bound). Each segment is read twice (a
    /// scan that finds the dead events, then the copy of the live ones), so segments are
    /// rewritten at up to half this rate; what is written is at most what is read.
    pub max_bytes_per_second: u64,
}

/// How far a scavenge got (the fields of `GET /admin/scavenge/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScavengeProgress {
    /// Sealed segments when the scavenge began.
    pub segments_total: u64,
    /// Sealed segments examined so far.
    pub segments_done: u64,
    /// Bytes of those segments before the scavenge.
    pub bytes_before: u64,
    /// Bytes of the segments done so far, after the scavenge (rewritten or left as they were).
    pub bytes_after: u64,
    /// Dead events removed so far.
    pub events_removed: u64,
    /// Torn-tail side files deleted.
    pub side_files_removed: u64,
}

/// One sealed segment as the scavenge saw it.
struct Sealed {
    number: usize,
    path: PathBuf,
    file: FileHandle,
    visible_len: u64,
}

/// What to keep of one segment.
struct Plan {
    /// Byte ranges of the live records, in order.
    keep: Vec<(u64, u64)>,
    removed: Vec<u64>,
}

/// Runs a scavenge over the sealed segments of the store behind `shared`. `checkpoint`
/// writes a new checkpoint at the end (through the writer).
pub(crate) fn run(
    shared: &Arc<Shared>,
    is_dead: &dyn IsDead,
    options: ScavengeOptions,
    progress: &dyn Fn(&ScavengeProgress),
    checkpoint: &dyn Fn() -> Result<()>,
) -> Result<ScavengeProgress> {
    let _one_at_a_time = shared.scavenge_lock.lock().expect("scavenge lock");
    let vfs = &*shared.options.storage;
    let sealed: Vec<Sealed> = {
        let index = shared.index.read().expect("index lock");
        let count = index.segments.len().saturating_sub(1);
        index.segments[..count]
            .iter()
            .enumerate()
            .map(|(number, s)| Sealed {
                number,
                path: s.path.clone(),
                file: Arc::clone(&s.file),
                visible_len: s.visible_len,
            })
            .collect()
    };
    let mut report = ScavengeProgress {
        segments_total: sealed.len() as u64,
        bytes_before: sealed.iter().map(|s| s.visible_len).sum(),
        ..ScavengeProgress::default()
    };
    progress(&report);
    let mut pacer = Pacer::new(options.max_bytes_per_second, &shared.closing);
    pacer.check_open()?;
    // Streams that kept an event: their later events stay, whatever the question says.
    let mut kept_streams: HashSet<Box<str>> = HashSet::new();
    let mut batch = Batch::new(shared);
    for segment in sealed {
        pacer.check_open()?;
        let plan = plan(&segment, is_dead, &mut kept_streams, &mut pacer)?;
        if plan.removed.is_empty() {
            report.bytes_after += segment.visible_len;
        } else {
            let (offsets, len) = rewrite(shared, &segment, &plan, &mut pacer)?;
            report.bytes_after += len;
            report.events_removed += plan.removed.len() as u64;
            batch.rename_in(segment, plan.removed, offsets, len)?;
            if batch.old_bytes >= SWAP_BATCH_BYTES {
                batch.install();
            }
        }
        report.segments_done += 1;
        progress(&report);
    }
    batch.install();
    drop(batch);
    report.side_files_removed = remove_side_files(vfs, &shared.dir)?;
    if report.events_removed > 0
        && let Err(e) = checkpoint()
    {
        tracing::warn!(error = %e, "no checkpoint after the scavenge; the next open replays the log");
    }
    tracing::info!(
        segments = report.segments_total,
        events_removed = report.events_removed,
        bytes_before = report.bytes_before,
        bytes_after = report.bytes_after,
        "scavenge done"
    );
    progress(&report);
    Ok(report)
}

/// Reads one sealed segment and decides which of its records stay.
fn plan(
    segment: &Sealed,
    is_dead: &dyn IsDead,
    kept_streams: &mut HashSet<Box<str>>,
    pacer: &mut Pacer,
) -> Result<Plan> {
    let mut plan = Plan {
        keep: Vec::new(),
        removed: Vec::new(),
    };
    let mut courtesy = Courtesy::default();
    let outcome = scan_records(
        &*segment.file,
        SEGMENT_HEADER_LEN,
        segment.visible_len,
        |at, view| {
            courtesy.did(view.record_len);
            let fields = &view.fields;
            let candidate = Candidate {
                id: fields.id,
                stream: fields.stream,
                event_type: fields.event_type,
                version: fields.stream_version,
                position: fields.position,
                recorded_at_micros: fields.recorded_at_micros,
            };
            let end = at + view.record_len as u64;
            if !kept_streams.contains(fields.stream) && is_dead.is_dead(&candidate) {
                plan.removed.push(fields.position);
            } else {
                if !kept_streams.contains(fields.stream) {
                    kept_streams.insert(fields.stream.into());
                }
                match plan.keep.last_mut() {
                    Some(last) if last.1 == at => last.1 = end,
                    _ => plan.keep.push((at, end)),
                }
            }
            Ok(())
        },
    )
    .map_err(|e| Error::io(&segment.path, e))?;
    pacer.spent(segment.visible_len)?;
    if outcome.stop != ScanStop::End || outcome.offset != segment.visible_len {
        return Err(Error::Corrupt {
            path: segment.path.clone(),
            offset: outcome.offset,
            reason: "a sealed segment does not end at its last record (found by scavenge)".into(),
        });
    }
    Ok(plan)
}

/// Writes the live records of `segment` into its temporary file and fsyncs it; answers the
/// new offsets of the live records and the new length.
fn rewrite(
    shared: &Shared,
    segment: &Sealed,
    plan: &Plan,
    pacer: &mut Pacer,
) -> Result<(Vec<u32>, u64)> {
    let vfs = &*shared.options.storage;
    let tmp = tmp_path(&segment.path);
    match vfs.remove(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&tmp, e)),
    }
    let out = vfs.create_new(&tmp).map_err(|e| Error::io(&tmp, e))?;
    write_all_at(&*out, &segment_header_of(SEGMENT_VERSION_COMPACTED), 0)
        .map_err(|e| Error::io(&tmp, e))?;
    let mut copy = LiveCopy::new(segment, &*out, &tmp);
    for &(from, to) in &plan.keep {
        copy.copy(from, to, pacer)?;
    }
    copy.flush(true)?;
    let len = copy.at;
    let offsets = read_back_offsets(&*out, tmp, len)?;
    Ok((offsets, len))
}

/// The copy of a segment's live ranges into its scavenged file, after the header.
///
/// The source is read in windows of [`COPY_CHUNK_BYTES`] and the live ranges gathered into an
/// output buffer of [`WRITE_CHUNK_BYTES`]: a segment where every other record is dead costs a
/// few large I/Os per MiB, not two per record. Each written buffer is fsynced, so no single
/// fsync carries much of a segment's data (an fsync of a 100 MB file stalls the appenders'
/// fsyncs in the same journal commit, and an appender's flush waits at the disk behind the
/// scavenge's writes in flight; see docs/PERFORMANCE.md).
struct LiveCopy<'a> {
    segment: &'a Sealed,
    out: &'a dyn VfsFile,
    tmp: &'a Path,
    /// The source bytes `window_start..window_end`.
    window: Vec<u8>,
    window_start: u64,
    window_end: u64,
    /// Gathered bytes not written yet; they go at `at`.
    pending: Vec<u8>,
    /// Bytes of the new file written so far.
    at: u64,
    /// Bytes written since the last fsync.
    unsynced: u64,
}

impl<'a> LiveCopy<'a> {
    /// A copy of `segment` into `out` (the file at `tmp`), which already holds the header.
    fn new(segment: &'a Sealed, out: &'a dyn VfsFile, tmp: &'a Path) -> Self {
        LiveCopy {
            segment,
            out,
            tmp,
            window: vec![0u8; COPY_CHUNK_BYTES],
            window_start: 0,
            window_end: 0,
            pending: Vec::with_capacity(WRITE_CHUNK_BYTES),
            at: SEGMENT_HEADER_LEN,
            unsynced: 0,
        }
    }

    /// Copies the source bytes `from..to`, reading windows and writing full buffers as needed.
    fn copy(&mut self, from: u64, to: u64, pacer: &mut Pacer) -> Result<()> {
        let mut copy_from = from;
        while copy_from < to {
            if copy_from < self.window_start || copy_from >= self.window_end {
                self.read_window(copy_from, to, pacer)?;
            }
            let until = to.min(self.window_end);
            let room = (WRITE_CHUNK_BYTES - self.pending.len()) as u64;
            let until = until.min(copy_from + room);
            self.pending.extend_from_slice(
                &self.window[(copy_from - self.window_start) as usize
                    ..(until - self.window_start) as usize],
            );
            copy_from = until;
            if self.pending.len() == WRITE_CHUNK_BYTES {
                self.flush(false)?;
            }
        }
        Ok(())
    }

    /// Reads the window starting at `copy_from`; the source must hold at least up to `to`
    /// (or the window's end) there.
    fn read_window(&mut self, copy_from: u64, to: u64, pacer: &mut Pacer) -> Result<()> {
        let segment = self.segment;
        let want = ((segment.visible_len - copy_from) as usize).min(self.window.len());
        let got = read_at_most(&*segment.file, &mut self.window[..want], copy_from)
            .map_err(|e| Error::io(&segment.path, e))?;
        if (got as u64) < (to - copy_from).min(want as u64) {
            return Err(Error::Corrupt {
                path: segment.path.clone(),
                offset: copy_from + got as u64,
                reason: "a sealed segment is shorter than the index says".into(),
            });
        }
        self.window_start = copy_from;
        self.window_end = copy_from + got as u64;
        pacer.spent(got as u64)
    }

    /// Writes the pending bytes; fsyncs once [`WRITE_CHUNK_BYTES`] are unsynced, or (with
    /// `force_sync`) whatever is.
    fn flush(&mut self, force_sync: bool) -> Result<()> {
        if !self.pending.is_empty() {
            write_all_at(self.out, &self.pending, self.at).map_err(|e| Error::io(self.tmp, e))?;
            self.at += self.pending.len() as u64;
            self.unsynced += self.pending.len() as u64;
            self.pending.clear();
        }
        if self.unsynced >= WRITE_CHUNK_BYTES as u64 || (force_sync && self.unsynced > 0) {
            self.out.sync_data().map_err(|e| Error::io(self.tmp, e))?;
            self.unsynced = 0;
        }
        Ok(())
    }
}

/// The new offsets, read back from the scavenged file `out` (at `tmp`) up to `len`: each kept
/// record moves back by the bytes removed before it.
fn read_back_offsets(out: &dyn VfsFile, tmp: PathBuf, len: u64) -> Result<Vec<u32>> {
    let mut offsets = Vec::new();
    let mut scanned = Ok(());
    let mut courtesy = Courtesy::default();
    let outcome = scan_records(out, SEGMENT_HEADER_LEN, len, |offset, view| {
        courtesy.did(view.record_len);
        match u32::try_from(offset) {
            Ok(offset) => offsets.push(offset),
            Err(_) => scanned = Err("record offset beyond 4 GiB"),
        }
        Ok(())
    })
    .map_err(|e| Error::io(&tmp, e))?;
    if outcome.stop != ScanStop::End || scanned.is_err() {
        return Err(Error::Corrupt {
            path: tmp,
            offset: outcome.offset,
            reason: "the scavenged segment does not read back".into(),
        });
    }
    Ok(offsets)
}

/// Scavenged segments renamed into place whose index side is not installed yet. Until it is,
/// readers keep the old files' handles (the renamed-over files stay readable through them)
/// and the old offsets, a consistent view; the checkpoint lock is held from the first rename
/// to the install, so no checkpoint can describe old offsets beside new files. Installing
/// once per [`SWAP_BATCH_BYTES`] of old segments (and at the end), not once per segment,
/// spends the O(live events) rebuild of the index that many times less; the old files' disk
/// space returns when their handles close at the install.
/// Dropping it (also on an error return) installs what was renamed.
struct Batch<'a> {
    shared: &'a Shared,
    checkpoint_lock: Option<std::sync::MutexGuard<'a, ()>>,
    segments: Vec<(usize, Vec<u32>, FileHandle, u64)>,
    removed: Vec<u64>,
    old_bytes: u64,
    /// The replaced files' last handles but for in-flight reads, closed at the install (not
    /// when the scavenge ends), so that their space returns a batch at a time.
    old_files: Vec<FileHandle>,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.install();
    }
}

impl<'a> Batch<'a> {
    fn new(shared: &'a Shared) -> Batch<'a> {
        Batch {
            shared,
            checkpoint_lock: None,
            segments: Vec::new(),
            removed: Vec::new(),
            old_bytes: 0,
            old_files: Vec::new(),
        }
    }

    /// Renames the scavenged file over `segment`: the checkpoint goes first (it describes the
    /// old file), then the rename; both fsynced.
    fn rename_in(
        &mut self,
        segment: Sealed,
        removed: Vec<u64>,
        offsets: Vec<u32>,
        len: u64,
    ) -> Result<()> {
        let shared = self.shared;
        let vfs = &*shared.options.storage;
        if self.checkpoint_lock.is_none() {
            self.checkpoint_lock = Some(shared.checkpoint_lock.lock().expect("checkpoint lock"));
        }
        let checkpoint = checkpoint_path(&shared.dir);
        // Held open across the removal and given back in steps: hundreds of MB freed in one
        // journal commit stalled every appender's fsync.
        let old_checkpoint = vfs.open(&checkpoint, true).ok();
        match vfs.remove(&checkpoint) {
            Ok(()) => fsync_dir(vfs, &shared.dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&checkpoint, e)),
        }
        if let Some(old) = old_checkpoint {
            crate::background::free_in_steps(&*old);
        }
        let tmp = tmp_path(&segment.path);
        vfs.rename(&tmp, &segment.path)
            .map_err(|e| Error::io(&segment.path, e))?;
        fsync_dir(vfs, &shared.dir)?;
        let file = vfs
            .open(&segment.path, false)
            .map_err(|e| Error::io(&segment.path, e))?;
        self.removed.extend(removed);
        self.segments.push((segment.number, offsets, file, len));
        self.old_bytes += segment.visible_len;
        self.old_files.push(segment.file);
        Ok(())
    }

    /// Installs the index side of the renamed segments: the compaction and the new id table
    /// are built under short read locks (O(live events)), so the write lock, which stops
    /// appends and reads, is held only to install them.
    fn install(&mut self) {
        if self.segments.is_empty() {
            return;
        }
        let shared = self.shared;
        let segments: Vec<(usize, &[u32])> = self
            .segments
            .iter()
            .map(|(number, offsets, _, _)| (*number, offsets.as_slice()))
            .collect();
        let replacement =
            crate::index::Index::prepare_replacement(&shared.index, &segments, &self.removed);
        let files = self
            .segments
            .drain(..)
            .map(|(_, _, file, len)| (file, len))
            .collect();
        let retired = {
            let mut index = shared.index.write().expect("index lock");
            let retired = index.apply_replacement(replacement, files);
            // Erased events' data leaves memory with their records (`crate::cache`).
            shared.read_cache.clear();
            retired
        };
        // Freed outside the lock: the old vectors and table are hundreds of MB.
        drop(retired);
        self.removed.clear();
        self.old_bytes = 0;
        self.checkpoint_lock = None;
        // The replaced segments' blocks return when these last handles close. They are not
        // shrunk in steps as the replaced checkpoint is: another process (a backup, `verify`)
        // may be reading the old file through its own descriptor, and truncating the inode
        // would cut that copy short.
        self.old_files.clear();
    }
}

fn tmp_path(segment: &Path) -> PathBuf {
    let mut name = segment.as_os_str().to_os_string();
    name.push(SCAVENGE_TMP_SUFFIX);
    PathBuf::from(name)
}

/// Deletes torn-tail side files (bytes cut off at open, never acknowledged) and leftover
/// temporary scavenge files; answers how many side files went.
fn remove_side_files(vfs: &dyn Vfs, dir: &Path) -> Result<u64> {
    let mut removed = 0;
    for name in vfs.list(dir).map_err(|e| Error::io(dir, e))? {
        let torn = name.contains(TORN_LABEL);
        if torn || name.ends_with(SCAVENGE_TMP_SUFFIX) {
            let path = dir.join(&name);
            vfs.remove(&path).map_err(|e| Error::io(&path, e))?;
            removed += u64::from(torn);
        } else if name.contains(".repair-") {
            tracing::warn!(
                file = %name,
                "a repair side file holds cut log bytes a scavenge cannot erase; delete it once inspected"
            );
        }
    }
    fsync_dir(vfs, dir)?;
    Ok(removed)
}

/// Deletes temporary files a scavenge interrupted by a crash left (at open).
pub(crate) fn remove_leftovers(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    let mut any = false;
    for name in vfs.list(dir).map_err(|e| Error::io(dir, e))? {
        if name.ends_with(SCAVENGE_TMP_SUFFIX) {
            let path = dir.join(&name);
            vfs.remove(&path).map_err(|e| Error::io(&path, e))?;
            any = true;
        }
    }
    if any {
        fsync_dir(vfs, dir)?;
    }
    Ok(())
}

/// Longest a paced scavenge sleeps before it looks whether the store is closing.
const PACER_NAP: Duration = Duration::from_millis(20);

/// Keeps a scavenge at or below a byte rate, and stops it when the store closes: a slow
/// scavenge never holds up a shutdown (it is crash-safe at every step, so stopping between
/// two is safe).
struct Pacer<'a> {
    max_bytes_per_second: u64,
    started: Instant,
    bytes: u64,
    closing: &'a AtomicBool,
}

impl<'a> Pacer<'a> {
    fn new(max_bytes_per_second: u64, closing: &'a AtomicBool) -> Pacer<'a> {
        Pacer {
            max_bytes_per_second,
            started: Instant::now(),
            bytes: 0,
            closing,
        }
    }

    /// [`Error::Closed`] once the store is closing.
    fn check_open(&self) -> Result<()> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Counts `bytes` of I/O and sleeps while the run is ahead of its rate; [`Error::Closed`]
    /// when the store starts closing meanwhile.
    /// Each call also lets waiting threads have the core (see [`crate::background`]).
    fn spent(&mut self, bytes: u64) -> Result<()> {
        let_others_run();
        self.bytes += bytes;
        self.check_open()?;
        if self.max_bytes_per_second == 0 {
            return Ok(());
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.max_bytes_per_second as f64);
        while let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            if ahead.is_zero() {
                break;
            }
            std::thread::sleep(ahead.min(PACER_NAP));
            self.check_open()?;
        }
        Ok(())
    }
}

/// `logbook events scavenge <dir>`: opens the store (so no server may have it open), seals
/// its active segment, and scavenges every segment with the store's own lifecycle answer (see
/// [`crate::Store::liveness`]); then closes it, writing a checkpoint.
pub fn scavenge_offline(dir: impl AsRef<Path>) -> Result<ScavengeProgress> {
    let store = crate::Store::open(dir, crate::Options::default())?;
    store.seal_active_segment()?;
    let liveness = store.liveness();
    let is_dead = move |event: &Candidate<'_>| {
        !liveness.is_live(event.stream, event.version, event.recorded_at_micros)
    };
    let report = store.scavenge(&is_dead, ScavengeOptions::default(), &|_| {})?;
    store.close();
    Ok(report)
}

impl std::fmt::Display for ScavengeProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "segments: {} of {} scanned",
            self.segments_done, self.segments_total
        )?;
        writeln!(f, "events removed: {}", self.events_removed)?;
        writeln!(
            f,
            "bytes: {} before, {} after",
            self.bytes_before, self.bytes_after
        )?;
        writeln!(
            f,
            "torn-tail side files removed: {}",
            self.side_files_removed
        )
    }
}
