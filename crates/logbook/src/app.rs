//! Start-up: check every setting, bind, start the services, serve, shut down gracefully.
//!
//! [`App::build`] does everything that can fail because of configuration before the first
//! request: it binds the listener (so tests pass port 0 and read [`App::local_addr`]), checks
//! the data directory and every service's settings, and reports all problems together. The
//! event log then opens in the background: `/health` answers 503 until recovery has finished,
//! and 200 from then on.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use eventstore::EventStoreService;
use teams::TeamsService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use utoipa::OpenApi;
use web::{ConfigProblem, Problem, ServiceContext};

use crate::cli::{Environment, ServeConfig};
use crate::listener::LimitedListener;
use crate::server::{Lanes, ServeOptions, Tls};

/// Why the app did not start.
#[derive(Debug)]
pub enum StartupError {
    /// Settings are wrong: one line per problem, for the operator.
    Config(Vec<ConfigProblem>),
    /// A service failed to start although its settings looked right.
    Other(anyhow::Error),
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartupError::Config(problems) => {
                writeln!(f, "logbook: cannot start; fix these settings:")?;
                for problem in problems {
                    writeln!(f, "  {problem}")?;
                }
                Ok(())
            }
            StartupError::Other(error) => write!(f, "logbook: cannot start: {error:#}"),
        }
    }
}

/// A started application, bound and ready to [`run`](App::run).
pub struct App {
    listener: TcpListener,
    /// The gRPC face's listener, when the event store is served and `--grpc-addr` is not `off`.
    grpc_listener: Option<TcpListener>,
    tls: Option<Arc<Tls>>,
    hangup: Hangup,
    local_addr: SocketAddr,
    config: ServeConfig,
    events: Option<EventStoreService>,
    teams: Option<TeamsService>,
    started: Instant,
}

/// Most HTTP serving threads `LOGBOOK_HTTP_THREADS` may ask for: each has a stack and a
/// runtime, and more than a few per core only adds context switches (docs/PERFORMANCE.md).
const MAX_HTTP_THREADS: usize = 256;

impl App {
    /// Checks every setting (all problems together), binds the listener, starts the services.
    pub async fn build(config: ServeConfig) -> Result<App, StartupError> {
        let mut problems = Vec::new();
        let common = &config.common;
        let data_dir = common.data_dir.clone();
        if let Err(error) = web::config::ensure_writable_dir(&data_dir) {
            problems.push(ConfigProblem::new("LOGBOOK_DATA_DIR (--data-dir)", error));
        }
        if common.max_connections == 0 {
            problems.push(ConfigProblem::new(
                "LOGBOOK_MAX_CONNECTIONS (--max-connections)",
                "must be at least 1",
            ));
        }
        if common.http_threads > MAX_HTTP_THREADS {
            problems.push(ConfigProblem::new(
                "LOGBOOK_HTTP_THREADS (--http-threads)",
                format!("must be at most {MAX_HTTP_THREADS} (0: two per CPU core, the default)"),
            ));
        }
        if common.request_timeout_seconds == 0 {
            problems.push(ConfigProblem::new(
                "LOGBOOK_REQUEST_TIMEOUT_SECONDS (--request-timeout-seconds)",
                "must be at least 1",
            ));
        }
        let listener = match TcpListener::bind(&common.addr).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                problems.push(ConfigProblem::new(
                    "LOGBOOK_ADDR (--addr)",
                    format!(
                        "cannot listen on {}: {error}; choose a free port or an address of this machine",
                        common.addr
                    ),
                ));
                None
            }
        };
        let local_addr = listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        if common.header_read_timeout_seconds == 0 {
            problems.push(ConfigProblem::new(
                "LOGBOOK_HEADER_READ_TIMEOUT_SECONDS (--header-read-timeout-seconds)",
                "must be at least 1",
            ));
        }
        let tls = check_tls(common, local_addr, &mut problems);
        let grpc_listener = if config.events.is_some() && common.grpc_addr != "off" {
            match TcpListener::bind(&common.grpc_addr).await {
                Ok(listener) => Some(listener),
                Err(error) => {
                    problems.push(ConfigProblem::new(
                        "LOGBOOK_GRPC_ADDR (--grpc-addr)",
                        format!(
                            "cannot listen on {}: {error}; choose a free port, or `off`",
                            common.grpc_addr
                        ),
                    ));
                    None
                }
            }
        } else {
            None
        };
        let ctx = ServiceContext {
            production: common.environment == Environment::Production,
            data_dir: data_dir.clone(),
            local_addr,
        };
        let events_settings = match &config.events {
            Some(args) => match args.check(&ctx) {
                Ok(settings) => match settings.check_database().await {
                    Ok(()) => Some(settings),
                    Err(problem) => {
                        problems.push(problem);
                        None
                    }
                },
                Err(found) => {
                    problems.extend(found);
                    None
                }
            },
            None => None,
        };
        let teams_settings = match &config.teams {
            Some(args) => match args.check(&ctx).await {
                Ok(settings) => Some(settings),
                Err(found) => {
                    problems.extend(found);
                    None
                }
            },
            None => None,
        };
        let Some(listener) = listener.filter(|_| problems.is_empty()) else {
            return Err(StartupError::Config(problems));
        };
        let teams = match teams_settings {
            Some(settings) => Some(
                TeamsService::start(settings)
                    .await
                    .map_err(|e| StartupError::Other(anyhow::anyhow!("teams service: {e}")))?,
            ),
            None => None,
        };
        let events = events_settings.map(EventStoreService::new);
        // Registered before the caller prints "listening": from then on SIGHUP reloads
        // instead of killing the process.
        let hangup = Hangup::register().map_err(|e| StartupError::Other(e.into()))?;
        Ok(App {
            listener,
            grpc_listener,
            tls,
            hangup,
            local_addr,
            config,
            events,
            teams,
            started: Instant::now(),
        })
    }

    /// `https` with --tls-cert, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound gRPC address, when the gRPC face is served.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The teams service's development banner, if any.
    pub fn dev_banner(&self) -> Option<String> {
        self.teams.as_ref().and_then(TeamsService::dev_banner)
    }

    /// Serves until `shutdown` completes (or the event log fails to open), then drains
    /// in-flight requests (at most `--shutdown-timeout-seconds`), closes the log (checkpoint)
    /// and stops the teams service.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            listener,
            grpc_listener,
            tls,
            hangup,
            local_addr,
            config,
            events,
            teams,
            started,
        } = self;
        let common = config.common;
        let (stop_sender, mut stop) = watch::channel(false);
        let stop_sender = Arc::new(stop_sender);
        // Open the event log in the background; /health says 503 until it is open.
        let open_failed = Arc::new(std::sync::Mutex::new(None::<String>));
        if let Some(events) = &events {
            let events = events.clone();
            let stop_sender = Arc::clone(&stop_sender);
            let open_failed = Arc::clone(&open_failed);
            tokio::spawn(async move {
                if let Err(error) = events.open().await {
                    tracing::error!(error = %error, "cannot open the event log; shutting down");
                    *open_failed.lock().expect("open_failed lock") = Some(error.to_string());
                    stop_sender.send_replace(true);
                } else {
                    tracing::info!("event log ready");
                }
            });
        }
        if let (Some(events), Some(teams)) = (&events, &teams) {
            crate::audit_relay::start(teams, events);
        }
        let state = CommonState {
            teams_metrics: teams.as_ref().map(|teams| teams.metrics_source()),
            events: events.clone(),
            started,
            openapi: Arc::new(openapi_document(events.is_some(), teams.is_some())),
        };
        let timeout = Duration::from_secs(common.request_timeout_seconds);
        let mut router = Router::new()
            .route("/health", get(health))
            .route("/metrics", get(metrics))
            .route("/openapi.json", get(openapi_json))
            .with_state(state)
            .merge(console::router(console_info(
                config.events.as_ref(),
                &events,
                &teams,
            )));
        if let Some(events) = &events {
            router = router.merge(events.router());
        }
        router = web::middleware::timeout(router, timeout);
        if let Some(teams) = &teams {
            // The teams routes keep their own limit (TEAMS_REQUEST_TIMEOUT_SECONDS).
            router = router.merge(web::middleware::timeout(
                teams.router(),
                teams.request_timeout(),
            ));
        }
        // The hot routes (reads by id, appends) beside the router, both inside the one stack.
        // The request comes back by value (see `EventStoreService::hot_route`).
        #[allow(clippy::result_large_err)]
        let hot = events.clone().map(|events| {
            let hot: web::middleware::HotRoute = Arc::new(move |request| events.hot_route(request));
            hot
        });
        let service = web::middleware::around(web::middleware::Dispatch::new(router, hot, timeout));
        let services = match (&events, &teams) {
            (Some(_), Some(_)) => "events, teams",
            (Some(_), None) => "events",
            _ => "teams",
        };
        tracing::info!(addr = %local_addr, services, tls = tls.is_some(), "listening");
        let grpc = match (&events, grpc_listener) {
            (Some(events), Some(listener)) => Some(crate::grpc::start(
                events,
                listener,
                common.max_connections,
                tls.as_deref(),
                stop.clone(),
            )?),
            _ => None,
        };
        tokio::spawn(hangup.reload_on_signal(events.clone(), tls.clone()));
        let listener = LimitedListener::new(listener, common.max_connections);
        let options = ServeOptions {
            header_read_timeout: Duration::from_secs(common.header_read_timeout_seconds),
            tls,
        };
        let lanes = Lanes::start(common.http_threads)
            .map_err(|e| anyhow::anyhow!("cannot start the HTTP serving threads: {e}"))?;
        let serve = crate::server::serve(listener, service, options, lanes.clone(), stop.clone());
        tokio::pin!(serve);
        let events_for_signal = events.clone();
        let shutdown_timeout = Duration::from_secs(common.shutdown_timeout_seconds);
        tokio::select! {
            () = &mut serve => {},
            () = async {
                tokio::select! {
                    () = shutdown => {}
                    _ = stop.wait_for(|stop| *stop) => {}
                }
                tracing::info!("shutting down: no new connections, draining in-flight requests");
                stop_sender.send_replace(true);
                if let Some(events) = &events_for_signal {
                    events.begin_shutdown();
                }
                tokio::time::sleep(shutdown_timeout).await;
            } => {
                tracing::warn!(timeout_seconds = shutdown_timeout.as_secs(), "in-flight requests did not finish in time; closing anyway");
            }
        }
        if let Some(grpc) = grpc
            && tokio::time::timeout(shutdown_timeout, grpc).await.is_err()
        {
            tracing::warn!("gRPC calls did not finish in time; closing anyway");
        }
        if let Some(events) = &events {
            events.close().await;
            tracing::info!("event log closed");
        }
        if let Some(teams) = teams {
            teams.shutdown().await;
        }
        // Last: connections to a database opened on a lane are driven by its runtime.
        drop(lanes);
        if let Some(error) = open_failed.lock().expect("open_failed lock").take() {
            anyhow::bail!("the event log could not be opened: {error}");
        }
        Ok(())
    }
}

/// What the console shows about this process: which services run, the durability mode.
fn console_info(
    events_args: Option<&eventstore::EventsArgs>,
    events: &Option<EventStoreService>,
    teams: &Option<TeamsService>,
) -> console::ConsoleInfo {
    let durability = events_args.map(|args| {
        if args.events_database_url.is_some() {
            "postgresql".to_owned()
        } else {
            args.durability.clone()
        }
    });
    console::ConsoleInfo {
        events: events.is_some(),
        teams: teams.is_some(),
        durability: durability.filter(|_| events.is_some()),
    }
}

/// Checks --tls-cert/--tls-key (both or neither; readable; matching) and that production does
/// not serve plaintext beyond loopback unless a TLS proxy is said to be in front.
fn check_tls(
    common: &crate::cli::CommonArgs,
    local_addr: SocketAddr,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Arc<Tls>> {
    const SETTING: &str = "LOGBOOK_TLS_CERT / LOGBOOK_TLS_KEY (--tls-cert / --tls-key)";
    let tls = match (&common.tls_cert, &common.tls_key) {
        (Some(cert), Some(key)) => match Tls::load(cert, key) {
            Ok(tls) => Some(Arc::new(tls)),
            Err(message) => {
                problems.push(ConfigProblem::new(SETTING, message));
                None
            }
        },
        (None, None) => None,
        _ => {
            problems.push(ConfigProblem::new(
                SETTING,
                "give both the certificate and its key, or neither",
            ));
            None
        }
    };
    let production = common.environment == Environment::Production;
    let plaintext = common.tls_cert.is_none() && common.tls_key.is_none();
    if production && plaintext && !local_addr.ip().is_loopback() {
        if common.behind_proxy {
            tracing::warn!(
                addr = %local_addr,
                "serving plain HTTP beyond loopback: LOGBOOK_BEHIND_PROXY says a TLS proxy is in front; make sure nothing reaches this port directly"
            );
        } else {
            problems.push(ConfigProblem::new(
                SETTING,
                format!(
                    "production listening on {local_addr} (beyond loopback) needs TLS; give a certificate and key, or set LOGBOOK_BEHIND_PROXY=1 (--behind-proxy) when a TLS proxy is in front"
                ),
            ));
        }
    }
    tls
}

/// SIGHUP: re-read the token file and the TLS certificate, without a restart.
struct Hangup {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Hangup {
    fn register() -> std::io::Result<Hangup> {
        Ok(Hangup {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?,
        })
    }

    /// Reloads on every SIGHUP; a reload that fails logs why and keeps what was in force.
    async fn reload_on_signal(self, events: Option<EventStoreService>, tls: Option<Arc<Tls>>) {
        #[cfg(unix)]
        {
            let mut signal = self.signal;
            while signal.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the token file and the TLS certificate");
                if let Some(events) = &events {
                    match events.reload_tokens() {
                        Ok(tokens) => tracing::info!(tokens, "event API tokens reloaded"),
                        Err(error) => {
                            tracing::error!(error = %error, "token file not reloaded; the previous tokens stay in force")
                        }
                    }
                }
                if let Some(tls) = &tls {
                    match tls.reload() {
                        Ok(()) => tracing::info!("TLS certificate reloaded"),
                        Err(error) => {
                            tracing::error!(error = %error, "TLS certificate not reloaded; the previous one stays in use")
                        }
                    }
                }
            }
        }
        #[cfg(not(unix))]
        let _ = (self, events, tls);
    }
}

#[derive(Clone)]
struct CommonState {
    events: Option<EventStoreService>,
    teams_metrics: Option<teams::MetricsSource>,
    started: Instant,
    openapi: Arc<utoipa::openapi::OpenApi>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Readiness: 200 once every service is ready (the event log recovered).
#[utoipa::path(get, path = "/health", tag = "operations", responses(
    (status = 200, description = "Ready", body = Health),
    (status = 503, description = "Still starting (the event log is being recovered)", body = Problem, content_type = "application/problem+json"),
))]
async fn health(State(state): State<CommonState>) -> Response {
    match &state.events {
        Some(events) if !events.is_ready() => {
            Problem::unavailable("the event log is still being recovered")
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
                .into_response()
        }
        _ => Json(Health { status: "ok" }).into_response(),
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text", content_type = "text/plain; version=0.0.4", body = String),
))]
async fn metrics(State(state): State<CommonState>) -> Response {
    let mut out = String::with_capacity(8 * 1024);
    out.push_str("# HELP logbook_uptime_seconds Seconds since the process started serving.\n");
    out.push_str("# TYPE logbook_uptime_seconds gauge\n");
    out.push_str(&format!(
        "logbook_uptime_seconds {}\n",
        state.started.elapsed().as_secs_f64()
    ));
    if let Some(events) = &state.events {
        events.render_metrics(&mut out).await;
    }
    if let Some(teams) = &state.teams_metrics {
        teams.render(&mut out);
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses(
    (status = 200, description = "The OpenAPI 3.1 document of the APIs this process serves", content_type = "application/json", body = Object),
))]
async fn openapi_json(State(state): State<CommonState>) -> Response {
    Json(state.openapi.as_ref().clone()).into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Logbook", description = "An event store and a teams service in one binary."),
    paths(health, metrics, openapi_json),
    components(schemas(Health, Problem)),
    tags((name = "operations", description = "Health, metrics, this document"))
)]
struct OperationsDoc;

/// The merged document of what this process serves.
pub fn openapi_document(events: bool, teams: bool) -> utoipa::openapi::OpenApi {
    let mut document = OperationsDoc::openapi();
    if events {
        document.merge(eventstore::openapi());
    }
    if teams {
        document.merge(teams::openapi());
    }
    document
}
