//! Unit tests of the whole config pipeline. The environment is injected (no global state), so
//! these run in parallel safely.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

fn parse_env(text: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::parse_with_env(text, Path::new("/srv/app"), &env_of(pairs))
}

fn ok(text: &str) -> Config {
    parse_env(text, &[]).unwrap_or_else(|e| panic!("unexpected error: {e}"))
}

fn err(text: &str) -> String {
    match parse_env(text, &[]) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn s3(c: &Config, i: usize) -> &S3Config {
    match &c.dbs[i].replica.kind {
        ReplicaKind::S3(s) => s,
        other => panic!("not s3: {other:?}"),
    }
}

pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "walship-config-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.canonicalize().unwrap()
}

const EXAMPLE: &str = "\
dbs:
  - path: ./data/parako.db
    replicas:
      - type: s3
        bucket: your-backup-bucket
        path: parako/sqlite
        endpoint: https://s3.amazonaws.com
        access-key-id: ${LITESTREAM_ACCESS_KEY_ID}
        secret-access-key: ${LITESTREAM_SECRET_ACCESS_KEY}
        region: us-east-1
        retention: 168h
        sync-interval: 1s
";

#[test]
fn the_example_parses_into_the_right_struct() {
    let c = parse_env(
        EXAMPLE,
        &[
            ("LITESTREAM_ACCESS_KEY_ID", KEY_ID),
            ("LITESTREAM_SECRET_ACCESS_KEY", SECRET),
        ],
    )
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.source, ConfigSource::Text);
    assert_eq!(c.dbs.len(), 1);
    let db = &c.dbs[0];
    assert_eq!(db.path, PathBuf::from("/srv/app/data/parako.db"));
    assert_eq!(db.key, "dbs[0]");
    assert_eq!(db.monitor_interval, Duration::from_secs(1));
    assert_eq!(db.checkpoint_interval, Duration::from_secs(60));
    assert_eq!(
        db.snapshot,
        SnapshotConfig {
            interval: Duration::from_secs(86400),
            retention: Duration::from_secs(86400)
        }
    );
    let r = &db.replica;
    assert_eq!(r.name, "s3");
    assert_eq!(r.sync_interval, Duration::from_secs(1));
    assert_eq!(r.retention, Some(Duration::from_secs(168 * 3600)));
    assert_eq!(
        r.effective_retention(&db.snapshot),
        Duration::from_secs(168 * 3600)
    );
    let expected = S3Config {
        bucket: "your-backup-bucket".into(),
        path: "parako/sqlite".into(),
        endpoint: Some("https://s3.amazonaws.com".into()),
        region: Some("us-east-1".into()),
        access_key_id: Some(Secret::new(KEY_ID)),
        secret_access_key: Some(Secret::new(SECRET)),
        credential_source: CredentialSource::Config,
        force_path_style: true, // an endpoint is set (Litestream's rule)
        skip_verify: false,
        sign_payload: true,
        require_content_md5: true,
        storage_class: None,
        part_size: None,
        concurrency: None,
        sse_customer_algorithm: None,
        sse_customer_key: None,
        sse_customer_key_path: None,
        sse_kms_key_id: None,
    };
    assert_eq!(r.kind, ReplicaKind::S3(expected));
    // Global defaults.
    assert_eq!(c.shutdown_sync_timeout, Duration::from_secs(30));
    assert_eq!(c.shutdown_sync_interval, Duration::from_millis(500));
    assert_eq!(c.l0_retention, Duration::from_secs(300));
    assert_eq!(
        c.levels,
        vec![
            Duration::from_secs(30),
            Duration::from_secs(300),
            Duration::from_secs(3600)
        ]
    );
    assert!(c.retention_enabled);
}

#[test]
fn the_example_without_credentials_names_the_unset_variable() {
    let e = parse_env(EXAMPLE, &[]).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ConfigError::Missing { .. }), "{e:?}");
    assert!(msg.contains("<config text>:8:"), "{msg}");
    assert!(msg.contains("dbs[0].replicas[0].access-key-id"), "{msg}");
    assert!(
        msg.contains("${LITESTREAM_ACCESS_KEY_ID} is not set"),
        "{msg}"
    );
}

#[test]
fn unset_config_variables_fall_back_to_aws_env() {
    let c = parse_env(
        EXAMPLE,
        &[
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
    )
    .unwrap();
    let s = s3(&c, 0);
    assert_eq!(s.credential_source, CredentialSource::AwsEnv);
    assert_eq!(s.access_key_id.as_ref().unwrap().expose(), KEY_ID);
    assert_eq!(c.unset_vars.len(), 2);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("${LITESTREAM_SECRET_ACCESS_KEY} is not set")
                && w.starts_with("<config text>:9:")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn credentials_fall_back_to_litestream_env_after_aws_env() {
    let yaml = "dbs:\n  - path: /d/a.db\n    replica:\n      url: s3://bkt/p\n";
    let c = parse_env(
        yaml,
        &[
            ("LITESTREAM_ACCESS_KEY_ID", KEY_ID),
            ("LITESTREAM_SECRET_ACCESS_KEY", SECRET),
        ],
    )
    .unwrap();
    assert_eq!(s3(&c, 0).credential_source, CredentialSource::LitestreamEnv);
    let c = parse_env(
        yaml,
        &[
            ("LITESTREAM_ACCESS_KEY_ID", "x"),
            ("LITESTREAM_SECRET_ACCESS_KEY", "y"),
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
    )
    .unwrap();
    assert_eq!(s3(&c, 0).access_key_id.as_ref().unwrap().expose(), KEY_ID);
    let c = parse_env(yaml, &[]).unwrap();
    assert_eq!(s3(&c, 0).credential_source, CredentialSource::None);
    assert!(s3(&c, 0).access_key_id.is_none());
    // Only half a key pair is an error that names neither value.
    let e = parse_env(yaml, &[("AWS_ACCESS_KEY_ID", KEY_ID)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("secret-access-key") && !e.contains(KEY_ID),
        "{e}"
    );
}

#[test]
fn litestream_05_spellings() {
    let c = ok("
access-key-id: GLOBALKEYID0000000000
secret-access-key: globalsecret
region: eu-west-1
snapshot:
  interval: 1h
  retention: 72h
levels:
  - interval: 10s
  - interval: 1m
l0-retention: 0
shutdown-sync-timeout: 5s
shutdown-sync-interval: 250ms
addr: ':9090'
logging:
  level: debug
  type: json
  stderr: true
validation:
  interval: 6h
retention:
  enabled: false
dbs:
  - path: /data/one.db
    monitor-interval: 2s
    checkpoint-interval: 30s
    busy-timeout: 5s
    min-checkpoint-page-count: 500
    max-checkpoint-page-count: 5000
    truncate-page-n: 0x10
    max-sync-wal-bytes: 1_000_000
    meta-path: /var/lib/one-meta
    replica:
      url: s3://my-bucket/one?endpoint=minio.local:9000&forcePathStyle=true&skipVerify=true
      sync-interval: 10s
  - path: /data/two.db
    snapshot:
      interval: 30m
    replica:
      type: s3
      bucket: b2
      path: two
      endpoint: localhost:9000
      force-path-style: false
      skip-verify: yes
      part-size: 5MiB
      concurrency: 3
  - path: /data/three.db
    replica:
      url: file:///var/backups/three
  - path: /data/four.db
    replica:
      url: gs://gbucket/four/
");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(
        c.snapshot,
        SnapshotConfig {
            interval: Duration::from_secs(3600),
            retention: Duration::from_secs(72 * 3600)
        }
    );
    assert_eq!(
        c.levels,
        vec![Duration::from_secs(10), Duration::from_secs(60)]
    );
    assert_eq!(c.l0_retention, Duration::ZERO);
    assert_eq!(c.shutdown_sync_timeout, Duration::from_secs(5));
    assert_eq!(c.shutdown_sync_interval, Duration::from_millis(250));
    assert_eq!(c.addr.as_deref(), Some(":9090"));
    assert_eq!(
        c.logging,
        LoggingConfig {
            level: Some("debug".into()),
            kind: Some("json".into()),
            stderr: Some(true),
            source: false
        }
    );
    assert_eq!(c.validation_interval, Some(Duration::from_secs(6 * 3600)));
    assert!(!c.retention_enabled);

    let one = &c.dbs[0];
    assert_eq!(
        (
            one.monitor_interval,
            one.checkpoint_interval,
            one.busy_timeout
        ),
        (
            Duration::from_secs(2),
            Duration::from_secs(30),
            Duration::from_secs(5)
        )
    );
    assert_eq!(
        (
            one.min_checkpoint_page_count,
            one.max_checkpoint_page_count,
            one.truncate_page_n,
            one.max_sync_wal_bytes
        ),
        (500, Some(5000), 16, 1_000_000)
    );
    assert_eq!(
        one.meta_path.as_deref(),
        Some(Path::new("/var/lib/one-meta"))
    );
    assert_eq!(one.replica.sync_interval, Duration::from_secs(10));
    let s = s3(&c, 0);
    assert_eq!((s.bucket.as_str(), s.path.as_str()), ("my-bucket", "one"));
    assert_eq!(s.endpoint.as_deref(), Some("https://minio.local:9000"));
    assert!(s.force_path_style && s.skip_verify);
    assert_eq!(
        s.region.as_deref(),
        Some("eu-west-1"),
        "global region is the default"
    );
    assert_eq!(
        s.access_key_id.as_ref().unwrap().expose(),
        "GLOBALKEYID0000000000",
        "global keys are the default"
    );
    assert_eq!(s.credential_source, CredentialSource::Config);

    let two = s3(&c, 1);
    assert_eq!(two.endpoint.as_deref(), Some("http://localhost:9000"));
    assert!(
        !two.force_path_style,
        "explicit force-path-style: false wins over the endpoint rule"
    );
    assert!(two.skip_verify);
    assert_eq!((two.part_size, two.concurrency), (Some(5 << 20), Some(3)));
    assert_eq!(c.dbs[1].snapshot.interval, Duration::from_secs(1800));
    assert_eq!(
        c.dbs[1].snapshot.retention,
        Duration::from_secs(72 * 3600),
        "per-db snapshot falls back field by field"
    );

    assert_eq!(
        c.dbs[2].replica.kind,
        ReplicaKind::File {
            path: "/var/backups/three".into()
        }
    );
    assert_eq!(c.dbs[2].replica.name, "file");
    match &c.dbs[3].replica.kind {
        ReplicaKind::Gcs(g) => {
            assert_eq!((g.bucket.as_str(), g.path.as_str()), ("gbucket", "four"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn s3_url_forms() {
    let c = ok(
        "dbs:\n  - path: /a.db\n    replica:\n      url: s3://bkt.s3.us-west-2.amazonaws.com/x/y\n",
    );
    let s = s3(&c, 0);
    assert_eq!(
        (
            s.bucket.as_str(),
            s.path.as_str(),
            s.region.as_deref(),
            s.endpoint.as_deref()
        ),
        ("bkt", "x/y", Some("us-west-2"), None)
    );
    assert!(!s.force_path_style);
    let c = ok("dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      url: s3://bkt\n      region: ap-south-1\n");
    assert_eq!(
        (s3(&c, 0).path.as_str(), s3(&c, 0).region.as_deref()),
        ("", Some("ap-south-1"))
    );
    // Region falls back to AWS_REGION.
    let c = parse_env(
        "dbs:\n  - path: /a.db\n    replica: {url: 's3://bkt/p'}\n",
        &[("AWS_REGION", "sa-east-1")],
    )
    .unwrap();
    assert_eq!(s3(&c, 0).region.as_deref(), Some("sa-east-1"));
}

#[test]
fn gcs_type_alias_and_hmac_keys() {
    let c = ok("dbs:\n  - path: /a.db\n    replica:\n      type: gcs\n      bucket: g\n      path: p/q\n      access-key-id: GOOG1EXAMPLEEXAMPLE1\n      secret-access-key: hmacsecret\n");
    match &c.dbs[0].replica.kind {
        ReplicaKind::Gcs(g) => {
            assert_eq!((g.bucket.as_str(), g.path.as_str()), ("g", "p/q"));
            assert!(g.access_key_id.is_some());
            let dbg = format!("{g:?}");
            assert!(
                !dbg.contains("hmacsecret") && !dbg.contains("GOOG1EXAMPLEEXAMPLE1"),
                "{dbg}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.dbs[0].replica.kind.type_name(), "gs");
}

#[test]
fn bad_yaml_has_line_and_column() {
    let e = parse_env("dbs:\n  - path: /a.db\n   replica: [\n", &[]).unwrap_err();
    let ConfigError::Syntax { line, column, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(*line >= 3, "{e}");
    assert!(*column >= 1);
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("<config text>:{line}:{column}: invalid YAML")),
        "{msg}"
    );
    // Tabs are a classic.
    let msg = err("dbs:\n\t- path: /a.db\n");
    assert!(
        msg.contains("<config text>:2:") && msg.contains("spaces, not tabs"),
        "{msg}"
    );
}

#[test]
fn bad_duration_names_key_value_and_examples() {
    let msg =
        err("dbs:\n  - path: /a.db\n    replica:\n      url: file:///b\n      sync-interval: 1x\n");
    assert!(msg.starts_with("<config text>:5:"), "{msg}");
    assert!(msg.contains("`dbs[0].replica.sync-interval`"), "{msg}");
    assert!(msg.contains("\"1x\""), "{msg}");
    assert!(msg.contains("500ms") && msg.contains("24h"), "{msg}");
    let msg = err("snapshot:\n  interval: 10\n");
    assert!(
        msg.contains("snapshot.interval") && msg.contains("did you mean 10s?"),
        "{msg}"
    );
    let msg =
        err("dbs:\n  - path: /a.db\n    replica:\n      url: file:///b\n      sync-interval: 0s\n");
    assert!(msg.contains("must be greater than 0"), "{msg}");
    let msg = err("shutdown-sync-timeout: -5s\n");
    assert!(
        msg.contains("shutdown-sync-timeout") && msg.contains("negative"),
        "{msg}"
    );
    let msg = err("heartbeat-interval: 30s\n");
    assert!(msg.contains("at least 1m"), "{msg}");
    let msg = err("levels:\n  - interval: 5 minutes\n");
    assert!(msg.contains("levels[0].interval"), "{msg}");
}

#[test]
fn unsupported_and_unknown_types() {
    let msg =
        err("dbs:\n  - path: /a.db\n    replicas:\n      - type: webdav\n        bucket: x\n");
    assert!(
        msg.contains("replica type 'webdav' is not supported yet by walship (dbs[0].replicas[0]); supported: file, s3, gs (alias gcs), abs"),
        "{msg}"
    );
    assert!(msg.starts_with("<config text>:4:"), "{msg}");
    for t in ["sftp", "webdav", "nats", "oss"] {
        let e = parse_env(
            &format!("dbs:\n  - path: /a.db\n    replica:\n      type: {t}\n"),
            &[],
        )
        .unwrap_err();
        assert!(
            matches!(e, ConfigError::UnsupportedReplicaType { .. }),
            "{t}: {e}"
        );
    }
    let e = parse_env(
        "dbs:\n  - path: /a.db\n    replica:\n      url: sftp://user:hunter2@host/p\n",
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(e, ConfigError::UnsupportedReplicaType { .. })
            && !e.to_string().contains("hunter2"),
        "{e}"
    );
    let msg = err("dbs:\n  - path: /a.db\n    replica:\n      type: ftp\n");
    assert!(
        msg.contains("unknown replica type 'ftp' (dbs[0].replica)"),
        "{msg}"
    );
}

#[test]
fn structural_errors() {
    let msg = err("dbs:\n  - replica:\n      url: file:///b\n");
    assert!(msg.contains("`dbs[0].path` is required"), "{msg}");
    let msg = err("dbs:\n  - dir: /data\n    replica:\n      url: file:///b\n");
    assert!(
        msg.contains("dbs[0].pattern") && msg.contains("directory replication needs"),
        "{msg}"
    );
    let msg =
        err("dbs:\n  - dir: /data\n    pattern: '[*.db'\n    replica:\n      url: file:///b\n");
    assert!(msg.contains("not a valid file-name pattern"), "{msg}");
    let msg = err("dbs:\n  - path: /a.db\n    dir: /data\n    pattern: '*.db'\n    replica:\n      url: file:///b\n");
    assert!(msg.contains("cannot set both `path` and `dir`"), "{msg}");
    let msg = err("dbs:\n  - path: /a.db\n");
    assert!(msg.contains("`dbs[0].replica` is required"), "{msg}");
    let msg = err("dbs:\n  - path: /a.db\n    replica: {url: 'file:///b'}\n    replicas: [{url: 'file:///c'}]\n");
    assert!(msg.contains("both `replica` and `replicas`"), "{msg}");
    let msg = err(
        "dbs:\n  - path: /a.db\n    replicas:\n      - url: file:///b\n      - url: file:///c\n",
    );
    assert!(
        msg.contains("exactly one per database") && msg.starts_with("<config text>:5:"),
        "{msg}"
    );
    let msg = err("dbs:\n  - path: /a.db\n    replica:\n      url: file:///b\n      path: /c\n");
    assert!(msg.contains("both `url` and `path`"), "{msg}");
    let msg =
        err("dbs:\n  - path: /a.db\n    replica:\n      url: s3://b/p\n      bucket: other\n");
    assert!(msg.contains("both `url` and `bucket`"), "{msg}");
    let msg = err("dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      path: s3://b/p\n");
    assert!(msg.contains("put it in `url:`"), "{msg}");
    let msg = err("dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      path: p\n");
    assert!(
        msg.contains("`dbs[0].replica.bucket` is required")
            || msg.contains("`dbs[0].replica.bucket`"),
        "{msg}"
    );
    let msg = err("dbs:\n  - path: /a.db\n    replica:\n      type: file\n");
    assert!(msg.contains("`dbs[0].replica.path` is required"), "{msg}");
    let msg = err("dbs:\n  - path: /a.db\n    replica:\n      url: file://relative/dir\n");
    assert!(msg.contains("file:///absolute/dir"), "{msg}");
    let msg = err("dbs:\n  - path: /a.db\n    replica: {url: 'file:///b'}\n  - path: /x/../a.db\n    replica: {url: 'file:///c'}\n");
    assert!(msg.contains("already listed as dbs[0]"), "{msg}");
    let msg = err("dbs:\n  path: /a.db\n");
    assert!(
        msg.contains("`dbs`") && msg.contains("expected a list"),
        "{msg}"
    );
    let msg = err("dbs:\n  - path: /a.db\n    replica:\n      url: file:///b\n      age:\n        identities: [x]\n");
    assert!(msg.contains("age encryption is not supported"), "{msg}");
    let msg = err("dbs:\n  - path: /a.db\n    replica:\n      url: file:///b\n      force-path-style: maybe\n");
    assert!(msg.contains("not a boolean"), "{msg}");
}

#[test]
fn unset_variable_in_a_required_field() {
    let e = parse_env(
        "dbs:\n  - path: ${APP_DB}\n    replica:\n      url: file:///b\n",
        &[],
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("`dbs[0].path` is required") && msg.contains("${APP_DB} is not set"),
        "{msg}"
    );
    let msg = parse_env(
        "dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      bucket: $BUCKET\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("dbs[0].replica.bucket") && msg.contains("${BUCKET} is not set"),
        "{msg}"
    );
    let msg = parse_env(
        "dbs:\n  - path: /a.db\n    replica:\n      url: ${REPLICA_URL}\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("${REPLICA_URL} is not set"), "{msg}");
    let msg = parse_env("dbs:\n  - path: /a.db\n    replica:\n      url: file:///b\n      sync-interval: ${SYNC}s\n", &[]).unwrap_err().to_string();
    assert!(msg.contains("${SYNC} not set"), "{msg}");
}

#[test]
fn unknown_keys_warn_with_their_path() {
    let c = ok("bogus: 1\ndbs:\n  - path: /a.db\n    colour: red\n    replicas:\n      - url: file:///b\n        foo: bar\n        bukcet: x\n        snapshot-interval: 1h\n");
    let w = c.warnings.join("\n");
    assert!(w.contains("<config text>:1: unknown key `bogus`"), "{w}");
    assert!(
        w.contains("<config text>:4: unknown key `dbs[0].colour`"),
        "{w}"
    );
    assert!(
        w.contains("<config text>:7: unknown key `dbs[0].replicas[0].foo` is ignored"),
        "{w}"
    );
    assert!(
        w.contains("`dbs[0].replicas[0].bukcet` is ignored; did you mean `bucket`?"),
        "{w}"
    );
    assert!(
        w.contains("snapshot-interval") && w.contains("Litestream 0.3"),
        "{w}"
    );
    assert_eq!(c.warnings.len(), 5, "{w}");
}

#[test]
fn other_warnings() {
    let c = ok("exec: myapp serve\ndbs: []\n");
    // `exec:` is `walship replicate`'s command when -exec is absent: kept, and no warning.
    assert_eq!(c.exec.as_deref(), Some("myapp serve"));
    assert!(
        !c.warnings.iter().any(|w| w.contains("exec")),
        "{:?}",
        c.warnings
    );
    assert!(
        c.warnings.iter().any(|w| w.contains("no databases")),
        "{:?}",
        c.warnings
    );
    let c = ok("dbs:\n  - path: /a.db\n    path: /b.db\n    replica: {url: 'file:///r'}\n");
    assert_eq!(c.dbs[0].path, PathBuf::from("/b.db"));
    assert!(
        c.warnings.iter().any(|w| w.contains("appears twice")),
        "{:?}",
        c.warnings
    );
    let c = ok("dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      url: gs://g/p\n");
    assert!(matches!(c.dbs[0].replica.kind, ReplicaKind::Gcs(_)));
    assert!(
        c.warnings.iter().any(|w| w.contains("the url wins")),
        "{:?}",
        c.warnings
    );
    assert!(ok("").dbs.is_empty());
}

#[test]
fn dollar_dollar_and_pid() {
    let c = ok("dbs:\n  - path: /a$$.db\n    replica:\n      url: file:///r/$PID\n");
    assert_eq!(c.dbs[0].path, PathBuf::from("/a.db"));
    assert_eq!(
        c.dbs[0].replica.kind,
        ReplicaKind::File {
            path: format!("/r/{}", std::process::id()).into()
        }
    );
    assert!(
        c.warnings.iter().any(|w| w.contains("`$$`")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn anchors_and_merge_keys() {
    let c = ok("
x-s3: &s3
  type: s3
  bucket: shared
  region: us-east-2
dbs:
  - path: /a.db
    replica:
      <<: *s3
      path: a
  - path: /b.db
    replica:
      <<: *s3
      path: b
      bucket: own
");
    // `x-s3` itself is an unknown top-level key: a warning, not an error.
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert_eq!(
        (s3(&c, 0).bucket.as_str(), s3(&c, 0).path.as_str()),
        ("shared", "a")
    );
    assert_eq!(s3(&c, 1).bucket, "own");
    assert_eq!(s3(&c, 1).region.as_deref(), Some("us-east-2"));
}

#[test]
fn relative_paths_resolve_against_the_base_dir() {
    let c = Config::parse_with_env(
        "dbs:\n  - path: data/../data/./x.db\n    meta-path: .meta\n    replica:\n      path: ../backups\n  - path: sqlite:///abs/y.db\n    replica:\n      path: ~/bk\n",
        Path::new("/srv/app"),
        &env_of(&[("HOME", "/home/me")]),
    )
    .unwrap();
    assert_eq!(c.dbs[0].path, PathBuf::from("/srv/app/data/x.db"));
    assert_eq!(
        c.dbs[0].meta_path.as_deref(),
        Some(Path::new("/srv/app/.meta"))
    );
    assert_eq!(
        c.dbs[0].replica.kind,
        ReplicaKind::File {
            path: "/srv/backups".into()
        }
    );
    assert_eq!(c.dbs[1].path, PathBuf::from("/abs/y.db"));
    assert_eq!(
        c.dbs[1].replica.kind,
        ReplicaKind::File {
            path: "/home/me/bk".into()
        }
    );
}

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let yaml = format!("dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      bucket: b\n      access-key-id: {KEY_ID}\n      secret-access-key: {SECRET}\n      sse-customer-key: ssecustomerkeyvalue\n");
    let c = parse_env(&yaml, &[]).unwrap();
    let dbg = format!("{c:?} {:?}", c.dbs[0]);
    for s in [KEY_ID, SECRET, "ssecustomerkeyvalue"] {
        assert!(!dbg.contains(s), "{s} leaked in {dbg}");
    }
    assert!(
        dbg.contains("***MPLE"),
        "the access key id may show its last 4 chars: {dbg}"
    );
    assert_eq!(s3(&c, 0).sse_customer_algorithm.as_deref(), Some("AES256"));
    // Errors about the secret fields never quote them.
    let bad = [
        format!("dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      bucket: b\n      access-key-id: {KEY_ID}\n"),
        format!("dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      bucket: b\n      access-key-id: [{KEY_ID}]\n      secret-access-key: {SECRET}\n"),
        format!("dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      access-key-id: {KEY_ID}\n      secret-access-key: {SECRET}\n"),
        format!("dbs:\n  - path: /a.db\n    replica:\n      url: s3://{KEY_ID}:{SECRET}@b/p\n      path: x\n"),
        format!("dbs:\n  - path: /a.db\n    replica:\n      url: abs://{KEY_ID}:{SECRET}@b/p\n"),
        format!("dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      path: s3://{KEY_ID}:{SECRET}@b/p\n"),
    ];
    for y in &bad {
        let e = parse_env(y, &[]).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains(SECRET) && !shown.contains(KEY_ID),
            "leak: {shown}"
        );
    }
}

#[test]
fn db_for_matches_canonical_paths() {
    let dir = temp_dir("dbfor");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/exists.db"), b"").unwrap();
    let yaml = "dbs:\n  - path: ./data/exists.db\n    replica: {url: 'file:///r1'}\n  - path: ./data/new.db\n    replica: {url: 'file:///r2'}\n";
    let c = Config::parse_with_env(yaml, &dir, &env_of(&[])).unwrap();
    assert_eq!(c.db_for(&dir.join("data/exists.db")).unwrap().key, "dbs[0]");
    assert_eq!(
        c.db_for(&dir.join("data/./../data/new.db")).unwrap().key,
        "dbs[1]"
    );
    assert!(c.db_for(&dir.join("data/other.db")).is_none());
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.join("data"), dir.join("link")).unwrap();
        assert_eq!(c.db_for(&dir.join("link/exists.db")).unwrap().key, "dbs[0]");
        assert_eq!(
            c.db_for(&dir.join("link/new.db")).unwrap().key,
            "dbs[1]",
            "missing file: parent is canonicalised"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replica_url_env_gives_every_db_a_sub_path() {
    let c =
        Config::from_replica_url_with_env("file:///var/backups/app", Path::new("/"), &env_of(&[]))
            .unwrap();
    assert!(c.dbs.is_empty());
    assert_eq!(
        c.source,
        ConfigSource::ReplicaUrlEnv("file:///var/backups/app".into())
    );
    let db = c.db_for(Path::new("/srv/data/parako.db")).unwrap();
    assert_eq!(db.path, PathBuf::from("/srv/data/parako.db"));
    assert_eq!(
        db.replica.kind,
        ReplicaKind::File {
            path: "/var/backups/app/parako.db".into()
        }
    );
    assert_eq!(db.replica.sync_interval, Duration::from_secs(1));
    assert_eq!(db.key, "WALSHIP_REPLICA_URL");
    let c = Config::from_replica_url_with_env(
        "s3://bkt/prefix/?region=eu-central-1",
        Path::new("/"),
        &env_of(&[
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ]),
    )
    .unwrap();
    let db = c.db_for(Path::new("/x/y/cache.sqlite")).unwrap();
    let ReplicaKind::S3(s) = &db.replica.kind else {
        panic!()
    };
    assert_eq!(
        (s.bucket.as_str(), s.path.as_str(), s.region.as_deref()),
        ("bkt", "prefix/cache.sqlite", Some("eu-central-1"))
    );
    let c = Config::from_replica_url_with_env("s3://bkt", Path::new("/"), &env_of(&[])).unwrap();
    let ReplicaKind::S3(s) = &c.db_for(Path::new("/a/b.db")).unwrap().replica.kind else {
        panic!()
    };
    assert_eq!(s.path, "b.db");
    let e = Config::from_replica_url_with_env("/var/backups", Path::new("/"), &env_of(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("WALSHIP_REPLICA_URL: `replica.url`") && e.contains("file:///"),
        "{e}"
    );
    let c =
        Config::from_replica_url_with_env("abs://acct@c/p", Path::new("/"), &env_of(&[])).unwrap();
    match &c.db_for(Path::new("/srv/x.db")).unwrap().replica.kind {
        ReplicaKind::Abs(a) => assert_eq!(
            (
                a.account_name.as_deref(),
                a.container.as_str(),
                a.path.as_str()
            ),
            (Some("acct"), "c", "p/x.db")
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn discovery_order() {
    let dir = temp_dir("discover");
    let env_none = env_of(&[]);
    assert!(Config::discover_with_env(&dir, &env_none)
        .unwrap()
        .is_none());

    let with_url = env_of(&[("WALSHIP_REPLICA_URL", "file:///var/bk")]);
    let c = Config::discover_with_env(&dir, &with_url).unwrap().unwrap();
    assert!(matches!(c.source, ConfigSource::ReplicaUrlEnv(_)));

    std::fs::write(
        dir.join("litestream.yml"),
        "dbs:\n  - path: ls.db\n    replica: {url: 'file:///r'}\n",
    )
    .unwrap();
    let c = Config::discover_with_env(&dir, &with_url).unwrap().unwrap();
    assert_eq!(c.source, ConfigSource::File(dir.join("litestream.yml")));
    assert_eq!(c.dbs[0].path, dir.join("ls.db"));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("WALSHIP_REPLICA_URL is set but ignored")),
        "{:?}",
        c.warnings
    );

    std::fs::write(
        dir.join("walship.yml"),
        "dbs:\n  - path: ws.db\n    replica: {url: 'file:///r'}\n",
    )
    .unwrap();
    let c = Config::discover_with_env(&dir, &env_none).unwrap().unwrap();
    assert_eq!(c.source, ConfigSource::File(dir.join("walship.yml")));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("litestream.yml is ignored")),
        "{:?}",
        c.warnings
    );

    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(
        dir.join("etc/custom.yml"),
        "dbs:\n  - path: custom.db\n    replica: {url: 'file:///r'}\n",
    )
    .unwrap();
    let env = env_of(&[("WALSHIP_CONFIG", "etc/custom.yml")]);
    let c = Config::discover_with_env(&dir, &env).unwrap().unwrap();
    assert_eq!(c.source, ConfigSource::File(dir.join("etc/custom.yml")));
    assert_eq!(
        c.dbs[0].path,
        dir.join("custom.db"),
        "relative to the current directory, as in Litestream"
    );
    assert_eq!(
        c.source_name(),
        dir.join("etc/custom.yml").display().to_string()
    );

    let env = env_of(&[("WALSHIP_CONFIG", "/nonexistent/walship.yml")]);
    let e = Config::discover_with_env(&dir, &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("WALSHIP_CONFIG") && e.contains("/nonexistent/walship.yml"),
        "{e}"
    );

    // Errors in a discovered file name the file and line.
    std::fs::write(
        dir.join("walship.yml"),
        "dbs:\n  - path: x.db\n    replica:\n      type: abs\n",
    )
    .unwrap();
    let e = Config::discover_with_env(&dir, &env_none)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("{}:4:", dir.join("walship.yml").display())),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_reports_missing_file() {
    let e = Config::load(Path::new("/nonexistent/dir/litestream.yml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(
        e.to_string().contains("/nonexistent/dir/litestream.yml"),
        "{e}"
    );
}

#[test]
fn yaml_11_scalars_like_litestream() {
    let c = ok("socket:\n  enabled: on\n  permissions: 0600\nlevels: []\nverify-compaction: Yes\ndbs:\n  - path: /a.db\n    restore-if-db-not-exists: y\n    replica: {url: 'file:///r', auto-recover: true, max-sync-ltx-files: 0}\n");
    assert!(c.socket.enabled);
    assert_eq!(c.socket.permissions, 0o600);
    assert!(c.levels.is_empty());
    assert!(c.verify_compaction);
    assert!(c.dbs[0].restore_if_db_not_exists);
    assert!(c.dbs[0].replica.auto_recover);
    assert_eq!(c.dbs[0].replica.max_sync_ltx_files, 0);
    let msg = err("dbs:\n  - /a.db\n");
    assert!(
        msg.contains("`dbs[0]`") && msg.contains("expected a mapping"),
        "{msg}"
    );
    let msg = err("dbs:\n  - path: /a.db\n    min-checkpoint-page-count: lots\n    replica: {url: 'file:///r'}\n");
    assert!(
        msg.contains("dbs[0].min-checkpoint-page-count") && msg.contains("\"lots\""),
        "{msg}"
    );
}

#[test]
fn logging_values_warn_and_stderr_false_means_stdout() {
    let c = ok("logging:\n  level: loud\n  type: xml\n  stderr: false\ndbs:\n  - path: /d/a.db\n    replica:\n      path: /r\n");
    assert_eq!(c.logging.stderr, Some(false));
    assert_eq!(c.logging.level.as_deref(), Some("loud"));
    let w = c.warnings.join("\n");
    assert!(w.contains(":2: `logging.level` = \"loud\" is not one of debug, info, warn, warning, error; using info"), "{w}");
    assert!(
        w.contains(":3: `logging.type` = \"xml\" is not one of text, json; using text"),
        "{w}"
    );
    let c = ok("logging:\n  level: WARN\n  type: json\ndbs:\n  - path: /d/a.db\n    replica:\n      path: /r\n");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.logging.stderr, None);
}

/// Litestream 0.5's directory replication: a database opened under `dir:` whose file name
/// matches `pattern:` replicates to the entry's replica path joined with its path relative to
/// the directory (subdirectories only with `recursive: true`); an exact `path:` entry wins.
#[test]
fn dir_entries_cover_matching_databases_under_the_directory() {
    let root = std::env::temp_dir().join(format!("walship-dir-config-{}", std::process::id()));
    std::fs::create_dir_all(root.join("t/sub")).unwrap();
    let r = root.display();
    let cfg = ok(&format!(
        "dbs:\n  - path: {r}/t/own.db\n    replica:\n      url: file:///own\n  - dir: {r}/t\n    pattern: '*.db'\n    replica:\n      url: s3://bk/tenants\n  - dir: {r}/t/sub\n    pattern: 'x-*.sqlite'\n    recursive: true\n    replica:\n      path: /rep\n"
    ));
    let s3_path = |p: &str| match cfg.db_for(&root.join(p)).map(|d| d.replica.kind.clone()) {
        Some(ReplicaKind::S3(c)) => Some(c.path),
        other => panic!("{p}: {other:?}"),
    };
    assert_eq!(s3_path("t/a.db").as_deref(), Some("tenants/a.db"));
    let own = cfg.db_for(&root.join("t/own.db")).unwrap();
    assert!(matches!(&own.replica.kind, ReplicaKind::File { path } if path == Path::new("/own")));
    // Not recursive: t/sub/b.db is not the first entry's; the second wants x-*.sqlite.
    assert!(cfg.db_for(&root.join("t/sub/b.db")).is_none());
    assert!(cfg.db_for(&root.join("t/a.sqlite")).is_none());
    assert!(cfg.db_for(&root.join("other/a.db")).is_none());
    std::fs::create_dir_all(root.join("t/sub/deep")).unwrap();
    let deep = cfg.db_for(&root.join("t/sub/deep/x-1.sqlite")).unwrap();
    assert!(
        matches!(&deep.replica.kind, ReplicaKind::File { path } if path == Path::new("/rep/deep/x-1.sqlite")),
        "{:?}",
        deep.replica.kind
    );
    assert_eq!(
        deep.path,
        root.join("t/sub/deep/x-1.sqlite")
            .canonicalize()
            .unwrap_or(root.join("t/sub/deep/x-1.sqlite"))
    );
    let _ = std::fs::remove_dir_all(&root);
}
