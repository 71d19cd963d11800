"""Host driver: the walship extension inside a Python SQLite binding.

Usage: PYTHON driver.py {sqlite3|apsw} EXT DB COPY_FROM COPY_TO
  sqlite3    the standard library module (run it with Debian's /usr/bin/python3: pyenv's build
             cannot load extensions); the database is opened by URI, `file:DB?vfs=walship`
  apsw       apsw from PyPI, which bundles its own (newer) SQLite; opened with vfs="walship"
  EXT        path of libwalvfs.so, with or without the .so suffix
  COPY_FROM  the replica directory, copied to COPY_TO right after walship_flush returns, so the
             test can restore exactly what was durable at that moment (before close)
Prints one JSON line. walship_flush is called twice: after transaction 25 and at the end. The workload matches tests/python/test_hosts.py `expected_rows()`:
50 transactions of 40 rows, every tenth row with a blob of a few KB.
"""
import json
import shutil
import sys

TXNS = 50
ROWS_PER_TXN = 40
CREATE = "CREATE TABLE items(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, label TEXT NOT NULL, payload BLOB)"
INSERT = "INSERT INTO items(id, n, label, payload) VALUES (?, ?, ?, ?)"


def payload(i):
    n = 3000 + (i % 7) * 100 if i % 10 == 0 else 32
    return bytes((i * 31 + j * 7) & 0xFF for j in range(n))


def batch(t):
    return [
        (i + 1, (i * i) % 1000003, f"row-{i}", payload(i))
        for i in range(t * ROWS_PER_TXN, (t + 1) * ROWS_PER_TXN)
    ]


def one(con, sql):
    return list(con.execute(sql))[0][0]


def open_stdlib(ext, db):
    import sqlite3

    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)
    loader.enable_load_extension(False)
    con = sqlite3.connect(f"file:{db}?vfs=walship", uri=True, isolation_level=None)
    return loader, con, sqlite3.sqlite_version


def open_apsw(ext, db):
    import apsw

    loader = apsw.Connection(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)
    loader.enable_load_extension(False)
    con = apsw.Connection(db, vfs="walship")
    return loader, con, apsw.sqlite_lib_version()


def main():
    binding, ext, db, copy_from, copy_to = sys.argv[1:]
    loader, con, version = {"sqlite3": open_stdlib, "apsw": open_apsw}[binding](ext, db)
    journal_mode = one(con, "PRAGMA journal_mode=WAL")
    con.execute(CREATE)
    txid_mid = None
    for t in range(TXNS):
        con.execute("BEGIN")
        cur = con.cursor()
        cur.executemany(INSERT, batch(t))
        con.execute("COMMIT")
        if t == TXNS // 2 - 1:
            txid_mid = one(con, "SELECT walship_flush(10000)")
    rows, blob_bytes = list(con.execute("SELECT count(*), sum(length(payload)) FROM items"))[0]
    txid = one(con, "SELECT walship_flush(10000)")
    shutil.copytree(copy_from, copy_to)
    status = one(con, "SELECT walship_status()")
    vfs_list = None
    if binding == "apsw":
        import apsw

        vfs_list = apsw.vfs_names()
    con.close()
    loader.close()
    print(json.dumps({
        "host": binding,
        "sqlite_version": version,
        "journal_mode": journal_mode,
        "rows": rows,
        "blob_bytes": blob_bytes,
        "txid_mid": txid_mid,
        "txid": txid,
        "txid_type": type(txid).__name__,
        "status": status,
        "vfs_names": vfs_list,
    }))


if __name__ == "__main__":
    main()
