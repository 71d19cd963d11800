"""Section 6 — memory: peak RSS walship adds (a) while the S3 server is down for 5 minutes under
steady writes (quick: 20 s), and (b) during the first sync of a 256 MiB database (quick: 32 MiB);
plus, for section 5, the bytes each tool uploads on that first sync.

(a) Outage. Two `rss_app.py steady` processes run side by side for the same time: one through
walship replicating to moto via a fault proxy (tests/python/faultproxy.py), one with plain SQLite.
Both commit 100 one-row transactions per second plus one 100-row transaction every 2 s. After a
5 s lead-in (quick: 3 s) with storage up, the proxy resets every connection for the outage; then
storage comes back and the drain time is how long until walship_status() reports spooled_files 0.
Peak RSS is each process's VmHWM (reported by the process itself twice a second); the figure is
walship's minus plain's. The app then closes, its replica is restored and compared with it.

(b) First sync, run during the outage window (it uses moto directly, not the proxy, and the two
outage apps are mostly idle, so this keeps the section within budget; RSS is per process).
On fresh copies of the shared source database (bigdb.py), at the same time: an `rss_app.py
firstsync walship` process (open, read every row, walship_flush() until the first snapshot is
durable, then stay open) and `litestream replicate` (its own process, VmHWM read from /proc just
before it is stopped). Then `rss_app.py firstsync plain` does the same open and read without
walship, the baseline. The window: until Litestream's first L1 file exists (its level-1
compaction runs at wall-clock multiples of 30 s, so ≤ 30 s after its first sync) and neither
bucket prefix has changed for 5 s (cap 90 s). Bytes uploaded = the sizes of every distinct object
seen under each tool's prefix, listed every second during the window (so a file compacted away
and deleted inside the window would still count).
"""
import json
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

import bigdb
from common import EXT, PY, ROOT, WALSHIP, table

sys.path.insert(0, str(ROOT / "tests" / "python"))
from faultproxy import FaultProxy  # noqa: E402

TARGET_MIB = 32


class App:
    """An rss_app.py process; its JSON status lines are collected by a reader thread."""

    def __init__(self, ctx, kind, mode, db, cfg, name):
        self.stop_file = ctx.work / f"{name}.stop"
        self.lines = []
        cmd = [PY, str(ROOT / "bench" / "rss_app.py"), kind, mode, str(db), str(self.stop_file), str(EXT)]
        self.proc = subprocess.Popen(cmd, env=bigdb.app_env(cfg), stdout=subprocess.PIPE,
                                     stderr=open(ctx.work / f"{name}.log", "w"), text=True)
        self.name = name
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def last(self):
        return self.lines[-1] if self.lines else {}

    def finish(self, timeout=120):
        self.stop_file.touch()
        self.proc.wait(timeout=timeout)
        time.sleep(0.2)
        if self.proc.returncode != 0 or not self.last().get("final"):
            raise SystemExit(f"{self.name} failed ({self.proc.returncode}); see its log in the work dir")
        return self.last()


def first_sync(ctx, out):
    src = bigdb.big_db(ctx)
    size = src.stat().st_size
    wdb = bigdb.copy_db(src, ctx.work / "fs-ws" / "app.db")
    ldb = bigdb.copy_db(src, ctx.work / "fs-ls" / "app.db")
    pdb = bigdb.copy_db(src, ctx.work / "fs-plain" / "app.db")
    wcfg = bigdb.litestream_config(wdb.parent / "litestream.yml", wdb, ctx.endpoint, "firstsync/ws")
    lcfg = bigdb.litestream_config(ldb.parent / "litestream.yml", ldb, ctx.endpoint, "firstsync/ls")
    t0 = time.time()
    ws = App(ctx, "firstsync", "walship", wdb, wcfg, "firstsync-walship")
    ls = bigdb.start_litestream(lcfg, ldb.parent / "litestream.log")
    seen = {"ws": {}, "ls": {}}
    first_seen = {}
    last_change, end = time.time(), time.time() + 90
    try:
        while time.time() < end:
            changed = False
            for tag in ("ws", "ls"):
                for k, v in bigdb.list_objects(ctx.endpoint, f"firstsync/{tag}").items():
                    if seen[tag].get(k) != v:
                        seen[tag][k], changed = v, True
                        first_seen.setdefault(tag, time.time() - t0)
            if changed:
                last_change = time.time()
            has_l1 = any("/0001/" in k for k in seen["ls"])
            if has_l1 and any(x.get("flush_s") is not None for x in ws.lines) and time.time() - last_change >= 5:
                break
            if ls.poll() is not None:
                raise SystemExit(f"Litestream exited:\n{(ldb.parent / 'litestream.log').read_text()[-3000:]}")
            time.sleep(1)
        window = time.time() - t0
        ls_hwm = bigdb.proc_status_kib(ls.pid, "VmHWM")
    finally:
        bigdb.stop(ls)
    wfinal = ws.finish()
    plain = App(ctx, "firstsync", "plain", pdb, wcfg, "firstsync-plain")
    while not plain.lines:
        time.sleep(0.1)
    pfinal = plain.finish()
    out.update(size=size, window=window, ws_hwm=wfinal["hwm_kib"], plain_hwm=pfinal["hwm_kib"], ls_hwm=ls_hwm,
               ws_flush=wfinal["flush_s"], ls_first=first_seen.get("ls"),
               ws_bytes=sum(seen["ws"].values()), ls_bytes=sum(seen["ls"].values()),
               ws_files=sorted(seen["ws"]), ls_files=sorted(seen["ls"]))


def outage(ctx, fs_result):
    lead, down = (3, 20) if ctx.quick else (5, 300)
    moto_port = urlparse(ctx.endpoint).port
    proxy = FaultProxy(moto_port)
    d = ctx.work / "outage"
    d.mkdir(exist_ok=True)
    wdb, pdb = d / "walship.db", d / "plain.db"
    cfg = bigdb.litestream_config(d / "litestream.yml", wdb, f"http://127.0.0.1:{proxy.port}", "outage/ws")
    try:
        ws = App(ctx, "steady", "walship", wdb, cfg, "outage-walship")
        plain = App(ctx, "steady", "plain", pdb, cfg, "outage-plain")
        time.sleep(lead)
        proxy.mode = "reset"
        fs = threading.Thread(target=_guard, args=(first_sync, ctx, fs_result), daemon=True)
        fs.start()
        time.sleep(down)
        ws_down, plain_down = ws.last(), plain.last()
        max_spooled = max((x.get("spooled_files") or 0) for x in ws.lines)
        errors = {x["last_error"].split(" (hint")[0] for x in ws.lines if x.get("last_error")}
        fs.join(timeout=240)  # first sync is normally done well before the outage ends
        proxy.mode = "up"
        t_up = time.time()
        drain = None
        n0 = len(ws.lines)
        while time.time() - t_up < 180:
            if any(x.get("spooled_files") == 0 for x in ws.lines[n0:]):
                drain = time.time() - t_up
                break
            time.sleep(0.1)
        wfinal, pfinal = ws.finish(), plain.finish()
    finally:
        proxy.stop()
    if drain is None:
        raise SystemExit("walship's spool did not drain within 180 s of storage coming back")
    restored = d / "restored.db"
    cfg = bigdb.litestream_config(d / "restore.yml", wdb, ctx.endpoint, "outage/ws")  # the proxy is gone
    p = subprocess.run([str(WALSHIP), "restore", "-config", str(cfg), "-o", str(restored), str(wdb)],
                       env=bigdb.app_env(cfg), capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise SystemExit(f"restore after the outage failed:\n{p.stderr[-3000:]}")
    bigdb.verify(restored, bigdb.content_hash(wdb), "restore after the outage")
    return dict(down=down, ws_down=ws_down["hwm_kib"], plain_down=plain_down["hwm_kib"], ws_peak=wfinal["hwm_kib"],
                plain_peak=pfinal["hwm_kib"], commits=wfinal["commits"], plain_commits=pfinal["commits"],
                max_spooled=max_spooled, drain=drain, errors=sorted(errors)[:2])


def _guard(fn, *a):
    try:
        fn(*a)
        return True
    except BaseException as e:  # reported by run(); a thread cannot SystemExit the bench
        a[-1]["err"] = repr(e)
        return False


def run(ctx):
    fs = {}
    o = outage(ctx, fs)
    if fs.get("err") or "size" not in fs:
        raise SystemExit(f"first sync failed: {fs.get('err', 'did not finish')}")
    for prefix in ("firstsync/ws", "firstsync/ls", "outage/ws"):
        bigdb.delete_prefix(ctx.endpoint, prefix)
    mib = lambda kib: kib / 1024  # noqa: E731
    o_add, o_add_all = mib(o["ws_down"] - o["plain_down"]), mib(o["ws_peak"] - o["plain_peak"])
    f_add = mib(fs["ws_hwm"] - fs["plain_hwm"])
    size_mib = fs["size"] / bigdb.MIB
    wr, lr = fs["ws_bytes"] / fs["size"], fs["ls_bytes"] / fs["size"]
    ctx.extra["first_sync"] = {"db_bytes": fs["size"], "walship_bytes": fs["ws_bytes"],
                               "litestream_bytes": fs["ls_bytes"], "walship_ratio": wr, "litestream_ratio": lr,
                               "window_s": fs["window"]}
    print(f"  outage: walship +{o_add:.1f} MiB (incl. drain +{o_add_all:.1f}), drain {o['drain']:.1f} s; "
          f"first sync: walship +{f_add:.1f} MiB, Litestream {mib(fs['ls_hwm']):.0f} MiB; "
          f"bytes {wr:.2f}× vs {lr:.2f}×", flush=True)
    down = f"{o['down'] // 60} min" if o["down"] >= 60 else f"{o['down']} s"
    lines = [
        f"## 6. Memory (target: ≤ {TARGET_MIB} MiB above plain SQLite)",
        "",
        f"`{ctx.command}`. Peak RSS (VmHWM) of the application process through walship minus the same "
        "workload's process with plain SQLite, run side by side. Outage: 100 one-row commits/s plus a "
        f"100-row transaction every 2 s, S3 unreachable for {down} (a proxy resets every connection); "
        f"first sync: open a {size_mib:.0f} MiB database with a fresh replica, read every row, "
        "walship_flush(). Litestream's figure is its own `litestream replicate` process during the same "
        "first sync (both ran at once, on copies of the database, against the same moto, while the outage "
        "ran; each RSS is its own process's).",
        "",
        *table([
            (f"peak RSS, {down} outage", f"{mib(o['ws_down']):.1f} MiB", f"{mib(o['plain_down']):.1f} MiB (plain SQLite)",
             f"+{o_add:.1f} MiB", f"≤ +{TARGET_MIB} MiB", o_add <= TARGET_MIB),
            ("… including the drain afterwards", f"{mib(o['ws_peak']):.1f} MiB",
             f"{mib(o['plain_peak']):.1f} MiB (plain SQLite)", f"+{o_add_all:.1f} MiB", f"≤ +{TARGET_MIB} MiB",
             o_add_all <= TARGET_MIB),
            (f"peak RSS, first sync of {size_mib:.0f} MiB", f"{mib(fs['ws_hwm']):.1f} MiB",
             f"{mib(fs['plain_hwm']):.1f} MiB (plain SQLite); Litestream's process {mib(fs['ls_hwm']):.0f} MiB",
             f"+{f_add:.1f} MiB", f"≤ +{TARGET_MIB} MiB", f_add <= TARGET_MIB),
        ]),
        "",
        f"During the outage walship committed {o['commits']:,} transactions (plain: {o['plain_commits']:,}), "
        f"spooled up to {o['max_spooled']} level-0 files, and drained them {o['drain']:.1f} s after storage "
        "came back (walship_status() spooled_files = 0); the replica, restored, matched the app's database. "
        f"An error walship reported while down: `{o['errors'][0] if o['errors'] else 'none'}`.",
        "",
        f"### 5/6. First sync of a {size_mib:.0f} MiB database (target: uploads ≤ 1.1 × the database size)",
        "",
        f"Bytes of every distinct object seen under each tool's prefix during a {fs['window']:.0f} s window "
        "(until Litestream's first level-1 compaction, which runs at wall-clock multiples of 30 s, had "
        "written its copy and both prefixes were unchanged for 5 s). Random data: LZ4 saves nothing.",
        "",
        *table([
            ("bytes uploaded", f"{fs['ws_bytes'] / bigdb.MIB:.1f} MiB", f"{fs['ls_bytes'] / bigdb.MIB:.1f} MiB",
             f"{wr:.2f}× vs {lr:.2f}× db", "≤ 1.1 × db", wr <= 1.1),
            ("files", ", ".join(k.split("/", 2)[2] for k in fs["ws_files"]),
             ", ".join(k.split("/", 2)[2] for k in fs["ls_files"]), "", "—", None),
            ("time to durable", f"{fs['ws_flush']:.1f} s (walship_flush)",
             f"≤ {fs['ls_first']:.0f} s (first file listed)" if fs.get("ls_first") else "—", "", "—", None),
            ("peak RSS", f"+{f_add:.1f} MiB above plain SQLite", f"{mib(fs['ls_hwm']):.0f} MiB (whole process)", "",
             f"≤ +{TARGET_MIB} MiB", f_add <= TARGET_MIB),
        ]),
        "",
    ]
    return "\n".join(lines)
