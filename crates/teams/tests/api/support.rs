//! Test support: `spawn_app` (the service over real HTTP on port 0, a fresh database per test),
//! a small real SMTP server on a loopback port, and a deadline loop for awaiting conditions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::Connection;
use teams::{Secret, TeamsArgs, TeamsService};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A running service with its own database and data directory.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub admin_token: String,
    pub database_url: String,
    pub data_dir: tempfile::TempDir,
    pub frontend_url: String,
    service: Option<TeamsService>,
    server: tokio::task::JoinHandle<()>,
    postgres: Option<PostgresDatabase>,
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123456789";

/// Generates `on_sqlite` and `on_postgres` tests from one async body taking a `Db`.
#[macro_export]
macro_rules! both_databases {
    ($(async fn $name:ident($db:ident: Db) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($db: $crate::support::Db) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() { run($crate::support::Db::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                if $crate::support::postgres_url().is_some() {
                    run($crate::support::Db::Postgres).await
                }
            }
        }
    )*};
}

/// `TEST_DATABASE_URL`, or `None` after saying loudly that PostgreSQL tests are skipped.
pub fn postgres_url() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Written to the process's stderr directly, past the test harness's capture, so the
            // skip shows in every run (once per run).
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                use std::io::Write;
                let _ = std::io::stderr().write_all(
                    b"\n!!! TEST_DATABASE_URL is not set: the PostgreSQL variants of the teams tests were SKIPPED !!!\n\
                      !!! run scripts/test, or set TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test !!!\n\n",
                );
            });
            None
        }
    }
}

/// A uniquely named PostgreSQL database, dropped when the test ends (even on panic).
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl PostgresDatabase {
    async fn create(admin_url: &str) -> (PostgresDatabase, String) {
        sqlx::any::install_default_drivers();
        let name = format!("teams_test_{}", uuid::Uuid::new_v4().simple());
        let mut connection = sqlx::AnyConnection::connect(admin_url)
            .await
            .expect("connect to TEST_DATABASE_URL");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut connection)
            .await
            .expect("create the test database");
        connection.close().await.ok();
        let mut url = url::Url::parse(admin_url).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        (
            PostgresDatabase {
                admin_url: admin_url.to_owned(),
                name,
            },
            url.to_string(),
        )
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut connection = sqlx::AnyConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut connection)
                    .await?;
                connection.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// Starts the service on 127.0.0.1:0 with a fresh database and mail written to files.
pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// Like [`spawn_app`], with settings adjusted by `adjust` first.
pub async fn spawn_app_with(db: Db, adjust: impl FnOnce(&mut TeamsArgs)) -> TestApp {
    spawn_app_served(db, adjust, true).await
}

/// Like [`spawn_app_with`], but served with plain `axum::serve(listener, router)`, without
/// `ConnectInfo`, so the service cannot see client addresses.
pub async fn spawn_app_without_connect_info(
    db: Db,
    adjust: impl FnOnce(&mut TeamsArgs),
) -> TestApp {
    spawn_app_served(db, adjust, false).await
}

/// A second service (another "process") on `first`'s database, with its own data directory.
pub async fn spawn_second_app(first: &TestApp, adjust: impl FnOnce(&mut TeamsArgs)) -> TestApp {
    let url = first.database_url.clone();
    spawn_app_inner(None, Some(url), adjust, true).await
}

async fn spawn_app_served(
    db: Db,
    adjust: impl FnOnce(&mut TeamsArgs),
    connect_info: bool,
) -> TestApp {
    spawn_app_inner(Some(db), None, adjust, connect_info).await
}

async fn spawn_app_inner(
    db: Option<Db>,
    shared_database: Option<String>,
    adjust: impl FnOnce(&mut TeamsArgs),
    connect_info: bool,
) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let local_addr = listener.local_addr().expect("addr");
    let (postgres, database_url) = match (db, shared_database) {
        (_, Some(url)) => (None, url),
        (None, None) => unreachable!("a database or a shared one"),
        (Some(db), None) => match db {
            Db::Sqlite => (
                None,
                format!(
                    "sqlite://{}",
                    data_dir.path().join("teams.sqlite3").display()
                ),
            ),
            Db::Postgres => {
                let (database, url) =
                    PostgresDatabase::create(&postgres_url().expect("TEST_DATABASE_URL")).await;
                (Some(database), url)
            }
        },
    };
    let mut args = TeamsArgs {
        database_url: Some(Secret::new(database_url.clone())),
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        ..TeamsArgs::default()
    };
    adjust(&mut args);
    let ctx = web::ServiceContext {
        production: false,
        data_dir: data_dir.path().to_path_buf(),
        local_addr,
    };
    let settings = args.check(&ctx).await.unwrap_or_else(|problems| {
        panic!("settings rejected: {problems:?}");
    });
    let frontend_url = settings.frontend_url.clone();
    let service = TeamsService::start(settings).await.expect("service starts");
    // The stack the binary applies around the bare router: request ids, the request span,
    // the teams request timeout.
    let router = web::middleware::stack(web::middleware::timeout(
        service.router(),
        service.request_timeout(),
    ));
    let server = tokio::spawn(async move {
        if connect_info {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, service).await.expect("serve");
        } else {
            axum::serve(listener, router).await.expect("serve");
        }
    });
    TestApp {
        base: format!("http://{local_addr}"),
        client: reqwest::Client::new(),
        admin_token: ADMIN_TOKEN.to_owned(),
        database_url,
        data_dir,
        frontend_url,
        service: Some(service),
        server,
        postgres,
    }
}

impl TestApp {
    /// An admin request with the bearer token.
    pub fn admin(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin_token)
    }

    /// A request without credentials.
    pub fn public(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// Creates a team and returns its id.
    pub async fn create_team(&self, name: &str) -> String {
        let response = self
            .admin(Method::POST, "/teams")
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// Invites `emails` to `team_id`; returns status and body.
    pub async fn invite(&self, team_id: &str, emails: &[&str]) -> (StatusCode, Value) {
        let response = self
            .admin(Method::POST, &format!("/teams/{team_id}/invitations"))
            .json(&serde_json::json!({ "emails": emails }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Sends `body` as it is (any bytes) with `Content-Type: application/json`.
    pub async fn raw_json(
        &self,
        method: Method,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.admin(method, path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs a token to `/invitations/accept`.
    pub async fn accept(&self, token: &str) -> reqwest::Response {
        self.public(Method::POST, "/invitations/accept")
            .json(&serde_json::json!({ "token": token }))
            .send()
            .await
            .unwrap()
    }

    /// The directory development-mode mail is written to.
    pub fn mail_dir(&self) -> PathBuf {
        self.data_dir.path().join("mail")
    }

    /// Waits until `count` `.eml` files exist and returns their contents.
    pub async fn mail_files(&self, count: usize) -> Vec<String> {
        let dir = self.mail_dir();
        eventually(&format!("{count} .eml files"), || {
            let dir = dir.clone();
            async move {
                let messages: Vec<String> = std::fs::read_dir(&dir)
                    .ok()?
                    .filter_map(|entry| entry.ok())
                    .filter(|entry| entry.path().extension().is_some_and(|e| e == "eml"))
                    .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
                    // The file transport creates the file, then writes it: an empty file is
                    // a message still being written.
                    .filter(|message| !message.is_empty())
                    .collect();
                (messages.len() >= count).then_some(messages)
            }
        })
        .await
    }

    /// A fresh connection to this test's database.
    pub async fn database(&self) -> sqlx::AnyConnection {
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(&self.database_url)
            .await
            .expect("connect to the test database")
    }

    /// The teams metrics text, as `/metrics` shows it.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        if let Some(service) = &self.service {
            service.render_metrics(&mut out);
        }
        out
    }

    /// The value of one metric line (`name value`).
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// GETs an admin path and returns the JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.admin(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    /// The team's audit actions in order.
    pub async fn audit_actions(&self, team_id: &str) -> Vec<String> {
        let page = self
            .get_json(&format!("/teams/{team_id}/audit?limit=1000"))
            .await;
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["action"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits until `check` holds for the invitation `id` of `team_id` (its JSON) and returns it.
    pub async fn invitation_until(
        &self,
        team_id: &str,
        id: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/teams/{team_id}/invitations/{id}");
        eventually(what, || async {
            let invitation: Value = self
                .admin(Method::GET, &path)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            check(&invitation).then_some(invitation)
        })
        .await
    }

    /// Stops the worker and the server.
    pub async fn stop(mut self) {
        self.server.abort();
        if let Some(service) = self.service.take() {
            service.shutdown().await;
        }
        drop(self.postgres.take());
    }
}

/// The token of the invitation link for `email` in `messages` (the newest message wins when
/// sorted by nothing: callers pass the messages they mean).
pub fn token_in(message: &str, frontend_url: &str) -> String {
    // Undo quoted-printable, should a part be sent that way.
    let message = &message.replace("=\r\n", "").replace("=3D", "=");
    let prefix = format!("{frontend_url}/invite#token=");
    let start = message
        .find(&prefix)
        .unwrap_or_else(|| panic!("no link starting with {prefix} in:\n{message}"))
        + prefix.len();
    message[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// The recipient of a raw message.
pub fn recipient_of(message: &str) -> String {
    message
        .lines()
        .find_map(|line| line.strip_prefix("To: "))
        .unwrap_or_default()
        .trim()
        .to_lowercase()
}

/// Polls `check` until it yields a value; panics naming `what` after 20 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How a test SMTP server misbehaves, for the first `n` connections (then it serves
/// normally), or for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Accepts the connection and never says a word (no greeting).
    Silent,
    /// Stores the message at the final `.` and closes without replying: the client cannot
    /// know the message arrived.
    CloseAfterData,
    /// Answers `550` to every recipient (a permanent refusal).
    Reject550,
}

/// A minimal real SMTP server (RFC 5321 subset: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT)
/// on a loopback port, keeping every message it receives.
pub struct SmtpServer {
    pub addr: SocketAddr,
    pub messages: Arc<Mutex<Vec<String>>>,
    /// Every `RCPT TO:` argument received, in order: the envelope recipients.
    pub recipients: Arc<Mutex<Vec<String>>>,
    /// Connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.expect("bind smtp")).await
    }

    pub async fn start_on(listener: TcpListener) -> SmtpServer {
        Self::misbehaving_on(listener, None, 0).await
    }

    /// A server whose first `connections` connections misbehave (`usize::MAX`: all of them).
    pub async fn misbehaving(how: Misbehaviour, connections: usize) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
        Self::misbehaving_on(listener, Some(how), connections).await
    }

    async fn misbehaving_on(
        listener: TcpListener,
        how: Option<Misbehaviour>,
        first: usize,
    ) -> SmtpServer {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let addr = listener.local_addr().unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let recipients = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let store = Arc::clone(&messages);
        let envelope = Arc::clone(&recipients);
        let counter = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let number = counter.fetch_add(1, Ordering::SeqCst);
                let behaviour = how.filter(|_| number < first);
                let store = Arc::clone(&store);
                let envelope = Arc::clone(&envelope);
                tokio::spawn(async move {
                    if behaviour == Some(Misbehaviour::Silent) {
                        // Hold the connection open, silently, until the client gives up.
                        let mut stream = stream;
                        let mut sink = Vec::new();
                        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink).await;
                        return;
                    }
                    let _ = serve_smtp(stream, store, envelope, behaviour).await;
                });
            }
        });
        SmtpServer {
            addr,
            messages,
            recipients,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn received(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_smtp(
    stream: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<String>>>,
    envelope: Arc<Mutex<Vec<String>>>,
    behaviour: Option<Misbehaviour>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write
        .write_all(b"220 localhost test SMTP ready\r\n")
        .await?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_ascii_uppercase();
        if command.starts_with("RCPT TO:") {
            envelope
                .lock()
                .unwrap()
                .push(line.trim_end()["RCPT TO:".len()..].trim().to_owned());
        }
        let reply: &[u8] = if command.starts_with("EHLO") {
            b"250-localhost\r\n250 8BITMIME\r\n"
        } else if command.starts_with("RCPT TO") && behaviour == Some(Misbehaviour::Reject550) {
            b"550 5.1.1 No such user here\r\n"
        } else if command.starts_with("HELO")
            || command.starts_with("MAIL FROM")
            || command.starts_with("RCPT TO")
            || command.starts_with("RSET")
            || command.starts_with("NOOP")
        {
            b"250 OK\r\n"
        } else if command.starts_with("DATA") {
            write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut message = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                message.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            store.lock().unwrap().push(message);
            if behaviour == Some(Misbehaviour::CloseAfterData) {
                return Ok(());
            }
            b"250 OK queued\r\n"
        } else if command.starts_with("QUIT") {
            write.write_all(b"221 Bye\r\n").await?;
            return Ok(());
        } else {
            b"502 Command not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
}
