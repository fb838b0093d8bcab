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

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tower::ServiceExt;

use crate::listener::LimitedListener;

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

/// Accepts connections until `stop` turns `true`, then stops accepting and waits for every
/// open connection to finish its in-flight requests (the caller bounds that wait).
pub async fn serve(
    mut listener: LimitedListener,
    router: Router,
    options: ServeOptions,
    mut stop: watch::Receiver<bool>,
) {
    let router = match options.tls {
        Some(_) => router.layer(
            tower_http::set_header::SetResponseHeaderLayer::if_not_present(
                axum::http::header::STRICT_TRANSPORT_SECURITY,
                axum::http::HeaderValue::from_static(HSTS_VALUE),
            ),
        ),
        None => router,
    };
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let router = router.clone();
        let tls = options.tls.clone();
        let watcher = graceful.watcher();
        let timeout = options.header_read_timeout;
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(addr));
                    router.clone().oneshot(request)
                });
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
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

fn http1(header_read_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
}
