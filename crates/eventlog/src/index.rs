//! The in-memory index: a cache of the log, rebuilt from it on open.
//!
//! Memory is the constraint (at most 64 bytes per event), so the index stores per position
//! only the event id (16 bytes) and the record's offset within its segment (4 bytes; segments
//! are smaller than 4 GiB). The id lookup table holds bare positions (8 bytes per slot) and
//! hashes/compares through `ids`, instead of a map that would store each id twice. Each stream
//! keeps the positions of its events in version order (8 bytes per event).

use std::collections::HashMap;
use std::fs::File;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Arc;

use hashbrown::HashTable;

/// One segment as readers see it.
#[derive(Debug)]
pub struct SegmentEntry {
    /// Position of the first event the segment holds (also its file name).
    pub first_position: u64,
    pub path: PathBuf,
    /// A read handle; readers use positional reads, so it is shared without a cursor.
    pub file: Arc<File>,
    /// Bytes of the segment that hold visible records (header included).
    pub visible_len: u64,
}

/// Where a record lives.
#[derive(Debug, Clone)]
pub struct Location {
    pub file: Arc<File>,
    pub path: PathBuf,
    pub offset: u64,
    pub len: usize,
}

/// id -> position, position -> location, stream -> positions.
#[derive(Debug, Default)]
pub struct Index {
    ids: Vec<[u8; 16]>,
    offsets: Vec<u32>,
    table: HashTable<u64>,
    hasher: std::hash::RandomState,
    streams: HashMap<Box<str>, Vec<u64>>,
    pub segments: Vec<SegmentEntry>,
}

impl Index {
    /// Number of visible events, which is also the next position.
    pub fn len(&self) -> u64 {
        self.ids.len() as u64
    }

    pub fn reserve(&mut self, events: usize) {
        self.ids.reserve(events);
        self.offsets.reserve(events);
        let (ids, hasher) = (&self.ids, &self.hasher);
        self.table
            .reserve(events, |&position| hasher.hash_one(ids[position as usize]));
    }

    /// Adds the next event. `offset` is within the last segment in `segments`.
    pub fn push(&mut self, id: [u8; 16], offset: u32, stream: &str) {
        let position = self.ids.len() as u64;
        self.ids.push(id);
        self.offsets.push(offset);
        let (ids, hasher) = (&self.ids, &self.hasher);
        let hash = hasher.hash_one(id);
        self.table
            .insert_unique(hash, position, |&p| hasher.hash_one(ids[p as usize]));
        match self.streams.get_mut(stream) {
            Some(positions) => positions.push(position),
            None => {
                self.streams.insert(stream.into(), vec![position]);
            }
        }
    }

    /// Adds the next event of a stream whose positions are already known (checkpoint loading).
    pub fn push_without_stream(&mut self, id: [u8; 16], offset: u32) {
        let position = self.ids.len() as u64;
        self.ids.push(id);
        self.offsets.push(offset);
        let (ids, hasher) = (&self.ids, &self.hasher);
        let hash = hasher.hash_one(id);
        self.table
            .insert_unique(hash, position, |&p| hasher.hash_one(ids[p as usize]));
    }

    /// Sets a stream's positions wholesale (checkpoint loading).
    pub fn set_stream(&mut self, stream: Box<str>, positions: Vec<u64>) {
        self.streams.insert(stream, positions);
    }

    pub fn position_of(&self, id: &[u8; 16]) -> Option<u64> {
        let hash = self.hasher.hash_one(id);
        self.table
            .find(hash, |&p| &self.ids[p as usize] == id)
            .copied()
    }

    pub fn id_at(&self, position: u64) -> Option<[u8; 16]> {
        self.ids.get(position as usize).copied()
    }

    pub fn offset_at(&self, position: u64) -> Option<u32> {
        self.offsets.get(position as usize).copied()
    }

    pub fn stream(&self, stream: &str) -> Option<&[u64]> {
        self.streams.get(stream).map(Vec::as_slice)
    }

    pub fn streams(&self) -> impl Iterator<Item = (&str, &[u64])> {
        self.streams
            .iter()
            .map(|(name, positions)| (&**name, positions.as_slice()))
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// The version of the stream's last event.
    pub fn stream_version(&self, stream: &str) -> Option<u64> {
        self.streams
            .get(stream)
            .map(|positions| positions.len() as u64 - 1)
    }

    /// Index into `segments` of the segment holding `position`.
    fn segment_of(&self, position: u64) -> usize {
        self.segments
            .partition_point(|segment| segment.first_position <= position)
            - 1
    }

    /// Location of the record at `position`, or `None` past the end.
    pub fn location(&self, position: u64) -> Option<Location> {
        let offset = u64::from(*self.offsets.get(position as usize)?);
        let segment_index = self.segment_of(position);
        let segment = &self.segments[segment_index];
        let next = position + 1;
        let end = match self.segments.get(segment_index + 1) {
            Some(following) if following.first_position == next => segment.visible_len,
            _ if next < self.len() => u64::from(self.offsets[next as usize]),
            _ => segment.visible_len,
        };
        Some(Location {
            file: Arc::clone(&segment.file),
            path: segment.path.clone(),
            offset,
            len: (end - offset) as usize,
        })
    }

    /// The contiguous byte range holding positions `from..to` (`to` exclusive), cut short at
    /// the end of `from`'s segment and after about `max_bytes`: the location and the position
    /// after the last one covered. Always covers at least `from`.
    pub fn span(&self, from: u64, to: u64, max_bytes: usize) -> Option<(Location, u64)> {
        let first = self.location(from)?;
        let segment_index = self.segment_of(from);
        let segment_end = self
            .segments
            .get(segment_index + 1)
            .map_or(self.len(), |s| s.first_position);
        let to = to.min(segment_end).min(self.len()).max(from + 1);
        let starts = &self.offsets[(from + 1) as usize..to as usize];
        let within = starts
            .partition_point(|&start| (u64::from(start) - first.offset) as usize <= max_bytes)
            as u64;
        let to = if within == to - from - 1 {
            to
        } else {
            from + within.max(1)
        };
        let last = self.location(to - 1)?;
        let len = (last.offset + last.len as u64 - first.offset) as usize;
        Some((Location { len, ..first }, to))
    }

    /// Bytes the index holds on the heap, approximately (for metrics and the memory benchmark).
    pub fn heap_bytes(&self) -> usize {
        self.ids.capacity() * 16
            + self.offsets.capacity() * 4
            + self.table.capacity() * 9
            + self
                .streams
                .iter()
                .map(|(name, positions)| name.len() + positions.capacity() * 8 + 64)
                .sum::<usize>()
    }
}
