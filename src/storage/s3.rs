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
//! * `put`: reads at most `part-size` bytes (default 8 MiB, at least 5 MiB); a body that ends
//!   before that is one PutObject, a longer one a multipart upload holding one part in memory
//!   at a time (aborted on failure). Parts grow after every 2,500 so an unknown length never
//!   runs into S3's 10,000-part limit before ~300 GiB.
//! * Transient failures (connection refused/reset, timeouts, HTTP 408/429/500/502/503/504,
//!   `SlowDown`, `RequestTimeout`, `InternalError`, `RequestCanceled`) are retried a few times
//!   with capped exponential backoff and jitter; others fail at once with a typed
//!   [`StorageError`] naming the replica and what to fix. Connect timeout 10 s, read/write
//!   timeout 60 s per socket operation.
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
//! Must never put a credential (access key id, secret key, SSE-C key) in an error, a log line
//! or a `Debug` output: they stay in [`Secret`]s, server messages are scrubbed of them.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use super::sigv4::{self, AmzTime};
use super::{FileInfo, RemoteFailure, Storage, StorageError};
use crate::config::{CredentialSource, GcsConfig, S3Config, Secret};
use crate::ltx;

/// Bytes read before deciding between one PutObject and a multipart upload; also the size of
/// each part. Litestream's default is 5 MiB; 8 MiB means fewer requests for large snapshots
/// at a still small, fixed memory bound.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// S3's minimum size for every part but the last.
pub const MIN_PART_SIZE: usize = 5 << 20;
/// S3's limit on parts per upload.
const MAX_PARTS: u32 = 10_000;
/// The object metadata key Litestream stores the LTX timestamp under.
pub const METADATA_TIMESTAMP: &str = "litestream-timestamp";
/// GCS's S3-interoperable (XML API) endpoint.
pub const GCS_ENDPOINT: &str = "https://storage.googleapis.com";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest error or listing body read into memory.
const MAX_XML_BODY: u64 = 32 << 20;
/// Times a broken download is resumed (per `open`).
const MAX_RESUMES: u32 = 5;

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

impl RetryPolicy {
    fn delay(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_delay);
        let half = exp / 2;
        half + half.mul_f64(jitter())
    }
}

/// A number in [0, 1) from a shared xorshift state (no need for a cryptographic RNG).
fn jitter() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// An endpoint: scheme, host, optional port and optional base path.
#[derive(Clone, PartialEq, Eq)]
struct Endpoint {
    https: bool,
    /// Host name, IPv4 address, or `[IPv6]`.
    host: String,
    port: Option<u16>,
    /// `""` or `/base` (no trailing slash).
    base: String,
}

impl Endpoint {
    fn parse(s: &str) -> Result<Endpoint, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "endpoint {s:?} must start with http:// or https://"
            ));
        };
        let (authority, base) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err("the endpoint must not contain user:password@; set the keys in `access-key-id`/`secret-access-key`".into());
        }
        let base = base
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let end = r
                .find(']')
                .ok_or_else(|| format!("endpoint {s:?}: unclosed [ in the host"))?;
            let host = format!("[{}]", &r[..end]);
            match r[end + 1..].strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => (host, None),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("endpoint {s:?} has no host"));
        }
        let port = match port {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("endpoint {s:?}: bad port {p:?}"))?,
            ),
            None => None,
        };
        let default = if https { 443 } else { 80 };
        Ok(Endpoint {
            https,
            host: host.to_ascii_lowercase(),
            port: port.filter(|p| *p != default),
            base: base.to_string(),
        })
    }

    fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// `host[:port]` for `host`, the port only when it is not the scheme's default.
    fn authority(&self, host: &str) -> String {
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }
    }

    fn display(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme(),
            self.authority(&self.host),
            self.base
        )
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
    /// The backend for an `s3` replica (AWS or any S3-compatible endpoint). Contacts nothing.
    pub fn from_config(c: &S3Config) -> Result<S3Storage, StorageError> {
        Self::build(c, Layout::S3, "s3", "x-amz-meta-", None)
    }

    /// The backend for a `gs` replica, through GCS's S3-interoperable XML API at
    /// `https://storage.googleapis.com` with HMAC keys (Cloud console → Cloud Storage →
    /// Settings → Interoperability) given as `access-key-id` / `secret-access-key` on the
    /// replica. Objects use Litestream's gs layout (`<path>/ltx/<level>/...`) and its
    /// `litestream-timestamp` metadata (as `x-goog-meta-`), so Litestream's native gs client
    /// and this one read each other's replicas. Region `auto`, path-style addressing.
    /// (Untested against the real service: no network in the test environment.)
    pub fn from_gcs_config(c: &GcsConfig) -> Result<S3Storage, StorageError> {
        let s3 = S3Config {
            bucket: c.bucket.clone(),
            path: c.path.clone(),
            endpoint: Some(GCS_ENDPOINT.into()),
            region: Some("auto".into()),
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.clone(),
            credential_source: if c.access_key_id.is_some() {
                CredentialSource::Config
            } else {
                CredentialSource::None
            },
            force_path_style: true,
            skip_verify: false,
            sign_payload: true,
            require_content_md5: false,
            storage_class: None,
            part_size: None,
            concurrency: None,
            sse_customer_algorithm: None,
            sse_customer_key: None,
            sse_customer_key_path: None,
            sse_kms_key_id: None,
        };
        Self::build(&s3, Layout::Gcs, "gs", "x-goog-meta-", None)
    }

    /// [`S3Storage::from_config`] with another key layout: lets tests exercise the GCS layout
    /// on a local S3-compatible server.
    #[doc(hidden)]
    pub fn from_config_with_layout(
        c: &S3Config,
        layout: Layout,
    ) -> Result<S3Storage, StorageError> {
        let (scheme, meta) = match layout {
            Layout::S3 => ("s3", "x-amz-meta-"),
            Layout::Gcs => ("gs", "x-goog-meta-"),
        };
        Self::build(c, layout, scheme, meta, None)
    }

    fn build(
        c: &S3Config,
        layout: Layout,
        scheme: &'static str,
        meta_prefix: &'static str,
        retry: Option<RetryPolicy>,
    ) -> Result<S3Storage, StorageError> {
        let shown = describe_parts(
            scheme,
            &c.bucket,
            &c.path,
            c.endpoint.as_deref(),
            c.region.as_deref(),
        );
        let bad = |message: String| StorageError::Config {
            replica: shown.clone(),
            message,
        };
        if c.bucket.is_empty() {
            return Err(bad("no bucket configured".into()));
        }
        let endpoint = match &c.endpoint {
            Some(e) => Some(Endpoint::parse(e).map_err(bad)?),
            None => None,
        };
        let (region, follows) = match &c.region {
            Some(r) if !r.is_empty() => (r.clone(), false),
            // Litestream: custom endpoints default to us-east-1; AWS looks the region up.
            _ => (
                crate::config::defaults::S3_DEFAULT_REGION.to_string(),
                endpoint.is_none(),
            ),
        };
        let creds = match (&c.access_key_id, &c.secret_access_key) {
            (Some(k), Some(s)) if !k.expose().is_empty() && !s.expose().is_empty() => Some(Creds {
                key_id: k.clone(),
                secret: s.clone(),
            }),
            _ => None,
        };
        let mut part_size = c.part_size.map(|p| p as usize).unwrap_or(DEFAULT_PART_SIZE);
        if part_size < MIN_PART_SIZE {
            log::warn!(
                "{shown}: part-size {part_size} is below S3's minimum; using {MIN_PART_SIZE}"
            );
            part_size = MIN_PART_SIZE;
        }
        part_size = part_size.min(1 << 30);

        // SSE: mutually exclusive, like Litestream.
        let mut sse_c = Vec::new();
        let mut sse_write = Vec::new();
        let sse_key = match (&c.sse_customer_key, &c.sse_customer_key_path) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(p)) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    bad(format!(
                        "cannot read sse-customer-key-path {}: {e}",
                        p.display()
                    ))
                })?;
                Some(Secret::new(text.trim()))
            }
            (None, None) => None,
        };
        if let Some(key) = sse_key {
            if c.sse_kms_key_id.is_some() {
                return Err(bad(
                    "sse-customer-key and sse-kms-key-id cannot both be set; pick one".into(),
                ));
            }
            let alg = c
                .sse_customer_algorithm
                .clone()
                .unwrap_or_else(|| "AES256".into());
            if alg != "AES256" {
                return Err(bad(format!(
                    "sse-customer-algorithm must be AES256, not {alg:?}"
                )));
            }
            let raw = base64_decode(key.expose()).ok_or_else(|| {
                bad("sse-customer-key is not valid base64 (it must be 32 random bytes, base64-encoded)".into())
            })?;
            if raw.len() != 32 {
                return Err(bad(format!(
                    "sse-customer-key must decode to 32 bytes (256 bits), not {}",
                    raw.len()
                )));
            }
            use md5::Digest;
            let md5 = base64_encode(&md5::Md5::digest(&raw));
            sse_c.push((
                "x-amz-server-side-encryption-customer-algorithm".to_string(),
                Secret::new(alg),
            ));
            sse_c.push(("x-amz-server-side-encryption-customer-key".to_string(), key));
            sse_c.push((
                "x-amz-server-side-encryption-customer-key-md5".to_string(),
                Secret::new(md5),
            ));
        }
        if let Some(id) = &c.sse_kms_key_id {
            sse_write.push((
                "x-amz-server-side-encryption".to_string(),
                "aws:kms".to_string(),
            ));
            sse_write.push((
                "x-amz-server-side-encryption-aws-kms-key-id".to_string(),
                id.clone(),
            ));
        }

        let tls = tls_config(c.skip_verify).map_err(bad)?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(IO_TIMEOUT)
            .timeout_write(IO_TIMEOUT)
            .redirects(0)
            .user_agent(concat!("walship/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build();
        // Virtual-hosted names with dots do not match a wildcard TLS certificate: AWS SDKs
        // fall back to path-style for those, and so do we.
        let https = endpoint.as_ref().map_or(true, |e| e.https);
        let path_style = c.force_path_style || (https && c.bucket.contains('.'));
        Ok(S3Storage {
            inner: Arc::new(Inner {
                agent,
                endpoint,
                bucket: c.bucket.clone(),
                path: c.path.trim_matches('/').to_string(),
                layout,
                region: RwLock::new(region),
                region_follows_bucket: follows,
                path_style,
                creds,
                cred_source: c.credential_source,
                sign_payload: c.sign_payload,
                part_size,
                storage_class: c.storage_class.clone().filter(|s| !s.is_empty()),
                sse_c,
                sse_write,
                retry: retry.unwrap_or_default(),
                list_page_size: None,
                scheme,
                meta_prefix,
            }),
        })
    }

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

/// One request. `key: None` addresses the bucket.
struct Req<'a> {
    method: &'static str,
    key: Option<&'a str>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    /// Send the SSE-C headers.
    sse_c: bool,
    /// `None`: no body (GET, HEAD, DELETE).
    body: Option<&'a [u8]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransportKind {
    Dns,
    Connect,
    Timeout,
    Tls,
    /// The connection broke mid-request or the response was malformed.
    Io,
    Other,
}

/// Why a request failed, before it becomes a [`StorageError`].
#[derive(Debug)]
enum Failure {
    Status {
        status: u16,
        code: String,
        message: String,
        /// The bucket's region, when S3 says it (`x-amz-bucket-region`, `<Region>`).
        region: Option<String>,
        attempts: u32,
    },
    Transport {
        kind: TransportKind,
        detail: String,
        attempts: u32,
    },
}

impl Failure {
    fn transient(&self) -> bool {
        match self {
            Failure::Status { status, code, .. } => {
                matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
                    || matches!(
                        code.as_str(),
                        "SlowDown"
                            | "RequestTimeout"
                            | "InternalError"
                            | "ServiceUnavailable"
                            | "RequestCanceled"
                            | "Throttling"
                            | "ThrottlingException"
                    )
            }
            Failure::Transport { kind, .. } => matches!(
                kind,
                TransportKind::Connect | TransportKind::Timeout | TransportKind::Io
            ),
        }
    }

    fn set_attempts(&mut self, n: u32) {
        match self {
            Failure::Status { attempts, .. } | Failure::Transport { attempts, .. } => *attempts = n,
        }
    }

    fn code(&self) -> &str {
        match self {
            Failure::Status { code, .. } => code,
            Failure::Transport { .. } => "",
        }
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

    /// `s3://bucket/key`, for messages.
    fn object(&self, key: &str) -> String {
        format!("{}://{}/{}", self.scheme, self.bucket, key)
    }

    fn endpoint(&self) -> Endpoint {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => {
                let region = self.region();
                let domain = if region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                Endpoint {
                    https: true,
                    host: format!("s3.{region}.{domain}"),
                    port: None,
                    base: String::new(),
                }
            }
        }
    }

    /// Replaces every credential in `s` (from a server message) with `***`.
    fn scrub(&self, s: &str) -> String {
        let mut out = s.to_string();
        let mut secrets: Vec<&str> = Vec::new();
        if let Some(c) = &self.creds {
            secrets.push(c.secret.expose());
            secrets.push(c.key_id.expose());
        }
        for (_, v) in &self.sse_c {
            secrets.push(v.expose());
        }
        for v in secrets {
            if v.len() >= 4 {
                out = out.replace(v, "***");
            }
        }
        out
    }

    /// Sends `req`, retrying transient failures. Returns a 2xx response.
    fn send(&self, req: &Req<'_>) -> Result<ureq::Response, Failure> {
        let mut attempt = 0;
        let mut region_moves = 0;
        loop {
            attempt += 1;
            let mut f = match self.send_once(req) {
                Ok(r) => return Ok(r),
                Err(f) => f,
            };
            if let Failure::Status {
                region: Some(r), ..
            } = &f
            {
                if self.region_follows_bucket && region_moves < 2 && *r != self.region() {
                    log::warn!(
                        "{}: bucket is in region {r}; using it (set `region: {r}` to skip this)",
                        self.describe()
                    );
                    if let Ok(mut g) = self.region.write() {
                        *g = r.clone();
                    }
                    region_moves += 1;
                    attempt -= 1;
                    continue;
                }
            }
            if !f.transient() || attempt >= self.retry.max_attempts {
                f.set_attempts(attempt);
                return Err(f);
            }
            let wait = self.retry.delay(attempt);
            log::debug!(
                "{}: {} {} failed ({f:?}); retry {attempt} in {wait:?}",
                self.describe(),
                req.method,
                req.key.unwrap_or("")
            );
            std::thread::sleep(wait);
        }
    }

    fn send_once(&self, req: &Req<'_>) -> Result<ureq::Response, Failure> {
        let ep = self.endpoint();
        let region = self.region();
        let host = if self.path_style {
            ep.host.clone()
        } else {
            format!("{}.{}", self.bucket, ep.host)
        };
        let authority = ep.authority(&host);
        let mut path = sigv4::uri_encode(&ep.base, true);
        if self.path_style {
            path.push('/');
            path.push_str(&sigv4::uri_encode(&self.bucket, false));
        }
        path.push('/');
        if let Some(k) = req.key {
            path.push_str(&sigv4::uri_encode(k, true));
        }
        let query = sigv4::canonical_query(&req.query);
        let url = if query.is_empty() {
            format!("{}://{authority}{path}", ep.scheme())
        } else {
            format!("{}://{authority}{path}?{query}", ep.scheme())
        };
        let payload_hash = match req.body {
            None => sigv4::EMPTY_SHA256.to_string(),
            Some(b) if self.sign_payload => sigv4::sha256_hex(b),
            Some(_) => sigv4::UNSIGNED_PAYLOAD.to_string(),
        };
        let time = AmzTime::now();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), authority.clone()),
            ("x-amz-date".into(), time.datetime.clone()),
            ("x-amz-content-sha256".into(), payload_hash.clone()),
        ];
        headers.extend(req.headers.iter().cloned());
        if req.sse_c {
            headers.extend(
                self.sse_c
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_string())),
            );
        }
        let mut r = self.agent.request(req.method, &url);
        for (k, v) in &headers {
            r = r.set(k, v);
        }
        if let Some(c) = &self.creds {
            let auth = sigv4::authorization(
                c.key_id.expose(),
                c.secret.expose(),
                &region,
                "s3",
                &time,
                &sigv4::Request {
                    method: req.method,
                    canonical_uri: &path,
                    query: &req.query,
                    headers: &headers,
                    payload_hash: &payload_hash,
                },
            );
            r = r.set("authorization", &auth);
        }
        let res = match req.body {
            Some(b) => r.send_bytes(b),
            None => r.call(),
        };
        match res {
            Ok(resp) if (200..300).contains(&resp.status()) => Ok(resp),
            Ok(resp) => Err(self.status_failure(resp)),
            Err(ureq::Error::Status(_, resp)) => Err(self.status_failure(resp)),
            Err(ureq::Error::Transport(t)) => Err(transport_failure(&t)),
        }
    }

    fn status_failure(&self, resp: ureq::Response) -> Failure {
        let status = resp.status();
        let header_region = resp
            .header("x-amz-bucket-region")
            .map(str::to_string)
            .filter(|r| !r.is_empty());
        let mut body = String::new();
        let _ = resp.into_reader().take(64 << 10).read_to_string(&mut body);
        let code = xml_text(&body, "Code").unwrap_or_else(|| match status {
            404 => "NotFound".into(),
            403 => "AccessDenied".into(),
            301 => "PermanentRedirect".into(),
            _ => String::new(),
        });
        let message = xml_text(&body, "Message").unwrap_or_default();
        let region = header_region.or_else(|| xml_text(&body, "Region"));
        // Only a wrong-region answer carries a region worth following.
        let region = region.filter(|_| {
            matches!(status, 301 | 307 | 400)
                && matches!(
                    code.as_str(),
                    "PermanentRedirect"
                        | "AuthorizationHeaderMalformed"
                        | "IllegalLocationConstraintException"
                        | "TemporaryRedirect"
                )
        });
        Failure::Status {
            status,
            code: self.scrub(&code),
            message: self.scrub(&message),
            region,
            attempts: 1,
        }
    }

    /// Turns a final failure into the error users see.
    fn error(&self, op: &'static str, object: &str, f: Failure) -> StorageError {
        let replica = self.describe();
        let object = object.to_string();
        let ep = self.endpoint();
        let tries = |n: u32| {
            if n > 1 {
                format!(" (after {n} attempts)")
            } else {
                String::new()
            }
        };
        let rf = |status: u16, code: String, detail: String, hint: String| {
            Box::new(RemoteFailure {
                op,
                object: object.clone(),
                replica: replica.clone(),
                status,
                code,
                detail,
                hint,
            })
        };
        match f {
            Failure::Status {
                status,
                code,
                message,
                region,
                attempts,
            } => {
                let detail = if message.is_empty() {
                    format!("HTTP {status} {code}{}", tries(attempts))
                } else {
                    format!("HTTP {status} {code}: {message}{}", tries(attempts))
                };
                match code.as_str() {
                    "NoSuchKey" => return StorageError::NotFound { op, object },
                    "NotFound" if matches!(op, "get" | "head") => {
                        return StorageError::NotFound { op, object }
                    }
                    "NoSuchBucket" => {
                        let hint = format!(
                            "create the bucket, or fix `bucket:`; check that `endpoint:`{} name the store that holds it",
                            if self.endpoint.is_none() { " and `region:`" } else { " does" }
                        );
                        let detail = format!("bucket '{}' does not exist ({detail})", self.bucket);
                        return StorageError::NoSuchBucket(rf(status, code, detail, hint));
                    }
                    _ => {}
                }
                if let Some(hint) = self.credential_hint(status, &code) {
                    return StorageError::Credentials(rf(status, code, detail, hint));
                }
                let hint = match (&region, code.as_str()) {
                    (Some(r), _) => format!("the bucket is in region {r}: set `region: {r}`"),
                    (None, "PermanentRedirect") => {
                        "the bucket is in another region: set `region:` to the bucket's region"
                            .into()
                    }
                    _ if status == 0 || status >= 500 || status == 429 || status == 408 => {
                        "the store is failing or throttling; walship retries later".into()
                    }
                    _ => "check the replica settings against the store's documentation".into(),
                };
                StorageError::Remote(rf(status, code, detail, hint))
            }
            Failure::Transport {
                kind,
                detail,
                attempts,
            } => {
                let detail = format!("{detail}{}", tries(attempts));
                let where_ = ep.display();
                match kind {
                    TransportKind::Dns => StorageError::Unreachable(rf(0, String::new(), detail, format!(
                        "the host name in {where_} does not resolve: check `endpoint:` (or the bucket and region) and this machine's DNS"
                    ))),
                    TransportKind::Connect | TransportKind::Timeout => StorageError::Unreachable(rf(0, String::new(), detail, format!(
                        "nothing answered at {where_}: check `endpoint:` (scheme, host and port), that the server is running, and that no firewall is in the way"
                    ))),
                    TransportKind::Tls => StorageError::Tls(rf(0, String::new(), detail, format!(
                        "check that {where_} speaks HTTPS (write http:// in `endpoint:` for a plain-HTTP server such as a local MinIO) and that its certificate is valid for the host and trusted here (system CA store or SSL_CERT_FILE); `skip-verify: true` accepts any certificate, for testing only"
                    ))),
                    TransportKind::Io | TransportKind::Other => StorageError::Remote(rf(
                        0,
                        String::new(),
                        format!("a broken connection: {detail}"),
                        "the network or the store dropped the connection; walship retries later".into(),
                    )),
                }
            }
        }
    }

    fn credential_hint(&self, status: u16, code: &str) -> Option<String> {
        let from = match self.cred_source {
            CredentialSource::Config => " (the keys came from the config file)",
            CredentialSource::AwsEnv => {
                " (the keys came from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
            }
            CredentialSource::LitestreamEnv => {
                " (the keys came from LITESTREAM_ACCESS_KEY_ID / LITESTREAM_SECRET_ACCESS_KEY)"
            }
            CredentialSource::None => "",
        };
        let none = "no credentials are configured: set `access-key-id` and `secret-access-key` on the replica (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)";
        let hint = match code {
            // NotSignedUp: s3s's answer for an unknown key id.
            "InvalidAccessKeyId" | "NotSignedUp" => format!(
                "the access key id is unknown to the store: check `access-key-id` (or AWS_ACCESS_KEY_ID / LITESTREAM_ACCESS_KEY_ID){from}"
            ),
            "SignatureDoesNotMatch" => format!(
                "the secret access key does not belong to the access key id: check `secret-access-key` (or AWS_SECRET_ACCESS_KEY / LITESTREAM_SECRET_ACCESS_KEY){from}"
            ),
            "RequestTimeTooSkewed" => {
                "this machine's clock is too far from the store's: synchronise it (NTP)".into()
            }
            "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired" => format!(
                "the credentials are temporary or expired; walship uses static access keys: set a long-lived key pair{from}"
            ),
            "AuthorizationHeaderMalformed" | "InvalidSecurity" | "MissingSecurityHeader" => {
                if self.creds.is_none() {
                    none.into()
                } else {
                    format!(
                        "the store rejected the signature's scope: check `region:` (now {}) and the key pair{from}",
                        self.region()
                    )
                }
            }
            "AccessDenied" | "AllAccessDisabled" | "AccountProblem" | "Forbidden" => {
                if self.creds.is_none() {
                    none.into()
                } else {
                    format!(
                        "the key pair is not allowed to do this: grant it s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on bucket '{}' under '{}', or check the key pair{from}",
                        self.bucket, self.path
                    )
                }
            }
            _ if status == 401 || status == 403 => {
                if self.creds.is_none() {
                    none.into()
                } else {
                    format!("check the access key id, the secret access key and their permissions{from}")
                }
            }
            _ => return None,
        };
        Some(hint)
    }

    // ---- operations -------------------------------------------------------------------

    fn list(&self, level: u8) -> Result<Vec<FileInfo>, StorageError> {
        let prefix = self.layout.level_prefix(&self.path, level);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type".to_string(), "2".to_string()),
                ("prefix".to_string(), prefix.clone()),
            ];
            if let Some(n) = self.list_page_size {
                query.push(("max-keys".into(), n.to_string()));
            }
            if let Some(t) = &token {
                query.push(("continuation-token".into(), t.clone()));
            }
            let req = Req {
                method: "GET",
                key: None,
                query,
                headers: vec![],
                sse_c: false,
                body: None,
            };
            let object = self.object(&prefix);
            let resp = self
                .send(&req)
                .map_err(|f| self.error("list", &object, f))?;
            let mut body = String::new();
            resp.into_reader()
                .take(MAX_XML_BODY)
                .read_to_string(&mut body)
                .map_err(|e| self.read_error("list", &object, e))?;
            for c in xml_blocks(&body, "Contents") {
                let Some(key) = xml_text(c, "Key") else {
                    continue;
                };
                let Some(name) = key.strip_prefix(&prefix) else {
                    continue;
                };
                let Some((min_txid, max_txid)) = ltx::parse_file_name(name) else {
                    continue;
                };
                let size = xml_text(c, "Size")
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                out.push(FileInfo {
                    level,
                    min_txid,
                    max_txid,
                    size,
                });
            }
            let truncated = xml_text(&body, "IsTruncated").is_some_and(|t| t.trim() == "true");
            match xml_text(&body, "NextContinuationToken") {
                Some(t) if truncated && !t.is_empty() => token = Some(t),
                _ if truncated => {
                    return Err(StorageError::Remote(Box::new(RemoteFailure {
                        op: "list",
                        object,
                        replica: self.describe(),
                        status: 200,
                        code: String::new(),
                        detail: "a truncated listing without a continuation token".into(),
                        hint: "the store does not implement ListObjectsV2 fully".into(),
                    })))
                }
                _ => break,
            }
        }
        out.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(out)
    }

    fn read_error(&self, op: &'static str, object: &str, e: io::Error) -> StorageError {
        StorageError::Remote(Box::new(RemoteFailure {
            op,
            object: object.to_string(),
            replica: self.describe(),
            status: 0,
            code: String::new(),
            detail: format!("the response broke off: {e}"),
            hint: "the network or the store dropped the connection; walship retries later".into(),
        }))
    }

    fn put_headers(&self, timestamp_ms: i64) -> Vec<(String, String)> {
        let mut h = vec![
            (
                format!("{}{METADATA_TIMESTAMP}", self.meta_prefix),
                litestream_timestamp(timestamp_ms),
            ),
            (
                "content-type".to_string(),
                "application/octet-stream".to_string(),
            ),
        ];
        if let Some(sc) = &self.storage_class {
            let name = if self.layout == Layout::Gcs {
                "x-goog-storage-class"
            } else {
                "x-amz-storage-class"
            };
            h.push((name.into(), sc.clone()));
        }
        h.extend(self.sse_write.iter().cloned());
        h
    }

    fn put(&self, key: &str, timestamp_ms: i64, src: &mut dyn Read) -> Result<u64, StorageError> {
        let object = self.object(key);
        let mut buf = Vec::new();
        read_up_to(src, &mut buf, self.part_size).map_err(|e| StorageError::Io {
            op: "put",
            object: object.clone(),
            source: e,
            hint: Some("reading the file to upload failed"),
        })?;
        if buf.len() < self.part_size {
            let req = Req {
                method: "PUT",
                key: Some(key),
                query: vec![],
                headers: self.put_headers(timestamp_ms),
                sse_c: true,
                body: Some(&buf),
            };
            let resp = self.send(&req).map_err(|f| self.error("put", &object, f))?;
            drain(resp);
            return Ok(buf.len() as u64);
        }
        self.put_multipart(key, &object, timestamp_ms, buf, src)
    }

    fn put_multipart(
        &self,
        key: &str,
        object: &str,
        timestamp_ms: i64,
        mut buf: Vec<u8>,
        src: &mut dyn Read,
    ) -> Result<u64, StorageError> {
        let create = Req {
            method: "POST",
            key: Some(key),
            query: vec![("uploads".into(), String::new())],
            headers: self.put_headers(timestamp_ms),
            sse_c: true,
            body: Some(&[]),
        };
        let resp = self
            .send(&create)
            .map_err(|f| self.error("put (start multipart upload)", object, f))?;
        let mut body = String::new();
        resp.into_reader()
            .take(MAX_XML_BODY)
            .read_to_string(&mut body)
            .map_err(|e| self.read_error("put", object, e))?;
        let upload_id = xml_text(&body, "UploadId").ok_or_else(|| {
            StorageError::Remote(Box::new(RemoteFailure {
                op: "put",
                object: object.to_string(),
                replica: self.describe(),
                status: 200,
                code: String::new(),
                detail: "CreateMultipartUpload returned no UploadId".into(),
                hint: "the store does not implement multipart uploads; raise `part-size` above your largest file".into(),
            }))
        })?;
        let mut upload = || -> Result<u64, StorageError> {
            let mut parts: Vec<(u32, String)> = Vec::new();
            let mut total = 0u64;
            let mut n: u32 = 1;
            loop {
                let req = Req {
                    method: "PUT",
                    key: Some(key),
                    query: vec![
                        ("partNumber".into(), n.to_string()),
                        ("uploadId".into(), upload_id.clone()),
                    ],
                    headers: vec![],
                    sse_c: true,
                    body: Some(&buf),
                };
                let resp = self
                    .send(&req)
                    .map_err(|f| self.error("put (upload part)", object, f))?;
                let etag = resp.header("etag").unwrap_or("").to_string();
                drain(resp);
                parts.push((n, etag));
                total += buf.len() as u64;
                buf.clear();
                // Grow parts every 2,500 so 10,000 parts reach ~300 GiB at 8 MiB.
                let want = self
                    .part_size
                    .saturating_mul(1usize << (n / 2500).min(6))
                    .min(1 << 30);
                read_up_to(src, &mut buf, want).map_err(|e| StorageError::Io {
                    op: "put",
                    object: object.to_string(),
                    source: e,
                    hint: Some("reading the file to upload failed"),
                })?;
                if buf.is_empty() {
                    break;
                }
                n += 1;
                if n > MAX_PARTS {
                    return Err(StorageError::Config {
                        replica: self.describe(),
                        message: format!(
                            "{object} needs more than {MAX_PARTS} parts; raise `part-size`"
                        ),
                    });
                }
            }
            self.complete_multipart(key, object, &upload_id, &parts, total)?;
            Ok(total)
        };
        let res = upload();
        if res.is_err() {
            let abort = Req {
                method: "DELETE",
                key: Some(key),
                query: vec![("uploadId".into(), upload_id.clone())],
                headers: vec![],
                sse_c: false,
                body: None,
            };
            match self.send(&abort) {
                Ok(r) => drain(r),
                Err(f) if f.code() == "NoSuchUpload" => {}
                Err(f) => log::warn!(
                    "{}: could not abort the failed multipart upload of {object}: {}",
                    self.describe(),
                    self.error("abort", object, f)
                ),
            }
        }
        res
    }

    fn complete_multipart(
        &self,
        key: &str,
        object: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        total: u64,
    ) -> Result<(), StorageError> {
        let mut xml = String::from(
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
        );
        for (n, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                xml_escape(etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let req = Req {
            method: "POST",
            key: Some(key),
            query: vec![("uploadId".into(), upload_id.to_string())],
            headers: vec![("content-type".into(), "application/xml".into())],
            sse_c: false,
            body: Some(xml.as_bytes()),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A 200 answer may still carry an <Error> (S3 reports late failures that way).
            let f = match self.send(&req) {
                Ok(resp) => {
                    let mut body = String::new();
                    match resp
                        .into_reader()
                        .take(MAX_XML_BODY)
                        .read_to_string(&mut body)
                    {
                        Ok(_) if !body.contains("<Error>") => return Ok(()),
                        Ok(_) => Failure::Status {
                            status: 200,
                            code: xml_text(&body, "Code").unwrap_or_default(),
                            message: self.scrub(&xml_text(&body, "Message").unwrap_or_default()),
                            region: None,
                            attempts: attempt,
                        },
                        Err(e) => Failure::Transport {
                            kind: TransportKind::Io,
                            detail: e.to_string(),
                            attempts: attempt,
                        },
                    }
                }
                Err(f) => f,
            };
            // A retry of a completion that did succeed finds the upload gone.
            if attempt > 1 && f.code() == "NoSuchUpload" && self.head_size(key) == Some(total) {
                return Ok(());
            }
            let retry_200 = matches!(&f, Failure::Status { status: 200, .. }) && f.transient();
            let retry_io = matches!(
                &f,
                Failure::Transport {
                    kind: TransportKind::Io,
                    ..
                }
            );
            if (retry_200 || retry_io) && attempt < self.retry.max_attempts {
                std::thread::sleep(self.retry.delay(attempt));
                continue;
            }
            return Err(self.error("put (complete multipart upload)", object, f));
        }
    }

    /// The size of an object, if it exists.
    fn head_size(&self, key: &str) -> Option<u64> {
        let req = Req {
            method: "HEAD",
            key: Some(key),
            query: vec![],
            headers: vec![],
            sse_c: true,
            body: None,
        };
        let resp = self.send(&req).ok()?;
        resp.header("content-length")?.parse().ok()
    }

    /// GET of `key` from `offset` (a ranged GET pinned to `etag` when resuming).
    fn get(&self, key: &str, offset: u64, etag: Option<&str>) -> Result<ureq::Response, Failure> {
        let mut headers = Vec::new();
        if offset > 0 {
            headers.push(("range".to_string(), format!("bytes={offset}-")));
        }
        if let Some(e) = etag {
            headers.push(("if-match".to_string(), e.to_string()));
        }
        self.send(&Req {
            method: "GET",
            key: Some(key),
            query: vec![],
            headers,
            sse_c: true,
            body: None,
        })
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let req = Req {
            method: "DELETE",
            key: Some(key),
            query: vec![],
            headers: vec![],
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
            Err(f) => Err(self.error("delete", &self.object(key), f)),
        }
    }
}

/// Reads a 2xx response to its end so the connection goes back to the pool.
fn drain(resp: ureq::Response) {
    let _ = io::copy(&mut resp.into_reader().take(1 << 20), &mut io::sink());
}

/// Appends up to `limit` bytes of `src` to `buf` (fewer only at end of input).
fn read_up_to(src: &mut dyn Read, buf: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    let start = buf.len();
    buf.reserve(limit.min(1 << 20));
    let mut chunk = vec![0u8; 256 << 10];
    while buf.len() - start < limit {
        let want = (limit - (buf.len() - start)).min(chunk.len());
        match src.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn transport_failure(t: &ureq::Transport) -> Failure {
    use std::error::Error as _;
    let mut detail = t.message().unwrap_or("").to_string();
    let mut tls = false;
    let mut timed_out = false;
    let mut src = t.source();
    while let Some(e) = src {
        if e.downcast_ref::<rustls::Error>().is_some() {
            tls = true;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) {
                timed_out = true;
            }
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                tls = true;
            }
        }
        let s = e.to_string();
        if !s.is_empty() && !detail.contains(&s) {
            if detail.is_empty() {
                detail = s;
            } else {
                detail = format!("{detail}: {s}");
            }
        }
        src = e.source();
    }
    if detail.is_empty() {
        detail = t.kind().to_string();
    }
    let kind = match t.kind() {
        ureq::ErrorKind::Dns => TransportKind::Dns,
        ureq::ErrorKind::ConnectionFailed if tls => TransportKind::Tls,
        ureq::ErrorKind::ConnectionFailed if timed_out => TransportKind::Timeout,
        ureq::ErrorKind::ConnectionFailed => TransportKind::Connect,
        ureq::ErrorKind::Io if tls => TransportKind::Tls,
        ureq::ErrorKind::Io if timed_out => TransportKind::Timeout,
        ureq::ErrorKind::Io | ureq::ErrorKind::BadStatus | ureq::ErrorKind::BadHeader => {
            TransportKind::Io
        }
        _ => TransportKind::Other,
    };
    Failure::Transport {
        kind,
        detail,
        attempts: 1,
    }
}

/// A streaming object body that resumes (ranged GET, same ETag) when the connection breaks.
struct GetReader {
    inner: Arc<Inner>,
    key: String,
    body: Box<dyn Read + Send + Sync>,
    offset: u64,
    len: Option<u64>,
    etag: Option<String>,
    resumes: u32,
}

impl GetReader {
    fn resume(&mut self, cause: io::Error) -> io::Result<()> {
        if self.resumes >= MAX_RESUMES {
            return Err(cause);
        }
        self.resumes += 1;
        std::thread::sleep(self.inner.retry.delay(self.resumes));
        log::debug!(
            "{}: resuming the download of {} at byte {} ({cause})",
            self.inner.describe(),
            self.key,
            self.offset
        );
        let resp = self
            .inner
            .get(&self.key, self.offset, self.etag.as_deref())
            .map_err(|f| {
                let e = self.inner.error("get", &self.inner.object(&self.key), f);
                io::Error::new(cause.kind(), format!("{cause}; resuming failed: {e}"))
            })?;
        // A store that ignores Range answers 200 with the whole object again.
        let whole = resp.status() == 200;
        let mut body = resp.into_reader();
        if whole && self.offset > 0 {
            io::copy(&mut (&mut body).take(self.offset), &mut io::sink())?;
        }
        self.body = body;
        Ok(())
    }
}

impl Read for GetReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.body.read(buf) {
                Ok(0) => {
                    if let Some(len) = self.len {
                        if self.offset < len {
                            let e = io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("the download ended at byte {} of {len}", self.offset),
                            );
                            self.resume(e)?;
                            continue;
                        }
                    }
                    return Ok(0);
                }
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.resume(e)?,
            }
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
        }))
    }

    fn delete(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<(), StorageError> {
        let key = self.inner.key(level, min_txid, max_txid);
        self.inner.delete(&key)
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

// ---- TLS ---------------------------------------------------------------------------------

fn tls_config(skip_verify: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    static VERIFIED: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    static UNVERIFIED: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let provider = || Arc::new(rustls::crypto::ring::default_provider());
    if skip_verify {
        return UNVERIFIED
            .get_or_init(|| {
                let p = provider();
                let cfg = rustls::ClientConfig::builder_with_provider(p.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS setup failed: {e}"))?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerify(p)))
                    .with_no_client_auth();
                Ok(Arc::new(cfg))
            })
            .clone();
    }
    VERIFIED
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            log::debug!("TLS roots: Mozilla's plus {added} from the system store");
            let cfg = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup failed: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(cfg))
        })
        .clone()
}

/// `skip-verify: true`: accepts any certificate (signatures are still checked, so the
/// handshake itself is sound; only the server's identity is not).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ---- small XML and base64 helpers ----------------------------------------------------

/// The contents of every `<tag>...</tag>` in `xml` (no nesting of the same tag).
fn xml_blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

/// The unescaped text of the first `<tag>...</tag>` in `xml`.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    xml_blocks(xml, tag).first().map(|s| xml_unescape(s))
}

fn xml_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let ent = &tail[1..end];
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ if ent.starts_with("#x") || ent.starts_with("#X") => {
                u32::from_str_radix(&ent[2..], 16)
                    .ok()
                    .and_then(char::from_u32)
            }
            _ if ent.starts_with('#') => ent[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => out.push(c),
            None => out.push_str(&tail[..=end]),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let bytes = s.as_bytes();
    for (ci, chunk) in bytes.chunks(4).enumerate() {
        let last = ci == bytes.len() / 4 - 1;
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if c == b'=' && last && i >= 2 {
                pad += 1;
                0
            } else if pad > 0 {
                return None;
            } else {
                B64.iter().position(|&x| x == c)? as u32
            };
            n = (n << 6) | v;
        }
        let b = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&b[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(endpoint: Option<&str>, path: &str) -> S3Config {
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

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            (e.https, e.host.as_str(), e.port),
            (false, "127.0.0.1", Some(9000))
        );
        let e = Endpoint::parse("https://s3.example.com:443/base/").unwrap();
        assert_eq!((e.port, e.base.as_str()), (None, "/base"));
        assert_eq!(e.display(), "https://s3.example.com/base");
        let e = Endpoint::parse("http://[::1]:9000").unwrap();
        assert_eq!(e.authority(&e.host), "[::1]:9000");
        assert!(Endpoint::parse("s3.example.com").is_err());
        assert!(Endpoint::parse("http://k:s@host").is_err());
        assert!(Endpoint::parse("http://host:x").is_err());
    }

    #[test]
    fn xml() {
        let body = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a&amp;b</Key><Size>3</Size></Contents><Contents><Key>c</Key><Size>4</Size></Contents><NextContinuationToken>t/1=</NextContinuationToken></ListBucketResult>";
        let c = xml_blocks(body, "Contents");
        assert_eq!(c.len(), 2);
        assert_eq!(xml_text(c[0], "Key").unwrap(), "a&b");
        assert_eq!(xml_text(body, "NextContinuationToken").unwrap(), "t/1=");
        assert_eq!(xml_unescape("&#65;&#x42;&quot;&bogus;"), "AB\"&bogus;");
        assert_eq!(xml_escape("\"e\"&"), "&quot;e&quot;&amp;");
    }

    #[test]
    fn base64() {
        for s in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            assert_eq!(base64_decode(&base64_encode(s)).unwrap(), s);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert!(base64_decode("Zm9=v").is_none());
        assert!(base64_decode("Z===").is_none() || base64_decode("Z===").unwrap().is_empty());
    }

    #[test]
    fn sse_c_key_is_checked_and_hidden() {
        let mut c = cfg(Some("http://127.0.0.1:9000"), "p");
        c.sse_customer_key = Some(Secret::new("not base64!"));
        assert!(matches!(
            S3Storage::from_config(&c),
            Err(StorageError::Config { .. })
        ));
        let key = base64_encode(&[7u8; 32]);
        c.sse_customer_key = Some(Secret::new(key.clone()));
        let s = S3Storage::from_config(&c).unwrap();
        assert!(!format!("{s:?}").contains(&key));
        assert_eq!(s.inner.sse_c.len(), 3);
    }

    #[test]
    fn retry_delays_are_capped() {
        let p = RetryPolicy::default();
        for n in 1..20 {
            let d = p.delay(n);
            assert!(d <= p.max_delay, "{d:?}");
            assert!(d >= p.base_delay.min(p.max_delay) / 2, "{d:?}");
        }
    }
}
