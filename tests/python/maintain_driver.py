"""Writes steadily through walship for a while, flushing often; records (txid, hash, time).

usage: maintain_driver.py EXT DB OUT_JSON SECONDS
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
records = []
end = time.time() + seconds
i = 0
while time.time() < end:
    i += 1
    con.execute("INSERT INTO t(v) VALUES (?)", (os.urandom(200 + i % 3000),))
    if i % 7 == 0:
        con.execute("UPDATE t SET v = ? WHERE id = ?", (os.urandom(100), i // 2))
    if i % 20 == 0:
        txid = con.execute("SELECT walship_flush(30000)").fetchone()[0]
        records.append({"txid": txid, "hash": hash_connection(con), "t": time.time()})
        time.sleep(0.05)
txid = con.execute("SELECT walship_flush(30000)").fetchone()[0]
records.append({"txid": txid, "hash": hash_connection(con), "t": time.time()})
con.close()
json.dump(records, open(out, "w"))
