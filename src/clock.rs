//! The wall clock, read in one place: milliseconds since the Unix epoch (commit times, LTX
//! timestamps, status). A clock before 1970 reads as 0 rather than failing.

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
