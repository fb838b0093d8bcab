//! Streams over real HTTP (DESIGN.md, "Event store, second wave"): listing, state, backward
//! reads, soft delete, tombstone, metadata and retention, and their problems.

mod common;

use common::{TestServer, json, spawn};
use serde_json::{Value, json as j};

const PROBLEM: &str = "application/problem+json";

async fn append(server: &TestServer, stream: &str, n: usize) {
    for i in 0..n {
        let body = format!(r#"{{"type":"T","data":{i}}}"#);
        let (status, _, _) = json(
            server
                .post_json(&format!("/streams/{stream}/events"), &body)
                .await,
        )
        .await;
        assert_eq!(status, 201);
    }
}

async fn delete(server: &TestServer, path: &str) -> (u16, String, Value) {
    json(server.client.delete(server.url(path)).send().await.unwrap()).await
}

async fn put_metadata(server: &TestServer, stream: &str, body: &str) -> (u16, String, Value) {
    json(
        server
            .client
            .put(server.url(&format!("/streams/{stream}/metadata")))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn versions(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect()
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
async fn streams_are_listed_in_name_order_by_prefix_and_paged_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    for stream in ["order-2", "user-1", "order-1", "order-3"] {
        append(&server, stream, 1).await;
    }
    append(&server, "order-2", 1).await;
    let (status, _, page) = json(server.get("/streams?prefix=order-&limit=2").await).await;
    assert_eq!(status, 200);
    let names: Vec<_> = page["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["order-1", "order-2"]);
    assert_eq!(page["next"], "order-2");
    let second = &page["streams"][1];
    assert_eq!(
        (
            &second["version"],
            &second["first_version"],
            &second["events"]
        ),
        (&j!(1), &j!(0), &j!(2))
    );
    assert_eq!(second["last_position"], 4);
    assert!(second["updated_at"].as_str().unwrap().ends_with('Z'));
    let (_, _, rest) = json(server.get("/streams?prefix=order-&after=order-2").await).await;
    assert_eq!(rest["streams"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next"], Value::Null);
    let (_, _, all) = json(server.get("/streams").await).await;
    assert_eq!(all["streams"].as_array().unwrap().len(), 4);
    let (status, content_type, _) = json(server.get("/streams?limit=0").await).await;
    assert_eq!((status, content_type.as_str()), (400, PROBLEM));
    server.stop().await;
}

#[tokio::test]
async fn a_stream_state_has_its_versions_and_metadata_and_an_unknown_one_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    append(&server, "s", 3).await;
    let (status, _, state) = json(server.get("/streams/s").await).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&state["stream"], &state["version"], &state["events"]),
        (&j!("s"), &j!(2), &j!(3))
    );
    assert_eq!(state["metadata"], j!({}));
    let (status, content_type, problem) = json(server.get("/streams/nothing").await).await;
    assert_eq!((status, content_type.as_str()), (404, PROBLEM));
    assert_eq!(problem["type"], "/problems/not-found");
    server.stop().await;
}

#[tokio::test]
async fn a_stream_and_the_whole_log_read_backward_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    append(&server, "s", 5).await;
    append(&server, "other", 2).await;
    let (status, _, page) = json(
        server
            .get("/streams/s/events?direction=backward&limit=2")
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!((versions(&page), &page["next"]), (vec![4, 3], &j!(2)));
    let (_, _, page) = json(
        server
            .get("/streams/s/events?direction=backward&from_version=1")
            .await,
    )
    .await;
    assert_eq!((versions(&page), &page["next"]), (vec![1, 0], &Value::Null));

    let (_, _, page) = json(server.get("/events?direction=backward&limit=3").await).await;
    assert_eq!((positions(&page), &page["next"]), (vec![6, 5, 4], &j!(4)));
    let (_, _, page) = json(
        server
            .get("/events?direction=backward&before=4&limit=10")
            .await,
    )
    .await;
    assert_eq!(
        (positions(&page), &page["next"]),
        (vec![3, 2, 1, 0], &Value::Null)
    );
    let (_, _, page) = json(server.get("/events?direction=backward&before=0").await).await;
    assert_eq!(positions(&page), Vec::<u64>::new());
    let (status, _, _) = json(server.get("/events?direction=sideways").await).await;
    assert_eq!(status, 400);
    let (status, _, _) = json(server.get("/events?direction=backward&after=3").await).await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn a_soft_deleted_stream_answers_404_vanishes_from_all_and_continues_its_versions() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    append(&server, "gone", 3).await;
    append(&server, "kept", 1).await;
    let (status, _, problem) = delete(&server, "/streams/gone?expected_version=1").await;
    assert_eq!(status, 409);
    assert_eq!(problem["current_version"], 2);
    let (status, _, _) = delete(&server, "/streams/gone?expected_version=2").await;
    assert_eq!(status, 204);
    let (status, _, _) = json(server.get("/streams/gone/events").await).await;
    assert_eq!(status, 404);
    let (status, _, _) = json(server.get("/streams/gone").await).await;
    assert_eq!(status, 404);
    let (status, _, _) = delete(&server, "/streams/gone").await;
    assert_eq!(status, 404, "deleting it again finds nothing");
    let (_, _, all) = json(server.get("/events").await).await;
    let streams: Vec<_> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream"].as_str().unwrap())
        .collect();
    assert!(!streams.contains(&"gone"), "{streams:?}");
    let (_, _, list) = json(server.get("/streams").await).await;
    assert_eq!(list["streams"].as_array().unwrap().len(), 1);

    append(&server, "gone", 1).await;
    let (status, _, page) = json(server.get("/streams/gone/events").await).await;
    assert_eq!(status, 200);
    assert_eq!(
        versions(&page),
        vec![3],
        "versions continue after a soft delete"
    );
    let (_, _, state) = json(server.get("/streams/gone").await).await;
    assert_eq!(
        (&state["first_version"], &state["events"]),
        (&j!(3), &j!(1))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_tombstoned_stream_answers_410_to_reads_and_appends_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    append(&server, "dead", 2).await;
    let (status, _, _) = delete(&server, "/streams/dead?hard=true").await;
    assert_eq!(status, 204);
    let server = server.restart().await;
    for path in [
        "/streams/dead",
        "/streams/dead/events",
        "/streams/dead/metadata",
    ] {
        let (status, content_type, problem) = json(server.get(path).await).await;
        assert_eq!((status, content_type.as_str()), (410, PROBLEM), "{path}");
        assert_eq!(problem["type"], "/problems/stream-deleted");
    }
    let (status, _, problem) = json(
        server
            .post_json("/streams/dead/events", r#"{"type":"T","data":1}"#)
            .await,
    )
    .await;
    assert_eq!(
        (status, &problem["type"]),
        (410, &j!("/problems/stream-deleted"))
    );
    let (status, _, _) = put_metadata(&server, "dead", r#"{"max_count":1}"#).await;
    assert_eq!(status, 410);
    let (status, _, _) = delete(&server, "/streams/dead?hard=true").await;
    assert_eq!(status, 410);
    let (_, _, all) = json(server.get("/events").await).await;
    assert!(
        all["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["stream"] != "dead")
    );
    server.stop().await;
}

#[tokio::test]
async fn metadata_round_trips_and_retention_hides_events_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    append(&server, "s", 5).await;
    let (status, _, stored) = put_metadata(
        &server,
        "s",
        r#"{"max_count":2,"custom":{"owner":"ops","n":[1,2]}}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        stored,
        j!({"max_count": 2, "custom": {"owner": "ops", "n": [1, 2]}})
    );
    let (_, _, read) = json(server.get("/streams/s/metadata").await).await;
    assert_eq!(read, stored);
    let (_, _, page) = json(server.get("/streams/s/events").await).await;
    assert_eq!(versions(&page), vec![3, 4]);
    let (_, _, back) = json(server.get("/events?direction=backward").await).await;
    let live: Vec<_> = back["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stream"] == "s")
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(live, vec![4, 3]);

    let (status, _, _) = put_metadata(&server, "s", r#"{"truncate_before":4}"#).await;
    assert_eq!(status, 200);
    let (_, _, page) = json(server.get("/streams/s/events").await).await;
    assert_eq!(versions(&page), vec![4], "PUT replaces: max_count is gone");
    let (_, _, state) = json(server.get("/streams/s").await).await;
    assert_eq!(state["metadata"], j!({"truncate_before": 4}));

    let server = server.restart().await;
    let (_, _, page) = json(server.get("/streams/s/events").await).await;
    assert_eq!(
        versions(&page),
        vec![4],
        "the index rebuilt knows the metadata"
    );
    server.stop().await;
}

#[tokio::test]
async fn invalid_metadata_is_a_400_problem_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    append(&server, "s", 2).await;
    for body in [
        r#"{"max_count":0}"#,
        r#"{"max_age_seconds":-1}"#,
        r#"{"custom":{"$acl":1}}"#,
        r#"{"custom":[1]}"#,
        r#"{"unknown":1}"#,
        r#"not json"#,
    ] {
        let (status, content_type, problem) = put_metadata(&server, "s", body).await;
        assert_eq!((status, content_type.as_str()), (400, PROBLEM), "{body}");
        assert_eq!(problem["type"], "/problems/invalid-metadata", "{body}");
    }
    let (_, _, read) = json(server.get("/streams/s/metadata").await).await;
    assert_eq!(read, j!({}));
    let (status, _, _) = json(
        server
            .post_json("/streams/$$s/events", r#"{"type":"$metadata","data":{}}"#)
            .await,
    )
    .await;
    assert_eq!(
        status, 400,
        "metastreams are written through the metadata route"
    );
    let (status, _, _) = json(server.get("/streams/nothing/metadata").await).await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[test]
fn the_openapi_document_describes_the_stream_routes_and_their_problems() {
    let document = serde_json::to_value(eventstore::openapi()).unwrap();
    let paths = &document["paths"];
    for (path, method, statuses) in [
        ("/streams", "get", &["200", "400"][..]),
        ("/streams/{stream}", "get", &["200", "404", "410"][..]),
        (
            "/streams/{stream}",
            "delete",
            &["204", "404", "409", "410"][..],
        ),
        (
            "/streams/{stream}/metadata",
            "get",
            &["200", "404", "410"][..],
        ),
        (
            "/streams/{stream}/metadata",
            "put",
            &["200", "400", "409", "410"][..],
        ),
        (
            "/streams/{stream}/events",
            "get",
            &["200", "404", "410"][..],
        ),
        (
            "/streams/{stream}/events",
            "post",
            &["201", "409", "410"][..],
        ),
        ("/events", "post", &["201", "410"][..]),
    ] {
        let responses = &paths[path][method]["responses"];
        for status in statuses {
            assert!(
                responses.get(status).is_some(),
                "{method} {path} documents {status}"
            );
        }
    }
    let parameters = |path: &str| -> Vec<String> {
        paths[path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(parameters("/events").contains(&"before".to_owned()));
    assert!(parameters("/events").contains(&"direction".to_owned()));
    assert!(parameters("/streams/{stream}/events").contains(&"direction".to_owned()));
    for schema in ["StreamBody", "StreamListBody", "MetadataBody"] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "{schema}"
        );
    }
}

/// Reads by id are served from the engine's read cache, with their JSON kept beside the
/// cached event: a stream's truncation or deletion must still hide an event read (and
/// cached) before it, and the body served again must be the first one, byte for byte.
#[tokio::test]
async fn an_event_read_by_id_before_a_truncation_or_delete_is_hidden_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path()).await;
    append(&server, "s", 2).await;
    let (_, _, page) = json(server.get("/streams/s/events").await).await;
    let paths: Vec<String> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("/events/{}", e["id"].as_str().unwrap()))
        .collect();
    let mut first_bodies = Vec::new();
    for path in &paths {
        let response = server.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let body = response.text().await.unwrap();
        let again = server.get(path).await.text().await.unwrap();
        assert_eq!(again, body, "{path}: a cached read answers the same bytes");
        first_bodies.push(body);
    }

    let (status, _, _) = put_metadata(&server, "s", r#"{"truncate_before":1}"#).await;
    assert_eq!(status, 200);
    let (status, content_type, _) = json(server.get(&paths[0]).await).await;
    assert_eq!((status, content_type.as_str()), (404, PROBLEM), "truncated");
    let kept = server.get(&paths[1]).await.text().await.unwrap();
    assert_eq!(kept, first_bodies[1]);

    let (status, _, _) = delete(&server, "/streams/s").await;
    assert_eq!(status, 204);
    for path in &paths {
        let (status, _, _) = json(server.get(path).await).await;
        assert_eq!(status, 404, "{path} after the delete");
    }
    server.stop().await;
}
