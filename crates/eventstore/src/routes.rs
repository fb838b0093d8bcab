//! The HTTP routes of the event store and their OpenAPI description (generated from these
//! handlers' annotations, so the document cannot drift from the code).

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use events::{DeleteMode, EventStore, ExpectedVersion, ListStreams, ReadAll, ReadStream, Start};
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use uuid::Uuid;
use web::Problem;
use web::auth::Access;

use crate::access::readable;
use crate::error::ApiError;
use crate::metrics::Route;
use crate::model::{
    AppendRequest, AppendResponse, DEFAULT_STREAM, EventBody, LogPage, MetadataBody, NewEventBody,
    PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, PlacedBody, StreamBody, StreamListBody, StreamPage,
};
use crate::service::EventStoreService;
use crate::subscribe::{self, SseItemSchema};

pub(crate) fn router(service: EventStoreService) -> Router {
    let body_limit = service.body_limit_bytes();
    Router::new()
        .route("/events", post(append).get(read_all))
        .route("/events/{id}", get(get_event))
        .route(
            "/streams/{stream}/events",
            post(append_to_stream).get(read_stream),
        )
        .route("/streams", get(list_streams))
        .route("/streams/{stream}", get(stream_state).delete(delete_stream))
        .route(
            "/streams/{stream}/metadata",
            get(get_metadata).put(put_metadata),
        )
        .route("/subscribe", get(subscribe::subscribe))
        .route("/admin/scavenge", post(crate::admin::start_scavenge))
        .route("/admin/scavenge/{id}", get(crate::admin::scavenge_status))
        // One level around each route, not two (see `web::middleware::stack`).
        .route_layer(
            tower::ServiceBuilder::new()
                .layer(web::auth::require_access(service.authenticator()))
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(service)
}

impl EventStoreService {
    /// Turns a route's outcome into the response and counts it.
    pub(crate) fn finish(
        &self,
        route: Route,
        started: Instant,
        result: Result<Response, ApiError>,
    ) -> Response {
        let response = result.unwrap_or_else(IntoResponse::into_response);
        self.inner
            .metrics
            .request(route, response.status().as_u16(), started.elapsed());
        response
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AppendQuery {
    /// `any` (default), `none` (the stream must have no events) or a version number (the
    /// stream's last event must have it).
    expected_version: Option<String>,
}

/// Which way a read goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ReadDirection {
    /// Oldest first (the default).
    #[default]
    Forward,
    /// Newest first.
    Backward,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadAllQuery {
    /// Forward only. Exclusive: read events after this position (omitted: from the start).
    after: Option<u64>,
    /// Backward only. Exclusive: read events before this position (omitted: from the end).
    before: Option<u64>,
    /// `forward` (default, oldest first) or `backward` (newest first).
    direction: Option<ReadDirection>,
    /// Page size, default 100, capped at 1000.
    #[param(minimum = 1)]
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadStreamQuery {
    /// Inclusive: the first version to read (forward: default 0; backward: default the last
    /// version).
    from_version: Option<u64>,
    /// `forward` (default, oldest first) or `backward` (newest first).
    direction: Option<ReadDirection>,
    /// Page size, default 100, capped at 1000.
    #[param(minimum = 1)]
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListStreamsQuery {
    /// Only streams whose name starts with this (metastreams `$$...` only when it starts with
    /// `$$`).
    prefix: Option<String>,
    /// Exclusive: streams whose name sorts after this one (byte order).
    after: Option<String>,
    /// Page size, default 100, capped at 1000.
    #[param(minimum = 1)]
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteQuery {
    /// `any` (default) or the version the stream's last event must have (`none` never
    /// matches a stream that exists).
    expected_version: Option<String>,
    /// `true`: a tombstone (the name can never be written or read again); default `false`,
    /// a soft delete (appending again recreates the stream, versions continue).
    hard: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct MetadataQuery {
    /// `any` (default), `none` or the version the metadata stream (`$$<stream>`, one event
    /// per change) must be at: KurrentDB's expected version of a metadata write.
    expected_version: Option<String>,
}

fn parse_expected_version(raw: Option<&str>) -> Result<ExpectedVersion, ApiError> {
    match raw {
        None | Some("any") => Ok(ExpectedVersion::Any),
        Some("none") => Ok(ExpectedVersion::NoStream),
        Some(number) => number.parse().map(ExpectedVersion::Exact).map_err(|_| {
            ApiError::BadRequest(format!(
                "expected_version must be a number, `none` or `any`, got {number:?}"
            ))
        }),
    }
}

const PAGE_LIMITS: web::paging::PageLimits = web::paging::PageLimits {
    default: PAGE_LIMIT_DEFAULT as u32,
    max: PAGE_LIMIT_MAX as u32,
};

fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    PAGE_LIMITS
        .resolve(limit.map(|limit| limit as u64))
        .map(|limit| limit as usize)
        .map_err(ApiError::BadRequest)
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
}

fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(path)| path)
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
}

/// The body of an append: JSON, within the derived body limit.
fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body must be `Content-Type: application/json`, got {:?}",
            content_type
        )));
    }
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(
                "the body is larger than the largest batch (max_batch_size_bytes plus JSON framing)".into(),
            )
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })
}

/// Append one event (an object) or an atomic batch (an array).
#[utoipa::path(
    post, path = "/events", tag = "events",
    request_body(content = AppendRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored and fsynced", body = AppendResponse),
        (status = 200, description = "Idempotent repeat: the original placement", body = AppendResponse),
        (status = 400, description = "Malformed event or batch", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown bearer token (EVENTS_TOKEN, EVENTS_TOKENS_FILE)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope (`missing_scope`) for this stream", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The id exists with different content", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "A stream of the batch is tombstoned (`/problems/stream-deleted`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "An event or the batch is over a limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log cannot write (reads still work) or is still opening", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("events_token" = []))
)]
async fn append(
    State(service): State<EventStoreService>,
    access: Access,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = do_append(
        &service,
        &access,
        None,
        ExpectedVersion::Any,
        &headers,
        body,
    )
    .await;
    service.finish(Route::Append, started, result)
}

/// Append to one stream with optimistic concurrency.
#[utoipa::path(
    post, path = "/streams/{stream}/events", tag = "events",
    params(("stream" = String, Path, description = "The stream name"), AppendQuery),
    request_body(content = AppendRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored and fsynced", body = AppendResponse),
        (status = 200, description = "Idempotent repeat: the original placement", body = AppendResponse),
        (status = 400, description = "Malformed event, batch or expected_version", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown bearer token (EVENTS_TOKEN, EVENTS_TOKENS_FILE)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope (`missing_scope`) for this stream", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Wrong expected version (`current_version` says the stream's version) or id conflict", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream is tombstoned (`/problems/stream-deleted`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "An event or the batch is over a limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log cannot write (reads still work) or is still opening", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("events_token" = []))
)]
async fn append_to_stream(
    State(service): State<EventStoreService>,
    access: Access,
    stream: Result<Path<String>, PathRejection>,
    expected: Result<Query<AppendQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let stream = path(stream)?;
        let expected = parse_expected_version(query(expected)?.expected_version.as_deref())?;
        do_append(&service, &access, Some(&stream), expected, &headers, body).await
    }
    .await;
    service.finish(Route::StreamAppend, started, result)
}

async fn do_append(
    service: &EventStoreService,
    access: &Access,
    stream: Option<&str>,
    expected: ExpectedVersion,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(headers, body)?;
    let store = service.ready_backend()?;
    let request = AppendRequest::parse(&body)?;
    let single = matches!(request, AppendRequest::One(_));
    let events = request
        .into_events()
        .into_iter()
        .map(|event: NewEventBody<'_>| {
            if let (Some(path_stream), Some(body_stream)) = (stream, event.stream.as_deref())
                && path_stream != body_stream
            {
                return Err(ApiError::BadRequest(format!(
                    "the event names stream {body_stream:?} but is posted to stream {path_stream:?}"
                )));
            }
            event.into_new_event(stream.unwrap_or(DEFAULT_STREAM))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for event in &events {
        access.check_append(&event.stream)?;
    }
    let appended = store.append(events, expected).await?;
    let status = if appended.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut placed = appended.events.into_iter().map(PlacedBody::from);
    let body = if single {
        AppendResponse::One(placed.next().expect("one event placed"))
    } else {
        AppendResponse::Batch {
            events: placed.collect(),
        }
    };
    Ok((status, axum::Json(body)).into_response())
}

/// One event by id.
#[utoipa::path(
    get, path = "/events/{id}", tag = "events",
    params(("id" = Uuid, Path, description = "The event id")),
    responses(
        (status = 200, description = "The event", body = EventBody),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown bearer token (EVENTS_TOKEN, EVENTS_TOKENS_FILE)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope (`missing_scope`) for this stream", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No event has this id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log is still opening", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("events_token" = []))
)]
async fn get_event(
    State(service): State<EventStoreService>,
    access: Access,
    id: Result<Path<Uuid>, PathRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let id = path(id)?;
        let store = service.ready_backend()?;
        let body = store
            .get_rendered(
                id,
                // Another prefix's event is "not found": a scoped token learns nothing of it.
                |stream| access.can_read(stream),
                // The event's body depends on the event alone (the backend may keep it).
                |event| Bytes::from(EventBody::of(event).to_json()),
            )
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no event has id {id}")))?;
        Ok(json_response(body))
    }
    .await;
    service.finish(Route::GetEvent, started, result)
}

/// The routes [`EventStoreService::hot_route`] answers.
enum HotRoute {
    GetEvent(Uuid),
    Append,
}

impl EventStoreService {
    /// `GET /events/{id}` and `POST /events` answered without the router
    /// (`web::middleware::Dispatch`): the same handlers, authenticated as
    /// `web::auth::require_access` does it and with the body limit `DefaultBodyLimit` sets, with
    /// the router's own work (matching, the boxed service levels each route sits in) skipped.
    /// Anything else, and any id that is not a plain UUID (percent-encoded, say), goes back to
    /// the router, which answers it as before. Reads by id and appends are the hot routes
    /// (issue 15: a fifth of a read by id's instructions).
    // The request comes back by value: boxing it would cost an allocation on every request
    // the router answers.
    #[allow(clippy::result_large_err)]
    pub fn hot_route(
        &self,
        request: axum::extract::Request,
    ) -> Result<web::middleware::HotFuture, axum::extract::Request> {
        let path = request.uri().path();
        let route = if request.method() == axum::http::Method::GET {
            match path.strip_prefix("/events/") {
                Some(id) if !id.contains(['/', '%']) => match Uuid::parse_str(id) {
                    Ok(id) => HotRoute::GetEvent(id),
                    Err(_) => return Err(request),
                },
                _ => return Err(request),
            }
        } else if request.method() == axum::http::Method::POST && path == "/events" {
            HotRoute::Append
        } else {
            return Err(request);
        };
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        let access = match self
            .inner
            .guard
            .authenticator
            .authenticate_header(authorization)
        {
            Ok(access) => access,
            Err(unauthenticated) => {
                let answer = unauthenticated.to_problem().into_response();
                return Ok(Box::pin(std::future::ready(answer)));
            }
        };
        let service = self.clone();
        Ok(match route {
            HotRoute::GetEvent(id) => Box::pin(get_event(State(service), access, Ok(Path(id)))),
            HotRoute::Append => Box::pin(async move {
                use axum::extract::FromRequest;
                use tower::{Layer, ServiceExt};
                let headers = request.headers().clone();
                let limit = DefaultBodyLimit::max(service.body_limit_bytes());
                let read_body = tower::service_fn(|request: axum::extract::Request| async {
                    Ok::<_, std::convert::Infallible>(Bytes::from_request(request, &()).await)
                });
                let body = match limit.layer(read_body).oneshot(request).await {
                    Ok(body) => body,
                    Err(never) => match never {},
                };
                append(State(service), access, headers, body).await
            }),
        })
    }
}

/// A page (`LogPage`, `StreamPage`: the same shape) as its JSON response, in one buffer
/// allocated up front for the whole page.
fn page_json(events: &[EventBody], next: Option<u64>) -> Response {
    let len_hint = events.iter().map(EventBody::json_len_hint).sum::<usize>() + 64;
    let mut out = Vec::with_capacity(len_hint);
    out.extend_from_slice(b"{\"events\":[");
    for (n, event) in events.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        event.write_json(&mut out);
    }
    out.extend_from_slice(b"],\"next\":");
    match next {
        Some(next) => out.extend_from_slice(itoa::Buffer::new().format(next).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    json_response(out)
}

/// JSON bytes as a 200 `application/json` response.
fn json_response(json: impl Into<Bytes>) -> Response {
    let content_type = header::HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, content_type)], json.into()).into_response()
}

/// Read the whole log, forward (`after`) or backward (`direction=backward`, `before`).
///
/// Dead events (deleted, truncated, past `max_count` or `max_age_seconds`) are skipped:
/// positions are strictly increasing, with holes where dead events were.
#[utoipa::path(
    get, path = "/events", tag = "events",
    params(ReadAllQuery),
    responses(
        (status = 200, description = "A page of events in position order (newest first when backward); `next` is the next `after` (forward) or `before` (backward)", body = LogPage),
        (status = 400, description = "A bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown bearer token (EVENTS_TOKEN, EVENTS_TOKENS_FILE)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope (`missing_scope`) for this stream", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log is still opening", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("events_token" = []))
)]
async fn read_all(
    State(service): State<EventStoreService>,
    access: Access,
    params: Result<Query<ReadAllQuery>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let params = query(params)?;
        let limit = page_limit(params.limit)?;
        let backward = params.direction.unwrap_or_default() == ReadDirection::Backward;
        let request = if backward {
            if params.after.is_some() {
                return Err(ApiError::BadRequest(
                    "`after` is for forward reads; a backward read takes `before`".into(),
                ));
            }
            match params.before {
                Some(0) => None,
                Some(before) => Some(ReadAll::backward(Start::At(before - 1), limit)),
                None => Some(ReadAll::backward(Start::End, limit)),
            }
        } else {
            if params.before.is_some() {
                return Err(ApiError::BadRequest(
                    "`before` is for backward reads (`direction=backward`)".into(),
                ));
            }
            let from = match params.after {
                Some(after) => after.saturating_add(1),
                None => 0,
            };
            Some(ReadAll::forward(from, limit))
        };
        let store = service.ready_backend()?;
        let Some(request) = request else {
            // Nothing is before position 0.
            return Ok(axum::Json(LogPage {
                events: Vec::new(),
                next: None,
            })
            .into_response());
        };
        let page = store
            .read_all(request.within(crate::PAGE_MAX_BYTES))
            .await?;
        // The contract's `next` is where the next page starts (inclusive); HTTP's is the
        // exclusive `after` (forward) or `before` (backward).
        let next = if backward {
            page.next.map(|start| start + 1)
        } else {
            page.next.map(|start| start - 1)
        };
        // `next` moves past events the token may not read, so paging goes on.
        let events = readable(&access, page.events, |event| &event.stream)
            .into_iter()
            .map(EventBody::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_json(&events, next))
    }
    .await;
    service.finish(Route::ReadAll, started, result)
}

/// Read one stream, forward or backward (`direction=backward`).
#[utoipa::path(
    get, path = "/streams/{stream}/events", tag = "events",
    params(("stream" = String, Path, description = "The stream name"), ReadStreamQuery),
    responses(
        (status = 200, description = "A page of the stream's live events in version order (newest first when backward); `next` is the next `from_version`", body = StreamPage),
        (status = 400, description = "A bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown bearer token (EVENTS_TOKEN, EVENTS_TOKENS_FILE)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope (`missing_scope`) for this stream", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The stream has no events or is soft-deleted", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream is tombstoned (`/problems/stream-deleted`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log is still opening", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("events_token" = []))
)]
async fn read_stream(
    State(service): State<EventStoreService>,
    access: Access,
    stream: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadStreamQuery>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let stream = path(stream)?;
        access.check_read(&stream)?;
        let params = query(params)?;
        let limit = page_limit(params.limit)?;
        let request = match params.direction.unwrap_or_default() {
            ReadDirection::Forward => ReadStream::forward(params.from_version.unwrap_or(0), limit),
            ReadDirection::Backward => {
                ReadStream::backward(params.from_version.map_or(Start::End, Start::At), limit)
            }
        };
        let store = service.ready_backend()?;
        let page = store
            .read_stream(&stream, request.within(crate::PAGE_MAX_BYTES))
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("stream {stream:?} has no events")))?;
        let next = page.next;
        let events = page
            .events
            .into_iter()
            .map(EventBody::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_json(&events, next))
    }
    .await;
    service.finish(Route::ReadStream, started, result)
}

/// List live streams in byte order of name.
#[utoipa::path(
    get, path = "/streams", tag = "streams",
    params(ListStreamsQuery),
    responses(
        (status = 200, description = "A page of live streams (deleted ones are left out); `next` is the next `after`", body = StreamListBody),
        (status = 400, description = "A bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown bearer token (EVENTS_TOKEN, EVENTS_TOKENS_FILE)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log is still opening", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("events_token" = []))
)]
async fn list_streams(
    State(service): State<EventStoreService>,
    access: Access,
    params: Result<Query<ListStreamsQuery>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let params = query(params)?;
        let limit = page_limit(params.limit)?;
        let store = service.ready_backend()?;
        let list = store
            .list_streams(ListStreams {
                prefix: params.prefix,
                after: params.after,
                limit,
            })
            .await?;
        // `next` moves past streams the token may not read, so paging goes on.
        let streams = readable(&access, list.streams, |state| &state.stream)
            .into_iter()
            .map(StreamBody::from)
            .collect();
        Ok(axum::Json(StreamListBody {
            streams,
            next: list.next,
        })
        .into_response())
    }
    .await;
    service.finish(Route::ListStreams, started, result)
}

/// One stream's state and metadata.
#[utoipa::path(
    get, path = "/streams/{stream}", tag = "streams",
    params(("stream" = String, Path, description = "The stream name")),
    responses(
        (status = 200, description = "The stream's state, with its metadata", body = StreamBody),
        (status = 401, description = "Missing or unknown bearer token (EVENTS_TOKEN, EVENTS_TOKENS_FILE)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope (`missing_scope`) for this stream", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The stream has no events or is soft-deleted", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream is tombstoned (`/problems/stream-deleted`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log is still opening", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("events_token" = []))
)]
async fn stream_state(
    State(service): State<EventStoreService>,
    access: Access,
    stream: Result<Path<String>, PathRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let stream = path(stream)?;
        access.check_read(&stream)?;
        let store = service.ready_backend()?;
        let state = store
            .stream_state(&stream)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("stream {stream:?} has no events")))?;
        let metadata = store.stream_metadata(&stream).await?.unwrap_or_default();
        let mut body = StreamBody::from(state);
        body.metadata = Some(MetadataBody::from(metadata));
        Ok(axum::Json(body).into_response())
    }
    .await;
    service.finish(Route::StreamState, started, result)
}

/// Delete a stream: softly (reads answer 404, appending again recreates it with versions
/// continuing), or for good with `hard=true` (a tombstone: 410 forever).
#[utoipa::path(
    delete, path = "/streams/{stream}", tag = "streams",
    params(("stream" = String, Path, description = "The stream name"), DeleteQuery),
    responses(
        (status = 204, description = "Deleted (the delete is a record of the log)"),
        (status = 400, description = "A bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown bearer token (EVENTS_TOKEN, EVENTS_TOKENS_FILE)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the `admin` scope for this stream", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The stream has no events or is already soft-deleted", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Wrong expected version (`current_version` says the stream's version)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream is tombstoned already (`/problems/stream-deleted`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log cannot write or is still opening", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("events_token" = []))
)]
async fn delete_stream(
    State(service): State<EventStoreService>,
    access: Access,
    stream: Result<Path<String>, PathRejection>,
    params: Result<Query<DeleteQuery>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let stream = path(stream)?;
        let params = query(params)?;
        let expected = parse_expected_version(params.expected_version.as_deref())?;
        access.check_admin_stream(&stream)?;
        let mode = if params.hard.unwrap_or(false) {
            DeleteMode::Hard
        } else {
            DeleteMode::Soft
        };
        let store = service.ready_backend()?;
        store.delete_stream(&stream, expected, mode).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    service.finish(Route::DeleteStream, started, result)
}

/// A stream's metadata (`{}` when none was set).
#[utoipa::path(
    get, path = "/streams/{stream}/metadata", tag = "streams",
    params(("stream" = String, Path, description = "The stream name")),
    responses(
        (status = 200, description = "The metadata", body = MetadataBody),
        (status = 401, description = "Missing or unknown bearer token (EVENTS_TOKEN, EVENTS_TOKENS_FILE)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope (`missing_scope`) for this stream", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Neither the stream nor metadata of it exists", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream is tombstoned (`/problems/stream-deleted`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log is still opening", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("events_token" = []))
)]
async fn get_metadata(
    State(service): State<EventStoreService>,
    access: Access,
    stream: Result<Path<String>, PathRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let stream = path(stream)?;
        access.check_read(&stream)?;
        let store = service.ready_backend()?;
        let metadata = store
            .stream_metadata(&stream)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("stream {stream:?} has no events")))?;
        Ok(axum::Json(MetadataBody::from(metadata)).into_response())
    }
    .await;
    service.finish(Route::StreamMetadata, started, result)
}

/// Replace a stream's metadata (recorded as a `$metadata` event of `$$<stream>`); dead
/// events vanish from reads at once.
#[utoipa::path(
    put, path = "/streams/{stream}/metadata", tag = "streams",
    params(("stream" = String, Path, description = "The stream name"), MetadataQuery),
    request_body(content = MetadataBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The metadata as stored", body = MetadataBody),
        (status = 400, description = "Invalid metadata (`/problems/invalid-metadata`) or a bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown bearer token (EVENTS_TOKEN, EVENTS_TOKENS_FILE)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the `admin` scope for this stream", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Wrong expected version of the metadata stream", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream is tombstoned (`/problems/stream-deleted`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log cannot write or is still opening", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("events_token" = []))
)]
async fn put_metadata(
    State(service): State<EventStoreService>,
    access: Access,
    stream: Result<Path<String>, PathRejection>,
    params: Result<Query<MetadataQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let stream = path(stream)?;
        let expected = parse_expected_version(query(params)?.expected_version.as_deref())?;
        access.check_admin_stream(&stream)?;
        let body = json_body(&headers, body)?;
        let metadata: MetadataBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::Store(events::Error::InvalidMetadata(format!(
                "the body is not stream metadata: {e}"
            )))
        })?;
        let metadata = events::StreamMetadata::from(metadata);
        let store = service.ready_backend()?;
        store
            .set_stream_metadata(&stream, expected, metadata.clone())
            .await?;
        Ok(axum::Json(MetadataBody::from(metadata)).into_response())
    }
    .await;
    service.finish(Route::StreamMetadata, started, result)
}

struct BearerSecurity;

impl Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "events_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("EVENTS_TOKEN or a token of EVENTS_TOKENS_FILE; required when the server sets either (always in production, unless EVENTS_AUTH=none)"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Logbook event store", description = "Append-only JSON event log over HTTP."),
    paths(append, read_all, get_event, append_to_stream, read_stream, subscribe::subscribe, list_streams, stream_state, delete_stream, get_metadata, put_metadata, crate::admin::start_scavenge, crate::admin::scavenge_status),
    components(schemas(Problem, NewEventBody, AppendRequest, AppendResponse, PlacedBody, EventBody, LogPage, StreamPage, StreamBody, StreamListBody, MetadataBody, ReadDirection, crate::admin::ScavengeStarted, crate::admin::ScavengeBody)),
    modifiers(&BearerSecurity, &SseItemSchema),
    tags((name = "events", description = "The event store"), (name = "streams", description = "Streams: listing, state, delete, tombstone, metadata and retention"), (name = "admin", description = "Store-wide administration (scavenge)"))
)]
pub(crate) struct ApiDoc;
