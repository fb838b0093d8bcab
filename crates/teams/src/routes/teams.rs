//! `/teams`: create, list, read, update, soft delete.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{ApiJson, AppState, Page, PageQuery, new_id, parse_id};
use crate::audit::{Actor, AuditLog, RequestMeta};
use crate::domain::{InvitationStatus, TeamName, parse_description};
use crate::error::Error;
use crate::idempotency::{Idempotency, IdempotencyKey, json_response};
use crate::queries::{TEAM_COLUMNS, find_live_team, lock_live_team, team_from_row};
use crate::time::{now_ms, rfc3339};

pub use crate::queries::Team;

/// Body of `POST /teams`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    /// 1 to 100 characters after trimming.
    #[schema(min_length = 1)]
    pub name: String,
    /// At most 1000 characters.
    pub description: Option<String>,
}

/// Body of `PATCH /teams/{team_id}`: only the fields present change; `"description": null`
/// clears the description.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTeam {
    /// A new name.
    #[schema(min_length = 1)]
    pub name: Option<String>,
    /// A new description, or `null` to clear it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
}

/// `Some(value)` whenever the field is present, even as `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A page of teams.
#[derive(Debug, Serialize, ToSchema)]
pub struct TeamList {
    /// Live teams in id order.
    pub teams: Vec<Team>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

fn checked_description(description: Option<String>) -> Result<Option<String>, Error> {
    description
        .map(|raw| parse_description(&raw))
        .transpose()
        .map_err(Error::BadRequest)
}

/// Create a team. With an `Idempotency-Key`, a retry with the same body within 24 h returns
/// the first answer (with `Idempotent-Replayed: true`); the same key with another body is 422.
#[utoipa::path(post, path = "/teams", tag = "teams", security(("admin_token" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    request_body = CreateTeam,
    responses(
        (status = 201, description = "Created", body = Team,
            headers(("Location" = String, description = "The new team (APP_URL/teams/{id}, or a path without APP_URL)"))),
        (status = 400, description = "Invalid name or description, or a malformed Idempotency-Key", body = web::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 409, description = "A live team has this name (ignoring case)", body = web::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = web::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = web::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The Idempotency-Key was used with another body", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create_team(
    State(state): State<AppState>,
    meta: RequestMeta,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<CreateTeam>,
) -> Result<Response, Error> {
    let idempotency = Idempotency::new(key, "POST /teams".into(), &body);
    let name = TeamName::parse(&body.name).map_err(Error::BadRequest)?;
    let description = checked_description(body.description)?;
    let id = new_id();
    let now = now_ms();
    let mut write = state.store.write().await?;
    if let Some(idempotency) = &idempotency
        && let Some(replay) = idempotency.replay(&mut write.tx, now).await?
    {
        return Ok(replay);
    }
    sqlx::query(
        "INSERT INTO teams (id, name, name_key, description, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&id)
    .bind(name.as_str())
    .bind(name.key())
    .bind(&description)
    .bind(now)
    .execute(&mut *write.tx)
    .await?;
    let mut audit = AuditLog::new(&id, 0, meta);
    audit.push(
        Actor::Admin,
        "team.created",
        None,
        json!({ "name": name.as_str(), "description": description }),
    );
    audit.write(&mut write.tx, now).await?;
    let team = Team {
        id,
        name: name.as_str().to_owned(),
        description,
        created_at: rfc3339(now),
        updated_at: rfc3339(now),
    };
    let body = serde_json::to_string(&team).unwrap_or_default();
    if let Some(idempotency) = &idempotency {
        idempotency
            .remember(&mut write.tx, StatusCode::CREATED, &body, now)
            .await?;
    }
    write.commit().await?;
    state.changed();
    let mut response = json_response(StatusCode::CREATED.as_u16(), body, false);
    let location = format!(
        "{}/teams/{}",
        state.settings.app_url.as_deref().unwrap_or(""),
        team.id
    );
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// List live teams, a page at a time.
#[utoipa::path(get, path = "/teams", tag = "teams", security(("admin_token" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of teams", body = TeamList),
        (status = 400, description = "Bad limit or cursor", body = web::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_teams(
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<TeamList>, Error> {
    let page = Page::from_query(query)?;
    let rows = sqlx::query(&format!(
        "SELECT {TEAM_COLUMNS} FROM teams WHERE deleted_at IS NULL AND id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(&page.after_id)
    .bind(page.sql_limit())
    .fetch_all(state.store.pool())
    .await?;
    let teams = rows
        .iter()
        .map(team_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = page.next_cursor(teams.len(), teams.last().map(|team| team.id.as_str()));
    Ok(Json(TeamList { teams, next_cursor }))
}

/// Read one live team.
#[utoipa::path(get, path = "/teams/{team_id}", tag = "teams", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id")),
    responses(
        (status = 200, description = "The team", body = Team),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_team(
    State(state): State<AppState>,
    Path(team_id): Path<String>,
) -> Result<Json<Team>, Error> {
    let team_id = parse_id(&team_id, "team")?;
    Ok(Json(find_live_team(state.store.pool(), &team_id).await?))
}

/// Update a team's name or description.
#[utoipa::path(patch, path = "/teams/{team_id}", tag = "teams", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id")),
    request_body = UpdateTeam,
    responses(
        (status = 200, description = "The updated team", body = Team),
        (status = 400, description = "Invalid name or description", body = web::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team", body = web::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another live team has this name", body = web::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = web::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn update_team(
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<UpdateTeam>,
) -> Result<Json<Team>, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let name = body
        .name
        .as_deref()
        .map(TeamName::parse)
        .transpose()
        .map_err(Error::BadRequest)?;
    let description = body.description.map(checked_description).transpose()?;
    let mut write = state.store.write().await?;
    let locked = lock_live_team(&mut write.tx, &team_id).await?;
    let current = locked.team;
    let renamed = name
        .as_ref()
        .is_some_and(|name| name.as_str() != current.name);
    let new_name = match name {
        Some(name) => name,
        None => TeamName::parse(&current.name).map_err(Error::BadRequest)?,
    };
    let described = description
        .as_ref()
        .is_some_and(|description| *description != current.description);
    let new_description = description.unwrap_or(current.description.clone());
    let now = now_ms();
    sqlx::query(
        "UPDATE teams SET name = $1, name_key = $2, description = $3, updated_at = $4 \
         WHERE id = $5 AND deleted_at IS NULL",
    )
    .bind(new_name.as_str())
    .bind(new_name.key())
    .bind(&new_description)
    .bind(now)
    .bind(&team_id)
    .execute(&mut *write.tx)
    .await?;
    let mut audit = AuditLog::new(&team_id, locked.audit_seq, meta);
    if renamed {
        audit.push(
            Actor::Admin,
            "team.renamed",
            None,
            json!({ "from": current.name, "to": new_name.as_str() }),
        );
    }
    if described {
        audit.push(
            Actor::Admin,
            "team.updated",
            None,
            json!({ "description": new_description }),
        );
    }
    audit.write(&mut write.tx, now).await?;
    write.commit().await?;
    state.changed();
    Ok(Json(Team {
        id: team_id,
        name: new_name.as_str().to_owned(),
        description: new_description,
        created_at: current.created_at,
        updated_at: rfc3339(now),
    }))
}

/// Soft-delete a team: its name becomes free and its pending invitations are revoked.
#[utoipa::path(delete, path = "/teams/{team_id}", tag = "teams", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn delete_team(
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    meta: RequestMeta,
) -> Result<StatusCode, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let now = now_ms();
    let mut write = state.store.write().await?;
    let locked = lock_live_team(&mut write.tx, &team_id).await?;
    sqlx::query("UPDATE teams SET deleted_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&team_id)
        .execute(&mut *write.tx)
        .await?;
    let revoked = sqlx::query(
        "UPDATE invitations SET status = $1, finished_at = $2 \
         WHERE team_id = $3 AND status = 'pending'",
    )
    .bind(InvitationStatus::Revoked.as_str())
    .bind(now)
    .bind(&team_id)
    .execute(&mut *write.tx)
    .await?;
    let mut audit = AuditLog::new(&team_id, locked.audit_seq, meta);
    audit.push(
        Actor::Admin,
        "team.deleted",
        None,
        json!({ "name": locked.team.name, "invitations_revoked": revoked.rows_affected() }),
    );
    audit.write(&mut write.tx, now).await?;
    write.commit().await?;
    state.changed();
    Ok(StatusCode::NO_CONTENT)
}
