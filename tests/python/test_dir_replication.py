"""Litestream 0.5's directory replication (`dir:`, `pattern:`, `recursive:`), issue 11.

A multi-tenant app opens databases under a directory that one config entry names. Each
database whose file name matches the pattern (in subdirectories only with `recursive: true`)
replicates to the entry's replica path joined with its path relative to the directory, where
Litestream 0.5 would put it; the others are served unreplicated. Real processes: Debian's
/usr/bin/python3 with the extension, `walship restore` and the real Litestream's restore, each
compared with its database by content hash and integrity_check.
"""
import json
import subprocess

import pytest

from conftest import EXT, SYS_PYTHON, content_hash, integrity, litestream_restore, walship_restore

APP = r"""
import json, sqlite3, sys
sqlite3.connect(":memory:").enable_load_extension(True)
c = sqlite3.connect(":memory:")
c.enable_load_extension(True)
c.load_extension(sys.argv[1])
out = {}
for path in sys.argv[2:]:
    db = sqlite3.connect(f"file:{path}?vfs=walship", uri=True, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, who TEXT, v BLOB)")
    for i in range(50):
        db.execute("INSERT INTO t(who, v) VALUES (?, randomblob(500))", (path,))
    status = json.loads(db.execute("SELECT walship_status()").fetchone()[0])
    flushed = None
    if status.get("replicated"):
        flushed = db.execute("SELECT walship_flush(30000)").fetchone()[0]
    out[path] = {"replicated": bool(status.get("replicated")), "flushed": flushed}
    db.close()
print(json.dumps(out))
"""


@pytest.mark.parametrize("recursive", [False, True])
def test_databases_under_a_dir_entry_replicate_where_litestream_puts_them(built, work, recursive):
    tenants, replica = work / "tenants", work / "replica"
    (tenants / "eu").mkdir(parents=True)
    (work / "other").mkdir()
    cfg = work / "litestream.yml"
    cfg.write_text(
        f"dbs:\n  - dir: {tenants}\n    pattern: \"*.db\"\n    recursive: {str(recursive).lower()}\n"
        f"    replica:\n      type: file\n      path: {replica}\n      sync-interval: 100ms\n"
    )
    dbs = {
        "tenants/a.db": True,
        "tenants/b.db": True,
        "tenants/eu/c.db": recursive,
        "tenants/notes.sqlite": False,  # the pattern wants *.db
        "other/d.db": False,  # not under the directory
    }
    p = subprocess.run(
        [SYS_PYTHON, "-c", APP, str(EXT), *[str(work / d) for d in dbs]],
        env={"PATH": "/usr/bin:/bin", "WALSHIP_CONFIG": str(cfg), "WALSHIP_LOG": "info"},
        capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    for rel, want in dbs.items():
        path = work / rel
        seen = got[str(path)]
        assert seen["replicated"] == want, (rel, seen, p.stderr[-2000:])
        sub = replica / path.relative_to(tenants) if want else None
        if not want:
            continue
        assert seen["flushed"], (rel, seen)
        assert (sub / "ltx").is_dir(), f"{rel}: no replica at {sub}"
        for tool, restore in (("walship", walship_restore), ("litestream", litestream_restore)):
            out = work / f"restored-{tool}-{rel.replace('/', '-')}"
            restore(sub, out)
            assert content_hash(out) == content_hash(path) and integrity(out) == "ok", (tool, rel)
    # Nothing else was written under the replica: one directory per replicated database.
    replicated = sorted(str(d.parent.relative_to(replica)) for d in replica.rglob("ltx"))
    assert replicated == sorted(str((work / r).relative_to(tenants)) for r, w in dbs.items() if w)
