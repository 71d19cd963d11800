"""Content hash of a database, shared by the harness and the workload drivers (no pytest here)."""
import hashlib


def hash_connection(con) -> str:
    h = hashlib.sha256()
    tables = con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    for name, sql in tables:
        h.update(repr((name, sql)).encode())
        for row in sorted(repr(tuple(r)) for r in con.execute(f'SELECT * FROM "{name}"')):
            h.update(row.encode())
    return h.hexdigest()
