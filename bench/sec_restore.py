"""Section 4 — restore: wall time, peak RSS and S3 requests to restore the same history with
`walship restore` and with `litestream restore`, each from its own replica on the bench's moto.

The history, built once per tool from a copy of the shared source database (bigdb.py: ≥ 256 MiB of
random 4000-byte blobs; quick: 32 MiB): the database is first replicated as it is (walship: an app
opens it through the VFS and walship_flush() waits for the snapshot; Litestream: `litestream
replicate` until its first files are listed), then `history_app.py` commits 10 000 small
transactions (quick: 1 000) over 10 s (quick: 2 s) — a row in a new table each, plus a rewritten
random 4 KiB row of the big table every 10th — and the replica is let settle (walship: the app
closes, which ships the rest; Litestream: the bucket listing is unchanged for 3 s, then SIGINT).
Both tools use sync-interval 1s and their default levels.

Each restore is `/usr/bin/time -v TOOL restore -config CFG -o OUT DB` (wall time measured around
the process, peak RSS from time's "Maximum resident set size"), interleaved walship, Litestream,
walship, ... (3 rounds; quick: 1). LIST/GET/HEAD requests are counted from moto's request log
(nothing else talks to moto during a restore). Every restored database must pass
`PRAGMA integrity_check` and hash equal to its source (schema + every row), or the bench fails.
"""
import re
import subprocess
import time

import bigdb
from common import EXT, LITESTREAM, PY, ROOT, WALSHIP, litestream_env, med, spread, table


def build_walship(ctx, n, seconds):
    d = ctx.work / "restore-ws"
    db = bigdb.copy_db(bigdb.big_db(ctx), d / "app.db")
    cfg = bigdb.litestream_config(d / "litestream.yml", db, ctx.endpoint, "restore/ws")
    t0 = time.time()
    p = subprocess.run([PY, str(ROOT / "bench" / "history_app.py"), "walship", str(db), str(n), str(seconds),
                        str(EXT)], env=bigdb.app_env(cfg), capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"walship history failed:\n{p.stderr[-3000:]}")
    return db, cfg, time.time() - t0


def build_litestream(ctx, n, seconds):
    d = ctx.work / "restore-ls"
    db = bigdb.copy_db(bigdb.big_db(ctx), d / "app.db")
    cfg = bigdb.litestream_config(d / "litestream.yml", db, ctx.endpoint, "restore/ls")
    t0 = time.time()
    proc = bigdb.start_litestream(cfg, d / "litestream.log")
    try:
        deadline = time.time() + 600
        while not any("/0000/" in k for k in bigdb.list_objects(ctx.endpoint, "restore/ls")):
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit(f"Litestream did not ship the database:\n{(d / 'litestream.log').read_text()[-3000:]}")
            time.sleep(0.5)
        p = subprocess.run([PY, str(ROOT / "bench" / "history_app.py"), "plain", str(db), str(n), str(seconds)],
                           capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            raise SystemExit(f"Litestream history writer failed:\n{p.stderr[-3000:]}")
        bigdb.wait_settled(ctx.endpoint, "restore/ls", quiet_s=3, deadline_s=120)
    finally:
        bigdb.stop(proc)
    return db, cfg, time.time() - t0


def timed_restore(ctx, tool, cfg, db, out, log):
    exe = str(WALSHIP) if tool == "walship" else LITESTREAM
    env = bigdb.app_env(cfg) if tool == "walship" else litestream_env()
    log.mark()
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", exe, "restore", "-config", str(cfg), "-o", str(out), str(db)],
                       env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{tool} restore failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return wall, rss / 1024, log.counts()


def levels(objs):
    per = {}
    for k in objs:
        lvl = int(k.split("/")[-2], 16)
        per[lvl] = per.get(lvl, 0) + 1
    return ", ".join(f"L{lvl}: {c}" for lvl, c in sorted(per.items()))


def run(ctx):
    n, seconds, rounds = (1000, 2, 1) if ctx.quick else (10000, 10, 3)
    src = bigdb.big_db(ctx)
    size_mib = src.stat().st_size / bigdb.MIB
    ws_db, ws_cfg, ws_build = build_walship(ctx, n, seconds)
    ls_db, ls_cfg, ls_build = build_litestream(ctx, n, seconds)
    want = {"walship": bigdb.content_hash(ws_db), "litestream": bigdb.content_hash(ls_db)}
    src_of = {"walship": (ws_cfg, ws_db), "litestream": (ls_cfg, ls_db)}
    print(f"  histories built: walship {ws_build:.0f} s, Litestream {ls_build:.0f} s", flush=True)
    log = bigdb.MotoLog(ctx)
    res = {"walship": [], "litestream": []}
    for r in range(rounds):
        for tool in ("walship", "litestream"):
            out = ctx.work / f"restored-{tool}-{r}.db"
            wall, rss, counts = timed_restore(ctx, tool, *src_of[tool], out, log)
            bigdb.verify(out, want[tool], f"{tool} restore round {r}")
            for f in out.parent.glob(out.name + "*"):
                f.unlink()
            res[tool].append((wall, rss, counts))
            print(f"  {tool:10} {wall:6.2f} s  {rss:7.1f} MiB  {counts}", flush=True)

    def col(tool, i):
        return [x[i] for x in res[tool]]

    ws_t, ls_t = col("walship", 0), col("litestream", 0)
    speedup = med(ls_t) / med(ws_t)
    ws_l = max(c["LIST"] for c in col("walship", 2))
    ls_l = max(c["LIST"] for c in col("litestream", 2))
    ws_g = max(c["GET"] for c in col("walship", 2))
    ls_g = max(c["GET"] for c in col("litestream", 2))
    ws_h = max(c["HEAD"] for c in col("walship", 2))
    ls_h = max(c["HEAD"] for c in col("litestream", 2))
    ctx.extra["restore"] = {"speedup": speedup, "walship_list": ws_l}
    rows = [
        ("wall time, s", spread(ws_t, "{:.2f}"), spread(ls_t, "{:.2f}"), f"{speedup:.1f}× faster",
         "≥ 3× faster", speedup >= 3),
        ("peak RSS, MiB", spread(col("walship", 1), "{:.0f}"), spread(col("litestream", 1), "{:.0f}"),
         f"{med(col('walship', 1)) / med(col('litestream', 1)):.2f}", "—", None),
        ("LIST requests", ws_l, ls_l, "", "≤ 5", ws_l <= 5),
        ("GET requests (objects)", ws_g, ls_g, "", "—", None),
        ("HEAD requests", ws_h, ls_h, "", "—", None),
    ]
    ws_objs = bigdb.list_objects(ctx.endpoint, "restore/ws")
    ls_objs = bigdb.list_objects(ctx.endpoint, "restore/ls")
    for prefix in ("restore/ws", "restore/ls"):
        bigdb.delete_prefix(ctx.endpoint, prefix)
    lines = [
        "## 4. Restore (target: walship ≥ 3 × faster than `litestream restore`, ≤ 5 LIST calls)",
        "",
        f"`{ctx.command}` ({rounds} interleaved round{'s' if rounds > 1 else ''}; medians with the range). "
        f"History: a {size_mib:.0f} MiB database (random 4000-byte blobs), replicated as it is, then {n:,} "
        f"small transactions over {seconds} s (every 10th also rewrites a random 4 KiB row), sync-interval 1s; "
        "each tool restores its own replica from moto on 127.0.0.1 with `-config` and `-o`. Wall time around "
        "the process, peak RSS from `/usr/bin/time -v`, requests from moto's log (the maximum over rounds). "
        "Every restored database passed `integrity_check` and matched its source's content hash.",
        "",
        *table(rows),
        "",
        f"Replicas restored: walship {len(ws_objs)} files ({levels(ws_objs)}), "
        f"Litestream {len(ls_objs)} files ({levels(ls_objs)}).",
        "",
    ]
    return "\n".join(lines)
