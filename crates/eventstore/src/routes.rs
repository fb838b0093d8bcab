//! The HTTP routes of the event store and their OpenAPI description (generated from these
//! handlers' annotations, so the document cannot drift from the code).

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use events::{EventStore, ExpectedVersion, ReadAll, ReadStream};
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
    AppendRequest, AppendResponse, DEFAULT_STREAM, EventBody, LogPage, NewEventBody,
    PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, PlacedBody, StreamPage,
};
use crate::service::EventStoreService;
use crate::subscribe;

pub(crate) fn router(service: EventStoreService) -> Router {
    let body_limit = service.body_limit_bytes();
    Router::new()
        .route("/events", post(append).get(read_all))
        .route("/events/{id}", get(get_event))
        .route(
            "/streams/{stream}/events",
            post(append_to_stream).get(read_stream),
        )
        .route("/subscribe", get(subscribe::subscribe))
        .route("/admin/scavenge", post(crate::admin::start_scavenge))
        .route("/admin/scavenge/{id}", get(crate::admin::scavenge_status))
        .layer(DefaultBodyLimit::max(body_limit))
        .route_layer(middleware::from_fn_with_state(
            service.authenticator(),
            web::auth::require_access,
        ))
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadAllQuery {
    /// Exclusive: read events after this position (omitted: from the start).
    after: Option<u64>,
    /// Page size, default 100, capped at 1000.
    #[param(minimum = 1)]
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadStreamQuery {
    /// Inclusive: the first version to read (default 0).
    from_version: Option<u64>,
    /// Page size, default 100, capped at 1000.
    #[param(minimum = 1)]
    limit: Option<usize>,
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

fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        Some(0) => Err(ApiError::BadRequest("limit must be at least 1".into())),
        Some(limit) => Ok(limit.min(PAGE_LIMIT_MAX)),
        None => Ok(PAGE_LIMIT_DEFAULT),
    }
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
        let event = store
            .get(id)
            .await?
            // Another prefix's event is "not found": a scoped token learns nothing of it.
            .filter(|event| access.can_read(&event.stream))
            .ok_or_else(|| ApiError::NotFound(format!("no event has id {id}")))?;
        Ok(axum::Json(EventBody::try_from(event)?).into_response())
    }
    .await;
    service.finish(Route::GetEvent, started, result)
}

/// Read the whole log forward.
#[utoipa::path(
    get, path = "/events", tag = "events",
    params(ReadAllQuery),
    responses(
        (status = 200, description = "A page of events in position order", body = LogPage),
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
        let from = match params.after {
            Some(after) => after.saturating_add(1),
            None => 0,
        };
        let store = service.ready_backend()?;
        let page = store
            .read_all(ReadAll::forward(from, limit).within(crate::PAGE_MAX_BYTES))
            .await?;
        // The contract's `next` is where the next page starts; HTTP's is the exclusive `after`.
        let next = page.next.map(|start| start - 1);
        // `next` moves past events the token may not read, so paging goes on.
        let events = readable(&access, page.events, |event| &event.stream)
            .into_iter()
            .map(EventBody::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(axum::Json(LogPage { events, next }).into_response())
    }
    .await;
    service.finish(Route::ReadAll, started, result)
}

/// Read one stream forward.
#[utoipa::path(
    get, path = "/streams/{stream}/events", tag = "events",
    params(("stream" = String, Path, description = "The stream name"), ReadStreamQuery),
    responses(
        (status = 200, description = "A page of the stream's events in version order", body = StreamPage),
        (status = 400, description = "A bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown bearer token (EVENTS_TOKEN, EVENTS_TOKENS_FILE)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope (`missing_scope`) for this stream", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The stream has no events", body = Problem, content_type = "application/problem+json"),
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
        let from = params.from_version.unwrap_or(0);
        let store = service.ready_backend()?;
        let page = store
            .read_stream(
                &stream,
                ReadStream::forward(from, limit).within(crate::PAGE_MAX_BYTES),
            )
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("stream {stream:?} has no events")))?;
        let next = page.next;
        let events = page
            .events
            .into_iter()
            .map(EventBody::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(axum::Json(StreamPage { events, next }).into_response())
    }
    .await;
    service.finish(Route::ReadStream, started, result)
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
    paths(append, read_all, get_event, append_to_stream, read_stream, subscribe::subscribe),
    paths(crate::admin::start_scavenge, crate::admin::scavenge_status),
    components(schemas(Problem, NewEventBody, AppendRequest, AppendResponse, PlacedBody, EventBody, LogPage, StreamPage)),
    components(schemas(crate::admin::ScavengeStarted, crate::admin::ScavengeBody)),
    modifiers(&BearerSecurity),
    tags((name = "events", description = "The event store"), (name = "admin", description = "Store-wide administration (scavenge)"))
)]
pub(crate) struct ApiDoc;
