//! Lifecycle benchmark: reads of `$all` (forward, pages of 1000, through the seam of the
//! embedded backend) on a store whose extra streams are all deleted, against the same store
//! without deletions; and the index bytes per stream that a deletion or metadata costs.
//!
//! ```sh
//! cargo bench -p eventstore --bench lifecycle                        # 200k live events
//! BENCH_EVENTS=20000 BENCH_DELETED_STREAMS=2000 cargo bench -p eventstore --bench lifecycle
//! ```
//!
//! Both stores hold the same live events (`BENCH_EVENTS` over 1,000 streams); the second also
//! holds `BENCH_DELETED_STREAMS` streams of `BENCH_DELETED_EVENTS_EACH` events each,
//! interleaved with the live ones and then soft-deleted (half) or tombstoned (half). The
//! target (issue 11) is a full `$all` read within 1.5x of the store without deletions. The
//! two stores are read in alternation (`BENCH_RUNS` times each): it prints the median ratio of
//! reads paired in time and the ratio of the best reads.
//! Measure on an idle machine: figures from a loaded one say nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use events::{DeleteMode, EventStore, ExpectedVersion, NewEvent, ReadAll, StreamMetadata};
use eventstore::backend::Embedded;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn payload(i: u64) -> Vec<u8> {
    let mut data = format!("{{\"order\":{i},\"items\":[");
    while data.len() < 280 {
        data.push_str("{\"sku\":\"ab-12\",\"qty\":1},");
    }
    data.push_str("{\"sku\":\"end\",\"qty\":0}]}");
    data.into_bytes()
}

async fn open(dir: &Path) -> Embedded {
    let options = eventlog::Options {
        durability: eventlog::Durability::Never,
        ..eventlog::Options::default()
    };
    Embedded::open(dir.to_path_buf(), options, 0, |_| {})
        .await
        .expect("the store opens")
}

/// Appends the live events, and with `deleted_streams > 0` that many dead streams
/// interleaved, then deletes them. Answers the index + catalog heap bytes before and after
/// the deletions.
async fn build(store: &Embedded, events: u64, deleted_streams: u64, each: u64) -> (u64, u64) {
    let dead_total = deleted_streams * each;
    let total = events + dead_total;
    let every = if dead_total == 0 {
        u64::MAX
    } else {
        total / dead_total.max(1)
    };
    let mut batch = Vec::with_capacity(100);
    let (mut live, mut dead) = (0u64, 0u64);
    for i in 0..total {
        let stream = if i % every == 0 && dead < dead_total {
            dead += 1;
            format!("dead-{}", dead % deleted_streams)
        } else {
            live += 1;
            format!("orders-{}", live % 1000)
        };
        batch.push(NewEvent::json(stream, "OrderPlaced", payload(i)));
        if batch.len() == 100 {
            store
                .append(std::mem::take(&mut batch), ExpectedVersion::Any)
                .await
                .unwrap();
        }
    }
    if !batch.is_empty() {
        store.append(batch, ExpectedVersion::Any).await.unwrap();
    }
    let heap = |store: &Embedded| {
        store.engine().stats().index_heap_bytes + store.engine().catalog_heap_bytes()
    };
    let before = heap(store);
    for n in 0..deleted_streams {
        let stream = format!("dead-{n}");
        let mode = if n % 2 == 0 {
            DeleteMode::Soft
        } else {
            DeleteMode::Hard
        };
        store
            .delete_stream(&stream, ExpectedVersion::Any, mode)
            .await
            .unwrap();
    }
    (before, heap(store))
}

/// Reads all of `$all` forward in pages of 1000: (elapsed, live events read outside
/// metastreams; the last lifecycle record of each metastream is live in `$all` too).
async fn read_all(store: &Embedded) -> (Duration, u64) {
    let started = Instant::now();
    let mut start = 0;
    let mut read = 0u64;
    loop {
        let page = store.read_all(ReadAll::forward(start, 1000)).await.unwrap();
        read += page
            .events
            .iter()
            .filter(|e| !e.stream.starts_with("$$"))
            .count() as u64;
        match page.next {
            Some(next) => start = next,
            None => break,
        }
    }
    (started.elapsed(), read)
}

/// Reads both stores in alternation, `runs` times each, so that the machine's slow and quick
/// moments fall on both alike: the best read of each, and the median of the ratios of the
/// reads paired in time.
async fn alternating(plain: &Embedded, deleted: &Embedded, runs: u32) -> [(Duration, u64); 2] {
    let mut best = [(Duration::MAX, 0); 2];
    let mut ratios = Vec::new();
    for _ in 0..runs {
        let pair = [read_all(plain).await, read_all(deleted).await];
        for (best, run) in best.iter_mut().zip(pair) {
            if run.0 < best.0 {
                *best = run;
            }
        }
        ratios.push(pair[1].0.as_secs_f64() / pair[0].0.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratios of the {runs} reads paired in time: median {:.2} (from {:.2} to {:.2})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    best
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: a small smoke run so CI
    // checks that it works; the figures come from `cargo bench`.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (events, deleted_streams, runs) = if smoke {
        (5_000, 500, 1)
    } else {
        (200_000, 20_000, 20)
    };
    let events = env_u64("BENCH_EVENTS", events);
    let deleted_streams = env_u64("BENCH_DELETED_STREAMS", deleted_streams).max(1);
    let each = env_u64("BENCH_DELETED_EVENTS_EACH", 2);
    let runs = env_u64("BENCH_RUNS", runs) as u32;
    let root = tempfile::tempdir().unwrap();

    let plain = open(&root.path().join("plain")).await;
    build(&plain, events, 0, 0).await;
    let deleted = open(&root.path().join("deleted")).await;
    let (before, after) = build(&deleted, events, deleted_streams, each).await;
    let [(plain_time, plain_read), (deleted_time, deleted_read)] =
        alternating(&plain, &deleted, runs).await;
    plain.close().await;
    assert_eq!(
        plain_read, deleted_read,
        "both stores serve the same live events"
    );

    // Metadata on streams that stay live: what a retention setting costs per stream.
    let heap = |store: &Embedded| {
        store.engine().stats().index_heap_bytes + store.engine().catalog_heap_bytes()
    };
    let before_metadata = heap(&deleted);
    for n in 0..1000 {
        let metadata = StreamMetadata {
            max_count: Some(1_000_000),
            ..StreamMetadata::default()
        };
        deleted
            .set_stream_metadata(&format!("orders-{n}"), ExpectedVersion::Any, metadata)
            .await
            .unwrap();
    }
    let metadata_bytes = (heap(&deleted) - before_metadata) / 1000;
    deleted.close().await;

    println!("$all forward, pages of 1000, best of {runs} each:");
    println!(
        "  no deletions:        {:>8.1} ms for {plain_read} events ({:.0} events/s)",
        plain_time.as_secs_f64() * 1e3,
        plain_read as f64 / plain_time.as_secs_f64()
    );
    println!(
        "  {deleted_streams} deleted streams ({} dead events): {:>8.1} ms for {deleted_read} live events ({:.0} events/s)",
        deleted_streams * each,
        deleted_time.as_secs_f64() * 1e3,
        deleted_read as f64 / deleted_time.as_secs_f64()
    );
    println!(
        "  ratio of the best reads: {:.2} (target: at most 1.5)",
        deleted_time.as_secs_f64() / plain_time.as_secs_f64()
    );
    println!(
        "index + catalog heap per deleted stream (its lifecycle record, metastream entry and retention): {} bytes",
        after.saturating_sub(before) / deleted_streams
    );
    println!("index + catalog heap per stream given metadata: {metadata_bytes} bytes");
}
