//! Scoped tokens over HTTP: what a read, append, admin and prefix-scoped token may do, on every
//! route including `$all` pages and SSE; and the subscription cap. A real server on port 0 with
//! a real token file.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestServer, json, serve, test_options};

const PROBLEM: &str = "application/problem+json";
use eventstore::{EventStoreService, EventsSettings};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use web::auth::{Scope, TokenEntry};

const READER: &str = "reader-token-0123456789";
const APPENDER: &str = "appender-token-0123456789";
const ORDERS: &str = "orders-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let lines = [
        TokenEntry::for_token(READER, "reader", Scope::Read, None),
        TokenEntry::for_token(APPENDER, "appender", Scope::Append, None),
        TokenEntry::for_token(ORDERS, "orders", Scope::Append, Some("orders-")),
        TokenEntry::for_token(ADMIN, "ops", Scope::Admin, None),
    ]
    .map(|entry| entry.unwrap().line());
    let path = dir.join("tokens");
    std::fs::write(&path, format!("# test tokens\n{}\n", lines.join("\n"))).unwrap();
    path
}

async fn spawn_scoped(dir: &Path, max_subscriptions: usize) -> TestServer {
    let mut settings = EventsSettings::new(dir.join("events"), test_options());
    settings.tokens_file = Some(tokens_file(dir));
    settings.max_subscriptions = max_subscriptions;
    let service = EventStoreService::start(settings).await.unwrap();
    serve(service, dir).await
}

async fn append(server: &TestServer, token: &str, stream: &str) -> (u16, Value) {
    let response = server
        .client
        .post(server.url(&format!("/streams/{stream}/events")))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(r#"{"type":"T","data":{"n":1}}"#)
        .send()
        .await
        .unwrap();
    let (status, _, body) = json(response).await;
    (status, body)
}

async fn get(server: &TestServer, token: &str, path: &str) -> (u16, String, Value) {
    let response = server
        .client
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    json(response).await
}

fn streams_of(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["stream"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_read_token_reads_but_cannot_append_and_the_problem_names_the_missing_scope() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_scoped(dir.path(), 16).await;
    assert_eq!(append(&server, APPENDER, "s").await.0, 201);
    let (status, body) = append(&server, READER, "s").await;
    assert_eq!(status, 403);
    assert_eq!(body["type"], "/problems/forbidden");
    assert_eq!(body["missing_scope"], "append");
    assert_eq!(body["stream"], "s");
    let text = body.to_string();
    for secret in [READER, APPENDER, ORDERS, ADMIN, "appender", "ops"] {
        assert!(!text.contains(secret), "the problem names {secret}: {text}");
    }
    let (status, content_type, page) = get(&server, READER, "/streams/s/events").await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    // POST /events checks the stream named in the body too.
    let response = server
        .client
        .post(server.url("/events"))
        .bearer_auth(READER)
        .header("content-type", "application/json")
        .body(r#"{"stream":"s","type":"T","data":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    server.stop().await;
}

#[tokio::test]
async fn missing_and_unknown_tokens_are_401_problems() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_scoped(dir.path(), 16).await;
    let response = server.get("/events").await;
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let (status, content_type, _) = json(response).await;
    assert_eq!((status, content_type.as_str()), (401, PROBLEM));
    let (status, _, body) = get(&server, "not-a-token", "/events").await;
    assert_eq!(status, 401);
    assert!(!body.to_string().contains("reader"));
    server.stop().await;
}

#[tokio::test]
async fn a_prefix_token_appends_and_reads_only_its_own_streams() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_scoped(dir.path(), 16).await;
    assert_eq!(append(&server, ORDERS, "orders-1").await.0, 201);
    let (status, body) = append(&server, ORDERS, "payments-1").await;
    assert_eq!(
        (status, body["missing_scope"].as_str()),
        (403, Some("append"))
    );
    assert_eq!(append(&server, APPENDER, "payments-1").await.0, 201);
    let (status, _, body) = get(&server, ORDERS, "/streams/payments-1/events").await;
    assert_eq!(
        (status, body["missing_scope"].as_str()),
        (403, Some("read"))
    );
    assert_eq!(
        get(&server, ORDERS, "/streams/orders-1/events").await.0,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn a_prefix_token_reading_all_sees_only_its_streams_and_pages_past_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_scoped(dir.path(), 16).await;
    for stream in [
        "payments-1",
        "orders-1",
        "payments-2",
        "payments-3",
        "orders-2",
    ] {
        assert_eq!(append(&server, APPENDER, stream).await.0, 201);
    }
    let (_, _, everything) = get(&server, READER, "/events").await;
    assert_eq!(streams_of(&everything).len(), 5);
    let (status, _, page) = get(&server, ORDERS, "/events").await;
    assert_eq!(status, 200);
    assert_eq!(streams_of(&page), ["orders-1", "orders-2"]);
    // Paging with a small limit: pages may be empty of readable events, `next` still moves on.
    let mut seen = Vec::new();
    let mut after: Option<u64> = None;
    for _ in 0..10 {
        let path = match after {
            Some(after) => format!("/events?limit=2&after={after}"),
            None => "/events?limit=2".to_owned(),
        };
        let (_, _, page) = get(&server, ORDERS, &path).await;
        seen.extend(streams_of(&page));
        match page["next"].as_u64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["orders-1", "orders-2"]);
    server.stop().await;
}

#[tokio::test]
async fn another_prefixs_event_by_id_is_not_found_for_a_prefix_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_scoped(dir.path(), 16).await;
    let (_, payment) = append(&server, APPENDER, "payments-1").await;
    let (_, order) = append(&server, ORDERS, "orders-1").await;
    let payment_path = format!("/events/{}", payment["id"].as_str().unwrap());
    let order_path = format!("/events/{}", order["id"].as_str().unwrap());
    let (status, _, body) = get(&server, ORDERS, &payment_path).await;
    assert_eq!(status, 404);
    assert_eq!(body["type"], "/problems/not-found");
    assert_eq!(get(&server, ORDERS, &order_path).await.0, 200);
    assert_eq!(get(&server, READER, &payment_path).await.0, 200);
    server.stop().await;
}

/// Reads SSE messages from a raw response body until `count` events arrived.
async fn sse_streams(server: &TestServer, token: &str, count: usize) -> Vec<String> {
    let mut response = server
        .client
        .get(server.url("/subscribe"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    let mut streams = Vec::new();
    while streams.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an SSE message within 10 s")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            if let Some(data) = message.lines().find_map(|line| line.strip_prefix("data:")) {
                let event: Value = serde_json::from_str(data.trim()).unwrap();
                streams.push(event["stream"].as_str().unwrap().to_owned());
            }
        }
    }
    streams
}

#[tokio::test]
async fn a_prefix_token_subscribed_to_all_receives_only_its_streams_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_scoped(dir.path(), 16).await;
    for stream in ["payments-1", "orders-1", "payments-2"] {
        append(&server, APPENDER, stream).await;
    }
    // The subscription catches up (orders-1), then follows live: the live payments event must
    // be skipped and the live orders event delivered next.
    assert_eq!(sse_streams(&server, ORDERS, 1).await, ["orders-1"]);
    let live = async { sse_streams(&server, ORDERS, 2).await };
    let appends = async {
        append(&server, APPENDER, "payments-3").await;
        append(&server, ORDERS, "orders-2").await;
    };
    let (streams, ()) = tokio::join!(live, appends);
    assert_eq!(streams, ["orders-1", "orders-2"]);
    server.stop().await;
}

#[tokio::test]
async fn subscriptions_beyond_the_cap_get_a_503_problem_and_a_freed_slot_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_scoped(dir.path(), 2).await;
    // Two raw connections hold the two slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        socket
            .write_all(
                format!(
                    "GET /subscribe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut head = vec![0u8; 256];
        let read = socket.read(&mut head).await.unwrap();
        assert!(
            String::from_utf8_lossy(&head[..read]).starts_with("HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head[..read])
        );
        held.push(socket);
    }
    let (status, content_type, body) = get(&server, READER, "/subscribe").await;
    assert_eq!((status, content_type.as_str()), (503, PROBLEM));
    assert_eq!(body["max_subscriptions"], 2);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("LOGBOOK_MAX_SUBSCRIPTIONS")
    );
    drop(held.pop());
    // The server notices the closed socket when it next writes (keep-alive comment or an
    // event); an append makes it write now.
    append(&server, APPENDER, "s").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = server
            .client
            .get(server.url("/subscribe"))
            .bearer_auth(READER)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}
