//! The embedded backend: the synchronous [`eventlog`] engine behind the async contract.
//!
//! All of the async wrapping of the engine lives here and nowhere else:
//! - appends go through [`eventlog::Store::submit`] with a `oneshot` channel, so no task
//!   blocks a runtime thread while the group commit fsyncs;
//! - reading one event by id is a single `pread` of (usually) page-cached bytes and runs
//!   inline; pages (up to 1,000 events, a scan of a filtered read) go to the blocking pool;
//! - the engine's commit listener ([`eventlog::Store::on_commit`]) publishes the head on a
//!   `watch` channel, which is what subscriptions wait on.
//!
//! `eventlog` knows nothing of the contract (`cargo tree -p eventlog` shows no `events`);
//! the few type mappings are the `From` conversions and [`map_error`] below.

use std::sync::Arc;

use events::ContentType;
use events::{
    AllPage, Appended, Direction, Error, EventStore, ExpectedVersion, FILTER_SCAN_MAX_EVENTS,
    Filter, ListStreams, NewEvent, Placed, ReadAll, ReadStream, RecordedEvent, Result, Start,
    Stats, StreamList, StreamPage, StreamState,
};
use tokio::sync::watch;
use uuid::Uuid;

/// Events read from the engine at once while a filtered or backward read scans.
const SCAN_CHUNK_EVENTS: usize = 64;

/// The embedded event log as an [`EventStore`]. Cheap to clone; clones share one engine.
#[derive(Clone, Debug)]
pub struct Embedded {
    store: eventlog::Store,
    /// The head (next position), published after every durable commit.
    head: Arc<watch::Sender<u64>>,
}

impl Embedded {
    /// Opens the log in `dir` (recovery and replay run on a blocking thread); `on_commit` is
    /// told of every durable group commit (on the writer thread: keep it short).
    pub async fn open(
        dir: std::path::PathBuf,
        options: eventlog::Options,
        on_commit: impl Fn(&eventlog::Commit) + Send + Sync + 'static,
    ) -> Result<Embedded> {
        let store = tokio::task::spawn_blocking(move || eventlog::Store::open(dir, options))
            .await
            .map_err(|e| Error::Internal {
                reason: format!("open panicked: {e}"),
            })?
            .map_err(map_error)?;
        let head = Arc::new(watch::channel(store.head()).0);
        let publish = Arc::clone(&head);
        store.on_commit(move |commit| {
            on_commit(commit);
            publish.send_replace(commit.head);
        });
        head.send_replace(store.head());
        Ok(Embedded { store, head })
    }

    /// The engine (for tools, metrics and tests).
    pub fn engine(&self) -> &eventlog::Store {
        &self.store
    }

    /// Closes the engine: the writer answers everything queued, fsyncs, and writes a
    /// checkpoint. Later appends fail; reads keep working.
    pub async fn close(&self) {
        let store = self.store.clone();
        if let Err(error) = tokio::task::spawn_blocking(move || store.close()).await {
            tracing::error!(error = %error, "closing the event log failed");
        }
    }

    async fn submit(
        &self,
        events: Vec<eventlog::NewEvent>,
        expected: eventlog::ExpectedVersion,
    ) -> std::result::Result<eventlog::Appended, eventlog::Error> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.store.submit(events, expected, move |result| {
            let _ = sender.send(result);
        });
        // A dropped sender means the store closed before answering: unavailable, like `Closed`.
        receiver.await.unwrap_or(Err(eventlog::Error::Closed))
    }

    /// `StreamExists`, which the engine does not know: the stream's current version as an
    /// exact expectation, again if the stream grew in between (a stream that exists keeps
    /// existing, so this ends).
    async fn append_to_existing(&self, events: Vec<NewEvent>) -> Result<Appended> {
        let limits = self.store.options().limits;
        let limits = events::Limits {
            max_event_size_bytes: limits.max_event_size_bytes,
            max_batch_events: limits.max_batch_events,
            max_batch_size_bytes: limits.max_batch_size_bytes,
            max_stream_name_bytes: limits.max_stream_name_bytes,
            max_event_type_bytes: limits.max_event_type_bytes,
        };
        events::check_append(&events, ExpectedVersion::StreamExists, &limits)?;
        let stream = events[0].stream.clone();
        let events: Vec<eventlog::NewEvent> = events.into_iter().map(to_engine).collect();
        loop {
            // A batch that is stored already is in an existing stream, so a missing stream
            // is a mismatch whatever the batch.
            let Some(version) = self.store.stream_version(&stream) else {
                return Err(Error::WrongExpectedVersion {
                    stream,
                    expected: ExpectedVersion::StreamExists,
                    current: None,
                });
            };
            match self
                .submit(events.clone(), eventlog::ExpectedVersion::Exact(version))
                .await
            {
                // The stream grew in between: expect its new version.
                Err(eventlog::Error::WrongExpectedVersion { .. }) => continue,
                result => return result.map(from_engine_appended).map_err(map_error),
            }
        }
    }

    fn read_all_blocking(store: &eventlog::Store, request: &ReadAll) -> Result<AllPage> {
        let head = store.head();
        let (events, next) = match request.direction {
            Direction::Forward => {
                let from = match request.start {
                    Start::Beginning => 0,
                    Start::End => head,
                    Start::At(position) => position,
                };
                match &request.filter {
                    None if from < head => {
                        let limit = request
                            .limit
                            .min(usize::try_from(head - from).unwrap_or(usize::MAX));
                        let events = store
                            .read_all_within(from, limit, request.max_bytes)
                            .map_err(map_error)?;
                        let end = events.last().map_or(from, |e| e.position + 1);
                        (events, (end < head).then_some(end))
                    }
                    None => (Vec::new(), None),
                    Some(filter) => Self::scan_forward(store, from, head, request, filter)?,
                }
            }
            Direction::Backward => Self::scan_backward(store, head, request)?,
        };
        Ok(AllPage {
            events: events.into_iter().map(from_engine_event).collect(),
            next,
            head,
        })
    }

    fn scan_forward(
        store: &eventlog::Store,
        from: u64,
        head: u64,
        request: &ReadAll,
        filter: &Filter,
    ) -> Result<(Vec<eventlog::RecordedEvent>, Option<u64>)> {
        let mut found = Vec::new();
        let mut position = from;
        let mut scanned = 0usize;
        let mut used = 0usize;
        'scan: while position < head && scanned < FILTER_SCAN_MAX_EVENTS {
            let chunk =
                SCAN_CHUNK_EVENTS.min(usize::try_from(head - position).unwrap_or(usize::MAX));
            let events = store
                .read_all_within(position, chunk, request.max_bytes.max(1))
                .map_err(map_error)?;
            if events.is_empty() {
                break;
            }
            for event in events {
                position = event.position + 1;
                scanned += 1;
                if filter.matches(&from_engine_event_ref(&event)) {
                    used = used.saturating_add(engine_size(&event));
                    found.push(event);
                    if found.len() >= request.limit || used >= request.max_bytes {
                        break 'scan;
                    }
                }
            }
        }
        Ok((found, (position < head).then_some(position)))
    }

    fn scan_backward(
        store: &eventlog::Store,
        head: u64,
        request: &ReadAll,
    ) -> Result<(Vec<eventlog::RecordedEvent>, Option<u64>)> {
        let Some(last) = head.checked_sub(1) else {
            return Ok((Vec::new(), None));
        };
        let top = match request.start {
            Start::Beginning => 0,
            Start::End => last,
            Start::At(position) => position.min(last),
        };
        let mut found = Vec::new();
        // Every position below `bottom` is still to be examined.
        let mut bottom = top + 1;
        let mut scanned = 0usize;
        let mut used = 0usize;
        'scan: while bottom > 0 && found.len() < request.limit {
            if request.filter.is_some() && scanned >= FILTER_SCAN_MAX_EVENTS {
                break;
            }
            let chunk = (SCAN_CHUNK_EVENTS as u64).min(bottom);
            let events = store
                .read_all_within(bottom - chunk, chunk as usize, usize::MAX)
                .map_err(map_error)?;
            for event in events.into_iter().rev() {
                bottom = event.position;
                scanned += 1;
                let admitted = request
                    .filter
                    .as_ref()
                    .is_none_or(|filter| filter.matches(&from_engine_event_ref(&event)));
                if admitted {
                    used = used.saturating_add(engine_size(&event));
                    found.push(event);
                    if found.len() >= request.limit || used >= request.max_bytes {
                        break 'scan;
                    }
                }
            }
        }
        Ok((found, bottom.checked_sub(1)))
    }

    fn read_stream_blocking(
        store: &eventlog::Store,
        stream: &str,
        request: &ReadStream,
    ) -> Result<Option<StreamPage>> {
        let Some(last_version) = store.stream_version(stream) else {
            return Ok(None);
        };
        let (events, next) = match request.direction {
            Direction::Forward => {
                let from = match request.start {
                    Start::Beginning => 0,
                    Start::End => last_version,
                    Start::At(version) => version,
                };
                let events = store
                    .read_stream_within(stream, from, request.limit, request.max_bytes)
                    .map_err(map_error)?
                    .unwrap_or_default();
                let next = events
                    .last()
                    .map(|event| event.version + 1)
                    .filter(|&next| next <= last_version);
                (events, next)
            }
            Direction::Backward => {
                let top = match request.start {
                    Start::Beginning => 0,
                    Start::End => last_version,
                    Start::At(version) => version.min(last_version),
                };
                let mut found = Vec::new();
                let mut bottom = top + 1;
                let mut used = 0usize;
                'scan: while bottom > 0 && found.len() < request.limit {
                    let chunk = (SCAN_CHUNK_EVENTS as u64).min(bottom);
                    let events = store
                        .read_stream_within(stream, bottom - chunk, chunk as usize, usize::MAX)
                        .map_err(map_error)?
                        .unwrap_or_default();
                    if events.is_empty() {
                        break;
                    }
                    for event in events.into_iter().rev() {
                        bottom = event.version;
                        used = used.saturating_add(engine_size(&event));
                        found.push(event);
                        if found.len() >= request.limit || used >= request.max_bytes {
                            break 'scan;
                        }
                    }
                }
                (found, bottom.checked_sub(1))
            }
        };
        Ok(Some(StreamPage {
            events: events.into_iter().map(from_engine_event).collect(),
            next,
            last_version,
        }))
    }

    /// Runs a read on the blocking pool (pages are many `pread`s).
    async fn blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&eventlog::Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|_| map_error(eventlog::Error::Closed))?
    }
}

impl EventStore for Embedded {
    fn backend_name(&self) -> &'static str {
        "embedded"
    }

    async fn append(&self, events: Vec<NewEvent>, expected: ExpectedVersion) -> Result<Appended> {
        let engine_expected = match expected {
            ExpectedVersion::Any => eventlog::ExpectedVersion::Any,
            ExpectedVersion::NoStream => eventlog::ExpectedVersion::NoStream,
            ExpectedVersion::Exact(version) => eventlog::ExpectedVersion::Exact(version),
            ExpectedVersion::StreamExists => return self.append_to_existing(events).await,
        };
        let events = events.into_iter().map(to_engine).collect();
        self.submit(events, engine_expected)
            .await
            .map(from_engine_appended)
            .map_err(map_error)
    }

    async fn get(&self, id: Uuid) -> Result<Option<RecordedEvent>> {
        // One pread of a page-cache-resident record: cheaper inline than a blocking-pool hop.
        self.store
            .get(id)
            .map(|event| event.map(from_engine_event))
            .map_err(map_error)
    }

    async fn read_all(&self, request: ReadAll) -> Result<AllPage> {
        self.blocking(move |store| Self::read_all_blocking(store, &request))
            .await
    }

    async fn read_stream(&self, stream: &str, request: ReadStream) -> Result<Option<StreamPage>> {
        let stream = stream.to_owned();
        self.blocking(move |store| Self::read_stream_blocking(store, &stream, &request))
            .await
    }

    async fn stream_state(&self, stream: &str) -> Result<Option<StreamState>> {
        let stream = stream.to_owned();
        self.blocking(move |store| {
            let Some(version) = store.stream_version(&stream) else {
                return Ok(None);
            };
            let last = store
                .read_stream_within(&stream, version, 1, usize::MAX)
                .map_err(map_error)?
                .and_then(|events| events.into_iter().next());
            Ok(last.map(|last| StreamState {
                stream: stream.clone(),
                version,
                first_version: 0,
                events: version + 1,
                last_position: last.position,
                updated_at_micros: last.recorded_at_micros,
            }))
        })
        .await
    }

    async fn list_streams(&self, _request: ListStreams) -> Result<StreamList> {
        // The engine's index has no ordered view of stream names yet (it comes with the
        // lifecycle issue, which reworks that index).
        Err(self.unsupported("list streams"))
    }

    async fn head(&self) -> Result<u64> {
        Ok(self.store.head())
    }

    async fn wait_for_head_above(&self, position: u64) -> Result<u64> {
        let mut head = self.head.subscribe();
        // The condition reads the index (updated before listeners are told), so a woken
        // waiter always finds the event visible.
        let store = &self.store;
        let _ = head.wait_for(|_| store.head() > position).await;
        Ok(store.head())
    }

    async fn stats(&self) -> Result<Stats> {
        let stats = self.store.stats();
        Ok(Stats {
            head: stats.events,
            streams: stats.streams,
            writable: stats.writable,
        })
    }
}

fn to_engine(event: NewEvent) -> eventlog::NewEvent {
    eventlog::NewEvent {
        id: event.id,
        stream: event.stream,
        event_type: event.event_type,
        data: event.data,
        metadata: event.metadata,
        binary: event.content_type == ContentType::Binary,
    }
}

fn from_engine_appended(appended: eventlog::Appended) -> Appended {
    Appended {
        events: appended
            .events
            .into_iter()
            .map(|placed| Placed {
                id: placed.id,
                stream: placed.stream,
                version: placed.version,
                position: placed.position,
            })
            .collect(),
        duplicate: appended.duplicate,
    }
}

/// The contract's event from the engine's (field by field: the same shape).
pub fn from_engine_event(event: eventlog::RecordedEvent) -> RecordedEvent {
    RecordedEvent {
        id: event.id,
        stream: event.stream,
        version: event.version,
        position: event.position,
        event_type: event.event_type,
        data: event.data,
        metadata: event.metadata,
        content_type: content_type(event.binary),
        recorded_at_micros: event.recorded_at_micros,
    }
}

/// A view for the filter, without copying data (filters look at stream and type only).
fn from_engine_event_ref(event: &eventlog::RecordedEvent) -> RecordedEvent {
    RecordedEvent {
        id: event.id,
        stream: event.stream.clone(),
        version: event.version,
        position: event.position,
        event_type: event.event_type.clone(),
        data: Vec::new(),
        metadata: None,
        content_type: content_type(event.binary),
        recorded_at_micros: event.recorded_at_micros,
    }
}

fn content_type(binary: bool) -> ContentType {
    if binary {
        ContentType::Binary
    } else {
        ContentType::Json
    }
}

fn engine_size(event: &eventlog::RecordedEvent) -> usize {
    event.stream.len()
        + event.event_type.len()
        + event.data.len()
        + event.metadata.as_ref().map_or(0, Vec::len)
}

fn map_expected(expected: eventlog::ExpectedVersion) -> ExpectedVersion {
    match expected {
        eventlog::ExpectedVersion::Any => ExpectedVersion::Any,
        eventlog::ExpectedVersion::NoStream => ExpectedVersion::NoStream,
        eventlog::ExpectedVersion::Exact(version) => ExpectedVersion::Exact(version),
    }
}

/// The engine's error as the contract's. Every error the engine calls unavailable (I/O,
/// write failures, a stopped writer, a closed store) is [`Error::CannotWrite`]: the store
/// stays readable from the index and the page cache.
pub fn map_error(error: eventlog::Error) -> Error {
    use eventlog::Error as E;
    match error {
        E::LimitExceeded {
            what,
            actual,
            limit,
            setting,
        } => Error::LimitExceeded {
            what,
            actual,
            limit,
            setting,
        },
        E::InvalidAppend(reason) => Error::InvalidAppend(reason),
        E::WrongExpectedVersion {
            stream,
            expected,
            current,
        } => Error::WrongExpectedVersion {
            stream,
            expected: map_expected(expected),
            current,
        },
        E::IdConflict { id } => Error::IdConflict { id },
        error @ E::Corrupt { .. } => Error::Corrupt {
            reason: error.to_string(),
        },
        error if error.is_unavailable() => Error::CannotWrite {
            reason: error.to_string(),
        },
        error => Error::Internal {
            reason: error.to_string(),
        },
    }
}
