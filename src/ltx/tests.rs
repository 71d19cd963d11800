//! Unit tests of the LTX codec. Interop with the real Litestream binary lives
//! in tests/ltx_interop.rs.

use super::checksum::hasher;
use super::*;

/// Deterministic page content: half structured (compressible), half noise.
fn page(pgno: u32, page_size: u32, seed: u64) -> Vec<u8> {
    let mut x = seed ^ (u64::from(pgno) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    (0..page_size as usize)
        .map(|i| {
            if i < page_size as usize / 2 {
                (i as u32 ^ pgno) as u8
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

fn header(page_size: u32, commit: u32, min: u64, max: u64) -> Header {
    Header {
        flags: HEADER_FLAG_NO_CHECKSUM,
        page_size,
        commit,
        min_txid: min,
        max_txid: max,
        timestamp_ms: 1_700_000_000_123,
        ..Header::default()
    }
}

fn encode(h: &Header, pages: &[(u32, Vec<u8>)], post: u64) -> Result<Vec<u8>, LtxError> {
    let mut enc = Encoder::new(Vec::new(), h)?;
    for (pgno, data) in pages {
        enc.write_page(*pgno, data)?;
    }
    Ok(enc.finish(post)?.0)
}

fn snapshot_pages(page_size: u32, n: u32, seed: u64) -> Vec<(u32, Vec<u8>)> {
    (1..=n).map(|p| (p, page(p, page_size, seed))).collect()
}

/// Recomputes the file checksum of a current-format file after a test has
/// edited it, so the structural checks can be tested in isolation.
fn reseal(file: &mut [u8], page_size: u32) {
    let mut h = hasher();
    h.update(&file[..HEADER_SIZE]);
    let mut at = HEADER_SIZE;
    loop {
        let head = &file[at..at + PAGE_HEADER_SIZE];
        if head.iter().all(|&b| b == 0) {
            break;
        }
        let size = u32::from_be_bytes(file[at + 6..at + 10].try_into().unwrap()) as usize;
        h.update(&file[at..at + 10]);
        let mut out = vec![0; page_size as usize];
        lz4_flex::block::decompress_into(&file[at + 10..at + 10 + size], &mut out).unwrap();
        h.update(&out);
        at += 10 + size;
    }
    let end = file.len() - 8;
    h.update(&file[at..end]);
    let c = CHECKSUM_FLAG | h.finalize();
    file[end..].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn crc_matches_go_iso_check_value() {
    // The catalogue check value of CRC-64/GO-ISO over "123456789".
    assert_eq!(crc64(b"123456789"), 0xb909_56c7_75a4_1001);
    assert_eq!(checksum_flag(1), CHECKSUM_FLAG | 1);
    let p = page(3, 512, 1);
    let mut raw = 3u32.to_be_bytes().to_vec();
    raw.extend_from_slice(&p);
    assert_eq!(page_checksum(3, &p), CHECKSUM_FLAG | crc64(&raw));
}

#[test]
fn db_checksum_is_order_free_and_reversible() {
    let (a, b, c) = (page(1, 512, 1), page(2, 512, 1), page(2, 512, 2));
    let mut x = DbChecksum::new();
    assert_eq!(x.value(), CHECKSUM_FLAG, "empty database");
    x.toggle_page(2, &b);
    x.toggle_page(1, &a);
    let mut db = a.clone();
    db.extend_from_slice(&b);
    assert_eq!(x.value(), database_checksum(512, &db));
    x.replace_page(2, &b, &c);
    db[512..].copy_from_slice(&c);
    assert_eq!(x.value(), database_checksum(512, &db));
}

#[test]
fn header_bytes_are_where_the_table_says() {
    let h = Header {
        flags: 2,
        page_size: 4096,
        commit: 7,
        min_txid: 0x0102,
        max_txid: 0x0304,
        timestamp_ms: -2,
        pre_apply_checksum: 0x8000_0000_0000_0005,
        wal_offset: 32,
        wal_size: 4120,
        wal_salt1: 0xAABB_CCDD,
        wal_salt2: 0x1122_3344,
        node_id: 9,
    };
    let b = h.encode();
    assert_eq!(&b[0..4], b"LTX1");
    assert_eq!(b[7], 2);
    assert_eq!(&b[8..12], &[0, 0, 0x10, 0]);
    assert_eq!(b[15], 7);
    assert_eq!(&b[22..24], &[1, 2]);
    assert_eq!(&b[30..32], &[3, 4]);
    assert_eq!(
        &b[32..40],
        &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]
    );
    assert_eq!(b[40], 0x80);
    assert_eq!(b[55], 32);
    assert_eq!(
        &b[64..72],
        &[0xAA, 0xBB, 0xCC, 0xDD, 0x11, 0x22, 0x33, 0x44]
    );
    assert_eq!(b[79], 9);
    assert!(b[80..].iter().all(|&x| x == 0));
    assert_eq!(Header::decode(&b).unwrap(), h);
}

#[test]
fn round_trips_at_every_page_size() {
    for shift in 9..=16 {
        let ps = 1u32 << shift;
        let pages = snapshot_pages(ps, 3, shift);
        let h = header(ps, 3, 1, 5);
        let bytes = encode(&h, &pages, 0).unwrap();
        let d = decode(&bytes).unwrap();
        assert_eq!(d.header, h);
        assert_eq!(d.pages, pages);
        assert_eq!(d.trailer.post_apply_checksum, 0);
        assert_ne!(d.trailer.file_checksum & CHECKSUM_FLAG, 0);
        assert_eq!(
            &bytes[bytes.len() - 8..],
            &d.trailer.file_checksum.to_be_bytes()
        );
    }
}

#[test]
fn round_trips_with_checksums_tracked() {
    let ps = 1024;
    let snap = snapshot_pages(ps, 4, 7);
    let mut h = header(ps, 4, 1, 1);
    h.flags = 0;
    let db: Vec<u8> = snap.iter().flat_map(|(_, d)| d.clone()).collect();
    let sum = database_checksum(ps, &db);
    let bytes = encode(&h, &snap, sum).unwrap();
    assert_eq!(decode(&bytes).unwrap().trailer.post_apply_checksum, sum);

    // A delta that changes page 2 and grows the database by page 5.
    let (new2, new5) = (page(2, ps, 99), page(5, ps, 99));
    let mut rolling = DbChecksum::new();
    for (p, d) in &snap {
        rolling.toggle_page(*p, d);
    }
    rolling.replace_page(2, &snap[1].1, &new2);
    rolling.toggle_page(5, &new5);
    let mut dh = header(ps, 5, 2, 2);
    dh.flags = 0;
    dh.pre_apply_checksum = sum;
    let delta = encode(&dh, &[(2, new2), (5, new5)], rolling.value()).unwrap();
    let d = decode(&delta).unwrap();
    assert_eq!(d.header.pre_apply_checksum, sum);
    assert_eq!(d.trailer.post_apply_checksum, rolling.value());
}

#[test]
fn streaming_decoder_fills_caller_buffer_and_finish_drains() {
    let pages = snapshot_pages(512, 5, 3);
    let bytes = encode(&header(512, 5, 1, 1), &pages, 0).unwrap();
    let mut dec = Decoder::new(std::io::Cursor::new(&bytes)).unwrap();
    let mut buf = vec![0u8; 512];
    assert_eq!(dec.next_page(&mut buf).unwrap(), Some(1));
    assert_eq!(buf, pages[0].1);
    assert!(matches!(
        dec.next_page(&mut [0u8; 100]),
        Err(LtxError::PageSize { len: 100, .. })
    ));
    // After an error the decoder refuses to continue.
    assert!(matches!(dec.next_page(&mut buf), Err(LtxError::Poisoned)));

    let mut dec = Decoder::new(&bytes[..]).unwrap();
    dec.next_page(&mut buf).unwrap();
    let t = dec.finish().unwrap(); // pages 2..=5 are read and checked here
    assert_eq!(t, decode(&bytes).unwrap().trailer);
}

#[test]
fn empty_delta_is_allowed() {
    let bytes = encode(&header(4096, 10, 3, 4), &[], 0).unwrap();
    let d = decode(&bytes).unwrap();
    assert!(d.pages.is_empty());
    // header + zero page header + index terminator + index length + trailer
    assert_eq!(bytes.len(), HEADER_SIZE + 6 + 1 + 8 + TRAILER_SIZE);
}

#[test]
fn header_validation_errors() {
    let ok = header(4096, 1, 2, 3);
    ok.validate().unwrap();
    let cases: Vec<(&str, Header)> = vec![
        (
            "flags",
            Header {
                flags: 1,
                ..ok.clone()
            },
        ),
        (
            "flags",
            Header {
                flags: 0x8000_0002,
                ..ok.clone()
            },
        ),
        (
            "page_size",
            Header {
                page_size: 0,
                ..ok.clone()
            },
        ),
        (
            "page_size",
            Header {
                page_size: 256,
                ..ok.clone()
            },
        ),
        (
            "page_size",
            Header {
                page_size: 3000,
                ..ok.clone()
            },
        ),
        (
            "page_size",
            Header {
                page_size: 131072,
                ..ok.clone()
            },
        ),
        (
            "min_txid",
            Header {
                min_txid: 0,
                ..ok.clone()
            },
        ),
        (
            "max_txid",
            Header {
                max_txid: 1,
                ..ok.clone()
            },
        ),
        (
            "wal_offset",
            Header {
                wal_offset: -1,
                ..ok.clone()
            },
        ),
        (
            "wal_size",
            Header {
                wal_offset: 32,
                wal_size: -1,
                ..ok.clone()
            },
        ),
        (
            "wal_offset",
            Header {
                wal_salt2: 5,
                ..ok.clone()
            },
        ),
        (
            "wal_offset",
            Header {
                wal_size: 10,
                ..ok.clone()
            },
        ),
        (
            "pre_apply_checksum",
            Header {
                min_txid: 1,
                pre_apply_checksum: CHECKSUM_FLAG,
                ..ok.clone()
            },
        ),
        (
            "pre_apply_checksum",
            Header {
                pre_apply_checksum: CHECKSUM_FLAG | 1,
                ..ok.clone()
            },
        ),
        (
            "pre_apply_checksum",
            Header {
                flags: 0,
                pre_apply_checksum: 0,
                ..ok.clone()
            },
        ),
        (
            "pre_apply_checksum",
            Header {
                flags: 0,
                pre_apply_checksum: 5,
                ..ok.clone()
            },
        ),
    ];
    for (field, h) in cases {
        match h.validate() {
            Err(LtxError::InvalidHeader { field: f, .. }) if f == field => {}
            other => panic!("{h:?}: expected an error on {field}, got {other:?}"),
        }
        // The encoder refuses it too, and writes nothing.
        let mut out = Vec::new();
        assert!(Encoder::new(&mut out, &h).is_err());
        assert!(out.is_empty());
        // And the decoder refuses a file that carries it.
        let mut file = h.encode().to_vec();
        file.extend_from_slice(&[0; 64]);
        assert!(matches!(decode(&file), Err(LtxError::InvalidHeader { .. })));
    }
    // Accepted combinations.
    Header {
        wal_offset: 32,
        wal_size: 4096,
        wal_salt1: 1,
        ..ok.clone()
    }
    .validate()
    .unwrap();
    Header {
        flags: 0,
        pre_apply_checksum: CHECKSUM_FLAG | 7,
        ..ok.clone()
    }
    .validate()
    .unwrap();
    Header {
        min_txid: 1,
        flags: 0,
        ..ok.clone()
    }
    .validate()
    .unwrap();

    assert!(matches!(
        Header::decode(&[0; 99]),
        Err(LtxError::Truncated {
            section: "header",
            ..
        })
    ));
    let mut b = ok.encode();
    b[3] = b'2';
    assert!(matches!(Header::decode(&b), Err(LtxError::BadMagic { found }) if &found == b"LTX2"));
}

#[test]
fn encoder_page_errors() {
    let ps = 512;
    let mut enc = Encoder::new(Vec::new(), &header(ps, 10, 2, 2)).unwrap();
    let p = page(1, ps, 0);
    assert!(matches!(
        enc.write_page(0, &p),
        Err(LtxError::ZeroPgno { .. })
    ));
    assert!(matches!(
        enc.write_page(1, &p[..511]),
        Err(LtxError::PageSize {
            pgno: 1,
            len: 511,
            expected: 512
        })
    ));
    assert!(matches!(
        enc.write_page(11, &p),
        Err(LtxError::PageBeyondCommit {
            pgno: 11,
            commit: 10
        })
    ));
    enc.write_page(4, &p).unwrap();
    assert!(matches!(
        enc.write_page(4, &p),
        Err(LtxError::PageOrder {
            prev: 4,
            pgno: 4,
            ..
        })
    ));
    assert!(matches!(
        enc.write_page(3, &p),
        Err(LtxError::PageOrder {
            prev: 4,
            pgno: 3,
            ..
        })
    ));
    enc.write_page(10, &p).unwrap(); // refusals above left the encoder usable
    let (bytes, _) = enc.finish(0).unwrap();
    assert_eq!(
        decode(&bytes)
            .unwrap()
            .pages
            .iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        vec![4, 10]
    );

    // Lock page: refused in a delta; a snapshot must step over it.
    let big = header(65536, 16390, 2, 2);
    let lock = lock_pgno(65536);
    assert_eq!(lock, 16385);
    assert_eq!(lock_pgno(4096), 262145);
    let mut enc = Encoder::new(Vec::new(), &big).unwrap();
    let p64 = vec![7u8; 65536];
    assert!(matches!(
        enc.write_page(lock, &p64),
        Err(LtxError::LockPage { pgno: 16385, .. })
    ));
    enc.write_page(lock + 1, &p64).unwrap();
    let snap = Header {
        min_txid: 1,
        ..big.clone()
    };
    check_page_order(&snap, lock - 1, lock + 1).unwrap();
    assert!(matches!(
        check_page_order(&snap, lock - 1, lock),
        Err(LtxError::LockPage { .. })
    ));
    assert!(matches!(
        check_page_order(&snap, lock - 1, lock + 2),
        Err(LtxError::PageOrder { .. })
    ));
    assert_eq!(
        snapshot_last_pgno(&Header {
            commit: lock,
            ..snap.clone()
        }),
        lock - 1
    );

    // Snapshots: start at 1, no gaps, complete at finish.
    let mut enc = Encoder::new(Vec::new(), &header(ps, 3, 1, 1)).unwrap();
    assert!(matches!(
        enc.write_page(2, &p),
        Err(LtxError::PageOrder {
            prev: 0,
            pgno: 2,
            ..
        })
    ));
    enc.write_page(1, &p).unwrap();
    assert!(matches!(
        enc.write_page(3, &p),
        Err(LtxError::PageOrder {
            prev: 1,
            pgno: 3,
            ..
        })
    ));
    enc.write_page(2, &p).unwrap();
    assert!(matches!(
        enc.finish(0),
        Err(LtxError::SnapshotIncomplete { last: 2, commit: 3 })
    ));
}

#[test]
fn encoder_trailer_errors() {
    let ps = 512;
    let pages = snapshot_pages(ps, 2, 1);
    // No-checksum files take 0 only.
    let e = encode(&header(ps, 2, 1, 1), &pages, CHECKSUM_FLAG | 1).unwrap_err();
    assert!(matches!(
        e,
        LtxError::InvalidTrailer {
            field: "post_apply_checksum",
            ..
        }
    ));
    // Tracked files need bit 63 ...
    let mut tracked = header(ps, 2, 1, 1);
    tracked.flags = 0;
    let e = encode(&tracked, &pages, 5).unwrap_err();
    assert!(matches!(
        e,
        LtxError::InvalidTrailer {
            field: "post_apply_checksum",
            ..
        }
    ));
    // ... and a snapshot's must match its pages.
    let e = encode(&tracked, &pages, CHECKSUM_FLAG | 5).unwrap_err();
    assert!(
        matches!(e, LtxError::PostApplyChecksumMismatch { stored, .. } if stored == CHECKSUM_FLAG | 5)
    );
    // commit 0: only the empty-database checksum, only with checksums tracked.
    let mut empty = header(ps, 0, 3, 3);
    assert!(matches!(
        encode(&empty, &[], 0),
        Err(LtxError::InvalidTrailer { .. })
    ));
    empty.flags = 0;
    empty.pre_apply_checksum = CHECKSUM_FLAG | 9;
    assert!(matches!(
        encode(&empty, &[], CHECKSUM_FLAG | 1),
        Err(LtxError::InvalidTrailer { .. })
    ));
    let bytes = encode(&empty, &[], CHECKSUM_FLAG).unwrap();
    assert_eq!(decode(&bytes).unwrap().header.commit, 0);
    assert!(matches!(
        encode(&empty, &[(1, page(1, ps, 0))], CHECKSUM_FLAG),
        Err(LtxError::PageBeyondCommit { .. })
    ));
}

/// Accepts `budget` bytes, then fails.
struct FailingWriter {
    budget: usize,
}
impl std::io::Write for FailingWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.budget == 0 {
            return Err(std::io::Error::other("disk full"));
        }
        let n = b.len().min(self.budget);
        self.budget -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn io_error_poisons_encoder() {
    let h = header(512, 3, 1, 1);
    assert!(matches!(
        Encoder::new(FailingWriter { budget: 10 }, &h),
        Err(LtxError::Io { .. })
    ));
    let mut enc = Encoder::new(FailingWriter { budget: 105 }, &h).unwrap();
    let p = page(1, 512, 0);
    assert!(matches!(
        enc.write_page(1, &p),
        Err(LtxError::Io {
            context: "writing a page header",
            ..
        })
    ));
    assert!(matches!(enc.write_page(1, &p), Err(LtxError::Poisoned)));
    assert!(matches!(enc.finish(0), Err(LtxError::Poisoned)));
}

fn sample_file() -> (Vec<u8>, Decoded) {
    // Few small pages so that every bit can be flipped quickly; one page is
    // all zeros (long matches), one is noise (literals).
    let ps = 512;
    let h = Header {
        wal_offset: 32,
        wal_size: 1000,
        wal_salt1: 1,
        wal_salt2: 2,
        node_id: 3,
        ..header(ps, 5, 4, 6)
    };
    let pages = vec![
        (2, vec![0u8; 512]),
        (3, page(3, ps, 1)),
        (5, page(5, ps, 2)),
    ];
    let bytes = encode(&h, &pages, 0).unwrap();
    let d = decode(&bytes).unwrap();
    (bytes, d)
}

#[test]
fn every_bit_flip_is_rejected_or_harmless() {
    let (bytes, good) = sample_file();
    let mut harmless = Vec::new();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            match decode(&b) {
                Err(_) => {}
                // Different LZ4 bytes can decompress to the same page (the
                // file checksum covers pages as decompressed, by design); what
                // must never happen is a different decoded result accepted.
                Ok(d) => {
                    assert_eq!(
                        d, good,
                        "flip at byte {i} bit {bit} silently changed the content"
                    );
                    harmless.push((i, bit));
                }
            }
        }
    }
    // Header, page headers, size prefixes, index and trailer are all covered;
    // only payload bytes may be harmless.
    let payload_start = HEADER_SIZE + 10;
    for &(i, bit) in &harmless {
        assert!(
            i >= payload_start && i < bytes.len() - TRAILER_SIZE,
            "harmless flip outside a payload: byte {i} bit {bit}"
        );
    }
    eprintln!("harmless flips: {} of {}", harmless.len(), bytes.len() * 8);
    assert!(
        harmless.len() * 100 < bytes.len() * 8,
        "{} harmless flips of {}",
        harmless.len(),
        bytes.len() * 8
    );
}

#[test]
fn truncation_and_trailing_bytes_are_rejected() {
    let (bytes, _) = sample_file();
    for n in 0..bytes.len() {
        match decode(&bytes[..n]) {
            Err(LtxError::Truncated { .. }) => {}
            other => panic!("prefix of {n} bytes: {other:?}"),
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(
        matches!(decode(&longer), Err(LtxError::TrailingBytes { offset }) if offset == bytes.len() as u64)
    );
}

#[test]
fn checksum_and_index_errors_are_specific() {
    let (bytes, _) = sample_file();
    let mut b = bytes.clone();
    b[HEADER_SIZE - 1] ^= 1; // reserved header byte: only the checksum notices
    assert!(matches!(
        decode(&b),
        Err(LtxError::FileChecksumMismatch { .. })
    ));
    let n = b.len();
    b[n - 8] &= 0x7F; // stored checksum without bit 63
    assert!(matches!(
        decode(&b),
        Err(LtxError::FileChecksumMismatch { .. })
    ));

    // Index edits that keep a valid file checksum are still caught.
    let index_len_at = bytes.len() - TRAILER_SIZE - 8;
    let index_len =
        u64::from_be_bytes(bytes[index_len_at..index_len_at + 8].try_into().unwrap()) as usize;
    let index_at = index_len_at - index_len;
    assert_eq!(bytes[index_at], 2, "first entry is page 2");
    let mut b = bytes.clone();
    b[index_at] = 3;
    reseal(&mut b, 512);
    assert!(matches!(decode(&b), Err(LtxError::Index { .. })));
    let mut b = bytes.clone();
    b[index_len_at + 7] ^= 1;
    reseal(&mut b, 512);
    assert!(matches!(decode(&b), Err(LtxError::Index { .. })));

    // Page header edits behind a valid checksum.
    let mut b = bytes.clone();
    b[HEADER_SIZE + 5] = 0x03; // undefined page flag
    reseal(&mut b, 512);
    assert!(matches!(
        decode(&b),
        Err(LtxError::PageFlags { pgno: 2, flags: 3 })
    ));
    let mut b = bytes.clone();
    b[HEADER_SIZE + 3] = 9; // page 9 > commit 5
    reseal(&mut b, 512);
    assert!(matches!(
        decode(&b),
        Err(LtxError::PageBeyondCommit { pgno: 9, commit: 5 })
    ));

    // A tracked snapshot whose trailer lies about the pages.
    let mut tracked = header(512, 2, 1, 1);
    tracked.flags = 0;
    let pages = snapshot_pages(512, 2, 4);
    let db: Vec<u8> = pages.iter().flat_map(|(_, d)| d.clone()).collect();
    let mut b = encode(&tracked, &pages, database_checksum(512, &db)).unwrap();
    let at = b.len() - TRAILER_SIZE;
    b[at + 7] ^= 1;
    reseal(&mut b, 512);
    assert!(matches!(
        decode(&b),
        Err(LtxError::PostApplyChecksumMismatch { .. })
    ));
}

#[test]
fn varints_match_go() {
    for v in [
        0u64,
        1,
        127,
        128,
        300,
        16384,
        u64::from(u32::MAX),
        1 << 63,
        u64::MAX,
    ] {
        let mut buf = Vec::new();
        super::encoder::put_uvarint(&mut buf, v);
        let mut src = super::decoder::Src::new(&buf[..]);
        assert_eq!(
            super::decoder::read_uvarint(&mut src, &mut hasher()).unwrap(),
            v
        );
    }
    let mut buf = Vec::new();
    super::encoder::put_uvarint(&mut buf, 300);
    assert_eq!(buf, [0xAC, 0x02]);
    let over = [0xFFu8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02];
    assert!(
        super::decoder::read_uvarint(&mut super::decoder::Src::new(&over[..]), &mut hasher())
            .is_err()
    );
}

/// Builds a file the way ltx before v0.5.2 did: page flags 0 and one LZ4
/// frame per page. `variant` picks frame options.
fn legacy_file(h: &Header, pages: &[(u32, Vec<u8>)], variant: u8) -> Vec<u8> {
    let mut out = h.encode().to_vec();
    let mut hash = hasher();
    hash.update(&out);
    let mut index = Vec::new();
    for (pgno, data) in pages {
        let offset = out.len();
        let mut head = pgno.to_be_bytes().to_vec();
        head.extend_from_slice(&[0, 0]);
        hash.update(&head);
        hash.update(data);
        out.extend_from_slice(&head);
        out.extend_from_slice(&0x184D_2204u32.to_le_bytes());
        match variant {
            // independent 64 KiB blocks, content checksum (what ltx wrote)
            0 => {
                out.extend_from_slice(&[0x64, 0x40, 0xAB]);
                let c = lz4_flex::block::compress(data);
                out.extend_from_slice(&(c.len() as u32).to_le_bytes());
                out.extend_from_slice(&c);
                out.extend_from_slice(&[0; 4]); // end mark
                out.extend_from_slice(&[1, 2, 3, 4]); // content checksum (not verified)
            }
            // content size, block checksums, one stored block + one compressed block
            _ => {
                out.extend_from_slice(&[0x78, 0x40]);
                out.extend_from_slice(&(data.len() as u64).to_le_bytes());
                out.push(0xCD);
                let half = data.len() / 2;
                out.extend_from_slice(&(half as u32 | 0x8000_0000).to_le_bytes());
                out.extend_from_slice(&data[..half]);
                out.extend_from_slice(&[9; 4]);
                let c = lz4_flex::block::compress(&data[half..]);
                out.extend_from_slice(&(c.len() as u32).to_le_bytes());
                out.extend_from_slice(&c);
                out.extend_from_slice(&[9; 4]);
                out.extend_from_slice(&[0; 4]);
            }
        }
        let mut e = Vec::new();
        super::encoder::put_uvarint(&mut e, u64::from(*pgno));
        super::encoder::put_uvarint(&mut e, offset as u64);
        super::encoder::put_uvarint(&mut e, (out.len() - offset) as u64);
        index.extend_from_slice(&e);
    }
    index.push(0);
    let mut tail = vec![0u8; 6];
    tail.extend_from_slice(&index);
    tail.extend_from_slice(&(index.len() as u64).to_be_bytes());
    tail.extend_from_slice(&0u64.to_be_bytes());
    hash.update(&tail);
    out.extend_from_slice(&tail);
    out.extend_from_slice(&(CHECKSUM_FLAG | hash.finalize()).to_be_bytes());
    out
}

#[test]
fn reads_legacy_lz4_frame_pages() {
    let h = header(4096, 3, 1, 2);
    let pages = snapshot_pages(4096, 3, 11);
    for variant in 0..2 {
        let file = legacy_file(&h, &pages, variant);
        let d = decode(&file).unwrap_or_else(|e| panic!("variant {variant}: {e}"));
        assert_eq!(d.pages, pages);
        for i in 0..file.len() - 8 {
            let mut b = file.clone();
            b[i] ^= 0x10;
            if let Ok(d2) = decode(&b) {
                assert_eq!(
                    d2, d,
                    "variant {variant}: flip at {i} changed content silently"
                );
            }
        }
    }
}

#[test]
fn file_names() {
    assert_eq!(file_name(1, 0x2a), "0000000000000001-000000000000002a.ltx");
    assert_eq!(
        parse_file_name("0000000000000001-000000000000002a.ltx"),
        Some((1, 42))
    );
    assert_eq!(
        parse_file_name(&file_name(u64::MAX, 0)),
        Some((u64::MAX, 0))
    );
    for bad in [
        "0000000000000001-000000000000002A.ltx",
        "0000000000000001-000000000000002a.ltx.tmp",
        "000000000000001-000000000000002a.ltx",
        "0000000000000001_000000000000002a.ltx",
        "+000000000000001-000000000000002a.ltx",
        "",
    ] {
        assert_eq!(parse_file_name(bad), None, "{bad}");
    }
    assert!(is_valid_page_size(512) && is_valid_page_size(65536) && !is_valid_page_size(1536));
}
