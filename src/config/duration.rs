//! Go `time.ParseDuration` syntax (what Litestream's YAML durations use), into
//! `std::time::Duration`: a sequence of decimal numbers, each with an optional fraction and a
//! unit (`ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`), e.g. `1s`, `500ms`, `1h30m`, `1.5h`, `10us`.
//! A bare `0` is zero. Negative values are rejected (no Litestream duration may be negative).

use std::time::Duration;

/// Shown in every "bad duration" message.
pub const DURATION_EXAMPLES: &str =
    "use Go duration syntax such as 1s, 500ms, 1m30s, 24h or 168h (units: ns, us, ms, s, m, h; a bare 0 means zero)";

const MAX: u64 = 1 << 63; // Go durations are int64 nanoseconds.

fn unit_nanos(u: &str) -> Option<u64> {
    Some(match u {
        "ns" => 1,
        "us" | "\u{00b5}s" | "\u{03bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Parse a Go duration. The error is a short reason (the caller adds key, value and examples).
pub fn parse_go_duration(input: &str) -> Result<Duration, String> {
    let mut s = input.trim();
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("missing unit (did you mean {s}s?)"));
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    while i < b.len() {
        if !(b[i] == b'.' || b[i].is_ascii_digit()) {
            return Err(format!("expected a number at {:?}", &s[i..]));
        }
        // Integer part.
        let start = i;
        let mut v: u64 = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            v = v
                .checked_mul(10)
                .and_then(|x| x.checked_add(u64::from(b[i] - b'0')))
                .filter(|&x| x <= MAX)
                .ok_or_else(|| "too large".to_string())?;
            i += 1;
        }
        let pre = i > start;
        // Fraction.
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let fstart = i;
            let mut overflow = false;
            while i < b.len() && b[i].is_ascii_digit() {
                if !overflow {
                    match f
                        .checked_mul(10)
                        .and_then(|x| x.checked_add(u64::from(b[i] - b'0')))
                    {
                        Some(x) if x <= MAX => {
                            f = x;
                            scale *= 10.0;
                        }
                        _ => overflow = true,
                    }
                }
                i += 1;
            }
            post = i > fstart;
        }
        if !pre && !post {
            return Err("a number needs digits".into());
        }
        // Unit: everything up to the next digit or '.'.
        let ustart = i;
        while i < b.len() && !(b[i] == b'.' || b[i].is_ascii_digit()) {
            i += 1;
        }
        if i == ustart {
            return Err("missing unit".into());
        }
        let u = &s[ustart..i];
        let unit = unit_nanos(u).ok_or_else(|| format!("unknown unit {u:?}"))?;
        if v > MAX / unit {
            return Err("too large".into());
        }
        v *= unit;
        if f > 0 {
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > MAX {
                return Err("too large".into());
            }
        }
        total = total
            .checked_add(v)
            .filter(|&t| t <= MAX)
            .ok_or_else(|| "too large".to_string())?;
    }
    if total == MAX && !neg {
        return Err("too large".into());
    }
    if neg && total > 0 {
        return Err("must not be negative".into());
    }
    Ok(Duration::from_nanos(total))
}

/// Render a duration the way Go prints it (`1h30m0s`, `500ms`, `0s`), for messages and docs.
pub fn format_go_duration(d: Duration) -> String {
    let n = d.as_nanos();
    if n == 0 {
        return "0s".into();
    }
    if n < 1_000 {
        return format!("{n}ns");
    }
    if n < 1_000_000 {
        return trim_frac(n as f64 / 1e3, "us");
    }
    if n < 1_000_000_000 {
        return trim_frac(n as f64 / 1e6, "ms");
    }
    let secs = d.as_secs();
    let (h, m) = (secs / 3600, (secs / 60) % 60);
    let s = trim_frac((secs % 60) as f64 + f64::from(d.subsec_nanos()) / 1e9, "s");
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

fn trim_frac(x: f64, unit: &str) -> String {
    let mut t = format!("{x:.9}");
    while t.ends_with('0') {
        t.pop();
    }
    if t.ends_with('.') {
        t.pop();
    }
    format!("{t}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_go_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn accepts_go_syntax() {
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("168h"), Duration::from_secs(168 * 3600));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("10us"), Duration::from_micros(10));
        assert_eq!(ok("10µs"), Duration::from_micros(10));
        assert_eq!(ok("10μs"), Duration::from_micros(10));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("+2m"), Duration::from_secs(120));
        assert_eq!(ok("1h2m3s4ms"), Duration::from_millis(3_723_004));
        assert_eq!(ok("2562047h"), Duration::from_secs(2_562_047 * 3600));
    }

    #[test]
    fn rejects_bad() {
        for bad in [
            "",
            "1",
            "10",
            "s",
            "1x",
            "1 s",
            "1d",
            "1w",
            ".s",
            "1.2.3s",
            "-1s",
            "1s-",
            "9999999999h",
            "abc",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should fail");
        }
        assert!(parse_go_duration("10").unwrap_err().contains("10s"));
        assert!(parse_go_duration("1d").unwrap_err().contains("\"d\""));
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
        assert_eq!(format_go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(format_go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_go_duration(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(
            format_go_duration(Duration::from_secs(168 * 3600)),
            "168h0m0s"
        );
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
    }
}
