//! A rusqlite program writing through walship; ./litestream.yml names the database and replica.
//!
//! Usage: walship-example-rusqlite [ROWS]   (default 1000). Loads the extension from
//! $WALSHIP_EXTENSION, else ../../target/release/libwalvfs.so, writes ROWS rows in transactions of
//! 100, waits for the replica with walship_flush and prints the replica's TXID.

use rusqlite::{params, Connection, OpenFlags};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows: i64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let ext = std::env::var("WALSHIP_EXTENSION").unwrap_or_else(|_| "../../target/release/libwalvfs.so".into());

    // Loading once registers the `walship` VFS and the walship_* functions for the whole process.
    let loader = Connection::open_in_memory()?;
    // SAFETY: loading the walship extension, a trusted library.
    unsafe {
        loader.load_extension_enable()?;
        loader.load_extension(&ext, None::<&str>)?;
        loader.load_extension_disable()?;
    }

    std::fs::create_dir_all("data")?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
    let mut conn = Connection::open_with_flags_and_vfs("data/app.db", flags, "walship")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "cache_size", -8000)?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS readings(id INTEGER PRIMARY KEY, sensor TEXT NOT NULL, value REAL NOT NULL)")?;
    let mut written = 0;
    while written < rows {
        let tx = conn.transaction()?;
        {
            let mut ins = tx.prepare_cached("INSERT INTO readings(sensor, value) VALUES (?1, ?2)")?;
            for _ in 0..(rows - written).min(100) {
                ins.execute(params![format!("sensor-{}", written % 7), written as f64 * 0.5])?;
                written += 1;
            }
        }
        tx.commit()?;
    }
    let txid: i64 = conn.query_row("SELECT walship_flush(10000)", [], |r| r.get(0))?;
    conn.close().map_err(|(_, e)| e)?;
    println!("wrote {written} rows; replica at TXID {txid}");
    Ok(())
}
