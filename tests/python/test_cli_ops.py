"""Operator commands: `walship databases` lists what the config names, `walship verify` restores
to a temporary file and checks it (passing on a sound replica, failing by name on a damaged
one, never writing the database or leaving files behind), `walship snapshot` asks the running
app for a snapshot and waits for it (or leaves the request for the next open), and restore
shows its progress."""
import json
import os
import re
import subprocess
import time

from conftest import EXT, SYS_PYTHON, WALSHIP, content_hash, integrity, run

APP = r'''
import sqlite3, sys
l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(sys.argv[1])
c = sqlite3.connect(f"file:{sys.argv[2]}?vfs=walship", uri=True, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("CREATE TABLE IF NOT EXISTS t(v)")
for i in range(int(sys.argv[3])):
    c.execute("INSERT INTO t VALUES (randomblob(300))")
    if i % 50 == 0: c.execute("SELECT walship_flush(5000)").fetchone()
print(c.execute("SELECT walship_flush(5000)").fetchone()[0]); c.close()
'''


def setup(tmp_path):
    db, replica, cfg = tmp_path / "app.db", tmp_path / "replica", tmp_path / "litestream.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replica:\n      type: file\n      path: {replica}\n"
                   "      sync-interval: 50ms\n")
    (tmp_path / "app.py").write_text(APP)
    p = run([SYS_PYTHON, str(tmp_path / "app.py"), str(EXT), str(db), "400"], env={"WALSHIP_CONFIG": str(cfg)})
    return db, replica, cfg, int(p.stdout.split()[-1])


def walship(*args, env=None):
    return subprocess.run([str(WALSHIP), *map(str, args)], capture_output=True, text=True, timeout=120, env=env)


def test_databases_lists_the_config(built, tmp_path):
    db, replica, cfg, _ = setup(tmp_path)
    p = walship("databases", "-config", cfg)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["PATH", "SYNC-INTERVAL", "REPLICA"]
    assert lines[1].split() == [str(db), "50ms", f"file://{replica}"]
    j = json.loads(walship("databases", "-json", "-config", cfg).stdout)
    assert j == [{"path": str(db), "replica": f"file://{replica}", "sync_interval": "50ms"}]
    p = walship("databases", "-config", tmp_path / "missing.yml")
    assert p.returncode == 1 and "missing.yml" in p.stderr


def test_verify_passes_a_sound_replica_and_names_a_damaged_file(built, tmp_path):
    db, replica, cfg, txid = setup(tmp_path)
    before = db.read_bytes()
    p = walship("verify", "-config", cfg, db)
    assert p.returncode == 0, p.stderr
    assert f"at TXID {txid:016x}" in p.stdout and "integrity ok" in p.stdout, p.stdout
    p = walship("verify", "-txid", f"{txid - 1:x}", f"file://{replica}")
    assert p.returncode == 0 and f"at TXID {txid - 1:016x}" in p.stdout, p.stdout + p.stderr
    # A flipped byte in the newest level-0 file: refused by name, with its TXID range.
    newest = sorted((replica / "ltx" / "0").glob("*.ltx"))[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    p = walship("verify", "-config", cfg, db, env={"PATH": "/usr/bin:/bin", "TMPDIR": str(scratch)})
    assert p.returncode == 1, p.stdout
    assert newest.name in p.stderr and "corrupt" in p.stderr, p.stderr
    # Verify never touches the database and leaves no temporary file.
    assert db.read_bytes() == before
    assert not list(scratch.iterdir()), "the temporary image was left behind"


def test_restore_shows_progress(built, tmp_path):
    db, replica, cfg = tmp_path / "big.db", tmp_path / "replica", tmp_path / "litestream.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replica:\n      type: file\n      path: {replica}\n")
    run(["sqlite3", str(db), "PRAGMA journal_mode=WAL; CREATE TABLE t(v); "
         "INSERT INTO t SELECT randomblob(4000) FROM generate_series(1, 20000);"])
    (tmp_path / "app.py").write_text(APP)
    run([SYS_PYTHON, str(tmp_path / "app.py"), str(EXT), str(db), "1"], env={"WALSHIP_CONFIG": str(cfg)})
    # Not a terminal: plain lines, ending with a summary of what was downloaded.
    p = walship("restore", "-o", tmp_path / "plain.db", f"file://{replica}")
    assert p.returncode == 0, p.stderr
    summary = p.stderr.strip().splitlines()[-1]
    assert summary.startswith("restore: ") and re.search(r" MiB in (\d+) of \1 files in ", summary), p.stderr
    assert "\x1b" not in p.stderr
    # On a terminal (a pty from `script`): a bar redrawn in place, cleared at the end.
    out = tmp_path / "tty.db"
    p = subprocess.run(["script", "-qefc", f"{WALSHIP} restore -o {out} file://{replica}", "/dev/null"],
                       capture_output=True, timeout=120)
    shown = p.stdout.decode(errors="replace")
    assert p.returncode == 0, shown
    assert "\r\x1b[2K[" in shown and "MiB/s, ETA" in shown and " files, " in shown, repr(shown[:500])
    assert "restored TXID" in shown


SLOW_APP = r'''
import sqlite3, sys, time
l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(sys.argv[1])
c = sqlite3.connect(f"file:{sys.argv[2]}?vfs=walship", uri=True, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("CREATE TABLE IF NOT EXISTS t(v)")
end = time.time() + float(sys.argv[3])
while time.time() < end:
    c.execute("INSERT INTO t VALUES (randomblob(100))"); time.sleep(0.01)
print(c.execute("SELECT walship_flush(5000)").fetchone()[0]); c.close()
'''


def test_snapshot_asks_the_running_app_and_waits(built, tmp_path):
    db, replica, cfg, _ = setup(tmp_path)
    (tmp_path / "slow.py").write_text(SLOW_APP)
    env = {**os.environ, "WALSHIP_CONFIG": str(cfg)}
    app = subprocess.Popen([SYS_PYTHON, str(tmp_path / "slow.py"), str(EXT), str(db), "6"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        status = tmp_path / ".app.db-walship" / "status.json"
        while not (status.exists() and '"running":true' in status.read_text()):
            assert time.time() < deadline and app.poll() is None, "the app never reported running"
            time.sleep(0.1)
        before = {f.name for f in (replica / "ltx" / "9").glob("*.ltx")}
        p = walship("snapshot", "-config", cfg, db)
        assert p.returncode == 0, p.stderr
        m = re.search(r"snapshot written at TXID ([0-9a-f]{16}) by process (\d+)", p.stdout)
        assert m and int(m.group(2)) == app.pid, p.stdout
        new = {f.name for f in (replica / "ltx" / "9").glob("*.ltx")} - before
        assert new == {f"0000000000000001-{m.group(1)}.ltx"}, new
        out, err = app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert app.returncode == 0, err
    assert f"wrote snapshot at TXID {m.group(1)} (requested by `walship snapshot`)" in err, err
    assert not (tmp_path / ".app.db-walship" / "snapshot-request").exists()
    # The replica still restores to the app's final state.
    assert walship("restore", "-o", tmp_path / "r.db", f"file://{replica}").returncode == 0
    assert integrity(tmp_path / "r.db") == "ok" and content_hash(tmp_path / "r.db") == content_hash(db)


def test_snapshot_with_no_app_is_taken_at_the_next_open(built, tmp_path):
    db, replica, cfg, _ = setup(tmp_path)
    snaps = lambda: len(list((replica / "ltx" / "9").glob("*.ltx")))  # noqa: E731
    n0 = snaps()
    p = walship("snapshot", "-config", cfg, db)
    assert p.returncode == 0 and "no process is replicating" in p.stdout, p.stdout + p.stderr
    assert (tmp_path / ".app.db-walship" / "snapshot-request").exists()
    run([SYS_PYTHON, str(tmp_path / "app.py"), str(EXT), str(db), "5"], env={"WALSHIP_CONFIG": str(cfg)})
    assert snaps() == n0 + 1
    assert not (tmp_path / ".app.db-walship" / "snapshot-request").exists()
    p = walship("snapshot", "-config", cfg, tmp_path / "not-configured.db")
    assert p.returncode == 1 and "not in config" in p.stderr, p.stderr
