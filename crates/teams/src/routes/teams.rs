//! `/teams`: create, list, read, update, soft delete.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Deserializer, Serialize};
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::{ApiJson, AppState, Page, PageQuery, new_id, parse_id};
use crate::domain::{TeamName, parse_description};
use crate::error::Error;
use crate::store::{int, opt_text, text};
use crate::time::{now_ms, rfc3339};

/// A team, as read back.
#[derive(Debug, Serialize, ToSchema)]
pub struct Team {
    /// UUIDv7.
    pub id: String,
    /// The name as given (trimmed); unique among live teams, ignoring case.
    pub name: String,
    /// Free text, if any.
    pub description: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// Body of `POST /teams`.
#[derive(Debug, Deserialize, ToSchema)]
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

const TEAM_COLUMNS: &str = "id, name, description, created_at, updated_at";

fn team_from_row(row: &AnyRow) -> Result<Team, sqlx::Error> {
    Ok(Team {
        id: text(row, "id")?,
        name: text(row, "name")?,
        description: opt_text(row, "description")?,
        created_at: rfc3339(int(row, "created_at")?),
        updated_at: rfc3339(int(row, "updated_at")?),
    })
}

fn not_found(team_id: &str) -> Error {
    Error::NotFound(format!("No live team has id {team_id}."))
}

/// Reads a live team inside any executor (pool or transaction).
pub(crate) async fn find_live_team<'e, E>(executor: E, team_id: &str) -> Result<Team, Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(&format!(
        "SELECT {TEAM_COLUMNS} FROM teams WHERE id = $1 AND deleted_at IS NULL"
    ))
    .bind(team_id)
    .fetch_optional(executor)
    .await?;
    match row {
        Some(row) => Ok(team_from_row(&row)?),
        None => Err(not_found(team_id)),
    }
}

fn checked_description(description: Option<String>) -> Result<Option<String>, Error> {
    description
        .map(|raw| parse_description(&raw))
        .transpose()
        .map_err(Error::BadRequest)
}

/// Create a team.
#[utoipa::path(post, path = "/teams", tag = "teams", security(("admin_token" = [])),
    request_body = CreateTeam,
    responses(
        (status = 201, description = "Created", body = Team),
        (status = 400, description = "Invalid name or description", body = web::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 409, description = "A live team has this name (ignoring case)", body = web::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = web::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create_team(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateTeam>,
) -> Result<impl IntoResponse, Error> {
    let name = TeamName::parse(&body.name).map_err(Error::BadRequest)?;
    let description = checked_description(body.description)?;
    let id = new_id();
    let now = now_ms();
    let mut write = state.store.write().await?;
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
    write.commit().await?;
    let team = Team {
        id,
        name: name.as_str().to_owned(),
        description,
        created_at: rfc3339(now),
        updated_at: rfc3339(now),
    };
    Ok((StatusCode::CREATED, Json(team)))
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
    let current = find_live_team(&mut *write.tx, &team_id).await?;
    let new_name = name.unwrap_or(TeamName::parse(&current.name).map_err(Error::BadRequest)?);
    let new_description = description.unwrap_or(current.description);
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
    write.commit().await?;
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
) -> Result<StatusCode, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let now = now_ms();
    let mut write = state.store.write().await?;
    let deleted =
        sqlx::query("UPDATE teams SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL")
            .bind(now)
            .bind(&team_id)
            .execute(&mut *write.tx)
            .await?;
    if deleted.rows_affected() == 0 {
        return Err(not_found(&team_id));
    }
    sqlx::query(
        "UPDATE invitations SET status = 'revoked', finished_at = $1 \
         WHERE team_id = $2 AND status = 'pending'",
    )
    .bind(now)
    .bind(&team_id)
    .execute(&mut *write.tx)
    .await?;
    write.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
