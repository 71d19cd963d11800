//! What a failed request becomes. A `Failure` (an HTTP error answer or a transport error)
//! is classified as transient or not for the retry loop; a final one becomes the typed
//! [`StorageError`] users see, naming the replica and carrying a hint about what to fix
//! (credentials, bucket, region, endpoint, TLS). Server messages are scrubbed of every
//! credential on the way in.
//!
//! Must never let a credential (access key id, secret key, SSE-C key) into a `Failure` or a
//! `StorageError`: server messages go through `Inner::scrub`. Must never send requests or
//! run the retry loop itself: it only reads an error answer's body and classifies it.

use std::io::{self, Read};

use super::xml::xml_text;
use super::Inner;
use crate::config::CredentialSource;
use crate::storage::{RemoteFailure, StorageError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TransportKind {
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
pub(super) enum Failure {
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
    pub(super) fn transient(&self) -> bool {
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

    pub(super) fn set_attempts(&mut self, n: u32) {
        match self {
            Failure::Status { attempts, .. } | Failure::Transport { attempts, .. } => *attempts = n,
        }
    }

    pub(super) fn code(&self) -> &str {
        match self {
            Failure::Status { code, .. } => code,
            Failure::Transport { .. } => "",
        }
    }
}

impl Inner {
    /// Replaces every credential in `s` (from a server message) with `***`.
    pub(super) fn scrub(&self, s: &str) -> String {
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

    pub(super) fn status_failure(&self, resp: ureq::Response) -> Failure {
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
    pub(super) fn error(&self, op: &'static str, object: &str, f: Failure) -> StorageError {
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

    pub(super) fn read_error(&self, op: &'static str, object: &str, e: io::Error) -> StorageError {
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
}

pub(super) fn transport_failure(t: &ureq::Transport) -> Failure {
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
