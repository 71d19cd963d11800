"""The oracle test: a randomized workload replicated to a local directory, restored at the
latest position and at many earlier TXIDs and timestamps, each compared with the state the
workload recorded at that point. Restores by both `walship restore` and the real Litestream."""
import json
import random

import pytest

from conftest import (
    EXT,
    SYS_PYTHON,
    HERE,
    WALSHIP,
    content_hash,
    integrity,
    litestream_restore,
    ltx_header,
    rfc3339_ms,
    run,
    walship_restore,
    write_config,
)

CASES = [
    # page size, transactions, exclusive locking, foreign write at, journal_size_limit, psow=0
    pytest.param(4096, 10_000, False, 5_000, 65536, False, id="4k-10000-foreign"),
    # Without powersafe overwrite, FULL commits pad the WAL with copies of the commit frame and
    # split a page write around the sync point.
    pytest.param(1024, 2_000, False, 700, -1, True, id="1k-2000-foreign-padding"),
    pytest.param(512, 1_500, True, -1, -1, False, id="512-exclusive"),
    pytest.param(65536, 600, False, -1, 0, False, id="64k"),
]


def restorers():
    out = [("litestream", litestream_restore)]
    if WALSHIP.exists():
        out.append(("walship", walship_restore))
    return out


@pytest.mark.parametrize("page_size,txns,exclusive,foreign_at,jsl,psow0", CASES)
def test_oracle(built, work, page_size, txns, exclusive, foreign_at, jsl, psow0):
    db, replica, out = work / "app.db", work / "replica", work / "records.json"
    # A long sync interval: the only files are the ones walship_flush() forces, so every
    # TXID in the replica is one the workload recorded a hash for.
    cfg = write_config(work / "litestream.yml", db, replica, sync_interval="1h")
    cmd = [SYS_PYTHON, str(HERE / "workload.py"), str(EXT), str(db), str(out),
           "--seed", str(page_size + txns), "--txns", str(txns), "--page-size", str(page_size),
           "--foreign-at", str(foreign_at), "--journal-size-limit", str(jsl)]
    if exclusive:
        cmd.append("--exclusive")
    if psow0:
        cmd.append("--psow0")
    p = run(cmd, env={"WALSHIP_CONFIG": str(cfg), "WALSHIP_LOG": "info"}, timeout=900)
    result = json.loads(out.read_text())
    records, counts = result["records"], result["counts"]
    assert len(records) >= min(10, txns // 100)
    # Exactly one snapshot, at first open: capture reads every commit from the WAL — the foreign
    # writer's too (it is read like any other, not merely detected) — so nothing else may cost
    # a snapshot. A resync is allowed only for what walship cannot see: the foreign
    # connection's own WAL restarts and truncations; this process's never cost one.
    snapshots = [l for l in p.stderr.splitlines() if "wrote snapshot" in l]
    assert len(snapshots) == 1, snapshots
    resyncs = [l for l in p.stderr.splitlines() if "resync at TXID" in l]
    if foreign_at >= 0:
        assert counts.get("foreign") == 1
        assert all("did not see" in l for l in resyncs), resyncs
    else:
        assert not resyncs, resyncs
    final = records[-1]
    assert final["hash"] == content_hash(db), "the workload's last record must be the database's state"

    by_txid = {}
    for r in records:
        by_txid.setdefault(r["txid"], r["hash"])
        assert by_txid[r["txid"]] == r["hash"], "one TXID, two states: a commit was not shipped"

    rng = random.Random(txns)
    earlier = sorted(rng.sample(sorted(by_txid), min(20, len(by_txid))))
    l0 = {ltx_header(f)["max"]: ltx_header(f) for f in (replica / "ltx" / "0").glob("*.ltx")}
    stamps = sorted(h["ts_ms"] for h in l0.values())

    for name, restore in restorers():
        latest = work / f"latest-{name}.db"
        restore(replica, latest)
        assert integrity(latest) == "ok"
        assert content_hash(latest) == final["hash"], f"{name}: latest restore differs from the source"
        for txid in earlier:
            target = work / f"{name}-{txid}.db"
            restore(replica, target, txid=txid)
            assert integrity(target) == "ok"
            assert content_hash(target) == by_txid[txid], f"{name}: restore at TXID {txid:x} differs"
            target.unlink()
        # Timestamps: a moment strictly between a file's commit time and the next file's
        # restores that file's state (Litestream compares strictly, walship with <=; a moment in
        # between means the same for both).
        checked = 0
        for txid in earlier:
            h = l0.get(txid)
            later = [t for t in stamps if t > h["ts_ms"]] if h else []
            if h is None or not later or later[0] - h["ts_ms"] < 2 or stamps.count(h["ts_ms"]) != 1:
                continue
            moment = rfc3339_ms((h["ts_ms"] + later[0]) // 2)
            target = work / f"{name}-ts-{txid}.db"
            restore(replica, target, timestamp=moment)
            assert content_hash(target) == by_txid[txid], f"{name}: restore at {moment} differs"
            target.unlink()
            checked += 1
        assert checked >= 5, "too few distinct timestamps to test point-in-time by time"
