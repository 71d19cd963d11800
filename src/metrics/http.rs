//! The metrics listener: one thread per process, started when the config has `addr:`
//! (Litestream's key and syntax: `:9090` is every interface, `127.0.0.1:9090`, `localhost:9090`),
//! serving `GET /metrics` (Prometheus text format 0.0.4) over plain HTTP/1.0, one connection at
//! a time, each bounded by timeouts.
//!
//! Owns the listening socket. Never blocks the app: resolving and binding happen on the
//! listener's own thread, and a failure is one warning (replication goes on without metrics).
//! Reads only the atomics of `metrics.rs`; serves nothing but counters (no config, no paths
//! other than the databases', no credentials).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Once;
use std::time::Duration;

use thiserror::Error;

/// How long one scrape may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests larger than this are cut off (a scrape's request is a few hundred bytes).
const MAX_REQUEST: usize = 8 << 10;

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("`addr: {addr}` is not an address to listen on ({reason}); write it as Litestream does, e.g. `:9090` (every interface) or `127.0.0.1:9090`")]
    BadAddr { addr: String, reason: String },
    #[error("cannot listen on {addr}: {source} (is another process using that port? choose another `addr:` or remove it)")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
}

/// The addresses `addr` means, in the order to try them. `:port` (no host) is every interface,
/// as in Go: IPv6 any (dual-stack on Linux), then IPv4 any.
pub fn resolve(addr: &str) -> Result<Vec<SocketAddr>, MetricsError> {
    let bad = |reason: &str| MetricsError::BadAddr {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Ok(vec![
            SocketAddr::from(([0u16; 8], port)),
            SocketAddr::from(([0u8; 4], port)),
        ]);
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let found: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve {host:?}: {e}")))?
        .collect();
    if found.is_empty() {
        return Err(bad(&format!("{host:?} resolves to no address")));
    }
    Ok(found)
}

/// Binds the first address of `addr` that works.
pub fn bind(addr: &str) -> Result<TcpListener, MetricsError> {
    let mut last = None;
    for a in resolve(addr)? {
        match TcpListener::bind(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(MetricsError::Bind {
        addr: addr.to_string(),
        source: last.unwrap_or_else(|| io::Error::other("no address")),
    })
}

/// Starts the process's listener on `addr`, once per process (later calls do nothing).
pub fn start(addr: &str) {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let addr = addr.to_string();
        let spawned = std::thread::Builder::new()
            .name("walship-metrics".into())
            .spawn(move || match bind(&addr) {
                Ok(l) => {
                    let at = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                    log::info!("metrics: serving http://{at}/metrics (addr: {addr})");
                    serve(l);
                }
                Err(e) => log::warn!(
                    "metrics: not serving /metrics: {e}; replication continues without metrics"
                ),
            });
        if let Err(e) = spawned {
            log::warn!("metrics: cannot start the listener thread ({e}); replication continues without metrics");
        }
    });
}

fn serve(l: TcpListener) {
    for conn in l.incoming() {
        match conn {
            Ok(s) => {
                let _ = answer(s);
            }
            // Out of descriptors and the like: pause instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Reads the request head (up to the blank line, bounded) and writes one response.
fn answer(mut s: TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_REQUEST {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&req);
    let (status, ctype, body) = respond(head.lines().next().unwrap_or(""));
    let head_only = head.starts_with("HEAD ");
    let mut out = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    s.write_all(&out)?;
    s.flush()
}

/// Status line, content type and body for a request line such as `GET /metrics HTTP/1.1`.
pub fn respond(request_line: &str) -> (&'static str, &'static str, String) {
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    const TEXT: &str = "text/plain; charset=utf-8";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            super::render_all(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            TEXT,
            "walship serves /metrics only\n".into(),
        ),
        _ => ("405 Method Not Allowed", TEXT, "use GET /metrics\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_litestream_writes_them() {
        let any = resolve(":9090").unwrap();
        assert_eq!(any[0].to_string(), "[::]:9090");
        assert_eq!(any[1].to_string(), "0.0.0.0:9090");
        assert_eq!(
            resolve("127.0.0.1:9091").unwrap(),
            vec![SocketAddr::from(([127, 0, 0, 1], 9091))]
        );
        assert_eq!(resolve("[::1]:80").unwrap()[0].to_string(), "[::1]:80");
        assert!(resolve("localhost:9090")
            .unwrap()
            .iter()
            .all(|a| a.ip().is_loopback()));
        let e = resolve("9090").unwrap_err().to_string();
        assert!(e.contains("`addr: 9090`") && e.contains(":9090"), "{e}");
        assert!(resolve("host:http").is_err());
    }

    #[test]
    fn answers_metrics_only() {
        let (status, ctype, _) = respond("GET /metrics?x=1 HTTP/1.1");
        assert_eq!(
            (status, ctype),
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8")
        );
        assert_eq!(respond("GET / HTTP/1.1").0, "404 Not Found");
        assert_eq!(
            respond("POST /metrics HTTP/1.1").0,
            "405 Method Not Allowed"
        );
    }

    #[test]
    fn a_busy_port_is_a_bind_error_naming_the_address() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap().to_string();
        let e = bind(&addr).unwrap_err();
        assert!(matches!(e, MetricsError::Bind { .. }));
        assert!(e.to_string().contains(&addr), "{e}");
    }
}
