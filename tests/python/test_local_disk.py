"""Bad local disk: walship's directory next to the database (`.<db>-walship`, where the spool,
the local state and the status file live) is full or read-only. The message names the
directory and what to do, the app's writes all succeed, and nothing committed is lost: once
storage answers, the replica restores to the app's database.

The directory is a small tmpfs mounted for the test (root only: skipped elsewhere, saying so).
"""
import json
import subprocess
import time

import pytest

from conftest import EXT, HERE, SYS_PYTHON, WALSHIP, content_hash, integrity
from faultproxy import FaultProxy
from test_s3 import BUCKET, KEY_ID, SECRET, moto  # noqa: F401 (fixture)


def mount_tmpfs(path, options):
    path.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {p.stderr.strip()}")


def umount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def start(tmp_path, port, name, seconds):
    db, cfg, out = tmp_path / "app.db", tmp_path / "litestream.yml", tmp_path / "out.json"
    cfg.write_text(
        f"dbs:\n  - path: {db}\n    replica:\n      type: s3\n      bucket: {BUCKET}\n      path: {name}\n"
        f"      endpoint: http://127.0.0.1:{port}\n      region: us-east-1\n      sync-interval: 200ms\n")
    env = {"WALSHIP_CONFIG": str(cfg), "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([SYS_PYTHON, str(HERE / "outage_driver.py"), str(EXT), str(db), str(out), str(seconds)],
                            env=env, stderr=subprocess.PIPE, text=True)
    return db, out, env, proc


def check_restore(moto, name, env, db, out, tmp_path):
    r = json.loads(out.read_text())
    assert r["slowest_ms"] < 1000, f"a commit waited {r['slowest_ms']:.0f} ms"
    target = tmp_path / "restored.db"
    p = subprocess.run([str(WALSHIP), "restore", "-o", str(target), f"s3://{BUCKET}/{name}?endpoint={moto['endpoint']}"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert integrity(target) == "ok"
    assert content_hash(target) == r["hash"] == content_hash(db)
    return r


def test_full_spool_disk_during_an_outage(built, moto, tmp_path):
    work = tmp_path / ".app.db-walship"
    mount_tmpfs(work, "size=256k")
    proxy = FaultProxy(moto["port"])
    try:
        db, out, env, proc = start(tmp_path, proxy.port, "fulldisk", 30)
        time.sleep(3)
        proxy.mode = "reset"  # storage down: level-0 files go to the spool until the disk is full
        time.sleep(15)
        proxy.mode = "up"
        _, stderr = proc.communicate(timeout=120)
    finally:
        proxy.stop()
        umount(work)
    assert proc.returncode == 0, stderr[-3000:]
    # The spool filled the disk: said once, with what it means and what follows.
    # (Either the spool or the staging copy of unshipped WAL frames meets the full disk first;
    # both say so, and both end in a resync of the differing pages once there is room.)
    assert ("spooling it failed too" in stderr or "could not copy unshipped WAL frames" in stderr) \
        and "No space left on device" in stderr, stderr[-3000:]
    # Nothing is lost: the replica stays at its last file, and the pages the dropped file held
    # are in the database, so a resync ships them when storage returns (no TXID gap, no full
    # snapshot).
    assert ("the changes are shipped when storage returns" in stderr
            or "resync at TXID" in stderr), stderr[-3000:]
    r = check_restore(moto, "fulldisk", env, db, out, tmp_path)
    assert r["final_status"]["last_error"] is None, r["final_status"]
    print(f"commits={r['commits']} slowest={r['slowest_ms']:.1f}ms max_spooled={r['max_spooled']}")


def test_read_only_walship_directory(built, moto, tmp_path):
    work = tmp_path / ".app.db-walship"
    mount_tmpfs(work, "ro,size=64k")
    try:
        db, out, env, proc = start(tmp_path, moto["port"], "readonly", 5)
        _, stderr = proc.communicate(timeout=120)
    finally:
        umount(work)
    assert proc.returncode == 0, stderr[-3000:]
    # Named once each (not every sync), with the directory and what to do.
    state = [line for line in stderr.splitlines() if "cannot write walship's local state" in line]
    assert len(state) == 1 and str(work) in state[0] and "Read-only file system" in state[0], stderr[-3000:]
    assert "make the directory writable" in state[0]
    assert stderr.count("walship status` will not show this database") == 1, stderr[-3000:]
    # Replication itself needs no local disk while storage answers.
    check_restore(moto, "readonly", env, db, out, tmp_path)
