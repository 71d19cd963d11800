//! Logging: the extension's small logger. Level from `WALSHIP_LOG` (error, warn, info, debug,
//! trace, off; default info), else the config's `logging.level`; format text (default) or JSON
//! (`logging.type: json` or `WALSHIP_LOG_FORMAT=json`, one object per line); stderr unless the
//! config says `logging.stderr: false` (then stdout, as in Litestream). Never logs secrets:
//! callers pass already-redacted values (storage `describe()` has no credentials). Never
//! panics on a closed stream (a log line is dropped instead).
//!
//! Text:  `walship warn: /srv/app.db: upload of TXID ... failed: ...`
//! JSON:  `{"time":"2026-11-25T10:00:00.123Z","level":"WARN","msg":"upload ...","db":"/srv/app.db"}`

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{LevelFilter, Log, Metadata, Record};

use crate::config::LoggingConfig;

static JSON: AtomicBool = AtomicBool::new(false);
static STDOUT: AtomicBool = AtomicBool::new(false);
static SOURCE: AtomicBool = AtomicBool::new(false);
/// True when `init` installed this logger (the host app had none).
static OURS: AtomicBool = AtomicBool::new(false);

struct Logger;

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut line = if JSON.load(Ordering::Relaxed) {
            let source = SOURCE
                .load(Ordering::Relaxed)
                .then(|| format!("{}:{}", r.file().unwrap_or("?"), r.line().unwrap_or(0)));
            json_line(
                crate::clock::now_ms(),
                r.level(),
                &r.args().to_string(),
                source.as_deref(),
            )
        } else {
            format!(
                "walship {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            )
        };
        line.push('\n');
        // One write per line, so lines from different threads do not interleave.
        if let Some(f) = LOG_FILE.as_ref() {
            use std::io::Write as _;
            let _ = f
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_all(line.as_bytes());
            return;
        }
        let _ = if STDOUT.load(Ordering::Relaxed) {
            std::io::stdout().lock().write_all(line.as_bytes())
        } else {
            std::io::stderr().lock().write_all(line.as_bytes())
        };
    }
    fn flush(&self) {}
}

/// A log message that starts with a database path (`/srv/app.db: ...`, walship's convention)
/// split into that path and the rest. A prefix with a colon is a config location
/// (`/etc/app/litestream.yml:7: ...`), not a database, and stays in the message.
fn split_db(msg: &str) -> (Option<&str>, &str) {
    if msg.starts_with('/') {
        if let Some((db, rest)) = msg.split_once(": ") {
            if !db.contains(':') {
                return (Some(db), rest);
            }
        }
    }
    (None, msg)
}

/// One JSON log object (without the newline): `time` (RFC 3339, milliseconds, UTC), `level`
/// (`ERROR`, `WARN`, `INFO`, `DEBUG`, `TRACE`), `msg`, then `db` when the message names its
/// database, and `source` when asked for.
pub fn json_line(time_ms: i64, level: log::Level, msg: &str, source: Option<&str>) -> String {
    use crate::shipper::json_str;
    let (db, msg) = split_db(msg);
    let mut o = format!(
        "{{\"time\":{},\"level\":{},\"msg\":{}",
        json_str(&crate::restore::format_timestamp(time_ms)),
        json_str(level.as_str()),
        json_str(msg)
    );
    if let Some(db) = db {
        o.push_str(&format!(",\"db\":{}", json_str(db)));
    }
    if let Some(s) = source {
        o.push_str(&format!(",\"source\":{}", json_str(s)));
    }
    o.push('}');
    o
}

fn parse_level(s: &str) -> Option<LevelFilter> {
    Some(match s.to_ascii_lowercase().as_str() {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" | "warning" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

fn env_level() -> Option<String> {
    std::env::var("WALSHIP_LOG").ok().filter(|v| !v.is_empty())
}

pub fn level_from_env() -> LevelFilter {
    env_level()
        .and_then(|v| parse_level(&v))
        .unwrap_or(LevelFilter::Info)
}

fn env_json() -> bool {
    std::env::var("WALSHIP_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
}

/// Installs the logger unless the host program already installed one.
pub fn init() {
    if log::set_logger(&Logger).is_ok() {
        OURS.store(true, Ordering::SeqCst);
        JSON.store(env_json(), Ordering::Relaxed);
        log::set_max_level(level_from_env());
    }
}

/// `WALSHIP_LOG_FILE=/path`: every line is appended to that file instead of stderr/stdout (for
/// hosts that treat any output on stderr as a failure, such as Tcl's `exec`). Unset: stderr.
static LOG_FILE: once_cell::sync::Lazy<Option<std::sync::Mutex<std::fs::File>>> =
    once_cell::sync::Lazy::new(|| {
        let p = std::env::var_os("WALSHIP_LOG_FILE")?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
            .map(std::sync::Mutex::new)
    });

/// Applies the config file's `logging:` section (called once, when the config is loaded).
/// Does nothing when the host app's own logger is installed: its settings are the app's.
/// `WALSHIP_LOG` and `WALSHIP_LOG_FORMAT` win over the file.
pub fn configure(c: &LoggingConfig) {
    if !OURS.load(Ordering::SeqCst) {
        return;
    }
    if env_level().is_none() {
        if let Some(level) = c.level.as_deref() {
            log::set_max_level(parse_level(level).unwrap_or(LevelFilter::Info));
        }
    }
    if !env_json() {
        let json = c
            .kind
            .as_deref()
            .is_some_and(|k| k.eq_ignore_ascii_case("json"));
        JSON.store(json, Ordering::Relaxed);
    }
    STDOUT.store(c.stderr == Some(false), Ordering::Relaxed);
    SOURCE.store(c.source, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_time_level_msg_and_db() {
        let l = json_line(
            1_764_064_800_123,
            log::Level::Warn,
            "/srv/a \"b\".db: upload failed:\n retry",
            None,
        );
        assert_eq!(
            l,
            "{\"time\":\"2025-11-25T10:00:00.123Z\",\"level\":\"WARN\",\
             \"msg\":\"upload failed:\\u000a retry\",\"db\":\"/srv/a \\\"b\\\".db\"}"
        );
        let l = json_line(0, log::Level::Warn, "/etc/l.yml:7: unknown key", None);
        assert!(l.contains("\"msg\":\"/etc/l.yml:7: unknown key\"}"), "{l}");
        let l = json_line(0, log::Level::Info, "no database here", Some("src/x.rs:3"));
        assert_eq!(
            l,
            "{\"time\":\"1970-01-01T00:00:00.000Z\",\"level\":\"INFO\",\
             \"msg\":\"no database here\",\"source\":\"src/x.rs:3\"}"
        );
    }

    #[test]
    fn levels_accept_litestream_spellings() {
        assert_eq!(parse_level("WARNING"), Some(LevelFilter::Warn));
        assert_eq!(parse_level("Debug"), Some(LevelFilter::Debug));
        assert_eq!(parse_level("loud"), None);
    }
}
