"""Helpers shared by the cpu, lag and storage sections: one litestream.yml for both tools, the
environment each process runs in, starting/stopping `litestream replicate` (with its rusage),
listing level-0 LTX objects, and reading which commits an LTX file holds (a pure-Python LZ4
block decoder, so no extra package is needed).
"""
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from common import BUCKET, EXT, KEY_ID, LITESTREAM, PY, ROOT, SECRET, litestream_env

BENCH = ROOT / "bench"


def write_cfg(d, db, endpoint, prefix, interval="1s", monitor=None):
    """The same litestream.yml drives walship (WALSHIP_CONFIG) and `litestream replicate`."""
    cfg = Path(d) / "litestream.yml"
    mon = f"    monitor-interval: {monitor}\n" if monitor else ""
    cfg.write_text(f"dbs:\n  - path: {db}\n{mon}    replica:\n      type: s3\n      bucket: {BUCKET}\n"
                   f"      path: {prefix}\n      endpoint: {endpoint}\n      region: us-east-1\n"
                   f"      force-path-style: true\n      sync-interval: {interval}\n")
    return cfg


def app_env(cfg):
    return litestream_env({"WALSHIP_CONFIG": str(cfg), "WALSHIP_LOG": "warn",
                           "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET})


def create_db(db):
    """A fresh WAL database with the table every bench app writes (t(id, k, v))."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT)")
    con.commit()
    con.close()


def app_cmd(script, mode, *args):
    """A bench app under Debian's python (it loads extensions); walship mode gets EXT last."""
    cmd = [PY, str(BENCH / script), mode, *map(str, args)]
    return cmd + [str(EXT)] if mode == "walship" else cmd


def start_litestream(cfg, log):
    return subprocess.Popen([LITESTREAM, "replicate", "-config", str(cfg)], env=app_env(cfg),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def stop_litestream(proc):
    """SIGTERM, then reap with os.wait4: returns the process's CPU seconds (user+sys)."""
    proc.send_signal(signal.SIGTERM)
    deadline = time.time() + 30
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = status
            return ru.ru_utime + ru.ru_stime
        if time.time() > deadline:
            proc.kill()
            deadline += 30
        time.sleep(0.05)


def wait_rusage(proc, timeout=1800):
    """Waits for a Popen child with os.wait4; returns (returncode, CPU seconds user+sys)."""
    deadline = time.time() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, ru.ru_utime + ru.ru_stime
        if time.time() > deadline:
            proc.kill()
            raise TimeoutError(proc.args)
        time.sleep(0.02)


def s3client(endpoint):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID,
                        aws_secret_access_key=SECRET, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 2}, max_pool_connections=4))


def list_keys(s3, prefix, start_after=""):
    keys, kw = [], {"Bucket": BUCKET, "Prefix": prefix}
    if start_after:
        kw["StartAfter"] = start_after
    while True:
        page = s3.list_objects_v2(**kw)
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        kw["ContinuationToken"] = page["NextContinuationToken"]


def max_txid(keys):
    """Highest max-TXID among `<min>-<max>.ltx` keys (0 if none)."""
    best = 0
    for k in keys:
        m = re.search(r"([0-9a-f]{16})-([0-9a-f]{16})\.ltx$", k)
        if m:
            best = max(best, int(m.group(2), 16))
    return best


def wait_quiet(s3, prefix, quiet, limit):
    """Polls the level-0 listing until its max TXID has not changed for `quiet` seconds."""
    last, since, end = -1, time.time(), time.time() + limit
    while time.time() < end:
        t = max_txid(list_keys(s3, prefix + "/0000/"))
        if t != last:
            last, since = t, time.time()
        elif time.time() - since >= quiet:
            return t
        time.sleep(0.25)
    return last


def wait_for_object(s3, prefix, limit=30):
    end = time.time() + limit
    while time.time() < end:
        if list_keys(s3, prefix + "/"):
            return True
        time.sleep(0.1)
    return False


def lz4_block(src, size):
    """Decodes one raw LZ4 block (the LTX page payload) of `size` output bytes."""
    dst, i, n = bytearray(), 0, len(src)
    while i < n:
        tok = src[i]
        i += 1
        lit = tok >> 4
        if lit == 15:
            while True:
                b = src[i]
                i += 1
                lit += b
                if b != 255:
                    break
        dst += src[i:i + lit]
        i += lit
        if i >= n:
            break
        off = src[i] | (src[i + 1] << 8)
        i += 2
        ml = tok & 15
        if ml == 15:
            while True:
                b = src[i]
                i += 1
                ml += b
                if b != 255:
                    break
        ml += 4
        start = len(dst) - off
        if off >= ml:
            dst += dst[start:start + ml]
        else:
            for k in range(ml):
                dst.append(dst[start + k])
    if len(dst) != size:
        raise ValueError(f"lz4 block inflated to {len(dst)}, want {size}")
    return bytes(dst)


def ltx_pages(data):
    """Yields the page images of an LTX file (current ltx v0.5.2 frames: size-prefixed)."""
    page_size = int.from_bytes(data[8:12], "big")
    i = 100
    while i + 6 <= len(data):
        pgno = int.from_bytes(data[i:i + 4], "big")
        flags = int.from_bytes(data[i + 4:i + 6], "big")
        if pgno == 0:
            return
        if not flags & 1:
            raise ValueError("legacy LTX page frame (Litestream < 0.5.16): not supported here")
        n = int.from_bytes(data[i + 6:i + 10], "big")
        yield lz4_block(data[i + 10:i + 10 + n], page_size)
        i += 10 + n


def max_marker(data, pat=re.compile(rb"lagmark(\d{10})")):
    """Highest commit number written as 'lagmarkNNNNNNNNNN' in any page of an LTX file, or -1."""
    best = -1
    for page in ltx_pages(data):
        for m in pat.finditer(page):
            best = max(best, int(m.group(1)))
    return best
