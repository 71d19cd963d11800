"""Two writers for one replica, with the real extension in separate /usr/bin/python3 processes
(writers_driver.py), interleaved step by step through marker files.

* Two processes on the same database (a deploy overlap): exactly one ships (the local lock in
  `.<db>-walship/lock`); the other says so once in its log and in walship_status(), uploads
  nothing, and takes over when the first exits. The first notices the second's commits (frames
  it never saw) and snapshots. The replica restores to the database, both processes' rows in it.
* Two "hosts" (different databases and directories, WALSHIP_HOST set apart) on one S3 bucket and
  path (moto): the second is refused with the lease error naming the holder and the expiry,
  uploads nothing, and the replica stays exactly the first's database; it takes over after the
  first closes cleanly (lease released) or is killed (lease expired, short `lease-ttl`).
"""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import EXT, HERE, SYS_PYTHON, WALSHIP, content_hash, integrity, run, walship_restore
from test_s3 import BUCKET, KEY_ID, SECRET, moto  # noqa: F401 (fixture)

DRIVER = HERE / "writers_driver.py"


def start(db, who, steps, env):
    full = dict(os.environ)
    full.pop("AWS_CA_BUNDLE", None)
    full.update(env)
    return subprocess.Popen([SYS_PYTHON, str(DRIVER), str(EXT), str(db), who, ",".join(steps)],
                            env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p, timeout=120):
    out, err = p.communicate(timeout=timeout)
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    return p.returncode, lines, err


def statuses(lines):
    return [l["status"] for l in lines if "status" in l]


def flushes(lines):
    return [l for l in lines if "flush" in l]


def rows_by_writer(db):
    out = run(["sqlite3", str(db), "SELECT who, count(*) FROM t GROUP BY who"]).stdout.split()
    return dict(l.split("|") for l in out)


def local_cfg(work, db, replica):
    cfg = work / "walship.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replica:\n      type: file\n      path: {replica}\n"
                   "      sync-interval: 100ms\n")
    return cfg


def test_two_processes_on_one_database_exactly_one_ships(built, work):
    db, replica = work / "app.db", work / "replica"
    cfg = local_cfg(work, db, replica)
    env = {"WALSHIP_CONFIG": str(cfg), "WALSHIP_LOG": "info"}
    m = lambda name: str(work / name)  # noqa: E731 — marker files
    a = start(db, "A", ["w:30", "f", "s", f"touch:{m('a1')}", f"wait:{m('b1')}",
                        "w:30", "f", "s", f"touch:{m('a2')}", f"wait:{m('b2')}", "w:10", "f", "s"], env)
    b = start(db, "B", [f"wait:{m('a1')}", "w:30", "e", f"touch:{m('b1')}",
                        f"wait:{m('a2')}", "w:30", "s", f"touch:{m('b2')}", f"wait:{m('a_exited')}",
                        "w:30", "f", "s"], env)
    rc_a, out_a, err_a = finish(a)
    assert rc_a == 0, err_a
    # While A ran: B uploaded nothing and knows why.
    replica_files_at_a_exit = sorted(p.relative_to(replica) for p in replica.rglob("*.ltx"))
    (work / "a_exited").touch()
    rc_b, out_b, err_b = finish(b)
    assert rc_b == 0, err_b

    # A shipped B's commits too: they are in the WAL like A's own (read, not merely detected),
    # so A never needed a second snapshot.
    assert "another process" not in err_a, err_a
    assert all(f["error"] is None for f in flushes(out_a)), out_a
    assert err_a.count("wrote snapshot") == 1, err_a
    # B said it exactly once, naming A's pid, and shows it in walship_status() meanwhile.
    line = f"another process (pid {a.pid}) is replicating this database; this process will not ship until it exits"
    assert err_b.count("another process") == 1, err_b
    assert line in err_b, err_b
    during = statuses(out_b)[:2]
    for st in during:
        assert line in (st["last_error"] or ""), st
        assert st["txid_int"] == 0 and st["snapshots"] == 0, st
    # B wrote no replica file before A exited: every file then was A's, and B's log shows no
    # upload before its takeover line.
    before = err_b.split("this process now replicates")[0]
    assert "wrote snapshot" not in before and "resuming" not in before, err_b
    assert "this process now replicates" in err_b, err_b
    assert replica_files_at_a_exit, "A shipped nothing"
    # B took over from the position A recorded (resumed when the WAL still holds it, else a
    # resync of the differing pages; never a new full snapshot) and flushed.
    final = flushes(out_b)[-1]
    assert final["error"] is None and final["flush"] > 0, out_b
    after = err_b.split("this process now replicates")[1]
    assert "resuming" in after or "resync at TXID" in after, err_b
    assert "wrote snapshot" not in after, err_b
    st = statuses(out_b)[-1]
    assert st["last_error"] is None and st["snapshots"] == 0, st

    out = work / "restored.db"
    walship_restore(replica, out, extra=["-force"])
    assert integrity(out) == "ok"
    assert content_hash(out) == content_hash(db)
    counts = rows_by_writer(out)
    assert counts == {"A": "70", "B": "90"}, counts


# ---- two hosts, one S3 replica path ---------------------------------------------------------------

def host_env(work, db, moto, path, host):
    cfg = work / "walship.yml"
    cfg.write_text(
        "lease-ttl: 3s\n"
        "lease-renew-interval: 1s\n"
        "dbs:\n"
        f"  - path: {db}\n"
        "    replica:\n"
        "      type: s3\n"
        f"      bucket: {BUCKET}\n"
        f"      path: {path}\n"
        f"      endpoint: {moto['endpoint']}\n"
        "      force-path-style: true\n"
        "      sync-interval: 100ms\n")
    return {"WALSHIP_CONFIG": str(cfg), "WALSHIP_LOG": "info", "WALSHIP_HOST": host,
            "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}


def ltx_keys(moto, path):
    r = moto["s3"].list_objects_v2(Bucket=BUCKET, Prefix=f"{path}/")
    return sorted(o["Key"] for o in r.get("Contents", []) if o["Key"].endswith(".ltx"))


def restore_s3(moto, path, out):
    url = f"s3://{BUCKET}/{path}?endpoint=127.0.0.1:{moto['port']}"
    run([str(WALSHIP), "restore", "-force", "-o", str(out), url],
        env={"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET})
    assert integrity(out) == "ok"
    return content_hash(out)


@pytest.mark.parametrize("first_ends", ["clean-close", "crash"])
def test_second_host_on_the_same_replica_path_is_refused(built, moto, tmp_path, first_ends):
    path = f"hosts-{first_ends}"
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    db1, db2 = one / "app.db", two / "app.db"
    m = lambda name: str(tmp_path / name)  # noqa: E731
    tail = ["kill"] if first_ends == "crash" else []
    h1 = start(db1, "one", ["w:30", "f", f"touch:{m('h1')}", f"wait:{m('h2')}", "w:20", "f", "s",
                            f"touch:{m('h1done')}", f"wait:{m('checked')}", *tail],
               host_env(one, db1, moto, path, "host-one"))
    h2 = start(db2, "two", [f"wait:{m('h1')}", "w:40", "e", f"touch:{m('h2')}",
                            f"wait:{m('h1_exited')}", "w:10", "f", "s"],
               host_env(two, db2, moto, path, "host-two"))
    # Host one has shipped everything; host two has written meanwhile: the replica is host one's.
    deadline = time.time() + 60
    while not os.path.exists(m("h1done")):
        assert time.time() < deadline and h1.poll() is None, h1.communicate()
        time.sleep(0.05)
    keys_before = ltx_keys(moto, path)
    if restore_s3(moto, path, tmp_path / "r1.db") != content_hash(db1):
        (tmp_path / "checked").touch()
        (tmp_path / "h1_exited").touch()
        raise AssertionError(f"the replica is not host one's database:\n{keys_before}\n{finish(h1)}\n{finish(h2)}")
    # The lease object is there, outside the LTX prefixes, naming host one.
    lease = json.loads(moto["s3"].get_object(Bucket=BUCKET, Key=f"{path}/walship-lease.json")["Body"].read())
    assert lease["host"] == "host-one" and lease["pid"] == h1.pid, lease
    (tmp_path / "checked").touch()
    rc1, out1, err1 = finish(h1)
    assert rc1 == (-signal.SIGKILL if first_ends == "crash" else 0), err1
    assert "leased by" not in err1, err1
    # Nothing of host two's reached the bucket while host one held the lease.
    assert ltx_keys(moto, path) == keys_before
    (tmp_path / "h1_exited").touch()
    rc2, out2, err2 = finish(h2)
    assert rc2 == 0, err2

    msg = f"replica s3://{BUCKET}/{path} (endpoint {moto['endpoint']}) is leased by host host-one pid {h1.pid} until "
    assert err2.count("is leased by host") == 1, err2
    assert msg in err2 and "another walship is replicating there" in err2, err2
    refused = statuses(out2)[0]
    assert msg in (refused["last_error"] or ""), refused
    assert refused["txid_int"] == 0 and refused["snapshots"] == 0, refused
    # Then host two took the lease over (released, or expired after the 3 s TTL) and replicated
    # its own database as the next TXIDs.
    assert flushes(out2)[-1]["error"] is None, out2
    if first_ends == "crash":
        assert "taking over the expired lease of host host-one" in err2, err2
    after = statuses(out2)[-1]
    assert after["last_error"] is None and after["snapshots"] >= 1, after
    assert after["txid_int"] > max(int(k[-20:-4], 16) for k in keys_before), after
    assert restore_s3(moto, path, tmp_path / "r2.db") == content_hash(db2)
    # Host two's clean close released the lease.
    assert moto["s3"].list_objects_v2(Bucket=BUCKET, Prefix=f"{path}/walship-lease.json").get("KeyCount", 0) == 0
