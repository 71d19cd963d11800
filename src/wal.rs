//! SQLite WAL and wal-index (shm) byte formats.
//!
//! Owns: parsing the 32-byte WAL header, the 24-byte frame header, the wal-index header that
//! lives in shared memory, SQLite's cumulative frame checksum, and a reader that walks the valid
//! committed prefix of a WAL file. Pure functions over byte slices (the reader takes any
//! `Read + Seek`); it must never write a WAL, never take a lock, and never hold state across calls.
//!
//! ```text
//! WAL header (32 bytes, big-endian)        frame header (24 bytes, big-endian)
//!  0  magic 0x377f0682 (LE cksum) / 0x377f0683 (BE)   0  page number
//!  4  format version 3007000                           4  db size in pages after commit (0 = not a commit)
//!  8  page size (1 means 65536)                        8  salt-1 (copy of header)
//! 12  checkpoint sequence                             12  salt-2
//! 16  salt-1 (incremented on every restart)           16  checksum-1 (cumulative)
//! 20  salt-2 (random on every restart)                20  checksum-2
//! 24  checksum-1 of bytes 0..24
//! 28  checksum-2
//! frame i (1-based) starts at 32 + (i-1) * (24 + page_size)
//!
//! wal-index header (shm region 0, native byte order, two copies at 0 and 48; the first is
//! written last by SQLite, so a reader compares both)
//!  8  iChange   incremented once per committed transaction, kept across WAL restarts
//! 12  isInit    14 szPage (1 means 65536)   16 mxFrame   20 nPage
//! 24  aFrameCksum[2]   32 aSalt[2] (raw bytes copied from the WAL header)   40 aCksum[2]
//! 96  nBackfill (checkpoint info)
//! ```

use std::io::{Read, Seek, SeekFrom};

pub const WAL_HEADER_SIZE: usize = 32;
pub const FRAME_HEADER_SIZE: usize = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes the page-size field of a WAL or database header (1 and 0 mean 65536 in places).
pub fn decode_page_size(v: u32) -> Option<u32> {
    let ps = if v == 1 { 65536 } else { v };
    (ps.is_power_of_two() && (512..=65536).contains(&ps)).then_some(ps)
}

/// Byte offset of frame `index` (1-based) in a WAL of the given page size.
pub fn frame_offset(index: u32, page_size: u32) -> u64 {
    WAL_HEADER_SIZE as u64 + (index as u64 - 1) * (FRAME_HEADER_SIZE as u64 + page_size as u64)
}

/// Where a byte offset inside the WAL falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalRegion {
    /// Inside the 32-byte file header.
    Header,
    /// Inside frame `index`, `within` bytes from the start of its 24-byte header.
    Frame { index: u32, within: u64 },
}

pub fn locate(offset: u64, page_size: u32) -> WalRegion {
    if offset < WAL_HEADER_SIZE as u64 {
        return WalRegion::Header;
    }
    let fsz = FRAME_HEADER_SIZE as u64 + page_size as u64;
    let rel = offset - WAL_HEADER_SIZE as u64;
    WalRegion::Frame {
        index: (rel / fsz) as u32 + 1,
        within: rel % fsz,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    pub big_endian_cksum: bool,
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub cksum: (u32, u32),
}

impl WalHeader {
    /// Parses and verifies a WAL header; `None` if the bytes are not a valid header.
    pub fn parse(b: &[u8]) -> Option<WalHeader> {
        if b.len() < WAL_HEADER_SIZE {
            return None;
        }
        let magic = be32(b, 0);
        let big = match magic {
            MAGIC_LE => false,
            MAGIC_BE => true,
            _ => return None,
        };
        if be32(b, 4) != 3_007_000 {
            return None;
        }
        let page_size = decode_page_size(be32(b, 8))?;
        let cksum = (be32(b, 24), be32(b, 28));
        if checksum(big, (0, 0), &b[..24]) != cksum {
            return None;
        }
        Some(WalHeader {
            big_endian_cksum: big,
            page_size,
            checkpoint_seq: be32(b, 12),
            salt1: be32(b, 16),
            salt2: be32(b, 20),
            cksum,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub pgno: u32,
    /// Database size in pages after this commit; 0 for a frame that is not a commit.
    pub commit: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub cksum: (u32, u32),
}

impl FrameHeader {
    pub fn parse(b: &[u8]) -> FrameHeader {
        FrameHeader {
            pgno: be32(b, 0),
            commit: be32(b, 4),
            salt1: be32(b, 8),
            salt2: be32(b, 12),
            cksum: (be32(b, 16), be32(b, 20)),
        }
    }
}

/// SQLite's WAL checksum: continues `(s1, s2)` over `data` (a multiple of 8 bytes), reading
/// 32-bit words in the byte order the WAL header's magic selects.
pub fn checksum(big_endian: bool, seed: (u32, u32), data: &[u8]) -> (u32, u32) {
    let (mut s1, mut s2) = seed;
    for pair in data.chunks_exact(8) {
        let (a, b) = if big_endian {
            (be32(pair, 0), be32(pair, 4))
        } else {
            (
                u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]),
                u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]),
            )
        };
        s1 = s1.wrapping_add(a).wrapping_add(s2);
        s2 = s2.wrapping_add(b).wrapping_add(s1);
    }
    (s1, s2)
}

/// The wal-index header as read from shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmHeader {
    pub ichange: u32,
    pub is_init: bool,
    pub page_size: Option<u32>,
    pub mx_frame: u32,
    pub n_page: u32,
    pub salt: [u8; 8],
}

impl ShmHeader {
    /// Parses one 48-byte copy (native byte order).
    pub fn parse(b: &[u8]) -> ShmHeader {
        let ne = |at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let sz = u16::from_ne_bytes([b[14], b[15]]) as u32;
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&b[32..40]);
        ShmHeader {
            ichange: ne(8),
            is_init: b[12] != 0,
            page_size: decode_page_size(if sz == 1 { 65536 } else { sz }),
            mx_frame: ne(16),
            n_page: ne(20),
            salt,
        }
    }

    /// Salts as the big-endian integers the WAL header holds.
    pub fn salts(&self) -> (u32, u32) {
        (be32(&self.salt, 0), be32(&self.salt, 4))
    }
}

/// One committed transaction found in a WAL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalScan {
    pub header: WalHeader,
    /// Index of the last commit frame of the valid prefix (0: no committed frame).
    pub last_commit: u32,
    /// Database size in pages after that commit.
    pub db_size: u32,
    /// SQLite's cumulative checksum after that commit frame (the header's with none).
    pub cksum: (u32, u32),
}

/// Walks the WAL from frame 1, following salts and the cumulative checksum, and calls
/// `on_frame(index, header, page)` for every frame up to the last valid commit frame.
/// Frames after the last commit of the valid prefix are never reported. Returns `None` when
/// the file has no valid header.
pub fn scan<R: Read + Seek>(
    r: &mut R,
    on_frame: impl FnMut(u32, &FrameHeader, &[u8]),
) -> std::io::Result<Option<WalScan>> {
    scan_upto(r, None, on_frame)
}

/// [`scan`], stopping after frame `limit` (the wal-index's mxFrame: a valid commit frame past
/// it is one SQLite reported failed, or one still being written).
pub fn scan_upto<R: Read + Seek>(
    r: &mut R,
    limit: Option<u32>,
    mut on_frame: impl FnMut(u32, &FrameHeader, &[u8]),
) -> std::io::Result<Option<WalScan>> {
    let mut hb = [0u8; WAL_HEADER_SIZE];
    r.seek(SeekFrom::Start(0))?;
    if read_full(r, &mut hb)? < WAL_HEADER_SIZE {
        return Ok(None);
    }
    let Some(header) = WalHeader::parse(&hb) else {
        return Ok(None);
    };
    let ps = header.page_size as usize;
    let mut buf = vec![0u8; FRAME_HEADER_SIZE + ps];
    let mut cks = header.cksum;
    let mut uncommitted: Vec<(u32, FrameHeader, Vec<u8>)> = Vec::new();
    let (mut last_commit, mut db_size, mut commit_cksum) = (0u32, 0u32, header.cksum);
    let mut index = 0u32;
    loop {
        if limit.is_some_and(|l| index >= l) || read_full(r, &mut buf)? < buf.len() {
            break;
        }
        index += 1;
        let fh = FrameHeader::parse(&buf[..FRAME_HEADER_SIZE]);
        if fh.salt1 != header.salt1 || fh.salt2 != header.salt2 || fh.pgno == 0 {
            break;
        }
        let c = checksum(header.big_endian_cksum, cks, &buf[..8]);
        let c = checksum(header.big_endian_cksum, c, &buf[FRAME_HEADER_SIZE..]);
        if c != fh.cksum {
            break;
        }
        cks = c;
        uncommitted.push((index, fh, buf[FRAME_HEADER_SIZE..].to_vec()));
        if fh.commit != 0 {
            for (i, h, p) in uncommitted.drain(..) {
                on_frame(i, &h, &p);
            }
            last_commit = index;
            db_size = fh.commit;
            commit_cksum = cks;
        }
    }
    Ok(Some(WalScan {
        header,
        last_commit,
        db_size,
        cksum: commit_cksum,
    }))
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_frames() {
        assert_eq!(locate(0, 4096), WalRegion::Header);
        assert_eq!(
            locate(32, 4096),
            WalRegion::Frame {
                index: 1,
                within: 0
            }
        );
        assert_eq!(
            locate(32 + 24, 4096),
            WalRegion::Frame {
                index: 1,
                within: 24
            }
        );
        assert_eq!(
            locate(32 + 4120, 4096),
            WalRegion::Frame {
                index: 2,
                within: 0
            }
        );
        assert_eq!(frame_offset(3, 512), 32 + 2 * 536);
    }

    #[test]
    fn header_checksum_detects_damage() {
        let mut h = [0u8; 32];
        h[..4].copy_from_slice(&MAGIC_LE.to_be_bytes());
        h[4..8].copy_from_slice(&3_007_000u32.to_be_bytes());
        h[8..12].copy_from_slice(&4096u32.to_be_bytes());
        h[16..20].copy_from_slice(&7u32.to_be_bytes());
        let c = checksum(false, (0, 0), &h[..24]);
        h[24..28].copy_from_slice(&c.0.to_be_bytes());
        h[28..32].copy_from_slice(&c.1.to_be_bytes());
        let p = WalHeader::parse(&h).expect("valid header");
        assert_eq!((p.page_size, p.salt1), (4096, 7));
        h[17] ^= 1;
        assert!(WalHeader::parse(&h).is_none());
    }

    #[test]
    fn page_size_field() {
        assert_eq!(decode_page_size(1), Some(65536));
        assert_eq!(decode_page_size(512), Some(512));
        assert_eq!(decode_page_size(1000), None);
        assert_eq!(decode_page_size(256), None);
    }
}
