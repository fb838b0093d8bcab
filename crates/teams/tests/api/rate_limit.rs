//! The token endpoints are rate-limited per client address (`ACCEPT_RATE_PER_MINUTE`), and
//! every answer about a token is `Cache-Control: no-store`.

use std::net::{IpAddr, Ipv4Addr};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Db, TestApp, spawn_app_with, spawn_app_without_connect_info, token_in};

/// A client whose connections come from `source` (any 127.0.0.0/8 address works on Linux).
fn client_from(source: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .build()
        .unwrap()
}

async fn post_token(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    token: &str,
) -> reqwest::Response {
    client
        .post(format!("{}{path}", app.base))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap()
}

fn assert_no_store(response: &reqwest::Response, what: &str) {
    assert_eq!(response.headers()["cache-control"], "no-store", "{what}");
    assert_eq!(
        response.headers()["referrer-policy"],
        "no-referrer",
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_address_over_accept_rate_per_minute_gets_429_with_retry_after_and_others_do_not()
{
    let app = spawn_app_with(Db::Sqlite, |args| args.accept_rate_per_minute = 3).await;
    let team = app.create_team("Core").await;
    app.invite(&team, &["alice@example.com"]).await;
    let token = token_in(&app.mail_files(1).await[0], &app.frontend_url);

    let first = client_from(Ipv4Addr::new(127, 0, 0, 1));
    // Preview and accept draw on one budget: 3 requests pass (unknown tokens: 404)...
    for path in [
        "/invitations/preview",
        "/invitations/accept",
        "/invitations/preview",
    ] {
        let response = post_token(&app, &first, path, "unknown-token").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_no_store(&response, path);
    }
    // ...the 4th, to either endpoint, is refused, even with a valid token.
    for path in ["/invitations/accept", "/invitations/preview"] {
        let response = post_token(&app, &first, path, &token).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert_no_store(&response, path);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (1..=20).contains(&retry_after),
            "60 s / 3 = 20 s at most: {retry_after}"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["status"], 429);
        assert_eq!(body["retry_after_seconds"], retry_after);
    }
    // Another address has its own budget, and the token it presents still works.
    let second = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let accepted = post_token(&app, &second, "/invitations/accept", &token).await;
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_no_store(&accepted, "accepted");
    // The admin API and the accept page are not limited.
    for _ in 0..5 {
        let page = first
            .get(format!("{}/invite", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
    }
    app.create_team("Admin is not limited").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_without_connect_info_the_token_endpoints_share_one_limit_and_never_fail() {
    let app =
        spawn_app_without_connect_info(Db::Sqlite, |args| args.accept_rate_per_minute = 2).await;
    let first = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let second = client_from(Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(
        post_token(&app, &first, "/invitations/accept", "x")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post_token(&app, &second, "/invitations/preview", "x")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let refused = post_token(&app, &second, "/invitations/accept", "x").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_the_token_endpoints_is_no_store_including_errors() {
    let app = spawn_app_with(Db::Sqlite, |args| args.teams_max_body_bytes = 1024).await;
    let client = reqwest::Client::new();
    for path in ["/invitations/accept", "/invitations/preview"] {
        let url = format!("{}{path}", app.base);
        let cases = [
            (
                "malformed",
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body("{"),
            ),
            (
                "not JSON",
                client
                    .post(&url)
                    .header("content-type", "text/plain")
                    .body("{}"),
            ),
            (
                "too large",
                client.post(&url).json(&json!({"token": "x".repeat(4096)})),
            ),
            (
                "unknown",
                client.post(&url).json(&json!({"token": "unknown"})),
            ),
        ];
        for (what, request) in cases {
            let response = request.send().await.unwrap();
            assert!(
                response.status().is_client_error(),
                "{path} {what}: {}",
                response.status()
            );
            assert_no_store(&response, &format!("{path} {what}"));
        }
    }
    app.stop().await;
}

/// Three requests to `/invitations/preview` claiming to come from `forwarded`.
async fn preview_as(app: &TestApp, forwarded: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!("{}/invitations/preview", app.base))
        .header("x-forwarded-for", forwarded)
        .json(&json!({ "token": "unknown-token" }))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_x_forwarded_for_is_ignored_and_clients_share_the_peers_limit() {
    let app = spawn_app_with(Db::Sqlite, |args| args.accept_rate_per_minute = 2).await;
    assert_eq!(
        preview_as(&app, "198.51.100.1").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        preview_as(&app, "198.51.100.2").await,
        StatusCode::NOT_FOUND
    );
    // Forged addresses do not buy a fresh bucket.
    assert_eq!(
        preview_as(&app, "198.51.100.3").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit_and_audit_address() {
    let app = spawn_app_with(Db::Sqlite, |args| {
        args.accept_rate_per_minute = 2;
        args.trusted_proxies = Some("127.0.0.0/8, ::1".into());
    })
    .await;
    assert_eq!(
        preview_as(&app, "198.51.100.1").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        preview_as(&app, "198.51.100.1").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        preview_as(&app, "198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy; its left-most hop is a forgery.
    assert_eq!(
        preview_as(&app, "203.0.113.7, 198.51.100.2").await,
        StatusCode::NOT_FOUND
    );
    // The audit trail records the forwarded client.
    let created = app
        .admin(reqwest::Method::POST, "/teams")
        .header("x-forwarded-for", "192.0.2.44")
        .header("x-request-id", "request-from-the-proxy")
        .json(&json!({ "name": "Core" }))
        .send()
        .await
        .unwrap();
    let team: serde_json::Value = created.json().await.unwrap();
    let audit = app
        .get_json(&format!("/teams/{}/audit", team["id"].as_str().unwrap()))
        .await;
    assert_eq!(audit["entries"][0]["client_address"], "192.0.2.44");
    assert_eq!(audit["entries"][0]["request_id"], "request-from-the-proxy");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cors_preflight_from_the_frontend_origin_is_allowed_and_from_others_refused() {
    let app = spawn_app_with(Db::Sqlite, |args| {
        args.frontend_url = Some("https://app.example.com/welcome".into());
    })
    .await;
    let preflight = |origin: &'static str, path: &'static str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, format!("{}{path}", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    for path in ["/invitations/preview", "/invitations/accept"] {
        let allowed = preflight("https://app.example.com", path).await.unwrap();
        assert_eq!(allowed.status(), StatusCode::NO_CONTENT, "{path}");
        let headers = allowed.headers();
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert!(
            headers["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
        assert!(
            headers["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("content-type")
        );
        assert!(headers.get("access-control-allow-credentials").is_none());
        let refused = preflight("https://evil.example.net", path).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(
            refused
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
    }
    let actual = reqwest::Client::new()
        .post(format!("{}/invitations/preview", app.base))
        .header("origin", "https://app.example.com")
        .json(&json!({ "token": "unknown-token" }))
        .send()
        .await
        .unwrap();
    assert_eq!(actual.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        actual.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(actual.headers()["vary"], "origin");
    // The admin API has no CORS.
    let admin = reqwest::Client::new()
        .get(format!("{}/teams", app.base))
        .header("origin", "https://app.example.com")
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert!(admin.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}
