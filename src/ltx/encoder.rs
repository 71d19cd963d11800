//! Streaming LTX writer.

use std::io::Write;

use super::checksum::{hasher, DbChecksum, Hasher};
use super::{
    check_page_order, snapshot_last_pgno, Header, LtxError, Trailer, CHECKSUM_FLAG, PAGE_FLAG_SIZE,
    PAGE_HEADER_SIZE, PAGE_SIZE_PREFIX,
};

/// Writes one LTX file to `W`, page by page, in the current frame format
/// (LZ4 block with size prefix), never holding more than one page.
///
/// Refuses, without writing anything: a header that fails
/// [`Header::validate`]; page 0; a buffer that is not exactly `page_size`;
/// a page above `commit`; the lock page; a page not strictly after the
/// previous one; in a snapshot, any gap (every page `1..=commit` but the lock
/// page, in order). Those refusals leave the encoder usable. An I/O error
/// from `W` poisons it: every later call returns [`LtxError::Poisoned`].
///
/// [`Encoder::finish`] takes `self`, so finishing twice does not compile.
pub struct Encoder<W: Write> {
    w: W,
    header: Header,
    hash: Hasher,
    written: u64,
    prev_pgno: u32,
    /// (pgno, frame length) in write order, i.e. page order: frames are contiguous from
    /// `first_offset`, so 8 bytes a page (a 300 MiB transaction's index is 0.6 MB, not 1.8).
    index: Vec<(u32, u32)>,
    first_offset: Option<u64>,
    compressed: Vec<u8>,
    /// Running database checksum; kept only for snapshots that track checksums.
    snapshot_checksum: Option<DbChecksum>,
    poisoned: bool,
}

impl<W: Write> Encoder<W> {
    /// Validates `header` and writes it.
    pub fn new(w: W, header: &Header) -> Result<Self, LtxError> {
        header.validate()?;
        let mut enc = Encoder {
            w,
            header: header.clone(),
            hash: hasher(),
            written: 0,
            prev_pgno: 0,
            index: Vec::new(),
            first_offset: None,
            compressed: vec![
                0;
                lz4_flex::block::get_maximum_output_size(header.page_size as usize)
            ],
            snapshot_checksum: (header.is_snapshot() && !header.no_checksum())
                .then(DbChecksum::new),
            poisoned: false,
        };
        let bytes = header.encode();
        enc.emit(&bytes, "writing the header")?;
        Ok(enc)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes handed to `W` so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Appends page `pgno`. `data` must be exactly `page_size` bytes.
    pub fn write_page(&mut self, pgno: u32, data: &[u8]) -> Result<(), LtxError> {
        if self.poisoned {
            return Err(LtxError::Poisoned);
        }
        if pgno == 0 {
            return Err(LtxError::ZeroPgno {
                flags: PAGE_FLAG_SIZE,
            });
        }
        if data.len() != self.header.page_size as usize {
            return Err(LtxError::PageSize {
                pgno,
                len: data.len(),
                expected: self.header.page_size,
            });
        }
        check_page_order(&self.header, self.prev_pgno, pgno)?;

        let n = lz4_flex::block::compress_into(data, &mut self.compressed).map_err(|e| {
            LtxError::Compress {
                pgno,
                detail: e.to_string(),
            }
        })?;

        let mut head = [0u8; PAGE_HEADER_SIZE + PAGE_SIZE_PREFIX];
        head[0..4].copy_from_slice(&pgno.to_be_bytes());
        head[4..6].copy_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
        head[6..10].copy_from_slice(&(n as u32).to_be_bytes());

        let offset = self.written;
        // The file checksum covers the frame head and the page as decompressed.
        self.hash.update(&head);
        self.hash.update(data);
        self.put(&head, "writing a page header")?;
        let Encoder {
            w,
            compressed,
            poisoned,
            ..
        } = self;
        if let Err(source) = w.write_all(&compressed[..n]) {
            *poisoned = true;
            return Err(LtxError::Io {
                context: "writing page data",
                source,
            });
        }
        self.written += n as u64;

        self.first_offset.get_or_insert(offset);
        let len = u32::try_from(self.written - offset).expect("an LZ4 frame of one page fits u32");
        self.index.push((pgno, len));
        if let Some(c) = &mut self.snapshot_checksum {
            c.toggle_page(pgno, data);
        }
        self.prev_pgno = pgno;
        Ok(())
    }

    /// Ends the page block, writes the page index and the trailer, flushes `W`
    /// and returns it with the trailer written.
    ///
    /// `post_apply_checksum` must be 0 under the no-checksum flag; otherwise
    /// it must have bit 63 set, and for a snapshot it must equal the checksum
    /// of the pages written (checked here, as readers check it). A file with
    /// `commit` 0 needs checksums tracked and exactly [`CHECKSUM_FLAG`], as in
    /// ltx's own encoder.
    pub fn finish(mut self, post_apply_checksum: u64) -> Result<(W, Trailer), LtxError> {
        if self.poisoned {
            return Err(LtxError::Poisoned);
        }
        let h = &self.header;
        if h.is_snapshot() && self.prev_pgno != snapshot_last_pgno(h) {
            return Err(LtxError::SnapshotIncomplete {
                last: self.prev_pgno,
                commit: h.commit,
            });
        }
        // The file checksum is unknown yet; a flagged placeholder checks the rest.
        Trailer {
            post_apply_checksum,
            file_checksum: CHECKSUM_FLAG,
        }
        .validate(h)?;
        if h.commit == 0 && post_apply_checksum != CHECKSUM_FLAG {
            return Err(LtxError::InvalidTrailer {
                field: "post_apply_checksum",
                value: post_apply_checksum,
                expected:
                    "exactly bit 63 with checksums tracked: ltx cannot write commit 0 otherwise",
            });
        }
        if let Some(c) = self.snapshot_checksum {
            if c.value() != post_apply_checksum {
                return Err(LtxError::PostApplyChecksumMismatch {
                    stored: post_apply_checksum,
                    computed: c.value(),
                });
            }
        }

        let mut tail = vec![0u8; PAGE_HEADER_SIZE]; // end of the page block
        let index_start = tail.len();
        let mut offset = self.first_offset.unwrap_or(0);
        for &(pgno, len) in &self.index {
            put_uvarint(&mut tail, u64::from(pgno));
            put_uvarint(&mut tail, offset);
            put_uvarint(&mut tail, u64::from(len));
            offset += u64::from(len);
        }
        put_uvarint(&mut tail, 0);
        let index_len = (tail.len() - index_start) as u64;
        tail.extend_from_slice(&index_len.to_be_bytes());
        tail.extend_from_slice(&post_apply_checksum.to_be_bytes());
        self.hash.update(&tail);
        self.put(&tail, "writing the page index")?;

        let Encoder { mut w, hash, .. } = self;
        let trailer = Trailer {
            post_apply_checksum,
            file_checksum: CHECKSUM_FLAG | hash.finalize(),
        };
        w.write_all(&trailer.file_checksum.to_be_bytes())
            .and_then(|_| w.flush())
            .map_err(|source| LtxError::Io {
                context: "writing the trailer",
                source,
            })?;
        Ok((w, trailer))
    }

    /// Writes bytes that are also hashed as they are (header, index).
    fn emit(&mut self, bytes: &[u8], context: &'static str) -> Result<(), LtxError> {
        self.hash.update(bytes);
        self.put(bytes, context)
    }

    /// Writes bytes, counting them; does not hash.
    fn put(&mut self, bytes: &[u8], context: &'static str) -> Result<(), LtxError> {
        if let Err(source) = self.w.write_all(bytes) {
            self.poisoned = true;
            return Err(LtxError::Io { context, source });
        }
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Unsigned LEB128, as Go's `binary.AppendUvarint`.
pub(super) fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}
