//! The app built in-process on port 0: operations routes and both services on one address.

use logbook::cli::ServeConfig;
use logbook::{App, CommonArgs};

async fn spawn_app(
    events: bool,
    teams: bool,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        common: CommonArgs::new("127.0.0.1:0", dir.path()),
        events: events.then(eventstore::EventsArgs::default),
        teams: teams.then(teams::TeamsArgs::default),
    };
    let app = App::build(config).await.expect("the app starts");
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    (base, stop, task, dir)
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while client
        .get(format!("{base}/health"))
        .send()
        .await
        .map(|r| r.status())
        .ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(std::time::Instant::now() < deadline, "not ready in time");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn plain_serve_answers_health_metrics_and_one_openapi_document_for_both_services() {
    let (base, stop, task, _dir) = spawn_app(true, true).await;
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    let response = client
        .post(format!("{base}/events"))
        .header("content-type", "application/json")
        .body(r#"{"type":"T","data":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(response.headers().contains_key("x-request-id"));

    let document: serde_json::Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    for path in [
        "/events",
        "/events/{id}",
        "/streams/{stream}/events",
        "/subscribe",
        "/health",
        "/metrics",
        "/teams",
    ] {
        assert!(
            document["paths"].get(path).is_some(),
            "openapi documents {path}"
        );
    }

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "logbook_uptime_seconds",
        "logbook_events_requests_total{route=\"append\",status=\"201\"} 1",
        "logbook_events_append_duration_seconds_bucket",
        "logbook_events_commit_batch_events_count",
        "logbook_events_fsync_duration_seconds_count",
        "logbook_events_stored 1",
        "logbook_events_log_bytes",
    ] {
        assert!(metrics.contains(name), "metrics has {name}:\n{metrics}");
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn serve_events_alone_documents_no_teams_routes_and_serves_none() {
    let (base, stop, task, _dir) = spawn_app(true, false).await;
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    let document: serde_json::Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["paths"].get("/teams").is_none());
    assert_eq!(
        client
            .get(format!("{base}/teams"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// Constraints Schemathesis (scripts/schemathesis) found missing or wrong in the document: each
/// made the document describe requests the API rejects, or reject requests it accepts.
#[test]
fn the_openapi_document_states_the_constraints_the_handlers_enforce() {
    let document = serde_json::to_value(logbook::app::openapi_document(true, true)).unwrap();
    let schemas = &document["components"]["schemas"];
    // An append body is one event (an object) or a batch (an array), not {"One": ...}.
    let append = serde_json::to_string(&schemas["AppendRequest"]).unwrap();
    assert!(
        append.contains("\"type\":\"array\"") && !append.contains("\"Batch\""),
        "{append}"
    );
    let limit = |path: &str| {
        document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|parameter| parameter["name"] == "limit")
            .unwrap_or_else(|| panic!("{path} has a limit"))["schema"]
            .clone()
    };
    for path in [
        "/events",
        "/streams/{stream}/events",
        "/teams",
        "/teams/{team_id}/members",
    ] {
        let schema = limit(path);
        assert_eq!(schema["minimum"], 1, "{path}: limit=0 is a 400");
        assert_ne!(
            schema["format"], "int32",
            "{path}: limits above 2^31 are accepted (capped)"
        );
    }
    assert_eq!(schemas["CreateTeam"]["properties"]["name"]["minLength"], 1);
    let emails = &schemas["InviteRequest"]["properties"]["emails"];
    assert_eq!(emails["minItems"], 1);
    assert_eq!(emails["maxItems"], 100);
}
