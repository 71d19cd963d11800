"""Storage faults while the app writes: an HTTP-aware fault proxy (httpfaults.py) in front of the
real S3 server answers a share of requests with 500 or 503 SlowDown, or cuts answers short (reset
or clean close mid-body), then swallows every request for a minute (a blackhole: the client's
own timeouts must fire). The app commits throughout: no commit waits on storage, nothing is lost,
the backlog drains once storage answers again, and the replica restores to the app's database.
"""
import json
import subprocess
import time

from conftest import EXT, HERE, SYS_PYTHON, WALSHIP, content_hash, integrity
from httpfaults import HttpFaultProxy
from test_s3 import BUCKET, KEY_ID, SECRET, moto  # noqa: F401 (fixture)

FAULTS_S = 20
BLACKHOLE_S = 60


def test_faults_and_a_minute_long_blackhole(built, moto, tmp_path):
    proxy = HttpFaultProxy(moto["port"], seed=7)
    db, cfg, out = tmp_path / "app.db", tmp_path / "litestream.yml", tmp_path / "out.json"
    cfg.write_text(
        f"dbs:\n  - path: {db}\n    replica:\n      type: s3\n      bucket: {BUCKET}\n      path: faults\n"
        f"      endpoint: http://127.0.0.1:{proxy.port}\n      region: us-east-1\n      sync-interval: 200ms\n")
    env = {"WALSHIP_CONFIG": str(cfg), "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
           "PATH": "/usr/bin:/bin", "WALSHIP_LOG": "info"}
    seconds = 3 + FAULTS_S + BLACKHOLE_S + 8
    proc = subprocess.Popen([SYS_PYTHON, str(HERE / "outage_driver.py"), str(EXT), str(db), str(out),
                             str(seconds)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        proxy.rates = {"500": 0.15, "503": 0.15, "reset": 0.15, "truncate": 0.15}
        time.sleep(FAULTS_S)
        proxy.rates = {}
        proxy.blackhole = True
        time.sleep(BLACKHOLE_S)
        proxy.blackhole = False
        _, stderr = proc.communicate(timeout=240)
    finally:
        proxy.blackhole = False
        proxy.stop()
    assert proc.returncode == 0, stderr[-3000:]
    r = json.loads(out.read_text())
    print(f"injected {proxy.injected}, forwarded {proxy.forwarded}; commits={r['commits']} "
          f"slowest={r['slowest_ms']:.1f}ms spooled_max={r['max_spooled']}")
    for fault, n in proxy.injected.items():
        assert n >= 1, f"no {fault} fault was injected: {proxy.injected}"
    # The app never waited on storage, and the backlog drained.
    assert r["commits"] > 5000
    assert r["slowest_ms"] < 1000, f"a commit waited {r['slowest_ms']:.0f} ms"
    st = r["final_status"]
    assert st["spooled_files"] == 0 and st["last_error"] is None, st
    # Nothing lost: the replica restores to exactly the app's database.
    target = tmp_path / "restored.db"
    p = subprocess.run([str(WALSHIP), "restore", "-o", str(target),
                        f"s3://{BUCKET}/faults?endpoint={moto['endpoint']}"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert integrity(target) == "ok"
    assert content_hash(target) == r["hash"] == content_hash(db)
