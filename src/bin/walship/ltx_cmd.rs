//! `walship ltx`: lists a replica's LTX files (Litestream's `ltx` command, plus header fields).

use walvfs::restore;
use walvfs::storage::FileInfo;

use crate::args::{self, switch, value, Flag};
use crate::{source, CmdError};

pub const USAGE: &str = "\
Usage:
  walship ltx [flags] DB_PATH
  walship ltx [flags] REPLICA_URL

Lists a replica's LTX files per level (0-9) with their TXID ranges, sizes, and the header's
timestamp, page size and database size in pages (each file's header is read).

Flags:
  -config PATH   config file, as for restore (not allowed with REPLICA_URL)
  -level N       only this level
  -json          print one JSON array
";

const FLAGS: &[Flag] = &[value("config"), value("level"), switch("json")];

pub fn run(argv: &[String]) -> Result<(), CmdError> {
    let a = args::parse(argv, FLAGS).map_err(CmdError::Usage)?;
    if a.help {
        print!("{USAGE}");
        return Ok(());
    }
    let [arg] = a.positional.as_slice() else {
        return Err(CmdError::Usage(
            "expected exactly one DB_PATH or REPLICA_URL".into(),
        ));
    };
    let levels: Vec<u8> = match a.value("level") {
        None => (0..=9).collect(),
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= 9 => vec![n],
            _ => {
                return Err(CmdError::Usage(format!(
                    "invalid -level {l:?}: expected 0 to 9"
                )))
            }
        },
    };
    let src = source::resolve(arg, a.value("config"))?;
    let storage = &*src.storage;
    let mut rows: Vec<(FileInfo, Result<walvfs::ltx::Header, String>)> = Vec::new();
    for level in levels {
        let files = storage
            .list(level)
            .map_err(|e| anyhow::anyhow!("listing level {level} of {}: {e}", storage.describe()))?;
        for f in files {
            let h = restore::read_header(storage, &f).map_err(|e| e.to_string());
            rows.push((f, h));
        }
    }
    if a.switch("json") {
        let items: Vec<String> = rows
            .iter()
            .map(|(f, h)| {
                let mut s = format!(
                    "{{\"level\":{},\"min_txid\":\"{:016x}\",\"max_txid\":\"{:016x}\",\"size\":{}",
                    f.level, f.min_txid, f.max_txid, f.size
                );
                match h {
                    Ok(h) => s.push_str(&format!(
                        ",\"timestamp\":\"{}\",\"timestamp_ms\":{},\"page_size\":{},\"commit\":{}}}",
                        restore::format_timestamp(h.timestamp_ms),
                        h.timestamp_ms,
                        h.page_size,
                        h.commit
                    )),
                    Err(e) => s.push_str(&format!(",\"error\":{}}}", json_string(e))),
                }
                s
            })
            .collect();
        println!("[{}]", items.join(","));
        return Ok(());
    }
    println!(
        "{:<5} {:<16} {:<16} {:>12} {:<24} {:>9} {:>10}",
        "LEVEL", "MIN_TXID", "MAX_TXID", "SIZE", "TIMESTAMP", "PAGE_SIZE", "COMMIT"
    );
    for (f, h) in &rows {
        match h {
            Ok(h) => println!(
                "{:<5} {:016x} {:016x} {:>12} {:<24} {:>9} {:>10}",
                f.level,
                f.min_txid,
                f.max_txid,
                f.size,
                restore::format_timestamp(h.timestamp_ms),
                h.page_size,
                h.commit
            ),
            Err(e) => println!(
                "{:<5} {:016x} {:016x} {:>12} unreadable: {e}",
                f.level, f.min_txid, f.max_txid, f.size
            ),
        }
    }
    Ok(())
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
