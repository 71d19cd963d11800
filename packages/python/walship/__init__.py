"""walship for Python: open SQLite databases through the `walship` VFS so they replicate as your
litestream.yml says (or walship.yml, or $WALSHIP_CONFIG), and wait for the replica when it matters.

    import walship
    con = walship.connect("data/app.db")          # stdlib sqlite3, through the walship VFS
    con.execute("PRAGMA journal_mode=WAL")
    ...
    walship.flush(con, 10_000)                    # replica TXID once all committed is durable

Owns: locating the bundled libwalvfs.so and loading it into the stdlib `sqlite3` module's SQLite
or into apsw's. Never: changes a database's settings (journal mode included) or the default VFS.
"""
import json
import os
import sys
import urllib.parse
from pathlib import Path

__all__ = ["EXTENSION", "extension_path", "load", "connect", "apsw_connect", "flush", "status",
           "WalshipError"]

EXTENSION = str(Path(__file__).resolve().with_name("libwalvfs.so"))

APSW_HINT = (
    "use apsw, which bundles its own SQLite and can always load extensions: pip install apsw, "
    "then walship.apsw_connect(path) (or walship.load(apsw.Connection(':memory:')) and "
    "apsw.Connection(path, vfs='walship'))"
)


class WalshipError(RuntimeError):
    """The extension cannot be found or loaded in this Python."""


def extension_path() -> str:
    """The bundled libwalvfs.so; raises WalshipError naming the platform if it is missing."""
    if not os.path.isfile(EXTENSION):
        import sysconfig

        raise WalshipError(
            f"walship: this package has no libwalvfs.so for {sysconfig.get_platform()} "
            f"(looked for {EXTENSION}); build the package on this platform: `make build` in the "
            "walship repository, then `pip install ./packages/python`"
        )
    return EXTENSION


def _is_apsw(conn) -> bool:
    return type(conn).__module__.split(".")[0] == "apsw"


def load(conn) -> None:
    """Loads walship into the SQLite that `conn` runs on (a stdlib sqlite3 or an apsw Connection).

    The VFS and the walship_* SQL functions then exist for every later connection of that SQLite
    in this process. Loading twice is harmless.
    """
    path = extension_path()
    if _is_apsw(conn):
        conn.enable_load_extension(True)
        try:
            conn.load_extension(path)
        finally:
            conn.enable_load_extension(False)
        return
    if not hasattr(conn, "enable_load_extension"):
        raise WalshipError(
            f"walship: the sqlite3 module of {sys.executable} cannot load extensions (Python was "
            "built without --enable-loadable-sqlite-extensions, as pyenv builds are by "
            "default). Use a Python whose sqlite3 allows it (Debian's /usr/bin/python3 does), "
            "or " + APSW_HINT
        )
    conn.enable_load_extension(True)
    try:
        conn.load_extension(path)
    except Exception as e:
        raise WalshipError(f"walship: loading {path} into SQLite {_sqlite_version(conn)} failed: {e}") from e
    finally:
        conn.enable_load_extension(False)


def _sqlite_version(conn) -> str:
    try:
        return conn.execute("select sqlite_version()").fetchone()[0]
    except Exception:
        return "?"


_loaded = set()


def _ensure_loaded(module) -> None:
    """Loads walship once per SQLite library (stdlib and apsw each have their own)."""
    if module.__name__ in _loaded:
        return
    loader = module.Connection(":memory:") if module.__name__ == "apsw" else module.connect(":memory:")
    try:
        load(loader)
    finally:
        loader.close()
    _loaded.add(module.__name__)


def _uri(database, uri: bool) -> str:
    """`database` as a URI that selects the walship VFS."""
    if uri and isinstance(database, str) and database.startswith("file:"):
        rest, _, fragment = database.partition("#")
        base, _, query = rest.partition("?")
        params = [p for p in query.split("&") if p and not p.startswith("vfs=")]
        return base + "?" + "&".join(params + ["vfs=walship"]) + (f"#{fragment}" if fragment else "")
    path = os.fsdecode(os.fspath(database))
    if path.startswith("//"):
        path = os.path.abspath(path)  # "file:////x" would name a host
    return "file:" + urllib.parse.quote(path, safe="/") + "?vfs=walship"


def connect(database, **kwargs):
    """sqlite3.connect(database, **kwargs) through the walship VFS (stdlib sqlite3).

    `database` is a path (str, bytes or os.PathLike), or a `file:` URI when uri=True (its vfs=
    parameter is replaced). ":memory:" is passed through unchanged: nothing to replicate.
    """
    import sqlite3

    _ensure_loaded(sqlite3)
    uri = kwargs.pop("uri", False)
    if database == ":memory:":
        return sqlite3.connect(database, uri=uri, **kwargs)
    return sqlite3.connect(_uri(database, uri), uri=True, **kwargs)


def apsw_connect(filename, **kwargs):
    """apsw.Connection(filename, vfs="walship", **kwargs), loading walship into apsw first."""
    import apsw

    _ensure_loaded(apsw)
    return apsw.Connection(os.fsdecode(os.fspath(filename)), vfs="walship", **kwargs)


def flush(conn, timeout_ms: int = 30_000) -> int:
    """Waits until everything `conn`'s database committed is durable in its replica; returns the
    replica TXID. Raises the driver's error (sqlite3.OperationalError, apsw.SQLError) on timeout,
    on a storage error, or if the database is not replicated."""
    return conn.execute("select walship_flush(?)", (int(timeout_ms),)).fetchone()[0]


def status(conn) -> dict:
    """walship_status() of `conn`'s database as a dict (TXID, lag, backlog, last error)."""
    return json.loads(conn.execute("select walship_status()").fetchone()[0])
