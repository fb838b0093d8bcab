//! Scavenge over real HTTP on the embedded backend: a tombstoned stream's events leave every
//! file under the data directory; live events keep their positions; progress and problems.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestServer, json, spawn, spawn_with, test_options};
use serde_json::Value;

const MARKER: &str = "PRIVACY-REQUEST-51d2e8";

async fn append(server: &TestServer, stream: &str, data: &str) -> u64 {
    let body = format!(r#"{{"type":"T","data":{data}}}"#);
    let (status, _, placed) = json(
        server
            .post_json(&format!("/streams/{stream}/events"), &body)
            .await,
    )
    .await;
    assert_eq!(status, 201, "{placed}");
    placed["position"].as_u64().unwrap()
}

/// Polls the scavenge until it is no longer running (a condition with a deadline, no sleep
/// as synchronisation).
async fn wait_done(server: &TestServer, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _, body) = json(server.get(&format!("/admin/scavenge/{id}")).await).await;
        assert_eq!(status, 200, "{body}");
        if body["status"] != "running" {
            return body;
        }
        assert!(Instant::now() < deadline, "scavenge still running: {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[tokio::test]
async fn a_tombstoned_streams_events_are_erased_from_every_file_by_a_sealing_scavenge() {
    let dir = tempfile::tempdir().unwrap();
    let options = eventlog::Options {
        segment_size_bytes: 4096,
        ..test_options()
    };
    let server = spawn_with(dir.path(), options, None).await;
    let mut live = Vec::new();
    for n in 0..40 {
        append(
            &server,
            "user-erased",
            &format!(r#"{{"secret":"{MARKER}","n":{n}}}"#),
        )
        .await;
        let data = format!(r#"{{"kept":{n}}}"#);
        live.push((append(&server, "orders", &data).await, data));
    }
    assert_eq!(
        server
            .delete("/streams/user-erased?hard=true")
            .await
            .status(),
        204
    );
    assert!(!files_containing(dir.path(), MARKER.as_bytes()).is_empty());

    let (status, _, started) = json(server.post("/admin/scavenge?seal=true").await).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["status"], "running");
    let done = wait_done(&server, started["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    assert!(done["events_removed"].as_u64().unwrap() >= 40, "{done}");
    assert_eq!(done["segments_done"], done["segments_total"]);
    assert!(done["bytes_after"].as_u64() < done["bytes_before"].as_u64());

    // Live events keep their positions; `$all` pages skip the holes.
    let (_, _, page) = json(server.get("/events?limit=1000").await).await;
    let read: Vec<(u64, String)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stream"] == "orders")
        .map(|e| (e["position"].as_u64().unwrap(), e["data"].to_string()))
        .collect();
    assert_eq!(read, live);
    let (status, _, _) = json(server.get("/streams/user-erased/events").await).await;
    assert_eq!(status, 410, "the tombstone stays");

    let server = server.restart().await;
    let (_, _, page) = json(server.get("/events?limit=1000").await).await;
    assert_eq!(
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["stream"] == "orders")
            .count(),
        live.len()
    );
    let (status, _, _) = json(server.get("/streams/user-erased/events").await).await;
    assert_eq!(status, 410, "the tombstone stays after a restart");
    server.stop().await;
    assert_eq!(
        files_containing(dir.path(), MARKER.as_bytes()),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn an_unknown_scavenge_id_is_404_and_a_bad_one_400_as_problems() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    let (status, content_type, _) = json(
        server
            .get("/admin/scavenge/0190c1e2-7000-7000-8000-000000000000")
            .await,
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (404, "application/problem+json")
    );
    let (status, content_type, _) = json(server.get("/admin/scavenge/not-a-uuid").await).await;
    assert_eq!(
        (status, content_type.as_str()),
        (400, "application/problem+json")
    );
    let (status, _, _) = json(
        server
            .client
            .post(server.url("/admin/scavenge?seal=maybe"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn scavenge_needs_an_admin_token_for_every_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_with(dir.path(), test_options(), Some("s3cret")).await;
    let (status, _, _) = json(
        server
            .client
            .post(server.url("/admin/scavenge"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = json(
        server
            .client
            .post(server.url("/admin/scavenge"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn a_soft_deleted_stream_scavenged_away_continues_its_versions_after_a_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    for n in 0..3 {
        append(&server, "cart", &format!(r#"{{"n":{n}}}"#)).await;
    }
    let (status, _, _) = json(
        server
            .client
            .delete(server.url("/streams/cart"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, started) = json(server.post("/admin/scavenge?seal=true").await).await;
    assert_eq!(status, 202);
    let done = wait_done(&server, started["id"].as_str().unwrap()).await;
    assert_eq!(done["events_removed"], 3, "{done}");
    let dir_path = server.dir.clone();
    server.stop().await;
    // No checkpoint: the next open replays the log, which no longer holds the stream's events.
    std::fs::remove_file(dir_path.join(eventlog::CHECKPOINT_FILE)).unwrap();
    let server = spawn(&dir_path).await;
    let (status, _, placed) = json(
        server
            .post_json(
                "/streams/cart/events",
                r#"{"type":"T","data":{"again":true}}"#,
            )
            .await,
    )
    .await;
    assert_eq!(status, 201, "{placed}");
    assert_eq!(
        placed["version"], 3,
        "versions continue after a soft delete"
    );
    let (status, _, page) = json(server.get("/streams/cart/events").await).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 1, "{page}");
    server.stop().await;
}

#[tokio::test]
async fn a_second_scavenge_while_one_runs_is_409_and_a_close_stops_the_running_one_and_frees_the_directory()
 {
    let dir = tempfile::tempdir().unwrap();
    let options = eventlog::Options {
        segment_size_bytes: 4096,
        ..test_options()
    };
    // One byte per second: the first scavenge is still on its first segment for the whole
    // test, so the second request meets it running (a condition, not a race).
    let mut settings = eventstore::EventsSettings::new(dir.path(), options);
    settings.scavenge_max_bytes_per_second = 1;
    let service = eventstore::EventStoreService::start(settings)
        .await
        .expect("the store opens");
    let server = common::serve(service, dir.path()).await;
    let mut live = Vec::new();
    for n in 0..20 {
        append(&server, "gone", &format!(r#"{{"n":{n}}}"#)).await;
        live.push(append(&server, "kept", &format!(r#"{{"n":{n}}}"#)).await);
    }
    assert_eq!(server.delete("/streams/gone?hard=true").await.status(), 204);
    let (status, _, first) = json(server.post("/admin/scavenge?seal=true").await).await;
    assert_eq!(status, 202, "{first}");
    let (status, content_type, second) = json(server.post("/admin/scavenge").await).await;
    assert_eq!(status, 409, "{second}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(second["scavenge_id"], first["id"], "{second}");
    // Wait until it is at work (it reports its segments when it starts), so that the close
    // below meets it mid-run.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let path = format!("/admin/scavenge/{}", first["id"].as_str().unwrap());
        let (status, _, progress) = json(server.get(&path).await).await;
        assert_eq!(status, 200);
        assert_eq!(progress["status"], "running", "{progress}");
        if progress["segments_total"].as_u64() > Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scavenge never started: {progress}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Closing does not wait for a paced scavenge to finish: it stops between two steps, and
    // the store opens with every live event where it was.
    let stopped = tokio::time::timeout(Duration::from_secs(30), server.stop()).await;
    assert!(stopped.is_ok(), "closing waited for the scavenge");
    let server = spawn_with(dir.path(), test_options(), None).await;
    let (_, _, page) = json(server.get("/streams/kept/events?limit=100").await).await;
    let positions: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, live);
    server.stop().await;
}
