//! Logging: a small stderr logger for the extension, level from `WALSHIP_LOG`
//! (error, warn, info, debug, trace, off; default info). Never logs secrets: callers pass
//! already-redacted values (storage `describe()` has no credentials).

use log::{LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &Record) {
        if self.enabled(r.metadata()) {
            eprintln!(
                "walship {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

pub fn level_from_env() -> LevelFilter {
    match std::env::var("WALSHIP_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => LevelFilter::Info,
    }
}

/// Installs the logger unless the host program already installed one.
pub fn init() {
    if log::set_logger(&Stderr).is_ok() {
        log::set_max_level(level_from_env());
    }
}

/// Logs `message` as a warning the first time `key` is seen in this process, and never again:
/// for conditions that persist (an unwritable directory) and would otherwise repeat every sync.
pub fn warn_once(key: &str, message: impl FnOnce() -> String) {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen
        .get_or_insert_with(HashSet::new)
        .insert(key.to_string())
    {
        log::warn!("{}", message());
    }
}
