"""Section 5 (steady part) — storage cost: PUT, GET, LIST and DELETE requests and bytes uploaded
per 10 minutes of steady writes, and bytes uploaded ÷ WAL bytes written, for both tools.

Both run at once, each with its own database, bucket prefix and counting proxy
(`bench/countproxy.py`, in this process) in front of the shared moto server: walship inside
`bench/store_app.py walship`, and `litestream replicate` beside `store_app.py plain` (started
first and awaited until its first object is stored). Same litestream.yml (sync-interval 1s,
default levels 30s/5m/1h, snapshot interval 24h, retention). The apps write 50 one-row
commits/s plus a 100-row commit of 1 KB rows every 5 s, and count the WAL bytes they append
(from the wal-index header, see store_app.py). Steady state = requests recorded from WARM s after
the apps start until they stop (the first sync of each database is excluded); figures are
scaled from that window to 10 minutes.
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from common import LITESTREAM, table
from countproxy import CountProxy
from replutil import app_cmd, app_env, create_db, s3client, start_litestream, stop_litestream, \
    wait_for_object, write_cfg

KINDS = ("PUT", "PART", "MPU", "COPY", "GET", "HEAD", "LIST", "DELETE", "DELETEOBJECTS")


def wal_in(samples, t0, t1):
    """WAL bytes appended between t0 and t1, from the app's (time, cumulative bytes) samples."""
    at = lambda t: max([b for ts, b, _ in samples if ts <= t], default=0)  # noqa: E731
    return at(t1) - at(t0)


def run(ctx):
    if not LITESTREAM:
        return "## 5. Storage cost\n\nskipped: `litestream` not installed\n"
    seconds, warm = (25, 5) if ctx.quick else (570, 30)
    port = urlsplit(ctx.endpoint).port
    s3 = s3client(ctx.endpoint)
    setup = {}
    for tool in ("walship", "litestream"):
        d = Path(tempfile.mkdtemp(dir=ctx.work))
        db = d / "store.db"
        create_db(db)
        proxy = CountProxy(port)
        setup[tool] = (d, db, proxy, write_cfg(d, db, proxy.endpoint, f"storage/{tool}"))
    d, db, proxy, cfg = setup["litestream"]
    ls = start_litestream(cfg, d / "litestream.log")
    procs = {}
    try:
        if not wait_for_object(s3, "storage/litestream", 30):
            sys.exit(f"litestream shipped nothing:\n{(d / 'litestream.log').read_text()[-2000:]}")
        t0 = time.time()
        for tool, mode in (("walship", "walship"), ("litestream", "plain")):
            d, db, proxy, cfg = setup[tool]
            procs[tool] = subprocess.Popen(app_cmd("store_app.py", mode, seconds, db), env=app_env(cfg),
                                           stdout=open(d / "out.json", "w"), stderr=open(d / "err", "w"))
        for tool, p in procs.items():
            if p.wait(timeout=seconds + 300) != 0:
                sys.exit(f"store_app ({tool}) failed:\n{(setup[tool][0] / 'err').read_text()[-3000:]}")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        stop_litestream(ls)
    res = {}
    for tool, (d, db, proxy, cfg) in setup.items():
        samples = json.loads((d / "out.json").read_text())["samples"]
        t_end = samples[-1][0]
        w0 = t0 + warm
        counts = proxy.window(w0, t_end)
        proxy.stop()
        span = t_end - w0
        scale = 600 / span
        c = {k: counts.get(k, [0, 0, 0]) for k in KINDS}
        uploaded = sum(c[k][1] for k in ("PUT", "PART", "MPU", "COPY"))
        wal = wal_in(samples, w0, t_end)
        res[tool] = {"span": span, "scale": scale, "c": c, "uploaded": uploaded, "wal": wal,
                     "puts_per_s": (c["PUT"][0] + c["PART"][0]) / span,
                     "lists_per_min": c["LIST"][0] / span * 60,
                     "commits": samples[-1][2]}
        print(f"  {tool:10} window {span:.0f} s: " + ", ".join(f"{k} {v[0]}" for k, v in c.items() if v[0]) +
              f"; uploaded {uploaded:,} B; WAL {wal:,} B", flush=True)
    w, b = res["walship"], res["litestream"]
    per10 = lambda r, k, i=0: r["c"][k][i] * r["scale"]  # noqa: E731
    rat = lambda x, y: f"{x / y:.2f}" if y else "—"  # noqa: E731
    rows = []
    for k, label in (("PUT", "PUT object"), ("PART", "PUT part (multipart)"), ("GET", "GET object"),
                     ("HEAD", "HEAD"), ("LIST", "LIST"), ("DELETE", "DELETE object"),
                     ("DELETEOBJECTS", "DeleteObjects batches")):
        if w["c"][k][0] or b["c"][k][0] or k in ("PUT", "GET", "LIST", "DELETE"):
            rows.append((f"{label} per 10 min", f"{per10(w, k):,.0f}", f"{per10(b, k):,.0f}",
                         rat(per10(w, k), per10(b, k)), "—", None))
    dw, db_ = per10(w, "DELETEOBJECTS", 2) + per10(w, "DELETE"), per10(b, "DELETEOBJECTS", 2) + per10(b, "DELETE")
    rows.append(("objects deleted per 10 min", f"{dw:,.0f}", f"{db_:,.0f}", rat(dw, db_), "—", None))
    uw, ub = w["uploaded"] * w["scale"], b["uploaded"] * b["scale"]
    rows.append(("MB uploaded per 10 min", f"{uw / 1e6:,.1f}", f"{ub / 1e6:,.1f}", rat(uw, ub), "—", None))
    fw, fb = w["uploaded"] / w["wal"], b["uploaded"] / b["wal"]
    rows.append(("bytes uploaded ÷ WAL bytes written", f"{fw:.3f}", f"{fb:.3f}", rat(fw, fb), "—", None))
    rows.append(("PUTs per sync interval (1 s)", f"{w['puts_per_s']:.2f}", f"{b['puts_per_s']:.2f}",
                 rat(w["puts_per_s"], b["puts_per_s"]), "≤ 1", w["puts_per_s"] <= 1.0))
    rows.append(("LISTs per minute", f"{w['lists_per_min']:.2f}", f"{b['lists_per_min']:.2f}",
                 rat(w["lists_per_min"], b["lists_per_min"]), "≤ 1", w["lists_per_min"] <= 1.0))
    ctx.extra["storage"] = res
    q = (f" This quick run's window is only {w['span']:.0f} s, scaled ×{w['scale']:.0f}: it sees no "
         "compaction (level 1 runs every 30 s), so it says little about steady state." if ctx.quick else "")
    lines = [
        "## 5. Storage cost, steady state (targets: ≤ 1 PUT per sync interval per database, ≤ 1 LIST per minute)",
        "",
        f"`{ctx.command}` (or `python3 bench/bench.py {'--quick ' if ctx.quick else ''}--only storage`): "
        f"both tools at once for {seconds} s, each with its own database and a counting proxy in front of "
        "moto; 50 one-row commits/s plus a 100-row commit of 1 KB rows every 5 s "
        f"({w['commits']:,} commits per tool); `sync-interval: 1s`, default levels (30s/5m/1h), snapshot "
        f"interval and retention. Counted from {warm} s after the apps started (the first sync is excluded) "
        f"to their end, a window of {w['span']:.0f} s, scaled to 10 minutes.{q} PUTs per interval count "
        "every object and part upload (level 0 and compactions). WAL bytes are the frames the app "
        "appended (wal-index mxFrame deltas × (24 + page size)); uploaded bytes are request payloads. "
        "Baseline: plain SQLite + `litestream replicate`.",
        "",
        *table(rows),
        "",
    ]
    return "\n".join(lines)
