//! A real event store served over HTTP on port 0, for the integration tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use eventlog::Options;
use eventstore::{EventStoreService, EventsSettings, Secret};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub service: Option<EventStoreService>,
    pub dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Options for fast tests: no fsync (durability is the engine's to test; here it costs time).
pub fn test_options() -> Options {
    Options {
        durability: eventlog::Durability::Never,
        ..Options::default()
    }
}

pub async fn spawn(dir: &Path) -> TestServer {
    spawn_with(dir, test_options(), None).await
}

pub async fn spawn_with(dir: &Path, options: Options, token: Option<&str>) -> TestServer {
    let mut settings = EventsSettings::new(dir, options);
    settings.token = token.map(Secret::new);
    let service = EventStoreService::start(settings)
        .await
        .expect("the store opens");
    serve(service, dir).await
}

/// Serves `service` (open or not) on port 0.
pub async fn serve(service: EventStoreService, dir: &Path) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = service.router();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    TestServer {
        addr,
        client: reqwest::Client::new(),
        service: Some(service),
        dir: dir.to_path_buf(),
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post_json(&self, path: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// A `POST` without a body (`/admin/scavenge`).
    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.client.post(self.url(path)).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).send().await.unwrap()
    }

    /// Closes the log and stops serving; every handle to the store is gone afterwards, so the
    /// directory can be opened again.
    pub async fn stop(mut self) {
        let service = self.service.take().unwrap();
        service.close().await;
        drop(self.client);
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
        drop(service);
    }

    /// Stops and starts again on the same directory.
    pub async fn restart(self) -> TestServer {
        let dir = self.dir.clone();
        self.stop().await;
        spawn(&dir).await
    }
}

/// The parts of a response a test checks: status, content type, JSON body.
pub async fn json(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, content_type, value)
}

/// An event as read back, with `data` as the exact raw text served.
#[derive(serde::Deserialize)]
pub struct RawEvent {
    pub id: String,
    pub stream: String,
    pub version: u64,
    pub position: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: Box<RawValue>,
    pub metadata: Option<Box<RawValue>>,
    pub recorded_at: String,
}

pub async fn raw_event(response: reqwest::Response) -> RawEvent {
    assert_eq!(response.status().as_u16(), 200);
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}
