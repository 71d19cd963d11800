//! `walship verify`: proves a replica restores. Restores the latest state (or `-txid` /
//! `-timestamp`) into a temporary file (restore checks every file's CRC-64 on the way), runs
//! `PRAGMA integrity_check`, and compares the image's database checksum with the one the
//! replica's last file carries, when it carries one. Never writes the database or the replica;
//! the temporary file is removed whatever happens.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use walvfs::ltx::{DbChecksum, CHECKSUM_FLAG};
use walvfs::restore::{self, ApplyOptions, PlanOptions};

use crate::args::{self, value, Flag};
use crate::{restore_cmd, source, sqlite, CmdError};

pub const USAGE: &str = "\
Usage:
  walship verify [flags] DB_PATH
  walship verify [flags] REPLICA_URL

Restores the replica's latest state (or the one -txid / -timestamp names) into a temporary
file, checks it with PRAGMA integrity_check, and compares its database checksum with the one
carried in the replica. Exits 0 when every check passes, 1 otherwise.

Flags:
  -config PATH      config file, as for restore (not allowed with REPLICA_URL)
  -txid TXID        verify the state after this transaction (hex)
  -timestamp TIME   verify the state at this time (RFC 3339)
";

const FLAGS: &[Flag] = &[value("config"), value("txid"), value("timestamp")];

/// Removes the temporary image however `run` ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn run(argv: &[String]) -> Result<(), CmdError> {
    let a = args::parse(argv, FLAGS).map_err(CmdError::Usage)?;
    if a.help {
        print!("{USAGE}");
        return Ok(());
    }
    let [arg] = a.positional.as_slice() else {
        return Err(CmdError::Usage(
            "expected one DB_PATH or REPLICA_URL".into(),
        ));
    };
    let target = restore_cmd::parse_target(&a)?;
    let src = source::resolve(arg, a.value("config"))?;
    let storage = &*src.storage;
    let listing = restore::list(storage, &restore::DEFAULT_LEVELS).map_err(|e| match e {
        e @ restore::RestoreError::NoFiles { .. } => source::no_files(e, arg, Path::new("OUT")),
        e => anyhow::Error::from(e),
    })?;
    let plan = listing
        .plan(storage, target, &PlanOptions::default())
        .map_err(anyhow::Error::from)?;
    let scratch =
        Scratch(std::env::temp_dir().join(format!("walship-verify-{}.db", std::process::id())));
    let applied = restore::apply_with(
        storage,
        &plan,
        &scratch.0,
        &ApplyOptions::default(),
        &mut |_| {},
    )
    .map_err(anyhow::Error::from)?;
    let what = format!("{} at TXID {:016x}", plan.replica, applied.txid);

    let rows = sqlite::query_strings(&scratch.0, "PRAGMA integrity_check")
        .with_context(|| format!("checking the restored image of {what}"))?;
    if rows != ["ok"] {
        let shown: Vec<_> = rows.iter().take(5).cloned().collect();
        return Err(anyhow!(
            "{what}: PRAGMA integrity_check failed: {} (hint: the replica's files are each intact but do not add \
             up to a consistent database; try `walship restore -last-consistent`, or an earlier -txid)",
            shown.join("; ")
        )
        .into());
    }
    let checksum = match applied.post_apply_checksum {
        // Litestream 0.5 writes every file with flags 0x2 and no database checksums (and can't
        // restore files that carry them; docs/LTX-FORMAT.md), so walship writes none either.
        c if c & CHECKSUM_FLAG == 0 => {
            "every file's CRC-64 matches (the replica carries no database \
            checksum: Litestream 0.5's format writes none)"
                .to_string()
        }
        want => {
            let got = image_checksum(&scratch.0, applied.page_size)
                .with_context(|| format!("reading the restored image of {what}"))?;
            if got != want {
                return Err(anyhow!(
                    "{what}: the restored database's checksum is {got:016x}, but the replica's last file says \
                     {want:016x} (hint: a file in the replica does not belong to this history; run \
                     `walship ltx` to inspect it, and restore an earlier -txid)"
                )
                .into());
            }
            format!("database checksum {got:016x} matches the replica")
        }
    };
    println!(
        "verified {what} ({}): {} pages in {} files, integrity ok, {checksum}",
        restore::format_timestamp(applied.timestamp_ms),
        applied.pages,
        applied.files
    );
    Ok(())
}

/// The LTX database checksum of the image file, read page by page.
fn image_checksum(path: &std::path::Path, page_size: u32) -> std::io::Result<u64> {
    let mut f = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut page = vec![0u8; page_size as usize];
    let mut sum = DbChecksum::new();
    let lock = walvfs::ltx::lock_pgno(page_size);
    let mut pgno = 0u32;
    loop {
        match f.read_exact(&mut page) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(sum.value()),
            Err(e) => return Err(e),
        }
        pgno += 1;
        if pgno != lock {
            sum.toggle_page(pgno, &page);
        }
    }
}
