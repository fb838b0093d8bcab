//! Segment files on disk: names, listing, creation, directory fsync.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::segment_header;
use crate::vfs::{FileHandle, Vfs, write_all_at};

/// Suffix of segment files; the stem is the first position, zero-padded to 20 digits.
pub const SEGMENT_SUFFIX: &str = ".seg";

pub fn segment_path(dir: &Path, first_position: u64) -> PathBuf {
    dir.join(format!("{first_position:020}{SEGMENT_SUFFIX}"))
}

/// The first position a segment file name stands for, if it is a segment file name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Segment files of `dir`, sorted by first position.
pub fn list_segments(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for name in vfs.list(dir).map_err(|e| Error::io(dir, e))? {
        if let Some(first) = parse_segment_name(&name) {
            segments.push((first, dir.join(name)));
        }
    }
    segments.sort_unstable_by_key(|(first, _)| *first);
    Ok(segments)
}

/// Makes a directory entry change (create, rename) durable.
pub fn fsync_dir(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    vfs.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Creates a new segment holding only its header, fsyncs it and the directory, and returns it
/// opened for reading and writing.
pub fn create_segment(
    vfs: &dyn Vfs,
    dir: &Path,
    first_position: u64,
) -> io::Result<(PathBuf, FileHandle)> {
    let path = segment_path(dir, first_position);
    let file = vfs.create_new(&path)?;
    let written = write_all_at(&*file, &segment_header(), 0).and_then(|()| file.sync_data());
    if let Err(e) = written {
        drop(file);
        let _ = vfs.remove(&path);
        return Err(e);
    }
    vfs.sync_dir(dir)?;
    Ok((path, file))
}

/// Unix seconds now, for side-file names.
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes `bytes` to a new side file next to `segment` (`<segment>.<label>-<unix seconds>`),
/// fsyncs it and the directory, and returns its path.
pub fn write_side_file(
    vfs: &dyn Vfs,
    segment: &Path,
    label: &str,
    bytes: &[u8],
) -> Result<PathBuf> {
    let dir = segment.parent().unwrap_or(Path::new("."));
    let base = segment
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("segment");
    let mut attempt = 0u32;
    loop {
        let name = if attempt == 0 {
            format!("{base}.{label}-{}", unix_seconds())
        } else {
            format!("{base}.{label}-{}-{attempt}", unix_seconds())
        };
        let path = dir.join(name);
        match vfs.create_new(&path) {
            Ok(file) => {
                write_all_at(&*file, bytes, 0)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| Error::io(&path, e))?;
                fsync_dir(vfs, dir)?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => attempt += 1,
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_other_files_are_ignored() {
        let path = segment_path(Path::new("/x"), 1234);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000001234.seg");
        assert_eq!(parse_segment_name(name), Some(1234));
        assert_eq!(parse_segment_name("00000000000000001234.seg.torn-17"), None);
        assert_eq!(parse_segment_name("1234.seg"), None);
        assert_eq!(parse_segment_name("index.ckpt"), None);
    }
}
