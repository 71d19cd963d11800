"""Randomized write workload through the walship VFS, run by Debian's /usr/bin/python3.

Records, at random points, the replica TXID returned by walship_flush() and the content hash
of the database at that moment, so a test can restore any of those TXIDs and compare.

usage: workload.py EXT DB OUT_JSON --seed N --txns N --page-size N [--exclusive]
                   [--foreign-at I] [--journal-size-limit BYTES] [--psow0]
"""
import argparse
import json
import os
import random
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dbhash import hash_connection  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("ext")
ap.add_argument("db")
ap.add_argument("out")
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--txns", type=int, default=1000)
ap.add_argument("--page-size", type=int, default=4096)
ap.add_argument("--exclusive", action="store_true")
ap.add_argument("--foreign-at", type=int, default=-1)
ap.add_argument("--journal-size-limit", type=int, default=-1)
ap.add_argument("--psow0", action="store_true", help="no powersafe overwrite: FULL commits pad the WAL")
a = ap.parse_args()

rng = random.Random(a.seed)
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(a.ext)

con = sqlite3.connect(f"file:{a.db}?vfs=walship" + ("&psow=0" if a.psow0 else ""), uri=True, isolation_level=None)
con.execute(f"PRAGMA page_size={a.page_size}")
if a.exclusive:
    con.execute("PRAGMA locking_mode=EXCLUSIVE")
assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
if a.journal_size_limit >= 0:
    con.execute(f"PRAGMA journal_size_limit={a.journal_size_limit}")
con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT, b BLOB)")
con.execute("CREATE INDEX IF NOT EXISTS t_k ON t(k)")
con.execute("CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, val) WITHOUT ROWID")

records = []
counts = {}


def count(op):
    counts[op] = counts.get(op, 0) + 1


def flush():
    txid = con.execute("SELECT walship_flush(60000)").fetchone()[0]
    records.append({"txid": txid, "hash": hash_connection(con)})


def rand_text():
    return "".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 200)))


def max_id():
    return con.execute("SELECT coalesce(max(id), 0) FROM t").fetchone()[0]


for i in range(a.txns):
    r = rng.random()
    if i == a.foreign_at and not a.exclusive:
        # A writer that bypasses walship: a plain connection on the OS VFS.
        other = sqlite3.connect(a.db, isolation_level=None)
        other.execute("INSERT INTO t(k, v) VALUES (-1, 'foreign write')")
        other.execute("UPDATE t SET v = 'touched by foreign' WHERE id % 97 = 0")
        other.close()
        count("foreign")
    elif r < 0.40:
        con.execute("BEGIN")
        for _ in range(rng.randint(1, 5)):
            con.execute("INSERT INTO t(k, v) VALUES (?, ?)", (rng.randint(0, 1000), rand_text()))
        con.execute("COMMIT")
        count("insert")
    elif r < 0.55:
        con.execute("UPDATE t SET v = ?, k = k + 1 WHERE id = ?", (rand_text(), rng.randint(1, max_id() + 1)))
        count("update")
    elif r < 0.65:
        lo = rng.randint(1, max_id() + 1)
        con.execute("DELETE FROM t WHERE id BETWEEN ? AND ?", (lo, lo + rng.randint(0, 3)))
        count("delete")
    elif r < 0.70:
        con.execute("INSERT INTO t(k, b) VALUES (?, ?)", (rng.randint(0, 9), os.urandom(rng.randint(1000, 60000))))
        count("blob")
    elif r < 0.75:
        con.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"key{rng.randint(0, 300)}", rand_text()))
        count("kv")
    elif r < 0.78:
        con.execute("BEGIN")
        con.execute("INSERT INTO t(k, v) VALUES (1, 'kept')")
        con.execute("SAVEPOINT sp")
        for _ in range(rng.randint(1, 50)):
            con.execute("INSERT INTO t(k, v) VALUES (2, ?)", (rand_text(),))
        con.execute("ROLLBACK TO sp")
        con.execute("RELEASE sp")
        con.execute("COMMIT")
        count("savepoint-rollback")
    elif r < 0.80:
        # Spill the page cache inside a transaction, then roll it all back.
        con.execute("PRAGMA cache_size=5")
        con.execute("BEGIN")
        for _ in range(300):
            con.execute("INSERT INTO t(k, v, b) VALUES (3, ?, ?)", (rand_text(), os.urandom(300)))
        con.execute("UPDATE t SET k = k + 1000 WHERE id % 7 = 0")
        con.execute("ROLLBACK")
        con.execute("PRAGMA cache_size=-2000")
        count("spill-rollback")
    elif r < 0.82:
        # Spill the page cache inside a transaction that commits (pages rewritten in place).
        con.execute("PRAGMA cache_size=5")
        con.execute("BEGIN")
        for _ in range(200):
            con.execute("INSERT INTO t(k, v, b) VALUES (4, ?, ?)", (rand_text(), os.urandom(200)))
        con.execute("UPDATE t SET k = k + 1 WHERE id % 5 = 0")
        con.execute("UPDATE t SET v = 'again' WHERE id % 5 = 0")
        con.execute("COMMIT")
        con.execute("PRAGMA cache_size=-2000")
        count("spill-commit")
    elif r < 0.84:
        mode = rng.choice(["PASSIVE", "FULL", "RESTART", "TRUNCATE"])
        con.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        count("checkpoint-" + mode)
    elif r < 0.845:
        con.execute("VACUUM")
        count("vacuum")
    elif r < 0.86:
        con.execute("PRAGMA synchronous=" + rng.choice(["OFF", "NORMAL", "FULL"]))
        count("synchronous")
    else:
        con.execute("INSERT INTO t(k, v) VALUES (?, ?)", (rng.randint(0, 1000), rand_text()))
        count("insert-autocommit")
    if rng.random() < 0.03 or i == a.foreign_at:
        flush()

flush()
con.close()
loader.close()
json.dump({"records": records, "counts": counts}, open(a.out, "w"))
print(json.dumps(counts, sort_keys=True))
