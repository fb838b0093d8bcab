//! The command line: one `clap` tree, every serve setting with a flag and an env var.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use eventstore::EventsArgs;
use teams::TeamsArgs;

/// Default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Default time a request may take before it is answered 503.
pub const DEFAULT_REQUEST_TIMEOUT_SECONDS: u64 = 30;
/// Default gRPC (KurrentDB-compatible) listen address of the event store.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:2113";
/// Default cap on open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default time a client has to send a complete request head (and finish a TLS handshake).
pub const DEFAULT_HEADER_READ_TIMEOUT_SECONDS: u64 = 10;
/// Default time allowed for in-flight requests to finish after SIGTERM/Ctrl-C.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECONDS: u64 = 30;

/// Logbook: an event store and a teams service in one binary.
#[derive(Debug, Parser)]
#[command(name = "logbook", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `logbook`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve both APIs on one address (`serve events` / `serve teams`: one service alone).
    Serve(Box<ServeCommand>),
    /// Tools for an event log directory (verify and dump are read-only; stop the server before repair).
    #[command(subcommand)]
    Events(EventsTool),
    /// Load generator: drive a running server over HTTP with keep-alive connections.
    Bench(crate::bench::BenchArgs),
    /// Event API tokens (EVENTS_TOKENS_FILE).
    #[command(subcommand)]
    Tokens(TokensCommand),
}

/// `logbook tokens ...`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a new token: prints it once, and the line to add to EVENTS_TOKENS_FILE.
    New {
        /// Who holds the token (shown in logs; no spaces).
        #[arg(long)]
        name: String,
        /// read (reads, subscriptions), append (and read) or admin (and delete, tombstone,
        /// metadata, scavenge).
        #[arg(long)]
        scope: String,
        /// Limit the token to streams whose name starts with this.
        #[arg(long)]
        prefix: Option<String>,
    },
}

/// `logbook serve [events|teams] [flags]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServeCommand {
    /// `events` or `teams` to serve one service alone; both when absent.
    #[command(subcommand)]
    pub only: Option<ServeOnly>,
    /// Settings of the process (address, data directory, limits, TLS).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Settings of the event store.
    #[command(flatten)]
    pub events: EventsArgs,
    /// Settings of the teams service.
    #[command(flatten)]
    pub teams: TeamsArgs,
}

/// One service alone.
#[derive(Debug, Subcommand)]
pub enum ServeOnly {
    /// Serve only the event store API.
    Events {
        /// Settings of the process.
        #[command(flatten)]
        common: CommonArgs,
        /// Settings of the event store.
        #[command(flatten)]
        events: EventsArgs,
    },
    /// Serve only the teams API.
    Teams {
        /// Settings of the process.
        #[command(flatten)]
        common: CommonArgs,
        /// Settings of the teams service.
        #[command(flatten)]
        teams: TeamsArgs,
    },
}

impl ServeCommand {
    /// The one configuration the start-up path takes, whichever form was used.
    pub fn into_config(self) -> ServeConfig {
        match self.only {
            None => ServeConfig {
                common: self.common,
                events: Some(self.events),
                teams: Some(self.teams),
            },
            Some(ServeOnly::Events { common, events }) => ServeConfig {
                common,
                events: Some(events),
                teams: None,
            },
            Some(ServeOnly::Teams { common, teams }) => ServeConfig {
                common,
                events: None,
                teams: Some(teams),
            },
        }
    }
}

/// What `App::build` starts: the common settings and the services to run.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Settings of the process.
    pub common: CommonArgs,
    /// `Some`: serve the event store.
    pub events: Option<EventsArgs>,
    /// `Some`: serve the teams service.
    pub teams: Option<TeamsArgs>,
}

/// Settings shared by every service.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, env = "LOGBOOK_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// Data directory; the event log lives in <data-dir>/events.
    #[arg(long, env = "LOGBOOK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// development (safe local defaults) or production (every required setting must be given).
    #[arg(long = "env", env = "LOGBOOK_ENV", value_enum, default_value_t = Environment::Development)]
    pub environment: Environment,
    /// Log format on stderr.
    #[arg(long, env = "LOGBOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Longest a request may take before it is answered 503 (SSE streams are not cut).
    #[arg(long, env = "LOGBOOK_REQUEST_TIMEOUT_SECONDS", default_value_t = DEFAULT_REQUEST_TIMEOUT_SECONDS)]
    pub request_timeout_seconds: u64,
    /// Most open connections; more wait in the listen backlog.
    #[arg(long, env = "LOGBOOK_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Longest graceful shutdown waits for in-flight requests after SIGTERM/Ctrl-C.
    #[arg(long, env = "LOGBOOK_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_SECONDS)]
    pub shutdown_timeout_seconds: u64,
    /// Longest a client may take to send a request head (and finish a TLS handshake); slower
    /// connections, and keep-alive connections idle this long, are closed.
    #[arg(long, env = "LOGBOOK_HEADER_READ_TIMEOUT_SECONDS", default_value_t = DEFAULT_HEADER_READ_TIMEOUT_SECONDS)]
    pub header_read_timeout_seconds: u64,
    /// Threads that serve HTTP connections, each with a runtime of its own; 0: two per CPU
    /// core.
    #[arg(long, env = "LOGBOOK_HTTP_THREADS", default_value_t = 0)]
    pub http_threads: usize,
    /// PEM certificate chain: serve HTTPS (TLS 1.2+, ALPN h2 and http/1.1); re-read on SIGHUP.
    #[arg(long, env = "LOGBOOK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert; re-read on SIGHUP.
    #[arg(long, env = "LOGBOOK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A TLS-terminating proxy is in front: production may listen beyond loopback without
    /// --tls-cert.
    #[arg(long, env = "LOGBOOK_BEHIND_PROXY", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub behind_proxy: bool,
    /// Address of the event store's KurrentDB-compatible gRPC face (HTTP/2 cleartext; port 0:
    /// any free port), or `off`. Only where the event store is served.
    #[arg(long, env = "LOGBOOK_GRPC_ADDR", default_value = DEFAULT_GRPC_ADDR)]
    pub grpc_addr: String,
}

impl CommonArgs {
    /// Defaults with the given address and data directory (tests).
    pub fn new(addr: &str, data_dir: impl Into<PathBuf>) -> CommonArgs {
        CommonArgs {
            addr: addr.to_owned(),
            data_dir: data_dir.into(),
            environment: Environment::Development,
            log_format: LogFormat::Text,
            request_timeout_seconds: DEFAULT_REQUEST_TIMEOUT_SECONDS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_timeout_seconds: DEFAULT_SHUTDOWN_TIMEOUT_SECONDS,
            header_read_timeout_seconds: DEFAULT_HEADER_READ_TIMEOUT_SECONDS,
            http_threads: 0,
            tls_cert: None,
            tls_key: None,
            behind_proxy: false,
            grpc_addr: "off".to_owned(),
        }
    }
}

/// `--env`: how strict start-up is.
// The variants' meaning is in the flag's help: clap would turn variant docs into a long,
// multi-line --help for every flag.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

/// `--log-format`: how log lines are written to stderr.
// The variants' meaning is in the flag's help: clap would turn variant docs into a long,
// multi-line --help for every flag.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `logbook events ...`.
#[derive(Debug, Subcommand)]
pub enum EventsTool {
    /// Scan a store read-only and report its state; exits 1 when the log is damaged.
    Verify {
        /// The event store directory (`<data-dir>/events`).
        dir: PathBuf,
    },
    /// Cut the log back to its last valid batch, moving everything after it aside.
    Repair {
        /// The event store directory (`<data-dir>/events`).
        dir: PathBuf,
    },
    /// Print every event as one JSON line (the shape of GET /events/{id}).
    Dump {
        /// The event store directory (`<data-dir>/events`).
        dir: PathBuf,
    },
    /// Reclaim the bytes of dead events (deleted, tombstoned, truncated, expired) with the
    /// server stopped: seals the active segment, rewrites every segment holding a dead event.
    /// A running server scavenges with `POST /admin/scavenge` instead.
    Scavenge {
        /// The event store directory (`<data-dir>/events`).
        dir: PathBuf,
    },
    /// Copy the event store of a data directory, beside the server using it (no lock taken):
    /// every event acknowledged before the backup began, whole batches only. Serve
    /// `--data-dir <to>` to restore it.
    Backup {
        /// The data directory the server uses (its event store is `<data-dir>/events`).
        #[arg(long)]
        data_dir: PathBuf,
        /// Where to write the backup (`<to>/events` must not exist yet).
        #[arg(long)]
        to: PathBuf,
    },
}
