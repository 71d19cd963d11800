"""The lag section's app: commits one row per transaction at a steady RATE for SECONDS, each row
carrying 'lagmarkNNNNNNNNNN' (its commit number), and records when each COMMIT returned (wall
clock, time.time()). Under Debian's /usr/bin/python3; the database already exists in WAL mode.

usage: lag_app.py MODE RATE SECONDS DB [EXT]      MODE  plain | walship
walship: waits for the initial snapshot (walship_flush) before the first timed commit.
Prints JSON {"commits": [t0, t1, ...]} after closing the database.
"""
import json
import sys
import time

import apputil  # noqa: E402 (bench/, next to this script)

mode, rate, seconds, db = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
con, loader = apputil.connect(mode, db, sys.argv[5] if mode == "walship" else None)
if mode == "walship":
    con.execute("SELECT walship_flush(30000)").fetchone()
times = []
n = int(rate * seconds)
start = time.time() + 0.2
for i in range(n):
    delay = start + i / rate - time.time()
    if delay > 0:
        time.sleep(delay)
    con.execute("INSERT INTO t(k, v) VALUES (?, ?)", (i, f"lagmark{i:010d}"))
    times.append(time.time())
con.close()
print(json.dumps({"commits": times}))
