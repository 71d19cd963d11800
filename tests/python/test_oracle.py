"""The oracle test: a randomized workload replicated to a local directory, restored at the
latest position and at many earlier TXIDs and timestamps, each compared with the state the
workload recorded at that point. Restores by both `walship restore` and the real Litestream."""
import collections
import json
import os
import random
import re

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
    # page size, transactions, exclusive locking, foreign write at, journal_size_limit, psow=0,
    # foreign process + journal-mode switches
    pytest.param(4096, 10_000, False, 5_000, 65536, False, False, id="4k-10000-foreign"),
    # Without powersafe overwrite, FULL commits pad the WAL with copies of the commit frame and
    # split a page write around the sync point.
    pytest.param(1024, 2_000, False, 700, -1, True, False, id="1k-2000-foreign-padding"),
    pytest.param(512, 1_500, True, -1, -1, False, False, id="512-exclusive"),
    pytest.param(65536, 600, False, -1, 0, False, False, id="64k"),
    # Another process on plain SQLite commits and checkpoints (every mode) at random points
    # between the app's transactions, and the app leaves WAL mode for DELETE or TRUNCATE for a
    # few transactions (sometimes a VACUUM) and comes back.
    pytest.param(4096, 3_000, False, -1, 65536, False, True, id="4k-3000-foreign-process-journal"),
    pytest.param(1024, 1_500, False, -1, -1, True, True, id="1k-1500-foreign-process-journal-padding"),
]

# Why a resync may happen: only for what walship cannot see — another process's WAL restart,
# truncation or deletion, or a commit that reached the database file without the WAL (a
# rollback-journal transaction, a checkpoint by another process of frames walship never read).
UNSEEN = ("did not see", "outside the WAL", "rollback-journal", "truncated or deleted before walship read it")


def restorers():
    out = [("litestream", litestream_restore)]
    if WALSHIP.exists():
        out.append(("walship", walship_restore))
    return out


@pytest.mark.parametrize("page_size,txns,exclusive,foreign_at,jsl,psow0,foreign_proc", CASES)
def test_oracle(built, work, page_size, txns, exclusive, foreign_at, jsl, psow0, foreign_proc):
    db, replica, out = work / "app.db", work / "replica", work / "records.json"
    # A long sync interval: the only files are the ones walship_flush() forces, so every
    # TXID in the replica is one the workload recorded a hash for.
    cfg = write_config(work / "litestream.yml", db, replica, sync_interval="1h")
    # To explore (CI runs the defaults): WALSHIP_ORACLE_SEED shifts every case's seed;
    # WALSHIP_ORACLE_JOURNAL_MODES (e.g. DELETE,TRUNCATE,PERSIST,MEMORY) and
    # WALSHIP_ORACLE_FOREIGN_RATE steer the foreign-process cases.
    seed = page_size + txns + int(os.environ.get("WALSHIP_ORACLE_SEED", "0"))
    cmd = [SYS_PYTHON, str(HERE / "workload.py"), str(EXT), str(db), str(out),
           "--seed", str(seed), "--txns", str(txns), "--page-size", str(page_size),
           "--foreign-at", str(foreign_at), "--journal-size-limit", str(jsl)]
    if exclusive:
        cmd.append("--exclusive")
    if psow0:
        cmd.append("--psow0")
    if foreign_proc:
        cmd += ["--foreign-proc", "--journal-switch",
                "--journal-modes", os.environ.get("WALSHIP_ORACLE_JOURNAL_MODES", "DELETE,TRUNCATE"),
                "--foreign-rate", os.environ.get("WALSHIP_ORACLE_FOREIGN_RATE", "0.04")]
    p = run(cmd, env={"WALSHIP_CONFIG": str(cfg), "WALSHIP_LOG": "info"}, timeout=900)
    result = json.loads(out.read_text())
    records, counts = result["records"], result["counts"]
    assert len(records) >= min(10, txns // 100)
    # Exactly one snapshot, at first open: capture reads every commit from the WAL — the foreign
    # writer's too (it is read like any other, not merely detected) — so nothing else may cost
    # a snapshot. A resync is allowed only for what walship cannot see: the foreign
    # connection's own WAL restarts and truncations; this process's never cost one.
    snapshots = [l for l in p.stderr.splitlines() if "wrote snapshot" in l]
    assert len(snapshots) == 1 and "first open" in snapshots[0], snapshots
    resyncs = [l for l in p.stderr.splitlines() if "resync at TXID" in l]
    reasons = collections.Counter(re.sub(r".*resync at TXID \w+ \((.*)\): .*", r"\1", l) for l in resyncs)
    print(f"{len(resyncs)} resyncs: {dict(reasons)}; counts: {json.dumps(counts, sort_keys=True)}")
    if foreign_at >= 0:
        assert counts.get("foreign") == 1
        assert all("did not see" in l for l in resyncs), resyncs
    elif foreign_proc:
        # The run did what it is for: foreign commits and checkpoints of every mode, and
        # rollback-journal transactions between WAL periods.
        assert counts.get("foreign-write-wal", 0) >= 10, counts
        for mode in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            assert counts.get(f"foreign-checkpoint-{mode}", 0) >= 1, counts
        assert counts.get("journal-WAL", 0) >= 2, counts
        assert not [k for k in counts if k.endswith("-busy")], counts
        assert all(any(u in l for u in UNSEEN) for l in resyncs), resyncs
    else:
        # This process's own work never costs a resync — with one exception at first open: the
        # first-open image can be read between the new database's creation and its switch to
        # WAL (a rollback-journal commit by the app itself); the image then predates that
        # commit, so the position is lost and the next TXID ships it. Only right after the
        # first snapshot, and never more than once.
        late = [l for l in resyncs if "resync at TXID 0000000000000002 " not in l]
        assert not late and len(resyncs) <= 1, resyncs
    final = records[-1]
    assert final["hash"] == content_hash(db), "the workload's last record must be the database's state"

    by_txid = {}
    for r in records:
        by_txid.setdefault(r["txid"], r["hash"])
        assert by_txid[r["txid"]] == r["hash"], "one TXID, two states: a commit was not shipped"

    rng = random.Random(txns)
    earlier = set(rng.sample(sorted(by_txid), min(20, len(by_txid))))
    # And up to 15 of the states right after what walship could not follow: a foreign commit or
    # checkpoint, a journal-mode switch, a rollback-journal transaction.
    unseen = sorted({r["txid"] for r in records if r.get("after")} - earlier)
    earlier = sorted(earlier | set(rng.sample(unseen, min(15, len(unseen)))))
    if foreign_proc and WALSHIP.exists():
        # All of them, by walship (the sample above goes to both tools).
        for txid in sorted(set(unseen) - set(earlier)):
            target = work / f"walship-unseen-{txid}.db"
            walship_restore(replica, target, txid=txid, extra=("-integrity-check", "none"))
            assert integrity(target) == "ok"
            assert content_hash(target) == by_txid[txid], f"walship: restore at TXID {txid:x} differs"
            target.unlink()
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
            assert integrity(target) == "ok"
            assert content_hash(target) == by_txid[txid], f"{name}: restore at {moment} differs"
            target.unlink()
            checked += 1
        assert checked >= 5, "too few distinct timestamps to test point-in-time by time"
