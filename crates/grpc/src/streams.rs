//! The Streams service: Append, BatchAppend, Read (reads and catch-up subscriptions),
//! Delete, Tombstone.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::time::SystemTime;

use events::{
    DeleteMode, Direction, Error, EventStore, ExpectedVersion, Filter, FilterTarget,
    METADATA_EVENT_TYPE, METASTREAM_PREFIX, NewEvent, ReadAll, ReadStream, RecordedEvent, Start,
    StreamMetadata, Subscription,
};
use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt as _};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use web::auth::Access;

use crate::convert::{self, Expected, commit_position, identifier, read_event};
use crate::filter::{self, EventFilter};
use crate::proto::shared::{self, AllStreamPosition, Empty};
use crate::proto::streams::read_req::options::{
    self as read_options, AllOptions, CountOption, FilterOption, ReadDirection, StreamOption,
    StreamOptions,
};
use crate::proto::streams::read_resp::{self, CaughtUp, Checkpoint, StreamNotFound};
use crate::proto::streams::streams_server::Streams;
use crate::proto::streams::{
    AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp, ReadReq,
    ReadResp, TombstoneReq, TombstoneResp, append_req, append_resp, batch_append_req,
    batch_append_resp, delete_req, delete_resp, tombstone_req, tombstone_resp,
};
use crate::server::Face;
use crate::status::{self, from_error};

/// Events a read asks the store for at once.
pub const READ_PAGE_EVENTS: usize = 512;
/// Bytes a read asks the store for at once (at least one event).
pub const READ_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Answers buffered per call before the face waits for the client to take them.
pub const ANSWER_BUFFER_MESSAGES: usize = 64;
/// Whole batches of one BatchAppend call being appended at once.
pub const BATCHES_IN_FLIGHT: usize = 64;
/// Chunks of read answers buffered per call: a chunk is one store page (at most
/// [`READ_PAGE_EVENTS`] events, [`READ_PAGE_BYTES`] bytes), so a read holds at most this many
/// pages in memory ahead of a slow client, and the next page is read while one is sent.
pub const READ_BUFFER_CHUNKS: usize = 4;

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The Streams service over a [`Face`].
pub struct StreamsService<S> {
    face: Face<S>,
}

impl<S> StreamsService<S> {
    /// Over `face`.
    pub fn new(face: Face<S>) -> Self {
        StreamsService { face }
    }
}

#[tonic::async_trait]
impl<S: EventStore> Streams for StreamsService<S> {
    type ReadStream = Answers<ReadResp>;
    type BatchAppendStream = Answers<BatchAppendResp>;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<Answers<ReadResp>>, Status> {
        let access = self.face.access(request.metadata())?;
        let store = self.face.store()?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("a read needs options"))?;
        let read = ReadPlan::parse(options)?;
        let (sender, receiver) = mpsc::channel(READ_BUFFER_CHUNKS);
        match read.count {
            Count::Events(count) => {
                if let Target::Stream { name, .. } = &read.target {
                    check_read_access(&access, name)?;
                }
                tokio::spawn(async move {
                    let outcome = match &read.target {
                        Target::Stream { name, start } => {
                            read_stream(&store, &sender, &read, name, *start, count).await
                        }
                        Target::All { start } => {
                            read_all(&store, &sender, &read, &access, *start, count).await
                        }
                    };
                    if let Err(status) = outcome {
                        let _ = sender.send(Err(status)).await;
                    }
                });
            }
            Count::Subscription => {
                if let Target::Stream { name, .. } = &read.target {
                    check_read_access(&access, name)?;
                }
                let slot = self.face.subscription_slot()?;
                let shutdown = self.face.shutdown();
                tokio::spawn(async move {
                    let outcome = subscribe(&store, &sender, &read, &access, shutdown).await;
                    if let Err(status) = outcome {
                        let _ = sender.send(Err(status)).await;
                    }
                    drop(slot);
                });
            }
        }
        // One channel message per store page (not per event): the hand-over between the task
        // that reads and the one that encodes costs once per page.
        let answers = ReceiverStream::new(receiver).flat_map(|chunk| {
            futures_util::stream::iter(match chunk {
                Ok(answers) => answers.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(status) => vec![Err(status)],
            })
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendReq>>,
    ) -> Result<Response<AppendResp>, Status> {
        let access = self.face.access(request.metadata())?;
        let store = self.face.store()?;
        let mut messages = request.into_inner();
        let Some(append_req::Content::Options(options)) =
            messages.message().await?.and_then(|m| m.content)
        else {
            return Err(Status::invalid_argument(
                "an append starts with its options",
            ));
        };
        let stream = convert::stream_name(options.stream_identifier.as_ref())?;
        check_append_access(&access, &stream)?;
        let expected = expected_of_append(options.expected_stream_revision);
        let mut events = Vec::new();
        let mut bytes = 0usize;
        while let Some(message) = messages.message().await? {
            let Some(append_req::Content::ProposedMessage(proposed)) = message.content else {
                return Err(Status::invalid_argument(
                    "after the options, an append carries only proposed messages",
                ));
            };
            let event = convert::new_event(
                &stream,
                proposed.id.as_ref(),
                &proposed.metadata,
                proposed.custom_metadata,
                proposed.data,
            )?;
            bytes = bytes.saturating_add(event.size_bytes() as usize);
            events.push(event);
            check_bounds(&self.face, events.len(), bytes)?;
        }
        let result = append(&store, &stream, events, expected).await?;
        Ok(Response::new(AppendResp {
            result: Some(match result {
                Ok(success) => append_resp::Result::Success(append_resp::Success {
                    current_revision_option: Some(match success.revision {
                        Some(revision) => {
                            append_resp::success::CurrentRevisionOption::CurrentRevision(revision)
                        }
                        None => append_resp::success::CurrentRevisionOption::NoStream(Empty {}),
                    }),
                    position_option: Some(match success.commit {
                        Some(commit) => {
                            append_resp::success::PositionOption::Position(append_resp::Position {
                                commit_position: commit,
                                prepare_position: commit,
                            })
                        }
                        None => append_resp::success::PositionOption::NoPosition(Empty {}),
                    }),
                }),
                Err((expected, current)) => append_resp::Result::WrongExpectedVersion(
                    wrong_expected_version(expected, current),
                ),
            }),
        }))
    }

    async fn batch_append(
        &self,
        request: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Answers<BatchAppendResp>>, Status> {
        let access = self.face.access(request.metadata())?;
        let store = self.face.store()?;
        let face = self.face.clone();
        let mut messages = request.into_inner();
        let (sender, receiver) = mpsc::channel(ANSWER_BUFFER_MESSAGES);
        tokio::spawn(async move {
            if let Err(status) = batch_appends(&face, &store, &access, &mut messages, &sender).await
            {
                let _ = sender.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        let access = self.face.access(request.metadata())?;
        let store = self.face.store()?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("a delete needs options"))?;
        let stream = convert::stream_name(options.stream_identifier.as_ref())?;
        access.check_admin_stream(&stream).map_err(status::denied)?;
        let expected = match options.expected_stream_revision {
            Some(delete_req::options::ExpectedStreamRevision::Revision(r)) => Expected::Revision(r),
            Some(delete_req::options::ExpectedStreamRevision::NoStream(_)) => Expected::NoStream,
            Some(delete_req::options::ExpectedStreamRevision::StreamExists(_)) => {
                Expected::StreamExists
            }
            Some(delete_req::options::ExpectedStreamRevision::Any(_)) | None => Expected::Any,
        };
        store
            .delete_stream(&stream, expected.into(), DeleteMode::Soft)
            .await
            .map_err(from_error)?;
        Ok(Response::new(DeleteResp {
            position_option: Some(delete_resp::PositionOption::NoPosition(Empty {})),
        }))
    }

    async fn tombstone(
        &self,
        request: Request<TombstoneReq>,
    ) -> Result<Response<TombstoneResp>, Status> {
        let access = self.face.access(request.metadata())?;
        let store = self.face.store()?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("a tombstone needs options"))?;
        let stream = convert::stream_name(options.stream_identifier.as_ref())?;
        access.check_admin_stream(&stream).map_err(status::denied)?;
        let expected = match options.expected_stream_revision {
            Some(tombstone_req::options::ExpectedStreamRevision::Revision(r)) => {
                Expected::Revision(r)
            }
            Some(tombstone_req::options::ExpectedStreamRevision::NoStream(_)) => Expected::NoStream,
            Some(tombstone_req::options::ExpectedStreamRevision::StreamExists(_)) => {
                Expected::StreamExists
            }
            Some(tombstone_req::options::ExpectedStreamRevision::Any(_)) | None => Expected::Any,
        };
        store
            .delete_stream(&stream, expected.into(), DeleteMode::Hard)
            .await
            .map_err(from_error)?;
        Ok(Response::new(TombstoneResp {
            position_option: Some(tombstone_resp::PositionOption::NoPosition(Empty {})),
        }))
    }
}

fn expected_of_append(
    option: Option<append_req::options::ExpectedStreamRevision>,
) -> ExpectedVersion {
    use append_req::options::ExpectedStreamRevision as E;
    match option {
        Some(E::Revision(revision)) => Expected::Revision(revision),
        Some(E::NoStream(_)) => Expected::NoStream,
        Some(E::StreamExists(_)) => Expected::StreamExists,
        Some(E::Any(_)) | None => Expected::Any,
    }
    .into()
}

/// KurrentDB keeps a stream's metadata in the metastream `$$<stream>`; the owner stream of
/// a metastream name.
fn metastream_owner(stream: &str) -> Option<&str> {
    stream.strip_prefix(METASTREAM_PREFIX)
}

/// The access an append to `stream` needs: writing a metastream sets the owner's metadata,
/// an admin operation on the owner (as `PUT /streams/{stream}/metadata` is over HTTP).
fn check_append_access(access: &Access, stream: &str) -> Result<(), Status> {
    match metastream_owner(stream) {
        Some(owner) => access.check_admin_stream(owner),
        None => access.check_append(stream),
    }
    .map_err(status::denied)
}

/// The access a read of `stream` needs: a metastream is read with the owner's read access.
fn check_read_access(access: &Access, stream: &str) -> Result<(), Status> {
    access
        .check_read(metastream_owner(stream).unwrap_or(stream))
        .map_err(status::denied)
}

/// An append to a metastream, as KurrentDB clients write stream metadata: one `$metadata`
/// event whose data is KurrentDB's metadata JSON, with `expected` the metastream's version.
/// It becomes the store's metadata operation (validated, and in force at once); the event's
/// own id is not kept (the store writes the record), so such an append is not idempotent.
async fn append_metadata<S: EventStore>(
    store: &S,
    owner: &str,
    mut events: Vec<NewEvent>,
    expected: ExpectedVersion,
) -> Result<Result<AppendSuccess, (ExpectedVersion, Option<u64>)>, Status> {
    let event = match (events.pop(), events.is_empty()) {
        (Some(event), true) => event,
        _ => {
            return Err(Status::invalid_argument(format!(
                "a write to the metastream $${owner} carries exactly one `$metadata` event"
            )));
        }
    };
    if event.event_type != METADATA_EVENT_TYPE {
        return Err(Status::invalid_argument(format!(
            "only `$metadata` events can be written to the metastream $${owner}, not {:?}",
            event.event_type
        )));
    }
    let metadata = StreamMetadata::from_json(&event.data).map_err(from_error)?;
    let placed = store.set_stream_metadata(owner, expected, metadata).await;
    append_outcome(placed)
}

fn check_bounds<S: EventStore>(face: &Face<S>, count: usize, bytes: usize) -> Result<(), Status> {
    let limits = face.limits();
    if count > limits.max_batch_events as usize {
        return Err(from_error(Error::LimitExceeded {
            what: "the batch",
            actual: count as u64,
            limit: u64::from(limits.max_batch_events),
            setting: "max_batch_events",
        }));
    }
    if bytes > limits.max_batch_size_bytes as usize {
        return Err(from_error(Error::LimitExceeded {
            what: "the batch",
            actual: bytes as u64,
            limit: u64::from(limits.max_batch_size_bytes),
            setting: "max_batch_size_bytes",
        }));
    }
    Ok(())
}

/// A successful append: the stream's revision after it and the commit position of its last
/// event (the original ones for an idempotent repeat).
struct AppendSuccess {
    revision: Option<u64>,
    commit: Option<u64>,
}

/// Appends; a wrong expected version is an answer (`Err((expected, current))`), not a status.
async fn append<S: EventStore>(
    store: &S,
    stream: &str,
    events: Vec<NewEvent>,
    expected: ExpectedVersion,
) -> Result<Result<AppendSuccess, (ExpectedVersion, Option<u64>)>, Status> {
    if let Some(owner) = metastream_owner(stream).filter(|_| !events.is_empty()) {
        return append_metadata(store, owner, events, expected).await;
    }
    if events.is_empty() {
        // KurrentDB answers an empty append with the stream's state, after the check.
        let state = store.stream_state(stream).await.map_err(from_error)?;
        let current = state.as_ref().map(|state| state.version);
        if !expected.admits(current) {
            return Ok(Err((expected, current)));
        }
        return Ok(Ok(AppendSuccess {
            revision: current,
            commit: state.map(|state| commit_position(state.last_position)),
        }));
    }
    let appended = store.append(events, expected).await;
    append_outcome(appended.map(|appended| {
        appended
            .events
            .into_iter()
            .last()
            .expect("a non-empty batch")
    }))
}

/// The answer to an append whose last event landed at `placed`: a wrong expected version is
/// an answer (`Err((expected, current))`), any other error a status.
fn append_outcome(
    placed: events::Result<events::Placed>,
) -> Result<Result<AppendSuccess, (ExpectedVersion, Option<u64>)>, Status> {
    match placed {
        Ok(placed) => Ok(Ok(AppendSuccess {
            revision: Some(placed.version),
            commit: Some(commit_position(placed.position)),
        })),
        Err(Error::WrongExpectedVersion {
            expected, current, ..
        }) => Ok(Err((expected, current))),
        Err(error) => Err(from_error(error)),
    }
}

fn wrong_expected_version(
    expected: ExpectedVersion,
    current: Option<u64>,
) -> append_resp::WrongExpectedVersion {
    use append_resp::wrong_expected_version as w;
    let (old_expected, new_expected) = match expected {
        ExpectedVersion::Exact(revision) => (
            w::ExpectedRevisionOption2060::ExpectedRevision2060(revision),
            w::ExpectedRevisionOption::ExpectedRevision(revision),
        ),
        ExpectedVersion::Any => (
            w::ExpectedRevisionOption2060::Any2060(Empty {}),
            w::ExpectedRevisionOption::ExpectedAny(Empty {}),
        ),
        ExpectedVersion::StreamExists => (
            w::ExpectedRevisionOption2060::StreamExists2060(Empty {}),
            w::ExpectedRevisionOption::ExpectedStreamExists(Empty {}),
        ),
        ExpectedVersion::NoStream => (
            // Before 20.6 "no stream" was sent as revision -1.
            w::ExpectedRevisionOption2060::ExpectedRevision2060(u64::MAX),
            w::ExpectedRevisionOption::ExpectedNoStream(Empty {}),
        ),
    };
    let (old_current, new_current) = match current {
        Some(revision) => (
            w::CurrentRevisionOption2060::CurrentRevision2060(revision),
            w::CurrentRevisionOption::CurrentRevision(revision),
        ),
        None => (
            w::CurrentRevisionOption2060::NoStream2060(Empty {}),
            w::CurrentRevisionOption::CurrentNoStream(Empty {}),
        ),
    };
    append_resp::WrongExpectedVersion {
        current_revision_option_20_6_0: Some(old_current),
        expected_revision_option_20_6_0: Some(old_expected),
        current_revision_option: Some(new_current),
        expected_revision_option: Some(new_expected),
    }
}

/// A BatchAppend batch whose final chunk has not arrived.
struct PendingBatch {
    stream: String,
    expected: ExpectedVersion,
    expected_option: Option<batch_append_resp::ExpectedStreamPosition>,
    events: Vec<NewEvent>,
    bytes: usize,
}

/// Whole batches of one BatchAppend call appended at once (each answered as it is
/// committed, correlated by its id, as KurrentDB answers): the official clients share one
/// BatchAppend call between all of an application's appends, so appending one batch at a time
/// would give the whole application one durable append per flush. Batches of one stream stay
/// in the order they arrived (the next waits for the one in flight); batches of different
/// streams are as concurrent as separate calls. At most [`BATCHES_IN_FLIGHT`] per call: then
/// the call reads no further message until one is answered.
async fn batch_appends<S: EventStore>(
    face: &Face<S>,
    store: &S,
    access: &Access,
    messages: &mut Streaming<BatchAppendReq>,
    answers: &mpsc::Sender<Result<BatchAppendResp, Status>>,
) -> Result<(), Status> {
    let mut pending: HashMap<Vec<u8>, PendingBatch> = HashMap::new();
    let mut in_flight = FuturesUnordered::new();
    // At most one batch per stream is in flight: the next of that stream is held.
    let mut streams_in_flight: HashSet<String> = HashSet::new();
    // A whole batch of a stream that has one in flight, waiting for it.
    let mut held: Option<(shared::Uuid, PendingBatch)> = None;
    let mut input_open = true;
    loop {
        if let Some((_, batch)) = &held
            && !streams_in_flight.contains(&batch.stream)
        {
            let (correlation, batch) = held.take().expect("checked above");
            let stream = batch.stream.clone();
            streams_in_flight.insert(stream.clone());
            in_flight.push(async move { (stream, batch_answer(store, correlation, batch).await) });
        }
        let may_read = input_open && held.is_none() && in_flight.len() < BATCHES_IN_FLIGHT;
        if !may_read && in_flight.is_empty() {
            return Ok(());
        }
        tokio::select! {
            biased;
            Some((stream, answer)) = in_flight.next(), if !in_flight.is_empty() => {
                streams_in_flight.remove(&stream);
                if answers.send(Ok(answer?)).await.is_err() {
                    return Ok(());
                }
            }
            message = messages.message(), if may_read => {
                let message = match message {
                    Ok(Some(message)) => message,
                    Ok(None) => {
                        input_open = false;
                        continue;
                    }
                    Err(status) => {
                        tracing::debug!(status = %status, "BatchAppend stream ended");
                        input_open = false;
                        continue;
                    }
                };
                if let Some(whole) = batch_step(face, access, &mut pending, message)? {
                    held = Some(whole);
                }
            }
        }
    }
}

/// One BatchAppend message: collects a chunk; the final one gives the whole batch.
fn batch_step<S: EventStore>(
    face: &Face<S>,
    access: &Access,
    pending: &mut HashMap<Vec<u8>, PendingBatch>,
    message: BatchAppendReq,
) -> Result<Option<(shared::Uuid, PendingBatch)>, Status> {
    let correlation = message
        .correlation_id
        .clone()
        .ok_or_else(|| Status::invalid_argument("a BatchAppend message needs a correlation id"))?;
    let key = correlation.encode_to_vec();
    if !pending.contains_key(&key) {
        let options = message.options.clone().ok_or_else(|| {
            Status::invalid_argument("the first message of a batch carries its options")
        })?;
        let stream = convert::stream_name(options.stream_identifier.as_ref())?;
        check_append_access(access, &stream)?;
        use batch_append_req::options::ExpectedStreamPosition as E;
        use batch_append_resp::ExpectedStreamPosition as R;
        let (expected, expected_option) = match options.expected_stream_position {
            Some(E::StreamPosition(revision)) => (
                ExpectedVersion::Exact(revision),
                Some(R::StreamPosition(revision)),
            ),
            Some(E::NoStream(_)) => (ExpectedVersion::NoStream, Some(R::NoStream(()))),
            Some(E::StreamExists(_)) => (ExpectedVersion::StreamExists, Some(R::StreamExists(()))),
            Some(E::Any(_)) | None => (ExpectedVersion::Any, Some(R::Any(()))),
        };
        pending.insert(
            key.clone(),
            PendingBatch {
                stream,
                expected,
                expected_option,
                events: Vec::new(),
                bytes: 0,
            },
        );
    }
    let batch = pending.get_mut(&key).expect("inserted above");
    for proposed in message.proposed_messages {
        let event = convert::new_event(
            &batch.stream,
            proposed.id.as_ref(),
            &proposed.metadata,
            proposed.custom_metadata,
            proposed.data,
        )?;
        batch.bytes = batch.bytes.saturating_add(event.size_bytes() as usize);
        batch.events.push(event);
        check_bounds(face, batch.events.len(), batch.bytes)?;
    }
    if !message.is_final {
        return Ok(None);
    }
    let batch = pending.remove(&key).expect("present");
    Ok(Some((correlation, batch)))
}

/// Appends a whole batch and makes its answer.
async fn batch_answer<S: EventStore>(
    store: &S,
    correlation: shared::Uuid,
    batch: PendingBatch,
) -> Result<BatchAppendResp, Status> {
    let result = append(store, &batch.stream, batch.events, batch.expected).await?;
    let result =
        match result {
            Ok(success) => batch_append_resp::Result::Success(batch_append_resp::Success {
                current_revision_option: Some(match success.revision {
                    Some(revision) => {
                        batch_append_resp::success::CurrentRevisionOption::CurrentRevision(revision)
                    }
                    None => batch_append_resp::success::CurrentRevisionOption::NoStream(()),
                }),
                position_option: Some(match success.commit {
                    Some(commit) => {
                        batch_append_resp::success::PositionOption::Position(AllStreamPosition {
                            commit_position: commit,
                            prepare_position: commit,
                        })
                    }
                    None => batch_append_resp::success::PositionOption::NoPosition(()),
                }),
            }),
            Err((expected, current)) => batch_append_resp::Result::Error(
                batch_wrong_expected_version(&batch.stream, expected, current),
            ),
        };
    Ok(BatchAppendResp {
        correlation_id: Some(correlation),
        result: Some(result),
        stream_identifier: Some(identifier(&batch.stream)),
        expected_stream_position: batch.expected_option,
    })
}

/// The status inside a BatchAppend answer for a wrong expected version, with the
/// `WrongExpectedVersion` detail the clients unpack.
fn batch_wrong_expected_version(
    stream: &str,
    expected: ExpectedVersion,
    current: Option<u64>,
) -> crate::proto::rpc::Status {
    use shared::wrong_expected_version as w;
    let detail = shared::WrongExpectedVersion {
        current_stream_revision_option: Some(match current {
            Some(revision) => w::CurrentStreamRevisionOption::CurrentStreamRevision(revision),
            None => w::CurrentStreamRevisionOption::CurrentNoStream(()),
        }),
        expected_stream_position_option: Some(match expected {
            ExpectedVersion::Exact(revision) => {
                w::ExpectedStreamPositionOption::ExpectedStreamPosition(revision)
            }
            ExpectedVersion::Any => w::ExpectedStreamPositionOption::ExpectedAny(()),
            ExpectedVersion::StreamExists => {
                w::ExpectedStreamPositionOption::ExpectedStreamExists(())
            }
            ExpectedVersion::NoStream => w::ExpectedStreamPositionOption::ExpectedNoStream(()),
        }),
    };
    let text = status::wrong_expected_version(stream, expected, current);
    crate::proto::rpc::Status {
        code: tonic::Code::FailedPrecondition as i32,
        message: text.message().to_owned(),
        details: Some(prost_types::Any {
            type_url: "type.googleapis.com/event_store.client.WrongExpectedVersion".to_owned(),
            value: detail.encode_to_vec(),
        }),
    }
}

/// What a read is about.
enum Target {
    Stream { name: String, start: Start },
    All { start: AllStart },
}

/// Where a `$all` read starts, in commit positions as the client gave them.
#[derive(Clone, Copy)]
enum AllStart {
    Start,
    End,
    Commit(u64),
}

enum Count {
    Events(u64),
    Subscription,
}

struct ReadPlan {
    target: Target,
    direction: Direction,
    count: Count,
    filter: Option<EventFilter>,
    uuid_as_string: bool,
}

impl ReadPlan {
    fn parse(options: crate::proto::streams::read_req::Options) -> Result<ReadPlan, Status> {
        let direction = match ReadDirection::try_from(options.read_direction) {
            Ok(ReadDirection::Forwards) => Direction::Forward,
            Ok(ReadDirection::Backwards) => Direction::Backward,
            Err(_) => return Err(Status::invalid_argument("unknown read direction")),
        };
        let target = match options.stream_option {
            Some(StreamOption::Stream(StreamOptions {
                stream_identifier,
                revision_option,
            })) => {
                use read_options::stream_options::RevisionOption as R;
                let name = convert::stream_name(stream_identifier.as_ref())?;
                let start = match revision_option {
                    Some(R::Revision(revision)) => Start::At(revision),
                    Some(R::End(_)) => Start::End,
                    Some(R::Start(_)) | None => Start::Beginning,
                };
                Target::Stream { name, start }
            }
            Some(StreamOption::All(AllOptions { all_option })) => {
                use read_options::all_options::AllOption as A;
                let start = match all_option {
                    Some(A::Position(position)) => AllStart::Commit(position.commit_position),
                    Some(A::End(_)) => AllStart::End,
                    Some(A::Start(_)) | None => AllStart::Start,
                };
                Target::All { start }
            }
            None => return Err(Status::invalid_argument("a read names a stream or $all")),
        };
        let count = match options.count_option {
            Some(CountOption::Count(count)) => Count::Events(count),
            Some(CountOption::Subscription(_)) => Count::Subscription,
            None => Count::Events(u64::MAX),
        };
        let filter = match &options.filter_option {
            Some(FilterOption::Filter(filter)) => {
                if matches!(target, Target::Stream { .. }) {
                    return Err(Status::invalid_argument("filters apply to $all reads only"));
                }
                filter::from_options(filter)?
            }
            Some(FilterOption::NoFilter(_)) | None => None,
        };
        let uuid_as_string = matches!(
            options.uuid_option.and_then(|option| option.content),
            Some(read_options::uuid_option::Content::String(_))
        );
        Ok(ReadPlan {
            target,
            direction,
            count,
            filter,
            uuid_as_string,
        })
    }

    fn event(&self, event: RecordedEvent) -> ReadResp {
        ReadResp {
            content: Some(read_resp::Content::Event(read_event(
                event,
                self.uuid_as_string,
            ))),
        }
    }
}

/// Read answers travel in chunks: one store page of events, or one other answer.
type Sender = mpsc::Sender<Result<Vec<ReadResp>, Status>>;

/// The client went away: stop quietly.
struct Gone;

async fn send(sender: &Sender, answer: ReadResp) -> Result<(), Gone> {
    send_chunk(sender, vec![answer]).await
}

/// Sends the answers of one page at once (nothing when there are none).
async fn send_chunk(sender: &Sender, answers: Vec<ReadResp>) -> Result<(), Gone> {
    if answers.is_empty() {
        return Ok(());
    }
    sender.send(Ok(answers)).await.map_err(|_| Gone)
}

async fn read_stream<S: EventStore>(
    store: &S,
    sender: &Sender,
    read: &ReadPlan,
    name: &str,
    mut start: Start,
    count: u64,
) -> Result<(), Status> {
    let mut remaining = count;
    while remaining > 0 {
        let request = ReadStream {
            start,
            direction: read.direction,
            limit: remaining.min(READ_PAGE_EVENTS as u64) as usize,
            max_bytes: READ_PAGE_BYTES,
        };
        let Some(page) = store.read_stream(name, request).await.map_err(from_error)? else {
            let not_found = ReadResp {
                content: Some(read_resp::Content::StreamNotFound(StreamNotFound {
                    stream_identifier: Some(identifier(name)),
                })),
            };
            let _ = send(sender, not_found).await;
            return Ok(());
        };
        remaining -= page.events.len() as u64;
        let answers = page.events.into_iter().map(|e| read.event(e)).collect();
        if send_chunk(sender, answers).await.is_err() {
            return Ok(());
        }
        match page.next {
            Some(next) => start = Start::At(next),
            None => break,
        }
    }
    Ok(())
}

/// The first position a `$all` read examines (`None`: nothing to read).
fn all_start(start: AllStart, direction: Direction) -> Option<Start> {
    match (start, direction) {
        (AllStart::Start, Direction::Forward) => Some(Start::Beginning),
        (AllStart::Start, Direction::Backward) => None,
        (AllStart::End, Direction::Forward) => None,
        (AllStart::End, Direction::Backward) => Some(Start::End),
        // Forward from a commit position includes the event at it.
        (AllStart::Commit(commit), Direction::Forward) => {
            Some(Start::At(convert::position_of_commit(commit).unwrap_or(0)))
        }
        // Backward from a commit position excludes the event at it (KurrentDB's "before").
        (AllStart::Commit(commit), Direction::Backward) => commit.checked_sub(2).map(Start::At),
    }
}

fn store_read_all(start: Start, direction: Direction, filter: Option<&EventFilter>) -> ReadAll {
    ReadAll {
        start,
        direction,
        limit: READ_PAGE_EVENTS,
        max_bytes: READ_PAGE_BYTES,
        filter: filter.and_then(EventFilter::store_filter),
    }
}

fn passes(filter: Option<&EventFilter>, access: &Access, event: &RecordedEvent) -> bool {
    filter.is_none_or(|filter| filter.matches(event)) && access.can_read(&event.stream)
}

async fn read_all<S: EventStore>(
    store: &S,
    sender: &Sender,
    read: &ReadPlan,
    access: &Access,
    start: AllStart,
    count: u64,
) -> Result<(), Status> {
    let Some(mut start) = all_start(start, read.direction) else {
        return Ok(());
    };
    let mut remaining = count;
    while remaining > 0 {
        let request = store_read_all(start, read.direction, read.filter.as_ref());
        let page = store.read_all(request).await.map_err(from_error)?;
        let mut answers = Vec::with_capacity(page.events.len());
        for event in page.events {
            if remaining == 0 {
                break;
            }
            if !passes(read.filter.as_ref(), access, &event) {
                continue;
            }
            answers.push(read.event(event));
            remaining -= 1;
        }
        if send_chunk(sender, answers).await.is_err() || remaining == 0 {
            return Ok(());
        }
        match page.next {
            Some(next) => start = Start::At(next),
            None => break,
        }
    }
    Ok(())
}

fn timestamp_now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// A catch-up subscription: the confirmation, the stored events, `caught_up`, then live
/// events until the client leaves or the server shuts down (`UNAVAILABLE`).
async fn subscribe<S: EventStore>(
    store: &S,
    sender: &Sender,
    read: &ReadPlan,
    access: &Access,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Status> {
    let confirmation = ReadResp {
        content: Some(read_resp::Content::Confirmation(
            read_resp::SubscriptionConfirmation {
                subscription_id: uuid::Uuid::now_v7().to_string(),
            },
        )),
    };
    if send(sender, confirmation).await.is_err() {
        return Ok(());
    }
    let head = store.head().await.map_err(from_error)?;
    // The position to examine first, and which events of the log belong to the subscription.
    let (mut next, stream) = match &read.target {
        Target::All { start } => {
            let from = match *start {
                AllStart::Start => 0,
                AllStart::End => head,
                // After the event at `commit`: that event is at `commit - 1`.
                AllStart::Commit(commit) => commit,
            };
            if from > head {
                return Err(Status::out_of_range(format!(
                    "commit position {from} is past the end of $all (the last is {head})"
                )));
            }
            (from, None)
        }
        Target::Stream { name, start } => {
            let from_version = match *start {
                Start::Beginning => 0,
                Start::At(revision) => revision.saturating_add(1),
                Start::End => store
                    .stream_state(name)
                    .await
                    .map_err(from_error)?
                    .map_or(0, |state| state.version + 1),
            };
            let first = store
                .read_stream(name, ReadStream::forward(from_version, 1))
                .await
                .map_err(from_error)?
                .and_then(|page| page.events.into_iter().next());
            let from = first.map_or(head, |event| event.position);
            (from, Some((name.clone(), from_version)))
        }
    };
    let filter = match &stream {
        Some((name, _)) => Some(EventFilter::Store(
            Filter::prefixes(FilterTarget::Stream, vec![name.clone()]).map_err(from_error)?,
        )),
        None => read.filter.clone(),
    };
    let belongs = |event: &RecordedEvent| match &stream {
        Some((name, from_version)) => &event.stream == name && event.version >= *from_version,
        None => passes(filter.as_ref(), access, event),
    };
    let checkpoints = stream.is_none() && read.filter.is_some();
    let mut last_revision: Option<u64> = None;
    // Catch up, page by page, up to the head as of each page.
    loop {
        let stopping = *shutdown.borrow();
        if stopping {
            return Err(status::shutting_down());
        }
        let page = store
            .read_all(store_read_all(
                Start::At(next),
                Direction::Forward,
                filter.as_ref(),
            ))
            .await
            .map_err(from_error)?;
        let mut answers = Vec::with_capacity(page.events.len());
        for event in page.events {
            if belongs(&event) {
                last_revision = Some(event.version);
                answers.push(read.event(event));
            }
        }
        if send_chunk(sender, answers).await.is_err() {
            return Ok(());
        }
        match page.next {
            Some(following) => {
                next = following;
                if checkpoints {
                    let checkpoint = ReadResp {
                        content: Some(read_resp::Content::Checkpoint(Checkpoint {
                            commit_position: next,
                            prepare_position: next,
                            timestamp: Some(timestamp_now()),
                        })),
                    };
                    if send(sender, checkpoint).await.is_err() {
                        return Ok(());
                    }
                }
            }
            None => {
                next = page.head.max(next);
                break;
            }
        }
    }
    let caught_up = ReadResp {
        content: Some(read_resp::Content::CaughtUp(CaughtUp {
            timestamp: Some(timestamp_now()),
            stream_revision: match &stream {
                Some(_) => last_revision.map(|revision| revision as i64),
                None => None,
            },
            position: match &stream {
                Some(_) => None,
                None => (next > 0).then_some(read_resp::Position {
                    commit_position: next,
                    prepare_position: next,
                }),
            },
        })),
    };
    if send(sender, caught_up).await.is_err() {
        return Ok(());
    }
    let mut live = Subscription::new(
        store.clone(),
        next,
        filter.as_ref().and_then(EventFilter::store_filter),
    )
    .with_batch(READ_PAGE_EVENTS, READ_PAGE_BYTES);
    loop {
        tokio::select! {
            event = live.next() => {
                let event = event.map_err(from_error)?;
                if belongs(&event) && send(sender, read.event(event)).await.is_err() {
                    return Ok(());
                }
            }
            () = stopped(&mut shutdown) => return Err(status::shutting_down()),
            () = sender.closed() => return Ok(()),
        }
    }
}

/// Resolves once `shutdown` is `true` (or its sender is gone).
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_reads_start_inclusive_forward_and_exclusive_backward() {
        assert_eq!(
            all_start(AllStart::Commit(1), Direction::Forward),
            Some(Start::At(0))
        );
        assert_eq!(
            all_start(AllStart::Commit(5), Direction::Backward),
            Some(Start::At(3))
        );
        assert_eq!(all_start(AllStart::Commit(1), Direction::Backward), None);
        assert_eq!(all_start(AllStart::Start, Direction::Backward), None);
    }
}
