"""One "writer" process for test_two_writers.py, run by Debian's /usr/bin/python3 with the real
extension loaded. It runs a script of steps given on the command line, so the test can
interleave two processes exactly (through marker files), not by timing.

usage: writers_driver.py EXT DB WHO STEP[,STEP...]
  w:N          commit N one-row transactions (column who = WHO), 10 ms apart
  s            print {"status": walship_status()} as one JSON line
  e            like s, once the status shows an error (waits up to 30 s: the shipper thread
               checks the lock and the lease on its own schedule)
  f            walship_flush, retried for up to 20 s while it fails; prints {"flush": txid or
               null, "error": last error}
  touch:PATH   create PATH;   wait:PATH   wait (up to 60 s) until PATH exists
  sleep:S      sleep S seconds
  kill         SIGKILL this process (no clean close)
The database is opened at the first step that uses it and closed normally at the end.
"""
import json
import os
import signal
import sqlite3
import sys
import time

ext, db, who, steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)

_con = None


def db_con():
    """The connection, opened at the first step that needs it (so `wait` steps can come first)."""
    global _con
    if _con is None:
        _con = sqlite3.connect(f"file:{db}?vfs=walship", uri=True, isolation_level=None, timeout=30)
        _con.execute("PRAGMA journal_mode=WAL")
        _con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, who TEXT, v BLOB)")
    return _con


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


for step in steps.split(","):
    op, _, arg = step.partition(":")
    if op == "w":
        for i in range(int(arg)):
            db_con().execute("INSERT INTO t(who, v) VALUES (?, ?)", (who, os.urandom(50 + (i * 97) % 2000)))
            time.sleep(0.01)
    elif op in ("s", "e"):
        deadline = time.time() + 30
        while True:
            st = json.loads(db_con().execute("SELECT walship_status()").fetchone()[0])
            if op == "s" or st.get("last_error") or time.time() > deadline:
                break
            time.sleep(0.05)
        say({"status": st})
    elif op == "f":
        deadline, txid, err = time.time() + 20, None, None
        while time.time() < deadline:
            try:
                txid = db_con().execute("SELECT walship_flush(10000)").fetchone()[0]
                err = None
                break
            except sqlite3.Error as e:
                err = str(e)
                time.sleep(0.25)
        say({"flush": txid, "error": err})
    elif op == "touch":
        open(arg, "w").close()
    elif op == "wait":
        deadline = time.time() + 60
        while not os.path.exists(arg):
            if time.time() > deadline:
                raise SystemExit(f"timed out waiting for {arg}")
            time.sleep(0.02)
    elif op == "sleep":
        time.sleep(float(arg))
    elif op == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        raise SystemExit(f"unknown step {step}")
db_con().close()
