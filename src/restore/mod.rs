//! Restore: rebuilds a database image from a replica's LTX files (the shipper, run backwards).
//!
//! Two steps, so a caller can show or check the plan before writing anything:
//! * [`plan`] lists the replica (each level once: 9, 3, 2, 1, 0) and picks the files to apply:
//!   a snapshot, then a contiguous chain of later files up to the target. It reads no file
//!   contents except, for a [`Target::Timestamp`], a few 100-byte headers (see `plan.rs`).
//! * [`apply`] downloads those files (in parallel, memory bounded), verifies each one (header
//!   rules, page order, CRC-64 file checksum, page size, TXID range against the file's name)
//!   and writes the pages into a file the caller chose, then fsyncs it.
//!
//! # What this module owns
//! The choice of files, the order of application and the byte image that results. It is pure
//! Rust: it never opens the image with SQLite (the CLI runs `PRAGMA integrity_check`), never
//! renames over a live database and never touches `-wal`/`-shm` files; those belong to the
//! caller (the `walship restore` command), which also picks a temporary output path.
//!
//! # Rules (Litestream 0.5 semantics, see docs/LTX-FORMAT.md "Restore algorithm")
//! * A file whose min TXID is 1 holds every page: it can start a restore (L9 snapshots, and the
//!   L0 `1-1` / L1 `1-n` files Litestream writes first).
//! * Each later file must start at or before `current + 1` and end after `current`; overlapping
//!   a file already applied is harmless because a file holds the after-image of every page its
//!   TXID range changed. A gap is an error ([`RestoreError::Gap`]).
//! * A file cannot be applied partially, so a file that straddles the target TXID is unusable;
//!   if no smaller files cover the target exactly, that is [`RestoreError::NotExact`].
//! * After each file the image is truncated or extended to the file's `commit` pages.
//!
//! # Damaged replicas
//! Every error about a file names it (`ltx/<level>/<min>-<max>.ltx`), its TXID range and what
//! is wrong with it. By default a restore refuses: a gap, a file failing its checksum, a
//! truncated file, a file of another page size or whose header contradicts its name. With
//! [`apply_last_consistent`] (the CLI's `-last-consistent`) each such file is set aside, the
//! plan is made again from the same listing without it, stopping at the last TXID the
//! remaining files reach ([`PlanOptions::stop_at_gap`]), and the result says which files were
//! set aside and where it stopped. Names that are not `<16 hex>-<16 hex>.ltx` are never
//! listed by the storage backends, so foreign objects under the prefix are ignored.

mod apply;
mod plan;
mod readahead;
mod recover;
mod time;

use std::path::PathBuf;

use crate::ltx::{self, LtxError};
use crate::storage::{FileInfo, StorageError};

pub use apply::{apply, apply_with, Applied, ApplyOptions, Progress};
pub use plan::{list, plan, plan_levels, read_header, Listing, PlanOptions};
pub use recover::{apply_last_consistent, Damage, Recovered};
pub use time::{civil_from_days, days_from_civil, format_timestamp, parse_timestamp};

/// Levels listed by [`plan`], in listing order: snapshots, then compactions L3..L1, then L0.
pub const DEFAULT_LEVELS: [u8; 5] = [crate::storage::SNAPSHOT_LEVEL, 3, 2, 1, 0];
/// Files downloaded at once by [`apply`] unless [`ApplyOptions::parallelism`] says otherwise.
pub const DEFAULT_PARALLELISM: usize = 8;

/// The state to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The newest TXID in the replica.
    Latest,
    /// The state right after this transaction (inclusive).
    Txid(u64),
    /// The state after the last file whose header timestamp is `<=` this many milliseconds
    /// since the Unix epoch.
    Timestamp(i64),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Latest => f.write_str("the latest TXID"),
            Target::Txid(t) => write!(f, "TXID {t:016x}"),
            Target::Timestamp(ms) => write!(f, "timestamp {}", format_timestamp(*ms)),
        }
    }
}

/// One file of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    pub info: FileInfo,
    /// The header timestamp, when planning had to read it (timestamp targets).
    pub timestamp_ms: Option<i64>,
}

/// The files to apply, in order. `files[0]` is a snapshot (min TXID 1).
#[derive(Debug, Clone)]
pub struct Plan {
    /// `Storage::describe()` of the replica, for messages.
    pub replica: String,
    pub target: Target,
    pub files: Vec<PlannedFile>,
    /// The TXID the image will be at: the last file's max TXID.
    pub txid: u64,
    /// The newest TXID anywhere in the replica.
    pub latest_txid: u64,
    /// How many files the replica holds over the listed levels.
    pub files_listed: usize,
    /// The TXID the target resolved to (`txid` unless the plan stops short).
    pub target_txid: u64,
    /// Why the plan ends before `target_txid` (only with [`PlanOptions::stop_at_gap`]).
    pub shortfall: Option<String>,
}

impl Plan {
    /// Sum of the planned files' sizes as listed.
    pub fn download_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.info.size).sum()
    }
}

/// `ltx/<level>/<min>-<max>.ltx`: a file's key inside its replica.
pub fn object_name(info: &FileInfo) -> String {
    object_name_of(info.level, info.min_txid, info.max_txid)
}

fn object_name_of(level: u8, min_txid: u64, max_txid: u64) -> String {
    format!("ltx/{level}/{}", ltx::file_name(min_txid, max_txid))
}

fn range(min: u64, max: u64) -> String {
    format!("TXIDs {min:016x}..={max:016x}")
}

/// Everything that can stop a restore. Each names the replica and, where one is involved, the
/// object (`ltx/<level>/<name>`) and its TXID range, and ends with a hint.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("listing level {level} of {replica}: {source} (hint: check that the replica location is right and readable)")]
    List {
        replica: String,
        level: u8,
        #[source]
        source: Box<StorageError>,
    },
    #[error("{replica} holds no LTX files in levels {levels} (hint: check the replica URL or the config's replica path, and that replication has run at least once)")]
    NoFiles { replica: String, levels: String },
    #[error("{replica} has no snapshot: no file starts at TXID 1 (the earliest file is {earliest}) (hint: retention may have removed it; the replica cannot be restored without one)")]
    NoSnapshot { replica: String, earliest: String },
    #[error("{target} is before the earliest restorable point of {replica}: TXID {earliest_txid:016x}{} (hint: restore a later point; older states were removed by retention or never replicated)",
        earliest_time.as_ref().map(|t| format!(" at {t}")).unwrap_or_default())]
    BeforeEarliest {
        replica: String,
        target: Target,
        earliest_txid: u64,
        earliest_time: Option<String>,
    },
    #[error("TXID {txid:016x} is after the latest TXID in {replica}, {latest:016x} (hint: omit -txid to restore the latest state)")]
    AfterLatest {
        replica: String,
        txid: u64,
        latest: u64,
    },
    #[error("{replica} is missing {}: {before} is followed by {after}, so no chain of files reaches {target} (hint: files were deleted or not uploaded; restore a TXID up to {:016x} with -txid, or pass -last-consistent to restore up to there)",
        range(*from, *to), from - 1)]
    Gap {
        replica: String,
        target: Target,
        from: u64,
        to: u64,
        before: String,
        after: String,
    },
    #[error("TXID {txid:016x} cannot be restored exactly from {replica}: it lies inside {object} ({}) and no smaller files cover it (hint: restorable TXIDs nearby are {below:016x} and {above:016x})",
        range(*min, *max))]
    NotExact {
        replica: String,
        txid: u64,
        object: String,
        min: u64,
        max: u64,
        below: u64,
        above: u64,
    },
    #[error("reading {object} ({}) from {replica}: {source} (hint: {})",
        range(*min, *max), read_hint(source, *last_good))]
    Read {
        replica: String,
        object: String,
        level: u8,
        min: u64,
        max: u64,
        /// The TXID the restore had reached before this file, when it was being applied.
        last_good: Option<u64>,
        #[source]
        source: Box<StorageError>,
    },
    #[error("downloading {object} ({}) from {replica}: {source} (hint: retry; check the replica is reachable)", range(*min, *max))]
    Download {
        replica: String,
        object: String,
        min: u64,
        max: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{object} ({}, {size} bytes) in {replica} is corrupt: {source} (hint: the file was damaged in storage or in transit; {})",
        range(*min, *max), remedy(*last_good))]
    Corrupt {
        replica: String,
        object: String,
        level: u8,
        min: u64,
        max: u64,
        size: u64,
        last_good: Option<u64>,
        #[source]
        source: Box<LtxError>,
    },
    #[error("{object} ({}) in {replica} does not fit the restore: {detail} (hint: the replica mixes files from different databases or was edited by hand; {})",
        range(*min, *max), remedy(*last_good))]
    Inconsistent {
        replica: String,
        object: String,
        level: u8,
        min: u64,
        max: u64,
        last_good: Option<u64>,
        detail: String,
    },
    #[error("no consistent state of {replica} could be restored: {first}; after setting the damaged files aside: {source}")]
    NothingConsistent {
        replica: String,
        /// What was wrong with the first damaged file.
        first: String,
        #[source]
        source: Box<RestoreError>,
    },
    #[error("writing the restored image to {}: {source} (hint: check free space and permissions there)", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("restore stopped: {0}")]
    Internal(String),
}

/// What to do about a damaged or unfitting file, given the TXID restored before it.
fn remedy(last_good: Option<u64>) -> String {
    match last_good {
        Some(t) => format!(
            "pass -last-consistent to restore up to TXID {t:016x}, the last one before this file, or repair the replica"
        ),
        None => "pass -last-consistent to restore from an older snapshot if one is intact, restore an earlier -txid or -timestamp, or repair the replica".into(),
    }
}

fn read_hint(source: &StorageError, last_good: Option<u64>) -> String {
    match source {
        StorageError::NotFound { .. } => format!(
            "the file was listed but is gone: it was deleted while restoring (retry) or the replica lost it ({})",
            remedy(last_good)
        ),
        _ => "check the replica is reachable".into(),
    }
}

impl RestoreError {
    pub(crate) fn read(replica: &str, info: &FileInfo, source: StorageError) -> Self {
        RestoreError::Read {
            replica: replica.into(),
            object: object_name(info),
            level: info.level,
            min: info.min_txid,
            max: info.max_txid,
            last_good: None,
            source: Box::new(source),
        }
    }
    pub(crate) fn corrupt(replica: &str, info: &FileInfo, source: LtxError) -> Self {
        // An I/O error while decoding is a download problem, not a damaged file.
        if let LtxError::Io { source, .. } = source {
            return RestoreError::Download {
                replica: replica.into(),
                object: object_name(info),
                min: info.min_txid,
                max: info.max_txid,
                source,
            };
        }
        RestoreError::Corrupt {
            replica: replica.into(),
            object: object_name(info),
            level: info.level,
            min: info.min_txid,
            max: info.max_txid,
            size: info.size,
            last_good: None,
            source: Box::new(source),
        }
    }
    pub(crate) fn inconsistent(replica: &str, info: &FileInfo, detail: String) -> Self {
        RestoreError::Inconsistent {
            replica: replica.into(),
            object: object_name(info),
            level: info.level,
            min: info.min_txid,
            max: info.max_txid,
            last_good: None,
            detail,
        }
    }

    /// Records the TXID the image had reached when this file failed (for the hint).
    pub(crate) fn after(mut self, txid: u64) -> Self {
        match &mut self {
            RestoreError::Read { last_good, .. }
            | RestoreError::Corrupt { last_good, .. }
            | RestoreError::Inconsistent { last_good, .. } => *last_good = Some(txid),
            _ => {}
        }
        self
    }

    /// The file (level, min TXID, max TXID) this error shows to be damaged, missing or
    /// unfitting: one a restore to the last consistent point sets aside. `None` for errors
    /// that say nothing about one file's content (network, output, planning).
    pub fn damaged_file(&self) -> Option<(u8, u64, u64)> {
        match self {
            RestoreError::Corrupt {
                level, min, max, ..
            }
            | RestoreError::Inconsistent {
                level, min, max, ..
            } => Some((*level, *min, *max)),
            RestoreError::Read {
                level,
                min,
                max,
                source,
                ..
            } if matches!(**source, StorageError::NotFound { .. }) => Some((*level, *min, *max)),
            _ => None,
        }
    }

    /// For an error naming a damaged file: what is wrong with it, without the replica or
    /// the hint (`is corrupt: LTX file checksum mismatch: ...`).
    pub fn problem(&self) -> Option<String> {
        match self {
            RestoreError::Corrupt { source, .. } => Some(format!("is corrupt: {source}")),
            RestoreError::Inconsistent { detail, .. } => {
                Some(format!("does not fit the restore: {detail}"))
            }
            RestoreError::Read { source, .. } => Some(format!("cannot be read: {source}")),
            _ => None,
        }
    }

    /// Whether fetching the file again may succeed: the download broke, or the store
    /// answered with a transient failure after its own retries.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            RestoreError::Download { .. } => true,
            RestoreError::Read { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}
