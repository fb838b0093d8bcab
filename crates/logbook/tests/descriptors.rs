//! The real `logbook` binary at its descriptor limit: tiny segments make every few appends roll
//! to a new segment file (one more open descriptor each), so the event store runs into
//! `ulimit -n` (EMFILE) in the middle of a roll. That append answers 503; once descriptors are
//! free again (idle connections close) appends resume without a restart, and after a restart
//! every acknowledged event reads back and `logbook events verify` finds the log clean.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_logbook");

/// Descriptors the server may hold: enough to start, few enough to run out after a few dozen
/// segments.
const DESCRIPTOR_LIMIT: u32 = 64;
/// Idle client connections held while the store grows, each one server descriptor.
const IDLE_CONNECTIONS: usize = 12;

struct Server {
    child: Child,
    base: String,
    addr: String,
}

/// Starts `logbook serve events` on port 0, under `ulimit -n <limit>` when given.
fn start(data_dir: &Path, limit: Option<u32>) -> Server {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut command = match limit {
        Some(limit) => {
            let mut sh = Command::new("sh");
            sh.args([
                "-c",
                &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                BIN,
            ]);
            sh
        }
        None => Command::new(BIN),
    };
    let mut child = command
        .env("LOGBOOK_GRPC_ADDR", "127.0.0.1:0")
        .args(["serve", "events", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(["--segment-size-bytes", "1024"])
        .env_remove("EVENTS_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let addr = support::listening_base(&mut child, log.path())
        .trim_start_matches("http://")
        .to_owned();
    Server {
        child,
        base: format!("http://{addr}"),
        addr,
    }
}

impl Server {
    async fn ready(&self, client: &reqwest::Client) {
        support::wait_healthy(client, &self.base).await;
    }

    /// An idle keep-alive connection the server has accepted (it answered a request on it).
    fn idle_connection(&self) -> TcpStream {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: logbook\r\n\r\n")
            .unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
        stream
    }

    async fn terminate(self) {
        let mut child = self.child;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(exit.success(), "SIGTERM exits 0, got {exit:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_descriptor_limit_a_roll_answers_503_and_appends_resume_once_descriptors_are_free() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // One pooled connection, reused for every request: appends need no new descriptor.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let server = start(&data, Some(DESCRIPTOR_LIMIT));
    server.ready(&client).await;
    let idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .map(|_| server.idle_connection())
        .collect();
    let append = |n: usize| {
        client
            .post(format!("{}/events", server.base))
            .json(&serde_json::json!({
                "stream": format!("fd-{}", n % 3),
                "type": "Opened",
                "data": {"n": n, "text": "🔥".repeat(100)},
            }))
            .send()
    };
    let mut acknowledged: Vec<String> = Vec::new();
    let exhausted = loop {
        let response = append(acknowledged.len()).await.unwrap();
        if response.status() != 201 {
            break response;
        }
        let placed: serde_json::Value = response.json().await.unwrap();
        assert_eq!(placed["position"], acknowledged.len());
        acknowledged.push(placed["id"].as_str().unwrap().to_owned());
        assert!(acknowledged.len() < 2_000, "never ran out of descriptors");
    };
    assert_eq!(
        exhausted.status(),
        503,
        "running out of descriptors is a 503"
    );
    assert_eq!(
        exhausted.headers()["content-type"],
        "application/problem+json"
    );
    // Reads keep working meanwhile.
    let read = client
        .get(format!("{}/events/{}", server.base, acknowledged[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    // Free descriptors: the server closes the idle connections once the client does.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut resumed = 0;
    while resumed < 5 {
        let response = append(acknowledged.len()).await.unwrap();
        if response.status() == 201 {
            let placed: serde_json::Value = response.json().await.unwrap();
            assert_eq!(placed["position"], acknowledged.len(), "a position reused");
            acknowledged.push(placed["id"].as_str().unwrap().to_owned());
            resumed += 1;
            continue;
        }
        let status = response.status();
        let problem = response.text().await.unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "appends did not resume once descriptors were free: {status} {problem}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A restart (without the limit) reads back exactly what was acknowledged, in order.
    server.terminate().await;
    let server = start(&data, None);
    server.ready(&client).await;
    let stored = support::ids_in_log_order(&client, &server.base).await;
    assert_eq!(stored, acknowledged, "events lost or doubled");
    server.terminate().await;
    let verify = Command::new(BIN)
        .env("LOGBOOK_GRPC_ADDR", "127.0.0.1:0")
        .args(["events", "verify"])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "verify: {report}");
    assert!(report.contains("status: OK"), "{report}");
}
