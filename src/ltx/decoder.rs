//! Streaming LTX reader, plus a whole-slice convenience.

use std::io::{ErrorKind, Read};

use super::checksum::{hasher, DbChecksum, Hasher};
use super::{
    check_page_order, lz4frame, snapshot_last_pgno, Header, LtxError, Trailer, CHECKSUM_FLAG,
    HEADER_SIZE, MAGIC, PAGE_FLAG_SIZE, PAGE_HEADER_SIZE, TRAILER_SIZE,
};

/// A reader that counts what it consumed and turns early EOF into
/// [`LtxError::Truncated`] with the offset where the missing data starts.
pub(super) struct Src<R> {
    r: R,
    pos: u64,
}

impl<R: Read> Src<R> {
    pub(super) fn new(r: R) -> Self {
        Src { r, pos: 0 }
    }

    /// Fills `buf`. At end of input the error's offset is where the input ended (the
    /// truncation point), not where the section started.
    pub(super) fn read_exact(
        &mut self,
        buf: &mut [u8],
        section: &'static str,
    ) -> Result<(), LtxError> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => {
                    return Err(LtxError::Truncated {
                        section,
                        offset: self.pos + n as u64,
                    })
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(LtxError::Io {
                        context: "reading an LTX file",
                        source,
                    })
                }
            }
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// True if the underlying reader is at its end.
    fn at_eof(&mut self) -> Result<bool, LtxError> {
        let mut one = [0u8; 1];
        loop {
            match self.r.read(&mut one) {
                Ok(n) => return Ok(n == 0),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(LtxError::Io {
                        context: "reading past the trailer",
                        source,
                    })
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Pages,
    /// The zero page header was read; the index comes next.
    Index,
    /// An error was returned; the position in the stream is unknown.
    Failed,
}

/// Reads one LTX file from `R` without loading it whole: the header at
/// construction, then pages in file order, then [`Decoder::finish`] checks the
/// index, trailer and checksums. Every page is handed out before the file
/// checksum is known, so a caller applying pages must treat them as
/// provisional until `finish` succeeds. Many small reads are issued: wrap
/// files in a `BufReader`.
///
/// Stricter than ltx's reader in ways no file written by ltx can trip:
/// pages must be in order, within `commit`, never the lock page; a snapshot
/// must be complete; the index must describe the frames exactly; nothing may
/// follow the trailer.
pub struct Decoder<R: Read> {
    src: Src<R>,
    header: Header,
    hash: Hasher,
    state: State,
    prev_pgno: u32,
    frames: Vec<(u32, u64, u64)>,
    compressed: Vec<u8>,
    snapshot_checksum: Option<DbChecksum>,
}

impl<R: Read> Decoder<R> {
    /// Reads, parses and validates the header.
    pub fn new(r: R) -> Result<Self, LtxError> {
        let mut src = Src::new(r);
        let mut b = [0u8; HEADER_SIZE];
        if let Err(e) = src.read_exact(&mut b, "header") {
            // A short file that does not even start like an LTX file is not a truncated one.
            if let LtxError::Truncated { offset, .. } = e {
                let n = (offset as usize).min(MAGIC.len());
                if b[..n] != MAGIC[..n] {
                    let found = [b[0], b[1], b[2], b[3]];
                    return Err(LtxError::BadMagic { found });
                }
            }
            return Err(e);
        }
        let header = Header::decode(&b)?;
        header.validate()?;
        let mut hash = hasher();
        hash.update(&b);
        Ok(Decoder {
            src,
            hash,
            state: State::Pages,
            prev_pgno: 0,
            frames: Vec::new(),
            compressed: Vec::new(),
            snapshot_checksum: (header.is_snapshot() && !header.no_checksum())
                .then(DbChecksum::new),
            header,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.src.pos
    }

    /// Decodes the next page into `buf` (exactly `page_size` bytes) and
    /// returns its number, or `None` once the page block has ended.
    pub fn next_page(&mut self, buf: &mut [u8]) -> Result<Option<u32>, LtxError> {
        match self.state {
            State::Index => return Ok(None),
            State::Failed => return Err(LtxError::Poisoned),
            State::Pages => {}
        }
        let r = self.read_page(buf);
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    /// [`Decoder::next_page`] into a fresh buffer.
    pub fn next_page_vec(&mut self) -> Result<Option<(u32, Vec<u8>)>, LtxError> {
        let mut buf = vec![0u8; self.header.page_size as usize];
        Ok(self.next_page(&mut buf)?.map(|pgno| (pgno, buf)))
    }

    fn read_page(&mut self, buf: &mut [u8]) -> Result<Option<u32>, LtxError> {
        let page_size = self.header.page_size;
        if buf.len() != page_size as usize {
            return Err(LtxError::PageSize {
                pgno: 0,
                len: buf.len(),
                expected: page_size,
            });
        }
        let offset = self.src.pos;
        let mut ph = [0u8; PAGE_HEADER_SIZE];
        self.src.read_exact(&mut ph, "page header")?;
        self.hash.update(&ph);
        let pgno = u32::from_be_bytes([ph[0], ph[1], ph[2], ph[3]]);
        let flags = u16::from_be_bytes([ph[4], ph[5]]);
        if pgno == 0 && flags == 0 {
            self.state = State::Index;
            return Ok(None);
        }
        if pgno == 0 {
            return Err(LtxError::ZeroPgno { flags });
        }
        if flags & !PAGE_FLAG_SIZE != 0 {
            return Err(LtxError::PageFlags { pgno, flags });
        }
        check_page_order(&self.header, self.prev_pgno, pgno)?;

        if flags & PAGE_FLAG_SIZE != 0 {
            let mut sz = [0u8; 4];
            self.src.read_exact(&mut sz, "page size prefix")?;
            self.hash.update(&sz);
            let size = u32::from_be_bytes(sz);
            let max = lz4_flex::block::get_maximum_output_size(page_size as usize) as u32;
            if size == 0 || size > max {
                return Err(LtxError::CompressedSize { pgno, size, max });
            }
            self.compressed.resize(size as usize, 0);
            self.src.read_exact(&mut self.compressed, "page data")?;
            let n = lz4_flex::block::decompress_into(&self.compressed, buf).map_err(|e| {
                LtxError::Decompress {
                    pgno,
                    detail: e.to_string(),
                }
            })?;
            if n != buf.len() {
                return Err(LtxError::Decompress {
                    pgno,
                    detail: format!(
                        "decompressed to {n} bytes, expected the page size {page_size}"
                    ),
                });
            }
        } else {
            lz4frame::read_frame(&mut self.src, pgno, buf)?;
        }
        self.hash.update(buf);
        self.frames.push((pgno, offset, self.src.pos - offset));
        if let Some(c) = &mut self.snapshot_checksum {
            c.toggle_page(pgno, buf);
        }
        self.prev_pgno = pgno;
        Ok(Some(pgno))
    }

    /// Reads (and checks) any pages not yet read, the page index and the
    /// trailer; requires end of input after it; verifies the file checksum,
    /// the trailer's format and, for a snapshot that tracks checksums, its
    /// post-apply checksum against the pages. Returns the trailer.
    pub fn finish(mut self) -> Result<Trailer, LtxError> {
        let mut page = vec![0u8; self.header.page_size as usize];
        while self.next_page(&mut page)?.is_some() {}
        let h = &self.header;
        if h.is_snapshot() && self.prev_pgno != snapshot_last_pgno(h) {
            return Err(LtxError::SnapshotIncomplete {
                last: self.prev_pgno,
                commit: h.commit,
            });
        }

        let index_start = self.src.pos;
        for (i, &(pgno, offset, len)) in self.frames.iter().enumerate() {
            let got_pgno = read_uvarint(&mut self.src, &mut self.hash)?;
            if got_pgno == 0 {
                return Err(LtxError::Index {
                    detail: format!(
                        "index ends after {i} entries, page block has {} frames",
                        self.frames.len()
                    ),
                });
            }
            let got_offset = read_uvarint(&mut self.src, &mut self.hash)?;
            let got_len = read_uvarint(&mut self.src, &mut self.hash)?;
            if (got_pgno, got_offset, got_len) != (u64::from(pgno), offset, len) {
                return Err(LtxError::Index {
                    detail: format!(
                        "entry {i} is (pgno {got_pgno}, offset {got_offset}, length {got_len}), \
                         frame is (pgno {pgno}, offset {offset}, length {len})"
                    ),
                });
            }
        }
        let end = read_uvarint(&mut self.src, &mut self.hash)?;
        if end != 0 {
            return Err(LtxError::Index {
                detail: format!(
                    "entry for page {end} beyond the {} frames of the page block",
                    self.frames.len()
                ),
            });
        }
        let index_len = self.src.pos - index_start;
        let mut b8 = [0u8; 8];
        self.src.read_exact(&mut b8, "page index length")?;
        self.hash.update(&b8);
        let stated = u64::from_be_bytes(b8);
        if stated != index_len {
            return Err(LtxError::Index {
                detail: format!("length field says {stated} bytes, entries take {index_len}"),
            });
        }

        let mut tb = [0u8; TRAILER_SIZE];
        self.src.read_exact(&mut tb, "trailer")?;
        self.hash.update(&tb[..8]);
        let trailer = Trailer::decode(&tb)?;
        let end_offset = self.src.pos;
        if !self.src.at_eof()? {
            return Err(LtxError::TrailingBytes { offset: end_offset });
        }
        let computed = CHECKSUM_FLAG | self.hash.finalize();
        if computed != trailer.file_checksum {
            return Err(LtxError::FileChecksumMismatch {
                stored: trailer.file_checksum,
                computed,
            });
        }
        trailer.validate(&self.header)?;
        if let Some(c) = self.snapshot_checksum {
            if c.value() != trailer.post_apply_checksum {
                return Err(LtxError::PostApplyChecksumMismatch {
                    stored: trailer.post_apply_checksum,
                    computed: c.value(),
                });
            }
        }
        Ok(trailer)
    }
}

/// Unsigned LEB128 as Go's `binary.ReadUvarint` reads it (at most 10 bytes,
/// no overflow), hashing the bytes consumed.
pub(super) fn read_uvarint<R: Read>(src: &mut Src<R>, hash: &mut Hasher) -> Result<u64, LtxError> {
    let mut v = 0u64;
    for i in 0..10 {
        let mut b = [0u8; 1];
        src.read_exact(&mut b, "page index")?;
        hash.update(&b);
        let byte = b[0];
        if i == 9 && byte > 1 {
            break;
        }
        v |= u64::from(byte & 0x7F) << (7 * i);
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(LtxError::Index {
        detail: "varint overflows 64 bits".into(),
    })
}

/// A whole LTX file, decoded and verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub header: Header,
    /// (pgno, page bytes) in file order.
    pub pages: Vec<(u32, Vec<u8>)>,
    pub trailer: Trailer,
}

/// Decodes and verifies a complete in-memory LTX file.
pub fn decode(bytes: &[u8]) -> Result<Decoded, LtxError> {
    let mut dec = Decoder::new(bytes)?;
    let mut pages = Vec::new();
    while let Some(p) = dec.next_page_vec()? {
        pages.push(p);
    }
    let header = dec.header.clone();
    let trailer = dec.finish()?;
    Ok(Decoded {
        header,
        pages,
        trailer,
    })
}
