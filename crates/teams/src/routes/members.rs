//! `/teams/{team_id}/members`: list and remove (soft) members.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::teams::find_live_team;
use super::{AppState, Page, PageQuery, parse_id};
use crate::domain::Role;
use crate::error::Error;
use crate::store::{int, text};
use crate::time::{now_ms, rfc3339};

/// A live member of a team.
#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    /// UUIDv7.
    pub id: String,
    /// Lowercased email.
    pub email: String,
    /// The role given by the invitation.
    pub role: Role,
    /// RFC 3339.
    pub joined_at: String,
}

/// A page of members.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    /// Live members in id order.
    pub members: Vec<Member>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// List a team's live members.
#[utoipa::path(get, path = "/teams/{team_id}/members", tag = "members", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id"), PageQuery),
    responses(
        (status = 200, description = "A page of members", body = MemberList),
        (status = 400, description = "Bad limit or cursor", body = web::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_members(
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<MemberList>, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let page = Page::from_query(query)?;
    find_live_team(state.store.pool(), &team_id).await?;
    let rows = sqlx::query(
        "SELECT id, email, role, joined_at FROM members \
         WHERE team_id = $1 AND deleted_at IS NULL AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(&team_id)
    .bind(&page.after_id)
    .bind(page.sql_limit())
    .fetch_all(state.store.pool())
    .await?;
    let members = rows
        .iter()
        .map(|row| {
            Ok(Member {
                id: text(row, "id")?,
                email: text(row, "email")?,
                role: Role::from_stored(&text(row, "role")?),
                joined_at: rfc3339(int(row, "joined_at")?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let next_cursor = page.next_cursor(members.len(), members.last().map(|m| m.id.as_str()));
    Ok(Json(MemberList {
        members,
        next_cursor,
    }))
}

/// Remove a member (soft: the row stays, marked deleted; the email may be invited again).
#[utoipa::path(delete, path = "/teams/{team_id}/members/{member_id}", tag = "members", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id"), ("member_id" = String, Path, description = "Member id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team or member", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    Path((team_id, member_id)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let member_id = parse_id(&member_id, "member")?;
    let mut write = state.store.write().await?;
    find_live_team(&mut *write.tx, &team_id).await?;
    let removed = sqlx::query(
        "UPDATE members SET deleted_at = $1 WHERE id = $2 AND team_id = $3 AND deleted_at IS NULL",
    )
    .bind(now_ms())
    .bind(&member_id)
    .bind(&team_id)
    .execute(&mut *write.tx)
    .await?;
    if removed.rows_affected() == 0 {
        return Err(Error::NotFound(format!(
            "Team {team_id} has no live member with id {member_id}."
        )));
    }
    write.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
