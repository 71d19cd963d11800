//! Turning the `DB_PATH | REPLICA_URL` argument into a replica to read, and saying what a
//! replica URL holds when it holds no replica itself.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use walvfs::config::Config;
use walvfs::storage::{self, Storage};

use crate::CmdError;

pub struct Source {
    pub storage: Box<dyn Storage>,
    /// The database path when the argument was a DB_PATH found in a config.
    pub db_path: Option<PathBuf>,
}

/// Litestream treats `scheme://...` as a replica URL (`file:///dir`, `s3://bucket/path`
/// with `?endpoint=host:port` for S3-compatible stores, `gs://bucket/path`); walship also
/// takes an existing directory (a file replica's root) as one.
pub fn is_replica_arg(arg: &str) -> bool {
    arg.contains("://") || Path::new(arg).is_dir()
}

pub fn resolve(arg: &str, config: Option<&str>) -> Result<Source, CmdError> {
    if is_replica_arg(arg) {
        if config.is_some() {
            return Err(CmdError::Usage(
                "-config cannot be used with a replica URL".into(),
            ));
        }
        let storage = storage::from_url(arg).map_err(|e| anyhow!("{e}"))?;
        return Ok(Source {
            storage,
            db_path: None,
        });
    }
    let cfg = match config {
        Some(p) => Config::load(Path::new(p)).with_context(|| format!("loading config {p}"))?,
        None => Config::discover().context("finding the config")?.ok_or_else(|| {
            anyhow!(
                "no config to look up {arg} in (looked for $WALSHIP_CONFIG, ./walship.yml, ./litestream.yml and \
                 $WALSHIP_REPLICA_URL); pass -config PATH, or give the replica URL and -o instead"
            )
        })?,
    };
    for w in &cfg.warnings {
        eprintln!("walship: warning: {w}");
    }
    let Some(db) = cfg.db_for(Path::new(arg)) else {
        let known = cfg
            .dbs
            .iter()
            .map(|d| d.path.display().to_string())
            .collect::<Vec<_>>();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        return Err(anyhow!(
            "database {arg} is not in config {} (databases there: {known})",
            cfg.source_name()
        )
        .into());
    };
    // file, s3 (AWS or an S3-compatible endpoint) or gs (GCS's S3-interoperable API).
    let storage = storage::open(&db.replica.kind).map_err(|e| {
        anyhow!(
            "database {arg}: cannot open its {} replica ({}): {e}",
            db.replica.kind.type_name(),
            cfg.source_name()
        )
    })?;
    Ok(Source {
        storage,
        db_path: Some(PathBuf::from(arg)),
    })
}

/// `err` (a replica with no LTX files), naming the replicas found one level below a file
/// replica URL: `WALSHIP_REPLICA_URL` keeps each database's replica in `<url>/<file name>`, so
/// restoring the URL itself finds nothing. (S3 and GCS roots are not searched: listing their
/// sub-paths needs a storage call the backends do not have yet.)
pub fn no_files(err: walvfs::restore::RestoreError, arg: &str, out: &Path) -> anyhow::Error {
    let subs = sub_replicas(arg);
    if subs.is_empty() {
        return err.into();
    }
    anyhow!(
        "{arg} holds no LTX files itself, but it holds the replicas of {} database{} ({}): \
         WALSHIP_REPLICA_URL keeps each database in <url>/<database file name>, so restore one \
         of them, e.g. walship restore -o {} {}",
        subs.len(),
        if subs.len() == 1 { "" } else { "s" },
        subs.join(", "),
        out.display(),
        subs[0]
    )
}

/// `<arg>/<name>` for each directory under a file replica URL (or directory) that holds an
/// `ltx/` directory, sorted.
fn sub_replicas(arg: &str) -> Vec<String> {
    let (root, prefix) = match arg.strip_prefix("file://") {
        Some(p) => (PathBuf::from(p), "file://"),
        None if !arg.contains("://") => (PathBuf::from(arg), ""),
        None => return Vec::new(),
    };
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut subs: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("ltx").is_dir())
        .map(|e| format!("{prefix}{}", root.join(e.file_name()).display()))
        .collect();
    subs.sort();
    subs
}
