//! RFC 3339 timestamps <-> milliseconds since the Unix epoch (UTC, proleptic Gregorian).

/// Milliseconds since the Unix epoch as RFC 3339 in UTC with milliseconds,
/// e.g. `2026-11-25T10:00:00.123Z`.
pub fn format_timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01 (inverse of [`civil_from_days`]).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 date-time (`2026-11-25T10:00:00Z`, `2026-11-25T12:00:00.5+02:00`) into
/// milliseconds since the Unix epoch. `T` may also be `t` or a space, `Z` may be `z`; the
/// fraction may have 1 to 9 digits and is truncated to milliseconds; seconds must be < 60.
pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    let bad = |why: &str| {
        format!("invalid timestamp {s:?}: {why} (expected RFC 3339, e.g. 2026-11-25T10:00:00Z)")
    };
    let b = s.as_bytes();
    let num = |at: usize, len: usize| -> Option<i64> {
        let d = b.get(at..at + len)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0i64, |n, c| n * 10 + i64::from(c - b'0')))
    };
    let sep = |at: usize, set: &[u8]| b.get(at).is_some_and(|c| set.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = (
        num(0, 4),
        num(5, 2),
        num(8, 2),
        num(11, 2),
        num(14, 2),
        num(17, 2),
    ) else {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] {
        return Err(bad("no such date"));
    }
    if h > 23 || mi > 59 || sec > 59 {
        return Err(bad("no such time of day"));
    }
    let mut at = 19;
    let mut millis = 0i64;
    if sep(at, b".") {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if !(1..=9).contains(&digits) {
            return Err(bad("the fraction of a second needs 1 to 9 digits"));
        }
        for i in 0..3 {
            millis = millis * 10
                + if i < digits {
                    i64::from(b[at + 1 + i] - b'0')
                } else {
                    0
                };
        }
        at += 1 + digits;
    }
    let offset_min = match b.get(at) {
        Some(b'Z' | b'z') if b.len() == at + 1 => 0,
        Some(&c @ (b'+' | b'-')) if b.len() == at + 6 && sep(at + 3, b":") => {
            let (Some(oh), Some(om)) = (num(at + 1, 2), num(at + 4, 2)) else {
                return Err(bad("expected a UTC offset like +02:00"));
            };
            if oh > 23 || om > 59 {
                return Err(bad("UTC offset out of range"));
            }
            if c == b'-' {
                -(oh * 60 + om)
            } else {
                oh * 60 + om
            }
        }
        _ => return Err(bad("expected Z or a UTC offset like +02:00 after the time")),
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Ok(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp(-1), "1969-12-31T23:59:59.999Z");
        let d = days_from_civil(2026, 11, 25);
        assert_eq!(civil_from_days(d), (2026, 11, 25));
        assert_eq!(
            format_timestamp(d * 86_400_000 + 36_000_123),
            "2026-11-25T10:00:00.123Z"
        );
        for z in [-800_000, -1, 0, 59, 60, 365, 11_016, 20_000, 2_000_000] {
            let (y, m, dd) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, dd), z);
        }
    }

    #[test]
    fn parses_rfc3339() {
        let base = days_from_civil(2026, 11, 25) * 86_400_000 + 36_000_000;
        assert_eq!(parse_timestamp("2026-11-25T10:00:00Z"), Ok(base));
        assert_eq!(parse_timestamp("2026-11-25t10:00:00z"), Ok(base));
        assert_eq!(parse_timestamp("2026-11-25 10:00:00Z"), Ok(base));
        assert_eq!(parse_timestamp("2026-11-25T12:30:00+02:30"), Ok(base));
        assert_eq!(parse_timestamp("2026-11-25T05:00:00-05:00"), Ok(base));
        assert_eq!(parse_timestamp("2026-11-25T10:00:00.5Z"), Ok(base + 500));
        assert_eq!(
            parse_timestamp("2026-11-25T10:00:00.123456789Z"),
            Ok(base + 123)
        );
        assert_eq!(parse_timestamp("1969-12-31T23:59:59.999Z"), Ok(-1));
        assert_eq!(parse_timestamp("2024-02-29T00:00:00Z").map(|_| ()), Ok(()));
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25T10:00Z",
            "2026-11-25T10:00:00",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T10:00:60Z",
            "2026-11-25T10:00:00.Z",
            "2026-11-25T10:00:00+0200",
            "2026-11-25T10:00:00+02:00x",
            "2026-11-25T10:00:00.1234567890Z",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
