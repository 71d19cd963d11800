//! LTX codec: the byte format of the replica files, and nothing else.
//!
//! This module owns the exact bytes of an LTX file as Litestream 0.5.17 writes
//! and reads them (it links superfly/ltx v0.5.2): header, page frames, page
//! index, trailer, the CRC-64 file checksum and the rolling database checksum,
//! plus the `<min>-<max>.ltx` file-name convention.
//!
//! It must never do I/O of its own (no files, no network, no clocks, no
//! threads): callers hand it a `Write` or a `Read` (or a byte slice) and the
//! values to put in the header, timestamps included. It must never panic on
//! untrusted input: every malformed file is a typed [`LtxError`]. Where to put
//! files, when to snapshot and how to restore belong to other modules; see
//! docs/LTX-FORMAT.md for those conventions.
//!
//! # Byte layout (all fixed-width integers are big-endian)
//!
//! A file is: header, page block, page index, trailer.
//!
//! ## Header: 100 bytes
//!
//! | at | len | field              | meaning                                              |
//! |----|-----|--------------------|------------------------------------------------------|
//! |  0 |  4  | magic              | ASCII `LTX1`                                         |
//! |  4 |  4  | flags              | only bit `0x2` (no-checksum) is defined; others 0    |
//! |  8 |  4  | page_size          | power of two, 512 ..= 65536                          |
//! | 12 |  4  | commit             | database size in pages once the file is applied      |
//! | 16 |  8  | min_txid           | first transaction in the file, >= 1                  |
//! | 24 |  8  | max_txid           | last transaction in the file, >= min_txid            |
//! | 32 |  8  | timestamp          | signed, milliseconds since the Unix epoch            |
//! | 40 |  8  | pre_apply_checksum | database checksum before applying; 0 if not tracked  |
//! | 48 |  8  | wal_offset         | signed; byte offset in the source WAL, 0 if none     |
//! | 56 |  8  | wal_size           | signed; bytes of WAL covered, 0 if none              |
//! | 64 |  4  | wal_salt1          | WAL header salt 1, 0 if none                         |
//! | 68 |  4  | wal_salt2          | WAL header salt 2, 0 if none                         |
//! | 72 |  8  | node_id            | writer's node id, 0 if unset                         |
//! | 80 | 20  | reserved           | written as zero, not checked when read               |
//!
//! A file whose `min_txid` is 1 is a *snapshot*: it holds every page
//! `1..=commit` in order except the SQLite lock page, and its pre-apply
//! checksum is 0.
//!
//! ## Page block
//!
//! Frames in strictly ascending page-number order, then a 6-byte all-zero page
//! header that ends the block. A frame as written today:
//!
//! | at | len | field      | meaning                                            |
//! |----|-----|------------|----------------------------------------------------|
//! |  0 |  4  | pgno       | page number, >= 1, <= commit, never the lock page  |
//! |  4 |  2  | page flags | `0x1` = a size prefix follows; other bits invalid  |
//! |  6 |  4  | size       | length N of the compressed payload                 |
//! | 10 |  N  | payload    | one raw LZ4 *block* decompressing to page_size     |
//!
//! Frames written before ltx v0.5.2 (Litestream 0.5.0 to 0.5.15) have page
//! flags 0, no size prefix, and carry the page as one LZ4 *frame* (magic
//! `04 22 4D 18`, descriptor, data blocks, end mark, optional content
//! checksum). This module reads both and writes only the first kind.
//!
//! ## Page index
//!
//! One entry per frame, in page order, each three unsigned LEB128 varints:
//! `pgno`, absolute file offset of the frame's first byte, frame length in
//! bytes (page header + size prefix + payload). A single varint `0` ends the
//! entries; then an 8-byte unsigned length of the varint bytes just written
//! (terminator included, this length field excluded).
//!
//! ## Trailer: 16 bytes
//!
//! | at | len | field               | meaning                                      |
//! |----|-----|---------------------|----------------------------------------------|
//! |  0 |  8  | post_apply_checksum | database checksum after applying; 0 if not tracked |
//! |  8 |  8  | file_checksum       | see below; bit 63 always set                 |
//!
//! ## Checksums
//!
//! All CRCs are CRC-64/GO-ISO (Go's `hash/crc64` with the ISO table: reflected
//! polynomial 0x1B, initial value and final xor all ones).
//!
//! The *file checksum* is that CRC over: the 100 header bytes; for every frame
//! its 6-byte page header, its 4-byte size prefix if present, and the
//! **decompressed** page (not the payload bytes as stored); the 6 zero bytes
//! closing the page block; the whole page index including its length field;
//! the trailer's first 8 bytes. The stored value has bit 63 set.
//!
//! The *database checksum* is bit 63 OR'ed onto the XOR, over every page of
//! the database except the lock page, of `crc(pgno as 4 big-endian bytes ||
//! page bytes)`. An empty database's checksum is bit 63 alone. With the
//! no-checksum flag (which Litestream 0.5.x always sets) both database
//! checksums in the file are 0; the file checksum is always required.

mod checksum;
mod decoder;
mod encoder;
mod lz4frame;
#[cfg(test)]
mod tests;

pub use checksum::{
    checksum_flag, crc64, database_checksum, page_checksum, zero_page_checksum, DbChecksum,
};
pub use decoder::{decode, Decoded, Decoder};
pub use encoder::Encoder;

/// The four bytes every LTX file starts with.
pub const MAGIC: [u8; 4] = *b"LTX1";
/// Size of the fixed header.
pub const HEADER_SIZE: usize = 100;
/// Size of a page header (pgno + page flags), without the size prefix.
pub const PAGE_HEADER_SIZE: usize = 6;
/// Size of the compressed-size prefix that follows a page header flagged [`PAGE_FLAG_SIZE`].
pub const PAGE_SIZE_PREFIX: usize = 4;
/// Size of the fixed trailer.
pub const TRAILER_SIZE: usize = 16;

/// Header flag: database checksums are not tracked (pre/post-apply must be 0).
/// Litestream 0.5.17 sets it on every file it writes, and its restore only
/// accepts inputs whose post-apply checksum is 0 (see docs/LTX-FORMAT.md).
pub const HEADER_FLAG_NO_CHECKSUM: u32 = 1 << 1;
/// Every header flag bit this format defines.
pub const HEADER_FLAG_MASK: u32 = HEADER_FLAG_NO_CHECKSUM;
/// Page flag: a 4-byte payload length follows the page header and the payload
/// is a raw LZ4 block. Without it the payload is a self-delimiting LZ4 frame.
pub const PAGE_FLAG_SIZE: u16 = 1 << 0;
/// Bit 63, set on every non-zero checksum so a real checksum is never 0.
pub const CHECKSUM_FLAG: u64 = 1 << 63;

/// Smallest and largest SQLite page sizes.
pub const MIN_PAGE_SIZE: u32 = 512;
pub const MAX_PAGE_SIZE: u32 = 65536;

/// Litestream's level directory for full snapshots (`ltx/9/`).
pub const SNAPSHOT_LEVEL: u32 = 9;

/// Byte offset of SQLite's pending-byte (lock) page: 1 GiB.
const PENDING_BYTE: u64 = 0x4000_0000;

/// The page that holds SQLite's pending byte. It never holds data and never
/// appears in an LTX file; it does not count toward the database checksum.
pub fn lock_pgno(page_size: u32) -> u32 {
    // Callers pass a validated page size; guard against 0 anyway (no panics).
    (PENDING_BYTE / u64::from(page_size.max(1))) as u32 + 1
}

/// True for 512, 1024, ..., 65536.
pub fn is_valid_page_size(page_size: u32) -> bool {
    (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) && page_size.is_power_of_two()
}

/// `"%016x-%016x.ltx"`, the name of an LTX file within its level directory.
pub fn file_name(min_txid: u64, max_txid: u64) -> String {
    format!("{min_txid:016x}-{max_txid:016x}.ltx")
}

/// Inverse of [`file_name`]: exactly 16 lowercase hex digits, `-`, 16 lowercase
/// hex digits, `.ltx` (the same strictness as Litestream's listing, which skips
/// anything else, e.g. its `.tmp` files).
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let b = name.as_bytes();
    if b.len() != 37 || b[16] != b'-' || &b[33..] != b".ltx" {
        return None;
    }
    let hex16 = |s: &[u8]| -> Option<u64> {
        if !s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
    };
    Some((hex16(&b[..16])?, hex16(&b[17..33])?))
}

/// Everything that can be wrong with an LTX file or with a request to write one.
#[derive(Debug, thiserror::Error)]
pub enum LtxError {
    #[error("LTX I/O error while {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("LTX file truncated: {section} ends early at byte offset {offset}")]
    Truncated { section: &'static str, offset: u64 },
    #[error("not an LTX file: magic is {found:02x?}, expected \"LTX1\"")]
    BadMagic { found: [u8; 4] },
    #[error("invalid LTX header: {field} is {value}, expected {expected}")]
    InvalidHeader {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("invalid LTX trailer: {field} is {value:#018x}, expected {expected}")]
    InvalidTrailer {
        field: &'static str,
        value: u64,
        expected: &'static str,
    },
    #[error("page number 0 with page flags {flags:#06x}: page numbers start at 1")]
    ZeroPgno { flags: u16 },
    #[error("page {pgno}: page flags {flags:#06x} has undefined bits (only 0x0001 is defined)")]
    PageFlags { pgno: u32, flags: u16 },
    #[error("page {pgno}: buffer is {len} bytes, expected the page size {expected}")]
    PageSize {
        pgno: u32,
        len: usize,
        expected: u32,
    },
    #[error("page {pgno} is beyond the commit size of {commit} pages")]
    PageBeyondCommit { pgno: u32, commit: u32 },
    #[error("page {pgno} is SQLite's lock page for page size {page_size}; it is never stored")]
    LockPage { pgno: u32, page_size: u32 },
    #[error("page {pgno} after page {prev}: expected {expected}")]
    PageOrder {
        prev: u32,
        pgno: u32,
        expected: String,
    },
    #[error(
        "snapshot ends after page {last} but commit is {commit} pages: snapshots hold every page"
    )]
    SnapshotIncomplete { last: u32, commit: u32 },
    #[error("page {pgno}: compressed size {size} is outside 1..={max}")]
    CompressedSize { pgno: u32, size: u32, max: u32 },
    #[error("page {pgno}: LZ4 data is corrupt: {detail}")]
    Decompress { pgno: u32, detail: String },
    #[error("LTX page index does not match the page block: {detail}")]
    Index { detail: String },
    #[error("LTX file has extra bytes after the trailer, starting at byte offset {offset}")]
    TrailingBytes { offset: u64 },
    #[error("LTX file checksum mismatch: trailer says {stored:#018x}, content hashes to {computed:#018x}")]
    FileChecksumMismatch { stored: u64, computed: u64 },
    #[error("post-apply checksum mismatch: given {stored:#018x}, pages hash to {computed:#018x}")]
    PostApplyChecksumMismatch { stored: u64, computed: u64 },
    #[error("page {pgno}: LZ4 compression failed: {detail}")]
    Compress { pgno: u32, detail: String },
    #[error("LTX encoder or decoder used again after it returned an error")]
    Poisoned,
}

impl LtxError {
    fn header(field: &'static str, value: impl std::fmt::Display, expected: &'static str) -> Self {
        LtxError::InvalidHeader {
            field,
            value: value.to_string(),
            expected,
        }
    }
}

/// The 100-byte header, decoded. Field meanings are in the module table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub flags: u32,
    pub page_size: u32,
    /// Database size in pages after this file is applied.
    pub commit: u32,
    pub min_txid: u64,
    pub max_txid: u64,
    /// Milliseconds since the Unix epoch (supplied by the caller).
    pub timestamp_ms: i64,
    pub pre_apply_checksum: u64,
    pub wal_offset: i64,
    pub wal_size: i64,
    pub wal_salt1: u32,
    pub wal_salt2: u32,
    pub node_id: u64,
}

impl Header {
    /// A snapshot holds the whole database: its range starts at TXID 1.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }

    /// True when the no-checksum flag is set (database checksums are 0).
    pub fn no_checksum(&self) -> bool {
        self.flags & HEADER_FLAG_NO_CHECKSUM != 0
    }

    pub fn lock_pgno(&self) -> u32 {
        lock_pgno(self.page_size)
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.commit.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.to_be_bytes());
        b[32..40].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[40..48].copy_from_slice(&self.pre_apply_checksum.to_be_bytes());
        b[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        b[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        b[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        b[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        b[72..80].copy_from_slice(&self.node_id.to_be_bytes());
        b
    }

    /// Parses the first [`HEADER_SIZE`] bytes of `b`. Checks the length and
    /// the magic only; call [`Header::validate`] for the field rules (the
    /// [`Decoder`] does).
    pub fn decode(b: &[u8]) -> Result<Header, LtxError> {
        if b.len() < HEADER_SIZE {
            return Err(LtxError::Truncated {
                section: "header",
                offset: b.len() as u64,
            });
        }
        let found: [u8; 4] = b[0..4].try_into().unwrap_or_default();
        if found != MAGIC {
            return Err(LtxError::BadMagic { found });
        }
        let u32_at = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_be_bytes(x)
        };
        Ok(Header {
            flags: u32_at(4),
            page_size: u32_at(8),
            commit: u32_at(12),
            min_txid: u64_at(16),
            max_txid: u64_at(24),
            timestamp_ms: u64_at(32) as i64,
            pre_apply_checksum: u64_at(40),
            wal_offset: u64_at(48) as i64,
            wal_size: u64_at(56) as i64,
            wal_salt1: u32_at(64),
            wal_salt2: u32_at(68),
            node_id: u64_at(72),
        })
    }

    /// The same rules ltx v0.5.2 applies before writing or after reading a header.
    pub fn validate(&self) -> Result<(), LtxError> {
        if self.flags & !HEADER_FLAG_MASK != 0 {
            return Err(LtxError::header(
                "flags",
                format!("{:#010x}", self.flags),
                "only bit 0x00000002 (no-checksum)",
            ));
        }
        if !is_valid_page_size(self.page_size) {
            return Err(LtxError::header(
                "page_size",
                self.page_size,
                "a power of two from 512 to 65536",
            ));
        }
        if self.min_txid == 0 {
            return Err(LtxError::header("min_txid", 0, "at least 1"));
        }
        if self.max_txid < self.min_txid {
            return Err(LtxError::header(
                "max_txid",
                self.max_txid,
                "at least min_txid",
            ));
        }
        if self.wal_offset < 0 {
            return Err(LtxError::header(
                "wal_offset",
                self.wal_offset,
                "non-negative",
            ));
        }
        if self.wal_size < 0 {
            return Err(LtxError::header("wal_size", self.wal_size, "non-negative"));
        }
        if (self.wal_salt1 != 0 || self.wal_salt2 != 0) && self.wal_offset == 0 {
            return Err(LtxError::header(
                "wal_offset",
                0,
                "non-zero when a WAL salt is set",
            ));
        }
        if self.wal_offset == 0 && self.wal_size != 0 {
            return Err(LtxError::header(
                "wal_offset",
                0,
                "non-zero when wal_size is set",
            ));
        }
        let pre = self.pre_apply_checksum;
        if self.is_snapshot() {
            if pre != 0 {
                return Err(LtxError::header(
                    "pre_apply_checksum",
                    format!("{pre:#018x}"),
                    "0 on a snapshot (min_txid 1)",
                ));
            }
        } else if self.no_checksum() {
            if pre != 0 {
                return Err(LtxError::header(
                    "pre_apply_checksum",
                    format!("{pre:#018x}"),
                    "0 when the no-checksum flag is set",
                ));
            }
        } else if pre & CHECKSUM_FLAG == 0 {
            return Err(LtxError::header(
                "pre_apply_checksum",
                format!("{pre:#018x}"),
                "bit 63 set on a non-snapshot that tracks checksums",
            ));
        }
        Ok(())
    }
}

/// The 16-byte trailer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trailer {
    pub post_apply_checksum: u64,
    pub file_checksum: u64,
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_SIZE] {
        let mut b = [0u8; TRAILER_SIZE];
        b[..8].copy_from_slice(&self.post_apply_checksum.to_be_bytes());
        b[8..].copy_from_slice(&self.file_checksum.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Trailer, LtxError> {
        if b.len() < TRAILER_SIZE {
            return Err(LtxError::Truncated {
                section: "trailer",
                offset: b.len() as u64,
            });
        }
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[..8]);
        let post = u64::from_be_bytes(x);
        x.copy_from_slice(&b[8..16]);
        Ok(Trailer {
            post_apply_checksum: post,
            file_checksum: u64::from_be_bytes(x),
        })
    }

    /// Format rules for a trailer belonging to `header` (does not recompute anything).
    pub fn validate(&self, header: &Header) -> Result<(), LtxError> {
        let post = self.post_apply_checksum;
        let bad = |expected| {
            Err(LtxError::InvalidTrailer {
                field: "post_apply_checksum",
                value: post,
                expected,
            })
        };
        if header.no_checksum() {
            if post != 0 {
                return bad("0 when the no-checksum flag is set");
            }
        } else if post & CHECKSUM_FLAG == 0 {
            return bad("bit 63 set when checksums are tracked");
        } else if header.commit == 0 && post != CHECKSUM_FLAG {
            return bad("exactly bit 63 (the empty-database checksum) when commit is 0");
        }
        if self.file_checksum & CHECKSUM_FLAG == 0 {
            return Err(LtxError::InvalidTrailer {
                field: "file_checksum",
                value: self.file_checksum,
                expected: "bit 63 set",
            });
        }
        Ok(())
    }
}

/// Where the next page of a file may go, given the previous one (0 = none yet).
/// Shared by the encoder and the decoder so both enforce the same order.
fn check_page_order(header: &Header, prev: u32, pgno: u32) -> Result<(), LtxError> {
    if pgno > header.commit {
        return Err(LtxError::PageBeyondCommit {
            pgno,
            commit: header.commit,
        });
    }
    let lock = header.lock_pgno();
    if pgno == lock {
        return Err(LtxError::LockPage {
            pgno,
            page_size: header.page_size,
        });
    }
    if header.is_snapshot() {
        let want = if prev + 1 == lock { prev + 2 } else { prev + 1 };
        if pgno != want {
            return Err(LtxError::PageOrder {
                prev,
                pgno,
                expected: format!("page {want} (a snapshot holds every page in order)"),
            });
        }
    } else if pgno <= prev {
        return Err(LtxError::PageOrder {
            prev,
            pgno,
            expected: "a strictly larger page number".into(),
        });
    }
    Ok(())
}

/// The page a complete snapshot ends on (0 for an empty database).
fn snapshot_last_pgno(header: &Header) -> u32 {
    if header.commit == header.lock_pgno() {
        header.commit - 1
    } else {
        header.commit
    }
}
