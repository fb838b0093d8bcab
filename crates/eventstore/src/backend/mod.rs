//! The backends of the event store behind the [`events::EventStore`] seam, and [`Backend`],
//! the closed set of them that the faces hold.
//!
//! A closed enum rather than `Box<dyn ...>`: the trait's methods return `impl Future`, which
//! a trait object cannot, and matching on a two-variant enum costs a branch where a boxed
//! future would cost an allocation per call. A new backend is one new module here and one
//! variant (the compiler then names every match that needs an arm).

pub mod embedded;
pub mod postgres;

use events::{
    AllPage, Appended, DeleteMode, EventStore, ExpectedVersion, ListStreams, NewEvent, Placed,
    ReadAll, ReadStream, RecordedEvent, Result, ScavengeStatus, Stats, StreamList, StreamMetadata,
    StreamPage, StreamState,
};
use uuid::Uuid;

pub use embedded::Embedded;
pub use postgres::Postgres;

/// The backend a service runs on.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The embedded `eventlog` engine (the default).
    Embedded(Embedded),
    /// PostgreSQL (`EVENTS_DATABASE_URL`), shared by any number of processes.
    Postgres(Postgres),
}

/// Calls the same method on whichever backend this is.
macro_rules! delegate {
    ($self:ident, $backend:ident => $call:expr) => {
        match $self {
            Backend::Embedded($backend) => $call,
            Backend::Postgres($backend) => $call,
        }
    };
}

impl EventStore for Backend {
    fn backend_name(&self) -> &'static str {
        delegate!(self, b => b.backend_name())
    }

    async fn append(&self, events: Vec<NewEvent>, expected: ExpectedVersion) -> Result<Appended> {
        delegate!(self, b => b.append(events, expected).await)
    }

    async fn get(&self, id: Uuid) -> Result<Option<RecordedEvent>> {
        delegate!(self, b => b.get(id).await)
    }

    async fn read_all(&self, request: ReadAll) -> Result<AllPage> {
        delegate!(self, b => b.read_all(request).await)
    }

    async fn read_stream(&self, stream: &str, request: ReadStream) -> Result<Option<StreamPage>> {
        delegate!(self, b => b.read_stream(stream, request).await)
    }

    async fn stream_state(&self, stream: &str) -> Result<Option<StreamState>> {
        delegate!(self, b => b.stream_state(stream).await)
    }

    async fn list_streams(&self, request: ListStreams) -> Result<StreamList> {
        delegate!(self, b => b.list_streams(request).await)
    }

    async fn head(&self) -> Result<u64> {
        delegate!(self, b => b.head().await)
    }

    async fn wait_for_head_above(&self, position: u64) -> Result<u64> {
        delegate!(self, b => b.wait_for_head_above(position).await)
    }

    async fn stats(&self) -> Result<Stats> {
        delegate!(self, b => b.stats().await)
    }

    async fn stream_metadata(&self, stream: &str) -> Result<Option<StreamMetadata>> {
        delegate!(self, b => b.stream_metadata(stream).await)
    }

    async fn set_stream_metadata(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<Placed> {
        delegate!(self, b => b.set_stream_metadata(stream, expected, metadata).await)
    }

    async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<()> {
        delegate!(self, b => b.delete_stream(stream, expected, mode).await)
    }

    async fn scavenge(&self) -> Result<Uuid> {
        delegate!(self, b => b.scavenge().await)
    }

    async fn scavenge_status(&self, id: Uuid) -> Result<Option<ScavengeStatus>> {
        delegate!(self, b => b.scavenge_status(id).await)
    }

    async fn seal_active_segment(&self) -> Result<bool> {
        delegate!(self, b => b.seal_active_segment().await)
    }
}

impl Backend {
    /// The event `id` as `render` renders it, when it is live and `visible` says its stream
    /// may be read (else `None`): `GET /events/{id}`. On the embedded backend a cached event's
    /// rendering is made once and kept with it (`eventlog::SharedEvent::rendering`), so a hot
    /// event is served without a copy of it and without rendering it again; `render` must
    /// therefore depend on the event alone.
    pub async fn get_rendered(
        &self,
        id: Uuid,
        visible: impl FnOnce(&str) -> bool + Send,
        render: impl FnOnce(RecordedEvent) -> axum::body::Bytes + Send,
    ) -> Result<Option<axum::body::Bytes>> {
        match self {
            Backend::Embedded(embedded) => embedded.get_rendered(id, visible, render),
            Backend::Postgres(postgres) => Ok(postgres
                .get(id)
                .await?
                .filter(|event| visible(&event.stream))
                .map(render)),
        }
    }

    /// The embedded engine, when this is the embedded backend (tools, metrics, tests).
    pub fn engine(&self) -> Option<&eventlog::Store> {
        match self {
            Backend::Embedded(embedded) => Some(embedded.engine()),
            Backend::Postgres(_) => None,
        }
    }

    /// Finishes what is in flight and releases the backend (the embedded log writes its
    /// checkpoint).
    pub async fn close(&self) {
        match self {
            Backend::Embedded(embedded) => embedded.close().await,
            Backend::Postgres(postgres) => postgres.close().await,
        }
    }
}
