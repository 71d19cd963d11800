//! `walship restore`: Litestream's `restore` command, over walship's restore library.
//!
//! The image is built in a temporary file next to the output (`.<name>.walship-restore-<pid>`),
//! fsynced, checked with `PRAGMA integrity_check`, and only then renamed over the output (the
//! directory is fsynced after). Any failure removes the temporary file and leaves the output
//! untouched. With `-last-consistent`, damaged files are set aside and the last state the
//! intact files reach is restored (see `walvfs::restore::apply_last_consistent`); what was
//! set aside and where the restore stopped is printed.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use walvfs::restore::{self, ApplyOptions, PlanOptions, RestoreError, Target, DEFAULT_PARALLELISM};

use crate::args::{self, optional, switch, value, Flag};
use crate::{progress, source, sqlite, CmdError};

pub const USAGE: &str = "\
Usage:
  walship restore [flags] DB_PATH
  walship restore [flags] REPLICA_URL

Restores a database from its replica: the latest state, the state after a TXID, or the state
at a point in time. DB_PATH names a database in the config file, whose replica is used.
REPLICA_URL is file:///abs/dir or a replica directory's path.

Flags (-flag and --flag are the same; values as \"-flag value\" or \"-flag=value\"):
  -config PATH         config file; default: $WALSHIP_CONFIG, ./walship.yml, ./litestream.yml,
                       then $WALSHIP_REPLICA_URL. Not allowed with REPLICA_URL.
  -o PATH              output database; default DB_PATH; required with REPLICA_URL
  -txid TXID           restore up to this transaction, inclusive (hex, up to 16 digits)
  -timestamp TIME      restore the state at this time (RFC 3339, e.g. 2026-11-25T10:00:00Z)
  -if-db-not-exists    exit 0 without restoring if the output database already exists
  -if-replica-exists   exit 0 without restoring if the replica holds no files
  -force               overwrite an existing output database, removing its -wal/-shm/-journal
  -parallelism N       files downloaded at once (default 8)
  -integrity-check [M] full, quick or none: check the restored file before it replaces the
                       output. walship always checks in full unless told otherwise, so the
                       flag alone (as Litestream users write it) changes nothing
  -last-consistent     if the replica is damaged (a missing, corrupt, truncated or unfitting
                       file), set the bad files aside and restore the last state the intact
                       files reach, saying which TXID and why; without it such a restore fails
  -dry-run             print the files that would be applied, and exit
  -v                   report each file as it is applied

Examples:
  walship restore /data/app.db
  walship restore -o /tmp/app.db -timestamp 2026-11-25T10:00:00Z /data/app.db
  walship restore -o /tmp/app.db -txid 42 file:///backups/app.db
";

const FLAGS: &[Flag] = &[
    value("config"),
    value("o"),
    value("txid"),
    value("timestamp"),
    switch("if-db-not-exists"),
    switch("if-replica-exists"),
    switch("force"),
    value("parallelism"),
    optional("integrity-check", &["full", "quick", "none"], "full"),
    switch("dry-run"),
    switch("v"),
    switch("last-consistent"),
];

/// `-txid`: hex, 1 to 16 digits, optionally `0x`-prefixed.
pub fn parse_txid(s: &str) -> Result<u64, String> {
    let h = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if h.is_empty() || h.len() > 16 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("invalid -txid {s:?}: expected a hex TXID of 1 to 16 digits, e.g. 000000000000002a or 2a"));
    }
    u64::from_str_radix(h, 16).map_err(|e| format!("invalid -txid {s:?}: {e}"))
}

/// `-txid` or `-timestamp` (not both), else the latest state.
pub fn parse_target(a: &args::Parsed) -> Result<Target, CmdError> {
    Ok(match (a.value("txid"), a.value("timestamp")) {
        (Some(_), Some(_)) => {
            return Err(CmdError::Usage(
                "-txid and -timestamp cannot be used together".into(),
            ))
        }
        (Some(t), None) => Target::Txid(parse_txid(t).map_err(CmdError::Usage)?),
        (None, Some(t)) => Target::Timestamp(
            restore::parse_timestamp(t).map_err(|e| CmdError::Usage(format!("-timestamp: {e}")))?,
        ),
        (None, None) => Target::Latest,
    })
}

pub fn run(argv: &[String]) -> Result<(), CmdError> {
    let a = args::parse(argv, FLAGS).map_err(CmdError::Usage)?;
    if a.help {
        print!("{USAGE}");
        return Ok(());
    }
    let arg = match a.positional.as_slice() {
        [one] => one.as_str(),
        [] => return Err(CmdError::Usage("missing DB_PATH or REPLICA_URL".into())),
        _ => {
            return Err(CmdError::Usage(format!(
                "too many arguments: {}",
                a.positional.join(" ")
            )))
        }
    };
    let target = parse_target(&a)?;
    let parallelism = match a.value("parallelism") {
        None => DEFAULT_PARALLELISM,
        Some(p) => match p.parse::<usize>() {
            Ok(n) if (1..=256).contains(&n) => n,
            _ => {
                return Err(CmdError::Usage(format!(
                    "invalid -parallelism {p:?}: expected a number from 1 to 256"
                )))
            }
        },
    };
    let check = match a.value("integrity-check").unwrap_or("full") {
        "full" => Some(("integrity_check", "integrity ok")),
        "quick" => Some(("quick_check", "quick check ok")),
        "none" => None,
        m => {
            return Err(CmdError::Usage(format!(
                "invalid -integrity-check {m:?}: expected full, quick or none"
            )))
        }
    };
    if source::is_replica_arg(arg) && a.value("o").is_none() {
        return Err(CmdError::Usage(format!(
            "-o is required when restoring from a replica URL (e.g. walship restore -o /path/to/db {arg})"
        )));
    }
    let src = source::resolve(arg, a.value("config"))?;
    let out = match (a.value("o"), &src.db_path) {
        (Some(o), _) => PathBuf::from(o),
        (None, Some(db)) => db.clone(),
        (None, None) => unreachable!("checked above"),
    };
    let force = a.switch("force");

    if a.switch("if-db-not-exists") && fs::symlink_metadata(&out).is_ok() {
        println!(
            "database {} already exists, skipping restore (-if-db-not-exists)",
            out.display()
        );
        return Ok(());
    }
    check_output(&out, force)?;

    let storage = &*src.storage;
    let last_consistent = a.switch("last-consistent");
    let listing = match restore::list(storage, &restore::DEFAULT_LEVELS) {
        Err(RestoreError::NoFiles { replica, .. }) if a.switch("if-replica-exists") => {
            println!("no backups found in {replica}, skipping restore (-if-replica-exists)");
            return Ok(());
        }
        Err(e @ RestoreError::NoFiles { .. }) => return Err(source::no_files(e, arg, &out).into()),
        r => r.map_err(anyhow::Error::from)?,
    };
    let plan_opts = PlanOptions {
        stop_at_gap: last_consistent,
        ..PlanOptions::default()
    };
    if a.switch("dry-run") {
        let plan = listing
            .plan(storage, target, &plan_opts)
            .map_err(anyhow::Error::from)?;
        print_plan(&plan);
        return Ok(());
    }

    let (dir, name) = split_output(&out)?;
    fs::create_dir_all(&dir)
        .with_context(|| format!("creating the output directory {}", dir.display()))?;
    let tmp = TempFile(dir.join(format!(".{name}.walship-restore-{}", std::process::id())));
    let verbose = a.switch("v");
    // What the meter counts toward: the plan's files (with -last-consistent, the plan before
    // any file is set aside).
    let (total, nfiles) = listing
        .plan(storage, target, &plan_opts)
        .map(|p| (p.download_bytes(), p.files.len()))
        .unwrap_or((0, 0));
    let meter = progress::Meter::start(total, nfiles);
    let opts = ApplyOptions {
        parallelism,
        bytes_done: Some(meter.bytes()),
        ..ApplyOptions::default()
    };
    let mut progress = |p: restore::Progress| {
        meter.file_done();
        if verbose {
            eprintln!(
                "applied {} ({}/{}): {} pages, database now {} pages",
                restore::object_name(&p.file),
                p.index + 1,
                p.count,
                p.pages,
                p.commit
            );
        }
    };
    let (applied, stopped) = if last_consistent {
        let r =
            restore::apply_last_consistent(storage, &listing, target, &tmp.0, &opts, &mut progress)
                .map_err(anyhow::Error::from)?;
        for d in &r.damaged {
            eprintln!("set aside {d}");
        }
        let stopped = r.reason().map(|why| {
            format!(
                "stopped at TXID {:016x}, before the target TXID {:016x} ({}): {why}",
                r.applied.txid, r.plan.target_txid, r.plan.target
            )
        });
        (r.applied, stopped)
    } else {
        let plan = listing
            .plan(storage, target, &plan_opts)
            .map_err(anyhow::Error::from)?;
        let applied = restore::apply_with(storage, &plan, &tmp.0, &opts, &mut progress)
            .map_err(anyhow::Error::from)?;
        (applied, None)
    };
    meter.finish();

    let checked = match check {
        Some((pragma, ok)) => {
            let rows =
                sqlite::query_strings(&tmp.0, &format!("PRAGMA {pragma}")).with_context(|| {
                    format!(
                        "checking the restored database (TXID {:016x})",
                        applied.txid
                    )
                })?;
            if rows != ["ok"] {
                let shown: Vec<_> = rows.iter().take(10).cloned().collect();
                return Err(anyhow!(
                    "PRAGMA {pragma} failed on the restored database (TXID {:016x}): {}{}; {} was left untouched \
                     (hint: the replica's files are individually valid but do not add up to a consistent database; \
                     try an earlier -txid or -timestamp)",
                    applied.txid,
                    shown.join("; "),
                    if rows.len() > 10 { format!("; and {} more", rows.len() - 10) } else { String::new() },
                    out.display()
                )
                .into());
            }
            ok
        }
        None => "integrity not checked",
    };

    // Stale sidecars would be applied to (or roll back) the new file: remove them first.
    for sidecar in sidecars(&out) {
        match fs::remove_file(&sidecar) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow!("removing {}: {e}", sidecar.display()).into()),
        }
    }
    fs::rename(&tmp.0, &out)
        .with_context(|| format!("renaming {} to {}", tmp.0.display(), out.display()))?;
    std::mem::forget(tmp);
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsyncing the directory {}", dir.display()))?;
    println!(
        "restored TXID {:016x} ({}) to {}: {} pages, {checked}",
        applied.txid,
        restore::format_timestamp(applied.timestamp_ms),
        out.display(),
        applied.pages
    );
    if let Some(s) = stopped {
        println!("-last-consistent: {s}");
    }
    Ok(())
}

fn print_plan(plan: &restore::Plan) {
    println!(
        "restore plan for {} from {}: TXID {:016x}, {} files, {} bytes",
        plan.target,
        plan.replica,
        plan.txid,
        plan.files.len(),
        plan.download_bytes()
    );
    for f in &plan.files {
        let i = &f.info;
        println!(
            "  {}  TXIDs {:016x}..={:016x}  {} bytes",
            restore::object_name(i),
            i.min_txid,
            i.max_txid,
            i.size
        );
    }
    if let Some(s) = &plan.shortfall {
        println!(
            "  stops at TXID {:016x}, before TXID {:016x}: {s}",
            plan.txid, plan.target_txid
        );
    }
}

fn sidecars(out: &Path) -> Vec<PathBuf> {
    ["-wal", "-shm", "-journal"]
        .iter()
        .map(|s| {
            let mut p = out.as_os_str().to_owned();
            p.push(s);
            PathBuf::from(p)
        })
        .collect()
}

/// Refuses to replace a non-empty output, or one with SQLite sidecar files, without -force.
fn check_output(out: &Path, force: bool) -> Result<(), CmdError> {
    match fs::metadata(out) {
        Ok(m) if m.is_dir() => {
            return Err(anyhow!("output path {} is a directory", out.display()).into())
        }
        Ok(m) if m.len() > 0 && !force => {
            return Err(anyhow!(
                "{} already exists; use -force to overwrite it, or -o to restore to another path",
                out.display()
            )
            .into())
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(anyhow!("cannot access the output path {}: {e}", out.display()).into())
        }
    }
    if !force {
        if let Some(s) = sidecars(out).into_iter().find(|s| s.exists()) {
            return Err(anyhow!(
                "SQLite file {} exists next to the output; use -force to remove it and overwrite, or -o to restore to another path",
                s.display()
            )
            .into());
        }
    }
    Ok(())
}

fn split_output(out: &Path) -> Result<(PathBuf, String), CmdError> {
    let name = out
        .file_name()
        .ok_or_else(|| anyhow!("output path {} does not name a file", out.display()))?
        .to_string_lossy()
        .into_owned();
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// Removed on drop unless forgotten after the rename.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
