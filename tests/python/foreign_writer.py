"""A foreign writer for the oracle: another process on a plain connection (the OS VFS, no
walship loaded), run by Debian's /usr/bin/python3 and steered by workload.py one JSON command
a line on stdin. Each command opens its own connection, does its work, closes, and answers one
JSON line on stdout; the workload waits for that answer, so nothing else writes meanwhile.

commands: {"op": "write", "seed": N}          1-4 transactions of random inserts/updates/deletes
          {"op": "checkpoint", "mode": M}     PRAGMA wal_checkpoint(M), M in PASSIVE/FULL/RESTART/TRUNCATE
          {"op": "exit"}

usage: foreign_writer.py DB
"""
import json
import os
import random
import sqlite3
import sys

db = sys.argv[1]


def rand_text(rng, n=200):
    return "".join(rng.choice("klmnopqrst") for _ in range(rng.randint(1, n)))


def max_id(con):
    return con.execute("SELECT coalesce(max(id), 0) FROM t").fetchone()[0]


def write(con, rng):
    """Random transactions of random sizes; returns what was done."""
    done = []
    for _ in range(rng.randint(1, 4)):
        con.execute("BEGIN IMMEDIATE")
        for _ in range(rng.randint(1, 3)):
            r = rng.random()
            if r < 0.35:
                # From one row to a few hundred (many pages, sometimes past the page cache).
                n = rng.choice([1, 2, 5, 20, rng.randint(1, 400)])
                con.executemany(
                    "INSERT INTO t(k, v) VALUES (?, ?)",
                    [(-rng.randint(1, 1000), rand_text(rng)) for _ in range(n)],
                )
                done.append(f"insert{n}")
            elif r < 0.45:
                size = rng.choice([100, 3000, rng.randint(1, 200_000)])
                con.execute("INSERT INTO t(k, b) VALUES (-7, ?)", (os.urandom(size),))
                done.append(f"blob{size}")
            elif r < 0.65:
                lo = rng.randint(1, max_id(con) + 1)
                span = rng.choice([0, 3, 50, 1000])
                con.execute(
                    "UPDATE t SET v = ?, k = k - 1 WHERE id BETWEEN ? AND ?",
                    (rand_text(rng, 60), lo, lo + span),
                )
                done.append(f"update{span}")
            elif r < 0.80:
                lo = rng.randint(1, max_id(con) + 1)
                span = rng.choice([0, 5, 100, 2000])
                con.execute("DELETE FROM t WHERE id BETWEEN ? AND ?", (lo, lo + span))
                done.append(f"delete{span}")
            elif r < 0.92:
                for _ in range(rng.randint(1, 30)):
                    con.execute(
                        "INSERT OR REPLACE INTO kv VALUES (?, ?)",
                        (f"key{rng.randint(0, 400)}", rand_text(rng, 500)),
                    )
                done.append("kv")
            else:
                # A table of its own: created, filled, sometimes dropped again (schema changes).
                con.execute("CREATE TABLE IF NOT EXISTS f(x INTEGER PRIMARY KEY, y)")
                if rng.random() < 0.3:
                    con.execute("DROP TABLE f")
                    done.append("drop-f")
                else:
                    con.executemany(
                        "INSERT INTO f(y) VALUES (?)",
                        [(os.urandom(rng.randint(1, 2000)),) for _ in range(rng.randint(1, 50))],
                    )
                    done.append("fill-f")
        con.execute("COMMIT")
    return done


def main():
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "exit":
            break
        con = sqlite3.connect(db, isolation_level=None, timeout=30)
        try:
            mode = con.execute("PRAGMA journal_mode").fetchone()[0]
            if cmd["op"] == "write":
                out = {"journal_mode": mode, "done": write(con, random.Random(cmd["seed"]))}
            elif cmd["op"] == "checkpoint":
                row = con.execute(f"PRAGMA wal_checkpoint({cmd['mode']})").fetchone()
                out = {"journal_mode": mode, "checkpoint": list(row)}
            else:
                raise ValueError(f"unknown command {cmd}")
        except Exception as e:  # noqa: BLE001 — answered to the workload, which fails loudly
            out = {"error": f"{type(e).__name__}: {e}"}
        finally:
            con.close()
        print(json.dumps(out), flush=True)


main()
