//! Turning the `DB_PATH | REPLICA_URL` argument into a replica to read.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use walvfs::config::{Config, ReplicaKind};
use walvfs::storage::{self, file::FileStorage, Storage};

use crate::CmdError;

pub struct Source {
    pub storage: Box<dyn Storage>,
    /// The database path when the argument was a DB_PATH found in a config.
    pub db_path: Option<PathBuf>,
}

/// Litestream treats `scheme://...` as a replica URL; walship also takes an existing
/// directory (a file replica's root) as one.
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
    let storage: Box<dyn Storage> = match &db.replica.kind {
        ReplicaKind::File { path } => Box::new(FileStorage::new(path.clone())),
        other => {
            return Err(anyhow!(
                "database {arg} replicates to a {} replica ({}), which walship cannot read yet (file replicas only)",
                other.type_name(),
                cfg.source_name()
            )
            .into())
        }
    };
    Ok(Source {
        storage,
        db_path: Some(PathBuf::from(arg)),
    })
}
