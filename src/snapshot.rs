//! Snapshot: a consistent full image of a live database, taken without stopping its writers.
//!
//! Owns reading the database file and its WAL (through the OS VFS, never `std::fs`, which would
//! drop the app's POSIX locks) into a temporary image file beside the database. Never writes the
//! database or the WAL, takes no lock but a WAL read lock (which blocks
//! only WAL restarts), never runs a checkpoint.
//!
//! Why the image is exact: copy the db file, then overlay every frame of the WAL's committed
//! prefix (up to its last commit frame M). During the copy a checkpoint can only backfill frames
//! that are in that WAL (≤ M), and those are overlaid afterwards, so torn or newer pages never
//! survive. This holds while the WAL was not restarted during the copy: a restart would let a
//! checkpoint backfill frames we can no longer read. So the WAL header is compared before the
//! copy and after the WAL scan (salt-1 grows on every restart), and the read is retried on
//! change; every retry holds a WAL read lock, which keeps writers from restarting the WAL, so a
//! writer restarting it constantly costs one retry (the header check still catches a restart
//! under way when the lock was taken, and EXCLUSIVE mode, where no lock is possible).
//! With no WAL at all, the db file's stat must not change during the copy.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::capture::{Position, Shared};
use crate::ffi::osfile::OsFile;
use crate::ltx;
use crate::wal::{self, WalHeader};
use crate::wal_reader::WalPos;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot of {db}: {what}: {source}")]
    Io {
        db: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("snapshot of {db}: the database kept changing under the reader ({tries} tries); will retry later")]
    Unstable { db: String, tries: u32 },
    #[error("snapshot of {db}: {what}")]
    Invalid { db: String, what: String },
}

/// A full database image at `position`, in a temporary file of `db_size * page_size` bytes.
pub struct Image {
    pub page_size: u32,
    pub db_size: u32,
    pub position: Position,
    pub file: File,
    pub path: PathBuf,
    /// Per-page checksum terms (index pgno-1; 0 for the lock page), for rolling the db checksum.
    pub page_sums: Vec<u64>,
    pub checksum: u64,
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Image {
    /// Page `pgno` (1-based) of the image.
    pub fn read_page(&self, pgno: u32, buf: &mut [u8]) -> std::io::Result<()> {
        self.file
            .read_exact_at(buf, (pgno as u64 - 1) * self.page_size as u64)
    }
}

fn wal_header(wal: Option<&File>) -> Option<WalHeader> {
    crate::wal_reader::header(wal?).ok().flatten()
}

fn stat_key(p: &str) -> Option<(i64, i64, u64, u64)> {
    fs::metadata(p)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec(), m.size(), m.ino()))
}

impl SnapshotError {
    /// The image could not be written locally (a full or read-only directory), as opposed to
    /// the database being unreadable.
    fn is_local_disk(&self) -> bool {
        matches!(self, SnapshotError::Io { what, .. } if matches!(*what,
            "create work directory" | "create image file" | "write image" | "truncate image"))
    }
}

/// Reads a consistent image of `db_path` into a temporary file in `work_dir`, or, when that
/// directory is full or read-only, in the system's temporary directory (said once).
///
/// `shared` (the app's side of this database, when the app has it open in this process) lets a
/// retry hold a WAL read lock through the app's own wal-index mapping.
pub fn take(
    db_path: &str,
    work_dir: &Path,
    shared: Option<&Shared>,
) -> Result<Image, SnapshotError> {
    match take_in(db_path, work_dir, "snapshot.tmp", shared) {
        Err(e) if e.is_local_disk() => {
            let tmp = std::env::temp_dir();
            crate::logging::warn_once(&format!("snapshot {}", work_dir.display()), || {
                format!(
                    "{db_path}: cannot write the snapshot image in {} ({e}); using {} instead. \
                     Free space there or make it writable",
                    work_dir.display(),
                    tmp.display()
                )
            });
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("walship-{}-{n}-snapshot.tmp", std::process::id());
            take_in(db_path, &tmp, &name, shared)
        }
        r => r,
    }
}

fn take_in(
    db_path: &str,
    dir: &Path,
    name: &str,
    shared: Option<&Shared>,
) -> Result<Image, SnapshotError> {
    const TRIES: u32 = 20;
    for attempt in 0..TRIES {
        let got = try_take(db_path, dir, name, shared, attempt > 0).inspect_err(|_| {
            let _ = fs::remove_file(dir.join(name)); // a partial image only takes space
        });
        if let Some(img) = got? {
            return Ok(img);
        }
        std::thread::sleep(std::time::Duration::from_millis(5 << attempt.min(6)));
    }
    let _ = fs::remove_file(dir.join(name));
    Err(SnapshotError::Unstable {
        db: db_path.into(),
        tries: TRIES,
    })
}

fn try_take(
    db_path: &str,
    work_dir: &Path,
    name: &str,
    shared: Option<&Shared>,
    lock: bool,
) -> Result<Option<Image>, SnapshotError> {
    let io = |what: &'static str| {
        move |e: std::io::Error| SnapshotError::Io {
            db: db_path.into(),
            what,
            source: e,
        }
    };
    let wal_path = format!("{db_path}-wal");
    let db = OsFile::open(db_path, false)
        .map_err(io("open database"))?
        .ok_or_else(|| SnapshotError::Invalid {
            db: db_path.into(),
            what: "database file does not exist".into(),
        })?;
    // With a WAL read lock held the WAL cannot restart during the copy, so a busy writer
    // cannot make every try fail (without one, EXCLUSIVE mode, the header check retries).
    // Only once a try lost that race: the lock also makes the app's own RESTART and TRUNCATE
    // checkpoints report busy while it is held, which an app (or SQLite's own test suite, which
    // counts them) should only ever see when its writer is that busy.
    // Mapping the wal-index is only safe while the app has it mapped: the first mapping in a
    // system may truncate the -shm file (SQLite's dead-man switch), which SQLite's own tests see.
    let _held = match shared
        .filter(|_| lock)
        .and_then(|s| s.while_mapped(|| db.hold_wal_reader(db_path)))
    {
        Some(held) => held.map_err(io("lock WAL for reading"))?,
        None => None,
    };
    // The WAL through std::fs: SQLite takes no POSIX lock on it (only on the database and the
    // shm), so closing this descriptor releases nothing of the app's.
    let wal = match File::open(&wal_path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("open WAL")(e)),
    };
    let before = wal_header(wal.as_ref());
    // How far the WAL is committed, by the wal-index when this process can read it (or, with
    // none, by the commits SQLite confirmed): a valid commit frame past it is a commit SQLite
    // reported failed and rolled back, which the image must not hold.
    let limit = match (shared.and_then(|s| s.shm_header()), before) {
        (Some(h), Some(w)) if h.is_init && h.salts() == (w.salt1, w.salt2) => Some(h.mx_frame),
        _ => None,
    };
    let stamp_before = crate::capture::FileStamp::of(Path::new(db_path));
    let stat_before = stat_key(db_path);

    fs::create_dir_all(work_dir).map_err(io("create work directory"))?;
    let path = work_dir.join(name);
    let mut out = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io("create image file"))?;

    // 1. The database file as it is now.
    let db_len = db.size().map_err(io("size database"))?;
    let mut first = [0u8; 100];
    let have_header = db_len >= 100
        && db
            .read_at(&mut first, 0)
            .map_err(io("read database header"))?;
    let mut page_size = if have_header {
        wal::decode_page_size(u16::from_be_bytes([first[16], first[17]]) as u32)
    } else {
        None
    };
    // The OS VFS reads at most 128 KiB per call (a debug build asserts it).
    let chunk = 64 << 10;
    let mut buf = vec![0u8; chunk];
    let mut off = 0u64;
    while off < db_len {
        let n = chunk.min((db_len - off) as usize);
        db.read_at(&mut buf[..n], off)
            .map_err(io("read database"))?;
        // Holes stay holes: a sparse database (SQLite's walbig test makes a 5 GB one) costs
        // neither the disk space nor the writes of its zeros.
        if buf[..n].iter().any(|&b| b != 0) {
            out.write_all_at(&buf[..n], off)
                .map_err(io("write image"))?;
        }
        off += n as u64;
    }
    out.set_len(db_len).map_err(io("write image"))?;
    let mut covered = db_len;

    // 2. The WAL's committed prefix, overlaid in frame order (later frames win).
    let mut scan = None;
    if let Some(w) = wal.as_ref() {
        let mut cur = std::io::BufReader::with_capacity(256 << 10, w);
        let mut werr = None;
        let s = wal::scan_upto(&mut cur, limit, |_, fh, page| {
            let at = (fh.pgno as u64 - 1) * page.len() as u64;
            if let Err(e) = out.write_all_at(page, at) {
                werr.get_or_insert(e);
            }
            covered = covered.max(at + page.len() as u64);
        })
        .map_err(io("read WAL"))?;
        if let Some(e) = werr {
            return Err(io("write image")(e));
        }
        scan = s;
    }
    let after = wal_header(wal.as_ref());
    let same_wal = match (before, after) {
        (Some(a), Some(b)) => {
            (a.salt1, a.salt2, a.checkpoint_seq) == (b.salt1, b.salt2, b.checkpoint_seq)
        }
        (None, None) => stat_key(db_path) == stat_before,
        _ => false,
    };
    if !same_wal {
        return Ok(None);
    }

    let (position, db_size) = match scan.filter(|s| s.last_commit > 0) {
        Some(s) => {
            if page_size.is_some_and(|p| p != s.header.page_size) && db_len > 0 {
                // Not a race: SQLite itself cannot use this WAL. Reported, not retried.
                return Err(SnapshotError::Invalid {
                    db: db_path.into(),
                    what: format!(
                        "the WAL's page size ({}) differs from the database's ({}); SQLite will \
                         not use this WAL either",
                        s.header.page_size,
                        page_size.unwrap_or(0)
                    ),
                });
            }
            page_size = Some(s.header.page_size);
            let mut p = WalPos::start(&s.header);
            p.frame = s.last_commit;
            p.cksum = s.cksum;
            (Position::Wal(p), s.db_size)
        }
        None => {
            let ps = page_size.unwrap_or(4096) as u64;
            // The in-header size is valid when the change counter matches version-valid-for.
            let hdr_size = u32::from_be_bytes([first[28], first[29], first[30], first[31]]);
            let valid = have_header && first[24..28] == first[92..96] && hdr_size > 0;
            let size = if valid {
                hdr_size
            } else {
                (db_len / ps) as u32
            };
            let counter = u32::from_be_bytes([first[24], first[25], first[26], first[27]]);
            let position = match after {
                // A header with no committed frame: new frames continue from it.
                Some(h) if page_size.is_none_or(|p| p == h.page_size) => {
                    Position::Wal(WalPos::start(&h))
                }
                _ => Position::File {
                    counter,
                    stamp: stamp_before,
                },
            };
            (position, size)
        }
    };
    let page_size = page_size.unwrap_or(4096);
    let want = db_size as u64 * page_size as u64;
    if covered < want {
        return Err(SnapshotError::Invalid {
            db: db_path.into(),
            what: format!(
                "database needs {db_size} pages but only {} bytes could be read",
                covered
            ),
        });
    }
    out.set_len(want).map_err(io("truncate image"))?;

    // 3. Per-page checksum terms.
    let lock = ltx::lock_pgno(page_size);
    let mut sums = vec![0u64; db_size as usize];
    let mut acc = 0u64;
    out.seek(SeekFrom::Start(0)).map_err(io("read image"))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, &out);
    let mut page = vec![0u8; page_size as usize];
    for pgno in 1..=db_size {
        r.read_exact(&mut page).map_err(io("read image"))?;
        if pgno != lock {
            // Most pages of a huge sparse file are zeros: their term needs no CRC pass.
            let s = if page.iter().all(|&b| b == 0) {
                ltx::zero_page_checksum(pgno, page_size)
            } else {
                ltx::page_checksum(pgno, &page)
            };
            sums[pgno as usize - 1] = s;
            acc ^= s;
        }
    }
    drop(r);
    Ok(Some(Image {
        page_size,
        db_size,
        position,
        file: out,
        path,
        page_sums: sums,
        checksum: ltx::checksum_flag(acc),
    }))
}
