//! Prometheus metrics, hand-written: a few atomic counters and fixed-bucket histograms are all
//! the event store needs, and rendering the text format is twenty lines (no exporter crate to
//! build on a 2-core machine).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Copies of each per-request counter (a power of two): see [`Sharded`].
const SHARDS: usize = 8;
/// Unused counters after each shard's own, so that two shards never share a cache line.
const SHARD_PADDING: usize = 16;

/// Counters that every request adds to, kept as one copy per shard: each thread adds to the
/// copy of its own shard (dealt out in turn as threads first count), and a scrape sums them.
/// One shared copy had every request of every serving thread write the same cache lines,
/// which then moved between cores on every request (issue 15).
#[derive(Debug)]
struct Sharded {
    shards: Box<[Box<[AtomicU64]>]>,
}

impl Sharded {
    fn new(len: usize) -> Sharded {
        Sharded {
            shards: (0..SHARDS)
                .map(|_| {
                    (0..len + SHARD_PADDING)
                        .map(|_| AtomicU64::new(0))
                        .collect()
                })
                .collect(),
        }
    }

    fn add(&self, slot: usize, n: u64) {
        self.shards[this_threads_shard()][slot].fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self, slot: usize) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard[slot].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// The shard this thread counts in.
fn this_threads_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// The routes whose requests are counted, one label value each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /events`.
    Append,
    /// `POST /streams/{stream}/events`.
    StreamAppend,
    /// `GET /events/{id}`.
    GetEvent,
    /// `GET /events` (`$all`).
    ReadAll,
    /// `GET /streams/{stream}/events`.
    ReadStream,
    /// `GET /subscribe` and the stream subscriptions (server-sent events).
    Subscribe,
    /// `GET /streams`.
    ListStreams,
    /// `GET /streams/{stream}`.
    StreamState,
    /// `DELETE /streams/{stream}` (soft delete or tombstone).
    DeleteStream,
    /// `GET`/`PUT /streams/{stream}/metadata`.
    StreamMetadata,
    /// `/admin/...` (scavenge).
    Admin,
}

impl Route {
    const ALL: [Route; 11] = [
        Route::Append,
        Route::StreamAppend,
        Route::GetEvent,
        Route::ReadAll,
        Route::ReadStream,
        Route::Subscribe,
        Route::ListStreams,
        Route::StreamState,
        Route::DeleteStream,
        Route::StreamMetadata,
        Route::Admin,
    ];

    fn label(self) -> &'static str {
        match self {
            Route::Append => "append",
            Route::StreamAppend => "stream_append",
            Route::GetEvent => "get_event",
            Route::ReadAll => "read_all",
            Route::ReadStream => "read_stream",
            Route::Subscribe => "subscribe",
            Route::ListStreams => "list_streams",
            Route::StreamState => "stream_state",
            Route::DeleteStream => "delete_stream",
            Route::StreamMetadata => "stream_metadata",
            Route::Admin => "admin",
        }
    }

    fn is_append(self) -> bool {
        matches!(self, Route::Append | Route::StreamAppend)
    }
}

/// Status codes counted individually; anything else counts as `other`.
const STATUSES: [u16; 13] = [
    200, 201, 204, 400, 401, 404, 409, 410, 413, 415, 500, 503, 0,
];

/// Latency buckets, upper bounds in microseconds.
const LATENCY_BUCKETS_MICROS: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000,
];

/// Events-per-commit buckets (the group commit batch size).
const BATCH_BUCKETS_EVENTS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024];

/// A histogram with fixed buckets; `observe` is a few relaxed atomic adds.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [u64],
    /// One count per bound, plus the `+Inf` bucket (not cumulative: rendering accumulates),
    /// then the sum.
    counts: Sharded,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: Sharded::new(bounds.len() + 2),
        }
    }

    fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts.add(bucket, 1);
        self.counts.add(self.bounds.len() + 1, value);
    }

    /// Renders with bounds and sum divided by `scale` (1e6 turns microseconds into seconds).
    fn render(&self, out: &mut String, name: &str, labels: &str, scale: f64) {
        let mut cumulative = 0u64;
        let sep = if labels.is_empty() { "" } else { "," };
        for i in 0..=self.bounds.len() {
            cumulative += self.counts.get(i);
            let le = match self.bounds.get(i) {
                Some(&bound) => format!("{}", bound as f64 / scale),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.counts.get(self.bounds.len() + 1) as f64 / scale;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// The backend's own figures, rendered as gauges: the embedded engine has more to say than
/// the contract's [`events::Stats`].
#[derive(Debug)]
pub enum BackendStats {
    /// The embedded engine's summary.
    Engine(eventlog::StoreStats),
    /// What any backend tells.
    Contract(events::Stats),
}

/// Every metric of the event store.
#[derive(Debug)]
pub struct Metrics {
    /// Requests by route and status: slot `route * STATUSES.len() + status`, indexed like
    /// [`Route::ALL`] and [`STATUSES`].
    requests: Sharded,
    append_latency: Histogram,
    read_latency: Histogram,
    commit_events: Histogram,
    fsync_latency: Histogram,
    events_appended: AtomicU64,
    subscribers: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Sharded::new(Route::ALL.len() * STATUSES.len()),
            append_latency: Histogram::new(&LATENCY_BUCKETS_MICROS),
            read_latency: Histogram::new(&LATENCY_BUCKETS_MICROS),
            commit_events: Histogram::new(&BATCH_BUCKETS_EVENTS),
            fsync_latency: Histogram::new(&LATENCY_BUCKETS_MICROS),
            events_appended: AtomicU64::new(0),
            subscribers: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one finished request and its latency.
    pub fn request(&self, route: Route, status: u16, elapsed: Duration) {
        let route_index = Route::ALL.iter().position(|&r| r == route).unwrap_or(0);
        let status_index = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len() - 1);
        self.requests
            .add(route_index * STATUSES.len() + status_index, 1);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        match route {
            Route::Subscribe => {}
            route if route.is_append() => self.append_latency.observe(micros),
            _ => self.read_latency.observe(micros),
        }
    }

    /// Records one durable commit of `events` events (called from the embedded writer
    /// thread: a few atomic adds), and its fsync time when it fsynced itself.
    pub fn commit(&self, events: u64, fsync: Option<Duration>) {
        self.commit_events.observe(events);
        self.events_appended.fetch_add(events, Ordering::Relaxed);
        if let Some(fsync) = fsync {
            self.fsync_latency
                .observe(u64::try_from(fsync.as_micros()).unwrap_or(u64::MAX));
        }
    }

    /// A subscriber connected (`+1`) or left (`-1`).
    pub fn subscribers_add(&self, delta: i64) {
        if delta >= 0 {
            self.subscribers.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.subscribers
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Appends the Prometheus text of these metrics and of `stats` to `out`.
    pub fn render(&self, stats: Option<&BackendStats>, out: &mut String) {
        out.push_str(
            "# HELP logbook_events_requests_total Event store HTTP requests by route and status.\n",
        );
        out.push_str("# TYPE logbook_events_requests_total counter\n");
        for (route_index, route) in Route::ALL.iter().enumerate() {
            for (status_index, status) in STATUSES.iter().enumerate() {
                let count = self
                    .requests
                    .get(route_index * STATUSES.len() + status_index);
                if count == 0 {
                    continue;
                }
                let status = if *status == 0 {
                    "other".to_owned()
                } else {
                    status.to_string()
                };
                let _ = writeln!(
                    out,
                    "logbook_events_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
                    route.label()
                );
            }
        }
        let histograms: [(&str, &str, &Histogram, f64); 4] = [
            (
                "logbook_events_append_duration_seconds",
                "Latency of append requests (201/200 and errors).",
                &self.append_latency,
                1e6,
            ),
            (
                "logbook_events_read_duration_seconds",
                "Latency of read requests.",
                &self.read_latency,
                1e6,
            ),
            (
                "logbook_events_commit_batch_events",
                "Events per durable group commit (fsync batch size).",
                &self.commit_events,
                1.0,
            ),
            (
                "logbook_events_fsync_duration_seconds",
                "Duration of one log fsync.",
                &self.fsync_latency,
                1e6,
            ),
        ];
        for (name, help, histogram, scale) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            histogram.render(out, name, "", scale);
        }
        let mut gauge = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            "logbook_events_appended_total",
            "counter",
            "Events made durable since start.",
            self.events_appended.load(Ordering::Relaxed),
        );
        gauge(
            "logbook_events_subscribers",
            "gauge",
            "Open SSE subscriptions.",
            self.subscribers.load(Ordering::Relaxed),
        );
        if let Some(BackendStats::Contract(stats)) = stats {
            gauge(
                "logbook_events_stored",
                "gauge",
                "Events in the log.",
                stats.head,
            );
            gauge(
                "logbook_events_streams",
                "gauge",
                "Streams in the log.",
                stats.streams,
            );
            gauge(
                "logbook_events_writable",
                "gauge",
                "1 while the log accepts appends, 0 after a write failure stopped it.",
                u64::from(stats.writable),
            );
        }
        if let Some(BackendStats::Engine(stats)) = stats {
            gauge(
                "logbook_events_stored",
                "gauge",
                "Events in the log.",
                stats.events,
            );
            gauge(
                "logbook_events_streams",
                "gauge",
                "Streams in the log.",
                stats.streams,
            );
            gauge(
                "logbook_events_log_bytes",
                "gauge",
                "Bytes of log on disk.",
                stats.log_bytes,
            );
            gauge(
                "logbook_events_segments",
                "gauge",
                "Log segment files.",
                stats.segments,
            );
            gauge(
                "logbook_events_index_heap_bytes",
                "gauge",
                "Approximate heap bytes of the in-memory index.",
                stats.index_heap_bytes,
            );
            gauge(
                "logbook_events_fsyncs_total",
                "counter",
                "Log fsyncs since start.",
                stats.fsyncs,
            );
            gauge(
                "logbook_events_writable",
                "gauge",
                "1 while the log accepts appends, 0 after a write failure stopped it.",
                u64::from(stats.writable),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_cumulative_buckets_sum_and_count() {
        let histogram = Histogram::new(&BATCH_BUCKETS_EVENTS);
        histogram.observe(1);
        histogram.observe(3);
        histogram.observe(5000);
        let mut out = String::new();
        histogram.render(&mut out, "h", "", 1.0);
        assert!(out.contains("h_bucket{le=\"1\"} 1\n"));
        assert!(out.contains("h_bucket{le=\"4\"} 2\n"));
        assert!(out.contains("h_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("h_sum 5004\n"));
        assert!(out.contains("h_count 3\n"));
    }

    #[test]
    fn counts_from_many_threads_add_up_across_shards() {
        let metrics = Metrics::default();
        std::thread::scope(|scope| {
            for _ in 0..2 * SHARDS {
                scope.spawn(|| {
                    for _ in 0..100 {
                        metrics.request(Route::GetEvent, 200, Duration::from_micros(10));
                    }
                });
            }
        });
        let mut out = String::new();
        metrics.render(None, &mut out);
        let expected = 2 * SHARDS * 100;
        assert!(
            out.contains(&format!(
                "logbook_events_requests_total{{route=\"{}\",status=\"200\"}} {expected}\n",
                Route::GetEvent.label()
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "logbook_events_read_duration_seconds_count {expected}\n"
            )),
            "{out}"
        );
    }
}
