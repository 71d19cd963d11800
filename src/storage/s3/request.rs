//! Sending requests: one request addressed (path-style or virtual-hosted), signed with
//! SigV4 and sent; the retry loop around it (capped exponential backoff with jitter, and
//! following the bucket's region when it was not configured); and the streaming GET whose
//! reader resumes a broken download with a ranged GET pinned to the ETag.
//!
//! Must never log or return a header value, the `Authorization` value or a credential (log
//! lines name the replica, the method and the key only), and `send` must never retry a
//! failure `Failure::transient` does not call transient (a wrong-region answer is re-sent
//! to the bucket's region, not retried) nor hand out a non-2xx response.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::errors::{transport_failure, Failure};
use super::{Inner, RetryPolicy};
use crate::storage::sigv4::{self, AmzTime};

/// Times in a row a broken download is resumed without getting a byte further (per `open`);
/// the count starts again whenever a resumed request brought data, so a long download
/// survives any number of separate breaks. Each resume is itself a request with the full
/// retry policy.
const MAX_RESUMES: u32 = 5;

impl RetryPolicy {
    pub(super) fn delay(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_delay);
        let half = exp / 2;
        half + half.mul_f64(jitter())
    }
}

/// A number in [0, 1) from a shared xorshift state (no need for a cryptographic RNG).
fn jitter() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// One request. `key: None` addresses the bucket.
pub(super) struct Req<'a> {
    pub(super) method: &'static str,
    pub(super) key: Option<&'a str>,
    pub(super) query: Vec<(String, String)>,
    pub(super) headers: Vec<(String, String)>,
    /// Send the SSE-C headers.
    pub(super) sse_c: bool,
    /// `None`: no body (GET, HEAD, DELETE).
    pub(super) body: Option<&'a [u8]>,
}

impl Inner {
    /// Sends `req`, retrying transient failures. Returns a 2xx response.
    pub(super) fn send(&self, req: &Req<'_>) -> Result<ureq::Response, Failure> {
        let mut attempt = 0;
        let mut region_moves = 0;
        loop {
            attempt += 1;
            let mut f = match self.send_once(req) {
                Ok(r) => return Ok(r),
                Err(f) => f,
            };
            if let Failure::Status {
                region: Some(r), ..
            } = &f
            {
                if self.region_follows_bucket && region_moves < 2 && *r != self.region() {
                    log::warn!(
                        "{}: bucket is in region {r}; using it (set `region: {r}` to skip this)",
                        self.describe()
                    );
                    if let Ok(mut g) = self.region.write() {
                        *g = r.clone();
                    }
                    region_moves += 1;
                    attempt -= 1;
                    continue;
                }
            }
            if !f.transient() || attempt >= self.retry.max_attempts {
                f.set_attempts(attempt);
                return Err(f);
            }
            let wait = self.retry.delay(attempt);
            log::debug!(
                "{}: {} {} failed ({f:?}); retry {attempt} in {wait:?}",
                self.describe(),
                req.method,
                req.key.unwrap_or("")
            );
            std::thread::sleep(wait);
        }
    }

    fn send_once(&self, req: &Req<'_>) -> Result<ureq::Response, Failure> {
        let ep = self.endpoint();
        let region = self.region();
        let host = if self.path_style {
            ep.host.clone()
        } else {
            format!("{}.{}", self.bucket, ep.host)
        };
        let authority = ep.authority(&host);
        let mut path = sigv4::uri_encode(&ep.base, true);
        if self.path_style {
            path.push('/');
            path.push_str(&sigv4::uri_encode(&self.bucket, false));
        }
        path.push('/');
        if let Some(k) = req.key {
            path.push_str(&sigv4::uri_encode(k, true));
        }
        let query = sigv4::canonical_query(&req.query);
        let url = if query.is_empty() {
            format!("{}://{authority}{path}", ep.scheme())
        } else {
            format!("{}://{authority}{path}?{query}", ep.scheme())
        };
        let payload_hash = match req.body {
            None => sigv4::EMPTY_SHA256.to_string(),
            Some(b) if self.sign_payload => sigv4::sha256_hex(b),
            Some(_) => sigv4::UNSIGNED_PAYLOAD.to_string(),
        };
        let time = AmzTime::now();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), authority.clone()),
            ("x-amz-date".into(), time.datetime.clone()),
            ("x-amz-content-sha256".into(), payload_hash.clone()),
        ];
        headers.extend(req.headers.iter().cloned());
        if req.sse_c {
            headers.extend(
                self.sse_c
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_string())),
            );
        }
        let mut r = self.agent.request(req.method, &url);
        for (k, v) in &headers {
            r = r.set(k, v);
        }
        if let Some(c) = &self.creds {
            let auth = sigv4::authorization(
                c.key_id.expose(),
                c.secret.expose(),
                &region,
                "s3",
                &time,
                &sigv4::Request {
                    method: req.method,
                    canonical_uri: &path,
                    query: &req.query,
                    headers: &headers,
                    payload_hash: &payload_hash,
                },
            );
            r = r.set("authorization", &auth);
        }
        let res = match req.body {
            Some(b) => r.send_bytes(b),
            None => r.call(),
        };
        match res {
            Ok(resp) if (200..300).contains(&resp.status()) => Ok(resp),
            Ok(resp) => Err(self.status_failure(resp)),
            Err(ureq::Error::Status(_, resp)) => Err(self.status_failure(resp)),
            Err(ureq::Error::Transport(t)) => Err(transport_failure(&t)),
        }
    }

    /// GET of `key` from `offset` (a ranged GET pinned to `etag` when resuming).
    pub(super) fn get(
        &self,
        key: &str,
        offset: u64,
        etag: Option<&str>,
    ) -> Result<ureq::Response, Failure> {
        let mut headers = Vec::new();
        if offset > 0 {
            headers.push(("range".to_string(), format!("bytes={offset}-")));
        }
        if let Some(e) = etag {
            headers.push(("if-match".to_string(), e.to_string()));
        }
        self.send(&Req {
            method: "GET",
            key: Some(key),
            query: vec![],
            headers,
            sse_c: true,
            body: None,
        })
    }
}

/// Reads a 2xx response to its end so the connection goes back to the pool.
pub(super) fn drain(resp: ureq::Response) {
    let _ = io::copy(&mut resp.into_reader().take(1 << 20), &mut io::sink());
}

/// A streaming object body that resumes (ranged GET, same ETag) when the connection breaks.
pub(super) struct GetReader {
    pub(super) inner: Arc<Inner>,
    pub(super) key: String,
    pub(super) body: Box<dyn Read + Send + Sync>,
    pub(super) offset: u64,
    pub(super) len: Option<u64>,
    pub(super) etag: Option<String>,
    /// Resumes in a row that got no further than `resumed_at`.
    pub(super) resumes: u32,
    /// `offset` at the last resume.
    pub(super) resumed_at: u64,
}

impl GetReader {
    fn resume(&mut self, cause: io::Error) -> io::Result<()> {
        if self.offset > self.resumed_at {
            self.resumes = 0;
        }
        self.resumed_at = self.offset;
        if self.resumes >= MAX_RESUMES {
            return Err(io::Error::new(
                cause.kind(),
                format!(
                    "{cause} (gave up after {MAX_RESUMES} resumes at byte {} without progress)",
                    self.offset
                ),
            ));
        }
        self.resumes += 1;
        std::thread::sleep(self.inner.retry.delay(self.resumes));
        log::debug!(
            "{}: resuming the download of {} at byte {} ({cause})",
            self.inner.describe(),
            self.key,
            self.offset
        );
        let resp = self
            .inner
            .get(&self.key, self.offset, self.etag.as_deref())
            .map_err(|f| {
                let e = self.inner.error("get", &self.inner.object(&self.key), f);
                io::Error::new(cause.kind(), format!("{cause}; resuming failed: {e}"))
            })?;
        // A store that ignores Range answers 200 with the whole object again; a 206 must
        // start where we are.
        let whole = resp.status() == 200;
        if !whole {
            let want = format!("bytes {}-", self.offset);
            let range = resp.header("content-range").unwrap_or("");
            if !range.starts_with(&want) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{cause}; resuming at byte {} got the range {range:?} instead",
                        self.offset
                    ),
                ));
            }
        }
        let mut body = resp.into_reader();
        if whole && self.offset > 0 {
            io::copy(&mut (&mut body).take(self.offset), &mut io::sink())?;
        }
        self.body = body;
        Ok(())
    }
}

impl Read for GetReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.body.read(buf) {
                Ok(0) => {
                    if let Some(len) = self.len {
                        if self.offset < len {
                            let e = io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("the download ended at byte {} of {len}", self.offset),
                            );
                            self.resume(e)?;
                            continue;
                        }
                    }
                    return Ok(0);
                }
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.resume(e)?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_are_capped() {
        let p = RetryPolicy::default();
        for n in 1..20 {
            let d = p.delay(n);
            assert!(d <= p.max_delay, "{d:?}");
            assert!(d >= p.base_delay.min(p.max_delay) / 2, "{d:?}");
        }
    }
}
