//! Replica maintenance, run by the shipper thread between syncs: compaction of each level into
//! the next (Litestream's L1/L2/L3 at 30s/5m/1h by default), scheduled snapshots (L9, built by
//! compacting the newest snapshot with the files after it — the live database is not read), and
//! retention.
//!
//! Retention keeps every point inside the window restorable: the newest snapshot taken at or
//! before the window's start is the base for its earliest points, so it and everything newer
//! stay; only files that serve points before it are deleted. Level-0 files are deleted once a
//! level-1 file covers them and `l0-retention` has passed. Never deletes the files the newest
//! snapshot's chain needs, never touches the database, and never runs on the app's threads.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::compact;
use crate::ltx::Header;
use crate::restore;
use crate::storage::{FileInfo, Storage, SNAPSHOT_LEVEL};

#[derive(Debug, Clone)]
pub struct Policy {
    /// Compaction interval of level 1, 2, ... (`levels:`).
    pub levels: Vec<Duration>,
    /// `snapshot.interval`; zero disables scheduled snapshots.
    pub snapshot_interval: Duration,
    /// The restore window (`retention` of the replica, else `snapshot.retention`); `None` keeps
    /// everything.
    pub retention: Option<Duration>,
    /// How long level-0 files outlive the level-1 file that covers them.
    pub l0_retention: Duration,
}

pub struct Maintenance {
    policy: Policy,
    last_level_run: Vec<Instant>,
    last_snapshot: Option<Instant>,
    /// (when a level-1 file was written, the highest TXID it covers).
    l0_expiry: VecDeque<(Instant, u64)>,
    next_retention: Instant,
    /// Snapshot timestamps already read, by max TXID (a GET each, so read once).
    snapshot_ts: std::collections::HashMap<u64, i64>,
}

/// Objects retention deletes in one pass: about a second of DELETEs on a slow store.
const DELETES_PER_PASS: usize = 64;

/// The 100-byte header of a stored file (restore's reader: only the start is read).
fn header_of(storage: &dyn Storage, f: &FileInfo) -> Result<Header, String> {
    restore::read_header(storage, f).map_err(|e| e.to_string())
}

impl Maintenance {
    pub fn new(policy: Policy) -> Maintenance {
        let now = Instant::now();
        Maintenance {
            last_level_run: vec![now; policy.levels.len()],
            policy,
            last_snapshot: None,
            l0_expiry: VecDeque::new(),
            next_retention: now,
            snapshot_ts: std::collections::HashMap::new(),
        }
    }

    /// Soonest moment something may be due.
    pub fn next_due(&self) -> Instant {
        let mut t = self.next_retention;
        for (i, iv) in self.policy.levels.iter().enumerate() {
            t = t.min(self.last_level_run[i] + *iv);
        }
        if let Some(&(at, _)) = self.l0_expiry.front() {
            t = t.min(at + self.policy.l0_retention);
        }
        t
    }

    /// One maintenance step; `txid` is the replica's newest TXID.
    pub fn run(&mut self, storage: &dyn Storage, work_dir: &Path, txid: u64) -> Result<(), String> {
        let now = Instant::now();
        for k in 0..self.policy.levels.len() {
            if now >= self.last_level_run[k] + self.policy.levels[k] {
                self.compact_level(storage, work_dir, k as u8 + 1)?;
                self.last_level_run[k] = now;
            }
        }
        self.scheduled_snapshot(storage, work_dir, txid)?;
        self.expire_l0(storage)?;
        if now >= self.next_retention {
            let done = self.retain(storage)?;
            // A quarter of the window, between 1 s and 1 min: at most one LIST round a minute;
            // with more to delete, the next pass comes after the next sync.
            let every = self
                .policy
                .retention
                .map(|w| w / 4)
                .unwrap_or(Duration::from_secs(60));
            self.next_retention = if done {
                now + every.clamp(Duration::from_secs(1), Duration::from_secs(60))
            } else {
                now + Duration::from_millis(100)
            };
        }
        Ok(())
    }

    /// Merges the files of `level - 1` newer than the newest file of `level` into one file.
    fn compact_level(
        &mut self,
        storage: &dyn Storage,
        work_dir: &Path,
        level: u8,
    ) -> Result<(), String> {
        let done = storage
            .list(level)
            .map_err(|e| e.to_string())?
            .iter()
            .map(|f| f.max_txid)
            .max()
            .unwrap_or(0);
        let below = storage.list(level - 1).map_err(|e| e.to_string())?;
        // The contiguous run of newer files: a gap (a snapshot took the TXID) ends it.
        let mut run: Vec<&FileInfo> = Vec::new();
        for f in below.iter().filter(|f| f.min_txid > done) {
            if run.last().is_some_and(|l| f.min_txid != l.max_txid + 1) {
                break;
            }
            run.push(f);
        }
        if run.is_empty() {
            return Ok(());
        }
        let (min, max) = (run[0].min_txid, run[run.len() - 1].max_txid);
        self.write_compaction(storage, work_dir, level, &run)?;
        log::debug!(
            "compacted {} level-{} files into level {level} {min:016x}-{max:016x}",
            run.len(),
            level - 1
        );
        if level == 1 {
            self.l0_expiry.push_back((Instant::now(), max));
        }
        Ok(())
    }

    fn write_compaction(
        &self,
        storage: &dyn Storage,
        work_dir: &Path,
        level: u8,
        files: &[&FileInfo],
    ) -> Result<Header, String> {
        let mut inputs = Vec::with_capacity(files.len());
        for f in files {
            inputs.push(
                storage
                    .open(f.level, f.min_txid, f.max_txid)
                    .map_err(|e| e.to_string())?,
            );
        }
        std::fs::create_dir_all(work_dir).map_err(|e| e.to_string())?;
        let tmp = work_dir.join(format!("compact-{level}.ltx.tmp"));
        let out = File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let result = compact::compact(inputs, BufWriter::with_capacity(1 << 20, out))
            .map_err(|e| e.to_string())
            .and_then(|(w, h)| {
                w.into_inner()
                    .map_err(|e| e.to_string())?
                    .sync_all()
                    .map_err(|e| e.to_string())?;
                let mut f = File::open(&tmp).map_err(|e| e.to_string())?;
                storage
                    .put(level, h.min_txid, h.max_txid, h.timestamp_ms, &mut f)
                    .map_err(|e| {
                        format!(
                            "upload of level {level} {:016x}-{:016x} failed: {e}",
                            h.min_txid, h.max_txid
                        )
                    })?;
                Ok(h)
            });
        let _ = std::fs::remove_file(&tmp);
        result
    }

    /// Every `snapshot.interval`: a new L9 file at the newest TXID, from the replica's own files.
    fn scheduled_snapshot(
        &mut self,
        storage: &dyn Storage,
        work_dir: &Path,
        txid: u64,
    ) -> Result<(), String> {
        if self.policy.snapshot_interval.is_zero() || txid == 0 {
            return Ok(());
        }
        let snaps = storage.list(SNAPSHOT_LEVEL).map_err(|e| e.to_string())?;
        let newest = snaps.iter().max_by_key(|f| f.max_txid);
        if self.last_snapshot.is_none() {
            // First look after start: date the newest snapshot by its header.
            let age = match newest {
                Some(f) => {
                    let h = header_of(storage, f)?;
                    Duration::from_millis((now_ms() - h.timestamp_ms).max(0) as u64)
                }
                None => self.policy.snapshot_interval,
            };
            let base = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            self.last_snapshot = Some(base);
        }
        let due = self
            .last_snapshot
            .is_some_and(|t| t.elapsed() >= self.policy.snapshot_interval);
        if !due || newest.is_some_and(|f| f.max_txid >= txid) {
            return Ok(());
        }
        let plan = restore::plan(storage, restore::Target::Latest).map_err(|e| e.to_string())?;
        let files: Vec<&FileInfo> = plan.files.iter().map(|p| &p.info).collect();
        let h = self.write_compaction(storage, work_dir, SNAPSHOT_LEVEL, &files)?;
        log::info!(
            "scheduled snapshot written at TXID {:016x} from {} replica files",
            h.max_txid,
            files.len()
        );
        self.last_snapshot = Some(Instant::now());
        Ok(())
    }

    fn expire_l0(&mut self, storage: &dyn Storage) -> Result<(), String> {
        let mut upto = 0;
        while let Some(&(at, max)) = self.l0_expiry.front() {
            if at.elapsed() < self.policy.l0_retention {
                break;
            }
            upto = upto.max(max);
            self.l0_expiry.pop_front();
        }
        if upto == 0 {
            return Ok(());
        }
        log::debug!("retention: deleting level-0 files up to TXID {upto:016x} (compacted)");
        for f in storage
            .list(0)
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|f| f.max_txid <= upto)
        {
            storage
                .delete(0, f.min_txid, f.max_txid)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Deletes what only serves points before the restore window, at most `DELETES_PER_PASS`
    /// objects a pass (so a backlog of old files never holds up shipping); `Ok(false)` when
    /// there is more to delete.
    fn retain(&mut self, storage: &dyn Storage) -> Result<bool, String> {
        let Some(window) = self.policy.retention else {
            return Ok(true);
        };
        let start = now_ms() - window.as_millis() as i64;
        let mut snaps = storage.list(SNAPSHOT_LEVEL).map_err(|e| e.to_string())?;
        snaps.sort_by_key(|f| f.max_txid);
        // The base of the window: the newest snapshot taken at or before its start. Snapshot
        // times grow with their TXIDs, so a binary search reads a few headers, not all.
        let (mut lo, mut hi) = (0, snaps.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.snapshot_time(storage, &snaps[mid])? <= start {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let Some(base) = lo.checked_sub(1).map(|i| snaps[i].max_txid) else {
            return Ok(true); // every snapshot is inside the window: nothing is old enough
        };
        let mut doomed: Vec<FileInfo> = snaps.into_iter().filter(|f| f.max_txid < base).collect();
        for level in 0..=self.policy.levels.len() as u8 {
            let files = storage.list(level).map_err(|e| e.to_string())?;
            doomed.extend(files.into_iter().filter(|f| f.max_txid <= base));
        }
        if doomed.is_empty() {
            return Ok(true);
        }
        let more = doomed.len() > DELETES_PER_PASS;
        log::debug!(
            "retention: deleting {} of {} files that only serve points before snapshot {base:016x}",
            doomed.len().min(DELETES_PER_PASS),
            doomed.len()
        );
        // Oldest first, so an interrupted pass never leaves a hole in what remains.
        doomed.sort_by_key(|f| (f.max_txid, f.level));
        for f in doomed.iter().take(DELETES_PER_PASS) {
            storage
                .delete(f.level, f.min_txid, f.max_txid)
                .map_err(|e| e.to_string())?;
        }
        self.snapshot_ts.retain(|&max, _| max >= base);
        Ok(!more)
    }

    /// A snapshot's header timestamp (a GET, remembered).
    fn snapshot_time(&mut self, storage: &dyn Storage, f: &FileInfo) -> Result<i64, String> {
        if let Some(&ts) = self.snapshot_ts.get(&f.max_txid) {
            return Ok(ts);
        }
        let ts = header_of(storage, f)?.timestamp_ms;
        self.snapshot_ts.insert(f.max_txid, ts);
        Ok(ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::{Encoder, HEADER_FLAG_NO_CHECKSUM};
    use crate::storage::file::FileStorage;

    fn snapshot(txid: u64, ts: i64) -> Vec<u8> {
        let h = Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size: 512,
            commit: 1,
            min_txid: 1,
            max_txid: txid,
            timestamp_ms: ts,
            ..Header::default()
        };
        let mut e = Encoder::new(Vec::new(), &h).unwrap();
        e.write_page(1, &[0u8; 512]).unwrap();
        e.finish(0).unwrap().0
    }

    #[test]
    fn retention_reads_few_headers_and_deletes_a_backlog_in_bounded_passes() {
        let dir = std::env::temp_dir().join(format!("walship-retain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = FileStorage::new(dir.clone());
        // 200 snapshots from an hour ago (a crash loop's worth), then one taken now.
        let old = now_ms() - 3_600_000;
        for t in 1..=200u64 {
            let ts = old + t as i64;
            store.put(9, 1, t, ts, &mut &snapshot(t, ts)[..]).unwrap();
        }
        let now = now_ms();
        store
            .put(9, 1, 201, now, &mut &snapshot(201, now)[..])
            .unwrap();
        let mut m = Maintenance::new(Policy {
            levels: Vec::new(),
            snapshot_interval: Duration::ZERO,
            retention: Some(Duration::from_secs(60)),
            l0_retention: Duration::from_secs(1),
        });
        let mut passes = 0;
        while !m.retain(&store).unwrap() {
            passes += 1;
            assert!(passes < 10, "retention never finished");
        }
        // 199 files older than the window's base (snapshot 200), 64 a pass.
        assert_eq!(passes, 3);
        let left: Vec<u64> = store.list(9).unwrap().iter().map(|f| f.max_txid).collect();
        assert_eq!(left, vec![200, 201]);
        // The base was found by binary search: a few header reads, not 201.
        assert!(
            m.snapshot_ts.len() <= 12,
            "{} headers read",
            m.snapshot_ts.len()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
