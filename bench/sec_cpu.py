"""Section 2 — CPU: total CPU (user+sys) per 100 000 transactions of app + replicator.

walship: one process (`bench/cpu_app.py walship`) commits N one-row transactions in a tight loop
through the extension and closes the database (the last close ships everything); its CPU is
os.wait4's rusage of that process, so replication is included.
Baseline: `litestream replicate` is started first on the same pre-created WAL database and
awaited until its first object is in the bucket; then the plain app (`cpu_app.py plain`, same
loop, SQLite's default settings, including its own autocheckpoint) runs; after it exits we wait
until Litestream's level-0 max TXID has not moved for 3 sync intervals (the final commits are
shipped), SIGTERM it and read its rusage with os.wait4. Baseline = app CPU + Litestream CPU.
Same moto server, same litestream.yml (sync-interval 1s), each run in a fresh directory and
bucket prefix; runs interleaved A B A B; figures scaled to per-100 000 transactions.
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import LITESTREAM, med, spread, table
from replutil import (app_cmd, app_env, create_db, s3client, start_litestream, stop_litestream,
                      wait_for_object, wait_quiet, wait_rusage, write_cfg, max_txid, list_keys)

INTERVAL = 1.0


def run_app(mode, n, db, cfg):
    out, err = Path(str(db) + ".out"), Path(str(db) + ".err")
    with open(out, "w") as o, open(err, "w") as e:
        p = subprocess.Popen(app_cmd("cpu_app.py", mode, n, db), env=app_env(cfg), stdout=o, stderr=e)
        rc, cpu = wait_rusage(p)
    if rc != 0:
        sys.exit(f"cpu_app {mode} failed ({rc}):\n{err.read_text()[-3000:]}")
    return cpu, json.loads(out.read_text())


def walship_run(ctx, s3, n, tag):
    d = Path(tempfile.mkdtemp(dir=ctx.work))
    db = d / "cpu.db"
    create_db(db)
    cfg = write_cfg(d, db, ctx.endpoint, tag)
    cpu, r = run_app("walship", n, db, cfg)
    shipped = max_txid(list_keys(s3, tag + "/0000/"))
    if not shipped:
        sys.exit(f"walship shipped nothing to {tag}")
    return {"total": cpu, "app": cpu, "repl": 0.0, "wall": r["seconds"]}


def plain_run(ctx, n):
    """Reference: the same app with no replication at all (the floor for either tool)."""
    d = Path(tempfile.mkdtemp(dir=ctx.work))
    db = d / "cpu.db"
    create_db(db)
    cpu, r = run_app("plain", n, db, write_cfg(d, db, ctx.endpoint, "unused"))
    return {"total": cpu, "app": cpu, "repl": 0.0, "wall": r["seconds"]}


def litestream_run(ctx, s3, n, tag):
    d = Path(tempfile.mkdtemp(dir=ctx.work))
    db = d / "cpu.db"
    create_db(db)
    cfg = write_cfg(d, db, ctx.endpoint, tag)
    ls = start_litestream(cfg, d / "litestream.log")
    try:
        if not wait_for_object(s3, tag, 30):
            sys.exit(f"litestream shipped nothing in 30 s:\n{(d / 'litestream.log').read_text()[-2000:]}")
        app_cpu, r = run_app("plain", n, db, cfg)
        wait_quiet(s3, tag, quiet=3 * INTERVAL, limit=120)
    finally:
        ls_cpu = stop_litestream(ls)
    return {"total": app_cpu + ls_cpu, "app": app_cpu, "repl": ls_cpu, "wall": r["seconds"]}


def run(ctx):
    if not LITESTREAM:
        return "## 2. CPU\n\nskipped: `litestream` not installed\n"
    n, rounds = (10000, 1) if ctx.quick else (100000, 3)
    s3 = s3client(ctx.endpoint)
    ws, ls, ps = [], [], []
    for r in range(rounds):  # interleaved A B (C) A B
        ws.append(walship_run(ctx, s3, n, f"cpu/w{r}"))
        ls.append(litestream_run(ctx, s3, n, f"cpu/l{r}"))
        if r == 0:  # the reference once: it only bounds what is achievable (keeps ≤ 5 min)
            ps.append(plain_run(ctx, n))
        print(f"  round {r}: walship {ws[-1]['total']:.2f} s CPU ({ws[-1]['wall']:.1f} s wall); plain app "
              f"{ls[-1]['app']:.2f} + litestream {ls[-1]['repl']:.2f} s CPU ({ls[-1]['wall']:.1f} s wall); "
              f"unreplicated {ps[-1]['total']:.2f} s CPU (round 0)",
              flush=True)
    k = 100000 / n
    per = lambda runs, f: [x[f] * k for x in runs]  # noqa: E731
    wt, lt = per(ws, "total"), per(ls, "total")
    ratio = med(wt) / med(lt)
    ratios = [a / b for a, b in zip(wt, lt)]
    f2 = "{:,.1f}"
    rows = [
        ("CPU s per 100k txns, app + replicator", spread(wt, f2), spread(lt, f2),
         f"{ratio:.2f}" + (f" ({min(ratios):.2f}–{max(ratios):.2f})" if rounds > 1 else ""),
         "≤ 0.35", ratio <= 0.35),
        ("… of which the app process", spread(per(ws, "app"), f2), spread(per(ls, "app"), f2),
         f"{med(per(ws, 'app')) / med(per(ls, 'app')):.2f}", "—", None),
        ("… of which `litestream replicate`", "— (in-process)", spread(per(ls, "repl"), f2), "—", "—", None),
        ("reference: plain SQLite, no replication", spread(per(ps, "total"), f2), "—",
         f"{med(per(ps, 'total')) / med(lt):.2f}", "—", None),
        ("replication's own CPU (total − unreplicated reference)", f2.format(med(wt) - med(per(ps, "total"))),
         f2.format(med(lt) - med(per(ps, "total"))),
         f"{(med(wt) - med(per(ps, 'total'))) / max(med(lt) - med(per(ps, 'total')), 1e-9):.2f}", "—", None),
        ("wall s per 100k txns (commit loop)", spread(per(ws, "wall"), f2), spread(per(ls, "wall"), f2),
         f"{med(per(ws, 'wall')) / med(per(ls, 'wall')):.2f}", "—", None),
    ]
    ctx.extra["cpu_ratio"] = ratio
    scale = "" if n == 100000 else f" Each run is {n:,} transactions, scaled ×{k:g} to per-100 000."
    lines = [
        "## 2. CPU per 100 000 transactions (target: walship ≤ 0.35 × plain SQLite + Litestream)",
        "",
        f"`{ctx.command}` (or `python3 bench/bench.py {'--quick ' if ctx.quick else ''}--only cpu`): "
        f"{rounds} interleaved round(s) of a tight loop of one-row INSERT transactions with SQLite's "
        "default settings (WAL, `synchronous=FULL`, autocheckpoint 1000), `sync-interval: 1s`, same "
        "moto server. walship: CPU (user+sys, `os.wait4`) of the app process, which replicates "
        "in-process and ships the rest when it closes the database. Baseline: CPU of the plain app "
        "process plus CPU of `litestream replicate` (started before the app, stopped once the final "
        f"TXID has been in the bucket for 3 s). The reference row runs the same app with no replication "
        f"(ratio to the baseline: the best any in-process replicator could do; run once, in round 0)."
        f"{scale} "
        "Median (min–max) over rounds.",
        "",
        *table(rows),
        "",
    ]
    return "\n".join(lines)
