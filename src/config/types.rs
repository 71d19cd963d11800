//! The typed configuration: what the rest of walship reads. Values are resolved (paths made
//! absolute, global defaults merged into replicas, Litestream's defaults filled in), so users
//! of these types never re-implement a rule.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Litestream's defaults (Litestream 0.5 `db.go`, `replica.go`, `store.go`, `cmd/litestream`).
pub mod defaults {
    use std::time::Duration;
    pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
    pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
    pub const SNAPSHOT_RETENTION: Duration = Duration::from_secs(24 * 3600);
    /// Compaction levels L1..L3 (L0 is implicit, L9 is the snapshot level).
    pub const LEVEL_INTERVALS: [Duration; 3] = [
        Duration::from_secs(30),
        Duration::from_secs(5 * 60),
        Duration::from_secs(3600),
    ];
    pub const L0_RETENTION: Duration = Duration::from_secs(5 * 60);
    pub const L0_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(15);
    pub const SHUTDOWN_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
    pub const SHUTDOWN_SYNC_INTERVAL: Duration = Duration::from_millis(500);
    /// walship only: the replica lease (`lease-ttl`, `lease-renew-interval`).
    pub const LEASE_TTL: Duration = Duration::from_secs(30);
    pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);
    pub const MONITOR_INTERVAL: Duration = Duration::from_secs(1);
    pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
    pub const BUSY_TIMEOUT: Duration = Duration::from_secs(1);
    pub const MIN_CHECKPOINT_PAGE_COUNT: i64 = 1000;
    pub const TRUNCATE_PAGE_N: i64 = 121_359;
    pub const MAX_SYNC_WAL_BYTES: i64 = 64 << 20;
    pub const MAX_SYNC_LTX_FILES: i64 = 256;
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5 * 60);
    pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
    pub const SOCKET_PATH: &str = "/var/run/litestream.sock";
    pub const S3_DEFAULT_REGION: &str = "us-east-1";
}

/// A secret string (secret access key, access key id, SSE-C key). `Debug` and `Display` never
/// show it; call [`Secret::expose`] at the single place that needs the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret value. Never log or format the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// `***` plus at most the last 4 characters, and only for values long enough (>= 16
    /// chars, like AWS access key ids) that 4 characters reveal nothing useful.
    pub fn hint(&self) -> String {
        let n = self.0.chars().count();
        if n >= 16 {
            let tail: String = self.0.chars().skip(n - 4).collect();
            format!("***{tail}")
        } else {
            "***".into()
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where an S3 credential came from (for a log line that says so without the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// `access-key-id` / `secret-access-key` in the replica or at the top level of the file.
    Config,
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    AwsEnv,
    /// `LITESTREAM_ACCESS_KEY_ID` / `LITESTREAM_SECRET_ACCESS_KEY`.
    LitestreamEnv,
    /// No static key: the S3 client must find credentials another way or fail.
    None,
}

/// Global snapshot settings (`snapshot:`), also allowed per database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// How often a full snapshot is written. Default 24h.
    pub interval: Duration,
    /// How long snapshots (and the LTX files they supersede) are kept. Default 24h.
    pub retention: Duration,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            interval: defaults::SNAPSHOT_INTERVAL,
            retention: defaults::SNAPSHOT_RETENTION,
        }
    }
}

/// `logging:` (Litestream 0.5's keys). Applied to walship's own logger (`src/logging.rs`) when
/// the extension installed it; `WALSHIP_LOG` / `WALSHIP_LOG_FORMAT` in the environment win.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoggingConfig {
    /// `level` (debug, info, warn, error).
    pub level: Option<String>,
    /// `type` (text, json).
    pub kind: Option<String>,
    /// `stderr`: `Some(false)` logs to stdout; unset keeps walship's default, stderr.
    pub stderr: Option<bool>,
    /// `source`: add the source file and line to JSON log lines.
    pub source: bool,
}

/// `socket:` (Litestream's control socket). Accepted; walship has no control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    pub enabled: bool,
    pub path: String,
    pub permissions: u32,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            enabled: false,
            path: defaults::SOCKET_PATH.into(),
            permissions: 0o600,
        }
    }
}

/// One replica destination, with global defaults already merged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// `name:` (deprecated in Litestream 0.5; kept for messages). Defaults to the type name.
    pub name: String,
    /// `sync-interval`: how often new WAL frames are shipped. Default 1s.
    pub sync_interval: Duration,
    /// `retention:` on the replica. Not a Litestream 0.5 key (0.3 had it; 0.5 ignores it and
    /// uses `snapshot.retention`). When set, it overrides `snapshot.retention` for this replica.
    pub retention: Option<Duration>,
    /// `validation-interval` (replica or global). `None`: no periodic validation.
    pub validation_interval: Option<Duration>,
    /// `max-sync-ltx-files`: L0 files uploaded per sync run; 0 = all. Default 256.
    pub max_sync_ltx_files: i64,
    /// `auto-recover`: reset local state on LTX errors. Default false.
    pub auto_recover: bool,
    /// The backend and its settings.
    pub kind: ReplicaKind,
}

impl ReplicaConfig {
    /// `retention` if set on the replica, else the snapshot retention that applies.
    pub fn effective_retention(&self, snapshot: &SnapshotConfig) -> Duration {
        self.retention.unwrap_or(snapshot.retention)
    }
}

/// The replica backends walship understands.
// One per configured database: size does not matter, plain matching does.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaKind {
    /// A directory on a local (or mounted) filesystem. Always absolute.
    File { path: PathBuf },
    /// Amazon S3 or an S3-compatible store.
    S3(S3Config),
    /// Google Cloud Storage (`type: gs`, or `gcs`): its own JSON API with Application Default
    /// Credentials, or its S3-interoperable XML API when HMAC keys are given as
    /// `access-key-id` / `secret-access-key`.
    Gcs(GcsConfig),
    /// Azure Blob Storage (`type: abs`).
    Abs(AbsConfig),
}

impl ReplicaKind {
    /// `file`, `s3` or `gs`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ReplicaKind::File { .. } => "file",
            ReplicaKind::S3(_) => "s3",
            ReplicaKind::Gcs(_) => "gs",
            ReplicaKind::Abs(_) => "abs",
        }
    }
}

/// S3 settings. `Debug` never prints the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading `/`. May be empty.
    pub path: String,
    /// Custom endpoint with scheme (`https://...`); `None` means AWS.
    pub endpoint: Option<String>,
    /// `None`: not configured anywhere (config, URL, `AWS_REGION`, `AWS_DEFAULT_REGION`); the
    /// S3 client must pick (Litestream uses us-east-1 for custom endpoints).
    pub region: Option<String>,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub credential_source: CredentialSource,
    /// Path-style addressing. Litestream's rule: true when an endpoint is set, unless
    /// `force-path-style` says otherwise.
    pub force_path_style: bool,
    /// Skip TLS certificate verification (for self-signed test servers only).
    pub skip_verify: bool,
    /// `sign-payload`: default true.
    pub sign_payload: bool,
    /// `require-content-md5`: default true.
    pub require_content_md5: bool,
    pub storage_class: Option<String>,
    /// `part-size` in bytes (`5MiB`, `5MB`, `5242880`).
    pub part_size: Option<u64>,
    pub concurrency: Option<i64>,
    /// SSE-C algorithm (default `AES256` when a key is given).
    pub sse_customer_algorithm: Option<String>,
    pub sse_customer_key: Option<Secret>,
    /// File holding the SSE-C key (read by the S3 client, not here).
    pub sse_customer_key_path: Option<PathBuf>,
    pub sse_kms_key_id: Option<String>,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("path", &self.path)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(Secret::hint),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("credential_source", &self.credential_source)
            .field("force_path_style", &self.force_path_style)
            .field("skip_verify", &self.skip_verify)
            .field("sign_payload", &self.sign_payload)
            .field("require_content_md5", &self.require_content_md5)
            .field("storage_class", &self.storage_class)
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .field("sse_customer_algorithm", &self.sse_customer_algorithm)
            .field(
                "sse_customer_key",
                &self.sse_customer_key.as_ref().map(|_| "***"),
            )
            .field("sse_customer_key_path", &self.sse_customer_key_path)
            .field("sse_kms_key_id", &self.sse_kms_key_id)
            .finish()
    }
}

/// GCS settings. `Debug` never prints the HMAC keys.
#[derive(Clone, PartialEq, Eq)]
pub struct GcsConfig {
    pub bucket: String,
    /// Object name prefix (cleaned, no leading or trailing `/`; may be empty).
    pub path: String,
    /// HMAC key id for the S3-interoperable API, if given.
    pub access_key_id: Option<Secret>,
    /// HMAC secret, if given.
    pub secret_access_key: Option<Secret>,
    /// `GOOGLE_APPLICATION_CREDENTIALS` at load time: a service-account (or authorized-user)
    /// JSON file. `None`: gcloud's well-known file, else the metadata server.
    pub application_credentials: Option<PathBuf>,
    /// `STORAGE_EMULATOR_HOST` at load time (`host:port`, or a URL): talk to that emulator,
    /// unauthenticated, as Google's clients do.
    pub emulator_host: Option<String>,
    /// `skip-verify` (TLS; test servers only).
    pub skip_verify: bool,
}

impl GcsConfig {
    /// HMAC keys were given: the S3-interoperable XML API (walship's S3 backend) is used.
    pub fn uses_hmac(&self) -> bool {
        self.access_key_id.is_some() && self.secret_access_key.is_some()
    }
}

/// Which Azure credential a replica uses, in Litestream 0.5's order (for a log line that says
/// so without the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbsCredentialSource {
    /// `sas-token` in the file.
    SasToken,
    /// `LITESTREAM_AZURE_SAS_TOKEN`.
    SasTokenEnv,
    /// `account-key` in the file (Shared Key, with `account-name`).
    AccountKey,
    /// `LITESTREAM_AZURE_ACCOUNT_KEY`.
    AccountKeyEnv,
    /// Neither: the Azure credential chain (service principal or workload identity from
    /// `AZURE_*` variables, else managed identity).
    DefaultChain,
}

/// Azure Blob Storage settings (Litestream 0.5's `abs` keys). `Debug` never prints the SAS
/// token or the account key.
#[derive(Clone, PartialEq, Eq)]
pub struct AbsConfig {
    /// `account-name`, or the user part of `abs://account@container/path`.
    pub account_name: Option<String>,
    /// `bucket`: the container.
    pub container: String,
    /// Blob name prefix (cleaned, no leading or trailing `/`; may be empty).
    pub path: String,
    /// `endpoint`: the blob service URL (other clouds, Azurite:
    /// `http://127.0.0.1:10000/devstoreaccount1`). `None`: `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<String>,
    /// The SAS token, when that is the credential used.
    pub sas_token: Option<Secret>,
    /// The account key, when that is the credential used.
    pub account_key: Option<Secret>,
    pub credential_source: AbsCredentialSource,
    /// For [`AbsCredentialSource::DefaultChain`]: the Azure identity variables set at load time
    /// (`AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`,
    /// `AZURE_AUTHORITY_HOST`, `MSI_ENDPOINT`), name and value.
    pub identity_env: Vec<(String, Secret)>,
    /// `skip-verify` (TLS; test servers only).
    pub skip_verify: bool,
}

impl fmt::Debug for AbsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbsConfig")
            .field("account_name", &self.account_name)
            .field("container", &self.container)
            .field("path", &self.path)
            .field("endpoint", &self.endpoint)
            .field("sas_token", &self.sas_token.as_ref().map(|_| "***"))
            .field("account_key", &self.account_key.as_ref().map(|_| "***"))
            .field("credential_source", &self.credential_source)
            .field(
                "identity_env",
                &self.identity_env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("skip_verify", &self.skip_verify)
            .finish()
    }
}

impl fmt::Debug for GcsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsConfig")
            .field("bucket", &self.bucket)
            .field("path", &self.path)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(Secret::hint),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("application_credentials", &self.application_credentials)
            .field("emulator_host", &self.emulator_host)
            .field("skip_verify", &self.skip_verify)
            .finish()
    }
}

/// One database to replicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    /// Absolute path of the database file (as resolved at load time; `db_for` compares
    /// canonical forms).
    pub path: PathBuf,
    /// Key path of this entry in the file, e.g. `dbs[0]`, for messages.
    pub key: String,
    /// The single replica (from `replica:` or a one-entry `replicas:` list; Litestream 0.5
    /// allows exactly one per database and loading rejects more).
    pub replica: ReplicaConfig,
    /// Snapshot settings for this database: its own `snapshot:` values, else the global ones.
    pub snapshot: SnapshotConfig,
    /// `meta-path`: where Litestream keeps its local state (default `.<db>-litestream` beside
    /// the db).
    pub meta_path: Option<PathBuf>,
    /// `monitor-interval`. Default 1s.
    pub monitor_interval: Duration,
    /// `checkpoint-interval`. Default 1m.
    pub checkpoint_interval: Duration,
    /// `busy-timeout`. Default 1s.
    pub busy_timeout: Duration,
    /// `min-checkpoint-page-count`. Default 1000.
    pub min_checkpoint_page_count: i64,
    /// `max-checkpoint-page-count` (Litestream 0.5.0 only; later versions dropped it).
    pub max_checkpoint_page_count: Option<i64>,
    /// `truncate-page-n`. Default 121359.
    pub truncate_page_n: i64,
    /// `max-sync-wal-bytes`. Default 64 MiB.
    pub max_sync_wal_bytes: i64,
    /// `restore-if-db-not-exists`. Default false.
    pub restore_if_db_not_exists: bool,
    /// `dir:` + `pattern:` (+ `recursive:`): this entry stands for every database opened
    /// under `path` (then the directory) whose file name matches; see `Config::db_for`.
    pub dir: Option<DirMatch>,
}

/// Litestream 0.5's directory replication: which databases under a directory an entry covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirMatch {
    /// The glob the database's file name must match (`*.db`).
    pub pattern: String,
    /// Databases in subdirectories too (their replica path keeps the subdirectories).
    pub recursive: bool,
}

impl DbConfig {
    /// A database entry with Litestream's defaults (used for `WALSHIP_REPLICA_URL`).
    pub(crate) fn with_defaults(
        path: PathBuf,
        key: String,
        replica: ReplicaConfig,
        snapshot: SnapshotConfig,
    ) -> Self {
        DbConfig {
            path,
            key,
            replica,
            snapshot,
            meta_path: None,
            monitor_interval: defaults::MONITOR_INTERVAL,
            checkpoint_interval: defaults::CHECKPOINT_INTERVAL,
            busy_timeout: defaults::BUSY_TIMEOUT,
            min_checkpoint_page_count: defaults::MIN_CHECKPOINT_PAGE_COUNT,
            max_checkpoint_page_count: None,
            truncate_page_n: defaults::TRUNCATE_PAGE_N,
            max_sync_wal_bytes: defaults::MAX_SYNC_WAL_BYTES,
            restore_if_db_not_exists: false,
            dir: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats() {
        let s = Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.hint(), "***EKEY");
        assert_eq!(Secret::new("short").hint(), "***");
        assert_eq!(s.expose(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
    }
}
