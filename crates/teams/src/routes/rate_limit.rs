//! A per-client-address rate limit for the token endpoints (`POST /invitations/accept` and
//! `POST /invitations/preview`): a token bucket per address holding `ACCEPT_RATE_PER_MINUTE`
//! requests, refilled continuously at that rate. Over it: 429 with `Retry-After`.
//!
//! The address is the TCP peer from axum's `ConnectInfo<SocketAddr>`, which exists only when
//! the router is served with `into_make_service_with_connect_info::<SocketAddr>()`. Without it
//! the limiter does not fail the request: every such request shares one bucket (so the limit
//! still caps the total rate), and a warning saying how to serve the router is logged once.
//! IPv6 addresses are limited per /64, the block one subscriber usually holds.
//!
//! `X-Forwarded-For` is read only when the peer is one of `TRUSTED_PROXIES` (CIDRs): then the
//! client is the right-most address of the header that is not itself a trusted proxy (each
//! proxy appends the address it saw, so everything left of the last untrusted hop could have
//! been written by the client). Without `TRUSTED_PROXIES` the header is ignored: any client can
//! write it.
//!
//! The table of buckets is bounded ([`TRACKED_ADDRESSES_MAX`]): when it is full, buckets that
//! have refilled completely (addresses idle for a minute or more) are dropped; if none has,
//! new addresses share one overflow bucket until some do. That sweep walks the whole table, so
//! it runs at most once per [`SWEEP_INTERVAL`]: a flood of new addresses into a full table
//! costs one scan a second, not one per address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Extensions, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AppState, no_store};
use crate::config::Cidr;
use crate::error::Error;

/// Most client addresses tracked at once (about 40 bytes each).
pub(crate) const TRACKED_ADDRESSES_MAX: usize = 100_000;
/// Least time between two sweeps of a full table.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Most `X-Forwarded-For` hops looked at (right to left).
const FORWARDED_HOPS_MAX: usize = 32;

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the right-most
/// untrusted address of `X-Forwarded-For` (the left-most one if every hop is trusted). `None`
/// without `ConnectInfo`.
pub(crate) fn client_ip(
    extensions: &Extensions,
    headers: &HeaderMap,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip().to_canonical())?;
    if !trusted.iter().any(|cidr| cidr.contains(peer)) {
        return Some(peer);
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .take(FORWARDED_HOPS_MAX)
        .map_while(|hop| hop.parse::<IpAddr>().ok().map(|ip| ip.to_canonical()))
        .collect();
    let untrusted = hops
        .iter()
        .find(|ip| !trusted.iter().any(|cidr| cidr.contains(**ip)));
    Some(*untrusted.or(hops.last()).unwrap_or(&peer))
}

/// Who a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    /// An IPv4 address, or an IPv6 address masked to its /64.
    Address(IpAddr),
    /// Requests served without `ConnectInfo`: the address is unknown.
    Unknown,
    /// New addresses while the table is full of active ones.
    Overflow,
}

impl Client {
    fn of(peer: Option<IpAddr>) -> Client {
        match peer.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V6(v6)) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Client::Address(IpAddr::V6(prefix.into()))
            }
            Some(v4) => Client::Address(v4),
            None => Client::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests still allowed now (fractional while refilling).
    tokens: f64,
    updated: Instant,
}

/// The buckets, and when a full table was last swept.
struct Table {
    buckets: HashMap<Client, Bucket>,
    last_sweep: Option<Instant>,
    sweeps: u64,
}

/// Token buckets per client address.
pub(crate) struct RateLimiter {
    /// Bucket size, and requests refilled per minute.
    per_minute: u32,
    table: Mutex<Table>,
    warned_without_address: AtomicBool,
}

impl RateLimiter {
    pub(crate) fn new(per_minute: u32) -> RateLimiter {
        assert!(per_minute >= 1, "checked by the settings");
        RateLimiter {
            per_minute,
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                last_sweep: None,
                sweeps: 0,
            }),
            warned_without_address: AtomicBool::new(false),
        }
    }

    fn refill_per_second(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    /// Takes one request from `client`'s bucket at `now`, or says how long until one is free.
    fn take(&self, client: Client, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(self.per_minute);
        let rate = self.refill_per_second();
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let table = &mut *table;
        let known = table.buckets.contains_key(&client);
        let client = if known || table.buckets.len() < TRACKED_ADDRESSES_MAX {
            client
        } else {
            let sweep_due = table
                .last_sweep
                .is_none_or(|last| now.saturating_duration_since(last) >= SWEEP_INTERVAL);
            if sweep_due {
                // Drop addresses whose bucket is full again: they have been idle long enough
                // that forgetting them changes nothing.
                table.last_sweep = Some(now);
                table.sweeps += 1;
                table.buckets.retain(|_, bucket| {
                    bucket.tokens
                        + now.saturating_duration_since(bucket.updated).as_secs_f64() * rate
                        < capacity
                });
            }
            if table.buckets.len() < TRACKED_ADDRESSES_MAX {
                client
            } else {
                Client::Overflow
            }
        };
        let bucket = table.buckets.entry(client).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

/// Middleware on the token routes: one request from the client's bucket, or a 429 problem
/// with `Retry-After` (whole seconds, rounded up). Every answer is `Cache-Control: no-store`.
pub(crate) async fn limit_token_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let peer = client_ip(
        request.extensions(),
        request.headers(),
        &state.settings.trusted_proxies,
    );
    let limiter = &state.accept_rate_limiter;
    if peer.is_none() && !limiter.warned_without_address.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "the teams router is served without ConnectInfo<SocketAddr>, so the token endpoints \
             are rate-limited as one client; serve it with \
             into_make_service_with_connect_info::<SocketAddr>()"
        );
    }
    match limiter.take(Client::of(peer), Instant::now()) {
        Ok(()) => no_store(next.run(request).await),
        Err(wait) => no_store(
            Error::TooManyRequests {
                retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
            .into_response(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> Client {
        Client::of(Some(text.parse().unwrap()))
    }

    fn sweeps(limiter: &RateLimiter) -> u64 {
        limiter.table.lock().unwrap().sweeps
    }

    fn forwarded(peer: &str, header: Option<&str>, trusted: &[&str]) -> Option<IpAddr> {
        let mut extensions = Extensions::new();
        extensions.insert(ConnectInfo(SocketAddr::new(peer.parse().unwrap(), 4000)));
        let mut headers = HeaderMap::new();
        if let Some(value) = header {
            headers.insert("x-forwarded-for", value.parse().unwrap());
        }
        let trusted: Vec<Cidr> = trusted.iter().map(|c| c.parse().unwrap()).collect();
        client_ip(&extensions, &headers, &trusted)
    }

    #[test]
    fn x_forwarded_for_is_ignored_without_trusted_proxies() {
        let ip = forwarded("192.0.2.7", Some("198.51.100.1"), &[]);
        assert_eq!(ip, Some("192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client() {
        let trusted = ["10.0.0.0/8", "2001:db8::/32"];
        // The client wrote a fake left-most hop; the proxies appended the real one.
        let ip = forwarded(
            "10.0.0.2",
            Some("203.0.113.9, 198.51.100.1, 10.0.0.5"),
            &trusted,
        );
        assert_eq!(ip, Some("198.51.100.1".parse().unwrap()));
        // A peer that is not a trusted proxy is the client, whatever it forwards.
        let ip = forwarded("192.0.2.7", Some("198.51.100.1"), &trusted);
        assert_eq!(ip, Some("192.0.2.7".parse().unwrap()));
        // A trusted peer without the header is the client.
        assert_eq!(
            forwarded("10.0.0.2", None, &trusted),
            Some("10.0.0.2".parse().unwrap())
        );
        // Garbage ends the walk: the hops right of it count.
        let ip = forwarded(
            "10.0.0.2",
            Some("198.51.100.1, not-an-ip, 10.0.0.9"),
            &trusted,
        );
        assert_eq!(ip, Some("10.0.0.9".parse().unwrap()));
    }

    #[test]
    fn a_burst_of_the_rate_passes_then_one_request_per_refill_interval() {
        let limiter = RateLimiter::new(6);
        let start = Instant::now();
        let client = address("192.0.2.1");
        for _ in 0..6 {
            assert!(limiter.take(client, start).is_ok());
        }
        let wait = limiter.take(client, start).unwrap_err();
        assert!((9.9..=10.0).contains(&wait.as_secs_f64()), "{wait:?}");
        assert!(
            limiter
                .take(client, start + Duration::from_secs(9))
                .is_err()
        );
        assert!(
            limiter
                .take(client, start + Duration::from_secs(11))
                .is_ok()
        );
        assert!(
            limiter
                .take(client, start + Duration::from_secs(11))
                .is_err()
        );
    }

    #[test]
    fn addresses_are_limited_separately_and_ipv6_per_64() {
        let limiter = RateLimiter::new(1);
        let now = Instant::now();
        assert!(limiter.take(address("192.0.2.1"), now).is_ok());
        assert!(limiter.take(address("192.0.2.1"), now).is_err());
        assert!(limiter.take(address("192.0.2.2"), now).is_ok());
        assert!(limiter.take(address("2001:db8:0:1::1"), now).is_ok());
        assert!(limiter.take(address("2001:db8:0:1::ffff"), now).is_err());
        assert!(limiter.take(address("2001:db8:0:2::1"), now).is_ok());
        assert_eq!(address("::ffff:192.0.2.1"), address("192.0.2.1"));
    }

    #[test]
    fn without_an_address_every_request_shares_one_bucket() {
        let limiter = RateLimiter::new(2);
        let now = Instant::now();
        assert!(limiter.take(Client::of(None), now).is_ok());
        assert!(limiter.take(Client::of(None), now).is_ok());
        assert!(limiter.take(Client::of(None), now).is_err());
        assert_eq!(sweeps(&limiter), 0);
        assert!(limiter.take(address("192.0.2.1"), now).is_ok());
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_idle_addresses_first() {
        let limiter = RateLimiter::new(1);
        let start = Instant::now();
        for n in 0..TRACKED_ADDRESSES_MAX as u32 {
            let ip = IpAddr::V4((0x0a00_0000 + n).into());
            assert!(limiter.take(Client::Address(ip), start).is_ok());
        }
        // Full of active addresses: a newcomer lands in the shared overflow bucket.
        assert!(limiter.take(address("192.0.2.1"), start).is_ok());
        assert!(limiter.take(address("192.0.2.2"), start).is_err());
        assert!(limiter.table.lock().unwrap().buckets.len() <= TRACKED_ADDRESSES_MAX + 1);
        // A flood of newcomers within the sweep interval costs one scan, not one each.
        for n in 0..1000u32 {
            let ip = IpAddr::V4((0xc633_6400 + n).into());
            let _ = limiter.take(Client::Address(ip), start);
        }
        assert_eq!(sweeps(&limiter), 1);
        // A minute later every bucket has refilled, so the idle ones are forgotten.
        let later = start + Duration::from_secs(61);
        assert!(limiter.take(address("192.0.2.3"), later).is_ok());
        assert!(limiter.take(address("192.0.2.3"), later).is_err());
        assert!(limiter.table.lock().unwrap().buckets.len() < 10);
        assert_eq!(sweeps(&limiter), 2);
    }
}
