//! Wall-clock time as stored: milliseconds since the Unix epoch (UTC), rendered as RFC 3339.
//!
//! Both databases store times as `BIGINT` milliseconds so that one query text serves both and
//! comparisons are plain integer comparisons.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}

/// Converts a duration to whole milliseconds for arithmetic on stored times.
pub(crate) fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The delay before attempt `attempts + 1`, after `attempts` failures.
pub(crate) fn backoff(initial: Duration, max: Duration, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(31));
    initial.saturating_mul(factor).min(max)
}

/// `ms` as RFC 3339 with milliseconds, e.g. `2026-11-27T10:00:00.123Z`.
pub(crate) fn rfc3339(ms: i64) -> String {
    web::time::rfc3339_millis(ms)
}

/// `ms` as a human date and time for an email, e.g. `2026-12-04 10:00 UTC`.
pub(crate) fn human(ms: i64) -> String {
    let (date, time_of_day_ms) = split(ms);
    let (hours, minutes) = clock(time_of_day_ms);
    format!("{date} {hours:02}:{minutes:02} UTC")
}

fn split(ms: i64) -> (String, i64) {
    const MS_PER_DAY: i64 = 86_400_000;
    let days = ms.div_euclid(MS_PER_DAY);
    let (year, month, day) = web::time::civil_from_days(days);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        ms.rem_euclid(MS_PER_DAY),
    )
}

fn clock(time_of_day_ms: i64) -> (i64, i64) {
    (time_of_day_ms / 3_600_000, time_of_day_ms / 60_000 % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_renders_as_1970() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn a_known_instant_renders_exactly() {
        // 2026-11-27T10:00:00.123Z
        assert_eq!(rfc3339(1_795_773_600_123), "2026-11-27T10:00:00.123Z");
        assert_eq!(human(1_795_773_600_123), "2026-11-27 10:00 UTC");
    }

    #[test]
    fn a_leap_day_renders_exactly() {
        // 2024-02-29T23:59:59.999Z
        assert_eq!(rfc3339(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
    }
}
