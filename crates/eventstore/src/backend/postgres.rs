//! The PostgreSQL backend: the same contract on a database that several `logbook` processes
//! share.
//!
//! # How the guarantees are kept
//! - **Positions**: every append transaction first updates the one row of `events_head`
//!   (`next_position += n`), which takes its row lock until commit. Appends are therefore
//!   serialized: each gets the positions after the previous one's, and commits happen in
//!   position order, so a reader never sees position N+1 before N (docs/SCALING.md gives the
//!   argument under READ COMMITTED and what it costs).
//! - **Expected version**: read from `streams` after the head lock is held (READ COMMITTED
//!   takes a fresh snapshot per statement, so it sees every earlier append), checked in the
//!   same transaction as the insert; `UNIQUE (stream, version)` backs it up.
//! - **Idempotency**: `UNIQUE (id)`. An insert that hits `events_id_key` rolls back and the
//!   batch is compared with what is stored: identical content answers the original
//!   placement, other content [`Error::IdConflict`], in every process, forever.
//! - **Subscriptions**: the append transaction `NOTIFY`s the new head; a listener task per
//!   process turns notifications into the head `watch` that subscriptions wait on. A lost
//!   listener connection is followed by a read of the committed head, and the head is also
//!   polled every [`HEAD_POLL_INTERVAL`], so a missed notification delays, never loses, an
//!   event.
//! - **Failures**: a lost connection, a restarting or read-only database, a full disk answer
//!   [`Error::CannotWrite`] (appends) or [`Error::Unavailable`] (reads): 503. An append whose
//!   commit answer was lost may have been stored: retrying with the same ids is safe.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventlog::lifecycle::{
    METADATA_EVENT_TYPE, METASTREAM_PREFIX, Retention, TOMBSTONE_EVENT_TYPE, metastream_of,
};
use events::ContentType;
use events::{
    AllPage, Appended, DeleteMode, Direction, Error, EventStore, ExpectedVersion,
    FILTER_SCAN_MAX_EVENTS, Filter, Limits, ListStreams, NewEvent, Placed, ReadAll, ReadStream,
    RecordedEvent, Result, Start, Stats, StreamList, StreamMetadata, StreamPage, StreamState,
};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The schema that holds the event store's tables (and its migration history).
pub const SCHEMA: &str = "logbook_events";
/// The `LISTEN/NOTIFY` channel; the payload is the new head.
pub const CHANNEL: &str = "logbook_events";
/// How often each process reads the committed head anyway, in case a notification was
/// missed (the listener's connection dropped): the longest a subscriber can lag because of it.
pub const HEAD_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a request waits for a pooled connection before answering 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the start-up check waits for the database.
pub const CONNECT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of pooled connections per process.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
/// Rows examined at once while a filtered read scans.
const SCAN_CHUNK_EVENTS: i64 = 256;

/// The embedded migrations, applied in order at start-up (their history lives in
/// [`SCHEMA`], apart from the teams service's).
fn migrator() -> Migrator {
    Migrator {
        migrations: Cow::Owned(vec![
            Migration::new(
                1,
                Cow::Borrowed("events"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0001_events.sql")),
                false,
            ),
            Migration::new(
                2,
                Cow::Borrowed("content type"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0002_content_type.sql")),
                false,
            ),
            // After the content type: the view selects `e.*`, which PostgreSQL expands when
            // the view is created.
            Migration::new(
                3,
                Cow::Borrowed("lifecycle"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0003_lifecycle.sql")),
                false,
            ),
        ]),
        ..Migrator::DEFAULT
    }
}

/// The columns of an event, in the order [`decode_event`] reads them.
const EVENT_COLUMNS: &str = "position, id::text, stream, version, event_type, data, metadata, recorded_at_micros, is_binary";

/// The event store on PostgreSQL. Cheap to clone; clones share one pool.
#[derive(Clone)]
pub struct Postgres {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("pool", &self.inner.pool)
            .field("head", &*self.inner.head.borrow())
            .finish_non_exhaustive()
    }
}

struct Inner {
    pool: PgPool,
    limits: Limits,
    /// The committed head as last known in this process.
    head: watch::Sender<u64>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    on_commit: Box<dyn Fn(u64) + Send + Sync>,
    reads: ReadsById,
}

/// Most queries for reads by id in flight at once (per process).
const READ_QUERIES: usize = 2;
/// Most ids one read query looks up.
const READ_BATCH_IDS: usize = 128;

/// Reads by id, grouped: a read that arrives while [`READ_QUERIES`] queries are already in
/// flight waits for the next one, which looks up every id waiting by then in one
/// `id = ANY(...)` query (the read-side twin of group commit). With one reader at a time
/// nothing waits: the query starts at once, as a lone `SELECT` would.
///
/// Each query is its own statement under READ COMMITTED, and it starts after every read it
/// answers was asked, so it sees every append acknowledged before any of them: grouping
/// changes no answer, only how many round trips and executor start-ups the database pays.
/// Queries run in their own tasks, so a request that gives up (a client gone, a timeout)
/// cannot strand the reads grouped with it.
#[derive(Default)]
struct ReadsById {
    state: std::sync::Mutex<ReadQueue>,
}

type ReadAnswer = oneshot::Sender<Result<Option<RecordedEvent>>>;

#[derive(Default)]
struct ReadQueue {
    queries: usize,
    waiting: Vec<(Uuid, ReadAnswer)>,
}

impl ReadsById {
    /// Queues a read; `true` when the caller must start a query task for the queue.
    fn enqueue(&self, id: Uuid, answer: ReadAnswer) -> bool {
        let mut queue = self.state.lock().expect("reads by id lock");
        queue.waiting.push((id, answer));
        if queue.queries < READ_QUERIES {
            queue.queries += 1;
            true
        } else {
            false
        }
    }

    /// The next group to look up, or `None` (and one query fewer) when nothing waits.
    fn next_group(&self) -> Option<Vec<(Uuid, ReadAnswer)>> {
        let mut queue = self.state.lock().expect("reads by id lock");
        if queue.waiting.is_empty() {
            queue.queries -= 1;
            return None;
        }
        let take = queue.waiting.len().min(READ_BATCH_IDS);
        Some(queue.waiting.drain(..take).collect())
    }
}

/// Gives the query slot back if a query task ends by a panic (the reads it held see their
/// answer dropped: 503), so later reads are not left waiting for a task that is gone.
struct QuerySlot<'a> {
    reads: &'a ReadsById,
    done: bool,
}

impl Drop for QuerySlot<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut queue = self.reads.state.lock().unwrap_or_else(|e| e.into_inner());
            queue.queries -= 1;
        }
    }
}

/// A query task of [`ReadsById`]: looks up waiting groups until none waits.
async fn read_by_id(backend: Postgres) {
    let reads = &backend.inner.reads;
    let mut slot = QuerySlot { reads, done: false };
    loop {
        let Some(group) = reads.next_group() else {
            slot.done = true;
            return;
        };
        let ids: Vec<String> = group.iter().map(|(id, _)| id.to_string()).collect();
        let found = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM live_events WHERE id = ANY($1::text[]::uuid[])"
        ))
        .bind(&ids)
        .fetch_all(&backend.inner.pool)
        .await
        .map_err(|e| read_error(&e))
        .and_then(|rows| rows.iter().map(decode_event).collect::<Result<Vec<_>>>());
        match found {
            Ok(mut events) => {
                let wanted: Vec<Uuid> = group.iter().map(|(id, _)| *id).collect();
                for (i, (id, answer)) in group.into_iter().enumerate() {
                    // Several reads of one id in a group: each but the last gets a copy.
                    let event = match events.iter().position(|e| e.id == id) {
                        Some(at) if wanted[i + 1..].contains(&id) => Some(events[at].clone()),
                        Some(at) => Some(events.swap_remove(at)),
                        None => None,
                    };
                    let _ = answer.send(Ok(event));
                }
            }
            Err(error) => {
                for (_, answer) in group {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Parses a `postgres://` URL into connection options whose search path is [`SCHEMA`].
pub fn connect_options(url: &str) -> std::result::Result<PgConnectOptions, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("must be a postgres:// (or postgresql://) URL".into());
    }
    PgConnectOptions::from_str(url)
        .map(|options| options.options([("search_path", SCHEMA)]))
        .map_err(|e| format!("is not a valid PostgreSQL URL: {e}"))
}

/// Connects once and runs `SELECT 1` (the start-up check): `Err` says why not.
pub async fn check_reachable(options: &PgConnectOptions) -> std::result::Result<(), String> {
    let attempt = async {
        let mut connection = sqlx::PgConnection::connect_with(options).await?;
        sqlx::query("SELECT 1").execute(&mut connection).await?;
        connection.close().await
    };
    match tokio::time::timeout(CONNECT_CHECK_TIMEOUT, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("cannot connect: {error}")),
        Err(_) => Err(format!(
            "no answer within {} s",
            CONNECT_CHECK_TIMEOUT.as_secs()
        )),
    }
}

impl Postgres {
    /// Connects, creates the schema and runs the migrations (several processes may start at
    /// once: the schema is created under an advisory lock, and sqlx takes its own for the
    /// migrations), reads the head and starts following other processes' appends.
    pub async fn open(
        options: PgConnectOptions,
        max_connections: u32,
        limits: Limits,
        on_commit: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<Postgres> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A dead connection fails its request once (503, retried by the client) instead
            // of every request paying a ping round trip.
            .test_before_acquire(false)
            .connect_lazy_with(options);
        {
            let mut connection = pool.acquire().await.map_err(|e| read_error(&e))?;
            create_schema(&mut connection)
                .await
                .map_err(|e| read_error(&e))?;
        }
        migrator().run(&pool).await.map_err(|e| Error::Internal {
            reason: format!("migrating the event store schema: {e}"),
        })?;
        let head = committed_head(&pool).await.map_err(|e| read_error(&e))?;
        let backend = Postgres {
            inner: Arc::new(Inner {
                pool,
                limits,
                head: watch::channel(head).0,
                tasks: std::sync::Mutex::new(Vec::new()),
                on_commit: Box::new(on_commit),
                reads: ReadsById::default(),
            }),
        };
        let listen = tokio::spawn(follow_notifications(backend.clone()));
        let poll = tokio::spawn(poll_head(backend.clone()));
        backend
            .inner
            .tasks
            .lock()
            .expect("tasks lock")
            .extend([listen, poll]);
        Ok(backend)
    }

    /// The pool (for tools and tests).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Stops following notifications and closes the pool; later calls answer 503.
    pub async fn close(&self) {
        for task in self.inner.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
        self.inner.pool.close().await;
    }

    fn publish_head(&self, head: u64) {
        self.inner.head.send_if_modified(|known| {
            let newer = head > *known;
            if newer {
                *known = head;
            }
            newer
        });
    }

    async fn refresh_head(&self) {
        match committed_head(&self.inner.pool).await {
            Ok(head) => self.publish_head(head),
            Err(error) => tracing::debug!(error = %error, "reading the committed head failed"),
        }
    }

    /// One append transaction. `Ok(None)`: an id of the batch is stored already (the
    /// transaction rolled back); the caller compares contents.
    async fn insert(
        &self,
        events: &[NewEvent],
        expected: ExpectedVersion,
        condition: Option<(&str, ExpectedVersion)>,
    ) -> Result<Option<Appended>> {
        let count = events.len() as i64;
        let mut tx = self.inner.pool.begin().await.map_err(|e| write_error(&e))?;
        // The head lock: held until commit, it serializes appends (see the module docs).
        let start: i64 = sqlx::query_scalar(
            "UPDATE events_head SET next_position = next_position + $1 WHERE id = 0 \
             RETURNING next_position - $1",
        )
        .bind(count)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| write_error(&e))?;
        let mut names: Vec<&str> = events.iter().map(|e| e.stream.as_str()).collect();
        // The owners of metastreams (a tombstone refuses their metadata too) and the stream
        // a lifecycle record is conditional on.
        names.extend(
            events
                .iter()
                .filter_map(|e| e.stream.strip_prefix(METASTREAM_PREFIX)),
        );
        names.extend(condition.map(|(stream, _)| stream));
        names.sort_unstable();
        names.dedup();
        // A statement after the lock: its snapshot holds every append committed before.
        let rows = sqlx::query(
            "SELECT n.name, s.version, coalesce(l.tombstoned, false)              FROM UNNEST($1::text[]) AS n(name)              LEFT JOIN streams s ON s.name = n.name              LEFT JOIN stream_lifecycle l ON l.name = n.name",
        )
        .bind(&names)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| write_error(&e))?;
        let mut versions: std::collections::HashMap<String, Option<u64>> = events
            .iter()
            .map(|event| (event.stream.clone(), None))
            .collect();
        let mut known: std::collections::HashMap<String, Option<u64>> = Default::default();
        for row in rows {
            let name: String = row.get(0);
            let version: Option<i64> = row.get(1);
            let tombstoned: bool = row.get(2);
            if tombstoned {
                let _ = tx.rollback().await;
                return Err(Error::StreamDeleted { stream: name });
            }
            let version = version.map(|v| v as u64);
            if let Some(entry) = versions.get_mut(&name) {
                *entry = version;
            }
            known.insert(name, version);
        }
        // The events' own stream at `expected`, and the condition's stream at its own.
        let own = Some((events[0].stream.as_str(), expected));
        for (stream, expected) in own.into_iter().chain(condition) {
            let current = known.get(stream).copied().flatten();
            if !expected.admits(current) {
                let _ = tx.rollback().await;
                // Repeats are answered before the expectation is checked (as the engine
                // does): a retried append whose first try was stored is not a conflict.
                if let Some(appended) = self.repeat(events).await? {
                    return Ok(Some(appended));
                }
                return Err(Error::WrongExpectedVersion {
                    stream: stream.to_owned(),
                    expected,
                    current,
                });
            }
        }
        let recorded_at_micros = now_micros();
        let mut placed = Vec::with_capacity(events.len());
        let mut columns = Columns::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let version = versions
                .get_mut(&event.stream)
                .expect("every stream was looked up");
            let next = version.map_or(0, |v| v + 1);
            *version = Some(next);
            let position = start as u64 + index as u64;
            columns.push(event, position, next);
            placed.push(Placed {
                id: event.id,
                stream: event.stream.clone(),
                version: next,
                position,
            });
        }
        let mut stream_names = Vec::new();
        let mut stream_versions = Vec::new();
        let mut stream_last_positions = Vec::new();
        for (name, version) in &versions {
            let version = version.expect("every stream of the batch has a version now");
            let last = placed
                .iter()
                .rev()
                .find(|p| &p.stream == name)
                .expect("the stream is in the batch");
            stream_names.push(name.clone());
            stream_versions.push(version as i64);
            stream_last_positions.push(last.position as i64);
        }
        let head = start as u64 + events.len() as u64;
        let inserted = sqlx::query(
            "WITH inserted AS ( \
               INSERT INTO events (position, id, stream, version, event_type, data, metadata, recorded_at_micros, is_binary) \
               SELECT p, i::uuid, s, v, t, d, m, $8, b \
               FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bytea[], $7::bytea[], $14::bool[]) \
                 AS e(p, i, s, v, t, d, m, b) \
             ), touched AS ( \
               INSERT INTO streams (name, version, last_position, updated_at_micros) \
               SELECT n, v, l, $8 FROM UNNEST($9::text[], $10::bigint[], $11::bigint[]) AS s(n, v, l) \
               ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, \
                 last_position = EXCLUDED.last_position, updated_at_micros = EXCLUDED.updated_at_micros \
             ) \
             SELECT pg_notify($12, $13)",
        )
        .bind(&columns.positions)
        .bind(&columns.ids)
        .bind(&columns.streams)
        .bind(&columns.versions)
        .bind(&columns.types)
        .bind(&columns.data)
        .bind(&columns.metadata)
        .bind(recorded_at_micros)
        .bind(&stream_names)
        .bind(&stream_versions)
        .bind(&stream_last_positions)
        .bind(CHANNEL)
        .bind(head.to_string())
        .bind(&columns.binary)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(error) if constraint(&error) == Some("events_id_key") => {
                let _ = tx.rollback().await;
                return Ok(None);
            }
            Err(error) => return Err(write_error(&error)),
        }
        for event in events {
            if let Some(owner) = event.stream.strip_prefix(METASTREAM_PREFIX) {
                let retention = Retention::of_record(&event.event_type, &event.data);
                let as_i64 = |value: Option<u64>| value.map(|v| v.min(i64::MAX as u64) as i64);
                sqlx::query(
                    "INSERT INTO stream_lifecycle                        (name, truncate_before, max_count, max_age_seconds, tombstoned)                      VALUES ($1, $2, $3, $4, $5)                      ON CONFLICT (name) DO UPDATE SET truncate_before = EXCLUDED.truncate_before,                        max_count = EXCLUDED.max_count, max_age_seconds = EXCLUDED.max_age_seconds,                        tombstoned = EXCLUDED.tombstoned",
                )
                .bind(owner)
                .bind(as_i64(retention.truncate_before))
                .bind(as_i64(retention.max_count))
                .bind(as_i64(retention.max_age_seconds))
                .bind(retention.tombstoned)
                .execute(&mut *tx)
                .await
                .map_err(|e| write_error(&e))?;
            }
        }
        tx.commit().await.map_err(|e| write_error(&e))?;
        self.publish_head(head);
        (self.inner.on_commit)(events.len() as u64);
        Ok(Some(Appended {
            events: placed,
            duplicate: false,
        }))
    }

    /// The answer to a batch some of whose ids are stored: the original placement if the
    /// whole batch is stored with identical content, else a conflict. `None`: none is stored
    /// (the stored one was rolled back meanwhile... or never was).
    async fn repeat(&self, events: &[NewEvent]) -> Result<Option<Appended>> {
        let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE id = ANY($1::text[]::uuid[])"
        ))
        .bind(&ids)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| write_error(&e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let stored: std::collections::HashMap<Uuid, RecordedEvent> = rows
            .iter()
            .map(decode_event)
            .map(|event| event.map(|event| (event.id, event)))
            .collect::<Result<_>>()?;
        let mut repeats = Vec::new();
        for event in events {
            if let Some(original) = stored.get(&event.id) {
                if !original.same_content(event) {
                    return Err(Error::IdConflict { id: event.id });
                }
                repeats.push(Placed {
                    id: event.id,
                    stream: original.stream.clone(),
                    version: original.version,
                    position: original.position,
                });
            }
        }
        if repeats.len() != events.len() {
            return Err(Error::IdConflict { id: repeats[0].id });
        }
        Ok(Some(Appended {
            events: repeats,
            duplicate: true,
        }))
    }

    /// Up to `limit` events from `from` in `direction`, bounded by `max_bytes` (at least one
    /// event), whether more follow, and the committed head of the same snapshot (`None` when
    /// no row came back). One statement: a running byte sum says where the byte bound cuts,
    /// and one row past the limit says whether more follow.
    async fn page(
        &self,
        condition: &str,
        order: &str,
        bind: i64,
        limit: usize,
        max_bytes: usize,
        stream: Option<&str>,
    ) -> Result<(Vec<RecordedEvent>, bool, Option<u64>)> {
        let limit = limit.min(i64::MAX as usize - 1) as i64;
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, before_bytes, \
               (SELECT next_position FROM events_head WHERE id = 0) FROM ( \
               SELECT position, id, stream, version, event_type, \
                 data, metadata, recorded_at_micros, is_binary, \
                 sum(octet_length(stream) + octet_length(event_type) + octet_length(data) \
                     + coalesce(octet_length(metadata), 0)) OVER w \
                 - (octet_length(stream) + octet_length(event_type) + octet_length(data) \
                     + coalesce(octet_length(metadata), 0)) AS before_bytes \
               FROM live_events WHERE {condition} \
               WINDOW w AS (ORDER BY {order}) ORDER BY {order} LIMIT $2 \
             ) page ORDER BY {order}"
        );
        let query = sqlx::query(&sql).bind(bind).bind(limit + 1);
        let query = match stream {
            Some(stream) => query.bind(stream),
            None => query,
        };
        let rows = query
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| read_error(&e))?;
        let head = rows.first().map(|row| row.get::<i64, _>(10) as u64);
        let mut events = Vec::with_capacity(rows.len().min(limit as usize));
        let mut more = false;
        for row in &rows {
            let before_bytes: i64 = row.get(9);
            let over_bytes = !events.is_empty() && before_bytes as u64 >= max_bytes as u64;
            if events.len() as i64 >= limit || over_bytes {
                more = true;
                break;
            }
            events.push(decode_event(row)?);
        }
        Ok((events, more, head))
    }

    async fn scan_filtered(&self, request: &ReadAll, filter: &Filter) -> Result<AllPage> {
        let forward = request.direction == Direction::Forward;
        let mut cursor: i64 = match (request.start, forward) {
            (Start::Beginning, _) => 0,
            (Start::End, true) => i64::MAX,
            (Start::End, false) => i64::MAX,
            (Start::At(position), _) => position.min(i64::MAX as u64) as i64,
        };
        let (condition, order) = if forward {
            ("position >= $1", "position")
        } else {
            ("position <= $1", "position DESC")
        };
        let mut found = Vec::new();
        let mut scanned = 0usize;
        let mut used = 0usize;
        let mut exhausted = false;
        'scan: while scanned < FILTER_SCAN_MAX_EVENTS {
            // Names and types first; data only for the events that match.
            let rows = sqlx::query(&format!(
                "SELECT position, stream, event_type FROM live_events WHERE {condition} \
                 ORDER BY {order} LIMIT $2"
            ))
            .bind(cursor)
            .bind(SCAN_CHUNK_EVENTS)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| read_error(&e))?;
            if rows.is_empty() {
                exhausted = true;
                break;
            }
            let mut matching = Vec::new();
            for row in &rows {
                let position: i64 = row.get(0);
                scanned += 1;
                cursor = if forward { position + 1 } else { position - 1 };
                let probe = RecordedEvent {
                    id: Uuid::nil(),
                    stream: row.get(1),
                    version: 0,
                    position: position as u64,
                    event_type: row.get(2),
                    data: Vec::new(),
                    metadata: None,
                    content_type: ContentType::Json,
                    recorded_at_micros: 0,
                };
                if filter.matches(&probe) {
                    matching.push(position);
                    if found.len() + matching.len() >= request.limit {
                        break;
                    }
                }
            }
            if !matching.is_empty() {
                let rows = sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE position = ANY($1) ORDER BY {order}"
                ))
                .bind(&matching)
                .fetch_all(&self.inner.pool)
                .await
                .map_err(|e| read_error(&e))?;
                for row in &rows {
                    let event = decode_event(row)?;
                    used = used.saturating_add(event.size_bytes());
                    cursor = if forward {
                        event.position as i64 + 1
                    } else {
                        event.position as i64 - 1
                    };
                    found.push(event);
                    if found.len() >= request.limit || used >= request.max_bytes {
                        break 'scan;
                    }
                }
            }
            if (rows.len() as i64) < SCAN_CHUNK_EVENTS || cursor < 0 {
                exhausted = true;
                break;
            }
        }
        let head = committed_head(&self.inner.pool)
            .await
            .map_err(|e| read_error(&e))?;
        let next = if forward {
            let cursor = cursor as u64;
            (!exhausted && cursor < head).then_some(cursor)
        } else {
            (!exhausted && cursor >= 0).then_some(cursor as u64)
        };
        Ok(AllPage {
            events: found,
            next,
            head,
        })
    }
}

impl EventStore for Postgres {
    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    async fn append(&self, events: Vec<NewEvent>, expected: ExpectedVersion) -> Result<Appended> {
        events::check_append(&events, expected, &self.inner.limits)?;
        // A stored id rolls the insert back; then the batch is a repeat or a conflict. A
        // repeat's original can only vanish if it was never committed, so this loop ends.
        super::embedded::refuse_metastreams(&events)?;
        loop {
            if let Some(appended) = self.insert(&events, expected, None).await? {
                return Ok(appended);
            }
            if let Some(appended) = self.repeat(&events).await? {
                return Ok(appended);
            }
        }
    }

    async fn get(&self, id: Uuid) -> Result<Option<RecordedEvent>> {
        let (answer, answered) = oneshot::channel();
        if self.inner.reads.enqueue(id, answer) {
            tokio::spawn(read_by_id(self.clone()));
        }
        answered.await.unwrap_or_else(|_| {
            Err(Error::Unavailable {
                reason: "the read by id was abandoned".into(),
            })
        })
    }

    async fn read_all(&self, request: ReadAll) -> Result<AllPage> {
        if let Some(filter) = &request.filter {
            return self.scan_filtered(&request, filter).await;
        }
        match request.direction {
            Direction::Forward => {
                let from = match request.start {
                    Start::Beginning => 0,
                    Start::At(position) => position.min(i64::MAX as u64),
                    Start::End => self.head().await?,
                };
                let (events, more, head) = self
                    .page(
                        "position >= $1",
                        "position",
                        from as i64,
                        request.limit,
                        request.max_bytes,
                        None,
                    )
                    .await?;
                let end = events.last().map_or(from, |e| e.position + 1);
                let head = match head {
                    Some(head) => head,
                    None => self.head().await?,
                };
                Ok(AllPage {
                    events,
                    next: more.then_some(end),
                    head,
                })
            }
            Direction::Backward => {
                let top = match request.start {
                    Start::Beginning => 0,
                    Start::At(position) => position.min(i64::MAX as u64) as i64,
                    Start::End => i64::MAX,
                };
                let (events, more, head) = self
                    .page(
                        "position <= $1",
                        "position DESC",
                        top,
                        request.limit,
                        request.max_bytes,
                        None,
                    )
                    .await?;
                let next = events
                    .last()
                    .and_then(|e| e.position.checked_sub(1))
                    .filter(|_| more);
                let head = match head {
                    Some(head) => head,
                    None => self.head().await?,
                };
                Ok(AllPage { events, next, head })
            }
        }
    }

    async fn read_stream(&self, stream: &str, request: ReadStream) -> Result<Option<StreamPage>> {
        let Some(state) = self.stream_state(stream).await? else {
            return Ok(None);
        };
        let last_version = state.version;
        let (events, more, next) = match request.direction {
            Direction::Forward => {
                let from = match request.start {
                    Start::Beginning => 0,
                    Start::End => last_version,
                    Start::At(version) => version.min(i64::MAX as u64),
                };
                let (events, more, _) = self
                    .page(
                        "stream = $3 AND version >= $1",
                        "version",
                        from as i64,
                        request.limit,
                        request.max_bytes,
                        Some(stream),
                    )
                    .await?;
                let next = events.last().map(|e| e.version + 1);
                (events, more, next)
            }
            Direction::Backward => {
                let top = match request.start {
                    Start::Beginning => 0,
                    Start::End => last_version,
                    Start::At(version) => version.min(last_version),
                };
                let (events, more, _) = self
                    .page(
                        "stream = $3 AND version <= $1",
                        "version DESC",
                        top as i64,
                        request.limit,
                        request.max_bytes,
                        Some(stream),
                    )
                    .await?;
                let next = events.last().and_then(|e| e.version.checked_sub(1));
                (events, more, next)
            }
        };
        Ok(Some(StreamPage {
            events,
            next: next.filter(|_| more),
            last_version,
        }))
    }

    async fn stream_state(&self, stream: &str) -> Result<Option<StreamState>> {
        let row = sqlx::query(&format!("{STREAM_SELECT} WHERE s.name = $1"))
            .bind(stream)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| read_error(&e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (state, tombstoned, soft_deleted) = decode_stream(&row);
        if tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.to_owned(),
            });
        }
        Ok((!soft_deleted).then_some(state))
    }

    async fn list_streams(&self, request: ListStreams) -> Result<StreamList> {
        let limit = request.limit.clamp(1, 10_000) as i64;
        let with_metastreams = request
            .prefix
            .as_deref()
            .is_some_and(|prefix| prefix.starts_with(METASTREAM_PREFIX));
        let pattern = request
            .prefix
            .as_deref()
            .map(|prefix| format!("{}%", escape_like(prefix)));
        // Deleted streams (soft or tombstoned) and metastreams are left out.
        let rows = sqlx::query(&format!(
            "{STREAM_SELECT} \
             WHERE ($1::text IS NULL OR s.name LIKE $1 ESCAPE '\\') \
               AND ($2::text IS NULL OR s.name > $2) \
               AND ($4::boolean OR s.name NOT LIKE '$$%') \
               AND (l.name IS NULL OR (NOT l.tombstoned AND coalesce(l.truncate_before, 0) <= s.version)) \
             ORDER BY s.name LIMIT $3"
        ))
        .bind(pattern)
        .bind(request.after)
        .bind(limit + 1)
        .bind(with_metastreams)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| read_error(&e))?;
        let mut streams: Vec<StreamState> = rows.iter().map(|row| decode_stream(row).0).collect();
        let more = streams.len() as i64 > limit;
        streams.truncate(limit as usize);
        let next = more
            .then(|| streams.last().map(|s| s.stream.clone()))
            .flatten();
        Ok(StreamList { streams, next })
    }

    async fn stream_metadata(&self, stream: &str) -> Result<Option<StreamMetadata>> {
        let row = sqlx::query(
            "SELECT coalesce((SELECT tombstoned FROM stream_lifecycle WHERE name = $1), false), \
               (SELECT event_type FROM events WHERE stream = $2 ORDER BY version DESC LIMIT 1), \
               (SELECT data FROM events WHERE stream = $2 ORDER BY version DESC LIMIT 1), \
               EXISTS (SELECT 1 FROM streams WHERE name = $1)",
        )
        .bind(stream)
        .bind(metastream_of(stream))
        .fetch_one(&self.inner.pool)
        .await
        .map_err(|e| read_error(&e))?;
        if row.get::<bool, _>(0) {
            return Err(Error::StreamDeleted {
                stream: stream.to_owned(),
            });
        }
        let event_type: Option<String> = row.get(1);
        let data: Option<Vec<u8>> = row.get(2);
        match (event_type.as_deref(), data) {
            (Some(METADATA_EVENT_TYPE), Some(data)) => StreamMetadata::from_json(&data)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    reason: format!("stored metadata of {stream:?}: {e}"),
                }),
            _ if row.get::<bool, _>(3) => Ok(Some(StreamMetadata::default())),
            _ => Ok(None),
        }
    }

    async fn set_stream_metadata(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<Placed> {
        let record = NewEvent::json(
            metastream_of(stream),
            METADATA_EVENT_TYPE,
            metadata.to_json()?,
        );
        let appended = self
            .insert(&[record], expected, None)
            .await?
            .expect("a metadata record has a fresh id, so it is never a repeat");
        Ok(appended
            .events
            .into_iter()
            .next()
            .expect("one record appended"))
    }

    async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<()> {
        loop {
            let row = sqlx::query(&format!("{STREAM_SELECT} WHERE s.name = $1"))
                .bind(stream)
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(|e| read_error(&e))?;
            let not_found = || Error::StreamNotFound {
                stream: stream.to_owned(),
            };
            let Some(row) = row else {
                return Err(not_found());
            };
            let (state, tombstoned, soft_deleted) = decode_stream(&row);
            if tombstoned {
                return Err(Error::StreamDeleted {
                    stream: stream.to_owned(),
                });
            }
            // A soft-deleted stream can still be tombstoned, not deleted again.
            if soft_deleted && mode == DeleteMode::Soft {
                return Err(not_found());
            }
            let condition = match expected {
                ExpectedVersion::Any | ExpectedVersion::StreamExists => state.version,
                ExpectedVersion::Exact(wanted) => wanted,
                ExpectedVersion::NoStream => {
                    return Err(Error::WrongExpectedVersion {
                        stream: stream.to_owned(),
                        expected,
                        current: Some(state.version),
                    });
                }
            };
            // The metastream's version before its last record is read: a metadata write in
            // between fails the condition, and the delete goes again.
            let metastream_expected = match mode {
                DeleteMode::Soft => {
                    let version: Option<i64> =
                        sqlx::query_scalar("SELECT version FROM streams WHERE name = $1")
                            .bind(metastream_of(stream))
                            .fetch_optional(&self.inner.pool)
                            .await
                            .map_err(|e| read_error(&e))?;
                    version.map_or(ExpectedVersion::NoStream, |v| {
                        ExpectedVersion::Exact(v as u64)
                    })
                }
                DeleteMode::Hard => ExpectedVersion::Any,
            };
            let record = match mode {
                DeleteMode::Soft => {
                    let mut metadata = self.stream_metadata(stream).await?.unwrap_or_default();
                    metadata.truncate_before = Some(condition.saturating_add(1));
                    NewEvent::json(
                        metastream_of(stream),
                        METADATA_EVENT_TYPE,
                        metadata.to_json()?,
                    )
                }
                DeleteMode::Hard => {
                    NewEvent::json(metastream_of(stream), TOMBSTONE_EVENT_TYPE, b"{}".to_vec())
                }
            };
            match self
                .insert(
                    &[record],
                    metastream_expected,
                    Some((stream, ExpectedVersion::Exact(condition))),
                )
                .await
            {
                Ok(_) => return Ok(()),
                // The metadata changed in between, or the stream grew and any version was
                // admitted: go again.
                Err(Error::WrongExpectedVersion {
                    stream: checked, ..
                }) if checked != stream || !matches!(expected, ExpectedVersion::Exact(_)) => {
                    continue;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn head(&self) -> Result<u64> {
        let head = committed_head(&self.inner.pool)
            .await
            .map_err(|e| read_error(&e))?;
        self.publish_head(head);
        Ok(head)
    }

    async fn wait_for_head_above(&self, position: u64) -> Result<u64> {
        let mut head = self.inner.head.subscribe();
        let value = head
            .wait_for(|head| *head > position)
            .await
            .map(|head| *head)
            .map_err(|_| Error::Unavailable {
                reason: "the backend closed".into(),
            })?;
        Ok(value)
    }

    async fn stats(&self) -> Result<Stats> {
        let row = sqlx::query(
            "SELECT (SELECT next_position FROM events_head), (SELECT count(*) FROM streams), \
             NOT pg_is_in_recovery()",
        )
        .fetch_one(&self.inner.pool)
        .await
        .map_err(|e| read_error(&e))?;
        Ok(Stats {
            head: row.get::<i64, _>(0) as u64,
            streams: row.get::<i64, _>(1) as u64,
            writable: row.get(2),
        })
    }
}

/// The columns of a batch, as arrays for one `UNNEST` insert.
struct Columns {
    positions: Vec<i64>,
    ids: Vec<String>,
    streams: Vec<String>,
    versions: Vec<i64>,
    types: Vec<String>,
    data: Vec<Vec<u8>>,
    metadata: Vec<Option<Vec<u8>>>,
    binary: Vec<bool>,
}

impl Columns {
    fn with_capacity(n: usize) -> Columns {
        Columns {
            positions: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            streams: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            binary: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, event: &NewEvent, position: u64, version: u64) {
        self.positions.push(position as i64);
        self.ids.push(event.id.to_string());
        self.streams.push(event.stream.clone());
        self.versions.push(version as i64);
        self.types.push(event.event_type.clone());
        self.data.push(event.data.clone());
        self.metadata.push(event.metadata.clone());
        self.binary.push(event.content_type == ContentType::Binary);
    }
}

async fn create_schema(connection: &mut sqlx::PgConnection) -> sqlx::Result<()> {
    // Two processes creating the schema at once would race on the catalog's unique index.
    const LOCK_KEY: i64 = 0x6c6f_6762_6f6f_6b00; // "logbook\0"
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *connection)
        .await?;
    let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        .execute(&mut *connection)
        .await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *connection)
        .await?;
    created.map(|_| ())
}

async fn committed_head(pool: &PgPool) -> sqlx::Result<u64> {
    let head: i64 = sqlx::query_scalar("SELECT next_position FROM events_head WHERE id = 0")
        .fetch_one(pool)
        .await?;
    Ok(head as u64)
}

/// Turns other processes' notifications into head updates, for as long as the backend lives.
async fn follow_notifications(backend: Postgres) {
    loop {
        let mut listener = match PgListener::connect_with(&backend.inner.pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::debug!(error = %error, "LISTEN connection failed; retrying");
                tokio::time::sleep(HEAD_POLL_INTERVAL).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(CHANNEL).await {
            tracing::debug!(error = %error, "LISTEN failed; retrying");
            tokio::time::sleep(HEAD_POLL_INTERVAL).await;
            continue;
        }
        // Listening from here on: whatever committed before is in the head read now.
        backend.refresh_head().await;
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if let Ok(head) = notification.payload().parse::<u64>() {
                        backend.publish_head(head);
                    }
                }
                // The connection dropped (and was re-established): notifications may have
                // been missed, so read where the log is.
                Ok(None) => backend.refresh_head().await,
                Err(error) => {
                    tracing::debug!(error = %error, "LISTEN connection lost; reconnecting");
                    tokio::time::sleep(HEAD_POLL_INTERVAL).await;
                    break;
                }
            }
        }
    }
}

/// Reads the committed head every [`HEAD_POLL_INTERVAL`]: the safety net under
/// notifications.
async fn poll_head(backend: Postgres) {
    let mut interval = tokio::time::interval(HEAD_POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        // Only worth a query while someone waits.
        if backend.inner.head.receiver_count() > 0 {
            backend.refresh_head().await;
        }
    }
}

fn decode_event(row: &PgRow) -> Result<RecordedEvent> {
    let id: String = row.get(1);
    Ok(RecordedEvent {
        position: row.get::<i64, _>(0) as u64,
        id: Uuid::parse_str(&id).map_err(|e| Error::Corrupt {
            reason: format!("stored id {id:?}: {e}"),
        })?,
        stream: row.get(2),
        version: row.get::<i64, _>(3) as u64,
        event_type: row.get(4),
        data: row.get(5),
        metadata: row.get(6),
        recorded_at_micros: row.get(7),
        content_type: if row.get::<bool, _>(8) {
            ContentType::Binary
        } else {
            ContentType::Json
        },
    })
}

/// A stream's row with its lifecycle and first live version, as [`decode_stream`] reads it.
const STREAM_SELECT: &str = "SELECT s.name, s.version, s.last_position, s.updated_at_micros, \
     coalesce(l.tombstoned, false), l.truncate_before, \
     (SELECT min(v.version) FROM live_events v WHERE v.stream = s.name) \
     FROM streams s LEFT JOIN stream_lifecycle l ON l.name = s.name";

/// The state, whether tombstoned, whether soft-deleted (`$tb` past the last version).
fn decode_stream(row: &PgRow) -> (StreamState, bool, bool) {
    let version = row.get::<i64, _>(1) as u64;
    let tombstoned: bool = row.get(4);
    let truncate_before: Option<i64> = row.get(5);
    let first_live: Option<i64> = row.get(6);
    let first_version = first_live.map_or(version + 1, |v| v as u64);
    let state = StreamState {
        stream: row.get(0),
        version,
        first_version,
        events: (version + 1).saturating_sub(first_version),
        last_position: row.get::<i64, _>(2) as u64,
        updated_at_micros: row.get(3),
    };
    let soft_deleted = truncate_before.is_some_and(|tb| tb as u64 > version);
    (state, tombstoned, soft_deleted)
}

fn escape_like(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The name of the constraint a statement violated, if that is what failed.
fn constraint(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}

/// Whether the error means the database cannot serve right now (as opposed to a bug or a
/// bad statement): a lost or refused connection, a shutting-down or restarting server, a
/// read-only one (a standby after a failover), a full disk, too many connections.
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") // connection exception
                || code.starts_with("53") // insufficient resources: disk full, out of memory
                || code.starts_with("57P") // admin/crash shutdown, cannot connect now
                || code == "25006" // read-only transaction (a standby)
                || code == "40001" // serialization failure
                || code == "40P01" // deadlock detected
        }),
        _ => false,
    }
}

fn write_error(error: &sqlx::Error) -> Error {
    if is_unavailable(error) {
        Error::CannotWrite {
            reason: error.to_string(),
        }
    } else {
        Error::Internal {
            reason: error.to_string(),
        }
    }
}

fn read_error(error: &sqlx::Error) -> Error {
    if is_unavailable(error) {
        Error::Unavailable {
            reason: error.to_string(),
        }
    } else {
        Error::Internal {
            reason: error.to_string(),
        }
    }
}
