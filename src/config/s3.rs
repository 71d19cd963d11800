//! The S3 replica: bucket, path, region and endpoint from the config and/or an `s3://` URL
//! (host forms and query parameters such as `endpoint=`, `region=`, `forcePathStyle=`),
//! Litestream's path-style defaults for known S3-compatible hosts, credentials (config, else
//! `AWS_*`, else `LITESTREAM_*`) and SSE settings.
//!
//! Must never use the network (no region lookup, no credential or metadata endpoint), read
//! only the environment passed in [`Ctx`], and never put a credential or the SSE-C key in an
//! error: they are wrapped in [`Secret`] as soon as they are read.

use super::error::ConfigError;
use super::fields::{join_key, missing, ne, Ctx, Val};
use super::paths::resolve_path;
use super::settings::RawSettings;
use super::types::*;
use super::url;
use super::yaml::Node;

fn query_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn build_s3(
    ctx: &Ctx<'_>,
    key: &str,
    node: &Node,
    s: &RawSettings,
    path: &Option<Val>,
    url_v: &Option<Val>,
    u: Option<&url::ReplicaUrl>,
    own_bucket: bool,
) -> Result<S3Config, ConfigError> {
    let conflict = |what: &str, line: usize| {
        ConfigError::Conflict {
        at: ctx.at(line),
        key: key.to_string(),
        message: format!("cannot set both `url` and `{what}` on an s3 replica; put the bucket and path in the url, or drop the url"),
    }
    };
    if u.is_some() && ne(path).is_some() {
        return Err(conflict(
            "path",
            path.as_ref().map_or(node.line(), |v| v.line),
        ));
    }
    if u.is_some() && own_bucket {
        return Err(conflict(
            "bucket",
            s.bucket.as_ref().map_or(node.line(), |v| v.line),
        ));
    }
    let mut bucket = ne(&s.bucket);
    let mut spath = ne(path).unwrap_or_default();
    let mut region = ne(&s.region);
    let mut endpoint = ne(&s.endpoint);
    let mut force_path_style = endpoint.is_some();
    if let Some(v) = s.force_path_style {
        force_path_style = v;
    }
    let mut skip_verify = s.skip_verify.unwrap_or(false);
    let mut sign_payload = s.sign_payload;
    let mut require_md5 = s.require_content_md5;
    let mut storage_class = ne(&s.storage_class);
    let mut part_size = s.part_size;
    let mut concurrency = s.concurrency;
    if let Some(u) = u {
        let url_line = url_v.as_ref().map_or(node.line(), |v| v.line);
        let bad = |reason: String| ConfigError::InvalidUrl {
            at: ctx.at(url_line),
            key: join_key(key, "url"),
            url: url::redact(&url_v.as_ref().map(|v| v.text.clone()).unwrap_or_default()),
            reason,
        };
        if u.host.to_ascii_lowercase().starts_with("arn:") {
            return Err(bad(
                "S3 access point ARNs are not supported yet by walship; use the bucket name".into(),
            ));
        }
        let h = url::parse_s3_host(&u.host);
        let (mut u_endpoint, mut u_fps, mut u_region) = (h.endpoint, h.force_path_style, h.region);
        if let Some(e) = u.query(&["endpoint"]) {
            u_endpoint = Some(url::ensure_endpoint_scheme(e));
            if u.query(&["forcePathStyle"]) != Some("false") {
                u_fps = true;
            }
        }
        if let Some(r) = u.query(&["region"]) {
            u_region = Some(r.to_string());
        }
        if let Some(v) = u.query(&["forcePathStyle"]) {
            u_fps = v == "true";
        }
        if let Some(v) = u.query(&["skipVerify"]) {
            skip_verify = v == "true";
        }
        if sign_payload.is_none() {
            sign_payload = u.query(&["signPayload", "sign-payload"]).map(query_bool);
        }
        if require_md5.is_none() {
            require_md5 = u
                .query(&["requireContentMD5", "require-content-md5"])
                .map(query_bool);
        }
        storage_class = storage_class.or_else(|| {
            u.query(&["storageClass", "storage-class"])
                .map(str::to_string)
        });
        if part_size.is_none() {
            if let Some(v) = u.query(&["partSize", "part-size"]) {
                part_size =
                    Some(v.parse().map_err(|_| {
                        bad(format!("partSize={v:?} is not a whole number of bytes"))
                    })?);
            }
        }
        if concurrency.is_none() {
            if let Some(v) = u.query(&["concurrency"]) {
                concurrency = Some(
                    v.parse()
                        .map_err(|_| bad(format!("concurrency={v:?} is not a whole number")))?,
                );
            }
        }
        if spath.is_empty() {
            spath = u.path.clone();
        }
        bucket = bucket.or_else(|| Some(h.bucket).filter(|b| !b.is_empty()));
        region = region.or(u_region);
        endpoint = endpoint.or(u_endpoint);
        if !force_path_style {
            force_path_style = u_fps;
        }
    }
    let Some(bucket) = bucket else {
        return Err(missing(
            ctx,
            s.bucket.as_ref(),
            join_key(key, "bucket"),
            node.line(),
            "an s3 replica needs `bucket:` or `url: s3://BUCKET/path`",
        ));
    };
    let region = region
        .or_else(|| ctx.env("AWS_REGION"))
        .or_else(|| ctx.env("AWS_DEFAULT_REGION"));
    let endpoint = endpoint.map(|e| url::ensure_endpoint_scheme(&e));
    if s.force_path_style.is_none() {
        if let Some(e) = &endpoint {
            if ["backblazeb2.com", "filebase.com", "supabase.co", "minio"]
                .iter()
                .any(|p| e.contains(p))
            {
                force_path_style = true;
            }
        }
    }

    // Credentials: config (replica, then global), else AWS_*, else LITESTREAM_*.
    let pick = |v: &Option<Val>, aws: &str, ls: &str| -> (Option<Secret>, CredentialSource) {
        if let Some(t) = ne(v) {
            (Some(Secret::new(t)), CredentialSource::Config)
        } else if let Some(t) = ctx.env(aws) {
            (Some(Secret::new(t)), CredentialSource::AwsEnv)
        } else if let Some(t) = ctx.env(ls) {
            (Some(Secret::new(t)), CredentialSource::LitestreamEnv)
        } else {
            (None, CredentialSource::None)
        }
    };
    let (access_key_id, source) = pick(
        &s.access_key_id,
        "AWS_ACCESS_KEY_ID",
        "LITESTREAM_ACCESS_KEY_ID",
    );
    let (secret_access_key, _) = pick(
        &s.secret_access_key,
        "AWS_SECRET_ACCESS_KEY",
        "LITESTREAM_SECRET_ACCESS_KEY",
    );
    for (val, found, what, envs) in [
        (
            &s.access_key_id,
            access_key_id.is_some(),
            "access key id",
            "AWS_ACCESS_KEY_ID or LITESTREAM_ACCESS_KEY_ID",
        ),
        (
            &s.secret_access_key,
            secret_access_key.is_some(),
            "secret access key",
            "AWS_SECRET_ACCESS_KEY or LITESTREAM_SECRET_ACCESS_KEY",
        ),
    ] {
        if let (Some(v), false) = (val, found) {
            let unset = ctx.unset_on(v.line);
            if !unset.is_empty() {
                return Err(ConfigError::missing(
                    ctx.at(v.line),
                    v.key.clone(),
                    format!("the {what} came out empty and {envs} is not set either"),
                    unset,
                ));
            }
        }
    }
    if access_key_id.is_some() != secret_access_key.is_some() {
        let (has, lacks) = if access_key_id.is_some() {
            (
                "an access key id",
                "`secret-access-key` (or AWS_SECRET_ACCESS_KEY / LITESTREAM_SECRET_ACCESS_KEY)",
            )
        } else {
            (
                "a secret access key",
                "`access-key-id` (or AWS_ACCESS_KEY_ID / LITESTREAM_ACCESS_KEY_ID)",
            )
        };
        return Err(ConfigError::Conflict {
            at: ctx.at(node.line()),
            key: key.into(),
            message: format!("found {has} but no matching key; set {lacks}"),
        });
    }
    let sse_key = ne(&s.sse_customer_key).map(Secret::new);
    let sse_key_path = ne(&s.sse_customer_key_path)
        .map(|p| {
            resolve_path(
                ctx,
                &p,
                &join_key(key, "sse-customer-key-path"),
                node.line(),
            )
        })
        .transpose()?;
    let sse_alg = ne(&s.sse_customer_algorithm)
        .or_else(|| (sse_key.is_some() || sse_key_path.is_some()).then(|| "AES256".to_string()));
    Ok(S3Config {
        bucket,
        path: spath.trim_matches('/').to_string(),
        endpoint,
        region,
        access_key_id,
        secret_access_key,
        credential_source: source,
        force_path_style,
        skip_verify,
        sign_payload: sign_payload.unwrap_or(true),
        require_content_md5: require_md5.unwrap_or(true),
        storage_class,
        part_size,
        concurrency,
        sse_customer_algorithm: sse_alg,
        sse_customer_key: sse_key,
        sse_customer_key_path: sse_key_path,
        sse_kms_key_id: ne(&s.sse_kms_key_id),
    })
}
