//! Calendar arithmetic on days since the Unix epoch: the civil (proleptic Gregorian) date of a
//! day and an ISO 8601 UTC timestamp, for result headers and certificate validity windows.
//!
//! Pure functions on integers; it reads no clock and knows no time zones or leap seconds.

/// Year, month, day of the day `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// [`civil_from_days`] in the types certificate builders take (rcgen's `date_time_ymd`); the
/// year saturates outside `i32` (month and day always fit `u8`).
pub fn civil_ymd(days: i64) -> (i32, u8, u8) {
    let (year, month, day) = civil_from_days(days);
    let year = i32::try_from(year).unwrap_or(if year < 0 { i32::MIN } else { i32::MAX });
    // Month is 1..=12 and day 1..=31 by construction.
    (year, month as u8, day as u8)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
pub fn iso8601(unix: u64) -> String {
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days((unix / 86_400) as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dates certificates are stamped with (moved from `sallyport::tls`).
    #[test]
    fn civil_dates() {
        let cases = [
            (0, (1970, 1, 1)),
            (19_723, (2024, 1, 1)),
            (19_782, (2024, 2, 29)),
            (-1, (1969, 12, 31)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
        ];
        for (days, (y, m, d)) in cases {
            assert_eq!(civil_ymd(days), (y, m, d));
            assert_eq!(
                civil_from_days(days),
                (i64::from(y), i64::from(m), i64::from(d))
            );
        }
    }

    #[test]
    fn iso8601_formats_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
