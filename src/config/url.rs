//! Replica URLs (`file:///abs/dir`, `s3://bucket/path?region=..`, `gs://bucket/path`,
//! `abs://account@container/path`), read
//! the way Litestream 0.5 reads them, including its S3 provider host shortcuts
//! (`bucket.s3.us-west-2.amazonaws.com`, `bucket.localhost:9000`, DigitalOcean, Backblaze,
//! Filebase, Scaleway). Pure string handling: nothing here resolves names or connects.

/// A split URL. `path` is percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaUrl {
    pub scheme: String,
    /// The user name of a `user[:password]@` part (Azure's `abs://account@container`), or
    /// empty. A password is never kept; `has_password` says one was there.
    pub user: String,
    pub has_password: bool,
    pub host: String,
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl ReplicaUrl {
    pub(crate) fn query(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| {
            self.query
                .iter()
                .find(|(k, v)| k == n && !v.is_empty())
                .map(|(_, v)| v.as_str())
        })
    }
}

/// Litestream's test for "this looks like a URL": `^\w+://`.
pub(crate) fn is_url(s: &str) -> bool {
    match s.find("://") {
        Some(i) if i > 0 => s[..i]
            .bytes()
            .all(|c| c == b'_' || c.is_ascii_alphanumeric()),
        _ => false,
    }
}

/// The URL with any `user:password@` removed, safe to put in a message.
/// Errs on the side of hiding: everything up to the *last* `@` goes, so a secret containing
/// `/` (as AWS secret keys may) cannot leak through a mis-split authority.
pub(crate) fn redact(s: &str) -> String {
    if let Some(i) = s.find("://") {
        let rest = &s[i + 3..];
        if let Some(at) = rest.rfind('@') {
            return format!("{}://***@{}", &s[..i], &rest[at + 1..]);
        }
    }
    s.to_string()
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("bad %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad %-escape")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "%-escapes do not form UTF-8".to_string())
}

/// Go's `path.Clean` for '/'-separated paths (also used for object key prefixes).
pub(crate) fn clean_path(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Split `s` into scheme, host, path and query. Errors are short reasons.
pub(crate) fn parse(s: &str) -> Result<ReplicaUrl, String> {
    if !is_url(s) {
        return Err("a URL needs a scheme, like file:// or s3://".into());
    }
    let i = s.find("://").unwrap_or(0);
    let scheme = s[..i].to_ascii_lowercase();
    let mut rest = &s[i + 3..];
    if let Some(h) = rest.find('#') {
        rest = &rest[..h];
    }
    let mut query = Vec::new();
    if let Some(q) = rest.find('?') {
        for pair in rest[q + 1..].split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            query.push((percent_decode(k)?, percent_decode(&v.replace('+', " "))?));
        }
        rest = &rest[..q];
    }
    if scheme == "file" {
        // file:///abs/dir (empty host) or file://localhost/abs/dir.
        let path = if rest.starts_with('/') {
            rest
        } else if let Some(p) = rest.strip_prefix("localhost/") {
            return Ok(ReplicaUrl {
                scheme,
                user: String::new(),
                has_password: false,
                host: String::new(),
                path: clean_path(&format!("/{}", percent_decode(p)?)),
                query,
            });
        } else {
            return Err(
                "a file URL needs an absolute path: file:///absolute/dir (three slashes)".into(),
            );
        };
        return Ok(ReplicaUrl {
            scheme,
            user: String::new(),
            has_password: false,
            host: String::new(),
            path: clean_path(&percent_decode(path)?),
            query,
        });
    }
    // Drop any `user:password@` first (up to the last `@`, in case the password has a `/`),
    // keeping only the user name.
    let (mut user, mut has_password) = (String::new(), false);
    if let Some(at) = rest.rfind('@') {
        let info = &rest[..at];
        match info.split_once(':') {
            Some((u, _)) => {
                user = u.to_string();
                has_password = true;
            }
            None => user = info.to_string(),
        }
        if user.contains('/') {
            // Not a user name: a `/` inside a password. Keep nothing.
            user.clear();
            has_password = true;
        }
        user = percent_decode(&user).unwrap_or_default();
        rest = &rest[at + 1..];
    }
    let (host, path) = match rest.find('/') {
        Some(p) => (&rest[..p], &rest[p..]),
        None => (rest, ""),
    };
    let path = clean_path(&percent_decode(path)?)
        .trim_start_matches('/')
        .to_string();
    Ok(ReplicaUrl {
        scheme,
        user,
        has_password,
        host: host.to_string(),
        path,
        query,
    })
}

/// What an S3 URL host says: bucket, region, endpoint, path-style.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct S3Host {
    pub bucket: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
}

/// Litestream's S3 host rules (`s3.ParseHost`).
pub(crate) fn parse_s3_host(host: &str) -> S3Host {
    let some = |s: &str| Some(s.to_string());
    // MinIO style: bucket.host:port (no ".com").
    if host.contains(':') && !host.contains(".com") {
        return match host.split_once('.') {
            Some((bucket, h)) => S3Host {
                bucket: bucket.into(),
                region: some(super::types::defaults::S3_DEFAULT_REGION),
                endpoint: Some(format!("http://{h}")),
                force_path_style: true,
            },
            None => S3Host {
                endpoint: Some(format!("http://{host}")),
                force_path_style: true,
                ..S3Host::default()
            },
        };
    }
    let labels: Vec<&str> = host.split('.').collect();
    let n = labels.len();
    // <bucket>.s3[.<region>].amazonaws.com
    if host.ends_with(".amazonaws.com") {
        if let Some(pos) = labels.iter().rposition(|l| *l == "s3") {
            if pos >= 1 && (pos + 3 == n || pos + 4 == n) {
                let region = if pos + 4 == n {
                    some(labels[pos + 1])
                } else {
                    None
                };
                return S3Host {
                    bucket: labels[..pos].join("."),
                    region,
                    ..S3Host::default()
                };
            }
        }
    }
    // <bucket>.<region>.digitaloceanspaces.com
    if host.ends_with(".digitaloceanspaces.com") && n >= 3 {
        let region = labels[n - 3];
        return S3Host {
            bucket: labels[..n - 3].join("."),
            region: some(region),
            endpoint: Some(format!("https://{region}.digitaloceanspaces.com")),
            force_path_style: false,
        };
    }
    // <bucket>.s3.<region>.backblazeb2.com
    if host.ends_with(".backblazeb2.com") && n >= 4 && labels[n - 4] == "s3" {
        let region = labels[n - 3];
        return S3Host {
            bucket: labels[..n - 4].join("."),
            region: some(region),
            endpoint: Some(format!("https://s3.{region}.backblazeb2.com")),
            force_path_style: true,
        };
    }
    // <bucket>.s3.filebase.com
    if host.ends_with(".s3.filebase.com") || host == "s3.filebase.com" {
        let bucket = host
            .strip_suffix("s3.filebase.com")
            .unwrap_or("")
            .trim_end_matches('.');
        return S3Host {
            bucket: bucket.into(),
            endpoint: some("https://s3.filebase.com"),
            ..S3Host::default()
        };
    }
    // <bucket>.s3.<region>.scw.cloud
    if host.ends_with(".scw.cloud") && n >= 4 && labels[n - 4] == "s3" {
        let region = labels[n - 3];
        return S3Host {
            bucket: labels[..n - 4].join("."),
            region: some(region),
            endpoint: Some(format!("https://s3.{region}.scw.cloud")),
            force_path_style: false,
        };
    }
    S3Host {
        bucket: host.into(),
        ..S3Host::default()
    }
}

/// Add `https://` (or `http://` for local/private hosts) to a scheme-less endpoint, as
/// Litestream does for endpoints given in URLs.
pub(crate) fn ensure_endpoint_scheme(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return endpoint.to_string();
    }
    let host = endpoint.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let local = host == "localhost"
        || host == "127.0.0.1"
        || host.starts_with("192.168.")
        || host.starts_with("10.")
        || (host.starts_with("172.")
            && host
                .split('.')
                .nth(1)
                .and_then(|o| o.parse::<u8>().ok())
                .is_some_and(|o| (16..=31).contains(&o)));
    if local {
        format!("http://{endpoint}")
    } else {
        format!("https://{endpoint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_urls() {
        let u = parse("file:///var/backups/app").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.path.as_str()),
            ("file", "/var/backups/app")
        );
        assert_eq!(parse("file:///a//b/./c/").unwrap().path, "/a/b/c");
        assert_eq!(parse("file:///a%20b").unwrap().path, "/a b");
        assert_eq!(parse("file://localhost/x").unwrap().path, "/x");
        assert!(parse("file://relative/dir").is_err());
        assert!(parse("/not/a/url").is_err());
    }

    #[test]
    fn parses_s3_urls() {
        let u = parse("s3://my-bucket/a/b/?region=eu-west-1&forcePathStyle=true").unwrap();
        assert_eq!(u.host, "my-bucket");
        assert_eq!(u.path, "a/b");
        assert_eq!(u.query(&["region"]), Some("eu-west-1"));
        assert_eq!(parse("s3://b").unwrap().path, "");
        assert_eq!(parse("s3://user:pw@b/p").unwrap().host, "b");
        let u = parse("abs://acct@cont/a/b").unwrap();
        assert_eq!(
            (
                u.user.as_str(),
                u.host.as_str(),
                u.path.as_str(),
                u.has_password
            ),
            ("acct", "cont", "a/b", false)
        );
        let u = parse("abs://acct:key/with/slash@cont/p").unwrap();
        assert_eq!(
            (u.user.as_str(), u.has_password, u.host.as_str()),
            ("acct", true, "cont")
        );
    }

    #[test]
    fn s3_hosts() {
        assert_eq!(parse_s3_host("bkt").bucket, "bkt");
        let h = parse_s3_host("bkt.s3.us-west-2.amazonaws.com");
        assert_eq!(
            (h.bucket.as_str(), h.region.as_deref()),
            ("bkt", Some("us-west-2"))
        );
        assert_eq!(parse_s3_host("bkt.s3.amazonaws.com").region, None);
        let h = parse_s3_host("bkt.localhost:9000");
        assert_eq!(h.endpoint.as_deref(), Some("http://localhost:9000"));
        assert!(h.force_path_style);
        let h = parse_s3_host("bkt.nyc3.digitaloceanspaces.com");
        assert_eq!(
            h.endpoint.as_deref(),
            Some("https://nyc3.digitaloceanspaces.com")
        );
        let h = parse_s3_host("bkt.s3.us-west-002.backblazeb2.com");
        assert_eq!((h.bucket.as_str(), h.force_path_style), ("bkt", true));
        assert_eq!(
            parse_s3_host("bkt.s3.fr-par.scw.cloud").region.as_deref(),
            Some("fr-par")
        );
        assert_eq!(parse_s3_host("bkt.s3.filebase.com").bucket, "bkt");
    }

    #[test]
    fn redacts_userinfo() {
        assert_eq!(redact("s3://AKIA:secret@bucket/p"), "s3://***@bucket/p");
        assert_eq!(redact("s3://K:se/cret@bucket/p"), "s3://***@bucket/p");
        assert_eq!(redact("s3://bucket/p"), "s3://bucket/p");
    }

    #[test]
    fn endpoint_scheme() {
        assert_eq!(
            ensure_endpoint_scheme("s3.example.com"),
            "https://s3.example.com"
        );
        assert_eq!(
            ensure_endpoint_scheme("localhost:9000"),
            "http://localhost:9000"
        );
        assert_eq!(
            ensure_endpoint_scheme("172.20.0.1:9000"),
            "http://172.20.0.1:9000"
        );
        assert_eq!(ensure_endpoint_scheme("http://x"), "http://x");
    }

    #[test]
    fn cleans_paths() {
        assert_eq!(clean_path("/a/../b"), "/b");
        assert_eq!(clean_path("a/./b//c/"), "a/b/c");
        assert_eq!(clean_path("/../x"), "/x");
        assert_eq!(clean_path(""), "");
    }
}
