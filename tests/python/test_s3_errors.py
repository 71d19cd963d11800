"""S3 failures users can act on: wrong credentials, a missing bucket, an unreachable endpoint,
TLS against a server that does not speak it. For each: the message names the replica and the
fix, it is logged once (not once per retry), walship_status() shows it, no secret appears
anywhere, and the application's database keeps working."""
import json
import shutil
import subprocess
import time

import pytest

from conftest import EXT, SYS_PYTHON, integrity, run
from test_s3 import KEY_ID, SECRET, free_port, moto  # noqa: F401  (moto is a fixture)

APP = r'''
import json, sqlite3, sys, time
l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(sys.argv[1])
c = sqlite3.connect(f"file:{sys.argv[2]}?vfs=walship", uri=True, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("CREATE TABLE t(x)")
slowest = 0
for i in range(300):
    t0 = time.perf_counter(); c.execute("INSERT INTO t VALUES (?)", (i,)); slowest = max(slowest, time.perf_counter() - t0)
    time.sleep(0.01)
status = json.loads(c.execute("SELECT walship_status()").fetchone()[0])
try:
    c.execute("SELECT walship_flush(1000)").fetchone(); flush_error = None
except sqlite3.Error as e:
    flush_error = str(e)
print(json.dumps({"rows": c.execute("SELECT count(*) FROM t").fetchone()[0], "status": status,
                  "flush_error": flush_error, "slowest_ms": slowest * 1000}))
c.close()
'''


def config(tmp_path, endpoint, bucket, key_id=KEY_ID, secret=SECRET):
    db = tmp_path / "app.db"
    cfg = tmp_path / "litestream.yml"
    cfg.write_text(
        "shutdown-sync-timeout: 2s\n"
        f"dbs:\n  - path: {db}\n    replica:\n      type: s3\n      bucket: {bucket}\n      path: app\n"
        f"      endpoint: {endpoint}\n      region: us-east-1\n      sync-interval: 100ms\n"
        f"      access-key-id: {key_id}\n      secret-access-key: {secret}\n"
    )
    return db, cfg


def run_app(tmp_path, db, cfg):
    script = tmp_path / "app.py"
    script.write_text(APP)
    p = run([SYS_PYTHON, str(script), str(EXT), str(db)], env={"WALSHIP_CONFIG": str(cfg)}, timeout=120)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return out, p.stderr


def check(out, err, db, secret, must_say):
    assert out["rows"] == 300, "every write succeeded"
    assert out["slowest_ms"] < 1000, f"a commit waited {out['slowest_ms']:.0f} ms"
    assert integrity(db) == "ok"
    last = out["status"]["last_error"] or ""
    for word in must_say:
        assert word.lower() in last.lower(), f"{word!r} not in status error: {last}"
    assert out["flush_error"], "flush must report that nothing reached storage"
    warned = [l for l in err.splitlines() if l.startswith("walship warn") and "app.db" in l]
    assert 1 <= len(warned) <= 2, "logged once per state change, not per retry:\n" + "\n".join(warned)
    assert secret not in err and secret not in json.dumps(out), "a secret leaked"


def test_missing_bucket(built, moto, tmp_path):
    db, cfg = config(tmp_path, moto["endpoint"], "no-such-bucket-walship")
    out, err = run_app(tmp_path, db, cfg)
    print(out["status"]["last_error"])
    check(out, err, db, SECRET, ["no-such-bucket-walship", "bucket"])


def test_unreachable_endpoint(built, tmp_path):
    port = free_port()  # nothing listens there
    db, cfg = config(tmp_path, f"http://127.0.0.1:{port}", "b")
    out, err = run_app(tmp_path, db, cfg)
    print(out["status"]["last_error"])
    check(out, err, db, SECRET, [f"127.0.0.1:{port}"])


def test_tls_against_a_plain_http_server(built, moto, tmp_path):
    db, cfg = config(tmp_path, f"https://127.0.0.1:{moto['port']}", "walship-py")
    out, err = run_app(tmp_path, db, cfg)
    print(out["status"]["last_error"])
    check(out, err, db, SECRET, ["tls"])


@pytest.fixture(scope="module")
def moto_auth(tmp_path_factory):
    """A second moto with authentication on: an IAM user is made while moto still accepts
    anything, then reset-auth makes it check every signature."""
    exe = shutil.which("moto_server")
    if not exe:
        pytest.skip("moto is not installed: python3 -m pip install 'moto[server]'")
    import boto3
    import urllib.request

    port = free_port()
    log = open(tmp_path_factory.mktemp("moto-auth") / "moto.log", "w")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail("moto_server (auth) did not start")
                time.sleep(0.1)
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="AKIASETUP", aws_secret_access_key="setup")
        iam.create_user(UserName="walship")
        iam.put_user_policy(UserName="walship", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="walship")["AccessKey"]
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
        s3.create_bucket(Bucket="authed")
        urllib.request.urlopen(urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
                                                      headers={"Content-Type": "text/plain"}))
        yield {"endpoint": endpoint, "key_id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_wrong_credentials(built, moto_auth, tmp_path):
    # An access key id the server does not know. (A wrong secret would also be refused, but
    # moto 5.2 mis-verifies signatures of requests with '/' in a query value, so on moto a
    # signature error cannot be told apart from that bug; the Rust conformance suite covers the
    # wrong-secret case on requests moto verifies correctly.)
    unknown = "AKIAWALSHIPNOTAKEY01"
    db, cfg = config(tmp_path, moto_auth["endpoint"], "authed", key_id=unknown, secret=moto_auth["secret"])
    out, err = run_app(tmp_path, db, cfg)
    check(out, err, db, moto_auth["secret"], ["403", "InvalidAccessKeyId", "access-key-id"])
