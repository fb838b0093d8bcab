//! Settings: one typed struct from flags and environment ([`TeamsArgs`]), checked completely
//! into [`TeamsSettings`] before anything is served.
//!
//! [`TeamsArgs::check`] never stops at the first problem: it collects one
//! [`ConfigProblem`] per missing or invalid setting (naming the variable and the flag, and
//! saying what to do) so that an operator fixes everything in one pass. Secrets (the admin
//! token, and the database and SMTP URLs, which may hold a password) are [`Secret`]s, in
//! [`TeamsArgs`] as in [`TeamsSettings`], so both derive a `Debug` that prints none of them.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use lettre::message::Mailbox;
use web::config::{Checker, Setting};
use web::{ConfigProblem, ServiceContext};

/// Default invitation lifetime: 7 days.
pub const DEFAULT_INVITE_TTL_HOURS: u64 = 168;
/// Longest invitation lifetime accepted: one year.
pub const INVITE_TTL_HOURS_MAX: u64 = 24 * 366;
/// Default minimum time between two mails for one invitation.
pub const DEFAULT_RESEND_INTERVAL_SECONDS: u64 = 60;
/// Default delay before the first retry of a failed delivery; it doubles per attempt.
pub const DEFAULT_MAIL_RETRY_INITIAL_MS: u64 = 1_000;
/// Default cap on the delay between delivery retries (10 minutes).
pub const DEFAULT_MAIL_RETRY_MAX_MS: u64 = 600_000;
/// Default time allowed for one whole SMTP transaction (connect, TLS, every reply).
pub const DEFAULT_MAIL_SEND_TIMEOUT_SECONDS: u64 = 30;
/// Default number of failed attempts after which a delivery is given up (`failed`).
pub const DEFAULT_MAIL_MAX_ATTEMPTS: u32 = 10;
/// Default number of SMTP transactions in flight at once.
pub const DEFAULT_MAIL_CONCURRENCY: u32 = 8;
/// Longest `MAIL_RETRY_MAX_MS` accepted (one day).
pub const MAIL_RETRY_MAX_MS_MAX: u64 = 86_400_000;
/// Default request body limit of the teams routes (a batch of 100 long emails fits easily).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default request timeout of the teams routes.
pub const DEFAULT_REQUEST_TIMEOUT_SECONDS: u64 = 30;
/// Default number of requests per minute one client address may make to the token endpoints
/// (`POST /invitations/accept` and `/invitations/preview` together); a burst of this many is
/// allowed, then one more every `60 / rate` seconds.
pub const DEFAULT_ACCEPT_RATE_PER_MINUTE: u32 = 30;
/// Largest `ACCEPT_RATE_PER_MINUTE` accepted.
pub const ACCEPT_RATE_PER_MINUTE_MAX: u32 = 60_000;
/// Default size of the database connection pool.
pub const DEFAULT_DATABASE_MAX_CONNECTIONS: u32 = 8;
/// Shortest admin token accepted.
pub const ADMIN_TOKEN_MIN_CHARS: usize = 32;
pub use crate::store::DATABASE_CHECK_TIMEOUT;
/// The sender used in development mode when `MAIL_FROM` is not set.
pub const DEVELOPMENT_MAIL_FROM: &str = "Logbook <noreply@logbook.localhost>";

/// Every teams setting, each with a flag and an env var (clap `env`), flattened into
/// `logbook serve`. Every field is optional or defaulted, so development mode needs nothing.
#[derive(clap::Args, Clone, Debug)]
pub struct TeamsArgs {
    /// Database: sqlite://relative/path, sqlite:///absolute/path or postgres://user@host/db
    /// [development default: sqlite://<data-dir>/teams.sqlite3]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Most database connections the teams service opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = DEFAULT_DATABASE_MAX_CONNECTIONS)]
    pub database_max_connections: u32,
    /// The API's own absolute URL (https in production), the base of the `Location` of created
    /// teams; optional: without it `Location` is a path [development default: http://<addr>]
    #[arg(long, env = "APP_URL")]
    pub app_url: Option<String>,
    /// The absolute URL (https in production) invitation links start with:
    /// <FRONTEND_URL>/invite#token=...; browsers on its origin may call the token endpoints
    /// (CORS) [development default: http://<addr>]
    #[arg(long, env = "FRONTEND_URL")]
    pub frontend_url: Option<String>,
    /// SMTP server: smtp://host:port, smtp://user:pass@host:587?tls=required or smtps://...
    /// [development default: none, messages are written to <data-dir>/mail/]
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<Secret>,
    /// Sender of invitation mail, e.g. "Logbook <noreply@example.com>".
    #[arg(long, env = "MAIL_FROM")]
    pub mail_from: Option<String>,
    /// Bearer token of the admin API, at least 32 characters [development default: generated, printed once].
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// How long an invitation link stays valid.
    #[arg(long, env = "INVITE_TTL_HOURS", default_value_t = DEFAULT_INVITE_TTL_HOURS)]
    pub invite_ttl_hours: u64,
    /// Least time between two mails for one invitation; a resend sooner answers 429.
    #[arg(long, env = "INVITE_RESEND_INTERVAL_SECONDS", default_value_t = DEFAULT_RESEND_INTERVAL_SECONDS)]
    pub invite_resend_interval_seconds: u64,
    /// Delay before retrying a failed delivery; doubles per attempt.
    #[arg(long, env = "MAIL_RETRY_INITIAL_MS", default_value_t = DEFAULT_MAIL_RETRY_INITIAL_MS)]
    pub mail_retry_initial_ms: u64,
    /// Cap on the delay between delivery retries.
    #[arg(long, env = "MAIL_RETRY_MAX_MS", default_value_t = DEFAULT_MAIL_RETRY_MAX_MS)]
    pub mail_retry_max_ms: u64,
    /// Time allowed for one whole SMTP transaction (connect, TLS, every reply); a silent
    /// server counts as a failed attempt after it.
    #[arg(long, env = "MAIL_SEND_TIMEOUT_SECONDS", default_value_t = DEFAULT_MAIL_SEND_TIMEOUT_SECONDS)]
    pub mail_send_timeout_seconds: u64,
    /// Failed attempts after which a delivery is given up (delivery status `failed`); a 5xx
    /// reply gives up at once.
    #[arg(long, env = "MAIL_MAX_ATTEMPTS", default_value_t = DEFAULT_MAIL_MAX_ATTEMPTS)]
    pub mail_max_attempts: u32,
    /// SMTP transactions in flight at once (one slow server holds one of them only).
    #[arg(long, env = "MAIL_CONCURRENCY", default_value_t = DEFAULT_MAIL_CONCURRENCY)]
    pub mail_concurrency: u32,
    /// Reverse proxies whose X-Forwarded-For is believed, as comma-separated CIDRs
    /// (e.g. 10.0.0.0/8,fd00::/8); without it the header is ignored.
    #[arg(long, env = "TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// Largest request body the teams routes accept.
    #[arg(long, env = "TEAMS_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub teams_max_body_bytes: usize,
    /// Longest a teams request may take before it is answered 503.
    #[arg(long, env = "TEAMS_REQUEST_TIMEOUT_SECONDS", default_value_t = DEFAULT_REQUEST_TIMEOUT_SECONDS)]
    pub teams_request_timeout_seconds: u64,
    /// Requests per minute one client address may make to POST /invitations/accept and
    /// /invitations/preview together (a burst of this many, then a steady rate); more answer
    /// 429 with Retry-After.
    #[arg(long, env = "ACCEPT_RATE_PER_MINUTE", default_value_t = DEFAULT_ACCEPT_RATE_PER_MINUTE)]
    pub accept_rate_per_minute: u32,
}

impl Default for TeamsArgs {
    /// No setting given: what development mode starts from (and what tests start from).
    fn default() -> Self {
        TeamsArgs {
            database_url: None,
            database_max_connections: DEFAULT_DATABASE_MAX_CONNECTIONS,
            app_url: None,
            frontend_url: None,
            smtp_url: None,
            mail_from: None,
            admin_token: None,
            invite_ttl_hours: DEFAULT_INVITE_TTL_HOURS,
            invite_resend_interval_seconds: DEFAULT_RESEND_INTERVAL_SECONDS,
            mail_retry_initial_ms: DEFAULT_MAIL_RETRY_INITIAL_MS,
            mail_retry_max_ms: DEFAULT_MAIL_RETRY_MAX_MS,
            mail_send_timeout_seconds: DEFAULT_MAIL_SEND_TIMEOUT_SECONDS,
            mail_max_attempts: DEFAULT_MAIL_MAX_ATTEMPTS,
            mail_concurrency: DEFAULT_MAIL_CONCURRENCY,
            trusted_proxies: None,
            teams_max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            teams_request_timeout_seconds: DEFAULT_REQUEST_TIMEOUT_SECONDS,
            accept_rate_per_minute: DEFAULT_ACCEPT_RATE_PER_MINUTE,
        }
    }
}

pub use web::Secret;

/// Where invitation mail goes.
#[derive(Debug, Clone)]
pub enum MailTarget {
    /// An SMTP server, by `SMTP_URL` (it may hold a password).
    Smtp(Secret),
    /// One `.eml` file per message in this directory (development mode).
    Directory(PathBuf),
}

/// Validated settings; what [`crate::TeamsService::start`] takes. `Debug` redacts secrets.
#[derive(Debug, Clone)]
pub struct TeamsSettings {
    /// Database URL, `sqlite:///absolute/path` or `postgres://...` (may hold a password).
    pub database_url: Secret,
    /// Most database connections.
    pub database_max_connections: u32,
    /// The API's own URL as parsed, without a trailing slash (the base of `Location` headers).
    pub app_url: Option<String>,
    /// The URL invitation links start with, as parsed, without a trailing slash.
    pub frontend_url: String,
    /// The origin of `FRONTEND_URL` (`https://app.example.com`): the one CORS allows.
    pub frontend_origin: String,
    /// Where mail goes.
    pub mail: MailTarget,
    /// The sender of invitation mail.
    pub mail_from: Mailbox,
    /// The admin bearer token.
    pub admin_token: Secret,
    /// `true` when the admin token was generated (development mode): the banner prints it.
    pub admin_token_generated: bool,
    /// How long an invitation link stays valid.
    pub invite_ttl: Duration,
    /// Least time between two mails for one invitation.
    pub resend_interval: Duration,
    /// Delay before the first delivery retry; doubles per attempt.
    pub mail_retry_initial: Duration,
    /// Cap on the delay between delivery retries.
    pub mail_retry_max: Duration,
    /// Time allowed for one whole SMTP transaction.
    pub mail_send_timeout: Duration,
    /// Failed attempts after which a delivery is given up.
    pub mail_max_attempts: u32,
    /// SMTP transactions in flight at once.
    pub mail_concurrency: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// Token endpoint requests allowed per client address per minute.
    pub accept_rate_per_minute: u32,
    /// `false` in development mode.
    pub production: bool,
}

/// An IP network (`10.0.0.0/8`, `2001:db8::/32`, or one address), for `TRUSTED_PROXIES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: std::net::IpAddr,
    prefix_bits: u8,
}

impl Cidr {
    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_bits))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_bits))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: std::net::IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_bits = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|bits| *bits <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={max}"))?,
        };
        Ok(Cidr {
            network,
            prefix_bits,
        })
    }
}

/// An absolute http(s) URL (https in production), as parsed: the value checked is the value
/// used.
fn check_http_url(
    checker: &mut Checker,
    setting: Setting,
    value: &str,
    production: bool,
) -> Option<url::Url> {
    match url::Url::parse(value) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some_and(|host| !host.is_empty())
                && url.fragment().is_none()
                && url.query().is_none() =>
        {
            if production && url.scheme() != "https" {
                checker.problem(
                    setting,
                    format!(
                        "{value:?} is not https; production needs https (links and tokens must not travel in clear text)"
                    ),
                );
                return None;
            }
            Some(url)
        }
        _ => {
            checker.problem(
                setting,
                format!(
                    "{value:?} is not an absolute http(s) URL; set it like https://teams.example.com (no query or fragment)"
                ),
            );
            None
        }
    }
}

/// A parsed URL as the service uses it: without a trailing slash.
fn without_trailing_slash(url: &url::Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// Every teams setting as start-up problems name it (its variable and flag, as in
/// [`TeamsArgs`]).
mod setting {
    use web::config::Setting;

    pub(super) const DATABASE_URL: Setting = Setting::new("DATABASE_URL", "--database-url");
    pub(super) const DATABASE_MAX_CONNECTIONS: Setting =
        Setting::new("DATABASE_MAX_CONNECTIONS", "--database-max-connections");
    pub(super) const APP_URL: Setting = Setting::new("APP_URL", "--app-url");
    pub(super) const FRONTEND_URL: Setting = Setting::new("FRONTEND_URL", "--frontend-url");
    pub(super) const SMTP_URL: Setting = Setting::new("SMTP_URL", "--smtp-url");
    pub(super) const MAIL_FROM: Setting = Setting::new("MAIL_FROM", "--mail-from");
    pub(super) const ADMIN_TOKEN: Setting = Setting::new("ADMIN_TOKEN", "--admin-token");
    pub(super) const INVITE_TTL_HOURS: Setting =
        Setting::new("INVITE_TTL_HOURS", "--invite-ttl-hours");
    pub(super) const INVITE_RESEND_INTERVAL_SECONDS: Setting = Setting::new(
        "INVITE_RESEND_INTERVAL_SECONDS",
        "--invite-resend-interval-seconds",
    );
    pub(super) const MAIL_RETRY_INITIAL_MS: Setting =
        Setting::new("MAIL_RETRY_INITIAL_MS", "--mail-retry-initial-ms");
    pub(super) const MAIL_RETRY_MAX_MS: Setting =
        Setting::new("MAIL_RETRY_MAX_MS", "--mail-retry-max-ms");
    pub(super) const MAIL_SEND_TIMEOUT_SECONDS: Setting =
        Setting::new("MAIL_SEND_TIMEOUT_SECONDS", "--mail-send-timeout-seconds");
    pub(super) const MAIL_MAX_ATTEMPTS: Setting =
        Setting::new("MAIL_MAX_ATTEMPTS", "--mail-max-attempts");
    pub(super) const MAIL_CONCURRENCY: Setting =
        Setting::new("MAIL_CONCURRENCY", "--mail-concurrency");
    pub(super) const TRUSTED_PROXIES: Setting =
        Setting::new("TRUSTED_PROXIES", "--trusted-proxies");
    pub(super) const TEAMS_MAX_BODY_BYTES: Setting =
        Setting::new("TEAMS_MAX_BODY_BYTES", "--teams-max-body-bytes");
    pub(super) const TEAMS_REQUEST_TIMEOUT_SECONDS: Setting = Setting::new(
        "TEAMS_REQUEST_TIMEOUT_SECONDS",
        "--teams-request-timeout-seconds",
    );
    pub(super) const ACCEPT_RATE_PER_MINUTE: Setting =
        Setting::new("ACCEPT_RATE_PER_MINUTE", "--accept-rate-per-minute");

    /// All of them, for the test that they match the flags and variables clap reads.
    #[cfg(test)]
    pub(super) const ALL: [Setting; 18] = [
        DATABASE_URL,
        DATABASE_MAX_CONNECTIONS,
        APP_URL,
        FRONTEND_URL,
        SMTP_URL,
        MAIL_FROM,
        ADMIN_TOKEN,
        INVITE_TTL_HOURS,
        INVITE_RESEND_INTERVAL_SECONDS,
        MAIL_RETRY_INITIAL_MS,
        MAIL_RETRY_MAX_MS,
        MAIL_SEND_TIMEOUT_SECONDS,
        MAIL_MAX_ATTEMPTS,
        MAIL_CONCURRENCY,
        TRUSTED_PROXIES,
        TEAMS_MAX_BODY_BYTES,
        TEAMS_REQUEST_TIMEOUT_SECONDS,
        ACCEPT_RATE_PER_MINUTE,
    ];
}

use setting::{
    ADMIN_TOKEN, APP_URL, DATABASE_URL, FRONTEND_URL, MAIL_FROM, SMTP_URL, TRUSTED_PROXIES,
};

const SMTP_URL_FORMS: &str =
    "use smtp://host:port, smtp://user:pass@host:587?tls=required or smtps://user:pass@host";

/// Checks an `SMTP_URL` the way the transport will read it, and refuses credentials over a
/// connection that may be plain text (`smtp://` without `tls=required`).
fn check_smtp_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
        return Err(format!("unsupported scheme; {SMTP_URL_FORMS}"));
    }
    lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
        .map_err(|error| format!("cannot be read ({error}); {SMTP_URL_FORMS}"))?;
    let parsed = url::Url::parse(url).map_err(|error| format!("cannot be read ({error})"))?;
    let has_credentials = !parsed.username().is_empty() || parsed.password().is_some();
    let tls_required = parsed.scheme() == "smtps"
        || parsed
            .query_pairs()
            .any(|(key, value)| key == "tls" && value == "required");
    if has_credentials && !tls_required {
        return Err(
            "has a user or password but no TLS, so they would cross the network in clear text; use smtps://... or add ?tls=required"
                .into(),
        );
    }
    Ok(())
}

/// The two URLs: `APP_URL` (optional) and `FRONTEND_URL` (required in production).
struct Urls {
    app_url: Option<String>,
    frontend: Option<url::Url>,
}

impl TeamsArgs {
    /// Checks every setting at once (including that the database is reachable) and returns all
    /// problems together.
    pub async fn check(&self, ctx: &ServiceContext) -> Result<TeamsSettings, Vec<ConfigProblem>> {
        let production = ctx.production;
        let mut checker = Checker::new();
        let urls = self.check_urls(ctx, &mut checker);
        let database_url = self.check_database(ctx, &mut checker).await;
        let mail = self.check_smtp(ctx, &mut checker);
        let mail_from = self.check_mail_from(production, &mut checker);
        let admin_token = self.check_admin_token(production, &mut checker);
        let trusted_proxies = self.check_trusted_proxies(&mut checker);
        self.check_ranges(&mut checker);
        checker.finish()?;
        let (
            Some(frontend),
            Some(database_url),
            Some(mail),
            Some(mail_from),
            Some((admin_token, admin_token_generated)),
        ) = (urls.frontend, database_url, mail, mail_from, admin_token)
        else {
            // Every `None` above recorded a problem; this is unreachable but not worth a panic.
            return Err(vec![ConfigProblem::new(
                "teams settings",
                "incomplete; see the other problems",
            )]);
        };
        Ok(TeamsSettings {
            database_url: Secret::new(database_url),
            database_max_connections: self.database_max_connections,
            app_url: urls.app_url,
            frontend_url: without_trailing_slash(&frontend),
            frontend_origin: frontend.origin().ascii_serialization(),
            mail,
            mail_from,
            admin_token,
            admin_token_generated,
            invite_ttl: Duration::from_secs(self.invite_ttl_hours * 3600),
            resend_interval: Duration::from_secs(self.invite_resend_interval_seconds),
            mail_retry_initial: Duration::from_millis(self.mail_retry_initial_ms),
            mail_retry_max: Duration::from_millis(self.mail_retry_max_ms),
            mail_send_timeout: Duration::from_secs(self.mail_send_timeout_seconds),
            mail_max_attempts: self.mail_max_attempts,
            mail_concurrency: self.mail_concurrency,
            trusted_proxies,
            max_body_bytes: self.teams_max_body_bytes,
            request_timeout: Duration::from_secs(self.teams_request_timeout_seconds),
            accept_rate_per_minute: self.accept_rate_per_minute,
            production,
        })
    }

    fn check_urls(&self, ctx: &ServiceContext, checker: &mut Checker) -> Urls {
        let production = ctx.production;
        let local_url = format!("http://{}", ctx.local_addr);
        let app_url = match self.app_url.as_deref().map(str::trim) {
            Some(value) if !value.is_empty() => check_http_url(checker, APP_URL, value, production)
                .map(|url| without_trailing_slash(&url)),
            _ => (!production).then(|| local_url.clone()),
        };
        let frontend = match checker.required(
            FRONTEND_URL,
            self.frontend_url.as_deref(),
            production,
            "the URL invitation links start with, e.g. https://app.example.com",
        ) {
            Some(value) => check_http_url(checker, FRONTEND_URL, &value, production),
            None if production => None,
            None => url::Url::parse(&local_url).ok(),
        };
        Urls { app_url, frontend }
    }

    async fn check_database(&self, ctx: &ServiceContext, checker: &mut Checker) -> Option<String> {
        let database_url = match checker.required(
            DATABASE_URL,
            self.database_url.as_ref().map(Secret::expose),
            ctx.production,
            "sqlite:///absolute/path/teams.sqlite3 or postgres://user@host/database",
        ) {
            Some(value) => normalize_database_url(&value)
                .map_err(|message| checker.problem(DATABASE_URL, message))
                .ok(),
            None if ctx.production => None,
            None => Some(sqlite_url(&ctx.data_dir.join("teams.sqlite3"))),
        };
        if let Some(url) = &database_url
            && let Err(message) = crate::store::check_reachable(url).await
        {
            checker.problem(DATABASE_URL, message);
        }
        database_url
    }

    fn check_smtp(&self, ctx: &ServiceContext, checker: &mut Checker) -> Option<MailTarget> {
        match checker.required(
            SMTP_URL,
            self.smtp_url.as_ref().map(Secret::expose),
            ctx.production,
            "smtp://host:port, smtp://user:pass@host:587?tls=required or smtps://user:pass@host",
        ) {
            Some(value) => match check_smtp_url(&value) {
                Ok(()) => Some(MailTarget::Smtp(Secret::new(value))),
                Err(message) => {
                    checker.problem(SMTP_URL, message);
                    None
                }
            },
            None if ctx.production => None,
            None => Some(MailTarget::Directory(ctx.data_dir.join("mail"))),
        }
    }

    fn check_mail_from(&self, production: bool, checker: &mut Checker) -> Option<Mailbox> {
        match checker.required(
            MAIL_FROM,
            self.mail_from.as_deref(),
            production,
            "the sender, e.g. \"Logbook <noreply@example.com>\"",
        ) {
            Some(value) => match Mailbox::from_str(&value) {
                Ok(mailbox) => Some(mailbox),
                Err(error) => {
                    checker.problem(
                        MAIL_FROM,
                        format!("{value:?} is not a mailbox ({error}); set it like \"Logbook <noreply@example.com>\""),
                    );
                    None
                }
            },
            None if production => None,
            None => Mailbox::from_str(DEVELOPMENT_MAIL_FROM).ok(),
        }
    }

    fn check_admin_token(&self, production: bool, checker: &mut Checker) -> Option<(Secret, bool)> {
        let advice = format!(
            "a random secret of at least {ADMIN_TOKEN_MIN_CHARS} characters, e.g. from `openssl rand -base64 32`"
        );
        match checker.required(
            ADMIN_TOKEN,
            self.admin_token.as_ref().map(Secret::expose),
            production,
            &advice,
        ) {
            Some(value) if value.chars().count() < ADMIN_TOKEN_MIN_CHARS => {
                checker.problem(
                    ADMIN_TOKEN,
                    format!(
                        "too short ({} characters); use at least {ADMIN_TOKEN_MIN_CHARS}, e.g. from `openssl rand -base64 32`",
                        value.chars().count()
                    ),
                );
                None
            }
            Some(value) => Some((Secret::new(value), false)),
            None if production => None,
            None => match crate::token::random_secret(32) {
                Ok(generated) => Some((Secret::new(generated), true)),
                Err(error) => {
                    checker.problem(
                        ADMIN_TOKEN,
                        format!("could not generate one ({error}); set it"),
                    );
                    None
                }
            },
        }
    }

    fn check_trusted_proxies(&self, checker: &mut Checker) -> Vec<Cidr> {
        let Some(list) = self.trusted_proxies.as_deref() else {
            return Vec::new();
        };
        let mut proxies = Vec::new();
        for item in list
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            match item.parse::<Cidr>() {
                Ok(cidr) => proxies.push(cidr),
                Err(message) => checker.problem(
                    TRUSTED_PROXIES,
                    format!("{message}; list CIDRs separated by commas, e.g. 10.0.0.0/8,fd00::/8"),
                ),
            }
        }
        proxies
    }

    /// `MAIL_RETRY_INITIAL_MS` may not exceed `MAIL_RETRY_MAX_MS` (when that one is valid:
    /// one mistake, one problem).
    fn retry_initial_ceiling(&self) -> u64 {
        match self.mail_retry_max_ms {
            0 => MAIL_RETRY_MAX_MS_MAX,
            max => max.min(MAIL_RETRY_MAX_MS_MAX),
        }
    }

    /// Numbers: each within a range that makes sense (no zero retry cap, no zero attempts).
    fn check_ranges(&self, checker: &mut Checker) {
        checker.range(
            setting::INVITE_TTL_HOURS,
            self.invite_ttl_hours,
            1,
            INVITE_TTL_HOURS_MAX,
        );
        checker.range(
            setting::INVITE_RESEND_INTERVAL_SECONDS,
            self.invite_resend_interval_seconds,
            0,
            86_400,
        );
        checker.range(
            setting::DATABASE_MAX_CONNECTIONS,
            u64::from(self.database_max_connections),
            1,
            1000,
        );
        checker.range(
            setting::MAIL_RETRY_MAX_MS,
            self.mail_retry_max_ms,
            1,
            MAIL_RETRY_MAX_MS_MAX,
        );
        checker.range(
            setting::MAIL_RETRY_INITIAL_MS,
            self.mail_retry_initial_ms,
            1,
            self.retry_initial_ceiling(),
        );
        checker.range(
            setting::MAIL_SEND_TIMEOUT_SECONDS,
            self.mail_send_timeout_seconds,
            1,
            3600,
        );
        checker.range(
            setting::MAIL_MAX_ATTEMPTS,
            u64::from(self.mail_max_attempts),
            1,
            1000,
        );
        checker.range(
            setting::MAIL_CONCURRENCY,
            u64::from(self.mail_concurrency),
            1,
            256,
        );
        checker.range(
            setting::TEAMS_MAX_BODY_BYTES,
            self.teams_max_body_bytes as u64,
            1024,
            64 * 1024 * 1024,
        );
        checker.range(
            setting::TEAMS_REQUEST_TIMEOUT_SECONDS,
            self.teams_request_timeout_seconds,
            1,
            3600,
        );
        checker.range(
            setting::ACCEPT_RATE_PER_MINUTE,
            u64::from(self.accept_rate_per_minute),
            1,
            u64::from(ACCEPT_RATE_PER_MINUTE_MAX),
        );
    }
}

/// `sqlite:///absolute/path` for a path (made absolute against the working directory).
fn sqlite_url(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    format!("sqlite://{}", absolute.display())
}

/// Checks the scheme and turns a relative SQLite path into an absolute one, so that the URL
/// means the same file whatever the process does with its working directory later.
fn normalize_database_url(value: &str) -> Result<String, String> {
    if let Some(rest) = value.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(
                "names no file; use sqlite://relative/path or sqlite:///absolute/path".into(),
            );
        }
        return Ok(sqlite_url(Path::new(path)));
    }
    if value.starts_with("postgres://") || value.starts_with("postgresql://") {
        return match url::Url::parse(value) {
            Ok(url) if url.host_str().is_some() => Ok(value.to_owned()),
            _ => Err(
                "is not a valid postgres:// URL; use postgres://user:password@host:5432/database"
                    .into(),
            ),
        };
    }
    Err("unsupported scheme; use sqlite://relative/path, sqlite:///absolute/path or postgres://user@host/database".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_names_a_flag_and_variable_clap_reads() {
        let command = <TeamsArgs as clap::Args>::augment_args(clap::Command::new("teams"));
        let read: Vec<(String, String)> = command
            .get_arguments()
            .filter_map(|arg| {
                let flag = format!("--{}", arg.get_long()?);
                let env = arg.get_env()?.to_str()?.to_owned();
                Some((env, flag))
            })
            .collect();
        for setting in setting::ALL {
            assert!(
                read.contains(&(setting.env.to_owned(), setting.flag.to_owned())),
                "{setting} is not an argument of TeamsArgs"
            );
        }
        assert_eq!(
            read.len(),
            setting::ALL.len(),
            "a setting without a constant"
        );
    }

    #[test]
    fn debug_prints_no_secret() {
        let args = TeamsArgs {
            database_url: Some(Secret::new(
                "postgres://user:db-password@db.example.com/teams",
            )),
            smtp_url: Some(Secret::new("smtps://user:smtp-password@smtp.example.com")),
            admin_token: Some(Secret::new("admin-token-0123456789abcdef0123456789")),
            mail_from: Some("Logbook <noreply@example.com>".into()),
            ..TeamsArgs::default()
        };
        let debug = format!("{args:?}");
        for secret in ["db-password", "smtp-password", "admin-token-0123456789"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(debug.contains("database_url: Some([redacted])"), "{debug}");
        assert!(debug.contains("smtp_url: Some([redacted])"), "{debug}");
        assert!(debug.contains("admin_token: Some([redacted])"), "{debug}");
        assert!(debug.contains("noreply@example.com"), "{debug}");
    }
}
