//! `walship status`: per database, what its application's walship last reported — replica
//! position (TXID), lag, backlog (queued + spooled), snapshots, the last error — read from the
//! status file the shipper keeps beside the database (`.<db>-walship/status.json`). Reads local
//! files only: no storage calls, no credentials needed.

use std::path::PathBuf;

use crate::args::{self, switch, value, Flag};
use crate::CmdError;

pub const USAGE: &str = "\
Usage:
  walship status [flags] [DB_PATH...]

Shows, for each database in the configuration (or each DB_PATH given), the replication state
its application reported last: replica TXID, lag, backlog, spooled files, last error, and
whether the process is still running.

Flags:
  -config PATH   config file; default: $WALSHIP_CONFIG, ./walship.yml, ./litestream.yml
  -json          print one JSON array
";

const FLAGS: &[Flag] = &[value("config"), switch("json")];

pub fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[at..];
    let end = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.find('"').map(|e| e + 2)?
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim_matches('"'))
}

pub fn alive(pid: &str) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}

pub fn run(argv: &[String]) -> Result<(), CmdError> {
    let a = args::parse(argv, FLAGS).map_err(CmdError::Usage)?;
    if a.help {
        print!("{USAGE}");
        return Ok(());
    }
    let dbs: Vec<PathBuf> = if a.positional.is_empty() {
        let cfg = crate::databases_cmd::load_config(a.value("config"))?;
        cfg.dbs.iter().map(|d| d.path.clone()).collect()
    } else {
        a.positional
            .iter()
            .map(|p| walvfs::config::canonical_db_path(std::path::Path::new(p)))
            .collect()
    };
    let mut rows = Vec::new();
    for db in &dbs {
        let file = walvfs::shipper::status_file(&walvfs::registry::work_dir(&db.to_string_lossy()));
        rows.push((db.clone(), std::fs::read_to_string(&file).ok()));
    }
    if a.switch("json") {
        let items: Vec<String> = rows
            .iter()
            .map(|(db, s)| match s {
                Some(json) => json.clone(),
                None => format!(
                    "{{\"path\":{},\"status\":null}}",
                    walvfs::shipper::json_str(&db.to_string_lossy())
                ),
            })
            .collect();
        println!("[{}]", items.join(","));
        return Ok(());
    }
    println!(
        "{:<40} {:<16} {:>9} {:>12} {:>7} {:<14} LAST ERROR",
        "DATABASE", "TXID", "LAG", "BACKLOG", "SPOOLED", "STATE"
    );
    for (db, s) in &rows {
        let name = db.to_string_lossy();
        let Some(json) = s else {
            println!("{name:<40} (no status: never opened through walship here)");
            continue;
        };
        let f = |k| field(json, k).unwrap_or("-").to_string();
        let pid = f("pid");
        let state = if f("running") == "true" && alive(&pid) {
            format!("running {pid}")
        } else {
            "stopped".into()
        };
        let lag = match f("lag_ms").parse::<i64>() {
            Ok(ms) => format!("{:.1}s", ms as f64 / 1000.0),
            Err(_) => "-".into(),
        };
        println!(
            "{name:<40} {:<16} {lag:>9} {:>12} {:>7} {state:<14} {}",
            f("txid"),
            f("backlog_bytes"),
            f("spooled_files"),
            if f("last_error") == "null" {
                "-".to_string()
            } else {
                f("last_error")
            }
        );
    }
    Ok(())
}
