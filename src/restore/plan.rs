//! Choosing the files of a restore.
//!
//! 1. List each level once (default 9, 3, 2, 1, 0: at most five LIST calls), into a
//!    [`Listing`] that later plans reuse (a restore to the last consistent point plans again
//!    without the damaged files, but never lists again). Names that do not
//!    parse, or have min > max or min 0, are ignored (the storage layer already skips
//!    non-LTX names).
//! 2. Resolve the target to a TXID. `Latest`: the newest max TXID anywhere. `Txid(t)`: `t`,
//!    which must not exceed the newest. `Timestamp(T)`: the max TXID of the last file (by max
//!    TXID) whose header timestamp is `<= T`. Timestamps live only in the 100-byte headers, so
//!    they are read lazily: files are ordered by max TXID (one representative per max TXID,
//!    from the lowest level, whose timestamp is the transaction's; an L9 snapshot's is the
//!    later time it was taken) and binary-searched on "timestamp <= T", reading O(log n) headers
//!    (cached). This relies on timestamps never decreasing as TXIDs grow, which holds for
//!    files written by one writer with a sane clock (Litestream gives a compaction the newest
//!    input's timestamp). If clocks went backwards the search still lands on a file with
//!    timestamp <= T, just not necessarily the last one.
//! 3. Snapshot: among files starting at TXID 1 (any level: L9, or the L0 `1-1` / L1 `1-n`
//!    Litestream writes first) the one with the highest max TXID `<=` the target (ties: the
//!    smallest file, then the highest level).
//! 4. Chain: from `current` = the snapshot's max TXID, repeatedly take, among files starting
//!    at or before `current + 1` and ending in `(current, target]`, the one reaching furthest
//!    (ties: the later start, i.e. less overlap, then the smaller file, then the higher
//!    level). Greedy furthest-reach gives the fewest files, so compactions (L1..L3) are used
//!    whenever they fit and L0 files only where they must. Files straddling the target are
//!    never used; when only such a file continues the chain the target is not restorable
//!    exactly ([`RestoreError::NotExact`]). No file continuing the chain is a
//!    [`RestoreError::Gap`]. Runs in O(n log n) over all files: files sorted by min TXID are
//!    admitted once each as `current` advances.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use super::{object_name, Plan, PlannedFile, RestoreError, Target, DEFAULT_LEVELS};
use crate::ltx::{self, Header, LtxError};
use crate::storage::{FileInfo, Storage};

/// [`plan_levels`] over [`DEFAULT_LEVELS`].
pub fn plan(storage: &dyn Storage, target: Target) -> Result<Plan, RestoreError> {
    plan_levels(storage, target, &DEFAULT_LEVELS)
}

/// Lists `levels` (each once, in that order) and picks the files that restore `target`.
pub fn plan_levels(
    storage: &dyn Storage,
    target: Target,
    levels: &[u8],
) -> Result<Plan, RestoreError> {
    list(storage, levels)?.plan(storage, target, &PlanOptions::default())
}

/// What a replica holds over some levels: listed once, planned from as often as needed.
#[derive(Debug, Clone)]
pub struct Listing {
    /// `Storage::describe()` of the replica.
    pub replica: String,
    /// Every usable name listed (min TXID >= 1, min <= max), in listing order.
    pub files: Vec<FileInfo>,
}

/// Choices for [`Listing::plan`].
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Files (level, min TXID, max TXID) never to use: known to be damaged or missing.
    pub exclude: HashSet<(u8, u64, u64)>,
    /// Instead of failing on a gap (or on a target only a straddling file reaches), plan up
    /// to the last TXID reached and say why in [`Plan::shortfall`].
    pub stop_at_gap: bool,
}

/// Lists `levels` (each once, in that order: one LIST per level).
pub fn list(storage: &dyn Storage, levels: &[u8]) -> Result<Listing, RestoreError> {
    let replica = storage.describe();
    let mut files: Vec<FileInfo> = Vec::new();
    for &level in levels {
        let listed = storage.list(level).map_err(|source| RestoreError::List {
            replica: replica.clone(),
            level,
            source: Box::new(source),
        })?;
        files.extend(
            listed
                .into_iter()
                .filter(|f| f.level == level && f.min_txid >= 1 && f.min_txid <= f.max_txid),
        );
    }
    if files.is_empty() {
        let levels = levels
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(RestoreError::NoFiles { replica, levels });
    }
    Ok(Listing { replica, files })
}

impl Listing {
    /// Picks the files that restore `target` (see the module comment); reads nothing but, for
    /// a timestamp target, a few headers.
    pub fn plan(
        &self,
        storage: &dyn Storage,
        target: Target,
        opts: &PlanOptions,
    ) -> Result<Plan, RestoreError> {
        let replica = self.replica.clone();
        let Some(latest_txid) = self.files.iter().map(|f| f.max_txid).max() else {
            return Err(RestoreError::Internal("the listing is empty".into()));
        };
        let files: Vec<FileInfo> = self
            .files
            .iter()
            .filter(|f| !opts.exclude.contains(&key(f)))
            .cloned()
            .collect();
        let mut headers = Headers {
            storage,
            replica: &replica,
            cache: HashMap::new(),
        };

        let target_txid = match target {
            Target::Latest => latest_txid,
            Target::Txid(t) if t > latest_txid => {
                return Err(RestoreError::AfterLatest {
                    replica,
                    txid: t,
                    latest: latest_txid,
                })
            }
            Target::Txid(t) => t,
            Target::Timestamp(ms) => match last_file_at_or_before(&files, ms, &mut headers)? {
                Some(txid) => txid,
                None => return Err(before_earliest(&files, target, &mut headers)),
            },
        };

        let snapshot = files
            .iter()
            .filter(|f| f.min_txid == 1 && f.max_txid <= target_txid)
            .max_by_key(|f| (f.max_txid, std::cmp::Reverse(f.size), f.level));
        let Some(snapshot) = snapshot else {
            if !files.iter().any(|f| f.min_txid == 1) {
                let first = files
                    .iter()
                    .min_by_key(|f| (f.min_txid, f.max_txid))
                    .map(object_name)
                    .unwrap_or_else(|| "nothing usable".into());
                return Err(RestoreError::NoSnapshot {
                    replica,
                    earliest: first,
                });
            }
            return Err(before_earliest(&files, target, &mut headers));
        };

        let (chain, shortfall) = match chain_from(&replica, &files, snapshot, target, target_txid) {
            Ok(chain) => (chain, None),
            Err(Stop { chain, error }) if opts.stop_at_gap => (chain, Some(error.to_string())),
            Err(Stop { error, .. }) => return Err(*error),
        };
        let planned = chain
            .into_iter()
            .map(|info| PlannedFile {
                timestamp_ms: headers.cache.get(&key(info)).map(|h| h.timestamp_ms),
                info: info.clone(),
            })
            .collect::<Vec<_>>();
        let txid = planned.last().map(|f| f.info.max_txid).unwrap_or(0);
        Ok(Plan {
            replica,
            target,
            files: planned,
            txid,
            latest_txid,
            files_listed: self.files.len(),
            target_txid,
            shortfall,
        })
    }
}

/// A chain that cannot reach its target: the files that reach as far as possible, and why
/// no file continues it.
struct Stop<'a> {
    chain: Vec<&'a FileInfo>,
    error: Box<RestoreError>,
}

fn chain_from<'a>(
    replica: &str,
    files: &'a [FileInfo],
    snapshot: &'a FileInfo,
    target: Target,
    target_txid: u64,
) -> Result<Vec<&'a FileInfo>, Stop<'a>> {
    let mut by_min: Vec<&FileInfo> = files.iter().collect();
    by_min.sort_by_key(|f| (f.min_txid, f.max_txid));
    let rank = |f: &FileInfo| (f.max_txid, f.min_txid, std::cmp::Reverse(f.size), f.level);
    let mut chain = vec![snapshot];
    let mut current = snapshot.max_txid;
    let mut next = 0;
    // Best file admitted so far that ends at or before the target, and the admitted file that
    // straddles the target most narrowly.
    let mut best: Option<&FileInfo> = None;
    let mut straddler: Option<&FileInfo> = None;
    while current < target_txid {
        while next < by_min.len() && by_min[next].min_txid <= current + 1 {
            let f = by_min[next];
            next += 1;
            if f.max_txid <= target_txid {
                if best.is_none_or(|b| rank(f) > rank(b)) {
                    best = Some(f);
                }
            } else if straddler.is_none_or(|s| f.max_txid < s.max_txid) {
                straddler = Some(f);
            }
        }
        match best {
            Some(b) if b.max_txid > current => {
                chain.push(b);
                current = b.max_txid;
            }
            _ => {
                let before = object_name(chain[chain.len() - 1]);
                if let Some(s) = straddler {
                    let error = RestoreError::NotExact {
                        replica: replica.into(),
                        txid: target_txid,
                        object: object_name(s),
                        min: s.min_txid,
                        max: s.max_txid,
                        below: current,
                        above: s.max_txid,
                    };
                    return Err(Stop {
                        chain,
                        error: Box::new(error),
                    });
                }
                let (to, after) = match by_min.get(next) {
                    Some(f) => (f.min_txid - 1, object_name(f)),
                    None => (target_txid, "nothing".to_string()),
                };
                let error = RestoreError::Gap {
                    replica: replica.into(),
                    target,
                    from: current + 1,
                    to,
                    before,
                    after,
                };
                return Err(Stop {
                    chain,
                    error: Box::new(error),
                });
            }
        }
    }
    Ok(chain)
}

/// The max TXID of the last file whose header timestamp is `<= ms` (see the module comment).
fn last_file_at_or_before(
    files: &[FileInfo],
    ms: i64,
    headers: &mut Headers<'_>,
) -> Result<Option<u64>, RestoreError> {
    // One file per max TXID, from the lowest level: L0 and compaction headers carry the time of
    // the (newest) transaction, a snapshot's carries when the snapshot was taken (later).
    let mut points: Vec<&FileInfo> = files.iter().collect();
    points.sort_by_key(|f| (f.max_txid, f.level, f.size));
    points.dedup_by_key(|f| f.max_txid);
    // Invariant: points[..lo] have timestamp <= ms, points[hi..] have timestamp > ms.
    let (mut lo, mut hi) = (0, points.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if headers.get(points[mid])?.timestamp_ms <= ms {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo.checked_sub(1).map(|i| points[i].max_txid))
}

/// [`RestoreError::BeforeEarliest`] naming the earliest snapshot (and its time, if readable).
fn before_earliest(files: &[FileInfo], target: Target, headers: &mut Headers<'_>) -> RestoreError {
    let replica = headers.replica.to_string();
    let earliest = files
        .iter()
        .filter(|f| f.min_txid == 1)
        .min_by_key(|f| (f.max_txid, f.size));
    match earliest {
        Some(f) => {
            let time = headers
                .get(f)
                .ok()
                .map(|h| super::format_timestamp(h.timestamp_ms));
            RestoreError::BeforeEarliest {
                replica,
                target,
                earliest_txid: f.max_txid,
                earliest_time: time,
            }
        }
        None => {
            let first = files
                .iter()
                .min_by_key(|f| (f.min_txid, f.max_txid))
                .map(object_name)
                .unwrap_or_default();
            RestoreError::NoSnapshot {
                replica,
                earliest: first,
            }
        }
    }
}

fn key(f: &FileInfo) -> (u8, u64, u64) {
    (f.level, f.min_txid, f.max_txid)
}

struct Headers<'a> {
    storage: &'a dyn Storage,
    replica: &'a str,
    cache: HashMap<(u8, u64, u64), Header>,
}

impl Headers<'_> {
    fn get(&mut self, f: &FileInfo) -> Result<&Header, RestoreError> {
        let k = key(f);
        if !self.cache.contains_key(&k) {
            let h = read_header_from(self.storage, self.replica, f)?;
            self.cache.insert(k, h);
        }
        Ok(&self.cache[&k])
    }
}

/// Reads and validates the 100-byte header of one file (and nothing more of it), and checks
/// that its TXID range matches the file's name.
pub fn read_header(storage: &dyn Storage, info: &FileInfo) -> Result<Header, RestoreError> {
    read_header_from(storage, &storage.describe(), info)
}

fn read_header_from(
    storage: &dyn Storage,
    replica: &str,
    info: &FileInfo,
) -> Result<Header, RestoreError> {
    let mut r = storage
        .open(info.level, info.min_txid, info.max_txid)
        .map_err(|e| RestoreError::read(replica, info, e))?;
    let mut b = [0u8; ltx::HEADER_SIZE];
    let mut n = 0;
    while n < b.len() {
        match r.read(&mut b[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(RestoreError::corrupt(
                    replica,
                    info,
                    LtxError::Io {
                        context: "reading an LTX header",
                        source,
                    },
                ))
            }
        }
    }
    let h = Header::decode(&b[..n]).map_err(|e| RestoreError::corrupt(replica, info, e))?;
    h.validate()
        .map_err(|e| RestoreError::corrupt(replica, info, e))?;
    check_range(replica, info, &h)?;
    Ok(h)
}

/// The header's TXID range must be the one the file's name promises.
pub(super) fn check_range(replica: &str, info: &FileInfo, h: &Header) -> Result<(), RestoreError> {
    if (h.min_txid, h.max_txid) != (info.min_txid, info.max_txid) {
        return Err(RestoreError::inconsistent(
            replica,
            info,
            format!(
                "its header says TXIDs {:016x}..={:016x}",
                h.min_txid, h.max_txid
            ),
        ));
    }
    Ok(())
}
