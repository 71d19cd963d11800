"""The cpu section's app: N one-row transactions in a tight loop with SQLite's default settings
(the database already exists in WAL mode), then close. Under Debian's /usr/bin/python3.

usage: cpu_app.py MODE N DB [EXT]      MODE  plain | walship
Prints JSON {"seconds": wall time of the loop, "close": seconds spent in close}. With walship the
close ships everything left (the last connection's close), so the caller's os.wait4 rusage of
this process is the app's and the replicator's CPU together.
"""
import json
import sys
import time

import apputil  # noqa: E402 (bench/, next to this script)

mode, n, db = sys.argv[1], int(sys.argv[2]), sys.argv[3]
con, loader = apputil.connect(mode, db, sys.argv[4] if mode == "walship" else None)
payload = "x" * 100
t0 = time.perf_counter()
for i in range(n):
    con.execute("INSERT INTO t(k, v) VALUES (?, ?)", (i, payload))
t1 = time.perf_counter()
con.close()
if mode == "walship":
    loader.close()
print(json.dumps({"seconds": t1 - t0, "close": time.perf_counter() - t1}))
