//! Production security through the real `logbook` binary: the start-up checks and their
//! opt-outs, scoped tokens from `logbook tokens new` reloaded on SIGHUP, TLS with a CA made
//! here (and a certificate swapped on SIGHUP), and the raw-socket defences (request smuggling,
//! slow clients, the subscription cap).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_logbook");

/// A running `logbook serve events`; its stderr is kept in a file.
struct Server {
    child: Child,
    base: String,
    addr: String,
    log: tempfile::NamedTempFile,
}

fn command(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.env("LOGBOOK_GRPC_ADDR", "127.0.0.1:0");
    command
        .args(["serve", "events", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env_remove("EVENTS_TOKEN")
        .env_remove("EVENTS_TOKENS_FILE")
        .env_remove("EVENTS_AUTH")
        .env_remove("LOGBOOK_BEHIND_PROXY")
        .env_remove("LOGBOOK_ENV")
        .env("RUST_LOG", "info")
        .env("EVENTS_DURABILITY", "never")
        .envs(env.iter().copied());
    command
}

fn start(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = command(data_dir, args, env)
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let base = support::listening_base(&mut child, log.path());
    let port = base.rsplit(':').next().unwrap();
    let addr = format!("127.0.0.1:{port}");
    Server {
        child,
        base,
        addr,
        log,
    }
}

/// Runs the binary to completion (a start-up that must fail).
fn run(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(data_dir, args, env).output().unwrap()
}

impl Server {
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Still the same process: it has not exited.
    fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the server exited:\n{}",
            self.stderr()
        );
    }

    /// SIGTERM, and the exit is 0.
    fn terminate(mut self) {
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Polls `check` until it holds (every 20 ms, at most 20 s).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_ready(client: &reqwest::Client, server: &Server) {
    eventually("/health 200", || async {
        client
            .get(server.url("/health"))
            .send()
            .await
            .is_ok_and(|response| response.status() == 200)
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Start-up checks.

#[test]
fn production_without_an_event_token_fails_naming_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(
        dir.path(),
        &["--env", "production", "--addr", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("EVENTS_TOKEN (--events-token) or EVENTS_TOKENS_FILE")
            && stderr.contains("EVENTS_AUTH=none"),
        "{stderr}"
    );
}

#[test]
fn production_with_events_auth_none_starts_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &["--env", "production", "--addr", "127.0.0.1:0"],
        &[("EVENTS_AUTH", "none")],
    );
    assert!(
        server
            .stderr()
            .contains("EVENTS_AUTH=none: the event API is open"),
        "{}",
        server.stderr()
    );
    server.terminate();
}

#[test]
fn events_auth_none_together_with_a_token_is_a_contradiction() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(
        dir.path(),
        &["--addr", "127.0.0.1:0", "--events-auth", "none"],
        &[("EVENTS_TOKEN", "a-token-of-some-length")],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("EVENTS_AUTH (--events-auth)"));
}

#[test]
fn production_beyond_loopback_without_tls_fails_naming_the_tls_and_proxy_settings() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(
        dir.path(),
        &["--env", "production", "--addr", "0.0.0.0:0"],
        &[("EVENTS_TOKEN", "a-token-of-some-length")],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("LOGBOOK_TLS_CERT") && stderr.contains("LOGBOOK_BEHIND_PROXY=1"),
        "{stderr}"
    );
}

#[test]
fn production_beyond_loopback_behind_a_proxy_starts_with_a_warning_by_flag_or_env() {
    for (args, env) in [
        (vec!["--behind-proxy"], vec![]),
        (vec![], vec![("LOGBOOK_BEHIND_PROXY", "1")]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec!["--env", "production", "--addr", "0.0.0.0:0"];
        all.extend(args);
        let mut env = env;
        env.push(("EVENTS_TOKEN", "a-token-of-some-length"));
        let server = start(dir.path(), &all, &env);
        assert!(
            server
                .stderr()
                .contains("LOGBOOK_BEHIND_PROXY says a TLS proxy"),
            "{}",
            server.stderr()
        );
        server.terminate();
    }
}

#[test]
fn development_beyond_loopback_without_a_token_warns_once_and_on_loopback_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let open = start(dir.path(), &["--addr", "0.0.0.0:0"], &[]);
    let warning = "the event API has no token and listens beyond this machine";
    assert_eq!(
        open.stderr().matches(warning).count(),
        1,
        "{}",
        open.stderr()
    );
    open.terminate();
    let dir = tempfile::tempdir().unwrap();
    let local = start(dir.path(), &["--addr", "127.0.0.1:0"], &[]);
    assert!(!local.stderr().contains(warning), "{}", local.stderr());
    local.terminate();
}

// ---------------------------------------------------------------------------------------------
// Scoped tokens.

/// `logbook tokens new`: (token, line).
fn new_token(name: &str, scope: &str, prefix: Option<&str>) -> (String, String) {
    let mut args = vec!["tokens", "new", "--name", name, "--scope", scope];
    if let Some(prefix) = prefix {
        args.extend(["--prefix", prefix]);
    }
    let output = Command::new(BIN)
        .env("LOGBOOK_GRPC_ADDR", "127.0.0.1:0")
        .args(&args)
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with('#')).collect();
    let [token, line] = lines[..] else {
        panic!("two lines expected: {stdout}")
    };
    (token.to_owned(), line.to_owned())
}

async fn append(client: &reqwest::Client, server: &Server, token: &str, stream: &str) -> u16 {
    client
        .post(server.url(&format!("/streams/{stream}/events")))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(r#"{"type":"T","data":{}}"#)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn tokens_new_prints_a_token_and_its_line_and_refuses_a_bad_scope() {
    let (token, line) = new_token("orders-reader", "read", Some("orders-"));
    assert!(token.len() >= 43);
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[..2], ["orders-reader", "read:orders-"]);
    assert_eq!(fields[2].len(), 64);
    assert!(!line.contains(&token));
    let output = Command::new(BIN)
        .env("LOGBOOK_GRPC_ADDR", "127.0.0.1:0")
        .args(["tokens", "new", "--name", "x", "--scope", "write"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown scope"));
}

#[tokio::test]
async fn sighup_rereads_the_token_file_without_a_restart_and_tokens_are_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, reader_line) = new_token("reader", "read", Some("orders-"));
    let (appender, appender_line) = new_token("appender", "append", None);
    let file = dir.path().join("tokens");
    std::fs::write(&file, format!("# readers\n{reader_line}\n")).unwrap();
    let mut server = start(
        &dir.path().join("data"),
        &["--addr", "127.0.0.1:0", "--env", "production"],
        &[("EVENTS_TOKENS_FILE", file.to_str().unwrap())],
    );
    let client = reqwest::Client::new();
    wait_ready(&client, &server).await;
    assert_eq!(append(&client, &server, &appender, "orders-1").await, 401);
    assert_eq!(append(&client, &server, &reader, "orders-1").await, 403);
    let read = client
        .get(server.url("/streams/payments-1/events"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 403);

    std::fs::write(&file, format!("{reader_line}\n{appender_line}\n")).unwrap();
    server.signal("-HUP");
    eventually("the appender accepted after SIGHUP", || async {
        append(&client, &server, &appender, "orders-1").await == 201
    })
    .await;
    server.assert_running();
    let page = client
        .get(server.url("/streams/orders-1/events"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    // A broken file on SIGHUP keeps the tokens in force.
    std::fs::write(&file, "not a token line\n").unwrap();
    server.signal("-HUP");
    eventually("the failed reload is logged", || async {
        server.stderr().contains("token file not reloaded")
    })
    .await;
    assert_eq!(append(&client, &server, &appender, "orders-1").await, 201);
    let stderr = server.stderr();
    assert!(stderr.contains("event API tokens reloaded"), "{stderr}");
    assert!(
        !stderr.contains(&reader) && !stderr.contains(&appender),
        "{stderr}"
    );
    server.terminate();
}

// ---------------------------------------------------------------------------------------------
// TLS.

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it, as PEM files.
struct Pki {
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path, name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let cert_path = dir.join(format!("{name}-cert.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert: cert_path,
        key: key_path,
    }
}

fn https_client(ca_pem: &str, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .pool_max_idle_per_host(0);
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn https_serves_h2_and_http1_with_hsts_and_sighup_swaps_the_certificate_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_pki(dir.path(), "first");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let mut server = start(
        &dir.path().join("data"),
        &[
            "--addr",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let h2 = https_client(&first.ca_pem, false);
    wait_ready(&h2, &server).await;
    let response = h2.get(server.url("/health")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let appended = h2
        .post(server.url("/events"))
        .header("content-type", "application/json")
        .body(r#"{"type":"T","data":{"over":"h2"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 201);
    let h1 = https_client(&first.ca_pem, true);
    let response = h1.get(server.url("/events")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("strict-transport-security"));
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/health", server.addr))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    let second = make_pki(dir.path(), "second");
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    server.signal("-HUP");
    let trusting_second = https_client(&second.ca_pem, false);
    eventually("the new certificate served after SIGHUP", || async {
        trusting_second
            .get(server.url("/health"))
            .send()
            .await
            .is_ok()
    })
    .await;
    server.assert_running();
    let old = https_client(&first.ca_pem, false)
        .get(server.url("/health"))
        .send()
        .await;
    assert!(
        old.is_err(),
        "new handshakes no longer use the old certificate"
    );
    assert!(server.stderr().contains("TLS certificate reloaded"));
    // Off the runtime thread: the HTTP/2 client must keep running to answer the server's
    // graceful GOAWAY/PING, or the shutdown waits for its timeout.
    tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_a_start_up_problem() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_pki(dir.path(), "first");
    let second = make_pki(dir.path(), "second");
    let output = run(
        &dir.path().join("data"),
        &[
            "--addr",
            "127.0.0.1:0",
            "--tls-cert",
            first.cert.to_str().unwrap(),
            "--tls-key",
            second.key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("LOGBOOK_TLS_CERT / LOGBOOK_TLS_KEY"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Raw sockets: smuggling, slow clients, the subscription cap.

/// Writes `request` and reads until the server closes (or 10 s pass).
fn exchange(addr: &str, request: &[u8]) -> String {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn two_different_content_lengths_are_refused_400() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--addr", "127.0.0.1:0"], &[]);
    wait_ready(&reqwest::Client::new(), &server).await;
    let answer = exchange(
        &server.addr,
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 22\r\nContent-Length: 5\r\n\r\n{\"type\":\"T\",\"data\":1}",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    server.terminate();
}

#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_second_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--addr", "127.0.0.1:0"], &[]);
    let client = reqwest::Client::new();
    wait_ready(&client, &server).await;
    // A front proxy honouring Content-Length would see one request whose body ends inside the
    // smuggled one; read by Transfer-Encoding, the second request follows the chunked body.
    let event = r#"{"type":"T","data":1}"#;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let request = format!(
        "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n0\r\n\r\n{smuggled}",
        event.len()
    );
    let answer = exchange(&server.addr, request.as_bytes());
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then the connection is closed: {answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    server.terminate();
}

#[tokio::test]
async fn a_request_head_trickling_in_slower_than_the_header_timeout_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &["--addr", "127.0.0.1:0"],
        &[("LOGBOOK_HEADER_READ_TIMEOUT_SECONDS", "1")],
    );
    let client = reqwest::Client::new();
    wait_ready(&client, &server).await;
    let mut socket = TcpStream::connect(&server.addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    socket
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 256];
    // Send one header byte every 200 ms, as a slow-loris client does, until the server hangs up.
    let closed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the connection is still open after 10 s"
        );
        match socket.read(&mut buffer) {
            Ok(0) => break true,
            // hyper may say 408 before it closes; any other answer would be wrong.
            Ok(read) => assert!(
                buffer[..read].starts_with(b"HTTP/1.1 408"),
                "unexpected answer: {}",
                String::from_utf8_lossy(&buffer[..read])
            ),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break true,
        }
        if socket.write_all(b"X").is_err() {
            break true;
        }
    };
    assert!(closed);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut at {:?}, before the timeout",
        started.elapsed()
    );
    // Other clients are unaffected (on a fresh connection: the pooled one idled past the
    // timeout and was closed too).
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    assert_eq!(
        fresh
            .get(server.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.terminate();
}

#[tokio::test]
async fn the_subscription_cap_setting_answers_503_beyond_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &["--addr", "127.0.0.1:0"],
        &[("LOGBOOK_MAX_SUBSCRIPTIONS", "1")],
    );
    let client = reqwest::Client::new();
    wait_ready(&client, &server).await;
    let first = client.get(server.url("/subscribe")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let second = client.get(server.url("/subscribe")).send().await.unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(body["max_subscriptions"], 1);
    drop(first);
    server.terminate();
}

// ---------------------------------------------------------------------------------------------
// The hot routes (`GET /events/{id}`, `POST /events`) are answered beside the router
// (`web::middleware::Dispatch`); they must answer exactly as the router's routes do.

/// Status, content type, `x-request-id` presence and body of one answer.
async fn answer(request: reqwest::RequestBuilder) -> (u16, String, bool, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let request_id = response.headers().contains_key("x-request-id");
    (
        status,
        content_type,
        request_id,
        response.text().await.unwrap(),
    )
}

#[tokio::test]
async fn the_hot_routes_answer_as_the_router_does() {
    let dir = tempfile::tempdir().unwrap();
    let token = "a-token-of-some-length";
    let server = start(
        dir.path(),
        &[
            "--addr",
            "127.0.0.1:0",
            "--max-event-size-bytes",
            "4096",
            "--max-batch-size-bytes",
            "4096",
            "--max-batch-events",
            "1",
        ],
        &[("EVENTS_TOKEN", token)],
    );
    let client = reqwest::Client::new();
    wait_ready(&client, &server).await;

    // An append through the hot route, read back through it and through the router (a
    // percent-encoded id is not the hot route's: it goes to the router, which decodes it).
    let (status, _, request_id, body) = answer(
        client
            .post(server.url("/events"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(r#"{"stream":"hot-1","type":"T","data":{"é":"🦀"}}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(request_id);
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let encoded: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
    let hot = answer(
        client
            .get(server.url(&format!("/events/{id}")))
            .bearer_auth(token),
    )
    .await;
    let routed = answer(
        client
            .get(server.url(&format!("/events/{encoded}")))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(hot.0, 200, "{}", hot.3);
    assert_eq!(hot, routed);
    let event: serde_json::Value = serde_json::from_str(&hot.3).unwrap();
    assert_eq!(event["data"]["é"], "🦀");
    assert_eq!(event["stream"], "hot-1");

    // Without a token: the same 401 problem from the hot routes as from the router's.
    let unknown = "0192f0a4-8c3e-7b21-9a55-0123456789ab";
    let hot = answer(client.get(server.url(&format!("/events/{unknown}")))).await;
    let routed = answer(client.get(server.url("/events"))).await;
    assert_eq!(hot.0, 401);
    assert_eq!(hot, routed);
    let hot = answer(client.post(server.url("/events")).body("{}")).await;
    assert_eq!(hot, routed);

    // An unknown id (404), a body over the body limit (413, before any parse), not JSON (415):
    // the problems the router's append to a stream gives for the same faults.
    let (status, content_type, _, body) = answer(
        client
            .get(server.url(&format!("/events/{unknown}")))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (404, "application/problem+json"),
        "{body}"
    );
    let big = format!(r#"{{"type":"T","data":"{}"}}"#, "x".repeat(16 * 1024));
    for (body, content_type, expected) in [
        (big.as_str(), "application/json", 413),
        ("{}", "text/plain", 415),
    ] {
        let post = |path: &str| {
            client
                .post(server.url(path))
                .bearer_auth(token)
                .header("content-type", content_type)
                .body(body.to_owned())
        };
        let hot = answer(post("/events")).await;
        let routed = answer(post("/streams/hot-2/events")).await;
        assert_eq!(hot.0, expected, "{}", hot.3);
        assert_eq!(hot, routed);
    }
    server.terminate();
}
