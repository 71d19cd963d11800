//! Encoding what the shipper uploads: one level-0 LTX file from a batch of transactions, and a
//! snapshot LTX file from a database image. Owns the page merge and the rolling database
//! checksum; never talks to storage and never touches the database.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use crate::capture::{Position, Txn};
use crate::ltx::{self, Encoder, Header};
use crate::snapshot::Image;
use crate::wal;

/// A level-0 file ready to upload, with the replica state it leads to.
pub struct Batch {
    pub bytes: Vec<u8>,
    pub header: Header,
    pub pages: usize,
    pub sums: Vec<u64>,
    pub checksum: u64,
}

/// Transactions received since the last level-0 file, merged as they arrive: each page kept
/// once (the latest image), so a sync interval costs memory for the pages it touched, not for
/// every commit's copy of them.
#[derive(Default)]
pub struct Pending {
    pages: BTreeMap<u32, Box<[u8]>>,
    /// WAL position before the first transaction and after the last.
    first_base: Option<Position>,
    end: Option<Position>,
    pub page_size: u32,
    /// True when transactions of different page sizes were merged (a snapshot must follow).
    pub mixed_page_sizes: bool,
    db_size: u32,
    committed_at_ms: i64,
    txns: usize,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.txns == 0
    }

    /// Transactions merged so far.
    pub fn len(&self) -> usize {
        self.txns
    }

    /// Bytes of page images held.
    pub fn bytes(&self) -> usize {
        self.pages.len() * self.page_size as usize
    }

    pub fn push(&mut self, t: Txn) {
        if self.txns == 0 {
            self.first_base = t.base;
            self.page_size = t.page_size;
        } else if t.page_size != self.page_size {
            self.mixed_page_sizes = true;
        }
        self.txns += 1;
        self.end = Some(t.end);
        self.db_size = t.db_size;
        self.committed_at_ms = t.committed_at_ms;
        self.page_size = t.page_size;
        // Pages past a shrink stay: if the database grows again without rewriting them, SQLite
        // reads (and checkpoints) their latest WAL frame, so the merge must keep it too.
        for (pgno, page) in t.pages {
            if let Some(old) = self.pages.insert(pgno, page) {
                crate::pool::give(old);
            }
        }
    }

    pub fn clear(&mut self) {
        for (_, page) in std::mem::take(&mut self.pages) {
            crate::pool::give(page);
        }
        *self = Pending::default();
    }
}

/// The level-0 file for `txid` with everything in `batch`. `sums` are the per-page checksum
/// terms of the replica's current state; `min_ts` keeps timestamps monotonic.
pub fn batch(batch: &Pending, txid: u64, min_ts: i64, sums: &[u64]) -> Result<Batch, String> {
    let (Some(end), false) = (batch.end, batch.is_empty()) else {
        return Err("empty batch".into());
    };
    let (db_size, page_size) = (batch.db_size, batch.page_size);
    let lock = ltx::lock_pgno(page_size);
    let pages: BTreeMap<u32, &[u8]> = batch
        .pages
        .iter()
        .filter(|(&p, _)| p <= db_size && p != lock)
        .map(|(&p, img)| (p, &img[..]))
        .collect();
    // Where these frames sit in the WAL (Litestream records it; restore ignores it).
    let (wal_offset, wal_size, salts) = match batch.first_base {
        Some(b) if b.frame < end.frame && (b.salt1, b.salt2) == (end.salt1, end.salt2) => {
            let fsz = wal::FRAME_HEADER_SIZE as i64 + page_size as i64;
            let off = wal::frame_offset(b.frame + 1, page_size) as i64;
            (off, (end.frame - b.frame) as i64 * fsz, (b.salt1, b.salt2))
        }
        _ => (0, 0, (0, 0)),
    };
    let mut sums = sums.to_vec();
    sums.resize(db_size as usize, 0);
    let mut acc = sums.iter().fold(0u64, |a, s| a ^ s);
    for (&pgno, p) in &pages {
        let new = ltx::page_checksum(pgno, p);
        let slot = &mut sums[pgno as usize - 1];
        acc ^= *slot ^ new;
        *slot = new;
    }
    let header = Header {
        flags: ltx::HEADER_FLAG_NO_CHECKSUM,
        page_size,
        commit: db_size,
        min_txid: txid,
        max_txid: txid,
        timestamp_ms: batch.committed_at_ms.max(min_ts),
        wal_offset,
        wal_size,
        wal_salt1: salts.0,
        wal_salt2: salts.1,
        ..Header::default()
    };
    let mut enc = Encoder::new(Vec::new(), &header).map_err(|e| e.to_string())?;
    for (&pgno, p) in &pages {
        enc.write_page(pgno, p).map_err(|e| e.to_string())?;
    }
    let (bytes, _) = enc.finish(0).map_err(|e| e.to_string())?;
    Ok(Batch {
        bytes,
        header,
        pages: pages.len(),
        sums,
        checksum: ltx::checksum_flag(acc),
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
