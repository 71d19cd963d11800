"""`walship replicate -exec` (issue 14): the users' programs, unchanged, with walship injected.

Every app below is code a Litestream user already has: no `load_extension`, no `?vfs=`, no
walship package; only the command line changes from `litestream replicate` to `walship replicate`.
Each one that claims data is replicated is restored with `walship restore -o` and compared with
the database it left by a hash of its `iterdump()`, plus `PRAGMA integrity_check`.

* the sqlite3 shell (system libsqlite3, through LD_PRELOAD): output byte for byte what it prints
  without walship (SQLite is not initialised before the shell configures it), replica equal;
* Debian's /usr/bin/python3, SIGTERMed mid-write: the signal reaches it, walship dies of the same
  signal, and what python committed but had not shipped is shipped by walship after it (said on
  stderr); replica equal;
* node with plain `require('better-sqlite3')`, SIGTERMed mid-write: the preload ships in-process
  (nothing left for walship), the process dies of SIGTERM, a database the config does not name
  is untouched; an app with its own SIGTERM handler keeps it (exit 0, its last row shipped); ESM
  `import` and an app that exits without closing (shipped at 'exit');
* the exit code is the child's, SIGHUP and SIGINT are passed on, a ^C typed on the terminal
  reaches the child once (not again from walship), a child that opens no configured database is
  reported once, `walship replicate` without -exec fails with one error;
* the CLI fixes of issue 14 item 4: `walship ltx URL | head` ends quietly, `restore
  -integrity-check` (no value) is accepted, restoring WALSHIP_REPLICA_URL itself names the
  per-database sub-paths.

No timed assertions: every wait is a liveness deadline.
"""
import fcntl
import hashlib
import os
import select
import signal
import sqlite3
import subprocess
import termios
import time
from pathlib import Path

import pytest

from conftest import SYS_PYTHON, WALSHIP, integrity
from package_harness import node_project  # noqa: F401 (fixture)
from test_hosts import host_env, host_run

CONFIG = """dbs:
  - path: ./data/app.db
    replicas:
      - type: file
        path: ./backups/app
        sync-interval: 1s
"""


def dump_hash(db: Path) -> str:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(con.iterdump()).encode()).hexdigest()
    finally:
        con.close()


def make_app(root: Path, sync_interval="1s") -> Path:
    app = root / "app"
    (app / "data").mkdir(parents=True)
    (app / "litestream.yml").write_text(CONFIG.replace("sync-interval: 1s", f"sync-interval: {sync_interval}"))
    return app


def check_restore(app: Path) -> Path:
    """`walship restore -config litestream.yml -o restored.db ./data/app.db` equals the database."""
    src = app / "data" / "app.db"
    out = app / "restored.db"
    host_run([WALSHIP, "restore", "-config", "litestream.yml", "-o", out, "./data/app.db"], host_env(), app)
    assert integrity(out) == "ok"
    assert integrity(src) == "ok"
    assert dump_hash(out) == dump_hash(src), "the replica does not restore to the database the app left"
    return out


def replicate(app: Path, cmd: str, env=None, **kw):
    return subprocess.Popen(
        [str(WALSHIP), "replicate", "-config", "litestream.yml", "-exec", cmd],
        cwd=app, env=env or host_env(), text=True, **kw,
    )


def run_replicate(app: Path, cmd: str, input=None, env=None, timeout=60):
    return subprocess.run(
        [str(WALSHIP), "replicate", "-config", "litestream.yml", "-exec", cmd],
        cwd=app, env=env or host_env(), input=input, capture_output=True, text=True, timeout=timeout,
    )


def read_line(proc, deadline_s=60) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], deadline_s)
    line = proc.stdout.readline().strip() if ready else f"(nothing in {deadline_s} s)"
    if line == "" and proc.poll() is not None:
        line = f"(exited {proc.returncode}: {proc.stderr.read()})"
    return line


def wait_for_first_sync(app: Path, proc, deadline_s=60):
    """Liveness: the replica holds a file, i.e. walship is shipping from inside the app."""
    end = time.monotonic() + deadline_s
    while not list((app / "backups" / "app").glob("ltx/*/*.ltx")):
        assert proc.poll() is None, f"the app ended ({proc.returncode}): {proc.stderr.read()}"
        assert time.monotonic() < end, f"nothing reached the replica in {deadline_s} s"
        time.sleep(0.05)


def sigterm_and_wait(proc):
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------
# Programs on the system's libsqlite3

SHELL_SQL = """PRAGMA journal_mode=WAL;
CREATE TABLE items(id INTEGER PRIMARY KEY, label TEXT NOT NULL, payload BLOB);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000)
  INSERT INTO items(label, payload) SELECT 'row-' || i, randomblob(i % 50 * 20) FROM c;
UPDATE items SET label = label || '!' WHERE id % 7 = 0;
DELETE FROM items WHERE id % 11 = 0;
SELECT count(*), sum(length(payload)) > 0 FROM items;
"""


def test_sqlite3_shell_unchanged_output_and_replica(built, tmp_path):
    app = make_app(tmp_path)
    p = run_replicate(app, "sqlite3 data/app.db", input=SHELL_SQL)
    plain = subprocess.run(["sqlite3", str(tmp_path / "plain.db")], input=SHELL_SQL, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    # Byte for byte what the shell prints without walship: in particular no "WARNING: attempt
    # to configure SQLite after initialization" (the preload must not initialise SQLite first).
    assert p.stdout == plain.stdout == "wal\n2728|1\n", (p.stdout, plain.stdout)
    assert "without opening a database" not in p.stderr, p.stderr
    check_restore(app)


PY_APP = """import sqlite3, time
con = sqlite3.connect("data/app.db", isolation_level=None)
con.execute("PRAGMA journal_mode=WAL")
con.execute("CREATE TABLE IF NOT EXISTS ticks(id INTEGER PRIMARY KEY, at REAL NOT NULL, pad BLOB)")
n, start = 0, time.monotonic()
while time.monotonic() - start < 90:  # bounded, whatever happens to the test
    con.execute("BEGIN")
    for _ in range(20):
        con.execute("INSERT INTO ticks(at, pad) VALUES (julianday('now'), randomblob(100))")
    con.execute("COMMIT")
    n += 20
    if n == 1000:
        print("ready", flush=True)
    time.sleep(0.001)
"""


def test_python_sigterm_mid_write_ships_the_tail(built, tmp_path):
    # The first sync is the snapshot at open; the next would come 10 s later, after the SIGTERM.
    app = make_app(tmp_path, sync_interval="10s")
    (app / "app.py").write_text(PY_APP)
    proc = replicate(app, f"{SYS_PYTHON} app.py", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert read_line(proc) == "ready"
        wait_for_first_sync(app, proc)
        time.sleep(0.3)  # python keeps committing: none of it is shipped yet
    finally:
        out, err = sigterm_and_wait(proc)
    # The signal reached python, which died of it; so did walship.
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, err)
    # python died before its last close: walship shipped what it had committed since its last sync.
    assert "shipped up to TXID" in err and "after /usr/bin/python3 ended" in err, err
    check_restore(app)


def test_exit_code_signals_and_the_never_opened_report(built, tmp_path):
    app = make_app(tmp_path)
    # Litestream's other spellings of the flags.
    p = subprocess.run(
        [str(WALSHIP), "replicate", "--config=litestream.yml", "--exec",
         f"{SYS_PYTHON} -c 'import sys; print(\"hi there\"); sys.exit(7)'"],
        cwd=app, env=host_env(), capture_output=True, text=True, timeout=60,
    )
    assert (p.returncode, p.stdout) == (7, "hi there\n"), p
    # Said once, naming the config's database.
    assert p.stderr.count("without opening a database") == 1, p.stderr
    assert str(app / "data" / "app.db") in p.stderr, p.stderr

    waiter = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda s, f: (print('INT', flush=True), sys.exit(3)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    (app / "waiter.py").write_text(waiter)
    for sig, expect in ((signal.SIGHUP, -signal.SIGHUP), (signal.SIGINT, 3)):
        proc = replicate(app, f"{SYS_PYTHON} waiter.py", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert read_line(proc) == "ready"
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == expect, (sig, proc.returncode, out, err)
        assert out == ("INT\n" if sig == signal.SIGINT else ""), out


def test_terminal_ctrl_c_reaches_the_command_once(built, tmp_path):
    """^C on the terminal signals walship and the command alike; walship must not add a second."""
    app = make_app(tmp_path)
    (app / "count.py").write_text(
        "import signal, time\n"
        "n = [0]\n"
        "signal.signal(signal.SIGINT, lambda s, f: n.__setitem__(0, n[0] + 1))\n"
        "print('ready', flush=True)\n"
        "end = time.monotonic() + 1.5\n"
        "while time.monotonic() < end:\n"
        "    time.sleep(0.05)\n"
        "print('count', n[0], flush=True)\n"
    )
    master, slave = os.openpty()

    def controlling_terminal():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [str(WALSHIP), "replicate", "-config", "litestream.yml", "-exec", f"{SYS_PYTHON} count.py"],
        cwd=app, env=host_env(), stdin=slave, stdout=slave, stderr=subprocess.PIPE,
        start_new_session=True, preexec_fn=controlling_terminal,
    )
    os.close(slave)
    seen = b""
    try:
        end = time.monotonic() + 30
        while b"ready" not in seen and time.monotonic() < end:
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 1024)
        assert b"ready" in seen, seen
        os.write(master, b"\x03")
        while (b"count" not in seen or not seen.endswith(b"\n")) and time.monotonic() < end:
            if select.select([master], [], [], 1)[0]:
                try:
                    seen += os.read(master, 1024)
                except OSError:
                    break
        proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"count 1\r\n" in seen, seen
    assert proc.returncode == 0, proc.stderr.read()


def test_replicate_without_exec_explains(built, tmp_path):
    app = make_app(tmp_path)
    p = host_run([WALSHIP, "replicate", "-config", "litestream.yml"], host_env(), app, check=False)
    assert p.returncode != 0 and p.stdout == "", p
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "-exec" in lines[0] and "inside your application's process" in lines[0], lines


def test_replicate_runs_the_configs_exec_without_the_flag(built, tmp_path):
    """Litestream runs the config's `exec:` when -exec is absent; so does walship."""
    app = make_app(tmp_path)
    cfg = app / "litestream.yml"
    cfg.write_text('exec: "sqlite3 -batch -init sql.txt data/app.db .quit"\n' + cfg.read_text())
    (app / "sql.txt").write_text(SHELL_SQL)
    p = host_run([WALSHIP, "replicate", "-config", "litestream.yml"], host_env(), app, check=False)
    assert p.returncode == 0, p.stderr
    assert "exec" not in p.stderr, p.stderr  # no "ignored" warning from the config any more
    check_restore(app)


# ---------------------------------------------------------------------------------------------
# node with better-sqlite3 (the package harness's fresh project: better-sqlite3 from npm)

NODE_APP = """'use strict';
const fs = require('fs');
const Database = require('better-sqlite3');
fs.mkdirSync('data', { recursive: true });
const db = new Database('data/app.db');
db.pragma('journal_mode = WAL');
db.exec('CREATE TABLE IF NOT EXISTS ticks(id INTEGER PRIMARY KEY, at INTEGER NOT NULL, pad BLOB)');
const other = new Database('data/other.db');  // not in litestream.yml
other.pragma('journal_mode = WAL');
other.exec('CREATE TABLE IF NOT EXISTS notes(x)');
other.prepare('INSERT INTO notes VALUES (?)').run('untouched');
const ins = db.prepare('INSERT INTO ticks(at, pad) VALUES (?, randomblob(100))');
const step = db.transaction(() => { for (let k = 0; k < 20; k++) ins.run(Date.now()); });
let n = 0;
const start = Date.now();
(function loop() {
  step();
  n += 20;
  if (n === 1000) console.log('ready');
  if (Date.now() - start < 90000) setTimeout(loop, 1);  // bounded, whatever happens to the test
})();
"""


def node_app(node_project, tmp_path: Path) -> Path:
    app = make_app(tmp_path)
    (app / "node_modules").symlink_to(node_project["dir"] / "node_modules")
    return app


def test_node_sigterm_mid_write(node_project, tmp_path):
    app = node_app(node_project, tmp_path)
    (app / "index.js").write_text(NODE_APP)
    proc = replicate(app, "node index.js", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert read_line(proc) == "ready"
        wait_for_first_sync(app, proc)
        time.sleep(0.3)  # node keeps committing: these are not shipped yet (sync-interval 1s)
    finally:
        out, err = sigterm_and_wait(proc)
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, err)
    # The preload shipped everything before node died: nothing was left for walship.
    assert "shipped up to TXID" not in err, err
    assert "walship: SIGTERM" not in err, err  # no flush or close error
    check_restore(app)
    # The database the config does not name was opened as before: no walship state beside it.
    assert not (app / "data" / ".other.db-walship").exists()
    con = sqlite3.connect(f"file:{app / 'data' / 'other.db'}?mode=ro", uri=True)
    assert con.execute("SELECT x FROM notes").fetchall() == [("untouched",)]
    con.close()


NODE_OWN_HANDLER = """'use strict';
const Database = require('better-sqlite3');
const db = new Database('data/app.db');
db.pragma('journal_mode = WAL');
db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)');
const ins = db.prepare('INSERT INTO t(v) VALUES (?)');
for (let i = 0; i < 100; i++) ins.run(`row-${i}`);
process.on('SIGTERM', () => {
  // The app's own graceful shutdown: a last write, then close and exit 0.
  setTimeout(() => { ins.run('at-sigterm'); db.close(); console.log('bye'); process.exit(0); }, 50);
});
console.log('ready');
setInterval(() => {}, 1000);
"""

NODE_ESM_NO_CLOSE = """import Database from 'better-sqlite3';
const db = new Database('data/app.db');
db.pragma('journal_mode = WAL');
db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)');
const ins = db.prepare('INSERT INTO t(v) VALUES (?)');
for (let i = 0; i < 500; i++) ins.run(`esm-${i}`);
console.log(db instanceof Database, typeof Database.SqliteError);
// exits without closing
"""


def test_node_own_sigterm_handler_and_esm_exit(node_project, tmp_path):
    app = node_app(node_project, tmp_path / "own")
    (app / "index.js").write_text(NODE_OWN_HANDLER)
    proc = replicate(app, "node index.js", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert read_line(proc) == "ready"
    finally:
        out, err = sigterm_and_wait(proc)
    # The app's handler ran and decided how to exit.
    assert (proc.returncode, out) == (0, "bye\n"), (proc.returncode, out, err)
    check_restore(app)

    app = node_app(node_project, tmp_path / "esm")
    (app / "index.mjs").write_text(NODE_ESM_NO_CLOSE)
    p = run_replicate(app, "node index.mjs")
    assert (p.returncode, p.stdout) == (0, "true function\n"), p
    # Shipped at 'exit' by the preload, not after it by walship.
    assert "shipped up to TXID" not in p.stderr and "without opening" not in p.stderr, p.stderr
    check_restore(app)


# ---------------------------------------------------------------------------------------------
# Issue 14 item 4: CLI fixes

def url_env(root: Path):
    return host_env(extra={"WALSHIP_REPLICA_URL": f"file://{root}"})


MANY_FILES = """import sqlite3
con = sqlite3.connect("m.db", isolation_level=None)
con.execute("PRAGMA journal_mode=WAL")
con.execute("CREATE TABLE t(x)")
for i in range(150):
    con.execute("INSERT INTO t VALUES (?)", (i,))
    con.execute("SELECT walship_flush(10000)").fetchone()  # one level-0 file each
"""


def test_cli_fixes(built, tmp_path):
    root = tmp_path / "root"
    work = tmp_path / "w"
    work.mkdir()
    # Two databases replicated with WALSHIP_REPLICA_URL and no config file.
    (work / "many.py").write_text(MANY_FILES)
    p = subprocess.run([str(WALSHIP), "replicate", "-exec", f"{SYS_PYTHON} many.py"], cwd=work,
                       env=url_env(root), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([str(WALSHIP), "replicate", "-exec", "sqlite3 b.db"], cwd=work, env=url_env(root),
                       input="PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (42);",
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr

    # `walship ltx URL | head -1`: the reader goes away after one line.
    ltx = subprocess.Popen([str(WALSHIP), "ltx", f"file://{root}/m.db"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    assert ltx.stdout.readline().startswith(b"LEVEL")
    ltx.stdout.close()
    err = ltx.stderr.read().decode()
    ltx.wait(timeout=30)
    assert "panicked" not in err and err == "", err
    assert ltx.returncode in (0, -signal.SIGPIPE), ltx.returncode

    # Restoring the URL itself names the databases' sub-paths.
    p = host_run([WALSHIP, "restore", "-o", work / "r.db", f"file://{root}"], host_env(), work, check=False)
    assert p.returncode == 1, p
    assert f"file://{root}/b.db" in p.stderr and f"file://{root}/m.db" in p.stderr, p.stderr
    assert "WALSHIP_REPLICA_URL" in p.stderr, p.stderr

    # -integrity-check with no value, before a flag and before the argument (Litestream users'
    # spelling): accepted, and walship checks.
    for i, args in enumerate((["-integrity-check", "-o", "OUT"], ["-o", "OUT", "-integrity-check"])):
        out = work / f"restored-{i}.db"
        args = [str(out) if a == "OUT" else a for a in args]
        p = host_run([WALSHIP, "restore", *args, f"file://{root}/m.db"], host_env(), work)
        assert "integrity ok" in p.stdout, p.stdout
        assert integrity(out) == "ok"
        assert dump_hash(out) == dump_hash(work / "m.db")
