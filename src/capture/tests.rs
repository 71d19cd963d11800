//! Synthetic call sequences shaped like the ones SQLite issues (design-notes.md); the real
//! sequences are recorded against the host SQLite by tests/test_wal_sequences.py.
use super::*;

const PS: u32 = 512;

fn wal_header(salt1: u32, salt2: u32) -> Vec<u8> {
    let mut h = vec![0u8; 32];
    h[..4].copy_from_slice(&0x377f_0682u32.to_be_bytes());
    h[4..8].copy_from_slice(&3_007_000u32.to_be_bytes());
    h[8..12].copy_from_slice(&PS.to_be_bytes());
    h[16..20].copy_from_slice(&salt1.to_be_bytes());
    h[20..24].copy_from_slice(&salt2.to_be_bytes());
    let c = wal::checksum(false, (0, 0), &h[..24]);
    h[24..28].copy_from_slice(&c.0.to_be_bytes());
    h[28..32].copy_from_slice(&c.1.to_be_bytes());
    h
}

fn frame_header(pgno: u32, commit: u32, salt1: u32) -> Vec<u8> {
    let mut h = vec![0u8; 24];
    h[..4].copy_from_slice(&pgno.to_be_bytes());
    h[4..8].copy_from_slice(&commit.to_be_bytes());
    h[8..12].copy_from_slice(&salt1.to_be_bytes());
    h
}

fn off(i: u32) -> u64 {
    wal::frame_offset(i, PS)
}

/// `F i`: header then page, as two writes.
fn frame(c: &mut Capture, i: u32, pgno: u32, commit: u32, fill: u8) {
    c.wal_write(off(i), &frame_header(pgno, commit, 1));
    c.wal_write(off(i) + 24, &vec![fill; PS as usize]);
}

fn shm(ichange: u32, mx: u32, salt1: u32) -> ShmHeader {
    let mut salt = [0u8; 8];
    salt[..4].copy_from_slice(&salt1.to_be_bytes());
    ShmHeader {
        ichange,
        is_init: true,
        page_size: Some(PS),
        mx_frame: mx,
        n_page: 0,
        salt,
    }
}

fn commits(ev: &[Event]) -> Vec<&Txn> {
    ev.iter()
        .filter_map(|e| {
            if let Event::Commit(t) = e {
                Some(t)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn one_commit_with_shm() {
    let mut c = Capture::new();
    assert!(c.write_lock(Some(shm(0, 0, 1))).is_empty());
    c.wal_write(0, &wal_header(1, 0));
    frame(&mut c, 1, 1, 0, 0xa1);
    frame(&mut c, 2, 2, 2, 0xb2);
    let ev = c.end_transaction(Some(shm(1, 2, 1)), 7);
    let t = commits(&ev);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].db_size, 2);
    assert_eq!(
        t[0].pages.iter().map(|p| (p.0, p.1[0])).collect::<Vec<_>>(),
        vec![(1, 0xa1), (2, 0xb2)]
    );
    assert_eq!(t[0].end.frame, 2);
    assert_eq!(t[0].committed_at_ms, 7);
}

#[test]
fn rewrites_in_a_spilled_transaction_keep_the_latest_image() {
    let mut c = Capture::new();
    c.write_lock(Some(shm(3, 4, 1)));
    frame(&mut c, 5, 7, 0, 1);
    frame(&mut c, 6, 8, 0, 2);
    c.wal_write(off(5) + 24, &vec![9u8; PS as usize]); // d5
    frame(&mut c, 7, 8, 0, 3); // page 8 again in a new frame
    frame(&mut c, 8, 9, 9, 4); // commit, salts zero
    for i in 5..=8 {
        // h5..h8: header-only rewrites with real salts; page numbers unchanged
        let pg = [7, 8, 8, 9][(i - 5) as usize];
        c.wal_write(off(i), &frame_header(pg, if i == 8 { 9 } else { 0 }, 1));
    }
    let ev = c.end_transaction(Some(shm(4, 8, 1)), 0);
    let t = commits(&ev);
    let got: Vec<_> = t[0].pages.iter().map(|p| (p.0, p.1[0])).collect();
    assert_eq!(got, vec![(7, 9), (8, 3), (9, 4)]);
    assert_eq!(t[0].base.unwrap().frame, 4);
}

#[test]
fn rollback_discards_spilled_frames_and_stale_tail_is_ignored() {
    let mut c = Capture::new();
    c.write_lock(Some(shm(1, 2, 1)));
    frame(&mut c, 3, 5, 0, 1);
    frame(&mut c, 4, 6, 0, 1);
    frame(&mut c, 5, 7, 0, 1);
    assert!(c.end_transaction(Some(shm(1, 2, 1)), 0).is_empty());
    c.write_lock(Some(shm(1, 2, 1)));
    frame(&mut c, 3, 9, 9, 2);
    let ev = c.end_transaction(Some(shm(2, 3, 1)), 0);
    let t = commits(&ev);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].pages.len(), 1);
    assert_eq!(t[0].pages[0].0, 9);
}

#[test]
fn foreign_commit_between_our_transactions_is_a_discontinuity() {
    let mut c = Capture::new();
    c.write_lock(Some(shm(1, 2, 1)));
    frame(&mut c, 3, 1, 3, 1);
    c.end_transaction(Some(shm(2, 3, 1)), 0);
    let ev = c.write_lock(Some(shm(3, 4, 1)));
    assert!(
        matches!(ev.as_slice(), [Event::Discontinuity { .. }]),
        "{ev:?}"
    );
}

#[test]
fn checkpoint_restart_by_someone_else_is_a_reset_not_a_hole() {
    let mut c = Capture::new();
    c.write_lock(Some(shm(1, 2, 1)));
    frame(&mut c, 3, 1, 3, 1);
    c.end_transaction(Some(shm(2, 3, 1)), 0);
    let ev = c.write_lock(Some(shm(2, 0, 2)));
    assert!(matches!(ev.as_slice(), [Event::Reset { .. }]), "{ev:?}");
}

#[test]
fn restart_inside_the_transaction_starts_frames_at_one() {
    let mut c = Capture::new();
    c.write_lock(Some(shm(5, 9, 1)));
    c.wal_write(0, &wal_header(2, 77));
    frame(&mut c, 1, 3, 3, 1);
    let ev = c.end_transaction(Some(shm(6, 1, 2)), 0);
    let t = commits(&ev);
    assert_eq!(t[0].base.unwrap().frame, 9);
    assert_eq!((t[0].end.salt1, t[0].end.frame), (2, 1));
}

#[test]
fn exclusive_mode_without_shm_commits_at_phase_two() {
    let mut c = Capture::new();
    c.wal_write(0, &wal_header(1, 0));
    frame(&mut c, 1, 1, 0, 1);
    frame(&mut c, 2, 2, 2, 2);
    let t = c.end_transaction(None, 0);
    assert_eq!(commits(&t)[0].pages.len(), 2);
    // The first transaction of a new WAL, with nothing known before it: its base is the
    // database file alone, the position a snapshot taken with no WAL frames records.
    let empty = Position {
        salt1: 0,
        salt2: 0,
        frame: 0,
    };
    assert_eq!(commits(&t)[0].base, Some(empty));
    // a rolled-back spill: no phase two, then a smaller commit over the stale frames
    frame(&mut c, 3, 1, 0, 5);
    frame(&mut c, 4, 2, 0, 5);
    frame(&mut c, 3, 2, 2, 6);
    let ev = c.end_transaction(None, 0);
    let t = commits(&ev);
    assert_eq!(
        t[0].pages.iter().map(|p| (p.0, p.1[0])).collect::<Vec<_>>(),
        vec![(2, 6)]
    );
    assert_eq!(t[0].base.unwrap().frame, 2);
}

#[test]
fn split_page_write_is_reassembled() {
    let mut c = Capture::new();
    c.write_lock(Some(shm(0, 0, 1)));
    c.wal_write(0, &wal_header(1, 0));
    c.wal_write(off(1), &frame_header(1, 1, 1));
    c.wal_write(off(1) + 24, &[3u8; 100]);
    c.wal_write(off(1) + 124, &vec![4u8; PS as usize - 100]);
    let ev = c.end_transaction(Some(shm(1, 1, 1)), 0);
    let p = &commits(&ev)[0].pages[0].1;
    assert_eq!((p[99], p[100]), (3, 4));
}

#[test]
fn missing_frame_is_reported_not_shipped() {
    let mut c = Capture::new();
    c.write_lock(Some(shm(0, 0, 1)));
    c.wal_write(0, &wal_header(1, 0));
    frame(&mut c, 2, 2, 2, 2); // frame 1 never seen
    let ev = c.end_transaction(Some(shm(1, 2, 1)), 0);
    assert!(
        matches!(ev.as_slice(), [Event::Discontinuity { .. }]),
        "{ev:?}"
    );
}

#[test]
fn truncating_checkpoint_without_shm_is_a_reset() {
    let mut c = Capture::new();
    c.wal_write(0, &wal_header(1, 0));
    frame(&mut c, 1, 1, 1, 1);
    c.end_transaction(None, 0);
    let ev = c.wal_truncated(0);
    assert!(
        matches!(ev.as_slice(), [Event::Reset { from: Some(f), to }] if f.frame == 1 && to.frame == 0),
        "{ev:?}"
    );
    // the next transaction writes a new header and starts from the reset position
    c.wal_write(0, &wal_header(2, 5));
    frame(&mut c, 1, 1, 1, 2);
    let ev = c.end_transaction(None, 0);
    assert_eq!(commits(&ev)[0].base.unwrap().frame, 0);
}

#[test]
fn header_split_around_a_sync_point_is_reassembled() {
    // Seen with psow=0: the sync point fell 16 bytes into frame 255's header.
    let mut c = Capture::new();
    c.write_lock(Some(shm(0, 0, 1)));
    c.wal_write(0, &wal_header(1, 0));
    frame(&mut c, 1, 1, 0, 1);
    let h = frame_header(2, 2, 1);
    c.wal_write(off(2), &h[..16]);
    c.wal_write(off(2) + 16, &h[16..]);
    c.wal_write(off(2) + 24, &vec![7u8; PS as usize]);
    let ev = c.end_transaction(Some(shm(1, 2, 1)), 0);
    let t = commits(&ev);
    assert_eq!(t.len(), 1, "{ev:?}");
    assert_eq!(
        (t[0].db_size, t[0].pages[1].0, t[0].pages[1].1[0]),
        (2, 2, 7)
    );
}

#[test]
fn a_frame_missing_its_second_half_is_not_shipped() {
    let mut c = Capture::new();
    c.write_lock(Some(shm(0, 0, 1)));
    c.wal_write(0, &wal_header(1, 0));
    c.wal_write(off(1), &frame_header(1, 1, 1));
    c.wal_write(off(1) + 24, &[1u8; 100]); // the rest of the page never arrives
    let ev = c.end_transaction(Some(shm(1, 1, 1)), 0);
    assert!(
        matches!(ev.as_slice(), [Event::Discontinuity { .. }]),
        "{ev:?}"
    );
}
