//! The gRPC face against the HTTP face, through the official clients, on a running server
//! (`scripts/bench-grpc` starts one and runs this):
//!
//! 1. durable appends of one event each from 64 concurrent clients, over gRPC (`Append`) and
//!    over HTTP (`POST /streams/{s}/events`), in the same run;
//! 2. `BatchAppend` of batches of 100 events;
//! 3. a catch-up read of `$all` from the start.
//!
//! `BENCH_SECONDS` (default 10) per append phase; `LOGBOOK_GRPC_ADDR` and `LOGBOOK_URL` say
//! where the server is. Figures from a loaded machine mean nothing: measure on an idle one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use grpc::proto::shared::{Empty, StreamIdentifier, Uuid, uuid};
use grpc::proto::streams::read_req::options as read_options;
use grpc::proto::streams::streams_client::StreamsClient;
use grpc::proto::streams::{AppendReq, ReadReq, append_req, read_req, read_resp};
use kurrentdb::{AppendToStreamOptions, Client, EventData, ReadAllOptions, StreamState};

/// The allocator the `logbook` binary uses, for the clients too: an application that cares
/// about allocation picks one, and glibc's `malloc` was a seventh of the client's CPU
/// (`perf record`), on the cores the server shares. Every phase runs under the same one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENTS: usize = 64;
const BATCH_EVENTS: usize = 100;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn event(n: u64) -> EventData {
    EventData::json(
        "Benchmarked",
        &serde_json::json!({"n": n, "pad": "x".repeat(64)}),
    )
    .expect("serializable")
}

async fn for_duration(
    seconds: u64,
    work: impl Fn(usize, u64) -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>>
    + Send
    + Sync
    + 'static,
) -> f64 {
    let work = Arc::new(work);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let work = Arc::clone(&work);
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < deadline {
                    done.fetch_add(work(client, n).await, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a benchmark task panicked");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let grpc = env("LOGBOOK_GRPC_ADDR", "127.0.0.1:2113");
    let base = env("LOGBOOK_URL", "http://127.0.0.1:8080");
    let seconds: u64 = env("BENCH_SECONDS", "10").parse()?;
    let client = Client::new(format!("esdb://{grpc}?tls=false").parse()?)?;

    // One client (one HTTP/2 connection) shared by the 64 workers, as an application shares
    // one; `BENCH_GRPC_CONNECTIONS=64` gives each worker its own.
    let connections: usize = env("BENCH_GRPC_CONNECTIONS", "1").parse()?;
    let clients: Vec<Client> = (0..connections.max(1))
        .map(|_| {
            Client::new(
                format!("esdb://{grpc}?tls=false")
                    .parse()
                    .expect("settings"),
            )
        })
        .collect::<Result<_, _>>()?;
    let grpc_rate = for_duration(seconds, move |worker, n| {
        let client = clients[worker % clients.len()].clone();
        Box::pin(async move {
            client
                .append_to_stream(
                    format!("bench-grpc-{worker}"),
                    &AppendToStreamOptions::default(),
                    event(n),
                )
                .await
                .expect("gRPC append");
            1
        })
    })
    .await;
    // The same appends through a bare tonic client of the face's own generated code (one
    // connection), to tell the server's cost from the official client's.
    let raw_connections: usize = env("BENCH_RAW_CONNECTIONS", "1").parse()?;
    let mut raws = Vec::new();
    for _ in 0..raw_connections.max(1) {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
            .connect()
            .await?;
        raws.push(StreamsClient::new(channel));
    }
    let raw_rate = for_duration(seconds, move |worker, n| {
        let mut raw = raws[worker % raws.len()].clone();
        Box::pin(async move {
            let messages = vec![
                AppendReq {
                    content: Some(append_req::Content::Options(append_req::Options {
                        stream_identifier: Some(StreamIdentifier {
                            stream_name: format!("bench-raw-{worker}").into_bytes(),
                        }),
                        expected_stream_revision: Some(
                            append_req::options::ExpectedStreamRevision::Any(Empty {}),
                        ),
                    })),
                },
                AppendReq {
                    content: Some(append_req::Content::ProposedMessage(
                        append_req::ProposedMessage {
                            id: Some(Uuid {
                                value: Some(uuid::Value::String(
                                    ::uuid::Uuid::new_v4().to_string(),
                                )),
                            }),
                            metadata: [
                                ("type".to_owned(), "Benchmarked".to_owned()),
                                ("content-type".to_owned(), "application/json".to_owned()),
                            ]
                            .into(),
                            custom_metadata: Vec::new(),
                            data: serde_json::to_vec(
                                &serde_json::json!({"n": n, "pad": "x".repeat(64)}),
                            )
                            .expect("serializable"),
                        },
                    )),
                },
            ];
            let mut request = tonic::Request::new(tokio_stream::iter(messages));
            // As the official clients send it (`grpc-timeout`).
            request.set_timeout(Duration::from_secs(10));
            raw.append(request).await.expect("raw gRPC append");
            1
        })
    })
    .await;
    let http = reqwest::Client::new();
    let http_rate = for_duration(seconds, move |worker, n| {
        let http = http.clone();
        let url = format!("{base}/streams/bench-http-{worker}/events");
        Box::pin(async move {
            let response = http
                .post(url)
                .json(&serde_json::json!({"type": "Benchmarked", "data": {"n": n, "pad": "x".repeat(64)}}))
                .send()
                .await
                .expect("HTTP append");
            assert_eq!(response.status(), 201);
            1
        })
    })
    .await;
    println!(
        "appends, {CLIENTS} clients of one event: gRPC {grpc_rate:.0}/s ({connections} connection(s), kurrentdb client), gRPC {raw_rate:.0}/s ({raw_connections} connection(s), bare tonic client), HTTP {http_rate:.0}/s"
    );

    let batch = client.batch_append(&Default::default()).await?;
    let batch = Arc::new(batch);
    let batch_rate = for_duration(seconds, move |worker, n| {
        let batch = Arc::clone(&batch);
        Box::pin(async move {
            let events = (0..BATCH_EVENTS as u64)
                .map(|i| event(n * 1000 + i))
                .collect();
            batch
                .append_to_stream(format!("bench-batch-{worker}"), StreamState::Any, events)
                .await
                .expect("BatchAppend");
            BATCH_EVENTS as u64
        })
    })
    .await;
    println!("BatchAppend of {BATCH_EVENTS}: {batch_rate:.0} events/s");

    let started = Instant::now();
    let mut read = client.read_all(&ReadAllOptions::default()).await?;
    let mut events = 0u64;
    while read.next().await?.is_some() {
        events += 1;
    }
    let read_rate = events as f64 / started.elapsed().as_secs_f64();
    println!(
        "catch-up read of $all: {events} events at {read_rate:.0} events/s (kurrentdb client)"
    );

    // The same read through the bare tonic client: what the face serves when the client
    // only counts the messages.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let mut raw = StreamsClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let started = Instant::now();
    let request = ReadReq {
        options: Some(read_req::Options {
            stream_option: Some(read_options::StreamOption::All(read_options::AllOptions {
                all_option: Some(read_options::all_options::AllOption::Start(Empty {})),
            })),
            count_option: Some(read_options::CountOption::Count(u64::MAX)),
            filter_option: Some(read_options::FilterOption::NoFilter(Empty {})),
            uuid_option: Some(read_options::UuidOption {
                content: Some(read_options::uuid_option::Content::String(Empty {})),
            }),
            ..Default::default()
        }),
    };
    let mut answers = raw.read(request).await?.into_inner();
    let mut raw_events = 0u64;
    while let Some(answer) = answers.message().await? {
        if matches!(answer.content, Some(read_resp::Content::Event(_))) {
            raw_events += 1;
        }
    }
    let raw_read_rate = raw_events as f64 / started.elapsed().as_secs_f64();
    println!(
        "catch-up read of $all: {raw_events} events at {raw_read_rate:.0} events/s (bare tonic client)"
    );
    Ok(())
}
