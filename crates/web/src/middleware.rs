//! The one middleware stack of the binary, applied once around every service's bare router.
//!
//! Services expose routers with only their own route policies (authentication, body limits,
//! rate limits). The binary wraps the merged router in [`stack`] (request ids, the request
//! span, panics answered as 500 problems) and each service's routes in [`timeout`] with that
//! service's request timeout, so every request of every service gets the same plumbing, the
//! same log fields and the same problem bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::Problem;

/// Wraps `router` in the stack every request passes: an `x-request-id` (the client's, or a
/// new one from a per-process counter), echoed on the response; an `info` span named
/// `request` with the method, the path (never the query string or a header) and the request
/// id; and a 500 problem, logged, when a handler panics.
pub fn stack(router: Router) -> Router {
    router
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            Problem::internal().into_response()
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id
                )
            }),
        )
        .layer(SetRequestIdLayer::x_request_id(CountingRequestId::default()))
}

/// Answers 503 (a problem) when producing a response head takes longer than `limit`.
/// Streaming bodies (server-sent events) are not cut: the limit covers the handler, not the
/// body it streams.
pub fn timeout(router: Router, limit: Duration) -> Router {
    router.layer(middleware::from_fn_with_state(limit, request_timeout))
}

/// The problem of a request over its time limit. The work may still finish on the server, so
/// the detail says how to retry safely.
pub fn timeout_problem(limit: Duration) -> Problem {
    Problem::unavailable(format!(
        "the request took longer than {} s; it may still complete, so retry it with the same event id or Idempotency-Key",
        limit.as_secs()
    ))
}

async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => timeout_problem(limit).into_response(),
    }
}

/// Request ids from a counter: unique per process, and cheaper than a random UUID per request.
#[derive(Clone, Default)]
struct CountingRequestId {
    next: Arc<AtomicU64>,
}

impl MakeRequestId for CountingRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:x}-{id}", std::process::id()))
            .ok()
            .map(RequestId::new)
    }
}
