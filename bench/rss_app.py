"""An application process for the memory benchmark (Debian's /usr/bin/python3, whose sqlite3 loads
extensions). One process per measurement, so its peak RSS (VmHWM) is the figure.

usage: rss_app.py KIND MODE DB STOPFILE [EXT]
  KIND  steady    — 100 one-row commits per second plus one 100-row transaction every 2 s, until
                    STOPFILE exists; prints a JSON status line every 0.5 s (rss, hwm, commits,
                    walship_status's spooled_files/last_error when replicated).
        firstsync — open an existing database, read every row, then (walship) walship_flush()
                    until the first snapshot is durable; waits for STOPFILE, printing status lines.
  MODE  plain | walship
The last line is {"final": true, "hwm_kib": ..., ...}.
"""
import json
import os
import sys
import time

import apputil  # noqa: E402 (bench/, next to this script)

kind, mode, db, stopfile = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
t_start = time.time()


def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


con, loader = apputil.connect(mode, db, sys.argv[5] if mode == "walship" else None)
con.execute("PRAGMA journal_mode=WAL")
con.execute("PRAGMA synchronous=NORMAL")


def status(**kw):
    line = {"t": round(time.time() - t_start, 2), "rss_kib": kib("VmRSS"), "hwm_kib": kib("VmHWM")}
    if mode == "walship":
        st = json.loads(con.execute("SELECT walship_status()").fetchone()[0])
        line.update(spooled_files=st.get("spooled_files"), backlog_bytes=st.get("backlog_bytes"),
                    txid=st.get("txid"), last_error=(st.get("last_error") or "")[:400] or None)
    line.update(kw)
    print(json.dumps(line), flush=True)


commits, flush_s = 0, None
if kind == "steady":
    con.execute("CREATE TABLE IF NOT EXISTS s(id INTEGER PRIMARY KEY, v BLOB)")
    payload = os.urandom(100)
    next_status = next_big = time.time()
    tick = time.time()
    while not os.path.exists(stopfile):
        con.execute("INSERT INTO s(v) VALUES (?)", (payload,))
        commits += 1
        now = time.time()
        if now >= next_big:
            con.execute("BEGIN")
            con.executemany("INSERT INTO s(v) VALUES (?)", ((payload,) for _ in range(100)))
            con.execute("COMMIT")
            commits += 1
            next_big = now + 2
        if now >= next_status:
            status(commits=commits)
            next_status = now + 0.5
        tick += 0.01  # 100 commits per second, not drifting
        time.sleep(max(0.0, tick - time.time()))
else:
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    rows = sum(con.execute(f'SELECT count(*), sum(length(v)) FROM "{t}"').fetchone()[0] or 0
               for t in tables if t == "t")
    if mode == "walship":
        t0 = time.time()
        con.execute("SELECT walship_flush(600000)").fetchone()
        flush_s = time.time() - t0
    status(rows=rows, flush_s=flush_s)
    while not os.path.exists(stopfile):
        time.sleep(0.5)
        status()
status(final=True, commits=commits, flush_s=flush_s)
con.close()
