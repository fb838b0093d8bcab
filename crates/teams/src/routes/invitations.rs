//! `/teams/{team_id}/invitations`: batch invite (207 with a result per email), list (filter
//! by status and email), read one, change the role of a pending one, revoke, resend.
//!
//! A batch locks the team row first (so a concurrent delete either happens before, and the
//! batch answers 404, or after, and revokes what the batch created), then is checked by the
//! application (duplicates in the request, members, pending invitations) and written with the
//! partial unique index `invitations_one_pending_per_email` as the backstop: should an insert
//! fail on that index, the item becomes `already_invited` under a savepoint, never a 5xx and
//! never a failed batch. Inserts run in email order.
//!
//! Revoke, resend and role changes update the invitation with `WHERE status = 'pending'` and
//! check the rows affected: when an accept commits first (it can, since it waits only for the
//! invitation's row), they answer 409 with the invitation's state instead of rewriting it.
//!
//! Mail to one recipient is throttled across the team's invitations
//! (`INVITE_RESEND_INTERVAL_SECONDS`): a resend sooner than that after the last mail to the
//! same address answers 429, and a re-invitation after a revoke is queued with its first mail
//! due no earlier than that, so revoking and inviting again cannot bypass the throttle.

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::AnyRow;
use utoipa::{IntoParams, ToSchema};

use super::members::{ChangeRole, email_filter};
use super::{ApiJson, AppState, Page, PageQuery, new_id, parse_id};
use crate::audit::{Actor, AuditLog, RequestMeta};
use crate::domain::{DeliveryStatus, EmailAddress, InvitationStatus, Role};
use crate::error::{Error, UniqueIndex, violated_unique_index};
use crate::idempotency::{Idempotency, IdempotencyKey, json_response};
use crate::queries::{find_live_team, lock_live_team};
use crate::store::{int, opt_int, opt_text, placeholders, text};
use crate::time::{ms, now_ms, rfc3339};

/// Most emails in one batch.
pub const BATCH_MAX_EMAILS: usize = 100;
/// Longest `expires_in_hours` of a batch (30 days).
pub const EXPIRES_IN_HOURS_MAX: u32 = 720;

/// Body of `POST /teams/{team_id}/invitations`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// 1 to 100 emails; each is trimmed and normalized (NFKC, case folded).
    #[schema(min_items = 1, max_items = 100)]
    pub emails: Vec<String>,
    /// The role the invitees get on accepting; default `member`.
    #[serde(default)]
    pub role: Role,
    /// How long the links stay valid, 1 to 720 hours; default `INVITE_TTL_HOURS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 720)]
    pub expires_in_hours: Option<u32>,
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
    /// The new invitation, for `invited`; the existing pending one, for `already_invited`.
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
    /// `queued` (not tried yet or resent), `sent`, `failing` (retrying with backoff) or
    /// `failed` (given up: a 5xx reply or `MAIL_MAX_ATTEMPTS` failures).
    pub status: DeliveryStatus,
    /// Attempts since the invitation was created or last resent.
    pub attempts: i64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due (RFC 3339), while queued or failing.
    pub next_attempt_at: Option<String>,
    /// When the mail was handed to the server (RFC 3339).
    pub sent_at: Option<String>,
}

/// An invitation, as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invitation {
    /// UUIDv7.
    pub id: String,
    /// Normalized email.
    pub email: String,
    /// The role the invitee gets.
    pub role: Role,
    /// `pending`, `accepted`, `revoked` or `expired` (a pending invitation past its expiry
    /// reads as `expired`).
    pub status: InvitationStatus,
    /// Mail delivery state.
    pub delivery: Delivery,
    /// RFC 3339.
    pub created_at: String,
    /// When the links stop working (RFC 3339): fixed at invitation or resend time.
    pub expires_at: String,
}

/// A page of invitations.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationList {
    /// Invitations in id order.
    pub invitations: Vec<Invitation>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The filters of `GET /teams/{team_id}/invitations`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct InvitationFilter {
    /// Only invitations in this state (`expired` includes pending ones past their expiry).
    pub(crate) status: Option<InvitationStatus>,
    /// Only this email (compared after normalization).
    pub(crate) email: Option<String>,
}

const INVITATION_COLUMNS: &str = "id, email, role, status, expires_at, created_at, \
     delivery_status, delivery_attempts, delivery_last_error, delivery_next_attempt_at, delivered_at";

fn invitation_from_row(row: &AnyRow, now: i64) -> Result<Invitation, sqlx::Error> {
    let expires_at = int(row, "expires_at")?;
    let status = InvitationStatus::at(&text(row, "status")?, expires_at, now);
    let delivery_status = DeliveryStatus::from_stored(&text(row, "delivery_status")?);
    let open = matches!(
        delivery_status,
        DeliveryStatus::Queued | DeliveryStatus::Failing
    );
    Ok(Invitation {
        id: text(row, "id")?,
        email: text(row, "email")?,
        role: Role::from_stored(&text(row, "role")?),
        status,
        delivery: Delivery {
            attempts: int(row, "delivery_attempts")?,
            last_error: opt_text(row, "delivery_last_error")?,
            next_attempt_at: opt_int(row, "delivery_next_attempt_at")?
                .filter(|_| open)
                .map(rfc3339),
            sent_at: opt_int(row, "delivered_at")?.map(rfc3339),
            status: delivery_status,
        },
        created_at: rfc3339(int(row, "created_at")?),
        expires_at: rfc3339(expires_at),
    })
}

/// A batch after parsing: a result per email in request order, and the distinct valid emails
/// (with the index of their result) in email order.
struct Batch {
    results: Vec<InviteResult>,
    candidates: Vec<(EmailAddress, usize)>,
}

impl Batch {
    /// Checks the request's size and parses every item; the first occurrence of an address is
    /// the one that counts.
    fn parse(body: &InviteRequest) -> Result<Batch, Error> {
        if body.emails.is_empty() {
            return Err(Error::BadRequest(
                "`emails` must list at least one email".into(),
            ));
        }
        if body.emails.len() > BATCH_MAX_EMAILS {
            return Err(Error::BadRequest(format!(
                "`emails` lists {} emails; a batch takes at most {BATCH_MAX_EMAILS}",
                body.emails.len()
            )));
        }
        if let Some(hours) = body.expires_in_hours
            && !(1..=EXPIRES_IN_HOURS_MAX).contains(&hours)
        {
            return Err(Error::BadRequest(format!(
                "`expires_in_hours` must be between 1 and {EXPIRES_IN_HOURS_MAX}"
            )));
        }
        let mut results = Vec::with_capacity(body.emails.len());
        let mut seen: HashMap<EmailAddress, usize> = HashMap::new();
        for raw in &body.emails {
            let (email, status, error) = match EmailAddress::parse(raw) {
                Err(error) => (raw.clone(), InviteStatus::InvalidEmail, Some(error)),
                Ok(email) if seen.contains_key(&email) => {
                    (email.to_string(), InviteStatus::DuplicateInRequest, None)
                }
                Ok(email) => {
                    seen.insert(email.clone(), results.len());
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
        let mut candidates: Vec<(EmailAddress, usize)> = seen.into_iter().collect();
        candidates.sort();
        Ok(Batch {
            results,
            candidates,
        })
    }

    /// The 207 answer: the results in request order and their counts.
    fn into_response(self) -> InviteResponse {
        let summary = self.summary();
        InviteResponse {
            results: self.results,
            summary,
        }
    }

    /// Counts per status.
    fn summary(&self) -> InviteSummary {
        let mut summary = InviteSummary {
            total: self.results.len(),
            ..InviteSummary::default()
        };
        for result in &self.results {
            match result.status {
                InviteStatus::Invited => summary.invited += 1,
                InviteStatus::AlreadyInvited => summary.already_invited += 1,
                InviteStatus::AlreadyMember => summary.already_member += 1,
                InviteStatus::InvalidEmail => summary.invalid_email += 1,
                InviteStatus::DuplicateInRequest => summary.duplicate_in_request += 1,
            }
        }
        summary
    }
}

/// What the team already holds for the batch's emails.
#[derive(Default)]
struct Existing {
    members: HashSet<String>,
    /// Email -> id of its live pending invitation.
    pending: HashMap<String, String>,
    /// (id, email) of pending invitations past their expiry: marked expired first.
    expired: Vec<(String, String)>,
    /// Email -> the latest time a mail to it was requested, across the team's invitations.
    last_requested_at: HashMap<String, i64>,
}

impl Existing {
    async fn read(
        connection: &mut sqlx::AnyConnection,
        team_id: &str,
        emails: &[&str],
        now: i64,
    ) -> Result<Existing, Error> {
        let mut existing = Existing::default();
        if emails.is_empty() {
            return Ok(existing);
        }
        let list = placeholders(2, emails.len());
        let sql = format!(
            "SELECT email FROM members WHERE team_id = $1 AND deleted_at IS NULL AND email IN ({list})"
        );
        let mut query = sqlx::query(&sql).bind(team_id);
        for email in emails {
            query = query.bind(*email);
        }
        for row in query.fetch_all(&mut *connection).await? {
            existing.members.insert(text(&row, "email")?);
        }
        let sql = format!(
            "SELECT id, email, status, expires_at, delivery_requested_at FROM invitations \
             WHERE team_id = $1 AND email IN ({list})"
        );
        let mut query = sqlx::query(&sql).bind(team_id);
        for email in emails {
            query = query.bind(*email);
        }
        for row in query.fetch_all(&mut *connection).await? {
            let (id, email) = (text(&row, "id")?, text(&row, "email")?);
            let requested_at = int(&row, "delivery_requested_at")?;
            let latest = existing
                .last_requested_at
                .entry(email.clone())
                .or_insert(requested_at);
            *latest = (*latest).max(requested_at);
            let stored = text(&row, "status")?;
            match InvitationStatus::at(&stored, int(&row, "expires_at")?, now) {
                InvitationStatus::Pending => {
                    existing.pending.insert(email, id);
                }
                InvitationStatus::Expired
                    if InvitationStatus::from_stored(&stored) == InvitationStatus::Pending =>
                {
                    existing.expired.push((id, email));
                }
                _ => {}
            }
        }
        Ok(existing)
    }
}

/// The fixed values of one batch's inserts.
struct NewInvitations<'a> {
    team_id: &'a str,
    role: Role,
    now: i64,
    expires_at: i64,
    resend_interval_ms: i64,
    savepoints: bool,
}

impl NewInvitations<'_> {
    /// Inserts the batch's invitations (each under a savepoint where the database needs one)
    /// and fills in the results and the audit entries.
    async fn insert(
        &self,
        connection: &mut sqlx::AnyConnection,
        batch: &mut Batch,
        audit: &mut AuditLog,
    ) -> Result<(), Error> {
        let emails: Vec<&str> = batch.candidates.iter().map(|(e, _)| e.as_str()).collect();
        let existing = Existing::read(connection, self.team_id, &emails, self.now).await?;
        crate::queries::expire_invitations(connection, audit, &existing.expired, self.now).await?;
        for (email, index) in &batch.candidates {
            let result = &mut batch.results[*index];
            if existing.members.contains(email.as_str()) {
                result.status = InviteStatus::AlreadyMember;
                continue;
            }
            if let Some(id) = existing.pending.get(email.as_str()) {
                result.status = InviteStatus::AlreadyInvited;
                result.invitation_id = Some(id.clone());
                continue;
            }
            // The first mail waits for the per-recipient throttle of the team.
            let due_at = existing
                .last_requested_at
                .get(email.as_str())
                .map_or(self.now, |last| {
                    last.saturating_add(self.resend_interval_ms).max(self.now)
                });
            let id = new_id();
            match self.insert_one(connection, &id, email, due_at).await? {
                true => {
                    audit.push(
                        Actor::Admin,
                        "invitation.created",
                        Some(&id),
                        json!({
                            "email": email.as_str(),
                            "role": self.role,
                            "expires_at": rfc3339(self.expires_at),
                        }),
                    );
                    result.invitation_id = Some(id);
                }
                false => {
                    result.status = InviteStatus::AlreadyInvited;
                    result.invitation_id = sqlx::query_scalar(
                        "SELECT id FROM invitations WHERE team_id = $1 AND email = $2 AND status = 'pending'",
                    )
                    .bind(self.team_id)
                    .bind(email.as_str())
                    .fetch_optional(&mut *connection)
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Inserts one invitation; `false` if the pending-invitation index refused it.
    async fn insert_one(
        &self,
        connection: &mut sqlx::AnyConnection,
        id: &str,
        email: &EmailAddress,
        due_at: i64,
    ) -> Result<bool, Error> {
        if self.savepoints {
            sqlx::query("SAVEPOINT invite_item")
                .execute(&mut *connection)
                .await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO invitations (id, team_id, email, role, status, expires_at, created_at, \
             delivery_status, delivery_attempts, delivery_next_attempt_at, delivery_requested_at) \
             VALUES ($1, $2, $3, $4, $8, $5, $6, $9, 0, $7, $7)",
        )
        .bind(id)
        .bind(self.team_id)
        .bind(email.as_str())
        .bind(self.role.as_str())
        .bind(self.expires_at)
        .bind(self.now)
        .bind(due_at)
        .bind(InvitationStatus::Pending.as_str())
        .bind(DeliveryStatus::Queued.as_str())
        .execute(&mut *connection)
        .await;
        let release = match &inserted {
            Ok(_) => "RELEASE SAVEPOINT invite_item",
            Err(_) => "ROLLBACK TO SAVEPOINT invite_item",
        };
        match inserted {
            Err(error) if violated_unique_index(&error) != Some(UniqueIndex::PendingInvitation) => {
                return Err(error.into());
            }
            _ => {}
        }
        if self.savepoints {
            sqlx::query(release).execute(&mut *connection).await?;
        }
        Ok(inserted.is_ok())
    }
}

/// How long the links of a batch stay valid: `expires_in_hours`, else `INVITE_TTL_HOURS`.
fn batch_ttl_ms(body: &InviteRequest, state: &AppState) -> i64 {
    body.expires_in_hours
        .map_or(ms(state.settings.invite_ttl), |hours| {
            i64::from(hours) * 3_600_000
        })
}

/// Invite up to 100 emails at once; each email gets its own result.
#[utoipa::path(post, path = "/teams/{team_id}/invitations", tag = "invitations", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    request_body = InviteRequest,
    responses(
        (status = 207, description = "One result per email, in request order", body = InviteResponse),
        (status = 400, description = "Malformed body, no emails, more than 100, expires_in_hours out of range, or a malformed Idempotency-Key", body = web::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team", body = web::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = web::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = web::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The Idempotency-Key was used with another body", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn invite(
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    meta: RequestMeta,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<InviteRequest>,
) -> Result<Response, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let idempotency = Idempotency::new(key, format!("POST /teams/{team_id}/invitations"), &body);
    let mut batch = Batch::parse(&body)?;
    let now = now_ms();
    let ttl_ms = batch_ttl_ms(&body, &state);
    let mut write = state.store.write().await?;
    let locked = lock_live_team(&mut write.tx, &team_id).await?;
    if let Some(idempotency) = &idempotency
        && let Some(replay) = idempotency.replay(&mut write.tx, now).await?
    {
        return Ok(replay);
    }
    let mut audit = AuditLog::new(&team_id, locked.audit_seq, meta);
    NewInvitations {
        team_id: &team_id,
        role: body.role,
        now,
        expires_at: now.saturating_add(ttl_ms),
        resend_interval_ms: ms(state.settings.resend_interval),
        savepoints: state.store.savepoints(),
    }
    .insert(&mut write.tx, &mut batch, &mut audit)
    .await?;
    audit.write(&mut write.tx, now).await?;
    let body = serde_json::to_string(&batch.into_response()).unwrap_or_default();
    if let Some(idempotency) = &idempotency {
        idempotency
            .remember(&mut write.tx, StatusCode::MULTI_STATUS, &body, now)
            .await?;
    }
    write.commit().await?;
    state.mail_queued();
    Ok(json_response(
        StatusCode::MULTI_STATUS.as_u16(),
        body,
        false,
    ))
}

/// List a team's invitations with their delivery state, optionally by status and email.
#[utoipa::path(get, path = "/teams/{team_id}/invitations", tag = "invitations", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id"), PageQuery, InvitationFilter),
    responses(
        (status = 200, description = "A page of invitations", body = InvitationList),
        (status = 400, description = "Bad limit, cursor, status or email", body = web::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_invitations(
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
    filter: Result<Query<InvitationFilter>, QueryRejection>,
) -> Result<Json<InvitationList>, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let page = Page::from_query(query)?;
    let Query(filter) = filter.map_err(|rejection| Error::BadRequest(rejection.body_text()))?;
    let email = email_filter(filter.email.as_deref())?;
    find_live_team(state.store.pool(), &team_id).await?;
    let now = now_ms();
    let mut conditions = String::new();
    let mut next = 4;
    let mut binds: Vec<String> = Vec::new();
    let mut bind_now = false;
    match filter.status {
        None => {}
        Some(InvitationStatus::Pending) => {
            conditions.push_str(&format!(" AND status = 'pending' AND expires_at > ${next}"));
            bind_now = true;
            next += 1;
        }
        Some(InvitationStatus::Expired) => {
            conditions.push_str(&format!(
                " AND (status = 'expired' OR (status = 'pending' AND expires_at <= ${next}))"
            ));
            bind_now = true;
            next += 1;
        }
        Some(status) => {
            conditions.push_str(&format!(" AND status = ${next}"));
            binds.push(status.as_str().to_owned());
            next += 1;
        }
    }
    if let Some(email) = &email {
        conditions.push_str(&format!(" AND email = ${next}"));
        binds.push(email.as_str().to_owned());
    }
    let sql = format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations WHERE team_id = $1 AND id > $2{conditions} \
         ORDER BY id LIMIT $3"
    );
    let mut query = sqlx::query(&sql)
        .bind(&team_id)
        .bind(&page.after_id)
        .bind(page.sql_limit());
    if bind_now {
        query = query.bind(now);
    }
    for value in binds {
        query = query.bind(value);
    }
    let rows = query.fetch_all(state.store.pool()).await?;
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

async fn read_invitation(
    connection: &mut sqlx::AnyConnection,
    team_id: &str,
    invitation_id: &str,
    now: i64,
) -> Result<Invitation, Error> {
    let row = sqlx::query(&format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations WHERE id = $1 AND team_id = $2"
    ))
    .bind(invitation_id)
    .bind(team_id)
    .fetch_optional(&mut *connection)
    .await?
    .ok_or_else(|| {
        Error::NotFound(format!(
            "team {team_id} has no invitation with id {invitation_id}"
        ))
    })?;
    Ok(invitation_from_row(&row, now)?)
}

fn not_pending(invitation: &Invitation, action: &str) -> Error {
    Error::InvitationState {
        status: invitation.status,
        detail: format!(
            "the invitation is {}; only a pending invitation can be {action}",
            invitation.status
        ),
    }
}

/// Read one invitation with its delivery state.
#[utoipa::path(get, path = "/teams/{team_id}/invitations/{invitation_id}", tag = "invitations", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id"), ("invitation_id" = String, Path, description = "Invitation id")),
    responses(
        (status = 200, description = "The invitation", body = Invitation),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team or invitation", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_invitation(
    State(state): State<AppState>,
    Path((team_id, invitation_id)): Path<(String, String)>,
) -> Result<Json<Invitation>, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let invitation_id = parse_id(&invitation_id, "invitation")?;
    find_live_team(state.store.pool(), &team_id).await?;
    let mut connection = state.store.pool().acquire().await?;
    Ok(Json(
        read_invitation(&mut connection, &team_id, &invitation_id, now_ms()).await?,
    ))
}

/// Change the role a pending invitation gives.
#[utoipa::path(patch, path = "/teams/{team_id}/invitations/{invitation_id}", tag = "invitations", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id"), ("invitation_id" = String, Path, description = "Invitation id")),
    request_body = ChangeRole,
    responses(
        (status = 200, description = "The invitation with the new role", body = Invitation),
        (status = 400, description = "Malformed body or unknown role", body = web::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team or invitation", body = web::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The invitation is not pending (`status` says what it is)", body = web::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = web::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn change_invitation_role(
    State(state): State<AppState>,
    Path((team_id, invitation_id)): Path<(String, String)>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<ChangeRole>,
) -> Result<Json<Invitation>, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let invitation_id = parse_id(&invitation_id, "invitation")?;
    let now = now_ms();
    let mut write = state.store.write().await?;
    let locked = lock_live_team(&mut write.tx, &team_id).await?;
    let before = read_invitation(&mut write.tx, &team_id, &invitation_id, now).await?;
    if before.status != InvitationStatus::Pending {
        return Err(not_pending(&before, "changed"));
    }
    if before.role == body.role {
        return Ok(Json(before));
    }
    let updated = sqlx::query(
        "UPDATE invitations SET role = $1 WHERE id = $2 AND status = 'pending' AND expires_at > $3",
    )
    .bind(body.role.as_str())
    .bind(&invitation_id)
    .bind(now)
    .execute(&mut *write.tx)
    .await?;
    let after = read_invitation(&mut write.tx, &team_id, &invitation_id, now).await?;
    if updated.rows_affected() == 0 {
        return Err(not_pending(&after, "changed"));
    }
    let mut audit = AuditLog::new(&team_id, locked.audit_seq, meta);
    audit.push(
        Actor::Admin,
        "invitation.role_changed",
        Some(&invitation_id),
        json!({ "email": after.email, "from": before.role, "to": body.role }),
    );
    audit.write(&mut write.tx, now).await?;
    write.commit().await?;
    state.changed();
    Ok(Json(after))
}

/// Revoke a pending invitation: its links stop working at once.
#[utoipa::path(delete, path = "/teams/{team_id}/invitations/{invitation_id}", tag = "invitations", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id"), ("invitation_id" = String, Path, description = "Invitation id")),
    responses(
        (status = 204, description = "Revoked (or already revoked)"),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team or invitation", body = web::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The invitation is accepted or expired (`status` says which)", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn revoke_invitation(
    State(state): State<AppState>,
    Path((team_id, invitation_id)): Path<(String, String)>,
    meta: RequestMeta,
) -> Result<StatusCode, Error> {
    let team_id = parse_id(&team_id, "team")?;
    let invitation_id = parse_id(&invitation_id, "invitation")?;
    let now = now_ms();
    let mut write = state.store.write().await?;
    let locked = lock_live_team(&mut write.tx, &team_id).await?;
    let before = read_invitation(&mut write.tx, &team_id, &invitation_id, now).await?;
    match before.status {
        InvitationStatus::Revoked => return Ok(StatusCode::NO_CONTENT),
        InvitationStatus::Pending => {}
        _ => return Err(not_pending(&before, "revoked")),
    }
    let revoked = sqlx::query(
        "UPDATE invitations SET status = $3, finished_at = $1 \
         WHERE id = $2 AND status = 'pending' AND expires_at > $1",
    )
    .bind(now)
    .bind(&invitation_id)
    .bind(InvitationStatus::Revoked.as_str())
    .execute(&mut *write.tx)
    .await?;
    if revoked.rows_affected() == 0 {
        // An accept (or the expiry) got there first: say what the invitation is now.
        let after = read_invitation(&mut write.tx, &team_id, &invitation_id, now).await?;
        return match after.status {
            InvitationStatus::Revoked => Ok(StatusCode::NO_CONTENT),
            _ => Err(not_pending(&after, "revoked")),
        };
    }
    let mut audit = AuditLog::new(&team_id, locked.audit_seq, meta);
    audit.push(
        Actor::Admin,
        "invitation.revoked",
        Some(&invitation_id),
        json!({ "email": before.email }),
    );
    audit.write(&mut write.tx, now).await?;
    write.commit().await?;
    state.changed();
    Ok(StatusCode::NO_CONTENT)
}

/// The per-recipient throttle of resends: 429 (with the wait) if a mail to `email` was
/// requested, for any of the team's invitations, less than `interval` before `now`.
async fn throttle(
    connection: &mut sqlx::AnyConnection,
    team_id: &str,
    email: &str,
    interval: std::time::Duration,
    now: i64,
) -> Result<(), Error> {
    let last_requested: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(delivery_requested_at) FROM invitations WHERE team_id = $1 AND email = $2",
    )
    .bind(team_id)
    .bind(email)
    .fetch_one(&mut *connection)
    .await?;
    let allowed_at = last_requested.unwrap_or(0).saturating_add(ms(interval));
    if now < allowed_at {
        let wait_ms = u64::try_from(allowed_at - now).unwrap_or(0);
        return Err(Error::TooManyRequests {
            retry_after_seconds: wait_ms.div_ceil(1000).max(1),
        });
    }
    Ok(())
}

/// Send the invitation again with a new link and a new expiry; the previous links stop
/// working. Throttled per recipient across the team's invitations
/// (`INVITE_RESEND_INTERVAL_SECONDS`).
#[utoipa::path(post, path = "/teams/{team_id}/invitations/{invitation_id}/resend", tag = "invitations", security(("admin_token" = [])),
    params(("team_id" = String, Path, description = "Team id"), ("invitation_id" = String, Path, description = "Invitation id")),
    responses(
        (status = 202, description = "A new mail is queued", body = Invitation),
        (status = 401, description = "Missing or wrong admin token", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live team or invitation", body = web::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The invitation is not pending (`status` says what it is; an expired one is invited again instead)", body = web::Problem, content_type = "application/problem+json"),
        (status = 429, description = "This address was mailed too recently; see Retry-After", body = web::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until a resend is allowed"))),
    ))]
pub(crate) async fn resend_invitation(
    State(state): State<AppState>,
    Path((team_id, invitation_id)): Path<(String, String)>,
    meta: RequestMeta,
) -> Result<(StatusCode, Json<Invitation>), Error> {
    let team_id = parse_id(&team_id, "team")?;
    let invitation_id = parse_id(&invitation_id, "invitation")?;
    let now = now_ms();
    let mut write = state.store.write().await?;
    let locked = lock_live_team(&mut write.tx, &team_id).await?;
    let before = read_invitation(&mut write.tx, &team_id, &invitation_id, now).await?;
    if before.status != InvitationStatus::Pending {
        return Err(not_pending(&before, "resent"));
    }
    throttle(
        &mut write.tx,
        &team_id,
        &before.email,
        state.settings.resend_interval,
        now,
    )
    .await?;
    // A new generation ends the old links now; the worker mints the new one.
    let resent = sqlx::query(
        "UPDATE invitations SET delivery_generation = delivery_generation + 1, token_hash = NULL, \
         expires_at = $1, delivery_status = $4, delivery_attempts = 0, \
         delivery_last_error = NULL, delivery_next_attempt_at = $2, delivery_requested_at = $2, \
         delivered_at = NULL, delivery_claimed_by = NULL \
         WHERE id = $3 AND status = 'pending' AND expires_at > $2",
    )
    .bind(now.saturating_add(ms(state.settings.invite_ttl)))
    .bind(now)
    .bind(&invitation_id)
    .bind(DeliveryStatus::Queued.as_str())
    .execute(&mut *write.tx)
    .await?;
    let after = read_invitation(&mut write.tx, &team_id, &invitation_id, now).await?;
    if resent.rows_affected() == 0 {
        return Err(not_pending(&after, "resent"));
    }
    // Keep the tokens of the generation just ended (they answer 410, "replaced"); older ones
    // go, so the token rows of an invitation stay bounded.
    sqlx::query(
        "DELETE FROM invitation_tokens WHERE invitation_id = $1 AND generation < \
         (SELECT delivery_generation - 1 FROM invitations WHERE id = $1)",
    )
    .bind(&invitation_id)
    .execute(&mut *write.tx)
    .await?;
    let mut audit = AuditLog::new(&team_id, locked.audit_seq, meta);
    audit.push(
        Actor::Admin,
        "invitation.resent",
        Some(&invitation_id),
        json!({ "email": after.email, "expires_at": after.expires_at }),
    );
    audit.write(&mut write.tx, now).await?;
    write.commit().await?;
    state.mail_queued();
    Ok((StatusCode::ACCEPTED, Json(after)))
}
