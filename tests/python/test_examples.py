"""Each example in examples/, run as its README says (in a copy, so the checkout stays clean), its
replica restored with `walship restore -config litestream.yml` and compared with the source
(content hash and integrity_check).

* node-service: started with PORT=0, 300 notes POSTed over HTTP, SIGTERM right after the last
  answer: it dies of SIGTERM and the restore holds all 300 (sync-interval is 1s, so the last
  ones are shipped only by the flush on SIGTERM). Uses the npm package installed from its tarball.
* python/app.py under Debian's /usr/bin/python3: with a row count (500 rows, exit 0), and
  without one until SIGTERM (exit 0, every committed row restored).
* sqlite3-shell/session.sql with `sqlite3 -cmd '.load .../libwalvfs'`.
* rusqlite: built into tests/hosts/rusqlite's target directory (same lock file, so its compiled
  rusqlite is reused), run with WALSHIP_EXTENSION.
"""
import json
import re
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import EXT, ROOT, SYS_PYTHON, content_hash, integrity
from package_harness import copy_example, node_project, popen, py_package, walship_restore_db  # noqa: F401
from test_hosts import RUSQLITE_DIR, host_env, host_run, require

EXAMPLES = ROOT / "examples"


def rows(db: Path, sql: str):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def restore_and_compare(app: Path, db_rel: str) -> Path:
    src = app / db_rel
    assert integrity(src) == "ok"
    out = app / "restored.db"
    walship_restore_db(app, db_rel, out)
    assert integrity(out) == "ok"
    assert content_hash(out) == content_hash(src), f"the replica of {db_rel} does not restore to the source"
    return out


def test_example_readmes_are_short():
    for d in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        body = [l for l in (d / "README.md").read_text().splitlines()[1:] if l.strip()]
        assert 3 <= len(body) <= 6, (d.name, body)


# ---------------------------------------------------------------------------------------------

def http(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


def test_example_node_service(node_project, tmp_path):
    app = copy_example("node-service", tmp_path / "svc", ["package.json", "litestream.yml", "src"])
    # The package as installed from its tarball (the example's own package.json points at the
    # source folder instead).
    (app / "node_modules").symlink_to(node_project["dir"] / "node_modules")
    proc = popen(["node", "src/index.js"], host_env(extra={"PORT": "0"}), app)
    try:
        line = proc.stdout.readline()
        m = re.match(r"listening on (http://\S+)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        base = m.group(1)
        for i in range(300):
            code, body = http("POST", f"{base}/notes", f"note {i}".encode())
            assert (code, body) == (201, {"id": i + 1})
        assert http("GET", f"{base}/notes") == (200, {"count": 300})
        code, st = http("GET", f"{base}/backup")
        assert st["replicated"] is True and st["path"] == str(app / "data" / "app.db"), st
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, err)
    assert "warn" not in err and "error" not in err, err  # the example's litestream.yml loads cleanly
    restored = restore_and_compare(app, "data/app.db")
    assert rows(restored, "SELECT count(*), max(body) FROM notes") == [(300, "note 99")]


# ---------------------------------------------------------------------------------------------

def python_app(py_package, tmp_path):
    if not Path(SYS_PYTHON).exists():
        pytest.fail(f"{SYS_PYTHON} is missing: apt-get install python3")
    app = copy_example("python", tmp_path / "py", ["app.py", "litestream.yml"])
    return app, host_env(extra={"PYTHONPATH": str(py_package)})


def test_example_python_rows(py_package, tmp_path):
    app, env = python_app(py_package, tmp_path)
    p = host_run([SYS_PYTHON, "app.py", "500"], env, app)
    assert re.search(r"^wrote 500 rows; replica at TXID \d+$", p.stdout, re.M), p.stdout
    restored = restore_and_compare(app, "data/app.db")
    assert rows(restored, "SELECT count(*) FROM events") == [(500,)]


def test_example_python_sigterm(py_package, tmp_path):
    app, env = python_app(py_package, tmp_path)
    proc = popen([SYS_PYTHON, "app.py"], env, app)
    try:
        time.sleep(1.5)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (proc.returncode, err)
    m = re.search(r"^wrote (\d+) rows; replica at TXID \d+$", out, re.M)
    assert m and int(m.group(1)) >= 5, (out, err)
    restored = restore_and_compare(app, "data/app.db")
    assert rows(restored, "SELECT count(*) FROM events") == [(int(m.group(1)),)]


# ---------------------------------------------------------------------------------------------

def test_example_sqlite3_shell(built, tmp_path):
    shell = require("sqlite3")
    app = copy_example("sqlite3-shell", tmp_path / "sh", ["session.sql", "litestream.yml"])
    ext_no_suffix = str(EXT)[: -len(".so")]
    p = host_run([shell, "-cmd", f".load {ext_no_suffix}"], host_env(), app,
                 input=(app / "session.sql").read_text())
    assert "notes|1000" in p.stdout.splitlines(), p.stdout
    assert re.search(r"^replica txid\|\d+$", p.stdout, re.M), p.stdout
    restored = restore_and_compare(app, "app.db")
    assert rows(restored, "SELECT count(*), sum(body LIKE '%(edited)') FROM notes") == [(1000, 100)]


# ---------------------------------------------------------------------------------------------

def test_example_rusqlite(built, tmp_path):
    cargo = require("cargo")
    example = EXAMPLES / "rusqlite"
    target = RUSQLITE_DIR / "target"
    host_run([cargo, "build", "--release", "--locked", "--manifest-path", example / "Cargo.toml",
              "--target-dir", target], host_env(), ROOT, timeout=900)
    app = copy_example("rusqlite", tmp_path / "rs", ["litestream.yml"])
    p = host_run([target / "release" / "walship-example-rusqlite", "1234"],
                 host_env(extra={"WALSHIP_EXTENSION": str(EXT)}), app)
    assert re.search(r"^wrote 1234 rows; replica at TXID \d+$", p.stdout, re.M), p.stdout
    restored = restore_and_compare(app, "data/app.db")
    assert rows(restored, "SELECT count(*) FROM readings") == [(1234,)]
