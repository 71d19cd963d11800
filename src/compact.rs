//! Compaction: merges consecutive LTX files into one covering their whole TXID range.
//!
//! Owns the streaming k-way merge. Every LTX file lists its pages in page-number order, so the
//! merge holds one page per input: for each page number, the image from the newest input that
//! has it wins, and pages past the last input's commit size are dropped. Merging a snapshot with
//! the files after it yields a new snapshot. Never reads the database and never talks to
//! storage (the caller opens the inputs and stores the output); inputs are verified (CRC-64)
//! before the output is accepted.

use std::io::{Read, Write};

use crate::ltx::{self, Decoder, Encoder, Header, LtxError};

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("compaction input {index} ({range}): {source}")]
    Input {
        index: usize,
        range: String,
        source: LtxError,
    },
    #[error("compaction output: {0}")]
    Output(LtxError),
    #[error("compaction inputs do not line up: {0}")]
    Mismatch(String),
}

/// Merges `inputs` (ordered by TXID, each starting at or before the previous one's end + 1)
/// into `out`. Returns the writer and the output header.
pub fn compact<R: Read, W: Write>(inputs: Vec<R>, out: W) -> Result<(W, Header), CompactError> {
    let mut decs = Vec::with_capacity(inputs.len());
    for (index, r) in inputs.into_iter().enumerate() {
        let d = Decoder::new(r).map_err(|source| CompactError::Input {
            index,
            range: "?".into(),
            source,
        })?;
        decs.push(d);
    }
    let (first, last) = match (decs.first(), decs.last()) {
        (Some(f), Some(l)) => (f.header().clone(), l.header().clone()),
        _ => return Err(CompactError::Mismatch("no inputs".into())),
    };
    for (i, w) in decs.windows(2).enumerate() {
        let (a, b) = (w[0].header(), w[1].header());
        if b.page_size != a.page_size {
            return Err(CompactError::Mismatch(format!(
                "input {} has page size {}, input {} has {}",
                i,
                a.page_size,
                i + 1,
                b.page_size
            )));
        }
        if b.min_txid > a.max_txid + 1 || b.max_txid < a.max_txid {
            return Err(CompactError::Mismatch(format!(
                "gap or reversal between {:016x}-{:016x} and {:016x}-{:016x}",
                a.min_txid, a.max_txid, b.min_txid, b.max_txid
            )));
        }
    }
    let header = Header {
        flags: ltx::HEADER_FLAG_NO_CHECKSUM,
        page_size: last.page_size,
        commit: last.commit,
        min_txid: first.min_txid,
        max_txid: last.max_txid,
        timestamp_ms: decs
            .iter()
            .map(|d| d.header().timestamp_ms)
            .max()
            .unwrap_or(0),
        ..Header::default()
    };
    let mut enc = Encoder::new(out, &header).map_err(CompactError::Output)?;
    let ps = header.page_size as usize;
    let range =
        |d: &Decoder<R>| format!("{:016x}-{:016x}", d.header().min_txid, d.header().max_txid);
    // The current page of every input: (pgno, image), or None once exhausted.
    let mut heads: Vec<Option<(u32, Vec<u8>)>> = Vec::with_capacity(decs.len());
    for (index, d) in decs.iter_mut().enumerate() {
        let mut buf = vec![0u8; ps];
        let r = d
            .next_page(&mut buf)
            .map_err(|source| CompactError::Input {
                index,
                range: range(d),
                source,
            })?;
        heads.push(r.map(|p| (p, buf)));
    }
    while let Some(pgno) = heads.iter().flatten().map(|(p, _)| *p).min() {
        // The newest input holding this page wins.
        let winner = heads
            .iter()
            .rposition(|h| h.as_ref().is_some_and(|(p, _)| *p == pgno))
            .unwrap_or(0);
        if pgno <= header.commit {
            let page = &heads[winner].as_ref().expect("winner has a page").1;
            enc.write_page(pgno, page).map_err(CompactError::Output)?;
        }
        for (index, d) in decs.iter_mut().enumerate() {
            if heads[index].as_ref().is_some_and(|(p, _)| *p == pgno) {
                let mut buf = heads[index]
                    .take()
                    .map(|(_, b)| b)
                    .unwrap_or_else(|| vec![0u8; ps]);
                let r = d
                    .next_page(&mut buf)
                    .map_err(|source| CompactError::Input {
                        index,
                        range: range(d),
                        source,
                    })?;
                heads[index] = r.map(|p| (p, buf));
            }
        }
    }
    for (index, d) in decs.into_iter().enumerate() {
        let range = range(&d);
        d.finish().map_err(|source| CompactError::Input {
            index,
            range,
            source,
        })?;
    }
    let (w, _) = enc.finish(0).map_err(CompactError::Output)?;
    Ok((w, header))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS: u32 = 512;

    fn file(min: u32, max: u32, commit: u32, ts: i64, pages: &[(u32, u8)]) -> Vec<u8> {
        let h = Header {
            flags: ltx::HEADER_FLAG_NO_CHECKSUM,
            page_size: PS,
            commit,
            min_txid: min as u64,
            max_txid: max as u64,
            timestamp_ms: ts,
            ..Header::default()
        };
        let mut e = Encoder::new(Vec::new(), &h).unwrap();
        for &(p, fill) in pages {
            e.write_page(p, &vec![fill; PS as usize]).unwrap();
        }
        e.finish(0).unwrap().0
    }

    fn pages(bytes: &[u8]) -> Vec<(u32, u8)> {
        ltx::decode(bytes)
            .unwrap()
            .pages
            .iter()
            .map(|(p, d)| (*p, d[0]))
            .collect()
    }

    #[test]
    fn newest_page_wins_and_truncation_applies() {
        let snap = file(1, 3, 4, 10, &[(1, 1), (2, 1), (3, 1), (4, 1)]);
        let d1 = file(4, 4, 5, 20, &[(2, 2), (5, 2)]);
        let d2 = file(5, 5, 3, 30, &[(1, 3)]); // shrinks to 3 pages
        let (out, h) = compact(vec![&snap[..], &d1[..], &d2[..]], Vec::new()).unwrap();
        assert_eq!(
            (h.min_txid, h.max_txid, h.commit, h.timestamp_ms),
            (1, 5, 3, 30)
        );
        assert_eq!(pages(&out), vec![(1, 3), (2, 2), (3, 1)]);
    }

    #[test]
    fn deltas_merge_into_a_delta() {
        let a = file(7, 7, 9, 1, &[(3, 7), (9, 7)]);
        let b = file(8, 9, 9, 2, &[(3, 8), (4, 8)]);
        let (out, h) = compact(vec![&a[..], &b[..]], Vec::new()).unwrap();
        assert_eq!((h.min_txid, h.max_txid), (7, 9));
        assert_eq!(pages(&out), vec![(3, 8), (4, 8), (9, 7)]);
    }

    #[test]
    fn a_gap_or_a_damaged_input_is_refused() {
        let a = file(7, 7, 9, 1, &[(3, 7)]);
        let c = file(9, 9, 9, 2, &[(3, 8)]);
        assert!(matches!(
            compact(vec![&a[..], &c[..]], Vec::new()),
            Err(CompactError::Mismatch(_))
        ));
        let mut bad = file(8, 8, 9, 2, &[(3, 8)]);
        let n = bad.len();
        bad[n - 20] ^= 1;
        assert!(matches!(
            compact(vec![&a[..], &bad[..]], Vec::new()),
            Err(CompactError::Input { index: 1, .. })
        ));
    }
}
