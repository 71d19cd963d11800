"""Section 3 — replication lag: time from COMMIT returning to the level-0 LTX object that holds
the commit being readable from S3; p50/p99/max at sync-interval 1s and at a small interval.

An app (`bench/lag_app.py`) commits one row per transaction at a steady 20 commits/s, each row
carrying its commit number ('lagmarkNNNNNNNNNN'), and records each COMMIT's return time (wall
clock). Meanwhile a poller thread here LISTs the replica's level-0 prefix (`<path>/0000/`, with
StartAfter the newest key seen) every POLL seconds and records when each object first appears
(the time the LIST response arrived: conservative by one LIST round trip). After the run every
seen object is fetched and its pages decoded (pure-Python LZ4) to find the highest commit number
it holds; commit i's lag = first appearance of an object holding a marker ≥ i − i's commit time.
This needs no TXID↔commit mapping (a TXID names one sync interval's file, not one commit).
walship replicates in the app's process; the baseline is the plain app + `litestream replicate`
(started first, awaited until its first object is visible). Same moto server, same yml.
"""
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import BUCKET, LITESTREAM, table
from replutil import (app_cmd, app_env, create_db, list_keys, max_marker, s3client, start_litestream,
                      stop_litestream, wait_for_object, write_cfg)

RATE = 20.0  # commits per second
POLL = 0.015  # seconds between LISTs
# walship accepts any positive sync-interval (src/config/fields.rs positive_duration): there is
# no minimum, so "the smallest interval" is a choice; 50ms keeps moto's PUT rate sane.
SMALL = "50ms"


class Poller(threading.Thread):
    def __init__(self, endpoint, prefix):
        super().__init__(daemon=True)
        self.s3, self.prefix = s3client(endpoint), prefix + "/0000/"
        self.seen, self.stop, self.lists, self.list_s = {}, threading.Event(), 0, 0.0

    def run(self):
        last = ""
        while not self.stop.is_set():
            t0 = time.time()
            keys = list_keys(self.s3, self.prefix, last)
            t1 = time.time()
            self.lists += 1
            self.list_s += t1 - t0
            for k in keys:
                self.seen.setdefault(k, t1)
                last = max(last, k)
            time.sleep(max(0.0, POLL - (time.time() - t0)))


def lags(commits, seen, s3):
    """Per-commit lag (s); commits never seen visible are returned as None."""
    objs = []
    for key, t in seen.items():
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        objs.append((t, max_marker(body)))
    objs.sort()
    out, best, j = [], -1, 0
    for i, tc in enumerate(commits):
        while best < i and j < len(objs):
            best = max(best, objs[j][1])
            j += 1
        out.append(objs[j - 1][0] - tc if best >= i else None)
    return out


def one(ctx, tool, interval, seconds, tag):
    d = Path(tempfile.mkdtemp(dir=ctx.work))
    db = d / "lag.db"
    create_db(db)
    cfg = write_cfg(d, db, ctx.endpoint, tag, interval, monitor=None if interval == "1s" else interval)
    s3 = s3client(ctx.endpoint)
    ls = None
    if tool == "litestream":
        ls = start_litestream(cfg, d / "litestream.log")
        if not wait_for_object(s3, tag, 30):
            stop_litestream(ls)
            sys.exit(f"litestream shipped nothing:\n{(d / 'litestream.log').read_text()[-2000:]}")
    poller = Poller(ctx.endpoint, tag)
    poller.start()
    try:
        p = subprocess.run(app_cmd("lag_app.py", "plain" if ls else "walship", RATE, seconds, db),
                           env=app_env(cfg), capture_output=True, text=True, timeout=seconds + 120)
        if p.returncode != 0:
            sys.exit(f"lag_app failed:\n{p.stderr[-3000:]}")
        commits = json.loads(p.stdout)["commits"]
        time.sleep(2 * float(interval.rstrip("ms")) / (1000 if interval.endswith("ms") else 1) + 1.0)
    finally:
        poller.stop.set()
        poller.join()
        if ls:
            stop_litestream(ls)
    xs = lags(commits, poller.seen, s3)
    ok = sorted(x for x in xs if x is not None)
    pct = lambda q: ok[max(0, math.ceil(q * len(ok)) - 1)] if ok else float("nan")  # noqa: E731
    r = {"n": len(xs), "missing": len(xs) - len(ok), "p50": pct(0.5), "p99": pct(0.99),
         "max": ok[-1] if ok else float("nan"), "objects": len(poller.seen),
         "list_ms": 1000 * poller.list_s / max(1, poller.lists)}
    print(f"  {tool:10} {interval:5} n={r['n']} p50 {r['p50'] * 1000:.0f} ms p99 {r['p99'] * 1000:.0f} ms "
          f"max {r['max'] * 1000:.0f} ms objects {r['objects']} LIST {r['list_ms']:.1f} ms "
          f"missing {r['missing']}", flush=True)
    return r


def run(ctx):
    seconds = 4 if ctx.quick else 30
    res = {}
    for interval in ("1s", SMALL):
        for tool in ("walship", "litestream"):
            if tool == "litestream" and not LITESTREAM:
                continue
            res[tool, interval] = one(ctx, tool, interval, seconds, f"lag/{tool}-{interval}")
    ms = lambda r, k: f"{r[k] * 1000:,.0f} ms" if r else "—"  # noqa: E731
    rows = []
    for interval, target in (("1s", 1.05), (SMALL, 0.100)):
        w, b = res[("walship", interval)], res.get(("litestream", interval))
        for k in ("p50", "p99", "max"):
            ratio = f"{w[k] / b[k]:.2f}" if b else "—"
            rows.append((f"lag {k}, sync-interval {interval}", ms(w, k), ms(b, k), ratio,
                         f"≤ {target * 1000:,.0f} ms" if k == "p99" else "—",
                         (w[k] <= target and not w["missing"]) if k == "p99" else None))
    ctx.extra["lag"] = {f"{t} {i}": r for (t, i), r in res.items()}
    miss = sum(r["missing"] for r in res.values())
    notes = [f"Commits never seen in a level-0 object: {miss}." if miss else
             "Every commit was found in a level-0 object."]
    poll_ms = sorted(r["list_ms"] for r in res.values())
    lines = [
        f"## 3. Replication lag (target: p99 ≤ 1.05 s at sync-interval 1s, ≤ 100 ms at {SMALL})",
        "",
        f"`{ctx.command}` (or `python3 bench/bench.py {'--quick ' if ctx.quick else ''}--only lag`): "
        f"{RATE:.0f} one-row commits/s for {seconds} s per run ({int(RATE * seconds)} commits), one run per "
        "tool and interval. Lag = first time a LIST of the level-0 prefix shows an object holding the "
        "commit (found by decoding the object's pages) − the time COMMIT returned. LIST every "
        f"{POLL * 1000:.0f} ms; a LIST round trip took {poll_ms[0]:.1f}–{poll_ms[-1]:.1f} ms on average, "
        f"which the figures include. walship has no minimum sync-interval (any positive duration); "
        f"{SMALL} is used as the small interval, for Litestream too (with `monitor-interval: {SMALL}`, "
        "without which Litestream only looks at the WAL once a second). Baseline: plain SQLite + "
        "`litestream replicate`.",
        "",
        *table(rows),
        "",
        *notes,
        "",
    ]
    return "\n".join(lines)
