//! Serving connections: plain HTTP/1.1, or TLS (rustls) with ALPN `h2` and `http/1.1`.
//!
//! We drive hyper ourselves instead of `axum::serve` because the defences need its knobs:
//!
//! - **Slow clients.** A connection whose request head (or TLS handshake) has not fully
//!   arrived within `LOGBOOK_HEADER_READ_TIMEOUT_SECONDS` is closed. hyper's HTTP/1 header
//!   read timeout starts when it waits for a head, so it also closes keep-alive connections
//!   idle for that long (clients reconnect; idle sockets cost nothing useful).
//! - **Request smuggling.** hyper refuses two different `Content-Length`s (400) and a
//!   `Transfer-Encoding` other than a final `chunked` (400). A request with both
//!   `Content-Length` and `Transfer-Encoding` is read by `Transfer-Encoding` alone, the
//!   `Content-Length` discarded, and the connection closed after the answer (RFC 9112 §6.3
//!   allows exactly this), so no second request can hide in the body. hyper removes the
//!   `Content-Length` before a handler could see it, so a 400 for that case would need a second
//!   HTTP parser in front of hyper; we rely on hyper's close instead (tested over a raw socket).
//! - **TLS.** TLS 1.2 and 1.3 only, rustls' default (modern, forward-secret AEAD) suites over
//!   `ring`; no OpenSSL. The certificate is read again on [`Tls::reload`] (SIGHUP): new
//!   handshakes use the new one, open connections keep theirs. HTTPS answers carry
//!   `Strict-Transport-Security`.
//!
//! Each connection gets `ConnectInfo<SocketAddr>` in its requests' extensions (the teams rate
//! limit keys on it), and a graceful shutdown lets in-flight requests finish.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tower::{Service, ServiceExt};

use crate::listener::{LimitedListener, StdLimitedStream};

/// `Strict-Transport-Security` on every HTTPS answer: browsers use HTTPS only for a year.
pub const HSTS_VALUE: &str = "max-age=31536000";

/// A certificate and key from PEM files, reloadable.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    config: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads and checks the certificate chain and the key (they must match).
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, String> {
        let config = server_config(cert, key)?;
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            config: RwLock::new(Arc::new(config)),
        })
    }

    /// Reads the files again; on error the current certificate stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.cert, &self.key)?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(
            &self.config.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read a PEM certificate chain from {}: {e}",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a PEM private key from {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "the key in {} does not fit the certificate in {}: {e}",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// How connections are served.
pub struct ServeOptions {
    /// Longest wait for a TLS handshake and for a complete HTTP/1 request head.
    pub header_read_timeout: Duration,
    /// `Some`: every connection is TLS.
    pub tls: Option<Arc<Tls>>,
}

/// A connection's whole life, ready to run on a lane.
type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The threads that serve HTTP connections, each driving a current-thread runtime of its own.
///
/// On the work-stealing runtime a request's wake-up lands on one worker, which then wakes a
/// second to steal from it: on two cores that cross-thread hand-off (a futex wake, a context
/// switch) was a sixth of the server's CPU per read by id (docs/PERFORMANCE.md). A connection
/// handed to a lane stays on that lane's thread for its whole life: its socket is registered
/// with the lane's own epoll, its timers are on the lane's own wheel, and what its handlers
/// spawn (HTTP/2 streams, subscriptions) runs there too. Connections are dealt to lanes in turn.
///
/// The accept loop stays on the main runtime, and everything else (gRPC, the teams service's
/// background work, the event log's writer) is where it was. A lane's runtime can drive I/O
/// that it created and another thread polls (a database connection opened by one request and
/// reused by another lane or a background task), so [`Lanes`] must outlive every user of such
/// connections: the lanes end when the last clone is dropped, and `App::run` drops its own last,
/// after the event log and the teams service are closed.
#[derive(Clone)]
pub struct Lanes {
    senders: Vec<mpsc::UnboundedSender<Job>>,
    next: usize,
}

impl Lanes {
    /// Starts `threads` lanes (0: [`Lanes::default_count`]).
    pub fn start(threads: usize) -> std::io::Result<Lanes> {
        let threads = match threads {
            0 => Lanes::default_count(),
            n => n,
        };
        let mut senders = Vec::with_capacity(threads);
        for lane in 0..threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (sender, mut jobs) = mpsc::unbounded_channel::<Job>();
            std::thread::Builder::new()
                .name(format!("logbook-http-{lane}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        while let Some(job) = jobs.recv().await {
                            tokio::spawn(job);
                        }
                    });
                })?;
            senders.push(sender);
        }
        Ok(Lanes { senders, next: 0 })
    }

    /// Two lanes per CPU core. A lane does not steal work, so with exactly one per core a lane
    /// that waits for its core (the load generator, the writer, another lane ran there) stalls
    /// all its connections while the other core may sit idle. Measured on 2 cores with the load
    /// generator beside the server (64 connections, reads by id, `logbook bench`): 2 lanes
    /// 86,000-88,000/s with a p99 of 4.5 ms, 3 lanes 120,000/s, 4 lanes 108,000-112,000/s with a
    /// p99 of 1.8 ms, 8 lanes 97,000-102,000/s (docs/PERFORMANCE.md).
    pub fn default_count() -> usize {
        2 * std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    }

    /// Runs `job` on the next lane (on the calling runtime if that lane is gone).
    fn run(&mut self, job: Job) {
        let lane = &self.senders[self.next % self.senders.len()];
        self.next = self.next.wrapping_add(1);
        if let Err(mpsc::error::SendError(job)) = lane.send(job) {
            tokio::spawn(job);
        }
    }
}

/// What [`serve`] serves: the binary's stack (`web::middleware::around`), or any service of
/// the same shape.
pub trait HttpService:
    Service<
        axum::extract::Request,
        Response = axum::http::Response<Self::Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
    /// The answers' body.
    type Body: hyper::body::Body<Data = axum::body::Bytes, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> HttpService for S
where
    S: Service<
            axum::extract::Request,
            Response = axum::http::Response<B>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static,
    B: hyper::body::Body<Data = axum::body::Bytes, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Accepts connections until `stop` turns `true`, then stops accepting and waits for every
/// open connection to finish its in-flight requests (the caller bounds that wait). Each
/// connection is served on one of `lanes`.
pub async fn serve<S: HttpService>(
    mut listener: LimitedListener,
    service: S,
    options: ServeOptions,
    mut lanes: Lanes,
    mut stop: watch::Receiver<bool>,
) {
    // Over TLS every answer says to keep to HTTPS (a header value of `None` adds nothing).
    let service = tower_http::set_header::SetResponseHeader::if_not_present(
        service,
        axum::http::header::STRICT_TRANSPORT_SECURITY,
        options
            .tls
            .as_ref()
            .map(|_| axum::http::HeaderValue::from_static(HSTS_VALUE)),
    );
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        // Taken off this runtime's reactor here, registered with the lane's on its first poll.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(error = %error, peer = %addr, "cannot hand the connection over");
                continue;
            }
        };
        let connection = Connection {
            service: service.clone(),
            tls: options.tls.clone(),
            watcher: graceful.watcher(),
            header_read_timeout: options.header_read_timeout,
            addr,
        };
        lanes.run(Box::pin(connection.serve(stream)));
    }
    drop(listener);
    graceful.shutdown().await;
}

/// What serving one accepted connection needs.
struct Connection<S> {
    service: S,
    tls: Option<Arc<Tls>>,
    watcher: Watcher,
    header_read_timeout: Duration,
    addr: SocketAddr,
}

impl<S: HttpService> Connection<S> {
    async fn serve(self, stream: StdLimitedStream) {
        let Connection {
            service,
            tls,
            watcher,
            header_read_timeout: timeout,
            addr,
        } = self;
        let stream = match stream.into_tokio() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(error = %error, peer = %addr, "cannot register the connection");
                return;
            }
        };
        let service = ConnectionService {
            service: std::cell::RefCell::new(service),
            addr,
        };
        let Some(tls) = tls else {
            let connection = http1(timeout).serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(error = %error, peer = %addr, "connection ended with an error");
            }
            return;
        };
        let stream = match tokio::time::timeout(timeout, tls.acceptor().accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(error = %error, peer = %addr, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %addr, "TLS handshake timed out");
                return;
            }
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        let result = if h2 {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            watcher.watch(builder.serve_connection(io, service)).await
        } else {
            watcher
                .watch(http1(timeout).serve_connection(io, service))
                .await
        };
        if let Err(error) = result {
            tracing::debug!(error = %error, peer = %addr, "connection ended with an error");
        }
    }
}

/// The service stack as one connection calls it: its own copy, called in place. A copy per
/// request (what `service_fn` with `oneshot` does) bumps and drops every reference count in
/// the stack, shared by all lanes' threads, on every request: cache lines that bounce between
/// cores (issue 15).
struct ConnectionService<S> {
    service: std::cell::RefCell<S>,
    addr: SocketAddr,
}

impl<S: HttpService> hyper::service::Service<hyper::Request<Incoming>> for ConnectionService<S> {
    type Response = axum::http::Response<S::Body>;
    type Error = std::convert::Infallible;
    type Future =
        futures_util::future::Either<S::Future, tower::util::Oneshot<S, axum::extract::Request>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(self.addr));
        // Borrowed only for `poll_ready` and `call`, which return before the next request
        // (HTTP/2's too: its connection calls the service from one task).
        let mut service = self.service.borrow_mut();
        // The binary's stack is always ready (a router, and layers that ask only their inner
        // service); one that is not gets a copy that waits, as `oneshot` would.
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match service.poll_ready(&mut context) {
            std::task::Poll::Ready(Ok(())) => {
                futures_util::future::Either::Left(service.call(request))
            }
            std::task::Poll::Ready(Err(never)) => match never {},
            std::task::Poll::Pending => {
                futures_util::future::Either::Right(service.clone().oneshot(request))
            }
        }
    }
}

fn http1(header_read_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where each of `jobs` jobs ran: the name of its thread.
    async fn threads_of(lanes: &mut Lanes, jobs: usize) -> Vec<String> {
        let mut names = Vec::new();
        for _ in 0..jobs {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            lanes.run(Box::pin(async move {
                let name = std::thread::current().name().map(str::to_owned);
                let _ = sender.send(name.unwrap_or_default());
            }));
            names.push(receiver.await.expect("the job ran"));
        }
        names
    }

    #[tokio::test]
    async fn connections_are_dealt_to_the_lanes_in_turn() {
        let mut lanes = Lanes::start(3).expect("lanes start");
        let names = threads_of(&mut lanes, 6).await;
        let expected: Vec<String> = [0, 1, 2, 0, 1, 2]
            .iter()
            .map(|lane| format!("logbook-http-{lane}"))
            .collect();
        assert_eq!(names, expected);
    }

    #[tokio::test]
    async fn zero_threads_means_two_lanes_per_core() {
        let lanes = Lanes::start(0).expect("lanes start");
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(lanes.senders.len(), 2 * cores);
    }

    #[tokio::test]
    async fn a_job_for_a_lane_that_is_gone_runs_here() {
        let mut lanes = Lanes::start(1).expect("lanes start");
        // End the lane's loop as if its thread had died: its receiver is dropped.
        let (sender, _) = mpsc::unbounded_channel();
        lanes.senders[0] = sender;
        let here = std::thread::current().name().map(str::to_owned);
        let names = threads_of(&mut lanes, 1).await;
        assert_eq!(names, vec![here.unwrap_or_default()]);
    }
}
