"""The npm and Python packages (packages/npm, packages/python), installed the way users install
them, used from the real hosts, and their replicas restored with `walship restore`.

npm (fresh project: `npm pack` tarball + better-sqlite3, see package_harness.py):
* the user's two-line change (`const { open } = require('walship'); const db = open(...)`) in a
  better-sqlite3 program: writes, flush() returns the TXID, the replica copied the moment flush
  returned restores to exactly the source, and so does the final replica; a database opened
  afterwards with plain `new Database` is not touched by walship (and is, with WALSHIP_DEFAULT=1);
* flushOnExit: a program committing as fast as it can gets SIGTERM; it dies of SIGTERM, and the
  replica restores to exactly the source, rows committed just before the signal included;
* without a prebuilt extension for the platform, the error names the platform.
Python (`pip install --target` of packages/python, offline):
* Debian's /usr/bin/python3 with stdlib sqlite3 (walship.connect, keyword arguments passed on, a
  file name that needs URI escaping), apsw (walship.load + vfs="walship", and apsw_connect):
  writes, flush, restore of the flush-time copy and of the final replica equal the source;
* a sqlite3 module that cannot load extensions gets an error that says so and points to apsw;
* `pip wheel` makes a py3-none-<platform> wheel with the .so and a valid RECORD, which installs
  into a fresh venv.
"""
import base64
import csv
import hashlib
import io
import json
import os
import select
import shutil
import signal
import sqlite3
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, SYS_PYTHON, content_hash, integrity, walship_restore
from package_harness import PY_PKG, node_project, popen, py_package, walship_restore_db  # noqa: F401
from test_hosts import host_env, host_run, json_line, require

CONFIG = """dbs:
  - path: ./data/app.db
    replicas:
      - type: file
        path: ./backups/app
        sync-interval: 1s
"""


def count(db: Path, table: str) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def fresh_app(node_project, tmp_path: Path) -> Path:
    """An app directory using the fresh project's node_modules, with the user's litestream.yml."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "node_modules").symlink_to(node_project["dir"] / "node_modules")
    (app / "litestream.yml").write_text(CONFIG)
    return app


def check_restores(app: Path, at_flush: Path = None):
    """Both restores (through the config, and of the flush-time copy) equal the closed source."""
    src = app / "data" / "app.db"
    assert integrity(src) == "ok"
    restored = app / "restored.db"
    walship_restore_db(app, "./data/app.db", restored)
    assert integrity(restored) == "ok"
    assert content_hash(restored) == content_hash(src), "the replica does not restore to the source"
    if at_flush is not None:
        out = app / "restored-at-flush.db"
        walship_restore(at_flush, out)
        assert integrity(out) == "ok"
        assert content_hash(out) == content_hash(src), "what flush() called durable is not the source"
    return restored


# ---------------------------------------------------------------------------------------------
# npm

TWO_LINES = "const { open } = require('walship'); const db = open('data/app.db');"

NODE_APP = """'use strict';
const fs = require('fs');
const Database = require('better-sqlite3');
const walship = require('walship');
fs.mkdirSync('data', { recursive: true });
%s
db.pragma('journal_mode = WAL');
db.pragma('cache_size = -8000');
db.exec('CREATE TABLE items(id INTEGER PRIMARY KEY, label TEXT NOT NULL, payload BLOB)');
const ins = db.prepare('INSERT INTO items(label, payload) VALUES (?, ?)');
const batch = db.transaction((t) => {
  for (let k = 0; k < 40; k++) ins.run(`row-${t}-${k}`, Buffer.alloc(k %% 10 === 0 ? 3000 : 32, t));
});
for (let t = 0; t < 50; t++) batch(t);
const txid = walship.flush(db, 10000);
fs.cpSync('backups/app', 'replica-at-flush', { recursive: true });
const status = walship.status(db);
const other = new Database('data/other.db');  // the ordinary way, after open()
const otherStatus = walship.status(other);
other.close();
const journal = db.pragma('journal_mode', { simple: true });
db.close();
console.log(JSON.stringify({ txid, status, other_status: otherStatus, journal,
  extension: walship.extensionPath, platform: walship.platform }));
""" % TWO_LINES


def test_npm_open_flush_restore(node_project, tmp_path):
    app = fresh_app(node_project, tmp_path)
    (app / "index.js").write_text(NODE_APP)
    p = host_run(["node", "index.js"], host_env(), app)
    r = json_line(p)
    assert r["journal"] == "wal", r
    assert isinstance(r["txid"], int) and r["txid"] >= 1, r
    st = r["status"]
    assert st["path"] == str(app / "data" / "app.db") and st["replicated"] is True, st
    assert st["txid_int"] == r["txid"] and st["pending_txns"] == 0 and st["last_error"] is None, st
    # The extension came from the installed tarball's prebuilds/ for this platform.
    ext = Path(r["extension"])
    assert ext == node_project["dir"] / "node_modules" / "walship" / "prebuilds" / r["platform"] / "libwalvfs.so", r
    assert r["platform"] == f"{sys.platform}-{'x64' if os.uname().machine == 'x86_64' else 'arm64'}", r
    # new Database() after open(): not through walship (walship_status() of a foreign connection
    # lists the databases walship knows instead of describing its own).
    assert "path" not in r["other_status"], r["other_status"]
    assert [d["path"] for d in r["other_status"]["databases"]] == [st["path"]], r["other_status"]
    assert count(app / "data" / "app.db", "items") == 2000
    check_restores(app, app / "replica-at-flush")


def test_npm_open_keeps_walship_default_when_set(node_project, tmp_path):
    """With WALSHIP_DEFAULT=1 walship was the default before open(), and stays it afterwards."""
    app = fresh_app(node_project, tmp_path)
    script = (
        "const fs = require('fs'); fs.mkdirSync('data', { recursive: true });"
        "const { open, status } = require('walship'); const Database = require('better-sqlite3');"
        "const a = open('data/a.db'); const b = new Database('data/b.db');"
        "console.log(JSON.stringify({ a: 'path' in status(a), b: 'path' in status(b) }));"
    )
    on = json_line(host_run(["node", "-e", script], host_env(extra={"WALSHIP_DEFAULT": "1"}), app))
    assert on == {"a": True, "b": True}, on
    shutil.rmtree(app / "data")
    off = json_line(host_run(["node", "-e", script], host_env(), app))
    assert off == {"a": True, "b": False}, off


NODE_SIGTERM_APP = """'use strict';
const fs = require('fs');
const { open, flushOnExit, status } = require('walship');
fs.mkdirSync('data', { recursive: true });
const db = open('data/app.db');
db.pragma('journal_mode = WAL');
db.exec('CREATE TABLE ticks(id INTEGER PRIMARY KEY, at INTEGER NOT NULL, pad BLOB)');
flushOnExit(db, { timeoutMs: 10000 });
const ins = db.prepare('INSERT INTO ticks(at, pad) VALUES (?, randomblob(300))');
const step = db.transaction(() => { for (let k = 0; k < 20; k++) ins.run(Date.now()); });
let n = 0;
let ready = false;
(function loop() {
  step();
  n += 20;
  // Ready once something reached the replica on its own (its first sync), so what follows is
  // the tail only the flush on SIGTERM ships.
  if (!ready && n % 1000 === 0 && n >= 2000 && status(db).txid_int > 0) {
    ready = true;
    console.log('ready');
  }
  setImmediate(loop);
})();
"""


def test_npm_flush_on_exit_sigterm(node_project, tmp_path):
    app = fresh_app(node_project, tmp_path)
    (app / "index.js").write_text(NODE_SIGTERM_APP)
    proc = popen(["node", "index.js"], host_env(), app)
    try:
        # Bounded: an app that never sees its first sync must fail here, not write on until
        # the disk is full (CI once did, when the first snapshot lost every race to the writer).
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        if not ready:
            proc.kill()
        line = proc.stdout.readline().strip() if ready else "(nothing in 120 s)"
        assert line == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")
        time.sleep(0.3)  # keep committing: these rows are not shipped yet (sync-interval 1s)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, err)
    assert "walship: SIGTERM" not in err, err  # no flush or close error reported
    src = app / "data" / "app.db"
    n = count(src, "ticks")
    assert n > 2000, n
    restored = check_restores(app)
    assert count(restored, "ticks") == n


def test_npm_missing_prebuild_names_platform(node_project, tmp_path):
    app = tmp_path / "app"
    nm = app / "node_modules"
    nm.mkdir(parents=True)
    shutil.copytree(node_project["dir"] / "node_modules" / "walship", nm / "walship")
    shutil.rmtree(nm / "walship" / "prebuilds")
    (nm / "better-sqlite3").symlink_to(node_project["dir"] / "node_modules" / "better-sqlite3")
    script = (
        "const w = require('walship'); const out = {};"
        "try { w.extensionPath; } catch (e) { out.path = e.message; }"
        "try { w.open('x.db'); } catch (e) { out.open = e.message; }"
        "console.log(JSON.stringify({ ...out, platform: w.platform }));"
    )
    r = json_line(host_run(["node", "-e", script], host_env(), app))
    for key in ("path", "open"):
        assert f"no prebuilt extension for {r['platform']}" in r[key], r
        assert "it has: none" in r[key], r


# ---------------------------------------------------------------------------------------------
# Python

PY_APP = """import json, shutil, sys
import walship

mode = sys.argv[1]
if mode == "stdlib":
    con = walship.connect("data/app.db", isolation_level=None, timeout=5)  # kwargs pass through
    odd = walship.connect("data/odd ?#%name.db", isolation_level=None)     # needs URI escaping
    odd.execute("CREATE TABLE IF NOT EXISTS x(a)")
    odd_status = walship.status(odd)
    odd.close()
elif mode == "apsw":
    import apsw
    walship.load(apsw.Connection(":memory:"))
    con = apsw.Connection("data/app.db", vfs="walship")
    odd_status = None
else:
    con = walship.apsw_connect("data/app.db")
    odd_status = None

journal = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
con.execute("PRAGMA cache_size=-8000")
con.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, label TEXT NOT NULL, payload BLOB)")
for t in range(50):
    con.execute("BEGIN")
    for k in range(40):
        con.execute("INSERT INTO items(label, payload) VALUES (?, ?)",
                    (f"row-{t}-{k}", bytes([t]) * (3000 if k % 10 == 0 else 32)))
    con.execute("COMMIT")
txid = walship.flush(con, 10000)
shutil.copytree("backups/app", "replica-at-flush")
status = walship.status(con)
con.close()
print(json.dumps({"txid": txid, "status": status, "journal": journal, "odd_status": odd_status,
                  "extension": walship.EXTENSION, "version": sys.version}))
"""


def run_py_app(python, py_package, tmp_path, mode):
    app = tmp_path / "app"
    (app / "data").mkdir(parents=True)
    (app / "litestream.yml").write_text(CONFIG)
    (app / "app.py").write_text(PY_APP)
    r = json_line(host_run([python, "app.py", mode], host_env(extra={"PYTHONPATH": str(py_package)}), app))
    assert r["journal"] == "wal", r
    assert isinstance(r["txid"], int) and r["txid"] >= 1, r
    st = r["status"]
    assert st["path"] == str(app / "data" / "app.db") and st["replicated"] is True, st
    assert st["txid_int"] == r["txid"] and st["pending_txns"] == 0, st
    assert Path(r["extension"]) == py_package / "walship" / "libwalvfs.so", r
    assert count(app / "data" / "app.db", "items") == 2000
    check_restores(app, app / "replica-at-flush")
    return r, app


def test_python_stdlib_sqlite3(py_package, tmp_path):
    if not Path(SYS_PYTHON).exists():
        pytest.fail(f"{SYS_PYTHON} is missing: apt-get install python3")
    r, app = run_py_app(SYS_PYTHON, py_package, tmp_path, "stdlib")
    assert r["version"].startswith("3."), r
    # Not named by the config: opened through walship (the registry knows it), not replicated.
    assert r["odd_status"] == {"path": str(app / "data" / "odd ?#%name.db"), "replicated": False}, r
    assert (app / "data" / "odd ?#%name.db").exists()


@pytest.mark.parametrize("mode", ["apsw", "apsw_connect"])
def test_python_apsw(py_package, tmp_path, mode):
    try:
        import apsw  # noqa: F401
    except ImportError:
        pytest.fail("apsw is not installed for the pytest python: pip install apsw")
    run_py_app(sys.executable, py_package, tmp_path, mode)


def test_python_without_extension_loading_points_to_apsw(py_package, tmp_path):
    """pyenv's python3: its sqlite3 has no enable_load_extension. Where the pytest python can load
    extensions, a connection object without the method stands in for one."""
    script = (
        "import sqlite3, sys, walship\n"
        "try:\n"
        "    if hasattr(sqlite3.Connection, 'enable_load_extension'):\n"
        "        walship.load(type('Connection', (), {})())\n"
        "    else:\n"
        "        walship.connect('app.db')\n"
        "except walship.WalshipError as e:\n"
        "    print(e)\n"
    )
    p = host_run([sys.executable, "-c", script], host_env(extra={"PYTHONPATH": str(py_package)}), tmp_path)
    msg = p.stdout
    assert "cannot load extensions" in msg and "--enable-loadable-sqlite-extensions" in msg, msg
    assert "/usr/bin/python3" in msg and "pip install apsw" in msg and "walship.apsw_connect" in msg, msg
    assert sys.executable in msg, msg


def test_python_wheel_installs_into_fresh_venv(built, tmp_path):
    wheels = tmp_path / "wheels"
    host_run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index", "-w", wheels, PY_PKG],
             host_env(), tmp_path, timeout=300)
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    wheel = wheels / f"walship-0.1.0-py3-none-{plat}.whl"
    assert wheel.exists(), list(wheels.iterdir())
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert {"walship/__init__.py", "walship/libwalvfs.so", "walship-0.1.0.dist-info/WHEEL"} <= names, names
        record = list(csv.reader(io.StringIO(z.read("walship-0.1.0.dist-info/RECORD").decode())))
        assert {row[0] for row in record} == names, (record, names)
        for name, digest, size in record:
            if digest:
                data = z.read(name)
                want = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert (digest, int(size)) == (want, len(data)), name
    venv = tmp_path / "venv"
    host_run([sys.executable, "-m", "venv", venv], host_env(), tmp_path, timeout=300)
    host_run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index", wheel], host_env(), tmp_path,
             timeout=300)
    p = host_run([venv / "bin" / "python", "-c", "import os, walship; print(os.path.getsize(walship.extension_path()))"],
                 host_env(), tmp_path)
    assert int(p.stdout) > 100_000, p.stdout
