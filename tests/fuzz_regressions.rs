//! The fuzz targets (src/fuzzing.rs) on the stable toolchain, so `make test` runs them on any
//! machine: every file in fuzz/corpus-regressions/<target>/ (crash reproducers `cargo fuzz`
//! found, and hand-made seeds), then a few thousand deterministic pseudo-random and mutated
//! inputs per target (fixed seed, bounded in time). The long runs are `make fuzz-smoke` and
//! `make fuzz-long`.
//!
//! `cargo test --release --test fuzz_regressions -- --ignored` rewrites the hand-made seeds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use walvfs::fuzzing;
use walvfs::ltx::{Encoder, Header, HEADER_FLAG_NO_CHECKSUM};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 3] = [
    ("ltx_decode", fuzzing::ltx_decode),
    ("capture", fuzzing::capture_sequence),
    ("config_parse", fuzzing::config_parse),
];

/// Per target: at most this many generated inputs, and at most this long.
const GENERATED: usize = 4000;
const BUDGET: Duration = Duration::from_secs(3);

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus-regressions")
        .join(target)
}

/// xorshift64*: tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn run_one(target: &str, f: Target, what: &str, input: &[u8]) {
    if std::panic::catch_unwind(|| f(input)).is_err() {
        panic!(
            "fuzz target {target} failed on {what} ({} bytes): {input:02x?}",
            input.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-made seeds

fn page(pgno: u32, size: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(pgno);
    (0..size)
        .map(|i| {
            if i < size / 2 {
                (i as u32 ^ pgno) as u8
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

fn ltx_file(h: &Header, pgnos: &[u32], post: u64) -> Vec<u8> {
    let mut enc = Encoder::new(Vec::new(), h).unwrap();
    for &p in pgnos {
        enc.write_page(p, &page(p, h.page_size as usize)).unwrap();
    }
    enc.finish(post).unwrap().0
}

fn ltx_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let snapshot = Header {
        flags: HEADER_FLAG_NO_CHECKSUM,
        page_size: 512,
        commit: 3,
        min_txid: 1,
        max_txid: 1,
        timestamp_ms: 1_700_000_000_000,
        ..Header::default()
    };
    let snap = ltx_file(&snapshot, &[1, 2, 3], 0);
    let incremental = Header {
        min_txid: 5,
        max_txid: 7,
        commit: 9,
        page_size: 1024,
        wal_offset: 32,
        wal_size: 3 * 1048,
        wal_salt1: 7,
        wal_salt2: 8,
        ..snapshot.clone()
    };
    let incr = ltx_file(&incremental, &[2, 5, 9], 0);
    let truncated = snap[..snap.len() / 2].to_vec();
    vec![
        ("snapshot.ltx", snap),
        ("incremental.ltx", incr),
        ("truncated.ltx", truncated),
    ]
}

/// Programs for the capture interpreter (see `fuzzing::capture_sequence` for the opcodes:
/// 0 commit, 1 spill/rollback, 2 guarded restart, 3 foreign restart, 4 guarded truncation,
/// 5 foreign truncation, 6 rollback-journal write, 7 sync).
fn capture_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let commit = |a: u8, b: u8| [0u8, 1, a, 0x11, b, 0x22, 1];
    let mut guarded = vec![0u8]; // page size 512
    for part in [
        &commit(1, 2)[..],
        &[1, 0, 3, 0x33, 1], // a spilled transaction, rolled back
        &commit(2, 3),
        &[2], // a guarded restart before anything was shipped
        &commit(1, 5),
        &[7], // sync
        &[4], // a guarded TRUNCATE checkpoint
        &commit(4, 6),
        &[7],
    ] {
        guarded.extend_from_slice(part);
    }
    let mut foreign = vec![2u8]; // page size 4096
    for part in [
        &commit(1, 2)[..],
        &[7],
        &[3, 1, 0, 4, 0x44], // another process commits and restarts
        &commit(3, 3),
        &[7],
        &[4, 6, 5, 0x55], // emptied, then a rollback-journal write
        &[7],
        &[5, 0], // another process empties the WAL
        &[7],
    ] {
        foreign.extend_from_slice(part);
    }
    vec![("guarded.bin", guarded), ("foreign.bin", foreign)]
}

const CONFIG_S3: &str = "\
dbs:
  - path: ./data/app.db
    replicas:
      - type: s3
        bucket: ${BUCKET}
        path: app/sqlite
        endpoint: https://s3.amazonaws.com
        access-key-id: ${LITESTREAM_ACCESS_KEY_ID}
        secret-access-key: ${LITESTREAM_SECRET_ACCESS_KEY}
        region: us-east-1
        retention: 168h
        sync-interval: 1s
";

const CONFIG_FILE: &str = "\
snapshot:
  interval: 1h30m
  retention: 24h
levels:
  - interval: 30s
  - interval: 5m
l0-retention: 5m
shutdown-sync-timeout: 10s
dbs:
  - path: ~/db.sqlite
    monitor-interval: 500ms
    replica:
      url: file:///var/backups/db
  - path: /srv/other.db
    replica:
      type: gs
      bucket: b
      path: p
";

fn config_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("s3.yml", CONFIG_S3.as_bytes().to_vec()),
        ("file-and-gs.yml", CONFIG_FILE.as_bytes().to_vec()),
        ("duration.txt", b"1h2m3.5s".to_vec()),
        (
            "replica-url.txt",
            b"s3://bucket/path?region=eu-west-1".to_vec(),
        ),
    ]
}

fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "ltx_decode" => ltx_seeds(),
        "capture" => capture_seeds(),
        _ => config_seeds(),
    }
}

// ---------------------------------------------------------------------------------------------
// Mutation

fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'$', b':', b'\n'];
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                v.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                v.drain(i..i + n);
            }
            4 => v.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let chunk = v[i..i + n].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            6 if !other.is_empty() => {
                // Splice: the head of this input, the tail of another.
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ if len >= 4 => {
                // A 32-bit field set to a boundary value.
                let i = rng.below(len - 3);
                let x: u32 = [0, 1, u32::MAX, u32::MAX / 2 + 1, 512, 65536][rng.below(6)];
                v[i..i + 4].copy_from_slice(&x.to_be_bytes());
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v
}

fn corpus_files(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir(target))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .map(|e| {
                    let p = e.path();
                    (p.display().to_string(), std::fs::read(&p).unwrap())
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn regressions_replay() {
    for (target, f) in TARGETS {
        let files = corpus_files(target);
        assert!(
            !files.is_empty(),
            "no files in {}",
            corpus_dir(target).display()
        );
        for (name, bytes) in &files {
            run_one(target, f, name, bytes);
        }
    }
}

#[test]
fn seeds_are_meaningful() {
    // The LTX seeds decode (or, cut short, do not), so mutations start from real files.
    let s = ltx_seeds();
    assert!(walvfs::ltx::decode(&s[0].1).is_ok());
    assert!(walvfs::ltx::decode(&s[1].1).is_ok());
    assert!(walvfs::ltx::decode(&s[2].1).is_err());
    // The config seeds parse.
    for (name, text) in &config_seeds()[..2] {
        let env = |k: &str| match k {
            "BUCKET" => Some("b".to_string()),
            "HOME" => Some("/home/x".to_string()),
            _ => Some("x".to_string()),
        };
        let text = std::str::from_utf8(text).unwrap();
        if let Err(e) = walvfs::config::Config::parse_with_env(text, Path::new("/srv"), &env) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn generated_inputs() {
    for (t, (target, f)) in TARGETS.into_iter().enumerate() {
        let mut pool: Vec<Vec<u8>> = seeds(target).into_iter().map(|s| s.1).collect();
        pool.extend(corpus_files(target).into_iter().map(|f| f.1));
        let mut rng = Rng(0x5EED_0000_0000_0001 + t as u64);
        let started = Instant::now();
        let mut ran = 0;
        while ran < GENERATED && started.elapsed() < BUDGET {
            let input = if rng.below(4) == 0 {
                (0..rng.below(600)).map(|_| rng.next() as u8).collect()
            } else {
                let base = &pool[rng.below(pool.len())];
                let other = &pool[rng.below(pool.len())];
                mutate(&mut rng, base, other)
            };
            run_one(target, f, &format!("generated input {ran}"), &input);
            ran += 1;
        }
        assert!(ran >= 100, "{target}: only {ran} inputs in {BUDGET:?}");
    }
}

/// Rewrites the hand-made seeds in fuzz/corpus-regressions/ (crash reproducers are kept).
#[test]
#[ignore]
fn write_seeds() {
    for (target, _) in TARGETS {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds(target) {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
