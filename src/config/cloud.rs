//! The Google Cloud Storage (`gs`, alias `gcs`) and Azure Blob Storage (`abs`) replicas:
//! container/bucket and path from the keys or the URL (`gs://bucket/path`,
//! `abs://[account@]container/path`), Litestream 0.5's Azure credential order (`sas-token`, else
//! `LITESTREAM_AZURE_SAS_TOKEN`, else `account-key`, else `LITESTREAM_AZURE_ACCOUNT_KEY`, else the
//! Azure credential chain), and what Google's clients read from the environment
//! (`GOOGLE_APPLICATION_CREDENTIALS`, `STORAGE_EMULATOR_HOST`).
//!
//! Must never use the network or read a credential file (the storage backend does, on first
//! use), read only the environment passed in [`Ctx`], and never put a SAS token, account key or
//! HMAC secret in an error: they are wrapped in [`Secret`] as soon as they are read.

use std::path::PathBuf;

use super::error::ConfigError;
use super::fields::{join_key, missing, ne, Ctx, Val};
use super::settings::RawSettings;
use super::types::*;
use super::url;
use super::yaml::Node;

/// The pieces of a replica the two builders share.
pub(crate) struct Given<'a> {
    pub key: &'a str,
    pub node: &'a Node,
    pub s: &'a RawSettings,
    pub path: &'a Option<Val>,
    pub url_v: &'a Option<Val>,
    pub url: Option<&'a url::ReplicaUrl>,
    /// `bucket:` was given on the replica itself (not inherited from the top level).
    pub own_bucket: bool,
}

impl Given<'_> {
    fn conflict(&self, ctx: &Ctx<'_>, kind: &str, what: &str, line: usize) -> ConfigError {
        ConfigError::Conflict {
            at: ctx.at(line),
            key: self.key.to_string(),
            message: format!("cannot set both `url` and `{what}` on a {kind} replica; put the bucket and path in the url, or drop the url"),
        }
    }

    /// Bucket (container) and cleaned path, from the keys or the url (Litestream: the url
    /// cannot be combined with `path` or a replica-level `bucket`).
    fn bucket_and_path(
        &self,
        ctx: &Ctx<'_>,
        kind: &str,
        hint: &str,
    ) -> Result<(String, String), ConfigError> {
        let line = |v: &Option<Val>| v.as_ref().map_or(self.node.line(), |v| v.line);
        if self.url.is_some() && ne(self.path).is_some() {
            return Err(self.conflict(ctx, kind, "path", line(self.path)));
        }
        if self.url.is_some() && self.own_bucket {
            return Err(self.conflict(ctx, kind, "bucket", line(&self.s.bucket)));
        }
        let mut bucket = ne(&self.s.bucket);
        let mut path = ne(self.path).unwrap_or_default();
        if let Some(u) = self.url {
            bucket = bucket.or_else(|| Some(u.host.clone()).filter(|h| !h.is_empty()));
            path = u.path.clone();
        }
        let Some(bucket) = bucket else {
            return Err(missing(
                ctx,
                self.s.bucket.as_ref(),
                join_key(self.key, "bucket"),
                self.node.line(),
                hint,
            ));
        };
        let path = url::clean_path(&path).trim_matches('/').to_string();
        Ok((bucket, path))
    }
}

/// `type: gs` / `gcs`. HMAC keys (`access-key-id` / `secret-access-key`, no environment
/// fallback: those variables belong to AWS) select the S3-interoperable API; otherwise
/// Google's own API with Application Default Credentials.
pub(crate) fn build_gcs(ctx: &Ctx<'_>, g: &Given<'_>) -> Result<GcsConfig, ConfigError> {
    let (bucket, path) = g.bucket_and_path(
        ctx,
        "gs",
        "a gs replica needs `bucket:` or `url: gs://BUCKET/path`",
    )?;
    let access_key_id = ne(&g.s.access_key_id).map(Secret::new);
    let secret_access_key = ne(&g.s.secret_access_key).map(Secret::new);
    if access_key_id.is_some() != secret_access_key.is_some() {
        let (has, lacks) = if access_key_id.is_some() {
            ("an HMAC access key id", "`secret-access-key`")
        } else {
            ("an HMAC secret", "`access-key-id`")
        };
        return Err(ConfigError::Conflict {
            at: ctx.at(g.node.line()),
            key: g.key.into(),
            message: format!("found {has} but no matching key; set {lacks} too (HMAC keys use GCS's S3-interoperable API), or remove both to use Google's own credentials (GOOGLE_APPLICATION_CREDENTIALS or the metadata server)"),
        });
    }
    Ok(GcsConfig {
        bucket,
        path,
        access_key_id,
        secret_access_key,
        application_credentials: ctx.env("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from),
        emulator_host: ctx
            .env("STORAGE_EMULATOR_HOST")
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty()),
        skip_verify: g.s.skip_verify.unwrap_or(false),
    })
}

/// The variables Azure's credential chain reads (service principal, workload identity,
/// managed identity endpoint), as object_store's chain uses them.
pub(crate) const AZURE_IDENTITY_VARS: [&str; 6] = [
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "MSI_ENDPOINT",
];

/// `type: abs`, with Litestream 0.5's keys and credential order.
pub(crate) fn build_abs(ctx: &Ctx<'_>, g: &Given<'_>) -> Result<AbsConfig, ConfigError> {
    if let Some(u) = g.url {
        if u.has_password {
            return Err(ConfigError::InvalidUrl {
                at: ctx.at(g.url_v.as_ref().map_or(g.node.line(), |v| v.line)),
                key: join_key(g.key, "url"),
                url: url::redact(&g.url_v.as_ref().map(|v| v.text.clone()).unwrap_or_default()),
                reason: "an abs URL takes only the storage account name before `@` (abs://ACCOUNT@container/path); give the key as `account-key:` or LITESTREAM_AZURE_ACCOUNT_KEY, or a SAS token as `sas-token:`".into(),
            });
        }
    }
    let (container, path) = g.bucket_and_path(
        ctx,
        "abs",
        "an abs replica needs `bucket:` (the container) or `url: abs://ACCOUNT@CONTAINER/path`",
    )?;
    let account_name =
        ne(&g.s.account_name).or_else(|| g.url.map(|u| u.user.clone()).filter(|u| !u.is_empty()));
    let endpoint = ne(&g.s.endpoint).map(|e| url::ensure_endpoint_scheme(e.trim_end_matches('/')));
    if account_name.is_none() && endpoint.is_none() {
        return Err(missing(
            ctx,
            g.s.account_name.as_ref(),
            join_key(g.key, "account-name"),
            g.node.line(),
            "an abs replica needs the storage account: `account-name:`, `url: abs://ACCOUNT@container/path`, or an `endpoint:` URL",
        ));
    }
    let (sas_token, account_key, source) = if let Some(t) = ne(&g.s.sas_token) {
        (Some(t), None, AbsCredentialSource::SasToken)
    } else if let Some(t) = ctx.env("LITESTREAM_AZURE_SAS_TOKEN") {
        (Some(t), None, AbsCredentialSource::SasTokenEnv)
    } else if let Some(k) = ne(&g.s.account_key) {
        (None, Some(k), AbsCredentialSource::AccountKey)
    } else if let Some(k) = ctx.env("LITESTREAM_AZURE_ACCOUNT_KEY") {
        (None, Some(k), AbsCredentialSource::AccountKeyEnv)
    } else {
        (None, None, AbsCredentialSource::DefaultChain)
    };
    // A key given through a variable that is unset: say so rather than silently falling
    // through to the credential chain.
    for (v, what) in [
        (&g.s.sas_token, "SAS token"),
        (&g.s.account_key, "account key"),
    ] {
        if let Some(v) = v {
            let unset = ctx.unset_on(v.line);
            if v.text.is_empty() && !unset.is_empty() && source == AbsCredentialSource::DefaultChain
            {
                return Err(ConfigError::missing(
                    ctx.at(v.line),
                    v.key.clone(),
                    format!("the {what} came out empty and LITESTREAM_AZURE_SAS_TOKEN / LITESTREAM_AZURE_ACCOUNT_KEY are not set either"),
                    unset,
                ));
            }
        }
    }
    if account_key.is_some() && account_name.is_none() {
        return Err(missing(
            ctx,
            g.s.account_name.as_ref(),
            join_key(g.key, "account-name"),
            g.node.line(),
            "an account key signs requests for one storage account: set `account-name:` (or use abs://ACCOUNT@container/path)",
        ));
    }
    let bad_char = |c: char| !(c.is_ascii_alphanumeric() || c == '-');
    if container.chars().any(bad_char) {
        return Err(ConfigError::InvalidValue {
            at: ctx.at(g.s.bucket.as_ref().map_or(g.node.line(), |v| v.line)),
            key: join_key(g.key, "bucket"),
            message: format!("{container:?} is not an Azure container name: use lower-case letters, digits and `-` (3 to 63 characters)"),
        });
    }
    let identity_env = if source == AbsCredentialSource::DefaultChain {
        AZURE_IDENTITY_VARS
            .iter()
            .filter_map(|v| ctx.env(v).map(|x| (v.to_string(), Secret::new(x))))
            .collect()
    } else {
        Vec::new()
    };
    Ok(AbsConfig {
        identity_env,
        account_name,
        container,
        path,
        endpoint,
        sas_token: sas_token.map(|t| Secret::new(t.trim_start_matches('?'))),
        account_key: account_key.map(Secret::new),
        credential_source: source,
        skip_verify: g.s.skip_verify.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{AbsCredentialSource, Config, ReplicaKind};

    const SAS: &str = "sv=2022-11-02&ss=b&srt=sco&sp=rwdlac&se=2030-01-01T00:00:00Z&sig=c2lnbmF0dXJlLXNlY3JldA%3D%3D";
    const KEY: &str = "YWNjb3VudC1rZXktc2VjcmV0LXZhbHVlLTAxMjM0NTY3ODk=";

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<ReplicaKind, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let look = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Config::parse_with_env(text, Path::new("/srv"), &look)
            .map(|c| c.dbs[0].replica.kind.clone())
            .map_err(|e| format!("{e} {e:?}"))
    }

    fn abs(text: &str, env: &[(&str, &str)]) -> crate::config::AbsConfig {
        match parse(text, env).unwrap() {
            ReplicaKind::Abs(a) => a,
            other => panic!("{other:?}"),
        }
    }

    const GUIDE_ABS: &str = "dbs:\n  - path: ./data/parako.db\n    replicas:\n      - type: abs\n        account-name: your-storage-account\n        bucket: your-container\n        path: parako/sqlite\n";

    #[test]
    fn the_guides_abs_block_and_litestreams_credential_order() {
        let a = abs(
            GUIDE_ABS,
            &[
                ("AZURE_CLIENT_ID", "cid"),
                ("AZURE_CLIENT_SECRET", "walship-client-secret-0123"),
            ],
        );
        let names: Vec<&str> = a.identity_env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"]);
        assert!(!format!("{a:?}").contains("walship-client-secret"));
        assert_eq!(a.account_name.as_deref(), Some("your-storage-account"));
        assert_eq!(
            (a.container.as_str(), a.path.as_str()),
            ("your-container", "parako/sqlite")
        );
        assert_eq!(a.endpoint, None);
        assert_eq!(a.credential_source, AbsCredentialSource::DefaultChain);
        // Environment: the SAS token wins over the account key.
        let both = [
            ("LITESTREAM_AZURE_SAS_TOKEN", SAS),
            ("LITESTREAM_AZURE_ACCOUNT_KEY", KEY),
        ];
        let a = abs(GUIDE_ABS, &both);
        assert_eq!(a.credential_source, AbsCredentialSource::SasTokenEnv);
        assert_eq!(a.sas_token.as_ref().unwrap().expose(), SAS);
        assert!(a.account_key.is_none());
        let a = abs(GUIDE_ABS, &both[1..]);
        assert_eq!(a.credential_source, AbsCredentialSource::AccountKeyEnv);
        // The file's keys win over the environment, `sas-token` over `account-key`.
        let with_key = format!("{GUIDE_ABS}        account-key: '{KEY}'\n");
        let a = abs(&with_key, &both);
        assert_eq!(
            a.credential_source,
            AbsCredentialSource::SasTokenEnv,
            "Litestream: any SAS token first"
        );
        let a = abs(&with_key, &both[1..]);
        assert_eq!(a.credential_source, AbsCredentialSource::AccountKey);
        let with_sas = format!("{with_key}        sas-token: '?{SAS}'\n");
        let a = abs(&with_sas, &both);
        assert_eq!(a.credential_source, AbsCredentialSource::SasToken);
        assert_eq!(
            a.sas_token.as_ref().unwrap().expose(),
            SAS,
            "a leading ? is dropped"
        );
        let shown = format!("{a:?}");
        assert!(
            !shown.contains("c2lnbmF0dXJl") && !shown.contains(KEY),
            "{shown}"
        );
    }

    #[test]
    fn urls_endpoints_and_global_defaults() {
        let a = abs(
            "dbs:\n  - path: /a.db\n    replica:\n      url: abs://acct@cont/a//b/\n",
            &[],
        );
        assert_eq!(
            (
                a.account_name.as_deref(),
                a.container.as_str(),
                a.path.as_str()
            ),
            (Some("acct"), "cont", "a/b")
        );
        // Top-level defaults, as Litestream's SetDefaults; an endpoint (Azurite) alone names no account.
        let a = abs(
            "account-name: devstoreaccount1\naccount-key: k\nendpoint: 127.0.0.1:10000/devstoreaccount1\ndbs:\n  - path: /a.db\n    replica:\n      type: abs\n      bucket: c\n",
            &[],
        );
        assert_eq!(
            a.endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert_eq!(a.credential_source, AbsCredentialSource::AccountKey);
        let a = abs("dbs:\n  - path: /a.db\n    replica:\n      type: abs\n      bucket: c\n      endpoint: https://x.blob.core.chinacloudapi.cn\n      sas-token: s=1\n", &[]);
        assert_eq!(a.account_name, None);
        assert_eq!(a.credential_source, AbsCredentialSource::SasToken);
    }

    #[test]
    fn abs_mistakes_are_errors_that_name_the_key() {
        let e = parse(
            "dbs:\n  - path: /a.db\n    replica:\n      type: abs\n      bucket: c\n",
            &[],
        )
        .unwrap_err();
        assert!(
            e.contains("dbs[0].replica.account-name") && e.contains("abs://ACCOUNT@"),
            "{e}"
        );
        let e = parse(
            "dbs:\n  - path: /a.db\n    replica:\n      type: abs\n      account-name: a\n",
            &[],
        )
        .unwrap_err();
        assert!(
            e.contains("dbs[0].replica.bucket") && e.contains("container"),
            "{e}"
        );
        let e = parse(
            &format!("dbs:\n  - path: /a.db\n    replica:\n      url: abs://acct:{KEY}@c/p\n"),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("account-key") && !e.contains(KEY), "{e}");
        let e = parse(&format!("dbs:\n  - path: /a.db\n    replica:\n      type: abs\n      bucket: c\n      endpoint: http://h/x\n      account-key: '{KEY}'\n"), &[]).unwrap_err();
        assert!(e.contains("account-name") && !e.contains(KEY), "{e}");
        let e = parse("dbs:\n  - path: /a.db\n    replica:\n      type: abs\n      account-name: a\n      bucket: My_Container\n", &[]).unwrap_err();
        assert!(e.contains("container name"), "{e}");
        let e = parse(
            "dbs:\n  - path: /a.db\n    replica:\n      url: abs://a@c/p\n      path: q\n",
            &[],
        )
        .unwrap_err();
        assert!(e.contains("cannot set both `url` and `path`"), "{e}");
        // A key from an unset variable is named, not silently replaced by the credential chain.
        let e = parse("dbs:\n  - path: /a.db\n    replica:\n      type: abs\n      account-name: a\n      bucket: c\n      account-key: ${AZ_KEY}\n", &[]).unwrap_err();
        assert!(e.contains("AZ_KEY") && e.contains("account-key"), "{e}");
    }

    #[test]
    fn the_guides_gcs_block_reads_googles_environment() {
        let guide = "dbs:\n  - path: ./data/parako.db\n    replicas:\n      - type: gcs\n        bucket: your-backup-bucket\n        path: parako/sqlite\n";
        let g = match parse(
            guide,
            &[
                ("GOOGLE_APPLICATION_CREDENTIALS", "/etc/sa.json"),
                ("STORAGE_EMULATOR_HOST", "127.0.0.1:4443"),
            ],
        )
        .unwrap()
        {
            ReplicaKind::Gcs(g) => g,
            other => panic!("{other:?}"),
        };
        assert!(!g.uses_hmac());
        assert_eq!(
            (g.bucket.as_str(), g.path.as_str()),
            ("your-backup-bucket", "parako/sqlite")
        );
        assert_eq!(
            g.application_credentials.as_deref(),
            Some(Path::new("/etc/sa.json"))
        );
        assert_eq!(g.emulator_host.as_deref(), Some("127.0.0.1:4443"));
        // AWS_* keys never turn a gs replica into an HMAC one.
        let g = match parse(
            guide,
            &[
                ("AWS_ACCESS_KEY_ID", "AKIA0000000000000000"),
                ("AWS_SECRET_ACCESS_KEY", "x"),
            ],
        )
        .unwrap()
        {
            ReplicaKind::Gcs(g) => g,
            other => panic!("{other:?}"),
        };
        assert!(!g.uses_hmac() && g.emulator_host.is_none());
        let e = parse("dbs:\n  - path: /a.db\n    replica:\n      type: gs\n      bucket: b\n      access-key-id: GOOG1EXAMPLE\n", &[]).unwrap_err();
        assert!(
            e.contains("secret-access-key") && e.contains("GOOGLE_APPLICATION_CREDENTIALS"),
            "{e}"
        );
    }
}
