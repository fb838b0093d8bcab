//! Settings of the event store: one typed struct from flags and environment ([`EventsArgs`]),
//! checked completely into [`EventsSettings`] before anything is served.
//!
//! Like the teams service, [`EventsArgs::check`] never stops at the first problem: it returns
//! one [`ConfigProblem`] per bad setting, naming the variable and the flag and saying what to do.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use eventlog::{Durability, Limits, Options};
use web::{ConfigProblem, ServiceContext};

use crate::access::AccessArgs;

/// The folder under `--data-dir` that holds the event log.
pub const EVENTS_DIR: &str = "events";

/// Every event store setting, each with a flag and an env var, flattened into `logbook serve`.
/// Every field has a default, so development mode needs nothing.
#[derive(clap::Args, Clone)]
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
    /// Bearer token (scope `admin`) accepted on every event store route
    /// (`Authorization: Bearer <token>`); with neither it nor EVENTS_TOKENS_FILE the event API
    /// is open (refused in production unless EVENTS_AUTH=none).
    #[arg(long, env = "EVENTS_TOKEN", hide_env_values = true)]
    pub events_token: Option<String>,
    /// Token file, `EVENTS_AUTH`, subscription cap.
    #[command(flatten)]
    pub access: AccessArgs,
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
            events_token: None,
            access: AccessArgs::default(),
        }
    }
}

impl fmt::Debug for EventsArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventsArgs")
            .field("durability", &self.durability)
            .field("segment_size_bytes", &self.segment_size_bytes)
            .field("max_event_size_bytes", &self.max_event_size_bytes)
            .field("max_batch_events", &self.max_batch_events)
            .field("max_batch_size_bytes", &self.max_batch_size_bytes)
            .field("max_stream_name_bytes", &self.max_stream_name_bytes)
            .field("max_event_type_bytes", &self.max_event_type_bytes)
            .field("checkpoint_every_events", &self.checkpoint_every_events)
            .field("checkpoint_every_seconds", &self.checkpoint_every_seconds)
            .field(
                "events_token",
                &self.events_token.as_ref().map(|_| "[redacted]"),
            )
            .field("access", &self.access)
            .finish()
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
        }
    }
}

impl EventsArgs {
    /// Checks every setting and the event log directory (`<data-dir>/events`: creatable,
    /// writable, not locked by another process); returns every problem found.
    pub fn check(&self, ctx: &ServiceContext) -> Result<EventsSettings, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let durability = match parse_durability(&self.durability) {
            Ok(durability) => Some(durability),
            Err(message) => {
                problems.push(ConfigProblem::new(
                    "EVENTS_DURABILITY (--durability)",
                    message,
                ));
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
            ..Options::default()
        };
        if let Err(error) = options.validate() {
            problems.push(ConfigProblem::new(
                "EVENTS_SEGMENT_SIZE_BYTES / EVENTS_MAX_* (--segment-size-bytes / --max-*)",
                format!("{error}; adjust the named setting"),
            ));
        }
        let token = match &self.events_token {
            Some(token) if token.trim().is_empty() => {
                problems.push(ConfigProblem::new(
                    "EVENTS_TOKEN (--events-token)",
                    "is set but empty; unset it to leave the event API open or give a token",
                ));
                None
            }
            Some(token) => Some(Secret::new(token.clone())),
            None => None,
        };
        self.access.check(ctx, token.as_ref(), &mut problems);
        let dir = ctx.data_dir.join(EVENTS_DIR);
        if let Err(message) = check_store_dir(&dir) {
            problems.push(ConfigProblem::new("LOGBOOK_DATA_DIR (--data-dir)", message));
        }
        if problems.is_empty() {
            Ok(EventsSettings {
                dir,
                options,
                token,
                tokens_file: self.access.events_tokens_file.clone(),
                max_subscriptions: self.access.max_subscriptions,
            })
        } else {
            Err(problems)
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
    fs::create_dir_all(dir).map_err(|e| {
        format!(
            "cannot create {}: {e}; choose a writable directory",
            dir.display()
        )
    })?;
    let probe = dir.join(".write-probe");
    fs::write(&probe, b"probe")
        .and_then(|()| fs::remove_file(&probe))
        .map_err(|e| {
            format!(
                "cannot write in {}: {e}; choose a writable directory",
                dir.display()
            )
        })?;
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
            events_token: Some("hunter2-hunter2".into()),
            ..EventsArgs::default()
        };
        assert!(!format!("{args:?}").contains("hunter2"));
        assert!(!format!("{:?}", Secret::new("hunter2")).contains("hunter2"));
    }
}
