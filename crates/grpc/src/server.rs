//! [`Face`], the state every gRPC service shares, and [`serve`], the listener loop.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use events::{EventStore, Limits};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic::transport::server::{Connected, TcpConnectInfo};
use uuid::Uuid;
use web::auth::{Access, Authenticator};

use crate::proto::gossip::gossip_server::GossipServer;
use crate::proto::server_features::server_features_server::ServerFeaturesServer;
use crate::proto::streams::streams_server::StreamsServer;

/// Bytes a gRPC message may have on top of a batch's counted bytes (ids, keys, framing).
pub const MESSAGE_OVERHEAD_PER_EVENT_BYTES: usize = 512;

/// What the face needs from the process.
#[derive(Debug, Clone)]
pub struct GrpcSettings {
    /// The same limits as the HTTP face.
    pub limits: Limits,
    /// The address gossip advertises (the gRPC one, never the HTTP one).
    pub advertised: SocketAddr,
    /// Most open gRPC connections; more wait in the listen backlog.
    pub max_connections: usize,
}

/// The state every service of the face shares. Cheap to clone.
pub struct Face<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Face<S> {
    fn clone(&self) -> Self {
        Face {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Answers the store once it is open (the embedded log replays in the background).
pub type StoreSource<S> = Arc<dyn Fn() -> Option<S> + Send + Sync>;

struct Inner<S> {
    store: StoreSource<S>,
    authenticator: Arc<Authenticator>,
    subscriptions: Arc<Semaphore>,
    max_subscriptions: usize,
    shutdown: watch::Receiver<bool>,
    settings: GrpcSettings,
    instance_id: Uuid,
}

impl<S: EventStore> Face<S> {
    /// A face over the store `store` answers, with the HTTP face's authenticator and
    /// subscription slots (one cap for SSE and gRPC), ending subscriptions when `shutdown`
    /// turns `true`.
    pub fn new(
        store: StoreSource<S>,
        authenticator: Arc<Authenticator>,
        subscriptions: (Arc<Semaphore>, usize),
        shutdown: watch::Receiver<bool>,
        settings: GrpcSettings,
    ) -> Face<S> {
        Face {
            inner: Arc::new(Inner {
                store,
                authenticator,
                subscriptions: subscriptions.0,
                max_subscriptions: subscriptions.1,
                shutdown,
                settings,
                instance_id: Uuid::now_v7(),
            }),
        }
    }

    /// The open store, or `UNAVAILABLE` while it opens.
    pub fn store(&self) -> Result<S, Status> {
        (self.inner.store)()
            .ok_or_else(|| Status::unavailable("the event store is still opening; retry shortly"))
    }

    /// The access of a call: `authorization: Bearer <token>`, or `Basic` credentials whose
    /// password is the token.
    pub fn access(&self, metadata: &MetadataMap) -> Result<Access, Status> {
        let header = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        let token = header.and_then(token_of);
        self.inner
            .authenticator
            .authenticate(token.as_deref())
            .map_err(|_| crate::status::unauthenticated())
    }

    /// A subscription slot, held while the subscription lives.
    pub fn subscription_slot(&self) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.inner.subscriptions)
            .try_acquire_owned()
            .map_err(|_| crate::status::too_many_subscriptions(self.inner.max_subscriptions))
    }

    /// Turns `true` when the process shuts down.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.clone()
    }

    /// The limits appends are checked against.
    pub fn limits(&self) -> &Limits {
        &self.inner.settings.limits
    }

    /// The address gossip advertises.
    pub fn advertised(&self) -> SocketAddr {
        self.inner.settings.advertised
    }

    /// This process's member id in gossip.
    pub fn instance_id(&self) -> Uuid {
        self.inner.instance_id
    }

    /// Largest message accepted: a whole batch at its limits.
    pub fn max_message_bytes(&self) -> usize {
        let limits = self.limits();
        (limits.max_batch_size_bytes as usize).saturating_add(
            (limits.max_batch_events as usize).saturating_mul(MESSAGE_OVERHEAD_PER_EVENT_BYTES),
        )
    }
}

fn token_of(header: &str) -> Option<String> {
    if let Some(token) = web::auth::bearer_token(header) {
        return Some(token.to_owned());
    }
    let (scheme, credentials) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

/// Serves the face on `listener` until `shutdown` turns `true`, then stops accepting and
/// waits for open calls to finish (subscriptions end with `UNAVAILABLE` on the same signal).
/// Every service other than Streams, Gossip and ServerFeatures answers `UNIMPLEMENTED`.
pub async fn serve<S: EventStore>(
    listener: TcpListener,
    face: Face<S>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let max_message = face.max_message_bytes();
    let permits = Arc::new(Semaphore::new(face.inner.settings.max_connections.max(1)));
    let incoming =
        futures_util::stream::unfold((listener, permits), |(listener, permits)| async move {
            let permit = Arc::clone(&permits)
                .acquire_owned()
                .await
                .expect("the connection semaphore is never closed");
            let accepted = loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        break Ok(LimitedStream {
                            stream,
                            _permit: permit,
                        });
                    }
                    Err(error)
                        if matches!(
                            error.kind(),
                            io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                        ) => {}
                    Err(error) => break Err(error),
                }
            };
            Some((accepted, (listener, permits)))
        });
    tonic::transport::Server::builder()
        .add_service(
            StreamsServer::new(crate::streams::StreamsService::new(face.clone()))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
        )
        .add_service(GossipServer::new(crate::cluster::GossipService::new(
            face.clone(),
        )))
        .add_service(ServerFeaturesServer::new(
            crate::cluster::FeaturesService::new(face.clone()),
        ))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

/// Acknowledges what was just read at once instead of after the delayed-ACK timer.
///
/// The official Rust client (`kurrentdb`, on hyper's `HttpConnector`) leaves Nagle's algorithm
/// on: it holds its next small write until the server acknowledges the previous one, and the
/// kernel delays that acknowledgement when the server has nothing to send yet. Linux leaves
/// quick-ack mode by itself, so it is asked for again after every read that returned data
/// (one `setsockopt`). Elsewhere this does nothing.
fn quick_ack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// A connection holding one of the connection cap's permits.
struct LimitedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for LimitedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            quick_ack(&self.stream);
        }
        poll
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_bearer_or_from_the_basic_password() {
        assert_eq!(token_of("Bearer abc").as_deref(), Some("abc"));
        // admin:secret
        assert_eq!(
            token_of("Basic YWRtaW46c2VjcmV0").as_deref(),
            Some("secret")
        );
        assert_eq!(token_of("Basic !!!"), None);
        assert_eq!(token_of("Digest x"), None);
    }
}
