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

use eventlog::lifecycle::{
    METADATA_EVENT_TYPE, METASTREAM_PREFIX, TOMBSTONE_EVENT_TYPE, metastream_of,
};
use events::ContentType;
use events::{
    AllPage, Appended, DeleteMode, Direction, Error, EventStore, ExpectedVersion,
    FILTER_SCAN_MAX_EVENTS, ListStreams, NewEvent, Placed, ReadAll, ReadStream, RecordedEvent,
    Result, ScavengeState, ScavengeStatus, Start, Stats, StreamList, StreamMetadata, StreamPage,
    StreamState,
};
use tokio::sync::watch;
use uuid::Uuid;

/// Events read from the engine at once while a filtered or backward read scans.
const SCAN_CHUNK_EVENTS: usize = 64;
/// Most streams a listing answers at once.
const LIST_LIMIT_MAX: usize = 1000;
/// Most names a listing examines per page (deleted streams are skipped).
const LIST_SCAN_MAX_STREAMS: usize = 4096;

/// Default upper bound on a scavenge's reads of old segments per second, so that it leaves
/// the disk to appends and reads (`EVENTS_SCAVENGE_MAX_BYTES_PER_SECOND`; see
/// [`eventlog::scavenge::ScavengeOptions`] for what it counts).
pub const SCAVENGE_MAX_BYTES_PER_SECOND: u64 = eventlog::scavenge::DEFAULT_MAX_BYTES_PER_SECOND;

/// Scavenge progress kept for `GET /admin/scavenge/{id}` (the newest ones).
const SCAVENGE_STATUSES_KEPT: usize = 32;

/// The embedded event log as an [`EventStore`]. Cheap to clone; clones share one engine.
#[derive(Clone, Debug)]
pub struct Embedded {
    store: eventlog::Store,
    /// The head (next position), published after every durable commit.
    head: Arc<watch::Sender<u64>>,
    /// The running scavenge and the last ones' outcomes.
    scavenges: Arc<std::sync::Mutex<Scavenges>>,
    /// A scavenge's pace (bytes per second; 0: unpaced).
    scavenge_max_bytes_per_second: u64,
}

#[derive(Debug, Default)]
struct Scavenges {
    running: Option<Uuid>,
    statuses: std::collections::VecDeque<ScavengeStatus>,
}

impl Scavenges {
    fn update(&mut self, id: Uuid, change: impl FnOnce(&mut ScavengeStatus)) {
        if let Some(status) = self.statuses.iter_mut().find(|s| s.id == id) {
            change(status);
        }
    }
}

/// Which events a scavenge may remove: the lifecycle's answer (deleted, tombstoned,
/// truncated, expired, surplus events, and metastream records but the last), from a snapshot
/// taken when the scavenge starts (events appended later read as live).
fn is_dead(store: &eventlog::Store) -> impl eventlog::scavenge::IsDead + Send + 'static {
    let liveness = store.liveness();
    move |event: &eventlog::scavenge::Candidate<'_>| {
        !liveness.is_live(event.stream, event.version, event.recorded_at_micros)
    }
}

impl Embedded {
    /// `Backend::get_rendered` here: the shared cached event, its rendering made once.
    pub(crate) fn get_rendered(
        &self,
        id: Uuid,
        visible: impl FnOnce(&str) -> bool,
        render: impl FnOnce(RecordedEvent) -> axum::body::Bytes,
    ) -> Result<Option<axum::body::Bytes>> {
        let Some(event) = self.store.get_live_shared(id).map_err(map_error)? else {
            return Ok(None);
        };
        if !visible(&event.stream) {
            return Ok(None);
        }
        Ok(Some(event.rendering(|event| {
            render(from_engine_event(event.clone()))
        })))
    }

    /// Opens the log in `dir` (recovery and replay run on a blocking thread); scavenges run at
    /// most `scavenge_max_bytes_per_second` (0: unpaced); `on_commit` is told of every durable
    /// group commit (on the writer thread: keep it short).
    pub async fn open(
        dir: std::path::PathBuf,
        options: eventlog::Options,
        scavenge_max_bytes_per_second: u64,
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
        Ok(Embedded {
            store,
            head,
            scavenges: Arc::default(),
            scavenge_max_bytes_per_second,
        })
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
                Self::scan_forward(store, from, head, request)?
            }
            Direction::Backward => Self::scan_backward(store, head, request)?,
        };
        Ok(AllPage {
            events: events.into_iter().map(from_engine_event).collect(),
            next,
            head,
        })
    }

    /// Forward from `from` below `head`: live events that the filter (if any) admits. Without
    /// a filter and without dead events this is one read of the whole page; dead events and
    /// a filter make it read on, up to [`FILTER_SCAN_MAX_EVENTS`] examined.
    fn scan_forward(
        store: &eventlog::Store,
        from: u64,
        head: u64,
        request: &ReadAll,
    ) -> Result<(Vec<eventlog::RecordedEvent>, Option<u64>)> {
        let mut found = Vec::new();
        let mut position = from;
        let mut scanned = 0usize;
        let mut used = 0usize;
        let scan_max = FILTER_SCAN_MAX_EVENTS.max(request.limit);
        'scan: while position < head && scanned < scan_max && found.len() < request.limit {
            let wanted = match request.filter {
                None => request.limit - found.len(),
                Some(_) => SCAN_CHUNK_EVENTS,
            };
            let chunk = wanted.min(usize::try_from(head - position).unwrap_or(usize::MAX));
            let budget = request.max_bytes.saturating_sub(used).max(1);
            // Dead events are skipped in the engine's read buffer, never decoded.
            let page = store
                .read_all_live_within(position, chunk, budget)
                .map_err(map_error)?;
            if page.examined == 0 {
                // Nothing at or after `position`: the rest up to the head is holes (scavenged).
                position = head;
                break;
            }
            let end = page.next;
            scanned += page.examined;
            for event in page.events {
                position = event.position + 1;
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
            position = end;
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
        let scan_max = FILTER_SCAN_MAX_EVENTS.max(request.limit);
        'scan: while bottom > 0 && found.len() < request.limit && scanned < scan_max {
            let chunk = (SCAN_CHUNK_EVENTS as u64).min(bottom);
            let page = store
                .read_all_live_within(bottom - chunk, chunk as usize, usize::MAX)
                .map_err(map_error)?;
            // Positions may have holes (a scavenge): the read can run past `bottom`.
            let mut events = page.events;
            events.retain(|event| event.position < bottom);
            scanned += page.examined.min(chunk as usize);
            let first = bottom - chunk;
            for event in events.into_iter().rev() {
                bottom = event.position;
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
            // Everything from `first` up was examined (what was not read is holes).
            bottom = first;
        }
        Ok((found, bottom.checked_sub(1)))
    }

    /// The state of a stream's lifecycle for a read: `Err` when tombstoned, `None` when it
    /// has no events or is soft-deleted, else its last and first live versions.
    fn live_range(store: &eventlog::Store, stream: &str) -> Result<Option<(u64, u64)>> {
        let retention = store.retention(stream);
        if retention.is_some_and(|r| r.tombstoned) {
            return Err(Error::StreamDeleted {
                stream: stream.to_owned(),
            });
        }
        let Some(last_version) = store.stream_version(stream) else {
            return Ok(None);
        };
        if retention.is_some_and(|r| r.deletes_through(last_version)) {
            return Ok(None);
        }
        let first = store
            .first_live_version(stream)
            .map_err(map_error)?
            .unwrap_or(0);
        Ok(Some((last_version, first)))
    }

    fn read_stream_blocking(
        store: &eventlog::Store,
        stream: &str,
        request: &ReadStream,
    ) -> Result<Option<StreamPage>> {
        let Some((last_version, first_live)) = Self::live_range(store, stream)? else {
            return Ok(None);
        };
        let (events, next) = match request.direction {
            Direction::Forward => {
                let from = match request.start {
                    Start::Beginning => 0,
                    Start::End => last_version,
                    Start::At(version) => version,
                }
                .max(first_live);
                let mut events = store
                    .read_stream_within(stream, from, request.limit, request.max_bytes)
                    .map_err(map_error)?
                    .unwrap_or_default();
                let next = events
                    .last()
                    .map(|event| event.version + 1)
                    .filter(|&next| next <= last_version);
                store.retain_live(&mut events);
                (events, next)
            }
            Direction::Backward => {
                let top = match request.start {
                    Start::Beginning => 0,
                    Start::End => last_version,
                    Start::At(version) => version.min(last_version),
                };
                let mut found = Vec::new();
                // Versions from `first_live` below `bottom` are still to be read.
                let mut bottom = top + 1;
                let mut used = 0usize;
                'scan: while bottom > first_live && found.len() < request.limit {
                    let chunk = (SCAN_CHUNK_EVENTS as u64).min(bottom - first_live);
                    let mut events = store
                        .read_stream_within(stream, bottom - chunk, chunk as usize, usize::MAX)
                        .map_err(map_error)?
                        .unwrap_or_default();
                    if events.is_empty() {
                        break;
                    }
                    let first = bottom - chunk;
                    store.retain_live(&mut events);
                    for event in events.into_iter().rev() {
                        bottom = event.version;
                        used = used.saturating_add(engine_size(&event));
                        found.push(event);
                        if found.len() >= request.limit || used >= request.max_bytes {
                            break 'scan;
                        }
                    }
                    bottom = first;
                }
                let next = bottom.checked_sub(1).filter(|&next| next >= first_live);
                (found, next)
            }
        };
        Ok(Some(StreamPage {
            events: events.into_iter().map(from_engine_event).collect(),
            next,
            last_version,
        }))
    }

    fn stream_state_blocking(store: &eventlog::Store, stream: &str) -> Result<Option<StreamState>> {
        let Some((version, first_version)) = Self::live_range(store, stream)? else {
            return Ok(None);
        };
        let last = store
            .read_stream_within(stream, version, 1, usize::MAX)
            .map_err(map_error)?
            .and_then(|events| events.into_iter().next());
        Ok(last.map(|last| StreamState {
            stream: stream.to_owned(),
            version,
            first_version,
            events: (version + 1).saturating_sub(first_version),
            last_position: last.position,
            updated_at_micros: last.recorded_at_micros,
        }))
    }

    /// Live streams in byte order: names from the engine's catalog, deleted ones skipped
    /// (at most [`LIST_SCAN_MAX_STREAMS`] names examined per page, so a run of deleted
    /// streams cannot make one request a scan of them all).
    fn list_streams_blocking(store: &eventlog::Store, request: &ListStreams) -> Result<StreamList> {
        let limit = request.limit.clamp(1, LIST_LIMIT_MAX);
        let prefix = request.prefix.as_deref().unwrap_or("");
        let mut after = request.after.clone();
        let mut streams: Vec<StreamState> = Vec::new();
        let mut examined = 0usize;
        loop {
            let names = store.stream_names(prefix, after.as_deref(), limit + 1);
            let exhausted = names.len() <= limit;
            for name in names {
                examined += 1;
                match Self::stream_state_blocking(store, &name) {
                    Ok(Some(state)) => {
                        if streams.len() == limit {
                            // A live stream follows the page: there is a next one.
                            let next = streams.last().map(|s| s.stream.clone());
                            return Ok(StreamList { streams, next });
                        }
                        streams.push(state);
                    }
                    Ok(None) | Err(Error::StreamDeleted { .. }) => {}
                    Err(error) => return Err(error),
                }
                after = Some(name);
                if examined >= LIST_SCAN_MAX_STREAMS {
                    return Ok(StreamList {
                        streams,
                        next: after,
                    });
                }
            }
            if exhausted {
                return Ok(StreamList {
                    streams,
                    next: None,
                });
            }
        }
    }

    /// The metadata of `stream`: its metastream's last `$metadata` record; the default when
    /// there is none but the stream exists; `None` when neither exists.
    fn metadata_blocking(store: &eventlog::Store, stream: &str) -> Result<Option<StreamMetadata>> {
        if store.retention(stream).is_some_and(|r| r.tombstoned) {
            return Err(Error::StreamDeleted {
                stream: stream.to_owned(),
            });
        }
        let metastream = metastream_of(stream);
        let last = match store.stream_version(&metastream) {
            Some(version) => store
                .read_stream_within(&metastream, version, 1, usize::MAX)
                .map_err(map_error)?
                .and_then(|events| events.into_iter().next()),
            None => None,
        };
        match last {
            Some(record) if record.event_type == METADATA_EVENT_TYPE => {
                StreamMetadata::from_json(&record.data)
                    .map(Some)
                    .map_err(|e| Error::Corrupt {
                        reason: format!("stored metadata of {stream:?}: {e}"),
                    })
            }
            _ if store.stream_version(stream).is_some() => Ok(Some(StreamMetadata::default())),
            _ => Ok(None),
        }
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
        refuse_metastreams(&events)?;
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
        let event = self.store.get_live_shared(id).map_err(map_error)?;
        Ok(event.map(|event| from_engine_event(event.into_event())))
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
        self.blocking(move |store| Self::stream_state_blocking(store, &stream))
            .await
    }

    async fn list_streams(&self, request: ListStreams) -> Result<StreamList> {
        self.blocking(move |store| Self::list_streams_blocking(store, &request))
            .await
    }

    async fn stream_metadata(&self, stream: &str) -> Result<Option<StreamMetadata>> {
        let stream = stream.to_owned();
        self.blocking(move |store| Self::metadata_blocking(store, &stream))
            .await
    }

    async fn set_stream_metadata(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<Placed> {
        let data = metadata.to_json()?;
        let metastream = metastream_of(stream);
        let expected = match expected {
            ExpectedVersion::Any => eventlog::ExpectedVersion::Any,
            ExpectedVersion::NoStream => eventlog::ExpectedVersion::NoStream,
            ExpectedVersion::Exact(version) => eventlog::ExpectedVersion::Exact(version),
            ExpectedVersion::StreamExists => match self.store.stream_version(&metastream) {
                Some(version) => eventlog::ExpectedVersion::Exact(version),
                None => {
                    return Err(Error::WrongExpectedVersion {
                        stream: metastream,
                        expected,
                        current: None,
                    });
                }
            },
        };
        let record = lifecycle_record(&metastream, METADATA_EVENT_TYPE, data);
        let appended = self
            .submit(vec![record], expected)
            .await
            .map_err(map_error)?;
        Ok(from_engine_appended(appended)
            .events
            .pop()
            .expect("one record appended"))
    }

    async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<()> {
        loop {
            let retention = self.store.retention(stream);
            if retention.is_some_and(|r| r.tombstoned) {
                return Err(Error::StreamDeleted {
                    stream: stream.to_owned(),
                });
            }
            let current = self.store.stream_version(stream);
            let Some(version) = current else {
                return Err(Error::StreamNotFound {
                    stream: stream.to_owned(),
                });
            };
            // A soft-deleted stream can still be tombstoned, not deleted again.
            if mode == DeleteMode::Soft && retention.is_some_and(|r| r.deletes_through(version)) {
                return Err(Error::StreamNotFound {
                    stream: stream.to_owned(),
                });
            }
            let condition = match expected {
                ExpectedVersion::Any | ExpectedVersion::StreamExists => version,
                ExpectedVersion::Exact(wanted) => wanted,
                ExpectedVersion::NoStream => {
                    return Err(Error::WrongExpectedVersion {
                        stream: stream.to_owned(),
                        expected,
                        current,
                    });
                }
            };
            // The metastream's version before its last record is read: a metadata write in
            // between fails the condition, and the delete goes again.
            let metastream_expected = match self.store.stream_version(&metastream_of(stream)) {
                Some(version) if mode == DeleteMode::Soft => {
                    eventlog::ExpectedVersion::Exact(version)
                }
                None if mode == DeleteMode::Soft => eventlog::ExpectedVersion::NoStream,
                _ => eventlog::ExpectedVersion::Any,
            };
            let record = match mode {
                DeleteMode::Soft => {
                    // KurrentDB's soft delete: the metadata as it is, with `$tb` past the end.
                    let mut metadata = self.stream_metadata(stream).await?.unwrap_or_default();
                    metadata.truncate_before = Some(condition.saturating_add(1));
                    lifecycle_record(
                        &metastream_of(stream),
                        METADATA_EVENT_TYPE,
                        metadata.to_json()?,
                    )
                }
                DeleteMode::Hard => {
                    lifecycle_record(&metastream_of(stream), TOMBSTONE_EVENT_TYPE, b"{}".to_vec())
                }
            };
            let (sender, receiver) = tokio::sync::oneshot::channel();
            self.store.submit_lifecycle(
                stream,
                record,
                eventlog::ExpectedVersion::Exact(condition),
                metastream_expected,
                move |result| {
                    let _ = sender.send(result);
                },
            );
            match receiver.await.unwrap_or(Err(eventlog::Error::Closed)) {
                Ok(_) => return Ok(()),
                // The metadata changed in between, or the stream grew and any version was
                // admitted: go again.
                Err(eventlog::Error::WrongExpectedVersion {
                    stream: checked, ..
                }) if checked != stream || !matches!(expected, ExpectedVersion::Exact(_)) => {
                    continue;
                }
                Err(error) => return Err(map_error(error)),
            }
        }
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

    async fn scavenge(&self) -> Result<Uuid> {
        let id = Uuid::now_v7();
        {
            let mut scavenges = self.scavenges.lock().expect("scavenges lock");
            if let Some(running) = scavenges.running {
                return Err(Error::ScavengeRunning { id: running });
            }
            scavenges.running = Some(id);
            if scavenges.statuses.len() >= SCAVENGE_STATUSES_KEPT {
                scavenges.statuses.pop_front();
            }
            scavenges.statuses.push_back(ScavengeStatus {
                id,
                state: ScavengeState::Running,
                segments_total: 0,
                segments_done: 0,
                bytes_before: 0,
                bytes_after: 0,
                events_removed: 0,
                error: None,
            });
        }
        let store = self.store.clone();
        let scavenges = Arc::clone(&self.scavenges);
        let max_bytes_per_second = self.scavenge_max_bytes_per_second;
        let work = move || {
            let options = eventlog::scavenge::ScavengeOptions {
                max_bytes_per_second,
            };
            let copy = |status: &mut ScavengeStatus, p: &eventlog::scavenge::ScavengeProgress| {
                status.segments_total = p.segments_total;
                status.segments_done = p.segments_done;
                status.bytes_before = p.bytes_before;
                status.bytes_after = p.bytes_after;
                status.events_removed = p.events_removed;
            };
            let progress = |p: &eventlog::scavenge::ScavengeProgress| {
                let mut scavenges = scavenges.lock().expect("scavenges lock");
                scavenges.update(id, |status| copy(status, p));
            };
            let outcome = store.scavenge(&is_dead(&store), options, &progress);
            let mut scavenges = scavenges.lock().expect("scavenges lock");
            scavenges.running = None;
            scavenges.update(id, |status| match outcome {
                Ok(report) => {
                    copy(status, &report);
                    status.state = ScavengeState::Done;
                }
                Err(error) => {
                    tracing::error!(error = %error, %id, "scavenge failed");
                    status.state = ScavengeState::Failed;
                    status.error = Some(error.to_string());
                }
            });
        };
        if let Err(e) = std::thread::Builder::new()
            .name("eventlog-scavenge".into())
            .spawn(work)
        {
            let mut scavenges = self.scavenges.lock().expect("scavenges lock");
            scavenges.running = None;
            scavenges.statuses.retain(|s| s.id != id);
            return Err(Error::Internal {
                reason: format!("could not start the scavenge thread: {e}"),
            });
        }
        Ok(id)
    }

    async fn scavenge_status(&self, id: Uuid) -> Result<Option<ScavengeStatus>> {
        let scavenges = self.scavenges.lock().expect("scavenges lock");
        Ok(scavenges.statuses.iter().find(|s| s.id == id).cloned())
    }

    async fn seal_active_segment(&self) -> Result<bool> {
        self.blocking(|store| store.seal_active_segment().map_err(map_error))
            .await
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

/// Metastreams (`$$<stream>`) are written only by the lifecycle operations, which validate
/// what they write: an ordinary append to one is refused.
pub(crate) fn refuse_metastreams(events: &[NewEvent]) -> Result<()> {
    match events
        .iter()
        .find(|event| event.stream.starts_with(METASTREAM_PREFIX))
    {
        Some(event) => Err(Error::InvalidAppend(format!(
            "stream {:?} is a metadata stream: set metadata with PUT /streams/{{stream}}/metadata",
            event.stream
        ))),
        None => Ok(()),
    }
}

fn lifecycle_record(metastream: &str, event_type: &str, data: Vec<u8>) -> eventlog::NewEvent {
    eventlog::NewEvent {
        id: Uuid::now_v7(),
        stream: metastream.to_owned(),
        event_type: event_type.to_owned(),
        data,
        metadata: None,
        binary: false,
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
        E::StreamDeleted { stream } => Error::StreamDeleted { stream },
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
