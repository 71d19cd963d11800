//! The GCS backend's requests: one retry loop for every call (transient failures retried with
//! capped exponential backoff and jitter), answers turned into `StorageError`s that name the
//! object, the replica and the fix, and the uploads (one multipart request below 8 MiB, else a
//! resumable session in 8 MiB chunks, cancelled on failure).
//!
//! Must never hold more than one chunk of a body in memory, and never put the bearer token in
//! a message (it is only ever a request header).

use std::io::Read;
use std::thread;
use std::time::Duration;

use super::super::cloud::{self, PART_SIZE};
use super::super::s3::litestream_timestamp;
use super::super::{RemoteFailure, StorageError};
use super::{GcsStorage, METADATA_TIMESTAMP};

const ATTEMPTS: u32 = 4;

/// A request body.
#[derive(Clone, Copy)]
pub(super) enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
}

/// One failed attempt: an HTTP answer (status, body) or none (transport).
enum Fail {
    Status(u16, String),
    Transport(String),
}

impl GcsStorage {
    /// Sends one request (retrying transient failures) and returns the response, or the
    /// `StorageError` for `op` on `name`. `build` makes the request (given the authorization
    /// header, if any); `body` is sent with it.
    pub(super) fn call(
        &self,
        op: &'static str,
        name: &str,
        body: Body<'_>,
        build: &dyn Fn(Option<&str>) -> ureq::Request,
    ) -> Result<ureq::Response, StorageError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let auth = self.bearer()?;
            let req = build(auth.as_deref());
            let sent = match body {
                Body::Empty => req.call(),
                Body::Bytes(b) => req.send_bytes(b),
            };
            let fail = match sent {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(code, r)) => {
                    let body = r.into_string().unwrap_or_default();
                    Fail::Status(code, body)
                }
                Err(ureq::Error::Transport(t)) => Fail::Transport(t.to_string()),
            };
            let transient = match &fail {
                Fail::Status(c, _) => matches!(c, 408 | 429) || *c >= 500,
                Fail::Transport(_) => true,
            };
            if !transient || attempt >= ATTEMPTS {
                return Err(self.error(op, name, fail, attempt));
            }
            let ms = (100u64 << attempt).min(3000);
            thread::sleep(Duration::from_millis(ms / 2 + jitter(ms / 2)));
        }
    }

    fn error(&self, op: &'static str, name: &str, fail: Fail, attempts: u32) -> StorageError {
        let object = self.object(name);
        let tries = if attempts > 1 {
            format!(" (after {attempts} attempts)")
        } else {
            String::new()
        };
        let failure = |status: u16, detail: String, hint: String| {
            Box::new(RemoteFailure {
                op,
                object: object.clone(),
                replica: self.shown.clone(),
                status,
                code: String::new(),
                detail: format!("{}{tries}", cloud::scrub(&detail, &[])),
                hint,
            })
        };
        match fail {
            Fail::Transport(t) => StorageError::Unreachable(failure(
                0,
                t,
                if self.emulator {
                    "check STORAGE_EMULATOR_HOST and that the emulator is running".into()
                } else {
                    "check the network (storage.googleapis.com must be reachable); walship retries".into()
                },
            )),
            Fail::Status(412, _) => StorageError::PreconditionFailed { op, object },
            Fail::Status(c @ (401 | 403), body) => StorageError::Credentials(failure(
                c,
                format!("HTTP {c}: {}", message_of(&body)),
                self.credentials_fix(),
            )),
            Fail::Status(404, body) if op != "get" || message_of(&body).to_ascii_lowercase().contains("bucket") => {
                StorageError::NoSuchBucket(failure(
                    404,
                    format!("bucket {:?} not found: {}", self.cfg.bucket, message_of(&body)),
                    "create the bucket (walship, like Litestream, never creates it), or fix `bucket`".into(),
                ))
            }
            Fail::Status(404, _) => StorageError::NotFound { op, object },
            Fail::Status(c, body) => StorageError::Remote(failure(
                c,
                format!("HTTP {c}: {}", message_of(&body)),
                "walship retries transient failures; if this persists, check the bucket and its settings".into(),
            )),
        }
    }

    /// Object metadata JSON for an upload.
    pub(super) fn metadata_json(
        name: &str,
        content_type: &str,
        timestamp_ms: Option<i64>,
    ) -> String {
        let mut m = serde_json::json!({ "name": name, "contentType": content_type });
        if let Some(ts) = timestamp_ms {
            m["metadata"] = serde_json::json!({ METADATA_TIMESTAMP: litestream_timestamp(ts) });
        }
        m.to_string()
    }

    /// One `uploadType=multipart` request; returns the new generation.
    pub(super) fn upload_small(
        &self,
        name: &str,
        body: &[u8],
        meta: &str,
        if_generation: Option<&str>,
    ) -> Result<String, StorageError> {
        const BOUNDARY: &str = "walship-gcs-part-7f3a9c";
        let mut payload = Vec::with_capacity(body.len() + meta.len() + 256);
        payload.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        payload.extend_from_slice(body);
        payload.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let url = self.upload_url();
        let r = self.call("put", name, Body::Bytes(&payload), &|auth| {
            let mut req = self.agent.post(&url).query("uploadType", "multipart").set(
                "Content-Type",
                &format!("multipart/related; boundary={BOUNDARY}"),
            );
            if let Some(g) = if_generation {
                req = req.query("ifGenerationMatch", g);
            }
            if let Some(a) = auth {
                req = req.set("Authorization", a);
            }
            req
        })?;
        generation_of(r)
    }

    /// A resumable upload of `first` and the rest of `src`, in `PART_SIZE` chunks.
    pub(super) fn upload_resumable(
        &self,
        name: &str,
        first: Vec<u8>,
        src: &mut dyn Read,
        meta: &str,
    ) -> Result<u64, StorageError> {
        let url = self.upload_url();
        let start = self.call("put", name, Body::Bytes(meta.as_bytes()), &|auth| {
            let mut req = self
                .agent
                .post(&url)
                .query("uploadType", "resumable")
                .set("Content-Type", "application/json; charset=UTF-8")
                .set("X-Upload-Content-Type", "application/octet-stream");
            if let Some(a) = auth {
                req = req.set("Authorization", a);
            }
            req
        })?;
        let Some(session) = start.header("location").map(str::to_string) else {
            return Err(self.error(
                "put",
                name,
                Fail::Status(start.status(), "no upload session URL in the answer".into()),
                1,
            ));
        };
        let result = self.send_chunks(name, &session, first, src);
        if result.is_err() {
            // Cancel the session (answered 499); nothing was committed.
            let _ = self.agent.delete(&session).call();
        }
        result
    }

    fn send_chunks(
        &self,
        name: &str,
        session: &str,
        first: Vec<u8>,
        src: &mut dyn Read,
    ) -> Result<u64, StorageError> {
        let mut offset = 0u64;
        let mut chunk = first;
        loop {
            let next = cloud::read_part(src, PART_SIZE).map_err(|e| StorageError::Io {
                op: "put",
                object: self.object(name),
                source: e,
                hint: Some("reading the local file to upload failed"),
            })?;
            let last = next.is_empty();
            let len = chunk.len() as u64;
            let range = match (len, last) {
                (0, true) => format!("bytes */{offset}"),
                (_, true) => format!("bytes {offset}-{}/{}", offset + len - 1, offset + len),
                (_, false) => format!("bytes {offset}-{}/*", offset + len - 1),
            };
            let r = self.call("put", name, Body::Bytes(&chunk), &|auth| {
                let mut req = self.agent.put(session).set("Content-Range", &range);
                if let Some(a) = auth {
                    req = req.set("Authorization", a);
                }
                req
            })?;
            offset += len;
            if last {
                if !(200..300).contains(&r.status()) {
                    return Err(self.error(
                        "put",
                        name,
                        Fail::Status(r.status(), "the upload did not complete".into()),
                        1,
                    ));
                }
                return Ok(offset);
            }
            if r.status() != 308 {
                return Err(self.error(
                    "put",
                    name,
                    Fail::Status(r.status(), "the upload ended early".into()),
                    1,
                ));
            }
            chunk = next;
        }
    }

    /// Creates the bucket (tests and setup only: walship never creates it while replicating,
    /// like Litestream). An existing bucket is fine.
    #[doc(hidden)]
    pub fn create_bucket(&self) -> Result<(), StorageError> {
        let url = format!("{}/storage/v1/b", self.base);
        let body = serde_json::json!({ "name": self.cfg.bucket }).to_string();
        match self.call("create-bucket", "", Body::Bytes(body.as_bytes()), &|auth| {
            let mut req = self
                .agent
                .post(&url)
                .query("project", "walship")
                .set("Content-Type", "application/json");
            if let Some(a) = auth {
                req = req.set("Authorization", a);
            }
            req
        }) {
            Ok(_) => Ok(()),
            Err(StorageError::Remote(f)) if f.status == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The object's generation, or `None` when it does not exist.
    pub(super) fn generation(&self, name: &str) -> Result<Option<String>, StorageError> {
        let url = self.object_url(name);
        match self.call("get", name, Body::Empty, &|auth| {
            let mut req = self.agent.get(&url);
            if let Some(a) = auth {
                req = req.set("Authorization", a);
            }
            req
        }) {
            Ok(r) => Ok(Some(generation_of(r)?)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The `generation` of a JSON object resource in the answer.
fn generation_of(r: ureq::Response) -> Result<String, StorageError> {
    let header = r.header("x-goog-generation").map(str::to_string);
    let v: serde_json::Value = read_json(r).unwrap_or(serde_json::Value::Null);
    let g = match &v["generation"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => header,
    };
    g.ok_or_else(|| StorageError::Io {
        op: "put",
        object: v["name"].as_str().unwrap_or("?").to_string(),
        source: std::io::Error::other("the answer carries no object generation"),
        hint: None,
    })
}

/// A JSON answer (at most 16 MiB: a listing page is far smaller).
pub(super) fn read_json(r: ureq::Response) -> std::io::Result<serde_json::Value> {
    let mut text = Vec::new();
    r.into_reader().take(16 << 20).read_to_end(&mut text)?;
    serde_json::from_slice(&text).map_err(std::io::Error::other)
}

/// The `error.message` of a JSON API error body, else the body (shortened).
fn message_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(300).collect())
}

/// Percent-encodes one path segment (object names include `/`, which must be encoded too).
pub(super) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    t % max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_names_and_reads_errors() {
        assert_eq!(enc("a/ltx/0/x.ltx"), "a%2Fltx%2F0%2Fx.ltx");
        assert_eq!(
            message_of(r#"{"error":{"code":403,"message":"denied"}}"#),
            "denied"
        );
        assert_eq!(message_of("plain"), "plain");
    }
}
