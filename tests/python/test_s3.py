"""S3 replicas against the real Litestream 0.5.17, on a local moto server (PyPI `moto[server]`).

* Litestream replicates a WAL database (written with the sqlite3 shell) to S3; `walship restore`
  reads it back, through the config and through an `s3://bucket/path?endpoint=...` URL.
* The object keys and metadata Litestream wrote are listed with boto3 and compared with what
  walship's S3 backend lists and expects: `<path>/<level %04x>/<min %016x>-<max %016x>.ltx`, and
  `litestream-timestamp` metadata in Go's RFC3339Nano (milliseconds, trailing zeros dropped).
* walship replicating to S3 through the extension, restored by Litestream.
"""
import datetime
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import EXT, HERE, SYS_PYTHON, WALSHIP, content_hash, free_port, integrity, litestream_bin, run, wait_port

KEY_ID = "AKIAWALSHIPPYTEST001"
SECRET = "walship/py+secret/0123456789abcdefghijklmn"
BUCKET = "walship-py"
NOPATH_BUCKET = "walship-py-nopath"
LTX_KEY = re.compile(r"^(?P<prefix>.*)/(?P<level>[0-9a-f]{4})/(?P<min>[0-9a-f]{16})-(?P<max>[0-9a-f]{16})\.ltx$")
# Go's time.RFC3339Nano of a UTC millisecond time: no trailing zeros in the fraction.
GO_RFC3339NANO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,2}[1-9])?Z$")


def go_rfc3339nano_ms(ts_ms: int) -> str:
    d = datetime.datetime.fromtimestamp(ts_ms // 1000, tz=datetime.timezone.utc)
    s = d.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{ts_ms % 1000:03d}".rstrip("0")
    return s + (f".{frac}" if frac else "") + "Z"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    exe = shutil.which("moto_server")
    if not exe:
        pytest.skip("moto is not installed: python3 -m pip install 'moto[server]'")
    import boto3

    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    wait_port(port, proc, "moto_server")
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID,
                      aws_secret_access_key=SECRET, region_name="us-east-1")
    for b in (BUCKET, NOPATH_BUCKET):
        s3.create_bucket(Bucket=b)
    try:
        yield {"port": port, "endpoint": endpoint, "s3": s3}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def s3_env(extra=None):
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    env.update(extra or {})
    return env


def sqlite(db, sql):
    run(["sqlite3", str(db), sql])


def write_for_a_while(db, seconds=3.0):
    """Commits with the sqlite3 shell for a few seconds: small rows, then a multi-page blob."""
    sqlite(db, "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB);")
    end = time.time() + seconds
    i = 0
    while time.time() < end:
        sqlite(db, f"INSERT INTO t(v) VALUES (randomblob({100 + i * 37 % 3000})); "
                   f"INSERT INTO t(v) VALUES ('row {i}');")
        if i % 5 == 4:
            sqlite(db, "INSERT INTO t(v) SELECT randomblob(20000) FROM t LIMIT 3;")
        i += 1
        time.sleep(0.2)
    return i


@pytest.fixture(scope="module")
def litestream_replica(moto, tmp_path_factory):
    """The real Litestream replicating two databases to moto: one under a path, one at the
    bucket's root (no `path:`), written for a few seconds, then stopped."""
    work = tmp_path_factory.mktemp("ls")
    db, db2 = work / "src.db", work / "root.db"
    cfg = work / "litestream.yml"
    cfg.write_text(
        "dbs:\n"
        f"  - path: {db}\n"
        "    replica:\n"
        "      type: s3\n"
        f"      bucket: {BUCKET}\n"
        "      path: ls/src\n"
        f"      endpoint: {moto['endpoint']}\n"
        "      force-path-style: true\n"
        f"      access-key-id: {KEY_ID}\n"
        f"      secret-access-key: '{SECRET}'\n"
        "      sync-interval: 200ms\n"
        f"  - path: {db2}\n"
        "    replica:\n"
        "      type: s3\n"
        f"      bucket: {NOPATH_BUCKET}\n"
        f"      endpoint: {moto['endpoint']}\n"
        f"      access-key-id: {KEY_ID}\n"
        f"      secret-access-key: '{SECRET}'\n"
        "      sync-interval: 200ms\n"
    )
    for d in (db, db2):
        sqlite(d, "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);")
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)  # Litestream 0.5.17 refuses to start while it is set
    log = work / "litestream.log"
    with open(log, "w") as lf:
        proc = subprocess.Popen([litestream_bin(), "replicate", "-config", str(cfg)], env=env,
                                stdout=lf, stderr=subprocess.STDOUT)
        try:
            time.sleep(1.0)
            write_for_a_while(db, 3.0)
            write_for_a_while(db2, 1.0)
            time.sleep(2.0)  # a few sync intervals after the last commit
        finally:
            proc.send_signal(signal.SIGINT)  # Litestream syncs once more on shutdown
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"work": work, "db": db, "db2": db2, "cfg": cfg, "log": log.read_text()}


def objects(moto, bucket, prefix=""):
    s3 = moto["s3"]
    out = []
    token = None
    while True:
        kw = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        page = s3.list_objects_v2(**kw)
        out += page.get("Contents", [])
        if not page.get("IsTruncated"):
            return out
        token = page["NextContinuationToken"]


def walship_ltx(args, env=None):
    p = run([str(WALSHIP), "ltx", "-json", *args], env=env)
    return json.loads(p.stdout)


def test_walship_restores_what_litestream_replicated_to_s3(litestream_replica, moto):
    r = litestream_replica
    work, db = r["work"], r["db"]
    # Through the config, as `litestream restore -config` would.
    out = work / "out.db"
    run([str(WALSHIP), "restore", "-config", str(r["cfg"]), "-o", str(out), str(db)])
    assert integrity(out) == "ok"
    assert content_hash(out) == content_hash(db)
    # Through a replica URL: the endpoint in the query, credentials from the environment
    # (Litestream's rules for s3:// URLs).
    out2 = work / "out2.db"
    url = f"s3://{BUCKET}/ls/src?endpoint=127.0.0.1:{moto['port']}"
    run([str(WALSHIP), "restore", "-o", str(out2), url], env=s3_env())
    assert integrity(out2) == "ok"
    assert content_hash(out2) == content_hash(db)
    # And the same URL also restores with Litestream itself (the URL form is Litestream's).
    out3 = work / "out3.db"
    run([litestream_bin(), "restore", "-o", str(out3), url], env=s3_env())
    assert content_hash(out3) == content_hash(db)


def test_root_of_bucket_replica(litestream_replica, moto):
    """No `path:`: Litestream writes keys starting with `/` (`/0000/...`); walship reads them."""
    r = litestream_replica
    keys = [o["Key"] for o in objects(moto, NOPATH_BUCKET)]
    assert keys and all(k.startswith("/00") for k in keys), keys
    out = r["work"] / "root-out.db"
    run([str(WALSHIP), "restore", "-config", str(r["cfg"]), "-o", str(out), str(r["db2"])])
    assert integrity(out) == "ok"
    assert content_hash(out) == content_hash(r["db2"])


def test_litestream_s3_layout_is_walships(litestream_replica, moto):
    """Pins the layout: every key and metadata value Litestream wrote is what walship's S3
    backend writes (the Rust conformance test checks walship's own writes against the same
    literals) and lists."""
    s3 = moto["s3"]
    listed = objects(moto, BUCKET, "ls/src/")
    assert listed, "Litestream wrote nothing"
    seen = set()
    levels = set()
    for o in listed:
        m = LTX_KEY.match(o["Key"])
        assert m, f"unexpected key {o['Key']!r}"
        assert m["prefix"] == "ls/src"
        level = int(m["level"], 16)
        levels.add(level)
        head = s3.head_object(Bucket=BUCKET, Key=o["Key"])
        ts = head["Metadata"].get("litestream-timestamp")
        assert ts is not None, head["Metadata"]
        assert GO_RFC3339NANO_MS.match(ts), ts
        body = s3.get_object(Bucket=BUCKET, Key=o["Key"], Range="bytes=0-99")["Body"].read()
        hdr_ts = struct.unpack(">q", body[32:40])[0]
        assert ts == go_rfc3339nano_ms(hdr_ts), (o["Key"], ts, hdr_ts)
        seen.add((level, int(m["min"], 16), int(m["max"], 16), o["Size"]))
    assert 0 in levels and 9 in levels, levels
    # walship's backend lists exactly these files, with these sizes.
    ours = walship_ltx(["-config", str(litestream_replica["cfg"]), str(litestream_replica["db"])])
    assert {(f["level"], int(f["min_txid"], 16), int(f["max_txid"], 16), f["size"]) for f in ours} == seen
    # ... and reads each header's timestamp as the metadata says.
    for f in ours:
        key = f"ls/src/{f['level']:04x}/{f['min_txid']}-{f['max_txid']}.ltx"
        meta = s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]["litestream-timestamp"]
        assert meta == go_rfc3339nano_ms(f["timestamp_ms"])


def test_describe_names_the_replica_without_secrets(moto, tmp_path):
    """An empty prefix: the error names `s3://bucket/path (endpoint ...)` and no key."""
    url = f"s3://{BUCKET}/nothing/here?endpoint=127.0.0.1:{moto['port']}"
    p = run([str(WALSHIP), "restore", "-o", str(tmp_path / "never.db"), url], env=s3_env(), check=False)
    assert p.returncode != 0
    assert f"s3://{BUCKET}/nothing/here (endpoint http://127.0.0.1:{moto['port']})" in p.stderr, p.stderr
    assert SECRET not in p.stderr + p.stdout
    # Wrong port: an actionable "cannot reach" error, still without the secret.
    dead = free_port()
    p = run([str(WALSHIP), "ltx", f"s3://{BUCKET}/x?endpoint=127.0.0.1:{dead}"], env=s3_env(), check=False)
    assert p.returncode != 0
    assert "cannot reach" in p.stderr and f"127.0.0.1:{dead}" in p.stderr, p.stderr
    assert SECRET not in p.stderr + p.stdout


def test_walship_replicates_to_s3_and_litestream_restores(built, moto, tmp_path):
    """The user's guide: a litestream.yml with `type: s3` and keys from the environment; the app
    writes through the extension; Litestream restores the replica."""
    db = tmp_path / "app.db"
    cfg = tmp_path / "litestream.yml"
    cfg.write_text(
        "dbs:\n"
        f"  - path: {db}\n"
        "    replica:\n"
        "      type: s3\n"
        f"      bucket: {BUCKET}\n"
        "      path: walship/app\n"
        f"      endpoint: {moto['endpoint']}\n"
        "      force-path-style: true\n"
        "      region: us-east-1\n"
        "      access-key-id: ${LITESTREAM_ACCESS_KEY_ID}\n"
        "      secret-access-key: ${LITESTREAM_SECRET_ACCESS_KEY}\n"
        "      sync-interval: 200ms\n"
    )
    env = {"WALSHIP_CONFIG": str(cfg), "LITESTREAM_ACCESS_KEY_ID": KEY_ID, "LITESTREAM_SECRET_ACCESS_KEY": SECRET}
    p = run([SYS_PYTHON, str(HERE / "app_driver.py"), str(EXT), str(db), "write-flush", "300"], env=env, timeout=300)
    flushed = json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])["flush"]
    assert flushed, f"walship_flush returned {flushed!r}: {p.stderr[-2000:]}"
    assert SECRET not in p.stderr
    keys = [o["Key"] for o in objects(moto, BUCKET, "walship/app/")]
    assert keys and all(LTX_KEY.match(k) for k in keys), keys
    for k in keys:
        ts = moto["s3"].head_object(Bucket=BUCKET, Key=k)["Metadata"].get("litestream-timestamp")
        assert ts and GO_RFC3339NANO_MS.match(ts), (k, ts)
    out = tmp_path / "out.db"
    run([litestream_bin(), "restore", "-config", str(cfg), "-o", str(out), str(db)], env=env)
    assert integrity(out) == "ok"
    assert content_hash(out) == content_hash(db)
    out2 = tmp_path / "out2.db"
    run([str(WALSHIP), "restore", "-config", str(cfg), "-o", str(out2), str(db)], env=env)
    assert content_hash(out2) == content_hash(db)
