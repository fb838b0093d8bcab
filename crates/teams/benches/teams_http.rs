//! Teams service benchmark over real HTTP on loopback, SQLite in a temporary directory,
//! development-mode mail (files). Run with `cargo bench -p teams`.
//!
//! 1. Latency of a batch of 100 invitations, audit trail included (target: under 50 ms; mail
//!    is asynchronous).
//! 2. 1,000 teams created, then listed page by page, by 16 concurrent clients
//!    (target: at least 2,000 requests/s).
//! 3. 1,000 invitations queued against an SMTP sink on loopback, default settings: time until
//!    the sink holds all of them (target: within 10 s); then again with the sink's first
//!    connection silent (accepted, never greeted): the other 999 must not be slowed by more
//!    than `MAIL_SEND_TIMEOUT_SECONDS`, and the silent one is retried after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use teams::{Secret, TeamsArgs, TeamsService};

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef0123456789";
const BATCH_SIZE: usize = 100;
const CLIENTS: usize = 16;
const LIST_PAGE: usize = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and then a small smoke run checks that the benchmark still works.
    let full = std::env::args().any(|arg| arg == "--bench");
    let (batches, teams_count) = if full { (20, 1_000) } else { (2, 40) };
    run(batches, teams_count).await;
    let mails = if full { 1_000 } else { 50 };
    mail_delivery(mails, false, full).await;
    mail_delivery(mails, true, full).await;
}

/// A minimal SMTP sink on loopback counting the messages it accepts; its first connection
/// stays silent when `silent_first`.
async fn smtp_sink(silent_first: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&received);
    tokio::spawn(async move {
        let mut first = silent_first;
        while let Ok((stream, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            let silent = std::mem::take(&mut first);
            tokio::spawn(async move {
                let _: std::io::Result<()> = async {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    if silent {
                        let mut sink = Vec::new();
                        let _ = reader.read_to_end(&mut sink).await;
                        return Ok(());
                    }
                    write.write_all(b"220 sink\r\n").await?;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).await? == 0 {
                            return Ok(());
                        }
                        let command = line.to_ascii_uppercase();
                        if command.starts_with("EHLO") {
                            write.write_all(b"250-sink\r\n250 8BITMIME\r\n").await?;
                        } else if command.starts_with("DATA") {
                            write.write_all(b"354 go\r\n").await?;
                            loop {
                                line.clear();
                                if reader.read_line(&mut line).await? == 0 {
                                    return Ok(());
                                }
                                if line == ".\r\n" {
                                    break;
                                }
                            }
                            count.fetch_add(1, Ordering::SeqCst);
                            write.write_all(b"250 OK\r\n").await?;
                        } else if command.starts_with("QUIT") {
                            write.write_all(b"221 bye\r\n").await?;
                            return Ok(());
                        } else {
                            write.write_all(b"250 OK\r\n").await?;
                        }
                    }
                }
                .await;
            });
        }
    });
    (addr, received)
}

/// Queues `count` invitations (batches of 100) against a sink and times their delivery.
async fn mail_delivery(count: usize, silent_first: bool, full: bool) {
    let (smtp, received) = smtp_sink(silent_first).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ctx = web::ServiceContext {
        production: false,
        data_dir: dir.path().to_path_buf(),
        local_addr: addr,
    };
    let mut args = TeamsArgs {
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        smtp_url: Some(Secret::new(format!("smtp://{smtp}"))),
        ..TeamsArgs::default()
    };
    if !full {
        // The smoke run keeps the silent connection short.
        args.mail_send_timeout_seconds = 1;
    }
    let timeout = Duration::from_secs(args.mail_send_timeout_seconds);
    let settings = args.check(&ctx).await.expect("settings");
    let service = TeamsService::start(settings).await.expect("start");
    let router = service.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    for batch in 0..count.div_ceil(BATCH_SIZE) {
        let team: Value = client
            .post(format!("{base}/teams"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "name": format!("mail team {batch}") }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let emails: Vec<String> = (0..BATCH_SIZE.min(count - batch * BATCH_SIZE))
            .map(|n| format!("user{batch}-{n}@example.com"))
            .collect();
        let response = client
            .post(format!(
                "{base}/teams/{}/invitations",
                team["id"].as_str().unwrap()
            ))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "emails": emails }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 207);
    }
    let queued = started.elapsed();
    let wait_for = |target: usize| {
        let received = Arc::clone(&received);
        async move {
            while received.load(Ordering::SeqCst) < target {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            started.elapsed()
        }
    };
    if silent_first {
        let others = wait_for(count - 1).await;
        let all = wait_for(count).await;
        println!(
            "{count} invitations, first SMTP connection silent (MAIL_SEND_TIMEOUT_SECONDS={}): queued in {:.2} s, the other {} delivered in {:.2} s, the silent one retried and delivered at {:.2} s",
            timeout.as_secs(),
            queued.as_secs_f64(),
            count - 1,
            others.as_secs_f64(),
            all.as_secs_f64()
        );
    } else {
        let all = wait_for(count).await;
        println!(
            "{count} invitations to an SMTP sink, default settings: queued in {:.2} s, all delivered in {:.2} s ({:.0} mails/s; target: 1,000 within 10 s)",
            queued.as_secs_f64(),
            all.as_secs_f64(),
            count as f64 / all.as_secs_f64()
        );
    }
    server.abort();
    service.shutdown().await;
}

async fn run(batches: usize, teams_count: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ctx = web::ServiceContext {
        production: false,
        data_dir: dir.path().to_path_buf(),
        local_addr: addr,
    };
    let args = TeamsArgs {
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        ..TeamsArgs::default()
    };
    let settings = args.check(&ctx).await.expect("settings");
    let service = TeamsService::start(settings).await.expect("start");
    let router = service.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    // 1. Batches of 100 invitations, each to a fresh team.
    let mut latencies = Vec::with_capacity(batches);
    for batch in 0..batches {
        let team: Value = client
            .post(format!("{base}/teams"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "name": format!("batch team {batch}") }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let team_id = team["id"].as_str().unwrap();
        let emails: Vec<String> = (0..BATCH_SIZE)
            .map(|n| format!("user{n}@example.com"))
            .collect();
        let started = Instant::now();
        let response = client
            .post(format!("{base}/teams/{team_id}/invitations"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "emails": emails }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 207);
        let body: Value = response.json().await.unwrap();
        latencies.push(started.elapsed());
        assert_eq!(body["summary"]["invited"], BATCH_SIZE);
    }
    latencies.sort();
    println!(
        "batch of {BATCH_SIZE} invitations, {batches} runs: median {:.1} ms, p95 {:.1} ms, max {:.1} ms (target < 50 ms)",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.95).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );

    // 2. 1,000 teams created by 16 clients, then listed page by page by 16 clients.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, base, next) = (client.clone(), base.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= teams_count {
                    return;
                }
                let response = client
                    .post(format!("{base}/teams"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({ "name": format!("load team {n}") }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status().as_u16(), 201);
                response.bytes().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let create_elapsed = started.elapsed();

    let list_requests = Arc::new(AtomicUsize::new(0));
    let listed_started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, base, requests) = (client.clone(), base.clone(), Arc::clone(&list_requests));
        tasks.push(tokio::spawn(async move {
            // Each client walks every page of the team list.
            let mut cursor: Option<String> = None;
            let mut seen = 0;
            loop {
                let url = match &cursor {
                    Some(c) => format!("{base}/teams?limit={LIST_PAGE}&cursor={c}"),
                    None => format!("{base}/teams?limit={LIST_PAGE}"),
                };
                let page: Value = client
                    .get(url)
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                requests.fetch_add(1, Ordering::Relaxed);
                seen += page["teams"].as_array().unwrap().len();
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
            }
            assert!(seen >= teams_count);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let list_elapsed = listed_started.elapsed();
    let list_count = list_requests.load(Ordering::Relaxed);
    let total = teams_count + list_count;
    let total_elapsed = create_elapsed + list_elapsed;
    println!(
        "create {teams_count} teams with {CLIENTS} clients: {:.0} req/s ({:.2} s)",
        teams_count as f64 / create_elapsed.as_secs_f64(),
        create_elapsed.as_secs_f64()
    );
    println!(
        "list them ({LIST_PAGE} per page, every client walks every page): {list_count} requests, {:.0} req/s ({:.2} s)",
        list_count as f64 / list_elapsed.as_secs_f64(),
        list_elapsed.as_secs_f64()
    );
    println!(
        "overall: {total} requests, {:.0} req/s (target >= 2,000 req/s)",
        total as f64 / total_elapsed.as_secs_f64()
    );

    server.abort();
    service.shutdown().await;
}
