"""Writes the later history for the restore benchmark: N small transactions spread evenly over
SECONDS, then closes (Debian's /usr/bin/python3, whose sqlite3 loads extensions).

usage: history_app.py MODE DB N SECONDS [EXT]      MODE  plain | walship
Each transaction inserts one ~100-byte row into h; every 10th also rewrites a random row of the
big table t (a scattered 4 KiB page), so later files touch pages all over the database. With
MODE=walship the database is opened through the walship VFS and walship_flush() waits for the
first snapshot before the first transaction (the history is "snapshot, then N transactions"),
and closing the connection ships the rest.
"""
import os
import random
import sys
import time

import apputil  # noqa: E402 (bench/, next to this script)

mode, db, n, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
con, loader = apputil.connect(mode, db, sys.argv[5] if mode == "walship" else None, timeout=30)
con.execute("PRAGMA journal_mode=WAL")
con.execute("PRAGMA synchronous=NORMAL")
if mode == "walship":
    con.execute("SELECT walship_flush(600000)").fetchone()
con.execute("CREATE TABLE IF NOT EXISTS h(id INTEGER PRIMARY KEY, v BLOB)")
max_id = con.execute("SELECT max(id) FROM t").fetchone()[0]
rnd = random.Random(4)
t0 = time.time()
for i in range(n):
    if i % 10 == 9:
        con.execute("BEGIN")
        con.execute("INSERT INTO h(v) VALUES (?)", (os.urandom(100),))
        con.execute("UPDATE t SET v = randomblob(4000) WHERE id = ?", (rnd.randint(1, max_id),))
        con.execute("COMMIT")
    else:
        con.execute("INSERT INTO h(v) VALUES (?)", (os.urandom(100),))
    time.sleep(max(0.0, t0 + seconds * (i + 1) / n - time.time()))
con.close()
