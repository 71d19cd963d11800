//! Host driver: the walship extension inside rusqlite's bundled SQLite.
//!
//! Usage: walship-host-rusqlite EXT DB COPY_FROM COPY_TO
//!   EXT        path of libwalvfs.so
//!   DB         database to create through the `walship` VFS
//!   COPY_FROM  the replica directory; copied to COPY_TO right after walship_flush returns, so the
//!              test can restore exactly what was durable at that moment (before close)
//! walship_flush is called after transaction 25 and at the end. Prints one JSON line:
//! {"host", "sqlite_version", "journal_mode", "rows", "blob_bytes", "txid_mid", "txid", "status"}.
//! The workload matches tests/python/test_hosts.py `expected_rows()`: 50 transactions of 40 rows.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags};

const TXNS: i64 = 50;
const ROWS_PER_TXN: i64 = 40;

fn payload(i: i64) -> Vec<u8> {
    let len = if i % 10 == 0 { 3000 + (i % 7) * 100 } else { 32 };
    (0..len).map(|j| ((i * 31 + j * 7) & 0xff) as u8).collect()
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for ent in std::fs::read_dir(from)? {
        let ent = ent?;
        let dst = to.join(ent.file_name());
        if ent.file_type()?.is_dir() {
            copy_dir(&ent.path(), &dst)?;
        } else {
            std::fs::copy(ent.path(), dst)?;
        }
    }
    Ok(())
}

fn json_str(s: &str) -> String {
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        return Err("usage: walship-host-rusqlite EXT DB COPY_FROM COPY_TO".into());
    }
    let (ext, db_path, copy_from, copy_to) = (&args[1], &args[2], &args[3], &args[4]);

    // A throwaway connection loads the extension; the VFS and the SQL functions it registers are
    // process-wide, so every later connection sees them.
    let loader = Connection::open_in_memory()?;
    // SAFETY: loading a trusted extension built by this repository.
    unsafe {
        loader.load_extension_enable()?;
        loader.load_extension(ext, None::<&str>)?;
        loader.load_extension_disable()?;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags_and_vfs(db_path, flags, "walship")?;
    let journal_mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.execute_batch(
        "CREATE TABLE items(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, label TEXT NOT NULL, payload BLOB)",
    )?;
    let mut txid_mid: i64 = 0;
    for t in 0..TXNS {
        let tx = conn.transaction()?;
        {
            let mut ins = tx.prepare_cached("INSERT INTO items(id, n, label, payload) VALUES (?1, ?2, ?3, ?4)")?;
            for k in 0..ROWS_PER_TXN {
                let i = t * ROWS_PER_TXN + k;
                ins.execute(params![i + 1, (i * i) % 1_000_003, format!("row-{i}"), payload(i)])?;
            }
        }
        tx.commit()?;
        if t == TXNS / 2 - 1 {
            txid_mid = conn.query_row("SELECT walship_flush(10000)", [], |r| r.get(0))?;
        }
    }
    let (rows, blob_bytes): (i64, i64) =
        conn.query_row("SELECT count(*), sum(length(payload)) FROM items", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let txid: i64 = conn.query_row("SELECT walship_flush(10000)", [], |r| r.get(0))?;
    copy_dir(Path::new(copy_from), Path::new(copy_to))?;
    let status: String = conn.query_row("SELECT walship_status()", [], |r| r.get(0))?;
    let version: String = conn.query_row("SELECT sqlite_version()", [], |r| r.get(0))?;
    conn.close().map_err(|(_, e)| e)?;
    drop(loader);
    println!(
        "{{\"host\":\"rusqlite\",\"sqlite_version\":{},\"journal_mode\":{},\"rows\":{rows},\"blob_bytes\":{blob_bytes},\"txid_mid\":{txid_mid},\"txid\":{txid},\"status\":{}}}",
        json_str(&version),
        json_str(&journal_mode),
        json_str(&status)
    );
    Ok(())
}
