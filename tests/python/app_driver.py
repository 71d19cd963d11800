"""A tiny app for lifecycle tests, run by Debian's /usr/bin/python3.

usage: app_driver.py EXT DB ACTION [ARG]
  write N        commit N one-row transactions, close normally
  write-flush N  commit N transactions, walship_flush, close
  crash N        commit N transactions, flush, commit N more, then SIGKILL itself (no close)
  threads N      4 threads, each its own connection, N transactions each, a plain-VFS writer
                 interleaved (forces snapshots while the others write), flush, close
  open           open and flush only (no writes)
Prints one JSON line: {"flush": txid or null, "elapsed_ms": ..., "rows": ...}
"""
import json
import os
import signal
import sqlite3
import sys
import threading
import time

ext, db, action = sys.argv[1], sys.argv[2], sys.argv[3]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 0
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)


def connect():
    c = sqlite3.connect(f"file:{db}?vfs=walship", uri=True, isolation_level=None, timeout=30)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, who TEXT, v BLOB)")
    return c


def commit_rows(c, count, who):
    for i in range(count):
        c.execute("INSERT INTO t(who, v) VALUES (?, ?)", (who, os.urandom(64 + i % 300)))


start = time.time()
con = connect()
flush = None
if action == "write":
    commit_rows(con, n, "write")
elif action == "write-flush":
    commit_rows(con, n, "write-flush")
    flush = con.execute("SELECT walship_flush(30000)").fetchone()[0]
elif action == "crash":
    commit_rows(con, n, "before-flush")
    flush = con.execute("SELECT walship_flush(30000)").fetchone()[0]
    commit_rows(con, n, "after-flush")
    sys.stdout.write(json.dumps({"flush": flush, "rows": con.execute("SELECT count(*) FROM t").fetchone()[0]}) + "\n")
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
elif action == "threads":
    errors = []

    def worker(k):
        try:
            c = connect()
            for i in range(n):
                c.execute("INSERT INTO t(who, v) VALUES (?, ?)", (f"thread{k}", os.urandom(100 + i % 900)))
                if i % 50 == 0:
                    c.execute("SELECT walship_flush(30000)").fetchone()
            c.close()
        except Exception as e:  # noqa: BLE001 — reported to the test
            errors.append(repr(e))

    def foreign():
        try:
            for i in range(5):
                time.sleep(0.05)
                p = sqlite3.connect(db, timeout=30, isolation_level=None)
                p.execute("INSERT INTO t(who) VALUES ('foreign')")
                p.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)] + [threading.Thread(target=foreign)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    flush = con.execute("SELECT walship_flush(30000)").fetchone()[0]
elif action == "open":
    flush = con.execute("SELECT walship_flush(30000)").fetchone()[0]
rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
con.close()
print(json.dumps({"flush": flush, "rows": rows, "elapsed_ms": int((time.time() - start) * 1000)}))
