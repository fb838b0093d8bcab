//! # logbook: the one binary
//!
//! `logbook serve` (both services on one address), `logbook serve events|teams` (one alone),
//! `logbook events verify|repair|dump` (offline tools), `logbook bench` (load generator).
//!
//! # Layout
//! - [`cli`]: the `clap` tree; every setting has a flag and an env var.
//! - [`app`]: [`App::build`] checks every setting at once, binds the listener and starts the
//!   services; [`App::run`] serves and shuts down gracefully. Tests build it with port 0.
//! - [`audit_relay`]: the teams audit trail appended to the event store of this process.
//! - `listener`: the connection cap and `TCP_NODELAY`.
//! - [`telemetry`]: `tracing` to stderr as text or JSON.
//! - [`tools`]: the offline event log tools.
//! - [`bench`]: the HTTP load generator.

#![forbid(unsafe_code)]

pub mod app;
pub mod audit_relay;
pub mod bench;
pub mod cli;
mod listener;
pub mod telemetry;
pub mod tools;

pub use app::{App, StartupError};
pub use cli::{CommonArgs, ServeConfig};

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
