//! `walship snapshot`: asks for a new snapshot of a database now. The process replicating it
//! (an app with walship loaded) is asked through a file in `.<db>-walship/`, which its shipper
//! looks for once a second; the command then waits for the status that process publishes to
//! count one more snapshot. With no such process running, the request waits for the next one
//! that opens the database. Never writes the database or the replica itself.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use walvfs::config::parse_go_duration;

use crate::args::{self, value, Flag};
use crate::{databases_cmd, status_cmd, CmdError};

pub const USAGE: &str = "\
Usage:
  walship snapshot [flags] DB_PATH

Asks the process replicating DB_PATH (an application with walship loaded) to write a new
snapshot of the database now, and waits until it has. If no process is replicating it, the
request is kept and the next one to open the database takes the snapshot first.

Flags:
  -config PATH     config file; default: $WALSHIP_CONFIG, ./walship.yml, ./litestream.yml
  -timeout D       how long to wait for the snapshot (Go duration; default 60s)
";

const FLAGS: &[Flag] = &[value("config"), value("timeout")];

pub fn run(argv: &[String]) -> Result<(), CmdError> {
    let a = args::parse(argv, FLAGS).map_err(CmdError::Usage)?;
    if a.help {
        print!("{USAGE}");
        return Ok(());
    }
    let [arg] = a.positional.as_slice() else {
        return Err(CmdError::Usage("expected one DB_PATH".into()));
    };
    let timeout = match a.value("timeout") {
        None => Duration::from_secs(60),
        Some(t) => {
            parse_go_duration(t).map_err(|e| CmdError::Usage(format!("-timeout {t:?}: {e}")))?
        }
    };
    let cfg = databases_cmd::load_config(a.value("config"))?;
    let db = cfg.db_for(std::path::Path::new(arg)).ok_or_else(|| {
        anyhow!(
            "database {arg} is not in config {} (see `walship databases`)",
            cfg.source_name()
        )
    })?;
    let db_path = db.path.to_string_lossy().into_owned();
    let work_dir = walvfs::registry::work_dir(&db_path);
    let status_path = walvfs::shipper::status_file(&work_dir);
    let read = || std::fs::read_to_string(&status_path).ok();
    let count =
        |json: &str| status_cmd::field(json, "snapshots").and_then(|n| n.parse::<u64>().ok());
    let before = read();
    let running = before
        .as_deref()
        .filter(|j| status_cmd::field(j, "running") == Some("true"))
        .and_then(|j| status_cmd::field(j, "pid"))
        .filter(|pid| status_cmd::alive(pid))
        .map(str::to_string);
    let request = walvfs::shipper::snapshot_request_file(&work_dir);
    std::fs::create_dir_all(&work_dir)
        .and_then(|_| std::fs::write(&request, format!("{}\n", std::process::id())))
        .with_context(|| format!("writing the snapshot request {}", request.display()))?;
    let Some(pid) = running else {
        println!(
            "no process is replicating {db_path} now; the request is kept in {}: the next process that \
             opens the database through walship takes the snapshot first",
            request.display()
        );
        return Ok(());
    };
    let n0 = before.as_deref().and_then(count).unwrap_or(0);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(now) = read() {
            if count(&now).is_some_and(|n| n > n0) {
                let txid = status_cmd::field(&now, "txid").unwrap_or("?");
                println!("snapshot written at TXID {txid} by process {pid} ({db_path})");
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "process {pid} did not write the snapshot of {db_path} within {timeout:?} \
                 (hint: `walship status` shows its last error; the request stays in {})",
                request.display()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
