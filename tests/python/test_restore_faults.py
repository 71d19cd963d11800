"""`walship restore` from S3 survives storage faults: a restore from moto through an HTTP-aware
fault proxy (a `faultproxy.FaultProxy` subclass) that injects, into object GETs, HTTP 500,
HTTP 503, 503 SlowDown, a reset before any answer, a stall before the answer (a timeout), and
mid-body: a connection reset, a truncated response (clean close short of Content-Length) and a
stall (a read timeout). The snapshot (a few MiB) is interrupted seven times mid-body, so the
restore has to resume it with `Range: bytes=N-` requests rather than fail or start over; one
small file's resume fails five times in a row, so restore has to fetch it again from its start.
21 faults in all.

The replica is written by the extension (an app through the walship VFS) straight to moto; only
the restore goes through the proxy. Asserts: the restore succeeds, its content equals the source
and `PRAGMA integrity_check` is ok, every fault kind was injected (counted by the proxy), the
snapshot was resumed from where it broke, and the restore made at most 5 LIST calls.
"""
import json
import socket
import sqlite3
import threading
import time
from collections import Counter


from conftest import EXT, HERE, SYS_PYTHON, WALSHIP, content_hash, integrity, run
from faultproxy import FaultProxy
from httpfaults import header, read_head
from test_s3 import BUCKET, KEY_ID, SECRET, moto  # noqa: F401 (fixture)

# The client's per-read timeout during the restore (seconds), and how long a stall lasts.
IO_TIMEOUT = 1.5
STALL = 4.0

ERROR_BODIES = {
    "500": (500, "Internal Server Error", "InternalError"),
    "503": (503, "Service Unavailable", "ServiceUnavailable"),
    "slowdown": (503, "Slow Down", "SlowDown"),
}
MID_BODY = ("reset-mid-body", "truncated-body", "stall-mid-body")


def closing(head):
    """The head with `Connection: close` instead of any Connection header."""
    lines = [ln for ln in head.split(b"\r\n")[:-2] if not ln.lower().startswith(b"connection:")]
    return b"\r\n".join(lines + [b"Connection: close", b"", b""])


def reset(sock):
    """Closes with an RST (SO_LINGER 0), as a broken network would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    sock.close()


class ScheduledFaultProxy(FaultProxy):
    """One request per connection (both sides are told `Connection: close`). Object GETs
    (paths ending in `.ltx`) take the next fault scheduled for their key, if any; everything
    else passes. Counts what it injected and which ranges were asked for."""

    def __init__(self, target_port, schedule):
        self.lock = threading.Lock()
        self.schedule = {k: list(v) for k, v in schedule.items()}
        self.injected = Counter()
        self.requests = Counter()
        self.ranges = {}
        super().__init__(target_port)

    def _forward(self, client):
        server = None
        try:
            head, rest = read_head(client, b"")
            if head is None:
                return
            method, target = head.split(b" ", 2)[:2]
            path = target.decode().split("?", 1)[0]
            is_object = method == b"GET" and path.endswith(".ltx")
            key = path.lstrip("/").split("/", 1)[1] if is_object else None
            fault = None
            with self.lock:
                if is_object:
                    self.requests["object-get"] += 1
                    self.ranges.setdefault(key, []).append(header(head, b"range"))
                    queue = self.schedule.get(key)
                    if queue:
                        fault = queue.pop(0)
                        self.injected[fault] += 1
                elif method == b"GET" and b"list-type=2" in target:
                    self.requests["list"] += 1
                else:
                    self.requests["other"] += 1
            if fault in ERROR_BODIES:
                status, reason, code = ERROR_BODIES[fault]
                body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
                        f"<Message>injected by the test proxy</Message></Error>").encode()
                client.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
                client.close()
                return
            if fault == "reset-before-answer":
                reset(client)
                return
            if fault == "stall-before-answer":
                time.sleep(STALL)
                client.close()
                return
            length = int(header(head, b"content-length") or 0)
            while len(rest) < length:
                data = client.recv(65536)
                if not data:
                    return
                rest += data
            server = socket.create_connection(self.target, timeout=30)
            server.sendall(closing(head) + rest)
            rhead, body = read_head(server, b"")
            if rhead is None:
                return
            client.sendall(closing(rhead))
            total = int(header(rhead, b"content-length") or 0)
            cut = total // 2 if fault in MID_BODY else None
            sent = 0
            while True:
                if cut is not None and sent + len(body) >= cut:
                    client.sendall(body[: cut - sent])
                    if fault == "reset-mid-body":
                        reset(client)
                    elif fault == "stall-mid-body":
                        time.sleep(STALL)
                        client.close()
                    else:  # truncated-body: a clean close short of Content-Length
                        client.shutdown(socket.SHUT_RDWR)
                        client.close()
                    return
                if body:
                    client.sendall(body)
                    sent += len(body)
                body = server.recv(65536)
                if not body:
                    break
        except OSError:
            pass
        finally:
            for s in (client, server):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass


def test_restore_resumes_and_retries_through_storage_faults(built, moto, tmp_path):
    db = tmp_path / "src.db"
    # A few MiB of incompressible pages, written before the extension sees the database, so
    # the first thing shipped is one multi-MiB snapshot.
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT, v BLOB)")
    con.executemany("INSERT INTO t(who, v) VALUES ('seed', randomblob(?))", [(4000,)] * 1000)
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    cfg = tmp_path / "litestream.yml"
    cfg.write_text(
        "dbs:\n"
        f"  - path: {db}\n"
        "    replica:\n"
        "      type: s3\n"
        f"      bucket: {BUCKET}\n"
        "      path: restore-faults/app\n"
        f"      endpoint: {moto['endpoint']}\n"
        "      force-path-style: true\n"
        "      region: us-east-1\n"
        f"      access-key-id: {KEY_ID}\n"
        f"      secret-access-key: '{SECRET}'\n"
        "      sync-interval: 50ms\n"
    )
    # Several small level-0 files after the snapshot: each run's flush ships its own.
    for _ in range(7):
        p = run([SYS_PYTHON, str(HERE / "app_driver.py"), str(EXT), str(db), "write-flush", "40"],
                env={"WALSHIP_CONFIG": str(cfg)}, timeout=300)
        flushed = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])["flush"]
        assert flushed, f"walship_flush returned {flushed!r}: {p.stderr[-2000:]}"

    listed = moto["s3"].list_objects_v2(Bucket=BUCKET, Prefix="restore-faults/app/")["Contents"]
    by_size = sorted(listed, key=lambda o: o["Size"], reverse=True)
    big = by_size[0]
    assert big["Size"] > 3 << 20, by_size[:3]
    small = sorted((o["Key"] for o in listed if o["Key"] != big["Key"]))
    assert len(small) >= 6, [o["Key"] for o in listed]
    schedule = {
        # Seven breaks in one download: more resumes than the backend allows in a row without
        # progress (5), which it must allow because each one got further.
        big["Key"]: ["reset-mid-body", "truncated-body", "stall-mid-body", "reset-mid-body",
                     "truncated-body", "reset-mid-body", "truncated-body"],
        small[0]: ["500", "503"],
        small[1]: ["slowdown", "reset-before-answer"],
        small[2]: ["stall-before-answer"],
        small[3]: ["reset-mid-body"],
        small[4]: ["truncated-body", "slowdown"],
        # A break, then the resumed request fails all 5 attempts: the backend gives up on this
        # download, and restore fetches the file again from its start.
        small[5]: ["reset-mid-body", "503", "503", "503", "503", "503"],
    }
    want = Counter(f for faults in schedule.values() for f in faults)
    proxy = ScheduledFaultProxy(moto["port"], schedule)
    try:
        out = tmp_path / "out.db"
        url = f"s3://{BUCKET}/restore-faults/app?endpoint=127.0.0.1:{proxy.port}"
        started = time.time()
        r = run([str(WALSHIP), "restore", "-o", str(out), url],
                env={"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
                     "WALSHIP_S3_IO_TIMEOUT": str(IO_TIMEOUT), "WALSHIP_LOG": "debug"},
                timeout=240)
        elapsed = time.time() - started
    finally:
        proxy.stop()
    assert "restored TXID" in r.stdout, r.stdout + r.stderr
    assert integrity(out) == "ok"
    assert content_hash(out) == content_hash(db)
    # Every scheduled fault was injected (the files it targets were all needed).
    assert proxy.injected == want, (proxy.injected, want, r.stderr[-3000:])
    assert sum(proxy.injected.values()) == 21
    assert set(proxy.injected) == set(ERROR_BODIES) | set(MID_BODY) | {"reset-before-answer",
                                                                       "stall-before-answer"}
    # The snapshot was resumed where each break left it, never downloaded from the start again.
    ranges = proxy.ranges[big["Key"]]
    assert ranges[0] is None and len(ranges) == 8, ranges
    offsets = [int(h.removeprefix("bytes=").rstrip("-")) for h in ranges[1:]]
    assert offsets == sorted(offsets) and offsets[0] > 0 and offsets[-1] < big["Size"], offsets
    # The download whose resume kept failing was fetched again from the start, once.
    again = proxy.ranges[small[5]]
    assert again[0] is None and again[-1] is None and len(again) == 7, again
    assert all(h and h.startswith("bytes=") for h in again[1:-1]), again
    assert proxy.requests["list"] <= 5, proxy.requests
    print(f"restore through {sum(proxy.injected.values())} faults took {elapsed:.1f}s; "
          f"requests {dict(proxy.requests)}; snapshot ranges {ranges}")
