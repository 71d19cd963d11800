"""Crash torture: a randomized workload through walship (torture_driver.py), replicating to the
local S3 server with short compaction, snapshot and retention intervals, is SIGKILLed at random
moments and restarted, again and again. After every kill the replica is restored and must be
a database that passes `integrity_check` and equals a state the driver committed, no older than
the last one walship_flush acknowledged. At the end a clean run's last commit must be restored
exactly.

`make test` runs 50 kills; `make torture` runs WALSHIP_TORTURE_KILLS (1000). The seed is
WALSHIP_TORTURE_SEED (default: random) and is printed, so a failure can be replayed.
"""
import collections
import os
import random
import signal
import sqlite3
import subprocess
import time

from conftest import EXT, HERE, SYS_PYTHON, WALSHIP, integrity
from test_s3 import BUCKET, KEY_ID, SECRET, moto  # noqa: F401 (fixture)
from torture_hash import digest_of, table_digest

KILLS = int(os.environ.get("WALSHIP_TORTURE_KILLS", "50"))

CONFIG = """
levels:
  - interval: 1s
  - interval: 3s
snapshot:
  interval: 4s
  retention: 8s
l0-retention: 1s
dbs:
  - path: {db}
    replica:
      type: s3
      bucket: {bucket}
      path: torture-{seed}
      endpoint: {endpoint}
      region: us-east-1
      sync-interval: 100ms
"""

# What the extension last logged before a kill says what it was doing (roughly: a step that
# logs nothing, e.g. an upload in flight, shows as the line before it).
PHASES = [("compacted", "compaction"), ("snapshot", "snapshot"), ("retention:", "retention"),
          ("shipped", "upload"), ("replicating to", "startup")]


def parse_log(path):
    """[(kind, hash)] in order, where kind is START, INTENT, ACK or DONE."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        out.append((parts[0], parts[-1]))
    return out


def restore(endpoint, seed, target):
    target.unlink(missing_ok=True)
    url = f"s3://{BUCKET}/torture-{seed}?endpoint={endpoint}"
    p = subprocess.run([str(WALSHIP), "restore", "-o", str(target), url], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET},
                       timeout=300)
    assert p.returncode == 0, f"restore failed:\n{p.stderr[-3000:]}"
    assert integrity(target) == "ok"
    con = sqlite3.connect(target)
    try:
        return digest_of(table_digest(con))
    finally:
        con.close()


def phase_of(stderr):
    for line in reversed(stderr.splitlines()):
        if line.startswith("walship"):
            for key, name in PHASES:
                if key in line:
                    return name
    return "startup"


def test_crash_torture(built, moto, tmp_path):
    seed = int(os.environ.get("WALSHIP_TORTURE_SEED", random.randrange(1 << 30)))
    print(f"torture: {KILLS} kills, WALSHIP_TORTURE_SEED={seed}")
    rng = random.Random(seed)
    db, log, out, cfg = tmp_path / "app.db", tmp_path / "driver.log", tmp_path / "restored.db", tmp_path / "cfg.yml"
    cfg.write_text(CONFIG.format(db=db, bucket=BUCKET, seed=seed, endpoint=moto["endpoint"]))
    env = {"PATH": "/usr/bin:/bin", "WALSHIP_CONFIG": str(cfg), "WALSHIP_LOG": "debug",
           "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    phases = collections.Counter()
    behind = []  # how many logged states the restore trailed the newest intent by
    for k in range(KILLS):
        errf = tmp_path / "driver.err"
        with open(errf, "w") as err:
            p = subprocess.Popen([SYS_PYTHON, str(HERE / "torture_driver.py"), str(EXT), str(db), str(log),
                                  str(seed * 100_003 + k)], env=env, stderr=err)
            # A third of the kills land early (open, first snapshot); the rest while it runs.
            time.sleep(rng.uniform(0.05, 0.5) if rng.random() < 0.33 else rng.uniform(0.5, 2.5))
            assert p.poll() is None, f"kill {k}: the driver exited by itself:\n{errf.read_text()[-3000:]}"
            p.send_signal(signal.SIGKILL)
            p.wait()
        phases[phase_of(errf.read_text())] += 1
        states = parse_log(log)
        last_ack = max((i for i, (kind, _) in enumerate(states) if kind == "ACK"), default=0)
        allowed = {h: i for i, (_, h) in enumerate(states) if i >= last_ack}
        got = restore(moto["endpoint"], seed, out)
        assert got in allowed, (
            f"kill {k} (seed {seed}): the restored database ({got}) is not a committed state at or after "
            f"the last acknowledged one (log line {last_ack + 1} of {len(states)}); "
            f"a torn transaction or lost acknowledged commits")
        behind.append(len(states) - 1 - allowed[got])
        if (k + 1) % 100 == 0:
            print(f"torture: {k + 1} kills restored and checked; killed during: {dict(phases)}", flush=True)
    # Replication resumed after every restart: a clean run ends with its last commit restored exactly.
    p = subprocess.run([SYS_PYTHON, str(HERE / "torture_driver.py"), str(EXT), str(db), str(log),
                        str(seed * 100_003 + KILLS), "finish"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    states = parse_log(log)
    assert states[-1][0] == "DONE"
    final = restore(moto["endpoint"], seed, out)
    assert final == states[-1][1], "the restore after the last restart did not reach the newest commit"
    with sqlite3.connect(db) as con:
        assert digest_of(table_digest(con)) == final
    acks = sum(1 for kind, _ in states if kind == "ACK")
    print(f"torture: {KILLS} kills, {len(states)} log lines, {acks} acknowledged flushes; "
          f"killed during: {dict(phases)}; restore trailed the newest intent by "
          f"median {sorted(behind)[len(behind) // 2]} / max {max(behind)} log lines")
    assert acks >= KILLS // 2, "walship_flush succeeded in too few runs: replication did not resume"
