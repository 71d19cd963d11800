//! Building an [`S3Storage`] from an `s3` or `gs` replica's settings: the bucket, endpoint,
//! region and credentials checked and kept, the part size bounded, the SSE-C / SSE-KMS
//! headers prepared (with the small base64 codec SSE-C needs), the HTTP agent made.
//!
//! Must never contact the store (a backend is built at config time, offline; the only file
//! read is `sse-customer-key-path`), and never put a credential or an SSE-C key in a
//! `StorageError::Config` message: messages name the replica through `describe_parts` and
//! the setting to fix, never its value.

use std::sync::{Arc, RwLock};

use super::connection::{io_timeout, tls_config, Endpoint, CONNECT_TIMEOUT};
use super::{
    describe_parts, Creds, Inner, Layout, RetryPolicy, S3Storage, DEFAULT_PART_SIZE, GCS_ENDPOINT,
    MIN_PART_SIZE,
};
use crate::config::{CredentialSource, GcsConfig, S3Config, Secret};
use crate::storage::StorageError;

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
            .timeout_read(io_timeout())
            .timeout_write(io_timeout())
            .redirects(0)
            .user_agent(concat!("walship/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build();
        // Virtual-hosted names with dots do not match a wildcard TLS certificate: AWS SDKs
        // fall back to path-style for those, and so do we.
        let https = endpoint.as_ref().is_none_or(|e| e.https);
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
    if !s.len().is_multiple_of(4) {
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
    use super::super::tests::cfg;
    use super::*;

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
}
