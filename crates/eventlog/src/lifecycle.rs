//! Stream lifecycle: metadata, soft delete, tombstones, retention, and the sorted catalog of
//! stream names.
//!
//! # Representation (KurrentDB's)
//! Nothing of the lifecycle is a new record kind: each change is an ordinary event appended
//! to the stream's *metastream*, `$$<stream>`:
//! - [`METADATA_EVENT_TYPE`] (`$metadata`): the stream's metadata as KurrentDB writes it, a
//!   JSON object with `$maxAge` (seconds), `$maxCount`, `$tb` (truncate before: versions
//!   below it are dead) and any custom keys (which do not start with `$`). A soft delete is
//!   such an event whose `$tb` is the stream's last version + 1.
//! - [`TOMBSTONE_EVENT_TYPE`] (`$streamDeleted`): the stream is deleted for good. KurrentDB
//!   writes its tombstone into the stream itself; here it goes to the metastream too, so that
//!   every lifecycle fact of the store is found from the names of the metastreams alone (open
//!   reads the last record of each metastream, never the last record of every stream).
//!
//! Only the last event of a metastream counts (a metastream is implicitly `$maxCount` 1, as in
//! KurrentDB); a tombstone is final: the writer refuses anything after it, in the stream and in
//! its metastream. Because these are events of the log, the index rebuilt from the log or from
//! a checkpoint knows them: the store reads them back at open (`store::build_catalog`).
//!
//! # Liveness
//! An event is *dead* when its stream is tombstoned, its version is below `$tb`, it is not
//! among the newest `$maxCount`, or it is older than `$maxAge`; a metastream's events other
//! than its last are dead too. Dead events vanish from reads at once; their bytes stay until a
//! scavenge rewrites their segment. [`Liveness`] answers the question for one event cheaply
//! (one hash lookup when the stream has no metadata).

use std::collections::{BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

/// The prefix of metastream names: `$$orders` holds the lifecycle records of `orders`.
pub const METASTREAM_PREFIX: &str = "$$";
/// The event type of a metadata record (a soft delete is one too).
pub const METADATA_EVENT_TYPE: &str = "$metadata";
/// The event type of a tombstone.
pub const TOMBSTONE_EVENT_TYPE: &str = "$streamDeleted";

/// The metastream of `stream`.
pub fn metastream_of(stream: &str) -> String {
    format!("{METASTREAM_PREFIX}{stream}")
}

/// The stream whose metastream is `name`, if `name` is one.
pub fn stream_of_metastream(name: &str) -> Option<&str> {
    name.strip_prefix(METASTREAM_PREFIX)
}

/// What a stream's last lifecycle record says, in the engine's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Versions below this are dead (`$tb`; a soft delete sets it past the last version).
    pub truncate_before: Option<u64>,
    /// Only the newest N events are live (`$maxCount`).
    pub max_count: Option<u64>,
    /// Events older than this are dead (`$maxAge`, seconds).
    pub max_age_seconds: Option<u64>,
    /// A tombstone: every event is dead and the stream can never be written again.
    pub tombstoned: bool,
}

impl Retention {
    /// The retention a metastream record states. A `$metadata` record whose JSON is not an
    /// object, or whose `$`-keys are not unsigned integers, states nothing for those keys
    /// (KurrentDB ignores invalid metadata too); the event store validates before it writes.
    pub fn of_record(event_type: &str, data: &[u8]) -> Retention {
        if event_type == TOMBSTONE_EVENT_TYPE {
            return Retention {
                tombstoned: true,
                ..Retention::default()
            };
        }
        if event_type != METADATA_EVENT_TYPE {
            return Retention::default();
        }
        let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(data) else {
            return Retention::default();
        };
        let number = |key: &str| object.get(key).and_then(serde_json::Value::as_u64);
        Retention {
            truncate_before: number("$tb"),
            max_count: number("$maxCount"),
            max_age_seconds: number("$maxAge"),
            tombstoned: false,
        }
    }

    /// Whether this states anything at all.
    pub fn is_empty(&self) -> bool {
        *self == Retention::default()
    }

    /// The first version live by `$tb` and `$maxCount` (not by age) of a stream whose last
    /// version is `last_version`; `last_version + 1` when none is.
    pub fn first_live_version(&self, last_version: u64) -> u64 {
        if self.tombstoned {
            return last_version.saturating_add(1);
        }
        let by_truncation = self.truncate_before.unwrap_or(0);
        let by_count = self.max_count.map_or(0, |count| {
            last_version.saturating_add(1).saturating_sub(count)
        });
        by_truncation.max(by_count)
    }

    /// Whether every event up to `last_version` is dead by `$tb` alone: a soft-deleted stream.
    pub fn deletes_through(&self, last_version: u64) -> bool {
        self.truncate_before.is_some_and(|tb| tb > last_version)
    }

    /// Whether the event at `version`, recorded at `recorded_at_micros`, of a stream whose last
    /// version is `last_version`, is live at `now_micros`.
    pub fn is_live(
        &self,
        version: u64,
        last_version: u64,
        recorded_at_micros: i64,
        now_micros: i64,
    ) -> bool {
        if version < self.first_live_version(last_version) {
            return false;
        }
        match self.max_age_seconds {
            Some(seconds) => {
                let age_micros =
                    i64::try_from(seconds.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
                recorded_at_micros >= now_micros.saturating_sub(age_micros)
            }
            None => true,
        }
    }
}

/// The current time in microseconds since the Unix epoch (what `recorded_at` is in).
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The names of the streams in byte order and the retention of those that have any.
///
/// Kept beside the index (its own lock, always taken *after* the index lock, never the other
/// way round) and updated by the writer under the index's write lock, so a reader that sees an
/// event in the index sees the lifecycle record it carries too.
///
/// Memory: a name costs its bytes twice (here and in the index) plus about 40 bytes of tree;
/// a stream with lifecycle records costs its metastream's index entry (name, one position
/// vector) plus an entry here of its name and a 40-byte [`Retention`] (about 100 bytes and
/// twice the name in all).
///
/// It also keeps two bits per position, so that a read of `$all` decides most events'
/// liveness without the per-event hash lookups (into the retention table here and the index's
/// stream map), which miss the CPU caches once the tables are large and made `$all` reads of a
/// store with many deleted streams half again slower:
/// - *dead*: dead for good, whatever comes later: every metastream record but the last
///   (a newer one supersedes it forever) and every event of a tombstoned stream (a tombstone
///   is final);
/// - *checked*: may be dead, ask the retention: every event of a stream that has (or had,
///   since the store opened) retention.
///
/// An event with neither bit is live (a metastream's last record, or an event of a stream
/// without retention). Checked bits are only ever set (a stream whose retention is removed
/// keeps them, which costs a lookup, never a wrong answer); dead bits are set only for events
/// that can never be live again, and cleared past the end of the log when the writer cuts off
/// what a failed fsync lost. Both are rebuilt at open from the index and the metastreams.
/// Positions never move (a scavenge leaves holes), so neither do the bits. Memory: a bit per
/// position up to the highest marked one in each (125 KiB per million positions), nothing
/// while no stream has retention and no metastream exists.
#[derive(Debug, Default)]
pub struct Catalog {
    names: BTreeSet<Box<str>>,
    retention: HashMap<Box<str>, Retention, foldhash::fast::RandomState>,
    checked: Vec<u64>,
    dead: Vec<u64>,
}

fn set_bits(bits: &mut Vec<u64>, positions: impl IntoIterator<Item = u64>) {
    for position in positions {
        let word = usize::try_from(position / 64).expect("positions fit in memory");
        if word >= bits.len() {
            bits.resize(word + 1, 0);
        }
        bits[word] |= 1 << (position % 64);
    }
}

fn bit(bits: &[u64], position: u64) -> bool {
    usize::try_from(position / 64)
        .ok()
        .and_then(|word| bits.get(word))
        .is_some_and(|word| word & (1 << (position % 64)) != 0)
}

impl Catalog {
    /// Adds a stream name (a no-op when known).
    pub fn add_name(&mut self, name: &str) {
        if !self.names.contains(name) {
            self.names.insert(name.into());
        }
    }

    /// Records the retention a metastream record of `stream` states (it replaces the last).
    pub fn set_retention(&mut self, stream: &str, retention: Retention) {
        if retention.is_empty() {
            self.retention.remove(stream);
        } else {
            self.retention.insert(stream.into(), retention);
        }
    }

    /// The retention of `stream`, if any record states one.
    pub fn retention(&self, stream: &str) -> Option<Retention> {
        if self.retention.is_empty() {
            return None;
        }
        self.retention.get(stream).copied()
    }

    /// Whether `stream` is tombstoned.
    pub fn is_tombstoned(&self, stream: &str) -> bool {
        self.retention(stream).is_some_and(|r| r.tombstoned)
    }

    /// Marks the events at `positions` as ones whose liveness reads must ask the retention of.
    pub fn mark_checked(&mut self, positions: impl IntoIterator<Item = u64>) {
        set_bits(&mut self.checked, positions);
    }

    /// Marks the events at `positions` as dead for good (see [`Catalog`]: superseded
    /// metastream records, events of a tombstoned stream).
    pub fn mark_dead(&mut self, positions: impl IntoIterator<Item = u64>) {
        set_bits(&mut self.dead, positions);
    }

    /// Forgets the dead bits from position `len` on (the writer cut the log back to `len`:
    /// those positions will hold other events).
    pub fn forget_dead_from(&mut self, len: u64) {
        let word = usize::try_from(len / 64).unwrap_or(usize::MAX);
        if word < self.dead.len() {
            self.dead.truncate(word + 1);
            self.dead[word] &= (1u64 << (len % 64)) - 1;
        }
    }

    /// The liveness of the event at `position` when its bits decide it: `Some(false)` dead
    /// for good, `Some(true)` live, `None` when the stream's retention must be asked.
    pub fn liveness_of(&self, position: u64) -> Option<bool> {
        if bit(&self.dead, position) {
            Some(false)
        } else if bit(&self.checked, position) {
            None
        } else {
            Some(true)
        }
    }

    /// Every stream with retention, and its retention.
    pub fn retentions(&self) -> impl Iterator<Item = (&str, Retention)> + '_ {
        self.retention.iter().map(|(name, r)| (&**name, *r))
    }

    /// Whether no stream has any retention (reads then skip liveness checks).
    pub fn has_no_retention(&self) -> bool {
        self.retention.is_empty()
    }

    /// Streams with any retention (deleted, tombstoned, truncated or limited).
    pub fn retained_streams(&self) -> usize {
        self.retention.len()
    }

    /// Names after `after` (exclusive) that start with `prefix`, in byte order.
    pub fn names_from<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'a str> + 'a {
        use std::ops::Bound;
        let lower = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        self.names
            .range::<str, _>((lower, Bound::Unbounded))
            .map(|name| &**name)
            .take_while(move |name| name.starts_with(prefix))
    }

    /// Approximate heap bytes (for the memory figures).
    pub fn heap_bytes(&self) -> usize {
        (self.checked.capacity() + self.dead.capacity()) * 8
            + self.names.iter().map(|n| n.len() + 40).sum::<usize>()
            + self
                .retention
                .keys()
                .map(|n| n.len() + 16 + std::mem::size_of::<Retention>() + 8)
                .sum::<usize>()
    }
}

/// Answers "is this event live?" for a scavenge or a read, from a snapshot of the per-stream
/// cut-offs taken at one moment (see [`crate::Store::liveness`]).
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    /// Stream -> (retention, last version) for streams with retention, and metastreams ->
    /// their last version.
    cutoffs: HashMap<Box<str>, (Retention, u64), foldhash::fast::RandomState>,
    now_micros: i64,
}

impl Liveness {
    pub(crate) fn new(now_micros: i64) -> Liveness {
        Liveness {
            cutoffs: HashMap::default(),
            now_micros,
        }
    }

    pub(crate) fn insert(&mut self, stream: &str, retention: Retention, last_version: u64) {
        self.cutoffs
            .insert(stream.into(), (retention, last_version));
    }

    /// Whether the event of `stream` at `version`, recorded at `recorded_at_micros`, is live.
    pub fn is_live(&self, stream: &str, version: u64, recorded_at_micros: i64) -> bool {
        match self.cutoffs.get(stream) {
            None => true,
            Some((retention, last_version)) => {
                retention.is_live(version, *last_version, recorded_at_micros, self.now_micros)
            }
        }
    }

    /// The moment the snapshot judges ages at.
    pub fn now_micros(&self) -> i64 {
        self.now_micros
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_records_read_as_kurrentdb_writes_them() {
        let retention = Retention::of_record(
            METADATA_EVENT_TYPE,
            br#"{"$maxAge":60,"$maxCount":3,"$tb":2,"owner":"ops"}"#,
        );
        assert_eq!(
            retention,
            Retention {
                truncate_before: Some(2),
                max_count: Some(3),
                max_age_seconds: Some(60),
                tombstoned: false
            }
        );
        assert!(Retention::of_record(TOMBSTONE_EVENT_TYPE, b"{}").tombstoned);
        assert!(Retention::of_record(METADATA_EVENT_TYPE, b"[1]").is_empty());
        assert!(Retention::of_record("Other", br#"{"$tb":1}"#).is_empty());
    }

    #[test]
    fn liveness_follows_truncation_count_age_and_tombstones() {
        let now = 1_000_000_000;
        let count = Retention {
            max_count: Some(2),
            ..Retention::default()
        };
        assert!(!count.is_live(7, 9, now, now));
        assert!(count.is_live(8, 9, now, now));
        let truncated = Retention {
            truncate_before: Some(5),
            ..Retention::default()
        };
        assert!(!truncated.is_live(4, 9, now, now));
        assert!(truncated.is_live(5, 9, now, now));
        assert!(truncated.deletes_through(4) && !truncated.deletes_through(5));
        let aged = Retention {
            max_age_seconds: Some(10),
            ..Retention::default()
        };
        assert!(aged.is_live(0, 0, now - 9_000_000, now));
        assert!(!aged.is_live(0, 0, now - 11_000_000, now));
        let gone = Retention {
            tombstoned: true,
            ..Retention::default()
        };
        assert!(!gone.is_live(9, 9, now, now));
    }

    #[test]
    fn the_catalog_lists_names_in_byte_order_from_an_exclusive_name() {
        let mut catalog = Catalog::default();
        for name in ["b-2", "a", "b-1", "c", "b-3"] {
            catalog.add_name(name);
        }
        let names: Vec<_> = catalog.names_from("b-", Some("b-1")).collect();
        assert_eq!(names, vec!["b-2", "b-3"]);
        let names: Vec<_> = catalog.names_from("", Some("b-3")).collect();
        assert_eq!(names, vec!["c"]);
        let names: Vec<_> = catalog.names_from("b", Some("a")).collect();
        assert_eq!(names, vec!["b-1", "b-2", "b-3"]);
    }
}
