//! Storage: where LTX files live. The contract every backend meets, and the backends.
//!
//! Owns the `Storage` trait and its implementations: `file`; `s3` for S3-compatible stores (and
//! GCS through its S3-interoperable API when HMAC keys are given); `azure` (Azure Blob Storage,
//! on the `object_store` crate) and `gcs` (GCS's JSON API with Google's credentials), which
//! share `cloud` (layout, runtime, HTTP connector). A backend moves whole objects; it never
//! interprets LTX bytes, never touches the database, and is only ever called from the shipper
//! thread or the restore command, never from SQLite's callbacks. No error, log line or `Debug`
//! output of a backend may contain a credential.

pub mod azure;
pub(crate) mod cloud;
pub mod file;
pub mod gcs;
pub mod s3;
pub mod sigv4;

use std::io::Read;
use std::path::PathBuf;

use crate::config::{Config, ReplicaKind};

/// Litestream's levels: 0 holds one file per sync, 1..=8 compactions, 9 snapshots.
pub const SNAPSHOT_LEVEL: u8 = 9;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub level: u8,
    pub min_txid: u64,
    pub max_txid: u64,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {object}: object not found")]
    NotFound { op: &'static str, object: String },
    #[error("{op} {object}: {source}{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    Io {
        op: &'static str,
        object: String,
        #[source]
        source: std::io::Error,
        hint: Option<&'static str>,
    },
    /// The store refused the credentials: unknown access key id, wrong secret, a skewed
    /// clock, or a key without permission for this bucket and path.
    #[error("{}: {} rejected the request: {} (hint: {})", .0.at(), .0.replica, .0.detail, .0.hint)]
    Credentials(Box<RemoteFailure>),
    /// The bucket does not exist at that endpoint/region.
    #[error("{}: {}: {} (hint: {})", .0.at(), .0.replica, .0.detail, .0.hint)]
    NoSuchBucket(Box<RemoteFailure>),
    /// No connection could be made (DNS, refused, timed out), after the backend's retries.
    #[error("{}: cannot reach {}: {} (hint: {})", .0.at(), .0.replica, .0.detail, .0.hint)]
    Unreachable(Box<RemoteFailure>),
    /// The TLS handshake failed (not an https server, untrusted or mismatched certificate).
    #[error("{}: TLS connection to {} failed: {} (hint: {})", .0.at(), .0.replica, .0.detail, .0.hint)]
    Tls(Box<RemoteFailure>),
    /// Any other answer from the store (after the backend's retries for transient ones).
    #[error("{}: {} answered {} (hint: {})", .0.at(), .0.replica, .0.detail, .0.hint)]
    Remote(Box<RemoteFailure>),
    /// The replica's settings cannot work (bad endpoint URL, bad SSE-C key, ...).
    #[error("{replica}: {message}")]
    Config { replica: String, message: String },
    /// A conditional write or delete found the object not in the expected state (it exists
    /// for [`Precondition::Absent`]; it is missing or has another tag for
    /// [`Precondition::Matches`]): someone else changed it first.
    #[error("{op} {object}: precondition failed (the object was changed by someone else)")]
    PreconditionFailed { op: &'static str, object: String },
    /// The backend does not implement this operation.
    #[error("{op} on {replica}: not supported by this storage backend")]
    Unsupported { op: &'static str, replica: String },
}

/// A small named object beside the LTX files (see [`Storage::get_named`]) and its version
/// tag (an S3 ETag; a content hash for files). Tags are opaque: compare them only for equality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub body: Vec<u8>,
    pub tag: String,
}

/// The state a conditional write requires the named object to be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition<'a> {
    /// The object must not exist (S3 `If-None-Match: *`).
    Absent,
    /// The object must exist with this tag (S3 `If-Match: <etag>`).
    Matches(&'a str),
}

/// A failure of a remote store (boxed in [`StorageError`] to keep results small). Never holds
/// a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFailure {
    /// `list`, `get`, `put`, `delete`, ...
    pub op: &'static str,
    /// The object or prefix, as `s3://bucket/key`.
    pub object: String,
    /// The replica, as `Storage::describe` shows it (bucket, path, endpoint).
    pub replica: String,
    /// HTTP status; 0 when no HTTP answer came (connection, DNS, TLS, broken response).
    pub status: u16,
    /// The store's error code (`SlowDown`, `NoSuchBucket`, ...), or empty.
    pub code: String,
    /// What happened, with the store's message and the number of attempts.
    pub detail: String,
    /// What to check or fix.
    pub hint: String,
}

impl RemoteFailure {
    fn at(&self) -> String {
        format!("{} {}", self.op, self.object)
    }
}

impl StorageError {
    /// Whether retrying later may succeed (the store or the network was unavailable), as
    /// opposed to a problem the user must fix (credentials, bucket, TLS, settings).
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Io { .. } | StorageError::Unreachable(_) => true,
            StorageError::Remote(f) => {
                f.status == 0 || f.status == 408 || f.status == 429 || f.status >= 500
            }
            _ => false,
        }
    }

    /// The remote failure behind this error, if it came from a remote store.
    pub fn remote(&self) -> Option<&RemoteFailure> {
        match self {
            StorageError::Credentials(f)
            | StorageError::NoSuchBucket(f)
            | StorageError::Unreachable(f)
            | StorageError::Tls(f)
            | StorageError::Remote(f) => Some(f),
            _ => None,
        }
    }
}

/// A replica's storage. Every method is safe to retry; `put` is atomic (readers see the whole
/// object or nothing) and durable when it returns `Ok`.
pub trait Storage: Send + Sync {
    /// Human-readable location, without credentials (for logs and errors).
    fn describe(&self) -> String;
    /// Files at `level`, sorted by `min_txid`. A level that does not exist is empty, not an error.
    fn list(&self, level: u8) -> Result<Vec<FileInfo>, StorageError>;
    /// Writes one LTX file from `src` (fully read before the object becomes visible).
    /// `timestamp_ms` is the file's header timestamp; backends record it where Litestream's
    /// point-in-time restore looks (the file's mtime, or the `litestream-timestamp` metadata).
    fn put(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        timestamp_ms: i64,
        src: &mut dyn Read,
    ) -> Result<u64, StorageError>;
    /// Opens one LTX file for streaming. A missing file is `StorageError::NotFound`.
    fn open(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
    ) -> Result<Box<dyn Read + Send>, StorageError>;
    /// Removes one file; removing a missing file succeeds.
    fn delete(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<(), StorageError>;

    // ---- named objects: compare-and-swap on one small object (the replica's lease) --------
    //
    // A named object lives directly under the replica root (`<root>/<name>` for files,
    // `<path>/<name>` for S3/GCS), outside the `ltx/<level>/` (`<level %04x>/`) prefixes that
    // Litestream and `list` read, so Litestream ignores it. `name` is a plain file name
    // (no `/`). Bodies are small (read whole into memory). The three calls below are
    // linearizable per object: of two concurrent conditional writes with the same
    // precondition, at most one succeeds; the other gets `PreconditionFailed`. Tags may be
    // derived from the content (S3's ETag is an MD5), so rewriting identical bytes keeps the
    // tag: callers make every body unique (the lease carries its owner and write time). The default
    // implementations answer `Unsupported` (test doubles that need no lease).

    /// Reads a named object whole with its current tag; a missing object is `Ok(None)`.
    fn get_named(&self, name: &str) -> Result<Option<Tagged>, StorageError> {
        let _ = name;
        Err(StorageError::Unsupported {
            op: "get_named",
            replica: self.describe(),
        })
    }

    /// Writes a named object only if it is in the state `cond` requires, atomically, and
    /// returns its new tag. Otherwise fails with `StorageError::PreconditionFailed` and
    /// changes nothing (`Matches` on a missing object is a failed precondition too). Not
    /// idempotent by nature: after a transient error the write may have happened, so callers
    /// read the object back (`get_named`) to learn who won.
    fn put_named_if(
        &self,
        name: &str,
        body: &[u8],
        cond: Precondition<'_>,
    ) -> Result<String, StorageError> {
        let _ = (name, body, cond);
        Err(StorageError::Unsupported {
            op: "put_named_if",
            replica: self.describe(),
        })
    }

    /// Removes a named object only if its tag is still `tag`; a missing object succeeds,
    /// another tag is `StorageError::PreconditionFailed` (and nothing is removed).
    fn delete_named_if(&self, name: &str, tag: &str) -> Result<(), StorageError> {
        let _ = (name, tag);
        Err(StorageError::Unsupported {
            op: "delete_named_if",
            replica: self.describe(),
        })
    }
}

/// Opens the storage a configured replica names: a directory, S3 (or an S3-compatible store),
/// GCS (its JSON API with Google's credentials, or its S3-interoperable XML API when HMAC keys
/// are given), or Azure Blob Storage. Nothing is contacted and no thread is started yet.
pub fn open(kind: &ReplicaKind) -> Result<Box<dyn Storage>, StorageError> {
    Ok(match kind {
        ReplicaKind::File { path } => Box::new(file::FileStorage::new(path.clone())),
        ReplicaKind::S3(c) => Box::new(s3::S3Storage::from_config(c)?),
        ReplicaKind::Gcs(c) if c.uses_hmac() => Box::new(s3::S3Storage::from_gcs_config(c)?),
        ReplicaKind::Gcs(c) => Box::new(gcs::GcsStorage::from_config(c)?),
        ReplicaKind::Abs(c) => Box::new(azure::AzureStorage::from_config(c)?),
    })
}

/// Opens the storage a replica URL names: `file:///dir` (or a plain directory path),
/// `s3://bucket/path`, `gs://bucket/path`, `abs://account@container/path`. S3 URLs are read as Litestream reads them: the
/// endpoint of an S3-compatible store goes in the query (`?endpoint=host:port`, plus
/// `region=`, `forcePathStyle=`, `skipVerify=`) or in the host (`bucket.localhost:9000`);
/// credentials come from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, else
/// `LITESTREAM_ACCESS_KEY_ID`/`LITESTREAM_SECRET_ACCESS_KEY`; GCS credentials from
/// `GOOGLE_APPLICATION_CREDENTIALS` (or `STORAGE_EMULATOR_HOST`); Azure credentials from
/// `LITESTREAM_AZURE_SAS_TOKEN`, else `LITESTREAM_AZURE_ACCOUNT_KEY`, else Azure's chain.
pub fn from_url(url: &str) -> Result<Box<dyn Storage>, String> {
    if let Some(p) = url.strip_prefix("file://") {
        return Ok(Box::new(file::FileStorage::new(PathBuf::from(p))));
    }
    let scheme = url.split("://").next().unwrap_or("").to_ascii_lowercase();
    if url.contains("://") && !matches!(scheme.as_str(), "s3" | "gs" | "gcs" | "abs") {
        return Err(format!(
            "replica URL '{}': unsupported scheme (supported: file://, s3://, gs://, abs://)",
            redact_url(url)
        ));
    }
    if !url.contains("://") {
        return Ok(Box::new(file::FileStorage::new(PathBuf::from(url))));
    }
    let cfg = Config::from_replica_url(url).map_err(|e| e.to_string())?;
    let replica = cfg
        .default_replica
        .ok_or_else(|| format!("replica URL '{}' names no replica", redact_url(url)))?;
    open(&replica.kind).map_err(|e| e.to_string())
}

/// `url` without any `user:password@` (up to the last `@`, as the config module does).
fn redact_url(url: &str) -> String {
    match url.find("://") {
        Some(i) => match url[i + 3..].rfind('@') {
            Some(at) => format!("{}://***@{}", &url[..i], &url[i + 3 + at + 1..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}
