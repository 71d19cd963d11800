//! Azure Blob Storage backend (`type: abs`), on Apache Arrow's `object_store` crate (its Azure
//! client: Shared Key signing, SAS tokens, Entra ID tokens, block-blob uploads, retries).
//!
//! # Layout (what Litestream 0.5.17's abs client writes and reads)
//! * Blobs `<path>/ltx/<level>/<min %016x>-<max %016x>.ltx` in the container (`path.Join`,
//!   decimal level), with the metadata `litestreamtimestamp` (Azure metadata names cannot hold
//!   `-`): the LTX timestamp as Go's RFC 3339 with nanoseconds, in UTC.
//! * The lease is the blob `<path>/walship-lease.json`, written with `If-None-Match: *`
//!   (409 when it exists) or `If-Match: <etag>` (412 when it changed), released with a
//!   `DELETE` carrying `If-Match` (object_store has no conditional delete, so that one request
//!   is built here and signed by object_store's `AzureAuthorizer`).
//!
//! # Credentials, in Litestream 0.5's order (chosen by the config module)
//! `sas-token` / `LITESTREAM_AZURE_SAS_TOKEN`, else `account-key` /
//! `LITESTREAM_AZURE_ACCOUNT_KEY` (Shared Key for `account-name`), else object_store's
//! credential chain, from the `AZURE_*` variables the config module captured at load:
//! workload identity (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
//! `AZURE_FEDERATED_TOKEN_FILE`), a service principal secret (`AZURE_CLIENT_ID`,
//! `AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID`), else managed identity (IMDS, or
//! `IDENTITY_ENDPOINT`). The Azure CLI and client certificates, which Go's
//! `DefaultAzureCredential` also tries, are not offered.
//!
//! Owns turning `Storage` calls into object_store calls on this backend's runtime
//! (`cloud::Runtime`) and their errors into actionable `StorageError`s. Must never contact
//! Azure before the first call (the client is built on first use, on the calling shipper-pool or
//! CLI thread), never run on an app thread, and never let the SAS token or account key reach
//! a message (`cloud::scrub`, `Secret`).

use std::io::Read;
use std::sync::{Arc, OnceLock};

use futures_util::stream::{StreamExt, TryStreamExt};
use object_store::azure::{AzureAuthorizer, AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::client::{HttpClient, HttpConnector};
use object_store::path::Path as ObjPath;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions,
    PutOptions, PutPayload, UpdateVersion,
};

use super::cloud::{
    self, error_chain, looks_unreachable, status_in, Connector, Runtime, StreamRead, PART_SIZE,
};
use super::s3::litestream_timestamp;
use super::{FileInfo, Precondition, RemoteFailure, Storage, StorageError, Tagged};
use crate::config::{AbsConfig, AbsCredentialSource};
use crate::ltx;

/// The metadata name Litestream's abs client stores the LTX timestamp under.
pub const METADATA_TIMESTAMP: &str = "litestreamtimestamp";

/// The Azure backend. Cheap to share across threads.
pub struct AzureStorage {
    cfg: AbsConfig,
    /// The blob service URL (`endpoint`, else `https://<account>.blob.core.windows.net`).
    service: String,
    /// The account the requests are signed for.
    account: String,
    shown: String,
    rt: Arc<Runtime>,
    client: OnceLock<Result<Client, String>>,
}

struct Client {
    store: MicrosoftAzure,
    http: HttpClient,
}

impl std::fmt::Debug for AzureStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureStorage")
            .field("replica", &self.shown)
            .field("credential_source", &self.cfg.credential_source)
            .finish()
    }
}

impl AzureStorage {
    /// The backend for an `abs` replica. Contacts nothing and starts nothing.
    pub fn from_config(cfg: &AbsConfig) -> Result<AzureStorage, StorageError> {
        let account = cfg
            .account_name
            .clone()
            .or_else(|| cfg.endpoint.as_deref().and_then(account_from_endpoint))
            .unwrap_or_else(|| "account".into());
        let service = match &cfg.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://{account}.blob.core.windows.net"),
        };
        let loc = if cfg.path.is_empty() {
            format!("abs://{}", cfg.container)
        } else {
            format!("abs://{}/{}", cfg.container, cfg.path)
        };
        let shown = format!("{loc} (endpoint {})", cloud::scrub(&service, &[]));
        if !(service.starts_with("http://") || service.starts_with("https://")) {
            return Err(StorageError::Config {
                replica: shown,
                message: "`endpoint` must be an http:// or https:// URL".into(),
            });
        }
        Ok(AzureStorage {
            cfg: cfg.clone(),
            service,
            account,
            shown,
            rt: Arc::new(Runtime::default()),
            client: OnceLock::new(),
        })
    }

    fn client(&self) -> Result<&Client, StorageError> {
        self.client
            .get_or_init(|| self.build().map_err(|e| self.scrub(&e)))
            .as_ref()
            .map_err(|message| StorageError::Config {
                replica: self.shown.clone(),
                message: message.clone(),
            })
    }

    fn build(&self) -> Result<Client, String> {
        let c = &self.cfg;
        let connector = Connector {
            skip_verify: c.skip_verify,
        };
        let mut b = MicrosoftAzureBuilder::new()
            .with_account(&self.account)
            .with_container_name(&c.container)
            .with_endpoint(self.service.clone())
            .with_http_connector(connector)
            .with_retry(cloud::retry_config())
            .with_client_options(cloud::client_options())
            .with_config(AzureConfigKey::DisableTagging, "true");
        if let Some(t) = &c.sas_token {
            b = b.with_config(AzureConfigKey::SasKey, t.expose());
        } else if let Some(k) = &c.account_key {
            b = b.with_access_key(k.expose());
        } else {
            // The credential chain, from the variables Azure's SDKs read (captured at load).
            for (var, value) in &c.identity_env {
                let key = match var.as_str() {
                    "AZURE_CLIENT_ID" => AzureConfigKey::ClientId,
                    "AZURE_CLIENT_SECRET" => AzureConfigKey::ClientSecret,
                    "AZURE_TENANT_ID" => AzureConfigKey::AuthorityId,
                    "AZURE_FEDERATED_TOKEN_FILE" => AzureConfigKey::FederatedTokenFile,
                    "AZURE_AUTHORITY_HOST" => AzureConfigKey::AuthorityHost,
                    "MSI_ENDPOINT" => AzureConfigKey::MsiEndpoint,
                    _ => continue,
                };
                b = b.with_config(key, value.expose());
            }
        }
        let store = b.build().map_err(|e| {
            format!(
                "cannot set up the Azure client: {e} (check {})",
                self.credential_fix()
            )
        })?;
        let http = connector
            .connect(&cloud::client_options())
            .map_err(|e| e.to_string())?;
        Ok(Client { store, http })
    }

    fn secrets(&self) -> Vec<&str> {
        let mut v = Vec::new();
        if let Some(t) = &self.cfg.sas_token {
            v.push(t.expose());
        }
        if let Some(k) = &self.cfg.account_key {
            v.push(k.expose());
        }
        for (name, value) in &self.cfg.identity_env {
            if name == "AZURE_CLIENT_SECRET" {
                v.push(value.expose());
            }
        }
        v
    }

    fn scrub(&self, text: &str) -> String {
        cloud::scrub(text, &self.secrets())
    }

    /// What to check when Azure refuses the credential.
    fn credential_fix(&self) -> &'static str {
        match self.cfg.credential_source {
            AbsCredentialSource::SasToken => "`sas-token`: it must be valid now, for this account and container, with read, add, create, write, delete and list permissions",
            AbsCredentialSource::SasTokenEnv => "LITESTREAM_AZURE_SAS_TOKEN: it must be valid now, for this account and container, with read, add, create, write, delete and list permissions",
            AbsCredentialSource::AccountKey => "`account-key` and `account-name`: the key must be one of that storage account's access keys",
            AbsCredentialSource::AccountKeyEnv => "LITESTREAM_AZURE_ACCOUNT_KEY and `account-name`: the key must be one of that storage account's access keys",
            AbsCredentialSource::DefaultChain => "the Azure identity: set `sas-token` or `account-key`, or AZURE_CLIENT_ID/AZURE_TENANT_ID with AZURE_CLIENT_SECRET or AZURE_FEDERATED_TOKEN_FILE, or give the managed identity the Storage Blob Data Contributor role",
        }
    }

    fn object(&self, key: &str) -> String {
        format!("abs://{}/{key}", self.cfg.container)
    }

    fn path_of(&self, key: &str) -> Result<ObjPath, StorageError> {
        ObjPath::parse(key).map_err(|e| StorageError::Config {
            replica: self.shown.clone(),
            message: format!(
                "blob name {key:?} is not usable: {e}; use a `path` of plain segments"
            ),
        })
    }

    fn ltx_path(&self, level: u8, min: u64, max: u64) -> Result<(String, ObjPath), StorageError> {
        let key = cloud::ltx_key(&self.cfg.path, level, min, max);
        let p = self.path_of(&key)?;
        Ok((key, p))
    }

    /// An object_store error as a `StorageError` naming the blob, the replica and the fix.
    fn error(&self, op: &'static str, key: &str, e: object_store::Error) -> StorageError {
        use object_store::Error as E;
        let text = self.scrub(&error_chain(&e));
        let object = self.object(key);
        let status = status_in(&text);
        let failure = |detail: String, hint: &str, status: u16| {
            Box::new(RemoteFailure {
                op,
                object: object.clone(),
                replica: self.shown.clone(),
                status,
                code: String::new(),
                detail,
                hint: hint.to_string(),
            })
        };
        if text.contains("ContainerNotFound") || text.contains("container does not exist") {
            return StorageError::NoSuchBucket(failure(
                format!("container {:?} does not exist", self.cfg.container),
                "create the container (walship, like Litestream, never creates it), or fix `bucket`",
                404,
            ));
        }
        match e {
            E::NotFound { .. } => StorageError::NotFound { op, object },
            E::AlreadyExists { .. } | E::Precondition { .. } => {
                StorageError::PreconditionFailed { op, object }
            }
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                StorageError::Credentials(failure(text, self.credential_fix(), status.unwrap_or(403)))
            }
            _ if matches!(status, Some(401 | 403)) => {
                StorageError::Credentials(failure(text, self.credential_fix(), status.unwrap_or(403)))
            }
            _ if status.is_none() && looks_unreachable(&text) => StorageError::Unreachable(failure(
                text,
                "check `endpoint` (or `account-name`), the network and that the service is up; walship retries",
                0,
            )),
            _ => StorageError::Remote(failure(
                text,
                "walship retries transient failures; if this persists, check the container and its settings",
                status.unwrap_or(0),
            )),
        }
    }

    fn attributes(timestamp_ms: i64) -> Attributes {
        let mut a = Attributes::new();
        a.insert(Attribute::ContentType, "application/octet-stream".into());
        a.insert(
            Attribute::Metadata(METADATA_TIMESTAMP.into()),
            litestream_timestamp(timestamp_ms).into(),
        );
        a
    }

    /// One request object_store does not offer, signed by its authorizer: its status.
    fn raw_request(
        &self,
        op: &'static str,
        key: &str,
        method: http::Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<u16, StorageError> {
        let c = self.client()?;
        let fail = |detail: String| {
            StorageError::Unreachable(Box::new(RemoteFailure {
                op,
                object: self.object(key),
                replica: self.shown.clone(),
                status: 0,
                code: String::new(),
                detail,
                hint: "check `endpoint` (or `account-name`), the network and that the service is up; walship retries".into(),
            }))
        };
        self.rt.block_on(async {
            let cred = c
                .store
                .credentials()
                .get_credential()
                .await
                .map_err(|e| self.error(op, key, e))?;
            let mut b = http::Request::builder()
                .method(method)
                .uri(url)
                .header("Content-Length", "0");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            let mut req = b
                .body(object_store::client::HttpRequestBody::empty())
                .map_err(|e| fail(self.scrub(&e.to_string())))?;
            AzureAuthorizer::new(&cred, &self.account)
                .try_authorize(&mut req)
                .map_err(|e| self.error(op, key, e))?;
            let resp = c
                .http
                .execute(req)
                .await
                .map_err(|e| fail(self.scrub(&error_chain(&e))))?;
            Ok(resp.status().as_u16())
        })
    }

    fn status_error(&self, op: &'static str, key: &str, status: u16) -> StorageError {
        let failure = |hint: String| {
            Box::new(RemoteFailure {
                op,
                object: self.object(key),
                replica: self.shown.clone(),
                status,
                code: String::new(),
                detail: format!("HTTP {status}"),
                hint,
            })
        };
        match status {
            401 | 403 => StorageError::Credentials(failure(self.credential_fix().into())),
            _ => StorageError::Remote(failure("walship retries transient failures".into())),
        }
    }

    /// The conditional DELETE object_store does not offer (`If-Match`: 412 when changed).
    fn delete_if_match(&self, key: &str, tag: &str) -> Result<(), StorageError> {
        let url = format!(
            "{}/{}/{}",
            self.service,
            self.cfg.container,
            encode_path(key)
        );
        match self.raw_request(
            "delete",
            key,
            http::Method::DELETE,
            &url,
            &[("If-Match", tag)],
        )? {
            200..=299 | 404 => Ok(()),
            // Azure answers 412 to If-Match on a missing blob too: missing is success.
            412 if self.head_missing(key)? => Ok(()),
            412 => Err(StorageError::PreconditionFailed {
                op: "delete",
                object: self.object(key),
            }),
            s => Err(self.status_error("delete", key, s)),
        }
    }

    /// Whether the blob is absent (a HEAD answered 404).
    fn head_missing(&self, key: &str) -> Result<bool, StorageError> {
        let c = self.client()?;
        let path = self.path_of(key)?;
        match self.rt.block_on(c.store.head(&path)) {
            Ok(_) => Ok(false),
            Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(self.error("head", key, e)),
        }
    }

    /// Creates the container (tests and setup only: walship never creates it while
    /// replicating, like Litestream). An existing container is fine.
    #[doc(hidden)]
    pub fn create_container(&self) -> Result<(), StorageError> {
        let url = format!("{}/{}?restype=container", self.service, self.cfg.container);
        match self.raw_request("create-container", "", http::Method::PUT, &url, &[])? {
            200..=299 | 409 => Ok(()),
            s => Err(self.status_error("create-container", "", s)),
        }
    }
}

impl Storage for AzureStorage {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn list(&self, level: u8) -> Result<Vec<FileInfo>, StorageError> {
        let c = self.client()?;
        let dir = cloud::level_dir(&self.cfg.path, level);
        let prefix = self.path_of(&dir)?;
        let metas: Vec<_> = self
            .rt
            .block_on(c.store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .map_err(|e| self.error("list", &format!("{dir}/"), e))?;
        let mut out: Vec<FileInfo> = metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.as_ref().strip_prefix(&dir)?.strip_prefix('/')?;
                let (min, max) = ltx::parse_file_name(name)?;
                Some(FileInfo {
                    level,
                    min_txid: min,
                    max_txid: max,
                    size: m.size,
                })
            })
            .collect();
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
        let c = self.client()?;
        let (key, path) = self.ltx_path(level, min_txid, max_txid)?;
        let io = |e: std::io::Error| StorageError::Io {
            op: "put",
            object: self.object(&key),
            source: e,
            hint: Some("reading the local file to upload failed"),
        };
        let first = cloud::read_part(src, PART_SIZE).map_err(io)?;
        if first.len() < PART_SIZE {
            let n = first.len() as u64;
            let opts = PutOptions {
                attributes: Self::attributes(timestamp_ms),
                ..PutOptions::default()
            };
            self.rt
                .block_on(c.store.put_opts(&path, PutPayload::from(first), opts))
                .map_err(|e| self.error("put", &key, e))?;
            return Ok(n);
        }
        // Block blob in parts, one in memory at a time; aborted (uncommitted blocks are
        // discarded by Azure) on any failure.
        let opts = PutMultipartOptions {
            attributes: Self::attributes(timestamp_ms),
            ..PutMultipartOptions::default()
        };
        let mut upload = self
            .rt
            .block_on(c.store.put_multipart_opts(&path, opts))
            .map_err(|e| self.error("put", &key, e))?;
        let mut total = 0u64;
        let mut part = first;
        let result = loop {
            total += part.len() as u64;
            if let Err(e) = self.rt.block_on(upload.put_part(PutPayload::from(part))) {
                break Err(self.error("put", &key, e));
            }
            part = match cloud::read_part(src, PART_SIZE) {
                Ok(p) => p,
                Err(e) => break Err(io(e)),
            };
            if part.is_empty() {
                break self
                    .rt
                    .block_on(upload.complete())
                    .map(|_| total)
                    .map_err(|e| self.error("put", &key, e));
            }
        };
        if result.is_err() {
            let _ = self.rt.block_on(upload.abort());
        }
        result
    }

    fn open(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
    ) -> Result<Box<dyn Read + Send>, StorageError> {
        let c = self.client()?;
        let (key, path) = self.ltx_path(level, min_txid, max_txid)?;
        let got = self
            .rt
            .block_on(c.store.get_opts(&path, GetOptions::default()))
            .map_err(|e| self.error("get", &key, e))?;
        let secrets: Vec<String> = self.secrets().iter().map(|s| s.to_string()).collect();
        let stream = got
            .into_stream()
            .map(move |r| {
                r.map_err(|e| {
                    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
                    std::io::Error::other(cloud::scrub(&error_chain(&e), &refs))
                })
            })
            .boxed();
        Ok(Box::new(StreamRead::new(self.rt.clone(), stream)))
    }

    fn delete(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<(), StorageError> {
        let c = self.client()?;
        let (key, path) = self.ltx_path(level, min_txid, max_txid)?;
        match self.rt.block_on(c.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => match self.error("delete", &key, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    fn get_named(&self, name: &str) -> Result<Option<Tagged>, StorageError> {
        let c = self.client()?;
        let key = cloud::named_key(&self.cfg.path, name);
        let path = self.path_of(&key)?;
        let r = self.rt.block_on(async {
            let got = c.store.get_opts(&path, GetOptions::default()).await?;
            let tag = got.meta.e_tag.clone().unwrap_or_default();
            let body = got.bytes().await?;
            Ok::<_, object_store::Error>((body, tag))
        });
        match r {
            Ok((body, tag)) => Ok(Some(Tagged {
                body: body.to_vec(),
                tag,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("get", &key, e)),
        }
    }

    fn put_named_if(
        &self,
        name: &str,
        body: &[u8],
        cond: Precondition<'_>,
    ) -> Result<String, StorageError> {
        let c = self.client()?;
        let key = cloud::named_key(&self.cfg.path, name);
        let path = self.path_of(&key)?;
        let mode = match cond {
            // Azure: `If-None-Match: *`, answered 409 BlobAlreadyExists.
            Precondition::Absent => PutMode::Create,
            // Azure: `If-Match: <etag>`, answered 412 ConditionNotMet.
            Precondition::Matches(tag) => PutMode::Update(UpdateVersion {
                e_tag: Some(tag.to_string()),
                version: None,
            }),
        };
        let opts = PutOptions {
            mode,
            attributes: {
                let mut a = Attributes::new();
                a.insert(Attribute::ContentType, "application/json".into());
                a
            },
            ..PutOptions::default()
        };
        match self.rt.block_on(
            c.store
                .put_opts(&path, PutPayload::from(body.to_vec()), opts),
        ) {
            Ok(r) => Ok(r.e_tag.unwrap_or_default()),
            Err(e) => match self.error("put", &key, e) {
                // If-Match on a missing blob.
                StorageError::NotFound { op, object } => {
                    Err(StorageError::PreconditionFailed { op, object })
                }
                other => Err(other),
            },
        }
    }

    fn delete_named_if(&self, name: &str, tag: &str) -> Result<(), StorageError> {
        let key = cloud::named_key(&self.cfg.path, name);
        self.delete_if_match(&key, tag)
    }
}

/// `acct` from `https://acct.blob.core.windows.net` or Azurite's `http://host:port/acct`.
fn account_from_endpoint(e: &str) -> Option<String> {
    let rest = e.split("://").nth(1)?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let first = path.split('/').next().unwrap_or("");
    if !first.is_empty() {
        return Some(first.to_string());
    }
    host.split('.')
        .next()
        .filter(|h| !h.is_empty() && host.contains(".blob."))
        .map(str::to_string)
}

/// Percent-encodes a blob name, keeping `/` (as object_store does segment by segment).
fn encode_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_accounts() {
        assert_eq!(
            account_from_endpoint("http://127.0.0.1:10000/devstoreaccount1").as_deref(),
            Some("devstoreaccount1")
        );
        assert_eq!(
            account_from_endpoint("https://acct.blob.core.windows.net").as_deref(),
            Some("acct")
        );
        assert_eq!(encode_path("a b/c"), "a%20b/c");
    }
}
