//! Starting the event store's KurrentDB-compatible gRPC face beside the HTTP one.

use std::sync::Arc;

use eventstore::EventStoreService;
use eventstore::backend::Backend;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::server::Tls;

/// Serves the gRPC face on `listener` until `stop` turns `true`; the task ends once open calls
/// have finished (live subscriptions end with `UNAVAILABLE` on the same signal).
///
/// With TLS configured the face is not served (a warning says so): gRPC over TLS is not
/// implemented yet, and serving it in plaintext beside HTTPS would leak what TLS protects.
pub fn start(
    events: &EventStoreService,
    listener: TcpListener,
    max_connections: usize,
    tls: Option<&Tls>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let advertised = listener.local_addr()?;
    if tls.is_some() {
        tracing::warn!(
            addr = %advertised,
            "TLS is configured and gRPC over TLS is not served yet: the gRPC face is off"
        );
        return Ok(tokio::spawn(async {}));
    }
    let source = events.clone();
    let face = grpc::Face::<Backend>::new(
        Arc::new(move || source.backend().cloned()),
        events.authenticator(),
        events.subscription_slots(),
        stop.clone(),
        grpc::GrpcSettings {
            limits: events.limits(),
            advertised,
            max_connections,
        },
    );
    tracing::info!(grpc_addr = %advertised, "gRPC listening");
    Ok(tokio::spawn(async move {
        if let Err(error) = grpc::serve(listener, face, stop).await {
            tracing::error!(error = %error, "the gRPC face stopped");
        }
    }))
}
