//! Segment files on disk: names, listing, creation, directory fsync.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::segment_header;
use crate::vfs::{FileHandle, Vfs, VfsFile, read_at_most, write_all_at};

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

/// Why [`create_segment`] failed, and whether it left a file behind.
#[derive(Debug)]
pub struct CreateFailed {
    pub source: io::Error,
    /// The half-made segment, when removing it failed too: it must be removed before the log
    /// grows past its name.
    pub leftover: Option<PathBuf>,
}

/// Creates a new segment holding only its header, fsyncs it and the directory, and returns it
/// opened for reading and writing. All or nothing: when a step fails the file is removed again
/// (and [`CreateFailed::leftover`] names it if even that failed).
pub fn create_segment(
    vfs: &dyn Vfs,
    dir: &Path,
    first_position: u64,
) -> std::result::Result<(PathBuf, FileHandle), CreateFailed> {
    let path = segment_path(dir, first_position);
    let file = vfs.create_new(&path).map_err(|source| CreateFailed {
        source,
        leftover: None,
    })?;
    let written = write_all_at(&*file, &segment_header(), 0)
        .and_then(|()| file.sync_data())
        .and_then(|()| vfs.sync_dir(dir));
    match written {
        Ok(()) => Ok((path, file)),
        Err(source) => {
            drop(file);
            Err(CreateFailed {
                source,
                leftover: remove_created(vfs, dir, &path).err().map(|_| path),
            })
        }
    }
}

/// Removes a file this process created and makes that durable (best effort for the fsync:
/// until it lands, the file may come back after a power cut, which recovery tolerates for an
/// empty segment).
pub fn remove_created(vfs: &dyn Vfs, dir: &Path, path: &Path) -> io::Result<()> {
    match vfs.remove(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "could not remove a half-made segment");
            return Err(e);
        }
    }
    if let Err(e) = vfs.sync_dir(dir) {
        tracing::warn!(error = %e, "could not fsync the directory after removing a half-made segment");
    }
    Ok(())
}

/// Unix seconds now, for side-file names.
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Bytes copied per step into a side file.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// Copies bytes `from..to` of `source` (the file at `segment`) to a new side file next to it
/// (`<segment>.<label>-<unix seconds>`), in chunks (memory stays bounded whatever the file's
/// length), fsyncs it and the directory, and returns its path and the bytes copied.
pub fn copy_to_side_file(
    vfs: &dyn Vfs,
    segment: &Path,
    label: &str,
    source: &dyn VfsFile,
    from: u64,
    to: u64,
) -> Result<(PathBuf, u64)> {
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
                let mut chunk = vec![0u8; COPY_CHUNK_BYTES.min(to.saturating_sub(from) as usize)];
                let mut at = from;
                while at < to {
                    let want = ((to - at) as usize).min(chunk.len());
                    let got = read_at_most(source, &mut chunk[..want], at)
                        .map_err(|e| Error::io(segment, e))?;
                    if got == 0 {
                        break;
                    }
                    write_all_at(&*file, &chunk[..got], at - from)
                        .map_err(|e| Error::io(&path, e))?;
                    at += got as u64;
                }
                file.sync_data().map_err(|e| Error::io(&path, e))?;
                fsync_dir(vfs, dir)?;
                return Ok((path, at - from));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => attempt += 1,
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
}

/// The end of the last non-zero byte of `file` in `from..to` (`from` when all are zero).
pub fn written_end(file: &dyn VfsFile, path: &Path, from: u64, to: u64) -> Result<u64> {
    let mut chunk = vec![0u8; COPY_CHUNK_BYTES.min(to.saturating_sub(from) as usize)];
    let mut end = from;
    let mut at = from;
    while at < to {
        let want = ((to - at) as usize).min(chunk.len());
        let got = read_at_most(file, &mut chunk[..want], at).map_err(|e| Error::io(path, e))?;
        if got == 0 {
            break;
        }
        if let Some(last) = chunk[..got].iter().rposition(|&b| b != 0) {
            end = at + last as u64 + 1;
        }
        at += got as u64;
    }
    Ok(end)
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
