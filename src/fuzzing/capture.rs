//! The capture fuzz target: arbitrary bytes interpreted as what SQLite and other processes do
//! to a WAL (commits, cache spills and rollbacks, restarts and truncations this process guards,
//! restarts and truncations by another process, rollback-journal writes) while a
//! [`Tail`](crate::capture::Tail) reads and ships. The invariant: whenever the tail hands pages
//! on without reporting a loss, the replica they build equals the committed database
//! (`WalGen` keeps it); and a loss is reported only after something this process could not see
//! (another process's restart or truncation, a rollback-journal write): what passes through the
//! shim never costs a resync (modelled here as copying the committed state).
//!
//! Unlike the other targets this one does file I/O: the tail reads a real WAL file and writes a
//! real staging file, in a private temporary directory rewritten from scratch for every input,
//! so a failing input still replays the same way anywhere.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::walgen::WalGen;
use crate::capture::{Position, Tail};

thread_local! {
    /// The database file's change counter, as the tail's counter reader sees it.
    static COUNTER: Cell<u32> = const { Cell::new(0) };
}

fn counter(_: &str) -> std::io::Result<Option<u32>> {
    Ok(Some(COUNTER.with(|c| c.get())))
}

struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn pages(&mut self) -> Vec<(u32, u8)> {
        let n = 1 + self.u8() % 6;
        (0..n)
            .map(|_| (1 + u32::from(self.u8() % 24), self.u8()))
            .collect()
    }
}

fn scratch_dir() -> PathBuf {
    let id = format!("{:?}", std::thread::current().id());
    let id: String = id.chars().filter(char::is_ascii_digit).collect();
    std::env::temp_dir().join(format!("walship-fuzz-capture-{}-{id}", std::process::id()))
}

/// The committed state restricted to the database's size.
fn visible(m: &BTreeMap<u32, u8>, size: u32) -> BTreeMap<u32, u8> {
    m.range(1..=size).map(|(&p, &f)| (p, f)).collect()
}

pub fn capture_sequence(data: &[u8]) {
    let mut input = Input { data, at: 0 };
    let dir = scratch_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let db = dir.join("db");
    let db_s = db.to_string_lossy().into_owned();
    let wal_path = dir.join("db-wal");
    let write_wal = |g: &WalGen| std::fs::write(&wal_path, &g.bytes).expect("write the WAL");

    COUNTER.with(|c| c.set(7));
    let page_size = [512u32, 1024, 4096][usize::from(input.u8() % 3)];
    let mut g = WalGen::new(page_size, 1, 2);
    write_wal(&g);
    let mut tail = Tail::new(&db_s, &dir).with_counter_reader(counter);
    tail.start(Position::Wal(g.end));
    // What the replica holds, and its size.
    let mut replica: BTreeMap<u32, u8> = BTreeMap::new();
    let mut replica_size = 0u32;
    // The WAL is empty (after a guarded truncation): the next write starts with a header.
    let mut emptied = false;
    let mut salt2 = 100u32;

    // Something this process could not see happened since the last sync.
    let mut unseen = false;
    let sync = |tail: &mut Tail,
                g: &WalGen,
                emptied: bool,
                unseen: &mut bool,
                replica: &mut BTreeMap<u32, u8>,
                size: &mut u32| {
        let may_lose = std::mem::take(unseen);
        // Where a resync from an image leaves the tail.
        let now = if emptied {
            Position::File {
                counter: COUNTER.with(|c| c.get()),
                stamp: None,
            }
        } else {
            Position::Wal(g.end)
        };
        tail.advance(Some(g.shm()));
        if let Some(why) = tail.lost() {
            assert!(may_lose, "a loss with nothing unseen: {why}");
            // The shipper resynchronises from an image: the replica becomes the database.
            *replica = g.committed.clone();
            *size = g.db_size;
            tail.start(now);
            return;
        }
        if let Some(t) = tail.peek() {
            let lock = crate::ltx::lock_pgno(t.page_size);
            let r = tail.for_each_page(lock, |pgno, page| {
                assert_eq!(
                    &page[..4],
                    &pgno.to_be_bytes(),
                    "page {pgno} holds another page"
                );
                replica.insert(pgno, page[4]);
                Ok(())
            });
            if let Err(e) = r {
                assert!(may_lose, "pages lost with nothing unseen: {e:?}");
                *replica = g.committed.clone();
                *size = g.db_size;
                tail.start(now);
                return;
            }
            *size = t.db_size;
            tail.shipped();
        }
        assert_eq!(
            visible(replica, *size),
            visible(&g.committed, g.db_size),
            "the replica differs from the database with no loss reported"
        );
    };

    while !input.done() {
        let op = input.u8();
        if emptied && op % 8 <= 1 {
            // SQLite's next writer starts the WAL with a header, through the shim.
            salt2 += 1;
            tail.guard(None, None);
            g.truncate(salt2);
            write_wal(&g);
            tail.after_header_write(&g.header_bytes());
            emptied = false;
        }
        match op % 8 {
            0 => {
                let pages = input.pages();
                g.commit(&pages);
                write_wal(&g);
                if input.u8() & 1 == 1 {
                    tail.advance(Some(g.shm()));
                }
            }
            1 => {
                let pages = input.pages();
                g.spill(&pages);
                write_wal(&g);
                if input.u8() & 1 == 1 {
                    g.rollback();
                }
                tail.advance(None);
            }
            2 if !emptied => {
                // A restart in this process: guarded.
                salt2 += 1;
                tail.guard(None, None);
                g.restart(salt2);
                write_wal(&g);
                tail.after_header_write(&g.header_bytes());
            }
            3 if !emptied => {
                // Another process restarts the WAL (maybe after committing more).
                if input.u8() & 1 == 1 {
                    let pages = input.pages();
                    g.commit(&pages);
                }
                salt2 += 1;
                g.restart(salt2);
                write_wal(&g);
                unseen = true;
            }
            4 if !emptied => {
                // A TRUNCATE checkpoint in this process: guarded.
                tail.guard(None, None);
                g.bytes.clear();
                write_wal(&g);
                tail.after_truncate(0);
                emptied = true;
            }
            5 => {
                // Another process empties the WAL and starts a new one.
                if input.u8() & 1 == 1 {
                    let pages = input.pages();
                    g.commit(&pages);
                }
                salt2 += 1;
                g.truncate(salt2);
                write_wal(&g);
                emptied = false;
                unseen = true;
            }
            6 if emptied => {
                // A rollback-journal transaction (by anyone) while no WAL exists.
                let (pgno, fill) = (1 + u32::from(input.u8() % 24), input.u8());
                g.committed.insert(pgno, fill);
                g.db_size = g.db_size.max(pgno);
                COUNTER.with(|c| c.set(c.get() + 1));
                unseen = true;
            }
            _ => sync(
                &mut tail,
                &g,
                emptied,
                &mut unseen,
                &mut replica,
                &mut replica_size,
            ),
        }
    }
    sync(
        &mut tail,
        &g,
        emptied,
        &mut unseen,
        &mut replica,
        &mut replica_size,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
