//! Queries shared by several handlers and the mail worker: reading and locking a team, and
//! marking expired invitations.
//!
//! Every change to a team's data first locks the team row ([`lock_live_team`]): an `UPDATE`
//! that takes the row lock on PostgreSQL (SQLite has one writer anyway) and re-checks
//! `deleted_at` after any wait. So an invitation can never be created for a team deleted by a
//! concurrent request, and the audit sequence numbers of a team follow its commit order.

use serde::Serialize;
use serde_json::json;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use crate::audit::{Actor, AuditLog};
use crate::domain::InvitationStatus;
use crate::error::Error;
use crate::store::{int, opt_text, text};
use crate::time::rfc3339;

/// A team, as read back.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Team {
    /// UUIDv7.
    pub id: String,
    /// The name as given (trimmed, NFC); unique among live teams, ignoring case.
    pub name: String,
    /// Free text, if any.
    pub description: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// The columns [`team_from_row`] reads.
pub(crate) const TEAM_COLUMNS: &str = "id, name, description, created_at, updated_at";

pub(crate) fn team_from_row(row: &AnyRow) -> Result<Team, sqlx::Error> {
    Ok(Team {
        id: text(row, "id")?,
        name: text(row, "name")?,
        description: opt_text(row, "description")?,
        created_at: rfc3339(int(row, "created_at")?),
        updated_at: rfc3339(int(row, "updated_at")?),
    })
}

/// The 404 of a team that does not exist or is deleted.
pub(crate) fn team_not_found(team_id: &str) -> Error {
    Error::NotFound(format!("no live team has id {team_id}"))
}

/// Reads a live team inside any executor (pool or transaction), without locking it.
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
        None => Err(team_not_found(team_id)),
    }
}

/// A team row locked for the rest of the transaction, with its last audit sequence number.
pub(crate) struct LockedTeam {
    pub(crate) team: Team,
    pub(crate) audit_seq: i64,
}

/// Locks a live team's row until the transaction ends (404 if it is missing or deleted, also
/// when a concurrent transaction deleted it while this one waited for the lock).
pub(crate) async fn lock_live_team(
    connection: &mut sqlx::AnyConnection,
    team_id: &str,
) -> Result<LockedTeam, Error> {
    lock_team(connection, team_id, true)
        .await?
        .ok_or_else(|| team_not_found(team_id))
}

/// Locks a team's row whether or not it is deleted (the mail worker records outcomes for
/// invitations of deleted teams too). `None` if no such team exists.
pub(crate) async fn lock_team(
    connection: &mut sqlx::AnyConnection,
    team_id: &str,
    live_only: bool,
) -> Result<Option<LockedTeam>, Error> {
    let condition = if live_only {
        " AND deleted_at IS NULL"
    } else {
        ""
    };
    let row = sqlx::query(&format!(
        "UPDATE teams SET audit_seq = audit_seq WHERE id = $1{condition} \
         RETURNING {TEAM_COLUMNS}, audit_seq"
    ))
    .bind(team_id)
    .fetch_optional(&mut *connection)
    .await?;
    match row {
        Some(row) => Ok(Some(LockedTeam {
            team: team_from_row(&row)?,
            audit_seq: int(&row, "audit_seq")?,
        })),
        None => Ok(None),
    }
}

/// Marks each of `invitations` (id, email) `expired` if it is still pending past its expiry,
/// with an `invitation.expired` entry, in the caller's transaction (team row locked).
pub(crate) async fn expire_invitations(
    connection: &mut sqlx::AnyConnection,
    audit: &mut AuditLog,
    invitations: &[(String, String)],
    now: i64,
) -> Result<(), Error> {
    for (id, email) in invitations {
        let expired = sqlx::query(
            "UPDATE invitations SET status = $1, finished_at = $2 \
             WHERE id = $3 AND status = 'pending' AND expires_at <= $2",
        )
        .bind(InvitationStatus::Expired.as_str())
        .bind(now)
        .bind(id)
        .execute(&mut *connection)
        .await?;
        if expired.rows_affected() == 1 {
            audit.push(
                Actor::System,
                "invitation.expired",
                Some(id),
                json!({ "email": email }),
            );
        }
    }
    Ok(())
}
