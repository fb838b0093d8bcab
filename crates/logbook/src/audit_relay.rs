//! The teams audit trail relayed into the event store of this process.
//!
//! [`EventStoreSink`] implements [`teams::AuditSink`] over today's event store API
//! ([`eventstore::EventStoreService`] and its [`eventlog::Store`]): each audit entry becomes
//! one event in the stream `team-<team id>`, its id the entry's id, its type the entry's action
//! (`invitation.accepted`...), its data the entry as JSON. The engine treats a re-append of an
//! id with identical content as a success, which is what makes the relay's at-least-once
//! delivery land every entry exactly once. SSE and gRPC subscribers of `team-<id>` follow a
//! team live.
//!
//! This is the one place the teams service meets the event store; when the event store grows
//! its storage seam, only this file changes.

use eventlog::{ExpectedVersion, NewEvent};
use eventstore::EventStoreService;
use teams::{AuditSink, AuditSinkError, TeamsService};
use uuid::Uuid;

/// The event store of this process, as the teams audit relay's sink.
pub struct EventStoreSink {
    events: EventStoreService,
}

impl EventStoreSink {
    /// A sink over `events` (appends wait until the log is open: until then they fail and the
    /// relay retries).
    pub fn new(events: EventStoreService) -> EventStoreSink {
        EventStoreSink { events }
    }

    fn store(&self) -> Result<eventlog::Store, AuditSinkError> {
        self.events
            .store()
            .cloned()
            .ok_or_else(|| AuditSinkError("the event log is not open yet".into()))
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
        let store = self.store()?;
        let event = NewEvent {
            id: event_id,
            stream: stream.to_owned(),
            event_type: event_type.to_owned(),
            data: serde_json::to_vec(&data).map_err(|error| AuditSinkError(error.to_string()))?,
            metadata: None,
        };
        let (sender, receiver) = tokio::sync::oneshot::channel();
        store.submit(vec![event], ExpectedVersion::Any, move |result| {
            let _ = sender.send(result);
        });
        match receiver.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(AuditSinkError(error.to_string())),
            Err(_) => Err(AuditSinkError("the event log closed".into())),
        }
    }

    async fn last_event_id(&self, stream: &str) -> Result<Option<Uuid>, AuditSinkError> {
        let store = self.store()?;
        let stream = stream.to_owned();
        tokio::task::spawn_blocking(move || {
            let Some(version) = store.stream_version(&stream) else {
                return Ok(None);
            };
            let events = store
                .read_stream(&stream, version, 1)
                .map_err(|error| AuditSinkError(error.to_string()))?;
            Ok(events.and_then(|events| events.last().map(|event| event.id)))
        })
        .await
        .map_err(|error| AuditSinkError(error.to_string()))?
    }
}

/// Starts the relay of `teams`' audit trail into `events`.
pub fn start(teams: &TeamsService, events: &EventStoreService) {
    teams.start_audit_relay(EventStoreSink::new(events.clone()));
}
