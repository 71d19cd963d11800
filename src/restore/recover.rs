//! Restoring a damaged replica to its last consistent point (the CLI's `-last-consistent`).
//!
//! Plans from one [`Listing`] (no further LIST calls) with [`PlanOptions::stop_at_gap`], and
//! applies the plan. When the apply fails because of one file (it fails its checksums, is
//! truncated, has another page size, contradicts its name, or vanished: see
//! [`RestoreError::damaged_file`]) that file is set aside and the restore starts over into
//! the same output with a new plan without it: around the file if other files cover its
//! TXIDs (smaller L0 files under a damaged compaction), else up to the TXID before it. Each
//! round sets one more file aside, so it ends. Network and output errors are not damage:
//! they fail the restore as usual.
//!
//! Owns only that loop: never lists, never writes anywhere but the caller's output path, and
//! never hides what it skipped ([`Recovered`] names every file set aside and why the result
//! stops short of the target).

use std::path::Path;

use super::apply::{apply_with, Applied, ApplyOptions, Progress};
use super::plan::{Listing, PlanOptions};
use super::{object_name_of, Plan, RestoreError, Target};
use crate::storage::Storage;

/// A file set aside by [`apply_last_consistent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// `ltx/<level>/<min>-<max>.ltx`.
    pub object: String,
    pub level: u8,
    pub min_txid: u64,
    pub max_txid: u64,
    /// What is wrong with it (`is corrupt: ...`, `does not fit the restore: ...`).
    pub problem: String,
    /// The whole error the file caused (names the replica, object, range, and a hint).
    pub error: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (TXIDs {:016x}..={:016x}) {}",
            self.object, self.min_txid, self.max_txid, self.problem
        )
    }
}

/// What [`apply_last_consistent`] restored.
#[derive(Debug)]
pub struct Recovered {
    /// The plan that was applied (its `shortfall` says why it stops before the target).
    pub plan: Plan,
    pub applied: Applied,
    /// Files set aside, in the order they were found.
    pub damaged: Vec<Damage>,
}

impl Recovered {
    /// True when the image is at an earlier TXID than the target asked for.
    pub fn stopped_short(&self) -> bool {
        self.applied.txid < self.plan.target_txid
    }

    /// Why the image stops where it does (`None` when it reached the target): the damaged
    /// file that would have come next, else the gap the plan stopped at.
    pub fn reason(&self) -> Option<String> {
        if !self.stopped_short() {
            return None;
        }
        let next = self.applied.txid + 1;
        let blocking = self
            .damaged
            .iter()
            .find(|d| d.min_txid <= next && d.max_txid >= next);
        match (blocking, &self.plan.shortfall) {
            (Some(d), _) => Some(d.to_string()),
            (None, Some(s)) => Some(s.clone()),
            (None, None) => self.damaged.first().map(Damage::to_string),
        }
    }
}

/// Restores `target`, or the last consistent state before it, into `out_path` (created or
/// truncated; on error it holds a partial image the caller must remove).
pub fn apply_last_consistent(
    storage: &dyn Storage,
    listing: &Listing,
    target: Target,
    out_path: &Path,
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Recovered, RestoreError> {
    let mut popts = PlanOptions {
        stop_at_gap: true,
        ..PlanOptions::default()
    };
    let mut damaged: Vec<Damage> = Vec::new();
    loop {
        let result = listing.plan(storage, target, &popts).and_then(|plan| {
            apply_with(storage, &plan, out_path, opts, progress).map(|applied| (plan, applied))
        });
        let e = match result {
            Ok((plan, applied)) => {
                return Ok(Recovered {
                    plan,
                    applied,
                    damaged,
                })
            }
            Err(e) => e,
        };
        match e.damaged_file() {
            Some(k) if !popts.exclude.contains(&k) => {
                let (level, min_txid, max_txid) = k;
                log::warn!(
                    "setting aside {}: {e}",
                    object_name_of(level, min_txid, max_txid)
                );
                damaged.push(Damage {
                    object: object_name_of(level, min_txid, max_txid),
                    level,
                    min_txid,
                    max_txid,
                    problem: e.problem().unwrap_or_else(|| e.to_string()),
                    error: e.to_string(),
                });
                popts.exclude.insert(k);
            }
            _ => match (damaged.first(), &e) {
                (
                    Some(first),
                    RestoreError::NoSnapshot { .. } | RestoreError::BeforeEarliest { .. },
                ) => {
                    return Err(RestoreError::NothingConsistent {
                        replica: listing.replica.clone(),
                        first: first.to_string(),
                        source: Box::new(e),
                    })
                }
                _ => return Err(e),
            },
        }
    }
}
