//! Settings of the event store: one typed struct from flags and environment ([`EventsArgs`]),
//! checked completely into [`EventsSettings`] before anything is served.
//!
//! Like the teams service, [`EventsArgs::check`] never stops at the first problem: it returns
//! one [`ConfigProblem`] per bad setting, naming the variable and the flag and saying what to do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use eventlog::{Durability, Limits, Options};
use web::config::{Checker, Setting};
use web::{ConfigProblem, ServiceContext};

use crate::access::AccessArgs;

/// The folder under `--data-dir` that holds the event log.
pub const EVENTS_DIR: &str = "events";

/// Every event store setting, each with a flag and an env var, flattened into `logbook serve`.
/// Every field has a default, so development mode needs nothing.
// (Not a doc comment: clap would print it in --help.) `Debug` prints the token and the
// database URL, which may hold a password, as `[redacted]`: they are `Secret`s.
#[derive(clap::Args, Clone, Debug)]
pub struct EventsArgs {
    /// When an append is acknowledged: `fsync` (after fdatasync; survives power loss),
    /// `interval:<ms>` (fsync at most every <ms>; a power loss may lose the last <ms>) or `never`
    /// (benchmarks only).
    #[arg(long, env = "EVENTS_DURABILITY", default_value = "fsync")]
    pub durability: String,
    /// Size at which a log segment is sealed and a new one started.
    #[arg(long, env = "EVENTS_SEGMENT_SIZE_BYTES", default_value_t = Options::default().segment_size_bytes)]
    pub segment_size_bytes: u64,
    /// Largest event (stream + type + data + metadata); a larger one is answered 413.
    #[arg(long, env = "EVENTS_MAX_EVENT_SIZE_BYTES", default_value_t = Limits::default().max_event_size_bytes)]
    pub max_event_size_bytes: u32,
    /// Most events in one atomic batch.
    #[arg(long, env = "EVENTS_MAX_BATCH_EVENTS", default_value_t = Limits::default().max_batch_events)]
    pub max_batch_events: u32,
    /// Largest batch (sum of its events' sizes).
    #[arg(long, env = "EVENTS_MAX_BATCH_SIZE_BYTES", default_value_t = Limits::default().max_batch_size_bytes)]
    pub max_batch_size_bytes: u32,
    /// Longest stream name, in UTF-8 bytes.
    #[arg(long, env = "EVENTS_MAX_STREAM_NAME_BYTES", default_value_t = Limits::default().max_stream_name_bytes)]
    pub max_stream_name_bytes: u16,
    /// Longest event type, in UTF-8 bytes.
    #[arg(long, env = "EVENTS_MAX_EVENT_TYPE_BYTES", default_value_t = Limits::default().max_event_type_bytes)]
    pub max_event_type_bytes: u16,
    /// Write an index checkpoint after this many new events (0: only on shutdown).
    #[arg(long, env = "EVENTS_CHECKPOINT_EVERY_EVENTS", default_value_t = Options::default().checkpoint_every_events)]
    pub checkpoint_every_events: u64,
    /// Also write one when events were appended and this many seconds passed (0: never by
    /// time), so a killed process leaves at most this much log to replay.
    #[arg(long, env = "EVENTS_CHECKPOINT_EVERY_SECONDS", default_value_t = Options::default().checkpoint_every_seconds)]
    pub checkpoint_every_seconds: u64,
    /// Most bytes of recently read events kept in memory for reads by id (`GET
    /// /events/{id}`), so that an event read again costs no disk read; 0: off.
    #[arg(long, env = "EVENTS_READ_CACHE_BYTES", default_value_t = Options::default().read_cache_bytes)]
    pub read_cache_bytes: usize,
    /// Bearer token (scope `admin`) accepted on every event store route
    /// (`Authorization: Bearer <token>`); with neither it nor EVENTS_TOKENS_FILE the event API
    /// is open (refused in production unless EVENTS_AUTH=none).
    #[arg(long, env = "EVENTS_TOKEN", hide_env_values = true)]
    pub events_token: Option<Secret>,
    /// Token file, `EVENTS_AUTH`, subscription cap.
    #[command(flatten)]
    pub access: AccessArgs,
    /// `postgres://user:password@host:port/database`: keep the events in PostgreSQL (shared by
    /// any number of logbook processes) instead of the embedded log under --data-dir. The
    /// teams service's DATABASE_URL may name the same database.
    #[arg(long, env = "EVENTS_DATABASE_URL", hide_env_values = true)]
    pub events_database_url: Option<Secret>,
    /// Most bytes of old segment a scavenge reads per second (it reads each segment twice and
    /// writes at most that much), so that it leaves the disk to appends and reads; 0: unpaced.
    #[arg(long, env = "EVENTS_SCAVENGE_MAX_BYTES_PER_SECOND", default_value_t = crate::backend::embedded::SCAVENGE_MAX_BYTES_PER_SECOND)]
    pub scavenge_max_bytes_per_second: u64,
    /// Most PostgreSQL connections this process opens for the event store.
    #[arg(long, env = "EVENTS_DATABASE_MAX_CONNECTIONS", default_value_t = crate::backend::postgres::DEFAULT_MAX_CONNECTIONS)]
    pub events_database_max_connections: u32,
}

impl Default for EventsArgs {
    /// No setting given: what development mode (and tests) start from.
    fn default() -> Self {
        let options = Options::default();
        EventsArgs {
            durability: "fsync".into(),
            segment_size_bytes: options.segment_size_bytes,
            max_event_size_bytes: options.limits.max_event_size_bytes,
            max_batch_events: options.limits.max_batch_events,
            max_batch_size_bytes: options.limits.max_batch_size_bytes,
            max_stream_name_bytes: options.limits.max_stream_name_bytes,
            max_event_type_bytes: options.limits.max_event_type_bytes,
            checkpoint_every_events: options.checkpoint_every_events,
            checkpoint_every_seconds: options.checkpoint_every_seconds,
            read_cache_bytes: options.read_cache_bytes,
            events_token: None,
            access: AccessArgs::default(),
            events_database_url: None,
            scavenge_max_bytes_per_second: crate::backend::embedded::SCAVENGE_MAX_BYTES_PER_SECOND,
            events_database_max_connections: crate::backend::postgres::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

pub use web::Secret;

/// Checked event store settings.
#[derive(Debug, Clone)]
pub struct EventsSettings {
    /// The store directory, `<data-dir>/events`; it exists, is writable and was not locked.
    pub dir: PathBuf,
    /// Engine options (durability, segment size, limits).
    pub options: Options,
    /// The single bearer token of the event API (scope `admin`), if one is set.
    pub token: Option<Secret>,
    /// `EVENTS_TOKENS_FILE`, re-read on SIGHUP.
    pub tokens_file: Option<PathBuf>,
    /// Most concurrent subscriptions.
    pub max_subscriptions: usize,
    /// `Some`: the events live in PostgreSQL, not in `dir`.
    pub database: Option<DatabaseSettings>,
    /// The pace of a scavenge of the embedded log (bytes per second; 0: unpaced).
    pub scavenge_max_bytes_per_second: u64,
}

/// Where the PostgreSQL backend connects.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// The URL (it may hold a password).
    pub url: Secret,
    /// Most pooled connections.
    pub max_connections: u32,
}

/// The setting that selects PostgreSQL, as named in start-up reports.
pub const DATABASE_URL_SETTING: Setting =
    Setting::new("EVENTS_DATABASE_URL", "--events-database-url");
/// `--durability`, as named in start-up reports.
const DURABILITY_SETTING: Setting = Setting::new("EVENTS_DURABILITY", "--durability");
/// An engine setting the table below does not name yet (a unit test keeps it complete).
const UNNAMED_ENGINE_SETTING: Setting = Setting::new("EVENTS_*", "--*");
/// The engine settings, by the field name the engine's check reports them under.
const ENGINE_SETTINGS: [(&str, Setting); 7] = [
    ("durability", DURABILITY_SETTING),
    (
        "segment_size_bytes",
        Setting::new("EVENTS_SEGMENT_SIZE_BYTES", "--segment-size-bytes"),
    ),
    (
        "max_event_size_bytes",
        Setting::new("EVENTS_MAX_EVENT_SIZE_BYTES", "--max-event-size-bytes"),
    ),
    (
        "max_batch_events",
        Setting::new("EVENTS_MAX_BATCH_EVENTS", "--max-batch-events"),
    ),
    (
        "max_batch_size_bytes",
        Setting::new("EVENTS_MAX_BATCH_SIZE_BYTES", "--max-batch-size-bytes"),
    ),
    (
        "max_stream_name_bytes",
        Setting::new("EVENTS_MAX_STREAM_NAME_BYTES", "--max-stream-name-bytes"),
    ),
    (
        "max_event_type_bytes",
        Setting::new("EVENTS_MAX_EVENT_TYPE_BYTES", "--max-event-type-bytes"),
    ),
];
/// `--events-token`, as named in start-up reports.
const TOKEN_SETTING: Setting = Setting::new("EVENTS_TOKEN", "--events-token");
/// `--events-database-max-connections`, as named in start-up reports.
const DATABASE_MAX_CONNECTIONS_SETTING: Setting = Setting::new(
    "EVENTS_DATABASE_MAX_CONNECTIONS",
    "--events-database-max-connections",
);
/// The common `--data-dir` of `logbook serve`, under which the embedded log lives.
const DATA_DIR_SETTING: Setting = Setting::new("LOGBOOK_DATA_DIR", "--data-dir");

impl EventsSettings {
    /// Settings for the PostgreSQL backend at `url` with `options`' limits (tests).
    pub fn postgres(url: &str, options: Options) -> EventsSettings {
        EventsSettings {
            dir: PathBuf::new(),
            options,
            token: None,
            tokens_file: None,
            max_subscriptions: crate::access::DEFAULT_MAX_SUBSCRIPTIONS,
            database: Some(DatabaseSettings {
                url: Secret::new(url.to_owned()),
                max_connections: crate::backend::postgres::DEFAULT_MAX_CONNECTIONS,
            }),
            scavenge_max_bytes_per_second: crate::backend::embedded::SCAVENGE_MAX_BYTES_PER_SECOND,
        }
    }

    /// The start-up check of the database (when one is set): it must answer. The message
    /// never repeats the URL (it may hold a password).
    pub async fn check_database(&self) -> Result<(), ConfigProblem> {
        let Some(database) = &self.database else {
            return Ok(());
        };
        let options = crate::backend::postgres::connect_options(database.url.expose())
            .map_err(|message| ConfigProblem::new(DATABASE_URL_SETTING, message))?;
        crate::backend::postgres::check_reachable(&options)
            .await
            .map_err(|message| {
                ConfigProblem::new(
                    DATABASE_URL_SETTING,
                    format!("{message}; check the host, port, credentials and database name"),
                )
            })
    }
}

impl EventsSettings {
    /// Settings for a store in `dir` with `options` and no token, without any check (tests).
    pub fn new(dir: impl Into<PathBuf>, options: Options) -> EventsSettings {
        EventsSettings {
            dir: dir.into(),
            options,
            token: None,
            tokens_file: None,
            max_subscriptions: crate::access::DEFAULT_MAX_SUBSCRIPTIONS,
            database: None,
            scavenge_max_bytes_per_second: crate::backend::embedded::SCAVENGE_MAX_BYTES_PER_SECOND,
        }
    }
}

impl EventsArgs {
    /// Checks every setting and the event log directory (`<data-dir>/events`: creatable,
    /// writable, not locked by another process); returns every problem found.
    pub fn check(&self, ctx: &ServiceContext) -> Result<EventsSettings, Vec<ConfigProblem>> {
        let mut checker = Checker::new();
        let options = self.check_options(&mut checker);
        let token = self.check_token(&mut checker);
        self.access
            .check(ctx, token.as_ref(), checker.problems_mut());
        let database = self.check_database_url(&mut checker);
        if self.events_database_max_connections == 0 {
            checker.problem(DATABASE_MAX_CONNECTIONS_SETTING, "must be at least 1");
        }
        let dir = ctx.data_dir.join(EVENTS_DIR);
        // On PostgreSQL nothing of the event store lives under --data-dir.
        if database.is_none()
            && let Err(message) = check_store_dir(&dir)
        {
            checker.problem(DATA_DIR_SETTING, message);
        }
        checker.finish()?;
        Ok(EventsSettings {
            dir,
            options,
            token,
            tokens_file: self.access.events_tokens_file.clone(),
            max_subscriptions: self.access.max_subscriptions,
            database,
            scavenge_max_bytes_per_second: self.scavenge_max_bytes_per_second,
        })
    }

    /// The engine options: the durability mode, the segment size and the limits.
    fn check_options(&self, checker: &mut Checker) -> Options {
        let durability = match parse_durability(&self.durability) {
            Ok(durability) => Some(durability),
            Err(message) => {
                checker.problem(DURABILITY_SETTING, message);
                None
            }
        };
        let options = Options {
            durability: durability.unwrap_or_default(),
            segment_size_bytes: self.segment_size_bytes,
            limits: Limits {
                max_event_size_bytes: self.max_event_size_bytes,
                max_batch_events: self.max_batch_events,
                max_batch_size_bytes: self.max_batch_size_bytes,
                max_stream_name_bytes: self.max_stream_name_bytes,
                max_event_type_bytes: self.max_event_type_bytes,
            },
            checkpoint_every_events: self.checkpoint_every_events,
            checkpoint_every_seconds: self.checkpoint_every_seconds,
            read_cache_bytes: self.read_cache_bytes,
            ..Options::default()
        };
        // Every bad engine setting under its own name, all at once.
        for problem in options.problems() {
            let setting = ENGINE_SETTINGS
                .iter()
                .find(|(field, _)| *field == problem.setting)
                .map_or(UNNAMED_ENGINE_SETTING, |(_, setting)| *setting);
            checker.problem(setting, problem.message);
        }
        options
    }

    /// `EVENTS_TOKEN`: unset, or a token that is not blank.
    fn check_token(&self, checker: &mut Checker) -> Option<Secret> {
        match &self.events_token {
            Some(token) if token.expose().trim().is_empty() => {
                checker.problem(
                    TOKEN_SETTING,
                    "is set but empty; unset it to leave the event API open or give a token",
                );
                None
            }
            Some(token) => Some(token.clone()),
            None => None,
        }
    }

    /// `EVENTS_DATABASE_URL`: unset (the embedded log), or a PostgreSQL URL.
    fn check_database_url(&self, checker: &mut Checker) -> Option<DatabaseSettings> {
        match self
            .events_database_url
            .as_ref()
            .map(|url| url.expose().trim())
        {
            None => None,
            Some("") => {
                checker.problem(
                    DATABASE_URL_SETTING,
                    "is set but empty; unset it to use the embedded log under --data-dir",
                );
                None
            }
            Some(url) => {
                if let Err(message) = crate::backend::postgres::connect_options(url) {
                    checker.problem(DATABASE_URL_SETTING, message);
                }
                Some(DatabaseSettings {
                    url: Secret::new(url.to_owned()),
                    max_connections: self.events_database_max_connections,
                })
            }
        }
    }
}

/// Parses `fsync`, `interval:<ms>` or `never`.
pub fn parse_durability(raw: &str) -> Result<Durability, String> {
    match raw.trim() {
        "fsync" => Ok(Durability::Fsync),
        "never" => Ok(Durability::Never),
        other => match other.strip_prefix("interval:") {
            Some(ms) => match ms.parse::<u64>() {
                Ok(ms) if ms > 0 => Ok(Durability::Interval {
                    every: Duration::from_millis(ms),
                }),
                _ => Err(format!(
                    "{other:?} needs a whole number of milliseconds above 0, e.g. interval:5"
                )),
            },
            None => Err(format!(
                "unknown durability mode {other:?}; use fsync, interval:<ms> or never"
            )),
        },
    }
}

/// Creates the store directory if needed, proves it writable, and checks that no other process
/// holds its lock (the lock is released again; the store takes it for good when it opens).
fn check_store_dir(dir: &Path) -> Result<(), String> {
    web::config::ensure_writable_dir(dir)?;
    match eventlog::tools::check_unlocked(dir) {
        Ok(()) => Ok(()),
        Err(eventlog::Error::Locked { .. }) => Err(format!(
            "the event log in {} is locked by another process (another logbook?); stop it or choose another data directory",
            dir.display()
        )),
        Err(e) => Err(format!("cannot check the lock of {}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_engine_setting_is_reported_under_its_own_name_at_once() {
        let args = EventsArgs {
            durability: "interval:0".into(),
            segment_size_bytes: 10,
            max_event_size_bytes: u32::MAX,
            max_batch_events: 0,
            max_batch_size_bytes: 1,
            max_stream_name_bytes: 0,
            max_event_type_bytes: 0,
            ..EventsArgs::default()
        };
        let mut checker = Checker::new();
        args.check_options(&mut checker);
        let named: Vec<String> = checker
            .problems_mut()
            .iter()
            .map(|problem| problem.setting.clone())
            .collect();
        for (_, setting) in &ENGINE_SETTINGS[1..] {
            assert!(
                named.contains(&setting.to_string()),
                "{setting} missing from {named:?}"
            );
        }
        assert!(
            !named.contains(&UNNAMED_ENGINE_SETTING.to_string()),
            "a problem under no setting's name: {named:?}"
        );
    }

    #[test]
    fn durability_modes_parse_and_unknown_ones_are_named() {
        assert_eq!(parse_durability("fsync"), Ok(Durability::Fsync));
        assert_eq!(parse_durability("never"), Ok(Durability::Never));
        assert_eq!(
            parse_durability("interval:5"),
            Ok(Durability::Interval {
                every: Duration::from_millis(5)
            })
        );
        assert!(parse_durability("interval:0").is_err());
        assert!(
            parse_durability("sometimes")
                .unwrap_err()
                .contains("sometimes")
        );
    }

    #[test]
    fn the_token_is_redacted_in_debug_output() {
        let args = EventsArgs {
            events_token: Some(Secret::new("hunter2-hunter2")),
            ..EventsArgs::default()
        };
        assert!(!format!("{args:?}").contains("hunter2"));
        assert!(!format!("{:?}", Secret::new("hunter2")).contains("hunter2"));
    }
}
