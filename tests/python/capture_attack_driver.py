"""An interactive app for test_capture_attacks.py, run by Debian's /usr/bin/python3.

usage: capture_attack_driver.py EXT DB MODE
  MODE walship: load EXT and open connections through the `walship` VFS (the app under test)
  MODE plain:   never load the extension; connections use SQLite's default VFS (a foreign writer)

The test steers it step by step: one JSON command per line on stdin, one JSON reply per line on
stdout (stderr carries walship's log). Connections are named so one process can hold several.

  {"op": "open", "c": "a", "pragmas": ["journal_mode=WAL", ...]}      open (and run pragmas)
  {"op": "sql", "c": "a", "sql": "...", "params": [...]}              one statement -> rows
  {"op": "script", "c": "a", "sql": "..."}                            executescript
  {"op": "insert", "c": "a", "n": 10, "size": 100, "who": "x", "tx": "each"|"one"|"none", "batch": 1, "pause": 0}
        n rows of `size` random bytes into t(who, v); "each": a transaction per `batch` rows
        (and `pause` seconds of sleep after each commit);
        "one": all in one BEGIN..COMMIT; "none": no BEGIN/COMMIT here (the caller opened one)
  {"op": "flush", "c": "a", "ms": 30000}        -> {"flush": TXID} or {"error": "..."}
  {"op": "status", "c": "a"}                    -> {"status": walship_status() parsed}
  {"op": "close", "c": "a"}
  {"op": "fork", "c": "a", "n": 50, "size": 200}
        fork a child that opens its own walship connection and commits n rows (who='child'),
        closes it and exits, while the parent commits n rows (who='parent') on connection c;
        -> {"child_status": waitpid status or null if it hung, "parent_rows": n}
  {"op": "kill"}      SIGKILL this process at once (no reply, nothing closed)
  {"op": "exit"}      close every connection, reply, exit 0
"""
import json
import os
import signal
import sqlite3
import sys
import time
import traceback

ext, db, mode = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "walship":
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)

cons = {}


def connect():
    if mode == "walship":
        return sqlite3.connect(f"file:{db}?vfs=walship", uri=True, isolation_level=None, timeout=30)
    return sqlite3.connect(db, isolation_level=None, timeout=30)


def ensure_table(c):
    c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, who TEXT, v BLOB)")


def insert(c, n, size, who, tx, batch=1, pause=0.0):
    if tx == "one":
        c.execute("BEGIN IMMEDIATE")
    for i in range(n):
        if tx == "each" and i % batch == 0:
            c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO t(who, v) VALUES (?, ?)", (who, os.urandom(size)))
        if tx == "each" and (i % batch == batch - 1 or i == n - 1):
            c.execute("COMMIT")
            if pause:
                time.sleep(pause)
    if tx == "one":
        c.execute("COMMIT")


def plain(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"blob_len": len(v)}
    return v


def fork_writers(c, n, size):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child = connect()
            ensure_table(child)
            for _ in range(n):
                child.execute("INSERT INTO t(who, v) VALUES ('child', ?)", (os.urandom(size),))
                time.sleep(0.002)
            child.close()
        except Exception:  # noqa: BLE001 — the exit status tells the parent
            traceback.print_exc()
            code = 3
        os._exit(code)
    for _ in range(n):
        c.execute("INSERT INTO t(who, v) VALUES ('parent', ?)", (os.urandom(size),))
        time.sleep(0.002)
    deadline = time.time() + 20
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"child_status": status, "parent_rows": n}
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return {"child_status": None, "parent_rows": n}


def handle(cmd):
    op = cmd["op"]
    name = cmd.get("c", "a")
    if op == "open":
        c = connect()
        for p in cmd.get("pragmas", []):
            c.execute(f"PRAGMA {p}").fetchall()
        if cmd.get("table", True):
            ensure_table(c)
        cons[name] = c
        return {"ok": True}
    if op == "sql":
        rows = cons[name].execute(cmd["sql"], cmd.get("params", [])).fetchall()
        return {"rows": [[plain(v) for v in r] for r in rows]}
    if op == "script":
        cons[name].executescript(cmd["sql"])
        return {"ok": True}
    if op == "insert":
        insert(cons[name], cmd.get("n", 1), cmd.get("size", 100), cmd.get("who", "app"), cmd.get("tx", "each"),
               cmd.get("batch", 1), cmd.get("pause", 0.0))
        return {"ok": True}
    if op == "flush":
        try:
            return {"flush": cons[name].execute("SELECT walship_flush(?)", (cmd.get("ms", 30000),)).fetchone()[0]}
        except sqlite3.Error as e:
            return {"error": str(e)}
    if op == "status":
        return {"status": json.loads(cons[name].execute("SELECT walship_status()").fetchone()[0])}
    if op == "close":
        cons.pop(name).close()
        return {"ok": True}
    if op == "fork":
        return fork_writers(cons[name], cmd.get("n", 50), cmd.get("size", 200))
    if op == "kill":
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    if op == "exit":
        for k in list(cons):
            cons.pop(k).close()
        return {"ok": True, "exit": True}
    raise ValueError(f"unknown op {op}")


for line in sys.stdin:
    if not line.strip():
        continue
    sys.stderr.write(f"driver: {line.strip()[:200]}\n")
    sys.stderr.flush()
    try:
        reply = handle(json.loads(line))
    except Exception as e:  # noqa: BLE001 — every failure goes back to the test as data
        reply = {"exception": f"{type(e).__name__}: {e}"}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    if reply.get("exit"):
        break
