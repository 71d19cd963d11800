"""Bad configuration: the message names what is wrong and what to do, and the application's
database keeps working (served without replication) — nothing is lost or refused."""
import json
import os
import subprocess

import pytest

from conftest import EXT, SYS_PYTHON, integrity, run

APP = r'''
import json, sqlite3, sys
l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(sys.argv[1])
c = sqlite3.connect(f"file:{sys.argv[2]}?vfs=walship", uri=True, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("CREATE TABLE t(x)")
for i in range(100): c.execute("INSERT INTO t VALUES (?)", (i,))
print(json.dumps({"rows": c.execute("SELECT count(*) FROM t").fetchone()[0],
                  "status": json.loads(c.execute("SELECT walship_status()").fetchone()[0])}))
c.close()
'''

CASES = {
    "sftp": ("dbs:\n  - path: {db}\n    replica:\n      type: sftp\n      host: h\n      path: /b\n",
             ["sftp", "not supported"]),
    "yaml": ("dbs:\n  - path: {db}\n    replica: [unclosed\n", ["litestream.yml:4:", "invalid YAML"]),
    "duration": ("dbs:\n  - path: {db}\n    replica:\n      type: file\n      path: {dir}/r\n      sync-interval: 10\n",
                 ["sync-interval", "10s"]),
    "unknown-type": ("dbs:\n  - path: {db}\n    replica:\n      type: ftp\n      path: /x\n", ["ftp", "type"]),
    "negative-duration": ("dbs:\n  - path: {db}\n    replica:\n      type: file\n      path: {dir}/r\n"
                          "      sync-interval: -5s\n", ["sync-interval", "-5s"]),
    "unit-duration": ("dbs:\n  - path: {db}\n    replica:\n      type: file\n      path: {dir}/r\n"
                      "      retention: 5 parsecs\n", ["retention", "parsecs"]),
    "unset-var": ("dbs:\n  - path: {db}\n    replica:\n      type: s3\n      bucket: ${{WALSHIP_TEST_UNSET_BUCKET}}\n",
                  ["WALSHIP_TEST_UNSET_BUCKET", "not set"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_is_named_and_the_database_keeps_working(built, work, case):
    text, must_say = CASES[case]
    db = work / "app.db"
    cfg = work / "litestream.yml"
    cfg.write_text(text.format(db=db, dir=work))
    script = work / "app.py"
    script.write_text(APP)
    p = run([SYS_PYTHON, str(script), str(EXT), str(db)], env={"WALSHIP_CONFIG": str(cfg)})
    out = json.loads(p.stdout)
    assert out["rows"] == 100 and out["status"]["replicated"] is False
    err = p.stderr
    assert "NOT replicated" in err and str(cfg) in err, err
    assert "no walship configuration found" not in err, "a broken file is not an absent one"
    for word in must_say:
        assert word.lower() in err.lower(), f"{case}: expected {word!r} in: {err}"
    assert integrity(db) == "ok"


def test_unknown_key_warns_and_replication_still_works(built, work):
    db = work / "app.db"
    cfg = work / "litestream.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replica:\n      type: file\n      path: {work}/r\n      sync-intreval: 1s\n")
    script = work / "app.py"
    script.write_text(APP)
    p = run([SYS_PYTHON, str(script), str(EXT), str(db)], env={"WALSHIP_CONFIG": str(cfg)})
    assert "sync-intreval" in p.stderr and "sync-interval" in p.stderr, p.stderr
    assert json.loads(p.stdout)["status"]["replicated"] is True


def test_a_database_not_in_wal_mode_is_named_once(built, work):
    """Rollback-journal commits never reach the WAL: walship says so once, not silently."""
    db = work / "app.db"
    cfg = work / "litestream.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replica:\n      type: file\n      path: {work}/r\n")
    sql = "".join(f"INSERT INTO t VALUES ({i});\n" for i in range(20))
    script = f".load {EXT.with_suffix('')}\n.open file:{db}?vfs=walship\nCREATE TABLE t(x);\n{sql}SELECT count(*) FROM t;\n"
    p = subprocess.run(["sqlite3"], env={**os.environ, "WALSHIP_CONFIG": str(cfg)}, capture_output=True,
                       text=True, input=script, timeout=60)
    assert p.stdout.strip() == "20"
    named = [l for l in p.stderr.splitlines() if "not in WAL mode" in l]
    assert len(named) == 1 and str(db) in named[0] and "PRAGMA journal_mode=WAL" in named[0], p.stderr
