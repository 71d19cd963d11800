"""A Python app writing to SQLite through walship, replicated as ./litestream.yml says.

    python3 app.py [ROWS]   # writes ROWS rows (default: one every 0.1 s until SIGTERM/Ctrl-C),
                            # then waits for the replica (walship.flush) and closes

Uses the stdlib sqlite3 (Debian's /usr/bin/python3 can load extensions; for a pyenv python, use
walship.apsw_connect instead of walship.connect). Prints the replica TXID at the end.
"""
import os
import signal
import sys
import time

import walship


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else None
    # A SIGTERM (docker stop, systemctl stop) unwinds through `finally` like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    os.makedirs("data", exist_ok=True)
    con = walship.connect("data/app.db")  # was: sqlite3.connect("data/app.db")
    n = 0
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA cache_size=-8000")
        con.execute("CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, kind TEXT NOT NULL, at REAL NOT NULL)")
        con.commit()
        while rows is None or n < rows:
            with con:  # one transaction per batch of up to 50 rows
                for _ in range(min(50, rows - n) if rows is not None else 1):
                    con.execute("INSERT INTO events(kind, at) VALUES (?, ?)", (f"event-{n}", time.time()))
                    n += 1
            if rows is None:
                time.sleep(0.1)
    finally:
        try:
            txid = walship.flush(con, 10_000)  # everything committed is now in the replica
            print(f"wrote {n} rows; replica at TXID {txid}")
        finally:
            con.close()


if __name__ == "__main__":
    main()
