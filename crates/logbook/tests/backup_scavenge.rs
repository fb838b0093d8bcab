//! Online backup and scavenge against the real `logbook` binary: a backup taken while clients
//! append, then verified and served; a SIGKILL in the middle of a scavenge.

mod support;

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{BIN, start};

fn run<I, A>(args: I) -> Output
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    Command::new(BIN)
        .args(args)
        .env_remove("EVENTS_TOKEN")
        // Tests run in parallel: the gRPC face's default port would be taken by another.
        .env("LOGBOOK_GRPC_ADDR", "off")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// (id, data, position) of every acknowledged append.
type Acknowledged = Arc<Mutex<Vec<(String, String, u64)>>>;

/// Starts `workers` clients appending to streams `<prefix><worker>` until the server stops
/// answering or `stop` is set.
fn append_forever(
    client: &reqwest::Client,
    base: &str,
    prefix: &'static str,
    workers: usize,
    acknowledged: &Acknowledged,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|worker| {
            let client = client.clone();
            let base = base.to_owned();
            let acknowledged = Arc::clone(acknowledged);
            let stop = Arc::clone(stop);
            tokio::spawn(async move {
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let data = format!(
                        r#"{{"worker":{worker},"n":{n},"text":"ü😀 {}"}}"#,
                        "x".repeat(n % 200)
                    );
                    let Some((id, position)) = support::append_acknowledged(
                        &client,
                        &base,
                        &format!("{prefix}{worker}"),
                        &data,
                    )
                    .await
                    else {
                        return;
                    };
                    acknowledged.lock().unwrap().push((id, data, position));
                }
            })
        })
        .collect()
}

async fn wait_for_acknowledged(acknowledged: &Acknowledged, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < count {
        assert!(Instant::now() < deadline, "appends too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that every event of `events` reads back from `base` at its position, byte-exactly.
async fn assert_readable(client: &reqwest::Client, base: &str, events: &[(String, String, u64)]) {
    for (id, data, position) in events {
        let text = client
            .get(format!("{base}/events/{id}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(&format!(r#""position":{position},"#)),
            "{id} keeps position {position}: {text}"
        );
        assert!(
            text.contains(&format!(r#""data":{data},"#)),
            "{id} data byte-exact: {text}"
        );
    }
}

/// The scavenge's progress, as `GET /admin/scavenge/{id}` answers it.
async fn scavenge_status(client: &reqwest::Client, base: &str, id: &str) -> serde_json::Value {
    client
        .get(format!("{base}/admin/scavenge/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `logbook events backup --data-dir <data_dir> --to <to>`, off the async runtime.
async fn backup(data_dir: &std::path::Path, to: &std::path::Path) -> Output {
    let (data_dir, to) = (data_dir.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let args: [&std::ffi::OsStr; 6] = [
            "events".as_ref(),
            "backup".as_ref(),
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
            "--to".as_ref(),
            to.as_os_str(),
        ];
        run(args)
    })
    .await
    .unwrap()
}

/// Sets `stop` and waits for the `writers` of [`append_forever`].
async fn stop_writers(
    stop: &std::sync::atomic::AtomicBool,
    writers: Vec<tokio::task::JoinHandle<()>>,
) {
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
}

/// Tombstones each of `streams` (204 each).
async fn tombstone(client: &reqwest::Client, base: &str, streams: &[&str]) {
    for stream in streams {
        let response = client
            .delete(format!("{base}/streams/{stream}?hard=true"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
}

/// `POST /admin/scavenge?seal=true` (202); answers the scavenge's id.
async fn start_scavenge(client: &reqwest::Client, base: &str) -> String {
    let response = client
        .post(format!("{base}/admin/scavenge?seal=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Asserts that `logbook events verify <store>` exits 0 with `status: OK`.
fn assert_verifies_clean(store: &std::path::Path) {
    let verify = run(["events".as_ref(), "verify".as_ref(), store.as_os_str()]);
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "verify is clean: {report}");
    assert!(report.contains("status: OK"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_clients_append_verifies_and_serves_every_event_acknowledged_before_it()
 {
    let dir = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let to = dest.path().join("copy");
    let client = reqwest::Client::new();
    // Small segments, so that the backup copies sealed segments and rolls happen meanwhile.
    let server = start(dir.path(), &["--segment-size-bytes", "1048576"]);
    server.ready(&client).await;
    let acknowledged: Acknowledged = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers = append_forever(&client, &server.base, "b", 8, &acknowledged, &stop);
    wait_for_acknowledged(&acknowledged, 3000).await;

    let before = acknowledged.lock().unwrap().clone();
    let output = backup(dir.path(), &to).await;
    let during = acknowledged.lock().unwrap().len();
    stop_writers(&stop, workers).await;
    server.kill();
    assert!(
        output.status.success(),
        "backup exits 0: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(during > before.len(), "appends went on during the backup");
    assert_verifies_clean(&to.join("events"));

    let restored = start(&to, &[]);
    restored.ready(&client).await;
    assert_readable(&client, &restored.base, &before).await;
    restored.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_during_a_scavenge_under_appends_loses_no_acknowledged_live_event() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let server = start(dir.path(), &["--segment-size-bytes", "65536"]);
    server.ready(&client).await;
    let doomed: Acknowledged = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = append_forever(&client, &server.base, "gone", 2, &doomed, &stop);
    wait_for_acknowledged(&doomed, 600).await;
    stop_writers(&stop, writers).await;
    tombstone(&client, &server.base, &["gone0", "gone1"]).await;
    let acknowledged: Acknowledged = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = append_forever(&client, &server.base, "kept", 8, &acknowledged, &stop);
    wait_for_acknowledged(&acknowledged, 500).await;
    start_scavenge(&client, &server.base).await;
    // SIGKILL as soon as the scavenge has started, while appends go on: it lands somewhere
    // inside the scavenge or just after (the simulator's test crashes it at every call).
    server.kill();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let verify = run([
        "events".as_ref(),
        "verify".as_ref(),
        dir.path().join("events").as_os_str(),
    ]);
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        report.contains("status: OK") || report.contains("TORN TAIL"),
        "only a torn tail, if anything: {report}"
    );
    let server = start(dir.path(), &["--segment-size-bytes", "65536"]);
    server.ready(&client).await;
    assert_readable(&client, &server.base, &acknowledged).await;
    let gone = client
        .get(format!("{}/streams/gone0/events", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 410);
    // A scavenge run again to the end leaves the live events as they were.
    let id = start_scavenge(&client, &server.base).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = scavenge_status(&client, &server.base, &id).await;
        if status["status"] == "done" {
            break;
        }
        assert_eq!(status["status"], "running", "{status}");
        assert!(Instant::now() < deadline, "scavenge too slow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_readable(&client, &server.base, &acknowledged).await;
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_a_scavenge_rewrites_segments_verifies_and_serves_every_live_event() {
    let dir = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    // Small segments and a slow scavenge (its I/O capped), so that backups run while some
    // segments are already rewritten and renamed into place and others are not.
    let args = [
        "--segment-size-bytes",
        "65536",
        "--scavenge-max-bytes-per-second",
        "262144",
    ];
    let server = start(dir.path(), &args);
    server.ready(&client).await;
    let doomed: Acknowledged = Arc::default();
    let kept: Acknowledged = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Doomed and kept events interleaved in every segment, so that every segment is rewritten.
    let mut writers = append_forever(&client, &server.base, "gone", 2, &doomed, &stop);
    writers.extend(append_forever(
        &client,
        &server.base,
        "kept",
        2,
        &kept,
        &stop,
    ));
    wait_for_acknowledged(&doomed, 1500).await;
    wait_for_acknowledged(&kept, 1500).await;
    stop_writers(&stop, writers).await;
    tombstone(&client, &server.base, &["gone0", "gone1"]).await;
    let before_scavenge = kept.lock().unwrap().clone();
    // Appends go on during the scavenge and the backups.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = append_forever(&client, &server.base, "more", 2, &kept, &stop);
    let id = start_scavenge(&client, &server.base).await;

    // Back up again and again until the scavenge is done; keep the backups that began after
    // the scavenge had renamed at least one segment and ended before it had done them all.
    let mut inside = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for n in 0.. {
        assert!(Instant::now() < deadline, "scavenge too slow");
        let at_start = scavenge_status(&client, &server.base, &id).await;
        if at_start["status"] == "done" {
            break;
        }
        assert_eq!(at_start["status"], "running", "{at_start}");
        let acknowledged_before = kept.lock().unwrap().clone();
        let to = dest.path().join(format!("copy-{n}"));
        let output = backup(dir.path(), &to).await;
        assert!(
            output.status.success(),
            "backup exits 0 during a scavenge: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let at_end = scavenge_status(&client, &server.base, &id).await;
        let (done_at_start, done_at_end) = (
            at_start["segments_done"].as_u64().unwrap(),
            at_end["segments_done"].as_u64().unwrap(),
        );
        if done_at_start > 0
            && at_end["status"] == "running"
            && done_at_end < at_end["segments_total"].as_u64().unwrap()
        {
            inside.push((to, acknowledged_before));
        }
    }
    stop_writers(&stop, writers).await;
    server.kill();
    assert!(
        !inside.is_empty(),
        "at least one backup ran entirely inside the scavenge, between two of its segments"
    );

    for (to, acknowledged_before) in inside.iter().take(3) {
        assert_verifies_clean(&to.join("events"));
        let restored = start(to, &[]);
        restored.ready(&client).await;
        assert!(acknowledged_before.len() >= before_scavenge.len());
        assert_readable(&client, &restored.base, acknowledged_before).await;
        for stream in ["gone0", "gone1"] {
            let gone = client
                .get(format!("{}/streams/{stream}/events", restored.base))
                .send()
                .await
                .unwrap();
            assert_eq!(gone.status(), 410, "the tombstone is in the backup");
        }
        restored.kill();
    }
}
