"""Shared by the benchmark app processes (run under Debian's /usr/bin/python3, whose sqlite3
can load extensions): open a database plainly or through the walship VFS."""
import sqlite3


def connect(mode, db, ext=None, timeout=5.0):
    """(connection, loader): with mode "walship", `ext` is loaded first (the loader connection
    must stay open while the VFS is in use) and `db` is opened with `vfs=walship`."""
    if mode == "walship":
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(ext)
        con = sqlite3.connect(f"file:{db}?vfs=walship", uri=True, isolation_level=None, timeout=timeout)
        return con, loader
    return sqlite3.connect(db, isolation_level=None, timeout=timeout), None
