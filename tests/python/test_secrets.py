"""Secrets never leak: a recognisable access key and secret are given every way walship takes
them (inline in the config, through `${VAR}` expansion, through the AWS_* environment), then
every output a user or an operator can see is collected and searched: the app's log at trace
level, walship_status(), walship_flush() errors, the status file, and the CLI's `status`, `ltx`
and `restore` output, in success and in failure (unreachable storage, a config error on the
line that holds the secret)."""
import json
import subprocess

import pytest

from conftest import EXT, SYS_PYTHON, WALSHIP
from test_s3 import BUCKET, free_port, moto  # noqa: F401 (fixture)

KEY_ID = "AKIACANARYWALSHIP042"
SECRET = "canary/Secret+walship-4f1c9e2d8b7a6350"

APP = r'''
import json, sqlite3, sys
l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(sys.argv[1])
c = sqlite3.connect(f"file:{sys.argv[2]}?vfs=walship", uri=True, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("CREATE TABLE IF NOT EXISTS t(x)")
for i in range(50): c.execute("INSERT INTO t VALUES (?)", (i,))
try:
    flushed = c.execute("SELECT walship_flush(3000)").fetchone()[0]
except sqlite3.Error as e:
    flushed = "error: " + str(e)
print(json.dumps({"flush": flushed, "status": c.execute("SELECT walship_status()").fetchone()[0]}))
c.close()
'''

WAYS = {
    "inline": ("      access-key-id: {key}\n      secret-access-key: {secret}\n", {}),
    "expanded": ("      access-key-id: ${{CANARY_KEY}}\n      secret-access-key: ${{CANARY_SECRET}}\n",
                 {"CANARY_KEY": KEY_ID, "CANARY_SECRET": SECRET}),
    "environment": ("", {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}),
}


def sh(cmd, env, timeout=120):
    p = subprocess.run(cmd, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.parametrize("way", sorted(WAYS))
def test_no_output_shows_a_secret(built, moto, tmp_path, way):
    creds, env = WAYS[way]
    creds = creds.format(key=KEY_ID, secret=SECRET)
    db, cfg, dead_cfg = tmp_path / "app.db", tmp_path / "litestream.yml", tmp_path / "dead.yml"
    replica = f"      type: s3\n      bucket: {BUCKET}\n      path: canary-{way}\n      region: us-east-1\n"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replica:\n{replica}      endpoint: {moto['endpoint']}\n"
                   f"      sync-interval: 100ms\n{creds}")
    dead_cfg.write_text(f"dbs:\n  - path: {db}\n    replica:\n{replica}      endpoint: http://127.0.0.1:{free_port()}\n"
                        f"      sync-interval: 100ms\n{creds}")
    env = {**env, "WALSHIP_LOG": "trace"}
    script = tmp_path / "app.py"
    script.write_text(APP)
    outputs = {}
    ok_restore = tmp_path / "ok.db"

    rc, outputs["app"] = sh([SYS_PYTHON, str(script), str(EXT), str(db)], {**env, "WALSHIP_CONFIG": str(cfg)})
    assert rc == 0, outputs["app"]
    result = json.loads(next(line for line in outputs["app"].splitlines() if line.startswith('{"flush"')))
    assert "error" not in str(result["flush"]), outputs["app"][-2000:]
    outputs["status file"] = (tmp_path / ".app.db-walship" / "status.json").read_text()
    for name, cmd in {
        "cli status": ["status", "-config", str(cfg)],
        "cli status -json": ["status", "-json", "-config", str(cfg)],
        "cli ltx": ["ltx", "-config", str(cfg), str(db)],
        "cli restore": ["restore", "-config", str(cfg), "-o", str(ok_restore), str(db)],
    }.items():
        rc, outputs[name] = sh([str(WALSHIP), *cmd], env)
        assert rc == 0, f"{name}: {outputs[name]}"

    # Failures: storage unreachable (app and CLI), and a config error on the secret's own line.
    rc, outputs["app, storage down"] = sh([SYS_PYTHON, str(script), str(EXT), str(db)],
                                          {**env, "WALSHIP_CONFIG": str(dead_cfg)})
    assert rc == 0 and "error" in outputs["app, storage down"], outputs["app, storage down"]
    rc, outputs["cli restore, storage down"] = sh(
        [str(WALSHIP), "restore", "-config", str(dead_cfg), "-o", str(tmp_path / "x.db"), str(db)], env)
    assert rc != 0
    bad = tmp_path / "bad.yml"
    bad.write_text(cfg.read_text().replace("      sync-interval: 100ms\n", "      sync-interval: 100ms\n   - ")
                   + f"      secret-access-key: {SECRET} [\n")
    rc, outputs["app, bad config"] = sh([SYS_PYTHON, str(script), str(EXT), str(db)], {**env, "WALSHIP_CONFIG": str(bad)})
    assert "NOT replicated" in outputs["app, bad config"], outputs["app, bad config"]
    rc, outputs["cli restore, bad config"] = sh(
        [str(WALSHIP), "restore", "-config", str(bad), "-o", str(tmp_path / "y.db"), str(db)], env)
    assert rc != 0

    assert len(outputs["app"]) > 500, "trace logging produced output to search"
    for name, text in outputs.items():
        assert SECRET not in text, f"the secret access key appears in {name}"
        for part in SECRET.split("/") + SECRET.split("+"):  # nor a recognisable piece of it
            assert len(part) < 12 or part not in text, f"part of the secret ({part}) appears in {name}"
        assert KEY_ID not in text, f"the access key id appears in {name}"
