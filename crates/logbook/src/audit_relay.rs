//! The teams audit trail relayed into the event store of this process.
//!
//! [`EventStoreSink`] implements [`teams::AuditSink`] over the event store's seam
//! ([`events::EventStore`], whichever backend serves): each audit entry becomes
//! one event in the stream `team-<team id>`, its id the entry's id, its type the entry's action
//! (`invitation.accepted`...), its data the entry as JSON. The engine treats a re-append of an
//! id with identical content as a success, which is what makes the relay's at-least-once
//! delivery land every entry exactly once. SSE and gRPC subscribers of `team-<id>` follow a
//! team live.
//!
//! This is the one place the teams service meets the event store.

use events::{EventStore, ExpectedVersion, NewEvent, ReadStream, Start};
use eventstore::EventStoreService;
use eventstore::backend::Backend;
use teams::{AuditSink, AuditSinkError, TeamsService};
use uuid::Uuid;

/// The event store of this process, as the teams audit relay's sink.
pub struct EventStoreSink {
    events: EventStoreService,
}

impl EventStoreSink {
    /// A sink over `events` (appends wait until the store is open: until then they fail and
    /// the relay retries).
    pub fn new(events: EventStoreService) -> EventStoreSink {
        EventStoreSink { events }
    }

    fn backend(&self) -> Result<&Backend, AuditSinkError> {
        self.events
            .backend()
            .ok_or_else(|| AuditSinkError("the event store is not open yet".into()))
    }
}

impl AuditSink for EventStoreSink {
    async fn append(
        &self,
        stream: &str,
        event_id: Uuid,
        event_type: &str,
        data: serde_json::Value,
    ) -> Result<(), AuditSinkError> {
        let event = NewEvent {
            id: event_id,
            stream: stream.to_owned(),
            event_type: event_type.to_owned(),
            data: serde_json::to_vec(&data).map_err(|error| AuditSinkError(error.to_string()))?,
            metadata: None,
            content_type: events::ContentType::Json,
        };
        self.backend()?
            .append(vec![event], ExpectedVersion::Any)
            .await
            .map(|_| ())
            .map_err(|error| AuditSinkError(error.to_string()))
    }

    async fn last_event_id(&self, stream: &str) -> Result<Option<Uuid>, AuditSinkError> {
        let page = self
            .backend()?
            .read_stream(stream, ReadStream::backward(Start::End, 1))
            .await
            .map_err(|error| AuditSinkError(error.to_string()))?;
        Ok(page.and_then(|page| page.events.first().map(|event| event.id)))
    }
}

/// Starts the relay of `teams`' audit trail into `events`.
pub fn start(teams: &TeamsService, events: &EventStoreService) {
    teams.start_audit_relay(EventStoreSink::new(events.clone()));
}
