use super::*;
use crate::fuzzing::walgen::WalGen;

fn read(
    g: &WalGen,
    from: &WalPos,
    limit: Option<u32>,
) -> Result<(WalPos, Vec<(u32, u32)>), ReadError> {
    let mut seen = Vec::new();
    let end = read_committed(&g.bytes[..], from, limit, |i, fh| seen.push((i, fh.pgno)))?;
    Ok((end, seen))
}

#[test]
fn reads_whole_transactions_from_a_position_and_stops_before_uncommitted_frames() {
    let mut g = WalGen::new(512, 1, 2);
    let start = g.end;
    g.commit(&[(1, 1), (2, 2)]);
    let after_first = g.end;
    g.commit(&[(3, 3)]);
    g.spill(&[(4, 4), (5, 5)]); // a transaction in progress
    let (end, seen) = read(&g, &start, None).unwrap();
    assert_eq!(seen, vec![(1, 1), (2, 2), (3, 3)]);
    assert_eq!(end, g.end, "ends after the last commit, with its checksum");
    let (end2, seen2) = read(&g, &after_first, None).unwrap();
    assert_eq!((end2, seen2), (g.end, vec![(3, 3)]));
    // The wal-index limit is honoured exactly.
    let (end3, seen3) = read(&g, &start, Some(2)).unwrap();
    assert_eq!((end3, seen3.len()), (after_first, 2));
}

#[test]
fn rolled_back_and_stale_frames_are_never_read() {
    let mut g = WalGen::new(1024, 5, 6);
    g.commit(&[(1, 1)]);
    g.spill(&[(2, 9), (3, 9), (4, 9)]);
    g.rollback(); // frames 2..4 stay in the file, uncommitted
    let (end, seen) = read(&g, &WalPos::start(&g.header), None).unwrap();
    assert_eq!((end.frame, seen.len()), (1, 1));
    // A restart leaves the old generation's frames (valid checksums, old salts) in place.
    g.commit(&[(2, 2), (3, 3)]);
    g.restart(77);
    g.commit(&[(7, 7)]);
    let (end, seen) = read(&g, &WalPos::start(&g.header), None).unwrap();
    assert_eq!(seen, vec![(1, 7)]);
    assert_eq!(end.frame, 1);
}

#[test]
fn a_restart_or_truncation_behind_the_reader_is_a_broken_position() {
    let mut g = WalGen::new(512, 1, 2);
    g.commit(&[(1, 1)]);
    let pos = g.end;
    g.restart(3);
    assert!(matches!(read(&g, &pos, None), Err(ReadError::Broken(_))));
    let mut g = WalGen::new(512, 1, 2);
    g.commit(&[(1, 1), (2, 2)]);
    let pos = g.end;
    g.bytes.truncate(100);
    assert!(matches!(read(&g, &pos, None), Err(ReadError::Broken(_))));
    // The wal-index promising more than the file holds.
    let mut g = WalGen::new(512, 1, 2);
    g.commit(&[(1, 1)]);
    assert!(matches!(
        read(&g, &WalPos::start(&g.header), Some(3)),
        Err(ReadError::Broken(_))
    ));
}

#[test]
fn a_flipped_byte_stops_the_chain_at_the_last_good_commit() {
    let mut g = WalGen::new(512, 1, 2);
    g.commit(&[(1, 1)]);
    let good = g.end;
    g.commit(&[(2, 2), (3, 3)]);
    let at = crate::wal::frame_offset(3, 512) as usize + 40;
    g.bytes[at] ^= 1;
    let (end, seen) = read(&g, &WalPos::start(&g.header), None).unwrap();
    assert_eq!((end, seen.len()), (good, 1));
    assert!(holds(&g.bytes[..], &good).unwrap());
}
