//! The event store contract (DESIGN.md, "Event store contract") over real HTTP.

mod common;

use common::{json, raw_event, spawn, spawn_with, test_options};
use serde_json::{Value, json as j};

const PROBLEM: &str = "application/problem+json";

#[tokio::test]
async fn an_appended_event_answers_201_and_reads_back_byte_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    let cjk = "日本語の文章と中文字符".repeat(400); // > 10 KiB of 3-byte UTF-8
    let data = format!(
        r#"{{"emoji":"🔥👩‍👩‍👧","cjk":"{cjk}","combining":"e\u0301 n̈ Å","newline":"a\nb","escaped":"line\nnul\u0000end","raw_newline_in_layout" :
  [1, 2.50, -0, 1e10, true, null]}}"#
    );
    let body = format!(
        r#"{{"stream":"orders-42","type":"OrderPlaced","data":{data},"metadata":{{"by":"ünïcode"}}}}"#
    );
    let (status, _, placed) = json(server.post_json("/events", &body).await).await;
    assert_eq!(status, 201);
    assert_eq!(placed["stream"], "orders-42");
    assert_eq!(placed["version"], 0);
    assert_eq!(placed["position"], 0);
    let id = placed["id"].as_str().unwrap().to_owned();

    let event = raw_event(server.get(&format!("/events/{id}")).await).await;
    assert_eq!(event.data.get(), data, "data must round-trip byte for byte");
    assert_eq!(event.metadata.unwrap().get(), r#"{"by":"ünïcode"}"#);
    assert_eq!(event.event_type, "OrderPlaced");
    assert_eq!(event.id, id);
    assert_eq!(
        (event.stream.as_str(), event.version, event.position),
        ("orders-42", 0, 0)
    );
    assert!(event.recorded_at.ends_with('Z') && event.recorded_at.len() == 27);
    server.stop().await;
}

#[tokio::test]
async fn an_event_without_a_stream_goes_to_the_default_stream_with_a_generated_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    let (status, _, placed) = json(
        server
            .post_json("/events", r#"{"type":"T","data":1}"#)
            .await,
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(placed["stream"], "default");
    let id: uuid::Uuid = placed["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(id.get_version_num(), 7);
    server.stop().await;
}

#[tokio::test]
async fn a_batch_is_appended_atomically_with_consecutive_positions() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    let batch = r#"[{"stream":"a","type":"T","data":1},{"stream":"b","type":"T","data":2},{"stream":"a","type":"T","data":3}]"#;
    let (status, _, body) = json(server.post_json("/events", batch).await).await;
    assert_eq!(status, 201);
    let events = body["events"].as_array().unwrap();
    let placed: Vec<(u64, &str, u64)> = events
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["stream"].as_str().unwrap(),
                e["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(placed, vec![(0, "a", 0), (1, "b", 0), (2, "a", 1)]);

    // A batch with one bad event stores nothing.
    let bad = r#"[{"stream":"a","type":"T","data":4},{"stream":"","type":"T","data":5}]"#;
    let (status, content_type, problem) = json(server.post_json("/events", bad).await).await;
    assert_eq!(status, 400);
    assert_eq!(content_type, PROBLEM);
    assert!(problem["detail"].as_str().unwrap().contains("stream name"));
    let (_, _, page) = json(server.get("/events").await).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn reappending_an_id_with_the_same_content_answers_200_with_the_original_position() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    let id = uuid::Uuid::now_v7();
    let event = format!(r#"{{"id":"{id}","stream":"s","type":"T","data":{{"n":1}}}}"#);
    let (status, _, first) = json(server.post_json("/events", &event).await).await;
    assert_eq!(status, 201);
    server
        .post_json("/events", r#"{"type":"Other","data":0}"#)
        .await;
    let (status, _, again) = json(server.post_json("/events", &event).await).await;
    assert_eq!(status, 200);
    assert_eq!(again, first);

    // Deduplication uses the index, which is rebuilt from the log: it survives a restart.
    let server = server.restart().await;
    let (status, _, after_restart) = json(server.post_json("/events", &event).await).await;
    assert_eq!(status, 200);
    assert_eq!(after_restart, first);
    server.stop().await;
}

#[tokio::test]
async fn reappending_an_id_with_different_content_answers_409_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    let id = uuid::Uuid::now_v7();
    server
        .post_json(
            "/events",
            &format!(r#"{{"id":"{id}","type":"T","data":1}}"#),
        )
        .await;
    let response = server
        .post_json(
            "/events",
            &format!(r#"{{"id":"{id}","type":"T","data":2}}"#),
        )
        .await;
    let (status, content_type, problem) = json(response).await;
    assert_eq!((status, content_type.as_str()), (409, PROBLEM));
    assert_eq!(problem["type"], "/problems/conflict");
    assert_eq!(problem["id"], id.to_string());
    let event = raw_event(server.get(&format!("/events/{id}")).await).await;
    assert_eq!(event.data.get(), "1");
    server.stop().await;
}

#[tokio::test]
async fn appending_to_a_stream_checks_the_expected_version_and_409_tells_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    let event = r#"{"type":"T","data":{}}"#;
    let url = "/streams/cart-7/events";
    let (status, _, placed) = json(
        server
            .post_json(&format!("{url}?expected_version=none"), event)
            .await,
    )
    .await;
    assert_eq!((status, placed["version"].as_u64()), (201, Some(0)));
    let (status, _, problem) = json(
        server
            .post_json(&format!("{url}?expected_version=none"), event)
            .await,
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(problem["current_version"], 0);
    let (status, _, placed) = json(
        server
            .post_json(&format!("{url}?expected_version=0"), event)
            .await,
    )
    .await;
    assert_eq!((status, placed["version"].as_u64()), (201, Some(1)));
    let (status, _, problem) = json(
        server
            .post_json(&format!("{url}?expected_version=0"), event)
            .await,
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(problem["current_version"], 1);
    assert!(problem["detail"].as_str().unwrap().contains("version 1"));
    let (status, _, problem) = json(
        server
            .post_json("/streams/new/events?expected_version=3", event)
            .await,
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(problem["current_version"], Value::Null);
    let (status, _, _) = json(
        server
            .post_json(&format!("{url}?expected_version=any"), event)
            .await,
    )
    .await;
    assert_eq!(status, 201);
    let (status, _, placed) = json(server.post_json(url, event).await).await;
    assert_eq!((status, placed["version"].as_u64()), (201, Some(3)));
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_answer_400_problems_that_say_what_was_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    let cases: Vec<(&str, String, &str)> = vec![
        ("/events", "{not json".into(), "invalid event JSON"),
        ("/events", r#"{"data":1}"#.into(), "missing field `type`"),
        ("/events", r#"{"type":"T"}"#.into(), "missing field `data`"),
        ("/events", r#"{"type":"T","data":1,"colour":"red"}"#.into(), "unknown field `colour`"),
        ("/events", r#"{"type":"T","data":1,"id":"nope"}"#.into(), "invalid event JSON"),
        ("/events", r#"{"type":"T","data":1,"metadata":[1]}"#.into(), "metadata"),
        ("/events", "42".into(), "object"),
        ("/events", "[]".into(), "at least one event"),
        ("/events", r#"{"type":"","data":1}"#.into(), "event type is empty"),
        ("/streams/s/events?expected_version=soon", r#"{"type":"T","data":1}"#.into(), "expected_version"),
        ("/streams/s/events", r#"{"stream":"t","type":"T","data":1}"#.into(), "posted to stream"),
        ("/streams/s/events?expected_version=none", r#"[{"stream":"s","type":"T","data":1},{"stream":"s","type":"T","data":1,"id":"00000000-0000-0000-0000-000000000001"},{"stream":"s","type":"T","data":1,"id":"00000000-0000-0000-0000-000000000001"}]"#.into(), "appears twice"),
    ];
    for (path, body, expected) in cases {
        let (status, content_type, problem) = json(server.post_json(path, &body).await).await;
        assert_eq!(status, 400, "{path} {body}: {problem}");
        assert_eq!(content_type, PROBLEM);
        assert_eq!(problem["status"], 400);
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(expected),
            "{body}: {detail:?} should mention {expected:?}"
        );
    }
    for path in [
        "/events/not-a-uuid",
        "/events?limit=0",
        "/events?after=-1",
        "/streams/s/events?from_version=x",
        "/subscribe?after=y",
    ] {
        let (status, content_type, _) = json(server.get(path).await).await;
        assert_eq!((status, content_type.as_str()), (400, PROBLEM), "{path}");
    }
    let (_, _, page) = json(server.get("/events").await).await;
    assert_eq!(page["events"], j!([]), "nothing was stored");
    server.stop().await;
}

#[tokio::test]
async fn an_event_over_the_size_limit_answers_413_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = test_options();
    options.limits.max_event_size_bytes = 1000;
    options.limits.max_batch_size_bytes = 4000;
    options.limits.max_batch_events = 10;
    let server = spawn_with(dir.path(), options, None).await;
    let big = format!(r#"{{"type":"T","data":"{}"}}"#, "x".repeat(1000));
    let (status, content_type, problem) = json(server.post_json("/events", &big).await).await;
    assert_eq!((status, content_type.as_str()), (413, PROBLEM));
    assert_eq!(problem["setting"], "max_event_size_bytes");
    assert_eq!(problem["limit"], 1000);

    let batch = format!("[{}]", [r#"{"type":"T","data":1}"#; 11].join(","));
    let (status, _, problem) = json(server.post_json("/events", &batch).await).await;
    assert_eq!(
        (status, problem["setting"].as_str()),
        (413, Some("max_batch_events"))
    );

    // A body beyond the limit derived from the engine's limits is refused before parsing.
    let limit = server.service.as_ref().unwrap().body_limit_bytes();
    assert_eq!(limit, 4000 + 10 * eventstore::JSON_OVERHEAD_PER_EVENT_BYTES);
    let huge = format!(r#"{{"type":"T","data":"{}"}}"#, "x".repeat(limit));
    let (status, content_type, _) = json(server.post_json("/events", &huge).await).await;
    assert_eq!((status, content_type.as_str()), (413, PROBLEM));
    let (_, _, page) = json(server.get("/events").await).await;
    assert_eq!(page["events"], j!([]));
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_answers_415() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = server
            .client
            .post(server.url("/events"))
            .body(r#"{"type":"T","data":1}"#);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let (status, problem_type, problem) = json(request.send().await.unwrap()).await;
        assert_eq!((status, problem_type.as_str()), (415, PROBLEM));
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("application/json")
        );
    }
    let response = server
        .client
        .post(server.url("/events"))
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"type":"T","data":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    server.stop().await;
}

#[tokio::test]
async fn unknown_events_and_streams_answer_404() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    let id = uuid::Uuid::now_v7();
    let (status, content_type, problem) = json(server.get(&format!("/events/{id}")).await).await;
    assert_eq!((status, content_type.as_str()), (404, PROBLEM));
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&id.to_string())
    );
    let (status, _, problem) = json(server.get("/streams/nobody/events").await).await;
    assert_eq!(status, 404);
    assert!(problem["detail"].as_str().unwrap().contains("nobody"));
    server.stop().await;
}

#[tokio::test]
async fn the_log_and_a_stream_page_forward_with_next() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    for n in 0..5 {
        let stream = if n % 2 == 0 { "even" } else { "odd" };
        server
            .post_json(
                "/events",
                &format!(r#"{{"stream":"{stream}","type":"N","data":{n}}}"#),
            )
            .await;
    }
    let (_, _, page) = json(server.get("/events?limit=2").await).await;
    assert_eq!(positions(&page), vec![0, 1]);
    assert_eq!(page["next"], 1);
    let (_, _, page) = json(server.get("/events?after=1&limit=2").await).await;
    assert_eq!(positions(&page), vec![2, 3]);
    assert_eq!(page["next"], 3);
    let (_, _, page) = json(server.get("/events?after=3&limit=2").await).await;
    assert_eq!(positions(&page), vec![4]);
    assert_eq!(page["next"], Value::Null);
    let (_, _, page) = json(server.get("/events?after=4").await).await;
    assert_eq!(
        (page["events"].clone(), page["next"].clone()),
        (j!([]), Value::Null)
    );
    let (_, _, page) = json(server.get("/events?limit=100000").await).await;
    assert_eq!(
        positions(&page).len(),
        5,
        "a large limit is capped, not refused"
    );

    let (_, _, page) = json(server.get("/streams/even/events?limit=2").await).await;
    let versions: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![0, 1]);
    assert_eq!(page["next"], 2);
    let (_, _, page) = json(server.get("/streams/even/events?from_version=2").await).await;
    assert_eq!(page["events"][0]["data"], 4);
    assert_eq!(page["next"], Value::Null);
    server.stop().await;
}

fn positions(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn with_a_token_every_event_route_answers_401_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_with(dir.path(), test_options(), Some("s3cret-token")).await;
    for (method, path) in [
        ("POST", "/events"),
        ("GET", "/events"),
        ("GET", "/streams/s/events"),
        ("POST", "/streams/s/events"),
        ("GET", "/subscribe"),
    ] {
        let request = server
            .client
            .request(method.parse().unwrap(), server.url(path));
        let response = request
            .header("authorization", "Bearer wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let (status, content_type, _) = json(response).await;
        assert_eq!(
            (status, content_type.as_str()),
            (401, PROBLEM),
            "{method} {path}"
        );
    }
    let response = server
        .client
        .post(server.url("/events"))
        .header("authorization", "Bearer s3cret-token")
        .header("content-type", "application/json")
        .body(r#"{"type":"T","data":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    server.stop().await;
}

#[tokio::test]
async fn events_survive_a_restart_in_the_middle_of_a_test() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        let (_, _, placed) = json(
            server
                .post_json(
                    "/events",
                    &format!(r#"{{"stream":"s","type":"N","data":"é{n}😀"}}"#),
                )
                .await,
        )
        .await;
        ids.push(placed["id"].as_str().unwrap().to_owned());
    }
    let server = server.restart().await;
    for (n, id) in ids.iter().enumerate() {
        let event = raw_event(server.get(&format!("/events/{id}")).await).await;
        assert_eq!(event.data.get(), format!("\"é{n}😀\""));
        assert_eq!(event.position, n as u64);
    }
    let (status, _, placed) = json(
        server
            .post_json(
                "/streams/s/events?expected_version=19",
                r#"{"type":"N","data":20}"#,
            )
            .await,
    )
    .await;
    assert_eq!((status, placed["position"].as_u64()), (201, Some(20)));
    server.stop().await;
}

#[tokio::test]
async fn after_the_log_is_closed_appends_answer_503_and_reads_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    let (_, _, placed) = json(
        server
            .post_json("/events", r#"{"type":"T","data":1}"#)
            .await,
    )
    .await;
    server.service.as_ref().unwrap().store().unwrap().close();
    let (status, content_type, problem) = json(
        server
            .post_json("/events", r#"{"type":"T","data":2}"#)
            .await,
    )
    .await;
    assert_eq!((status, content_type.as_str()), (503, PROBLEM));
    assert!(
        !problem["detail"].as_str().unwrap().contains("closed"),
        "5xx details are generic"
    );
    let event = raw_event(
        server
            .get(&format!("/events/{}", placed["id"].as_str().unwrap()))
            .await,
    )
    .await;
    assert_eq!(event.data.get(), "1");
    server.stop().await;
}

#[tokio::test]
async fn before_the_log_has_opened_every_route_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let service = eventstore::EventStoreService::new(eventstore::EventsSettings::new(
        dir.path(),
        test_options(),
    ));
    let server = common::serve(service, dir.path()).await;
    let response = server.get("/events").await;
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, content_type, _) = json(response).await;
    assert_eq!((status, content_type.as_str()), (503, PROBLEM));
    let (status, _, _) = json(
        server
            .post_json("/events", r#"{"type":"T","data":1}"#)
            .await,
    )
    .await;
    assert_eq!(status, 503);
    server.stop().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_its_error_statuses() {
    let document = serde_json::to_value(eventstore::openapi()).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = &document["paths"];
    for (path, method, statuses) in [
        (
            "/events",
            "post",
            &["200", "201", "400", "401", "409", "413", "415", "503"][..],
        ),
        ("/events", "get", &["200", "400", "401", "503"][..]),
        ("/events/{id}", "get", &["200", "400", "404"][..]),
        (
            "/streams/{stream}/events",
            "post",
            &["201", "409", "413", "415"][..],
        ),
        ("/streams/{stream}/events", "get", &["200", "404"][..]),
        ("/subscribe", "get", &["200", "400"][..]),
        (
            "/admin/scavenge",
            "post",
            &["202", "400", "401", "403", "409", "501"][..],
        ),
        ("/admin/scavenge/{id}", "get", &["200", "400", "404"][..]),
    ] {
        let responses = &paths[path][method]["responses"];
        for status in statuses {
            assert!(
                responses.get(status).is_some(),
                "{method} {path} documents {status}"
            );
        }
    }
    assert!(document["components"]["schemas"]["Problem"].is_object());

    // Each server-sent message is described (OpenAPI 3.2 `itemSchema`), its `data` as an event.
    let stream = &paths["/subscribe"]["get"]["responses"]["200"]["content"]["text/event-stream"];
    let event_message = &stream["itemSchema"]["oneOf"][0];
    assert_eq!(event_message["properties"]["event"]["enum"][0], "message");
    assert_eq!(
        event_message["properties"]["data"]["contentSchema"]["$ref"],
        "#/components/schemas/EventBody"
    );
    assert_eq!(stream["schema"]["type"], "array");
}
