//! `ConfigError`: every way loading a config can fail. Each message names the file (and line
//! when known), the key path (`dbs[0].replica.bucket`), the offending value unless it is a
//! secret, and what to do. No variant ever carries a secret value.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// Where in which config a problem is: `litestream.yml:12`, or `WALSHIP_REPLICA_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The config file as given (or `<config text>` / `WALSHIP_REPLICA_URL`).
    pub file: String,
    /// 1-based line, when the problem is tied to one.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}", self.file, l),
            None => f.write_str(&self.file),
        }
    }
}

fn unset_note(vars: &[String]) -> String {
    if vars.is_empty() {
        return String::new();
    }
    let names: Vec<String> = vars
        .iter()
        .map(|v| format!("${{{v}}} is not set"))
        .collect();
    format!(
        " ({}: it expanded to an empty string; export it before the app starts)",
        names.join(", ")
    )
}

/// A configuration error. Displays as one line that says what is wrong and how to fix it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read walship config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `WALSHIP_CONFIG` names a file that does not exist.
    #[error("WALSHIP_CONFIG is set to {} but that file does not exist; fix the path or unset WALSHIP_CONFIG", path.display())]
    ConfigEnvMissing { path: PathBuf },

    /// The YAML itself is malformed.
    #[error("{file}:{line}:{column}: invalid YAML: {message} (indent with spaces, not tabs; quote values that contain ': ' or ' #')")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },

    /// A duration that is not in Go syntax (or is negative, or zero where zero is not allowed).
    #[error(
        "{at}: `{key}` = {value:?} is not a valid duration: {reason}; {}",
        super::duration::DURATION_EXAMPLES
    )]
    InvalidDuration {
        at: Location,
        key: String,
        value: String,
        reason: String,
    },

    /// A value of the wrong type or out of range. `message` includes the value unless secret,
    /// and the fix.
    #[error("{at}: `{key}`: {message}")]
    InvalidValue {
        at: Location,
        key: String,
        message: String,
    },

    /// A required value is missing or empty. `unset_vars` lists `$VAR`s used for it that
    /// were not set.
    #[error("{at}: `{key}` is required: {hint}{}", unset_note(unset_vars))]
    Missing {
        at: Location,
        key: String,
        hint: String,
        unset_vars: Vec<String>,
    },

    /// A replica type Litestream knows but walship does not implement (sftp, webdav, ...).
    #[error("{at}: replica type '{kind}' is not supported yet by walship ({key}); supported: file, s3, gs (alias gcs), abs. Use one of those, or keep replicating this database with the Litestream daemon")]
    UnsupportedReplicaType {
        at: Location,
        key: String,
        kind: String,
    },

    /// A replica type nobody knows.
    #[error("{at}: unknown replica type '{kind}' ({key}); supported by walship: file, s3, gs (alias gcs), abs")]
    UnknownReplicaType {
        at: Location,
        key: String,
        kind: String,
    },

    /// Two settings that cannot be combined (url + path, replica + replicas, two replicas, ...).
    #[error("{at}: {key}: {message}")]
    Conflict {
        at: Location,
        key: String,
        message: String,
    },

    /// A replica URL that cannot be parsed. `url` has any user:password part removed.
    #[error("{at}: `{key}` = {url:?} is not a valid replica URL: {reason}; examples: file:///var/backups/app, s3://bucket/path, gs://bucket/path, abs://account@container/path")]
    InvalidUrl {
        at: Location,
        key: String,
        url: String,
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn missing(
        at: Location,
        key: impl Into<String>,
        hint: impl Into<String>,
        unset_vars: Vec<String>,
    ) -> Self {
        ConfigError::Missing {
            at,
            key: key.into(),
            hint: hint.into(),
            unset_vars,
        }
    }
}
