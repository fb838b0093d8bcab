//! The in-memory index: a cache of the log, rebuilt from it on open.
//!
//! Memory is the constraint (at most 64 bytes per event), so the index stores per position
//! only the event id (16 bytes) and the record's offset within its segment (4 bytes; segments
//! are smaller than 4 GiB). The id lookup table ([`IdTable`]) is open addressing over `u64`
//! slots holding a position and a 24-bit hash tag, comparing through `ids`, instead of a map
//! that would store each id twice (8-16 bytes per event at its load factor). Each stream keeps
//! the positions of its events in version order (8 bytes per event). Total: 36-44 bytes per
//! event plus a small cost per stream.

use crate::vfs::{FileHandle, VfsFile};
use indexmap::IndexMap;
use std::path::{Path, PathBuf};

/// One segment as readers see it.
#[derive(Debug)]
pub struct SegmentEntry {
    /// Position of the first event the segment holds (also its file name).
    pub first_position: u64,
    pub path: PathBuf,
    /// A read handle; readers use positional reads, so it is shared without a cursor.
    pub file: FileHandle,
    /// Bytes of the segment that hold visible records (header included).
    pub visible_len: u64,
}

/// Where a record lives. Borrowed from the index: read it while holding the index lock
/// (readers share that lock, so this costs no contention, and no reference count is touched
/// per read).
#[derive(Debug, Clone, Copy)]
pub struct Location<'a> {
    pub file: &'a dyn VfsFile,
    pub path: &'a Path,
    pub offset: u64,
    pub len: usize,
}

/// The stream map's hasher: fast, randomly seeded per process (stream names come from clients).
type StreamHasher = foldhash::fast::RandomState;

/// id -> position, position -> location, stream -> positions.
#[derive(Debug, Default)]
pub struct Index {
    ids: Vec<[u8; 16]>,
    offsets: Vec<u32>,
    table: IdTable,
    /// In creation order, so that a checkpoint can walk them in short stretches under the
    /// read lock while new streams are added at the end.
    streams: IndexMap<Box<str>, Vec<u64>, StreamHasher>,
    pub segments: Vec<SegmentEntry>,
}

impl Index {
    /// Number of visible events, which is also the next position.
    pub fn len(&self) -> u64 {
        self.ids.len() as u64
    }

    /// Adds the next event. `offset` is within the last segment in `segments`.
    pub fn push(&mut self, id: [u8; 16], offset: u32, stream: &str) {
        let position = self.ids.len() as u64;
        self.push_without_stream(id, offset);
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
        self.table.insert(&id, position, &self.ids);
    }

    /// Adds ids and offsets whose id table comes from a checkpoint (see [`IdTable::from_parts`]).
    pub fn extend_from_checkpoint(
        &mut self,
        ids: Vec<[u8; 16]>,
        offsets: Vec<u32>,
        table: IdTable,
    ) {
        debug_assert!(self.ids.is_empty() && ids.len() == offsets.len());
        self.ids = ids;
        self.offsets = offsets;
        self.table = table;
    }

    /// The id table (for checkpoints).
    pub fn id_table(&self) -> &IdTable {
        &self.table
    }

    /// Every id, in position order (for checkpoints).
    pub fn ids(&self) -> &[[u8; 16]] {
        &self.ids
    }

    /// Every record offset, in position order (for checkpoints).
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// Sets a stream's positions wholesale (checkpoint loading).
    pub fn set_stream(&mut self, stream: Box<str>, positions: Vec<u64>) {
        self.streams.insert(stream, positions);
    }

    pub fn position_of(&self, id: &[u8; 16]) -> Option<u64> {
        self.table.find(id, &self.ids)
    }

    pub fn id_at(&self, position: u64) -> Option<[u8; 16]> {
        self.ids.get(position as usize).copied()
    }

    pub fn stream(&self, stream: &str) -> Option<&[u64]> {
        self.streams.get(stream).map(Vec::as_slice)
    }

    /// Forgets every event from position `len` on, and sets the last segment's visible length
    /// (the writer cutting off what a failed fsync may never make durable). O(events): the id
    /// table is rebuilt.
    pub fn truncate(&mut self, len: u64, last_visible_len: u64) {
        if len < self.len() {
            self.ids.truncate(len as usize);
            self.offsets.truncate(len as usize);
            let mut table = IdTable {
                seed: self.table.seed,
                ..IdTable::default()
            };
            for (position, id) in self.ids.iter().enumerate() {
                table.insert(id, position as u64, &self.ids[..=position]);
            }
            self.table = table;
            self.streams.retain(|_, positions| {
                positions.truncate(positions.partition_point(|&p| p < len));
                !positions.is_empty()
            });
        }
        if let Some(last) = self.segments.last_mut() {
            last.visible_len = last_visible_len;
        }
    }

    /// The `number`-th stream in creation order.
    pub fn stream_at(&self, number: usize) -> Option<(&str, &[u64])> {
        self.streams
            .get_index(number)
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
    pub fn location(&self, position: u64) -> Option<Location<'_>> {
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
            file: &*segment.file,
            path: &segment.path,
            offset,
            // Offsets increase within a segment (checkpoints are checked for it); should they
            // not, the read finds an empty record and reports it as damage.
            len: end.saturating_sub(offset) as usize,
        })
    }

    /// The contiguous byte range holding positions `from..to` (`to` exclusive), cut short at
    /// the end of `from`'s segment and after about `max_bytes`: the location and the position
    /// after the last one covered. Always covers at least `from`.
    pub fn span(&self, from: u64, to: u64, max_bytes: usize) -> Option<(Location<'_>, u64)> {
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
            + self.table.slots.capacity() * 8
            + self
                .streams
                .iter()
                .map(|(name, positions)| name.len() + positions.capacity() * 8 + 64)
                .sum::<usize>()
    }
}

/// Open-addressing id -> position table with linear probing.
///
/// A slot is 0 when empty, else `tag << 40 | (position + 1)` where `tag` is 24 high bits of
/// the id's hash: most probes that do not match are rejected on the tag, without touching
/// `ids`. The hash is a folded multiply keyed by a per-table random seed (ids come from
/// clients, so the seed keeps collisions unpredictable). The seed and the slots are saved in
/// checkpoints so a restart loads the table instead of rebuilding it.
#[derive(Debug, Default)]
pub struct IdTable {
    slots: Vec<u64>,
    len: usize,
    seed: u64,
}

/// Positions must fit in the low 40 bits of a slot (about 1.1 trillion events).
pub const MAX_POSITION: u64 = (1 << POSITION_BITS) - 2;
const POSITION_BITS: u32 = 40;
const POSITION_MASK: u64 = (1 << POSITION_BITS) - 1;
/// Grow beyond this fill, in tenths: linear probing stays short below 70%.
const MAX_FILL_TENTHS: usize = 7;

fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

fn hash_with(seed: u64, id: &[u8; 16]) -> u64 {
    let lo = u64::from_le_bytes(id[..8].try_into().expect("8 bytes"));
    let hi = u64::from_le_bytes(id[8..].try_into().expect("8 bytes"));
    let mixed = folded_multiply(lo ^ seed, hi ^ 0x243F_6A88_85A3_08D3);
    folded_multiply(mixed ^ 0x1319_8A2E_0370_7344, seed.rotate_left(29) | 1)
}

/// Places `id` at `position` in `slots` of a table keyed by `seed`. Placing ids in position
/// order into empty slots of a given size gives exactly the layout the live table had at that
/// size (linear probing, nothing ever removed), which is how a checkpoint recreates it when
/// the table grew while it was being written.
pub fn place_in(seed: u64, slots: &mut [u64], id: &[u8; 16], position: u64) {
    let mask = slots.len() - 1;
    let hash = hash_with(seed, id);
    let mut at = hash as usize & mask;
    while slots[at] != 0 {
        at = (at + 1) & mask;
    }
    slots[at] = (hash >> POSITION_BITS) << POSITION_BITS | (position + 1);
}

impl IdTable {
    fn seeded() -> u64 {
        use std::hash::BuildHasher;
        std::hash::RandomState::new().hash_one(0x5EED_u64) | 1
    }

    fn hash(&self, id: &[u8; 16]) -> u64 {
        hash_with(self.seed, id)
    }

    pub fn find(&self, id: &[u8; 16], ids: &[[u8; 16]]) -> Option<u64> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let hash = self.hash(id);
        let tag = hash >> POSITION_BITS;
        let mut at = hash as usize & mask;
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            if slot >> POSITION_BITS == tag {
                let position = (slot & POSITION_MASK) - 1;
                if ids.get(position as usize) == Some(id) {
                    return Some(position);
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// Inserts `position` for `id`, which must be new; `ids` holds every id up to `position`.
    pub fn insert(&mut self, id: &[u8; 16], position: u64, ids: &[[u8; 16]]) {
        assert!(
            position <= MAX_POSITION,
            "position beyond the index's range"
        );
        if (self.len + 1) * 10 > self.slots.len() * MAX_FILL_TENTHS {
            self.rebuild(self.len + 1, ids);
        }
        self.place(id, position);
        self.len += 1;
    }

    fn place(&mut self, id: &[u8; 16], position: u64) {
        place_in(self.seed, &mut self.slots, id, position);
    }

    /// Re-creates the table for `entries` entries from `ids[..self.len]`, reading ids in
    /// position order (sequential memory) rather than slot order.
    fn rebuild(&mut self, entries: usize, ids: &[[u8; 16]]) {
        let wanted = (entries * 10)
            .div_ceil(MAX_FILL_TENTHS)
            .max(16)
            .next_power_of_two();
        if self.seed == 0 {
            self.seed = Self::seeded();
        }
        self.slots = vec![0; wanted];
        for (position, id) in ids[..self.len].iter().enumerate() {
            self.place(id, position as u64);
        }
    }

    /// Number of slots (a power of two; it changes only when the table grows).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Slots `range` as they were when the table held only positions below `events`: later
    /// entries read as empty. Linear probing without removal makes that exact: an entry
    /// inserted later only ever took a slot that was empty before.
    pub fn slots_before(
        &self,
        range: std::ops::Range<usize>,
        events: u64,
    ) -> impl Iterator<Item = u64> + '_ {
        self.slots[range].iter().map(move |&slot| {
            if slot & POSITION_MASK > events {
                0
            } else {
                slot
            }
        })
    }

    /// The seed and slots, for a checkpoint.
    pub fn parts(&self) -> (u64, &[u64]) {
        (self.seed, &self.slots)
    }

    /// A table from a checkpoint's seed and slots, after checking its shape against `ids`:
    /// a power-of-two size within the fill limit, exactly one slot per id, every position in
    /// range, and a sample of ids found at their positions.
    pub fn from_parts(seed: u64, slots: Vec<u64>, ids: &[[u8; 16]]) -> Result<IdTable, String> {
        if seed == 0
            || !slots.len().is_power_of_two()
            || ids.len() * 10 > slots.len() * MAX_FILL_TENTHS
        {
            return Err("id table has an impossible shape".into());
        }
        let mut used = 0usize;
        for &slot in &slots {
            if slot != 0 {
                used += 1;
                if (slot & POSITION_MASK) == 0 || (slot & POSITION_MASK) > ids.len() as u64 {
                    return Err("id table slot out of range".into());
                }
            }
        }
        if used != ids.len() {
            return Err("id table does not hold every id once".into());
        }
        let table = IdTable {
            slots,
            len: used,
            seed,
        };
        let step = (ids.len() / 4096).max(1);
        for position in (0..ids.len()).step_by(step) {
            if table.find(&ids[position], ids) != Some(position as u64) {
                return Err(format!(
                    "id table does not find the id at position {position}"
                ));
            }
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_table_finds_every_id_across_growth_and_misses_unknown_ones() {
        let mut ids: Vec<[u8; 16]> = Vec::new();
        let mut table = IdTable::default();
        for i in 0..50_000u64 {
            // Ids that share long prefixes, like UUIDv7s minted in the same millisecond.
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&0x0190_C1E2_7000_0000u64.to_be_bytes());
            id[8..].copy_from_slice(&i.to_be_bytes());
            ids.push(id);
            table.insert(&id, i, &ids);
        }
        for (position, id) in ids.iter().enumerate() {
            assert_eq!(table.find(id, &ids), Some(position as u64));
        }
        assert_eq!(table.find(&[0xAB; 16], &ids), None);
        let (seed, slots) = table.parts();
        let copy = IdTable::from_parts(seed, slots.to_vec(), &ids).unwrap();
        assert_eq!(copy.find(&ids[777], &ids), Some(777));
        assert!(IdTable::from_parts(seed, slots.to_vec(), &ids[..10]).is_err());
    }
}
