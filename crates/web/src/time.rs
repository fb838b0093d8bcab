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
/// `digits` fractional digits. Every read of an event formats one, so the digits are written
/// by hand (a `format!` here was 5% of the instructions of a read by id over HTTP); years
/// outside 0000-9999 take the general path.
fn rfc3339(units: i64, per_second: i64, digits: usize) -> String {
    let per_day = per_second * 86_400;
    let (year, month, day) = civil_from_days(units.div_euclid(per_day));
    let of_day = units.rem_euclid(per_day);
    let seconds = of_day / per_second;
    let fraction = of_day % per_second;
    let (hours, minutes, seconds) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    if !(0..=9999).contains(&year) {
        return format!(
            "{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{fraction:0digits$}Z"
        );
    }
    let mut out = Vec::with_capacity(21 + digits);
    push_digits(&mut out, year as u64, 4);
    out.push(b'-');
    push_digits(&mut out, u64::from(month), 2);
    out.push(b'-');
    push_digits(&mut out, u64::from(day), 2);
    out.push(b'T');
    push_digits(&mut out, hours as u64, 2);
    out.push(b':');
    push_digits(&mut out, minutes as u64, 2);
    out.push(b':');
    push_digits(&mut out, seconds as u64, 2);
    out.push(b'.');
    push_digits(&mut out, fraction as u64, digits);
    out.push(b'Z');
    String::from_utf8(out).expect("ASCII digits")
}

/// Appends the last `width` decimal digits of `value`, zero-padded.
fn push_digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for at in (start..start + width).rev() {
        out[at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
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
        assert_eq!(
            rfc3339_micros(253_402_300_799_999_999),
            "9999-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            rfc3339_micros(253_402_300_800_000_000),
            "10000-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339_millis(-62_167_219_200_001),
            "-001-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn the_fast_path_matches_the_general_format_everywhere_it_applies() {
        let general = |units: i64, per_second: i64, digits: usize| {
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
        };
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let micros = (x % 253_402_300_800_000_000) as i64;
            assert_eq!(rfc3339_micros(micros), general(micros, 1_000_000, 6));
            let millis = micros / 1000;
            assert_eq!(rfc3339_millis(millis), general(millis, 1_000, 3));
        }
    }
}
