"""Randomized write workload through the walship VFS, run by Debian's /usr/bin/python3.

Records, at random points, the replica TXID returned by walship_flush() and the content hash
of the database at that moment, so a test can restore any of those TXIDs and compare.

With --foreign-proc, another process (foreign_writer.py: plain SQLite, no walship) commits and
checkpoints at random points, one step at a time while the app waits, so every record is still
the database's state at the TXID its flush returned. With --journal-switch, the app leaves WAL
mode for DELETE or TRUNCATE for a few transactions (sometimes a VACUUM) and comes back.

usage: workload.py EXT DB OUT_JSON --seed N --txns N --page-size N [--exclusive]
                   [--foreign-at I] [--journal-size-limit BYTES] [--psow0]
                   [--foreign-proc] [--foreign-rate P] [--journal-switch] [--journal-modes M,...]
"""
import argparse
import json
import os
import random
import sqlite3
import subprocess
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
ap.add_argument("--foreign-proc", action="store_true",
                help="another process (plain SQLite) commits and checkpoints in every mode at random points")
ap.add_argument("--journal-switch", action="store_true",
                help="switch WAL -> DELETE/TRUNCATE -> a few transactions -> WAL at random points")
ap.add_argument("--journal-modes", default="DELETE,TRUNCATE", help="the rollback-journal modes to switch to")
ap.add_argument("--foreign-rate", type=float, default=0.04, help="chance of a foreign step before each transaction")
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
since = set()  # what walship could not follow since the last flush (foreign steps, journal modes)


def count(op):
    counts[op] = counts.get(op, 0) + 1
    if op.startswith(("foreign", "journal", "vacuum-rollback")):
        since.add(op)


def flush():
    txid = con.execute("SELECT walship_flush(60000)").fetchone()[0]
    records.append({"txid": txid, "hash": hash_connection(con), "after": sorted(since)})
    since.clear()


def rand_text():
    return "".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 200)))


def max_id():
    return con.execute("SELECT coalesce(max(id), 0) FROM t").fetchone()[0]


def app_step(i):
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


# The foreign writer: another process, plain SQLite (no walship), steered one step at a time.
# Its choices come from their own generator, so the app's sequence is the same without it.
xr = random.Random(a.seed * 7919 + 1)
foreign = None
if a.foreign_proc:
    assert not a.exclusive, "no other process can open a database held in EXCLUSIVE locking mode"
    foreign = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "foreign_writer.py"), a.db],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


def foreign_do(cmd):
    """One step of the foreign process; returns once it has committed and closed its connection."""
    foreign.stdin.write(json.dumps(cmd) + "\n")
    foreign.stdin.flush()
    line = foreign.stdout.readline()
    if not line:
        raise SystemExit(f"the foreign writer died (exit {foreign.wait()})")
    out = json.loads(line)
    if "error" in out:
        raise SystemExit(f"the foreign writer failed on {cmd}: {out['error']}")
    return out


def foreign_step():
    kind = xr.choices(["write", "checkpoint", "write-checkpoint"], [5, 2, 3])[0]
    if kind.startswith("write"):
        out = foreign_do({"op": "write", "seed": xr.getrandbits(32)})
        count(f"foreign-write-{out['journal_mode']}")
    if kind.endswith("checkpoint"):
        mode = xr.choice(["PASSIVE", "FULL", "RESTART", "TRUNCATE"])
        out = foreign_do({"op": "checkpoint", "mode": mode})
        busy = "-busy" if out["checkpoint"][0] else ""
        outside = "" if out["journal_mode"] == "wal" else "-" + out["journal_mode"]
        count(f"foreign-checkpoint-{mode}{busy}{outside}")


# Journal-mode switches: WAL -> DELETE/TRUNCATE -> a few transactions -> WAL.
journal_left = 0  # iterations left outside WAL mode


def journal_mode(mode):
    got = con.execute(f"PRAGMA journal_mode={mode}").fetchone()[0]
    assert got == mode.lower(), f"journal_mode={mode} answered {got}"
    count(f"journal-{mode}")


for i in range(a.txns):
    if a.journal_switch and journal_left == 0 and xr.random() < 0.004:
        journal_mode(xr.choice(a.journal_modes.split(",")))
        journal_left = xr.randint(1, 8)
        if xr.random() < 0.3:
            con.execute("VACUUM")  # rewrites the whole file through the rollback journal
            count("vacuum-rollback-journal")
    if foreign is not None and xr.random() < a.foreign_rate:
        foreign_step()
        if xr.random() < 0.3:
            flush()
    app_step(i)
    if journal_left:
        since.add("rollback-journal-transaction")
    if rng.random() < 0.03 or i == a.foreign_at:
        flush()
    if journal_left:
        journal_left -= 1
        if journal_left == 0:
            if xr.random() < 0.5:
                flush()  # the replica from inside rollback-journal mode, recorded too
            journal_mode("WAL")

if journal_left:
    journal_mode("WAL")
if foreign is not None:
    foreign.stdin.write(json.dumps({"op": "exit"}) + "\n")
    foreign.stdin.close()
    assert foreign.wait(timeout=60) == 0
flush()
con.close()
loader.close()
json.dump({"records": records, "counts": counts}, open(a.out, "w"))
print(json.dumps(counts, sort_keys=True))
