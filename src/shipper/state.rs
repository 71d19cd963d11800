//! What this host last shipped, kept beside the database in `.<db>-walship/`.
//!
//! Replica files carry no database checksum (Litestream writes them without, and its restore
//! rejects files that have one), so this is how a restart proves the replica's newest state is
//! the local database's state. After every shipped file: the TXID, the rolling database
//! checksum, where that state is in the database's files (a proven WAL position, or the file
//! alone), and the per-page checksum terms (updated in place, page by page). At a clean close —
//! everything shipped, the WAL checkpointed and deleted — the database file's identity too. A
//! reopen that finds the same WAL position or the same file resumes without reading anything; one
//! that does not compares an image with the page terms and ships only the pages that differ.
//! Best effort throughout: a missing or stale state only ever costs a snapshot, never a wrong one.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::capture::{FileStamp, Position};
use crate::wal_reader::WalPos;

/// Identity of the database file (see `capture::FileStamp`).
pub type FileId = FileStamp;

/// `stat` only: never opens the file (closing a descriptor would drop the app's POSIX locks).
pub fn file_id(path: &Path) -> Option<FileId> {
    FileStamp::of(path)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalState {
    /// The replica this state is about (storage `describe()`, no credentials).
    pub replica: String,
    pub txid: u64,
    pub checksum: u64,
    pub page_size: u32,
    pub db_size: u32,
    /// Set only at a clean close: the database file as it was then.
    pub clean: Option<FileId>,
    /// Where the state at `txid` is in the database's files.
    pub position: Option<Position>,
}

fn stamp_text(c: &FileStamp) -> String {
    format!(
        "{} {} {} {} {} {} {}",
        c.ino, c.size, c.mtime_s, c.mtime_ns, c.ctime_s, c.ctime_ns, c.racy as u8
    )
}

fn parse_stamp(v: &[i64]) -> Option<FileStamp> {
    (v.len() == 7).then(|| FileStamp {
        ino: v[0] as u64,
        size: v[1] as u64,
        mtime_s: v[2],
        mtime_ns: v[3],
        ctime_s: v[4],
        ctime_ns: v[5],
        racy: v[6] != 0,
    })
}

fn position_text(p: &Option<Position>) -> String {
    match p {
        None => "-".into(),
        Some(Position::File { counter, stamp }) => match stamp {
            Some(c) => format!("file {counter} {}", stamp_text(c)),
            None => format!("file {counter}"),
        },
        Some(Position::Wal(w)) => format!(
            "wal {} {} {} {} {} {} {}",
            w.salt1, w.salt2, w.frame, w.cksum.0, w.cksum.1, w.page_size, w.big_endian as u8
        ),
    }
}

fn parse_position(line: &str) -> Option<Position> {
    let mut it = line.split(' ');
    match it.next()? {
        "file" => {
            let counter = it.next()?.parse().ok()?;
            let v: Vec<i64> = it.filter_map(|x| x.parse().ok()).collect();
            let stamp = parse_stamp(&v);
            Some(Position::File { counter, stamp })
        }
        "wal" => {
            let v: Vec<u32> = it.filter_map(|x| x.parse().ok()).collect();
            (v.len() == 7).then(|| {
                Position::Wal(WalPos {
                    salt1: v[0],
                    salt2: v[1],
                    frame: v[2],
                    cksum: (v[3], v[4]),
                    page_size: v[5],
                    big_endian: v[6] != 0,
                })
            })
        }
        _ => None,
    }
}

const STATE: &str = "state";
const SUMS: &str = "page-checksums";

impl LocalState {
    pub fn save(&self, dir: &Path) {
        let clean = match self.clean {
            Some(c) => stamp_text(&c),
            None => "-".into(),
        };
        let text = format!(
            "{}\n{:016x}\n{:016x}\n{}\n{}\n{}\n{}\n",
            self.replica,
            self.txid,
            self.checksum,
            self.page_size,
            self.db_size,
            clean,
            position_text(&self.position)
        );
        write_atomic(dir, STATE, text.as_bytes());
    }

    pub fn load(dir: &Path) -> Option<LocalState> {
        let text = fs::read_to_string(dir.join(STATE)).ok()?;
        let mut l = text.lines();
        let replica = l.next()?.to_string();
        let txid = u64::from_str_radix(l.next()?, 16).ok()?;
        let checksum = u64::from_str_radix(l.next()?, 16).ok()?;
        let page_size = l.next()?.parse().ok()?;
        let db_size = l.next()?.parse().ok()?;
        let c: Vec<i64> = l
            .next()?
            .split(' ')
            .filter_map(|v| v.parse().ok())
            .collect();
        let clean = parse_stamp(&c);
        let position = l.next().and_then(parse_position);
        Some(LocalState {
            replica,
            txid,
            checksum,
            page_size,
            db_size,
            clean,
            position,
        })
    }
}

pub fn save_sums(dir: &Path, sums: &[u64]) {
    let bytes: Vec<u8> = sums.iter().flat_map(|s| s.to_le_bytes()).collect();
    write_atomic(dir, SUMS, &bytes);
}

/// Updates the page terms in place: the `changed` pages and the size. Rewrites the whole file
/// when it does not hold `old_len` terms (first time, or an earlier write was lost). A crash
/// midway leaves terms that do not add up to the state's checksum, which `load_sums` refuses.
pub fn update_sums(dir: &Path, sums: &[u64], old_len: usize, changed: &[u32]) {
    let path = dir.join(SUMS);
    let r = (|| -> std::io::Result<()> {
        let f = fs::OpenOptions::new().write(true).open(&path)?;
        if f.metadata()?.len() != old_len as u64 * 8 {
            return Err(std::io::Error::other("size"));
        }
        for &p in changed {
            let i = p as usize - 1;
            f.write_all_at(&sums[i].to_le_bytes(), i as u64 * 8)?;
        }
        f.set_len(sums.len() as u64 * 8)
    })();
    if r.is_err() {
        save_sums(dir, sums);
    }
}

/// The per-page checksum terms, if present and consistent with `checksum` and `db_size`.
pub fn load_sums(dir: &Path, db_size: u32, checksum: u64) -> Option<Vec<u64>> {
    let bytes = fs::read(dir.join(SUMS)).ok()?;
    if bytes.len() != db_size as usize * 8 {
        return None;
    }
    let sums: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let acc = sums.iter().fold(0u64, |a, s| a ^ s);
    (crate::ltx::checksum_flag(acc) == checksum).then_some(sums)
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!("{name}.tmp"));
    let r = fs::create_dir_all(dir)
        .and_then(|_| fs::write(&tmp, bytes))
        .and_then(|_| fs::rename(&tmp, dir.join(name)));
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        crate::logging::warn_once(&format!("state {}", dir.display()), || {
            format!(
                "{}: cannot write walship's local state ({e}). Replication goes on, but after a \
                 restart it begins with a new snapshot; make the directory writable or free space",
                dir.display()
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_consistency() {
        let dir = std::env::temp_dir().join(format!("walship-state-{}", std::process::id()));
        let sums = vec![
            crate::ltx::page_checksum(1, &[1u8; 512]),
            crate::ltx::page_checksum(2, &[2u8; 512]),
        ];
        let checksum = crate::ltx::checksum_flag(sums[0] ^ sums[1]);
        let st = LocalState {
            replica: "file:///r".into(),
            txid: 42,
            checksum,
            page_size: 512,
            db_size: 2,
            clean: Some(FileId {
                ino: 7,
                size: 1024,
                mtime_s: 5,
                mtime_ns: 6,
                ctime_s: 8,
                ctime_ns: 9,
                racy: false,
            }),
            position: Some(Position::Wal(WalPos {
                salt1: 1,
                salt2: u32::MAX,
                frame: 9,
                cksum: (3, 4),
                page_size: 512,
                big_endian: true,
            })),
        };
        st.save(&dir);
        save_sums(&dir, &sums);
        assert_eq!(LocalState::load(&dir), Some(st.clone()));
        assert_eq!(load_sums(&dir, 2, checksum), Some(sums.clone()));
        assert_eq!(
            load_sums(&dir, 2, checksum ^ 1),
            None,
            "sums that do not add up are refused"
        );
        assert_eq!(load_sums(&dir, 3, checksum), None);
        // In place: one term changed and the file grown by one page.
        let mut grown = sums.clone();
        grown[1] = crate::ltx::page_checksum(2, &[9u8; 512]);
        grown.push(crate::ltx::page_checksum(3, &[3u8; 512]));
        update_sums(&dir, &grown, 2, &[2, 3]);
        let c2 = crate::ltx::checksum_flag(grown.iter().fold(0, |a, s| a ^ s));
        assert_eq!(load_sums(&dir, 3, c2), Some(grown));
        let file = LocalState {
            position: Some(Position::File {
                counter: 17,
                stamp: Some(FileStamp {
                    ino: 1,
                    size: 2,
                    mtime_s: 3,
                    mtime_ns: 4,
                    ctime_s: 5,
                    ctime_ns: 6,
                    racy: true,
                }),
            }),
            clean: None,
            ..st
        };
        file.save(&dir);
        assert_eq!(LocalState::load(&dir), Some(file));
        let _ = fs::remove_dir_all(&dir);
    }
}
