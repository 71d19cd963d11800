//! Where requests go and over what: an endpoint parsed from the config (scheme, host, port,
//! base path) or AWS's regional default host, the connect and I/O timeouts, and the TLS
//! client configuration (Mozilla's roots plus the system store, or `skip-verify`).
//!
//! Must never accept credentials in an endpoint (`user:password@` is refused, so it can never
//! reach a message through `Endpoint::display`), and must never skip certificate checks
//! unless `skip-verify` asked for it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::Inner;

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one socket read or write may wait: [`IO_TIMEOUT`], or `$WALSHIP_S3_IO_TIMEOUT`
/// seconds (decimal, 0.1 to 3600) so a stalled download is abandoned (and resumed) sooner,
/// e.g. by fault-injection tests. An unusable value is ignored with a warning.
pub(crate) fn io_timeout() -> Duration {
    let Ok(v) = std::env::var("WALSHIP_S3_IO_TIMEOUT") else {
        return IO_TIMEOUT;
    };
    match v.trim().parse::<f64>() {
        Ok(s) if (0.1..=3600.0).contains(&s) => Duration::from_secs_f64(s),
        _ => {
            log::warn!("ignoring WALSHIP_S3_IO_TIMEOUT={v:?}: expected seconds from 0.1 to 3600");
            IO_TIMEOUT
        }
    }
}

/// An endpoint: scheme, host, optional port and optional base path.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub(super) https: bool,
    /// Host name, IPv4 address, or `[IPv6]`.
    pub(super) host: String,
    pub(super) port: Option<u16>,
    /// `""` or `/base` (no trailing slash).
    pub(super) base: String,
}

impl Endpoint {
    pub(super) fn parse(s: &str) -> Result<Endpoint, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "endpoint {s:?} must start with http:// or https://"
            ));
        };
        let (authority, base) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err("the endpoint must not contain user:password@; set the keys in `access-key-id`/`secret-access-key`".into());
        }
        let base = base
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let end = r
                .find(']')
                .ok_or_else(|| format!("endpoint {s:?}: unclosed [ in the host"))?;
            let host = format!("[{}]", &r[..end]);
            match r[end + 1..].strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => (host, None),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("endpoint {s:?} has no host"));
        }
        let port = match port {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("endpoint {s:?}: bad port {p:?}"))?,
            ),
            None => None,
        };
        let default = if https { 443 } else { 80 };
        Ok(Endpoint {
            https,
            host: host.to_ascii_lowercase(),
            port: port.filter(|p| *p != default),
            base: base.to_string(),
        })
    }

    pub(super) fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// `host[:port]` for `host`, the port only when it is not the scheme's default.
    pub(super) fn authority(&self, host: &str) -> String {
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }
    }

    pub(super) fn display(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme(),
            self.authority(&self.host),
            self.base
        )
    }
}

impl Inner {
    pub(super) fn endpoint(&self) -> Endpoint {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => {
                let region = self.region();
                let domain = if region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                Endpoint {
                    https: true,
                    host: format!("s3.{region}.{domain}"),
                    port: None,
                    base: String::new(),
                }
            }
        }
    }
}

// ---- TLS ---------------------------------------------------------------------------------

pub(crate) fn tls_config(skip_verify: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    static VERIFIED: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    static UNVERIFIED: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let provider = || Arc::new(rustls::crypto::ring::default_provider());
    if skip_verify {
        return UNVERIFIED
            .get_or_init(|| {
                let p = provider();
                let cfg = rustls::ClientConfig::builder_with_provider(p.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS setup failed: {e}"))?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerify(p)))
                    .with_no_client_auth();
                Ok(Arc::new(cfg))
            })
            .clone();
    }
    VERIFIED
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            log::debug!("TLS roots: Mozilla's plus {added} from the system store");
            let cfg = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup failed: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(cfg))
        })
        .clone()
}

/// `skip-verify: true`: accepts any certificate (signatures are still checked, so the
/// handshake itself is sound; only the server's identity is not).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            (e.https, e.host.as_str(), e.port),
            (false, "127.0.0.1", Some(9000))
        );
        let e = Endpoint::parse("https://s3.example.com:443/base/").unwrap();
        assert_eq!((e.port, e.base.as_str()), (None, "/base"));
        assert_eq!(e.display(), "https://s3.example.com/base");
        let e = Endpoint::parse("http://[::1]:9000").unwrap();
        assert_eq!(e.authority(&e.host), "[::1]:9000");
        assert!(Endpoint::parse("s3.example.com").is_err());
        assert!(Endpoint::parse("http://k:s@host").is_err());
        assert!(Endpoint::parse("http://host:x").is_err());
    }
}
