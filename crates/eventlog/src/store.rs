//! The public [`Store`]: open (with recovery), append, read, checkpoint, close.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::cache::{ReadCache, SharedEvent};
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::event::{Appended, ExpectedVersion, NewEvent, RecordedEvent};
use crate::index::Index;
use crate::lifecycle::{
    Catalog, Liveness, METASTREAM_PREFIX, Retention, metastream_of, now_micros,
    stream_of_metastream,
};
use crate::options::Options;
use crate::prealloc::{Mode, Preallocator};
use crate::reader::Lookup;
use crate::reader::{READ_SPAN_MAX_BYTES, read_at, read_span};
use crate::recovery::{TornTail, apply_claim, cut_torn_tail, scan_log};
use crate::scavenge::{IsDead, ScavengeOptions, ScavengeProgress};
use crate::segment::{create_segment, fsync_dir, list_segments};
use crate::shared::{Commit, Shared, Stats};
use crate::vfs::{LockError, Vfs};
use crate::writer::{Command, Writer};

/// The lock file that makes one process the owner of a store directory.
pub const LOCK_FILE: &str = "LOCK";

/// What [`Store::read_all_live_within`] answers.
#[derive(Debug)]
pub struct LivePage {
    /// The live events examined, in position order.
    pub events: Vec<RecordedEvent>,
    /// Events examined (live or dead).
    pub examined: usize,
    /// The position after the last event examined (`from` when none was).
    pub next: u64,
}

/// A point-in-time summary of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// Visible events (the next position).
    pub events: u64,
    /// Streams with at least one event.
    pub streams: u64,
    /// Segment files in the log.
    pub segments: u64,
    /// Bytes of visible log, summed over segments.
    pub log_bytes: u64,
    /// Approximate heap bytes of the in-memory index.
    pub index_heap_bytes: u64,
    /// fsyncs of the log since open.
    pub fsyncs: u64,
    /// Group commits since open.
    pub commits: u64,
    /// `false` once the writer stopped after an fsync failure.
    pub writable: bool,
}

/// What open found and did.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Events in the index after open (the next position).
    pub events: u64,
    /// Events covered by the checkpoint that was loaded (0: none loaded).
    pub checkpoint_events: u64,
    /// Why a checkpoint present on disk was not used.
    pub checkpoint_rejected: Option<String>,
    /// Events replayed from the log after the checkpoint (or all of them without one).
    pub replayed_events: u64,
    /// Bytes of log replayed.
    pub replayed_bytes: u64,
    /// A torn tail that was cut off: (segment, offset, bytes cut, side file).
    pub torn_tail: Option<TornTail>,
    /// How long open took.
    pub duration: Duration,
}

struct Handle {
    shared: Arc<Shared>,
    sender: Sender<Command>,
    writer: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    report: OpenReport,
    /// Held until the store is closed (and no scavenge runs): the OS lock releases when the
    /// file closes, so a clone that outlives the close (a scavenge's thread) does not keep the
    /// directory from the next owner.
    lock: Mutex<Option<Box<dyn Send + Sync>>>,
}

/// An open event log. Cheap to clone; all clones share one writer. The store closes (writing a
/// checkpoint) when [`Store::close`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.handle.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`: takes the directory lock, loads the
    /// checkpoint if it is usable, replays the rest of the log, cuts off a torn tail (keeping
    /// it in a side file), and starts the writer.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        let started = Instant::now();
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let vfs = &*options.storage;
        create_dir_durably(vfs, &dir)?;
        let lock = lock_dir(vfs, &dir)?;
        crate::scavenge::remove_leftovers(vfs, &dir)?;
        let mut segments = list_segments(vfs, &dir)?;
        if segments.is_empty() {
            let (path, _) = create_segment(vfs, &dir, 0).map_err(|e| Error::io(&dir, e.source))?;
            segments.push((0, path));
        }
        let mut report = OpenReport::default();
        let mut index = recover(vfs, &dir, &segments, &mut report)?;
        // The active segment is the last one; reopen it for writing.
        let active = index.segments.last_mut().expect("at least one segment");
        let file = vfs
            .open(&active.path, true)
            .map_err(|e| Error::io(&active.path, e))?;
        active.file = Arc::clone(&file);
        let len = active.visible_len;
        report.events = index.len();
        let catalog = build_catalog(&mut index)?;
        let read_cache = ReadCache::new(options.read_cache_bytes);
        let shared = Arc::new(Shared {
            dir,
            options,
            index: RwLock::new(index),
            catalog: RwLock::new(catalog),
            stopped: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            checkpoint_lock: Mutex::new(()),
            scavenge_lock: Mutex::new(()),
            replayed_at_open: report.replayed_events,
            listeners: RwLock::new(Vec::new()),
            stats: Stats::default(),
            read_cache,
        });
        let preallocator = start_preallocator(&shared);
        let (sender, receiver) = mpsc::channel();
        let writer = Writer::new(Arc::clone(&shared), receiver, file, len, preallocator);
        let writer = std::thread::Builder::new()
            .name("eventlog-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io(&shared.dir, e))?;
        report.duration = started.elapsed();
        tracing::info!(
            events = report.events,
            checkpoint_events = report.checkpoint_events,
            replayed_events = report.replayed_events,
            replayed_bytes = report.replayed_bytes,
            duration_ms = report.duration.as_millis() as u64,
            "event log open"
        );
        Ok(Store {
            handle: Arc::new(Handle {
                shared,
                sender,
                writer: Mutex::new(Some(writer)),
                closed: AtomicBool::new(false),
                report,
                lock: Mutex::new(Some(lock)),
            }),
        })
    }

    /// What open found and did (checkpoint use, replay, torn tail).
    pub fn open_report(&self) -> &OpenReport {
        &self.handle.report
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.handle.shared.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.handle.shared.options
    }

    /// Appends `events` atomically and returns once they are durable (per the durability mode)
    /// and visible. `expected` applies to the stream of the events, which must then all be in
    /// one stream.
    pub fn append(&self, events: Vec<NewEvent>, expected: ExpectedVersion) -> Result<Appended> {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.submit(events, expected, move |result| {
            let _ = sender.send(result);
        });
        receiver.recv().unwrap_or(Err(Error::Closed))
    }

    /// Queues an append and calls `done` with its outcome from the writer thread (keep `done`
    /// short: it runs on the writer). If the store closes first, `done` is dropped uncalled.
    /// This is how async callers wait without blocking a thread.
    pub fn submit(
        &self,
        events: Vec<NewEvent>,
        expected: ExpectedVersion,
        done: impl FnOnce(Result<Appended>) + Send + 'static,
    ) {
        self.submit_conditional(events, expected, None, done);
    }

    /// Queues a lifecycle record of `stream` (an event of its metastream, `$$<stream>`, of
    /// type [`METADATA_EVENT_TYPE`](crate::lifecycle::METADATA_EVENT_TYPE) or
    /// [`TOMBSTONE_EVENT_TYPE`](crate::lifecycle::TOMBSTONE_EVENT_TYPE)), appended only if
    /// `stream` itself is at `expected` and the metastream at `metastream_expected` (so a
    /// record built from the metastream's last one overwrites no concurrent change), both
    /// checked atomically with the append (answered as [`Store::submit`] answers).
    pub fn submit_lifecycle(
        &self,
        stream: &str,
        record: NewEvent,
        expected: ExpectedVersion,
        metastream_expected: ExpectedVersion,
        done: impl FnOnce(Result<Appended>) + Send + 'static,
    ) {
        if record.stream != metastream_of(stream) {
            return done(Err(Error::InvalidAppend(format!(
                "a lifecycle record of {stream:?} belongs to its metastream {:?}",
                metastream_of(stream)
            ))));
        }
        self.submit_conditional(
            vec![record],
            metastream_expected,
            Some((stream.to_owned(), expected)),
            done,
        );
    }

    fn submit_conditional(
        &self,
        events: Vec<NewEvent>,
        expected: ExpectedVersion,
        condition: Option<(String, ExpectedVersion)>,
        done: impl FnOnce(Result<Appended>) + Send + 'static,
    ) {
        if let Err(e) = self.check_append(&events, expected) {
            return done(Err(e));
        }
        let command = Command::Append {
            events,
            expected,
            condition,
            done: Box::new(done),
        };
        if let Err(mpsc::SendError(Command::Append { done, .. })) = self.handle.sender.send(command)
        {
            done(Err(Error::Closed));
        }
    }

    /// Limits and shape, checked on the caller's thread before anything is queued.
    fn check_append(&self, events: &[NewEvent], expected: ExpectedVersion) -> Result<()> {
        if self.handle.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        if self.handle.shared.stopped.load(Ordering::SeqCst) {
            return Err(Error::WriterStopped);
        }
        self.handle
            .shared
            .options
            .limits
            .check_batch(events, expected)
    }

    /// The event with this id, if stored and visible.
    pub fn get(&self, id: Uuid) -> Result<Option<RecordedEvent>> {
        Ok(match self.lookup(id, |_, _| true)? {
            Lookup::Missing => None,
            Lookup::Judged(event, _) | Lookup::Read(event) => Some(event.into_event()),
        })
    }

    /// The event with this id if it is stored and live ([`Store::get`] and
    /// [`Store::is_live`]), shared with the read cache: no copy of the event when it is
    /// cached, and a place for one rendering of it ([`SharedEvent::rendering`]). A cached
    /// event's liveness is judged under the one index lock of the lookup, from the
    /// catalog's liveness bits where they decide (as range reads judge it).
    pub fn get_live_shared(&self, id: Uuid) -> Result<Option<SharedEvent>> {
        let lookup = self.lookup(id, |index, event| {
            let catalog = self.catalog();
            catalog.liveness_of(event.position).unwrap_or_else(|| {
                live_in(
                    index,
                    &catalog,
                    now_micros(),
                    &event.stream,
                    event.version,
                    event.recorded_at_micros,
                )
            })
        })?;
        Ok(match lookup {
            Lookup::Missing => None,
            Lookup::Judged(event, live) => live.then_some(event),
            Lookup::Read(event) => self
                .is_live(&event.stream, event.version, event.recorded_at_micros)
                .then_some(event),
        })
    }

    /// [`crate::reader::read_one`] on this store.
    fn lookup(
        &self,
        id: Uuid,
        judge: impl FnOnce(&Index, &RecordedEvent) -> bool,
    ) -> Result<Lookup> {
        let shared = &self.handle.shared;
        crate::reader::read_one(
            &shared.index,
            &shared.read_cache,
            &shared.dir,
            id.as_bytes(),
            judge,
        )
    }

    /// Up to `limit` events from global position `from` (inclusive), in order.
    pub fn read_all(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.read_all_within(from, limit, usize::MAX)
    }

    /// Like [`Store::read_all`], but stops once the events read add up to `max_bytes` of
    /// records (always returning at least one event when one exists), so a page of large
    /// events cannot grow without bound.
    pub fn read_all_within(
        &self,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<RecordedEvent>> {
        Ok(self.read_all_kept(from, limit, max_bytes, false)?.events)
    }

    /// Like [`Store::read_all_within`] (`limit` and `max_bytes` count the events examined),
    /// but answers only the live events: deleted, truncated, expired and surplus events, and
    /// metastream records but the last, are checked on the record in the read buffer and
    /// never decoded into an event. Also answers how many events were examined and the
    /// position after the last of them, so that a caller can go on past a page of dead ones.
    pub fn read_all_live_within(
        &self,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<LivePage> {
        self.read_all_kept(from, limit, max_bytes, true)
    }

    fn read_all_kept(
        &self,
        from: u64,
        limit: usize,
        max_bytes: usize,
        live_only: bool,
    ) -> Result<LivePage> {
        let mut page = LivePage {
            events: Vec::with_capacity(limit.min(1024)),
            examined: 0,
            next: from,
        };
        let mut used = 0usize;
        let now = now_micros();
        // The next position to read. Not a slot: the lock is released between spans, and a
        // scavenge swapping a segment in meanwhile renumbers the slots (never the positions).
        while page.examined < limit && (page.examined == 0 || used < max_bytes) {
            let index = self.index();
            // Positions may have holes (a scavenge removed dead events): count live events.
            let from_slot = index.slot_at_or_after(page.next);
            let end = index
                .live()
                .min(from_slot.saturating_add(limit - page.examined));
            if from_slot >= end {
                break;
            }
            let budget = max_bytes.saturating_sub(used).min(READ_SPAN_MAX_BYTES);
            let (location, to) = index.span(from_slot, end, budget).expect("slot below live");
            if live_only {
                let catalog = self.catalog();
                // Most events' bits decide (see `Catalog`), with no lookup.
                let keep = |fields: &crate::format::RecordFields<'_>| {
                    catalog.liveness_of(fields.position).unwrap_or_else(|| {
                        live_in(
                            &index,
                            &catalog,
                            now,
                            fields.stream,
                            fields.stream_version,
                            fields.recorded_at_micros,
                        )
                    })
                };
                read_span(&index, &location, from_slot, to, &keep, &mut page.events)?;
            } else {
                read_span(
                    &index,
                    &location,
                    from_slot,
                    to,
                    &|_| true,
                    &mut page.events,
                )?;
            }
            used = used.saturating_add(location.len);
            page.examined += to - from_slot;
            page.next = index.position_of_slot(to - 1) + 1;
        }
        Ok(page)
    }

    /// Up to `limit` events of `stream` from `from_version` (inclusive); `None` for a stream
    /// with no events.
    pub fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Option<Vec<RecordedEvent>>> {
        self.read_stream_within(stream, from_version, limit, usize::MAX)
    }

    /// Like [`Store::read_stream`], but stops once the events read add up to `max_bytes` of
    /// records (always returning at least one event when one exists).
    pub fn read_stream_within(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Option<Vec<RecordedEvent>>> {
        // Where each record lives, copied out under the lock; the records are read after it is
        // released (a page of a cold stream is up to `limit` disk reads, which must not hold
        // up the writer's publishing and every reader queued behind it).
        let records = {
            let index = self.index();
            let Some(positions) = index.stream(stream) else {
                return Ok(None);
            };
            let from = usize::try_from(from_version.saturating_sub(index.first_version(stream)))
                .unwrap_or(usize::MAX)
                .min(positions.len());
            let to = from.saturating_add(limit).min(positions.len());
            let mut records = Vec::with_capacity(to - from);
            let mut used = 0usize;
            for &position in &positions[from..to] {
                if !records.is_empty() && used >= max_bytes {
                    break;
                }
                let slot = index
                    .slot_of(position)
                    .expect("a stream's positions are live");
                let record = index.record_of_slot(slot).expect("slot below live");
                used = used.saturating_add(record.len);
                records.push(record);
            }
            records
        };
        let dir = &self.handle.shared.dir;
        records
            .iter()
            .map(|record| crate::reader::read_record(record, dir))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// The version of the stream's last event (`None`: no events).
    pub fn stream_version(&self, stream: &str) -> Option<u64> {
        self.index().stream_version(stream)
    }

    /// The retention of `stream` its last lifecycle record states (`None`: no record, or
    /// one that states nothing).
    pub fn retention(&self, stream: &str) -> Option<Retention> {
        let _index = self.index();
        self.catalog().retention(stream)
    }

    /// Whether the event of `stream` at `version`, recorded at `recorded_at_micros`, is live
    /// now (see [`crate::lifecycle`]): one hash lookup for a stream without retention.
    pub fn is_live(&self, stream: &str, version: u64, recorded_at_micros: i64) -> bool {
        let index = self.index();
        let catalog = self.catalog();
        live_in(
            &index,
            &catalog,
            now_micros(),
            stream,
            version,
            recorded_at_micros,
        )
    }

    /// Keeps only the live events of `events` (one lock of the index and the catalog for
    /// all of them: what reads call on each page).
    pub fn retain_live(&self, events: &mut Vec<RecordedEvent>) {
        let index = self.index();
        let catalog = self.catalog();
        if events
            .iter()
            .all(|e| catalog.liveness_of(e.position) == Some(true))
        {
            return;
        }
        let now = now_micros();
        events.retain(|e| {
            catalog.liveness_of(e.position).unwrap_or_else(|| {
                live_in(
                    &index,
                    &catalog,
                    now,
                    &e.stream,
                    e.version,
                    e.recorded_at_micros,
                )
            })
        });
    }

    /// A snapshot of every stream's cut-offs at this moment, for a scavenge deciding which
    /// events to drop: [`Liveness::is_live`] answers for any event without a lock. Events
    /// appended after the snapshot are not in it and read as live (a later lifecycle record
    /// can only make more events dead, never fewer, except a re-append after a soft delete,
    /// whose new events are after the snapshot anyway).
    pub fn liveness(&self) -> Liveness {
        let index = self.index();
        let catalog = self.catalog();
        let mut liveness = Liveness::new(now_micros());
        // Only streams with retention and metastreams have cut-offs: the catalog knows both
        // without a walk of every stream.
        for (stream, retention) in catalog.retentions() {
            if let Some(last_version) = index.stream_version(stream) {
                liveness.insert(stream, retention, last_version);
            }
        }
        let only_last = Retention {
            max_count: Some(1),
            ..Retention::default()
        };
        for metastream in catalog.names_from(METASTREAM_PREFIX, None) {
            if let Some(last_version) = index.stream_version(metastream) {
                liveness.insert(metastream, only_last, last_version);
            }
        }
        liveness
    }

    /// The first live version of `stream` (by `$tb`, `$maxCount` and `$maxAge`), `None` for
    /// a stream with no events. Past the last version when no event is live. Ages are found
    /// by a binary search of the stream (record times increase along a stream).
    pub fn first_live_version(&self, stream: &str) -> Result<Option<u64>> {
        let index = self.index();
        let (Some(positions), Some(last_version)) =
            (index.stream(stream), index.stream_version(stream))
        else {
            return Ok(None);
        };
        // Versions below this were removed by a scavenge: `positions[0]` holds it.
        let first_version = index.first_version(stream);
        if is_metastream(stream) {
            return Ok(Some(last_version));
        }
        let Some(retention) = self.catalog().retention(stream) else {
            return Ok(Some(0));
        };
        let mut low = retention
            .first_live_version(last_version)
            .max(first_version);
        if retention.max_age_seconds.is_none() {
            return Ok(Some(low));
        }
        let now = now_micros();
        let mut high = last_version + 1;
        while low < high {
            let middle = low + (high - low) / 2;
            let event = read_at(&index, positions[(middle - first_version) as usize])?;
            if retention.is_live(middle, last_version, event.recorded_at_micros, now) {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Ok(Some(low))
    }

    /// Names of streams in byte order, after `after` (exclusive), starting with `prefix`, at
    /// most `limit`. Metastreams (`$$...`) are left out unless `prefix` starts with `$$`.
    pub fn stream_names(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<String> {
        let index = self.index();
        let catalog = self.catalog();
        let with_metastreams = prefix.starts_with(METASTREAM_PREFIX);
        catalog
            .names_from(prefix, after)
            .filter(|name| with_metastreams || !is_metastream(name))
            .filter(|name| index.stream(name).is_some())
            .take(limit)
            .map(str::to_owned)
            .collect()
    }

    /// Approximate heap bytes of the catalog (sorted names and per-stream retention),
    /// beside [`StoreStats::index_heap_bytes`].
    pub fn catalog_heap_bytes(&self) -> u64 {
        self.catalog().heap_bytes() as u64
    }

    /// Number of visible events: the position the next event will get.
    pub fn head(&self) -> u64 {
        self.index().len()
    }

    /// Registers `listener`, called on the writer thread after every commit (keep it short).
    pub fn on_commit(&self, listener: impl Fn(&Commit) + Send + Sync + 'static) {
        self.handle
            .shared
            .listeners
            .write()
            .expect("listeners lock")
            .push(Box::new(listener));
    }

    /// Writes a checkpoint of the index now (it is also written periodically and on close).
    pub fn checkpoint(&self) -> Result<()> {
        let (sender, receiver) = mpsc::sync_channel(1);
        let command = Command::Checkpoint {
            done: Box::new(move |result| {
                let _ = sender.send(result);
            }),
        };
        self.handle
            .sender
            .send(command)
            .map_err(|_| Error::Closed)?;
        receiver.recv().unwrap_or(Err(Error::Closed))
    }

    /// Seals the active segment now and starts a new one, so that a scavenge can reach the
    /// events in it (a scavenge never rewrites the active segment). Answers `false` when the
    /// active segment holds no event (nothing to seal).
    pub fn seal_active_segment(&self) -> Result<bool> {
        let (sender, receiver) = mpsc::sync_channel(1);
        let command = Command::Seal {
            done: Box::new(move |result| {
                let _ = sender.send(result);
            }),
        };
        self.handle
            .sender
            .send(command)
            .map_err(|_| Error::Closed)?;
        receiver.recv().unwrap_or(Err(Error::Closed))
    }

    /// Rewrites every sealed segment holding an event `is_dead` calls dead without it, and
    /// swaps the new files in (see [`crate::scavenge`]); calls `progress` after each segment.
    /// Runs on the calling thread while appends and reads go on; one scavenge at a time (a
    /// second call waits). Positions of live events never change.
    pub fn scavenge(
        &self,
        is_dead: &dyn IsDead,
        options: ScavengeOptions,
        progress: &dyn Fn(&ScavengeProgress),
    ) -> Result<ScavengeProgress> {
        if self.handle.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        crate::scavenge::run(&self.handle.shared, is_dead, options, progress, &|| {
            self.checkpoint()
        })
    }

    /// A summary for metrics and tools.
    pub fn stats(&self) -> StoreStats {
        let shared = &self.handle.shared;
        let index = self.index();
        StoreStats {
            events: index.len(),
            streams: index.stream_count() as u64,
            segments: index.segments.len() as u64,
            log_bytes: index.segments.iter().map(|s| s.visible_len).sum(),
            index_heap_bytes: index.heap_bytes() as u64,
            fsyncs: shared.stats.fsyncs.load(Ordering::Relaxed),
            commits: shared.stats.commits.load(Ordering::Relaxed),
            writable: !shared.stopped.load(Ordering::SeqCst),
        }
    }

    /// Whether appends are accepted (`false` after an fsync failure: reopen the store).
    pub fn is_writable(&self) -> bool {
        !self.handle.shared.stopped.load(Ordering::SeqCst)
    }

    /// Stops the writer after it has answered everything queued before this call, fsyncs, and
    /// writes a checkpoint. Later appends fail with [`Error::Closed`]; reads keep working.
    pub fn close(&self) {
        self.handle.close();
    }

    /// The catalog; take it only while holding the index lock (or not needing it after).
    fn catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.handle
            .shared
            .catalog
            .read()
            .expect("catalog lock poisoned")
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.handle
            .shared
            .index
            .read()
            .expect("index lock poisoned")
    }
}

impl Handle {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.shared.closing.store(true, Ordering::SeqCst);
        let writer = self.writer.lock().expect("writer lock").take();
        if let Some(writer) = writer {
            let _ = self.sender.send(Command::Shutdown);
            if writer.join().is_err() {
                tracing::error!("the event log writer panicked");
            }
        }
        // A running scavenge sees `closing` at its next step (a paced one within a nap) and
        // returns; once it has, nothing of this store touches the directory again.
        let no_scavenge = self
            .shared
            .scavenge_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(self.lock.lock().expect("directory lock").take());
        drop(no_scavenge);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.close();
    }
}

fn is_metastream(name: &str) -> bool {
    stream_of_metastream(name).is_some()
}

/// Whether an event is live, given the index and catalog (locked in that order).
fn live_in(
    index: &Index,
    catalog: &Catalog,
    now: i64,
    stream: &str,
    version: u64,
    recorded_at_micros: i64,
) -> bool {
    let last_version = || index.stream_version(stream).unwrap_or(version).max(version);
    if is_metastream(stream) {
        // Only a metastream's last record counts.
        return version == last_version();
    }
    match catalog.retention(stream) {
        None => true,
        // Only `$maxCount` needs the stream's last version (a lookup in the index's stream
        // map); without it, any version at or past `version` answers the same.
        Some(retention) => {
            let last = match retention.max_count {
                Some(_) => last_version(),
                None => version,
            };
            retention.is_live(version, last, recorded_at_micros, now)
        }
    }
}

/// Loads the checkpoint if it is usable, replays the rest of the log, and cuts off a torn
/// tail; refuses mid-log damage. Fills in what `report` says about it.
fn recover(
    vfs: &dyn Vfs,
    dir: &Path,
    segments: &[(u64, std::path::PathBuf)],
    report: &mut OpenReport,
) -> Result<Index> {
    let loaded = checkpoint::load(vfs, dir, segments);
    if let Some(reason) = loaded.rejected {
        tracing::warn!(
            reason = %reason,
            "ignoring the index checkpoint; replaying the whole log"
        );
        report.checkpoint_rejected = Some(reason);
    }
    report.checkpoint_events = loaded.resume.as_ref().map_or(0, |r| r.index.len());
    let mut scan = scan_log(vfs, segments, loaded.resume)?;
    apply_claim(&mut scan, loaded.claim.as_ref());
    let mut index = scan.index;
    report.replayed_events = scan.replayed_events;
    report.replayed_bytes = scan.replayed_bytes;
    if let Some(damage) = scan.damage {
        if !damage.torn_tail {
            return Err(Error::Corrupt {
                path: damage.path,
                offset: damage.offset,
                reason: damage.reason,
            });
        }
        report.torn_tail = Some(cut_torn_tail(vfs, dir, &mut index, &damage)?);
    }
    Ok(index)
}

/// Starts zero-filling the active segment ahead of the writer, when `Options::preallocate`
/// asks for it and a descriptor for it can be had.
fn start_preallocator(shared: &Shared) -> Option<Arc<Preallocator>> {
    if !shared.options.preallocate {
        return None;
    }
    let active = &shared.index.read().expect("index lock").segments;
    let path = &active.last().expect("an active segment").path;
    let storage = &shared.options.storage;
    let mode = if storage.deterministic() {
        Mode::Inline
    } else {
        Mode::Background
    };
    // Preallocation only makes fsyncs cheaper: without a descriptor for it (say, at the
    // descriptor limit) the store runs without it until the next roll.
    match storage
        .open(path, true)
        .and_then(|own| Ok((own.len()?, own)))
    {
        Ok((file_len, own)) => Some(Preallocator::start(own, file_len, mode)),
        Err(e) => {
            tracing::warn!(error = %e, "no preallocation for the active segment");
            None
        }
    }
}

/// The catalog of a freshly scanned index: every name, and the retention the last record of
/// each metastream states (one read per metastream).
fn build_catalog(index: &mut Index) -> Result<Catalog> {
    let mut catalog = Catalog::default();
    let mut floors = Vec::new();
    for number in 0..index.stream_count() {
        let (name, positions) = index.stream_at(number).expect("number below count");
        catalog.add_name(name);
        if let (Some(owner), Some(&last)) = (stream_of_metastream(name), positions.last()) {
            let record = read_at(index, last)?;
            let retention = Retention::of_record(&record.event_type, &record.data);
            if let Some(truncate_before) = retention.truncate_before {
                floors.push((owner.to_owned(), truncate_before));
            }
            catalog.set_retention(owner, retention);
            // Every record but the last is superseded.
            catalog.mark_dead(positions[..positions.len() - 1].iter().copied());
        }
    }
    // A tombstoned stream's events are dead for good; other retained streams' are to check.
    let retained: Vec<(Box<str>, bool)> = catalog
        .retentions()
        .map(|(name, r)| (name.into(), r.tombstoned))
        .collect();
    for (stream, tombstoned) in retained {
        let positions = index.stream(&stream).unwrap_or_default().iter().copied();
        if tombstoned {
            catalog.mark_dead(positions);
        } else {
            catalog.mark_checked(positions);
        }
    }
    // A soft-deleted stream whose every event a scavenge removed is gone from the segments;
    // its lifecycle record still says where its versions continue.
    for (stream, truncate_before) in floors {
        index.raise_next_version(&stream, truncate_before);
    }
    Ok(catalog)
}

/// Creates the store directory if needed and makes its entry durable: a directory's entry is
/// durable only once its parent is fsynced, and without it a power cut could take the
/// directory, and every acknowledged event in it, away. The parent is fsynced at every open
/// (a previous process may have crashed between creating the directory and fsyncing it).
fn create_dir_durably(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .take_while(|a| !vfs.is_dir(a))
        .collect();
    vfs.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let parent_of = |path: &Path| match path.parent() {
        Some(parent) if parent.as_os_str().is_empty() => Path::new(".").to_path_buf(),
        Some(parent) => parent.to_path_buf(),
        None => path.to_path_buf(),
    };
    for created in missing.iter().rev() {
        fsync_dir(vfs, &parent_of(created))?;
    }
    if missing.is_empty()
        && let Err(e) = fsync_dir(vfs, &parent_of(dir))
    {
        tracing::warn!(error = %e, "could not fsync the store directory's parent");
    }
    Ok(())
}

pub(crate) fn lock_dir(vfs: &dyn Vfs, dir: &Path) -> Result<Box<dyn Send + Sync>> {
    vfs.lock(dir).map_err(|e| match e {
        LockError::Held => Error::Locked {
            path: dir.to_path_buf(),
        },
        LockError::Io(e) => Error::io(dir.join(LOCK_FILE), e),
    })
}
