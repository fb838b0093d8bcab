//! CORS on the public token endpoints (`POST /invitations/preview`, `POST /invitations/accept`):
//! a frontend served from `FRONTEND_URL`'s origin may call them from a browser, and no other
//! origin may. The admin API has no CORS at all (an admin token does not belong in a browser
//! on another origin).
//!
//! A preflight (`OPTIONS` with `Access-Control-Request-Method`) from the allowed origin gets
//! 204 with the allowed method and header; from any other origin it gets a 403 problem. Actual
//! requests from the allowed origin get `Access-Control-Allow-Origin`; every answer says
//! `Vary: Origin`, so a cache never serves one origin's answer to another. No credentials are
//! allowed (the endpoints take the token in the body, never a cookie).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECONDS: &str = "600";

/// The CORS middleware of the token routes.
pub(crate) async fn allow_frontend_origin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = origin
        .as_ref()
        .is_some_and(|origin| origin.as_bytes() == state.settings.frontend_origin.as_bytes());
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        if allowed {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECONDS),
            );
            response
        } else {
            web::Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this origin may not call the invitation endpoints; only FRONTEND_URL's origin may",
            )
            .into_response()
        }
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if allowed && let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    response
}

/// The `OPTIONS` route of the token endpoints (the middleware answers preflights; a bare
/// `OPTIONS` without `Access-Control-Request-Method` lists the allowed method).
pub(crate) async fn options() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    response
}
