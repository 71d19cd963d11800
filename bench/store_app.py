"""The storage section's app: steady writes for SECONDS — 50 one-row commits/s (rows of 100
random hex characters) plus, every 5 s, one 100-row commit of 1 KB random-hex rows — and a count
of the WAL bytes it wrote.
Under Debian's /usr/bin/python3; the database already exists in WAL mode.

usage: store_app.py MODE SECONDS DB [EXT]      MODE  plain | walship
WAL bytes: after each commit the wal-index header in the -shm file is read (mxFrame at offset
16, salts at 32): frames appended = mxFrame − previous mxFrame, or mxFrame when the salts
changed (the WAL restarted after a checkpoint); bytes = frames × (24 + page size) (+32 for a
restart's WAL header). The -shm descriptor stays open until after the database is closed
(closing a descriptor of a file drops this process's POSIX locks on it).
Prints JSON {"samples": [[time.time(), cumulative WAL bytes, commits], ...]} (one a second).
"""
import json
import os
import struct
import sys
import time

import apputil  # noqa: E402 (bench/, next to this script)

mode, seconds, db = sys.argv[1], float(sys.argv[2]), sys.argv[3]
con, loader = apputil.connect(mode, db, sys.argv[4] if mode == "walship" else None)
con.execute("SELECT count(*) FROM t").fetchone()  # opens the WAL and -shm
shm = os.open(db + "-shm", os.O_RDONLY)
page = con.execute("PRAGMA page_size").fetchone()[0]


def hdr():
    b = os.pread(shm, 48, 0)
    return struct.unpack_from("=I", b, 16)[0], b[32:40]


last_frames, last_salt = hdr()
wal_bytes, commits, samples = 0, 0, []
start = time.time()
n = int(seconds * 50)
for i in range(n):
    delay = start + i / 50 - time.time()
    if delay > 0:
        time.sleep(delay)
    if i % 250 == 249:
        con.execute("BEGIN")
        con.executemany("INSERT INTO t(k, v) VALUES (?, ?)", ((j, os.urandom(500).hex()) for j in range(100)))
        con.execute("COMMIT")
    else:
        con.execute("INSERT INTO t(k, v) VALUES (?, ?)", (i, os.urandom(50).hex()))
    commits += 1
    frames, salt = hdr()
    if salt != last_salt:
        wal_bytes += 32 + frames * (24 + page)
    else:
        wal_bytes += (frames - last_frames) * (24 + page)
    last_frames, last_salt = frames, salt
    if i % 50 == 0:
        samples.append([time.time(), wal_bytes, commits])
samples.append([time.time(), wal_bytes, commits])
con.close()
os.close(shm)
print(json.dumps({"samples": samples}))
