//! Google Cloud Storage backend (`type: gs` / `gcs` without HMAC keys): GCS's JSON API, the one
//! Google's own clients (and so Litestream's gs client) speak, with Application Default
//! Credentials from Apache Arrow's `object_store` crate.
//!
//! # Why the requests are written here
//! object_store's GCS client speaks GCS's XML API. Google's clients, Litestream's included,
//! speak the JSON API, and `STORAGE_EMULATOR_HOST` means "the JSON API at this host": the
//! emulators implement that one (fake-gcs-server answers XML-API uploads with 400/404), and
//! only it carries `ifGenerationMatch` on every call, the lease's compare-and-swap. So the
//! seven requests this backend needs are built here over `ureq` (blocking, streaming bodies,
//! the same TLS setup as the S3 backend), and everything about credentials comes from
//! object_store: the service-account JSON named by `GOOGLE_APPLICATION_CREDENTIALS` (a JWT
//! signed with its RSA key, by object_store on `ring`), gcloud's authorized-user file, else the
//! metadata server (`GCE_METADATA_HOST` honoured); tokens are cached and renewed by it.
//!
//! # Layout (Litestream 0.5.17's gs client)
//! Objects `<path>/ltx/<level>/<min %016x>-<max %016x>.ltx` (`path.Join`, decimal level) with
//! the custom metadata `litestream-timestamp` (RFC 3339 with nanoseconds, UTC). The lease is
//! `<path>/walship-lease.json`; its tag is the object's generation, and every conditional call
//! carries `ifGenerationMatch` (0 = must not exist), answered 412 when it does not hold.
//!
//! # Requests
//! list: `GET /storage/v1/b/B/o?prefix=`, following `nextPageToken`. get: `?alt=media`,
//! streamed. put: one multipart upload (`uploadType=multipart`) below 8 MiB, else a resumable
//! upload in 8 MiB chunks, one in memory at a time, cancelled on failure. delete: `DELETE`,
//! 404 is success. Transient failures (connection errors, 408, 429, 5xx) are retried a few
//! times with capped exponential backoff.
//!
//! Must never contact GCS before the first call, never run on an app thread, and never put a
//! token or key in a message (tokens live only in request headers).

mod requests;

use std::io::Read;
use std::sync::{Arc, OnceLock};

use object_store::gcp::{GcpCredentialProvider, GoogleCloudStorageBuilder};

use self::requests::{enc, read_json, Body};
use super::cloud::{self, Connector, Runtime, PART_SIZE};
use super::s3::connection::{io_timeout, tls_config, CONNECT_TIMEOUT};
use super::{FileInfo, Precondition, RemoteFailure, Storage, StorageError, Tagged};
use crate::config::GcsConfig;
use crate::ltx;

/// The metadata name Litestream's gs client stores the LTX timestamp under.
pub const METADATA_TIMESTAMP: &str = "litestream-timestamp";
/// Where GCS's JSON API lives.
pub const GCS_JSON_ENDPOINT: &str = "https://storage.googleapis.com";

/// The GCS backend. Cheap to share across threads.
pub struct GcsStorage {
    cfg: GcsConfig,
    /// `https://storage.googleapis.com`, or the emulator's URL.
    base: String,
    emulator: bool,
    shown: String,
    agent: ureq::Agent,
    rt: Arc<Runtime>,
    creds: OnceLock<Result<GcpCredentialProvider, String>>,
}

impl std::fmt::Debug for GcsStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsStorage")
            .field("replica", &self.shown)
            .field("emulator", &self.emulator)
            .field("application_credentials", &self.cfg.application_credentials)
            .finish()
    }
}

impl GcsStorage {
    /// The backend for a `gs` replica without HMAC keys. Contacts nothing.
    pub fn from_config(cfg: &GcsConfig) -> Result<GcsStorage, StorageError> {
        let (base, emulator) = match &cfg.emulator_host {
            Some(h) if h.starts_with("http://") || h.starts_with("https://") => {
                (h.trim_end_matches('/').to_string(), true)
            }
            Some(h) => (format!("http://{}", h.trim_end_matches('/')), true),
            None => (GCS_JSON_ENDPOINT.to_string(), false),
        };
        let loc = if cfg.path.is_empty() {
            format!("gs://{}", cfg.bucket)
        } else {
            format!("gs://{}/{}", cfg.bucket, cfg.path)
        };
        let shown = if emulator {
            format!("{loc} (emulator {base} from STORAGE_EMULATOR_HOST)")
        } else {
            loc
        };
        let tls = tls_config(cfg.skip_verify).map_err(|message| StorageError::Config {
            replica: shown.clone(),
            message,
        })?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(io_timeout())
            .timeout_write(io_timeout())
            .redirects(0)
            .user_agent(concat!("walship/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build();
        Ok(GcsStorage {
            cfg: cfg.clone(),
            base,
            emulator,
            shown,
            agent,
            rt: Arc::new(Runtime::default()),
            creds: OnceLock::new(),
        })
    }

    /// Sends the JSON API requests to `base` instead of storage.googleapis.com, still with
    /// Google's credentials (tests: a local double that checks the token).
    #[doc(hidden)]
    pub fn with_endpoint(mut self, base: &str) -> Self {
        self.base = base.trim_end_matches('/').to_string();
        self.shown = format!("{} (endpoint {})", self.shown, self.base);
        self
    }

    fn credentials_fix(&self) -> String {
        match &self.cfg.application_credentials {
            Some(p) => format!("check the service account in GOOGLE_APPLICATION_CREDENTIALS ({}): its key must be active and it needs roles/storage.objectAdmin on the bucket", p.display()),
            None => "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or give the VM's service account roles/storage.objectAdmin on the bucket (walship asks the metadata server otherwise)".into(),
        }
    }

    /// `Authorization: Bearer ...`, or nothing for the emulator (as Google's clients do).
    fn bearer(&self) -> Result<Option<String>, StorageError> {
        if self.emulator {
            return Ok(None);
        }
        let provider = self
            .creds
            .get_or_init(|| {
                let mut b = GoogleCloudStorageBuilder::new()
                    .with_bucket_name(&self.cfg.bucket)
                    .with_http_connector(Connector {
                        skip_verify: self.cfg.skip_verify,
                    })
                    .with_retry(cloud::retry_config())
                    .with_client_options(cloud::client_options());
                if let Some(p) = &self.cfg.application_credentials {
                    b = b.with_application_credentials(p.display().to_string());
                }
                b.build()
                    .map(|s| s.credentials().clone())
                    .map_err(|e| cloud::scrub(&cloud::error_chain(&e), &[]))
            })
            .as_ref()
            .map_err(|e| StorageError::Config {
                replica: self.shown.clone(),
                message: format!(
                    "cannot read Google credentials: {e}; {}",
                    self.credentials_fix()
                ),
            })?;
        match self.rt.block_on(provider.get_credential()) {
            Ok(c) => Ok(Some(format!("Bearer {}", c.bearer))),
            Err(e) => {
                let detail = cloud::scrub(&cloud::error_chain(&e), &[]);
                let unreachable = cloud::looks_unreachable(&detail);
                let f = Box::new(RemoteFailure {
                    op: "token",
                    object: "Google OAuth token".into(),
                    replica: self.shown.clone(),
                    status: 0,
                    code: String::new(),
                    detail,
                    hint: self.credentials_fix(),
                });
                Err(if unreachable {
                    StorageError::Unreachable(f)
                } else {
                    StorageError::Credentials(f)
                })
            }
        }
    }

    fn object(&self, name: &str) -> String {
        format!("gs://{}/{name}", self.cfg.bucket)
    }

    fn object_url(&self, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.base,
            enc(&self.cfg.bucket),
            enc(name)
        )
    }

    fn upload_url(&self) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o",
            self.base,
            enc(&self.cfg.bucket)
        )
    }
}

impl Storage for GcsStorage {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn list(&self, level: u8) -> Result<Vec<FileInfo>, StorageError> {
        let dir = cloud::level_dir(&self.cfg.path, level);
        let prefix = format!("{dir}/");
        let url = format!("{}/storage/v1/b/{}/o", self.base, enc(&self.cfg.bucket));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let r = self.call("list", &prefix, Body::Empty, &|auth| {
                let mut req = self.agent.get(&url).query("prefix", &prefix);
                if let Some(t) = &token {
                    req = req.query("pageToken", t);
                }
                if let Some(a) = auth {
                    req = req.set("Authorization", a);
                }
                req
            })?;
            let body: serde_json::Value = read_json(r).map_err(|e| StorageError::Io {
                op: "list",
                object: self.object(&prefix),
                source: e,
                hint: Some("the listing was cut off or is not JSON; walship retries"),
            })?;
            for item in body["items"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let Some(name) = item["name"].as_str() else {
                    continue;
                };
                let Some((min, max)) = name.strip_prefix(&prefix).and_then(ltx::parse_file_name)
                else {
                    continue;
                };
                let size = match &item["size"] {
                    serde_json::Value::String(s) => s.parse().unwrap_or(0),
                    v => v.as_u64().unwrap_or(0),
                };
                out.push(FileInfo {
                    level,
                    min_txid: min,
                    max_txid: max,
                    size,
                });
            }
            token = body["nextPageToken"]
                .as_str()
                .map(str::to_string)
                .filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        out.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(out)
    }

    fn put(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        timestamp_ms: i64,
        src: &mut dyn Read,
    ) -> Result<u64, StorageError> {
        let name = cloud::ltx_key(&self.cfg.path, level, min_txid, max_txid);
        let meta = Self::metadata_json(&name, "application/octet-stream", Some(timestamp_ms));
        let first = cloud::read_part(src, PART_SIZE).map_err(|e| StorageError::Io {
            op: "put",
            object: self.object(&name),
            source: e,
            hint: Some("reading the local file to upload failed"),
        })?;
        if first.len() < PART_SIZE {
            self.upload_small(&name, &first, &meta, None)?;
            return Ok(first.len() as u64);
        }
        self.upload_resumable(&name, first, src, &meta)
    }

    fn open(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
    ) -> Result<Box<dyn Read + Send>, StorageError> {
        let name = cloud::ltx_key(&self.cfg.path, level, min_txid, max_txid);
        let url = self.object_url(&name);
        let r = self.call("get", &name, Body::Empty, &|auth| {
            let mut req = self.agent.get(&url).query("alt", "media");
            if let Some(a) = auth {
                req = req.set("Authorization", a);
            }
            req
        })?;
        Ok(Box::new(r.into_reader()))
    }

    fn delete(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<(), StorageError> {
        let name = cloud::ltx_key(&self.cfg.path, level, min_txid, max_txid);
        let url = self.object_url(&name);
        match self.call("delete", &name, Body::Empty, &|auth| {
            let mut req = self.agent.delete(&url);
            if let Some(a) = auth {
                req = req.set("Authorization", a);
            }
            req
        }) {
            Ok(_) | Err(StorageError::NotFound { .. }) | Err(StorageError::NoSuchBucket(_)) => {
                // A 404 on delete: the object (not necessarily the bucket) is gone.
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn get_named(&self, name: &str) -> Result<Option<Tagged>, StorageError> {
        let key = cloud::named_key(&self.cfg.path, name);
        let url = self.object_url(&key);
        // The generation first, then the bytes of exactly that generation: a write in between
        // makes the second read miss, and the pair is read again.
        for _ in 0..5 {
            let Some(generation) = self.generation(&key)? else {
                return Ok(None);
            };
            let r = self.call("get", &key, Body::Empty, &|auth| {
                let mut req = self
                    .agent
                    .get(&url)
                    .query("alt", "media")
                    .query("generation", &generation);
                if let Some(a) = auth {
                    req = req.set("Authorization", a);
                }
                req
            });
            match r {
                Ok(r) => {
                    let mut body = Vec::new();
                    r.into_reader()
                        .take(1 << 20)
                        .read_to_end(&mut body)
                        .map_err(|e| StorageError::Io {
                            op: "get",
                            object: self.object(&key),
                            source: e,
                            hint: None,
                        })?;
                    return Ok(Some(Tagged {
                        body,
                        tag: generation,
                    }));
                }
                Err(StorageError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::PreconditionFailed {
            op: "get",
            object: self.object(&key),
        })
    }

    fn put_named_if(
        &self,
        name: &str,
        body: &[u8],
        cond: Precondition<'_>,
    ) -> Result<String, StorageError> {
        let key = cloud::named_key(&self.cfg.path, name);
        let generation = match cond {
            Precondition::Absent => "0".to_string(),
            Precondition::Matches(tag) => {
                if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_digit()) || tag == "0" {
                    return Err(StorageError::PreconditionFailed {
                        op: "put",
                        object: self.object(&key),
                    });
                }
                tag.to_string()
            }
        };
        let meta = Self::metadata_json(&key, "application/json", None);
        self.upload_small(&key, body, &meta, Some(&generation))
    }

    fn delete_named_if(&self, name: &str, tag: &str) -> Result<(), StorageError> {
        let key = cloud::named_key(&self.cfg.path, name);
        if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StorageError::PreconditionFailed {
                op: "delete",
                object: self.object(&key),
            });
        }
        let url = self.object_url(&key);
        match self.call("delete", &key, Body::Empty, &|auth| {
            let mut req = self.agent.delete(&url).query("ifGenerationMatch", tag);
            if let Some(a) = auth {
                req = req.set("Authorization", a);
            }
            req
        }) {
            Ok(_) | Err(StorageError::NotFound { .. }) | Err(StorageError::NoSuchBucket(_)) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
