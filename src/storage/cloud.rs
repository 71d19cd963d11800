//! What the Azure (`azure.rs`) and GCS (`gcs/`) backends share: Litestream's key layout for
//! both (`<path>/ltx/<level>/<min>-<max>.ltx`), the async runtime that drives `object_store`,
//! the HTTP connector handed to it (reqwest over this crate's rustls configuration, ring
//! crypto, walship's timeouts), a blocking `Read` over a download stream, reading a body in
//! parts, reading errors (their chain, an HTTP status, "unreachable") and scrubbing secrets
//! out of messages.
//!
//! # The runtime, and who waits on it
//! Each backend owns one current-thread tokio runtime, created on first use (so building a
//! backend at config time, on whatever thread opens the database, starts nothing and reads
//! nothing). It has no threads of its own: a call runs its future on the calling thread with
//! `block_on`, and the callers are the shipper pool's threads and the CLI (`Storage` is never called
//! from SQLite's callbacks), so the app's threads never wait on it. Several threads may call
//! at once (restore reads in parallel): one drives the I/O at a time, the others' futures are
//! woken by it.
//!
//! Must never be used from an app thread, never block inside a future (no blocking I/O in an
//! async context), and never put a credential in a message: every `object_store` and HTTP
//! error goes through [`scrub`].

use std::future::Future;
use std::io::{self, Read};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::client::{HttpClient, HttpConnector};
use object_store::{ClientOptions, RetryConfig};

use super::s3::connection::{io_timeout, tls_config, CONNECT_TIMEOUT};
use crate::ltx;

/// Litestream 0.5's `LTXLevelDir` for its abs and gs clients: `path.Join(path, "ltx", level)`,
/// decimal level. `path` is already cleaned (no leading or trailing `/`).
pub(crate) fn level_dir(path: &str, level: u8) -> String {
    if path.is_empty() {
        format!("ltx/{level}")
    } else {
        format!("{path}/ltx/{level}")
    }
}

/// Litestream's `LTXFilePath`: `<path>/ltx/<level>/<min %016x>-<max %016x>.ltx`.
pub(crate) fn ltx_key(path: &str, level: u8, min: u64, max: u64) -> String {
    format!("{}/{}", level_dir(path, level), ltx::file_name(min, max))
}

/// A named object (the lease): directly under the replica path, outside `ltx/`.
pub(crate) fn named_key(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}/{name}")
    }
}

/// Part size for uploads: a body shorter than this is one request; a longer one is sent in
/// parts of this size, one in memory at a time.
pub(crate) const PART_SIZE: usize = 8 << 20;

/// One backend's runtime (see the module comment).
#[derive(Default)]
pub(crate) struct Runtime {
    rt: OnceLock<tokio::runtime::Runtime>,
}

impl Runtime {
    /// Runs `f` to completion on the calling thread.
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        let rt = self.rt.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("creating a current-thread tokio runtime (an epoll descriptor) failed")
        });
        rt.block_on(f)
    }
}

impl Drop for Runtime {
    /// Never blocks: a backend dropped on a thread that happens to be inside another tokio
    /// runtime (a host app's) must not panic there, and nothing is left to wait for.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// object_store's retries: a few attempts with capped exponential backoff, bounded in time, so
/// an unreachable store fails within seconds and the shipper's own backoff takes over.
pub(crate) fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(3),
            base: 2.0,
        },
        max_retries: 4,
        retry_timeout: Duration::from_secs(30),
    }
}

pub(crate) fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(true)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(Duration::from_secs(15 * 60))
}

/// Hands object_store a reqwest client built on this crate's rustls configuration (ring
/// crypto, Mozilla's roots plus the system's, or none checked with `skip-verify`), HTTP/1.1,
/// walship's connect and socket timeouts, no proxy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Connector {
    pub skip_verify: bool,
}

impl Connector {
    pub(crate) fn client(&self) -> Result<reqwest::Client, String> {
        let tls = tls_config(self.skip_verify)?;
        reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(io_timeout())
            .pool_idle_timeout(Duration::from_secs(50))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("walship/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client setup failed: {e}"))
    }
}

impl HttpConnector for Connector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = self.client().map_err(|e| object_store::Error::Generic {
            store: "walship",
            source: e.into(),
        })?;
        Ok(HttpClient::new(client))
    }
}

/// `text` with every secret value (and its percent-encoded form) replaced by `***`, and the
/// query string of every URL dropped (a SAS token rides in the query).
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let i = match (rest.find("http://"), rest.find("https://")) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => break,
        };
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | ','))
            .unwrap_or(tail.len());
        let url = &tail[..end];
        match url.find('?') {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?…");
            }
            None => out.push_str(url),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "***");
        let enc = percent_encode(s);
        if enc != *s {
            out = out.replace(&enc, "***");
        }
        // Every parameter value of a SAS token (its `sig=` above all).
        for part in s.split('&') {
            if let Some((_, v)) = part.split_once('=') {
                if v.len() >= 8 {
                    out = out.replace(v, "***");
                    out = out.replace(&percent_encode(v), "***");
                }
            }
        }
    }
    out
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads up to `limit` bytes from `src` (fewer only at its end).
pub(crate) fn read_part(src: &mut dyn Read, limit: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(limit.min(1 << 20));
    src.take(limit as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A blocking `Read` over an async download stream, driven by the backend's runtime.
pub(crate) struct StreamRead {
    rt: Arc<Runtime>,
    stream: BoxStream<'static, Result<Bytes, io::Error>>,
    buf: Bytes,
    done: bool,
}

impl StreamRead {
    pub(crate) fn new(
        rt: Arc<Runtime>,
        stream: BoxStream<'static, Result<Bytes, io::Error>>,
    ) -> Self {
        StreamRead {
            rt,
            stream,
            buf: Bytes::new(),
            done: false,
        }
    }
}

impl Read for StreamRead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() && !self.done {
            match self.rt.block_on(self.stream.next()) {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(e),
                None => self.done = true,
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        Ok(n)
    }
}

/// An error with its sources, one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The HTTP status object_store's messages carry ("status code: 403 Forbidden", "status 403").
pub(crate) fn status_in(text: &str) -> Option<u16> {
    for pat in ["status code: ", "status: ", "status "] {
        let mut rest = text;
        while let Some(i) = rest.find(pat) {
            let tail = &rest[i + pat.len()..];
            let digits: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
            if digits.len() == 3 {
                return digits.parse().ok();
            }
            rest = tail;
        }
    }
    None
}

pub(crate) fn looks_unreachable(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "connect",
        "connection refused",
        "dns",
        "timed out",
        "timeout",
        "error sending request",
        "broken pipe",
        "reset",
    ]
    .iter()
    .any(|p| t.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn litestream_layout() {
        assert_eq!(
            ltx_key("a/b", 0, 1, 0x20),
            "a/b/ltx/0/0000000000000001-0000000000000020.ltx"
        );
        assert_eq!(
            ltx_key("", 9, 1, 2),
            "ltx/9/0000000000000001-0000000000000002.ltx"
        );
        assert_eq!(level_dir("p", 10), "p/ltx/10");
        assert_eq!(named_key("p", "walship-lease.json"), "p/walship-lease.json");
        assert_eq!(named_key("", "x"), "x");
    }

    #[test]
    fn statuses_in_messages() {
        assert_eq!(
            status_in("Server returned non-2xx status code: 403 Forbidden: x"),
            Some(403)
        );
        assert_eq!(status_in("no status here"), None);
        assert!(looks_unreachable(
            "error sending request: Connection refused"
        ));
    }

    #[test]
    fn scrubs_queries_and_secrets() {
        let sas = "sv=2022-11-02&ss=b&sig=AbCdEfGh%2BIjKlMnOp%3D";
        let msg = format!("Error performing PUT http://127.0.0.1:1/acct/c/p?{sas} in 3ms: token sig=AbCdEfGh%2BIjKlMnOp%3D, key c2VjcmV0a2V5IGJhc2U2NA==");
        let s = scrub(&msg, &[sas, "c2VjcmV0a2V5IGJhc2U2NA=="]);
        assert!(!s.contains("AbCdEfGh"), "{s}");
        assert!(!s.contains("c2VjcmV0a2V5"), "{s}");
        assert!(s.contains("http://127.0.0.1:1/acct/c/p?…"), "{s}");
        assert_eq!(scrub("no urls, http alone", &[]), "no urls, http alone");
        assert_eq!(scrub("at http", &[]), "at http");
    }
}
