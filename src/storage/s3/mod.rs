//! S3 backend: Litestream 0.5's S3 replica layout on AWS S3 and S3-compatible stores (MinIO,
//! Backblaze B2, Cloudflare R2, moto, ...), and on Google Cloud Storage through its
//! S3-interoperable XML API with HMAC keys.
//!
//! # Layout (what Litestream 0.5.17 writes and reads)
//! * S3: `<path>/<level as 4 hex digits>/<minTXID %016x>-<maxTXID %016x>.ltx`, built by plain
//!   concatenation (`path + "/" + ...`), so a replica with an empty `path` has keys starting
//!   with `/` (`/0000/...`), exactly like Litestream's.
//! * GCS (`type: gs`): Litestream's gs client uses `path.Join(path, "ltx", level, name)` with a
//!   *decimal* level (`<path>/ltx/0/<min>-<max>.ltx`), so `from_gcs_config` uses that layout.
//! * Every object carries the user metadata `litestream-timestamp`: the LTX header timestamp
//!   formatted as Go's `time.RFC3339Nano` of a millisecond time in UTC (`2024-01-02T03:04:05.12Z`:
//!   trailing zeros of the fraction dropped, no fraction when it is zero). Litestream's
//!   point-in-time restore reads it (falling back to LastModified).
//!
//! # Design: ureq + a hand-written SigV4 signer (why not rust-s3 or the AWS SDK)
//! The backend runs inside the host application's process, on the shipper thread, so it must
//! be blocking and must not bring an async runtime along. The AWS SDK and `object_store` are
//! async (tokio) only. `rust-s3` (0.38) has a blocking `sync` feature (attohttpc), but its
//! defaults pull in tokio, its blocking GET either buffers the whole object (`get_object`) or
//! pushes it into a `Write` (`get_object_to_writer`), where the `Storage` trait hands out a
//! `Read` (restore pulls several downloads at its own pace: that would cost a thread and a pipe
//! per download), it reports failures as a generic error whose S3 code we would re-parse
//! anyway, and it brings its own credential chain (aws-creds), serde/quick-xml and
//! `maybe-async` machinery. `ureq` 2 (rustls, no async, small dependency tree, keeps this
//! crate's rust-version 1.80; ureq 3 needs 1.85) gives a streaming response body, per-phase
//! timeouts, and plain status/header access; SigV4 for S3 is ~150 lines (`sigv4.rs`), checked
//! against AWS's published examples (signatures confirmed with botocore) and, in the
//! conformance tests, against servers that verify every signature (moto with IAM auth, s3s-fs).
//!
//! # Behaviour
//! * `list`: ListObjectsV2 on the level prefix, following continuation tokens; sizes come
//!   from the listing. `open`: a streaming GET; a broken download resumes with a ranged GET
//!   pinned to the object's ETag (`If-Match`). `delete`: DELETE, 404 is success.
//! * `put`: reads at most `part-size` bytes (default and minimum 5 MiB); a body that ends
//!   before that is one PutObject, a longer one a multipart upload holding one part in memory
//!   at a time (aborted on failure). Parts grow after every 2,500 so an unknown length never
//!   runs into S3's 10,000-part limit before ~300 GiB.
//! * Transient failures (connection refused/reset, timeouts, HTTP 408/429/500/502/503/504,
//!   `SlowDown`, `RequestTimeout`, `InternalError`, `RequestCanceled`) are retried a few times
//!   with capped exponential backoff and jitter; others fail at once with a typed
//!   [`StorageError`] naming the replica and what to fix. Connect timeout 10 s, read/write
//!   timeout 60 s per socket operation (`$WALSHIP_S3_IO_TIMEOUT` seconds overrides it). A GET
//!   broken mid-body resumes where it stopped; resumes without progress are limited to 5 in a
//!   row, resumes that got further are not limited.
//! * Addressing: path-style when `force-path-style` (the config's default when an endpoint is
//!   set, as Litestream's), else virtual-hosted (`bucket.host`); AWS without an endpoint is
//!   `s3.<region>.amazonaws.com`, and when no region is configured anywhere the backend starts
//!   with us-east-1 and follows the bucket's region from S3's `x-amz-bucket-region` answer
//!   (Litestream looks the region up before its first request). `skip-verify` accepts any TLS certificate.
//!   Trusted roots: Mozilla's (webpki-roots) plus the system store (`SSL_CERT_FILE` honoured).
//! * SSE-KMS (`sse-kms-key-id`) and SSE-C (`sse-customer-key[-path]`) headers are sent like
//!   Litestream's; `storage-class` is sent on writes. Not used: `concurrency` (parts go one at a
//!   time, to bound memory), `require-content-md5` (Litestream uses it only for batch deletes,
//!   which this backend does not send), proxies, and credentials other than static keys.
//!
//! # Modules
//! * `mod.rs` (here): the public surface ([`S3Storage`], [`Layout`], [`RetryPolicy`],
//!   [`litestream_timestamp`], the size and name constants), the shared state, the key
//!   layout, the [`Storage`] implementation, bucket creation and object deletion.
//! * `setup`: building an [`S3Storage`] from an `s3`/`gs` replica's settings (validation,
//!   SSE headers, the HTTP agent). Contacts nothing.
//! * `connection`: endpoints (parsing, AWS's default host), timeouts and TLS trust.
//! * `request`: one signed request, the retry loop, and the streaming, resuming GET.
//! * `errors`: what a failed request becomes: classification (transient or not), the typed
//!   [`StorageError`] with its hint, and scrubbing credentials out of server messages.
//! * `listing`: ListObjectsV2 and its pagination. `upload`: PutObject and multipart uploads.
//! * `xml`: the few flat XML reads and writes S3's answers need.
//!
//! Must never put a credential (access key id, secret key, SSE-C key) in an error, a log line
//! or a `Debug` output: they stay in [`Secret`]s, server messages are scrubbed of them.

pub(crate) mod connection;
mod errors;
mod listing;
mod request;
mod setup;
mod upload;
mod xml;

use std::io::Read;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use self::connection::Endpoint;
use self::errors::Failure;
use self::request::{drain, GetReader, Req};
use self::xml::xml_escape;
use super::sigv4;
use super::{FileInfo, Precondition, Storage, StorageError, Tagged};
use crate::config::{CredentialSource, Secret};
use crate::ltx;

/// Bytes read before deciding between one PutObject and a multipart upload; also the size of
/// each part, held in the app's process while it uploads. S3's minimum and Litestream's
/// default, 5 MiB: the smallest fixed memory bound S3 allows (`part-size` raises it).
pub const DEFAULT_PART_SIZE: usize = 5 << 20;
/// S3's minimum size for every part but the last.
pub const MIN_PART_SIZE: usize = 5 << 20;
/// The object metadata key Litestream stores the LTX timestamp under.
pub const METADATA_TIMESTAMP: &str = "litestream-timestamp";
/// GCS's S3-interoperable (XML API) endpoint.
pub const GCS_ENDPOINT: &str = "https://storage.googleapis.com";

/// How object keys are laid out under the replica path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Litestream's s3 client: `<path>/<level %04x>/<min>-<max>.ltx`.
    S3,
    /// Litestream's gs client: `<path>/ltx/<level decimal>/<min>-<max>.ltx` (path-joined).
    Gcs,
}

impl Layout {
    fn level_prefix(self, path: &str, level: u8) -> String {
        match self {
            Layout::S3 => format!("{path}/{level:04x}/"),
            Layout::Gcs if path.is_empty() => format!("ltx/{level}/"),
            Layout::Gcs => format!("{path}/ltx/{level}/"),
        }
    }
}

/// Retry settings for transient failures. The delay before retry `n` (1-based) is
/// `min(max_delay, base_delay * 2^(n-1))`, half of it fixed and half random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per request, the first included (at least 1).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

struct Creds {
    key_id: Secret,
    secret: Secret,
}

/// The S3 (and GCS-interop) backend. Cheap to share across threads; `open` readers keep a
/// reference to it.
pub struct S3Storage {
    inner: Arc<Inner>,
}

struct Inner {
    agent: ureq::Agent,
    /// `Some` for a configured endpoint; `None` for AWS (`s3.<region>.amazonaws.com`).
    endpoint: Option<Endpoint>,
    bucket: String,
    /// The replica path (no leading or trailing `/`; may be empty).
    path: String,
    layout: Layout,
    region: RwLock<String>,
    /// The region may follow S3's answer (AWS, no region configured).
    region_follows_bucket: bool,
    path_style: bool,
    creds: Option<Creds>,
    cred_source: CredentialSource,
    sign_payload: bool,
    part_size: usize,
    storage_class: Option<String>,
    /// Sent on every request that reads or writes object data (SSE-C).
    sse_c: Vec<(String, Secret)>,
    /// Sent when an object is created (SSE-KMS).
    sse_write: Vec<(String, String)>,
    retry: RetryPolicy,
    list_page_size: Option<u32>,
    /// `s3` or `gs` (for messages).
    scheme: &'static str,
    /// `x-amz-meta-` or `x-goog-meta-`.
    meta_prefix: &'static str,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.inner;
        f.debug_struct("S3Storage")
            .field("replica", &i.describe())
            .field("layout", &i.layout)
            .field("region", &i.region())
            .field("path_style", &i.path_style)
            .field("access_key_id", &i.creds.as_ref().map(|c| c.key_id.hint()))
            .field("secret_access_key", &i.creds.as_ref().map(|_| "***"))
            .field("credential_source", &i.cred_source)
            .field("part_size", &i.part_size)
            .field("retry", &i.retry)
            .finish()
    }
}

impl S3Storage {
    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner).expect("S3Storage settings change before it is shared")
    }

    /// Overrides the retry policy (tests; tuning).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        let mut r = retry;
        r.max_attempts = r.max_attempts.max(1);
        self.inner_mut().retry = r;
        self
    }

    /// Asks ListObjectsV2 for at most `n` keys per page (S3's default and maximum is 1000);
    /// lets tests exercise continuation tokens cheaply.
    pub fn with_list_page_size(mut self, n: u32) -> Self {
        self.inner_mut().list_page_size = Some(n.clamp(1, 1000));
        self
    }

    /// Overrides the part size (at least [`MIN_PART_SIZE`]).
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.inner_mut().part_size = bytes.clamp(MIN_PART_SIZE, 1 << 30);
        self
    }

    /// The object key of one LTX file.
    pub fn object_key(&self, level: u8, min_txid: u64, max_txid: u64) -> String {
        self.inner.key(level, min_txid, max_txid)
    }

    /// The prefix listed for `level`.
    pub fn level_prefix(&self, level: u8) -> String {
        self.inner.layout.level_prefix(&self.inner.path, level)
    }

    /// Creates the bucket (for tests and first-time setup); an existing bucket of ours is
    /// fine.
    pub fn create_bucket(&self) -> Result<(), StorageError> {
        let i = &self.inner;
        let region = i.region();
        let body = if region == "us-east-1" || i.layout == Layout::Gcs {
            Vec::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                xml_escape(&region)
            )
            .into_bytes()
        };
        let req = Req {
            method: "PUT",
            key: None,
            query: vec![],
            headers: vec![],
            sse_c: false,
            body: Some(&body),
        };
        match i.send(&req) {
            Ok(r) => {
                drain(r);
                Ok(())
            }
            Err(Failure::Status { code, .. }) if code == "BucketAlreadyOwnedByYou" => Ok(()),
            Err(f) => Err(i.error("create bucket", &format!("{}://{}", i.scheme, i.bucket), f)),
        }
    }
}

/// The replica as shown to users: `s3://bucket/path (endpoint http://host:port)`, never
/// credentials.
fn describe_parts(
    scheme: &str,
    bucket: &str,
    path: &str,
    endpoint: Option<&str>,
    region: Option<&str>,
) -> String {
    let path = path.trim_matches('/');
    let loc = if path.is_empty() {
        format!("{scheme}://{bucket}")
    } else {
        format!("{scheme}://{bucket}/{path}")
    };
    match (endpoint, region) {
        (Some(e), _) => {
            // Never show userinfo, even though `Endpoint::parse` rejects it.
            let e = match e.find("://") {
                Some(i) => match e[i + 3..].rfind('@') {
                    Some(at) => format!("{}://{}", &e[..i], &e[i + 3 + at + 1..]),
                    None => e.to_string(),
                },
                None => e.to_string(),
            };
            format!("{loc} (endpoint {})", e.trim_end_matches('/'))
        }
        (None, Some(r)) => format!("{loc} (region {r})"),
        (None, None) => loc,
    }
}

impl Inner {
    fn region(&self) -> String {
        self.region.read().map(|r| r.clone()).unwrap_or_default()
    }

    fn describe(&self) -> String {
        let ep = self.endpoint.as_ref().map(Endpoint::display);
        let region = self.region();
        describe_parts(
            self.scheme,
            &self.bucket,
            &self.path,
            ep.as_deref(),
            Some(region.as_str()),
        )
    }

    fn key(&self, level: u8, min: u64, max: u64) -> String {
        format!(
            "{}{}",
            self.layout.level_prefix(&self.path, level),
            ltx::file_name(min, max)
        )
    }

    /// The key of a named object (the lease): directly under the replica path, outside the
    /// level prefixes Litestream lists.
    fn named_key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.path)
        }
    }

    /// `s3://bucket/key`, for messages.
    fn object(&self, key: &str) -> String {
        format!("{}://{}/{}", self.scheme, self.bucket, key)
    }

    /// DELETE, with `If-Match` when `etag` is given (then 412 is a failed precondition). A
    /// missing object is success.
    fn delete(&self, key: &str, etag: Option<&str>) -> Result<(), StorageError> {
        let req = Req {
            method: "DELETE",
            key: Some(key),
            query: vec![],
            headers: etag
                .map(|t| vec![("if-match".to_string(), t.to_string())])
                .unwrap_or_default(),
            sse_c: false,
            body: None,
        };
        match self.send(&req) {
            Ok(r) => {
                drain(r);
                Ok(())
            }
            Err(Failure::Status { code, .. }) if code == "NoSuchKey" || code == "NotFound" => {
                Ok(())
            }
            Err(f) if etag.is_some() && upload::precondition_failed(&f) => {
                Err(StorageError::PreconditionFailed {
                    op: "delete",
                    object: self.object(key),
                })
            }
            Err(f) => Err(self.error("delete", &self.object(key), f)),
        }
    }
}

impl Storage for S3Storage {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn list(&self, level: u8) -> Result<Vec<FileInfo>, StorageError> {
        self.inner.list(level)
    }

    fn put(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        timestamp_ms: i64,
        src: &mut dyn Read,
    ) -> Result<u64, StorageError> {
        let key = self.inner.key(level, min_txid, max_txid);
        self.inner.put(&key, timestamp_ms, src)
    }

    fn open(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
    ) -> Result<Box<dyn Read + Send>, StorageError> {
        let i = &self.inner;
        let key = i.key(level, min_txid, max_txid);
        let resp = i
            .get(&key, 0, None)
            .map_err(|f| i.error("get", &i.object(&key), f))?;
        let len = resp
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        let etag = resp.header("etag").map(str::to_string);
        Ok(Box::new(GetReader {
            inner: self.inner.clone(),
            key,
            body: resp.into_reader(),
            offset: 0,
            len,
            etag,
            resumes: 0,
            resumed_at: 0,
        }))
    }

    fn delete(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<(), StorageError> {
        let key = self.inner.key(level, min_txid, max_txid);
        self.inner.delete(&key, None)
    }

    fn get_named(&self, name: &str) -> Result<Option<Tagged>, StorageError> {
        let i = &self.inner;
        let key = i.named_key(name);
        let object = i.object(&key);
        let resp = match i.get(&key, 0, None) {
            Ok(r) => r,
            Err(f) => {
                return match i.error("get", &object, f) {
                    StorageError::NotFound { .. } => Ok(None),
                    e => Err(e),
                }
            }
        };
        let tag = resp.header("etag").unwrap_or_default().to_string();
        let mut body = Vec::new();
        resp.into_reader()
            .take(1 << 20)
            .read_to_end(&mut body)
            .map_err(|e| i.read_error("get", &object, e))?;
        Ok(Some(Tagged { body, tag }))
    }

    fn put_named_if(
        &self,
        name: &str,
        body: &[u8],
        cond: Precondition<'_>,
    ) -> Result<String, StorageError> {
        let key = self.inner.named_key(name);
        match self.inner.put_if(&key, body, cond)? {
            Some(tag) => Ok(tag),
            // A store that sends no ETag: read it back.
            None => Ok(self.get_named(name)?.map(|t| t.tag).unwrap_or_default()),
        }
    }

    fn delete_named_if(&self, name: &str, tag: &str) -> Result<(), StorageError> {
        let key = self.inner.named_key(name);
        self.inner.delete(&key, Some(tag))
    }
}

/// The `litestream-timestamp` value for a millisecond Unix time: Go's `time.RFC3339Nano`
/// of `time.UnixMilli(ms).UTC()`, which drops trailing zeros of the fraction (and the `.`
/// when the fraction is zero).
pub fn litestream_timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let frac = ms.rem_euclid(1000);
    let (y, mo, d, h, mi, s) = sigv4::utc_fields(secs);
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    if frac != 0 {
        out.push('.');
        out.push_str(format!("{frac:03}").trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GcsConfig, S3Config};

    pub(super) fn cfg(endpoint: Option<&str>, path: &str) -> S3Config {
        S3Config {
            bucket: "bkt".into(),
            path: path.into(),
            endpoint: endpoint.map(str::to_string),
            region: None,
            access_key_id: Some(Secret::new("AKIAIOSFODNN7EXAMPLE")),
            secret_access_key: Some(Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")),
            credential_source: CredentialSource::Config,
            force_path_style: endpoint.is_some(),
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
        }
    }

    #[test]
    fn key_layout_matches_litestream() {
        let s = S3Storage::from_config(&cfg(Some("http://127.0.0.1:9000"), "app/db")).unwrap();
        assert_eq!(
            s.object_key(0, 1, 2),
            "app/db/0000/0000000000000001-0000000000000002.ltx"
        );
        assert_eq!(s.level_prefix(9), "app/db/0009/");
        assert_eq!(s.level_prefix(10), "app/db/000a/");
        // Litestream concatenates: an empty path gives a leading slash.
        let s = S3Storage::from_config(&cfg(Some("http://127.0.0.1:9000"), "")).unwrap();
        assert_eq!(s.level_prefix(0), "/0000/");
        let g = S3Storage::from_config_with_layout(&cfg(None, "app"), Layout::Gcs).unwrap();
        assert_eq!(
            g.object_key(9, 1, 1),
            "app/ltx/9/0000000000000001-0000000000000001.ltx"
        );
        let g = S3Storage::from_config_with_layout(&cfg(None, ""), Layout::Gcs).unwrap();
        assert_eq!(g.level_prefix(0), "ltx/0/");
    }

    #[test]
    fn timestamps_like_go_rfc3339nano() {
        assert_eq!(
            litestream_timestamp(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            litestream_timestamp(1_700_000_000_120),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(
            litestream_timestamp(1_700_000_000_100),
            "2023-11-14T22:13:20.1Z"
        );
        assert_eq!(
            litestream_timestamp(1_700_000_000_000),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            litestream_timestamp(1_700_000_000_005),
            "2023-11-14T22:13:20.005Z"
        );
        assert_eq!(litestream_timestamp(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn describes_without_secrets() {
        let s = S3Storage::from_config(&cfg(Some("http://127.0.0.1:9000"), "app/db")).unwrap();
        assert_eq!(
            s.describe(),
            "s3://bkt/app/db (endpoint http://127.0.0.1:9000)"
        );
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("wJalrXUtnFEMI"), "{dbg}");
        assert!(!dbg.contains("AKIAIOSFODNN7EXAMPLE"), "{dbg}");
        let s = S3Storage::from_config(&cfg(None, "")).unwrap();
        assert_eq!(s.describe(), "s3://bkt (region us-east-1)");
        let g = S3Storage::from_gcs_config(&GcsConfig {
            bucket: "b".into(),
            path: "p".into(),
            access_key_id: None,
            secret_access_key: None,
            application_credentials: None,
            emulator_host: None,
            skip_verify: false,
        })
        .unwrap();
        assert_eq!(
            g.describe(),
            "gs://b/p (endpoint https://storage.googleapis.com)"
        );
        assert_eq!(
            g.object_key(0, 1, 1),
            "p/ltx/0/0000000000000001-0000000000000001.ltx"
        );
    }
}
