//! What the tests of the real binary share: finding the address a started `logbook` serves,
//! and reading the log back.

// Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_logbook");

/// A started `logbook serve events` process and the HTTP base it serves.
pub struct Server {
    pub child: Child,
    pub base: String,
}

/// Starts `logbook serve events` on a free port with `data_dir` and `extra` flags, no event
/// API token, and the gRPC face on a free port too (tests run in parallel; the default port
/// would be taken). Its stderr goes to a file, shown if it never comes up.
pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(BIN)
        .env("LOGBOOK_GRPC_ADDR", "127.0.0.1:0")
        .args(["serve", "events", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env_remove("EVENTS_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let base = listening_base(&mut child, log.path());
    Server { child, base }
}

/// Polls `{base}/health` until it answers 200, with a deadline of 30 s (no fixed sleeps).
pub async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(format!("{base}/health")).send().await
            && response.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "not ready within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Server {
    /// Polls /health until 200, with a deadline (no fixed sleeps).
    pub async fn ready(&self, client: &reqwest::Client) {
        wait_healthy(client, &self.base).await;
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Reads the child's stdout until `logbook: listening on <base>` and answers `<base>`
/// (`http://127.0.0.1:<port>`), then keeps draining stdout on a thread so the server never
/// blocks on a full pipe. If the child exits first, panics with its stderr, read from
/// `stderr_log` (the file its stderr goes to).
pub fn listening_base(child: &mut Child, stderr_log: &Path) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let Some(Ok(line)) = lines.next() else {
            let stderr = std::fs::read_to_string(stderr_log).unwrap_or_default();
            panic!("the server exited without printing its address:\n{stderr}");
        };
        if let Some(base) = line.strip_prefix("logbook: listening on ") {
            break base.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    base
}

/// As [`listening_base`], for a server with the gRPC face on: answers the gRPC address
/// (`127.0.0.1:<port>`, printed first as `logbook: gRPC on <addr>`) and the HTTP base.
pub fn listening_grpc_and_base(child: &mut Child, stderr_log: &Path) -> (String, String) {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut grpc = None;
    let base = loop {
        let Some(Ok(line)) = lines.next() else {
            let stderr = std::fs::read_to_string(stderr_log).unwrap_or_default();
            panic!("the server exited without printing its addresses:\n{stderr}");
        };
        if let Some(addr) = line.strip_prefix("logbook: gRPC on ") {
            grpc = Some(addr.to_owned());
        }
        if let Some(base) = line.strip_prefix("logbook: listening on ") {
            break base.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (
        grpc.expect("the gRPC address is printed before the HTTP one"),
        base,
    )
}

/// The ids of the first page (up to 1,000) of `GET /events`, in log order, asserting that
/// positions start at 0 and have no gap.
pub async fn ids_in_log_order(client: &reqwest::Client, base: &str) -> Vec<String> {
    let page: serde_json::Value = client
        .get(format!("{base}/events?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(position, event)| {
            assert_eq!(event["position"], position, "positions have a gap");
            event["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Appends one event of type `T` with `data` (a JSON text) to `stream` over HTTP; answers its
/// id and position when it was acknowledged (201), `None` when it was not (the server may be
/// dying: the callers' workers stop there).
pub async fn append_acknowledged(
    client: &reqwest::Client,
    base: &str,
    stream: &str,
    data: &str,
) -> Option<(String, u64)> {
    let body = format!(r#"{{"stream":"{stream}","type":"T","data":{data}}}"#);
    let response = client
        .post(format!("{base}/events"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    if response.status() != 201 {
        return None;
    }
    let placed = response.json::<serde_json::Value>().await.ok()?;
    Some((
        placed["id"].as_str().unwrap().to_owned(),
        placed["position"].as_u64().unwrap(),
    ))
}
