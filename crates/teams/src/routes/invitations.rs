//! `/teams/{team_id}/invitations`: batch invite (207 with a result per email), list, revoke,
//! resend.
//!
//! A batch is checked by the application first (duplicates in the request, members, pending
//! invitations) and then written with the partial unique index
//! `invitations_one_pending_per_email` as the backstop: when a concurrent request inserted the
//! same email in between, the insert fails on that index and the item becomes
//! `already_invited`, never a 5xx and never a failed batch. Inserts run in email order, so two
//! concurrent batches on PostgreSQL take their row locks in the same order and cannot
//! deadlock.

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::teams::find_live_team;
use super::{ApiJson, AppState, Page, PageQuery, ms, new_id, parse_id};
use crate::domain::{EmailAddress, Role};
use crate::error::{Error, UniqueIndex, violated_unique_index};
use crate::store::{int, opt_int, opt_text, text};
use crate::time::{now_ms, rfc3339};

/// Most emails in one batch.
pub const BATCH_MAX_EMAILS: usize = 100;

/// Body of `POST /teams/{team_id}/invitations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// 1 to 100 emails; each is trimmed and lowercased.
    #[schema(min_items = 1, max_items = 100)]
    pub emails: Vec<String>,
    /// The role the invitees get on accepting; default `member`.
    #[serde(default)]
    pub role: Role,
}

/// The outcome for one email of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InviteStatus {
    /// A new invitation was created and its mail queued.
    Invited,
    /// The email already has a pending invitation to this team.
    AlreadyInvited,
    /// The email is already a live member of this team.
    AlreadyMember,
    /// The email is malformed; `error` says how.
    InvalidEmail,
    /// The email appeared earlier in the same request.
    DuplicateInRequest,
}

/// One item of a batch answer, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct InviteResult {
    /// The normalized email (or the input as given when it is invalid).
    pub email: String,
    /// What happened.
    pub status: InviteStatus,
    /// The new invitation, for `invited`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation_id: Option<String>,
    /// Why, for `invalid_email`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counts per status.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct InviteSummary {
    /// Emails in the request.
    pub total: usize,
    /// `invited` items.
    pub invited: usize,
    /// `already_invited` items.
    pub already_invited: usize,
    /// `already_member` items.
    pub already_member: usize,
    /// `invalid_email` items.
    pub invalid_email: usize,
    /// `duplicate_in_request` items.
    pub duplicate_in_request: usize,
}

/// The 207 Multi-Status answer of a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct InviteResponse {
    /// One result per email, in request order.
    pub results: Vec<InviteResult>,
    /// Counts per status.
    pub summary: InviteSummary,
}

/// Mail delivery state of an invitation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    /// `queued` (not tried yet or resent), `sent`, or `failing` (retrying with backoff).
    pub status: String,
    /// Attempts since the invitation was created or last resent.
    pub attempts: i64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due (RFC 3339), while not sent.
    pub next_attempt_at: Option<String>,
    /// When the mail was handed to the server (RFC 3339).
    pub sent_at: Option<String>,
}

/// An invitation, as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invitation {
    /// UUIDv7.
    pub id: String,
    /// Lowercased email.
    pub email: String,
    /// The role the invitee gets.
    pub role: Role,
    /// `pending`, `accepted`, `revoked` or `expired`.
    pub status: String,
    /// Mail delivery state.
    pub delivery: Delivery,
    /// RFC 3339.
    pub created_at: String,
    /// When the current link stops working (RFC 3339).
    pub expires_at: String,
}

/// A page of invitations.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationList {
    /// Invitations of every status, in id order.
    pub invitations: Vec<Invitation>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

const INVITATION_COLUMNS: &str = "id, email, role, status, expires_at, created_at, \
     delivery_status, delivery_attempts, delivery_last_error, delivery_next_attempt_at, delivered_at";

fn invitation_from_row(row: &AnyRow, now: i64) -> Result<Invitation, sqlx::Error> {
    let expires_at = int(row, "expires_at")?;
    let mut status = text(row, "status")?;
    if status == "pending" && expires_at <= now {
        status = "expired".into();
    }
    let delivery_status = text(row, "delivery_status")?;
    Ok(Invitation {
        id: text(row, "id")?,
        email: text(row, "email")?,
        role: Role::from_stored(&text(row, "role")?),
        status,
        delivery: Delivery {
            attempts: int(row, "delivery_attempts")?,
            last_error: opt_text(row, "delivery_last_error")?,
            next_attempt_at: opt_int(row, "delivery_next_attempt_at")?
                .filter(|_| delivery_status != "sent")
                .map(rfc3339),
            sent_at: opt_int(row, "delivered_at")?.map(rfc3339),
            status: delivery_status,
        },
        created_at: rfc3339(int(row, "created_at")?),
        expires_at: rfc3339(expires_at),
    })
}

/// `$first, $first+1, ...` for `count` values.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Of `emails`, those for which `sql` (with `$1` the team and `$2...` the emails) finds a row.
async fn existing_emails(
    tx: &mut sqlx::AnyConnection,
    sql_prefix: &str,
    team_id: &str,
    emails: &[&EmailAddress],
) -> Result<HashSet<String>, Error> {
    if emails.is_empty() {
        return Ok(HashSet::new());
    }
    let sql = format!(
        "{sql_prefix} AND email IN ({})",
        placeholders(2, emails.len())
    );
    let mut query = sqlx::query(&sql).bind(team_id);
    for email in emails {
        query = query.bind(email.as_str());
    }
    let rows = query.fetch_all(&mut *tx).await?;
    rows.iter()
        .map(|row| text(row, "email").map_err(Error::from))
        .collect()
}

/// Invite up to 100 emails at once; each email gets its own result.
#[utoipa::path(post, path = "/teams/{team_id}/invitations", tag = "invitations", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id")),
    request_body = InviteRequest,
    responses(
        (status = 207, description = "One result per email, in request order", body = InviteResponse),
        (status = 400, description = "Malformed body, no emails or more than 100", body = web::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team", body = web::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = web::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn invite(
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    ApiJson(body): ApiJson<InviteRequest>,
) -> Result<impl IntoResponse, Error> {
    let team_id = parse_id(&team_id, "team")?;
    if body.emails.is_empty() {
        return Err(Error::BadRequest(
            "`emails` must list at least one email.".into(),
        ));
    }
    if body.emails.len() > BATCH_MAX_EMAILS {
        return Err(Error::BadRequest(format!(
            "`emails` lists {} emails; a batch takes at most {BATCH_MAX_EMAILS}.",
            body.emails.len()
        )));
    }

    // Parse every item; the first occurrence of an address is the one that counts.
    let mut results: Vec<InviteResult> = Vec::with_capacity(body.emails.len());
    let mut candidates: HashMap<EmailAddress, usize> = HashMap::new();
    for raw in &body.emails {
        let (email, status, error) = match EmailAddress::parse(raw) {
            Err(error) => (raw.clone(), InviteStatus::InvalidEmail, Some(error)),
            Ok(email) if candidates.contains_key(&email) => {
                (email.to_string(), InviteStatus::DuplicateInRequest, None)
            }
            Ok(email) => {
                candidates.insert(email.clone(), results.len());
                (email.to_string(), InviteStatus::Invited, None)
            }
        };
        results.push(InviteResult {
            email,
            status,
            invitation_id: None,
            error,
        });
    }

    let now = now_ms();
    let expires_at = now.saturating_add(ms(state.settings.invite_ttl));
    let mut sorted: Vec<&EmailAddress> = candidates.keys().collect();
    sorted.sort();

    let mut write = state.store.write().await?;
    find_live_team(&mut *write.tx, &team_id).await?;
    // Pending invitations past their expiry no longer block a new one.
    sqlx::query(
        "UPDATE invitations SET status = 'expired', finished_at = $1 \
         WHERE team_id = $2 AND status = 'pending' AND expires_at <= $1",
    )
    .bind(now)
    .bind(&team_id)
    .execute(&mut *write.tx)
    .await?;
    let members = existing_emails(
        &mut write.tx,
        "SELECT email FROM members WHERE team_id = $1 AND deleted_at IS NULL",
        &team_id,
        &sorted,
    )
    .await?;
    let pending = existing_emails(
        &mut write.tx,
        "SELECT email FROM invitations WHERE team_id = $1 AND status = 'pending'",
        &team_id,
        &sorted,
    )
    .await?;

    let savepoints = state.store.savepoints();
    for email in sorted {
        let index = candidates[email];
        if members.contains(email.as_str()) {
            results[index].status = InviteStatus::AlreadyMember;
            continue;
        }
        if pending.contains(email.as_str()) {
            results[index].status = InviteStatus::AlreadyInvited;
            continue;
        }
        let id = new_id();
        if savepoints {
            sqlx::query("SAVEPOINT invite_item")
                .execute(&mut *write.tx)
                .await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO invitations (id, team_id, email, role, status, expires_at, created_at, \
             delivery_status, delivery_attempts, delivery_next_attempt_at, delivery_requested_at) \
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, 'queued', 0, $6, $6)",
        )
        .bind(&id)
        .bind(&team_id)
        .bind(email.as_str())
        .bind(body.role.as_str())
        .bind(expires_at)
        .bind(now)
        .execute(&mut *write.tx)
        .await;
        match inserted {
            Ok(_) => {
                if savepoints {
                    sqlx::query("RELEASE SAVEPOINT invite_item")
                        .execute(&mut *write.tx)
                        .await?;
                }
                results[index].invitation_id = Some(id);
            }
            Err(error) if violated_unique_index(&error) == Some(UniqueIndex::PendingInvitation) => {
                if savepoints {
                    sqlx::query("ROLLBACK TO SAVEPOINT invite_item")
                        .execute(&mut *write.tx)
                        .await?;
                }
                results[index].status = InviteStatus::AlreadyInvited;
            }
            Err(error) => return Err(error.into()),
        }
    }
    write.commit().await?;
    state.mail_wakeup.notify_one();

    let mut summary = InviteSummary {
        total: results.len(),
        ..InviteSummary::default()
    };
    for result in &results {
        match result.status {
            InviteStatus::Invited => summary.invited += 1,
            InviteStatus::AlreadyInvited => summary.already_invited += 1,
            InviteStatus::AlreadyMember => summary.already_member += 1,
            InviteStatus::InvalidEmail => summary.invalid_email += 1,
            InviteStatus::DuplicateInRequest => summary.duplicate_in_request += 1,
        }
    }
    Ok((
        StatusCode::MULTI_STATUS,
        Json(InviteResponse { results, summary }),
    ))
}

/// List a team's invitations (every status) with their delivery state.
#[utoipa::path(get, path = "/teams/{team_id}/invitations", tag = "invitations", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id"), PageQuery),
    responses(
        (status = 200, description = "A page of invitations", body = InvitationList),
        (status = 400, description = "Bad limit or cursor", body = web::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_invitations(
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<InvitationList>, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let page = Page::from_query(query)?;
    find_live_team(state.store.pool(), &team_id).await?;
    let rows = sqlx::query(&format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations WHERE team_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(&team_id)
    .bind(&page.after_id)
    .bind(page.sql_limit())
    .fetch_all(state.store.pool())
    .await?;
    let now = now_ms();
    let invitations = rows
        .iter()
        .map(|row| invitation_from_row(row, now))
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor =
        page.next_cursor(invitations.len(), invitations.last().map(|i| i.id.as_str()));
    Ok(Json(InvitationList {
        invitations,
        next_cursor,
    }))
}

async fn invitation_status(
    tx: &mut sqlx::AnyConnection,
    team_id: &str,
    invitation_id: &str,
) -> Result<(String, i64), Error> {
    let row = sqlx::query(
        "SELECT status, delivery_requested_at FROM invitations WHERE id = $1 AND team_id = $2",
    )
    .bind(invitation_id)
    .bind(team_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| {
        Error::NotFound(format!(
            "Team {team_id} has no invitation with id {invitation_id}."
        ))
    })?;
    Ok((text(&row, "status")?, int(&row, "delivery_requested_at")?))
}

/// Revoke a pending invitation: its link stops working at once.
#[utoipa::path(delete, path = "/teams/{team_id}/invitations/{invitation_id}", tag = "invitations", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id"), ("invitation_id" = String, Path, description = "Invitation id")),
    responses(
        (status = 204, description = "Revoked (or already revoked)"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team or invitation", body = web::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The invitation is already accepted or expired", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn revoke_invitation(
    State(state): State<AppState>,
    Path((team_id, invitation_id)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let invitation_id = parse_id(&invitation_id, "invitation")?;
    let mut write = state.store.write().await?;
    find_live_team(&mut *write.tx, &team_id).await?;
    let (status, _) = invitation_status(&mut write.tx, &team_id, &invitation_id).await?;
    match status.as_str() {
        "revoked" => Ok(StatusCode::NO_CONTENT),
        "pending" => {
            sqlx::query(
                "UPDATE invitations SET status = 'revoked', finished_at = $1 \
                 WHERE id = $2 AND status = 'pending'",
            )
            .bind(now_ms())
            .bind(&invitation_id)
            .execute(&mut *write.tx)
            .await?;
            write.commit().await?;
            Ok(StatusCode::NO_CONTENT)
        }
        other => Err(Error::Conflict(format!(
            "The invitation is {other}; only a pending invitation can be revoked."
        ))),
    }
}

/// Send the invitation again with a new link; the previous link stops working. Throttled per
/// invitation (`INVITE_RESEND_INTERVAL_SECONDS`).
#[utoipa::path(post, path = "/teams/{team_id}/invitations/{invitation_id}/resend", tag = "invitations", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id"), ("invitation_id" = String, Path, description = "Invitation id")),
    responses(
        (status = 202, description = "A new mail is queued", body = Invitation),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team or invitation", body = web::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The invitation is not pending", body = web::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Resent too recently; see Retry-After", body = web::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until a resend is allowed"))),
    ))]
pub(crate) async fn resend_invitation(
    State(state): State<AppState>,
    Path((team_id, invitation_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let invitation_id = parse_id(&invitation_id, "invitation")?;
    let now = now_ms();
    let mut write = state.store.write().await?;
    find_live_team(&mut *write.tx, &team_id).await?;
    let (status, requested_at) = invitation_status(&mut write.tx, &team_id, &invitation_id).await?;
    if status != "pending" {
        return Err(Error::Conflict(format!(
            "The invitation is {status}; only a pending invitation can be resent."
        )));
    }
    let allowed_at = requested_at.saturating_add(ms(state.settings.resend_interval));
    if now < allowed_at {
        let wait_ms = u64::try_from(allowed_at - now).unwrap_or(0);
        return Err(Error::TooManyRequests {
            retry_after_seconds: wait_ms.div_ceil(1000).max(1),
        });
    }
    // Clearing the hash invalidates the old link now; the worker mints the new one.
    sqlx::query(
        "UPDATE invitations SET token_hash = NULL, expires_at = $1, delivery_status = 'queued', \
         delivery_attempts = 0, delivery_last_error = NULL, delivery_next_attempt_at = $2, \
         delivery_requested_at = $2, delivered_at = NULL WHERE id = $3",
    )
    .bind(now.saturating_add(ms(state.settings.invite_ttl)))
    .bind(now)
    .bind(&invitation_id)
    .execute(&mut *write.tx)
    .await?;
    let row = sqlx::query(&format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations WHERE id = $1"
    ))
    .bind(&invitation_id)
    .fetch_one(&mut *write.tx)
    .await?;
    let invitation = invitation_from_row(&row, now)?;
    write.commit().await?;
    state.mail_wakeup.notify_one();
    Ok((StatusCode::ACCEPTED, Json(invitation)))
}
