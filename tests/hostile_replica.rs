//! `walship restore` on hostile and damaged file replicas: a bit flip in a page, a bit flip in
//! a header, a truncated file, a missing file in the middle of the TXID chain, foreign objects
//! under the prefix, a file of another page size, a damaged compaction and a damaged snapshot.
//!
//! The replica is made with the LTX encoder from real SQLite database images: a database
//! written by the `sqlite3` shell (rollback journal, so the file is the whole state) after
//! each of six transactions; TXID 1 is a snapshot, each later TXID an L0 file holding the
//! pages that changed, plus an L1 compaction of TXIDs 2..=5. Every refused restore must name
//! the object and its TXID range, say what is wrong and what to do, and leave no output (nor
//! a temporary file); with `-last-consistent` the output must be byte for byte the source
//! database at the TXID the command says it stopped at, pass `PRAGMA integrity_check`, and
//! hold the same rows.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use walvfs::ltx::{self, Encoder, Header, HEADER_FLAG_NO_CHECKSUM};

const WALSHIP: &str = env!("CARGO_BIN_EXE_walship");
const PS: usize = 4096;
const STEPS: u64 = 6;

fn sqlite3(db: &Path, sql: &str) -> String {
    let out = Command::new(std::env::var_os("SQLITE3_BIN").unwrap_or_else(|| "sqlite3".into()))
        .arg(db)
        .arg(sql)
        .stdin(Stdio::null())
        .output()
        .expect("run the sqlite3 shell");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn scratch(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hostile-{name}"));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).unwrap();
    p
}

/// The database file after each transaction (index = TXID; 0 is empty), and its rows.
struct History {
    images: Vec<Vec<u8>>,
    rows: Vec<String>,
}

const ROWS: &str = "SELECT count(*), sum(length(v)), hex(sha3_query('SELECT * FROM t')) FROM t";

fn history() -> &'static History {
    static H: OnceLock<History> = OnceLock::new();
    H.get_or_init(|| {
        let dir = scratch("history");
        let db = dir.join("src.db");
        let mut h = History {
            images: vec![Vec::new()],
            rows: vec![String::new()],
        };
        for k in 1..=STEPS {
            let sql = if k == 1 {
                format!(
                    "PRAGMA page_size={PS}; PRAGMA journal_mode=DELETE; \
                     CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); \
                     INSERT INTO t(v) SELECT randomblob(300) FROM generate_series(1, 60);"
                )
            } else {
                format!(
                    "INSERT INTO t(v) SELECT randomblob(700) FROM generate_series(1, 12); \
                     UPDATE t SET v = randomblob(90) WHERE id % 5 = {k}; \
                     DELETE FROM t WHERE id % 13 = {k};"
                )
            };
            sqlite3(&db, &sql);
            h.images.push(fs::read(&db).unwrap());
            h.rows.push(sqlite3(&db, ROWS));
        }
        h
    })
}

/// An LTX file of `image` for TXIDs `min..=max`: every page for a snapshot, else the pages
/// that differ from `before`.
fn encode(min: u64, max: u64, ps: usize, image: &[u8], before: &[u8]) -> Vec<u8> {
    let commit = image.len() / ps;
    let h = Header {
        flags: HEADER_FLAG_NO_CHECKSUM,
        page_size: ps as u32,
        commit: commit as u32,
        min_txid: min,
        max_txid: max,
        timestamp_ms: 1_790_000_000_000 + max as i64 * 1000,
        ..Header::default()
    };
    let mut enc = Encoder::new(Vec::new(), &h).unwrap();
    for p in 0..commit {
        let page = &image[p * ps..(p + 1) * ps];
        if min == 1 || before.get(p * ps..(p + 1) * ps) != Some(page) {
            enc.write_page(p as u32 + 1, page).unwrap();
        }
    }
    enc.finish(0).unwrap().0
}

fn file_path(replica: &Path, level: u8, min: u64, max: u64) -> PathBuf {
    replica
        .join("ltx")
        .join(level.to_string())
        .join(ltx::file_name(min, max))
}

/// A replica in `<scratch>/replica`: L0 1..=6 (1 is the snapshot) and L1 2..=5.
fn replica(name: &str) -> (PathBuf, PathBuf) {
    let h = history();
    let dir = scratch(name);
    let r = dir.join("replica");
    let mut files: Vec<(u8, u64, u64)> = (1..=STEPS).map(|k| (0, k, k)).collect();
    files.push((1, 2, 5));
    for (level, min, max) in files {
        let p = file_path(&r, level, min, max);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let before = &h.images[min as usize - 1];
        fs::write(p, encode(min, max, PS, &h.images[max as usize], before)).unwrap();
    }
    (dir, r)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn restore(replica: &Path, out: &Path, extra: &[&str]) -> Run {
    let o = Command::new(WALSHIP)
        .arg("restore")
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(replica)
        .env_remove("WALSHIP_CONFIG")
        .env_remove("WALSHIP_REPLICA_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run walship");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn tx(t: u64) -> String {
    format!("{t:016x}")
}

fn range(min: u64, max: u64) -> String {
    format!("TXIDs {}..={}", tx(min), tx(max))
}

fn obj(level: u8, min: u64, max: u64) -> String {
    format!("ltx/{level}/{}", ltx::file_name(min, max))
}

impl Run {
    /// Exit 1 with every `wants` in stderr; nothing at `out` and no temporary file next to it.
    fn refused(&self, out: &Path, wants: &[&str]) {
        assert_eq!(
            self.code, 1,
            "expected a refusal:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        for w in wants {
            assert!(self.stderr.contains(w), "{w:?} not in:\n{}", self.stderr);
        }
        assert!(!out.exists(), "a refused restore left {}", out.display());
        no_leftovers(out.parent().unwrap());
    }

    /// Exit 0 and `out` is the source database at `txid`.
    fn restored(&self, out: &Path, txid: u64) {
        assert_eq!(
            self.code, 0,
            "restore failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stdout.contains(&format!("restored TXID {}", tx(txid))),
            "{}",
            self.stdout
        );
        let h = history();
        assert!(
            fs::read(out).unwrap() == h.images[txid as usize],
            "the restored file is not the source at TXID {txid}"
        );
        assert_eq!(sqlite3(out, "PRAGMA integrity_check"), "ok");
        assert_eq!(sqlite3(out, ROWS), h.rows[txid as usize]);
        no_leftovers(out.parent().unwrap());
    }

    /// `-last-consistent` said it stopped at `txid` before the latest, and why.
    fn stopped_at(&self, txid: u64, why: &[&str]) {
        let line = format!("stopped at TXID {}, before the target TXID", tx(txid));
        assert!(
            self.stdout.contains(&line),
            "{line:?} not in:\n{}",
            self.stdout
        );
        for w in why {
            assert!(self.stdout.contains(w), "{w:?} not in:\n{}", self.stdout);
        }
    }
}

fn no_leftovers(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("walship-restore"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

fn flip(path: &Path, at: usize, mask: u8) {
    let mut b = fs::read(path).unwrap();
    b[at] ^= mask;
    fs::write(path, b).unwrap();
}

#[test]
fn an_intact_replica_restores_the_latest_state() {
    let (dir, r) = replica("intact");
    let out = dir.join("out.db");
    restore(&r, &out, &[]).restored(&out, STEPS);
}

#[test]
fn a_bit_flip_in_a_page_is_refused_or_restored_up_to_the_file_before() {
    let (dir, r) = replica("page-flip");
    // TXID 4 only exists as an L0 file once the L1 2..=5 is gone (the plan prefers it).
    fs::remove_file(file_path(&r, 1, 2, 5)).unwrap();
    let f = file_path(&r, 0, 4, 4);
    let len = fs::metadata(&f).unwrap().len() as usize;
    // Past the header and the first frame's page header and size prefix: compressed page data.
    flip(&f, 100 + 10 + (len - 200) / 4, 0x10);
    let out = dir.join("out.db");
    let run = restore(&r, &out, &[]);
    run.refused(
        &out,
        &[
            &obj(0, 4, 4),
            &range(4, 4),
            "is corrupt",
            &format!("pass -last-consistent to restore up to TXID {}", tx(3)),
        ],
    );
    let run = restore(&r, &out, &["-last-consistent"]);
    run.restored(&out, 3);
    run.stopped_at(3, &[&obj(0, 4, 4), "is corrupt"]);
    assert!(run.stderr.contains(&format!("set aside {}", obj(0, 4, 4))));
}

#[test]
fn a_bit_flip_in_a_header_is_refused_and_the_existing_output_kept() {
    let (dir, r) = replica("header-flip");
    fs::remove_file(file_path(&r, 1, 2, 5)).unwrap();
    // In the header's timestamp: only the CRC-64 file checksum notices.
    flip(&file_path(&r, 0, 5, 5), 37, 0x01);
    let out = dir.join("out.db");
    fs::write(&out, b"keep me").unwrap();
    let run = restore(&r, &out, &["-force"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    for w in [
        obj(0, 5, 5),
        range(5, 5),
        "checksum mismatch".into(),
        format!("up to TXID {}", tx(4)),
    ] {
        assert!(run.stderr.contains(&w), "{w:?} not in {}", run.stderr);
    }
    assert_eq!(
        fs::read(&out).unwrap(),
        b"keep me",
        "the output was touched"
    );
    no_leftovers(&dir);
    fs::remove_file(&out).unwrap();
    let run = restore(&r, &out, &["-last-consistent"]);
    run.restored(&out, 4);
    run.stopped_at(4, &[&obj(0, 5, 5), "checksum mismatch"]);
}

#[test]
fn a_truncated_file_is_refused_naming_the_byte() {
    let (dir, r) = replica("truncated");
    fs::remove_file(file_path(&r, 1, 2, 5)).unwrap();
    let f = file_path(&r, 0, 3, 3);
    let b = fs::read(&f).unwrap();
    let cut = b.len() / 2;
    fs::write(&f, &b[..cut]).unwrap();
    let out = dir.join("out.db");
    restore(&r, &out, &[]).refused(
        &out,
        &[
            &obj(0, 3, 3),
            &range(3, 3),
            &format!("{cut} bytes"),
            "truncated",
            &format!("ends early at byte offset {cut}"),
            &format!("up to TXID {}", tx(2)),
        ],
    );
    let run = restore(&r, &out, &["-last-consistent"]);
    run.restored(&out, 2);
    run.stopped_at(2, &["truncated"]);
}

#[test]
fn a_missing_middle_file_is_a_gap_or_restored_up_to_it() {
    let (dir, r) = replica("gap");
    fs::remove_file(file_path(&r, 1, 2, 5)).unwrap();
    fs::remove_file(file_path(&r, 0, 4, 4)).unwrap();
    let out = dir.join("out.db");
    restore(&r, &out, &[]).refused(
        &out,
        &[
            &format!("missing {}", range(4, 4)),
            &obj(0, 3, 3),
            &obj(0, 5, 5),
            "-last-consistent",
        ],
    );
    let run = restore(&r, &out, &["-last-consistent"]);
    run.restored(&out, 3);
    run.stopped_at(3, &[&format!("missing {}", range(4, 4))]);
    // The dry run shows the same stop without writing anything.
    let _ = fs::remove_file(&out);
    let dry = restore(&r, &out, &["-last-consistent", "-dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout
            .contains(&format!("stops at TXID {}, before TXID {}", tx(3), tx(6))),
        "{}",
        dry.stdout
    );
    assert!(!out.exists());
}

#[test]
fn foreign_objects_under_the_prefix_are_ignored() {
    let (dir, r) = replica("foreign");
    let l0 = r.join("ltx/0");
    for name in [
        "README",
        "notes.txt",
        "garbage.ltx",
        "0000000000000007-0000000000000007.ltx.tmp",
        ".0000000000000007-0000000000000007.ltx.tmp",
        "000000000000000A-000000000000000A.ltx",
        "0000000000000007-000000000000007.ltx",
        "0000000000000009-0000000000000002.ltx",
        "0000000000000000-0000000000000000.ltx",
    ] {
        fs::write(l0.join(name), b"not an LTX file").unwrap();
    }
    // A directory with an LTX name, other levels, and files outside `ltx/`.
    fs::create_dir_all(l0.join(ltx::file_name(8, 8))).unwrap();
    fs::create_dir_all(r.join("ltx/5")).unwrap();
    fs::write(r.join("ltx/5").join(ltx::file_name(1, 9)), b"junk").unwrap();
    fs::write(r.join("ltx/nothing.txt"), b"junk").unwrap();
    fs::write(r.join("generations"), b"junk").unwrap();
    let out = dir.join("out.db");
    restore(&r, &out, &[]).restored(&out, STEPS);

    // An object with a valid LTX name but other content is not foreign: it claims TXID 7.
    fs::remove_file(&out).unwrap();
    fs::write(l0.join(ltx::file_name(7, 7)), b"not an LTX file at all").unwrap();
    restore(&r, &out, &[]).refused(
        &out,
        &[
            &obj(0, 7, 7),
            &range(7, 7),
            "not an LTX file",
            &format!("up to TXID {}", tx(6)),
        ],
    );
    let run = restore(&r, &out, &["-last-consistent"]);
    run.restored(&out, STEPS);
    run.stopped_at(STEPS, &["not an LTX file"]);
}

#[test]
fn a_file_of_another_page_size_is_refused() {
    let (dir, r) = replica("page-size");
    fs::remove_file(file_path(&r, 1, 2, 5)).unwrap();
    // A real 1024-byte-page database, as an LTX file claiming TXID 4.
    let other = dir.join("other.db");
    sqlite3(
        &other,
        "PRAGMA page_size=1024; CREATE TABLE o(x); INSERT INTO o VALUES (randomblob(3000));",
    );
    let image = fs::read(&other).unwrap();
    fs::write(file_path(&r, 0, 4, 4), encode(4, 4, 1024, &image, &[])).unwrap();
    let out = dir.join("out.db");
    restore(&r, &out, &[]).refused(
        &out,
        &[
            &obj(0, 4, 4),
            &range(4, 4),
            "page size 1024 vs 4096",
            &format!("up to TXID {}", tx(3)),
        ],
    );
    let run = restore(&r, &out, &["-last-consistent"]);
    run.restored(&out, 3);
    run.stopped_at(3, &["page size 1024 vs 4096"]);
}

#[test]
fn a_damaged_compaction_is_refused_or_routed_around_through_level_0() {
    let (dir, r) = replica("compaction");
    let f = file_path(&r, 1, 2, 5);
    let len = fs::metadata(&f).unwrap().len() as usize;
    flip(&f, len / 2, 0x04);
    let out = dir.join("out.db");
    restore(&r, &out, &[]).refused(
        &out,
        &[
            &obj(1, 2, 5),
            &range(2, 5),
            &format!("up to TXID {}", tx(1)),
        ],
    );
    // The L0 files cover the same TXIDs: the latest state is still reachable.
    let run = restore(&r, &out, &["-last-consistent"]);
    run.restored(&out, STEPS);
    assert!(!run.stdout.contains("stopped at"), "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!("set aside {}", obj(1, 2, 5))),
        "{}",
        run.stderr
    );
}

#[test]
fn a_damaged_only_snapshot_leaves_nothing_consistent() {
    let (dir, r) = replica("snapshot");
    fs::write(file_path(&r, 0, 1, 1), b"LTX1 but nothing else").unwrap();
    let out = dir.join("out.db");
    restore(&r, &out, &[]).refused(&out, &[&obj(0, 1, 1), &range(1, 1), "is corrupt"]);
    restore(&r, &out, &["-last-consistent"])
        .refused(&out, &["no consistent state", &obj(0, 1, 1), "no snapshot"]);
}
