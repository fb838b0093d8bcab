//! Arbitrary request bodies against both services' routers (in process, no sockets): every
//! answer is below 500, and every error answer is an RFC 9457 problem. The first input byte
//! picks the route and the content type; the rest is the body.
#![no_main]

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const ADMIN_TOKEN: &str = "fuzz-admin-token-of-at-least-thirty-two-characters";

struct Apps {
    runtime: tokio::runtime::Runtime,
    events: Router,
    teams: Router,
    team_id: String,
    _dir: tempfile::TempDir,
}

fn apps() -> &'static Apps {
    static APPS: OnceLock<Apps> = OnceLock::new();
    APPS.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (events, teams, team_id) = runtime.block_on(async {
            let options = eventlog::Options {
                durability: eventlog::Durability::Never,
                ..eventlog::Options::default()
            };
            let settings = eventstore::EventsSettings::new(dir.path().join("events"), options);
            let events = eventstore::EventStoreService::start(settings).await.unwrap();
            let ctx = web::ServiceContext {
                production: false,
                data_dir: dir.path().to_path_buf(),
                local_addr: "127.0.0.1:8080".parse().unwrap(),
            };
            let args = teams::TeamsArgs {
                admin_token: Some(teams::Secret::new(ADMIN_TOKEN)),
                ..teams::TeamsArgs::default()
            };
            let settings = args.check(&ctx).await.unwrap();
            let teams = teams::TeamsService::start(settings).await.unwrap();
            let router = teams.router();
            let created = router
                .clone()
                .oneshot(
                    Request::post("/teams")
                        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from(r#"{"name":"fuzzers"}"#))
                        .unwrap(),
                )
                .await
                .unwrap();
            let body = axum::body::to_bytes(created.into_body(), 1 << 20).await.unwrap();
            let team: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let team_id = team["id"].as_str().unwrap().to_owned();
            std::mem::forget(teams); // keep its worker and pool alive for the whole run
            (events.router(), router, team_id)
        });
        Apps {
            runtime,
            events,
            teams,
            team_id,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let apps = apps();
    let (router, uri) = match selector % 6 {
        0 => (&apps.events, "/events".to_owned()),
        1 => (&apps.events, "/streams/fuzz/events?expected_version=any".to_owned()),
        2 => (&apps.teams, "/teams".to_owned()),
        3 => (&apps.teams, format!("/teams/{}/invitations", apps.team_id)),
        4 => (&apps.teams, "/invitations/accept".to_owned()),
        _ => (&apps.teams, format!("/teams/{}", apps.team_id)),
    };
    let method = if selector % 6 == 5 { "PATCH" } else { "POST" };
    let content_type = if selector & 0x80 == 0 {
        "application/json"
    } else {
        "text/plain"
    };
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_vec()))
        .unwrap();
    let response = apps
        .runtime
        .block_on(router.clone().oneshot(request))
        .unwrap();
    let status = response.status();
    assert!(status.as_u16() < 500, "a body produced {status}");
    if !status.is_success() && status.as_u16() != 207 {
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert_eq!(content_type, "application/problem+json", "{status} without a problem body");
    }
});
