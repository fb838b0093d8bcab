//! Offline tools: `verify` reports the state of a store; `repair` cuts the log back to its
//! last valid batch, moving everything after it aside (never deleting it).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::format::{Decoded, MAX_RECORD_LEN, SEGMENT_HEADER_LEN, decode_record, segment_header};
use crate::recovery::{Damage, INVALID_HEADER, Scan, apply_claim, scan_log};
use crate::segment::{copy_to_side_file, fsync_dir, list_segments, unix_seconds};
use crate::store::lock_dir;
use crate::vfs::{RealFs, Vfs, read_at_most, write_all_at};

/// The state of a store, as `verify` found it.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The store directory.
    pub dir: PathBuf,
    /// The segment files, in log order.
    pub segments: Vec<PathBuf>,
    /// Valid events before any damage.
    pub events: u64,
    /// Streams with at least one valid event.
    pub streams: u64,
    /// Bytes of valid log.
    pub valid_bytes: u64,
    /// The first damage, if any.
    pub damage: Option<Damage>,
    /// `Ok(events covered)` / `Err(why unusable)` / `Ok(0)` when there is no checkpoint.
    pub checkpoint: std::result::Result<u64, String>,
}

impl VerifyReport {
    /// `true` when the log has no damage at all (a torn tail counts as damage here: open would
    /// cut it).
    pub fn is_clean(&self) -> bool {
        self.damage.is_none()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "store: {}", self.dir.display())?;
        writeln!(f, "segments: {}", self.segments.len())?;
        writeln!(
            f,
            "valid: {} events in {} streams, {} bytes",
            self.events, self.streams, self.valid_bytes
        )?;
        match &self.checkpoint {
            Ok(0) => writeln!(f, "checkpoint: none (open replays the whole log)")?,
            Ok(events) => writeln!(f, "checkpoint: usable, covers {events} events")?,
            Err(reason) => writeln!(
                f,
                "checkpoint: unusable ({reason}); open replays the whole log"
            )?,
        }
        match &self.damage {
            None => writeln!(f, "status: OK"),
            Some(damage) if damage.torn_tail => writeln!(
                f,
                "status: TORN TAIL in {} at byte {} ({} bytes after it: {}); open will cut it off and keep it in a side file",
                damage.path.display(),
                damage.offset,
                damage.file_len - damage.offset,
                damage.reason
            ),
            Some(damage) => writeln!(
                f,
                "status: DAMAGED in {} at byte {}: {}; open refuses this store, `logbook events repair` cuts the log there and moves the rest aside",
                damage.path.display(),
                damage.offset,
                damage.reason
            ),
        }
    }
}

/// Scans the whole store read-only (it may be open elsewhere) and reports its state.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport> {
    verify_on(&RealFs, dir.as_ref())
}

/// [`verify`] on any file system.
pub fn verify_on(vfs: &dyn Vfs, dir: &Path) -> Result<VerifyReport> {
    if !vfs.is_dir(dir) {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such store directory"),
        ));
    }
    let segments = list_segments(vfs, dir)?;
    let loaded = checkpoint::load(vfs, dir, &segments);
    let checkpoint = match (loaded.resume, loaded.rejected) {
        (_, Some(reason)) => Err(reason),
        (Some(resume), None) => Ok(resume.index.len()),
        (None, None) => Ok(0),
    };
    let mut scan = scan_log(vfs, &segments, None)?;
    apply_claim(&mut scan, loaded.claim.as_ref());
    Ok(VerifyReport {
        dir: dir.to_path_buf(),
        segments: segments.into_iter().map(|(_, path)| path).collect(),
        events: scan.index.len(),
        streams: scan.index.stream_count() as u64,
        valid_bytes: scan.index.segments.iter().map(|s| s.visible_len).sum(),
        damage: scan.damage,
        checkpoint,
    })
}

/// A read-only view of a store's log, for tools that must not disturb a running server
/// (`logbook events dump`): no lock is taken, nothing is cut or written, no checkpoint is used.
/// It serves the valid prefix of the log as scanned when it was opened.
pub struct LogReader {
    index: crate::index::Index,
    /// The first damage after the valid prefix (a torn tail the server would cut at its next
    /// open, or mid-log damage).
    pub damage: Option<Damage>,
}

impl LogReader {
    /// Scans the store in `dir` read-only.
    pub fn open(dir: impl AsRef<Path>) -> Result<LogReader> {
        let dir = dir.as_ref();
        if !RealFs.is_dir(dir) {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such store directory"),
            ));
        }
        let segments = list_segments(&RealFs, dir)?;
        let scan = scan_log(&RealFs, &segments, None)?;
        Ok(LogReader {
            index: scan.index,
            damage: scan.damage,
        })
    }

    /// Events in the valid prefix.
    pub fn len(&self) -> u64 {
        self.index.len()
    }

    /// Whether the valid prefix holds no events.
    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    /// Up to `limit` events from position `from`, checksums verified.
    pub fn read(&self, from: u64, limit: usize) -> Result<Vec<crate::RecordedEvent>> {
        crate::reader::read_index_range(&self.index, from, limit)
    }
}

/// `Ok` when no process holds the store lock of `dir` (the lock is taken and released at once),
/// [`Error::Locked`] when one does. A directory that does not exist is not locked.
pub fn check_unlocked(dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Ok(());
    }
    lock_dir(&RealFs, dir).map(drop)
}

/// One thing `repair` moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The file a part was moved out of.
    pub from: PathBuf,
    /// Byte offset in `from` where the moved part starts (0: the whole file).
    pub offset: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// The side file they went to.
    pub to: PathBuf,
}

/// What `repair` did.
#[derive(Debug, Clone)]
pub struct RepairReport {
    /// Events kept.
    pub events: u64,
    /// What was moved aside, in log order.
    pub moved: Vec<Moved>,
    /// Segments whose damaged header was rewritten (the header is the same for every segment)
    /// because whole batches follow it, with the side file holding the old header bytes.
    pub headers_rewritten: Vec<(PathBuf, PathBuf)>,
    /// Whether the index checkpoint was removed (it described the log before the repair).
    pub checkpoint_removed: bool,
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.moved.is_empty() && self.headers_rewritten.is_empty() && !self.checkpoint_removed {
            return writeln!(f, "nothing to repair: {} events, no damage", self.events);
        }
        for (segment, old) in &self.headers_rewritten {
            writeln!(
                f,
                "rewrote the damaged header of {} (its records are intact; the old header bytes are in {})",
                segment.display(),
                old.display()
            )?;
        }
        for moved in &self.moved {
            writeln!(
                f,
                "moved {} bytes of {} (from byte {}) to {}",
                moved.bytes,
                moved.from.display(),
                moved.offset,
                moved.to.display()
            )?;
        }
        if self.checkpoint_removed {
            writeln!(f, "removed the index checkpoint (it is rebuilt on open)")?;
        }
        writeln!(f, "kept {} events", self.events)
    }
}

/// Truncates the log at its first damage, moving the cut bytes and every later segment aside
/// (next to the segments, suffixed `.repair-<unix seconds>`). Needs the store closed.
pub fn repair(dir: impl AsRef<Path>) -> Result<RepairReport> {
    repair_on(&RealFs, dir.as_ref())
}

/// [`repair`] on any file system.
pub fn repair_on(vfs: &dyn Vfs, dir: &Path) -> Result<RepairReport> {
    let _lock = lock_dir(vfs, dir)?;
    let segments = list_segments(vfs, dir)?;
    let mut scan = scan_log(vfs, &segments, None)?;
    let headers_rewritten = rewrite_damaged_headers(vfs, &segments, &mut scan)?;
    // What open refuses because the checkpoint proves acknowledged events are damaged or
    // missing, repair cuts too (and removes the checkpoint): the explicit way to accept it.
    let loaded = checkpoint::load(vfs, dir, &segments);
    apply_claim(&mut scan, loaded.claim.as_ref());
    let mut report = RepairReport {
        events: scan.index.len(),
        moved: Vec::new(),
        headers_rewritten,
        checkpoint_removed: false,
    };
    let Some(damage) = scan.damage else {
        remove_checkpoint(vfs, dir, &mut report, false)?;
        return Ok(report);
    };
    report.moved.extend(cut_at_damage(vfs, &damage)?);
    for (_, later) in &segments[damage.segment + 1..] {
        report.moved.push(move_aside(vfs, later)?);
    }
    remove_checkpoint(vfs, dir, &mut report, true)?;
    for moved in &report.moved {
        tracing::warn!(
            from = %moved.from.display(),
            offset = moved.offset,
            bytes = moved.bytes,
            to = %moved.to.display(),
            "repair moved damaged log bytes aside"
        );
    }
    Ok(report)
}

/// Rewrites damaged segment headers that whole batches follow, scanning the log again after
/// each; answers each rewritten segment with the side file holding its old header.
fn rewrite_damaged_headers(
    vfs: &dyn Vfs,
    segments: &[(u64, PathBuf)],
    scan: &mut Scan,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut headers_rewritten = Vec::new();
    // A damaged header followed by whole batches: the header is the same for every segment,
    // so write it again and keep the segment (and every later one) instead of moving the
    // rest of the log aside. Then scan again.
    while let Some(damage) = &scan.damage
        && damage.reason == INVALID_HEADER
        && !headers_rewritten.iter().any(|(p, _)| p == &damage.path)
        && records_follow_header(vfs, damage)?
    {
        let path = damage.path.clone();
        let old = rewrite_header(vfs, &path)?;
        headers_rewritten.push((path, old));
        *scan = scan_log(vfs, segments, None)?;
    }
    Ok(headers_rewritten)
}

/// Copies the header of the segment at `path` to a side file, writes a fresh header and
/// fsyncs; answers the side file.
fn rewrite_header(vfs: &dyn Vfs, path: &Path) -> Result<PathBuf> {
    let file = vfs.open(path, true).map_err(|e| Error::io(path, e))?;
    let (old, _) = copy_to_side_file(vfs, path, "repair-header", &*file, 0, SEGMENT_HEADER_LEN)?;
    write_all_at(&*file, &segment_header(), 0)
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io(path, e))?;
    tracing::warn!(
        segment = %path.display(),
        old_header = %old.display(),
        "repair rewrote a damaged segment header"
    );
    Ok(old)
}

/// Cuts the damaged segment at the damage: nothing when the damage is only the checkpoint's
/// claim past the file's end, the whole file moved aside when its header is damaged, else the
/// bytes from the damage on moved to a side file and the segment truncated there.
fn cut_at_damage(vfs: &dyn Vfs, damage: &Damage) -> Result<Option<Moved>> {
    let path = &damage.path;
    if damage.offset >= damage.file_len {
        // Nothing to cut: the checkpoint says more than the log holds; removing it (after)
        // is the repair.
        Ok(None)
    } else if damage.offset < SEGMENT_HEADER_LEN {
        let to = aside_name(path);
        vfs.rename(path, &to).map_err(|e| Error::io(path, e))?;
        Ok(Some(Moved {
            from: path.clone(),
            offset: 0,
            bytes: damage.file_len,
            to,
        }))
    } else {
        let file = vfs.open(path, true).map_err(|e| Error::io(path, e))?;
        let (to, bytes) =
            copy_to_side_file(vfs, path, "repair", &*file, damage.offset, damage.file_len)?;
        file.set_len(damage.offset)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(path, e))?;
        Ok(Some(Moved {
            from: path.clone(),
            offset: damage.offset,
            bytes,
            to,
        }))
    }
}

/// Renames a segment after the damaged one aside, whole.
fn move_aside(vfs: &dyn Vfs, segment: &Path) -> Result<Moved> {
    let bytes = vfs.open(segment, false).and_then(|f| f.len()).unwrap_or(0);
    let to = aside_name(segment);
    vfs.rename(segment, &to)
        .map_err(|e| Error::io(segment, e))?;
    Ok(Moved {
        from: segment.to_path_buf(),
        offset: 0,
        bytes,
        to,
    })
}

/// Removes the checkpoint (it is rebuilt on open) and fsyncs the directory.
fn remove_checkpoint(
    vfs: &dyn Vfs,
    dir: &Path,
    report: &mut RepairReport,
    damaged: bool,
) -> Result<()> {
    if !damaged && report.moved.is_empty() && report.headers_rewritten.is_empty() {
        return Ok(());
    }
    let checkpoint = checkpoint::checkpoint_path(dir);
    match vfs.remove(&checkpoint) {
        Ok(()) => report.checkpoint_removed = true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&checkpoint, e)),
    }
    fsync_dir(vfs, dir)
}

/// Whether a valid record starting the segment's first batch follows its (damaged) header.
fn records_follow_header(vfs: &dyn Vfs, damage: &Damage) -> Result<bool> {
    let path = &damage.path;
    let Some(first_position) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(crate::segment::parse_segment_name)
    else {
        return Ok(false);
    };
    let file = vfs.open(path, false).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 8];
    let got =
        read_at_most(&*file, &mut head, SEGMENT_HEADER_LEN).map_err(|e| Error::io(path, e))?;
    if got < 8 {
        return Ok(false);
    }
    let len = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as usize;
    if len > MAX_RECORD_LEN || SEGMENT_HEADER_LEN + len as u64 > damage.file_len {
        return Ok(false);
    }
    let mut record = vec![0u8; len];
    let got =
        read_at_most(&*file, &mut record, SEGMENT_HEADER_LEN).map_err(|e| Error::io(path, e))?;
    Ok(matches!(
        decode_record(&record[..got]),
        Decoded::Record(view) if view.fields.batch_index == 0 && view.fields.position == first_position
    ))
}

fn aside_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".repair-{}", unix_seconds()));
    PathBuf::from(name)
}
