//! The SQL store: one code path for SQLite and PostgreSQL through sqlx's `Any` driver.
//!
//! Query text is portable (`$1` placeholders work on both; times are `BIGINT` milliseconds,
//! ids are UUID text), so no query exists twice. The differences are confined here:
//! - SQLite connections get WAL, `synchronous = NORMAL`, foreign keys and a busy timeout.
//! - SQLite allows one writer at a time, so write transactions queue on an in-process async
//!   mutex and begin with `BEGIN IMMEDIATE`: a deferred transaction that read first and wrote
//!   second could fail with `SQLITE_BUSY` when another writer committed in between, and a
//!   queue is fairer and cheaper than the busy handler's sleep-and-retry.
//! - PostgreSQL aborts a transaction on the first error, so a statement that may hit a unique
//!   index inside a larger transaction runs under a savepoint there ([`Store::savepoints`]).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Connection, Executor, Row, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::Error;

/// How long the start-up check waits for the database.
pub const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a SQLite connection waits for a lock held by another process.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// The embedded migrations, applied in order at start-up.
fn migrator() -> Migrator {
    Migrator {
        migrations: Cow::Owned(vec![
            Migration::new(
                1,
                Cow::Borrowed("initial"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../migrations/0001_initial.sql")),
                false,
            ),
            Migration::new(
                2,
                Cow::Borrowed("second wave"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../migrations/0002_second_wave.sql")),
                false,
            ),
        ]),
        ..Migrator::DEFAULT
    }
}

/// Which database the URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn of(url: &str) -> Backend {
        if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }
}

/// The connect URL for sqlx: SQLite files are created when missing (with their directory).
fn connect_url(url: &str) -> Result<String, String> {
    match Backend::of(url) {
        Backend::Sqlite => {
            let path = url.trim_start_matches("sqlite://");
            if let Some(parent) = std::path::Path::new(path).parent() {
                std::fs::create_dir_all(parent).map_err(|error| {
                    format!(
                        "cannot create the directory {} ({error}); create it or choose another path",
                        parent.display()
                    )
                })?;
            }
            Ok(format!("sqlite://{path}?mode=rwc"))
        }
        Backend::Postgres => Ok(url.to_owned()),
    }
}

/// Opens one connection and closes it: the start-up check that the database is reachable.
/// The message never repeats the URL (it may hold a password).
pub(crate) async fn check_reachable(url: &str) -> Result<(), String> {
    sqlx::any::install_default_drivers();
    let connect_url = connect_url(url)?;
    let attempt = async {
        let mut connection = sqlx::AnyConnection::connect(&connect_url).await?;
        connection.ping().await?;
        connection.close().await
    };
    match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!(
            "cannot connect to the database ({}); check that it is running and the URL, user and password are right",
            describe_connect_error(&error)
        )),
        Err(_) => Err(format!(
            "the database did not answer within {} s; check that it is running and reachable",
            DATABASE_CHECK_TIMEOUT.as_secs()
        )),
    }
}

fn describe_connect_error(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Configuration(_) => "the URL is malformed".to_owned(),
        other => other.to_string(),
    }
}

/// The connection pool and the write queue.
#[derive(Clone)]
pub(crate) struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Serializes write transactions on SQLite; `None` on PostgreSQL.
    write_gate: Option<Arc<Mutex<()>>>,
}

/// A write transaction; on SQLite it also holds the write queue until it ends. Fields drop in
/// order, so the transaction rolls back (if not committed) before the queue moves on.
pub(crate) struct WriteTx {
    pub(crate) tx: Transaction<'static, Any>,
    _gate: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Connects and applies the embedded migrations.
    pub(crate) async fn connect(url: &str, max_connections: u32) -> Result<Store, Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url);
        let connect_url = connect_url(url)
            .map_err(|message| Error::Database(sqlx::Error::Configuration(message.into())))?;
        let options: AnyConnectOptions = connect_url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL".to_owned(),
                            "PRAGMA synchronous = NORMAL".to_owned(),
                            "PRAGMA foreign_keys = ON".to_owned(),
                            format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"),
                        ] {
                            connection.execute(pragma.as_str()).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        Ok(Store {
            pool,
            backend,
            write_gate: (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(()))),
        })
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `true` where a failed statement aborts the transaction (PostgreSQL), so statements that
    /// may fail on a unique index must run under a savepoint.
    pub(crate) fn savepoints(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// Which database this is.
    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a write transaction (queued behind other writers on SQLite).
    pub(crate) async fn write(&self) -> Result<WriteTx, Error> {
        let gate = match &self.write_gate {
            Some(gate) => Some(Arc::clone(gate).lock_owned().await),
            None => None,
        };
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _gate: gate })
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

/// `$first, $first+1, ...` for `count` values.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A new time-ordered id (UUIDv7 text).
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// Reads an optional text column.
pub(crate) fn opt_text(row: &AnyRow, column: &str) -> Result<Option<String>, sqlx::Error> {
    row.try_get::<Option<String>, _>(column)
}

/// Reads a text column.
pub(crate) fn text(row: &AnyRow, column: &str) -> Result<String, sqlx::Error> {
    row.try_get::<String, _>(column)
}

/// Reads a `BIGINT` column.
pub(crate) fn int(row: &AnyRow, column: &str) -> Result<i64, sqlx::Error> {
    row.try_get::<i64, _>(column)
}

/// Reads an optional `BIGINT` column.
pub(crate) fn opt_int(row: &AnyRow, column: &str) -> Result<Option<i64>, sqlx::Error> {
    row.try_get::<Option<i64>, _>(column)
}
