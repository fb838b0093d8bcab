//! Scavenge benchmark: a store of which half the bytes are dead (every other stream), all
//! segments sealed, scavenged at the pace a server gives it by default
//! ([`eventlog::scavenge::DEFAULT_MAX_BYTES_PER_SECOND`], what `POST /admin/scavenge` runs
//! at); reports MB/s of segment rewritten (bytes of the segments before, over the scavenge's
//! wall time) and the p50/p99 latency of durable appends from 16 threads without and during
//! the scavenge. "Without" pools a phase before the scavenge and one after it (same store, same
//! appenders), so that one noisy phase does not decide the ratio.
//!
//! Targets (issue 11): at least 200 MB/s; p99 during within 2x of p99 without. Measure on an
//! idle machine; the figures of a loaded one say nothing.
//!
//! ```sh
//! cargo bench -p eventlog --bench scavenge                         # 2 GB store
//! BENCH_STORE_BYTES=50000000 BENCH_SECONDS=2 cargo bench -p eventlog --bench scavenge
//! BENCH_DIR=/path/on/the/disk/to/test cargo bench -p eventlog --bench scavenge
//! BENCH_MAX_BYTES_PER_SECOND=0 ...                                 # unpaced
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eventlog::scavenge::{Candidate, ScavengeOptions};
use eventlog::{Durability, ExpectedVersion, NewEvent, Options, Store};
use uuid::Uuid;

/// Appending threads while latency is measured (the issue's 16 connections).
const APPENDERS: usize = 16;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(i: u64) -> NewEvent {
    let dead = i.is_multiple_of(2);
    let mut data = format!("{{\"n\":{i},\"pad\":\"");
    while data.len() < 300 {
        data.push('x');
    }
    data.push_str("\"}");
    NewEvent {
        id: Uuid::now_v7(),
        stream: format!("{}-{}", if dead { "dead" } else { "live" }, i % 1000),
        event_type: "Benched".into(),
        data: data.into_bytes(),
        metadata: None,
        binary: false,
    }
}

fn options(durability: Durability) -> Options {
    Options {
        durability,
        ..Options::default()
    }
}

/// Builds the store fast (no fsync per batch; one at close) and seals it.
fn build(dir: &Path, bytes: u64) {
    let store = Store::open(dir, options(Durability::Never)).unwrap();
    let mut i = 0u64;
    while store.stats().log_bytes < bytes {
        let batch: Vec<NewEvent> = (0..500).map(|k| event(i + k)).collect();
        i += 500;
        store.append(batch, ExpectedVersion::Any).unwrap();
    }
    store.seal_active_segment().unwrap();
    store.close();
}

/// Durable single-event appends from `APPENDERS` threads until `stop`: per append, when it
/// started (µs after `epoch`) and its latency in µs.
fn append_latencies(store: &Store, stop: &AtomicBool, epoch: Instant) -> Vec<(u64, u64)> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..APPENDERS)
            .map(|t| {
                scope.spawn(move || {
                    let mut micros = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let mut e = event(n);
                        e.stream = format!("appender-{t}");
                        let started = Instant::now();
                        store.append(vec![e], ExpectedVersion::Any).unwrap();
                        micros.push((
                            (started - epoch).as_micros() as u64,
                            started.elapsed().as_micros() as u64,
                        ));
                        n += 1;
                    }
                    micros
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

/// Where in the scavenge the appends at or above `p99` started, in buckets of 250 ms: a few
/// full buckets point to stalls at moments (a rename, an install, a flush), an even spread to
/// steady contention.
fn slow_appends_over_time(timed: &[(u64, u64)], p99: u64) {
    const BUCKET_MICROS: u64 = 250_000;
    let mut buckets: Vec<(u64, u64)> = Vec::new();
    for &(at, latency) in timed.iter().filter(|&&(_, latency)| latency >= p99) {
        let bucket = (at / BUCKET_MICROS) as usize;
        if buckets.len() <= bucket {
            buckets.resize(bucket + 1, (0, 0));
        }
        buckets[bucket].0 += 1;
        buckets[bucket].1 = buckets[bucket].1.max(latency);
    }
    let line: Vec<String> = buckets
        .iter()
        .map(|(count, worst)| format!("{count}/{:.1}", *worst as f64 / 1e3))
        .collect();
    println!(
        "appends at or above the p99 during ({p99} µs), per 250 ms of the scavenge (count/worst ms): {}",
        line.join(" ")
    );
}

/// Latencies (µs) of durable appends from `APPENDERS` threads for `seconds`, no scavenge.
fn appends_for(store: &Store, seconds: Duration) -> Vec<u64> {
    let stop = AtomicBool::new(false);
    let timed = std::thread::scope(|scope| {
        let measuring = scope.spawn(|| append_latencies(store, &stop, Instant::now()));
        std::thread::sleep(seconds);
        stop.store(true, Ordering::Relaxed);
        measuring.join().unwrap()
    });
    timed.into_iter().map(|(_, latency)| latency).collect()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: a small smoke run (a 3 MB
    // store, one second per phase, in the temporary directory) so CI checks that it works.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let root = match std::env::var("BENCH_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) if smoke => std::env::temp_dir().join(format!(
            "eventlog-bench-scavenge-smoke-{}",
            std::process::id()
        )),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-scavenge"),
    };
    let (default_bytes, default_seconds) = if smoke {
        (3_000_000, 1)
    } else {
        (2_000_000_000, 5)
    };
    let bytes = env_u64("BENCH_STORE_BYTES", default_bytes);
    let seconds = Duration::from_secs(env_u64("BENCH_SECONDS", default_seconds));
    let max_bytes_per_second = env_u64(
        "BENCH_MAX_BYTES_PER_SECOND",
        eventlog::scavenge::DEFAULT_MAX_BYTES_PER_SECOND,
    );
    let dir = root.join("store");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    println!("building a {bytes}-byte store in {}", dir.display());
    build(&dir, bytes);

    let store = Store::open(&dir, options(Durability::Fsync)).unwrap();
    let mut without = appends_for(&store, seconds);

    let stop = Arc::new(AtomicBool::new(false));
    let is_dead = |e: &Candidate<'_>| e.stream.starts_with("dead-");
    let started = Instant::now();
    let (report, elapsed, timed) = std::thread::scope(|scope| {
        let measuring = scope.spawn(|| append_latencies(&store, &stop, started));
        let report = store
            .scavenge(
                &is_dead,
                ScavengeOptions {
                    max_bytes_per_second,
                },
                &|_| {},
            )
            .unwrap();
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        (report, elapsed, measuring.join().unwrap())
    });
    without.extend(appends_for(&store, seconds));
    without.sort_unstable();
    let mut during: Vec<u64> = timed.iter().map(|&(_, latency)| latency).collect();
    during.sort_unstable();
    slow_appends_over_time(&timed, percentile(&during, 0.99));
    let mb_per_second = report.bytes_before as f64 / 1e6 / elapsed.as_secs_f64();
    println!(
        "scavenge (pace {max_bytes_per_second} B/s of old segment read, 0: none): {} segments, {} events removed, {} -> {} bytes in {:.2} s: {mb_per_second:.0} MB/s rewritten (target >= 200)",
        report.segments_total,
        report.events_removed,
        report.bytes_before,
        report.bytes_after,
        elapsed.as_secs_f64()
    );
    let (p50_without, p99_without) = (percentile(&without, 0.5), percentile(&without, 0.99));
    let (p50_during, p99_during) = (percentile(&during, 0.5), percentile(&during, 0.99));
    println!(
        "durable appends, {APPENDERS} threads: without (before and after) p50 {p50_without} µs p99 {p99_without} µs ({} appends); during p50 {p50_during} µs p99 {p99_during} µs ({} appends); p99 ratio {:.2} (target <= 2)",
        without.len(),
        during.len(),
        p99_during as f64 / p99_without.max(1) as f64
    );
    store.close();
    let _ = std::fs::remove_dir_all(if smoke { &root } else { &dir });
}
