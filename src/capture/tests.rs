use std::collections::BTreeMap;

use super::*;
use crate::fuzzing::walgen::WalGen;

struct Fixture {
    dir: PathBuf,
    db: String,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir =
            std::env::temp_dir().join(format!("walship-capture-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("db").to_string_lossy().into_owned();
        Fixture { dir, db }
    }
    fn write(&self, g: &WalGen) {
        std::fs::write(format!("{}-wal", self.db), &g.bytes).unwrap();
    }
    fn tail(&self) -> Tail {
        Tail::new(&self.db, &self.dir).with_counter_reader(|_| Ok(Some(1)))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Ships what the tail holds: page → fill byte.
fn ship(t: &mut Tail) -> BTreeMap<u32, u8> {
    let mut out = BTreeMap::new();
    t.for_each_page(u32::MAX, |pgno, page| {
        out.insert(pgno, page[4]);
        Ok(())
    })
    .unwrap();
    t.shipped();
    out
}

#[test]
fn reads_to_the_wal_index_limit_and_ships_the_newest_image_of_each_page() {
    let f = Fixture::new("limit");
    let mut g = WalGen::new(512, 1, 2);
    let mut t = f.tail();
    t.start(Position::Wal(g.end));
    g.commit(&[(1, 1), (2, 1)]);
    let at_first = g.shm();
    g.commit(&[(2, 2), (3, 2)]);
    f.write(&g);
    t.advance(Some(at_first));
    assert_eq!(t.pending_frames(), 2, "only up to the wal-index's mxFrame");
    t.advance(Some(g.shm()));
    assert_eq!(t.position(), Some(Position::Wal(g.end)));
    assert_eq!(ship(&mut t), BTreeMap::from([(1, 1), (2, 2), (3, 2)]));
    assert!(t.is_empty());
}

#[test]
fn a_guarded_restart_stages_unshipped_frames_before_they_are_overwritten() {
    let f = Fixture::new("stage");
    let mut g = WalGen::new(512, 1, 2);
    let mut t = f.tail();
    t.start(Position::Wal(g.end));
    g.commit(&[(1, 1), (2, 1)]);
    g.commit(&[(3, 3)]);
    f.write(&g);
    // The shipper read nothing yet; SQLite is about to restart the WAL.
    t.guard(None, None);
    g.restart(9);
    g.commit(&[(1, 9), (2, 9), (3, 9)]); // overwrites frames 1..3 of the old generation
    f.write(&g);
    t.after_header_write(&g.header_bytes());
    assert!(t.lost().is_none());
    // The old generation's pages come from the staging file, then the new ones from the WAL.
    assert_eq!(ship(&mut t), BTreeMap::from([(1, 1), (2, 1), (3, 3)]));
    t.advance(Some(g.shm()));
    assert_eq!(ship(&mut t), BTreeMap::from([(1, 9), (2, 9), (3, 9)]));
    assert!(t.lost().is_none());
}

#[test]
fn an_unseen_restart_truncation_or_deletion_loses_the_position() {
    for case in ["restart", "truncate", "delete"] {
        let f = Fixture::new(case);
        let mut g = WalGen::new(512, 1, 2);
        let mut t = f.tail();
        t.start(Position::Wal(g.end));
        g.commit(&[(1, 1)]);
        f.write(&g);
        t.advance(Some(g.shm()));
        g.commit(&[(2, 2)]); // committed by another process, never read here
        match case {
            "restart" => g.restart(5),
            "truncate" => g.bytes.clear(),
            _ => {}
        }
        if case == "delete" {
            std::fs::remove_file(format!("{}-wal", f.db)).unwrap();
        } else {
            f.write(&g);
        }
        t.advance(None);
        assert!(t.lost().is_some(), "{case}: a hole went unnoticed");
    }
}

#[test]
fn frames_overwritten_after_they_were_read_are_not_shipped() {
    let f = Fixture::new("overwritten");
    let mut g = WalGen::new(512, 1, 2);
    let mut t = f.tail();
    t.start(Position::Wal(g.end));
    g.commit(&[(1, 1), (2, 2)]);
    f.write(&g);
    t.advance(Some(g.shm()));
    // Another process restarts and overwrites the frames before the shipper encodes them.
    g.restart(5);
    g.commit(&[(2, 7), (1, 7)]);
    f.write(&g);
    let r = t.for_each_page(u32::MAX, |_, _| Ok(()));
    assert!(matches!(r, Err(PageError::Lost(_))), "{r:?}");
}

#[test]
fn an_emptied_wal_then_a_changed_file_or_an_unseen_header_loses_the_position() {
    let f = Fixture::new("file");
    let mut g = WalGen::new(512, 1, 2);
    let mut t = f.tail();
    t.start(Position::Wal(g.end));
    g.commit(&[(1, 1)]);
    f.write(&g);
    t.guard(None, None);
    std::fs::write(format!("{}-wal", f.db), b"").unwrap();
    t.after_truncate(0);
    assert_eq!(
        t.position(),
        Some(Position::File {
            counter: 1,
            stamp: None
        })
    );
    assert_eq!(ship(&mut t), BTreeMap::from([(1, 1)]));
    // A header written through the shim continues from the file.
    g.truncate(3);
    t.guard(None, None);
    f.write(&g);
    t.after_header_write(&g.header_bytes());
    assert_eq!(t.position(), Some(Position::Wal(g.end)));
    // Emptied again; then a rollback-journal commit changes the file's counter.
    t.guard(None, None);
    std::fs::remove_file(format!("{}-wal", f.db)).unwrap();
    t.after_emptied();
    let mut t2 = f.tail().with_counter_reader(|_| Ok(Some(2)));
    t2.start(t.position().unwrap());
    t2.advance(None);
    assert!(
        t2.lost().is_some(),
        "a rollback-journal commit went unnoticed"
    );
    // Or another process starts a WAL this process never saw begin.
    g.truncate(4);
    f.write(&g);
    t.advance(None);
    assert!(
        t.lost().is_some(),
        "an unseen WAL was taken as a continuation"
    );
}

#[test]
fn a_staged_frame_changed_on_disk_is_not_shipped() {
    let f = Fixture::new("staged-damage");
    let mut g = WalGen::new(512, 1, 2);
    let mut t = f.tail();
    t.start(Position::Wal(g.end));
    g.commit(&[(1, 1), (2, 2)]);
    f.write(&g);
    t.guard(None, None);
    g.restart(9);
    f.write(&g);
    t.after_header_write(&g.header_bytes());
    // One byte of a staged page flips before the shipper reads it.
    let staged = f.dir.join("staged-frames");
    let mut bytes = std::fs::read(&staged).unwrap();
    bytes[FRAME_HEADER_SIZE + 100] ^= 1;
    std::fs::write(&staged, bytes).unwrap();
    let r = t.for_each_page(u32::MAX, |_, _| Ok(()));
    assert!(matches!(r, Err(PageError::Lost(_))), "{r:?}");
}
