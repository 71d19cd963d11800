//! Storage: where LTX files live. The contract every backend meets, and the backends.
//!
//! Owns the `Storage` trait and its implementations (`file` today; S3 next). A backend moves
//! whole objects; it never interprets LTX bytes, never touches the database, and is only ever
//! called from the shipper thread or the restore command, never from SQLite's callbacks.

pub mod file;

use std::io::Read;
use std::path::PathBuf;

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
}

/// Opens the storage a replica URL or config names.
pub fn from_url(url: &str) -> Result<Box<dyn Storage>, String> {
    if let Some(p) = url.strip_prefix("file://") {
        return Ok(Box::new(file::FileStorage::new(PathBuf::from(p))));
    }
    if url.contains("://") {
        return Err(format!(
            "replica URL '{url}': unsupported scheme (supported: file://)"
        ));
    }
    Ok(Box::new(file::FileStorage::new(PathBuf::from(url))))
}
