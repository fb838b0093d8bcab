//! The public side: `GET /invite` (the accept page), `POST /invitations/preview` and
//! `POST /invitations/accept`.
//!
//! Nothing here consumes a token on GET (mail systems' link scanners open links first), and
//! tokens travel only in the URL fragment and in POST bodies, so they reach no server log and
//! no `Referer`. Token responses carry `Cache-Control: no-store` and
//! `Referrer-Policy: no-referrer`.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{ApiJson, AppState, new_id, no_store};
use crate::audit::{Actor, AuditLog, RequestMeta};
use crate::domain::{InvitationStatus, Role};
use crate::error::{Error, UniqueIndex, violated_unique_index};
use crate::queries::lock_team;
use crate::store::{int, opt_int, text};
use crate::time::{now_ms, rfc3339};
use crate::token::InviteToken;

/// Body of `POST /invitations/accept` and `POST /invitations/preview`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The token from the invitation link (`#token=...`).
    pub token: String,
}

/// What an invitation is for, before accepting it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationPreview {
    /// The team's id.
    pub team_id: String,
    /// The team's name.
    pub team_name: String,
    /// The invited email.
    pub email: String,
    /// The role on accepting.
    pub role: Role,
    /// When the link stops working (RFC 3339).
    pub expires_at: String,
}

/// The membership an accepted invitation created.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The new member's id.
    pub member_id: String,
    /// The team's id.
    pub team_id: String,
    /// The team's name.
    pub team_name: String,
    /// The member's email.
    pub email: String,
    /// The member's role.
    pub role: Role,
    /// RFC 3339.
    pub joined_at: String,
}

struct Found {
    invitation_id: String,
    team_id: String,
    team_name: String,
    email: String,
    role: Role,
    expires_at: i64,
    generation: i64,
}

/// Looks a token up by hash and tells a usable one from an unknown (404) or spent one (410,
/// saying why: accepted, revoked, expired, replaced by a resend, or the team deleted). A token
/// is usable while its invitation is pending and unexpired and the token belongs to the
/// invitation's current delivery generation: every token mailed since the last resend works.
async fn find_usable(
    connection: &mut sqlx::AnyConnection,
    token_hash: &str,
    now: i64,
) -> Result<Found, Error> {
    let row = sqlx::query(
        "SELECT i.id, i.team_id, i.email, i.role, i.status, i.expires_at, \
                i.delivery_generation, k.generation AS token_generation, \
                t.name AS team_name, t.deleted_at AS team_deleted_at \
         FROM invitation_tokens k \
         JOIN invitations i ON i.id = k.invitation_id \
         JOIN teams t ON t.id = i.team_id \
         WHERE k.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(&mut *connection)
    .await?
    .ok_or_else(|| Error::NotFound("this invitation link is not known".into()))?;
    let expires_at = int(&row, "expires_at")?;
    if opt_int(&row, "team_deleted_at")?.is_some() {
        return Err(Error::Gone(
            "the team of this invitation was deleted".into(),
        ));
    }
    match InvitationStatus::at(&text(&row, "status")?, expires_at, now) {
        InvitationStatus::Accepted => {
            return Err(Error::Gone("this invitation was already accepted".into()));
        }
        InvitationStatus::Revoked => {
            return Err(Error::Gone("this invitation was revoked".into()));
        }
        InvitationStatus::Expired => {
            return Err(Error::Gone("this invitation has expired".into()));
        }
        InvitationStatus::Pending => {}
    }
    let generation = int(&row, "delivery_generation")?;
    if int(&row, "token_generation")? != generation {
        return Err(Error::Gone(
            "this link was replaced by a newer invitation email; use the newest one".into(),
        ));
    }
    Ok(Found {
        invitation_id: text(&row, "id")?,
        team_id: text(&row, "team_id")?,
        team_name: text(&row, "team_name")?,
        email: text(&row, "email")?,
        role: Role::from_stored(&text(&row, "role")?),
        expires_at,
        generation,
    })
}

/// Marks a found invitation accepted. The conditional update is what makes a token single
/// use: of two concurrent accepts, PostgreSQL lets the second re-check the row after the first
/// commits and it matches nothing; SQLite runs them one after the other. A revoke or resend
/// that committed meanwhile makes it match nothing too, and the answer says what happened.
async fn claim(
    connection: &mut sqlx::AnyConnection,
    found: &Found,
    token_hash: &str,
    now: i64,
) -> Result<(), Error> {
    let claimed = sqlx::query(
        "UPDATE invitations SET status = $4, finished_at = $1 \
         WHERE id = $2 AND status = 'pending' AND delivery_generation = $3 AND expires_at > $1",
    )
    .bind(now)
    .bind(&found.invitation_id)
    .bind(found.generation)
    .bind(InvitationStatus::Accepted.as_str())
    .execute(&mut *connection)
    .await?;
    if claimed.rows_affected() != 1 {
        // Say precisely what happened meanwhile.
        find_usable(connection, token_hash, now).await?;
        return Err(Error::Gone("this invitation can no longer be used".into()));
    }
    Ok(())
}

/// Inserts the membership of an accepted invitation and returns its id (409 if the email is
/// already a member).
async fn join(
    connection: &mut sqlx::AnyConnection,
    found: &Found,
    now: i64,
) -> Result<String, Error> {
    let member_id = new_id();
    let inserted = sqlx::query(
        "INSERT INTO members (id, team_id, email, role, invitation_id, joined_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&member_id)
    .bind(&found.team_id)
    .bind(&found.email)
    .bind(found.role.as_str())
    .bind(&found.invitation_id)
    .bind(now)
    .execute(&mut *connection)
    .await;
    match inserted {
        Err(error) if violated_unique_index(&error) == Some(UniqueIndex::MemberEmail) => Err(
            Error::Conflict("this email is already a member of the team".into()),
        ),
        Err(error) => Err(error.into()),
        Ok(_) => Ok(member_id),
    }
}

fn token_responses(result: Result<Response, Error>) -> Response {
    no_store(match result {
        Ok(response) => response,
        Err(error) => error.into_response(),
    })
}

/// Show what a token is for (team, email, expiry) without using it.
#[utoipa::path(post, path = "/invitations/preview", tag = "accept",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "The invitation", body = InvitationPreview),
        (status = 400, description = "Malformed body", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown token", body = web::Problem, content_type = "application/problem+json"),
        (status = 410, description = "Used, revoked, superseded or expired token", body = web::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = web::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = web::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over ACCEPT_RATE_PER_MINUTE for this client address; see Retry-After", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn preview_invitation(
    State(state): State<AppState>,
    body: Result<ApiJson<TokenRequest>, Error>,
) -> Response {
    token_responses(
        async {
            let ApiJson(body) = body?;
            let hash = InviteToken::from_presented(&body.token).hash();
            let mut connection = state.store.pool().acquire().await?;
            let found = find_usable(&mut connection, &hash, now_ms()).await?;
            Ok(Json(InvitationPreview {
                team_id: found.team_id,
                team_name: found.team_name,
                email: found.email,
                role: found.role,
                expires_at: rfc3339(found.expires_at),
            })
            .into_response())
        }
        .await,
    )
}

/// Turn a valid token into a membership (single use).
#[utoipa::path(post, path = "/invitations/accept", tag = "accept",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "Accepted: the new membership", body = Accepted),
        (status = 400, description = "Malformed body", body = web::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown token", body = web::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The email is already a member", body = web::Problem, content_type = "application/problem+json"),
        (status = 410, description = "Used, revoked, superseded or expired token", body = web::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = web::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = web::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over ACCEPT_RATE_PER_MINUTE for this client address; see Retry-After", body = web::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn accept_invitation(
    State(state): State<AppState>,
    meta: RequestMeta,
    body: Result<ApiJson<TokenRequest>, Error>,
) -> Response {
    token_responses(
        async {
            let ApiJson(body) = body?;
            let hash = InviteToken::from_presented(&body.token).hash();
            let now = now_ms();
            let mut write = state.store.write().await?;
            let found = find_usable(&mut write.tx, &hash, now).await?;
            let Some(locked) = lock_team(&mut write.tx, &found.team_id, true).await? else {
                return Err(Error::Gone(
                    "the team of this invitation was deleted".into(),
                ));
            };
            claim(&mut write.tx, &found, &hash, now).await?;
            let member_id = join(&mut write.tx, &found, now).await?;
            let mut audit = AuditLog::new(&found.team_id, locked.audit_seq, meta);
            audit.push(
                Actor::Invitee,
                "invitation.accepted",
                Some(&found.invitation_id),
                json!({ "email": found.email, "role": found.role, "member_id": member_id }),
            );
            audit.write(&mut write.tx, now).await?;
            write.commit().await?;
            state.changed();
            Ok(Json(Accepted {
                member_id,
                team_id: found.team_id,
                team_name: found.team_name,
                email: found.email,
                role: found.role,
                joined_at: rfc3339(now),
            })
            .into_response())
        }
        .await,
    )
}

/// The accept page: reads the token from the fragment, shows the team, accepts on a button.
#[utoipa::path(get, path = "/invite", tag = "accept",
    responses((status = 200, description = "A self-contained HTML page", content_type = "text/html")))]
pub(crate) async fn accept_page() -> Response {
    let mut response = no_store(Html(ACCEPT_PAGE.as_str()).into_response());
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&ACCEPT_PAGE_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `'sha256-<base64>'` of an inline script or style, as CSP names it.
fn csp_hash(source: &str) -> String {
    format!(
        "'sha256-{}'",
        STANDARD.encode(Sha256::digest(source.as_bytes()))
    )
}

/// The page's Content-Security-Policy: nothing but its own inline script and style (by hash,
/// not `'unsafe-inline'`, so an injected script would not run) and calls to its own origin.
static ACCEPT_PAGE_POLICY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'",
        csp_hash(ACCEPT_SCRIPT),
        csp_hash(ACCEPT_STYLE)
    )
});

/// The page: no external resources; the token leaves the address bar at once.
static ACCEPT_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{ACCEPT_HEAD}<style>{ACCEPT_STYLE}</style>\n</head>\n{ACCEPT_BODY}<script>{ACCEPT_SCRIPT}</script>\n</body>\n</html>\n"
    )
});

/// The page up to its style.
const ACCEPT_HEAD: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Team invitation</title>
"##;

/// The page's inline style (hashed into the policy).
const ACCEPT_STYLE: &str = r##"
  body { font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; }
  button { font-size: 1rem; padding: .6rem 1.2rem; border-radius: .4rem; border: 1px solid #246; background: #2a5d9f; color: #fff; cursor: pointer; }
  button[disabled] { opacity: .5; cursor: default; }
  .error { color: #a11; }
  .ok { color: #161; }
"##;

/// The page's body up to its script.
const ACCEPT_BODY: &str = r##"<body>
<h1 id="title">Team invitation</h1>
<p id="message">Checking your invitation…</p>
<p><button id="accept" type="button" hidden>Accept invitation</button></p>
"##;

/// The page's inline script (hashed into the policy).
const ACCEPT_SCRIPT: &str = r##"
(function () {
  "use strict";
  var params = new URLSearchParams(window.location.hash.slice(1));
  var token = params.get("token");
  // Take the token out of the address bar and history.
  if (window.history && window.history.replaceState) {
    window.history.replaceState(null, "", window.location.pathname);
  }
  var title = document.getElementById("title");
  var message = document.getElementById("message");
  var button = document.getElementById("accept");
  // Problem details are written lower-case first (one style for both APIs); a sentence on
  // the page starts with a capital.
  function show(text, kind) { message.textContent = text.charAt(0).toUpperCase() + text.slice(1); message.className = kind || ""; }
  function post(path) {
    return fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: token }),
      credentials: "omit",
      referrerPolicy: "no-referrer",
      cache: "no-store"
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    });
  }
  if (!token) { show("This link has no invitation token. Open the link from your email again.", "error"); return; }
  post("/invitations/preview").then(function (result) {
    if (!result.ok) { show(result.body.detail || "This invitation cannot be used.", "error"); return; }
    title.textContent = "Join " + result.body.team_name;
    show("You are invited as " + result.body.email + " (" + result.body.role + "). The link works until " + result.body.expires_at + ".");
    button.hidden = false;
  }).catch(function () { show("Could not reach the server; try again.", "error"); });
  button.addEventListener("click", function () {
    button.disabled = true;
    post("/invitations/accept").then(function (result) {
      if (!result.ok) { show(result.body.detail || "This invitation cannot be used.", "error"); return; }
      button.hidden = true;
      show("Welcome to " + result.body.team_name + ". You are now a member.", "ok");
    }).catch(function () { button.disabled = false; show("Could not reach the server; try again.", "error"); });
  });
})();
"##;
