//! `logbook bench`: a load generator in the spirit of `redis-benchmark` and `pgbench`.
//!
//! N keep-alive connections each send one request at a time (no pipelining) for a fixed
//! duration: appends of ~`--event-size-bytes` events, reads by id of events it appended first,
//! or a mix. It speaks HTTP/1.1 directly over a TCP socket (the server always answers with a
//! `Content-Length`), so the client costs as little CPU as possible on a machine it shares
//! with the server. It prints a live progress line, then throughput and latency percentiles.
//!
//! For soak tests (`scripts/soak`) it can outlive server restarts (`--reconnect-seconds`: a
//! connection that fails retries connecting for that long) and write every acknowledged append
//! (`--acknowledged-log`: one JSON line with the id, position, stream and the exact `data` sent),
//! so that a checker can prove each one survived.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Events appended before a read workload starts, to have ids to read.
const PREFILL_EVENTS: usize = 10_000;
/// Requests a connection completes before adding them to the shared progress count.
const REPORT_EVERY: u64 = 64;
/// Largest response head accepted.
const RESPONSE_HEAD_MAX_BYTES: usize = 16 * 1024;

/// Load generator settings.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Server address (host:port).
    #[arg(long, default_value = crate::cli::DEFAULT_ADDR)]
    pub addr: String,
    /// Concurrent keep-alive connections.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub connections: usize,
    /// How long to run, after the warm-up.
    #[arg(long, default_value_t = 10)]
    pub duration_seconds: u64,
    /// Warm-up before measuring (requests are sent but not counted).
    #[arg(long, default_value_t = 1)]
    pub warmup_seconds: u64,
    /// append, read (by id) or mix.
    #[arg(long, value_enum, default_value_t = Workload::Append)]
    pub workload: Workload,
    /// Percentage of reads in the mix workload.
    #[arg(long, default_value_t = 50)]
    pub read_percent: u8,
    /// Approximate size of each appended event's `data`.
    #[arg(long, default_value_t = 300)]
    pub event_size_bytes: usize,
    /// Appends are spread over this many streams.
    #[arg(long, default_value_t = 1000)]
    pub streams: u64,
    /// Bearer token, when the server sets EVENTS_TOKEN.
    #[arg(long, env = "EVENTS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Client threads (the load generator shares the machine with the server).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// How long a connection that failed keeps trying to reconnect (0: the run fails at once).
    /// Lets one run span server restarts.
    #[arg(long, default_value_t = 0)]
    pub reconnect_seconds: u64,
    /// Speak HTTPS (TLS over rustls), trusting the CA certificate(s) in this PEM file; the
    /// server name checked is the host of --addr.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Write every acknowledged append (201, or 200 for an idempotent repeat) to this file as
    /// one JSON line `{"id","position","stream","data"}`, `data` exactly as sent.
    #[arg(long)]
    pub acknowledged_log: Option<PathBuf>,
}

/// `--workload`: what each request of the load does.
// The variants' meaning is in the flag's help: clap would turn variant docs into a long,
// multi-line --help for every flag.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Append,
    Read,
    Mix,
}

/// Runs the load generator and prints its report.
///
/// The connections are spread over `--threads` threads, each driving a current-thread Tokio
/// runtime of its own (as the server's lanes do): a connection's wake-ups stay on its thread,
/// where a work-stealing runtime would wake the other worker to steal them. The prefill and
/// the progress line run on the calling thread's own runtime.
pub fn main(args: BenchArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("logbook bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("logbook bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What one run measured.
#[derive(Debug)]
pub struct Report {
    /// What the requests did.
    pub workload: Workload,
    /// Keep-alive connections used.
    pub connections: usize,
    /// Requests answered with the expected status.
    pub requests: u64,
    /// Requests that failed (any other status, or a transport error).
    pub errors: u64,
    /// Wall time of the measured part of the run.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// 99.9th percentile latency.
    pub p999: Duration,
    /// Slowest request.
    pub max: Duration,
}

impl Report {
    /// Requests per second.
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(
            f,
            "workload: {:?}, {} connections, {:.1} s",
            self.workload,
            self.connections,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "requests: {} ok, {} errors; throughput: {:.0} requests/s",
            self.requests,
            self.errors,
            self.throughput()
        )?;
        write!(
            f,
            "latency: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}

struct Shared {
    args: BenchArgs,
    /// `GET /events/{id}` requests, one per prefilled event, written once before the run.
    reads: Vec<Vec<u8>>,
    /// Acknowledged appends as JSON lines, when `--acknowledged-log` is set.
    acknowledged: std::sync::Mutex<Vec<String>>,
    completed: AtomicU64,
    errors: AtomicU64,
}

async fn run(args: BenchArgs) -> anyhow::Result<Report> {
    let (ids, prefilled) = if args.workload == Workload::Append {
        (Vec::new(), Vec::new())
    } else {
        prefill(&args).await?
    };
    let reads = ids.iter().map(|id| read_request(&args, id)).collect();
    let shared = Arc::new(Shared {
        args: args.clone(),
        reads,
        acknowledged: std::sync::Mutex::new(prefilled),
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let warmup_end = Instant::now() + Duration::from_secs(args.warmup_seconds);
    let end = warmup_end + Duration::from_secs(args.duration_seconds);
    let threads = args.threads.clamp(1, args.connections.max(1));
    let mut workers = Vec::with_capacity(threads);
    for thread in 0..threads {
        let shared = Arc::clone(&shared);
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("bench-{thread}"))
            .spawn(move || {
                let _ = done.send(thread_loop(shared, thread, threads, warmup_end, end));
            })?;
        workers.push(finished);
    }
    let progress = tokio::spawn(progress_line(Arc::clone(&shared), warmup_end, end));
    let mut latencies = Vec::new();
    let mut failed = None;
    for worker in workers {
        match worker.await {
            Ok(Ok(measured)) => latencies.extend(measured),
            Ok(Err(error)) => failed = Some(error),
            Err(_) => failed = Some(anyhow::anyhow!("a load thread panicked")),
        }
    }
    progress.abort();
    eprintln!();
    // Written even when a connection failed: what was acknowledged stays acknowledged.
    if let Some(path) = &args.acknowledged_log {
        let lines = shared
            .acknowledged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        for line in lines.iter() {
            writeln!(file, "{line}")?;
        }
        file.flush()?;
    }
    if let Some(error) = failed {
        return Err(error);
    }
    latencies.sort_unstable();
    let percentile = |p: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len());
        Duration::from_nanos(latencies[rank - 1])
    };
    Ok(Report {
        workload: args.workload,
        connections: args.connections,
        requests: latencies.len() as u64,
        errors: shared.errors.load(Ordering::Relaxed),
        elapsed: Duration::from_secs(args.duration_seconds),
        p50: percentile(0.50),
        p99: percentile(0.99),
        p999: percentile(0.999),
        max: percentile(1.0),
    })
}

async fn progress_line(shared: Arc<Shared>, warmup_end: Instant, end: Instant) {
    let mut last = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let done = shared.completed.load(Ordering::Relaxed);
        let phase = if now < warmup_end {
            "warm-up"
        } else {
            "measuring"
        };
        let remaining = end.saturating_duration_since(now).as_secs();
        eprint!(
            "\r{phase}: {:>8} requests/s, {:>10} requests, {} errors, {remaining:>3} s left   ",
            done - last,
            done,
            shared.errors.load(Ordering::Relaxed)
        );
        let _ = std::io::stderr().flush();
        last = done;
    }
}

/// Appends [`PREFILL_EVENTS`] events over a few connections; returns their ids and, with
/// `--acknowledged-log`, their acknowledgement lines.
async fn prefill(args: &BenchArgs) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    eprintln!("prefill: appending {PREFILL_EVENTS} events to read back");
    let per_connection = PREFILL_EVENTS / 8;
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(&args).await?;
            let mut ids = Vec::with_capacity(per_connection);
            let mut acknowledged = Vec::new();
            for n in 0..per_connection as u64 {
                let append = append_request(&args, worker * 1_000_000 + n);
                let (status, body) = connection.send(&append.request).await?;
                anyhow::ensure!(status == 201, "prefill append answered {status}");
                let body: serde_json::Value = serde_json::from_slice(body)?;
                if args.acknowledged_log.is_some() {
                    acknowledged.push(acknowledgement(&append, &body)?);
                }
                ids.push(body["id"].as_str().unwrap_or_default().to_owned());
            }
            anyhow::Ok((ids, acknowledged))
        }));
    }
    let mut ids = Vec::with_capacity(PREFILL_EVENTS);
    let mut acknowledged = Vec::new();
    for task in tasks {
        let (some_ids, some_acknowledged) = task.await??;
        ids.extend(some_ids);
        acknowledged.extend(some_acknowledged);
    }
    Ok((ids, acknowledged))
}

/// One thread's share of the connections (every `threads`th from `first`), on a
/// current-thread runtime; returns their latencies.
fn thread_loop(
    shared: Arc<Shared>,
    first: usize,
    threads: usize,
    warmup_end: Instant,
    end: Instant,
) -> anyhow::Result<Vec<u64>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let connections: Vec<_> = (first..shared.args.connections)
            .step_by(threads)
            .map(|worker| {
                let shared = Arc::clone(&shared);
                tokio::spawn(connection_loop(shared, worker as u64, warmup_end, end))
            })
            .collect();
        let mut latencies = Vec::new();
        let mut failed = None;
        for connection in connections {
            match connection.await? {
                Ok(measured) => latencies.extend(measured),
                Err(error) => failed = Some(error),
            }
        }
        failed.map_or(Ok(latencies), Err)
    })
}

/// One connection's loop; returns the latencies (nanoseconds) measured after the warm-up.
async fn connection_loop(
    shared: Arc<Shared>,
    worker: u64,
    warmup_end: Instant,
    end: Instant,
) -> anyhow::Result<Vec<u64>> {
    let args = &shared.args;
    let mut connection = Connection::open_retrying(args).await?;
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut random =
        Xorshift(0x9E37_79B9_7F4A_7C15 ^ (worker + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let mut sequence = 0u64;
    let mut unreported = 0u64;
    loop {
        let started = Instant::now();
        if started >= end {
            shared.completed.fetch_add(unreported, Ordering::Relaxed);
            return Ok(latencies);
        }
        let read = match args.workload {
            Workload::Append => false,
            Workload::Read => true,
            Workload::Mix => random.next() % 100 < u64::from(args.read_percent),
        };
        let append = if read {
            None
        } else {
            sequence += 1;
            Some(append_request(args, worker << 40 | sequence))
        };
        let request = match &append {
            Some(append) => &append.request,
            None => &shared.reads[(random.next() % shared.reads.len() as u64) as usize],
        };
        let (status, body) = match connection.send(request).await {
            Ok(answer) => answer,
            Err(error) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %error, "request failed; reconnecting");
                connection = Connection::open_retrying(args).await?;
                continue;
            }
        };
        let elapsed = started.elapsed();
        // Counted in batches: one shared counter bumped by every request of two threads would
        // bounce its cache line between them (the progress line does not need every one).
        unreported += 1;
        if unreported == REPORT_EVERY {
            shared.completed.fetch_add(unreported, Ordering::Relaxed);
            unreported = 0;
        }
        let ok = if read { status == 200 } else { status == 201 };
        if let Some(append) = &append
            && (status == 201 || status == 200)
            && args.acknowledged_log.is_some()
        {
            let body: serde_json::Value = serde_json::from_slice(body)?;
            let line = acknowledgement(append, &body)?;
            shared
                .acknowledged
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(line);
        }
        if !ok {
            shared.errors.fetch_add(1, Ordering::Relaxed);
        } else if started >= warmup_end {
            latencies.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        }
    }
}

fn auth_header(args: &BenchArgs) -> String {
    args.token
        .as_ref()
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default()
}

/// One append: the HTTP request, and what it stores.
struct Append {
    request: Vec<u8>,
    stream: String,
    /// The event's `data`, exactly as sent.
    data: String,
}

fn append_request(args: &BenchArgs, n: u64) -> Append {
    let prefix = format!(r#"{{"n":{n},"pad":""#);
    let pad = args.event_size_bytes.saturating_sub(prefix.len() + 2);
    let stream = format!("bench-{}", n % args.streams.max(1));
    let data = format!(r#"{prefix}{}"}}"#, "x".repeat(pad));
    let body = format!(r#"{{"stream":"{stream}","type":"BenchEvent","data":{data}}}"#);
    let request = format!(
        "POST /events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\n\r\n{body}",
        args.addr,
        auth_header(args),
        body.len()
    )
    .into_bytes();
    Append {
        request,
        stream,
        data,
    }
}

/// The `--acknowledged-log` line of an append the server acknowledged with `body`.
fn acknowledgement(append: &Append, body: &serde_json::Value) -> anyhow::Result<String> {
    let id = body["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("an acknowledgement without an id: {body}"))?;
    let position = body["position"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("an acknowledgement without a position: {body}"))?;
    Ok(serde_json::json!({
        "id": id,
        "position": position,
        "stream": append.stream,
        "data": append.data,
    })
    .to_string())
}

fn read_request(args: &BenchArgs, id: &str) -> Vec<u8> {
    format!(
        "GET /events/{id} HTTP/1.1\r\nHost: {}\r\n{}\r\n",
        args.addr,
        auth_header(args)
    )
    .into_bytes()
}

/// A socket, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The TLS client set-up of `--tls-ca`, built once for every connection.
static TLS: std::sync::OnceLock<Option<tokio_rustls::TlsConnector>> = std::sync::OnceLock::new();

fn tls_connector(args: &BenchArgs) -> anyhow::Result<Option<tokio_rustls::TlsConnector>> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    if let Some(connector) = TLS.get() {
        return Ok(connector.clone());
    }
    let connector = match &args.tls_ca {
        None => None,
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)? {
                roots.add(cert?)?;
            }
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
                config,
            )))
        }
    };
    Ok(TLS.get_or_init(|| connector).clone())
}

/// A keep-alive HTTP/1.1 connection sending one request at a time.
struct Connection {
    stream: Box<dyn Io>,
    buffer: Vec<u8>,
}

impl Connection {
    /// Opens a connection, retrying for `--reconnect-seconds` (the server may be restarting).
    async fn open_retrying(args: &BenchArgs) -> anyhow::Result<Connection> {
        let deadline = Instant::now() + Duration::from_secs(args.reconnect_seconds);
        loop {
            match Connection::open(args).await {
                Ok(connection) => return Ok(connection),
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn open(args: &BenchArgs) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(&args.addr).await?;
        stream.set_nodelay(true)?;
        let stream: Box<dyn Io> = match tls_connector(args)? {
            None => Box::new(stream),
            Some(connector) => {
                let host = args
                    .addr
                    .rsplit_once(':')
                    .map_or(args.addr.as_str(), |(host, _)| host)
                    .trim_matches(['[', ']']);
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())?;
                Box::new(connector.connect(name, stream).await?)
            }
        };
        Ok(Connection {
            stream,
            buffer: Vec::with_capacity(8192),
        })
    }

    /// Sends `request` and returns the status and body of the response (borrowed from the
    /// connection's buffer, which the next request reuses: no allocation per request).
    async fn send(&mut self, request: &[u8]) -> anyhow::Result<(u16, &[u8])> {
        self.stream.write_all(request).await?;
        // TLS buffers what is written; a flush sends it (a no-op on a plain socket).
        self.stream.flush().await?;
        self.buffer.clear();
        let mut searched = 0;
        let head_end = loop {
            if let Some(at) = find(&self.buffer[searched..], b"\r\n\r\n") {
                break searched + at + 4;
            }
            searched = self.buffer.len().saturating_sub(3);
            anyhow::ensure!(
                self.buffer.len() < RESPONSE_HEAD_MAX_BYTES,
                "response head too long"
            );
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end])?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("bad status line"))?;
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .ok_or_else(|| anyhow::anyhow!("response without Content-Length"))?;
        while self.buffer.len() < head_end + length {
            self.fill().await?;
        }
        Ok((status, &self.buffer[head_end..head_end + length]))
    }

    /// Reads what the socket has into the buffer's spare room (at least 8 KiB of it).
    async fn fill(&mut self) -> anyhow::Result<()> {
        self.buffer.reserve(8192);
        let read = self.stream.read_buf(&mut self.buffer).await?;
        anyhow::ensure!(read > 0, "the server closed the connection");
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A tiny PRNG for choosing ids; quality does not matter, cost does.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
