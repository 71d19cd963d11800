//! Litestream's inline `ReplicaSettings`: the replica keys that may be given per replica or
//! once at the top level as defaults. Owns reading them into [`RawSettings`] (strings keep
//! their `Val` so empties can be explained), the keys of backends walship does not implement
//! (recognised, not kept), and Litestream's merge rule (the replica's own value, else the
//! global one).
//!
//! Must never apply defaults, validate a combination or decide the replica type (replica.rs
//! and s3.rs do that after merging), and never derive `Debug` on [`RawSettings`]: it holds
//! access keys, the SSE-C key, the Azure account key and SAS token as plain text.

use std::time::Duration;

use super::error::ConfigError;
use super::fields::{Ctx, Fields, Val};

/// Replica settings that may be given per replica or once at the top level (Litestream's
/// inline `ReplicaSettings`). Strings keep their `Val` so empties can be explained.
#[derive(Default, Clone)]
pub(crate) struct RawSettings {
    pub sync_interval: Option<Duration>,
    pub validation_interval: Option<Duration>,
    pub max_sync_ltx_files: Option<i64>,
    pub auto_recover: Option<bool>,
    pub access_key_id: Option<Val>,
    pub secret_access_key: Option<Val>,
    pub region: Option<Val>,
    pub bucket: Option<Val>,
    pub endpoint: Option<Val>,
    pub force_path_style: Option<bool>,
    pub sign_payload: Option<bool>,
    pub require_content_md5: Option<bool>,
    pub skip_verify: Option<bool>,
    pub storage_class: Option<Val>,
    pub part_size: Option<u64>,
    pub concurrency: Option<i64>,
    pub sse_customer_algorithm: Option<Val>,
    pub sse_customer_key: Option<Val>,
    pub sse_customer_key_path: Option<Val>,
    pub sse_kms_key_id: Option<Val>,
    pub account_name: Option<Val>,
    pub account_key: Option<Val>,
    pub sas_token: Option<Val>,
    pub age_line: Option<usize>,
}

/// Settings of backends walship does not implement (sftp, webdav, nats, oss): recognised so
/// they do not warn as unknown, not kept.
const OTHER_BACKEND_KEYS: &[&str] = &[
    "host",
    "user",
    "password",
    "key-path",
    "concurrent-writes",
    "host-key",
    "webdav-url",
    "webdav-username",
    "webdav-password",
    "jwt",
    "seed",
    "creds",
    "nkey",
    "username",
    "token",
    "tls",
    "root-cas",
    "client-cert",
    "client-key",
    "max-reconnects",
    "reconnect-wait",
    "timeout",
];

pub(crate) fn read_settings(ctx: &Ctx<'_>, f: &mut Fields<'_>) -> Result<RawSettings, ConfigError> {
    let mut r = RawSettings::default();
    macro_rules! get {
        ($key:literal, $method:ident) => {
            match f.take($key) {
                Some((n, k)) => ctx.$method(n, &k)?,
                None => None,
            }
        };
    }
    macro_rules! val {
        ($key:literal, $method:ident) => {
            match f.take($key) {
                Some((n, k)) => Some(ctx.$method(n, &k)?),
                None => None,
            }
        };
    }
    r.sync_interval = get!("sync-interval", positive_duration);
    r.validation_interval = get!("validation-interval", positive_duration);
    r.max_sync_ltx_files = get!("max-sync-ltx-files", int);
    r.auto_recover = get!("auto-recover", bool);
    r.access_key_id = val!("access-key-id", secret);
    r.secret_access_key = val!("secret-access-key", secret);
    r.region = val!("region", string);
    r.bucket = val!("bucket", string);
    r.endpoint = val!("endpoint", string);
    r.force_path_style = get!("force-path-style", bool);
    r.sign_payload = get!("sign-payload", bool);
    r.require_content_md5 = get!("require-content-md5", bool);
    r.skip_verify = get!("skip-verify", bool);
    r.storage_class = val!("storage-class", string);
    r.part_size = get!("part-size", byte_size);
    r.concurrency = get!("concurrency", int);
    r.sse_customer_algorithm = val!("sse-customer-algorithm", string);
    r.sse_customer_key = val!("sse-customer-key", secret);
    r.sse_customer_key_path = val!("sse-customer-key-path", string);
    r.sse_kms_key_id = val!("sse-kms-key-id", string);
    r.account_name = val!("account-name", string);
    r.account_key = val!("account-key", secret);
    r.sas_token = val!("sas-token", secret);
    f.ignore(OTHER_BACKEND_KEYS);
    if let Some((n, _)) = f.take("age") {
        if !n.is_null() {
            r.age_line = Some(n.line());
        }
    }
    Ok(r)
}

/// Litestream's `SetDefaults`: the replica's own non-empty value, else the global one.
pub(crate) fn merge(own: RawSettings, g: &RawSettings) -> RawSettings {
    fn s(own: Option<Val>, g: &Option<Val>) -> Option<Val> {
        match own {
            Some(v) if !v.text.is_empty() => Some(v),
            other => g.clone().filter(|v| !v.text.is_empty()).or(other),
        }
    }
    RawSettings {
        sync_interval: own.sync_interval.or(g.sync_interval),
        validation_interval: own.validation_interval.or(g.validation_interval),
        max_sync_ltx_files: own.max_sync_ltx_files.or(g.max_sync_ltx_files),
        auto_recover: own.auto_recover.or(g.auto_recover),
        access_key_id: s(own.access_key_id, &g.access_key_id),
        secret_access_key: s(own.secret_access_key, &g.secret_access_key),
        region: s(own.region, &g.region),
        bucket: s(own.bucket, &g.bucket),
        endpoint: s(own.endpoint, &g.endpoint),
        force_path_style: own.force_path_style.or(g.force_path_style),
        sign_payload: own.sign_payload.or(g.sign_payload),
        require_content_md5: own.require_content_md5.or(g.require_content_md5),
        // Litestream ORs skip-verify: a global `true` cannot be switched off per replica.
        skip_verify: Some(own.skip_verify.unwrap_or(false) || g.skip_verify.unwrap_or(false)),
        storage_class: s(own.storage_class, &g.storage_class),
        part_size: own.part_size.or(g.part_size),
        concurrency: own.concurrency.or(g.concurrency),
        sse_customer_algorithm: s(own.sse_customer_algorithm, &g.sse_customer_algorithm),
        sse_customer_key: s(own.sse_customer_key, &g.sse_customer_key),
        sse_customer_key_path: s(own.sse_customer_key_path, &g.sse_customer_key_path),
        sse_kms_key_id: s(own.sse_kms_key_id, &g.sse_kms_key_id),
        account_name: s(own.account_name, &g.account_name),
        account_key: s(own.account_key, &g.account_key),
        sas_token: s(own.sas_token, &g.sas_token),
        age_line: own.age_line.or(g.age_line),
    }
}
