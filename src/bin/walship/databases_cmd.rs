//! `walship databases`: Litestream's `databases` — the databases a configuration names, with
//! each one's replica (described without credentials) and sync interval. Reads the config only.

use walvfs::config::Config;

use crate::args::{self, switch, value, Flag};
use crate::CmdError;

pub const USAGE: &str = "\
Usage:
  walship databases [flags]

Lists the databases in the configuration and where each replicates.

Flags:
  -config PATH   config file; default: $WALSHIP_CONFIG, ./walship.yml, ./litestream.yml
  -json          print one JSON array
";

const FLAGS: &[Flag] = &[value("config"), switch("json")];

/// The configuration `-config` names, else the one walship would find.
pub fn load_config(path: Option<&str>) -> Result<Config, CmdError> {
    match path {
        Some(p) => Config::load(std::path::Path::new(p)).map_err(|e| anyhow::anyhow!("{e}").into()),
        None => Config::discover()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .ok_or_else(|| {
                CmdError::Usage(
                    "no configuration found ($WALSHIP_CONFIG, ./walship.yml, ./litestream.yml): give -config PATH"
                        .into(),
                )
            }),
    }
}

pub fn run(argv: &[String]) -> Result<(), CmdError> {
    let a = args::parse(argv, FLAGS).map_err(CmdError::Usage)?;
    if a.help {
        print!("{USAGE}");
        return Ok(());
    }
    if let Some(extra) = a.positional.first() {
        return Err(CmdError::Usage(format!("unexpected argument {extra:?}")));
    }
    let cfg = load_config(a.value("config"))?;
    for w in &cfg.warnings {
        eprintln!("walship: warning: {w}");
    }
    let rows: Vec<(String, String, String)> = cfg
        .dbs
        .iter()
        .map(|d| {
            let replica = match walvfs::storage::open(&d.replica.kind) {
                Ok(s) => s.describe(),
                Err(e) => format!("({} replica: {e})", d.replica.kind.type_name()),
            };
            let interval = walvfs::config::format_go_duration(d.replica.sync_interval);
            (d.path.display().to_string(), replica, interval)
        })
        .collect();
    if a.switch("json") {
        let q = walvfs::shipper::json_str;
        let items: Vec<String> = rows
            .iter()
            .map(|(p, r, i)| {
                format!(
                    "{{\"path\":{},\"replica\":{},\"sync_interval\":{}}}",
                    q(p),
                    q(r),
                    q(i)
                )
            })
            .collect();
        println!("[{}]", items.join(","));
        return Ok(());
    }
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(4);
    println!("{:<w$}  {:<13}  REPLICA", "PATH", "SYNC-INTERVAL");
    for (p, r, i) in &rows {
        println!("{p:<w$}  {i:<13}  {r}");
    }
    Ok(())
}
