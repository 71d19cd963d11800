"""`walship status`: what each database's application reported, read from the status file the
shipper keeps beside the database."""
import json
import subprocess
import time

from conftest import EXT, HERE, SYS_PYTHON, WALSHIP, run, write_config


def test_status_after_a_clean_run(built, work):
    db = work / "app.db"
    cfg = write_config(work / "l.yml", db, work / "replica", sync_interval="100ms")
    p = run([SYS_PYTHON, str(HERE / "app_driver.py"), str(EXT), str(db), "write-flush", "50"],
            env={"WALSHIP_CONFIG": str(cfg)})
    flushed = json.loads(p.stdout.strip().splitlines()[-1])["flush"]
    st = json.loads(run([str(WALSHIP), "status", "-config", str(cfg), "-json"]).stdout)
    assert len(st) == 1 and st[0]["path"] == str(db)
    assert st[0]["txid_int"] == flushed and st[0]["last_error"] is None and st[0]["running"] is False, st
    table = run([str(WALSHIP), "status", "-config", str(cfg)]).stdout
    assert f"{flushed:016x}" in table and "stopped" in table, table


def test_status_shows_a_failing_replica_while_the_app_runs(built, work):
    (work / "blocker").write_text("not a directory")
    db = work / "app.db"
    cfg = write_config(work / "l.yml", db, work / "blocker" / "replica", sync_interval="100ms",
                       extra="shutdown-sync-timeout: 1s\n")
    script = work / "app.py"
    script.write_text(
        "import sqlite3, sys, time\n"
        "l = sqlite3.connect(':memory:'); l.enable_load_extension(True); l.load_extension(sys.argv[1])\n"
        "c = sqlite3.connect(f'file:{sys.argv[2]}?vfs=walship', uri=True, isolation_level=None)\n"
        "c.execute('PRAGMA journal_mode=WAL'); c.execute('CREATE TABLE t(x)')\n"
        "for i in range(60): c.execute('INSERT INTO t VALUES (?)', (i,)); time.sleep(0.05)\n"
    )
    proc = subprocess.Popen([SYS_PYTHON, str(script), str(EXT), str(db)], env={"WALSHIP_CONFIG": str(cfg)},
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        table = run([str(WALSHIP), "status", "-config", str(cfg)]).stdout
        assert f"running {proc.pid}" in table, table
        st = json.loads(run([str(WALSHIP), "status", str(db), "-json"]).stdout)[0]
        assert st["running"] is True and "blocker/replica" in (st["last_error"] or ""), st
    finally:
        proc.wait(timeout=30)
