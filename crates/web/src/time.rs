//! RFC 3339 timestamps in UTC without a date-time dependency.

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// `units` (counted `per_second` to a second since the Unix epoch) as RFC 3339 UTC with
/// `digits` fractional digits.
fn rfc3339(units: i64, per_second: i64, digits: usize) -> String {
    let per_day = per_second * 86_400;
    let (year, month, day) = civil_from_days(units.div_euclid(per_day));
    let of_day = units.rem_euclid(per_day);
    let seconds = of_day / per_second;
    let fraction = of_day % per_second;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:0digits$}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

/// Microseconds since the Unix epoch as RFC 3339, e.g. `2026-11-27T10:00:00.123456Z`.
pub fn rfc3339_micros(micros: i64) -> String {
    rfc3339(micros, 1_000_000, 6)
}

/// Milliseconds since the Unix epoch as RFC 3339, e.g. `2026-11-27T10:00:00.123Z`.
pub fn rfc3339_millis(millis: i64) -> String {
    rfc3339(millis, 1_000, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_render_exactly() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(1_795_773_600_123_456),
            "2026-11-27T10:00:00.123456Z"
        );
        assert_eq!(
            rfc3339_millis(1_795_773_600_123),
            "2026-11-27T10:00:00.123Z"
        );
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
    }
}
