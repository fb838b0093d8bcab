//! `GET /teams/{team_id}/audit`, and reading a request's id and client address for the audit
//! trail ([`RequestMeta`]).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, parse_id};
use crate::audit::{AuditEntry, ENTRY_COLUMNS, REQUEST_ID_MAX_CHARS, RequestMeta, entry_from_row};
use crate::error::Error;
use crate::queries::team_not_found;

impl FromRequestParts<AppState> for RequestMeta {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .map(|value| value.chars().take(REQUEST_ID_MAX_CHARS).collect());
        let client_address = super::rate_limit::client_ip(
            &parts.extensions,
            &parts.headers,
            &state.settings.trusted_proxies,
        )
        .map(|ip| ip.to_string());
        Ok(RequestMeta {
            request_id,
            client_address,
        })
    }
}

/// Default page size of the audit trail.
pub const AUDIT_LIMIT_DEFAULT: u32 = 100;
/// Largest page size of the audit trail.
pub const AUDIT_LIMIT_MAX: u32 = 1000;

/// Query parameters of `GET /teams/{team_id}/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Entries with a `seq` greater than this; default 0 (from the first).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64, format = Int64)]
    pub(crate) after: Option<i64>,
    /// Page size, 1 to 1000 (larger values are capped); default 100.
    #[param(minimum = 1, maximum = 4_294_967_295_u64, format = Int64)]
    pub(crate) limit: Option<u32>,
}

/// A page of a team's audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Entries in `seq` order.
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next_after: Option<i64>,
}

/// Read a team's audit trail, oldest first (also of a deleted team).
#[utoipa::path(get, path = "/teams/{team_id}/audit", tag = "teams", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id"), AuditQuery),
    responses(
        (status = 200, description = "A page of entries", body = AuditPage),
        (status = 400, description = "Bad after or limit", body = web::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such team (deleted teams keep their trail)", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_audit(
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let Query(query) = query.map_err(|rejection| Error::BadRequest(rejection.body_text()))?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(Error::BadRequest("`after` must be at least 0".into()));
    }
    let limit = match query.limit {
        None => AUDIT_LIMIT_DEFAULT,
        Some(0) => return Err(Error::BadRequest("`limit` must be at least 1".into())),
        Some(limit) => limit.min(AUDIT_LIMIT_MAX),
    };
    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM teams WHERE id = $1")
        .bind(&team_id)
        .fetch_optional(state.store.pool())
        .await?;
    if exists.is_none() {
        return Err(team_not_found(&team_id));
    }
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE team_id = $1 AND seq > $2 \
         ORDER BY seq LIMIT $3"
    ))
    .bind(&team_id)
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(state.store.pool())
    .await?;
    let entries = rows
        .iter()
        .map(entry_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_after = (entries.len() == limit as usize)
        .then(|| entries.last().map(|entry| entry.seq))
        .flatten();
    Ok(Json(AuditPage {
        entries,
        next_after,
    }))
}
