//! Listing a level: ListObjectsV2 on the level prefix, following continuation tokens, turned
//! into `FileInfo`s (sizes from the listing) sorted by TXID range.
//!
//! Must never report a key that is not an LTX file name directly under the level prefix
//! (other objects are skipped), and never return a partial listing: a truncated page
//! without a continuation token is an error.

use std::io::Read;

use super::request::Req;
use super::xml::{xml_blocks, xml_text, MAX_XML_BODY};
use super::Inner;
use crate::ltx;
use crate::storage::{FileInfo, RemoteFailure, StorageError};

impl Inner {
    pub(super) fn list(&self, level: u8) -> Result<Vec<FileInfo>, StorageError> {
        let prefix = self.layout.level_prefix(&self.path, level);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type".to_string(), "2".to_string()),
                ("prefix".to_string(), prefix.clone()),
            ];
            if let Some(n) = self.list_page_size {
                query.push(("max-keys".into(), n.to_string()));
            }
            if let Some(t) = &token {
                query.push(("continuation-token".into(), t.clone()));
            }
            let req = Req {
                method: "GET",
                key: None,
                query,
                headers: vec![],
                sse_c: false,
                body: None,
            };
            let object = self.object(&prefix);
            let resp = self
                .send(&req)
                .map_err(|f| self.error("list", &object, f))?;
            let mut body = String::new();
            resp.into_reader()
                .take(MAX_XML_BODY)
                .read_to_string(&mut body)
                .map_err(|e| self.read_error("list", &object, e))?;
            for c in xml_blocks(&body, "Contents") {
                let Some(key) = xml_text(c, "Key") else {
                    continue;
                };
                let Some(name) = key.strip_prefix(&prefix) else {
                    continue;
                };
                let Some((min_txid, max_txid)) = ltx::parse_file_name(name) else {
                    continue;
                };
                let size = xml_text(c, "Size")
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                out.push(FileInfo {
                    level,
                    min_txid,
                    max_txid,
                    size,
                });
            }
            let truncated = xml_text(&body, "IsTruncated").is_some_and(|t| t.trim() == "true");
            match xml_text(&body, "NextContinuationToken") {
                Some(t) if truncated && !t.is_empty() => token = Some(t),
                _ if truncated => {
                    return Err(StorageError::Remote(Box::new(RemoteFailure {
                        op: "list",
                        object,
                        replica: self.describe(),
                        status: 200,
                        code: String::new(),
                        detail: "a truncated listing without a continuation token".into(),
                        hint: "the store does not implement ListObjectsV2 fully".into(),
                    })))
                }
                _ => break,
            }
        }
        out.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(out)
    }
}
