//! What the writer thread and the store share: [`Shared`] (the index, the catalog, the locks
//! and flags both sides take), the [`Commit`] told to commit listeners, and the writer's
//! counters ([`Stats`]). The store and the writer (and scavenge) depend on this module; it
//! depends on neither.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use crate::cache::ReadCache;
use crate::index::Index;
use crate::lifecycle::Catalog;
use crate::options::Options;

/// One durable group commit, as told to commit listeners.
#[derive(Debug, Clone)]
pub struct Commit {
    /// Number of visible events after this commit (the next position).
    pub head: u64,
    /// Events this commit made visible.
    pub events: u64,
    /// Bytes written.
    pub bytes: u64,
    /// How long the fsync took, when this commit fsynced.
    pub fsync: Option<Duration>,
    /// Write + fsync time.
    pub duration: Duration,
}

/// A commit listener.
pub type Listener = Box<dyn Fn(&Commit) + Send + Sync>;

/// Counters kept by the writer.
#[derive(Debug, Default)]
pub struct Stats {
    pub fsyncs: AtomicU64,
    pub commits: AtomicU64,
    pub bytes_written: AtomicU64,
}

impl Stats {
    pub(crate) fn record_commit(&self, _events: u64, bytes: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The state of an open store that its handle, the writer thread and a scavenge share.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub options: Options,
    pub index: RwLock<Index>,
    /// Stream names in order and lifecycle (taken after `index`, never before it).
    pub catalog: RwLock<Catalog>,
    pub stopped: AtomicBool,
    /// Set when close begins: no background checkpoint starts after it.
    pub closing: AtomicBool,
    /// Serializes checkpoint writers (they share the temporary file), and keeps them out
    /// while a scavenge swaps a segment in.
    pub checkpoint_lock: Mutex<()>,
    /// One scavenge at a time.
    pub scavenge_lock: Mutex<()>,
    /// Events the open replayed from the log (not from a checkpoint).
    pub replayed_at_open: u64,
    pub listeners: RwLock<Vec<Listener>>,
    /// Events recently read by id ([`crate::cache`]): cleared under the index write lock
    /// whenever positions are forgotten or segments swapped.
    pub read_cache: ReadCache,
    pub stats: Stats,
}
