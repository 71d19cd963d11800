"""The configuration our users already have (the guide's litestream.yml, verbatim but for the
endpoint and keys), replicating to a real S3 API server on 127.0.0.1 from a better-sqlite3
service and from Python, restored with the guide's own command."""
import json
import shutil

import pytest

from conftest import EXT, HERE, SYS_PYTHON, WALSHIP, content_hash, integrity, run
from test_hosts import ensure_node_modules
from test_s3 import BUCKET, KEY_ID, SECRET, moto  # noqa: F401  (moto is a fixture)

USER_YML = """dbs:
  - path: ./data/parako.db
    replicas:
      - type: s3
        bucket: {bucket}
        path: parako/sqlite
        endpoint: {endpoint}   # or MinIO / B2 / R2 / Garage endpoint
        access-key-id: ${{LITESTREAM_ACCESS_KEY_ID}}
        secret-access-key: ${{LITESTREAM_SECRET_ACCESS_KEY}}
        region: us-east-1
        retention: 168h
        sync-interval: 1s
"""


def project(tmp_path, moto, bucket):
    moto["s3"].create_bucket(Bucket=bucket)
    root = tmp_path / "parako"
    root.mkdir()
    (root / "litestream.yml").write_text(USER_YML.format(bucket=bucket, endpoint=moto["endpoint"]))
    env = {"LITESTREAM_ACCESS_KEY_ID": KEY_ID, "LITESTREAM_SECRET_ACCESS_KEY": SECRET}
    return root, env


def restore_like_the_guide(root, env):
    out = root / "restored.db"
    run([str(WALSHIP), "restore", "-config", "litestream.yml", "-o", "restored.db", "./data/parako.db"],
        env=env, cwd=root)
    assert integrity(out) == "ok"
    assert content_hash(out) == content_hash(root / "data" / "parako.db")


def test_node_service_with_the_users_litestream_yml(built, moto, tmp_path):
    ensure_node_modules()
    root, env = project(tmp_path, moto, "parako-node")
    node = shutil.which("node")
    p = run([node, str(HERE.parent / "hosts" / "node" / "parako.js"), str(EXT), "800"], env=env, cwd=root)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["txid"] >= 1 and out["status"]["last_error"] is None, out
    assert "s3://parako-node/parako/sqlite" in out["status"]["replica"]
    assert SECRET not in p.stdout + p.stderr
    restore_like_the_guide(root, env)


def test_python_app_with_the_users_litestream_yml(built, moto, tmp_path):
    root, env = project(tmp_path, moto, "parako-py")
    (root / "data").mkdir()
    p = run([SYS_PYTHON, str(HERE / "app_driver.py"), str(EXT), "./data/parako.db", "write-flush", "400"],
            env=env, cwd=root)
    assert json.loads(p.stdout.strip().splitlines()[-1])["flush"] >= 1
    restore_like_the_guide(root, env)
