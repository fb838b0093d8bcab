//! The real `logbook` binary: start-up checks, graceful shutdown, and a SIGKILL crash while
//! many clients append.

mod support;

use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{BIN, Server, start};

impl Server {
    /// Sends SIGTERM and asserts the server exits 0 (graceful shutdown).
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

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .env("LOGBOOK_GRPC_ADDR", "127.0.0.1:0")
        .args(args)
        .env_remove("EVENTS_TOKEN")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn help_never_prints_a_secret_set_in_the_environment() {
    let secrets = [
        ("ADMIN_TOKEN", "admin-secret-0123456789abcdef0123456789"),
        (
            "SMTP_URL",
            "smtps://mailer:smtp-secret-password@mail.example.com",
        ),
        (
            "DATABASE_URL",
            "postgres://app:db-secret-password@db.example.com/teams",
        ),
        ("EVENTS_TOKEN", "events-secret-0123456789abcdef"),
        (
            "EVENTS_DATABASE_URL",
            "postgres://ev:events-db-secret@db.example.com/events",
        ),
    ];
    let output = Command::new(BIN)
        .args(["serve", "--help"])
        .envs(secrets)
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for (name, secret) in secrets {
        assert!(
            help.contains(&format!("[env: {name}]")),
            "{name} not documented:\n{help}"
        );
        assert!(!help.contains(secret), "--help prints {name}'s value");
    }
}

#[test]
fn bad_settings_are_all_reported_at_once_and_the_exit_is_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let data_dir = file.join("data");
    let output = run(&[
        "serve",
        "events",
        "--addr",
        "256.1.1.1:99999",
        "--durability",
        "sometimes",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--http-threads",
        "100000",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "LOGBOOK_ADDR (--addr)",
        "EVENTS_DURABILITY (--durability)",
        "sometimes",
        "LOGBOOK_DATA_DIR (--data-dir)",
        "LOGBOOK_HTTP_THREADS (--http-threads)",
        "must be at most 256",
    ] {
        assert!(
            stderr.contains(expected),
            "stderr names {expected:?}:\n{stderr}"
        );
    }
}

#[test]
fn an_address_in_use_is_reported_naming_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = run(&[
        "serve",
        "events",
        "--addr",
        &addr,
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("LOGBOOK_ADDR (--addr)") && stderr.contains(&addr),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_data_dir_locked_by_a_running_server_is_reported_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let server = start(dir.path(), &[]);
    server.ready(&client).await;
    let output = run(&[
        "serve",
        "events",
        "--addr",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("LOGBOOK_DATA_DIR (--data-dir)") && stderr.contains("locked"),
        "{stderr}"
    );

    let response = client
        .post(format!("{}/events", server.base))
        .header("content-type", "application/json")
        .body(r#"{"type":"T","data":{"kept":true}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    server.terminate().await;
    let verify = run(&[
        "events",
        "verify",
        dir.path().join("events").to_str().unwrap(),
    ]);
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{report}");
    assert!(
        report.contains("checkpoint: usable, covers 1 events"),
        "closing wrote a checkpoint:\n{report}"
    );
    let dump = run(&[
        "events",
        "dump",
        dir.path().join("events").to_str().unwrap(),
    ]);
    let dumped = String::from_utf8_lossy(&dump.stdout);
    assert_eq!(dumped.lines().count(), 1);
    assert!(dumped.contains(r#""data":{"kept":true}"#), "{dumped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_a_sigkill_byte_exactly_and_positions_have_no_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut server = start(dir.path(), &[]);
    server.ready(&client).await;
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, String, u64)>::new()));
    let mut clients = Vec::new();
    for worker in 0..16 {
        let client = client.clone();
        let base = server.base.clone();
        let acknowledged = Arc::clone(&acknowledged);
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let data = format!(
                    r#"{{"worker":{worker},"n":{n},"text":"ü😀\n\u0000 {}"}}"#,
                    "x".repeat(n % 300)
                );
                let Some((id, position)) =
                    support::append_acknowledged(&client, &base, &format!("w{worker}"), &data)
                        .await
                else {
                    return;
                };
                acknowledged.lock().unwrap().push((id, data, position));
            }
        }));
    }
    // Kill once a good number of appends were acknowledged (a condition, not a sleep).
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < 1500 {
        assert!(Instant::now() < deadline, "appends too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for task in clients {
        task.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let mut server = start(dir.path(), &[]);
    server.ready(&client).await;
    for (id, data, position) in &acknowledged {
        let text = client
            .get(format!("{}/events/{id}", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let expected = format!(r#""position":{position},"#);
        assert!(
            text.contains(&expected),
            "{id} keeps position {position}: {text}"
        );
        assert!(
            text.contains(&format!(r#""data":{data},"#)),
            "{id} data byte-exact: {text}"
        );
    }
    let mut next = 0u64;
    let mut after = String::new();
    loop {
        let page: serde_json::Value = client
            .get(format!("{}/events?limit=1000{after}", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for event in page["events"].as_array().unwrap() {
            assert_eq!(
                event["position"].as_u64().unwrap(),
                next,
                "positions are gap-free"
            );
            next += 1;
        }
        match page["next"].as_u64() {
            Some(last) => after = format!("&after={last}"),
            None => break,
        }
    }
    assert!(next >= acknowledged.len() as u64);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// A client whose connections come from `source` (any 127.0.0.0/8 address works on Linux).
fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(source))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_endpoint_is_rate_limited_per_client_address_with_no_connect_info_warning() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(BIN)
        .env("LOGBOOK_GRPC_ADDR", "127.0.0.1:0")
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("EVENTS_TOKEN")
        .env_remove("DATABASE_URL")
        .env_remove("ADMIN_TOKEN")
        .env_remove("LOGBOOK_ENV")
        .env("ACCEPT_RATE_PER_MINUTE", "3")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = support::listening_base(&mut child, &log_path);
    let server = Server { child, base };
    let first = client_from([127, 0, 0, 1]);
    server.ready(&first).await;

    let accept = |client: &reqwest::Client| {
        client
            .post(format!("{}/invitations/accept", server.base))
            .json(&serde_json::json!({"token": "not-a-token-anyone-was-sent"}))
            .send()
    };
    for n in 0..3 {
        let response = accept(&first).await.unwrap();
        assert_eq!(response.status(), 404, "request {n} is within the limit");
    }
    let response = accept(&first).await.unwrap();
    assert_eq!(response.status(), 429, "the 4th request in a minute");
    assert!(response.headers().contains_key("retry-after"));
    // Another address has its own budget: only true when the peer address reaches the
    // limiter (without ConnectInfo every client shares one bucket).
    let second = client_from([127, 0, 0, 2]);
    assert_eq!(accept(&second).await.unwrap().status(), 404);

    server.terminate().await;
    let stderr = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !stderr.contains("ConnectInfo"),
        "no warning about a missing peer address:\n{stderr}"
    );
}

/// A tmpfs of `size` mounted for a test (needs root and `mount`), unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Tmpfs(dir))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.0.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_keeps_reads_and_appends_resume_with_nothing_lost_or_doubled() {
    let Some(disk) = Tmpfs::mount("1m") else {
        eprintln!("SKIPPED disk-full test of the binary: cannot mount a tmpfs here (needs root)");
        return;
    };
    let data = disk.0.path().join("data");
    let client = reqwest::Client::new();
    let server = start(&data, &[]);
    server.ready(&client).await;
    let append = |n: usize| {
        client
            .post(format!("{}/events", server.base))
            .json(&serde_json::json!({
                "stream": "fill",
                "type": "Filled",
                "data": {"n": n, "text": "🔥".repeat(500)},
            }))
            .send()
    };
    let mut acknowledged = Vec::new();
    let full = loop {
        let response = append(acknowledged.len()).await.unwrap();
        if response.status() != 201 {
            break response;
        }
        let placed: serde_json::Value = response.json().await.unwrap();
        acknowledged.push(placed["id"].as_str().unwrap().to_owned());
        assert!(acknowledged.len() < 5_000, "the disk never filled");
    };
    assert_eq!(full.status(), 503, "a full disk is a 503");
    assert_eq!(full.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = full.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("cannot write"));
    // Reads keep working while the disk is full.
    let read = client
        .get(format!("{}/events/{}", server.base, acknowledged[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(append(0).await.unwrap().status(), 503, "still full");

    disk.resize("16m");
    let response = append(acknowledged.len()).await.unwrap();
    assert_eq!(response.status(), 201, "appends resume once space returns");
    let placed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(placed["position"], acknowledged.len());
    acknowledged.push(placed["id"].as_str().unwrap().to_owned());

    // After a clean restart the log holds exactly the acknowledged events, in order.
    server.terminate().await;
    let server = start(&data, &[]);
    server.ready(&client).await;
    let stored = support::ids_in_log_order(&client, &server.base).await;
    assert_eq!(stored, acknowledged, "events lost or doubled");
    let Server { mut child, .. } = server;
    let _ = child.kill();
    let _ = child.wait();
}
