"""Scenario driver for tests/python/test_wal_sequences.py: one WAL scenario per run, through walship.

Usage: PYTHON wal_scenarios.py SCENARIO DB EXT {sqlite3|apsw}
  SCENARIO   one of SCENARIOS below
  DB         path of a database that does not exist yet (its directory does)
  EXT        path of libwalvfs.so, with or without the .so suffix
  sqlite3    the standard library module (Debian's /usr/bin/python3: SQLite 3.40, can load
             extensions); databases are opened by URI, `file:DB?vfs=walship`
  apsw       apsw from PyPI with its bundled, newer SQLite; opened with vfs="walship"

The test runs this with WALSHIP_TRACE=FILE, so the extension appends one line per call the shim
observes. Between steps this driver appends its own lines `MARK <name>` to the same file (both
append with O_APPEND from one thread, so the order is the order of the calls), which lets the
test cut the trace into the steps of the scenario. No walship configuration is needed: the trace
covers unreplicated databases too.

Prints one JSON line: the binding, SQLite's version, the page size, and what the scenario read
back (checkpoint results, row counts) for the test to check.
"""
import json
import os
import subprocess
import sys

TRACE = os.environ.get("WALSHIP_TRACE")


def mark(name):
    with open(TRACE, "a") as f:
        f.write(f"MARK {name}\n")


# ---------------------------------------------------------------------------------------------
# Bindings: a connection is wrapped so that every statement runs to completion (no statement
# left half-stepped, which would keep a read transaction open).

class Conn:
    def __init__(self, binding, db):
        self.binding = binding
        if binding == "sqlite3":
            import sqlite3

            self.con = sqlite3.connect(f"file:{db}?vfs=walship", uri=True, isolation_level=None)
        else:
            import apsw

            self.con = apsw.Connection(str(db), vfs="walship")

    def all(self, sql, params=()):
        if self.binding == "sqlite3":
            return [tuple(r) for r in self.con.execute(sql, params).fetchall()]
        return [tuple(r) for r in self.con.execute(sql, params)]

    def one(self, sql, params=()):
        rows = self.all(sql, params)
        return rows[0][0] if rows else None

    def many(self, sql, seq):
        self.con.executemany(sql, seq)

    def close(self):
        self.con.close()


def load(binding, ext):
    if binding == "sqlite3":
        import sqlite3

        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(ext[: -len(".so")] if ext.endswith(".so") else ext)
        loader.enable_load_extension(False)
        return loader, sqlite3.sqlite_version
    import apsw

    loader = apsw.Connection(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)
    loader.enable_load_extension(False)
    return loader, apsw.sqlite_lib_version()


# ---------------------------------------------------------------------------------------------
# Scenarios. Each gets (binding, db, out) and fills `out` with what the test should know.

def setup(c, page_size=4096, synchronous="NORMAL", autocheckpoint=0, rows=3, extra=()):
    """A fresh WAL database with one small table. Auto-checkpoints are off unless asked, so
    that no scenario restarts the WAL behind the test's back."""
    c.all(f"PRAGMA page_size={page_size}")
    for sql in extra:
        c.all(sql)
    mode = c.one("PRAGMA journal_mode=WAL")
    c.all(f"PRAGMA synchronous={synchronous}")
    c.all(f"PRAGMA wal_autocheckpoint={autocheckpoint}")
    c.all("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    c.many("INSERT INTO t(v) VALUES (?)", [(bytes([i]) * 100,) for i in range(rows)])
    return mode


def sc_commit(binding, db, out, synchronous):
    c = Conn(binding, db)
    out["journal_mode"] = setup(c, synchronous=synchronous)
    for i in range(3):
        mark(f"commit{i}")
        c.all("INSERT INTO t(v) VALUES (?)", (b"one row %d" % i,))
    mark("end")
    out["rows"] = c.one("SELECT count(*) FROM t")
    c.close()


def sc_commit_normal(binding, db, out):
    sc_commit(binding, db, out, "NORMAL")


def sc_commit_full(binding, db, out):
    sc_commit(binding, db, out, "FULL")


def sc_empty(binding, db, out):
    """Empty commit, ROLLBACK of an unspilled change, and wal-index recovery on first open."""
    c = Conn(binding, db)
    out["journal_mode"] = setup(c)
    mark("empty-commit")
    c.all("BEGIN IMMEDIATE")
    c.all("COMMIT")
    mark("rollback")
    c.all("BEGIN")
    c.all("INSERT INTO t(v) VALUES (x'00')")
    c.all("ROLLBACK")
    mark("end")
    c.close()
    # The WAL is gone (last close); a new connection rebuilds the wal-index from nothing.
    mark("recovery")
    c = Conn(binding, db)
    out["rows"] = c.one("SELECT count(*) FROM t")
    mark("recovery-end")
    c.close()


def sc_crash_child(binding, db, out):
    """Commits, then exits without closing: the WAL (with frames) and -shm stay behind."""
    c = Conn(binding, db)
    setup(c)
    c.all("INSERT INTO t(v) VALUES (x'01')")
    sys.stdout.flush()
    os._exit(0)


def sc_crash_recovery(binding, db, out):
    """Recovery of a WAL left with frames by a process that died."""
    mark("child")
    subprocess.run([sys.executable, __file__, "crash_child", str(db), sys.argv[3], binding], check=True)
    out["wal_size_after_crash"] = os.path.getsize(f"{db}-wal")
    mark("recovery")
    c = Conn(binding, db)
    out["rows"] = c.one("SELECT count(*) FROM t")
    mark("recovery-end")
    c.close()


def spill_txn(c):
    """A transaction larger than the page cache that touches its first pages again after they
    were spilled to the WAL."""
    c.all("PRAGMA cache_size=10")
    c.all("BEGIN")
    c.many("INSERT INTO t(v) VALUES (?)", [(bytes([i % 251]) * 900,) for i in range(300)])
    c.all("UPDATE t SET v = zeroblob(880) WHERE id <= 60")
    c.many("INSERT INTO t(v) VALUES (?)", [(bytes([i % 241]) * 900,) for i in range(40)])
    c.all("UPDATE t SET v = zeroblob(870) WHERE id <= 30")


def sc_spill(binding, db, out):
    c = Conn(binding, db)
    out["journal_mode"] = setup(c)
    mark("spill")
    spill_txn(c)
    c.all("COMMIT")
    mark("end")
    out["rows"] = c.one("SELECT count(*) FROM t")
    out["integrity"] = c.one("PRAGMA integrity_check")
    c.close()


def sc_spill_rollback(binding, db, out):
    c = Conn(binding, db)
    out["journal_mode"] = setup(c)
    mark("spill")
    spill_txn(c)
    c.all("ROLLBACK")
    mark("next")
    c.all("INSERT INTO t(v) VALUES (x'02')")
    mark("end")
    out["rows"] = c.one("SELECT count(*) FROM t")
    out["integrity"] = c.one("PRAGMA integrity_check")
    c.close()


def sc_restart(binding, db, out):
    c = Conn(binding, db)
    out["journal_mode"] = setup(c)
    for i in range(3):
        c.all("INSERT INTO t(v) VALUES (?)", (b"before restart %d" % i,))
    mark("ckpt-restart")
    out["ckpt_restart"] = list(c.all("PRAGMA wal_checkpoint(RESTART)")[0])
    mark("after-restart")
    c.all("INSERT INTO t(v) VALUES (x'03')")
    mark("second")
    c.all("INSERT INTO t(v) VALUES (x'04')")
    mark("ckpt-truncate")
    out["ckpt_truncate"] = list(c.all("PRAGMA wal_checkpoint(TRUNCATE)")[0])
    out["wal_size_after_truncate"] = os.path.getsize(f"{db}-wal")
    mark("after-truncate")
    c.all("INSERT INTO t(v) VALUES (x'05')")
    mark("end")
    out["rows"] = c.one("SELECT count(*) FROM t")
    c.close()


def sc_exclusive(binding, db, out):
    c = Conn(binding, db)
    out["locking_mode"] = c.one("PRAGMA locking_mode=EXCLUSIVE")
    out["journal_mode"] = setup(c)
    for i in range(3):
        mark(f"commit{i}")
        c.all("INSERT INTO t(v) VALUES (?)", (b"exclusive %d" % i,))
    mark("multi")
    c.all("BEGIN")
    c.many("INSERT INTO t(v) VALUES (?)", [(bytes([i]) * 2000,) for i in range(10)])
    c.all("COMMIT")
    mark("rollback")
    c.all("BEGIN")
    c.all("INSERT INTO t(v) VALUES (x'06')")
    c.all("ROLLBACK")
    mark("spill-rollback")
    spill_txn(c)
    c.all("ROLLBACK")
    mark("after-spill-rollback")
    c.all("INSERT INTO t(v) VALUES (x'0b')")
    mark("end")
    out["rows"] = c.one("SELECT count(*) FROM t")
    mark("close")
    c.close()
    mark("closed")


def sc_close(binding, db, out):
    a = Conn(binding, db)
    out["journal_mode"] = setup(a)
    a.all("INSERT INTO t(v) VALUES (x'07')")
    b = Conn(binding, db)
    out["rows_b"] = b.one("SELECT count(*) FROM t")
    mark("close-first")
    b.close()
    out["wal_after_first_close"] = os.path.exists(f"{db}-wal")
    mark("close-last")
    a.close()
    mark("closed")
    out["wal_after_last_close"] = os.path.exists(f"{db}-wal")


def sc_size_limit(binding, db, out):
    c = Conn(binding, db)
    out["journal_mode"] = setup(c)
    out["journal_size_limit"] = c.one("PRAGMA journal_size_limit=16384")
    for i in range(20):
        c.all("INSERT INTO t(v) VALUES (?)", (bytes([i]) * 3000,))
    out["wal_size_before"] = os.path.getsize(f"{db}-wal")
    mark("ckpt")
    out["ckpt"] = list(c.all("PRAGMA wal_checkpoint(RESTART)")[0])
    out["wal_size_after_ckpt"] = os.path.getsize(f"{db}-wal")
    mark("restarting-commit")
    c.all("INSERT INTO t(v) VALUES (x'08')")
    mark("next")
    out["wal_size_after_commit"] = os.path.getsize(f"{db}-wal")
    c.all("INSERT INTO t(v) VALUES (x'09')")
    mark("end")
    c.close()


def sc_pagesize(binding, db, out, page_size):
    c = Conn(binding, db)
    out["journal_mode"] = setup(c, page_size=page_size)
    out["page_size_read"] = c.one("PRAGMA page_size")
    mark("commit")
    c.all("INSERT INTO t(v) VALUES (x'0a')")
    mark("multi")
    c.all("BEGIN")
    # Enough rows for several pages at any page size (three 64 KiB pages and more).
    n = 3 * page_size // 1500 + 30
    c.many("INSERT INTO t(v) VALUES (?)", [(bytes([i % 256]) * 1500,) for i in range(n)])
    c.all("COMMIT")
    mark("end")
    out["rows"] = c.one("SELECT count(*) FROM t")
    c.close()


def sc_page512(binding, db, out):
    sc_pagesize(binding, db, out, 512)


def sc_page65536(binding, db, out):
    sc_pagesize(binding, db, out, 65536)


SCENARIOS = {
    "commit_normal": sc_commit_normal,
    "commit_full": sc_commit_full,
    "empty": sc_empty,
    "crash_child": sc_crash_child,
    "crash_recovery": sc_crash_recovery,
    "spill": sc_spill,
    "spill_rollback": sc_spill_rollback,
    "restart": sc_restart,
    "exclusive": sc_exclusive,
    "close": sc_close,
    "size_limit": sc_size_limit,
    "page512": sc_page512,
    "page65536": sc_page65536,
}


def main():
    scenario, db, ext, binding = sys.argv[1:]
    assert TRACE, "set WALSHIP_TRACE"
    loader, version = load(binding, ext)
    out = {"binding": binding, "sqlite_version": version, "scenario": scenario}
    SCENARIOS[scenario](binding, db, out)
    loader.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
