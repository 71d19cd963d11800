"""Process lifecycle: clean close, reopen, crash, concurrent writers, a replica that fails.
Each run is a separate /usr/bin/python3 process loading the real extension."""
import json
import subprocess

from conftest import EXT, HERE, SYS_PYTHON, content_hash, integrity, litestream_restore, run, walship_restore, write_config


def app(work, cfg, action, n=0, check=True, log="info"):
    p = run([SYS_PYTHON, str(HERE / "app_driver.py"), str(EXT), str(work / "app.db"), action, str(n)],
            env={"WALSHIP_CONFIG": str(cfg), "WALSHIP_LOG": log}, check=check, timeout=300)
    return p


def last_json(p):
    return json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])


def restored_equals_source(work, replica, tag=""):
    out = work / f"restored{tag}.db"
    walship_restore(replica, out, extra=["-force"])
    assert integrity(out) == "ok"
    assert content_hash(out) == content_hash(work / "app.db")
    return out


def test_closing_the_last_connection_ships_everything(built, work):
    replica = work / "replica"
    cfg = write_config(work / "l.yml", work / "app.db", replica, sync_interval="1h")
    app(work, cfg, "write", 300)  # no flush: only the close can ship these
    restored_equals_source(work, replica)


def test_reopen_resumes_without_a_new_snapshot(built, work):
    replica = work / "replica"
    cfg = write_config(work / "l.yml", work / "app.db", replica, sync_interval="1h")
    first = app(work, cfg, "write-flush", 200)
    assert first.stderr.count("wrote snapshot") == 1
    second = app(work, cfg, "write-flush", 200)
    # Resumed: at once when the file's stamp proves it untouched, else after comparing it page
    # by page with the replica's record (a stamp taken within a clock tick of the last write
    # proves nothing) — shipping at most the pages the app changed meanwhile. Never the database.
    assert "resuming" in second.stderr or "resync at TXID" in second.stderr, second.stderr
    assert "wrote snapshot" not in second.stderr, "a clean reopen must not re-upload the database"
    assert last_json(second)["flush"] > last_json(first)["flush"]
    restored_equals_source(work, replica)
    # and Litestream reads the same history
    out = work / "ls.db"
    litestream_restore(replica, out)
    assert content_hash(out) == content_hash(work / "app.db")


def test_commits_unshipped_at_a_crash_are_shipped_at_the_next_open(built, work):
    replica = work / "replica"
    cfg = write_config(work / "l.yml", work / "app.db", replica, sync_interval="1h")
    p = app(work, cfg, "crash", 150, check=False)
    assert p.returncode == -9, p.stderr
    before = last_json(p)
    # The replica holds only what was flushed before the kill.
    out = work / "at-crash.db"
    walship_restore(replica, out)
    con_rows = run(["sqlite3", str(out), "SELECT count(*) FROM t"]).stdout.strip()
    assert int(con_rows) == 150 and before["rows"] == 300
    # The next open finds the 150 unshipped commits and ships them without a snapshot: read from
    # the WAL after the recorded position when the database file's stamp proves it untouched,
    # else as a resync of the pages that differ (a checkpoint wrote the file just before the
    # kill, so its stamp is racy).
    again = app(work, cfg, "open")
    assert last_json(again)["rows"] == 300
    assert "resuming" in again.stderr or "resync at TXID" in again.stderr, again.stderr
    assert "wrote snapshot" not in again.stderr, again.stderr
    restored_equals_source(work, replica, "-after")


def test_concurrent_writers_and_snapshots(built, work):
    replica = work / "replica"
    cfg = write_config(work / "l.yml", work / "app.db", replica, sync_interval="50ms")
    p = app(work, cfg, "threads", 400)
    assert last_json(p)["rows"] == 4 * 400 + 5
    # The plain-VFS writer's commits are in the WAL like everyone's: read and shipped, with no
    # snapshot beyond the first.
    assert p.stderr.count("wrote snapshot") == 1, p.stderr
    restored_equals_source(work, replica)
    # Every snapshot in the history restores to a sound database.
    snaps = sorted((replica / "ltx" / "9").glob("*.ltx"))
    for s in snaps:
        txid = int(s.name.split("-")[1].split(".")[0], 16)
        out = work / f"snap-{txid}.db"
        walship_restore(replica, out, txid=txid)
        assert integrity(out) == "ok"


def test_a_broken_replica_never_blocks_or_fails_the_app(built, work):
    (work / "blocker").write_text("a file where the replica directory should be")
    replica = work / "blocker" / "replica"
    cfg = write_config(work / "l.yml", work / "app.db", replica, sync_interval="100ms",
                       extra="shutdown-sync-timeout: 2s\n")
    p = app(work, cfg, "write", 500)
    res = last_json(p)
    assert res["rows"] == 500, "every write must succeed while the replica is unusable"
    assert res["elapsed_ms"] < 15000, f"close must give up after shutdown-sync-timeout, took {res['elapsed_ms']} ms"
    assert "replica" in p.stderr and ("Not a directory" in p.stderr or "not a directory" in p.stderr), p.stderr
    assert integrity(work / "app.db") == "ok"


def test_a_database_changed_while_the_app_was_down_is_not_trusted(built, work):
    replica = work / "replica"
    cfg = write_config(work / "l.yml", work / "app.db", replica, sync_interval="1h")
    app(work, cfg, "write-flush", 100)
    # Someone edits the database without walship while the app is stopped.
    run(["sqlite3", str(work / "app.db"), "INSERT INTO t(who) VALUES ('edited offline'); PRAGMA wal_checkpoint(TRUNCATE);"])
    again = app(work, cfg, "write-flush", 10)
    # Not trusted: the pages that differ from the replica's record are shipped (a resync), and
    # only those — not a snapshot of the whole database.
    assert "resuming" not in again.stderr and "resync at TXID" in again.stderr, again.stderr
    assert "wrote snapshot" not in again.stderr, again.stderr
    out = restored_equals_source(work, replica)
    assert run(["sqlite3", str(out), "SELECT count(*) FROM t WHERE who = 'edited offline'"]).stdout.strip() == "1"
