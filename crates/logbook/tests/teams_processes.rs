//! The teams service as real `logbook` processes: two of them on one PostgreSQL database and
//! one SMTP sink mail each invitation once, also when one is SIGKILLed mid-send; and the audit
//! trail reaches the event stream `team-<id>` exactly once across kills between the SQL commit
//! and the append.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_logbook");
const ADMIN_TOKEN: &str = "process-test-admin-token-0123456789abcdef";

/// A running `logbook serve ...`; SIGKILLed when dropped.
struct Process {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Process {
    fn start(services: &[&str], data_dir: &Path, env: &[(&str, String)]) -> Process {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut command = Command::new(BIN);
        command.env("LOGBOOK_GRPC_ADDR", "127.0.0.1:0");
        command
            .arg("serve")
            .args(services)
            .args(["--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_remove("EVENTS_TOKEN")
            .env_remove("DATABASE_URL")
            .env_remove("SMTP_URL")
            .env_remove("LOGBOOK_ENV")
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let base = support::listening_base(&mut child, log.path());
        Process {
            child,
            base,
            client: reqwest::Client::new(),
        }
    }

    async fn ready(&self) {
        eventually("/health 200", || async {
            let response = self
                .client
                .get(format!("{}/health", self.base))
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it yields a value; panics naming `what` after 60 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An SMTP sink on loopback that holds every transaction at `DATA` while its gate is closed,
/// and keeps the recipient of every message it completes.
struct GatedSink {
    addr: std::net::SocketAddr,
    delivered: Arc<Mutex<Vec<String>>>,
    waiting_at_data: Arc<std::sync::atomic::AtomicUsize>,
    gate: watch::Sender<bool>,
}

impl GatedSink {
    async fn start(open: bool) -> GatedSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let waiting_at_data = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (gate, opened) = watch::channel(open);
        let (store, waiting) = (Arc::clone(&delivered), Arc::clone(&waiting_at_data));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (store, waiting, opened) =
                    (Arc::clone(&store), Arc::clone(&waiting), opened.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, store, waiting, opened).await;
                });
            }
        });
        GatedSink {
            addr,
            delivered,
            waiting_at_data,
            gate,
        }
    }

    fn delivered(&self) -> Vec<String> {
        self.delivered.lock().unwrap().clone()
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<String>>>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    mut opened: watch::Receiver<bool>,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read);
    write.write_all(b"220 sink ready\r\n").await?;
    let mut recipient = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_ascii_uppercase();
        if command.starts_with("EHLO") {
            write.write_all(b"250-sink\r\n250 8BITMIME\r\n").await?;
        } else if command.starts_with("RCPT TO:") {
            recipient = line.trim_end()["RCPT TO:".len()..]
                .trim()
                .trim_matches(['<', '>'])
                .to_lowercase();
            write.write_all(b"250 OK\r\n").await?;
        } else if command.starts_with("DATA") {
            if !*opened.borrow() {
                waiting.fetch_add(1, Ordering::SeqCst);
                // Hold here; a client that dies meanwhile delivers nothing.
                let _ = opened.wait_for(|open| *open).await;
                waiting.fetch_sub(1, Ordering::SeqCst);
            }
            write.write_all(b"354 go ahead\r\n").await?;
            loop {
                line.clear();
                if reader.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
            }
            store.lock().unwrap().push(recipient.clone());
            write.write_all(b"250 OK\r\n").await?;
        } else if command.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"250 OK\r\n").await?;
        }
    }
}

/// A fresh PostgreSQL database, dropped at the end (even on panic).
struct FreshDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl FreshDatabase {
    async fn create() -> Option<FreshDatabase> {
        let admin_url = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty());
        let Some(admin_url) = admin_url else {
            eprintln!(
                "!!! TEST_DATABASE_URL is not set: the multi-process teams test was SKIPPED !!!"
            );
            return None;
        };
        sqlx::any::install_default_drivers();
        let name = format!("teams_processes_{}", uuid::Uuid::new_v4().simple());
        let mut connection = sqlx::AnyConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut connection)
            .await
            .unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        Some(FreshDatabase {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(mut connection) = sqlx::AnyConnection::connect(&admin_url).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut connection)
                            .await;
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_mail_each_invitation_once_even_when_one_is_killed_mid_send() {
    let Some(database) = FreshDatabase::create().await else {
        return;
    };
    let sink = GatedSink::start(false).await;
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = vec![
        ("DATABASE_URL", database.url.clone()),
        ("SMTP_URL", format!("smtp://{}", sink.addr)),
        ("MAIL_SEND_TIMEOUT_SECONDS", "3".to_owned()),
        ("MAIL_CONCURRENCY", "4".to_owned()),
    ];
    let first = Process::start(&["teams"], dirs.0.path(), &env);
    first.ready().await;
    let second = Process::start(&["teams"], dirs.1.path(), &env);
    second.ready().await;
    let team = first
        .admin(
            reqwest::Method::POST,
            "/teams",
            Some(json!({ "name": "Core" })),
        )
        .await;
    let team = team["id"].as_str().unwrap().to_owned();
    let emails: Vec<String> = (0..80)
        .map(|n| format!("person{n:02}@example.com"))
        .collect();
    let path = format!("/teams/{team}/invitations");
    first
        .admin(
            reqwest::Method::POST,
            &path,
            Some(json!({ "emails": emails[..40] })),
        )
        .await;
    second
        .admin(
            reqwest::Method::POST,
            &path,
            Some(json!({ "emails": emails[40..] })),
        )
        .await;
    // Both processes are mid-send: every slot of each holds a transaction at DATA.
    eventually("eight transactions held at DATA", || async {
        (sink
            .waiting_at_data
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 8)
            .then_some(())
    })
    .await;
    first.kill();
    sink.gate.send_replace(true);
    // The survivor finishes its own sends and, once their leases end, the killed one's.
    let delivered = eventually("eighty messages", || {
        let delivered = sink.delivered();
        async move { (delivered.len() >= 80).then_some(delivered) }
    })
    .await;
    let list = eventually("every delivery recorded as sent", || async {
        let list = second
            .admin(reqwest::Method::GET, &format!("{path}?limit=200"), None)
            .await;
        list["invitations"]
            .as_array()?
            .iter()
            .all(|i| i["delivery"]["status"] == "sent")
            .then_some(list)
    })
    .await;
    assert_eq!(list["invitations"].as_array().unwrap().len(), 80);
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for recipient in sink.delivered() {
        *per_recipient.entry(recipient).or_default() += 1;
    }
    assert_eq!(delivered.len(), 80, "{per_recipient:?}");
    assert_eq!(per_recipient.len(), 80);
    assert!(
        per_recipient.values().all(|count| *count == 1),
        "{per_recipient:?}"
    );
    drop(second);
}

async fn stream_ids(process: &Process, team: &str) -> Vec<String> {
    let response = process
        .client
        .get(format!(
            "{}/streams/team-{team}/events?limit=1000",
            process.base
        ))
        .send()
        .await
        .unwrap();
    if response.status() == 404 {
        return Vec::new();
    }
    let page: Value = response.json().await.unwrap();
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn audit_ids(process: &Process, team: &str) -> Vec<String> {
    let page = process
        .admin(
            reqwest::Method::GET,
            &format!("/teams/{team}/audit?limit=1000"),
            None,
        )
        .await;
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_reaches_the_event_stream_exactly_once_across_kills_between_commit_and_append()
 {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    // 1. Teams alone: changes commit, nothing is appended; then the process dies.
    let teams_only = Process::start(&["teams"], dir.path(), &[]);
    teams_only.ready().await;
    let team = teams_only
        .admin(
            reqwest::Method::POST,
            "/teams",
            Some(json!({ "name": "Core" })),
        )
        .await;
    let team = team["id"].as_str().unwrap().to_owned();
    let path = format!("/teams/{team}/invitations");
    teams_only
        .admin(
            reqwest::Method::POST,
            &path,
            Some(json!({ "emails": ["a@example.com", "b@example.com"] })),
        )
        .await;
    teams_only
        .admin(
            reqwest::Method::PATCH,
            &format!("/teams/{team}"),
            Some(json!({ "name": "Core Team" })),
        )
        .await;
    teams_only.kill();

    // 2. Both services: the relay appends what was committed.
    let both = Process::start(&[], dir.path(), &[]);
    both.ready().await;
    let expected = audit_ids(&both, &team).await;
    assert!(expected.len() >= 4, "{expected:?}");
    eventually("the stream holding every entry", || async {
        let ids = stream_ids(&both, &team).await;
        (ids.len() >= expected.len()).then_some(())
    })
    .await;
    // More changes, and a kill right after they commit (the relay may or may not have run).
    both.admin(
        reqwest::Method::POST,
        &path,
        Some(json!({ "emails": ["c@example.com"] })),
    )
    .await;
    both.kill();

    // 3. As if every append had happened but none was marked: the relay sends them all again.
    let mut sqlite = sqlx::AnyConnection::connect(&format!(
        "sqlite://{}",
        dir.path().join("teams.sqlite3").display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE audit_entries SET relayed_at = NULL")
        .execute(&mut sqlite)
        .await
        .unwrap();
    sqlite.close().await.unwrap();

    let again = Process::start(&[], dir.path(), &[]);
    again.ready().await;
    let mut sqlite = sqlx::AnyConnection::connect(&format!(
        "sqlite://{}",
        dir.path().join("teams.sqlite3").display()
    ))
    .await
    .unwrap();
    // Settled: nothing left to relay, and the stream is the trail (the worker may still add
    // entries, e.g. the delivery of c@, so both are read together until they agree).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (relayed, expected) = loop {
        let unrelayed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_entries WHERE relayed_at IS NULL")
                .fetch_one(&mut sqlite)
                .await
                .unwrap();
        let expected = audit_ids(&again, &team).await;
        let relayed = stream_ids(&again, &team).await;
        if unrelayed == 0 && relayed.len() >= expected.len() {
            break (relayed, expected);
        }
        assert!(Instant::now() < deadline, "the relay did not catch up");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(expected.len() >= 5, "{expected:?}");
    let distinct: std::collections::HashSet<&String> = relayed.iter().collect();
    assert_eq!(distinct.len(), relayed.len(), "no entry twice: {relayed:?}");
    assert_eq!(relayed, expected, "every entry exactly once, in order");
    let metrics = again
        .client
        .get(format!("{}/metrics", again.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("teams_mail_queue_depth"), "{metrics}");
    assert!(metrics.contains("teams_mail_sends_total"), "{metrics}");
    drop(again);
}
