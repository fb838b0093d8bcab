//! Wall-clock time as stored: milliseconds since the Unix epoch (UTC), rendered as RFC 3339.
//!
//! Both databases store times as `BIGINT` milliseconds so that one query text serves both and
//! comparisons are plain integer comparisons.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}

/// `ms` as RFC 3339 with milliseconds, e.g. `2026-11-27T10:00:00.123Z`.
pub(crate) fn rfc3339(ms: i64) -> String {
    let (date, time_of_day_ms) = split(ms);
    let (hours, minutes, seconds, millis) = clock(time_of_day_ms);
    format!("{date}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z")
}

/// `ms` as a human date and time for an email, e.g. `2026-12-04 10:00 UTC`.
pub(crate) fn human(ms: i64) -> String {
    let (date, time_of_day_ms) = split(ms);
    let (hours, minutes, _, _) = clock(time_of_day_ms);
    format!("{date} {hours:02}:{minutes:02} UTC")
}

fn split(ms: i64) -> (String, i64) {
    const MS_PER_DAY: i64 = 86_400_000;
    let days = ms.div_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        ms.rem_euclid(MS_PER_DAY),
    )
}

fn clock(time_of_day_ms: i64) -> (i64, i64, i64, i64) {
    (
        time_of_day_ms / 3_600_000,
        time_of_day_ms / 60_000 % 60,
        time_of_day_ms / 1000 % 60,
        time_of_day_ms % 1000,
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
