//! # The web console
//!
//! `GET /console` serves a small single-page console for people who would rather look than
//! read JSON through curl: streams, a stream's events, one event, a live tail of `$all`, a
//! health view and, when the teams service runs, the teams admin.
//!
//! # Layout
//! - `assets/index.html`, `assets/console.css`, `assets/console.js`: the whole console,
//!   embedded at compile time with `include_str!` (the user runs no build step and the page
//!   needs no network beyond its own origin: no CDN, no external font, no framework).
//! - [`router`]: the routes `/console`, `/console/`, `/console/console.js`,
//!   `/console/console.css` and `/console/info.json` (which services run, the durability
//!   mode), each answered with the [security headers](SECURITY_HEADERS).
//!
//! The console is a face like any other: it only calls the public HTTP API of the process
//! (`/streams`, `/events`, `/subscribe`, `/metrics`, `/teams...`) with the caller's tokens,
//! so it can do nothing a curl could not. Its own routes need no token (they carry no data);
//! the API calls it makes do. Tokens (`EVENTS_TOKEN`, the admin token) are asked for once, on
//! the first 401, and kept in the tab's `sessionStorage` only: never in a URL, a cookie or
//! `localStorage`.
//!
//! Event data is never turned into HTML: the script builds every node with
//! `document.createElement` and `textContent`, and the Content-Security-Policy allows no
//! inline script, so a stored `<img onerror=...>` is shown as text.
//!
//! ```
//! let info = console::ConsoleInfo { events: true, teams: false, durability: Some("fsync".into()) };
//! let app: axum::Router = console::router(info);
//! # let _ = app;
//! ```

#![warn(missing_docs)]
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const CONSOLE_JS: &str = include_str!("../assets/console.js");
const CONSOLE_CSS: &str = include_str!("../assets/console.css");

/// The Content-Security-Policy of every console response: scripts and styles only from the
/// console's own files (no inline script, no `eval`), API calls only to this origin, no
/// framing, no forms posting elsewhere, no plugins. Images only as `data:` (none are used
/// today; the favicon is suppressed with an empty `data:` link).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Headers on every console response, besides the content type.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// What the console needs to know about the process serving it, answered at
/// `/console/info.json`. Holds no secret.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleInfo {
    /// The event store runs in this process.
    pub events: bool,
    /// The teams service runs in this process.
    pub teams: bool,
    /// The event log's durability mode as configured (`fsync`, `interval:<ms>`, `never`),
    /// or `postgresql` when the event store is on PostgreSQL; `None` without an event store.
    pub durability: Option<String>,
}

/// The console's routes, to be merged into the process's router.
pub fn router(info: ConsoleInfo) -> Router {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/console.js", get(script))
        .route("/console/console.css", get(style))
        .route("/console/info.json", get(info_json))
        .with_state(Arc::new(info))
}

fn asset(content_type: &'static str, cache: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    for (name, value) in SECURITY_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

/// The page itself is never cached, so a new binary's console shows at the next load; its
/// script and style may be cached briefly (they change only with the binary).
async fn index() -> Response {
    asset("text/html; charset=utf-8", "no-store", INDEX_HTML)
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        "public, max-age=300",
        CONSOLE_JS,
    )
}

async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        "public, max-age=300",
        CONSOLE_CSS,
    )
}

async fn info_json(State(info): State<Arc<ConsoleInfo>>) -> Response {
    let body = serde_json::to_string(info.as_ref()).unwrap_or_else(|_| "{}".to_owned());
    let mut response = asset("application/json", "no-store", "");
    *response.body_mut() = axum::body::Body::from(body);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn get_path(path: &str) -> Response {
        let info = ConsoleInfo {
            events: true,
            teams: true,
            durability: Some("fsync".into()),
        };
        router(info)
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn every_console_file_carries_the_strict_policy_and_nosniff() {
        for path in [
            "/console",
            "/console/",
            "/console/console.js",
            "/console/console.css",
            "/console/info.json",
        ] {
            let response = get_path(path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers();
            assert_eq!(
                headers["content-security-policy"], CONTENT_SECURITY_POLICY,
                "{path}"
            );
            assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        }
    }

    #[test]
    fn the_policy_allows_no_inline_script_and_no_framing() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self';"));
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_loads_only_its_own_files() {
        assert!(!INDEX_HTML.contains("<script>"), "no inline script");
        assert!(!INDEX_HTML.contains("style="), "no inline style");
        assert!(!INDEX_HTML.contains("<style"), "no inline style");
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"));
        assert!(INDEX_HTML.contains("src=\"/console/console.js\""));
    }

    #[test]
    fn the_script_never_assigns_html() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!CONSOLE_JS.contains(sink), "console.js uses {sink}");
        }
    }

    #[tokio::test]
    async fn info_names_the_services_and_the_durability_mode() {
        let response = get_path("/console/info.json").await;
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            info,
            serde_json::json!({"events": true, "teams": true, "durability": "fsync"})
        );
    }
}
