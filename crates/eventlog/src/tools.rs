//! Offline tools: `verify` reports the state of a store; `repair` cuts the log back to its
//! last valid batch, moving everything after it aside (never deleting it).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::format::{SEGMENT_HEADER_LEN, read_at_most};
use crate::recovery::{Damage, scan_log};
use crate::segment::{fsync_dir, list_segments, unix_seconds, write_side_file};
use crate::store::lock_dir;
use crate::vfs::{RealFs, Vfs};

/// The state of a store, as `verify` found it.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub dir: PathBuf,
    pub segments: Vec<PathBuf>,
    /// Valid events before any damage.
    pub events: u64,
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
    let checkpoint = match checkpoint::load(vfs, dir, &segments) {
        Ok(Some(resume)) => Ok(resume.index.len()),
        Ok(None) => Ok(0),
        Err(reason) => Err(reason),
    };
    let scan = scan_log(vfs, &segments, None)?;
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
        crate::store::read_index_range(&self.index, from, limit)
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
    pub from: PathBuf,
    /// Byte offset in `from` where the moved part starts (0: the whole file).
    pub offset: u64,
    pub bytes: u64,
    pub to: PathBuf,
}

/// What `repair` did.
#[derive(Debug, Clone)]
pub struct RepairReport {
    /// Events kept.
    pub events: u64,
    pub moved: Vec<Moved>,
    pub checkpoint_removed: bool,
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.moved.is_empty() {
            return writeln!(f, "nothing to repair: {} events, no damage", self.events);
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
    let scan = scan_log(vfs, &segments, None)?;
    let mut report = RepairReport {
        events: scan.index.len(),
        moved: Vec::new(),
        checkpoint_removed: false,
    };
    let Some(damage) = scan.damage else {
        return Ok(report);
    };
    let path = &damage.path;
    if damage.offset < SEGMENT_HEADER_LEN {
        let to = aside_name(path);
        vfs.rename(path, &to).map_err(|e| Error::io(path, e))?;
        report.moved.push(Moved {
            from: path.clone(),
            offset: 0,
            bytes: damage.file_len,
            to,
        });
    } else {
        let file = vfs.open(path, true).map_err(|e| Error::io(path, e))?;
        let mut cut = vec![0u8; (damage.file_len - damage.offset) as usize];
        let got = read_at_most(&*file, &mut cut, damage.offset).map_err(|e| Error::io(path, e))?;
        cut.truncate(got);
        let to = write_side_file(vfs, path, "repair", &cut)?;
        file.set_len(damage.offset)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(path, e))?;
        report.moved.push(Moved {
            from: path.clone(),
            offset: damage.offset,
            bytes: cut.len() as u64,
            to,
        });
    }
    for (_, later) in &segments[damage.segment + 1..] {
        let bytes = vfs.open(later, false).and_then(|f| f.len()).unwrap_or(0);
        let to = aside_name(later);
        vfs.rename(later, &to).map_err(|e| Error::io(later, e))?;
        report.moved.push(Moved {
            from: later.clone(),
            offset: 0,
            bytes,
            to,
        });
    }
    let checkpoint = checkpoint::checkpoint_path(dir);
    match vfs.remove(&checkpoint) {
        Ok(()) => report.checkpoint_removed = true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&checkpoint, e)),
    }
    fsync_dir(vfs, dir)?;
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

fn aside_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".repair-{}", unix_seconds()));
    PathBuf::from(name)
}
