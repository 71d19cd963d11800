//! Configuration: finds and reads the user's `litestream.yml` (Litestream 0.5 schema) or
//! `walship.yml`, and turns it into typed, validated, fully-resolved settings.
//!
//! # What this module owns
//! * Discovery ([`Config::discover`]): `WALSHIP_CONFIG`, `./walship.yml`, `./litestream.yml`,
//!   then `WALSHIP_REPLICA_URL`. See docs/CONFIGURATION.md for the rules.
//! * `$VAR` / `${VAR}` expansion on the raw text with Go `os.Expand` semantics ([`expand`]).
//! * The schema: every key Litestream 0.5 accepts is parsed (kept when walship may use it),
//!   unknown keys become [`Config::warnings`] naming the key path and line, and Litestream's
//!   defaults and merge rules (global replica settings as defaults) are applied here, once.
//! * Go duration syntax, S3/GCS/Azure/file replica URLs, relative-path resolution, and matching a
//!   database path opened by the application to its entry ([`Config::db_for`]).
//!
//! # What it must never do
//! * Never open, create or touch a database, a replica or any file other than the config file
//!   it reads (and the directories it canonicalises to compare paths).
//! * Never use the network (no region lookups, no credential endpoints).
//! * Never log, and never put a secret (access keys, SSE-C key, Azure account key, SAS token) in a `Debug` output, an error
//!   or a warning: secrets live in [`Secret`], which prints `***`. Callers log the warnings.
//!
//! # YAML crate
//! `yaml-rust2` (0.11, default features off): a maintained, pure-safe-Rust YAML 1.2 parser
//! (no transpiled C, unlike `serde_yaml_ng`/`serde_norway` which sit on `unsafe-libyaml`),
//! which matters for code loaded into someone else's process. Its event API gives a line for
//! every value, so every error and warning can point at `file:line`. `serde_yaml` itself is
//! deprecated upstream. 0.11 is used because 0.12+ needs Rust 1.85 and this crate declares
//! `rust-version = 1.80`. We do not need serde: the schema walker below must see every key
//! anyway to warn about unknown ones.

mod cloud;
mod db;
mod duration;
mod error;
pub mod expand;
mod fields;
mod parse;
mod paths;
mod replica;
mod s3;
mod settings;
mod types;
mod url;
mod yaml;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::{format_go_duration, parse_go_duration, DURATION_EXAMPLES};
pub use error::{ConfigError, Location};
pub use expand::UnsetVar;
pub use types::*;

use fields::Ctx;

/// Environment variable naming the config file to use.
pub const ENV_CONFIG: &str = "WALSHIP_CONFIG";
/// Environment variable holding a replica URL applied to every database (no config file).
pub const ENV_REPLICA_URL: &str = "WALSHIP_REPLICA_URL";
/// File names looked for in the current directory, in order.
pub const CONFIG_FILE_NAMES: [&str; 2] = ["walship.yml", "litestream.yml"];

/// Where a [`Config`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A YAML file (path as found or given).
    File(PathBuf),
    /// Synthesised from `WALSHIP_REPLICA_URL` (the URL, with any `user:password@` removed).
    ReplicaUrlEnv(String),
    /// [`Config::parse`] on text.
    Text,
}

/// A loaded configuration. All fields are resolved: defaults filled in, paths absolute.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: ConfigSource,
    /// The databases listed under `dbs:`.
    pub dbs: Vec<DbConfig>,
    /// Set only for `WALSHIP_REPLICA_URL`: the replica every database gets, under a
    /// sub-path named after the database file (see [`Config::db_for`]).
    pub default_replica: Option<ReplicaConfig>,
    /// `snapshot:` (interval and retention, default 24h each).
    pub snapshot: SnapshotConfig,
    /// `levels:`: compaction interval of L1, L2, ... (default 30s, 5m, 1h).
    pub levels: Vec<Duration>,
    /// `l0-retention` (default 5m; 0 disables).
    pub l0_retention: Duration,
    /// `l0-retention-check-interval` (default 15s).
    pub l0_retention_check_interval: Duration,
    /// `shutdown-sync-timeout` (default 30s; 0 = no final sync).
    pub shutdown_sync_timeout: Duration,
    /// `shutdown-sync-interval` (default 500ms).
    pub shutdown_sync_interval: Duration,
    /// `lease-ttl` (walship only; default 30s; 0 = no lease): how long the replica lease
    /// (`<replica>/walship-lease.json`) lasts without renewal.
    pub lease_ttl: Duration,
    /// `lease-renew-interval` (walship only; default 10s, less than `lease-ttl`).
    pub lease_renew_interval: Duration,
    /// `validation: {interval}`.
    pub validation_interval: Option<Duration>,
    /// `verify-compaction`.
    pub verify_compaction: bool,
    /// `retention: {enabled}` (default true).
    pub retention_enabled: bool,
    /// `heartbeat-url`.
    pub heartbeat_url: Option<String>,
    /// `heartbeat-interval` (default 5m, minimum 1m).
    pub heartbeat_interval: Duration,
    /// `addr` (Litestream's metrics listener): where `src/metrics/http.rs` serves `GET /metrics`.
    pub addr: Option<String>,
    /// `mcp-addr`. Kept; unused.
    pub mcp_addr: Option<String>,
    /// `exec`. Kept; unused (a warning says so).
    pub exec: Option<String>,
    /// `logging:`.
    pub logging: LoggingConfig,
    /// `socket:`. Kept; unused.
    pub socket: SocketConfig,
    /// Things the user should know (unknown keys, unset variables, ignored settings), each
    /// starting with `file:line:`. Never contains a secret. The caller logs them.
    pub warnings: Vec<String>,
    /// Every use of an unset environment variable in the file.
    pub unset_vars: Vec<UnsetVar>,
}

impl Config {
    pub(crate) fn empty(source: ConfigSource) -> Config {
        Config {
            source,
            dbs: Vec::new(),
            default_replica: None,
            snapshot: SnapshotConfig::default(),
            levels: defaults::LEVEL_INTERVALS.to_vec(),
            l0_retention: defaults::L0_RETENTION,
            l0_retention_check_interval: defaults::L0_RETENTION_CHECK_INTERVAL,
            shutdown_sync_timeout: defaults::SHUTDOWN_SYNC_TIMEOUT,
            shutdown_sync_interval: defaults::SHUTDOWN_SYNC_INTERVAL,
            lease_ttl: defaults::LEASE_TTL,
            lease_renew_interval: defaults::LEASE_RENEW_INTERVAL,
            validation_interval: None,
            verify_compaction: false,
            retention_enabled: true,
            heartbeat_url: None,
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            addr: None,
            mcp_addr: None,
            exec: None,
            logging: LoggingConfig::default(),
            socket: SocketConfig::default(),
            warnings: Vec::new(),
            unset_vars: Vec::new(),
        }
    }

    /// Parse YAML text. Relative paths resolve against `base_dir`; variables come from the
    /// process environment.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        Self::parse_with_env(text, base_dir, &process_env)
    }

    /// [`Config::parse`] with an explicit environment (for tests and embedding).
    pub fn parse_with_env(
        text: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        parse_impl(text, "<config text>", ConfigSource::Text, base_dir, env)
    }

    /// Read and parse a config file. Relative paths inside it resolve against the process's
    /// current directory, as Litestream does.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| {
            path.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/"))
        });
        Self::load_with_env(path, &cwd, &process_env)
    }

    /// [`Config::load`] with an explicit base directory and environment.
    pub fn load_with_env(
        path: &Path,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file is not UTF-8 text",
            ),
        })?;
        parse_impl(
            &text,
            &path.display().to_string(),
            ConfigSource::File(path.to_path_buf()),
            base_dir,
            env,
        )
    }

    /// Find the configuration: `$WALSHIP_CONFIG`, else `./walship.yml`, else
    /// `./litestream.yml`, else `$WALSHIP_REPLICA_URL`, else `Ok(None)` (replicate nothing).
    pub fn discover() -> Result<Option<Config>, ConfigError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Self::discover_with_env(&cwd, &process_env)
    }

    /// [`Config::discover`] with an explicit current directory and environment.
    pub fn discover_with_env(
        cwd: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Config>, ConfigError> {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let replica_url = get(ENV_REPLICA_URL);
        let mut cfg = if let Some(p) = get(ENV_CONFIG) {
            let p = cwd.join(p.trim());
            if !p.exists() {
                return Err(ConfigError::ConfigEnvMissing { path: p });
            }
            let mut c = Self::load_with_env(&p, cwd, env)?;
            c.warnings
                .insert(0, format!("using {} from {ENV_CONFIG}", p.display()));
            c
        } else if let Some(p) = CONFIG_FILE_NAMES
            .iter()
            .map(|n| cwd.join(n))
            .find(|p| p.is_file())
        {
            let mut c = Self::load_with_env(&p, cwd, env)?;
            let other = cwd.join(CONFIG_FILE_NAMES[1]);
            if p != other && other.is_file() {
                c.warnings.push(format!(
                    "{} is ignored because {} was found first",
                    other.display(),
                    p.display()
                ));
            }
            c
        } else if let Some(u) = replica_url {
            return Self::from_replica_url_with_env(&u, cwd, env).map(Some);
        } else {
            return Ok(None);
        };
        if replica_url.is_some() {
            cfg.warnings.push(format!("{ENV_REPLICA_URL} is set but ignored because a config file was found (the file takes precedence)"));
        }
        Ok(Some(cfg))
    }

    /// A config that replicates every database to `url` (`file:///dir`, `s3://bucket/prefix`,
    /// `gs://bucket/prefix`), each under a sub-path named after the database's file name.
    /// Credentials and region come from the environment (AWS_* / LITESTREAM_*).
    pub fn from_replica_url(url: &str) -> Result<Config, ConfigError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Self::from_replica_url_with_env(url, &cwd, &process_env)
    }

    /// [`Config::from_replica_url`] with an explicit base directory and environment.
    pub fn from_replica_url_with_env(
        url: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let shown = url::redact(url.trim());
        let mut ctx = Ctx {
            file: ENV_REPLICA_URL.into(),
            base_dir: base_dir.to_path_buf(),
            env,
            unset: vec![],
            warnings: vec![],
        };
        let node = yaml::Node::Map {
            entries: vec![(scalar("url"), scalar(url.trim()))],
            line: 0,
        };
        let replica = replica::build_replica_for_env(&mut ctx, &node)?;
        let mut cfg = Config::empty(ConfigSource::ReplicaUrlEnv(shown));
        cfg.default_replica = Some(replica);
        cfg.warnings = ctx.warnings;
        Ok(cfg)
    }

    /// A short name for where this config came from, for log lines: the file path,
    /// `WALSHIP_REPLICA_URL`, or `<config text>`.
    pub fn source_name(&self) -> String {
        match &self.source {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::ReplicaUrlEnv(_) => ENV_REPLICA_URL.to_string(),
            ConfigSource::Text => "<config text>".to_string(),
        }
    }

    /// The entry for the database at `path` (as the application opened it: relative paths
    /// resolve against the current directory). Paths are compared in canonical form (symlinks
    /// resolved; for a file that does not exist yet, its directory is canonicalised). With
    /// `WALSHIP_REPLICA_URL`, every database matches: the replica is the URL plus `/<file
    /// name>` (hence `Cow::Owned`).
    pub fn db_for(&self, path: &Path) -> Option<Cow<'_, DbConfig>> {
        let want = canonical_db_path(path);
        let entries = || self.dbs.iter();
        if let Some(db) = entries().find(|d| d.dir.is_none() && canonical_db_path(&d.path) == want)
        {
            return Some(Cow::Borrowed(db));
        }
        if let Some(db) = entries().find_map(|d| dir_entry_for(d, &want)) {
            return Some(Cow::Owned(db));
        }
        let template = self.default_replica.as_ref()?;
        let name = want.file_name()?.to_string_lossy().into_owned();
        let mut replica = template.clone();
        // `WALSHIP_REPLICA_URL` rule: <url>/<database file name>.
        with_sub_path(&mut replica, &name);
        Some(Cow::Owned(DbConfig::with_defaults(
            want,
            ENV_REPLICA_URL.into(),
            replica,
            self.snapshot,
        )))
    }
}

/// The configuration a `dir:` entry gives the database at `want` (canonical), if it covers it:
/// `want` lies in the directory (or below it, with `recursive: true`) and its file name matches
/// `pattern`. Litestream 0.5's rule for where its replica goes: the entry's replica path (or
/// URL path) joined with the database's path relative to the directory.
fn dir_entry_for(d: &DbConfig, want: &Path) -> Option<DbConfig> {
    let m = d.dir.as_ref()?;
    let rel = want.strip_prefix(canonical_db_path(&d.path)).ok()?;
    let depth = rel.components().count();
    if depth == 0 || (depth > 1 && !m.recursive) {
        return None;
    }
    let name = want.file_name()?.to_string_lossy();
    if !glob::Pattern::new(&m.pattern).is_ok_and(|p| p.matches(&name)) {
        return None;
    }
    let mut db = d.clone();
    db.path = want.to_path_buf();
    db.dir = None;
    with_sub_path(&mut db.replica, &rel.to_string_lossy());
    Some(db)
}

/// `replica` moved down to `rel` (a `/`-separated path) under its own path or prefix.
fn with_sub_path(replica: &mut ReplicaConfig, rel: &str) {
    match &mut replica.kind {
        ReplicaKind::File { path } => *path = path.join(rel),
        ReplicaKind::S3(c) => c.path = join_prefix(&c.path, rel),
        ReplicaKind::Gcs(c) => c.path = join_prefix(&c.path, rel),
        ReplicaKind::Abs(c) => c.path = join_prefix(&c.path, rel),
    }
}

fn scalar(text: &str) -> yaml::Node {
    // Quoted style: the URL is taken literally (no YAML null/bool resolution).
    yaml::Node::Scalar {
        text: text.into(),
        plain: false,
        tag: None,
        line: 0,
    }
}

fn join_prefix(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{}/{name}", prefix.trim_end_matches('/'))
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The form in which database paths are compared: absolute (relative to the current
/// directory), lexically cleaned, symlinks resolved; if the file does not exist yet, its
/// parent directory is canonicalised and the file name joined back.
pub fn canonical_db_path(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let abs = paths::clean(&abs);
    if let Ok(c) = std::fs::canonicalize(&abs) {
        return c;
    }
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(abs),
        _ => abs,
    }
}

fn parse_impl(
    text: &str,
    file: &str,
    source: ConfigSource,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let (expanded, unset) = expand::expand(text, env);
    let root = yaml::parse(&expanded).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        line: e.line,
        column: e.column,
        message: e.message,
    })?;
    let base_dir = if base_dir.is_absolute() {
        base_dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(base_dir))
            .unwrap_or_else(|_| base_dir.to_path_buf())
    };
    let mut ctx = Ctx {
        file: file.to_string(),
        base_dir,
        env,
        unset: unset.clone(),
        warnings: Vec::new(),
    };
    for u in &unset {
        let msg = if u.name == "$" {
            "`$$` expands the (unset) variable `$`, not a literal `$`: Litestream's expansion has no escape".to_string()
        } else {
            format!(
                "environment variable ${{{}}} is not set, so it expands to an empty string",
                u.name
            )
        };
        ctx.warn(u.line, msg);
    }
    let mut cfg = parse::build(&mut ctx, root.as_ref(), source)?;
    cfg.warnings = ctx.warnings;
    cfg.unset_vars = unset;
    Ok(cfg)
}

#[cfg(test)]
mod tests;
