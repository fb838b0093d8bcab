//! A minimal W3C WebDriver client over plain HTTP (the same approach as the teams browser
//! test): a chromedriver in its own process group, one headless Chromium session with a
//! fresh profile, and the few commands the console test needs.

use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Longest a test waits for the page to reach a state.
const WAIT: Duration = Duration::from_secs(20);

/// True (and a loud note past the output capture) when Chromium or chromedriver is missing.
pub fn browser_missing() -> bool {
    if Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists() {
        return false;
    }
    let _ = std::io::stderr().write_all(
        b"\n!!! /usr/bin/chromium or /usr/bin/chromedriver is missing: the console browser test was SKIPPED !!!\n\
          !!! install them with: apt-get install -y chromium chromium-driver (.ci/run does) !!!\n\n",
    );
    true
}

/// A running chromedriver; its whole process group (Chromium included) is killed on drop.
pub struct ChromeDriver {
    process: tokio::process::Child,
    base: String,
    http: reqwest::Client,
}

impl ChromeDriver {
    pub async fn start() -> ChromeDriver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let process = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let driver = ChromeDriver {
            process,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ready = async {
                let response = driver
                    .http
                    .get(format!("{}/status", driver.base))
                    .send()
                    .await
                    .ok()?;
                let body: Value = response.json().await.ok()?;
                (body["value"]["ready"] == true).then_some(())
            };
            if ready.await.is_some() {
                return driver;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A WebDriver command: its `value` on success, the error `value` on failure.
    async fn try_command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("chromedriver answers");
        let ok = response.status().is_success();
        let body: Value = response.json().await.expect("chromedriver JSON");
        if ok {
            Ok(body["value"].clone())
        } else {
            Err(body["value"].clone())
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        if let Some(pid) = self.process.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// One browser session (headless Chromium, fresh profile).
pub struct Session<'a> {
    driver: &'a ChromeDriver,
    id: String,
    _profile: tempfile::TempDir,
}

impl<'a> Session<'a> {
    pub async fn open(driver: &'a ChromeDriver) -> Session<'a> {
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-crash-reporter",
            "--disable-breakpad",
            "--window-size=1100,760",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let value = driver
            .try_command(Method::POST, "/session", Some(capabilities))
            .await
            .unwrap_or_else(|error| panic!("no browser session: {error}"));
        Session {
            driver,
            id: value["sessionId"]
                .as_str()
                .expect("a session id")
                .to_owned(),
            _profile: profile,
        }
    }

    async fn try_command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        self.driver
            .try_command(method, &format!("/session/{}{path}", self.id), body)
            .await
    }

    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let shown = format!("{method} {path}");
        self.try_command(method, path, body)
            .await
            .unwrap_or_else(|error| panic!("{shown}: {error}"))
    }

    pub async fn go(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn current_url(&self) -> String {
        self.command(Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its return value.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.command(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The text content of the first element matching `css`, or None when there is none.
    pub async fn text_of(&self, css: &str) -> Option<String> {
        let value = self
            .script(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                json!([css]),
            )
            .await;
        value.as_str().map(str::to_owned)
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> u64 {
        self.script(
            "return document.querySelectorAll(arguments[0]).length;",
            json!([css]),
        )
        .await
        .as_u64()
        .unwrap()
    }

    async fn element(&self, css: &str) -> String {
        let value = self
            .command(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        value[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {value}"))
            .to_owned()
    }

    /// A real click (WebDriver moves the pointer and clicks) on the first match of `css`.
    pub async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.command(
            Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into the first match of `css` (real key events).
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.command(
            Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// The text of an open alert/confirm/prompt dialog, or None when there is none.
    pub async fn open_dialog(&self) -> Option<String> {
        match self.try_command(Method::GET, "/alert/text", None).await {
            Ok(text) => Some(text.to_string()),
            Err(error) => {
                assert_eq!(error["error"], "no such alert", "{error}");
                None
            }
        }
    }

    /// Waits until `check` yields a value; on timeout, panics showing the page.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                let page = self.command(Method::GET, "/source", None).await;
                panic!("timed out waiting for {what}; the page is:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the text of `css` contains `needle`; answers the whole text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        self.wait_for(&format!("{css} to contain {needle:?}"), || async {
            self.text_of(css).await.filter(|text| text.contains(needle))
        })
        .await
    }

    /// Writes a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let value = self.command(Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().expect("base64 PNG"))
            .expect("valid base64");
        std::fs::write(path, png).expect("write screenshot");
    }

    pub async fn close(self) {
        self.command(Method::DELETE, "", None).await;
    }
}
