//! CRC-64 and the two LTX checksum conventions (file checksum, database checksum).

use super::{lock_pgno, CHECKSUM_FLAG};
use crc::{Crc, Digest, Table, CRC_64_GO_ISO};

/// Go's `crc64.MakeTable(crc64.ISO)` as a catalogued algorithm, with slice-by-16 tables (32 KiB):
/// the byte-at-a-time table made checksums 39% of restore time.
pub(crate) static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_GO_ISO);

pub(crate) type Hasher = Digest<'static, u64, Table<16>>;

pub(crate) fn hasher() -> Hasher {
    CRC64.digest()
}

/// Plain CRC-64/GO-ISO of `data`, without the flag bit.
pub fn crc64(data: &[u8]) -> u64 {
    CRC64.checksum(data)
}

/// Sets bit 63, which the format puts on every non-zero checksum it stores.
pub fn checksum_flag(c: u64) -> u64 {
    c | CHECKSUM_FLAG
}

/// One page's term of the database checksum: the CRC of the page number
/// (4 bytes, big-endian) followed by the page bytes, with bit 63 set.
pub fn page_checksum(pgno: u32, data: &[u8]) -> u64 {
    let mut h = hasher();
    h.update(&pgno.to_be_bytes());
    h.update(data);
    checksum_flag(h.finalize())
}

/// `page_checksum(pgno, &[0; page_size])` without reading a page: a huge sparse database is
/// mostly zero pages. Over messages of one length a CRC is affine in the message bits, so
/// `crc(pgno ‖ zeros) = crc(0 ‖ zeros) ⊕ ⨁_{bit i of pgno} (crc(2^i ‖ zeros) ⊕ crc(0 ‖ zeros))`:
/// 33 CRCs per page size, computed once, then a few XORs per page.
pub fn zero_page_checksum(pgno: u32, page_size: u32) -> u64 {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static BASIS: Mutex<Option<HashMap<u32, [u64; 33]>>> = Mutex::new(None);
    let basis = {
        let mut g = BASIS.lock().unwrap_or_else(|p| p.into_inner());
        *g.get_or_insert_with(HashMap::new)
            .entry(page_size)
            .or_insert_with(|| {
                let zeros = vec![0u8; page_size as usize];
                let raw = |x: u32| {
                    let mut h = hasher();
                    h.update(&x.to_be_bytes());
                    h.update(&zeros);
                    h.finalize()
                };
                let base = raw(0);
                let mut b = [base; 33];
                for (i, slot) in b.iter_mut().enumerate().take(32) {
                    *slot = raw(1 << i) ^ base;
                }
                b
            })
    };
    let mut c = basis[32];
    let mut bits = pgno;
    while bits != 0 {
        c ^= basis[bits.trailing_zeros() as usize];
        bits &= bits - 1;
    }
    checksum_flag(c)
}

/// The rolling database checksum. Because it is an XOR of per-page terms, a
/// page can be taken out again by XOR-ing its old term, so a writer can keep
/// it current page by page without rereading the database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbChecksum {
    acc: u64,
}

impl DbChecksum {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or, called again with the same bytes, removes) one page. The
    /// caller must skip the lock page, as [`database_checksum`] does.
    pub fn toggle_page(&mut self, pgno: u32, data: &[u8]) {
        self.acc ^= page_checksum(pgno, data);
    }

    /// Replaces page `pgno`'s old content by its new content.
    pub fn replace_page(&mut self, pgno: u32, old: &[u8], new: &[u8]) {
        self.toggle_page(pgno, old);
        self.toggle_page(pgno, new);
    }

    /// The value as stored in a header or trailer (bit 63 always set).
    pub fn value(&self) -> u64 {
        checksum_flag(self.acc)
    }
}

/// Database checksum of a whole database image (`db.len()` a multiple of
/// `page_size`; a partial last page is ignored). The lock page is left out,
/// as ltx's decoder does when it verifies a snapshot.
pub fn database_checksum(page_size: u32, db: &[u8]) -> u64 {
    let mut c = DbChecksum::new();
    let lock = lock_pgno(page_size);
    for (i, page) in db.chunks_exact(page_size.max(1) as usize).enumerate() {
        let pgno = i as u32 + 1;
        if pgno != lock {
            c.toggle_page(pgno, page);
        }
    }
    c.value()
}

#[cfg(test)]
mod zero_page_tests {
    use super::*;

    #[test]
    fn zero_page_checksum_equals_the_real_one() {
        for ps in [512u32, 4096, 65536] {
            let zeros = vec![0u8; ps as usize];
            for pgno in [1u32, 2, 3, 255, 256, 4097, 1_310_720, u32::MAX] {
                assert_eq!(
                    zero_page_checksum(pgno, ps),
                    page_checksum(pgno, &zeros),
                    "{ps} {pgno}"
                );
            }
        }
    }
}
