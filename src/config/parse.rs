//! The litestream.yml schema, top level: walks the root mapping, reads the global keys
//! (snapshot, levels, l0-retention, shutdown-sync, heartbeat, validation, retention, logging,
//! socket, ...) and the global replica settings, and builds the typed [`Config`], handing each
//! `dbs:` entry to db.rs.
//!
//! Must never parse a database's or a replica's keys itself (db.rs, replica.rs, s3.rs and
//! settings.rs own those), never touch the filesystem or the network, and never put a secret
//! in a warning or an error.

use super::db::{build_db, read_snapshot};
use super::error::ConfigError;
use super::fields::{Ctx, Fields};
use super::settings::read_settings;
use super::types::*;
use super::yaml::Node;
use super::{Config, ConfigSource};

/// Build a [`Config`] from the (expanded) YAML tree.
pub(crate) fn build(
    ctx: &mut Ctx<'_>,
    root: Option<&Node>,
    source: ConfigSource,
) -> Result<Config, ConfigError> {
    let mut cfg = Config::empty(source);
    let null = Node::Scalar {
        text: String::new(),
        plain: true,
        tag: None,
        line: 0,
    };
    let root = root.unwrap_or(&null);
    let mut f = Fields::of(ctx, root, "")?;
    let global = read_settings(ctx, &mut f)?;

    macro_rules! set {
        ($fields:expr, $key:literal, $method:ident, $field:expr) => {
            if let Some((n, k)) = $fields.take($key) {
                if let Some(v) = ctx.$method(n, &k)? {
                    $field = v;
                }
            }
        };
    }
    macro_rules! opt_string {
        ($fields:expr, $key:literal) => {
            match $fields.take($key) {
                Some((n, k)) => ctx.string(n, &k)?.non_empty().map(str::to_string),
                None => None,
            }
        };
    }
    cfg.snapshot = read_snapshot(ctx, &mut f, SnapshotConfig::default())?;
    cfg.addr = opt_string!(f, "addr");
    cfg.mcp_addr = opt_string!(f, "mcp-addr");
    // `walship replicate` without -exec runs it, as `litestream replicate` does.
    cfg.exec = opt_string!(f, "exec");
    set!(f, "l0-retention", duration, cfg.l0_retention);
    set!(
        f,
        "l0-retention-check-interval",
        positive_duration,
        cfg.l0_retention_check_interval
    );
    set!(
        f,
        "shutdown-sync-timeout",
        duration,
        cfg.shutdown_sync_timeout
    );
    set!(
        f,
        "shutdown-sync-interval",
        positive_duration,
        cfg.shutdown_sync_interval
    );
    set!(f, "lease-ttl", duration, cfg.lease_ttl);
    set!(
        f,
        "lease-renew-interval",
        positive_duration,
        cfg.lease_renew_interval
    );
    if !cfg.lease_ttl.is_zero() && cfg.lease_renew_interval >= cfg.lease_ttl {
        return Err(ConfigError::InvalidValue {
            at: ctx.at(root_line_of(root, "lease-renew-interval")),
            key: "lease-renew-interval".into(),
            message: format!(
                "must be shorter than `lease-ttl` ({}), e.g. a third of it",
                super::duration::format_go_duration(cfg.lease_ttl)
            ),
        });
    }
    set!(f, "verify-compaction", bool, cfg.verify_compaction);
    cfg.heartbeat_url = opt_string!(f, "heartbeat-url");
    if let Some(u) = &cfg.heartbeat_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(ConfigError::InvalidValue {
                at: ctx.at(root_line_of(root, "heartbeat-url")),
                key: "heartbeat-url".into(),
                message: "must be an http:// or https:// URL".into(),
            });
        }
    }
    if let Some((n, k)) = f.take("heartbeat-interval") {
        if let Some(d) = ctx.duration(n, &k)? {
            if d < defaults::MIN_HEARTBEAT_INTERVAL {
                return Err(ConfigError::InvalidDuration {
                    at: ctx.at(n.line()),
                    key: k,
                    value: super::duration::format_go_duration(d),
                    reason: "must be at least 1m".into(),
                });
            }
            cfg.heartbeat_interval = d;
        }
    }
    if let Some((n, k)) = f.take("levels") {
        if !n.is_null() {
            let Node::Seq { items, .. } = n else {
                return Err(ConfigError::InvalidValue {
                    at: ctx.at(n.line()),
                    key: k,
                    message: format!(
                        "expected a list of `- interval: ...` entries, found {}",
                        n.kind_name()
                    ),
                });
            };
            cfg.levels.clear();
            for (i, item) in items.iter().enumerate() {
                let mut lf = Fields::of(ctx, item, &format!("{k}[{i}]"))?;
                let d = match lf.take("interval") {
                    Some((n, k)) => ctx.positive_duration(n, &k)?,
                    None => None,
                };
                let d = d.ok_or_else(|| {
                    ConfigError::missing(
                        ctx.at(item.line()),
                        format!("{k}[{i}].interval"),
                        "each compaction level needs `interval:` (e.g. 30s, 5m, 1h)",
                        ctx.unset_on(item.line()),
                    )
                })?;
                lf.finish(ctx);
                cfg.levels.push(d);
            }
        }
    }
    for (section, handler) in [
        ("validation", 0),
        ("retention", 1),
        ("logging", 2),
        ("socket", 3),
    ] {
        let Some((n, k)) = f.take(section) else {
            continue;
        };
        let mut sf = Fields::of(ctx, n, &k)?;
        match handler {
            0 => {
                if let Some((n, k)) = sf.take("interval") {
                    cfg.validation_interval = ctx.positive_duration(n, &k)?;
                }
            }
            1 => set!(sf, "enabled", bool, cfg.retention_enabled),
            2 => {
                if let Some((n, k)) = sf.take("level") {
                    cfg.logging.level = ctx.string(n, &k)?.non_empty().map(str::to_string);
                    check_choice(ctx, n.line(), &k, &cfg.logging.level, LOG_LEVELS);
                }
                if let Some((n, k)) = sf.take("type") {
                    cfg.logging.kind = ctx.string(n, &k)?.non_empty().map(str::to_string);
                    check_choice(ctx, n.line(), &k, &cfg.logging.kind, LOG_TYPES);
                }
                if let Some((n, k)) = sf.take("stderr") {
                    cfg.logging.stderr = ctx.bool(n, &k)?;
                }
                set!(sf, "source", bool, cfg.logging.source);
            }
            _ => {
                set!(sf, "enabled", bool, cfg.socket.enabled);
                if let Some(p) = opt_string!(sf, "path") {
                    cfg.socket.path = p;
                }
                if let Some((n, k)) = sf.take("permissions") {
                    if let Some(v) = ctx.int(n, &k)? {
                        cfg.socket.permissions = u32::try_from(v).unwrap_or(0o600);
                    }
                }
            }
        }
        sf.finish(ctx);
    }

    if let Some((n, k)) = f.take("dbs") {
        match n {
            Node::Seq { items, .. } => {
                for (i, item) in items.iter().enumerate() {
                    let db = build_db(ctx, item, i, &global, cfg.snapshot)?;
                    if let Some(prev) = cfg.dbs.iter().find(|d| d.path == db.path) {
                        return Err(ConfigError::Conflict {
                            at: ctx.at(item.line()),
                            key: db.key.clone(),
                            message: format!(
                                "{} is already listed as {}; list each database once",
                                db.path.display(),
                                prev.key
                            ),
                        });
                    }
                    cfg.dbs.push(db);
                }
            }
            n if n.is_null() => {}
            other => {
                return Err(ConfigError::InvalidValue {
                    at: ctx.at(other.line()),
                    key: k,
                    message: format!(
                    "expected a list of databases (lines starting with `- path: ...`), found {}",
                    other.kind_name()
                ),
                })
            }
        }
    }
    f.finish(ctx);
    if let Some(line) = global.age_line {
        return Err(ConfigError::InvalidValue {
            at: ctx.at(line),
            key: "age".into(),
            message: "age encryption is not supported (Litestream 0.5 rejects it too); remove the `age:` section".into(),
        });
    }
    if cfg.dbs.is_empty() {
        ctx.warn(root.line(), "no databases are listed under `dbs:`; walship will not replicate anything from this file");
    }
    Ok(cfg)
}

fn root_line_of(root: &Node, key: &str) -> usize {
    match root {
        Node::Map { entries, .. } => entries
            .iter()
            .find(|(k, _)| matches!(k, Node::Scalar { text, .. } if text == key))
            .map_or(0, |(k, _)| k.line()),
        _ => 0,
    }
}

/// `logging.level` values Litestream 0.5 knows (case-insensitive; anything else means info).
const LOG_LEVELS: &[&str] = &["debug", "info", "warn", "warning", "error"];
/// `logging.type` values (Litestream: anything but `json` means text).
const LOG_TYPES: &[&str] = &["text", "json"];

/// Warns (never fails: a logging typo must not stop replication) when `value` is not one of
/// `choices`, saying what walship does instead.
fn check_choice(
    ctx: &mut Ctx<'_>,
    line: usize,
    key: &str,
    value: &Option<String>,
    choices: &[&str],
) {
    let Some(v) = value else { return };
    if !choices.iter().any(|c| c.eq_ignore_ascii_case(v)) {
        let fallback = if choices == LOG_TYPES { "text" } else { "info" };
        ctx.warn(
            line,
            format!(
                "`{key}` = {v:?} is not one of {}; using {fallback}",
                choices.join(", ")
            ),
        );
    }
}
