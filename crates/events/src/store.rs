//! The storage-agnostic interface of the event store, and a subscription written once over it.

use std::collections::VecDeque;
use std::future::Future;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{Appended, ExpectedVersion, NewEvent, Placed, RecordedEvent};
use crate::read::{
    AllPage, DeleteMode, Direction, Filter, ListStreams, ReadAll, ReadStream, Start, Stats,
    StreamList, StreamMetadata, StreamPage, StreamState,
};
use crate::scavenge::ScavengeStatus;

/// The operations every face calls and every backend implements.
///
/// Native `async fn` (declared as `impl Future + Send` so a face can spawn what it gets).
/// Faces hold a backend by value (it is a cheap handle, [`Clone`]); the binary chooses among
/// a closed set of them (an enum that implements this trait by delegation), so calls are
/// static, not through a `dyn` vtable and a boxed future.
///
/// The lifecycle (stream metadata, delete, tombstone, scavenge) belongs here too; its methods
/// have default bodies answering [`Error::Unsupported`] until a backend implements them, so
/// adding them to a backend is one method each and no face changes shape.
pub trait EventStore: Clone + Send + Sync + 'static {
    /// A short name of the backend for logs and [`Error::Unsupported`] (`"embedded"`).
    fn backend_name(&self) -> &'static str;

    /// Appends `events` atomically, if `expected` admits the stream's version (then the
    /// events must all be in one stream). Answers once they are durable and visible. A
    /// repeat of a stored batch with identical content answers its original placement with
    /// [`Appended::duplicate`] set, with other content [`Error::IdConflict`].
    fn append(
        &self,
        events: Vec<NewEvent>,
        expected: ExpectedVersion,
    ) -> impl Future<Output = Result<Appended>> + Send;

    /// The event with this id, if stored and visible.
    fn get(&self, id: Uuid) -> impl Future<Output = Result<Option<RecordedEvent>>> + Send;

    /// A page of `$all`.
    fn read_all(&self, request: ReadAll) -> impl Future<Output = Result<AllPage>> + Send;

    /// A page of one stream; `None` for a stream with no events.
    fn read_stream(
        &self,
        stream: &str,
        request: ReadStream,
    ) -> impl Future<Output = Result<Option<StreamPage>>> + Send;

    /// One stream's state; `None` for a stream with no events.
    fn stream_state(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<Option<StreamState>>> + Send;

    /// Streams in byte order of name.
    fn list_streams(&self, request: ListStreams)
    -> impl Future<Output = Result<StreamList>> + Send;

    /// The position the next event gets: every position below it is visible.
    fn head(&self) -> impl Future<Output = Result<u64>> + Send;

    /// Waits until the head is above `position` (that is, the event at `position` is
    /// visible) and answers the head. Answers at once when it already is. Backends wake
    /// waiters on their own commits and on other processes' (PostgreSQL: `LISTEN/NOTIFY`).
    fn wait_for_head_above(&self, position: u64) -> impl Future<Output = Result<u64>> + Send;

    /// A summary for metrics and tools.
    fn stats(&self) -> impl Future<Output = Result<Stats>> + Send;

    /// Catch up from `from` (inclusive), then follow live; only events `filter` admits.
    fn subscribe(&self, from: u64, filter: Option<Filter>) -> Subscription<Self> {
        Subscription::new(self.clone(), from, filter)
    }

    /// A stream's metadata (the lifecycle issue).
    fn stream_metadata(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<Option<StreamMetadata>>> + Send {
        let _ = stream;
        async move { Err(self.unsupported("stream metadata")) }
    }

    /// Replaces a stream's metadata, recorded as an event of the log (the lifecycle issue);
    /// `expected` is the metastream's version (as in KurrentDB). Answers where the record
    /// landed: its version in the metastream `$$<stream>` and its position.
    fn set_stream_metadata(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> impl Future<Output = Result<Placed>> + Send {
        let _ = (stream, expected, metadata);
        async move { Err(self.unsupported("stream metadata")) }
    }

    /// Deletes a stream softly or for good (a tombstone), recorded as an event of the log
    /// (the lifecycle issue).
    fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (stream, expected, mode);
        async move { Err(self.unsupported("delete")) }
    }

    /// Starts reclaiming the bytes of dead events; answers an id to follow it by (the
    /// lifecycle issue). [`Error::ScavengeRunning`] while one runs.
    fn scavenge(&self) -> impl Future<Output = Result<Uuid>> + Send {
        async move { Err(self.unsupported("scavenge")) }
    }

    /// The progress of the scavenge with this id (`None`: unknown id).
    fn scavenge_status(
        &self,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<ScavengeStatus>>> + Send {
        let _ = id;
        async move { Err(self.unsupported("scavenge")) }
    }

    /// Seals the embedded engine's active segment, so that a scavenge reaches its events
    /// (a scavenge never rewrites the segment being appended to); `false`: nothing to seal.
    fn seal_active_segment(&self) -> impl Future<Output = Result<bool>> + Send {
        async move { Err(self.unsupported("seal")) }
    }

    /// The [`Error::Unsupported`] of this backend for `operation`.
    fn unsupported(&self, operation: &'static str) -> Error {
        Error::Unsupported {
            operation,
            backend: self.backend_name(),
        }
    }
}

/// Events a subscription reads from the store at once (its whole buffer).
pub const SUBSCRIPTION_BATCH_EVENTS: usize = 256;

/// A live subscription: catches up from a position, then follows new events, in position
/// order, forever.
///
/// It is a cursor, not a queue: it reads a batch only when the previous one has been taken,
/// so a slow consumer costs one batch of memory whatever the rate of appends.
/// [`next`](Subscription::next) is cancel-safe (its state changes only after a read
/// completed), so a face can race it against a shutdown signal.
#[derive(Debug)]
pub struct Subscription<S> {
    store: S,
    /// The next position to examine.
    next: u64,
    filter: Option<Filter>,
    buffered: VecDeque<RecordedEvent>,
    batch_events: usize,
    max_bytes: usize,
}

impl<S: EventStore> Subscription<S> {
    /// From `from` (inclusive).
    pub fn new(store: S, from: u64, filter: Option<Filter>) -> Subscription<S> {
        Subscription {
            store,
            next: from,
            filter,
            buffered: VecDeque::new(),
            batch_events: SUBSCRIPTION_BATCH_EVENTS,
            max_bytes: usize::MAX,
        }
    }

    /// Reads at most `batch_events` events and about `max_bytes` at once.
    pub fn with_batch(mut self, batch_events: usize, max_bytes: usize) -> Subscription<S> {
        self.batch_events = batch_events.max(1);
        self.max_bytes = max_bytes;
        self
    }

    /// The next event; waits for one when caught up.
    pub async fn next(&mut self) -> Result<RecordedEvent> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Ok(event);
            }
            self.store.wait_for_head_above(self.next).await?;
            let page = self
                .store
                .read_all(ReadAll {
                    start: Start::At(self.next),
                    direction: Direction::Forward,
                    limit: self.batch_events,
                    max_bytes: self.max_bytes,
                    filter: self.filter.clone(),
                })
                .await?;
            self.next = page.next.unwrap_or(page.head).max(self.next);
            self.buffered.extend(page.events);
        }
    }
}
