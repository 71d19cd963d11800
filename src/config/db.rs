//! One entry under `dbs:`: its database path (`path:`, with `sqlite://` prefixes stripped), or
//! a directory of databases (`dir:` + `pattern:` + `recursive:`), per-database settings, `snapshot:` (also read at the top
//! level, as the default each database inherits), and its single replica (`replica:` or a
//! one-item `replicas:`), which replica.rs builds.
//!
//! Must never open, create or stat the database file (its path is resolved lexically), and
//! never parse replica keys itself.

use std::path::PathBuf;

use super::error::ConfigError;
use super::fields::{join_key, missing, ne, Ctx, Fields, Val};
use super::paths::resolve_path;
use super::replica::build_replica;
use super::settings::RawSettings;
use super::types::*;
use super::yaml::Node;

pub(crate) fn read_snapshot(
    ctx: &mut Ctx<'_>,
    f: &mut Fields<'_>,
    base: SnapshotConfig,
) -> Result<SnapshotConfig, ConfigError> {
    let mut snap = base;
    if let Some((n, k)) = f.take("snapshot") {
        let mut sf = Fields::of(ctx, n, &k)?;
        if let Some((n, k)) = sf.take("interval") {
            snap.interval = ctx.positive_duration(n, &k)?.unwrap_or(snap.interval);
        }
        if let Some((n, k)) = sf.take("retention") {
            snap.retention = ctx.positive_duration(n, &k)?.unwrap_or(snap.retention);
        }
        sf.finish(ctx);
    }
    Ok(snap)
}

pub(crate) fn build_db(
    ctx: &mut Ctx<'_>,
    node: &Node,
    idx: usize,
    global: &RawSettings,
    gsnap: SnapshotConfig,
) -> Result<DbConfig, ConfigError> {
    let key = format!("dbs[{idx}]");
    let mut f = Fields::of(ctx, node, &key)?;
    let path = match f.take("path") {
        Some((n, k)) => Some(ctx.string(n, &k)?),
        None => None,
    };
    let dir = match f.take("dir") {
        Some((n, k)) => Some(ctx.string(n, &k)?),
        None => None,
    };
    let pattern = match f.take("pattern") {
        Some((n, k)) => Some(ctx.string(n, &k)?),
        None => None,
    };
    let recursive = match f.take("recursive") {
        Some((n, k)) => ctx.bool(n, &k)?.unwrap_or(false),
        None => false,
    };
    // `watch:` needs nothing here: walship sees every database the app opens, as it opens it.
    f.ignore(&["watch", "meta-dir"]);
    let mut dir_match = None;
    let path = match (path, ne(&dir).or(ne(&pattern))) {
        (Some(p), None) if !p.text.is_empty() => p,
        (Some(p), Some(_)) if !p.text.is_empty() => {
            return Err(ConfigError::Conflict {
                at: ctx.at(node.line()),
                key,
                message: "cannot set both `path` and `dir`/`pattern`; use `path:` for one database"
                    .into(),
            })
        }
        (_, Some(_)) => {
            let nonempty = |v: &Option<Val>| v.clone().filter(|v| v.non_empty().is_some());
            let (Some(d), Some(pat)) = (nonempty(&dir), nonempty(&pattern)) else {
                let (what, which) = if ne(&dir).is_some() {
                    ("pattern", "`pattern:` (e.g. \"*.db\") with `dir:`")
                } else {
                    ("dir", "`dir:` (the directory) with `pattern:`")
                };
                return Err(missing(
                    ctx,
                    None,
                    join_key(&key, what),
                    node.line(),
                    &format!("directory replication needs {which}"),
                ));
            };
            if let Err(e) = glob::Pattern::new(&pat.text) {
                return Err(ConfigError::Conflict {
                    at: ctx.at(pat.line),
                    key: pat.key.clone(),
                    message: format!(
                        "{:?} is not a valid file-name pattern ({e}); use `*`, `?` and `[...]`, \
                         e.g. \"*.db\"",
                        pat.text
                    ),
                });
            }
            dir_match = Some(DirMatch {
                pattern: pat.text.clone(),
                recursive,
            });
            d
        }
        (path, None) => {
            return Err(missing(
                ctx,
                path.as_ref(),
                join_key(&key, "path"),
                node.line(),
                "each entry under `dbs:` needs `path:` with the database file",
            ))
        }
    };
    let raw = path
        .text
        .strip_prefix("sqlite3://")
        .or_else(|| path.text.strip_prefix("sqlite://"))
        .unwrap_or(&path.text);
    let db_path = resolve_path(ctx, raw, &path.key, path.line)?;
    let snapshot = read_snapshot(ctx, &mut f, gsnap)?;
    let mut db = DbConfig::with_defaults(db_path, key.clone(), placeholder_replica(), snapshot);
    db.dir = dir_match;
    if let Some((n, k)) = f.take("meta-path") {
        let v = ctx.string(n, &k)?;
        if let Some(t) = v.non_empty() {
            db.meta_path = Some(resolve_path(ctx, t, &k, v.line)?);
        }
    }
    macro_rules! set {
        ($key:literal, $method:ident, $field:expr) => {
            if let Some((n, k)) = f.take($key) {
                if let Some(v) = ctx.$method(n, &k)? {
                    $field = v;
                }
            }
        };
    }
    set!("monitor-interval", positive_duration, db.monitor_interval);
    set!("checkpoint-interval", duration, db.checkpoint_interval);
    set!("busy-timeout", duration, db.busy_timeout);
    set!(
        "min-checkpoint-page-count",
        int,
        db.min_checkpoint_page_count
    );
    set!("truncate-page-n", int, db.truncate_page_n);
    set!("max-sync-wal-bytes", int, db.max_sync_wal_bytes);
    set!(
        "restore-if-db-not-exists",
        bool,
        db.restore_if_db_not_exists
    );
    if let Some((n, k)) = f.take("max-checkpoint-page-count") {
        db.max_checkpoint_page_count = ctx.int(n, &k)?;
    }

    let single = f.take("replica");
    let list = f.take("replicas");
    f.finish(ctx);
    let single = single.filter(|(n, _)| !n.is_null());
    let list = list.filter(|(n, _)| !n.is_null());
    let replica = match (single, list) {
        (Some(_), Some((n, _))) => {
            return Err(ConfigError::Conflict {
                at: ctx.at(n.line()),
                key,
                message: "cannot set both `replica` and `replicas`; use `replica:` (Litestream 0.5 allows one replica per database)".into(),
            })
        }
        (Some((n, k)), None) => build_replica(ctx, n, &k, global)?,
        (None, Some((n, k))) => match n {
            Node::Seq { items, .. } if items.len() == 1 => build_replica(ctx, &items[0], &format!("{k}[0]"), global)?,
            Node::Seq { items, .. } if items.is_empty() => {
                return Err(ConfigError::missing(ctx.at(n.line()), k, "`replicas:` is an empty list; add one replica", vec![]))
            }
            Node::Seq { items, .. } => {
                return Err(ConfigError::Conflict {
                    at: ctx.at(items[1].line()),
                    key: k,
                    message: format!("{} replicas are listed, but Litestream 0.5 (and walship) allow exactly one per database; keep one", items.len()),
                })
            }
            other => {
                return Err(ConfigError::InvalidValue {
                    at: ctx.at(other.line()),
                    key: k,
                    message: format!("expected a list (lines starting with `- `), found {}; or use `replica:` for a single replica", other.kind_name()),
                })
            }
        },
        (None, None) => {
            return Err(ConfigError::missing(ctx.at(node.line()), join_key(&key, "replica"),
                "each database needs a `replica:` with a `url:` (e.g. s3://bucket/path) or a `type:`", vec![]))
        }
    };
    db.replica = replica;
    Ok(db)
}

fn placeholder_replica() -> ReplicaConfig {
    ReplicaConfig {
        name: String::new(),
        sync_interval: defaults::SYNC_INTERVAL,
        retention: None,
        validation_interval: None,
        max_sync_ltx_files: defaults::MAX_SYNC_LTX_FILES,
        auto_recover: false,
        kind: ReplicaKind::File {
            path: PathBuf::new(),
        },
    }
}
