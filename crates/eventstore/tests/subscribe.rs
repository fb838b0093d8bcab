//! `GET /subscribe`: catch-up, live follow, `id:` = position, resume with `Last-Event-ID`.

mod common;

use std::time::Duration;

use common::spawn;
use serde_json::Value;

/// Reads SSE messages from a streaming response.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug)]
struct Message {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> SseReader {
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        SseReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next message (comments such as keep-alives are skipped), within a deadline.
    async fn next(&mut self) -> Message {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let frame: String = self.buffer.drain(..end + 2).collect();
                    let mut message = Message {
                        id: None,
                        event: None,
                        data: String::new(),
                    };
                    let mut any = false;
                    for line in frame.lines() {
                        if let Some(value) = line.strip_prefix("id:") {
                            message.id = Some(value.trim_start().to_owned());
                            any = true;
                        } else if let Some(value) = line.strip_prefix("event:") {
                            message.event = Some(value.trim_start().to_owned());
                            any = true;
                        } else if let Some(value) = line.strip_prefix("data:") {
                            message
                                .data
                                .push_str(value.strip_prefix(' ').unwrap_or(value));
                            any = true;
                        }
                    }
                    if any {
                        return message;
                    }
                    continue;
                }
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .unwrap()
                    .expect("the stream stays open");
                self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        })
        .await
        .expect("an SSE message within 10 s")
    }
}

#[tokio::test]
async fn a_subscriber_catches_up_then_sees_new_events_in_order_with_the_position_as_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    for n in 0..3 {
        server
            .post_json("/events", &format!(r#"{{"type":"Before","data":{n}}}"#))
            .await;
    }
    let response = server
        .client
        .get(server.url("/subscribe?after=0"))
        .send()
        .await
        .unwrap();
    let mut reader = SseReader::new(response);
    for position in 1..3 {
        let message = reader.next().await;
        assert_eq!(message.id.as_deref(), Some(position.to_string().as_str()));
    }
    // Appended after the subscriber connected and caught up.
    for n in 0..50 {
        server
            .post_json(
                "/events",
                &format!(r#"{{"type":"After","data":{{"n":{n},"s":"ü\n😀"}}}}"#),
            )
            .await;
    }
    for n in 0..50u64 {
        let message = reader.next().await;
        assert_eq!(message.id, Some((3 + n).to_string()));
        let event: Value = serde_json::from_str(&message.data).unwrap();
        assert_eq!(event["position"], 3 + n);
        assert_eq!(event["type"], "After");
        assert_eq!(event["data"]["n"], n);
        assert_eq!(event["data"]["s"], "ü\n😀");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_subscriber_resumes_after_its_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    for n in 0..10 {
        server
            .post_json("/events", &format!(r#"{{"type":"T","data":{n}}}"#))
            .await;
    }
    let first = server
        .client
        .get(server.url("/subscribe"))
        .send()
        .await
        .unwrap();
    let mut reader = SseReader::new(first);
    let mut last_id = String::new();
    for position in 0..4 {
        let message = reader.next().await;
        assert_eq!(message.id, Some(position.to_string()));
        last_id = message.id.unwrap();
    }
    drop(reader);
    // Last-Event-ID (as a reconnecting EventSource sends it) wins over `after`.
    let resumed = server
        .client
        .get(server.url("/subscribe?after=0"))
        .header("Last-Event-ID", &last_id)
        .send()
        .await
        .unwrap();
    let mut reader = SseReader::new(resumed);
    for position in 4..10 {
        assert_eq!(reader.next().await.id, Some(position.to_string()));
    }
    server
        .post_json("/events", r#"{"type":"T","data":10}"#)
        .await;
    assert_eq!(reader.next().await.id, Some("10".into()));
    server.stop().await;
}

#[tokio::test]
async fn a_subscription_ends_with_a_shutdown_message_when_the_server_stops() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    let response = server
        .client
        .get(server.url("/subscribe"))
        .send()
        .await
        .unwrap();
    let mut reader = SseReader::new(response);
    server.service.as_ref().unwrap().begin_shutdown();
    let message = reader.next().await;
    assert_eq!(message.event.as_deref(), Some("shutdown"));
    assert!(message.data.contains("Last-Event-ID"));
    server.stop().await;
}
