//! `/teams/{team_id}/members`: list (filter by email), change a role, remove (soft).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::AnyRow;
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, AppState, Page, PageQuery, parse_id};
use crate::audit::{Actor, AuditLog, RequestMeta};
use crate::domain::{EmailAddress, Role};
use crate::error::Error;
use crate::queries::{find_live_team, lock_live_team};
use crate::store::{int, text};
use crate::time::{now_ms, rfc3339};

/// A live member of a team.
#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    /// UUIDv7.
    pub id: String,
    /// Normalized email.
    pub email: String,
    /// The role (given by the invitation, or changed since).
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

/// The filter of `GET /teams/{team_id}/members`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EmailFilter {
    /// Only this email (compared after normalization, like everywhere).
    pub(crate) email: Option<String>,
}

/// Body of `PATCH /teams/{team_id}/members/{member_id}` and
/// `PATCH /teams/{team_id}/invitations/{invitation_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRole {
    /// The new role.
    pub role: Role,
}

/// The normalized email of an `?email=` filter; an invalid one is a 400.
pub(crate) fn email_filter(raw: Option<&str>) -> Result<Option<EmailAddress>, Error> {
    raw.map(|raw| {
        EmailAddress::parse(raw)
            .map_err(|error| Error::BadRequest(format!("`email` is not an email address: {error}")))
    })
    .transpose()
}

const MEMBER_COLUMNS: &str = "id, email, role, joined_at";

fn member_from_row(row: &AnyRow) -> Result<Member, sqlx::Error> {
    Ok(Member {
        id: text(row, "id")?,
        email: text(row, "email")?,
        role: Role::from_stored(&text(row, "role")?),
        joined_at: rfc3339(int(row, "joined_at")?),
    })
}

/// List a team's live members.
#[utoipa::path(get, path = "/teams/{team_id}/members", tag = "members", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id"), PageQuery, EmailFilter),
    responses(
        (status = 200, description = "A page of members", body = MemberList),
        (status = 400, description = "Bad limit, cursor or email", body = web::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_members(
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
    filter: Result<Query<EmailFilter>, QueryRejection>,
) -> Result<Json<MemberList>, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let page = Page::from_query(query)?;
    let Query(filter) = filter.map_err(|rejection| Error::BadRequest(rejection.body_text()))?;
    let email = email_filter(filter.email.as_deref())?;
    find_live_team(state.store.pool(), &team_id).await?;
    let email_condition = if email.is_some() {
        " AND email = $4"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {MEMBER_COLUMNS} FROM members \
         WHERE team_id = $1 AND deleted_at IS NULL AND id > $2{email_condition} ORDER BY id LIMIT $3"
    );
    let mut query = sqlx::query(&sql)
        .bind(&team_id)
        .bind(&page.after_id)
        .bind(page.sql_limit());
    if let Some(email) = &email {
        query = query.bind(email.as_str());
    }
    let rows = query.fetch_all(state.store.pool()).await?;
    let members = rows
        .iter()
        .map(member_from_row)
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let next_cursor = page.next_cursor(members.len(), members.last().map(|m| m.id.as_str()));
    Ok(Json(MemberList {
        members,
        next_cursor,
    }))
}

/// Change a live member's role.
#[utoipa::path(patch, path = "/teams/{team_id}/members/{member_id}", tag = "members", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id"), ("member_id" = String, Path, description = "Member id")),
    request_body = ChangeRole,
    responses(
        (status = 200, description = "The member with the new role", body = Member),
        (status = 400, description = "Malformed body or unknown role", body = web::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team or member", body = web::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = web::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn change_member_role(
    State(state): State<AppState>,
    Path((team_id, member_id)): Path<(String, String)>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<ChangeRole>,
) -> Result<Json<Member>, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let member_id = parse_id(&member_id, "member")?;
    let now = now_ms();
    let mut write = state.store.write().await?;
    let locked = lock_live_team(&mut write.tx, &team_id).await?;
    let row = sqlx::query(&format!(
        "SELECT {MEMBER_COLUMNS} FROM members WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL"
    ))
    .bind(&member_id)
    .bind(&team_id)
    .fetch_optional(&mut *write.tx)
    .await?
    .ok_or_else(|| member_not_found(&team_id, &member_id))?;
    let mut member = member_from_row(&row)?;
    if member.role != body.role {
        sqlx::query("UPDATE members SET role = $1 WHERE id = $2")
            .bind(body.role.as_str())
            .bind(&member_id)
            .execute(&mut *write.tx)
            .await?;
        let mut audit = AuditLog::new(&team_id, locked.audit_seq, meta);
        audit.push(
            Actor::Admin,
            "member.role_changed",
            Some(&member_id),
            json!({ "email": member.email, "from": member.role, "to": body.role }),
        );
        audit.write(&mut write.tx, now).await?;
        write.commit().await?;
        state.changed();
        member.role = body.role;
    }
    Ok(Json(member))
}

fn member_not_found(team_id: &str, member_id: &str) -> Error {
    Error::NotFound(format!(
        "team {team_id} has no live member with id {member_id}"
    ))
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
    meta: RequestMeta,
) -> Result<StatusCode, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let member_id = parse_id(&member_id, "member")?;
    let now = now_ms();
    let mut write = state.store.write().await?;
    let locked = lock_live_team(&mut write.tx, &team_id).await?;
    let email: Option<String> = sqlx::query_scalar(
        "SELECT email FROM members WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL",
    )
    .bind(&member_id)
    .bind(&team_id)
    .fetch_optional(&mut *write.tx)
    .await?;
    let Some(email) = email else {
        return Err(member_not_found(&team_id, &member_id));
    };
    sqlx::query("UPDATE members SET deleted_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&member_id)
        .execute(&mut *write.tx)
        .await?;
    let mut audit = AuditLog::new(&team_id, locked.audit_seq, meta);
    audit.push(
        Actor::Admin,
        "member.removed",
        Some(&member_id),
        json!({ "email": email }),
    );
    audit.write(&mut write.tx, now).await?;
    write.commit().await?;
    state.changed();
    Ok(StatusCode::NO_CONTENT)
}
