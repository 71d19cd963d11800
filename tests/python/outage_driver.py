"""Commits steadily through walship while the test breaks and repairs the replica.

usage: outage_driver.py EXT DB OUT_JSON SECONDS
Records the slowest commit, every commit's success, and the largest spool walship reported.
"""
import json
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dbhash import hash_connection  # noqa: E402

ext, db, out, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)
con = sqlite3.connect(f"file:{db}?vfs=walship", uri=True, isolation_level=None)
con.execute("PRAGMA journal_mode=WAL")
con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
slowest, commits, max_spooled, errors_seen = 0.0, 0, 0, set()
baseline_rss = int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1])
end = time.time() + seconds
next_poll = 0
while time.time() < end:
    t0 = time.perf_counter()
    con.execute("INSERT INTO t(v) VALUES (?)", (os.urandom(300),))
    slowest = max(slowest, time.perf_counter() - t0)
    commits += 1
    if time.time() >= next_poll:
        st = json.loads(con.execute("SELECT walship_status()").fetchone()[0])
        max_spooled = max(max_spooled, st.get("spooled_files", 0))
        if st.get("last_error"):
            errors_seen.add(st["last_error"][:200])
        next_poll = time.time() + 0.1
    time.sleep(0.002)
txid = con.execute("SELECT walship_flush(30000)").fetchone()[0]
st = json.loads(con.execute("SELECT walship_status()").fetchone()[0])
def rss_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


result = {"peak_rss_kib": rss_kib("VmHWM"), "rss_kib": rss_kib("VmRSS"),
          "baseline_rss_kib": baseline_rss, "commits": commits, "slowest_ms": slowest * 1000, "max_spooled": max_spooled, "txid": txid,
          "errors_seen": sorted(errors_seen), "final_status": st, "hash": hash_connection(con)}
con.close()
json.dump(result, open(out, "w"))
