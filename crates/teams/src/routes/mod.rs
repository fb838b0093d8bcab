//! The HTTP surface: router, shared state, admin auth, extractors, pagination.
//!
//! Each resource module has its handlers (documented for OpenAPI with `utoipa::path`):
//! [`teams`], [`members`], [`invitations`] (admin) and [`accept`] (public: the accept page,
//! preview and accept). Everything that fails returns [`Error`], whose single mapping to an
//! RFC 9457 problem lives in `error.rs`.

pub(crate) mod accept;
pub(crate) mod audit;
pub(crate) mod cors;
pub(crate) mod invitations;
pub(crate) mod members;
pub(crate) mod rate_limit;
pub(crate) mod teams;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use utoipa::IntoParams;
use web::json::BodyRejection;

use crate::config::TeamsSettings;
use crate::error::Error;
use crate::store::Store;

/// Default page size of list endpoints.
pub const PAGE_LIMIT_DEFAULT: u32 = 50;
/// Largest page size of list endpoints; larger `limit`s are capped to it.
pub const PAGE_LIMIT_MAX: u32 = 200;
const PAGE_LIMITS: web::paging::PageLimits = web::paging::PageLimits {
    default: PAGE_LIMIT_DEFAULT,
    max: PAGE_LIMIT_MAX,
};

/// Largest single request header field (name and value) the teams routes accept, in bytes;
/// a larger one is answered 431 before authentication or any handler runs. (Much larger
/// headers are refused by the HTTP server itself, hyper, with a bare 431, before any route.)
pub const HEADER_FIELD_MAX_BYTES: usize = 8 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) inner: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) settings: TeamsSettings,
    /// Wakes the mail worker when a delivery is queued.
    pub(crate) mail_wakeup: Arc<Notify>,
    /// Wakes the audit relay after a change.
    pub(crate) audit_wakeup: Arc<Notify>,
    /// The mail worker's counters, for `/metrics`.
    pub(crate) mail_metrics: Arc<crate::mail::MailMetrics>,
    /// Per-client-address limit on the token endpoints.
    pub(crate) accept_rate_limiter: rate_limit::RateLimiter,
}

impl AppState {
    /// Says that a change committed: the audit relay has new entries.
    pub(crate) fn changed(&self) {
        self.audit_wakeup.notify_one();
    }

    /// Says that a change committed that queued mail.
    pub(crate) fn mail_queued(&self) {
        self.mail_wakeup.notify_one();
        self.changed();
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.inner
    }
}

/// All teams routes with their own policies (body limit, header-field limit, admin auth, rate
/// limits); the binary adds the common stack and the teams request timeout
/// (`web::middleware`).
pub(crate) fn router(state: AppState) -> Router {
    let body_limit = state.settings.max_body_bytes;
    let admin = Router::new()
        .route("/teams", post(teams::create_team).get(teams::list_teams))
        .route(
            "/teams/{team_id}",
            get(teams::get_team)
                .patch(teams::update_team)
                .delete(teams::delete_team),
        )
        .route(
            "/teams/{team_id}/invitations",
            post(invitations::invite).get(invitations::list_invitations),
        )
        .route(
            "/teams/{team_id}/invitations/{invitation_id}",
            get(invitations::get_invitation)
                .patch(invitations::change_invitation_role)
                .delete(invitations::revoke_invitation),
        )
        .route(
            "/teams/{team_id}/invitations/{invitation_id}/resend",
            post(invitations::resend_invitation),
        )
        .route("/teams/{team_id}/members", get(members::list_members))
        .route(
            "/teams/{team_id}/members/{member_id}",
            axum::routing::patch(members::change_member_role).delete(members::remove_member),
        )
        .route("/teams/{team_id}/audit", get(audit::list_audit))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let token_routes = Router::new()
        .route(
            "/invitations/preview",
            post(accept::preview_invitation).options(cors::options),
        )
        .route(
            "/invitations/accept",
            post(accept::accept_invitation).options(cors::options),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit_token_requests,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            cors::allow_frontend_origin,
        ));
    let public = Router::new()
        .route("/invite", get(accept::accept_page))
        .merge(token_routes);
    admin
        .merge(public)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(limit_header_fields))
        .with_state(state)
}

/// Refuses a request with any header field over [`HEADER_FIELD_MAX_BYTES`] (431 problem).
async fn limit_header_fields(request: Request, next: Next) -> Response {
    let oversized = request
        .headers()
        .iter()
        .find(|(name, value)| name.as_str().len() + value.len() > HEADER_FIELD_MAX_BYTES);
    if let Some((name, _)) = oversized {
        return Error::HeaderFieldTooLarge {
            name: name.as_str().to_owned(),
        }
        .into_response();
    }
    next.run(request).await
}

/// Admin auth: `Authorization: Bearer <ADMIN_TOKEN>`, compared by digest in constant time.
async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(web::auth::bearer_token);
    match presented {
        Some(token) if web::auth::secret_matches(token, &state.settings.admin_token) => {
            next.run(request).await
        }
        _ => Error::Unauthorized.into_response(),
    }
}

/// A JSON object body whose rejections are RFC 9457 problems (400, 413, 415): the one check
/// of `web::json`, answered as this service's [`Error`].
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Error> {
        web::json::object_body(request, state)
            .await
            .map(ApiJson)
            .map_err(|rejection| match rejection {
                BodyRejection::BadRequest(detail) => Error::BadRequest(detail),
                BodyRejection::TooLarge(detail) => Error::PayloadTooLarge(detail),
                BodyRejection::UnsupportedMediaType(detail) => Error::UnsupportedMediaType(detail),
            })
    }
}

/// Query parameters of list endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Page size, 1 to 200 (larger values are capped); default 50.
    #[param(minimum = 1, maximum = 4_294_967_295_u64, format = Int64)]
    pub(crate) limit: Option<u32>,
    /// The `next_cursor` of the previous page; omit for the first page.
    pub(crate) cursor: Option<String>,
}

/// A checked page request: the id to start after and the page size.
pub(crate) struct Page {
    pub(crate) after_id: String,
    pub(crate) limit: u32,
}

impl Page {
    pub(crate) fn from_query(
        query: Result<Query<PageQuery>, QueryRejection>,
    ) -> Result<Page, Error> {
        let Query(query) = query.map_err(|rejection| Error::BadRequest(rejection.body_text()))?;
        let limit = PAGE_LIMITS
            .resolve(query.limit.map(u64::from))
            .map_err(Error::BadRequest)?;
        let after_id = match query.cursor.as_deref() {
            None | Some("") => String::new(),
            Some(cursor) => URL_SAFE_NO_PAD
                .decode(cursor)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .filter(|id| uuid::Uuid::parse_str(id).is_ok())
                .ok_or_else(|| {
                    Error::BadRequest("`cursor` is not a cursor this API returned".into())
                })?,
        };
        Ok(Page { after_id, limit })
    }

    /// The cursor for the page after one whose last id is `last_id`, if a next page exists.
    pub(crate) fn next_cursor(&self, returned: usize, last_id: Option<&str>) -> Option<String> {
        if returned < self.limit as usize {
            return None;
        }
        last_id.map(|id| URL_SAFE_NO_PAD.encode(id.as_bytes()))
    }

    /// The `LIMIT` to ask the database for.
    pub(crate) fn sql_limit(&self) -> i64 {
        i64::from(self.limit)
    }
}

/// Longest path id echoed back in a 404 detail; a longer one is not a UUID anyway, and a
/// problem body should not grow with hostile input.
const ECHOED_ID_MAX_CHARS: usize = 64;

/// A path id that must be a UUID; anything else names nothing (404).
pub(crate) fn parse_id(raw: &str, what: &str) -> Result<String, Error> {
    uuid::Uuid::parse_str(raw)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| {
            if raw.chars().count() <= ECHOED_ID_MAX_CHARS {
                Error::NotFound(format!("no {what} has id {raw:?}"))
            } else {
                Error::NotFound(format!("no {what} has this id (it is not a UUID)"))
            }
        })
}

/// Marks a response as not to be stored by any cache (responses about tokens).
pub(crate) fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

pub(crate) use crate::store::new_id;

/// The OpenAPI document, generated from the handlers' `utoipa::path` attributes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Logbook teams API", description = "Teams, members and batch email invitations. Admin endpoints take `Authorization: Bearer <ADMIN_TOKEN>`."),
    paths(
        teams::create_team, teams::list_teams, teams::get_team, teams::update_team, teams::delete_team,
        audit::list_audit,
        invitations::invite, invitations::list_invitations, invitations::get_invitation,
        invitations::change_invitation_role, invitations::revoke_invitation, invitations::resend_invitation,
        members::list_members, members::change_member_role, members::remove_member,
        accept::accept_page, accept::preview_invitation, accept::accept_invitation,
    ),
    components(schemas(web::Problem, crate::domain::Role, crate::domain::InvitationStatus, crate::domain::DeliveryStatus)),
    modifiers(&AdminTokenScheme),
    tags(
        (name = "teams", description = "Teams (admin)"),
        (name = "invitations", description = "Batch invitations and their delivery (admin)"),
        (name = "members", description = "Members (admin)"),
        (name = "accept", description = "Public: the accept page and token endpoints"),
    )
)]
pub(crate) struct ApiDoc;

struct AdminTokenScheme;

impl utoipa::Modify for AdminTokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
