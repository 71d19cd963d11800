//! AWS Signature Version 4 for S3 requests (header-based signing), and the UTC calendar
//! arithmetic it needs. Pure: no I/O, no clock except [`AmzTime::now`].
//!
//! Written from AWS's "Signature Version 4 signing process" and "Authenticating Requests:
//! Using the Authorization Header" (S3 API reference); the tests check it against the worked
//! examples published there. The rules that matter for S3:
//! * the canonical URI is each path segment URI-encoded once (`/` kept), not normalised;
//! * the canonical query string is every `name=value` URI-encoded (including `/`), sorted by
//!   name then value, with `=` kept for empty values;
//! * headers are lower-cased, values trimmed with inner runs of spaces collapsed, sorted, and
//!   every header given to [`authorization`] is signed (`host`, `x-amz-date` and
//!   `x-amz-content-sha256` must be among them);
//! * the payload hash is the hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
//!
//! Must never log or return the secret key or the derived signing key; only the final
//! `Authorization` value (which contains the access key id and the signature) leaves here.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Hex SHA-256 of the empty string (the payload hash of a request without a body).
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Payload hash for a body that is not hashed (`sign-payload: false`).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// SigV4's URI encoding: unreserved characters (`A-Z a-z 0-9 - . _ ~`) stay, every other byte
/// becomes `%XX` (upper-case hex); `/` stays only when `keep_slash` (object key paths).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for &b in s.as_bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A UTC instant in the two forms SigV4 uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmzTime {
    /// `YYYYMMDD`
    pub date: String,
    /// `YYYYMMDDTHHMMSSZ` (the `x-amz-date` header)
    pub datetime: String,
}

impl AmzTime {
    pub fn from_unix(secs: i64) -> AmzTime {
        let (y, mo, d, h, mi, s) = utc_fields(secs);
        AmzTime {
            date: format!("{y:04}{mo:02}{d:02}"),
            datetime: format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z"),
        }
    }

    pub fn now() -> AmzTime {
        AmzTime::from_unix(crate::clock::now_ms() / 1000)
    }
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
pub use crate::restore::civil_from_days;

/// (year, month, day, hour, minute, second) in UTC of a Unix time.
pub fn utc_fields(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    )
}

/// One request to sign. `canonical_uri` is already URI-encoded (see [`uri_encode`]); `query`
/// holds raw (unencoded) pairs; `headers` are the headers to sign and send, `host`,
/// `x-amz-date` and `x-amz-content-sha256` included.
pub struct Request<'a> {
    pub method: &'a str,
    pub canonical_uri: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub payload_hash: &'a str,
}

/// The canonical query string: pairs URI-encoded, sorted by name then value.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    q.sort();
    q.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    h.sort();
    let canon = h.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed = h
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (canon, signed)
}

/// The canonical request (exposed for tests and debugging; it holds no secret).
pub fn canonical_request(req: &Request<'_>) -> String {
    let (headers, signed) = canonical_headers(req.headers);
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        req.canonical_uri,
        canonical_query(req.query),
        headers,
        signed,
        req.payload_hash
    )
}

/// The value of the `Authorization` header for `req`.
pub fn authorization(
    access_key_id: &str,
    secret_access_key: &str,
    region: &str,
    service: &str,
    time: &AmzTime,
    req: &Request<'_>,
) -> String {
    let (_, signed) = canonical_headers(req.headers);
    let scope = format!("{}/{region}/{service}/aws4_request", time.date);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        time.datetime,
        sha256_hex(canonical_request(req).as_bytes())
    );
    let k_date = hmac(
        format!("AWS4{secret_access_key}").as_bytes(),
        time.date.as_bytes(),
    );
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex(&hmac(&k_signing, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/{scope},SignedHeaders={signed},Signature={signature}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn time() -> AmzTime {
        // 2013-05-24T00:00:00Z, the date of AWS's published examples.
        AmzTime::from_unix(1_369_353_600)
    }

    #[test]
    fn dates() {
        assert_eq!(time().datetime, "20130524T000000Z");
        assert_eq!(time().date, "20130524");
        assert_eq!(AmzTime::from_unix(0).datetime, "19700101T000000Z");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(utc_fields(951_825_600), (2000, 2, 29, 12, 0, 0));
        assert_eq!(utc_fields(4_102_444_799), (2099, 12, 31, 23, 59, 59));
    }

    #[test]
    fn encodes() {
        assert_eq!(uri_encode("a b/c~d", true), "a%20b/c~d");
        assert_eq!(uri_encode("a/b=c", false), "a%2Fb%3Dc");
        assert_eq!(uri_encode("é", false), "%C3%A9");
    }

    /// AWS's GET Object example (first 10 bytes of examplebucket/test.txt).
    #[test]
    fn aws_example_get_object() {
        let headers = h(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let req = Request {
            method: "GET",
            canonical_uri: "/test.txt",
            query: &[],
            headers: &headers,
            payload_hash: EMPTY_SHA256,
        };
        assert_eq!(
            sha256_hex(canonical_request(&req).as_bytes()),
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            authorization(AKID, SECRET, "us-east-1", "s3", &time(), &req),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// AWS's GET Bucket (List Objects) example: a query string, sorted.
    #[test]
    fn aws_example_list_objects() {
        let headers = h(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let query = h(&[("prefix", "J"), ("max-keys", "2")]);
        let req = Request {
            method: "GET",
            canonical_uri: "/",
            query: &query,
            headers: &headers,
            payload_hash: EMPTY_SHA256,
        };
        assert!(
            authorization(AKID, SECRET, "us-east-1", "s3", &time(), &req).ends_with(
                "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
            )
        );
    }

    /// AWS's PUT Object example (a signed payload and a `:` in the key).
    #[test]
    fn aws_example_put_object() {
        let body = sha256_hex(b"Welcome to Amazon S3.");
        let headers = h(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", &body),
        ]);
        let uri = format!("/{}", uri_encode("test$file.text", true));
        let req = Request {
            method: "PUT",
            canonical_uri: &uri,
            query: &[],
            headers: &headers,
            payload_hash: &body,
        };
        assert!(
            authorization(AKID, SECRET, "us-east-1", "s3", &time(), &req).ends_with(
                "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
            )
        );
    }
}
