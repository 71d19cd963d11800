"""The S3 server unreachable for 60 s (a fault-injecting proxy in front of a real moto resets
every connection) while the application keeps committing: no write fails or waits, the backlog
goes to the local spool, memory stays flat, and everything drains once the server is back."""
import json
import subprocess
import time

from conftest import EXT, HERE, SYS_PYTHON, content_hash, integrity, walship_restore
from faultproxy import FaultProxy
from test_s3 import BUCKET, KEY_ID, SECRET, moto  # noqa: F401  (moto is a fixture)

OUTAGE_S = 60


def test_sixty_second_outage(built, moto, tmp_path):
    proxy = FaultProxy(moto["port"])
    db, cfg, out = tmp_path / "app.db", tmp_path / "litestream.yml", tmp_path / "out.json"
    cfg.write_text(
        f"dbs:\n  - path: {db}\n    replica:\n      type: s3\n      bucket: {BUCKET}\n      path: outage\n"
        f"      endpoint: http://127.0.0.1:{proxy.port}\n      region: us-east-1\n      sync-interval: 500ms\n"
    )
    env = {"WALSHIP_CONFIG": str(cfg), "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([SYS_PYTHON, str(HERE / "outage_driver.py"), str(EXT), str(db), str(out),
                             str(OUTAGE_S + 12)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        proxy.mode = "reset"
        time.sleep(OUTAGE_S)
        proxy.mode = "up"
        _, stderr = proc.communicate(timeout=120)
    finally:
        proxy.stop()
    assert proc.returncode == 0, stderr[-3000:]
    r = json.loads(out.read_text())
    print(f"commits={r['commits']} slowest={r['slowest_ms']:.1f}ms spooled_max={r['max_spooled']} "
          f"rss baseline={r['baseline_rss_kib']}KiB peak={r['peak_rss_kib']}KiB")
    assert r["commits"] > 5000
    assert r["slowest_ms"] < 1000, f"a commit waited {r['slowest_ms']:.0f} ms during the outage"
    # Files are spooled while storage is down (fewer than one per sync interval: each probe of
    # the storage spends the backend's retry budget, and batches grow meanwhile).
    assert r["max_spooled"] >= 5, r
    assert r["final_status"]["spooled_files"] == 0 and r["final_status"]["last_error"] is None, r["final_status"]
    assert stderr.count("wrote snapshot") == 1, "no snapshot was needed to recover"
    # Memory stays bounded: the backlog lives on disk, not in the process.
    assert r["peak_rss_kib"] - r["baseline_rss_kib"] < 64 * 1024, r
    target = tmp_path / "restored.db"
    walship_restore_s3 = [str(HERE.parents[1] / "target" / "release" / "walship"), "restore", "-o", str(target),
                          f"s3://{BUCKET}/outage?endpoint={moto['endpoint']}"]
    p = subprocess.run(walship_restore_s3, env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert integrity(target) == "ok"
    assert content_hash(target) == r["hash"] == content_hash(db)
