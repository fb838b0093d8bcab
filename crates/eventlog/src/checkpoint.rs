//! Index checkpoints: a cache of the index so that open replays only the tail of the log.
//!
//! A checkpoint is one file, `index.ckpt`, replaced atomically (write a temporary file, fsync
//! it, rename it over the old one, fsync the directory). It records the segments it covers
//! with the byte length covered in each, every covered event's id and offset, and every
//! stream's positions, followed by a CRC32C of everything before it. Loading checks the
//! checksum, the bounds of every field, and that the log still holds what the checkpoint says
//! (segment names, lengths, and the id of the last covered record); any mismatch means the
//! caller falls back to a full replay. A checkpoint can therefore only ever be missing, stale
//! or wrong, never harmful. Layout: `docs/FORMAT.md`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{Decoded, decode_record, read_at_most};
use crate::index::Index;
use crate::recovery::Resume;
use crate::segment::fsync_dir;

pub const CHECKPOINT_FILE: &str = "index.ckpt";
const CHECKPOINT_TMP_FILE: &str = "index.ckpt.tmp";
const MAGIC: [u8; 8] = *b"LBCKPT01";

pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Serializes the visible part of `index`.
pub fn encode(index: &Index) -> Vec<u8> {
    let events = index.len();
    let mut out = Vec::with_capacity(64 + events as usize * 28);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&events.to_le_bytes());
    out.extend_from_slice(&(index.segments.len() as u32).to_le_bytes());
    for segment in &index.segments {
        out.extend_from_slice(&segment.first_position.to_le_bytes());
        out.extend_from_slice(&segment.visible_len.to_le_bytes());
    }
    for position in 0..events {
        out.extend_from_slice(&index.id_at(position).expect("position below len"));
        out.extend_from_slice(
            &index
                .offset_at(position)
                .expect("position below len")
                .to_le_bytes(),
        );
    }
    out.extend_from_slice(&(index.stream_count() as u64).to_le_bytes());
    for (name, positions) in index.streams() {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(positions.len() as u64).to_le_bytes());
        for position in positions {
            out.extend_from_slice(&position.to_le_bytes());
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Writes `bytes` as the checkpoint of `dir`, atomically.
pub fn write(dir: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(CHECKPOINT_TMP_FILE);
    let written = (|| -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    written.map_err(|e| Error::io(&tmp, e))?;
    let path = checkpoint_path(dir);
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    fsync_dir(dir)
}

/// A little reader that never panics on short input.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or("checkpoint is truncated")?;
        let part = &self.bytes[self.at..end];
        self.at = end;
        Ok(part)
    }
    fn u16(&mut self) -> std::result::Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
}

/// Loads the checkpoint of `dir` and checks it against the listed segments. `Ok(None)` when
/// there is no checkpoint; `Err(reason)` when it is unusable (the caller replays fully).
pub fn load(
    dir: &Path,
    segments: &[(u64, PathBuf)],
) -> std::result::Result<Option<Resume>, String> {
    let path = checkpoint_path(dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if bytes.len() < MAGIC.len() + 4 {
        return Err("checkpoint is truncated".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4")) {
        return Err("checkpoint checksum mismatch".into());
    }
    let mut cursor = Cursor { bytes: body, at: 0 };
    if cursor.take(8)? != MAGIC {
        return Err("not a checkpoint of this format".into());
    }
    let events = cursor.u64()?;
    let segment_count = cursor.u32()? as usize;
    if segment_count == 0 || segment_count > segments.len() {
        return Err(format!(
            "checkpoint covers {segment_count} segments, the log has {}",
            segments.len()
        ));
    }
    let mut covered = Vec::with_capacity(segment_count);
    for listed in &segments[..segment_count] {
        let first_position = cursor.u64()?;
        let visible_len = cursor.u64()?;
        if first_position != listed.0 {
            return Err(format!(
                "checkpoint names a segment starting at {first_position}, the log has {}",
                listed.0
            ));
        }
        let file = File::open(&listed.1).map_err(|e| format!("{}: {e}", listed.1.display()))?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if len < visible_len {
            return Err(format!(
                "{} is {len} bytes, shorter than the {visible_len} the checkpoint covers",
                listed.1.display()
            ));
        }
        covered.push((first_position, visible_len, listed.1.clone(), file));
    }
    let event_bytes = (events as usize)
        .checked_mul(20)
        .ok_or("checkpoint event count overflows")?;
    if event_bytes > body.len() {
        return Err("checkpoint is truncated".into());
    }
    let mut index = Index::default();
    index.reserve(events as usize);
    let mut segment_number = 0usize;
    for position in 0..events {
        while segment_number + 1 < covered.len() && covered[segment_number + 1].0 <= position {
            segment_number += 1;
        }
        let id: [u8; 16] = cursor.take(16)?.try_into().expect("16");
        let offset = cursor.u32()?;
        if u64::from(offset) >= covered[segment_number].1 {
            return Err(format!("offset of position {position} is past its segment"));
        }
        index.push_without_stream(id, offset);
    }
    let stream_count = cursor.u64()?;
    let mut positions_seen = 0u64;
    for _ in 0..stream_count {
        let name_len = cursor.u16()? as usize;
        let name = std::str::from_utf8(cursor.take(name_len)?)
            .map_err(|_| "stream name is not UTF-8")?
            .into();
        let count = cursor.u64()?;
        if count == 0 || count > events {
            return Err("stream position count out of bounds".into());
        }
        let mut positions = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let position = cursor.u64()?;
            if position >= events || positions.last().is_some_and(|&p| p >= position) {
                return Err("stream positions out of order".into());
            }
            positions.push(position);
        }
        positions_seen += count;
        index.set_stream(name, positions);
    }
    if positions_seen != events || cursor.at != body.len() {
        return Err("checkpoint streams do not cover its events exactly".into());
    }
    for (first_position, visible_len, path, file) in covered {
        index.segments.push(crate::index::SegmentEntry {
            first_position,
            path,
            file: std::sync::Arc::new(file),
            visible_len,
        });
    }
    if events > 0 {
        check_last_record(&index, events - 1)?;
    }
    let segment = segment_count - 1;
    let offset = index.segments[segment].visible_len;
    Ok(Some(Resume {
        index,
        segment,
        offset,
    }))
}

/// The log must hold, at the checkpoint's last position, a valid record with the checkpoint's id.
fn check_last_record(index: &Index, position: u64) -> std::result::Result<(), String> {
    let location = index
        .location(position)
        .ok_or("last position has no location")?;
    let mut bytes = vec![0u8; location.len];
    let got =
        read_at_most(&location.file, &mut bytes, location.offset).map_err(|e| e.to_string())?;
    match decode_record(&bytes[..got]) {
        Decoded::Record(view)
            if view.fields.position == position
                && Some(view.fields.id) == index.id_at(position)
                && view.record_len == location.len =>
        {
            Ok(())
        }
        _ => Err(format!(
            "the log does not hold the checkpoint's last event at position {position}"
        )),
    }
}
