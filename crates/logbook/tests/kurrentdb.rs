//! The gRPC face through the official KurrentDB Rust client (`kurrentdb`), against a real
//! `logbook serve events` process, on both backends (PostgreSQL at `TEST_DATABASE_URL`, a
//! fresh database per test), and across faces (gRPC and HTTP/SSE on one store).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use grpc::proto::shared::{Empty, StreamIdentifier};
use grpc::proto::streams::read_req::options::{
    self as read_options, AllOptions, StreamOptions, SubscriptionOptions,
};
use grpc::proto::streams::streams_client::StreamsClient;
use grpc::proto::streams::{ReadReq, read_req, read_resp};
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, EventData, Position, ReadAllOptions,
    ReadStreamOptions, StreamPosition, StreamState, SubscribeToAllOptions,
    SubscribeToStreamOptions, SubscriptionFilter,
};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_logbook");

#[derive(Clone, Copy)]
enum Backend {
    Embedded,
    Postgres,
}

/// A running `logbook serve events` with the gRPC face on port 0.
struct Server {
    child: Child,
    grpc: String,
    base: String,
    _data_dir: tempfile::TempDir,
    _database: Option<Database>,
}

impl Server {
    async fn start(backend: Backend) -> Server {
        Server::start_with(backend, &[]).await
    }

    /// With extra environment variables for the server.
    async fn start_with(backend: Backend, env: &[(&str, &str)]) -> Server {
        let data_dir = tempfile::tempdir().unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        let database = matches!(backend, Backend::Postgres).then(Database::create);
        let mut command = Command::new(BIN);
        command
            .args(["serve", "events", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .env("LOGBOOK_GRPC_ADDR", "127.0.0.1:0")
            .env_remove("EVENTS_TOKEN")
            .env_remove("EVENTS_DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap());
        if let Some(database) = &database {
            command.env("EVENTS_DATABASE_URL", &database.url);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().unwrap();
        let (grpc, base) = support::listening_grpc_and_base(&mut child, log.path());
        let server = Server {
            child,
            grpc,
            base,
            _data_dir: data_dir,
            _database: database,
        };
        server.ready().await;
        server
    }

    /// Polls /health until 200, with a deadline (no fixed sleeps).
    async fn ready(&self) {
        support::wait_healthy(&reqwest::Client::new(), &self.base).await;
    }

    fn client(&self) -> Client {
        let settings: ClientSettings = format!("esdb://{}?tls=false", self.grpc).parse().unwrap();
        Client::new(settings).unwrap()
    }

    /// A raw tonic client of the Streams service (our own generated code), for what the
    /// official client hides: status codes, trailers, the end of a subscription.
    async fn raw(&self) -> StreamsClient<tonic::transport::Channel> {
        StreamsClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh database on the shared server, dropped at the end.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    fn create() -> Database {
        let admin = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let name = format!("logbook_grpc_{}", uuid::Uuid::new_v4().simple());
        let status = Command::new("psql")
            .args([&admin, "-qc", &format!("CREATE DATABASE \"{name}\"")])
            .status()
            .expect("psql runs");
        assert!(status.success(), "CREATE DATABASE");
        let (base, _) = admin.rsplit_once('/').expect("a database in the URL");
        let url = format!("{base}/{name}");
        Database { admin, name, url }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &self.admin,
                "-qc",
                &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn json_event(event_type: &str, data: Value) -> EventData {
    EventData::json(event_type, &data).unwrap()
}

async fn stream_events(
    client: &Client,
    stream: &str,
    options: &ReadStreamOptions,
) -> Vec<kurrentdb::RecordedEvent> {
    let mut read = client.read_stream(stream, options).await.unwrap();
    let mut events = Vec::new();
    while let Some(event) = read.next().await.unwrap() {
        events.push(event.event.expect("a read event"));
    }
    events
}

async fn all_events(client: &Client, options: &ReadAllOptions) -> Vec<kurrentdb::RecordedEvent> {
    let mut read = client.read_all(options).await.unwrap();
    let mut events = Vec::new();
    while let Some(event) = read.next().await.unwrap() {
        events.push(event.event.expect("a read event"));
    }
    events
}

/// One test per backend.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Embedded).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

both_backends!(
    appends_check_each_expected_state_and_report_the_current_revision,
    streams_and_all_read_in_both_directions_with_positions_shifted_by_one,
    subscriptions_catch_up_then_follow_live,
    filters_select_by_prefix_and_by_expression,
    a_batch_append_is_atomic_and_reports_a_wrong_expected_version,
    batches_sent_together_are_each_answered_and_keep_their_order_per_stream,
    events_cross_faces_both_ways,
    delete_and_tombstone_reach_the_lifecycle,
    metadata_through_the_metastream_is_the_store_metadata,
);

async fn appends_check_each_expected_state_and_report_the_current_revision(backend: Backend) {
    let server = Server::start(backend).await;
    let client = server.client();
    let no_stream = AppendToStreamOptions::default().stream_state(StreamState::NoStream);
    let first = client
        .append_to_stream(
            "orders-1",
            &no_stream,
            vec![json_event("Placed", json!({"n": 1}))],
        )
        .await
        .unwrap();
    assert_eq!(first.next_expected_version, 0);
    assert_eq!(first.position.commit, 1, "commit position = position + 1");
    let error = client
        .append_to_stream(
            "orders-1",
            &no_stream,
            vec![json_event("Placed", json!({}))],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, kurrentdb::Error::WrongExpectedVersion { .. }),
        "{error:?}"
    );
    let exact = AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(0));
    let second = client
        .append_to_stream(
            "orders-1",
            &exact,
            vec![json_event("Paid", json!({"n": 2}))],
        )
        .await
        .unwrap();
    assert_eq!(second.next_expected_version, 1);
    let stale = client
        .append_to_stream("orders-1", &exact, vec![json_event("Paid", json!({}))])
        .await
        .unwrap_err();
    let kurrentdb::Error::WrongExpectedVersion { current, .. } = stale else {
        panic!("{stale:?}")
    };
    assert_eq!(current, kurrentdb::CurrentRevision::Current(1));
    let exists = AppendToStreamOptions::default().stream_state(StreamState::StreamExists);
    client
        .append_to_stream("orders-1", &exists, vec![json_event("Shipped", json!({}))])
        .await
        .unwrap();
    assert!(
        client
            .append_to_stream("nobody", &exists, vec![json_event("X", json!({}))])
            .await
            .is_err()
    );
    let any = AppendToStreamOptions::default();
    let event = json_event("Noted", json!({"k": "v"}));
    let id = uuid::Uuid::new_v4();
    let once = client
        .append_to_stream("notes", &any, vec![event.clone().id(id)])
        .await
        .unwrap();
    let again = client
        .append_to_stream("notes", &any, vec![event.id(id)])
        .await
        .unwrap();
    assert_eq!(
        once.position, again.position,
        "an idempotent repeat answers the original position"
    );
    let events = stream_events(&client, "notes", &ReadStreamOptions::default()).await;
    assert_eq!(events.len(), 1);
}

async fn streams_and_all_read_in_both_directions_with_positions_shifted_by_one(backend: Backend) {
    let server = Server::start(backend).await;
    let client = server.client();
    for (stream, n) in [("a", 0), ("b", 1), ("a", 2), ("a", 3)] {
        client
            .append_to_stream(
                stream,
                &AppendToStreamOptions::default(),
                vec![
                    json_event("T", json!({ "n": n }))
                        .metadata_as_json(&json!({"m": n}))
                        .unwrap(),
                ],
            )
            .await
            .unwrap();
    }
    let forward = stream_events(&client, "a", &ReadStreamOptions::default()).await;
    assert_eq!(
        forward.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(
        forward[1].position.commit, 3,
        "stream reads carry commit positions"
    );
    assert_eq!(forward[0].event_type, "T");
    assert!(forward[0].is_json);
    assert_eq!(
        serde_json::from_slice::<Value>(&forward[0].data).unwrap(),
        json!({"n": 0})
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&forward[0].custom_metadata).unwrap(),
        json!({"m": 0})
    );
    let age = chrono::Utc::now() - forward[0].created;
    assert!(
        age.num_seconds().abs() < 600,
        "created is the recorded time: {}",
        forward[0].created
    );
    let backward = stream_events(
        &client,
        "a",
        &ReadStreamOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(2),
    )
    .await;
    assert_eq!(
        backward.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![2, 1]
    );
    let from_revision = stream_events(
        &client,
        "a",
        &ReadStreamOptions::default().position(StreamPosition::Position(1)),
    )
    .await;
    assert_eq!(from_revision.len(), 2);
    let mut missing = client
        .read_stream("nobody", &ReadStreamOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        missing.next().await,
        Err(kurrentdb::Error::ResourceNotFound)
    ));
    let all = all_events(&client, &ReadAllOptions::default()).await;
    assert_eq!(
        all.iter().map(|e| e.position.commit).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let all_backward = all_events(
        &client,
        &ReadAllOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(3),
    )
    .await;
    assert_eq!(
        all_backward
            .iter()
            .map(|e| e.position.commit)
            .collect::<Vec<_>>(),
        vec![4, 3, 2]
    );
    let from_position = all_events(
        &client,
        &ReadAllOptions::default().position(StreamPosition::Position(Position {
            commit: 3,
            prepare: 3,
        })),
    )
    .await;
    assert_eq!(
        from_position
            .iter()
            .map(|e| e.position.commit)
            .collect::<Vec<_>>(),
        vec![3, 4],
        "a forward read includes the event at its position"
    );
}

async fn subscriptions_catch_up_then_follow_live(backend: Backend) {
    let server = Server::start(backend).await;
    let client = server.client();
    let any = AppendToStreamOptions::default();
    client
        .append_to_stream("s-1", &any, vec![json_event("Old", json!(1))])
        .await
        .unwrap();
    client
        .append_to_stream("other", &any, vec![json_event("Old", json!(2))])
        .await
        .unwrap();
    let mut all = client
        .subscribe_to_all(&SubscribeToAllOptions::default().position(StreamPosition::Start))
        .await;
    let mut stream = client
        .subscribe_to_stream(
            "s-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    let caught_up_all = [all.next().await.unwrap(), all.next().await.unwrap()];
    assert_eq!(caught_up_all[0].get_original_event().position.commit, 1);
    assert_eq!(caught_up_all[1].get_original_stream_id(), "other");
    let first = stream.next().await.unwrap();
    assert_eq!(first.get_original_event().revision, 0);
    client
        .append_to_stream("s-1", &any, vec![json_event("New", json!(3))])
        .await
        .unwrap();
    let live_all = all.next().await.unwrap();
    assert_eq!(live_all.get_original_event().event_type, "New");
    assert_eq!(live_all.get_original_event().position.commit, 3);
    let live_stream = stream.next().await.unwrap();
    assert_eq!(live_stream.get_original_event().revision, 1);
    // Subscribing after a position skips up to and including it.
    let mut after = client
        .subscribe_to_all(
            &SubscribeToAllOptions::default().position(StreamPosition::Position(Position {
                commit: 2,
                prepare: 2,
            })),
        )
        .await;
    assert_eq!(
        after
            .next()
            .await
            .unwrap()
            .get_original_event()
            .position
            .commit,
        3
    );
}

async fn filters_select_by_prefix_and_by_expression(backend: Backend) {
    let server = Server::start(backend).await;
    let client = server.client();
    let any = AppendToStreamOptions::default();
    for (stream, event_type) in [
        ("order-1", "Placed"),
        ("cart-1", "Added"),
        ("order-2", "$system"),
        ("user-1", "Registered"),
    ] {
        client
            .append_to_stream(stream, &any, vec![json_event(event_type, json!({}))])
            .await
            .unwrap();
    }
    let by_prefix = all_events(
        &client,
        &ReadAllOptions::default()
            .filter(SubscriptionFilter::on_stream_name().add_prefix("order-")),
    )
    .await;
    assert_eq!(
        by_prefix.iter().map(|e| e.stream_id()).collect::<Vec<_>>(),
        vec!["order-1", "order-2"]
    );
    let by_regex = all_events(
        &client,
        &ReadAllOptions::default()
            .filter(SubscriptionFilter::on_event_type().regex("^(Placed|Added)$")),
    )
    .await;
    assert_eq!(by_regex.len(), 2);
    let without_system = all_events(
        &client,
        &ReadAllOptions::default()
            .filter(SubscriptionFilter::on_event_type().exclude_system_events()),
    )
    .await;
    assert_eq!(
        without_system
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        vec!["Placed", "Added", "Registered"]
    );
    let lookahead = all_events(
        &client,
        &ReadAllOptions::default()
            .filter(SubscriptionFilter::on_stream_name().regex("^(?!order-).*")),
    )
    .await;
    assert_eq!(lookahead.len(), 2, "a negative lookahead works");
    let mut subscription = client
        .subscribe_to_all(
            &SubscribeToAllOptions::default()
                .position(StreamPosition::Start)
                .filter(SubscriptionFilter::on_stream_name().add_prefix("user-")),
        )
        .await;
    assert_eq!(
        subscription.next().await.unwrap().get_original_stream_id(),
        "user-1"
    );
    client
        .append_to_stream("user-2", &any, vec![json_event("Registered", json!({}))])
        .await
        .unwrap();
    assert_eq!(
        subscription.next().await.unwrap().get_original_stream_id(),
        "user-2"
    );
}

async fn a_batch_append_is_atomic_and_reports_a_wrong_expected_version(backend: Backend) {
    let server = Server::start(backend).await;
    let client = server.client();
    let batch = client
        .batch_append(&Default::default())
        .await
        .expect("the server lists batchappend");
    let events: Vec<EventData> = (0..100)
        .map(|n| json_event("B", json!({ "n": n })))
        .collect();
    let written = batch
        .append_to_stream("batched", StreamState::NoStream, events)
        .await
        .unwrap();
    assert_eq!(written.current_revision(), Some(99));
    let error = batch
        .append_to_stream(
            "batched",
            StreamState::NoStream,
            vec![json_event("B", json!({}))],
        )
        .await
        .unwrap_err();
    // The Rust client does not unpack BatchAppend's detail: it shows the status as sent.
    let kurrentdb::Error::Grpc { code, message } = error else {
        panic!("{error:?}")
    };
    assert_eq!(format!("{code:?}"), "FailedPrecondition");
    assert!(message.contains("WrongExpectedVersion") && message.contains("Actual version: 99"));
    let stored = stream_events(&client, "batched", &ReadStreamOptions::default()).await;
    assert_eq!(stored.len(), 100);
}

/// The official clients share one BatchAppend call between all appends: batches sent before
/// earlier ones are answered are appended concurrently, each answered by its correlation id,
/// and the batches of one stream keep the order they were sent in (each one's expected
/// revision is the previous one's last).
async fn batches_sent_together_are_each_answered_and_keep_their_order_per_stream(backend: Backend) {
    const STREAMS: u64 = 4;
    const BATCHES: u64 = 5;
    const EVENTS: u64 = 10;
    let server = Server::start(backend).await;
    let client = server.client();
    let batch = client.batch_append(&Default::default()).await.unwrap();
    let sends = (0..BATCHES).flat_map(|k| (0..STREAMS).map(move |s| (s, k)));
    let answers = futures_util::future::join_all(sends.map(|(s, k)| {
        let batch = &batch;
        async move {
            let events = (0..EVENTS)
                .map(|i| json_event("B", json!({ "k": k, "i": i })))
                .collect();
            let expected = match k {
                0 => StreamState::NoStream,
                k => StreamState::StreamRevision(k * EVENTS - 1),
            };
            let written = batch
                .append_to_stream(format!("together-{s}"), expected, events)
                .await
                .unwrap_or_else(|e| panic!("batch {k} of stream {s}: {e:?}"));
            (k, written.current_revision())
        }
    }))
    .await;
    for (k, revision) in answers {
        assert_eq!(revision, Some(k * EVENTS + EVENTS - 1), "batch {k}");
    }
    for s in 0..STREAMS {
        let stored = stream_events(&client, &format!("together-{s}"), &Default::default()).await;
        let order: Vec<(u64, u64)> = stored
            .iter()
            .map(|event| {
                let data: Value = serde_json::from_slice(&event.data).unwrap();
                (data["k"].as_u64().unwrap(), data["i"].as_u64().unwrap())
            })
            .collect();
        let sent: Vec<(u64, u64)> = (0..BATCHES)
            .flat_map(|k| (0..EVENTS).map(move |i| (k, i)))
            .collect();
        assert_eq!(order, sent, "stream {s}");
    }
}

async fn events_cross_faces_both_ways(backend: Backend) {
    let server = Server::start(backend).await;
    let client = server.client();
    let http = reqwest::Client::new();
    // gRPC to HTTP: JSON reads as JSON, binary as base64 with its content type.
    client
        .append_to_stream(
            "mixed",
            &AppendToStreamOptions::default(),
            vec![
                json_event("Doc", json!({"a": 1})),
                EventData::binary("Blob", bytes::Bytes::from_static(&[0, 255, 7])),
            ],
        )
        .await
        .unwrap();
    let page: Value = http
        .get(format!("{}/streams/mixed/events", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"][0]["data"], json!({"a": 1}));
    assert_eq!(
        page["events"][1]["content_type"],
        "application/octet-stream"
    );
    assert_eq!(page["events"][1]["data_base64"], "AP8H");
    let binary = stream_events(&client, "mixed", &ReadStreamOptions::default()).await;
    assert!(!binary[1].is_json);
    assert_eq!(&binary[1].data[..], &[0, 255, 7]);
    // The SSE face sees gRPC appends.
    let sse = http
        .get(format!("{}/subscribe", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut body = sse;
    let mut text = String::new();
    while !text.contains("data_base64") {
        let chunk = body
            .chunk()
            .await
            .unwrap()
            .expect("the SSE stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("\"Doc\""));
    // HTTP to gRPC: read and subscribe.
    let mut subscription = client
        .subscribe_to_stream(
            "from-http",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    let created = http
        .post(format!("{}/streams/from-http/events", server.base))
        .json(&json!({"type": "Posted", "data": {"via": "http"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let event = subscription.next().await.unwrap();
    assert_eq!(event.get_original_event().event_type, "Posted");
    assert!(event.get_original_event().is_json);
    let read = stream_events(&client, "from-http", &ReadStreamOptions::default()).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&read[0].data).unwrap(),
        json!({"via": "http"})
    );
}

/// Delete and tombstone reach the store's lifecycle operations: a soft-deleted stream reads as
/// not found and continues its versions when appended to again; a tombstoned one answers
/// `stream-deleted` to reads and appends (over HTTP too: 410).
async fn delete_and_tombstone_reach_the_lifecycle(backend: Backend) {
    let server = Server::start(backend).await;
    let client = server.client();
    let any = AppendToStreamOptions::default();
    client
        .append_to_stream(
            "doomed",
            &any,
            vec![json_event("A", json!({})), json_event("B", json!({}))],
        )
        .await
        .unwrap();
    client
        .delete_stream("doomed", &Default::default())
        .await
        .unwrap();
    let mut read = client
        .read_stream("doomed", &ReadStreamOptions::default())
        .await
        .unwrap();
    let gone = read.next().await;
    assert!(
        matches!(gone, Err(kurrentdb::Error::ResourceNotFound)),
        "{gone:?}"
    );
    let again = client
        .append_to_stream("doomed", &any, vec![json_event("C", json!({}))])
        .await
        .unwrap();
    assert_eq!(
        again.next_expected_version, 2,
        "versions continue after a soft delete"
    );
    let revived = stream_events(&client, "doomed", &ReadStreamOptions::default()).await;
    assert_eq!(
        revived
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["C"]
    );

    client
        .append_to_stream("gone", &any, vec![json_event("A", json!({}))])
        .await
        .unwrap();
    client
        .tombstone_stream("gone", &Default::default())
        .await
        .unwrap();
    let mut read = client
        .read_stream("gone", &ReadStreamOptions::default())
        .await
        .unwrap();
    let deleted = read.next().await;
    assert!(
        matches!(deleted, Err(kurrentdb::Error::ResourceDeleted)),
        "{deleted:?}"
    );
    let append = client
        .append_to_stream("gone", &any, vec![json_event("B", json!({}))])
        .await
        .unwrap_err();
    assert!(
        matches!(append, kurrentdb::Error::ResourceDeleted),
        "{append:?}"
    );
    let http = reqwest::get(format!("{}/streams/gone", server.base))
        .await
        .unwrap();
    assert_eq!(http.status(), 410);
}

/// Stream metadata through the metastream `$$<stream>`, as KurrentDB clients write and read
/// it: the client's `set_stream_metadata` becomes the store's metadata (in force at once:
/// `$maxCount` hides the older events over both faces), `get_stream_metadata` reads it back
/// with the metastream's version, a wrong expected version of the metastream is refused, and
/// what is not metadata is refused without storing anything.
async fn metadata_through_the_metastream_is_the_store_metadata(backend: Backend) {
    let server = Server::start(backend).await;
    let client = server.client();
    let any = AppendToStreamOptions::default();
    let read = ReadStreamOptions::default();
    client
        .append_to_stream(
            "capped",
            &any,
            vec![
                json_event("A", json!({})),
                json_event("B", json!({})),
                json_event("C", json!({})),
            ],
        )
        .await
        .unwrap();
    let none = client.get_stream_metadata("capped", &read).await.unwrap();
    assert!(
        matches!(none, kurrentdb::StreamMetadataResult::NotFound),
        "{none:?}"
    );

    let metadata = kurrentdb::StreamMetadata::builder()
        .max_count(2)
        .insert_custom_property("owner", "ops")
        .build();
    let written = client
        .set_stream_metadata(
            "capped",
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            &metadata,
        )
        .await
        .unwrap();
    assert_eq!(written.next_expected_version, 0, "the metastream's version");
    let kurrentdb::StreamMetadataResult::Success(read_back) =
        client.get_stream_metadata("capped", &read).await.unwrap()
    else {
        panic!("metadata was written");
    };
    assert_eq!(read_back.version(), 0);
    assert_eq!(read_back.metadata(), &metadata);
    let events = stream_events(&client, "capped", &read).await;
    assert_eq!(
        events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["B", "C"],
        "$maxCount is in force at once"
    );
    let http: Value = reqwest::get(format!("{}/streams/capped/metadata", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(http["max_count"], 2, "{http}");
    assert_eq!(http["custom"], json!({"owner": "ops"}), "{http}");

    // The metastream's version is what the expectation is checked against.
    let stale = client
        .set_stream_metadata(
            "capped",
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            &kurrentdb::StreamMetadata::builder().max_count(1).build(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(stale, kurrentdb::Error::WrongExpectedVersion { .. }),
        "{stale:?}"
    );
    let newer = client
        .set_stream_metadata(
            "capped",
            &AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(0)),
            &kurrentdb::StreamMetadata::builder().max_count(1).build(),
        )
        .await
        .unwrap();
    assert_eq!(newer.next_expected_version, 1);
    assert_eq!(stream_events(&client, "capped", &read).await.len(), 1);

    // Not metadata: another event type, JSON that is not metadata. Nothing is stored.
    for (event_type, data) in [
        ("Other", json!({})),
        ("$metadata", json!({"$maxCount": -1})),
    ] {
        let refused = client
            .append_to_stream("$$capped", &any, vec![json_event(event_type, data)])
            .await
            .unwrap_err();
        assert!(
            matches!(refused, kurrentdb::Error::Grpc { ref code, .. } if code.description().contains("invalid")),
            "{refused:?}"
        );
    }
    let kurrentdb::StreamMetadataResult::Success(last) =
        client.get_stream_metadata("capped", &read).await.unwrap()
    else {
        panic!("metadata was written");
    };
    assert_eq!(last.version(), 1, "the refused writes stored nothing");
    assert_eq!(last.metadata().max_count, Some(1));
}

/// A read of a stream from its start (`count` events), or a catch-up subscription to `$all`.
fn raw_read(stream: Option<&str>, count: Option<u64>) -> ReadReq {
    ReadReq {
        options: Some(read_req::Options {
            stream_option: Some(match stream {
                Some(name) => read_options::StreamOption::Stream(StreamOptions {
                    stream_identifier: Some(StreamIdentifier {
                        stream_name: name.as_bytes().to_vec(),
                    }),
                    revision_option: Some(read_options::stream_options::RevisionOption::Start(
                        Empty {},
                    )),
                }),
                None => read_options::StreamOption::All(AllOptions {
                    all_option: Some(read_options::all_options::AllOption::Start(Empty {})),
                }),
            }),
            count_option: Some(match count {
                Some(count) => read_options::CountOption::Count(count),
                None => read_options::CountOption::Subscription(SubscriptionOptions {}),
            }),
            filter_option: Some(read_options::FilterOption::NoFilter(Empty {})),
            uuid_option: Some(read_options::UuidOption {
                content: Some(read_options::uuid_option::Content::String(Empty {})),
            }),
            ..Default::default()
        }),
    }
}

fn with_authorization<T>(message: T, value: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", value.parse().unwrap());
    request
}

/// With `EVENTS_TOKEN` set, a call without credentials or with a wrong token is
/// `UNAUTHENTICATED` (before the store is touched); the token as Bearer, or as the password
/// of Basic credentials (what KurrentDB clients send), is let through.
#[tokio::test]
async fn calls_need_the_token_as_bearer_or_basic_password() {
    let server = Server::start_with(Backend::Embedded, &[("EVENTS_TOKEN", "s3cret-token")]).await;
    let mut raw = server.raw().await;
    let read = || raw_read(Some("orders"), Some(10));
    let bare = raw.read(read()).await.unwrap_err();
    assert_eq!(bare.code(), tonic::Code::Unauthenticated, "{bare:?}");
    assert!(bare.message().contains("Bearer"), "{bare:?}");
    let wrong = raw
        .read(with_authorization(read(), "Bearer not-the-token"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated, "{wrong:?}");
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("admin:s3cret-token");
    for authorization in ["Bearer s3cret-token".to_owned(), format!("Basic {basic}")] {
        let mut answers = raw
            .read(with_authorization(read(), &authorization))
            .await
            .unwrap()
            .into_inner();
        let first = answers.message().await.unwrap().expect("one answer");
        assert!(
            matches!(first.content, Some(read_resp::Content::StreamNotFound(_))),
            "{first:?}"
        );
    }
}

/// A live subscription ends with `UNAVAILABLE` when the server shuts down (SIGTERM), and the
/// server exits cleanly instead of waiting for the subscriber.
#[tokio::test]
async fn a_live_subscription_ends_unavailable_on_shutdown() {
    let mut server = Server::start(Backend::Embedded).await;
    let mut raw = server.raw().await;
    let mut answers = raw.read(raw_read(None, None)).await.unwrap().into_inner();
    let confirmation = answers.message().await.unwrap().expect("a confirmation");
    assert!(
        matches!(
            confirmation.content,
            Some(read_resp::Content::Confirmation(_))
        ),
        "{confirmation:?}"
    );
    // Caught up on an empty store: the subscription is live.
    let caught_up = answers.message().await.unwrap().expect("caught up");
    assert!(
        matches!(caught_up.content, Some(read_resp::Content::CaughtUp(_))),
        "{caught_up:?}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let end = loop {
        match answers.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the subscription ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
}

/// An event over `EVENTS_MAX_EVENT_SIZE_BYTES` is refused with the limit named and KurrentDB's
/// `maximum-append-size-exceeded` exception, and nothing is stored; an invalid stream name
/// and a read with no options are `INVALID_ARGUMENT`, never a bare `INTERNAL`.
#[tokio::test]
async fn oversized_events_and_malformed_requests_are_invalid_arguments() {
    let server = Server::start_with(
        Backend::Embedded,
        &[("EVENTS_MAX_EVENT_SIZE_BYTES", "1024")],
    )
    .await;
    let client = server.client();
    let big = json_event("Big", json!({"pad": "x".repeat(2048)}));
    let refused = client
        .append_to_stream("sized", &AppendToStreamOptions::default(), vec![big])
        .await
        .unwrap_err();
    let text = format!("{refused:?}");
    assert!(text.contains("max_event_size_bytes"), "{text}");
    let mut raw = server.raw().await;
    let read = raw
        .read(raw_read(Some("sized"), Some(10)))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .expect("an answer");
    assert!(
        matches!(read.content, Some(read_resp::Content::StreamNotFound(_))),
        "nothing stored: {read:?}"
    );
    let no_options = raw.read(ReadReq { options: None }).await.unwrap_err();
    assert_eq!(
        no_options.code(),
        tonic::Code::InvalidArgument,
        "{no_options:?}"
    );
    let empty_name = raw.read(raw_read(Some(""), Some(1))).await;
    let status = match empty_name {
        Err(status) => status,
        Ok(answers) => answers
            .into_inner()
            .message()
            .await
            .expect_err("an empty stream name is refused"),
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
}

/// The connection cap (`LOGBOOK_MAX_CONNECTIONS`) holds for the gRPC listener: with one
/// connection open, a second one is not served (its call waits in the backlog past its
/// deadline); once the first closes, the second is served.
#[tokio::test]
async fn the_connection_cap_holds_on_the_grpc_listener() {
    let server = Server::start_with(Backend::Embedded, &[("LOGBOOK_MAX_CONNECTIONS", "1")]).await;
    let mut first = server.raw().await;
    first
        .read(raw_read(Some("capped"), Some(1)))
        .await
        .expect("the first connection is served");
    let second = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect_lazy();
    let mut second = StreamsClient::new(second);
    let mut waiting = tonic::Request::new(raw_read(Some("capped"), Some(1)));
    waiting.set_timeout(Duration::from_millis(500));
    let held = second.read(waiting).await;
    assert!(
        held.is_err(),
        "a second connection was served beyond the cap"
    );
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut request = tonic::Request::new(raw_read(Some("capped"), Some(1)));
        request.set_timeout(Duration::from_secs(5));
        if second.read(request).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second connection was not served after the first closed"
        );
    }
}
