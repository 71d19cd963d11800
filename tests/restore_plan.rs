//! `walvfs::restore` on synthetic replicas: an in-memory `Storage` holding LTX files made
//! with our encoder from a known history of database states, so every plan and every
//! restored image can be checked exactly (the real-Litestream tests are in restore_cli.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use walvfs::ltx::{Encoder, Header, HEADER_FLAG_NO_CHECKSUM};
use walvfs::restore::{self, ApplyOptions, Plan, RestoreError, Target};
use walvfs::storage::{FileInfo, Storage, StorageError};

const PS: usize = 512;
const BASE_MS: i64 = 1_790_000_000_000;

fn ts(txid: u64) -> i64 {
    BASE_MS + txid as i64 * 1000
}

#[derive(Default)]
struct Mem {
    files: Mutex<BTreeMap<(u8, u64, u64), Vec<u8>>>,
    lists: AtomicUsize,
    opens: AtomicUsize,
}

impl Storage for Mem {
    fn describe(&self) -> String {
        "mem://test".into()
    }
    fn list(&self, level: u8) -> Result<Vec<FileInfo>, StorageError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let files = self.files.lock().unwrap();
        Ok(files
            .iter()
            .filter(|((l, _, _), _)| *l == level)
            .map(|(&(level, min_txid, max_txid), b)| FileInfo {
                level,
                min_txid,
                max_txid,
                size: b.len() as u64,
            })
            .collect())
    }
    fn put(
        &self,
        level: u8,
        min: u64,
        max: u64,
        _timestamp_ms: i64,
        src: &mut dyn Read,
    ) -> Result<u64, StorageError> {
        let mut b = Vec::new();
        src.read_to_end(&mut b).unwrap();
        let n = b.len() as u64;
        self.files.lock().unwrap().insert((level, min, max), b);
        Ok(n)
    }
    fn open(&self, level: u8, min: u64, max: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        match self.files.lock().unwrap().get(&(level, min, max)) {
            Some(b) => Ok(Box::new(Cursor::new(b.clone()))),
            None => Err(StorageError::NotFound {
                op: "get",
                object: format!("{level}/{min}-{max}"),
            }),
        }
    }
    fn delete(&self, level: u8, min: u64, max: u64) -> Result<(), StorageError> {
        self.files.lock().unwrap().remove(&(level, min, max));
        Ok(())
    }
}

impl Mem {
    fn remove(&self, level: u8, min: u64, max: u64) {
        assert!(
            self.files
                .lock()
                .unwrap()
                .remove(&(level, min, max))
                .is_some(),
            "no file {level}/{min}-{max}"
        );
    }
    fn set(&self, level: u8, min: u64, max: u64, bytes: Vec<u8>) {
        self.files.lock().unwrap().insert((level, min, max), bytes);
    }
    fn get(&self, level: u8, min: u64, max: u64) -> Vec<u8> {
        self.files.lock().unwrap()[&(level, min, max)].clone()
    }
}

fn page(pgno: usize, txid: u64) -> Vec<u8> {
    (0..PS)
        .map(|i| (pgno * 31 + txid as usize * 7 + i) as u8)
        .collect()
}

/// States after each transaction (index = TXID; 0 unused) and the pages each one changed.
/// The database grows, and every fifth transaction shrinks it by two pages.
struct History {
    states: Vec<Vec<Vec<u8>>>,
    changed: Vec<BTreeSet<usize>>,
}

fn history(n: u64) -> History {
    let mut cur: Vec<Vec<u8>> = (1..=8).map(|p| page(p, 1)).collect();
    let mut h = History {
        states: vec![vec![], cur.clone()],
        changed: vec![BTreeSet::new(), (1..=8).collect()],
    };
    for k in 2..=n {
        let mut ch = BTreeSet::new();
        let len = if k % 5 == 0 {
            cur.len() - 2
        } else {
            cur.len() + (k % 2) as usize
        };
        cur.truncate(len);
        while cur.len() < len {
            cur.push(page(cur.len() + 1, k));
            ch.insert(cur.len());
        }
        let p = (k as usize * 3) % cur.len();
        cur[p] = page(p + 1, k);
        ch.insert(p + 1);
        h.states.push(cur.clone());
        h.changed.push(ch);
    }
    h
}

fn encode(
    min: u64,
    max: u64,
    timestamp_ms: i64,
    page_size: usize,
    commit: usize,
    pages: &[(usize, Vec<u8>)],
) -> Vec<u8> {
    let h = Header {
        flags: HEADER_FLAG_NO_CHECKSUM,
        page_size: page_size as u32,
        commit: commit as u32,
        min_txid: min,
        max_txid: max,
        timestamp_ms,
        ..Header::default()
    };
    let mut enc = Encoder::new(Vec::new(), &h).unwrap();
    for (pgno, data) in pages {
        enc.write_page(*pgno as u32, data).unwrap();
    }
    enc.finish(0).unwrap().0
}

impl History {
    /// The file covering TXIDs `min..=max` (a snapshot when `min` is 1).
    fn file(&self, min: u64, max: u64, timestamp_ms: i64) -> Vec<u8> {
        let state = &self.states[max as usize];
        let pgnos: BTreeSet<usize> = if min == 1 {
            (1..=state.len()).collect()
        } else {
            (min..=max)
                .flat_map(|k| self.changed[k as usize].iter().copied())
                .filter(|&p| p <= state.len())
                .collect()
        };
        let pages: Vec<_> = pgnos
            .into_iter()
            .map(|p| (p, state[p - 1].clone()))
            .collect();
        encode(min, max, timestamp_ms, PS, state.len(), &pages)
    }
    fn add(&self, m: &Mem, level: u8, min: u64, max: u64) {
        m.set(level, min, max, self.file(min, max, ts(max)));
    }
    fn image(&self, txid: u64) -> Vec<u8> {
        self.states[txid as usize].concat()
    }
}

/// L0 1..=n (L0 1-1 is a snapshot, as Litestream writes it), plus `extra` files.
fn replica(h: &History, n: u64, extra: &[(u8, u64, u64)]) -> Mem {
    let m = Mem::default();
    for k in 1..=n {
        h.add(&m, 0, k, k);
    }
    for &(level, min, max) in extra {
        h.add(&m, level, min, max);
    }
    m
}

fn ranges(p: &Plan) -> Vec<(u8, u64, u64)> {
    p.files
        .iter()
        .map(|f| (f.info.level, f.info.min_txid, f.info.max_txid))
        .collect()
}

struct Out(PathBuf);
impl Out {
    fn new(name: &str) -> Out {
        Out(std::env::temp_dir().join(format!(
            "walship-restore-plan-{name}-{}",
            std::process::id()
        )))
    }
}
impl Drop for Out {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn restore_image(
    m: &Mem,
    plan: &Plan,
    opts: &ApplyOptions,
    name: &str,
) -> Result<(restore::Applied, Vec<u8>), RestoreError> {
    let out = Out::new(name);
    let mut seen = Vec::new();
    let applied = restore::apply_with(m, plan, &out.0, opts, &mut |p| seen.push(p.index))?;
    assert_eq!(
        seen,
        (0..plan.files.len()).collect::<Vec<_>>(),
        "progress reports every file in order"
    );
    Ok((applied, std::fs::read(&out.0).unwrap()))
}

const STANDARD: &[(u8, u64, u64)] = &[(9, 1, 4), (1, 2, 5), (1, 6, 8)];

#[test]
fn latest_takes_the_newest_snapshot_then_the_fewest_files() {
    let h = history(10);
    let m = replica(&h, 10, STANDARD);
    let p = restore::plan(&m, Target::Latest).unwrap();
    assert_eq!(
        m.lists.load(Ordering::SeqCst),
        5,
        "each of levels 9, 3, 2, 1, 0 listed once"
    );
    assert_eq!(
        m.opens.load(Ordering::SeqCst),
        0,
        "planning by TXID reads no file"
    );
    // L0 5-5 and L1 2-5 both reach 5: the one overlapping less wins.
    assert_eq!(
        ranges(&p),
        [(9, 1, 4), (0, 5, 5), (1, 6, 8), (0, 9, 9), (0, 10, 10)]
    );
    assert_eq!((p.txid, p.latest_txid, p.files_listed), (10, 10, 13));
    let (a, image) = restore_image(&m, &p, &ApplyOptions::default(), "latest").unwrap();
    assert_eq!(image, h.image(10));
    assert_eq!(
        (
            a.txid,
            a.timestamp_ms,
            a.page_size as usize,
            a.pages as usize,
            a.files
        ),
        (10, ts(10), PS, h.states[10].len(), 5)
    );
}

#[test]
fn every_txid_restores_its_state() {
    let h = history(12);
    let m = replica(
        &h,
        12,
        &[(9, 1, 4), (1, 2, 5), (1, 6, 8), (2, 5, 12), (9, 1, 9)],
    );
    for t in 1..=12 {
        let p = restore::plan(&m, Target::Txid(t)).unwrap();
        assert_eq!(p.txid, t);
        let (_, image) = restore_image(
            &m,
            &p,
            &ApplyOptions {
                parallelism: 3,
                stream_above: 600,
                ..ApplyOptions::default()
            },
            &format!("txid{t}"),
        )
        .unwrap();
        assert!(
            image == h.image(t),
            "TXID {t}: image differs (plan {:?})",
            ranges(&p)
        );
    }
    // A compaction overlapping what is already applied is used when it reaches furthest.
    let p = restore::plan(&m, Target::Txid(12)).unwrap();
    assert_eq!(ranges(&p), [(9, 1, 9), (2, 5, 12)]);
    let p = restore::plan(&m, Target::Txid(7)).unwrap();
    assert_eq!(
        ranges(&p),
        [(9, 1, 4), (0, 5, 5), (0, 6, 6), (0, 7, 7)],
        "L1 6-8 straddles 7"
    );
}

#[test]
fn a_target_inside_a_compaction_without_smaller_files_is_not_exact() {
    let h = history(10);
    let m = replica(&h, 10, STANDARD);
    m.remove(0, 6, 6);
    m.remove(0, 7, 7);
    let e = restore::plan(&m, Target::Txid(7)).unwrap_err();
    assert!(
        matches!(
            e,
            RestoreError::NotExact {
                txid: 7,
                below: 5,
                above: 8,
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("ltx/1/0000000000000006-0000000000000008.ltx"),
        "{msg}"
    );
    // 8 is still restorable through the compaction.
    assert_eq!(restore::plan(&m, Target::Txid(8)).unwrap().txid, 8);
}

#[test]
fn a_gap_names_the_missing_range_and_the_files_around_it() {
    let h = history(10);
    let m = replica(&h, 10, STANDARD);
    for k in 6..=8 {
        m.remove(0, k, k);
    }
    m.remove(1, 6, 8);
    let e = restore::plan(&m, Target::Latest).unwrap_err();
    assert!(
        matches!(e, RestoreError::Gap { from: 6, to: 8, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    for want in [
        "TXIDs 0000000000000006..=0000000000000008",
        "ltx/0/0000000000000005-0000000000000005.ltx",
        "ltx/0/0000000000000009-0000000000000009.ltx",
        "up to 0000000000000005",
    ] {
        assert!(msg.contains(want), "{want:?} not in: {msg}");
    }
    // Up to the gap is fine.
    assert_eq!(restore::plan(&m, Target::Txid(5)).unwrap().txid, 5);
}

#[test]
fn targets_outside_the_replica_are_refused_clearly() {
    let h = history(10);
    let m = Mem::default();
    h.add(&m, 9, 1, 4);
    for k in 5..=10 {
        h.add(&m, 0, k, k);
    }
    let e = restore::plan(&m, Target::Txid(3)).unwrap_err();
    assert!(
        matches!(
            e,
            RestoreError::BeforeEarliest {
                earliest_txid: 4,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains(&restore::format_timestamp(ts(4))),
        "{e}"
    );
    let e = restore::plan(&m, Target::Timestamp(ts(3))).unwrap_err();
    assert!(
        matches!(
            e,
            RestoreError::BeforeEarliest {
                earliest_txid: 4,
                ..
            }
        ),
        "{e:?}"
    );
    let e = restore::plan(&m, Target::Txid(11)).unwrap_err();
    assert!(
        matches!(
            e,
            RestoreError::AfterLatest {
                txid: 11,
                latest: 10,
                ..
            }
        ),
        "{e:?}"
    );

    let empty = Mem::default();
    let e = restore::plan(&empty, Target::Latest).unwrap_err();
    assert!(matches!(e, RestoreError::NoFiles { .. }), "{e:?}");
    assert_eq!(empty.lists.load(Ordering::SeqCst), 5);

    let no_snapshot = Mem::default();
    h.add(&no_snapshot, 0, 5, 5);
    let e = restore::plan(&no_snapshot, Target::Latest).unwrap_err();
    assert!(matches!(e, RestoreError::NoSnapshot { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("ltx/0/0000000000000005-0000000000000005.ltx"),
        "{e}"
    );
}

#[test]
fn timestamps_pick_the_last_file_at_or_before_and_read_few_headers() {
    let h = history(60);
    let m = replica(&h, 60, &[(1, 2, 30), (1, 31, 40)]);
    // Snapshots carry the (later) time they were taken.
    m.set(9, 1, 20, h.file(1, 20, ts(20) + 800));
    for (t, want) in [
        (ts(7), 7),
        (ts(7) + 999, 7),
        (ts(20) + 500, 20),
        (ts(35), 35),
        (ts(60) + 10_000_000, 60),
        (ts(1), 1),
    ] {
        m.opens.store(0, Ordering::SeqCst);
        let p = restore::plan(&m, Target::Timestamp(t)).unwrap();
        assert_eq!(p.txid, want, "timestamp {}", restore::format_timestamp(t));
        assert!(
            m.opens.load(Ordering::SeqCst) <= 8,
            "binary search: {} header reads",
            m.opens.load(Ordering::SeqCst)
        );
        let last = p.files.last().unwrap();
        if last.info.level == 0 {
            assert_eq!(
                last.timestamp_ms,
                Some(ts(want)),
                "headers read while planning are reported"
            );
        }
        let (_, image) =
            restore_image(&m, &p, &ApplyOptions::default(), &format!("ts{want}")).unwrap();
        assert!(image == h.image(want));
    }
    let e = restore::plan(&m, Target::Timestamp(ts(1) - 1)).unwrap_err();
    assert!(
        matches!(
            e,
            RestoreError::BeforeEarliest {
                earliest_txid: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains(&restore::format_timestamp(ts(1))),
        "{e}"
    );
}

#[test]
fn many_files_parallel_and_sequential_give_the_same_image() {
    let h = history(300);
    let m = replica(&h, 300, &[]);
    let p = restore::plan(&m, Target::Latest).unwrap();
    assert_eq!(p.files.len(), 300);
    for (parallelism, stream_above) in [(1, u64::MAX), (8, u64::MAX), (4, 700), (32, 0)] {
        let (a, image) = restore_image(
            &m,
            &p,
            &ApplyOptions {
                parallelism,
                stream_above,
                ..ApplyOptions::default()
            },
            &format!("many{parallelism}"),
        )
        .unwrap();
        assert!(
            image == h.image(300),
            "parallelism {parallelism}, stream_above {stream_above}"
        );
        assert_eq!(a.files, 300);
    }
}

/// However many workers and however small the window's file count, the files downloaded ahead
/// of the one being applied never add up to more than `ahead_bytes`: restore memory is bounded
/// by bytes, not by `parallelism x file size`.
#[test]
fn files_downloaded_ahead_stay_within_the_byte_budget() {
    let h = history(200);
    let m = replica(&h, 200, &[]);
    let p = restore::plan(&m, Target::Latest).unwrap();
    let sizes: Vec<u64> = p.files.iter().map(|f| f.info.size).collect();
    let budget = sizes[1..].iter().max().unwrap() * 3;
    let out = Out::new("budget");
    let opts = ApplyOptions {
        parallelism: 32,
        stream_above: u64::MAX,
        ahead_bytes: budget,
        ..ApplyOptions::default()
    };
    let mut worst = 0u64;
    let applied = restore::apply_with(&m, &p, &out.0, &opts, &mut |pr| {
        // Every open past the applied file is a download ahead of it, claimed in plan order.
        let opened = m.opens.load(Ordering::SeqCst);
        let ahead = opened.saturating_sub(pr.index + 1);
        let end = (pr.index + 1 + ahead).min(sizes.len());
        worst = worst.max(sizes[pr.index + 1..end].iter().sum());
    })
    .unwrap();
    assert_eq!(applied.files, 200);
    assert!(
        worst <= budget,
        "{worst} bytes were downloaded ahead of the applied file (budget {budget})"
    );
    assert!(
        worst > 0,
        "nothing was downloaded ahead: the test proves nothing"
    );
    assert!(std::fs::read(&out.0).unwrap() == h.image(200));
}

#[test]
fn a_corrupt_file_is_named_and_fails_the_restore() {
    let h = history(10);
    let m = replica(&h, 10, &[]);
    let mut b = m.get(0, 7, 7);
    b[35] ^= 0x01; // inside the header's timestamp: only the file checksum can tell
    m.set(0, 7, 7, b);
    let p = restore::plan(&m, Target::Latest).unwrap();
    for parallelism in [1, 8] {
        let e = restore_image(
            &m,
            &p,
            &ApplyOptions {
                parallelism,
                ..Default::default()
            },
            "corrupt",
        )
        .unwrap_err();
        assert!(
            matches!(e, RestoreError::Corrupt { min: 7, max: 7, .. }),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("ltx/0/0000000000000007-0000000000000007.ltx") && msg.contains("checksum"),
            "{msg}"
        );
    }
    // A truncated file too.
    let b = m.get(0, 9, 9);
    m.set(0, 9, 9, b[..b.len() - 20].to_vec());
    let p = restore::plan(&m, Target::Txid(6)).unwrap();
    restore_image(&m, &p, &ApplyOptions::default(), "corrupt-before").unwrap();
}

#[test]
fn inconsistent_files_are_refused() {
    let h = history(10);
    // A file whose header range differs from its name.
    let m = replica(&h, 10, &[]);
    m.set(0, 9, 9, m.get(0, 10, 10));
    let p = restore::plan(&m, Target::Latest).unwrap();
    let e = restore_image(&m, &p, &ApplyOptions::default(), "mismatch").unwrap_err();
    assert!(
        matches!(e, RestoreError::Inconsistent { min: 9, max: 9, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("header says TXIDs 000000000000000a..=000000000000000a"),
        "{e}"
    );

    // A page size that differs from the snapshot's.
    let m = replica(&h, 10, &[]);
    let big: Vec<_> = (1..=3).map(|p| (p, vec![7u8; 1024])).collect();
    m.set(0, 4, 4, encode(4, 4, ts(4), 1024, 3, &big));
    let p = restore::plan(&m, Target::Latest).unwrap();
    let e = restore_image(&m, &p, &ApplyOptions::default(), "pagesize").unwrap_err();
    assert!(
        matches!(e, RestoreError::Inconsistent { min: 4, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("page size is 1024, but the files before it have 512"),
        "{e}"
    );

    // A file deleted between planning and applying.
    let m = replica(&h, 10, &[]);
    let p = restore::plan(&m, Target::Latest).unwrap();
    m.remove(0, 5, 5);
    let e = restore_image(&m, &p, &ApplyOptions::default(), "vanished").unwrap_err();
    assert!(matches!(e, RestoreError::Read { min: 5, .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("ltx/0/0000000000000005-0000000000000005.ltx"),
        "{e}"
    );
}
