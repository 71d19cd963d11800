"""One benchmark run in its own process (Debian's /usr/bin/python3, whose sqlite3 loads extensions).

usage: workload.py MODE KIND N SYNC DB [EXT]
  MODE  plain | walship      KIND  one-row | hundred-row | bulk      SYNC  NORMAL | FULL
Prints JSON: {"seconds": wall time of the commits, "commits": n, "cpu": process CPU seconds}.
With MODE=walship the database replicates per $WALSHIP_CONFIG; the clock stops when the last
COMMIT returns (replication continues in the background, as it does for the app).
"""
import json
import os
import resource
import sys
import time

import apputil  # noqa: E402 (bench/, next to this script)

mode, kind, n, sync, db = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
con, loader = apputil.connect(mode, db, sys.argv[6] if mode == "walship" else None)
con.execute("PRAGMA journal_mode=WAL")
con.execute(f"PRAGMA synchronous={sync}")
con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT)")
payload = "x" * 100
commits = 0
t0 = time.perf_counter()
if kind == "one-row":
    for i in range(n):
        con.execute("INSERT INTO t(k, v) VALUES (?, ?)", (i, payload))
        commits += 1
elif kind == "hundred-row":
    for i in range(n):
        con.execute("BEGIN")
        con.executemany("INSERT INTO t(k, v) VALUES (?, ?)", ((i * 100 + j, payload) for j in range(100)))
        con.execute("COMMIT")
        commits += 1
else:  # bulk: n MiB in 1 MiB transactions
    blob = "y" * 1000
    for i in range(n):
        con.execute("BEGIN")
        con.executemany("INSERT INTO t(k, v) VALUES (?, ?)", ((j, blob) for j in range(1048)))
        con.execute("COMMIT")
        commits += 1
seconds = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
con.close()
print(json.dumps({"seconds": seconds, "commits": commits, "cpu": ru.ru_utime + ru.ru_stime}))
