//! Encoding what the shipper uploads, always streamed to a local file (memory never grows with a
//! transaction's size): a level-0 LTX file from the pages the tail read out of the WAL, a
//! level-0 file holding only the pages of an image that differ from the replica (a resync), and
//! a snapshot LTX file from an image. Owns the rolling database checksum; never talks to storage
//! and never writes the database.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use crate::capture::{PageError, Tail, Taken};
use crate::ltx::{self, Encoder, Header};
use crate::snapshot::Image;

#[derive(Debug)]
pub enum Error {
    /// The frames are no longer there: continuity is lost.
    Lost(String),
    /// The local file could not be written.
    Local(String),
}

/// A level-0 file written to disk: the checksum terms it changes and the new database checksum.
pub struct Encoded {
    pub pages: usize,
    /// (page number, new checksum term) for every page written.
    pub sums: Vec<(u32, u64)>,
    pub checksum: u64,
}

/// Applies `changed` terms and the new size to the replica's page record; returns the page
/// numbers whose term changed (for the state file).
pub fn apply_sums(sums: &mut Vec<u64>, changed: &[(u32, u64)], db_size: u32) -> Vec<u32> {
    sums.resize(db_size as usize, 0);
    let mut out = Vec::with_capacity(changed.len());
    for &(pgno, s) in changed {
        if let Some(slot) = sums.get_mut(pgno as usize - 1) {
            *slot = s;
            out.push(pgno);
        }
    }
    out
}

/// The database checksum of `sums` after `changed` and a resize to `db_size`, without copying.
fn rolled_checksum(sums: &[u64], changed: &[(u32, u64)], db_size: u32) -> u64 {
    let keep = (db_size as usize).min(sums.len());
    let mut acc = sums[..keep].iter().fold(0u64, |a, s| a ^ s);
    for &(pgno, s) in changed.iter().filter(|c| c.0 <= db_size) {
        let old = if (pgno as usize) <= keep {
            sums[pgno as usize - 1]
        } else {
            0
        };
        acc ^= old ^ s;
    }
    ltx::checksum_flag(acc)
}

fn level0_header(page_size: u32, db_size: u32, txid: u64, ts: i64) -> Header {
    Header {
        flags: ltx::HEADER_FLAG_NO_CHECKSUM,
        page_size,
        commit: db_size,
        min_txid: txid,
        max_txid: txid,
        timestamp_ms: ts,
        ..Header::default()
    }
}

fn create(path: &Path, header: &Header) -> Result<Encoder<BufWriter<File>>, Error> {
    let out = File::create(path).map_err(|e| Error::Local(format!("{}: {e}", path.display())))?;
    Encoder::new(BufWriter::with_capacity(256 << 10, out), header)
        .map_err(|e| Error::Local(e.to_string()))
}

fn finish(enc: Encoder<BufWriter<File>>) -> Result<(), Error> {
    let (w, _) = enc.finish(0).map_err(|e| Error::Local(e.to_string()))?;
    w.into_inner()
        .map_err(|e| Error::Local(e.to_string()))?
        .sync_data()
        .map_err(|e| Error::Local(e.to_string()))
}

/// The level-0 file for `txid` with every page the tail holds, written to `path`. `sums` are
/// the replica's per-page checksum terms before it.
pub fn from_tail(
    tail: &Tail,
    taken: &Taken,
    txid: u64,
    ts: i64,
    sums: &[u64],
    path: &Path,
) -> Result<Encoded, Error> {
    let header = level0_header(taken.page_size, taken.db_size, txid, ts);
    let mut enc = create(path, &header)?;
    let mut changed = Vec::with_capacity(taken.pages);
    tail.for_each_page(ltx::lock_pgno(taken.page_size), |pgno, page| {
        changed.push((pgno, ltx::page_checksum(pgno, page)));
        enc.write_page(pgno, page).map_err(|e| e.to_string())
    })
    .map_err(|e| match e {
        PageError::Lost(why) => Error::Lost(why),
        PageError::Sink(why) => Error::Local(why),
    })?;
    finish(enc)?;
    Ok(Encoded {
        pages: changed.len(),
        checksum: rolled_checksum(sums, &changed, taken.db_size),
        sums: changed,
    })
}

/// The pages of `img` whose checksum term differs from the replica's `sums` (pages past the
/// replica's size included), with the image's size.
pub fn diff(img: &Image, sums: &[u64]) -> Vec<(u32, u64)> {
    let lock = ltx::lock_pgno(img.page_size);
    (1..=img.db_size)
        .filter(|&p| p != lock)
        .filter_map(|p| {
            let new = img.page_sums[p as usize - 1];
            (sums.get(p as usize - 1) != Some(&new)).then_some((p, new))
        })
        .collect()
}

/// A resync: the level-0 file for `txid` holding the `changed` pages of `img`.
pub fn from_image_diff(
    img: &Image,
    changed: &[(u32, u64)],
    sums: &[u64],
    txid: u64,
    ts: i64,
    path: &Path,
) -> Result<Encoded, Error> {
    let header = level0_header(img.page_size, img.db_size, txid, ts);
    let mut enc = create(path, &header)?;
    let mut page = vec![0u8; img.page_size as usize];
    for &(pgno, _) in changed {
        img.read_page(pgno, &mut page)
            .map_err(|e| Error::Local(format!("reading the image: {e}")))?;
        enc.write_page(pgno, &page)
            .map_err(|e| Error::Local(e.to_string()))?;
    }
    finish(enc)?;
    Ok(Encoded {
        pages: changed.len(),
        checksum: rolled_checksum(sums, changed, img.db_size),
        sums: changed.to_vec(),
    })
}

/// Writes the snapshot file (TXIDs 1..=txid, every page but the lock page) for `img` to `path`,
/// fsync'd, and returns it reopened for reading.
pub fn snapshot(img: &Image, txid: u64, timestamp_ms: i64, path: &Path) -> Result<File, String> {
    let header = Header {
        flags: ltx::HEADER_FLAG_NO_CHECKSUM,
        page_size: img.page_size,
        commit: img.db_size,
        min_txid: 1,
        max_txid: txid,
        timestamp_ms,
        ..Header::default()
    };
    let out = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut enc =
        Encoder::new(BufWriter::with_capacity(1 << 20, out), &header).map_err(|e| e.to_string())?;
    let lock = ltx::lock_pgno(img.page_size);
    let mut page = vec![0u8; img.page_size as usize];
    for pgno in (1..=img.db_size).filter(|&p| p != lock) {
        img.read_page(pgno, &mut page)
            .map_err(|e| format!("reading snapshot image: {e}"))?;
        enc.write_page(pgno, &page).map_err(|e| e.to_string())?;
    }
    let (w, _) = enc.finish(0).map_err(|e| e.to_string())?;
    w.into_inner()
        .map_err(|e| e.to_string())?
        .sync_all()
        .map_err(|e| e.to_string())?;
    File::open(path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolled_checksum_matches_a_full_recount() {
        let sums: Vec<u64> = (1..=10u64).map(|i| i * 0x9e37_79b9_7f4a_7c15).collect();
        let changed = vec![(2u32, 77u64), (9, 5), (12, 1234)];
        for db_size in [8u32, 10, 12] {
            let mut full = sums.clone();
            apply_sums(&mut full, &changed, db_size);
            let want = ltx::checksum_flag(full.iter().fold(0, |a, s| a ^ s));
            assert_eq!(
                rolled_checksum(&sums, &changed, db_size),
                want,
                "size {db_size}"
            );
        }
    }
}
