//! Online backup: a consistent copy of a store that a running process keeps writing.
//!
//! The copy takes no lock and writes nothing in the source directory. It works because of
//! three properties of the log:
//! - an acknowledged event is fsynced, so it is in a segment file that exists when the backup
//!   starts (a segment is created before any event is written into it);
//! - a segment other than the active one never changes, except by a scavenge, which replaces
//!   the whole file by an atomic rename and never moves a live event: a copy made from one open
//!   descriptor is either the old file or the new one, and both hold every live event;
//! - the active segment only grows (its preallocated zeros are overwritten in place), so its
//!   bytes read at any moment are the log's prefix, possibly ending in a batch being written.
//!
//! So the backup lists the segments once, copies each of them from one descriptor, and then
//! cuts the copy of the last one back to its last whole valid batch (whole batches only, as
//! recovery would). The checkpoint is not copied (it is a cache; the restored store replays its
//! log once), nor are side files. The copy is written under `<dest>.partial`, fsynced, and
//! renamed to `<dest>` only when complete, so a `<dest>` that exists is a whole backup.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::recovery::{Scan, scan_log};
use crate::segment::{fsync_dir, list_segments};
use crate::vfs::{RealFs, Vfs, read_at_most, write_all_at};

/// Bytes copied per read/write step (memory stays bounded whatever the segment size).
const BACKUP_CHUNK_BYTES: usize = 4 << 20;

/// What a backup copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The finished backup store directory.
    pub dest: PathBuf,
    /// Segment files in the backup.
    pub segments: u64,
    /// Events in the backup (the next position of the restored store).
    pub events: u64,
    /// Bytes of log in the backup.
    pub bytes: u64,
    /// Bytes read after the last whole batch of the active segment and not kept (a batch being
    /// written while the backup read it, or preallocated zeros).
    pub cut_bytes: u64,
}

impl std::fmt::Display for BackupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "backup: {}", self.dest.display())?;
        writeln!(
            f,
            "copied: {} events in {} segments, {} bytes",
            self.events, self.segments, self.bytes
        )
    }
}

/// Copies the store in `source` (which a running process may be writing) to a new store
/// directory `dest`, which must not exist. See the module documentation for why the copy is
/// consistent.
pub fn backup(source: impl AsRef<Path>, dest: impl AsRef<Path>) -> Result<BackupReport> {
    backup_on(&RealFs, source.as_ref(), dest.as_ref())
}

/// [`backup`] on any file system.
pub fn backup_on(vfs: &dyn Vfs, source: &Path, dest: &Path) -> Result<BackupReport> {
    check_source_and_dest(vfs, source, dest)?;
    let partial = partial_path(dest);
    prepare_partial(vfs, &partial)?;
    let segments = list_segments(vfs, source)?;
    let mut copied = copy_segments(vfs, &segments, &partial)?;
    let scan = scan_copy(vfs, &segments, &mut copied)?;
    let cut_bytes = cut_to_whole_batches(vfs, &scan)?;
    fsync_dir(vfs, &partial)?;
    vfs.rename(&partial, dest).map_err(|e| Error::io(dest, e))?;
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsync_dir(vfs, parent)?;
    }
    Ok(BackupReport {
        dest: dest.to_path_buf(),
        segments: copied.len() as u64,
        events: scan.index.len(),
        bytes: scan.index.segments.iter().map(|s| s.visible_len).sum(),
        cut_bytes,
    })
}

/// Checks that `source` is a directory and that `dest` does not exist yet.
fn check_source_and_dest(vfs: &dyn Vfs, source: &Path, dest: &Path) -> Result<()> {
    if !vfs.is_dir(source) {
        return Err(Error::io(
            source,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such store directory"),
        ));
    }
    if vfs.is_dir(dest) {
        return Err(Error::io(
            dest,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the backup destination exists already".to_owned(),
            ),
        ));
    }
    Ok(())
}

/// Creates the empty directory `partial`, emptying what an unfinished backup left there.
fn prepare_partial(vfs: &dyn Vfs, partial: &Path) -> Result<()> {
    if vfs.is_dir(partial) {
        // A backup that did not finish: its files are ours to replace.
        for name in vfs.list(partial).map_err(|e| Error::io(partial, e))? {
            let path = partial.join(name);
            vfs.remove(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    vfs.create_dir_all(partial)
        .map_err(|e| Error::io(partial, e))
}

/// Copies every listed segment into `partial` under its name; answers the copies' listing.
fn copy_segments(
    vfs: &dyn Vfs,
    segments: &[(u64, PathBuf)],
    partial: &Path,
) -> Result<Vec<(u64, PathBuf)>> {
    let mut copied = Vec::with_capacity(segments.len());
    for (first, path) in segments {
        let name = path.file_name().expect("a segment file name");
        let target = partial.join(name);
        copy_file(vfs, path, &target)?;
        copied.push((*first, target));
    }
    Ok(copied)
}

/// Scans the copied segments (dropping a last one that was still being created), and fails
/// on damage anywhere but in the last segment's tail.
fn scan_copy(
    vfs: &dyn Vfs,
    segments: &[(u64, PathBuf)],
    copied: &mut Vec<(u64, PathBuf)>,
) -> Result<Scan> {
    let mut scan = scan_log(vfs, copied, None)?;
    let last = copied.len().saturating_sub(1);
    if let Some(damage) = &scan.damage
        && damage.segment == last
        && damage.offset == 0
        && last > 0
    {
        // A segment being created as the listing ran (its header not yet written): it holds no
        // event acknowledged before the backup began.
        let (_, path) = copied.pop().expect("the last segment");
        vfs.remove(&path).map_err(|e| Error::io(&path, e))?;
        scan = scan_log(vfs, copied, None)?;
    }
    let last = copied.len().saturating_sub(1);
    if let Some(damage) = &scan.damage
        && (damage.segment != last || scan.index.segments.len() != copied.len())
    {
        return Err(Error::Corrupt {
            path: segments[damage.segment].1.clone(),
            offset: damage.offset,
            reason: format!("{} (found while backing up)", damage.reason),
        });
    }
    Ok(scan)
}

/// Cuts every copied segment to its last whole batch (what the scan accepted) and fsyncs it;
/// answers the bytes cut.
fn cut_to_whole_batches(vfs: &dyn Vfs, scan: &Scan) -> Result<u64> {
    let mut cut_bytes = 0;
    for segment in &scan.index.segments {
        let file = vfs
            .open(&segment.path, true)
            .map_err(|e| Error::io(&segment.path, e))?;
        let len = file.len().map_err(|e| Error::io(&segment.path, e))?;
        if len > segment.visible_len {
            cut_bytes += len - segment.visible_len;
            file.set_len(segment.visible_len)
                .map_err(|e| Error::io(&segment.path, e))?;
        }
        file.sync_data().map_err(|e| Error::io(&segment.path, e))?;
    }
    Ok(cut_bytes)
}

/// Where a backup to `dest` is assembled.
fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    dest.with_file_name(name)
}

/// Copies `from` to the new file `to` through one descriptor, in chunks, and fsyncs it.
fn copy_file(vfs: &dyn Vfs, from: &Path, to: &Path) -> Result<()> {
    let source = vfs.open(from, false).map_err(|e| Error::io(from, e))?;
    let target = vfs.create_new(to).map_err(|e| Error::io(to, e))?;
    let mut chunk = vec![0u8; BACKUP_CHUNK_BYTES];
    let mut at = 0u64;
    loop {
        let got = read_at_most(&*source, &mut chunk, at).map_err(|e| Error::io(from, e))?;
        if got == 0 {
            break;
        }
        write_all_at(&*target, &chunk[..got], at).map_err(|e| Error::io(to, e))?;
        at += got as u64;
    }
    target.sync_data().map_err(|e| Error::io(to, e))
}
