"""The process the crash-torture harness kills: a randomized write workload through walship.

usage: torture_driver.py EXT DB LOG SEED [finish]

Runs until killed (or, with `finish`, for a few dozen commits, then flushes and exits cleanly).
Appends to LOG, one line each, written before the event it names so a SIGKILL can't hide one:
  START <hash>      the state this run found at open (after SQLite's own recovery)
  INTENT <hash>     the state about to be committed (the line is written inside the transaction,
                    before COMMIT; a kill in between leaves an intent that never committed)
  ACK <txid> <hash> walship_flush returned: this state, and all before it, is in the replica
  DONE <hash>       (finish mode) the last commit, flushed; the process exits 0
The hash is an order-independent digest of the rows (`torture_hash.digest`), kept incrementally
here and recomputed from the database by the harness.
"""
import os
import random
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torture_hash import row_hash, digest_of, table_digest  # noqa: E402

ext, db, log_path, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
finish = len(sys.argv) > 5 and sys.argv[5] == "finish"
rng = random.Random(seed)

loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)
con = sqlite3.connect(f"file:{db}?vfs=walship", uri=True, isolation_level=None, timeout=30)
con.execute("PRAGMA journal_mode=WAL")
# A small page cache makes large transactions spill (frames rewritten before their commit).
con.execute("PRAGMA cache_size=64")
con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")

rows = table_digest(con)  # id -> row hash
log = open(log_path, "a", buffering=1)
log.write(f"START {digest_of(rows)}\n")


def blob():
    r = rng.random()
    n = rng.randint(1, 200) if r < 0.6 else rng.randint(200, 5000) if r < 0.95 else rng.randint(5000, 60000)
    return rng.randbytes(n)


def one_transaction():
    big = rng.random() < 0.03
    ops = rng.randint(200, 800) if big else rng.randint(1, 12)
    staged = dict(rows)
    con.execute("BEGIN IMMEDIATE")
    for _ in range(ops):
        r = rng.random()
        if r < 0.55 or not staged:
            v = blob()
            cur = con.execute("INSERT INTO t(v) VALUES (?)", (v,))
            staged[cur.lastrowid] = row_hash(cur.lastrowid, v)
        elif r < 0.85:
            i = rng.choice(list(staged))
            v = blob()
            con.execute("UPDATE t SET v = ? WHERE id = ?", (v, i))
            staged[i] = row_hash(i, v)
        else:
            i = rng.choice(list(staged))
            con.execute("DELETE FROM t WHERE id = ?", (i,))
            del staged[i]
    if rng.random() < 0.05:
        con.execute("ROLLBACK")
        return
    log.write(f"INTENT {digest_of(staged)}\n")
    con.execute("COMMIT")
    rows.clear()
    rows.update(staged)


commits = 0
while True:
    one_transaction()
    commits += 1
    r = rng.random()
    if r < 0.02:
        con.execute(f"PRAGMA wal_checkpoint({rng.choice(['PASSIVE', 'FULL', 'RESTART', 'TRUNCATE'])})")
    elif r < 0.12 or commits == 3:
        txid = con.execute("SELECT walship_flush(20000)").fetchone()[0]
        log.write(f"ACK {txid} {digest_of(rows)}\n")
    if finish and commits >= 40:
        txid = con.execute("SELECT walship_flush(20000)").fetchone()[0]
        log.write(f"ACK {txid} {digest_of(rows)}\n")
        log.write(f"DONE {digest_of(rows)}\n")
        con.close()
        sys.exit(0)
