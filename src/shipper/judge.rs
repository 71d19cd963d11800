//! The judge (cargo feature `judge`, switched on with `WALSHIP_JUDGE=1`; a build without the
//! feature has none of this): after a level-0 file is shipped (one time in eight, chosen by a
//! counter) and at every last close, the replica is restored to its TXID and compared page by
//! page with an image of the database — when the image is provably of the same state (its WAL
//! position is the one the replica claims). A mismatch aborts the process with the database,
//! the TXID and the first differing page. With it on, every test that drives SQLite (SQLite's
//! own suite: `make sqlite-tests`) is a capture test.
//!
//! Owns nothing the release build uses; never uploads, never writes the database.

use std::io::Write;

use super::Shipper;
use crate::restore::{self, Target};
use crate::snapshot;

/// Whether the judge is on in this process.
pub(super) fn enabled() -> bool {
    std::env::var("WALSHIP_JUDGE").is_ok_and(|v| v == "1")
}

/// Appends one line to `WALSHIP_JUDGE_LOG` (stderr would break hosts that read it, such as
/// Tcl's `exec`).
fn note(line: &str) {
    if let Some(p) = std::env::var_os("WALSHIP_JUDGE_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

impl Shipper {
    /// Restores the replica and compares it with the database; `always`: at a last close.
    pub(super) fn judge(&mut self, always: bool) {
        if !enabled() {
            return;
        }
        self.judged += 1;
        if !always && self.judged % 8 != 1 {
            return;
        }
        let Some(r) = self.replica.as_ref() else {
            return;
        };
        let (txid, claimed) = (r.txid, r.position);
        let db = self.s.db_path.clone();
        let img = match snapshot::take(&db, &self.s.work_dir, Some(&self.shared)) {
            Ok(i) => i,
            Err(e) => return note(&format!("skip {db} TXID {txid:016x}: no image ({e})")),
        };
        if img.db_size == 0 {
            return note(&format!(
                "skip {db} TXID {txid:016x}: the database is empty"
            ));
        }
        if Some(img.position) != claimed {
            // Committed since (by anyone): not the state the replica claims. Not a verdict.
            return note(&format!(
                "skip {db} TXID {txid:016x}: the database moved on"
            ));
        }
        let out = self.s.work_dir.join("judge-restore.tmp");
        let restored = restore::plan(&self.storage, Target::Txid(txid))
            .map_err(|e| e.to_string())
            .and_then(|plan| {
                // A scratch image: no fsync, and one download at a time (SQLite's tests run
                // hundreds of these on small databases).
                let opts = restore::ApplyOptions {
                    parallelism: 1,
                    sync: false,
                    ..restore::ApplyOptions::default()
                };
                restore::apply_with(&self.storage, &plan, &out, &opts, &mut |_| {})
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = restored {
            let _ = std::fs::remove_file(&out);
            fail(&db, txid, &format!("the replica does not restore: {e}"));
        }
        let verdict = compare(&img, &out);
        let _ = std::fs::remove_file(&out);
        match verdict {
            Ok(pages) => note(&format!("ok {db} TXID {txid:016x} {pages} pages")),
            Err(why) => fail(&db, txid, &why),
        }
    }
}

fn fail(db: &str, txid: u64, why: &str) -> ! {
    let line = format!("walship judge: MISMATCH {db} at TXID {txid:016x}: {why}");
    note(&line);
    eprintln!("{line}");
    std::process::abort();
}

/// Page by page: `Ok(pages)` when the restored file is the image.
fn compare(img: &snapshot::Image, restored: &std::path::Path) -> Result<u32, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(restored).map_err(|e| e.to_string())?;
    let ps = img.page_size as u64;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len != img.db_size as u64 * ps {
        return Err(format!(
            "the restore has {} pages, the database {}",
            len / ps,
            img.db_size
        ));
    }
    let lock = crate::ltx::lock_pgno(img.page_size);
    let (mut a, mut b) = (vec![0u8; ps as usize], vec![0u8; ps as usize]);
    for pgno in (1..=img.db_size).filter(|&p| p != lock) {
        img.read_page(pgno, &mut a).map_err(|e| e.to_string())?;
        f.read_exact_at(&mut b, (pgno as u64 - 1) * ps)
            .map_err(|e| e.to_string())?;
        if a != b {
            let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
            return Err(format!("page {pgno} differs first (at byte {at})"));
        }
    }
    Ok(img.db_size)
}
