//! The event store on PostgreSQL with real `logbook serve events` processes: several
//! processes on one fresh database (one order, conflicts and idempotency across processes,
//! subscriptions across processes, a SIGKILL mid-load), and a private PostgreSQL instance
//! restarted mid-load.
//!
//! The shared server is `TEST_DATABASE_URL` (scripts/test sets it; default the local server
//! on 127.0.0.1:5432); each test creates its own database there and drops it. The restart test
//! runs its own PostgreSQL (`initdb` into a temporary directory, its own port) so that the
//! shared server and the tests beside it are never disturbed.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_logbook");

/// A running `logbook serve events` on port 0.
struct Server {
    child: Child,
    base: String,
    _data_dir: tempfile::TempDir,
}

impl Server {
    fn start(database_url: &str) -> Server {
        let data_dir = tempfile::tempdir().unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(BIN)
            .env("LOGBOOK_GRPC_ADDR", "127.0.0.1:0")
            .args(["serve", "events", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .env("EVENTS_DATABASE_URL", database_url)
            .env_remove("EVENTS_TOKEN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let base = support::listening_base(&mut child, log.path());
        Server {
            child,
            base,
            _data_dir: data_dir,
        }
    }

    async fn ready(&self, client: &reqwest::Client) {
        support::wait_healthy(client, &self.base).await;
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[host_start..]
        .find('/')
        .map_or(base.len(), |i| host_start + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out = format!("{out}?{query}");
    }
    out
}

fn psql(url: &str, sql: &str) {
    let output = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A fresh database on the shared server, dropped at the end.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    fn create() -> Database {
        let admin = admin_url();
        let name = format!("logbook_test_{}", uuid::Uuid::new_v4().simple());
        psql(&admin, &format!("CREATE DATABASE \"{name}\""));
        let url = with_database(&admin, &name);
        Database { admin, name, url }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &self.admin,
                "-qc",
                &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// What a client saw acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    id: String,
    position: u64,
    data: String,
}

/// Appends `body` until it is acknowledged (201 or 200), retrying errors and 5xx with the
/// same body (same id) until `deadline`; `None` when the server never acknowledged it.
async fn append_until_acknowledged(
    client: &reqwest::Client,
    base: &str,
    body: &Value,
    deadline: Instant,
) -> Option<Value> {
    loop {
        if let Ok(response) = client
            .post(format!("{base}/events"))
            .json(body)
            .send()
            .await
        {
            let status = response.status().as_u16();
            if status == 201 || status == 200 {
                return Some(response.json().await.unwrap());
            }
            // While the database is away: a 503 problem, like the embedded log's disk full.
            assert_eq!(status, 503, "unexpected status for {body}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every event of `$all` read through `base`, page by page.
async fn read_all(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let url = match after {
            Some(after) => format!("{base}/events?limit=1000&after={after}"),
            None => format!("{base}/events?limit=1000"),
        };
        let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next"].as_u64() {
            Some(next) => after = Some(next),
            None => return events,
        }
    }
}

/// Checks that `$all` is gap-free from 0, holds each id once, and holds every acknowledged
/// event at its acknowledged position with its data.
fn assert_nothing_lost_or_doubled(all: &[Value], acknowledged: &[Acked]) {
    let mut ids = HashSet::new();
    for (index, event) in all.iter().enumerate() {
        assert_eq!(event["position"].as_u64(), Some(index as u64), "gap-free");
        assert!(
            ids.insert(event["id"].as_str().unwrap().to_owned()),
            "id stored twice"
        );
    }
    let by_position: HashMap<u64, &Value> = all
        .iter()
        .map(|e| (e["position"].as_u64().unwrap(), e))
        .collect();
    for acked in acknowledged {
        let stored = by_position
            .get(&acked.position)
            .unwrap_or_else(|| panic!("acknowledged {acked:?} is missing"));
        assert_eq!(stored["id"].as_str(), Some(acked.id.as_str()));
        assert_eq!(stored["data"].to_string(), acked.data);
    }
}

/// Runs `writers` tasks per server, each appending `per_writer` events one after the other,
/// retrying each with the same id for up to `give_up_after` (a writer whose server is gone
/// for good stops); returns what was acknowledged.
async fn load(
    client: &reqwest::Client,
    bases: &[String],
    (writers, per_writer): (usize, usize),
    give_up_after: Duration,
    acknowledged_count: Arc<AtomicUsize>,
) -> Vec<Acked> {
    let mut tasks = Vec::new();
    for (server, base) in bases.iter().enumerate() {
        for writer in 0..writers {
            let client = client.clone();
            let base = base.clone();
            let count = Arc::clone(&acknowledged_count);
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..per_writer {
                    let id = uuid::Uuid::now_v7().to_string();
                    let data = json!({"server": server, "writer": writer, "n": n});
                    let body = json!({"id": id, "stream": format!("load-{}", n % 7), "type": "Load", "data": data});
                    let deadline = Instant::now() + give_up_after;
                    match append_until_acknowledged(&client, &base, &body, deadline).await {
                        Some(placed) => {
                            acked.push(Acked {
                                id,
                                position: placed["position"].as_u64().unwrap(),
                                data: data.to_string(),
                            });
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        // The server went away for good (killed): stop this writer.
                        None => break,
                    }
                }
                acked
            }));
        }
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    acknowledged
}

#[test]
fn an_unreachable_or_invalid_database_url_stops_start_up_naming_the_setting() {
    let data_dir = tempfile::tempdir().unwrap();
    for url in [
        "postgres://nobody@127.0.0.1:1/nothing",
        "mysql://localhost/db",
    ] {
        let output = Command::new(BIN)
            .env("LOGBOOK_GRPC_ADDR", "127.0.0.1:0")
            .args(["serve", "events", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .env("EVENTS_DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{url} must not start");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("EVENTS_DATABASE_URL (--events-database-url)"),
            "{url}: {stderr}"
        );
        assert!(
            !stderr.contains("nobody@"),
            "the URL is not repeated: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_database_append_concurrently_and_read_one_identical_order() {
    let database = Database::create();
    let servers: Vec<Server> = (0..3).map(|_| Server::start(&database.url)).collect();
    let client = reqwest::Client::new();
    for server in &servers {
        server.ready(&client).await;
    }
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let acknowledged = load(
        &client,
        &bases,
        (4, 25),
        Duration::from_secs(30),
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    assert_eq!(acknowledged.len(), 3 * 4 * 25);
    let first = read_all(&client, &bases[0]).await;
    assert_eq!(first.len(), acknowledged.len());
    assert_nothing_lost_or_doubled(&first, &acknowledged);
    for base in &bases[1..] {
        assert_eq!(
            read_all(&client, base).await,
            first,
            "same $all from {base}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_versions_and_idempotency_hold_across_processes() {
    let database = Database::create();
    let (a, b) = (Server::start(&database.url), Server::start(&database.url));
    let client = reqwest::Client::new();
    a.ready(&client).await;
    b.ready(&client).await;
    let post = |base: &str, query: &str, body: Value| {
        let request = client
            .post(format!("{base}/streams/orders/events?{query}"))
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let event = json!({"id": uuid::Uuid::now_v7(), "type": "Placed", "data": {"n": 1}});
    let (status, placed) = post(&a.base, "expected_version=none", event.clone()).await;
    assert_eq!((status, placed["version"].as_u64()), (201, Some(0)));
    // Another process, another id, the same expectation: a conflict naming the version.
    let other = json!({"type": "Placed", "data": {"n": 2}});
    let (status, problem) = post(&b.base, "expected_version=none", other).await;
    assert_eq!(
        (status, problem["current_version"].as_u64()),
        (409, Some(0))
    );
    // The same event again through the other process: the original placement.
    let (status, again) = post(&b.base, "expected_version=none", event.clone()).await;
    assert_eq!((status, &again), (200, &placed));
    // The same id with other content: a conflict, whichever process is asked.
    let mut changed = event.clone();
    changed["data"] = json!({"n": 99});
    let (status, problem) = post(&b.base, "", changed).await;
    assert_eq!(status, 409, "{problem}");
    // Both processes race for each next version: exactly one wins each.
    for version in 0..10u64 {
        let body = || json!({"type": "Raced", "data": {"v": version}});
        let query = format!("expected_version={version}");
        let (first, second) =
            tokio::join!(post(&a.base, &query, body()), post(&b.base, &query, body()));
        let mut statuses = [first.0, second.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "version {version}");
    }
    let stream: Value = client
        .get(format!("{}/streams/orders/events?limit=100", a.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stream["events"].as_array().unwrap().len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_one_process_sees_events_appended_through_another() {
    let database = Database::create();
    let (a, b) = (Server::start(&database.url), Server::start(&database.url));
    let client = reqwest::Client::new();
    a.ready(&client).await;
    b.ready(&client).await;
    let mut subscription = client
        .get(format!("{}/subscribe", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(subscription.status(), 200);
    let mut ids = Vec::new();
    for n in 0..3 {
        let body = json!({"type": "Seen", "data": {"n": n}});
        let placed: Value = client
            .post(format!("{}/events", b.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(placed["id"].as_str().unwrap().to_owned());
    }
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ids.iter().all(|id| text.contains(id.as_str())) {
        let chunk = tokio::time::timeout_at(deadline.into(), subscription.chunk())
            .await
            .expect("the events arrive through the other process")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let positions: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("id:"))
        .map(str::trim)
        .collect();
    assert_eq!(positions, ["0", "1", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_of_one_process_mid_load_loses_nothing_acknowledged() {
    let database = Database::create();
    let mut doomed = Server::start(&database.url);
    let survivor = Server::start(&database.url);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    doomed.ready(&client).await;
    survivor.ready(&client).await;
    let count = Arc::new(AtomicUsize::new(0));
    let bases = vec![doomed.base.clone(), survivor.base.clone()];
    let loading = {
        let client = client.clone();
        let count = Arc::clone(&count);
        // Writers to the killed process give up after its deadline; the others finish.
        tokio::spawn(
            async move { load(&client, &bases, (4, 150), Duration::from_secs(3), count).await },
        )
    };
    while count.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    doomed.kill();
    let acknowledged = loading.await.unwrap();
    assert!(
        acknowledged.len() >= 4 * 150,
        "the survivor's writers all finished"
    );
    let all = read_all(&client, &survivor.base).await;
    assert_nothing_lost_or_doubled(&all, &acknowledged);
}

/// A private PostgreSQL server in a temporary directory, on its own port.
struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries under /usr/lib/postgresql")
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.path().join("bin"))
            .find(|bin| bin.join("initdb").exists())
            .expect("initdb");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PrivatePostgres { bin, dir, port };
        // initdb refuses to run as root: run the server as the postgres user then.
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(server.dir.path())
            .status()
            .ok();
        let data = server.data().display().to_string();
        server.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        );
        server.pg_ctl(&["start", "-w"]);
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, action: &[&str]) {
        let data = self.data().display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=on -c synchronous_commit=on",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let mut args = vec![
            "-D",
            data.as_str(),
            "-l",
            log.as_str(),
            "-o",
            options.as_str(),
        ];
        args.extend_from_slice(action);
        self.run("pg_ctl", &args);
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let output = if as_root {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        }
        .unwrap();
        assert!(
            output.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D"])
            .arg(Path::new(&data))
            .args(["stop", "-m", "immediate"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_load_loses_nothing_and_doubles_nothing_when_clients_retry() {
    let postgres = PrivatePostgres::start();
    let server = Server::start(&postgres.url());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    server.ready(&client).await;
    let count = Arc::new(AtomicUsize::new(0));
    let loading = {
        let client = client.clone();
        let count = Arc::clone(&count);
        let bases = vec![server.base.clone()];
        tokio::spawn(
            async move { load(&client, &bases, (8, 60), Duration::from_secs(60), count).await },
        )
    };
    while count.load(Ordering::Relaxed) < 150 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A fast restart: connections are cut, in-flight transactions roll back.
    postgres.pg_ctl(&["restart", "-w", "-m", "fast"]);
    let acknowledged = loading.await.unwrap();
    assert_eq!(
        acknowledged.len(),
        8 * 60,
        "every append was acknowledged in the end"
    );
    let all = read_all(&client, &server.base).await;
    assert_eq!(all.len(), acknowledged.len(), "nothing doubled");
    assert_nothing_lost_or_doubled(&all, &acknowledged);
}
