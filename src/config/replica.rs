//! One database's replica (`replica:` / `replicas[0]`, or `WALSHIP_REPLICA_URL`): merges its
//! settings with the global ones, reconciles `url:` with `type:`/`path:`/`bucket:`, picks the
//! backend from the URL scheme or `type:`, and builds file replicas (S3 is in s3.rs, GCS and
//! Azure in cloud.rs).
//! Unsupported and unknown backends are rejected here.
//!
//! Must never use the network or touch the replica, and never put a secret or an unredacted
//! URL (which may carry `user:password@`) in an error or a warning: URLs go through
//! [`url::redact`].

use super::cloud::{build_abs, build_gcs, Given};
use super::error::ConfigError;
use super::fields::{join_key, missing, ne, Ctx, Fields, Val};
use super::paths::resolve_path;
use super::s3::build_s3;
use super::settings::{merge, read_settings, RawSettings};
use super::types::*;
use super::url;
use super::yaml::Node;

pub(crate) fn build_replica(
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
        "gs" | "gcs" | "abs" => {
            let given = Given {
                key,
                node,
                s: &s,
                path: &path,
                url_v: &url_v,
                url: parsed_url.as_ref(),
                own_bucket,
            };
            if kind == "abs" {
                ReplicaKind::Abs(build_abs(ctx, &given)?)
            } else {
                ReplicaKind::Gcs(build_gcs(ctx, &given)?)
            }
        }
        "sftp" | "webdav" | "nats" | "oss" => {
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

/// The replica of `WALSHIP_REPLICA_URL` (a one-key `url:` mapping, no global settings).
pub(crate) fn build_replica_for_env(
    ctx: &mut Ctx<'_>,
    node: &Node,
) -> Result<ReplicaConfig, ConfigError> {
    build_replica(ctx, node, "replica", &RawSettings::default())
}
