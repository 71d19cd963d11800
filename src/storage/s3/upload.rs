//! Writing objects: the headers every new object carries (Litestream's timestamp metadata,
//! storage class, SSE-KMS), one PutObject for a body shorter than a part, else a multipart
//! upload (parts growing every 2,500, completion retried and checked, abort on failure).
//!
//! Must never hold more than one part of the body in memory, never leave a failed multipart
//! upload behind without trying to abort it, and never report success for a completion
//! that answered 200 with an `<Error>` inside.

use std::io::{self, Read};

use super::errors::{Failure, TransportKind};
use super::request::{drain, Req};
use super::xml::{xml_escape, xml_text, MAX_XML_BODY};
use super::{litestream_timestamp, Inner, Layout, METADATA_TIMESTAMP};
use crate::storage::{Precondition, RemoteFailure, StorageError};

/// Whether a conditional request failed because the object was not in the required state.
pub(super) fn precondition_failed(f: &Failure) -> bool {
    match f {
        Failure::Status { status, code, .. } => {
            *status == 412
                || code == "PreconditionFailed"
                || code == "ConditionalRequestConflict"
                || (*status == 409 && code.is_empty())
        }
        Failure::Transport { .. } => false,
    }
}

/// S3's limit on parts per upload.
const MAX_PARTS: u32 = 10_000;

impl Inner {
    fn put_headers(&self, timestamp_ms: i64) -> Vec<(String, String)> {
        let mut h = vec![
            (
                format!("{}{METADATA_TIMESTAMP}", self.meta_prefix),
                litestream_timestamp(timestamp_ms),
            ),
            (
                "content-type".to_string(),
                "application/octet-stream".to_string(),
            ),
        ];
        if let Some(sc) = &self.storage_class {
            let name = if self.layout == Layout::Gcs {
                "x-goog-storage-class"
            } else {
                "x-amz-storage-class"
            };
            h.push((name.into(), sc.clone()));
        }
        h.extend(self.sse_write.iter().cloned());
        h
    }

    /// One conditional PutObject of a small body (`If-None-Match: *` or `If-Match: <etag>`);
    /// returns the new ETag when the store sends one. A 412 (or a 409 conflicting
    /// conditional write, or `If-Match` on a missing key) is `PreconditionFailed`.
    pub(super) fn put_if(
        &self,
        key: &str,
        body: &[u8],
        cond: Precondition<'_>,
    ) -> Result<Option<String>, StorageError> {
        let object = self.object(key);
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(self.sse_write.iter().cloned());
        match cond {
            Precondition::Absent => headers.push(("if-none-match".into(), "*".into())),
            Precondition::Matches(tag) => headers.push(("if-match".into(), tag.to_string())),
        }
        let req = Req {
            method: "PUT",
            key: Some(key),
            query: vec![],
            headers,
            sse_c: true,
            body: Some(body),
        };
        match self.send(&req) {
            Ok(resp) => {
                let tag = resp.header("etag").map(str::to_string);
                drain(resp);
                Ok(tag)
            }
            Err(f)
                if precondition_failed(&f)
                    || (matches!(cond, Precondition::Matches(_))
                        && matches!(f.code(), "NoSuchKey" | "NotFound")) =>
            {
                Err(StorageError::PreconditionFailed { op: "put", object })
            }
            Err(f) => Err(self.error("put", &object, f)),
        }
    }

    pub(super) fn put(
        &self,
        key: &str,
        timestamp_ms: i64,
        src: &mut dyn Read,
    ) -> Result<u64, StorageError> {
        let object = self.object(key);
        let mut buf = Vec::new();
        read_up_to(src, &mut buf, self.part_size).map_err(|e| StorageError::Io {
            op: "put",
            object: object.clone(),
            source: e,
            hint: Some("reading the file to upload failed"),
        })?;
        if buf.len() < self.part_size {
            let req = Req {
                method: "PUT",
                key: Some(key),
                query: vec![],
                headers: self.put_headers(timestamp_ms),
                sse_c: true,
                body: Some(&buf),
            };
            let resp = self.send(&req).map_err(|f| self.error("put", &object, f))?;
            drain(resp);
            return Ok(buf.len() as u64);
        }
        self.put_multipart(key, &object, timestamp_ms, buf, src)
    }

    fn put_multipart(
        &self,
        key: &str,
        object: &str,
        timestamp_ms: i64,
        mut buf: Vec<u8>,
        src: &mut dyn Read,
    ) -> Result<u64, StorageError> {
        let create = Req {
            method: "POST",
            key: Some(key),
            query: vec![("uploads".into(), String::new())],
            headers: self.put_headers(timestamp_ms),
            sse_c: true,
            body: Some(&[]),
        };
        let resp = self
            .send(&create)
            .map_err(|f| self.error("put (start multipart upload)", object, f))?;
        let mut body = String::new();
        resp.into_reader()
            .take(MAX_XML_BODY)
            .read_to_string(&mut body)
            .map_err(|e| self.read_error("put", object, e))?;
        let upload_id = xml_text(&body, "UploadId").ok_or_else(|| {
            StorageError::Remote(Box::new(RemoteFailure {
                op: "put",
                object: object.to_string(),
                replica: self.describe(),
                status: 200,
                code: String::new(),
                detail: "CreateMultipartUpload returned no UploadId".into(),
                hint: "the store does not implement multipart uploads; raise `part-size` above your largest file".into(),
            }))
        })?;
        let mut upload = || -> Result<u64, StorageError> {
            let mut parts: Vec<(u32, String)> = Vec::new();
            let mut total = 0u64;
            let mut n: u32 = 1;
            loop {
                let req = Req {
                    method: "PUT",
                    key: Some(key),
                    query: vec![
                        ("partNumber".into(), n.to_string()),
                        ("uploadId".into(), upload_id.clone()),
                    ],
                    headers: vec![],
                    sse_c: true,
                    body: Some(&buf),
                };
                let resp = self
                    .send(&req)
                    .map_err(|f| self.error("put (upload part)", object, f))?;
                let etag = resp.header("etag").unwrap_or("").to_string();
                drain(resp);
                parts.push((n, etag));
                total += buf.len() as u64;
                buf.clear();
                // Grow parts every 2,500 so 10,000 parts reach ~190 GiB at 5 MiB.
                let want = self
                    .part_size
                    .saturating_mul(1usize << (n / 2500).min(6))
                    .min(1 << 30);
                read_up_to(src, &mut buf, want).map_err(|e| StorageError::Io {
                    op: "put",
                    object: object.to_string(),
                    source: e,
                    hint: Some("reading the file to upload failed"),
                })?;
                if buf.is_empty() {
                    break;
                }
                n += 1;
                if n > MAX_PARTS {
                    return Err(StorageError::Config {
                        replica: self.describe(),
                        message: format!(
                            "{object} needs more than {MAX_PARTS} parts; raise `part-size`"
                        ),
                    });
                }
            }
            self.complete_multipart(key, object, &upload_id, &parts, total)?;
            Ok(total)
        };
        let res = upload();
        if res.is_err() {
            let abort = Req {
                method: "DELETE",
                key: Some(key),
                query: vec![("uploadId".into(), upload_id.clone())],
                headers: vec![],
                sse_c: false,
                body: None,
            };
            match self.send(&abort) {
                Ok(r) => drain(r),
                Err(f) if f.code() == "NoSuchUpload" => {}
                Err(f) => log::warn!(
                    "{}: could not abort the failed multipart upload of {object}: {}",
                    self.describe(),
                    self.error("abort", object, f)
                ),
            }
        }
        res
    }

    fn complete_multipart(
        &self,
        key: &str,
        object: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        total: u64,
    ) -> Result<(), StorageError> {
        let mut xml = String::from(
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
        );
        for (n, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                xml_escape(etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let req = Req {
            method: "POST",
            key: Some(key),
            query: vec![("uploadId".into(), upload_id.to_string())],
            headers: vec![("content-type".into(), "application/xml".into())],
            sse_c: false,
            body: Some(xml.as_bytes()),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A 200 answer may still carry an <Error> (S3 reports late failures that way).
            let f = match self.send(&req) {
                Ok(resp) => {
                    let mut body = String::new();
                    match resp
                        .into_reader()
                        .take(MAX_XML_BODY)
                        .read_to_string(&mut body)
                    {
                        Ok(_) if !body.contains("<Error>") => return Ok(()),
                        Ok(_) => Failure::Status {
                            status: 200,
                            code: xml_text(&body, "Code").unwrap_or_default(),
                            message: self.scrub(&xml_text(&body, "Message").unwrap_or_default()),
                            region: None,
                            attempts: attempt,
                        },
                        Err(e) => Failure::Transport {
                            kind: TransportKind::Io,
                            detail: e.to_string(),
                            attempts: attempt,
                        },
                    }
                }
                Err(f) => f,
            };
            // A retry of a completion that did succeed finds the upload gone.
            if attempt > 1 && f.code() == "NoSuchUpload" && self.head_size(key) == Some(total) {
                return Ok(());
            }
            let retry_200 = matches!(&f, Failure::Status { status: 200, .. }) && f.transient();
            let retry_io = matches!(
                &f,
                Failure::Transport {
                    kind: TransportKind::Io,
                    ..
                }
            );
            if (retry_200 || retry_io) && attempt < self.retry.max_attempts {
                std::thread::sleep(self.retry.delay(attempt));
                continue;
            }
            return Err(self.error("put (complete multipart upload)", object, f));
        }
    }

    /// The size of an object, if it exists.
    fn head_size(&self, key: &str) -> Option<u64> {
        let req = Req {
            method: "HEAD",
            key: Some(key),
            query: vec![],
            headers: vec![],
            sse_c: true,
            body: None,
        };
        let resp = self.send(&req).ok()?;
        resp.header("content-length")?.parse().ok()
    }
}

/// Appends up to `limit` bytes of `src` to `buf` (fewer only at end of input).
fn read_up_to(src: &mut dyn Read, buf: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    let start = buf.len();
    buf.reserve(limit.min(1 << 20));
    let mut chunk = vec![0u8; 256 << 10];
    while buf.len() - start < limit {
        let want = (limit - (buf.len() - start)).min(chunk.len());
        match src.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
