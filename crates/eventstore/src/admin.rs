//! Store-wide administration over HTTP: `POST /admin/scavenge` and `GET /admin/scavenge/{id}`.
//! Both need an `admin` token without a stream prefix ([`Access::check_admin`]).

use std::time::Instant;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use events::{EventStore, ScavengeStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use web::Problem;
use web::auth::Access;

use crate::error::ApiError;
use crate::metrics::Route;
use crate::service::EventStoreService;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ScavengeQuery {
    /// `true`: seal the segment being appended to first, so that the scavenge reaches every
    /// event (it never rewrites the active segment). Use it to finish an erasure now.
    seal: Option<bool>,
}

/// A scavenge's progress.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ScavengeBody {
    id: Uuid,
    /// `running`, `done` or `failed`.
    status: &'static str,
    /// Sealed segments when it began, and how many it has gone through.
    segments_total: u64,
    segments_done: u64,
    /// Bytes of those segments before, and of the ones done after.
    bytes_before: u64,
    bytes_after: u64,
    events_removed: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The answer to starting a scavenge.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ScavengeStarted {
    id: Uuid,
    /// Always `running`.
    status: &'static str,
}

impl From<ScavengeStatus> for ScavengeBody {
    fn from(status: ScavengeStatus) -> Self {
        ScavengeBody {
            id: status.id,
            status: status.state.as_str(),
            segments_total: status.segments_total,
            segments_done: status.segments_done,
            bytes_before: status.bytes_before,
            bytes_after: status.bytes_after,
            events_removed: status.events_removed,
            // The cause is logged; clients learn that it failed, not the internals.
            error: status
                .error
                .map(|_| "the scavenge failed; see the server log".to_owned()),
        }
    }
}

/// Start reclaiming the bytes of dead events (the erasure path; see docs/OPERATIONS.md).
#[utoipa::path(
    post, path = "/admin/scavenge", tag = "admin",
    params(ScavengeQuery),
    responses(
        (status = 202, description = "The scavenge started; follow it at /admin/scavenge/{id}", body = ScavengeStarted),
        (status = 400, description = "A bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown bearer token (EVENTS_TOKEN, EVENTS_TOKENS_FILE)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token is not `admin` for every stream (`missing_scope`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A scavenge is running (its id is in `scavenge_id`)", body = Problem, content_type = "application/problem+json"),
        (status = 501, description = "The backend has no scavenge (PostgreSQL: deletes remove rows; VACUUM reclaims them)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log is still opening", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("events_token" = []))
)]
pub(crate) async fn start_scavenge(
    State(service): State<EventStoreService>,
    access: Access,
    params: Result<Query<ScavengeQuery>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        access.check_admin()?;
        let Query(params) =
            params.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        let store = service.ready_backend()?;
        if params.seal == Some(true) {
            store.seal_active_segment().await?;
        }
        let id = store.scavenge().await?;
        let body = ScavengeStarted {
            id,
            status: "running",
        };
        Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
    }
    .await;
    service.finish(Route::Admin, started, result)
}

/// A scavenge's progress.
#[utoipa::path(
    get, path = "/admin/scavenge/{id}", tag = "admin",
    params(("id" = Uuid, Path, description = "The id `POST /admin/scavenge` answered")),
    responses(
        (status = 200, description = "Its progress", body = ScavengeBody),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown bearer token (EVENTS_TOKEN, EVENTS_TOKENS_FILE)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token is not `admin` for every stream (`missing_scope`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No scavenge has this id (the server keeps the last 32, until it restarts)", body = Problem, content_type = "application/problem+json"),
        (status = 501, description = "The backend has no scavenge", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log is still opening", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("events_token" = []))
)]
pub(crate) async fn scavenge_status(
    State(service): State<EventStoreService>,
    access: Access,
    id: Result<Path<Uuid>, PathRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        access.check_admin()?;
        let Path(id) = id.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        let store = service.ready_backend()?;
        let status = store
            .scavenge_status(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no scavenge has id {id}")))?;
        Ok(axum::Json(ScavengeBody::from(status)).into_response())
    }
    .await;
    service.finish(Route::Admin, started, result)
}
