"""Shared by sec_restore and sec_memory: the large source database, content hashing, bucket
listings and request counting from moto's log, and running Litestream against the bench's moto.

The source database is made once per run with plain SQLite (no replication) and cached in
ctx.extra["bigdb"]: one table of 4000-byte random blobs (incompressible, so LZ4 cannot flatter
either tool) up to the target size, WAL mode, checkpointed so the file holds everything.
Sections copy it before use; nobody writes to the cached file.
"""
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

from common import BUCKET, KEY_ID, LITESTREAM, SECRET, litestream_env

MIB = 1 << 20


def big_db(ctx):
    """Path of the cached source database: ≥ 256 MiB (quick: 32 MiB)."""
    if "bigdb" in ctx.extra:
        return ctx.extra["bigdb"]
    size = (32 if ctx.quick else 256) * MIB
    db = ctx.work / "bigdb" / "source.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB)")
    con.execute("CREATE INDEX t_k ON t(k)")
    rows = size // 4096 + 1
    for start in range(0, rows, 4096):
        con.execute("BEGIN")
        con.execute("WITH RECURSIVE c(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM c WHERE i + 1 < ?) "
                    "INSERT INTO t(k, v) SELECT i * 7919 % 100003, randomblob(4000) FROM c",
                    (start, min(start + 4096, rows)))
        con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    assert db.stat().st_size >= size, db.stat().st_size
    ctx.extra["bigdb"] = db
    return db


def copy_db(src, dst):
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def content_hash(db):
    """SHA-256 over the schema and every row of every table in rowid order, streamed (the same
    idea as tests/python/dbhash.py, without holding a 256 MiB table's rows in memory)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    h = hashlib.sha256()
    for name, sql in con.execute("SELECT name, sql FROM sqlite_master WHERE type='table' "
                                 "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall():
        h.update(repr((name, sql)).encode())
        for row in con.execute(f'SELECT * FROM "{name}" ORDER BY rowid'):
            h.update(repr(row).encode())
    con.close()
    return h.hexdigest()


def integrity(db):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def verify(restored, want_hash, what):
    """Fail loudly unless the restored database is intact and equal to its source."""
    ok = integrity(restored)
    if ok != "ok":
        raise SystemExit(f"{what}: integrity_check of {restored} says {ok!r}")
    got = content_hash(restored)
    if got != want_hash:
        raise SystemExit(f"{what}: restored content differs from the source ({got} != {want_hash})")


def list_objects(endpoint, prefix):
    """{key: size} of every object under prefix/."""
    import boto3

    c = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                     region_name="us-east-1")
    out = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix.rstrip("/") + "/"):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["Size"]
    return out


REQ = re.compile(r'"(GET|PUT|HEAD|POST|DELETE) (/[^ ]*) HTTP/1\.[01]" (\d+)')


class MotoLog:
    """Counts the S3 requests moto logged after mark(): LIST (GET with list-type/prefix on the
    bucket), GET (object reads), HEAD, PUT. Works while nothing else talks to moto."""

    def __init__(self, ctx):
        self.path = ctx.work / "moto.log"
        self.offset = 0

    def mark(self):
        time.sleep(0.3)  # let moto flush lines of earlier requests
        self.offset = self.path.stat().st_size

    def counts(self):
        time.sleep(0.3)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode("utf-8", "replace")
        c = {"LIST": 0, "GET": 0, "HEAD": 0, "PUT": 0, "other": 0}
        for m in REQ.finditer(text):
            method, path = m.group(1), m.group(2)
            bucket_only = path.split("?")[0].strip("/") == BUCKET
            if method == "GET" and bucket_only and ("list-type" in path or "prefix=" in path):
                c["LIST"] += 1
            elif method in c and not (method == "GET" and bucket_only):
                c[method] += 1
            else:
                c["other"] += 1
        return c


def litestream_config(path, db, endpoint, prefix, sync_interval="1s"):
    Path(path).write_text(
        f"dbs:\n  - path: {db}\n    replica:\n      type: s3\n      bucket: {BUCKET}\n      path: {prefix}\n"
        f"      endpoint: {endpoint}\n      region: us-east-1\n      force-path-style: true\n"
        f"      access-key-id: {KEY_ID}\n      secret-access-key: '{SECRET}'\n"
        f"      sync-interval: {sync_interval}\n")
    return Path(path)


def start_litestream(cfg, log):
    return subprocess.Popen([LITESTREAM, "replicate", "-config", str(cfg)], env=litestream_env(),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def stop(proc, timeout=30):
    proc.send_signal(2)  # SIGINT: Litestream syncs what is left and exits
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def proc_status_kib(pid, field):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def app_env(cfg, **extra):
    env = {"PATH": "/usr/bin:/bin", "WALSHIP_CONFIG": str(cfg), "WALSHIP_LOG": "warn",
           "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def wait_settled(endpoint, prefix, quiet_s, deadline_s):
    """Poll the prefix until its listing has not changed for quiet_s (or deadline_s passes)."""
    last, since, end = None, time.time(), time.time() + deadline_s
    while time.time() < end:
        cur = list_objects(endpoint, prefix)
        if cur != last:
            last, since = cur, time.time()
        elif time.time() - since >= quiet_s:
            break
        time.sleep(0.5)
    return last


def delete_prefix(endpoint, prefix):
    """Frees moto's memory after a section (moto keeps every object it was sent)."""
    import boto3

    c = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                     region_name="us-east-1")
    keys = list(list_objects(endpoint, prefix))
    for i in range(0, len(keys), 1000):
        c.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
