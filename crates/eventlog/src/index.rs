//! The in-memory index: a cache of the log, rebuilt from it on open.
//!
//! Memory is the constraint (the target is 48 bytes per live event), so the index stores per live
//! event only the event id (16 bytes) and the record's offset within its segment (4 bytes;
//! segments are smaller than 4 GiB), in two vectors indexed by **slot**: the live events
//! numbered densely in position order. The id lookup table ([`IdTable`]) is open addressing
//! over `u64` slots holding a slot number and a 24-bit hash tag, comparing through `ids`,
//! instead of a map that would store each id twice (8-16 bytes per event at its load factor).
//! Each stream keeps the positions of its live events in version order (8 bytes per event).
//!
//! **Holes.** Positions are strictly increasing with holes where a scavenge removed dead
//! events. A slot's position is implicit where there are no holes: slots from
//! `sparse.len()` on have the consecutive positions `dense_base, dense_base + 1, ...`. Below
//! that, `sparse` ([`Positions`]) holds each slot's position explicitly, as a `u32` offset
//! from a `u64` base per block of 64 Ki slots (4 bytes more per live event, only for events
//! at or before the last hole). A position is found from a slot in O(1) and a slot from a
//! position in O(1) in the dense part, O(log n) in the sparse part. A store without holes
//! has an empty `sparse` and `dense_base` 0: slot = position, as before.
//! The id table is sized for its entries (not to a power of two) and grows by half, so its
//! fill stays between 47% and 70%: 11-17 bytes per entry.
//! Total: 16 + 4 + 8 + 11-17 = 39-45 bytes per live event without holes, 4 more with, plus a
//! small cost per stream. Measured by the test
//! `index_memory_per_live_event_with_holes_is_bounded`: 47.9 bytes at 60,000 live events of
//! 120,000 (target: 48).
//!
//! A stream's early versions can be removed by a scavenge (it only removes a stream's dead
//! prefix: deleted, truncated, expired and surplus events are always its oldest), so a stream
//! also has a first version (`first_versions`, kept only for streams where it is not 0).

use crate::vfs::{FileHandle, VfsFile};
use indexmap::IndexMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Where one record lives, owned (see [`Index::record_of_slot`]).
#[derive(Clone)]
pub struct OwnedLocation {
    /// The segment's read handle.
    pub file: FileHandle,
    /// The segment's first position, which names its file.
    pub first_position: u64,
    /// The record's offset in the segment.
    pub offset: u64,
    /// The record's length in bytes.
    pub len: usize,
    /// The record's position (checked against what is read).
    pub position: u64,
}

/// The stream map's hasher: fast, randomly seeded per process (stream names come from clients).
type StreamHasher = foldhash::fast::RandomState;

/// Strictly increasing positions, 4 bytes each: a `u64` base per block of 64 Ki entries and
/// a `u32` offset from it per entry. An offset that does not fit (a hole of 4 Gi positions
/// inside one block) is kept in `wide` instead, marked `u32::MAX`.
#[derive(Debug, Default)]
pub struct Positions {
    bases: Vec<u64>,
    offsets: Vec<u32>,
    wide: std::collections::BTreeMap<usize, u64>,
}

const BLOCK_BITS: u32 = 16;
const WIDE: u32 = u32::MAX;

impl Positions {
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<u64> {
        let offset = *self.offsets.get(i)?;
        if offset == WIDE {
            return self.wide.get(&i).copied();
        }
        Some(self.bases[i >> BLOCK_BITS] + u64::from(offset))
    }

    pub fn last(&self) -> Option<u64> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    /// Appends `position` (greater than the last).
    pub fn push(&mut self, position: u64) {
        let i = self.offsets.len();
        debug_assert!(self.last().is_none_or(|last| last < position));
        if i >> BLOCK_BITS == self.bases.len() {
            self.bases.push(position);
        }
        match u32::try_from(position - self.bases[i >> BLOCK_BITS]) {
            Ok(offset) if offset != WIDE => self.offsets.push(offset),
            _ => {
                self.offsets.push(WIDE);
                self.wide.insert(i, position);
            }
        }
    }

    pub fn extend(&mut self, positions: impl IntoIterator<Item = u64>) {
        for position in positions {
            self.push(position);
        }
    }

    pub fn truncate(&mut self, len: usize) {
        if len >= self.len() {
            return;
        }
        self.offsets.truncate(len);
        self.bases.truncate(len.div_ceil(1 << BLOCK_BITS));
        self.wide.retain(|&i, _| i < len);
    }

    /// The number of positions below `position` (where it would be inserted).
    pub fn partition_point(&self, position: u64) -> usize {
        let (mut low, mut high) = (0usize, self.len());
        while low < high {
            let middle = low + (high - low) / 2;
            if self.get(middle).expect("below len") < position {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }

    /// The index holding `position`, if any.
    pub fn find(&self, position: u64) -> Option<usize> {
        let i = self.partition_point(position);
        (self.get(i) == Some(position)).then_some(i)
    }

    /// The positions at `range`.
    pub fn range(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = u64> + '_ {
        range.map(|i| self.get(i).expect("in range"))
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.offsets.capacity() * 4 + self.bases.capacity() * 8 + self.wide.len() * 48
    }
}

impl From<Vec<u64>> for Positions {
    fn from(positions: Vec<u64>) -> Positions {
        let mut out = Positions::default();
        out.offsets.reserve_exact(positions.len());
        out.extend(positions);
        out
    }
}

/// id -> slot -> position and location, stream -> positions.
#[derive(Debug, Default)]
pub struct Index {
    ids: Vec<[u8; 16]>,
    offsets: Vec<u32>,
    table: IdTable,
    /// Positions of slots `0..sparse.len()`, strictly increasing (empty without holes).
    sparse: Positions,
    /// Position of slot `sparse.len()`; the slots after it follow without holes.
    dense_base: u64,
    /// In creation order, so that a checkpoint can walk them in short stretches under the
    /// read lock while new streams are added at the end.
    streams: IndexMap<Box<str>, Vec<u64>, StreamHasher>,
    /// Version of the first position in `streams`, for streams whose early versions a
    /// scavenge removed (absent: 0).
    first_versions: HashMap<Box<str>, u64, StreamHasher>,
    /// Counts the swaps of scavenged segments (the only change below the head), so that a
    /// checkpoint can tell its cut went stale.
    generation: u64,
    pub segments: Vec<SegmentEntry>,
}

/// The index side of a scavenged segment, prepared outside the write lock
/// ([`Index::prepare_replacement`]) and installed under it ([`Index::apply_replacement`]).
#[derive(Debug)]
pub struct Replacement {
    segments: Vec<usize>,
    /// (stream number, events it loses from its front).
    stream_cuts: Vec<(usize, usize)>,
    /// Live slots when it was prepared; later ones are added when it is applied.
    covered: usize,
    generation: u64,
    ids: Vec<[u8; 16]>,
    offsets: Vec<u32>,
    sparse: Positions,
    dense_base: u64,
    table: IdTable,
}

/// Slots or streams read per stretch under the read lock by [`Index::prepare_replacement`].
const REPLACEMENT_STRETCH: usize = 64 * 1024;

/// What [`Index::prepare_replacement`] takes from one look at the index under its read lock.
struct ReplacementPlan<'a> {
    /// Live slots now.
    covered: usize,
    /// Per segment: the slot where its kept events start once the removed events before it
    /// are gone, and their new offsets.
    ranges: Vec<(usize, &'a [u32])>,
    /// The slots below this keep an explicit position.
    sparse_to: usize,
    /// The position of slot `sparse_to` (the head if there is none).
    dense_base: u64,
    generation: u64,
    seed: u64,
}

/// What [`Index::apply_replacement`] replaced, dropped by its owner outside the lock.
#[must_use]
pub struct Retired(#[allow(dead_code)] Vec<Box<dyn std::any::Any + Send>>);

impl Index {
    /// The next position (every position below it is a live event or a hole).
    pub fn len(&self) -> u64 {
        self.dense_base + (self.ids.len() - self.sparse.len()) as u64
    }

    /// How many scavenged segments were swapped in since the index was built.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of live events (slots).
    pub fn live(&self) -> usize {
        self.ids.len()
    }

    /// Whether positions have holes below the head.
    pub fn has_holes(&self) -> bool {
        !self.sparse.is_empty() || self.dense_base != 0
    }

    /// The position of `slot` (which must exist).
    pub fn position_of_slot(&self, slot: usize) -> u64 {
        match self.sparse.get(slot) {
            Some(position) => position,
            None => self.dense_base + (slot - self.sparse.len()) as u64,
        }
    }

    /// The slot holding `position`, if it is live.
    pub fn slot_of(&self, position: u64) -> Option<usize> {
        if position >= self.dense_base {
            let slot = self.sparse.len() + usize::try_from(position - self.dense_base).ok()?;
            return (slot < self.ids.len()).then_some(slot);
        }
        self.sparse.find(position)
    }

    /// The first slot whose position is at or after `position` (`live()` if none).
    pub fn slot_at_or_after(&self, position: u64) -> usize {
        if position >= self.dense_base {
            let past = usize::try_from(position - self.dense_base).unwrap_or(usize::MAX);
            return self.sparse.len().saturating_add(past).min(self.ids.len());
        }
        self.sparse.partition_point(position)
    }

    /// Makes the next position `position` (> `len()`), leaving a hole before it.
    pub fn skip_to(&mut self, position: u64) {
        debug_assert!(position >= self.len());
        if position == self.len() {
            return;
        }
        let dense: Vec<u64> = (self.sparse.len()..self.ids.len())
            .map(|slot| self.position_of_slot(slot))
            .collect();
        self.sparse.extend(dense);
        self.dense_base = position;
    }

    /// Adds the next event. `offset` is within the last segment in `segments`.
    pub fn push(&mut self, id: [u8; 16], offset: u32, stream: &str) {
        let position = self.len();
        self.push_without_stream(id, offset);
        match self.streams.get_mut(stream) {
            Some(positions) => positions.push(position),
            None => {
                self.streams.insert(stream.into(), vec![position]);
            }
        }
    }

    /// Adds an event at `position` (at or after `len()`) whose stream version is `version`,
    /// where earlier positions and versions may be holes (replaying a scavenged segment).
    /// A stream first seen here starts at `version`.
    pub fn push_at(
        &mut self,
        position: u64,
        id: [u8; 16],
        offset: u32,
        stream: &str,
        version: u64,
    ) {
        self.skip_to(position);
        if !self.streams.contains_key(stream) && version > 0 {
            self.first_versions.insert(stream.into(), version);
        }
        self.push(id, offset, stream);
    }

    /// Adds the next event of a stream whose positions are already known (checkpoint loading).
    pub fn push_without_stream(&mut self, id: [u8; 16], offset: u32) {
        let slot = self.ids.len() as u64;
        self.ids.push(id);
        self.offsets.push(offset);
        self.table.insert(&id, slot, &self.ids);
    }

    /// Adds ids and offsets whose id table comes from a checkpoint (see [`IdTable::from_parts`]),
    /// with the positions of the first slots (`sparse`) and of the dense rest (`dense_base`).
    pub fn extend_from_checkpoint(
        &mut self,
        ids: Vec<[u8; 16]>,
        offsets: Vec<u32>,
        table: IdTable,
        sparse: Vec<u64>,
        dense_base: u64,
    ) {
        debug_assert!(self.ids.is_empty() && ids.len() == offsets.len());
        self.ids = ids;
        self.offsets = offsets;
        self.table = table;
        self.sparse = Positions::from(sparse);
        self.dense_base = dense_base;
    }

    /// The id table (for checkpoints).
    pub fn id_table(&self) -> &IdTable {
        &self.table
    }

    /// Every id, in slot order (for checkpoints).
    pub fn ids(&self) -> &[[u8; 16]] {
        &self.ids
    }

    /// Every record offset, in slot order (for checkpoints).
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// The explicit positions of the first slots and the position of the next one (for
    /// checkpoints).
    pub fn sparse(&self) -> (&Positions, u64) {
        (&self.sparse, self.dense_base)
    }

    /// Sets a stream's positions wholesale (checkpoint loading).
    pub fn set_stream(&mut self, stream: Box<str>, positions: Vec<u64>) {
        self.streams.insert(stream, positions);
    }

    /// Sets a stream's first version (checkpoint loading).
    pub fn set_first_version(&mut self, stream: Box<str>, version: u64) {
        if version > 0 {
            self.first_versions.insert(stream, version);
        }
    }

    /// The position of the live event with this id.
    pub fn position_of(&self, id: &[u8; 16]) -> Option<u64> {
        let slot = self.table.find(id, &self.ids)?;
        Some(self.position_of_slot(slot as usize))
    }

    pub fn id_at(&self, position: u64) -> Option<[u8; 16]> {
        self.slot_of(position).map(|slot| self.ids[slot])
    }

    /// Positions of the stream's live events, in version order (the first has
    /// [`Index::first_version`]).
    pub fn stream(&self, stream: &str) -> Option<&[u64]> {
        self.streams.get(stream).map(Vec::as_slice)
    }

    /// The version of the stream's first live event (0 unless a scavenge removed early ones).
    pub fn first_version(&self, stream: &str) -> u64 {
        self.first_versions.get(stream).copied().unwrap_or(0)
    }

    /// The version the stream's next event gets.
    pub fn stream_next_version(&self, stream: &str) -> u64 {
        self.stream(stream).map_or(0, |positions| {
            positions.len() as u64 + self.first_version(stream)
        })
    }

    /// Makes the next version of a stream without live events at least `version`: a stream
    /// whose events a scavenge all removed, whose lifecycle record (`$tb`) says where its
    /// versions continue. A stream with live events keeps its versions.
    pub fn raise_next_version(&mut self, stream: &str, version: u64) {
        if self.stream(stream).is_some_and(|p| !p.is_empty())
            || self.stream_next_version(stream) >= version
        {
            return;
        }
        if !self.streams.contains_key(stream) {
            self.streams.insert(stream.into(), Vec::new());
        }
        self.first_versions.insert(stream.into(), version);
    }

    /// Forgets every event from position `len` on, and sets the last segment's visible length
    /// (the writer cutting off what a failed fsync may never make durable). O(events): the id
    /// table is rebuilt.
    pub fn truncate(&mut self, len: u64, last_visible_len: u64) {
        if len < self.len() {
            let slots = self.slot_at_or_after(len);
            self.ids.truncate(slots);
            self.offsets.truncate(slots);
            self.sparse.truncate(slots);
            if slots <= self.sparse.len() {
                // Only reached when `len` falls at or before the last hole.
                self.dense_base = len.max(self.sparse.last().map_or(0, |p| p + 1));
            }
            self.rebuild_table();
            self.streams.retain(|_, positions| {
                positions.truncate(positions.partition_point(|&p| p < len));
                !positions.is_empty()
            });
        }
        if let Some(last) = self.segments.last_mut() {
            last.visible_len = last_visible_len;
        }
    }

    /// Rebuilds the id table from `ids`, sized once for them.
    fn rebuild_table(&mut self) {
        let mut table = IdTable::with_capacity(self.table.seed, self.ids.len());
        for (slot, id) in self.ids.iter().enumerate() {
            table.place(id, slot as u64);
            table.len += 1;
        }
        self.table = table;
    }

    /// The index side of swapping in a scavenged segment, first half: removes the live events
    /// at `removed` (positions, increasing, all in the segment `segment`, each the oldest live
    /// event of its stream at the time) and sets the offsets of the segment's remaining events
    /// to `offsets` (in position order), in new vectors and a new id table built from the slots
    /// live now. O(live events), read in stretches of 64 Ki under short read locks, so that
    /// appends and reads go on meanwhile. The caller holds the scavenge lock: nothing below the
    /// head changes until [`Index::apply_replacement`], which adds the slots appended in
    /// between and installs the result; the head does not move.
    pub fn prepare_replacement(
        index: &std::sync::RwLock<Index>,
        segments: &[(usize, &[u32])],
        removed: &[u64],
    ) -> Replacement {
        let plan = index
            .read()
            .expect("index lock")
            .replacement_plan(segments, removed);
        let (ids, mut new_offsets, sparse) =
            Self::copy_kept(index, plan.covered, plan.sparse_to, removed);
        for (from, offsets) in plan.ranges {
            new_offsets[from..from + offsets.len()].copy_from_slice(offsets);
        }
        let stream_cuts = Self::stream_cuts(index, removed);
        let table = IdTable::for_replacement(plan.seed, &ids);
        Replacement {
            segments: segments.iter().map(|&(segment, _)| segment).collect(),
            stream_cuts,
            covered: plan.covered,
            generation: plan.generation,
            ids,
            offsets: new_offsets,
            sparse,
            dense_base: plan.dense_base,
            table,
        }
    }

    /// Where [`Index::prepare_replacement`] puts things, from one look at the index (under
    /// one read lock); checks that there is one offset per kept event and that every removed
    /// event is in the segments.
    fn replacement_plan<'a>(
        &self,
        segments: &[(usize, &'a [u32])],
        removed: &[u64],
    ) -> ReplacementPlan<'a> {
        let head = self.len();
        // Per segment (in position order): its slot range now, and where its kept events
        // start once the removed events before it are gone.
        let mut ranges = Vec::with_capacity(segments.len());
        let mut removed_before = 0usize;
        for &(segment, offsets) in segments {
            let first = self.segments[segment].first_position;
            let end = self.segment_end(segment, head);
            let from_slot = self.slot_at_or_after(first);
            let to_slot = self.slot_at_or_after(end);
            let removed_here =
                removed.partition_point(|&p| p < end) - removed.partition_point(|&p| p < first);
            assert_eq!(
                offsets.len(),
                (to_slot - from_slot) - removed_here,
                "one offset per kept event"
            );
            ranges.push((from_slot - removed_before, offsets));
            removed_before += removed_here;
        }
        assert_eq!(
            removed_before,
            removed.len(),
            "removed events are in the segments"
        );
        let last_to = segments.last().map_or(0, |&(segment, _)| {
            self.slot_at_or_after(self.segment_end(segment, head))
        });
        // Every slot up to the end of the last segment gets an explicit position.
        let sparse_to = last_to.max(self.sparse.len());
        let dense_base = if sparse_to < self.ids.len() {
            self.position_of_slot(sparse_to)
        } else {
            head
        };
        ReplacementPlan {
            covered: self.ids.len(),
            ranges,
            sparse_to,
            dense_base,
            generation: self.generation,
            seed: self.table.seed,
        }
    }

    /// The position after the events of `segment`: the next segment's first, or `head`.
    fn segment_end(&self, segment: usize, head: u64) -> u64 {
        self.segments
            .get(segment + 1)
            .map_or(head, |next| next.first_position)
    }

    /// The ids and offsets of the first `covered` slots without the `removed` positions, and
    /// the positions of those below `sparse_to`; read in stretches under short read locks.
    fn copy_kept(
        index: &std::sync::RwLock<Index>,
        covered: usize,
        sparse_to: usize,
        removed: &[u64],
    ) -> (Vec<[u8; 16]>, Vec<u32>, Positions) {
        let kept = covered - removed.len();
        let mut gone = removed.iter().peekable();
        let mut ids = Vec::with_capacity(kept);
        let mut offsets = Vec::with_capacity(kept);
        let mut sparse = Positions::default();
        sparse
            .offsets
            .reserve_exact(sparse_to - removed.len().min(sparse_to));
        for start in (0..covered).step_by(REPLACEMENT_STRETCH) {
            crate::background::let_others_run();
            let index = index.read().expect("index lock");
            for slot in start..(start + REPLACEMENT_STRETCH).min(covered) {
                let position = index.position_of_slot(slot);
                if gone.next_if(|&&p| p == position).is_some() {
                    continue;
                }
                ids.push(index.ids[slot]);
                offsets.push(index.offsets[slot]);
                if slot < sparse_to {
                    sparse.push(position);
                }
            }
        }
        assert!(gone.next().is_none(), "removed positions are live slots");
        (ids, offsets, sparse)
    }

    /// How many events each stream loses from its front, for the streams that lose any
    /// (dead events are a prefix of their stream); read in stretches under short read locks.
    fn stream_cuts(index: &std::sync::RwLock<Index>, removed: &[u64]) -> Vec<(usize, usize)> {
        // Streams are only added meanwhile (at the end), so their numbers hold until the
        // install.
        let mut stream_cuts = Vec::new();
        let stream_count = index.read().expect("index lock").streams.len();
        for start in (0..stream_count).step_by(REPLACEMENT_STRETCH) {
            crate::background::let_others_run();
            let index = index.read().expect("index lock");
            for number in start..(start + REPLACEMENT_STRETCH).min(stream_count) {
                let (_, positions) = index.streams.get_index(number).expect("streams only grow");
                let cut = positions
                    .iter()
                    .take_while(|p| removed.binary_search(p).is_ok())
                    .count();
                if cut > 0 {
                    stream_cuts.push((number, cut));
                }
            }
        }
        stream_cuts
    }

    /// Installs a [`Replacement`] (under the write lock): the slots appended since it was
    /// prepared join it, then it replaces the vectors, the table and the segment's file.
    /// `files` are the segments' new files and visible lengths, in the order they were given.
    /// Answers what it replaced, to be dropped after the write lock is released (freeing
    /// hundreds of MB takes time). If the index lost events meanwhile (the writer cut off an
    /// unsynced tail after a failed fsync, which stops the store), nothing is installed: the
    /// old files' handles and offsets stay a consistent view, and the next open replays the
    /// renamed files.
    pub fn apply_replacement(&mut self, r: Replacement, files: Vec<(FileHandle, u64)>) -> Retired {
        assert_eq!(
            r.generation, self.generation,
            "nothing but appends changed the index meanwhile"
        );
        let Replacement {
            segments,
            stream_cuts,
            covered,
            mut ids,
            mut offsets,
            sparse,
            dense_base,
            mut table,
            ..
        } = r;
        if covered > self.ids.len() {
            return Retired(vec![Box::new((ids, offsets, sparse, table))]);
        }
        let head = self.len();
        // Appended meanwhile: dense slots after the snapshot, positions consecutive.
        for slot in covered..self.ids.len() {
            let id = self.ids[slot];
            ids.push(id);
            offsets.push(self.offsets[slot]);
            table.insert(&id, (ids.len() - 1) as u64, &ids);
        }
        let old = (
            std::mem::replace(&mut self.ids, ids),
            std::mem::replace(&mut self.offsets, offsets),
            std::mem::replace(&mut self.table, table),
            std::mem::replace(&mut self.sparse, sparse),
        );
        self.dense_base = dense_base;
        self.cut_stream_prefixes(&stream_cuts);
        assert_eq!(segments.len(), files.len(), "one new file per segment");
        let mut old_files = Vec::with_capacity(files.len());
        for (segment, (file, visible_len)) in segments.into_iter().zip(files) {
            let entry = &mut self.segments[segment];
            old_files.push(std::mem::replace(&mut entry.file, file));
            entry.visible_len = visible_len;
        }
        self.generation += 1;
        debug_assert_eq!(self.len(), head);
        Retired(vec![Box::new(old), Box::new(old_files)])
    }

    /// Drops the first `cut` positions of the streams at these indices (creation order):
    /// their events were scavenged.
    fn cut_stream_prefixes(&mut self, cuts: &[(usize, usize)]) {
        for &(number, cut) in cuts {
            let (name, positions) = self
                .streams
                .get_index_mut(number)
                .expect("streams with scavenged events stay");
            positions.drain(..cut);
            if positions.capacity() > 2 * positions.len() {
                positions.shrink_to_fit();
            }
            *self.first_versions.entry(name.clone()).or_insert(0) += cut as u64;
        }
    }

    /// The `number`-th stream in creation order, with its first version.
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
        self.stream_next_version(stream).checked_sub(1)
    }

    /// Index into `segments` of the segment holding `position`.
    fn segment_of(&self, position: u64) -> usize {
        self.segments
            .partition_point(|segment| segment.first_position <= position)
            - 1
    }

    /// Location of the record at `position`, or `None` if it is not a live event.
    pub fn location(&self, position: u64) -> Option<Location<'_>> {
        self.location_of_slot(self.slot_of(position)?)
    }

    /// Location of the record in `slot`.
    pub fn location_of_slot(&self, slot: usize) -> Option<Location<'_>> {
        let offset = u64::from(*self.offsets.get(slot)?);
        let segment_index = self.segment_of(self.position_of_slot(slot));
        let segment = &self.segments[segment_index];
        let next = slot + 1;
        let end = match self.segments.get(segment_index + 1) {
            _ if next >= self.ids.len() => segment.visible_len,
            Some(following) if self.position_of_slot(next) >= following.first_position => {
                segment.visible_len
            }
            _ => u64::from(self.offsets[next]),
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

    /// Where the record of `slot` lives, owned: its segment's file handle (a reference count,
    /// so the bytes stay readable even if a scavenge swaps the file meanwhile), the segment's
    /// first position (its name), the byte range and the record's position. For reads done
    /// after the index lock is released.
    pub fn record_of_slot(&self, slot: usize) -> Option<OwnedLocation> {
        let location = self.location_of_slot(slot)?;
        let position = self.position_of_slot(slot);
        let segment = &self.segments[self.segment_of(position)];
        Some(OwnedLocation {
            file: Arc::clone(&segment.file),
            first_position: segment.first_position,
            offset: location.offset,
            len: location.len,
            position,
        })
    }

    /// The contiguous byte range holding slots `from..to` (`to` exclusive), cut short at the
    /// end of `from`'s segment and after about `max_bytes`: the location and the slot after the
    /// last one covered. Always covers at least `from`.
    pub fn span(&self, from: usize, to: usize, max_bytes: usize) -> Option<(Location<'_>, usize)> {
        let first = self.location_of_slot(from)?;
        let segment_index = self.segment_of(self.position_of_slot(from));
        let segment_end = self
            .segments
            .get(segment_index + 1)
            .map_or(self.ids.len(), |s| self.slot_at_or_after(s.first_position));
        let to = to.min(segment_end).min(self.ids.len()).max(from + 1);
        let starts = &self.offsets[from + 1..to];
        let within = starts
            .partition_point(|&start| (u64::from(start) - first.offset) as usize <= max_bytes);
        let to = if within == to - from - 1 {
            to
        } else {
            from + within.max(1)
        };
        let last = self.location_of_slot(to - 1)?;
        let len = (last.offset + last.len as u64 - first.offset) as usize;
        Some((Location { len, ..first }, to))
    }

    /// Bytes the index holds on the heap, approximately (for metrics and the memory benchmark).
    pub fn heap_bytes(&self) -> usize {
        self.ids.capacity() * 16
            + self.offsets.capacity() * 4
            + self.sparse.heap_bytes()
            + self.table.slots.capacity() * 8
            + self
                .streams
                .iter()
                .map(|(name, positions)| name.len() + positions.capacity() * 8 + 64)
                .sum::<usize>()
            + self.first_versions.len() * 48
    }
}

/// Open-addressing id -> slot table with linear probing.
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
/// A growing table is rebuilt with this many tenths of the slots its entries need at the
/// fill limit.
const GROWTH_TENTHS: usize = 15;

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
    let hash = hash_with(seed, id);
    let mut at = home(hash, slots.len());
    while slots[at] != 0 {
        at = next(at, slots.len());
    }
    slots[at] = (hash >> POSITION_BITS) << POSITION_BITS | (position + 1);
}

/// The first slot an id with this hash probes in a table of `len` slots. Tables are sized
/// for their entries, not to a power of two (which wastes up to half of the slots): the low
/// 32 bits of the hash are mapped onto `0..len` by a multiply and shift; the tag uses the
/// high 24 bits, so the two stay independent. Tables of a power-of-two size (checkpoints
/// written before sizes were free) keep the mask of those bits, so their layout still reads.
fn home(hash: u64, len: usize) -> usize {
    if len.is_power_of_two() {
        hash as usize & (len - 1)
    } else {
        ((u128::from(hash as u32) * len as u128) >> 32) as usize
    }
}

/// The slot after `at`, wrapping at the end of the table.
fn next(at: usize, len: usize) -> usize {
    if at + 1 == len { 0 } else { at + 1 }
}

/// Slots for `entries` entries at most at the fill limit, times `headroom_tenths / 10`.
fn slots_for(entries: usize, headroom_tenths: usize) -> usize {
    (entries * headroom_tenths)
        .div_ceil(MAX_FILL_TENTHS)
        .max(16)
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
        let len = self.slots.len();
        let hash = self.hash(id);
        let tag = hash >> POSITION_BITS;
        let mut at = home(hash, len);
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
            at = next(at, len);
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

    /// An empty table keyed by `seed` (a fresh one when 0) with room for `entries` entries
    /// within the fill limit.
    pub fn with_capacity(seed: u64, entries: usize) -> IdTable {
        let wanted = slots_for(entries, 10);
        IdTable {
            slots: vec![0; wanted],
            len: 0,
            seed: if seed == 0 { Self::seeded() } else { seed },
        }
    }

    /// A table of `ids` in slot order, sized once for them plus a sixteenth for the appends
    /// to come (then it grows by half, as any table); for [`Index::prepare_replacement`].
    fn for_replacement(seed: u64, ids: &[[u8; 16]]) -> IdTable {
        let mut table = IdTable::with_capacity(seed, ids.len() + ids.len() / 16);
        // Built outside the index lock, by a scavenge: a background thread.
        for (slot, id) in ids.iter().enumerate() {
            if slot % (16 * 1024) == 0 {
                crate::background::let_others_run();
            }
            table.place(id, slot as u64);
            table.len += 1;
        }
        table
    }

    /// Re-creates the table for `entries` entries from `ids[..self.len]`, reading ids in
    /// position order (sequential memory) rather than slot order.
    /// The table grows by half again, so its fill stays between 47% and 70% (8 bytes a slot:
    /// 11-17 bytes per entry), not between 35% and 70% as when it doubled.
    fn rebuild(&mut self, entries: usize, ids: &[[u8; 16]]) {
        let wanted = slots_for(entries, GROWTH_TENTHS);
        if self.seed == 0 {
            self.seed = Self::seeded();
        }
        self.slots = vec![0; wanted];
        for (position, id) in ids[..self.len].iter().enumerate() {
            self.place(id, position as u64);
        }
    }

    /// Number of slots (it changes only when the table grows).
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
    /// a size within the fill limit, exactly one slot per id, every position in range, and a
    /// sample of ids found at their positions.
    pub fn from_parts(seed: u64, slots: Vec<u64>, ids: &[[u8; 16]]) -> Result<IdTable, String> {
        if seed == 0 || ids.len() * 10 > slots.len() * MAX_FILL_TENTHS {
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
    fn positions_keep_four_bytes_each_across_blocks_and_huge_holes() {
        let mut positions = Positions::default();
        let mut expected = Vec::new();
        let mut next = 3u64;
        for i in 0..(3usize << BLOCK_BITS) {
            // A hole of more than 4 Gi positions now and then: kept wide.
            next += if i % 50_000 == 7 {
                5 << 32
            } else {
                1 + (i % 3) as u64
            };
            positions.push(next);
            expected.push(next);
        }
        assert_eq!(positions.len(), expected.len());
        assert!(!positions.wide.is_empty());
        for (i, &p) in expected.iter().enumerate() {
            assert_eq!(positions.get(i), Some(p));
            assert_eq!(positions.find(p), Some(i));
            assert_eq!(positions.partition_point(p), i);
            assert_eq!(
                positions.find(p + 1).is_some(),
                expected.get(i + 1) == Some(&(p + 1))
            );
        }
        assert_eq!(positions.partition_point(u64::MAX), expected.len());
        assert_eq!(positions.last(), expected.last().copied());
        positions.truncate(70_000);
        assert_eq!(positions.len(), 70_000);
        assert_eq!(positions.last(), Some(expected[69_999]));
        assert!(positions.wide.keys().all(|&i| i < 70_000));
        positions.push(expected[69_999] + 1);
        assert_eq!(positions.get(70_000), Some(expected[69_999] + 1));

        // Without holes of 4 Gi (the rest of a block after one is kept wide): 4 bytes each.
        let positions = Positions::from((0..200_000u64).map(|i| i * 7 + i % 5).collect::<Vec<_>>());
        let bytes = positions.heap_bytes() as f64 / positions.len() as f64;
        assert!(bytes < 4.2, "{bytes} bytes per position");
        assert!(positions.wide.is_empty());
    }

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
