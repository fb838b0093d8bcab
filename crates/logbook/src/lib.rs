//! # logbook: the one binary
//!
//! `logbook serve` (both services on one address), `logbook serve events|teams` (one alone),
//! `logbook events verify|repair|dump` (offline tools), `logbook bench` (load generator).
//!
//! # Layout
//! - [`cli`]: the `clap` tree; every setting has a flag and an env var.
//! - [`app`]: [`App::build`] checks every setting at once, binds the listener and starts the
//!   services; [`App::run`] serves and shuts down gracefully. Tests build it with port 0.
//! - [`grpc`]: the event store's KurrentDB-compatible gRPC face beside the HTTP one.
//! - [`audit_relay`]: the teams audit trail appended to the event store of this process.
//! - `listener`: the connection cap and `TCP_NODELAY`.
//! - [`server`]: serving connections with hyper: TLS (rustls, reloadable), HTTP/1.1 and h2,
//!   the header read timeout, graceful shutdown.
//! - [`tokens`]: `logbook tokens new`.
//! - [`telemetry`]: `tracing` to stderr as text or JSON.
//! - [`tools`]: the offline event log tools.
//! - [`bench`]: the HTTP load generator.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod app;
pub mod audit_relay;
pub mod bench;
pub mod cli;
pub mod grpc;
mod listener;
pub mod server;
pub mod telemetry;
pub mod tokens;
pub mod tools;

pub use app::{App, StartupError};
pub use cli::{CommonArgs, ServeConfig};

/// Resolves on SIGTERM or Ctrl-C (SIGINT). The handlers are installed when this is called (in
/// a runtime), not when it is first polled, so a SIGTERM right after "listening" is printed
/// already shuts down gracefully instead of killing the process.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let ctrl_c = tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    async move {
        #[cfg(unix)]
        let terminate = async move {
            match terminate {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            () = terminate => {}
        }
    }
}
