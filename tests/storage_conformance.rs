//! The `Storage` contract, checked the same way on every backend: the file backend, the S3
//! backend against a real S3-compatible server on 127.0.0.1 started here, the Azure backend on
//! Azurite and the GCS backend on fake-gcs-server (both started by `emulators/`).
//!
//! The server is `moto_server` (PyPI `moto[server]`) by default, with IAM authentication
//! switched on after setup so that signatures are verified (by botocore's signer) and wrong
//! credentials are refused; `WALSHIP_TEST_S3=s3s-fs` uses `s3s-fs` instead
//! (`cargo install s3s-fs --features binary`). When the chosen server is not installed the S3
//! half is skipped with a loud message on stderr; the file backend still runs.
//!
//! Every test uses its own directory or key prefix, so tests run in parallel against one
//! server per test process. The server is stopped by a watchdog when this process exits.

mod emulators;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use walvfs::config::{Config, ReplicaKind, S3Config};
use walvfs::storage::file::FileStorage;
use walvfs::storage::s3::{self, Layout, RetryPolicy, S3Storage};
use walvfs::storage::sigv4;
use walvfs::storage::{FileInfo, Precondition, Storage, StorageError};

const BUCKET: &str = "walship-conformance";

// ---- the local S3 server -----------------------------------------------------------------

struct S3Env {
    server: &'static str,
    endpoint: String,
    port: u16,
    key_id: String,
    secret: String,
    /// Wrong credentials are refused (moto with IAM auth on, s3s-fs).
    checks_auth: bool,
}

use emulators::{free_port, spawn_watched, wait_for_port, which};

fn s3_env() -> Option<&'static S3Env> {
    static ENV: OnceLock<Option<S3Env>> = OnceLock::new();
    ENV.get_or_init(|| start_server(false)).as_ref()
}

/// A server that checks credentials and signatures. moto's own signature check mishandles a
/// `/` in a query value (`prefix=a%2Fb`: botocore's client fails against it the same way), so
/// the main suite runs on a moto without authentication and this second one is used for the
/// credential cases; s3s-fs checks signatures correctly and serves both.
fn auth_env() -> Option<&'static S3Env> {
    static ENV: OnceLock<Option<S3Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        if s3_env()?.checks_auth {
            return None;
        }
        start_server(true)
    })
    .as_ref()
    .or_else(|| s3_env().filter(|e| e.checks_auth))
}

fn start_server(auth: bool) -> Option<S3Env> {
    let which_server = std::env::var("WALSHIP_TEST_S3").unwrap_or_else(|_| "moto".into());
    let dir = std::env::temp_dir().join(format!(
        "walship-s3-{}-{}",
        std::process::id(),
        if auth { "auth" } else { "main" }
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("server.log");
    let port = free_port();
    let env = if which_server == "s3s-fs" {
        let Some(bin) = which("s3s-fs") else {
            eprintln!("\n*** SKIPPING the S3 backend: WALSHIP_TEST_S3=s3s-fs but s3s-fs is not on PATH (cargo install s3s-fs@0.14.1 --features binary --locked) ***\n");
            return None;
        };
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let (key_id, secret) = (
            "WALSHIPTESTKEY000001",
            "walship/test+secret/0123456789abcdefghijk",
        );
        spawn_watched(
            &[
                bin.display().to_string(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--access-key".into(),
                key_id.into(),
                "--secret-key".into(),
                secret.into(),
                data.display().to_string(),
            ],
            &log,
        );
        wait_for_port(port, &log);
        S3Env {
            server: "s3s-fs",
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            key_id: key_id.into(),
            secret: secret.into(),
            checks_auth: true,
        }
    } else {
        let Some(bin) = which("moto_server") else {
            eprintln!("\n*** SKIPPING the S3 backend: moto_server is not installed (python3 -m pip install 'moto[server]') ***\n");
            return None;
        };
        spawn_watched(
            &[
                bin.display().to_string(),
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ],
            &log,
        );
        wait_for_port(port, &log);
        let (key_id, secret) = if auth {
            moto_iam_user(port)
        } else {
            (
                "AKIAWALSHIPMOTO00001".to_string(),
                "walship/moto+secret/0123456789abcdefghij".to_string(),
            )
        };
        let env = S3Env {
            server: "moto",
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            key_id,
            secret,
            checks_auth: auth,
        };
        if auth {
            // From here on moto checks every request's signature and the user's policy.
            let r = ureq::post(&format!("http://127.0.0.1:{port}/moto-api/reset-auth"))
                .send_string("0")
                .expect("moto reset-auth");
            assert_eq!(r.status(), 200);
        }
        env
    };
    let st = S3Storage::from_config(&s3_config_for(&env, BUCKET, "setup", None)).unwrap();
    st.create_bucket().expect("creating the test bucket");
    eprintln!(
        "S3 backend under test: {} at {} (bucket {BUCKET}, authentication {})",
        env.server,
        env.endpoint,
        if env.checks_auth {
            "checked"
        } else {
            "not checked"
        }
    );
    Some(env)
}

/// A signed request outside the backend (IAM setup, raw checks). Returns status, headers
/// (lower-case names) and body.
#[allow(clippy::too_many_arguments)]
fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
    service: &str,
    key_id: &str,
    secret: &str,
) -> (u16, Vec<(String, String)>, String) {
    let t = sigv4::AmzTime::now();
    let hash = sigv4::sha256_hex(body);
    let mut headers = vec![
        ("host".to_string(), format!("127.0.0.1:{port}")),
        ("x-amz-date".to_string(), t.datetime.clone()),
        ("x-amz-content-sha256".to_string(), hash.clone()),
    ];
    if service == "iam" {
        headers.push((
            "content-type".into(),
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        ));
    }
    let canonical_uri = sigv4::uri_encode(path, true);
    let auth = sigv4::authorization(
        key_id,
        secret,
        "us-east-1",
        service,
        &t,
        &sigv4::Request {
            method,
            canonical_uri: &canonical_uri,
            query,
            headers: &headers,
            payload_hash: &hash,
        },
    );
    let q = sigv4::canonical_query(query);
    let url = if q.is_empty() {
        format!("http://127.0.0.1:{port}{canonical_uri}")
    } else {
        format!("http://127.0.0.1:{port}{canonical_uri}?{q}")
    };
    let mut req = ureq::request(method, &url);
    for (k, v) in &headers {
        req = req.set(k, v);
    }
    req = req.set("authorization", &auth);
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let hdrs = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or("").to_string();
            (n.to_ascii_lowercase(), v)
        })
        .collect();
    let text = resp.into_string().unwrap_or_default();
    (status, hdrs, text)
}

fn xml_value(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let i = body.find(&open)? + open.len();
    let j = body[i..].find(&format!("</{tag}>"))?;
    Some(body[i..i + j].to_string())
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                sigv4::uri_encode(k, false),
                sigv4::uri_encode(v, false)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Creates an IAM user allowed everything and returns its access key (moto accepts these
/// IAM calls unauthenticated until reset-auth switches checking on).
fn moto_iam_user(port: u16) -> (String, String) {
    let iam = |pairs: &[(&str, &str)]| {
        let body = form(pairs);
        let (status, _, text) = raw_request(
            port,
            "POST",
            "/",
            &[],
            body.as_bytes(),
            "iam",
            "AKIAIOSFODNN7EXAMPLE",
            "setup-secret",
        );
        assert_eq!(status, 200, "IAM {pairs:?}: {text}");
        text
    };
    iam(&[
        ("Action", "CreateUser"),
        ("UserName", "walship"),
        ("Version", "2010-05-08"),
    ]);
    iam(&[
        ("Action", "PutUserPolicy"),
        ("UserName", "walship"),
        ("PolicyName", "all"),
        (
            "PolicyDocument",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        ),
        ("Version", "2010-05-08"),
    ]);
    let text = iam(&[
        ("Action", "CreateAccessKey"),
        ("UserName", "walship"),
        ("Version", "2010-05-08"),
    ]);
    (
        xml_value(&text, "AccessKeyId").expect("AccessKeyId"),
        xml_value(&text, "SecretAccessKey").expect("SecretAccessKey"),
    )
}

/// An S3 replica config as the config module builds it from YAML.
fn s3_yaml_config(yaml_replica: &str) -> S3Config {
    let yaml = format!("dbs:\n  - path: /tmp/walship-conformance.db\n    replica:\n{yaml_replica}");
    let cfg = Config::parse_with_env(&yaml, Path::new("/tmp"), &|_| None).unwrap();
    match &cfg.dbs[0].replica.kind {
        ReplicaKind::S3(c) => c.clone(),
        other => panic!("not s3: {other:?}"),
    }
}

fn s3_config_for(env: &S3Env, bucket: &str, path: &str, creds: Option<(&str, &str)>) -> S3Config {
    let (k, s) = creds.unwrap_or((&env.key_id, &env.secret));
    s3_yaml_config(&format!(
        "      type: s3\n      bucket: {bucket}\n      path: {path}\n      endpoint: {}\n      region: us-east-1\n      access-key-id: '{k}'\n      secret-access-key: '{s}'\n",
        env.endpoint
    ))
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    }
}

// ---- backends under test ---------------------------------------------------------------------

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

struct Backend {
    name: String,
    storage: Arc<dyn Storage>,
    dir: Option<PathBuf>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A fresh, empty replica location on every backend.
fn backends(case: &str) -> Vec<Backend> {
    let dir = std::env::temp_dir().join(format!("walship-conf-{}", unique(case)));
    let mut out = vec![Backend {
        name: "file".into(),
        storage: Arc::new(FileStorage::new(dir.clone())),
        dir: Some(dir),
    }];
    if let Some(env) = s3_env() {
        let path = format!("conformance/{}", unique(case));
        let st = S3Storage::from_config(&s3_config_for(env, BUCKET, &path, None)).unwrap();
        out.push(Backend {
            name: format!("s3 ({})", env.server),
            storage: Arc::new(st),
            dir: None,
        });
    }
    if let Some(env) = emulators::azurite() {
        let path = format!("conformance/{}", unique(case));
        out.push(Backend {
            name: "abs (Azurite)".into(),
            storage: Arc::new(emulators::azure_storage(env, emulators::CONTAINER, &path)),
            dir: None,
        });
    }
    if let Some(env) = emulators::fake_gcs() {
        let path = format!("conformance/{}", unique(case));
        out.push(Backend {
            name: "gs (fake-gcs-server)".into(),
            storage: Arc::new(emulators::gcs_storage(env, emulators::GCS_BUCKET, &path)),
            dir: None,
        });
    }
    out
}

/// Deterministic pseudo-random bytes.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn read_all(st: &dyn Storage, level: u8, min: u64, max: u64) -> Vec<u8> {
    let mut v = Vec::new();
    st.open(level, min, max)
        .unwrap_or_else(|e| panic!("open {level}/{min}-{max}: {e}"))
        .read_to_end(&mut v)
        .unwrap();
    v
}

/// A reader of unknown length that hands out odd-sized pieces.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    step: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.step = self.step % 70_001 + 4_093;
        let n = buf.len().min(self.step).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn info(level: u8, min: u64, max: u64, size: u64) -> FileInfo {
    FileInfo {
        level,
        min_txid: min,
        max_txid: max,
        size,
    }
}

// ---- the contract ------------------------------------------------------------------------------

#[test]
fn put_list_open_round_trip() {
    for b in backends("roundtrip") {
        let st = &*b.storage;
        assert_eq!(st.list(0).unwrap(), vec![], "{}: empty level", b.name);
        let files = [
            (0u8, 3u64, 4u64, 100usize),
            (0, 1, 2, 5000),
            (0, 5, 9, 1),
            (9, 1, 9, 70_000),
        ];
        for (i, (level, min, max, n)) in files.iter().enumerate() {
            let data = bytes(i as u64, *n);
            let put = st
                .put(*level, *min, *max, 1_700_000_000_123, &mut &data[..])
                .unwrap_or_else(|e| panic!("{}: put: {e}", b.name));
            assert_eq!(put, *n as u64, "{}", b.name);
        }
        assert_eq!(
            st.list(0).unwrap(),
            vec![info(0, 1, 2, 5000), info(0, 3, 4, 100), info(0, 5, 9, 1)],
            "{}",
            b.name
        );
        assert_eq!(
            st.list(9).unwrap(),
            vec![info(9, 1, 9, 70_000)],
            "{}",
            b.name
        );
        assert_eq!(st.list(1).unwrap(), vec![], "{}", b.name);
        for (i, (level, min, max, n)) in files.iter().enumerate() {
            assert_eq!(
                read_all(st, *level, *min, *max),
                bytes(i as u64, *n),
                "{}",
                b.name
            );
        }
        // Empty bodies are objects too.
        st.put(2, 7, 7, 0, &mut &[][..]).unwrap();
        assert_eq!(st.list(2).unwrap(), vec![info(2, 7, 7, 0)], "{}", b.name);
        assert!(read_all(st, 2, 7, 7).is_empty());
        assert!(!st.describe().is_empty());
    }
}

#[test]
fn multipart_sized_body_round_trips() {
    let n = 20 << 20; // 20 MiB: four 5 MiB parts on S3
    let data = bytes(42, n);
    for b in backends("multipart") {
        let st = &*b.storage;
        let t = Instant::now();
        let mut src = Trickle {
            data: data.clone(),
            pos: 0,
            step: 1,
        };
        assert_eq!(
            st.put(9, 1, 500, 1_700_000_000_000, &mut src).unwrap(),
            n as u64,
            "{}",
            b.name
        );
        assert_eq!(src.pos, n, "{}: the whole body was read", b.name);
        assert_eq!(
            st.list(9).unwrap(),
            vec![info(9, 1, 500, n as u64)],
            "{}",
            b.name
        );
        let back = read_all(st, 9, 1, 500);
        assert!(
            back == data,
            "{}: 20 MiB body differs after the round trip",
            b.name
        );
        // Exactly one part's worth takes the multipart path with a single part.
        let exact = bytes(7, s3::DEFAULT_PART_SIZE);
        st.put(9, 501, 502, 0, &mut &exact[..]).unwrap();
        assert!(read_all(st, 9, 501, 502) == exact, "{}", b.name);
        eprintln!("{}: 20 MiB + 5 MiB round trip in {:?}", b.name, t.elapsed());
    }
}

#[test]
fn listing_is_sorted_and_paginated() {
    // More than one default page (1000 keys) on S3, stored out of order.
    let count: u64 = 1005;
    for b in backends("paging") {
        let st: Arc<dyn Storage> = b.storage.clone();
        let t = Instant::now();
        let mut order: Vec<u64> = (1..=count).collect();
        // A fixed shuffle.
        for i in (1..order.len()).rev() {
            let j = (i * 7919 + 13) % (i + 1);
            order.swap(i, j);
        }
        let chunks: Vec<Vec<u64>> = order
            .chunks(order.len().div_ceil(8))
            .map(|c| c.to_vec())
            .collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| {
                let st = st.clone();
                thread::spawn(move || {
                    for m in c {
                        // Two files share min TXID 1: sorted by max as well.
                        let (min, max) = if m == 2 { (1, 1) } else { (m, m + 1) };
                        st.put(0, min, max, 0, &mut &b"x"[..]).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let listed = st.list(0).unwrap();
        assert_eq!(listed.len() as u64, count, "{}", b.name);
        let mut want: Vec<(u64, u64)> = (1..=count)
            .map(|m| if m == 2 { (1, 1) } else { (m, m + 1) })
            .collect();
        want.sort();
        let got: Vec<(u64, u64)> = listed.iter().map(|f| (f.min_txid, f.max_txid)).collect();
        assert_eq!(got, want, "{}", b.name);
        assert!(listed.iter().all(|f| f.size == 1 && f.level == 0));
        eprintln!("{}: {count} puts + list in {:?}", b.name, t.elapsed());
    }
}

#[test]
fn small_pages_follow_continuation_tokens() {
    let Some(env) = s3_env() else { return };
    let path = format!("conformance/{}", unique("pages"));
    let st = S3Storage::from_config(&s3_config_for(env, BUCKET, &path, None))
        .unwrap()
        .with_list_page_size(7);
    for m in (1..=50u64).rev() {
        st.put(3, m, m, 0, &mut &b"abc"[..]).unwrap();
    }
    let got: Vec<u64> = st.list(3).unwrap().iter().map(|f| f.min_txid).collect();
    assert_eq!(got, (1..=50).collect::<Vec<_>>());
}

#[test]
fn missing_object_is_not_found() {
    for b in backends("missing") {
        match b.storage.open(0, 1, 1) {
            Err(StorageError::NotFound { op, object }) => {
                assert_eq!(op, "get");
                assert!(
                    object.contains("0000000000000001-0000000000000001.ltx"),
                    "{object}"
                );
            }
            Err(e) => panic!("{}: expected NotFound, got {e:?}", b.name),
            Ok(_) => panic!("{}: opened a missing file", b.name),
        }
    }
}

#[test]
fn delete_is_idempotent() {
    for b in backends("delete") {
        let st = &*b.storage;
        st.delete(0, 1, 1)
            .unwrap_or_else(|e| panic!("{}: delete of a missing file: {e}", b.name));
        st.put(0, 1, 1, 0, &mut &b"one"[..]).unwrap();
        st.put(0, 2, 2, 0, &mut &b"two"[..]).unwrap();
        st.delete(0, 1, 1).unwrap();
        assert_eq!(st.list(0).unwrap(), vec![info(0, 2, 2, 3)], "{}", b.name);
        st.delete(0, 1, 1).unwrap();
        assert!(matches!(
            st.open(0, 1, 1),
            Err(StorageError::NotFound { .. })
        ));
    }
}

#[test]
fn put_replaces() {
    for b in backends("replace") {
        let st = &*b.storage;
        st.put(0, 4, 6, 0, &mut &b"first version, longer"[..])
            .unwrap();
        st.put(0, 4, 6, 0, &mut &b"second"[..]).unwrap();
        assert_eq!(st.list(0).unwrap(), vec![info(0, 4, 6, 6)], "{}", b.name);
        assert_eq!(read_all(st, 0, 4, 6), b"second", "{}", b.name);
    }
}

/// Named objects (the replica lease): compare-and-swap semantics, outside every level listing.
#[test]
fn named_objects_are_compare_and_swap() {
    for b in backends("named") {
        let st = &*b.storage;
        let n = "walship-lease.json";
        assert_eq!(
            st.get_named(n).unwrap(),
            None,
            "{}: missing is None",
            b.name
        );
        // Matches on a missing object fails; Absent creates.
        assert!(
            matches!(
                st.put_named_if(n, b"x", Precondition::Matches("\"nope\"")),
                Err(StorageError::PreconditionFailed { .. })
            ),
            "{}",
            b.name
        );
        let t1 = st.put_named_if(n, b"one", Precondition::Absent).unwrap();
        let got = st.get_named(n).unwrap().unwrap();
        assert_eq!(
            (got.body.as_slice(), got.tag.as_str()),
            (&b"one"[..], t1.as_str()),
            "{}",
            b.name
        );
        // A second create, or a write with a stale tag, fails and changes nothing.
        assert!(
            matches!(
                st.put_named_if(n, b"two", Precondition::Absent),
                Err(StorageError::PreconditionFailed { .. })
            ),
            "{}: If-None-Match on an existing object",
            b.name
        );
        let t2 = st
            .put_named_if(n, b"two", Precondition::Matches(&t1))
            .unwrap();
        assert_ne!(t1, t2, "{}", b.name);
        assert!(
            matches!(
                st.put_named_if(n, b"three", Precondition::Matches(&t1)),
                Err(StorageError::PreconditionFailed { .. })
            ),
            "{}: If-Match with a stale tag",
            b.name
        );
        assert_eq!(st.get_named(n).unwrap().unwrap().body, b"two", "{}", b.name);
        // Invisible to the LTX listing of every level.
        for level in 0..=9 {
            assert_eq!(st.list(level).unwrap(), vec![], "{}: level {level}", b.name);
        }
        // Delete only with the current tag; a missing object deletes fine. fake-gcs-server
        // ignores `ifGenerationMatch` on DELETE (GCS enforces it): tests/cloud_storage.rs checks
        // that the request carries it and that GCS's 412 becomes PreconditionFailed.
        if b.name.contains("fake-gcs-server") {
            eprintln!("{}: stale-tag delete not checked (the emulator ignores ifGenerationMatch on DELETE)", b.name);
        } else {
            assert!(
                matches!(
                    st.delete_named_if(n, &t1),
                    Err(StorageError::PreconditionFailed { .. })
                ),
                "{}: delete with a stale tag",
                b.name
            );
        }
        assert!(st.get_named(n).unwrap().is_some(), "{}", b.name);
        st.delete_named_if(n, &t2).unwrap();
        assert_eq!(st.get_named(n).unwrap(), None, "{}", b.name);
        st.delete_named_if(n, &t2).unwrap();
    }
}

/// Of many writers racing to create (or to replace the same version of) a named object,
/// exactly one wins.
#[test]
fn named_object_races_have_one_winner() {
    for b in backends("named-race") {
        let n = "walship-lease.json";
        let race = |cond: Option<String>| {
            let wins: Vec<bool> = (0..8)
                .map(|k| {
                    let st = b.storage.clone();
                    let cond = cond.clone();
                    thread::spawn(move || {
                        // Distinct bodies: tags may derive from content (S3's MD5 ETag).
                        let body = format!("writer {k} after {cond:?}");
                        let c = match &cond {
                            None => Precondition::Absent,
                            Some(t) => Precondition::Matches(t),
                        };
                        match st.put_named_if(n, body.as_bytes(), c) {
                            Ok(_) => true,
                            Err(StorageError::PreconditionFailed { .. }) => false,
                            Err(e) => panic!("writer {k}: {e}"),
                        }
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect();
            wins.iter().filter(|w| **w).count()
        };
        assert_eq!(race(None), 1, "{}: creates", b.name);
        let tag = b.storage.get_named(n).unwrap().unwrap().tag;
        assert_eq!(race(Some(tag)), 1, "{}: replaces", b.name);
    }
}

/// Streams are independent: several open readers interleave (restore reads in parallel).
#[test]
fn concurrent_readers() {
    for b in backends("readers") {
        let st = &*b.storage;
        for m in 1..=4u64 {
            st.put(0, m, m, 0, &mut &bytes(m, 300_000)[..]).unwrap();
        }
        let mut readers: Vec<_> = (1..=4u64)
            .map(|m| (m, st.open(0, m, m).unwrap(), Vec::new()))
            .collect();
        let mut buf = [0u8; 10_000];
        loop {
            let mut progress = false;
            for (_, r, out) in readers.iter_mut() {
                let n = r.read(&mut buf).unwrap();
                out.extend_from_slice(&buf[..n]);
                progress |= n > 0;
            }
            if !progress {
                break;
            }
        }
        for (m, _, out) in readers {
            assert!(out == bytes(m, 300_000), "{}: reader {m}", b.name);
        }
    }
}

// ---- S3 specifics ------------------------------------------------------------------------------

/// Object keys and metadata exactly as Litestream 0.5.17 writes them.
#[test]
fn s3_keys_and_timestamp_metadata() {
    let Some(env) = s3_env() else { return };
    let path = format!("conformance/{}", unique("layout"));
    let st = S3Storage::from_config(&s3_config_for(env, BUCKET, &path, None)).unwrap();
    st.put(0, 0x1f, 0x20, 1_700_000_000_120, &mut &b"abc"[..])
        .unwrap();
    st.put(9, 1, 0x20, 1_700_000_000_000, &mut &b"abcd"[..])
        .unwrap();
    let key0 = format!("{path}/0000/000000000000001f-0000000000000020.ltx");
    let key9 = format!("{path}/0009/0000000000000001-0000000000000020.ltx");
    assert_eq!(st.object_key(0, 0x1f, 0x20), key0);
    for (key, ts, size) in [
        (&key0, "2023-11-14T22:13:20.12Z", "3"),
        (&key9, "2023-11-14T22:13:20Z", "4"),
    ] {
        let (status, headers, body) = raw_request(
            env.port,
            "HEAD",
            &format!("/{BUCKET}/{key}"),
            &[],
            b"",
            "s3",
            &env.key_id,
            &env.secret,
        );
        assert_eq!(status, 200, "HEAD {key}: {body}");
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(
            get("x-amz-meta-litestream-timestamp").as_deref(),
            Some(ts),
            "{headers:?}"
        );
        assert_eq!(get("content-length").as_deref(), Some(size));
    }
    // Nothing else was written (no temporary or marker objects).
    let (_, _, listing) = raw_request(
        env.port,
        "GET",
        &format!("/{BUCKET}"),
        &[
            ("list-type".into(), "2".into()),
            ("prefix".into(), format!("{path}/")),
        ],
        b"",
        "s3",
        &env.key_id,
        &env.secret,
    );
    assert_eq!(listing.matches("<Key>").count(), 2, "{listing}");
}

/// GCS's layout (`<path>/ltx/<level>/`), on the local server.
#[test]
fn gcs_layout_round_trip() {
    let Some(env) = s3_env() else { return };
    let path = format!("conformance/{}", unique("gcs"));
    let st =
        S3Storage::from_config_with_layout(&s3_config_for(env, BUCKET, &path, None), Layout::Gcs)
            .unwrap();
    st.put(0, 1, 2, 5, &mut &b"gcs"[..]).unwrap();
    assert_eq!(st.list(0).unwrap(), vec![info(0, 1, 2, 3)]);
    assert_eq!(read_all(&st, 0, 1, 2), b"gcs");
    let (status, _, _) = raw_request(
        env.port,
        "HEAD",
        &format!("/{BUCKET}/{path}/ltx/0/0000000000000001-0000000000000002.ltx"),
        &[],
        b"",
        "s3",
        &env.key_id,
        &env.secret,
    );
    assert_eq!(status, 200);
}

#[test]
fn other_region_bucket() {
    let Some(env) = s3_env() else { return };
    let bucket = format!("walship-eu-{}", std::process::id());
    let c = s3_yaml_config(&format!(
        "      type: s3\n      bucket: {bucket}\n      path: p\n      endpoint: {}\n      region: eu-west-1\n      access-key-id: '{}'\n      secret-access-key: '{}'\n",
        env.endpoint, env.key_id, env.secret
    ));
    let st = S3Storage::from_config(&c).unwrap();
    st.create_bucket().unwrap();
    st.put(0, 1, 1, 0, &mut &b"eu"[..]).unwrap();
    assert_eq!(st.list(0).unwrap(), vec![info(0, 1, 1, 2)]);
}

/// Every failure below must name the replica and never show a secret.
fn assert_no_secret(texts: &[String], secrets: &[&str]) {
    for t in texts {
        for s in secrets {
            assert!(!t.contains(s), "a secret leaked into: {t}");
        }
    }
}

#[test]
fn wrong_credentials_are_reported_as_such() {
    let Some(env) = auth_env() else { return };
    let bad_secret = "walship-wrong-secret-must-not-leak/0123456789";
    let mut texts = Vec::new();
    // A known key id with the wrong secret, and an unknown key id.
    for (k, s, code) in [
        (env.key_id.as_str(), bad_secret, "SignatureDoesNotMatch"),
        ("AKIAWALSHIPUNKNOWN01", bad_secret, "InvalidAccessKeyId"),
    ] {
        let st = S3Storage::from_config(&s3_config_for(env, BUCKET, "creds", Some((k, s))))
            .unwrap()
            .with_retry(fast_retry());
        texts.push(format!("{st:?}"));
        for res in [
            st.list(0).map(|_| ()),
            st.put(0, 1, 1, 0, &mut &b"x"[..]).map(|_| ()),
            st.open(0, 1, 1).map(|_| ()),
            st.delete(0, 1, 1),
        ] {
            let e = res.expect_err("wrong credentials must fail");
            let msg = e.to_string();
            assert!(matches!(e, StorageError::Credentials { .. }), "{e:?}");
            assert!(
                msg.contains(code) || msg.contains("AccessDenied") || msg.contains("403"),
                "{msg}"
            );
            assert!(
                msg.contains(BUCKET) && msg.contains(&env.endpoint),
                "names the replica: {msg}"
            );
            assert!(
                msg.contains("access-key-id") || msg.contains("secret-access-key"),
                "says what to fix: {msg}"
            );
            assert!(!e.is_transient());
            eprintln!("{msg}");
            texts.push(msg);
            texts.push(format!("{e:?}"));
        }
    }
    assert_no_secret(&texts, &[bad_secret, &env.secret]);
}

#[test]
fn missing_bucket_is_reported_as_such() {
    let Some(env) = s3_env() else { return };
    let st = S3Storage::from_config(&s3_config_for(env, "walship-no-such-bucket", "p", None))
        .unwrap()
        .with_retry(fast_retry());
    let mut texts = vec![format!("{st:?}")];
    if env.server == "s3s-fs" {
        eprintln!("missing_bucket_is_reported_as_such: not checked on s3s-fs, which lists a missing bucket as empty and creates it on write");
        return;
    }
    for res in [
        st.list(0).map(|_| ()),
        st.put(0, 1, 1, 0, &mut &b"x"[..]).map(|_| ()),
    ] {
        let e = res.expect_err("a missing bucket must fail");
        assert!(matches!(e, StorageError::NoSuchBucket { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("walship-no-such-bucket") && msg.contains("create the bucket"),
            "{msg}"
        );
        eprintln!("{msg}");
        texts.push(msg);
        texts.push(format!("{e:?}"));
    }
    assert_no_secret(&texts, &[&env.secret]);
}

#[test]
fn unreachable_endpoint_fails_fast_with_a_hint() {
    let port = free_port(); // nothing listens there
    let secret = "walship-unreachable-secret-0123456789";
    let c = s3_yaml_config(&format!(
        "      type: s3\n      bucket: b\n      path: p\n      endpoint: http://127.0.0.1:{port}\n      access-key-id: AKIAWALSHIPTEST00001\n      secret-access-key: '{secret}'\n"
    ));
    // The default retry policy: a few attempts, bounded.
    let st = S3Storage::from_config(&c).unwrap();
    let t = Instant::now();
    let e = st.list(0).expect_err("nothing listens");
    let took = t.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(matches!(e, StorageError::Unreachable { .. }), "{e:?}");
    assert!(e.is_transient());
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("endpoint"),
        "{msg}"
    );
    assert!(msg.contains("attempts"), "says it retried: {msg}");
    eprintln!("unreachable endpoint reported after {took:?}: {msg}");
    // An unresolvable host is reported at once, as a DNS problem.
    let c = s3_yaml_config(
        "      type: s3\n      bucket: b\n      endpoint: http://walship-no-such-host.invalid:9000\n      access-key-id: AKIAWALSHIPTEST00001\n      secret-access-key: 'x'\n",
    );
    let e = S3Storage::from_config(&c)
        .unwrap()
        .list(0)
        .expect_err("no such host");
    assert!(matches!(e, StorageError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("resolve"), "{e}");
    assert_no_secret(&[msg, format!("{e:?}"), format!("{st:?}")], &[secret]);
}

#[test]
fn tls_to_a_plain_http_server_is_a_tls_error() {
    let Some(env) = s3_env() else { return };
    let c = s3_yaml_config(&format!(
        "      type: s3\n      bucket: {BUCKET}\n      path: p\n      endpoint: https://127.0.0.1:{}\n      access-key-id: '{}'\n      secret-access-key: '{}'\n",
        env.port, env.key_id, env.secret
    ));
    let st = S3Storage::from_config(&c).unwrap().with_retry(fast_retry());
    let e = st.list(0).expect_err("https to an http server");
    assert!(matches!(e, StorageError::Tls { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("http://") && msg.contains("skip-verify"),
        "{msg}"
    );
    eprintln!("{msg}");
    assert_no_secret(&[msg, format!("{e:?}")], &[&env.secret]);
}

/// A fake store that fails the first requests with transient errors: the backend retries
/// them; a non-transient error is returned at once.
#[test]
fn transient_errors_are_retried_and_others_are_not() {
    fn serve(responses: Vec<(u16, &'static str)>) -> (u16, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let n = c.fetch_add(1, Ordering::SeqCst) as usize;
                let (status, body) = responses[n.min(responses.len() - 1)];
                let mut buf = [0u8; 8192];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => req.extend_from_slice(&buf[..k]),
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (port, count)
    }
    let ok = "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>p/0000/0000000000000001-0000000000000002.ltx</Key><Size>9</Size></Contents></ListBucketResult>";
    let slow =
        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    let denied = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
    let config = |port: u16| {
        s3_yaml_config(&format!(
            "      type: s3\n      bucket: b\n      path: p\n      endpoint: http://127.0.0.1:{port}\n      access-key-id: AKIAWALSHIPTEST00001\n      secret-access-key: 'x'\n"
        ))
    };
    let policy = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };

    let (port, count) = serve(vec![(503, slow), (500, ""), (200, ok)]);
    let st = S3Storage::from_config(&config(port))
        .unwrap()
        .with_retry(policy);
    assert_eq!(st.list(0).unwrap(), vec![info(0, 1, 2, 9)]);
    assert_eq!(count.load(Ordering::SeqCst), 3);

    let (port, count) = serve(vec![(503, slow)]);
    let st = S3Storage::from_config(&config(port))
        .unwrap()
        .with_retry(policy);
    let e = st.list(0).expect_err("always slow");
    assert!(
        e.to_string().contains("SlowDown") && e.to_string().contains("4 attempts"),
        "{e}"
    );
    assert!(e.is_transient());
    assert_eq!(count.load(Ordering::SeqCst), 4);

    let (port, count) = serve(vec![(403, denied), (200, ok)]);
    let st = S3Storage::from_config(&config(port))
        .unwrap()
        .with_retry(policy);
    let e = st.list(0).expect_err("denied");
    assert!(matches!(e, StorageError::Credentials { .. }), "{e:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1, "not retried");
}

/// `s3://` URLs reach the same backend (endpoint in the query, as Litestream reads it).
#[test]
fn s3_urls_open_the_s3_backend() {
    let st =
        walvfs::storage::from_url("s3://bkt/some/path?endpoint=127.0.0.1:9000&region=eu-west-1")
            .unwrap();
    assert_eq!(
        st.describe(),
        "s3://bkt/some/path (endpoint http://127.0.0.1:9000)"
    );
    let st = walvfs::storage::from_url("s3://bkt.localhost:9000/p").unwrap();
    assert_eq!(st.describe(), "s3://bkt/p (endpoint http://localhost:9000)");
    // gs:// without HMAC keys: GCS's own API with Google's credentials (src/storage/gcs/).
    let st = walvfs::storage::from_url("gs://gbkt/p").unwrap();
    assert!(
        st.describe().starts_with("gs://gbkt/p"),
        "{}",
        st.describe()
    );
    assert!(walvfs::storage::from_url("ftp://x/y").is_err());
}

/// Every kind of request the backend sends passes a server that verifies SigV4 signatures
/// (moto: botocore's signer; s3s-fs: its own).
#[test]
fn signatures_are_verified_by_the_server() {
    let Some(env) = auth_env() else { return };
    let path = format!("conformance/{}", unique("signed"));
    let st = S3Storage::from_config(&s3_config_for(env, BUCKET, &path, None)).unwrap();
    st.put(0, 1, 1, 1_700_000_000_001, &mut &b"signed"[..])
        .unwrap();
    assert_eq!(read_all(&st, 0, 1, 1), b"signed");
    let big = bytes(9, s3::MIN_PART_SIZE + 1000);
    let st = st.with_part_size(s3::MIN_PART_SIZE);
    st.put(9, 1, 1, 0, &mut &big[..]).unwrap();
    assert!(read_all(&st, 9, 1, 1) == big);
    st.delete(0, 1, 1).unwrap();
    st.delete(0, 1, 1).unwrap();
    if env.server != "moto" {
        // moto cannot verify a `/` in a query value (see auth_env).
        assert_eq!(st.list(9).unwrap(), vec![info(9, 1, 1, big.len() as u64)]);
    }
    // `sign-payload: false`: the body is sent as UNSIGNED-PAYLOAD.
    let mut c = s3_config_for(env, BUCKET, &path, None);
    c.sign_payload = false;
    let st = S3Storage::from_config(&c).unwrap();
    st.put(0, 2, 2, 0, &mut &b"unsigned"[..]).unwrap();
    assert_eq!(read_all(&st, 0, 2, 2), b"unsigned");
}

/// A one-thread HTTP server: `handler(n, request head)` gives the raw bytes to send back for
/// the n-th request (0-based); each connection is closed after one answer.
fn fake_server(
    handler: impl Fn(usize, &str) -> Vec<u8> + Send + 'static,
) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut s) = stream else { return };
            let head = emulators::read_request_head(&mut s);
            s2.lock().unwrap().push(head.clone());
            let _ = s.write_all(&handler(n, &head));
        }
    });
    (port, seen)
}

/// A download whose connection breaks midway resumes with a ranged GET pinned to the ETag.
#[test]
fn broken_downloads_resume() {
    let body = bytes(5, 100_000);
    let b2 = body.clone();
    let (port, seen) = fake_server(move |n, _head| {
        let mut out;
        if n == 0 {
            out = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n",
                b2.len()
            )
            .into_bytes();
            out.extend_from_slice(&b2[..30_000]); // then the connection drops
        } else {
            out = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes 30000-{}/{}\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n",
                b2.len() - 30_000,
                b2.len() - 1,
                b2.len()
            )
            .into_bytes();
            out.extend_from_slice(&b2[30_000..]);
        }
        out
    });
    let c = s3_yaml_config(&format!(
        "      type: s3\n      bucket: b\n      path: p\n      endpoint: http://127.0.0.1:{port}\n      access-key-id: AKIAWALSHIPTEST00001\n      secret-access-key: 'x'\n"
    ));
    let st = S3Storage::from_config(&c).unwrap().with_retry(fast_retry());
    let got = read_all(&st, 0, 1, 1);
    assert!(
        got == body,
        "resumed download differs ({} bytes)",
        got.len()
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let second = seen[1].to_ascii_lowercase();
    assert!(second.contains("range: bytes=30000-"), "{second}");
    assert!(second.contains("if-match: \"v1\""), "{second}");
}

/// A multipart upload that fails is aborted (no orphaned parts), and the error is returned.
#[test]
fn failed_multipart_uploads_are_aborted() {
    let (port, seen) = fake_server(|_n, head| {
        let body = if head.starts_with("POST") {
            "<InitiateMultipartUploadResult><UploadId>up-1</UploadId></InitiateMultipartUploadResult>".to_string()
        } else if head.starts_with("PUT") {
            let e = "<Error><Code>InvalidArgument</Code><Message>no parts today</Message></Error>";
            return format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{e}",
                e.len()
            )
            .into_bytes();
        } else {
            return b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_vec();
        };
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    });
    let c = s3_yaml_config(&format!(
        "      type: s3\n      bucket: b\n      path: p\n      endpoint: http://127.0.0.1:{port}\n      access-key-id: AKIAWALSHIPTEST00001\n      secret-access-key: 'x'\n"
    ));
    let st = S3Storage::from_config(&c)
        .unwrap()
        .with_part_size(s3::MIN_PART_SIZE)
        .with_retry(fast_retry());
    let big = bytes(3, s3::MIN_PART_SIZE * 2 + 10);
    let e = st
        .put(9, 1, 1, 0, &mut &big[..])
        .expect_err("the part upload fails");
    assert!(e.to_string().contains("InvalidArgument"), "{e}");
    let seen = seen.lock().unwrap();
    let lines: Vec<&str> = seen
        .iter()
        .map(|h| h.lines().next().unwrap_or(""))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("POST /b/p/0009/0000000000000001-0000000000000001.ltx?uploads="),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("PUT ") && lines[1].contains("partNumber=1&uploadId=up-1"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("DELETE ") && lines[2].contains("uploadId=up-1"),
        "{lines:?}"
    );
}

/// `skip-verify`: a self-signed certificate is refused (a TLS error naming the fix) unless
/// `skip-verify: true`. The HTTPS server is Python's, with a certificate made by
/// `cryptography` (installed with moto).
#[test]
fn skip_verify_accepts_a_self_signed_certificate() {
    let probe = Command::new("python3")
        .args(["-c", "import cryptography"])
        .status();
    if !probe.map(|s| s.success()).unwrap_or(false) {
        eprintln!("\n*** SKIPPING skip_verify_accepts_a_self_signed_certificate: python3 with `cryptography` is not available ***\n");
        return;
    }
    let dir = std::env::temp_dir().join(format!("walship-conf-{}", unique("tls")));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("https.py");
    std::fs::write(
        &script,
        r#"
import datetime, http.server, ssl, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
port, d = int(sys.argv[1]), sys.argv[2]
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "walship-test")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256()))
open(d + "/c.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(d + "/k.pem", "wb").write(key.private_bytes(serialization.Encoding.PEM,
     serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<Error><Code>NoSuchKey</Code><Message>nothing here</Message></Error>"
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(d + "/c.pem", d + "/k.pem")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#,
    )
    .unwrap();
    let port = free_port();
    let log = dir.join("https.log");
    spawn_watched(
        &[
            "python3".into(),
            script.display().to_string(),
            port.to_string(),
            dir.display().to_string(),
        ],
        &log,
    );
    wait_for_port(port, &log);
    let config = |skip: bool| {
        s3_yaml_config(&format!(
            "      type: s3\n      bucket: b\n      path: p\n      endpoint: https://localhost:{port}\n      skip-verify: {skip}\n      access-key-id: AKIAWALSHIPTEST00001\n      secret-access-key: 'x'\n"
        ))
    };
    let st = S3Storage::from_config(&config(false))
        .unwrap()
        .with_retry(fast_retry());
    let e = st.open(0, 1, 1).map(|_| ()).expect_err("self-signed");
    assert!(matches!(e, StorageError::Tls { .. }), "{e:?}");
    assert!(
        e.to_string().to_ascii_lowercase().contains("certificate"),
        "{e}"
    );
    let st = S3Storage::from_config(&config(true))
        .unwrap()
        .with_retry(fast_retry());
    match st.open(0, 1, 1) {
        Err(StorageError::NotFound { .. }) => {}
        Err(e) => panic!("skip-verify: expected the server's 404, got {e:?}"),
        Ok(_) => panic!("skip-verify: expected the server's 404"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
