//! The web console in a real headless Chromium against a real `logbook serve` (both
//! services): the streams page shows appended streams, a stream and an event open, a live
//! append arrives in the tail, hostile event data renders as text, the health view reads
//! `/metrics`, and the teams admin creates a team, invites two emails (one invalid), shows
//! both results and revokes one.
//!
//! Screenshots of each page go to `$CONSOLE_SCREENSHOTS_DIR` when set, else to a temporary
//! directory whose path the test prints; `docs/console/` holds a few of them.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); without them
//! the test says loudly that it was skipped and passes.

#[path = "../support/mod.rs"]
mod support;
mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use webdriver::{ChromeDriver, Session, browser_missing};

const BIN: &str = env!("CARGO_BIN_EXE_logbook");
const ADMIN_TOKEN: &str = "console-test-admin-token-0123456789abcdef";
/// What a careless console would turn into an element with a handler.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// A running `logbook serve` (events and teams), killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    /// Starts on `addr` (`127.0.0.1:0` for any free port) with data under `data_dir`, and
    /// waits until `/health` answers 200.
    async fn start(data_dir: &Path, addr: &str) -> Server {
        Server::start_with(data_dir, addr, &[]).await
    }

    /// As [`Server::start`], with extra environment variables.
    async fn start_with(data_dir: &Path, addr: &str, env: &[(&str, &str)]) -> Server {
        let log_path = data_dir.with_extension("stderr.log");
        let mut child = Command::new(BIN)
            .args(["serve", "--addr", addr, "--data-dir"])
            .arg(data_dir)
            .env_remove("EVENTS_TOKEN")
            .env_remove("EVENTS_TOKENS_FILE")
            .env_remove("DATABASE_URL")
            .env_remove("LOGBOOK_ENV")
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            // Tests run in parallel: the gRPC face's default port would be taken by another.
            .env("LOGBOOK_GRPC_ADDR", "off")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let base = support::listening_base(&mut child, &log_path);
        let server = Server { child, base };
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(format!("{}/health", server.base)).send().await
                && response.status() == 200
            {
                return server;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM (live subscriptions end with `event: shutdown`), and the exit awaited.
    fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(self.child.wait().unwrap().success(), "SIGTERM exits 0");
    }

    /// Appends one event to `stream`; answers its id.
    async fn append(&self, stream: &str, kind: &str, data: Value) -> String {
        self.append_as(None, stream, kind, data).await
    }

    /// Appends one event, with `Authorization: Bearer <token>` when a token is given.
    async fn append_as(
        &self,
        token: Option<&str>,
        stream: &str,
        kind: &str,
        data: Value,
    ) -> String {
        let id = uuid::Uuid::now_v7().to_string();
        let mut request =
            reqwest::Client::new().post(format!("{}/streams/{stream}/events", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .json(
                &json!({"id": id, "type": kind, "data": data, "metadata": {"by": "console test"}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        id
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshots_dir() -> PathBuf {
    let dir = match std::env::var_os("CONSOLE_SCREENSHOTS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("logbook-console-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("console screenshots: {}", dir.display());
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_browses_tails_and_administers_teams_in_headless_chromium() {
    if browser_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = Server::start(&data_dir, "127.0.0.1:0").await;
    let shots = screenshots_dir();
    server
        .append("orders-1", "OrderPlaced", json!({"total": 42}))
        .await;
    let shipped = server
        .append("orders-1", "OrderShipped", json!({"carrier": "post"}))
        .await;
    server
        .append("orders-2", "OrderPlaced", json!({"total": 7}))
        .await;
    let hostile = server.append("notes-1", "NoteTaken", json!(HOSTILE)).await;

    let driver = ChromeDriver::start().await;
    let session = Session::open(&driver).await;
    let console = format!("{}/console", server.base);

    // Streams: every appended stream, with its event count.
    session.go(&console).await;
    let streams = session.wait_for_text("#streams table", "orders-2").await;
    assert!(
        streams.contains("orders-1") && streams.contains("notes-1"),
        "{streams}"
    );
    let orders_1_events = session
        .text_of("#streams tr:has(a[href='#/stream/orders-1']) td:nth-child(2)")
        .await;
    assert_eq!(orders_1_events.as_deref(), Some("2"), "{streams}");
    session.screenshot(&shots.join("streams.png")).await;

    // Prefix search narrows the list.
    session.type_into("#prefix", "orders").await;
    session.click("form[role=search] button").await;
    session
        .wait_for("the search to drop notes-1", || async {
            let text = session.text_of("#streams").await?;
            (text.contains("orders-1") && !text.contains("notes-1")).then_some(())
        })
        .await;

    // A stream, newest first; then its newest event.
    session.click("#streams a[href='#/stream/orders-1']").await;
    let events = session.wait_for_text("#events table", "OrderShipped").await;
    let first_row = session
        .text_of("#events tbody tr:first-child")
        .await
        .unwrap();
    assert!(first_row.contains("OrderShipped"), "newest first: {events}");
    session.screenshot(&shots.join("stream.png")).await;
    session.click("#events tbody tr:first-child a").await;
    let id = session.wait_for_text("#event-id", &shipped).await;
    assert_eq!(id, shipped);
    let data = session.text_of("#event-data").await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&data).unwrap(),
        json!({"carrier": "post"}),
        "pretty JSON data"
    );
    let metadata = session.text_of("#event-metadata").await.unwrap();
    assert!(metadata.contains("console test"), "{metadata}");
    let curl = session.text_of("#curl").await.unwrap();
    assert_eq!(curl, format!("curl -s '{}/events/{shipped}'", server.base));
    session.screenshot(&shots.join("event.png")).await;

    // Hostile data is text: no element made from it, no dialog.
    session.go(&format!("{console}#/event/{hostile}")).await;
    let shown = session.wait_for_text("#event-data", "onerror").await;
    assert_eq!(shown, format!("\"{HOSTILE}\""));
    assert_eq!(
        session.count("img").await,
        0,
        "no element created from event data"
    );
    assert_eq!(session.open_dialog().await, None, "no dialog opened");

    // Live tail: an append made after the tail connected arrives, once.
    session.go(&format!("{console}#/tail")).await;
    session.wait_for_text("#tail-state", "live").await;
    let live = server
        .append("orders-3", "LiveArrival", json!({"n": 1}))
        .await;
    session.wait_for_text("#tail-rows", "LiveArrival").await;
    assert_eq!(
        session
            .count(&format!("#tail-rows a[href='#/event/{live}']"))
            .await,
        1
    );
    assert_eq!(
        session.count("#tail-rows tr").await,
        1,
        "the tail starts at the head: older events are not replayed"
    );
    // Paused, an append is held; resumed, it shows.
    session.click("#tail-pause").await;
    session.wait_for_text("#tail-pause", "Resume").await;
    server
        .append("orders-3", "HeldWhilePaused", json!({"n": 2}))
        .await;
    session.wait_for_text("#tail-held", "held").await;
    assert_eq!(
        session.count("#tail-rows tr").await,
        1,
        "nothing rendered while paused"
    );
    session.click("#tail-pause").await;
    session.wait_for_text("#tail-rows", "HeldWhilePaused").await;
    session.screenshot(&shots.join("tail.png")).await;

    // The server restarts on the same address: the tail reconnects with Last-Event-ID and
    // shows what follows, and nothing twice.
    let rows_before = session.count("#tail-rows tr").await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    server.terminate();
    server = Server::start(&data_dir, &addr).await;
    let after_restart = server
        .append("orders-3", "AfterRestart", json!({"n": 3}))
        .await;
    session.wait_for_text("#tail-rows", "AfterRestart").await;
    session.wait_for_text("#tail-state", "live").await;
    assert_eq!(
        session
            .count(&format!("#tail-rows a[href='#/event/{after_restart}']"))
            .await,
        1
    );
    assert_eq!(
        session.count("#tail-rows tr").await,
        rows_before + 1,
        "no event shown twice after the reconnect"
    );

    // Health: writable, the event count, the durability mode.
    session.go(&format!("{console}#/health")).await;
    session.wait_for_text("#health-writable", "yes").await;
    session.wait_for_text("#health-events", "7").await;
    session.wait_for_text("#health-durability", "fsync").await;
    // A rate needs two samples of /metrics.
    session.wait_for_text("#health-appends .value", ".").await;
    assert_eq!(
        session.count("#health-appends svg polyline").await,
        1,
        "a sparkline"
    );
    session.screenshot(&shots.join("health.png")).await;

    // Teams: the admin token is asked once, kept for the tab, never put in the URL.
    session.go(&format!("{console}#/teams")).await;
    session
        .wait_for("the token prompt", || async {
            let hidden = session
                .script(
                    "return document.getElementById('token-prompt').hidden;",
                    json!([]),
                )
                .await;
            (hidden == false).then_some(())
        })
        .await;
    session.type_into("#token-input", ADMIN_TOKEN).await;
    session.click("#token-form button[type=submit]").await;
    session.wait_for_text("#teams", "No team yet").await;
    session.type_into("#team-name", "Console Team").await;
    session.click("#create-team button").await;
    session.wait_for_text("h1", "Console Team").await;
    session
        .type_into("#invite-emails", "alice@example.com, not-an-email")
        .await;
    session.click("#invite-form button[type=submit]").await;
    let results = session
        .wait_for_text("#invite-results", "not-an-email")
        .await;
    assert_eq!(session.count("#invite-results li").await, 2, "{results}");
    let first = session
        .text_of("#invite-results li:nth-child(1)")
        .await
        .unwrap();
    let second = session
        .text_of("#invite-results li:nth-child(2)")
        .await
        .unwrap();
    assert_eq!(first, "alice@example.com: invited");
    assert!(
        second.starts_with("not-an-email: invalid email ("),
        "{second}"
    );
    let alice = "#invitations tr[data-email='alice@example.com']";
    session
        .wait_for_text(&format!("{alice} td.status"), "pending")
        .await;
    // A resend within INVITE_RESEND_INTERVAL_SECONDS of the first mail is refused: the 429's
    // problem and its wait are shown on the row.
    session.click(&format!("{alice} button.resend")).await;
    let refused = session
        .wait_for_text(&format!("{alice} .retry-after"), "before resending")
        .await;
    assert!(refused.starts_with("Wait "), "{refused}");
    let problem = session.text_of(&format!("{alice} .problem")).await.unwrap();
    assert!(problem.contains("try again in"), "{problem}");
    session.click(&format!("{alice} button.revoke")).await;
    session
        .wait_for_text(&format!("{alice} td.status"), "revoked")
        .await;
    session.screenshot(&shots.join("team.png")).await;
    let address = session.current_url().await;
    assert!(!address.contains(ADMIN_TOKEN), "{address}");
    let kept = session
        .script(
            "return sessionStorage.getItem('logbook.adminToken');",
            json!([]),
        )
        .await;
    assert_eq!(kept, ADMIN_TOKEN);
    let local = session
        .script("return localStorage.length;", json!([]))
        .await;
    assert_eq!(local, 0, "nothing in localStorage");

    session.close().await;
    drop(driver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_events_token_set_the_console_asks_for_it_once_and_keeps_it_out_of_urls() {
    if browser_missing() {
        return;
    }
    const TOKEN: &str = "console-test-events-token-abcdef0123456789";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &[("EVENTS_TOKEN", TOKEN)],
    )
    .await;
    let id = server
        .append_as(Some(TOKEN), "orders-1", "OrderPlaced", json!({"total": 1}))
        .await;
    let driver = ChromeDriver::start().await;
    let session = Session::open(&driver).await;
    let page = format!("{}/console#/event/{id}", server.base);
    session.go(&page).await;
    session
        .wait_for("the token prompt", || async {
            let hidden = session
                .script(
                    "return document.getElementById('token-prompt').hidden;",
                    json!([]),
                )
                .await;
            (hidden == false).then_some(())
        })
        .await;
    let label = session.text_of("#token-label").await.unwrap();
    assert_eq!(label, "Events token");
    session.type_into("#token-input", TOKEN).await;
    session.click("#token-form button[type=submit]").await;
    session.wait_for_text("#event-id", &id).await;
    // The curl names the variable, never the token.
    let curl = session.text_of("#curl").await.unwrap();
    assert!(
        curl.contains("$EVENTS_TOKEN") && !curl.contains(TOKEN),
        "{curl}"
    );

    // A reload keeps the token for the tab: no second prompt, the event shows.
    session.go("about:blank").await;
    session.go(&page).await;
    session.wait_for_text("#event-id", &id).await;
    let hidden = session
        .script(
            "return document.getElementById('token-prompt').hidden;",
            json!([]),
        )
        .await;
    assert_eq!(hidden, true, "asked once");

    // The live tail sends it too (fetch with Authorization, not EventSource).
    session.go(&format!("{}/console#/tail", server.base)).await;
    session.wait_for_text("#tail-state", "live").await;
    server
        .append_as(Some(TOKEN), "orders-1", "TailedWithToken", json!({}))
        .await;
    session.wait_for_text("#tail-rows", "TailedWithToken").await;
    let address = session.current_url().await;
    assert!(!address.contains(TOKEN), "{address}");
    session.close().await;
    drop(driver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_says_so_and_the_lists_page_through_many_streams_and_events() {
    if browser_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), "127.0.0.1:0").await;
    let driver = ChromeDriver::start().await;
    let session = Session::open(&driver).await;
    session.go(&format!("{}/console", server.base)).await;
    let empty = session.wait_for_text("#empty-store", "empty").await;
    assert!(
        empty.contains(&format!(
            "curl -X POST {}/streams/orders-1/events",
            server.base
        )),
        "{empty}"
    );

    // Paging: 56 streams list in pages of 50; a stream of 60 events pages back from the newest.
    let client = reqwest::Client::new();
    let batch = |events: Vec<Value>, path: &str| {
        client
            .post(format!("{}{path}", server.base))
            .json(&Value::Array(events))
            .send()
    };
    let streams = (0..55)
        .map(|i| json!({"stream": format!("s-{i:02}"), "type": "Listed", "data": {}}))
        .collect();
    assert_eq!(batch(streams, "/events").await.unwrap().status(), 201);
    let many = (0..60)
        .map(|i| json!({"type": "Counted", "data": {"n": i}}))
        .collect();
    let response = batch(many, "/streams/many-1/events").await.unwrap();
    assert_eq!(response.status(), 201);
    session
        .go(&format!("{}/console#/streams", server.base))
        .await;
    session.wait_for_text("#streams table", "s-48").await;
    assert_eq!(session.count("#streams tbody tr").await, 50);
    session.click("#streams .pager a").await;
    session.wait_for_text("#streams table", "s-54").await;
    assert_eq!(session.count("#streams tbody tr").await, 6, "s-49 to s-54");
    session
        .go(&format!("{}/console#/stream/many-1", server.base))
        .await;
    session.wait_for_text("#events table", "Counted").await;
    assert_eq!(session.count("#events tbody tr").await, 50);
    let newest = session.text_of("#events tbody tr:first-child td").await;
    assert_eq!(newest.as_deref(), Some("59"));
    session.click("#events .pager a").await;
    session
        .wait_for("the older page", || async {
            let first = session.text_of("#events tbody tr:first-child td").await?;
            (first == "9").then_some(())
        })
        .await;
    assert_eq!(
        session.count("#events tbody tr").await,
        10,
        "versions 9 to 0"
    );
    session.close().await;
    drop(driver);
}
