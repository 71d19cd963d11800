"""Compaction, scheduled snapshots and retention on a file replica, with short intervals."""
import json

from conftest import EXT, HERE, SYS_PYTHON, content_hash, integrity, litestream_restore, run, walship_restore, WALSHIP


def test_compaction_snapshots_and_retention(built, work):
    db, replica = work / "app.db", work / "replica"
    cfg = work / "litestream.yml"
    cfg.write_text(f"""
levels:
  - interval: 1s
  - interval: 2s
snapshot:
  interval: 3s
  retention: 6s
l0-retention: 1s
dbs:
  - path: {db}
    replica:
      type: file
      path: {replica}
      sync-interval: 200ms
""")
    out = work / "records.json"
    p = run([SYS_PYTHON, str(HERE / "maintain_driver.py"), str(EXT), str(db), str(out), "14"],
            env={"WALSHIP_CONFIG": str(cfg), "WALSHIP_LOG": "debug"}, timeout=120)
    records = json.loads(out.read_text())
    assert "compacted" in p.stderr and "scheduled snapshot written" in p.stderr, p.stderr[-3000:]
    levels = {lvl: sorted(f.name for f in (replica / "ltx" / str(lvl)).glob("*.ltx")) for lvl in (0, 1, 2, 9)}
    assert levels[1] and levels[2], levels
    assert len(levels[9]) >= 2, "scheduled snapshots must have been written"
    # Retention: the first snapshot (TXID 1) and the early level-0 files are gone.
    assert "0000000000000001-0000000000000001.ltx" not in levels[9], levels[9]
    assert not any(n.startswith("0000000000000002-") for n in levels[0]), levels[0][:3]

    final = records[-1]
    for name, restore in (("walship", walship_restore), ("litestream", litestream_restore)):
        latest = work / f"latest-{name}.db"
        restore(replica, latest)
        assert integrity(latest) == "ok"
        assert content_hash(latest) == final["hash"] == content_hash(db), name

    # Every TXID still named by a file (a point inside the window) restores to the state the
    # driver recorded for it; a TXID before the window fails with a clear error.
    named = set()
    for lvl, names in levels.items():
        named |= {int(n.split("-")[1][:16], 16) for n in names}
    recorded = {r["txid"]: r["hash"] for r in records}
    oldest = min(int(n.split("-")[1][:16], 16) for n in levels[9])
    checked = 0
    for txid in sorted(t for t in named if t in recorded and t >= oldest)[-12:]:
        target = work / f"at-{txid}.db"
        walship_restore(replica, target, txid=txid)
        assert content_hash(target) == recorded[txid], f"TXID {txid:x}"
        checked += 1
    assert checked >= 3
    early = min(recorded)
    assert early < oldest
    p = run([str(WALSHIP), "restore", "-o", str(work / "too-old.db"), "-txid", f"{early:016x}", f"file://{replica}"], check=False)
    assert p.returncode == 1 and "earliest" in p.stderr.lower(), p.stderr
