"""Section 1 — write overhead: commits per second of the same workload through plain SQLite (WAL)
and through walship replicating to the local S3 server, synchronous NORMAL and FULL, interleaved
A B A B; each run is its own process (`bench/workload.py`)."""
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import BUCKET, EXT, KEY_ID, PY, ROOT, SECRET, spread


def one_run(mode, kind, n, sync, workdir, endpoint, tag):
    d = Path(tempfile.mkdtemp(dir=workdir))
    db = d / "bench.db"
    cfg = d / "litestream.yml"
    if mode == "walship-file":  # the same, replicating to a directory: no S3 server on the CPUs
        mode = "walship"
        cfg.write_text(f"dbs:\n  - path: {db}\n    replica:\n      type: file\n      path: {d / 'replica'}\n"
                       "      sync-interval: 1s\n")
    else:
        cfg.write_text(f"dbs:\n  - path: {db}\n    replica:\n      type: s3\n      bucket: {BUCKET}\n"
                       f"      path: {tag}\n      endpoint: {endpoint}\n      region: us-east-1\n"
                       "      sync-interval: 1s\n")
    env = {"PATH": "/usr/bin:/bin", "WALSHIP_CONFIG": str(cfg), "WALSHIP_LOG": "warn",
           "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    cmd = [PY, str(ROOT / "bench" / "workload.py"), mode, kind, str(n), sync, str(db)]
    if mode == "walship":
        cmd.append(str(EXT))
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        sys.exit(f"{cmd} failed:\n{p.stderr}")
    shutil.rmtree(d, ignore_errors=True)
    r = json.loads(p.stdout)
    return r["commits"] / r["seconds"]



def run(ctx):
    rounds = 3 if ctx.quick else 7
    sizes = {"one-row": 2000, "hundred-row": 200, "bulk": 10} if ctx.quick else \
            {"one-row": 20000, "hundred-row": 2000, "bulk": 50}
    rows = []
    for kind, n in sizes.items():
        for sync in ("NORMAL", "FULL"):
            plain, ws, wf = [], [], []
            for r in range(rounds):  # interleaved A B C A B C
                plain.append(one_run("plain", kind, n, sync, ctx.work, ctx.endpoint, f"p{kind}{sync}{r}"))
                ws.append(one_run("walship", kind, n, sync, ctx.work, ctx.endpoint, f"w{kind}{sync}{r}"))
                wf.append(one_run("walship-file", kind, n, sync, ctx.work, ctx.endpoint, ""))
            ratio = statistics.median(ws) / statistics.median(plain)
            rows.append((kind, n, sync, plain, ws, ratio, wf, statistics.median(wf) / statistics.median(plain)))
            print(f"  {kind:12} {sync:6} plain {statistics.median(plain):9.0f}/s  walship "
                  f"{statistics.median(ws):9.0f}/s  ratio {ratio:.3f}  (to a file: {rows[-1][7]:.3f})", flush=True)
    ctx.extra["write_ratios"] = [r[5] for r in rows]
    ctx.extra["write_file_ratios"] = [r[7] for r in rows]
    lines = [
        "## 1. Write overhead (target: walship ≥ 0.95 × plain)",
        "",
        f"`{ctx.command}` ({rounds} interleaved rounds per cell). Commits per second through plain SQLite (WAL) "
        "and through walship replicating to moto with `sync-interval: 1s`, same workload, one process per run. "
        "`one-row`: single-row INSERT transactions; `hundred-row`: 100-row transactions; `bulk`: 1 MiB "
        "transactions of 1 KB rows (N MiB in all). Medians with the range over rounds.",
        "",
        "The last two columns run walship once more replicating to a local directory instead: the "
        "same capture and shipping, without the S3 server (moto, Python) competing for the 2 cores.",
        "",
        "| workload | N | synchronous | plain commits/s | walship → S3 commits/s | ratio | target met | "
        "walship → file commits/s | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, n, sync, plain, ws, ratio, wf, fratio in rows:
        lines.append(f"| {kind} | {n} | {sync} | {spread(plain)} | {spread(ws)} | {ratio:.3f} | "
                     f"{'yes' if ratio >= 0.95 else '**no**'} | {spread(wf)} | {fratio:.3f} |")
    lines.append("")
    return "\n".join(lines)
