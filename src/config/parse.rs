//! The litestream.yml schema: walks the YAML tree, applies Litestream 0.5's defaults, merge
//! rules and validations, and builds the typed [`Config`].

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::error::ConfigError;
use super::fields::{join_key, Ctx, Fields, Val};
use super::types::*;
use super::url;
use super::yaml::Node;
use super::{Config, ConfigSource};

/// Replica settings that may be given per replica or once at the top level (Litestream's
/// inline `ReplicaSettings`). Strings keep their `Val` so empties can be explained.
#[derive(Default, Clone)]
pub(crate) struct RawSettings {
    sync_interval: Option<Duration>,
    validation_interval: Option<Duration>,
    max_sync_ltx_files: Option<i64>,
    auto_recover: Option<bool>,
    access_key_id: Option<Val>,
    secret_access_key: Option<Val>,
    region: Option<Val>,
    bucket: Option<Val>,
    endpoint: Option<Val>,
    force_path_style: Option<bool>,
    sign_payload: Option<bool>,
    require_content_md5: Option<bool>,
    skip_verify: Option<bool>,
    storage_class: Option<Val>,
    part_size: Option<u64>,
    concurrency: Option<i64>,
    sse_customer_algorithm: Option<Val>,
    sse_customer_key: Option<Val>,
    sse_customer_key_path: Option<Val>,
    sse_kms_key_id: Option<Val>,
    age_line: Option<usize>,
}

/// Settings of backends walship does not implement (abs, sftp, webdav, nats): recognised so
/// they do not warn as unknown, not kept.
const OTHER_BACKEND_KEYS: &[&str] = &[
    "account-name",
    "account-key",
    "sas-token",
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

fn read_settings(ctx: &Ctx<'_>, f: &mut Fields<'_>) -> Result<RawSettings, ConfigError> {
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
    f.ignore(OTHER_BACKEND_KEYS);
    if let Some((n, _)) = f.take("age") {
        if !n.is_null() {
            r.age_line = Some(n.line());
        }
    }
    Ok(r)
}

/// Litestream's `SetDefaults`: the replica's own non-empty value, else the global one.
fn merge(own: RawSettings, g: &RawSettings) -> RawSettings {
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
        age_line: own.age_line.or(g.age_line),
    }
}

fn ne(v: &Option<Val>) -> Option<String> {
    v.as_ref().and_then(|v| v.non_empty()).map(str::to_string)
}

/// Lexically normalise an absolute path (Go's `filepath.Clean`, as `filepath.Abs` does).
pub(crate) fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `~` / `~/x` → `$HOME/x`; relative → `base_dir/x` (the process's working directory for
/// files, like Litestream's `filepath.Abs`); then cleaned.
pub(crate) fn resolve_path(
    ctx: &Ctx<'_>,
    s: &str,
    key: &str,
    line: usize,
) -> Result<PathBuf, ConfigError> {
    let p = if s == "~" || s.starts_with("~/") {
        let home = ctx.env("HOME").ok_or_else(|| ConfigError::InvalidValue {
            at: ctx.at(line),
            key: key.into(),
            message: format!("{s:?} starts with ~ but HOME is not set; write an absolute path"),
        })?;
        PathBuf::from(home).join(s.trim_start_matches('~').trim_start_matches('/'))
    } else {
        PathBuf::from(s)
    };
    Ok(clean(&if p.is_absolute() {
        p
    } else {
        ctx.base_dir.join(p)
    }))
}

fn missing(ctx: &Ctx<'_>, v: Option<&Val>, key: String, line: usize, hint: &str) -> ConfigError {
    let (key, line) = v.map_or((key, line), |v| (v.key.clone(), v.line));
    ConfigError::missing(ctx.at(line), key, hint, ctx.unset_on(line))
}

fn query_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

fn build_replica(
    ctx: &mut Ctx<'_>,
    node: &Node,
    key: &str,
    global: &RawSettings,
) -> Result<ReplicaConfig, ConfigError> {
    let mut f = Fields::of(ctx, node, key)?;
    let ty = match f.take("type") {
        Some((n, k)) => Some(ctx.string(n, &k)?),
        None => None,
    };
    let name = match f.take("name") {
        Some((n, k)) => Some(ctx.string(n, &k)?),
        None => None,
    };
    let path = match f.take("path") {
        Some((n, k)) => Some(ctx.string(n, &k)?),
        None => None,
    };
    let url_v = match f.take("url") {
        Some((n, k)) => Some(ctx.string(n, &k)?),
        None => None,
    };
    let retention = match f.take("retention") {
        Some((n, k)) => ctx.positive_duration(n, &k)?,
        None => None,
    };
    let own = read_settings(ctx, &mut f)?;
    let own_bucket = own.bucket.as_ref().and_then(|v| v.non_empty()).is_some();
    f.finish(ctx);
    let s = merge(own, global);

    if let Some(line) = s.age_line {
        return Err(ConfigError::InvalidValue {
            at: ctx.at(line),
            key: join_key(key, "age"),
            message: "age encryption is not supported (Litestream 0.5 rejects it too); remove the `age:` section".into(),
        });
    }
    let path_s = ne(&path);
    let url_s = ne(&url_v);
    let at_line = |v: &Option<Val>| v.as_ref().map_or(node.line(), |v| v.line);
    if let Some(p) = &path_s {
        if url::is_url(p) {
            return Err(ConfigError::Conflict {
                at: ctx.at(at_line(&path)),
                key: join_key(key, "path"),
                message: format!(
                    "{:?} is a URL; put it in `url:` instead of `path:`",
                    url::redact(p)
                ),
            });
        }
    }
    let parsed_url = match &url_s {
        Some(u) => Some(url::parse(u).map_err(|reason| ConfigError::InvalidUrl {
            at: ctx.at(at_line(&url_v)),
            key: join_key(key, "url"),
            url: url::redact(u),
            reason,
        })?),
        None => None,
    };
    let declared = ne(&ty).map(|t| t.to_ascii_lowercase());
    let kind = match (&parsed_url, &declared) {
        (Some(u), d) => {
            let scheme = if u.scheme == "webdavs" {
                "webdav".to_string()
            } else {
                u.scheme.clone()
            };
            if let Some(d) = d {
                let same = d == &scheme || (d == "gcs" && scheme == "gs");
                if !same {
                    ctx.warn(at_line(&ty), format!("`{}` is {d:?} but the url scheme is {scheme:?}; the url wins (as in Litestream)", join_key(key, "type")));
                }
            }
            scheme
        }
        (None, Some(d)) => d.clone(),
        (None, None) => "file".to_string(),
    };
    let conflict = |what: &str, line: usize| {
        ConfigError::Conflict {
        at: ctx.at(line),
        key: key.to_string(),
        message: format!("cannot set both `url` and `{what}` on a {kind} replica; put everything in the url, or drop the url"),
    }
    };

    let replica_kind = match kind.as_str() {
        "file" => {
            if url_s.is_some() && path_s.is_some() {
                return Err(conflict("path", at_line(&path)));
            }
            let (p, src) = match (&parsed_url, &path_s) {
                (Some(u), _) => (u.path.clone(), &url_v),
                (None, Some(p)) => (p.clone(), &path),
                (None, None) => {
                    let v = path.as_ref().or(url_v.as_ref());
                    return Err(missing(
                        ctx,
                        v,
                        join_key(key, "path"),
                        node.line(),
                        "a file replica needs `path:` (a directory) or `url: file:///absolute/dir`",
                    ));
                }
            };
            let line = at_line(src);
            ReplicaKind::File {
                path: resolve_path(ctx, &p, &join_key(key, "path"), line)?,
            }
        }
        "s3" => ReplicaKind::S3(build_s3(
            ctx,
            key,
            node,
            &s,
            &path,
            &url_v,
            parsed_url.as_ref(),
            own_bucket,
        )?),
        "gs" | "gcs" => {
            if url_s.is_some() && path_s.is_some() {
                return Err(conflict("path", at_line(&path)));
            }
            if url_s.is_some() && own_bucket {
                return Err(conflict("bucket", node.line()));
            }
            let mut bucket = ne(&s.bucket);
            let mut gpath = path_s.clone().unwrap_or_default();
            if let Some(u) = &parsed_url {
                bucket = bucket.or_else(|| Some(u.host.clone()).filter(|h| !h.is_empty()));
                gpath = u.path.clone();
            }
            let Some(bucket) = bucket else {
                return Err(missing(
                    ctx,
                    s.bucket.as_ref(),
                    join_key(key, "bucket"),
                    node.line(),
                    "a gs replica needs `bucket:` or `url: gs://BUCKET/path`",
                ));
            };
            ReplicaKind::Gcs(GcsConfig {
                bucket,
                path: gpath.trim_matches('/').to_string(),
                access_key_id: ne(&s.access_key_id).map(Secret::new),
                secret_access_key: ne(&s.secret_access_key).map(Secret::new),
            })
        }
        "abs" | "sftp" | "webdav" | "nats" | "oss" => {
            return Err(ConfigError::UnsupportedReplicaType {
                at: ctx.at(at_line(&ty).min(at_line(&url_v))),
                key: key.into(),
                kind,
            })
        }
        _ => {
            return Err(ConfigError::UnknownReplicaType {
                at: ctx.at(at_line(&ty).min(at_line(&url_v))),
                key: key.into(),
                kind,
            })
        }
    };
    Ok(ReplicaConfig {
        name: ne(&name).unwrap_or_else(|| replica_kind.type_name().to_string()),
        sync_interval: s.sync_interval.unwrap_or(defaults::SYNC_INTERVAL),
        retention,
        validation_interval: s.validation_interval,
        max_sync_ltx_files: s.max_sync_ltx_files.unwrap_or(defaults::MAX_SYNC_LTX_FILES),
        auto_recover: s.auto_recover.unwrap_or(false),
        kind: replica_kind,
    })
}

#[allow(clippy::too_many_arguments)]
fn build_s3(
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

fn read_snapshot(
    ctx: &mut Ctx<'_>,
    f: &mut Fields<'_>,
    base: SnapshotConfig,
) -> Result<SnapshotConfig, ConfigError> {
    let mut snap = base;
    if let Some((n, k)) = f.take("snapshot") {
        let mut sf = Fields::of(ctx, n, &k)?;
        if let Some((n, k)) = sf.take("interval") {
            snap.interval = ctx.positive_duration(n, &k)?.unwrap_or(snap.interval);
        }
        if let Some((n, k)) = sf.take("retention") {
            snap.retention = ctx.positive_duration(n, &k)?.unwrap_or(snap.retention);
        }
        sf.finish(ctx);
    }
    Ok(snap)
}

fn build_db(
    ctx: &mut Ctx<'_>,
    node: &Node,
    idx: usize,
    global: &RawSettings,
    gsnap: SnapshotConfig,
) -> Result<DbConfig, ConfigError> {
    let key = format!("dbs[{idx}]");
    let mut f = Fields::of(ctx, node, &key)?;
    let path = match f.take("path") {
        Some((n, k)) => Some(ctx.string(n, &k)?),
        None => None,
    };
    let dir = match f.take("dir") {
        Some((n, k)) => Some(ctx.string(n, &k)?),
        None => None,
    };
    let pattern = match f.take("pattern") {
        Some((n, k)) => Some(ctx.string(n, &k)?),
        None => None,
    };
    f.ignore(&["recursive", "watch", "meta-dir"]);
    let path = match (path, ne(&dir).or(ne(&pattern))) {
        (Some(p), None) if !p.text.is_empty() => p,
        (Some(p), Some(_)) if !p.text.is_empty() => {
            return Err(ConfigError::Conflict {
                at: ctx.at(node.line()),
                key,
                message: "cannot set both `path` and `dir`/`pattern`; use `path:` for one database"
                    .into(),
            })
        }
        (_, Some(_)) => {
            return Err(ConfigError::DirectoryNotSupported {
                at: ctx.at(node.line()),
                key,
            })
        }
        (path, None) => {
            return Err(missing(
                ctx,
                path.as_ref(),
                join_key(&key, "path"),
                node.line(),
                "each entry under `dbs:` needs `path:` with the database file",
            ))
        }
    };
    let raw = path
        .text
        .strip_prefix("sqlite3://")
        .or_else(|| path.text.strip_prefix("sqlite://"))
        .unwrap_or(&path.text);
    let db_path = resolve_path(ctx, raw, &path.key, path.line)?;
    let snapshot = read_snapshot(ctx, &mut f, gsnap)?;
    let mut db = DbConfig::with_defaults(db_path, key.clone(), placeholder_replica(), snapshot);
    if let Some((n, k)) = f.take("meta-path") {
        let v = ctx.string(n, &k)?;
        if let Some(t) = v.non_empty() {
            db.meta_path = Some(resolve_path(ctx, t, &k, v.line)?);
        }
    }
    macro_rules! set {
        ($key:literal, $method:ident, $field:expr) => {
            if let Some((n, k)) = f.take($key) {
                if let Some(v) = ctx.$method(n, &k)? {
                    $field = v;
                }
            }
        };
    }
    set!("monitor-interval", positive_duration, db.monitor_interval);
    set!("checkpoint-interval", duration, db.checkpoint_interval);
    set!("busy-timeout", duration, db.busy_timeout);
    set!(
        "min-checkpoint-page-count",
        int,
        db.min_checkpoint_page_count
    );
    set!("truncate-page-n", int, db.truncate_page_n);
    set!("max-sync-wal-bytes", int, db.max_sync_wal_bytes);
    set!(
        "restore-if-db-not-exists",
        bool,
        db.restore_if_db_not_exists
    );
    if let Some((n, k)) = f.take("max-checkpoint-page-count") {
        db.max_checkpoint_page_count = ctx.int(n, &k)?;
    }

    let single = f.take("replica");
    let list = f.take("replicas");
    f.finish(ctx);
    let single = single.filter(|(n, _)| !n.is_null());
    let list = list.filter(|(n, _)| !n.is_null());
    let replica = match (single, list) {
        (Some(_), Some((n, _))) => {
            return Err(ConfigError::Conflict {
                at: ctx.at(n.line()),
                key,
                message: "cannot set both `replica` and `replicas`; use `replica:` (Litestream 0.5 allows one replica per database)".into(),
            })
        }
        (Some((n, k)), None) => build_replica(ctx, n, &k, global)?,
        (None, Some((n, k))) => match n {
            Node::Seq { items, .. } if items.len() == 1 => build_replica(ctx, &items[0], &format!("{k}[0]"), global)?,
            Node::Seq { items, .. } if items.is_empty() => {
                return Err(ConfigError::missing(ctx.at(n.line()), k, "`replicas:` is an empty list; add one replica", vec![]))
            }
            Node::Seq { items, .. } => {
                return Err(ConfigError::Conflict {
                    at: ctx.at(items[1].line()),
                    key: k,
                    message: format!("{} replicas are listed, but Litestream 0.5 (and walship) allow exactly one per database; keep one", items.len()),
                })
            }
            other => {
                return Err(ConfigError::InvalidValue {
                    at: ctx.at(other.line()),
                    key: k,
                    message: format!("expected a list (lines starting with `- `), found {}; or use `replica:` for a single replica", other.kind_name()),
                })
            }
        },
        (None, None) => {
            return Err(ConfigError::missing(ctx.at(node.line()), join_key(&key, "replica"),
                "each database needs a `replica:` with a `url:` (e.g. s3://bucket/path) or a `type:`", vec![]))
        }
    };
    db.replica = replica;
    Ok(db)
}

fn placeholder_replica() -> ReplicaConfig {
    ReplicaConfig {
        name: String::new(),
        sync_interval: defaults::SYNC_INTERVAL,
        retention: None,
        validation_interval: None,
        max_sync_ltx_files: defaults::MAX_SYNC_LTX_FILES,
        auto_recover: false,
        kind: ReplicaKind::File {
            path: PathBuf::new(),
        },
    }
}

/// Build a [`Config`] from the (expanded) YAML tree.
pub(crate) fn build(
    ctx: &mut Ctx<'_>,
    root: Option<&Node>,
    source: ConfigSource,
) -> Result<Config, ConfigError> {
    let mut cfg = Config::empty(source);
    let null = Node::Scalar {
        text: String::new(),
        plain: true,
        tag: None,
        line: 0,
    };
    let root = root.unwrap_or(&null);
    let mut f = Fields::of(ctx, root, "")?;
    let global = read_settings(ctx, &mut f)?;

    macro_rules! set {
        ($fields:expr, $key:literal, $method:ident, $field:expr) => {
            if let Some((n, k)) = $fields.take($key) {
                if let Some(v) = ctx.$method(n, &k)? {
                    $field = v;
                }
            }
        };
    }
    macro_rules! opt_string {
        ($fields:expr, $key:literal) => {
            match $fields.take($key) {
                Some((n, k)) => ctx.string(n, &k)?.non_empty().map(str::to_string),
                None => None,
            }
        };
    }
    cfg.snapshot = read_snapshot(ctx, &mut f, SnapshotConfig::default())?;
    cfg.addr = opt_string!(f, "addr");
    cfg.mcp_addr = opt_string!(f, "mcp-addr");
    cfg.exec = opt_string!(f, "exec");
    if cfg.exec.is_some() {
        let line = root_line_of(root, "exec");
        ctx.warn(line, "`exec` is ignored: walship runs inside your application, so there is no subprocess to start");
    }
    set!(f, "l0-retention", duration, cfg.l0_retention);
    set!(
        f,
        "l0-retention-check-interval",
        positive_duration,
        cfg.l0_retention_check_interval
    );
    set!(
        f,
        "shutdown-sync-timeout",
        duration,
        cfg.shutdown_sync_timeout
    );
    set!(
        f,
        "shutdown-sync-interval",
        positive_duration,
        cfg.shutdown_sync_interval
    );
    set!(f, "verify-compaction", bool, cfg.verify_compaction);
    cfg.heartbeat_url = opt_string!(f, "heartbeat-url");
    if let Some(u) = &cfg.heartbeat_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(ConfigError::InvalidValue {
                at: ctx.at(root_line_of(root, "heartbeat-url")),
                key: "heartbeat-url".into(),
                message: "must be an http:// or https:// URL".into(),
            });
        }
    }
    if let Some((n, k)) = f.take("heartbeat-interval") {
        if let Some(d) = ctx.duration(n, &k)? {
            if d < defaults::MIN_HEARTBEAT_INTERVAL {
                return Err(ConfigError::InvalidDuration {
                    at: ctx.at(n.line()),
                    key: k,
                    value: super::duration::format_go_duration(d),
                    reason: "must be at least 1m".into(),
                });
            }
            cfg.heartbeat_interval = d;
        }
    }
    if let Some((n, k)) = f.take("levels") {
        if !n.is_null() {
            let Node::Seq { items, .. } = n else {
                return Err(ConfigError::InvalidValue {
                    at: ctx.at(n.line()),
                    key: k,
                    message: format!(
                        "expected a list of `- interval: ...` entries, found {}",
                        n.kind_name()
                    ),
                });
            };
            cfg.levels.clear();
            for (i, item) in items.iter().enumerate() {
                let mut lf = Fields::of(ctx, item, &format!("{k}[{i}]"))?;
                let d = match lf.take("interval") {
                    Some((n, k)) => ctx.positive_duration(n, &k)?,
                    None => None,
                };
                let d = d.ok_or_else(|| {
                    ConfigError::missing(
                        ctx.at(item.line()),
                        format!("{k}[{i}].interval"),
                        "each compaction level needs `interval:` (e.g. 30s, 5m, 1h)",
                        ctx.unset_on(item.line()),
                    )
                })?;
                lf.finish(ctx);
                cfg.levels.push(d);
            }
        }
    }
    for (section, handler) in [
        ("validation", 0),
        ("retention", 1),
        ("logging", 2),
        ("socket", 3),
    ] {
        let Some((n, k)) = f.take(section) else {
            continue;
        };
        let mut sf = Fields::of(ctx, n, &k)?;
        match handler {
            0 => {
                if let Some((n, k)) = sf.take("interval") {
                    cfg.validation_interval = ctx.positive_duration(n, &k)?;
                }
            }
            1 => set!(sf, "enabled", bool, cfg.retention_enabled),
            2 => {
                cfg.logging.level = opt_string!(sf, "level");
                cfg.logging.kind = opt_string!(sf, "type");
                set!(sf, "stderr", bool, cfg.logging.stderr);
                set!(sf, "source", bool, cfg.logging.source);
            }
            _ => {
                set!(sf, "enabled", bool, cfg.socket.enabled);
                if let Some(p) = opt_string!(sf, "path") {
                    cfg.socket.path = p;
                }
                if let Some((n, k)) = sf.take("permissions") {
                    if let Some(v) = ctx.int(n, &k)? {
                        cfg.socket.permissions = u32::try_from(v).unwrap_or(0o600);
                    }
                }
            }
        }
        sf.finish(ctx);
    }

    if let Some((n, k)) = f.take("dbs") {
        match n {
            Node::Seq { items, .. } => {
                for (i, item) in items.iter().enumerate() {
                    let db = build_db(ctx, item, i, &global, cfg.snapshot)?;
                    if let Some(prev) = cfg.dbs.iter().find(|d| d.path == db.path) {
                        return Err(ConfigError::Conflict {
                            at: ctx.at(item.line()),
                            key: db.key.clone(),
                            message: format!(
                                "{} is already listed as {}; list each database once",
                                db.path.display(),
                                prev.key
                            ),
                        });
                    }
                    cfg.dbs.push(db);
                }
            }
            n if n.is_null() => {}
            other => {
                return Err(ConfigError::InvalidValue {
                    at: ctx.at(other.line()),
                    key: k,
                    message: format!(
                    "expected a list of databases (lines starting with `- path: ...`), found {}",
                    other.kind_name()
                ),
                })
            }
        }
    }
    f.finish(ctx);
    if let Some(line) = global.age_line {
        return Err(ConfigError::InvalidValue {
            at: ctx.at(line),
            key: "age".into(),
            message: "age encryption is not supported (Litestream 0.5 rejects it too); remove the `age:` section".into(),
        });
    }
    if cfg.dbs.is_empty() {
        ctx.warn(root.line(), "no databases are listed under `dbs:`; walship will not replicate anything from this file");
    }
    Ok(cfg)
}

fn root_line_of(root: &Node, key: &str) -> usize {
    match root {
        Node::Map { entries, .. } => entries
            .iter()
            .find(|(k, _)| matches!(k, Node::Scalar { text, .. } if text == key))
            .map_or(0, |(k, _)| k.line()),
        _ => 0,
    }
}

/// The replica of `WALSHIP_REPLICA_URL` (a one-key `url:` mapping, no global settings).
pub(crate) fn build_replica_for_env(
    ctx: &mut Ctx<'_>,
    node: &Node,
) -> Result<ReplicaConfig, ConfigError> {
    build_replica(ctx, node, "replica", &RawSettings::default())
}
