//! The read-by-id cache: recently read events by position, so that a hot event is served
//! without a `pread` of its record and a second checksum check.
//!
//! Only [`crate::Store::get`] uses it (range reads and subscriptions would churn it). It is a
//! cache of the log in the strict sense: an entry holds exactly what the record at its
//! position decodes to, and a record never changes while its position is live (a scavenge
//! copies surviving records byte for byte; positions are never reused while the store is
//! open: after a failed fsync the writer cuts the unsynced tail and stops). A lookup happens
//! only after the index has said which position the id is live at, so the cache decides
//! nothing about existence or liveness: a deleted or scavenged event is never served from it.
//!
//! It is emptied when the index forgets positions (the cut after a failed fsync) and when a
//! scavenge swaps segments in, so that an erased event's data does not outlive its record in
//! memory either. A reader that looked a record up before such a clear must not put it back
//! afterwards: it carries the cache's generation from its index lookup (taken under the index
//! lock, as a clear is), and an insert of an older generation is dropped.
//!
//! An entry is shared ([`SharedEvent`]): a hit costs a reference count, not a copy of the
//! event, and an entry can carry one rendering of its event made by a face (the HTTP face's
//! JSON body of `GET /events/{id}`), made once and served as long as the entry lives. Since
//! the event never changes while its entry lives, neither does a rendering of it; whatever
//! depends on more than the event (liveness, the reader's access) is still decided per read.
//!
//! Bounded by [`crate::Options::read_cache_bytes`] (0: off), split into shards behind their
//! own locks (a read takes one uncontended lock, never the index's write lock); each shard
//! evicts the entries it took first (FIFO). An entry is counted as its event's variable parts
//! twice (once for a rendering) plus a fixed overhead.

use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use crate::event::RecordedEvent;

/// Shards of a cache (a power of two).
const SHARDS: usize = 16;
/// Bytes counted per entry beyond its variable parts (the event's fixed fields, the map slot,
/// the FIFO slot, allocator headers, a rendering's fixed fields).
const ENTRY_OVERHEAD_BYTES: usize = 512;

/// An event read by id ([`crate::Store::get_live_shared`]), shared with the read cache.
#[derive(Debug, Clone)]
pub struct SharedEvent(Arc<Entry>);

#[derive(Debug)]
struct Entry {
    event: RecordedEvent,
    rendering: OnceLock<Bytes>,
}

impl SharedEvent {
    fn new(event: RecordedEvent) -> SharedEvent {
        SharedEvent(Arc::new(Entry {
            event,
            rendering: OnceLock::new(),
        }))
    }

    /// The event's rendering made by `render` the first time any reader of this entry asked
    /// (`render` must depend on the event alone: it is served to every later reader of the
    /// entry). Only one face renders events this way (the HTTP face's JSON body).
    pub fn rendering(&self, render: impl FnOnce(&RecordedEvent) -> Bytes) -> Bytes {
        self.0
            .rendering
            .get_or_init(|| render(&self.0.event))
            .clone()
    }

    /// The event, copied out (or moved, when nothing else holds it).
    pub fn into_event(self) -> RecordedEvent {
        match Arc::try_unwrap(self.0) {
            Ok(entry) => entry.event,
            Err(shared) => shared.event.clone(),
        }
    }
}

impl Deref for SharedEvent {
    type Target = RecordedEvent;

    fn deref(&self) -> &RecordedEvent {
        &self.0.event
    }
}

impl From<RecordedEvent> for SharedEvent {
    fn from(event: RecordedEvent) -> SharedEvent {
        SharedEvent::new(event)
    }
}

type Hasher = foldhash::fast::RandomState;

/// See the module documentation.
pub(crate) struct ReadCache {
    shards: Box<[Mutex<Shard>]>,
    shard_budget_bytes: usize,
    generation: AtomicU64,
}

#[derive(Default)]
struct Shard {
    events: HashMap<u64, SharedEvent, Hasher>,
    /// Positions in the order they were inserted (each once).
    order: VecDeque<u64>,
    bytes: usize,
}

impl ReadCache {
    /// A cache of at most about `budget_bytes` (0: one that holds nothing).
    pub(crate) fn new(budget_bytes: usize) -> ReadCache {
        let shards = if budget_bytes == 0 { 0 } else { SHARDS };
        ReadCache {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            shard_budget_bytes: budget_bytes / SHARDS,
            generation: AtomicU64::new(0),
        }
    }

    /// The generation to pass to [`ReadCache::insert`]; read under the index lock.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn shard(&self, position: u64) -> Option<&Mutex<Shard>> {
        if self.shards.is_empty() {
            return None;
        }
        Some(&self.shards[position as usize & (SHARDS - 1)])
    }

    /// The cached event at `position`.
    pub(crate) fn get(&self, position: u64) -> Option<SharedEvent> {
        let shard = self
            .shard(position)?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        shard.events.get(&position).cloned()
    }

    /// Keeps `event` (read at its position during `generation`), evicting the shard's oldest
    /// entries to stay within budget; dropped when the cache was cleared since, or when the
    /// event alone is larger than a shard's budget.
    pub(crate) fn insert(&self, generation: u64, event: &SharedEvent) {
        let Some(shard) = self.shard(event.position) else {
            return;
        };
        let size = entry_bytes(event);
        if size > self.shard_budget_bytes {
            return;
        }
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the shard's lock: a clear bumps the generation before it takes it.
        if self.generation.load(Ordering::Acquire) != generation
            || shard.events.contains_key(&event.position)
        {
            return;
        }
        while shard.bytes + size > self.shard_budget_bytes {
            let Some(oldest) = shard.order.pop_front() else {
                break;
            };
            if let Some(evicted) = shard.events.remove(&oldest) {
                shard.bytes -= entry_bytes(&evicted);
            }
        }
        shard.events.insert(event.position, event.clone());
        shard.order.push_back(event.position);
        shard.bytes += size;
    }

    /// Forgets every entry; inserts of lookups made before this are dropped.
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            *shard = Shard::default();
        }
    }

    /// Entries held (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap().events.len())
            .sum()
    }
}

fn entry_bytes(event: &RecordedEvent) -> usize {
    ENTRY_OVERHEAD_BYTES
        + 2 * (event.stream.len()
            + event.event_type.len()
            + event.data.len()
            + event.metadata.as_ref().map_or(0, Vec::len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: u64, data_bytes: usize) -> SharedEvent {
        SharedEvent::new(RecordedEvent {
            id: uuid::Uuid::from_u128(u128::from(position) + 1),
            stream: "s".into(),
            version: position,
            position,
            event_type: "t".into(),
            data: vec![b'x'; data_bytes],
            metadata: None,
            binary: false,
            recorded_at_micros: 0,
        })
    }

    #[test]
    fn a_cached_event_reads_back_equal() {
        let cache = ReadCache::new(1 << 20);
        let one = event(7, 100);
        cache.insert(cache.generation(), &one);
        assert_eq!(
            cache.get(7).map(SharedEvent::into_event),
            Some(one.into_event())
        );
        assert!(cache.get(8).is_none());
    }

    #[test]
    fn a_rendering_is_made_once_and_served_with_the_entry() {
        let cache = ReadCache::new(1 << 20);
        cache.insert(cache.generation(), &event(5, 10));
        let mut renders = 0;
        for _ in 0..3 {
            let body = cache.get(5).unwrap().rendering(|event| {
                renders += 1;
                Bytes::from(format!("v{}", event.version))
            });
            assert_eq!(&body[..], b"v5");
        }
        assert_eq!(renders, 1, "later readers get the first rendering");
        cache.clear();
        let fresh = event(5, 10);
        cache.insert(cache.generation(), &fresh);
        let body = cache
            .get(5)
            .unwrap()
            .rendering(|_| Bytes::from_static(b"new"));
        assert_eq!(&body[..], b"new", "a cleared cache forgets renderings too");
    }

    #[test]
    fn a_budget_of_zero_keeps_nothing() {
        let cache = ReadCache::new(0);
        cache.insert(cache.generation(), &event(1, 10));
        assert!(cache.get(1).is_none());
    }

    #[test]
    fn a_full_shard_evicts_what_it_took_first() {
        // One shard's budget holds three events of this size, not four.
        let size = entry_bytes(&event(0, 1000));
        let cache = ReadCache::new(SHARDS * (3 * size + size / 2));
        // Positions 0, 16, 32, 48 all land in shard 0.
        for n in 0..4 {
            cache.insert(cache.generation(), &event(n * SHARDS as u64, 1000));
        }
        assert!(
            cache.get(0).is_none(),
            "the first one in is the first one out"
        );
        for n in 1..4 {
            assert!(cache.get(n * SHARDS as u64).is_some());
        }
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn an_event_larger_than_a_shard_is_not_kept() {
        let cache = ReadCache::new(SHARDS * 1000);
        cache.insert(cache.generation(), &event(3, 5000));
        assert!(cache.get(3).is_none());
    }

    #[test]
    fn a_lookup_from_before_a_clear_is_not_put_back() {
        let cache = ReadCache::new(1 << 20);
        cache.insert(cache.generation(), &event(1, 10));
        let before = cache.generation();
        cache.clear();
        assert!(cache.get(1).is_none());
        cache.insert(before, &event(2, 10));
        assert!(
            cache.get(2).is_none(),
            "an insert of an older generation is dropped"
        );
        cache.insert(cache.generation(), &event(2, 10));
        assert!(cache.get(2).is_some());
    }
}
