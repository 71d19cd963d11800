"""Storage outage on a file replica: the replica directory is replaced by a plain file (every
upload fails) for several seconds while the app keeps committing, then restored."""
import json
import shutil
import subprocess
import time

from conftest import EXT, HERE, SYS_PYTHON, content_hash, integrity, litestream_restore, walship_restore, write_config


def test_outage_spools_and_drains_without_blocking_the_app(built, work):
    db, replica = work / "app.db", work / "replica"
    cfg = write_config(work / "l.yml", db, replica, sync_interval="100ms")
    out = work / "out.json"
    proc = subprocess.Popen([SYS_PYTHON, str(HERE / "outage_driver.py"), str(EXT), str(db), str(out), "9"],
                            env={"WALSHIP_CONFIG": str(cfg), "PATH": "/usr/bin:/bin"},
                            stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    assert (replica / "ltx").exists(), "replication should have started"
    hidden = work / "replica-away"
    replica.rename(hidden)
    replica.write_text("storage is down")
    time.sleep(4)
    replica.unlink()
    hidden.rename(replica)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    r = json.loads(out.read_text())
    assert r["commits"] > 300
    # The outage was seen, files were spooled, and nothing waited on it.
    assert r["max_spooled"] >= 5, r
    assert any("spooled locally" in e for e in r["errors_seen"]), r["errors_seen"]
    assert r["slowest_ms"] < 1000, f"a commit waited {r['slowest_ms']:.0f} ms during the outage"
    # After the outage: drained, no error, and no snapshot was needed to recover.
    assert r["final_status"]["spooled_files"] == 0 and r["final_status"]["last_error"] is None, r["final_status"]
    assert stderr.count("wrote snapshot") == 1, stderr
    assert "uploaded" in stderr and "spooled file(s)" in stderr
    for restore in (walship_restore, litestream_restore):
        target = work / f"restored-{restore.__name__}.db"
        restore(replica, target)
        assert integrity(target) == "ok"
        assert content_hash(target) == r["hash"] == content_hash(db)
