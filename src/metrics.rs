//! Metrics: per-database counters and gauges, rendered in Prometheus text format 0.0.4 for the
//! opt-in listener in `metrics/http.rs` (config key `addr:`, as in Litestream).
//!
//! Owns the process-wide table of `DbMetrics` (one per database path, kept for the life of the
//! process so counters never go backwards when a database is closed and reopened). Every value
//! is an atomic written by that database's shipper thread (`shipper/mod.rs`, and
//! `shipper/cached.rs` for each call that reaches storage) and only read here. Never touched by
//! the app's commit path; never holds a credential (the replica is named by its type only).
//!
//! | walship | Litestream 0.5 |
//! |---|---|
//! | `walship_txid{db}` | `litestream_txid{db}` |
//! | `walship_sync_count{db}` (level-0 files uploaded) | `litestream_sync_count{db}` |
//! | `walship_sync_error_count{db}` | `litestream_sync_error_count{db}` |
//! | `walship_replica_lag_seconds{db}` | — |
//! | `walship_backlog_bytes{db}` | — |
//! | `walship_snapshot_count{db}` | — |
//! | `walship_storage_operations_total{db,replica_type,op}` | `litestream_replica_operation_total{replica_type,operation}` |
//! | `walship_storage_errors_total{db,replica_type,op}` | `litestream_replica_operation_errors_total{replica_type,operation}` |
//! | `walship_storage_bytes_total{db,replica_type,op}` | `litestream_replica_operation_bytes{replica_type,operation}` |

pub mod http;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::clock::now_ms;

/// A kind of storage call, the `op` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    List,
    Get,
    Put,
    Delete,
}

impl Op {
    const ALL: [Op; 4] = [Op::List, Op::Get, Op::Put, Op::Delete];

    fn name(self) -> &'static str {
        match self {
            Op::List => "list",
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
        }
    }
}

#[derive(Default)]
struct OpCounters {
    total: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
}

/// One database's metrics.
pub struct DbMetrics {
    db: String,
    replica_type: String,
    txid: AtomicU64,
    syncs: AtomicU64,
    sync_errors: AtomicU64,
    snapshots: AtomicU64,
    /// Commit time of the oldest transaction not yet in the replica; 0 when caught up.
    oldest_unshipped_ms: AtomicI64,
    /// Commit time of the oldest transaction in the shipper's open batch; 0 when it is empty.
    batch_first_ms: AtomicI64,
    spooled_bytes: AtomicU64,
    /// The running shipper's queue (bytes of events sent and not yet received).
    queued: Mutex<Option<Arc<AtomicUsize>>>,
    ops: [OpCounters; 4],
}

/// The scheme of a `describe()` string (`file://...`, `s3://...`, `gs://...`): the replica
/// type without anything that could be sensitive.
fn replica_type(describe: &str) -> String {
    match describe.split_once("://") {
        Some((scheme, _)) if scheme.chars().all(|c| c.is_ascii_alphanumeric()) => {
            scheme.to_ascii_lowercase()
        }
        _ => "unknown".into(),
    }
}

impl DbMetrics {
    /// Metrics not listed in the process's table (for tests).
    pub fn detached(db: &str, replica_describe: &str) -> Arc<DbMetrics> {
        Arc::new(DbMetrics {
            db: db.to_string(),
            replica_type: replica_type(replica_describe),
            txid: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            sync_errors: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            oldest_unshipped_ms: AtomicI64::new(0),
            batch_first_ms: AtomicI64::new(0),
            spooled_bytes: AtomicU64::new(0),
            queued: Mutex::new(None),
            ops: Default::default(),
        })
    }

    /// A new shipper for this database started with this queue counter.
    pub fn attach_queue(&self, queued: Arc<AtomicUsize>) {
        *self.queued.lock().unwrap_or_else(|p| p.into_inner()) = Some(queued);
    }

    /// One call that reached storage, with its outcome and the bytes it moved.
    pub fn storage_op(&self, op: Op, ok: bool, bytes: u64) {
        let c = &self.ops[op as usize];
        c.total.fetch_add(1, Ordering::Relaxed);
        if !ok {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.storage_bytes(op, bytes);
    }

    /// Bytes moved by a call already counted (a streamed GET body as it is read).
    pub fn storage_bytes(&self, op: Op, bytes: u64) {
        if bytes > 0 {
            self.ops[op as usize]
                .bytes
                .fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// A file was uploaded at `level`: level 0 is a sync, level 9 a snapshot.
    pub fn uploaded(&self, level: u8) {
        if level == 0 {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        } else if level == crate::storage::SNAPSHOT_LEVEL {
            self.snapshots.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The shipper received a committed transaction.
    pub fn commit_seen(&self, committed_at_ms: i64) {
        let t = committed_at_ms.max(1);
        let _ =
            self.oldest_unshipped_ms
                .compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed);
        let _ = self
            .batch_first_ms
            .compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// After each shipping step (snapshot, spool drain, level-0 upload): whether it worked, the
    /// replica's TXID, whether the open batch is empty, and whether anything older than the
    /// batch is still missing from the replica (spooled files, a snapshot due).
    pub fn step(&self, ok: bool, txid: u64, batch_empty: bool, behind: bool) {
        if ok {
            self.txid.store(txid, Ordering::Relaxed);
        } else {
            self.sync_errors.fetch_add(1, Ordering::Relaxed);
        }
        if batch_empty {
            self.batch_first_ms.store(0, Ordering::Relaxed);
        }
        if !behind {
            let first = self.batch_first_ms.load(Ordering::Relaxed);
            self.oldest_unshipped_ms.store(first, Ordering::Relaxed);
        }
    }

    pub fn set_spooled_bytes(&self, bytes: u64) {
        self.spooled_bytes.store(bytes, Ordering::Relaxed);
    }

    fn lag_seconds(&self, now_ms: i64) -> f64 {
        match self.oldest_unshipped_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            t => (now_ms - t).max(0) as f64 / 1000.0,
        }
    }

    fn backlog_bytes(&self) -> u64 {
        let queued = self
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |q| q.load(Ordering::Relaxed) as u64);
        queued + self.spooled_bytes.load(Ordering::Relaxed)
    }
}

static TABLE: Mutex<Vec<Arc<DbMetrics>>> = Mutex::new(Vec::new());

/// The metrics of database `db` (created on first use, then the same for the process's life).
pub fn for_db(db: &str, replica_describe: &str) -> Arc<DbMetrics> {
    let mut t = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = t.iter().find(|m| m.db == db) {
        return m.clone();
    }
    let m = DbMetrics::detached(db, replica_describe);
    t.push(m.clone());
    m
}

/// A Prometheus label value: backslash, double quote and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Every database's metrics in Prometheus text format 0.0.4.
pub fn render_all() -> String {
    let dbs: Vec<Arc<DbMetrics>> = TABLE.lock().unwrap_or_else(|p| p.into_inner()).clone();
    render(&dbs, now_ms())
}

/// `dbs`' metrics in Prometheus text format 0.0.4, lag measured at `now_ms`.
pub fn render(dbs: &[Arc<DbMetrics>], now_ms: i64) -> String {
    type Get = fn(&DbMetrics, i64) -> String;
    let per_db: [(&str, &str, &str, Get); 6] = [
        ("walship_txid", "gauge", "The newest TXID in the replica.",
         |m, _| m.txid.load(Ordering::Relaxed).to_string()),
        ("walship_sync_count", "counter", "Level-0 files uploaded (one per sync interval with changes).",
         |m, _| m.syncs.load(Ordering::Relaxed).to_string()),
        ("walship_sync_error_count", "counter", "Failed shipping attempts (uploads, snapshots, spool drains), each retried with backoff.",
         |m, _| m.sync_errors.load(Ordering::Relaxed).to_string()),
        ("walship_replica_lag_seconds", "gauge", "Seconds since the oldest commit not yet in the replica; 0 when caught up.",
         |m, now| format!("{:.3}", m.lag_seconds(now))),
        ("walship_backlog_bytes", "gauge", "Bytes committed and not yet uploaded: queued for the shipper plus spooled on local disk.",
         |m, _| m.backlog_bytes().to_string()),
        ("walship_snapshot_count", "counter", "Snapshots (level 9) uploaded.",
         |m, _| m.snapshots.load(Ordering::Relaxed).to_string()),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in per_db {
        family(&mut out, name, kind, help);
        for m in dbs {
            let _ = writeln!(
                out,
                "{name}{{db=\"{}\"}} {}",
                escape_label(&m.db),
                get(m, now_ms)
            );
        }
    }
    type OpGet = fn(&OpCounters) -> &AtomicU64;
    let per_op: [(&str, &str, OpGet, &[Op]); 3] = [
        (
            "walship_storage_operations_total",
            "Calls that reached the replica's storage.",
            |c| &c.total,
            &Op::ALL,
        ),
        (
            "walship_storage_errors_total",
            "Storage calls that failed (after the backend's own retries).",
            |c| &c.errors,
            &Op::ALL,
        ),
        (
            "walship_storage_bytes_total",
            "Bytes uploaded (put) and downloaded (get).",
            |c| &c.bytes,
            &[Op::Get, Op::Put],
        ),
    ];
    for (name, help, get, ops) in per_op {
        family(&mut out, name, "counter", help);
        for m in dbs {
            for op in ops {
                let _ = writeln!(
                    out,
                    "{name}{{db=\"{}\",replica_type=\"{}\",op=\"{}\"}} {}",
                    escape_label(&m.db),
                    escape_label(&m.replica_type),
                    op.name(),
                    get(&m.ops[*op as usize]).load(Ordering::Relaxed)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let m = DbMetrics::detached("/srv/we\"ird\\na\nme.db", "s3://bucket/path");
        let text = render(&[m], 0);
        assert!(
            text.contains("walship_txid{db=\"/srv/we\\\"ird\\\\na\\nme.db\"} 0\n"),
            "{text}"
        );
        assert!(text.contains(
            "walship_storage_operations_total{db=\"/srv/we\\\"ird\\\\na\\nme.db\",replica_type=\"s3\",op=\"put\"} 0\n"
        ));
        // Every sample line is one line: no raw newline inside a label.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.starts_with("walship_") && line.contains("} "),
                "{line}"
            );
        }
    }

    #[test]
    fn renders_families_values_and_lag() {
        let m = DbMetrics::detached("/d/a.db", "file:///backups/a");
        m.commit_seen(10_000);
        m.commit_seen(11_000);
        m.storage_op(Op::Put, true, 4096);
        m.storage_op(Op::Put, false, 0);
        m.storage_op(Op::List, true, 0);
        m.uploaded(0);
        m.uploaded(crate::storage::SNAPSHOT_LEVEL);
        m.step(false, 0, true, true);
        m.set_spooled_bytes(300);
        let text = render(std::slice::from_ref(&m), 12_500);
        for want in [
            "# TYPE walship_txid gauge\n",
            "# TYPE walship_sync_count counter\n",
            "walship_sync_count{db=\"/d/a.db\"} 1\n",
            "walship_sync_error_count{db=\"/d/a.db\"} 1\n",
            "walship_snapshot_count{db=\"/d/a.db\"} 1\n",
            "walship_replica_lag_seconds{db=\"/d/a.db\"} 2.500\n",
            "walship_backlog_bytes{db=\"/d/a.db\"} 300\n",
            "walship_storage_operations_total{db=\"/d/a.db\",replica_type=\"file\",op=\"put\"} 2\n",
            "walship_storage_errors_total{db=\"/d/a.db\",replica_type=\"file\",op=\"put\"} 1\n",
            "walship_storage_operations_total{db=\"/d/a.db\",replica_type=\"file\",op=\"list\"} 1\n",
            "walship_storage_bytes_total{db=\"/d/a.db\",replica_type=\"file\",op=\"put\"} 4096\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains(
            "walship_storage_bytes_total{db=\"/d/a.db\",replica_type=\"file\",op=\"list\"}"
        ));
        // Caught up: the spool drained, nothing batched.
        m.set_spooled_bytes(0);
        m.step(true, 7, true, false);
        let text = render(std::slice::from_ref(&m), 13_000);
        assert!(
            text.contains("walship_replica_lag_seconds{db=\"/d/a.db\"} 0.000\n"),
            "{text}"
        );
        assert!(text.contains("walship_txid{db=\"/d/a.db\"} 7\n"));
        // A batch open behind a drained spool: lag counts from the batch's first commit.
        m.commit_seen(20_000);
        m.step(true, 7, false, false);
        assert_eq!(m.lag_seconds(21_000), 1.0);
    }

    #[test]
    fn replica_type_is_the_scheme_only() {
        assert_eq!(replica_type("s3://b/p (endpoint http://x)"), "s3");
        assert_eq!(replica_type("file:///x"), "file");
        assert_eq!(replica_type("a path"), "unknown");
    }
}
