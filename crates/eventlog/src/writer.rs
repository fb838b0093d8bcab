//! The single writer thread: group commit, segment rolling, publication.
//!
//! Appenders queue commands on a channel. The writer takes everything queued (up to
//! `group_commit_max_bytes`), validates each append against the index plus what this group has
//! already accepted, encodes the accepted ones into one buffer, writes it with one positional
//! write and makes it durable with one `fdatasync`. Only then does it publish the new entries in
//! the index (making them visible to readers) and answer the appenders. While it fsyncs, new
//! appends queue up and form the next group, so throughput grows with concurrency.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::event::{Appended, ExpectedVersion, NewEvent, Placed};
use crate::format::{RecordFields, SEGMENT_HEADER_LEN, encode_record, record_len};
use crate::index::{Index, SegmentEntry};
use crate::lifecycle::{Retention, stream_of_metastream};
use crate::prealloc::Preallocator;
use crate::reader::read_at;
use crate::segment::{create_segment, remove_created};
use crate::shared::{Commit, Shared};
use crate::vfs::{FileHandle, write_all_at};
use crate::{Durability, checkpoint};

/// Called once with the outcome of an append.
pub type Done = Box<dyn FnOnce(Result<Appended>) + Send>;

pub enum Command {
    Append {
        events: Vec<NewEvent>,
        expected: ExpectedVersion,
        /// A second condition, on another stream (a lifecycle record goes to the metastream,
        /// `expected` being the metastream's version, and is conditional on the stream's).
        condition: Option<(String, ExpectedVersion)>,
        done: Done,
    },
    Checkpoint {
        done: Box<dyn FnOnce(Result<()>) + Send>,
    },
    /// Seal the active segment now and start a new one (answers `false` when the active
    /// segment holds no event, so there is nothing to seal).
    Seal {
        done: Box<dyn FnOnce(Result<bool>) + Send>,
    },
    Shutdown,
}

/// What to answer an appender once its flush is over.
enum Reply {
    /// New events in this flush: `Ok` once durable, an error if the flush fails.
    New(Done, Appended),
    /// Already durable before this flush: answered `Ok` whatever happens.
    Settled(Done, Result<Appended>),
}

/// The hasher of a flush's maps: foldhash, seeded per map. std's SipHash was 12% of the
/// writer thread's time under `BatchAppend` (three lookups or inserts per event), and the
/// writer is the one thread every append goes through.
type FlushHasher = foldhash::fast::RandomState;

/// One write + fsync worth of accepted appends.
#[derive(Default)]
struct Flush {
    buf: Vec<u8>,
    /// (id, offset in segment, stream) per new event, in position order.
    entries: Vec<([u8; 16], u32, String)>,
    /// Stream -> number of events it will have after this flush (for streams touched).
    stream_event_counts: HashMap<String, u64, FlushHasher>,
    /// Id -> index into `entries` and the event, for duplicates within one group.
    pending: HashMap<[u8; 16], (usize, NewEvent), FlushHasher>,
    /// Stream -> the retention its last lifecycle record in this flush states (published
    /// with the flush; a tombstone here also refuses later appends of the same flush).
    lifecycle: HashMap<String, Retention, FlushHasher>,
    replies: Vec<Reply>,
}

impl Flush {
    /// The number of events `stream` has with this flush: what its next event's version is.
    fn stream_event_count(&self, index: &Index, stream: &str) -> u64 {
        self.stream_event_counts
            .get(stream)
            .copied()
            .unwrap_or_else(|| index.stream_next_version(stream))
    }
}

/// The writer thread's state: the active segment and how much of it is written and synced,
/// and when to checkpoint.
pub struct Writer {
    shared: Arc<Shared>,
    /// Where appenders queue their commands.
    receiver: Receiver<Command>,
    /// The active segment, open for writing.
    file: FileHandle,
    /// Bytes of the active segment that are written (and published).
    len_bytes: u64,
    /// Whether bytes were written since the last fsync (only outside `Durability::Fsync`).
    unsynced: bool,
    /// Bytes of the active segment, and events of the log, known durable: what a failed
    /// fsync cuts the log back to (outside `Durability::Fsync` acknowledged bytes may be
    /// unsynced, and after a failed fsync they may never reach the disk).
    synced_len_bytes: u64,
    synced_event_count: u64,
    /// When the active segment was last fsynced (or the store opened), on the engine's clock.
    last_sync_at: Instant,
    /// Events published since the last checkpoint was started.
    events_since_checkpoint_count: u64,
    /// When the last checkpoint was started (or the store opened).
    last_checkpoint_at: Instant,
    /// Answers go to the notifier thread: waking 64 appenders costs a syscall each, and the
    /// writer would rather be writing and fsyncing the next group meanwhile.
    notifier: Option<(Sender<Answers>, std::thread::JoinHandle<()>)>,
    /// Zero-fills the active segment ahead of the writer (when `Options::preallocate`).
    preallocator: Option<Arc<Preallocator>>,
    /// A segment file a failed roll created and could not remove: removed before the next
    /// roll, which fails until it is gone.
    leftover_segment: Option<PathBuf>,
    /// The running background checkpoint, joined before the next one and at close.
    checkpointer: Option<JoinHandle<()>>,
}

/// One queued append, as the writer takes it.
struct Pending {
    events: Vec<NewEvent>,
    expected: ExpectedVersion,
    condition: Option<(String, ExpectedVersion)>,
    done: Done,
}

/// Flushes with at most this many answers are answered by the writer itself.
const ANSWER_INLINE_MAX: usize = 2;

/// One flush's answers, delivered in order by the notifier thread.
type Answers = Vec<(Done, Result<Appended>)>;

/// Delivers answers until the writer drops its sender.
fn notify(answers: Receiver<Answers>) {
    for batch in answers {
        for (done, result) in batch {
            done(result);
        }
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        receiver: Receiver<Command>,
        file: FileHandle,
        len_bytes: u64,
        preallocator: Option<Arc<Preallocator>>,
    ) -> Self {
        let synced_event_count = shared.index.read().expect("index lock").len();
        Writer {
            receiver,
            file,
            len_bytes,
            unsynced: false,
            synced_len_bytes: len_bytes,
            synced_event_count,
            last_sync_at: shared.options.storage.now(),
            events_since_checkpoint_count: 0,
            last_checkpoint_at: shared.options.storage.now(),
            notifier: None,
            preallocator,
            leftover_segment: None,
            checkpointer: None,
            shared,
        }
    }

    /// The engine's clock (the simulated disk's in tests).
    fn now(&self) -> Instant {
        self.shared.options.storage.now()
    }

    fn stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    /// fsyncs the active segment now (outside `Durability::Fsync`, where bytes are written
    /// before they are synced). A failure stops the writer, in every mode.
    fn sync_now(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        if self.stopped() {
            return Err(Error::WriterStopped);
        }
        match self.file.sync_data() {
            Ok(()) => {
                self.unsynced = false;
                self.last_sync_at = self.now();
                self.shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.synced_len_bytes = self.len_bytes;
                self.synced_event_count = self.shared.index.read().expect("index lock").len();
                Ok(())
            }
            Err(e) => {
                self.stop_after_fsync_failure(&e);
                self.cut_unsynced();
                Err(Error::WriterStopped)
            }
        }
    }

    /// After a failed fsync: cuts the log back to what is known durable, in the file and in
    /// the index. The kernel may have dropped the rest's dirty pages while reads still see
    /// them; a later process must not build on bytes that will never reach the disk.
    fn cut_unsynced(&mut self) {
        if self.len_bytes <= self.synced_len_bytes {
            return;
        }
        tracing::error!(
            bytes = self.len_bytes - self.synced_len_bytes,
            events = self.shared.index.read().expect("index lock").len() - self.synced_event_count,
            "cutting off acknowledged but unsynced events after the failed fsync"
        );
        if let Err(e) = self.file.set_len(self.synced_len_bytes) {
            tracing::error!(error = %e, "could not cut off the unsynced part of the log");
        }
        if let Some(preallocator) = &self.preallocator {
            preallocator.truncated(self.synced_len_bytes);
        }
        let mut index = self.shared.index.write().expect("index lock");
        index.truncate(self.synced_event_count, self.synced_len_bytes);
        self.shared.read_cache.clear();
        self.shared
            .catalog
            .write()
            .expect("catalog lock poisoned")
            .forget_dead_from(self.synced_event_count);
        drop(index);
        self.len_bytes = self.synced_len_bytes;
        self.unsynced = false;
    }

    pub fn run(mut self) {
        let (sender, receiver) = std::sync::mpsc::channel();
        self.notifier = std::thread::Builder::new()
            .name("eventlog-notify".into())
            .spawn(move || notify(receiver))
            .map(|handle| (sender, handle))
            .map_err(|e| tracing::warn!(error = %e, "no notifier thread; the writer answers"))
            .ok();
        // After a long replay (a crash, or a stale checkpoint), checkpoint right away so that
        // the next open does not replay it all again.
        let replayed = self.shared.replayed_at_open;
        let every = self.shared.options.checkpoint_every_events;
        if every > 0 && replayed >= (every / 10).max(1) {
            self.checkpoint_in_background();
        }
        self.run_commands();
        self.join_checkpointer();
        if let Some(preallocator) = self.preallocator.take() {
            preallocator.stop();
        }
        if let Some((sender, handle)) = self.notifier.take() {
            drop(sender);
            let _ = handle.join();
        }
    }

    fn run_commands(&mut self) {
        loop {
            let first = match self.next_command() {
                Some(command) => command,
                None => break,
            };
            let mut appends = Vec::new();
            let mut checkpoints = Vec::new();
            let mut seals = Vec::new();
            let mut shutdown = false;
            let mut queued_bytes = 0usize;
            let mut command = Some(first);
            while let Some(next) = command.take() {
                match next {
                    Command::Append {
                        events,
                        expected,
                        condition,
                        done,
                    } => {
                        queued_bytes += events
                            .iter()
                            .map(|e| e.size_bytes() as usize)
                            .sum::<usize>();
                        appends.push(Pending {
                            events,
                            expected,
                            condition,
                            done,
                        });
                    }
                    Command::Checkpoint { done } => checkpoints.push(done),
                    Command::Seal { done } => seals.push(done),
                    Command::Shutdown => shutdown = true,
                }
                if shutdown || queued_bytes >= self.shared.options.group_commit_max_bytes {
                    break;
                }
                command = self.receiver.try_recv().ok();
            }
            self.process(appends);
            for done in checkpoints {
                done(self.write_checkpoint());
            }
            for done in seals {
                done(self.seal());
            }
            if shutdown {
                break;
            }
            self.maybe_checkpoint_in_background();
        }
        // No background checkpoint may outlive the store (the next owner of the directory
        // would find it writing), nor overwrite the final one with an older cut.
        self.join_checkpointer();
        if self.stopped() {
            return;
        }
        if self.sync_now().is_err() {
            tracing::error!("fsync at close failed; no checkpoint written");
            return;
        }
        if let Err(e) = self.write_checkpoint() {
            tracing::warn!(error = %e, "could not write the index checkpoint at close");
        }
    }

    fn join_checkpointer(&mut self) {
        if let Some(thread) = self.checkpointer.take()
            && thread.join().is_err()
        {
            tracing::error!("the checkpoint thread panicked");
        }
    }

    /// Waits for the next command; under interval durability, fsyncs when the interval passes.
    fn next_command(&mut self) -> Option<Command> {
        loop {
            let every = match self.shared.options.durability {
                Durability::Interval { every } if self.unsynced => every,
                _ => return self.receiver.recv().ok(),
            };
            if self.stopped() {
                return self.receiver.recv().ok();
            }
            let wait = every
                .saturating_sub(self.now().saturating_duration_since(self.last_sync_at))
                // A simulated clock moves only when the test moves it: wake up now and then.
                .max(Duration::from_millis(1));
            match self.receiver.recv_timeout(wait) {
                Ok(command) => return Some(command),
                Err(RecvTimeoutError::Timeout) => {
                    if self.interval_due(every) {
                        let _ = self.sync_now();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn interval_due(&self, every: Duration) -> bool {
        self.now().saturating_duration_since(self.last_sync_at) >= every
    }

    fn stop_after_fsync_failure(&self, error: &io::Error) {
        tracing::error!(
            error = %error,
            "fsync failed; the log stops accepting writes until it is reopened"
        );
        self.shared.stopped.store(true, Ordering::SeqCst);
    }

    fn process(&mut self, appends: Vec<Pending>) {
        let mut flush = Flush::default();
        for Pending {
            events,
            expected,
            condition,
            done,
        } in appends
        {
            if self.shared.stopped.load(Ordering::SeqCst) {
                done(Err(Error::WriterStopped));
                continue;
            }
            let size: u64 = events
                .iter()
                .map(|e| {
                    record_len(
                        e.stream.len(),
                        e.event_type.len(),
                        e.data.len(),
                        e.metadata.as_ref().map_or(0, Vec::len),
                    ) as u64
                })
                .sum();
            let written = self.len_bytes + flush.buf.len() as u64;
            if written > SEGMENT_HEADER_LEN
                && written + size > self.shared.options.segment_size_bytes
            {
                self.commit(std::mem::take(&mut flush));
                // That commit's fsync may have failed: then nothing more is acknowledged.
                if self.stopped() {
                    done(Err(Error::WriterStopped));
                    continue;
                }
                if let Err(e) = self.roll() {
                    tracing::error!(error = %e, "could not start a new segment");
                    done(Err(e));
                    continue;
                }
            }
            self.accept(&mut flush, events, (expected, condition), done);
            if flush.buf.len() >= self.shared.options.group_commit_max_bytes {
                self.commit(std::mem::take(&mut flush));
            }
        }
        self.commit(flush);
    }

    /// Validates one append against the index and the flush; encodes it if accepted.
    fn accept(
        &self,
        flush: &mut Flush,
        events: Vec<NewEvent>,
        (expected, condition): (ExpectedVersion, Option<(String, ExpectedVersion)>),
        done: Done,
    ) {
        let index = self.shared.index.read().expect("index lock poisoned");
        // Under the index lock: the catalog is taken after it, as every reader of it does.
        if let Err(e) = self.refuse_tombstoned(flush, &events) {
            return done(Err(e));
        }
        match self.repeats(&index, flush, &events) {
            Err(e) => return done(Err(e)),
            Ok(Some((appended, of_this_flush))) => {
                return flush.replies.push(if of_this_flush {
                    Reply::New(done, appended)
                } else {
                    Reply::Settled(done, Ok(appended))
                });
            }
            Ok(None) => {}
        }
        if let Err(e) = self.check_expected(&index, flush, &events[0].stream, expected, condition) {
            return done(Err(e));
        }
        let placed = self.encode(&index, flush, events);
        flush.replies.push(Reply::New(
            done,
            Appended {
                events: placed,
                duplicate: false,
            },
        ));
    }

    /// A tombstone is final: refuses events of a tombstoned stream or of its metastream (by
    /// the catalog, or a tombstone earlier in this flush). Call it holding the index lock.
    fn refuse_tombstoned(&self, flush: &Flush, events: &[NewEvent]) -> Result<()> {
        let catalog = self.shared.catalog.read().expect("catalog lock poisoned");
        let tombstoned = |stream: &str| {
            flush.lifecycle.get(stream).is_some_and(|r| r.tombstoned)
                || (!flush.lifecycle.contains_key(stream) && catalog.is_tombstoned(stream))
        };
        for event in events {
            let owner = stream_of_metastream(&event.stream).unwrap_or(&event.stream);
            if tombstoned(owner) {
                return Err(Error::StreamDeleted {
                    stream: owner.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Idempotency: an id seen before (in the log or earlier in this flush) must come with
    /// identical content, and a batch is either entirely new or entirely a repeat. Answers
    /// `None` for a new batch; for a repeat, where its events are and whether they are events
    /// of this flush (then answered once it is durable, otherwise at once).
    fn repeats(
        &self,
        index: &Index,
        flush: &Flush,
        events: &[NewEvent],
    ) -> Result<Option<(Appended, bool)>> {
        let mut repeats = Vec::new();
        let mut repeats_pending = false;
        for event in events {
            let id = *event.id.as_bytes();
            let found = if let Some(position) = index.position_of(&id) {
                let stored = read_at(index, position)?;
                if !stored.same_content(event) {
                    return Err(Error::IdConflict { id: event.id });
                }
                Some(Placed {
                    id: event.id,
                    stream: stored.stream,
                    version: stored.version,
                    position,
                })
            } else if let Some((entry, pending)) = flush.pending.get(&id) {
                if pending != event {
                    return Err(Error::IdConflict { id: event.id });
                }
                repeats_pending = true;
                Some(Placed {
                    id: event.id,
                    stream: pending.stream.clone(),
                    version: flush_version(index, flush, *entry),
                    position: index.len() + *entry as u64,
                })
            } else {
                None
            };
            repeats.extend(found);
        }
        if repeats.is_empty() {
            return Ok(None);
        }
        if repeats.len() != events.len() {
            return Err(Error::IdConflict { id: repeats[0].id });
        }
        let appended = Appended {
            events: repeats,
            duplicate: true,
        };
        Ok(Some((appended, repeats_pending)))
    }

    /// Optimistic concurrency: `stream` must be at `expected`, and the `condition`'s stream
    /// at its version, against the index plus this flush.
    fn check_expected(
        &self,
        index: &Index,
        flush: &Flush,
        stream: &str,
        expected: ExpectedVersion,
        condition: Option<(String, ExpectedVersion)>,
    ) -> Result<()> {
        let own = Some((stream, expected));
        let other = condition
            .as_ref()
            .map(|(stream, expected)| (stream.as_str(), *expected));
        for (checked, expected) in own.into_iter().chain(other) {
            let current = flush.stream_event_count(index, checked).checked_sub(1);
            let matches = match expected {
                ExpectedVersion::NoStream => current.is_none(),
                ExpectedVersion::Exact(version) => current == Some(version),
                ExpectedVersion::Any => true,
            };
            if !matches {
                return Err(Error::WrongExpectedVersion {
                    stream: checked.to_owned(),
                    expected,
                    current,
                });
            }
        }
        Ok(())
    }

    /// Encodes an accepted batch into the flush, giving its events their positions and
    /// versions, and records what publishing the flush will need; answers where they went.
    fn encode(&self, index: &Index, flush: &mut Flush, events: Vec<NewEvent>) -> Vec<Placed> {
        let recorded_at_micros = now_micros();
        let batch_len = events.len() as u32;
        let mut placed = Vec::with_capacity(events.len());
        for (batch_index, event) in events.into_iter().enumerate() {
            let position = index.len() + flush.entries.len() as u64;
            let version = flush.stream_event_count(index, &event.stream);
            let offset = self.len_bytes + flush.buf.len() as u64;
            encode_record(
                &mut flush.buf,
                &RecordFields {
                    id: *event.id.as_bytes(),
                    position,
                    stream_version: version,
                    recorded_at_micros,
                    batch_index: batch_index as u32,
                    batch_len,
                    stream: &event.stream,
                    event_type: &event.event_type,
                    data: &event.data,
                    metadata: event.metadata.as_deref(),
                    binary: event.binary,
                },
            );
            let offset = u32::try_from(offset).expect("segment size is validated below 4 GiB");
            flush
                .stream_event_counts
                .insert(event.stream.clone(), version + 1);
            flush
                .entries
                .push((*event.id.as_bytes(), offset, event.stream.clone()));
            if let Some(owner) = stream_of_metastream(&event.stream) {
                flush.lifecycle.insert(
                    owner.to_owned(),
                    Retention::of_record(&event.event_type, &event.data),
                );
            }
            placed.push(Placed {
                id: event.id,
                stream: event.stream.clone(),
                version,
                position,
            });
            flush
                .pending
                .insert(*event.id.as_bytes(), (flush.entries.len() - 1, event));
        }
        placed
    }

    /// Writes, fsyncs (per durability) and publishes one flush, then answers its appenders.
    fn commit(&mut self, flush: Flush) {
        if flush.buf.is_empty() {
            self.answer(flush.replies, None);
            return;
        }
        let started = Instant::now();
        if let Some(preallocator) = &self.preallocator {
            preallocator.reserve(self.len_bytes + flush.buf.len() as u64);
        }
        if let Err(e) = write_all_at(&*self.file, &flush.buf, self.len_bytes) {
            tracing::error!(error = %e, bytes = flush.buf.len(), "write to the log failed");
            self.cut_failed_write();
            let failure = || Error::WriteFailed {
                source: io::Error::new(e.kind(), e.to_string()),
            };
            self.answer(flush.replies, Some(&failure));
            return;
        }
        let Some((fsync, synced)) = self.make_durable(flush.buf.len() as u64) else {
            self.answer(flush.replies, Some(&|| Error::WriterStopped));
            return;
        };
        let events = flush.entries.len() as u64;
        let head = self.publish(&flush);
        if synced {
            self.synced_len_bytes = self.len_bytes;
            self.synced_event_count = head;
        }
        self.events_since_checkpoint_count += events;
        self.shared
            .stats
            .record_commit(events, flush.buf.len() as u64);
        let commit = Commit {
            head,
            events,
            bytes: flush.buf.len() as u64,
            fsync,
            duration: started.elapsed(),
        };
        for listener in self.shared.listeners.read().expect("listeners lock").iter() {
            listener(&commit);
        }
        self.answer(flush.replies, None);
    }

    /// After a failed write: cuts off whatever part of it landed, durably, so that the next
    /// write starts clean, and neither a later seal nor a power cut can bring the partial
    /// bytes back (a sealed segment must end at its last record; recovery reads a hole left by
    /// lost pages as zeros). Stops the writer when even the cut fails.
    fn cut_failed_write(&mut self) {
        match self.file.set_len(self.len_bytes) {
            Err(cut) => {
                tracing::error!(error = %cut, "could not cut off a failed write");
                self.shared.stopped.store(true, Ordering::SeqCst);
            }
            Ok(()) => {
                self.unsynced = true;
                let _ = self.sync_now();
            }
        }
        if let Some(preallocator) = &self.preallocator {
            preallocator.truncated(self.len_bytes);
        }
    }

    /// Makes the `written_bytes` just written after `len_bytes` durable as the durability mode
    /// says: answers how long the fsync took (when this flush waited for one) and whether the
    /// log is now synced up to its end, or `None` when an fsync failed (the writer is then
    /// stopped and the unsynced log cut off: the flush must not be acknowledged).
    fn make_durable(&mut self, written_bytes: u64) -> Option<(Option<Duration>, bool)> {
        match self.shared.options.durability {
            Durability::Fsync => {
                let fsync_started = Instant::now();
                if let Err(e) = self.file.sync_data() {
                    self.stop_after_fsync_failure(&e);
                    // The kernel may have dropped these pages' dirty state: they may never
                    // reach the disk, yet reads would see them. Cut them off so that nothing
                    // after this point is built on them; the next open starts from what the
                    // log holds.
                    if let Err(cut) = self.file.set_len(self.len_bytes) {
                        tracing::error!(error = %cut, "could not cut off an unsynced write");
                    }
                    if let Some(preallocator) = &self.preallocator {
                        preallocator.truncated(self.len_bytes);
                    }
                    return None;
                }
                self.shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                Some((Some(fsync_started.elapsed()), true))
            }
            Durability::Interval { every } => {
                self.unsynced = true;
                if !self.interval_due(every) {
                    return Some((None, false));
                }
                if self.sync_now().is_err() {
                    // The failed fsync covered this flush: it is not acknowledged, nor
                    // published, and cut off with the rest of the unsynced log.
                    self.len_bytes += written_bytes;
                    self.cut_unsynced();
                    return None;
                }
                Some((None, true))
            }
            Durability::Never => {
                self.unsynced = true;
                Some((None, false))
            }
        }
    }

    /// Publishes a written flush: its events in the index, its stream names and lifecycle in
    /// the catalog, the active segment's new visible length. Answers the new head.
    fn publish(&mut self, flush: &Flush) -> u64 {
        self.len_bytes += flush.buf.len() as u64;
        if let Some(preallocator) = &self.preallocator {
            preallocator.wanted(self.len_bytes, self.shared.options.segment_size_bytes);
        }
        let mut index = self.shared.index.write().expect("index lock poisoned");
        let first = index.len();
        for (id, offset, stream) in &flush.entries {
            index.push(*id, *offset, stream);
        }
        // Under the index's write lock: a reader seeing these events sees their lifecycle.
        let mut catalog = self.shared.catalog.write().expect("catalog lock poisoned");
        for stream in flush.stream_event_counts.keys() {
            catalog.add_name(stream);
        }
        // The catalog's liveness bits (see `Catalog`) for what this flush changes.
        for (stream, retention) in &flush.lifecycle {
            let had = catalog.retention(stream).is_some();
            catalog.set_retention(stream, *retention);
            let positions = index.stream(stream).unwrap_or_default().iter().copied();
            if retention.tombstoned {
                catalog.mark_dead(positions);
            } else if !had && !retention.is_empty() {
                // Its events so far are to check (this flush's are marked below).
                catalog.mark_checked(positions);
            }
        }
        if !catalog.has_no_retention() || !flush.lifecycle.is_empty() {
            for stream in flush.stream_event_counts.keys() {
                let positions = index.stream(stream).unwrap_or_default();
                let new_from = positions.partition_point(|&p| p < first);
                if stream_of_metastream(stream).is_some() {
                    // Every record but the newest is superseded, the last one before too.
                    let last = positions.len().saturating_sub(1);
                    let from = new_from.saturating_sub(1).min(last);
                    catalog.mark_dead(positions[from..last].iter().copied());
                } else if catalog.retention(stream).is_some() {
                    catalog.mark_checked(positions[new_from..].iter().copied());
                }
            }
        }
        drop(catalog);
        index
            .segments
            .last_mut()
            .expect("an active segment")
            .visible_len = self.len_bytes;
        index.len()
    }

    /// Answers every appender of a flush (through the notifier); with `failure`, new events get
    /// that error instead.
    fn answer(&self, replies: Vec<Reply>, failure: Option<&dyn Fn() -> Error>) {
        let answers: Answers = replies
            .into_iter()
            .map(|reply| match reply {
                Reply::New(done, appended) => match failure {
                    Some(error) => (done, Err(error())),
                    None => (done, Ok(appended)),
                },
                Reply::Settled(done, result) => (done, result),
            })
            .collect();
        // A few answers are cheaper to give here than to hand over: the hand-off is a wake-up
        // itself, and at low concurrency it only adds latency.
        let answers = match &self.notifier {
            Some((sender, _)) if answers.len() > ANSWER_INLINE_MAX => match sender.send(answers) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(answers)) => answers,
            },
            _ => answers,
        };
        for (done, result) in answers {
            done(result);
        }
    }

    /// Seals the active segment and starts the next one, all or nothing: on failure the
    /// active segment stays active (with the preallocator on it) and no file is left behind,
    /// so that appends resume once the cause (a descriptor limit, a full disk) is gone.
    /// Seals the active segment on demand (so that a scavenge can reach its events).
    fn seal(&mut self) -> Result<bool> {
        if self.stopped() {
            return Err(Error::WriterStopped);
        }
        if self.len_bytes <= SEGMENT_HEADER_LEN {
            return Ok(false);
        }
        self.roll().map(|()| true)
    }

    fn roll(&mut self) -> Result<()> {
        let vfs = Arc::clone(&self.shared.options.storage);
        let dir = self.shared.dir.clone();
        let failed = |source: io::Error| Error::WriteFailed { source };
        if let Some(leftover) = self.leftover_segment.clone() {
            remove_created(&*vfs, &dir, &leftover).map_err(failed)?;
            self.leftover_segment = None;
        }
        // Seal: the segment ends exactly at its last record (no preallocated zeros, no cut-off
        // failed write), durably, before a later segment can exist.
        let own = self.preallocator.as_ref().and_then(|p| p.detach());
        let resume_preallocation = |this: &Self, own: Option<FileHandle>| {
            if let (Some(preallocator), Some(own)) = (&this.preallocator, own) {
                preallocator.switch(own, this.len_bytes, this.len_bytes);
            }
        };
        if let Err(e) = self.file.set_len(self.len_bytes) {
            resume_preallocation(self, own);
            return Err(failed(e));
        }
        self.unsynced = true;
        if let Err(e) = self.sync_now() {
            resume_preallocation(self, own);
            return Err(e);
        }
        let first_position = self.shared.index.read().expect("index lock").len();
        let (path, file) = match create_segment(&*vfs, &dir, first_position) {
            Ok(created) => created,
            Err(e) => {
                self.leftover_segment = e.leftover;
                resume_preallocation(self, own);
                return Err(failed(e.source));
            }
        };
        if let Some(preallocator) = &self.preallocator {
            // The preallocator gets its own open file description, so that an fsync error it
            // meets is still reported to the writer's (Linux reports writeback errors to every
            // open file description).
            match vfs.open(&path, true) {
                Ok(handle) => {
                    preallocator.switch(handle, SEGMENT_HEADER_LEN, SEGMENT_HEADER_LEN);
                }
                Err(e) => {
                    drop(file);
                    if remove_created(&*vfs, &dir, &path).is_err() {
                        self.leftover_segment = Some(path);
                    }
                    resume_preallocation(self, own);
                    return Err(failed(e));
                }
            }
        }
        self.shared
            .index
            .write()
            .expect("index lock")
            .segments
            .push(SegmentEntry {
                first_position,
                path,
                file: Arc::clone(&file),
                visible_len: SEGMENT_HEADER_LEN,
            });
        self.file = file;
        self.len_bytes = SEGMENT_HEADER_LEN;
        self.synced_len_bytes = SEGMENT_HEADER_LEN;
        self.synced_event_count = first_position;
        Ok(())
    }

    /// Writes a checkpoint of everything visible, after making it durable. Never while the
    /// writer is stopped: what the kernel holds for the log may then never reach the disk.
    fn write_checkpoint(&mut self) -> Result<()> {
        if self.stopped() {
            return Err(Error::WriterStopped);
        }
        self.sync_now()?;
        // The lock first: a scavenge swapping a segment in holds it, and would make the cut stale.
        let _serialized = self.shared.checkpoint_lock.lock().expect("checkpoint lock");
        let cut = checkpoint::Cut::of(&self.shared.index.read().expect("index lock"));
        let vfs = &*self.shared.options.storage;
        checkpoint::write_temporary(vfs, &self.shared.dir, &self.shared.index, &cut)?;
        checkpoint::install(vfs, &self.shared.dir)?;
        self.events_since_checkpoint_count = 0;
        self.last_checkpoint_at = self.now();
        Ok(())
    }

    /// Every `checkpoint_every_events` (or `checkpoint_every_seconds`), a background thread
    /// writes a checkpoint.
    fn maybe_checkpoint_in_background(&mut self) {
        let options = &self.shared.options;
        let by_count = options.checkpoint_every_events > 0
            && self.events_since_checkpoint_count >= options.checkpoint_every_events;
        let by_time = options.checkpoint_every_seconds > 0
            && self.events_since_checkpoint_count > 0
            && self
                .now()
                .saturating_duration_since(self.last_checkpoint_at)
                .as_secs()
                >= options.checkpoint_every_seconds;
        if by_count || by_time {
            self.checkpoint_in_background();
        }
    }

    /// Starts a background checkpoint now (unless one is running).
    ///
    /// The writer makes the log durable first (outside `Durability::Fsync`; a failure stops
    /// it, and no checkpoint is written) and fixes what the checkpoint covers (the cut), so
    /// that it covers only durable bytes whatever the writer does meanwhile. The thread never
    /// fsyncs the log itself: on Linux a writeback error is reported once per file
    /// description, and the writer must be the one to see it. It reads the index in short
    /// stretches under the read lock and writes and fsyncs the file outside it, so readers and
    /// the writer's publishing wait at most for one stretch.
    pub fn checkpoint_in_background(&mut self) {
        if self
            .checkpointer
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
        {
            return;
        }
        self.join_checkpointer();
        if self.stopped() || self.sync_now().is_err() {
            return;
        }
        self.events_since_checkpoint_count = 0;
        self.last_checkpoint_at = self.now();
        let cut = checkpoint::Cut::of(&self.shared.index.read().expect("index lock"));
        let shared = Arc::clone(&self.shared);
        let work = move || {
            // One checkpoint at a time; if one is being written, this one is not needed.
            let Ok(_serialized) = shared.checkpoint_lock.try_lock() else {
                return;
            };
            if shared.closing.load(Ordering::SeqCst) {
                return;
            }
            let vfs = &*shared.options.storage;
            let result = checkpoint::write_temporary(vfs, &shared.dir, &shared.index, &cut)
                .and_then(|()| {
                    if shared.stopped.load(Ordering::SeqCst) {
                        return Err(Error::WriterStopped);
                    }
                    checkpoint::install(vfs, &shared.dir)
                });
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not write an index checkpoint");
            }
        };
        if self.shared.options.storage.deterministic() {
            return work();
        }
        match std::thread::Builder::new()
            .name("eventlog-checkpoint".into())
            .spawn(work)
        {
            Ok(thread) => self.checkpointer = Some(thread),
            Err(e) => tracing::warn!(error = %e, "could not start the checkpoint thread"),
        }
    }
}

/// The version the `entry`-th event of a flush got.
fn flush_version(index: &Index, flush: &Flush, entry: usize) -> u64 {
    let stream = &flush.entries[entry].2;
    let before = index.stream_next_version(stream);
    before
        + flush.entries[..entry]
            .iter()
            .filter(|e| &e.2 == stream)
            .count() as u64
}
