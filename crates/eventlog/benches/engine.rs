//! Engine benchmark: durable append throughput (1 and 64 appender threads), get-by-id
//! throughput from 2 threads, open time with a checkpoint and with a full replay, index
//! memory per event, and get latency while a background checkpoint of the whole index runs.
//!
//! ```sh
//! cargo bench -p eventlog --bench engine                    # everything, 10M-event store
//! BENCH_EVENTS=1000000 cargo bench -p eventlog --bench engine
//! BENCH_ONLY=append cargo bench -p eventlog --bench engine  # append | read | open | checkpoint
//! BENCH_DIR=/path/on/the/disk/to/test cargo bench ...       # default: a temp dir under target/
//! BENCH_REUSE=1 cargo bench ...                             # reuse a store built before
//! BENCH_CHECKPOINTS=5 BENCH_ONLY=checkpoint cargo bench ... # rounds pooled (default 3)
//! ```
//!
//! Events carry ~300 bytes of JSON data. Figures are wall-clock and vary with the machine;
//! compare them with `fio --fsync=1` on the same disk (see docs/PERFORMANCE.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eventlog::{Durability, ExpectedVersion, NewEvent, Options, Store};
use uuid::Uuid;

fn payload(i: u64) -> Vec<u8> {
    let mut data = format!(
        "{{\"order\":{i},\"customer\":\"c-{}\",\"items\":[",
        i % 9973
    );
    while data.len() < 280 {
        data.push_str("{\"sku\":\"ab-12\",\"qty\":1},");
    }
    data.push_str("{\"sku\":\"end\",\"qty\":0}]}");
    data.into_bytes()
}

fn new_event(i: u64) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        stream: format!("orders-{}", i % 1000),
        event_type: "OrderPlaced".into(),
        data: payload(i),
        metadata: None,
        binary: false,
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_root() -> PathBuf {
    match std::env::var("BENCH_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-eventlog"),
    }
}

fn fresh(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
}

/// Appends from `threads` threads for `duration` with fsync durability; returns events/s.
fn durable_appends(dir: &Path, threads: usize, duration: Duration) -> (f64, f64) {
    fresh(dir);
    let store = Store::open(dir, Options::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (store, stop, count) = (store.clone(), Arc::clone(&stop), Arc::clone(&count));
            scope.spawn(move || {
                let mut i = t as u64;
                while !stop.load(Ordering::Relaxed) {
                    store
                        .append(vec![new_event(i)], ExpectedVersion::Any)
                        .unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                    i += threads as u64;
                }
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    let stats = store.stats();
    let events = count.load(Ordering::Relaxed) as f64;
    (
        events / elapsed,
        stats.events as f64 / stats.fsyncs.max(1) as f64,
    )
}

/// Keeps `in_flight` appends outstanding through `Store::submit` from one driver thread (the
/// way an async server uses the engine: no OS thread per waiting appender) for `duration`,
/// with fsync durability; returns events/s and events per fsync.
fn submitted_appends(dir: &Path, in_flight: usize, duration: Duration) -> (f64, f64) {
    fresh(dir);
    let store = Store::open(dir, Options::default()).unwrap();
    let timing = Arc::new((AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)));
    let seen = Arc::clone(&timing);
    store.on_commit(move |commit| {
        seen.0.fetch_add(1, Ordering::Relaxed);
        seen.1.fetch_add(
            commit.fsync.map_or(0, |d| d.as_micros() as u64),
            Ordering::Relaxed,
        );
        seen.2
            .fetch_add(commit.duration.as_micros() as u64, Ordering::Relaxed);
    });
    let (done_sender, done_receiver) = std::sync::mpsc::channel::<()>();
    let submit = |i: u64| {
        let done = done_sender.clone();
        store.submit(vec![new_event(i)], ExpectedVersion::Any, move |result| {
            result.unwrap();
            let _ = done.send(());
        });
    };
    let started = Instant::now();
    let mut submitted = 0u64;
    for _ in 0..in_flight {
        submit(submitted);
        submitted += 1;
    }
    let mut completed = 0u64;
    while started.elapsed() < duration {
        done_receiver.recv().unwrap();
        completed += 1;
        submit(submitted);
        submitted += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    for _ in completed..submitted {
        done_receiver.recv().unwrap();
    }
    let commits = timing.0.load(Ordering::Relaxed).max(1);
    println!(
        "  {commits} commits: fsync {:.0} us, write+fsync {:.0} us on average, cycle {:.0} us",
        timing.1.load(Ordering::Relaxed) as f64 / commits as f64,
        timing.2.load(Ordering::Relaxed) as f64 / commits as f64,
        elapsed * 1e6 / commits as f64
    );
    let stats = store.stats();
    (
        completed as f64 / elapsed,
        stats.events as f64 / stats.fsyncs.max(1) as f64,
    )
}

/// The ids of every 7th event of a store built before with `events` events, if it is there.
fn reuse_store(dir: &Path, events: u64) -> Option<Vec<Uuid>> {
    let store = Store::open(dir, Options::default()).ok()?;
    if store.head() < events {
        return None;
    }
    let mut ids = Vec::new();
    let mut from = 0;
    while from < events && ids.len() < 500_000 {
        let page = store.read_all(from, 7000).ok()?;
        ids.extend(page.iter().step_by(7).map(|e| e.id));
        from += page.len() as u64;
    }
    Some(ids)
}

/// Builds a store of `events` events quickly (no fsync per batch; fsynced at close).
fn build_store(dir: &Path, events: u64) -> Vec<Uuid> {
    fresh(dir);
    let options = Options {
        durability: Durability::Never,
        checkpoint_every_events: 0,
        ..Options::default()
    };
    let store = Store::open(dir, options).unwrap();
    let mut sample = Vec::new();
    let batch = 100u64;
    let threads = 2u64;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = store.clone();
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    let mut i = t * batch;
                    while i < events {
                        let n = batch.min(events - i);
                        let events: Vec<_> = (i..i + n).map(new_event).collect();
                        if ids.len() < 500_000 {
                            ids.extend(events.iter().step_by(7).map(|e| e.id));
                        }
                        store.append(events, ExpectedVersion::Any).unwrap();
                        i += batch * threads;
                    }
                    ids
                })
            })
            .collect();
        for handle in handles {
            sample.extend(handle.join().unwrap());
        }
    });
    store.close(); // writes the checkpoint
    sample
}

/// Latency percentiles of a sample, in microseconds.
fn percentiles(mut micros: Vec<u64>) -> String {
    if micros.is_empty() {
        return "no samples".into();
    }
    micros.sort_unstable();
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize];
    format!(
        "{} gets: p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        micros.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        micros[micros.len() - 1]
    )
}

/// Get latency from 2 threads while the writer appends (about 2,000 durable events/s) and a
/// background checkpoint of the whole index runs, against the same without a checkpoint.
///
/// Readers are open-loop: each issues a get every 500 us on a fixed schedule, and latency is
/// counted from the scheduled time, so a reader stuck behind a lock counts every get it
/// should have made meanwhile (no coordinated omission). The checkpoint starts when the
/// appender reaches `checkpoint_every_events`; samples are split by whether
/// `index.ckpt.tmp` existed (the checkpoint was being written) when they were due.
/// Get latency without and during a background checkpoint, over `BENCH_CHECKPOINTS` rounds
/// (default 3) pooled: one checkpoint gives only a few thousand gets "during", so its p99.9
/// is nearly its maximum; pooling rounds gives the percentile more samples on both sides.
fn latency_during_checkpoint(store_dir: &Path, ids: &[Uuid], seconds: Duration, rounds: u64) {
    let mut quiet = Vec::new();
    let mut during = Vec::new();
    let mut checkpoint_seconds = 0.0;
    println!("get latency, 2 open-loop readers at 2k gets/s each, ~2k durable appends/s:");
    for round in 1..=rounds {
        let (q, d, took) = checkpoint_round(store_dir, ids, seconds);
        println!(
            "  round {round}: p99.9 without {} us, during {} us ({:.2} s checkpoint): {:.1}x",
            p999(&q),
            p999(&d),
            took,
            p999(&d) as f64 / p999(&q).max(1) as f64
        );
        quiet.extend(q);
        during.extend(d);
        checkpoint_seconds += took;
    }
    println!("  {rounds} rounds pooled:");
    println!("  without a checkpoint: {}", percentiles(quiet.clone()));
    println!(
        "  during a checkpoint ({checkpoint_seconds:.2} s in all): {}",
        percentiles(during.clone())
    );
    println!(
        "  p99.9 during / without: {:.1}x (target <= 2)",
        p999(&during) as f64 / p999(&quiet).max(1) as f64
    );
}

/// The 99.9th percentile of `samples`.
fn p999(samples: &[u64]) -> u64 {
    let mut v = samples.to_vec();
    v.sort_unstable();
    v.get(((v.len().max(1) - 1) as f64 * 0.999) as usize)
        .copied()
        .unwrap_or(0)
}

/// One round: reads and appends for `seconds`, then until a checkpoint has been written and
/// a little after; answers the latencies due before it, those due during it, and its length.
fn checkpoint_round(
    store_dir: &Path,
    ids: &[Uuid],
    seconds: Duration,
) -> (Vec<u64>, Vec<u64>, f64) {
    const READ_EVERY: Duration = Duration::from_micros(500);
    const APPEND_EVERY: Duration = Duration::from_micros(500);
    let baseline_appends = (seconds.as_secs_f64() / APPEND_EVERY.as_secs_f64()) as u64;
    let options = Options {
        checkpoint_every_events: baseline_appends.max(1),
        checkpoint_every_seconds: 0,
        ..Options::default()
    };
    let _ = std::fs::remove_file(store_dir.join("index.ckpt.tmp"));
    let store = Store::open(store_dir, options).unwrap();
    let tmp = store_dir.join("index.ckpt.tmp");
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    // Microseconds since `started` at which the checkpoint was seen starting and ending.
    let window = (AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX));
    let (quiet, during) = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2u64)
            .map(|t| {
                let (store, stop) = (&store, &stop);
                scope.spawn(move || {
                    let mut samples = Vec::new();
                    let mut k = t as usize * 7919;
                    let mut due = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        due += READ_EVERY;
                        let now = Instant::now();
                        if due > now + Duration::from_micros(80) {
                            std::thread::sleep(due - now - Duration::from_micros(60));
                        }
                        while Instant::now() < due {
                            std::hint::spin_loop();
                        }
                        k = (k + 104_729) % ids.len();
                        let event = store.get(ids[k]).unwrap().unwrap();
                        assert_eq!(event.id, ids[k]);
                        let latency = due.elapsed().as_micros() as u64;
                        samples.push(((due - started).as_micros() as u64, latency));
                    }
                    samples
                })
            })
            .collect();
        let appender = {
            let (store, stop) = (&store, &stop);
            scope.spawn(move || {
                let mut i = 0u64;
                let mut due = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    due += APPEND_EVERY;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    store
                        .append(vec![new_event(i)], ExpectedVersion::Any)
                        .unwrap();
                    i += 1;
                }
            })
        };
        // Watch for the checkpoint's temporary file, and for the checkpoint being replaced
        // (in case the temporary file came and went between two looks); stop a little after.
        let installed = || {
            std::fs::metadata(store_dir.join(eventlog::CHECKPOINT_FILE))
                .and_then(|m| m.modified())
                .ok()
        };
        let before = installed();
        let deadline = started + seconds * 10 + Duration::from_secs(120);
        loop {
            let now = (Instant::now() - started).as_micros() as u64;
            let exists = tmp.exists();
            if exists && window.0.load(Ordering::Relaxed) == u64::MAX {
                window.0.store(now, Ordering::Relaxed);
            }
            if !exists && installed() != before {
                if window.0.load(Ordering::Relaxed) == u64::MAX {
                    window.0.store(now, Ordering::Relaxed);
                }
                window.1.store(now, Ordering::Relaxed);
                std::thread::sleep(seconds / 5);
                break;
            }
            if Instant::now() > deadline {
                println!("  (no checkpoint seen)");
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        appender.join().unwrap();
        let (from, to) = (
            window.0.load(Ordering::Relaxed),
            window.1.load(Ordering::Relaxed),
        );
        let mut quiet = Vec::new();
        let mut during = Vec::new();
        let mut worst = Vec::new();
        for reader in readers {
            for (at, latency) in reader.join().unwrap() {
                if (from..to).contains(&at) {
                    during.push(latency);
                    worst.push((latency, at - from));
                } else if at < from {
                    quiet.push(latency);
                }
            }
        }
        // Where in the checkpoint the slowest gets were due: a stall at one moment (the
        // start, the install) or a spread (CPU contention).
        worst.sort_unstable_by(|a, b| b.cmp(a));
        for (latency, at) in worst.iter().take(3) {
            println!(
                "  slow get: {:.1} ms, due {:.3} s into the checkpoint",
                *latency as f64 / 1e3,
                *at as f64 / 1e6
            );
        }
        (quiet, during)
    });
    let from = window.0.load(Ordering::Relaxed);
    let to = window.1.load(Ordering::Relaxed);
    store.close();
    (quiet, during, to.saturating_sub(from) as f64 / 1e6)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Opens the store in `BENCH_OPEN_DIR` with or without its checkpoint and reports time,
/// replay speed and RSS growth (run in a child process).
fn open_child(mode: &str) {
    let store_dir = PathBuf::from(std::env::var("BENCH_OPEN_DIR").unwrap());
    let events = env_u64("BENCH_EVENTS", 0);
    let checkpoint = store_dir.join(eventlog::CHECKPOINT_FILE);
    let saved = std::fs::read(&checkpoint).ok();
    if mode == "replay" {
        std::fs::remove_file(&checkpoint).ok();
    }
    let rss_before = rss_bytes();
    let started = Instant::now();
    let store = Store::open(&store_dir, Options::default()).unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    let report = store.open_report().clone();
    assert_eq!(report.events, events);
    if mode == "checkpoint" {
        assert!(
            report.checkpoint_events > 0,
            "checkpoint not used: {report:?}"
        );
        println!(
            "open with checkpoint: {elapsed:.2} s for {events} events ({} replayed)",
            report.replayed_events
        );
    } else {
        println!(
            "open with full replay: {elapsed:.2} s, {:.0} MB/s of log",
            report.replayed_bytes as f64 / 1e6 / elapsed
        );
    }
    println!(
        "  index memory: RSS grew {:.1} MB = {:.1} bytes per event (heap estimate {:.1} bytes/event)",
        rss_growth as f64 / 1e6,
        rss_growth as f64 / events as f64,
        store.stats().index_heap_bytes as f64 / events as f64
    );
    // Keep the store's own checkpoint out of the next measurement's way: restore the original.
    drop(store);
    if let Some(saved) = saved {
        std::fs::write(&checkpoint, saved).unwrap();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Ok(mode) = std::env::var("BENCH_OPEN_CHILD") {
        return open_child(&mode);
    }
    // `cargo test --all-targets` runs this binary without `--bench`: do a small smoke run so
    // the benchmark code stays working without costing CI minutes.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let root = if smoke {
        std::env::temp_dir().join(format!("eventlog-bench-smoke-{}", std::process::id()))
    } else {
        bench_root()
    };
    let seconds = if smoke {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(env_u64("BENCH_SECONDS", 5))
    };
    println!("eventlog engine benchmark; data under {}", root.display());

    if only.is_empty() || only == "append" {
        for threads in [1usize, 64] {
            let (rate, per_fsync) = durable_appends(&root.join("append"), threads, seconds);
            println!(
                "durable appends (fsync), {threads:>2} appender threads: {rate:>10.0} events/s, {per_fsync:.1} events per fsync"
            );
        }
        let (rate, per_fsync) = submitted_appends(&root.join("append"), 64, seconds);
        println!(
            "durable appends (fsync), 64 in flight via submit: {rate:>10.0} events/s, {per_fsync:.1} events per fsync"
        );
    }

    let events = if smoke {
        20_000
    } else {
        env_u64("BENCH_EVENTS", 10_000_000)
    };
    let store_dir = root.join("big");
    if only.is_empty() || only == "read" || only == "open" || only == "checkpoint" {
        let reuse = std::env::var("BENCH_REUSE").is_ok_and(|v| v == "1");
        let ids = match reuse.then(|| reuse_store(&store_dir, events)).flatten() {
            Some(ids) => {
                println!(
                    "reusing the store of {events} events in {}",
                    store_dir.display()
                );
                ids
            }
            None => {
                let started = Instant::now();
                let ids = build_store(&store_dir, events);
                let elapsed = started.elapsed().as_secs_f64();
                let bytes: u64 = std::fs::read_dir(&store_dir)
                    .unwrap()
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                    .map(|e| e.metadata().unwrap().len())
                    .sum();
                println!(
                    "built a store of {events} events, {:.2} GB, in {elapsed:.1} s",
                    bytes as f64 / 1e9
                );
                ids
            }
        };

        if only.is_empty() || only == "read" {
            let store = Store::open(&store_dir, Options::default()).unwrap();
            let ids = Arc::new(ids.clone());
            let reads = if smoke {
                10_000
            } else {
                env_u64("BENCH_READS", 4_000_000)
            };
            let started = Instant::now();
            std::thread::scope(|scope| {
                for t in 0..2u64 {
                    let (store, ids) = (store.clone(), Arc::clone(&ids));
                    scope.spawn(move || {
                        let mut k = t as usize * 7919;
                        for _ in 0..reads / 2 {
                            k = (k + 104_729) % ids.len();
                            let event = store.get(ids[k]).unwrap().unwrap();
                            assert_eq!(event.id, ids[k]);
                        }
                    });
                }
            });
            let rate = reads as f64 / started.elapsed().as_secs_f64();
            println!("get by id, 2 threads: {rate:>10.0} reads/s");
        }

        if only.is_empty() || only == "open" {
            // Each open runs in a fresh process, so its RSS growth is the index alone.
            for mode in ["checkpoint", "replay"] {
                let status = std::process::Command::new(std::env::current_exe().unwrap())
                    .env("BENCH_OPEN_CHILD", mode)
                    .env("BENCH_OPEN_DIR", &store_dir)
                    .env("BENCH_EVENTS", events.to_string())
                    .status()
                    .unwrap();
                assert!(status.success());
            }
        }

        // Last: it appends to the store.
        if only.is_empty() || only == "checkpoint" {
            let rounds = if smoke {
                1
            } else {
                env_u64("BENCH_CHECKPOINTS", 3)
            };
            latency_during_checkpoint(&store_dir, &ids, seconds, rounds);
        }
    }
    if smoke {
        let _ = std::fs::remove_dir_all(&root);
    }
}
