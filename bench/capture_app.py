"""The capture section's application processes (Debian's /usr/bin/python3, whose sqlite3 loads
extensions). One process per measurement; each prints JSON lines on stdout (flushed), the last
one with "final": true unless the process kills itself.

usage: capture_app.py KIND MODE ARGS... [EXT]      MODE  plain | walship (EXT last)
  bigtxn  MODE DB MIB     open a fresh database, create b(id, v) (walship: walship_flush() until
                          the replica holds it), then ONE transaction inserting MIB MiB of 64 KiB
                          random blobs; after COMMIT (walship: `SELECT walship_flush(120000)`)
                          print {"hwm_kib", "txid", ...} and SIGKILL itself at once.
  cycles  MODE DB N       N times: open a connection, insert one row into t, close it (the
                          extension stays loaded: a connection per request). Prints each cycle.
  openflush MODE DB       open, walship_flush(), print walship_status(), close.
  burst   MODE DB MIB RATE  open (wal_autocheckpoint=0), walship_flush(), print a "before" line
                          (status, time), then MIB MiB as 1 MiB transactions (256 rows of
                          randomblob(4000)), RATE of them per second (0: as fast as
                          possible), counting WAL bytes from the
                          wal-index (mxFrame deltas × (24 + page size), see store_app.py), then
                          walship_flush() and a final line (status, WAL bytes, WAL file size).
  many    MODE DIR N      open N databases DIR/dbNNNNN.db at once (WAL, synchronous=NORMAL, a
                          table, 3 one-row commits each), walship: walship_flush() on each; print Threads, VmRSS,
                          VmHWM and each flush's TXID count; wait for DIR/stop; close all.
"""
import json
import os
import resource
import signal
import struct
import sys
import time

import apputil  # noqa: E402 (bench/, next to this script)

kind, mode = sys.argv[1], sys.argv[2]
EXT = sys.argv[-1] if mode == "walship" else None
t_start = time.time()


def proc_status():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0])
        elif k == "Threads":
            out[k] = int(v)
    return out


def emit(**kw):
    st = proc_status()
    kw.update(t=time.time(), rss_kib=st["VmRSS"], hwm_kib=st["VmHWM"], threads=st["Threads"],
              fds=len(os.listdir("/proc/self/fd")))
    print(json.dumps(kw), flush=True)


def status(con):
    if mode != "walship":
        return {}
    return json.loads(con.execute("SELECT walship_status()").fetchone()[0])


def flush(con, ms=600000):
    if mode != "walship":
        return None
    return con.execute(f"SELECT walship_flush({ms})").fetchone()[0]


if kind == "bigtxn":
    db, mib = sys.argv[3], int(sys.argv[4])
    con, loader = apputil.connect(mode, db, EXT, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB)")
    flush(con)
    emit(phase="before")
    rows = mib * 16  # 64 KiB each
    t0 = time.time()
    con.execute("BEGIN")
    for start in range(0, rows, 64):
        con.execute("WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < ?) "
                    "INSERT INTO b(v) SELECT randomblob(65536) FROM c", (min(64, rows - start),))
    con.execute("COMMIT")
    t_commit = time.time() - t0
    txid = flush(con, 120000)
    st = proc_status()
    # The line first (flushed), then the kill: nothing of the process's own shutdown runs.
    print(json.dumps({"phase": "flushed", "txid": txid, "hwm_kib": st["VmHWM"], "rss_kib": st["VmRSS"],
                      "commit_s": t_commit, "flush_s": time.time() - t0 - t_commit, "rows": rows}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

elif kind == "cycles":
    db, n = sys.argv[3], int(sys.argv[4])
    import sqlite3
    if mode == "walship":
        loader = sqlite3.connect(":memory:")  # stays open: the VFS stays registered
        loader.enable_load_extension(True)
        loader.load_extension(EXT)
    for i in range(n):
        if mode == "walship":
            con = sqlite3.connect(f"file:{db}?vfs=walship", uri=True, isolation_level=None, timeout=30)
        else:
            con = sqlite3.connect(db, isolation_level=None, timeout=30)
        t0 = time.time()
        con.execute("INSERT INTO t(k, v) VALUES (?, randomblob(100))", (i,))
        st = status(con)
        con.close()
        emit(cycle=i, close_s=time.time() - t0, snapshots=st.get("snapshots"), resyncs=st.get("resyncs"),
             last_repair=st.get("last_repair"))
    emit(final=True)

elif kind == "openflush":
    db = sys.argv[3]
    con, loader = apputil.connect(mode, db, EXT, timeout=30)
    t0 = time.time()
    txid = flush(con)
    st = status(con)
    con.close()
    emit(final=True, txid=txid, flush_s=time.time() - t0, snapshots=st.get("snapshots"),
         resyncs=st.get("resyncs"), last_repair=st.get("last_repair"))

elif kind == "burst":
    db, mib, rate = sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    con, loader = apputil.connect(mode, db, EXT, timeout=30)
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("SELECT count(*) FROM t").fetchone()  # opens the WAL and -shm
    shm = os.open(db + "-shm", os.O_RDONLY)  # kept open until after the close (POSIX locks)
    page = con.execute("PRAGMA page_size").fetchone()[0]

    def hdr():
        b = os.pread(shm, 48, 0)
        return struct.unpack_from("=I", b, 16)[0], b[32:40]

    txid0 = flush(con)
    st0 = status(con)
    wal0 = os.path.getsize(db + "-wal") if os.path.exists(db + "-wal") else 0
    emit(phase="before", txid=txid0, snapshots=st0.get("snapshots"), resyncs=st0.get("resyncs"),
         last_repair=st0.get("last_repair"), wal_size=wal0)
    last_frames, last_salt = hdr()
    wal_bytes, t0 = 0, time.time()
    for i in range(mib):
        if rate:
            time.sleep(max(0.0, t0 + i / rate - time.time()))
        con.execute("BEGIN")
        con.execute("WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < 256) "
                    "INSERT INTO t(k, v) SELECT i, randomblob(4000) FROM c")
        con.execute("COMMIT")
        frames, salt = hdr()
        if salt != last_salt:
            wal_bytes += 32 + frames * (24 + page)
        else:
            wal_bytes += (frames - last_frames) * (24 + page)
        last_frames, last_salt = frames, salt
    t_burst = time.time() - t0
    wal1 = os.path.getsize(db + "-wal")
    emit(phase="burst", burst_s=t_burst, wal_bytes=wal_bytes, wal_size=wal1)
    txid1 = flush(con)
    st1 = status(con)
    emit(phase="flushed", txid=txid1, snapshots=st1.get("snapshots"), resyncs=st1.get("resyncs"),
         last_repair=st1.get("last_repair"), flush_s=time.time() - t0 - t_burst, page_size=page)
    con.close()
    os.close(shm)
    emit(final=True)

elif kind == "many":
    d, n = sys.argv[3], int(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # as many descriptors as allowed
    import sqlite3
    if mode == "walship":
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(EXT)
    emit(phase="start")
    cons, t0 = [], time.time()
    for i in range(n):
        db = os.path.join(d, f"db{i:05d}.db")
        if mode == "walship":
            con = sqlite3.connect(f"file:{db}?vfs=walship", uri=True, isolation_level=None, timeout=30)
        else:
            con = sqlite3.connect(db, isolation_level=None, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")  # no fsync per commit: 1000s of databases, 2 cores
        con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
        for j in range(3):
            con.execute("INSERT INTO t(v) VALUES (randomblob(200))")
        cons.append(con)
    t_open = time.time() - t0
    emit(phase="opened", open_s=t_open)
    t1, ok, errors = time.time(), 0, []
    for i, con in enumerate(cons):
        if mode == "walship":
            try:
                if con.execute("SELECT walship_flush(120000)").fetchone()[0]:
                    ok += 1
            except sqlite3.Error as e:
                errors.append(f"db{i:05d}: {e}")
        else:
            ok += 1
    time.sleep(2)  # settle: idle shippers, nothing in flight
    emit(phase="steady", flushed=ok, flush_s=time.time() - t1 - 2, errors=errors[:5], n_errors=len(errors))
    stop = os.path.join(d, "stop")
    while not os.path.exists(stop):
        time.sleep(0.1)
    t2 = time.time()
    for con in cons:
        con.close()
    emit(final=True, close_s=time.time() - t2)
else:
    sys.exit(f"unknown kind {kind}")
