//! The one middleware stack of the binary, applied once around every service's bare router.
//!
//! Services expose routers with only their own route policies (authentication, body limits,
//! rate limits). The binary wraps the merged router in [`stack`] (request ids, the request
//! span, panics answered as 500 problems) and each service's routes in [`timeout`] with that
//! service's request timeout, so every request of every service gets the same plumbing, the
//! same log fields and the same problem bodies.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};
use tower_http::catch_panic::{CatchPanic, CatchPanicLayer};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{Trace, TraceLayer};

use crate::Problem;

/// The stack every request passes, around a service: an `x-request-id` (the client's, or a
/// new one from a per-process counter), echoed on the response; an `info` span named
/// `request` with the method, the path (never the query string or a header) and the request
/// id; and a 500 problem, logged, when a handler panics.
///
/// The binary wraps its whole [`Dispatch`] in it once (a concrete service, no boxing); a
/// router that is served on its own can take it as a layer with [`stack`].
pub type Stack<S> = RequestIds<
    Trace<CatchPanic<S, PanicAnswer>, SharedClassifier<ServerErrorsAsFailures>, MakeRequestSpan>,
>;

/// How [`Stack`] names the request span.
type MakeRequestSpan = fn(&Request) -> tracing::Span;

/// How [`Stack`] answers a panic.
type PanicAnswer = fn(Box<dyn Any + Send + 'static>) -> Response;

/// `inner` inside the [`Stack`]. `ServiceBuilder` lists the outermost layer first.
pub fn around<S>(inner: S) -> Stack<S> {
    tower::ServiceBuilder::new()
        .layer(tower::layer::layer_fn(|inner| RequestIds {
            inner,
            ids: CountingRequestId::default(),
        }))
        .layer(TraceLayer::new_for_http().make_span_with(request_span as MakeRequestSpan))
        .layer(CatchPanicLayer::custom(panic_answer as PanicAnswer))
        .service(inner)
}

/// Wraps `router` in the [`Stack`], as one `Router::layer`: each `layer` call boxes every
/// route once more, and a request clones the boxed chain below each level it passes (the
/// clones grow with the square of the depth; they were a tenth of a read by id, issue 15).
pub fn stack(router: Router) -> Router {
    router.layer(tower::layer::layer_fn(around))
}

fn request_span(request: &Request) -> tracing::Span {
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
}

fn panic_answer(_panic: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    Problem::internal().into_response()
}

/// A route answered without the router: the request, or back when it is not one of its own.
/// Whoever answers must give exactly what the router would (the same handler, the same
/// authentication); this only skips the router's matching and the boxed service levels each
/// route sits in (docs/PERFORMANCE.md, issue 15).
pub type HotRoute = Arc<dyn Fn(Request) -> Result<HotFuture, Request> + Send + Sync>;

/// What a [`HotRoute`] answers with.
pub type HotFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// The binary's one service below the [`Stack`]: the hot route, with the request time limit
/// its router's routes have ([`timeout`]), or else the router.
#[derive(Clone)]
pub struct Dispatch {
    router: Router,
    hot: Option<HotRoute>,
    limit: Duration,
}

impl Dispatch {
    /// `hot` first (its answers cut at `limit`, as [`timeout`] cuts the router's), then `router`.
    pub fn new(router: Router, hot: Option<HotRoute>, limit: Duration) -> Dispatch {
        Dispatch { router, hot, limit }
    }
}

impl Service<Request> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = DispatchFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> DispatchFuture {
        let request = match &self.hot {
            Some(hot) => match hot(request) {
                Ok(answer) => {
                    return DispatchFuture::Hot {
                        future: TimeoutFuture {
                            inner: tokio::time::timeout(self.limit, HotAnswer(answer)),
                            limit: self.limit,
                        },
                    };
                }
                Err(request) => request,
            },
            None => request,
        };
        DispatchFuture::Routed {
            future: self.router.call(request),
        }
    }
}

pub use dispatch_future::DispatchFuture;

/// The future of [`Dispatch`], in a module of its own: `pin_project_lite` cannot carry
/// documentation on enum fields.
mod dispatch_future {
    #![allow(missing_docs)]

    use super::*;

    pin_project_lite::pin_project! {
        /// The hot route's answer or the router's.
        #[project = DispatchProjection]
        pub enum DispatchFuture {
            /// Answered by the hot route.
            Hot {
                #[pin]
                future: TimeoutFuture<HotAnswer>,
            },
            /// Answered by the router.
            Routed {
                #[pin]
                future: axum::routing::future::RouteFuture<Infallible>,
            },
        }
    }

    impl Future for DispatchFuture {
        type Output = Result<Response, Infallible>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project() {
                DispatchProjection::Hot { future } => future.poll(cx),
                DispatchProjection::Routed { future } => future.poll(cx),
            }
        }
    }
}

/// A [`HotFuture`] as a service's future.
pub struct HotAnswer(HotFuture);

impl Future for HotAnswer {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

/// Answers 503 (a problem) when producing a response head takes longer than `limit`.
/// Streaming bodies (server-sent events) are not cut: the limit covers the handler, not the
/// body it streams.
pub fn timeout(router: Router, limit: Duration) -> Router {
    router.layer(TimeoutLayer { limit })
}

/// The layer of [`timeout`]: a plain tower service rather than `axum::middleware::from_fn`,
/// which boxes a future and clones the inner service per request (together 5% of the
/// instructions of a read by id; docs/PERFORMANCE.md, issue 15).
#[derive(Clone, Copy)]
struct TimeoutLayer {
    limit: Duration,
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = RequestTimeout<S>;

    fn layer(&self, inner: S) -> RequestTimeout<S> {
        RequestTimeout {
            inner,
            limit: self.limit,
        }
    }
}

/// See [`TimeoutLayer`].
#[derive(Clone)]
struct RequestTimeout<S> {
    inner: S,
    limit: Duration,
}

impl<S> Service<Request> for RequestTimeout<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        TimeoutFuture {
            inner: tokio::time::timeout(self.limit, self.inner.call(request)),
            limit: self.limit,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of the inner service, or the timeout problem.
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        limit: Duration,
    }
}

impl<F> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(response)) => Poll::Ready(response),
            Poll::Ready(Err(_elapsed)) => {
                Poll::Ready(Ok(timeout_problem(*this.limit).into_response()))
            }
        }
    }
}

/// The problem of a request over its time limit. The work may still finish on the server, so
/// the detail says how to retry safely.
pub fn timeout_problem(limit: Duration) -> Problem {
    Problem::unavailable(format!(
        "the request took longer than {} s; it may still complete, so retry it with the same event id or Idempotency-Key",
        limit.as_secs()
    ))
}

/// The request id header, set on the request when the client sent none.
const X_REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// The outermost service of the [`Stack`]: the request's `x-request-id` (the client's, or a new
/// one from [`CountingRequestId`] put into the request's headers, where the span reads it),
/// echoed on the response unless the response set its own. What tower-http's `SetRequestId`
/// and `PropagateRequestId` do together, minus what nothing here reads: the id as an
/// extension of the request and of the response (two map allocations and inserts per request,
/// 1,900 instructions of a read by id; issue 15).
#[derive(Clone)]
pub struct RequestIds<S> {
    inner: S,
    ids: CountingRequestId,
}

impl<S, ReqBody, ResBody> Service<axum::http::Request<ReqBody>> for RequestIds<S>
where
    S: Service<axum::http::Request<ReqBody>, Response = axum::http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = EchoRequestId<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<ReqBody>) -> Self::Future {
        let id = match request.headers().get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = self.ids.next_id();
                request.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        EchoRequestId {
            inner: self.inner.call(request),
            id: Some(id),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RequestIds`]: the inner answer with the request id on it.
    pub struct EchoRequestId<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, ResBody, E> Future for EchoRequestId<F>
where
    F: Future<Output = Result<axum::http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(id) = this.id.take()
            && !response.headers().contains_key(&X_REQUEST_ID)
        {
            response.headers_mut().insert(X_REQUEST_ID, id);
        }
        Poll::Ready(Ok(response))
    }
}

/// Request ids from a counter: unique per process (`<pid in hex>-<n>`), and cheaper than a
/// random UUID per request. Written into a stack buffer: no formatting machinery, no
/// allocation beyond the header value. Each thread takes numbers from the process's counter
/// in blocks of [`REQUEST_ID_BLOCK`]: one shared counter bumped by every request of every
/// serving thread was a cache line moving between cores on every request (issue 15). So a
/// thread's ids count up one by one, and ids of different threads interleave.
#[derive(Clone)]
pub struct CountingRequestId {
    prefix: Arc<str>,
}

/// Numbers a thread takes from the shared counter at a time.
pub const REQUEST_ID_BLOCK: u64 = 1024;

/// The next block of request id numbers.
static NEXT_REQUEST_ID_BLOCK: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's next request id number and the end of its block.
    static REQUEST_ID_NUMBERS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

impl Default for CountingRequestId {
    fn default() -> Self {
        CountingRequestId {
            prefix: format!("{:x}-", std::process::id()).into(),
        }
    }
}

impl CountingRequestId {
    /// The next id.
    pub fn next_id(&self) -> HeaderValue {
        let id = REQUEST_ID_NUMBERS.with(|numbers| {
            let (mut next, mut end) = numbers.get();
            if next == end {
                next = NEXT_REQUEST_ID_BLOCK.fetch_add(REQUEST_ID_BLOCK, Ordering::Relaxed);
                end = next.wrapping_add(REQUEST_ID_BLOCK);
            }
            numbers.set((next.wrapping_add(1), end));
            next
        });
        Self::format(&self.prefix, id)
    }

    fn format(prefix: &str, id: u64) -> HeaderValue {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = id;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let mut value = Vec::with_capacity(prefix.len() + digits.len() - at);
        value.extend_from_slice(prefix.as_bytes());
        value.extend_from_slice(&digits[at..]);
        HeaderValue::from_maybe_shared(axum::body::Bytes::from(value))
            .expect("a hexadecimal prefix, a dash and digits are a header value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_pid_and_a_counter_unique_across_threads() {
        let ids = CountingRequestId::default();
        let pid = format!("{:x}", std::process::id());
        let number = |id: HeaderValue| -> u64 {
            let id = id.to_str().unwrap().to_owned();
            let (prefix, n) = id.split_once('-').unwrap();
            assert_eq!(prefix, pid);
            n.parse().unwrap()
        };
        let first = number(ids.next_id());
        assert_eq!(number(ids.next_id()), first + 1, "one thread counts up");
        let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..2 * REQUEST_ID_BLOCK)
                            .map(|_| number(ids.next_id()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for handle in handles {
                for n in handle.join().unwrap() {
                    assert!(seen.insert(n), "{n} given twice");
                }
            }
        });
        assert!(!seen.contains(&first) && !seen.contains(&(first + 1)));
        for (id, expected) in [
            (0, "0"),
            (1_234_567_890_123, "1234567890123"),
            (u64::MAX, "18446744073709551615"),
        ] {
            assert_eq!(
                CountingRequestId::format("1f-", id),
                format!("1f-{expected}").as_str()
            );
        }
    }

    /// A handler that answers `ok`, or never answers.
    fn routes(limit: Duration) -> Router {
        use axum::routing::get;
        timeout(
            Router::new()
                .route("/fast", get(|| async { "ok" }))
                .route("/never", get(std::future::pending::<&'static str>)),
            limit,
        )
    }

    async fn call(router: Router, path: &str) -> (axum::http::StatusCode, String, String) {
        use tower::ServiceExt;
        let response = router
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_handler_within_the_limit_answers_and_one_past_it_gets_a_503_problem() {
        let (status, _, body) = call(routes(Duration::from_secs(60)), "/fast").await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "ok"));

        let (status, content_type, body) = call(routes(Duration::from_millis(50)), "/never").await;
        assert_eq!(status.as_u16(), 503);
        assert_eq!(content_type, "application/problem+json");
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["status"], 503);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("retry it with the same event id"),
            "{problem}"
        );
    }
}
