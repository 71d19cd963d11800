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
  {"op": "hash", "c": "a"}                      -> {"hash": dbhash.py's content hash, read on c}
  {"op": "rss", "sample": false}     -> {"VmHWM": kB, "VmRSS", "RssAnon", "RssFile", "RssShmem"} of
        this process; "sample": true starts a thread that keeps each one's peak (-> "peak_<key>")
  {"op": "threads", "writers": 4, "n": 50, "size": 200, "ms": 30000, "plain": 0, "ckpt_every": 0}
        (test_capture_attacks2.py) `writers` threads, each with its own walship connection,
        commit n one-row transactions (who='w<i>') while another thread on its own connection
        calls walship_flush(ms) in a loop (`plain` more writers use the default VFS in this
        process and checkpoint with RESTART every 10 commits); each flush records how many rows every writer had
        committed before the call -> {"flushes": [{"before": [...], "flush"|"error": ...}], ...}
  {"op": "close_flush_race", "c": "a", "delay": 0.001}
        (test_capture_attacks2.py) one thread closes connection c (the last one) while another,
        `delay` seconds later, opens a new walship connection, commits one row (who='racer')
        and flushes -> {"flush"|"error": ..., "racer": connection name kept open as "racer"}
  {"op": "flush_while_closed", "c": "a", "other": "b", "delay": 0.001}
        (test_capture_attacks2.py) a thread runs walship_flush on c while this thread, `delay`
        seconds later, closes connection `other` -> {"flush"|"error": ...}
        (closing c itself while it runs a statement crashes CPython 3.11's sqlite3 module with
        or without the extension, so that race cannot be driven from Python)
  {"op": "kill"}      SIGKILL this process at once (no reply, nothing closed)
  {"op": "exit"}      close every connection, reply, exit 0
"""
import json
import os
import signal
import sqlite3
import sys
import threading
import time
import traceback

ext, db, mode = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "walship":
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)

cons = {}


def connect(vfs=None, **kw):
    """vfs=None: walship in MODE walship, the default VFS in MODE plain; "unix": the default
    VFS even in a walship process (a connection that bypasses walship)."""
    if mode == "walship" and vfs is None:
        return sqlite3.connect(f"file:{db}?vfs=walship", uri=True, isolation_level=None, timeout=30, **kw)
    if vfs is not None:
        return sqlite3.connect(f"file:{db}?vfs={vfs}", uri=True, isolation_level=None, timeout=30, **kw)
    return sqlite3.connect(db, isolation_level=None, timeout=30, **kw)


RSS_KEYS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")
peaks = {}


def rss():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in RSS_KEYS:
                out[k] = int(v.split()[0])
    return out


def sampler():
    """Started by {"op": "rss", "sample": true}: the peak of each RSS kind, every 2 ms (VmHWM
    alone does not say whether the peak was anonymous memory or mapped file pages)."""
    while True:
        for k, v in rss().items():
            if v > peaks.get(k, 0):
                peaks[k] = v
        time.sleep(0.002)


def flush_on(c, ms):
    try:
        return {"flush": c.execute("SELECT walship_flush(?)", (ms,)).fetchone()[0]}
    except sqlite3.Error as e:
        return {"error": str(e)}


def threads_op(writers, n, size, ms, batch_pause, plain=0, ckpt_every=0):
    """Writers 0..writers-1 use walship (and, with ckpt_every, run wal_checkpoint(RESTART or
    TRUNCATE, alternately) after every ckpt_every-th commit); `plain` more (who='w<i>' too) use
    the default VFS in this same process and run wal_checkpoint(RESTART) after every 10th."""
    committed = [0] * (writers + plain)
    errors = []
    flushes = []
    done = threading.Event()

    def writer(i):
        try:
            c = connect("unix" if i >= writers else None, check_same_thread=False)
            ensure_table(c)
            for j in range(n):
                c.execute("BEGIN IMMEDIATE")
                c.execute("INSERT INTO t(who, v) VALUES (?, ?)", (f"w{i}", os.urandom(size)))
                c.execute("COMMIT")
                committed[i] += 1  # only after COMMIT returned
                if i >= writers and j % 10 == 9:
                    c.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                if i < writers and ckpt_every and j % ckpt_every == ckpt_every - 1:
                    mode_ = "RESTART" if (j // ckpt_every) % 2 else "TRUNCATE"
                    c.execute(f"PRAGMA wal_checkpoint({mode_})").fetchall()
                if batch_pause:
                    time.sleep(batch_pause)
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(f"writer {i}: {type(e).__name__}: {e}")

    def flusher():
        try:
            c = connect(check_same_thread=False)
            while not done.is_set():
                before = list(committed)
                rec = flush_on(c, ms)
                rec["before"] = before
                flushes.append(rec)
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(f"flusher: {type(e).__name__}: {e}")

    ws = [threading.Thread(target=writer, args=(i,)) for i in range(writers + plain)]
    f = threading.Thread(target=flusher)
    f.start()
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    done.set()
    f.join()
    return {"flushes": flushes, "committed": committed, "errors": errors}


def close_flush_race(name, delay, ms):
    result = {}

    def closer():
        cons.pop(name).close()

    def racer():
        time.sleep(delay)
        try:
            c = connect(check_same_thread=False)
            ensure_table(c)
            c.execute("INSERT INTO t(who, v) VALUES ('racer', ?)", (os.urandom(100),))
            result.update(flush_on(c, ms))
            cons["racer"] = c
        except Exception as e:  # noqa: BLE001
            result["exception_in_racer"] = f"{type(e).__name__}: {e}"

    a = threading.Thread(target=closer)
    b = threading.Thread(target=racer)
    a.start()
    b.start()
    a.join()
    b.join()
    return result


def flush_while_closed(name, other, delay, ms):
    c = cons[name]
    closing = cons.pop(other)
    result = {}

    def flusher():
        try:
            result.update(flush_on(c, ms))
        except Exception as e:  # noqa: BLE001
            result["exception_in_flusher"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=flusher)
    t.start()
    time.sleep(delay)
    try:
        closing.close()
    except Exception as e:  # noqa: BLE001
        result["close_error"] = f"{type(e).__name__}: {e}"
    t.join()
    return result


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
        c = connect(cmd.get("vfs"), check_same_thread=False)
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
    if op == "hash":
        from dbhash import hash_connection
        return {"hash": hash_connection(cons[name])}
    if op == "rss":
        if cmd.get("sample") and not peaks:
            peaks.update(rss())
            threading.Thread(target=sampler, daemon=True).start()
        out = rss()
        out.update({f"peak_{k}": v for k, v in peaks.items()})
        return out
    if op == "threads":
        return threads_op(cmd.get("writers", 4), cmd.get("n", 50), cmd.get("size", 200), cmd.get("ms", 30000),
                          cmd.get("pause", 0.0), cmd.get("plain", 0), cmd.get("ckpt_every", 0))
    if op == "close_flush_race":
        return close_flush_race(name, cmd.get("delay", 0.0), cmd.get("ms", 30000))
    if op == "flush_while_closed":
        return flush_while_closed(name, cmd["other"], cmd.get("delay", 0.0), cmd.get("ms", 30000))
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
