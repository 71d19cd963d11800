//! Discovery through the real process environment and current directory.
//!
//! This binary changes the process's current directory and environment, so everything runs
//! in ONE test function (tests in a binary share the process; one function means no races).

use std::path::{Path, PathBuf};
use std::time::Duration;

use walvfs::config::{Config, ConfigError, ConfigSource, ReplicaKind};

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("walship-config-discovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.canonicalize().unwrap()
}

fn clear_env() {
    for k in [
        "WALSHIP_CONFIG",
        "WALSHIP_REPLICA_URL",
        "LITESTREAM_ACCESS_KEY_ID",
        "LITESTREAM_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ] {
        std::env::remove_var(k);
    }
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
fn discovery_with_the_real_environment() {
    clear_env();
    let dir = temp_dir();
    std::env::set_current_dir(&dir).unwrap();

    // 1. Nothing configured: no config, no error.
    assert!(Config::discover().unwrap().is_none());

    // 2. WALSHIP_REPLICA_URL alone: every database gets <dir>/<file name>.
    std::env::set_var("WALSHIP_REPLICA_URL", "file:///var/backups/app");
    let c = Config::discover()
        .unwrap()
        .expect("synthesised from WALSHIP_REPLICA_URL");
    assert_eq!(
        c.source,
        ConfigSource::ReplicaUrlEnv("file:///var/backups/app".into())
    );
    let db = c.db_for(Path::new("data/parako.db")).unwrap();
    assert_eq!(
        db.path,
        dir.join("data/parako.db"),
        "relative db paths resolve against the cwd"
    );
    assert_eq!(
        db.replica.kind,
        ReplicaKind::File {
            path: "/var/backups/app/parako.db".into()
        }
    );

    // 3. ./litestream.yml wins over WALSHIP_REPLICA_URL; ${VAR}s come from the environment.
    std::fs::write(dir.join("litestream.yml"), EXAMPLE).unwrap();
    std::env::set_var("LITESTREAM_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE");
    std::env::set_var(
        "LITESTREAM_SECRET_ACCESS_KEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    let c = Config::discover().unwrap().unwrap();
    assert_eq!(c.source, ConfigSource::File(dir.join("litestream.yml")));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("WALSHIP_REPLICA_URL is set but ignored")),
        "{:?}",
        c.warnings
    );
    assert_eq!(c.dbs[0].path, dir.join("data/parako.db"));
    let ReplicaKind::S3(s3) = &c.dbs[0].replica.kind else {
        panic!("{:?}", c.dbs[0].replica)
    };
    assert_eq!(
        s3.access_key_id.as_ref().unwrap().expose(),
        "AKIAIOSFODNN7EXAMPLE"
    );
    assert_eq!(
        c.dbs[0].replica.retention,
        Some(Duration::from_secs(168 * 3600))
    );
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("wJalrXUtnFEMI") && !shown.contains("AKIAIOSFODNN7EXAMPLE"),
        "{shown}"
    );
    // The database does not exist yet, but its directory does: still matched.
    std::fs::create_dir_all(dir.join("data")).unwrap();
    assert!(c.db_for(&dir.join("data/parako.db")).is_some());
    assert!(c.db_for(Path::new("./data/../data/parako.db")).is_some());
    assert!(
        c.db_for(Path::new("data/other.db")).is_none(),
        "not listed, and no WALSHIP_REPLICA_URL fallback in file mode"
    );

    // 4. The same file with the variables unset: a clear error naming the file and variable.
    std::env::remove_var("LITESTREAM_ACCESS_KEY_ID");
    std::env::remove_var("LITESTREAM_SECRET_ACCESS_KEY");
    let e = Config::discover().unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ConfigError::Missing { .. }), "{e:?}");
    assert!(
        msg.starts_with(&format!("{}:8:", dir.join("litestream.yml").display())),
        "{msg}"
    );
    assert!(
        msg.contains("${LITESTREAM_ACCESS_KEY_ID} is not set"),
        "{msg}"
    );

    // 5. ./walship.yml wins over ./litestream.yml.
    std::fs::write(
        dir.join("walship.yml"),
        "dbs:\n  - path: w.db\n    replica:\n      path: backups\n",
    )
    .unwrap();
    let c = Config::discover().unwrap().unwrap();
    assert_eq!(c.source, ConfigSource::File(dir.join("walship.yml")));
    assert_eq!(
        c.dbs[0].replica.kind,
        ReplicaKind::File {
            path: dir.join("backups")
        }
    );

    // 6. WALSHIP_CONFIG wins over both; a relative file replica path resolves against the cwd
    //    (as Litestream does), not the config file's directory.
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    std::fs::write(
        dir.join("conf/app.yml"),
        "dbs:\n  - path: c.db\n    replica:\n      path: ./bk\n",
    )
    .unwrap();
    std::env::set_var("WALSHIP_CONFIG", dir.join("conf/app.yml"));
    let c = Config::discover().unwrap().unwrap();
    assert_eq!(c.source, ConfigSource::File(dir.join("conf/app.yml")));
    assert_eq!(c.dbs[0].path, dir.join("c.db"));
    assert_eq!(
        c.dbs[0].replica.kind,
        ReplicaKind::File {
            path: dir.join("bk")
        }
    );

    // 7. WALSHIP_CONFIG naming a missing file is an error, not a silent fallback.
    std::env::set_var("WALSHIP_CONFIG", dir.join("conf/missing.yml"));
    let e = Config::discover().unwrap_err();
    assert!(matches!(e, ConfigError::ConfigEnvMissing { .. }), "{e:?}");

    // 8. Config::load on its own.
    let c = Config::load(&dir.join("conf/app.yml")).unwrap();
    assert_eq!(
        c.source_name(),
        dir.join("conf/app.yml").display().to_string()
    );

    clear_env();
    std::env::set_current_dir(std::env::temp_dir()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
