"""Observability inside the app: the Prometheus endpoint on `addr:` and the `logging:` key.

The real extension in Debian's /usr/bin/python3 with a file replica. The app scrapes its own
/metrics after walship_flush (the listener lives as long as the app's process).
"""
import json
import re
import socket
import subprocess

from conftest import EXT, SYS_PYTHON, WALSHIP, run, write_config

CANARY_KEY = "AKIACANARYMETRICS0001"
CANARY_SECRET = "canary/Secret+Metrics+0123456789abcdefghij"

APP = r"""
import json, sqlite3, sys, time, urllib.request, urllib.error
ext, db, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
l = sqlite3.connect(':memory:'); l.enable_load_extension(True); l.load_extension(ext)
c = sqlite3.connect(f'file:{db}?vfs=walship', uri=True, isolation_level=None)
c.execute('PRAGMA journal_mode=WAL'); c.execute('CREATE TABLE IF NOT EXISTS t(x)')
# Two rounds: the first flush ships the snapshot, the second a level-0 file (a sync).
for half in (n // 2, n - n // 2):
    for i in range(half):
        c.execute('INSERT INTO t VALUES (?)', (i,))
    flush = c.execute('SELECT walship_flush(30000)').fetchone()[0]
def get(path):
    for _ in range(50):
        try:
            with urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=5) as r:
                return r.status, r.headers.get('Content-Type'), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, None, ''
        except OSError:
            time.sleep(0.1)
    return None, None, ''
status, ctype, body = get('/metrics') if port else (None, None, '')
other = get('/nothing')[0] if port and status else None
print(json.dumps({'flush': flush, 'status': status, 'ctype': ctype, 'metrics': body, 'other': other}))
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_app(work, cfg, port, n=50, env=None):
    script = work / "app.py"
    script.write_text(APP)
    db = work / "app.db"
    p = run([SYS_PYTHON, str(script), str(EXT), str(db), str(port), str(n)],
            env={"WALSHIP_CONFIG": str(cfg), **(env or {})})
    result = [ln for ln in p.stdout.splitlines() if ln.startswith('{"flush"')]
    assert len(result) == 1, p.stdout
    return json.loads(result[0]), p


def samples(text):
    """{(name, frozenset(labels)): value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-z_]+)\{(.*)\} (\S+)', line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def config_with_secret(work, port):
    db = work / "app.db"
    # A second database (never opened) on S3 puts credentials into the file.
    return write_config(
        work / "l.yml", db, work / "replica", sync_interval="100ms",
        extra=f"  - path: {work / 'other.db'}\n    replica:\n      type: s3\n      bucket: b\n"
              f"      endpoint: http://s3.invalid.example:9\n      access-key-id: {CANARY_KEY}\n"
              f"      secret-access-key: {CANARY_SECRET}\n"
              f"addr: 127.0.0.1:{port}\n",
    )


def test_metrics_endpoint_after_flush(built, work):
    port = free_port()
    cfg = config_with_secret(work, port)
    out, p = run_app(work, cfg, port)
    assert out["status"] == 200, (out, p.stderr)
    assert out["ctype"] == "text/plain; version=0.0.4; charset=utf-8"
    assert out["other"] == 404
    text = out["metrics"]
    db = str(work / "app.db")
    for family, kind in [("walship_txid", "gauge"), ("walship_sync_count", "counter"),
                         ("walship_sync_error_count", "counter"),
                         ("walship_replica_lag_seconds", "gauge"),
                         ("walship_backlog_bytes", "gauge"), ("walship_snapshot_count", "counter"),
                         ("walship_storage_operations_total", "counter"),
                         ("walship_storage_errors_total", "counter"),
                         ("walship_storage_bytes_total", "counter")]:
        assert f"# TYPE {family} {kind}\n" in text, (family, text)
    s = samples(text)
    one = lambda name: s[(name, frozenset({("db", db)}))]  # noqa: E731
    op = lambda name, o: s[(name, frozenset({("db", db), ("replica_type", "file"), ("op", o)}))]  # noqa: E731
    assert out["flush"] > 0 and one("walship_txid") == out["flush"], text
    assert one("walship_sync_count") >= 1, text
    assert one("walship_snapshot_count") >= 1, text
    assert one("walship_sync_error_count") == 0, text
    assert one("walship_replica_lag_seconds") == 0, text
    assert one("walship_backlog_bytes") == 0, text
    assert op("walship_storage_operations_total", "put") >= 2, text  # snapshot + level 0
    assert op("walship_storage_bytes_total", "put") > 0, text
    assert op("walship_storage_errors_total", "put") == 0, text
    # Nothing secret, and no other database's settings, in the scrape or the log.
    for leak in (CANARY_KEY, CANARY_SECRET, "invalid.example", "other.db"):
        assert leak not in text and leak not in p.stderr, leak
    assert p.stderr.count(f"metrics: serving http://127.0.0.1:{port}/metrics") == 1, p.stderr


def test_busy_port_warns_once_and_replication_goes_on(built, work):
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    port = held.getsockname()[1]
    try:
        cfg = config_with_secret(work, port)
        # The app does not scrape (port 0): the port is someone else's.
        out, p = run_app(work, cfg, 0, n=30)
    finally:
        held.close()
    warnings = [ln for ln in p.stderr.splitlines() if "metrics:" in ln]
    assert len(warnings) == 1, p.stderr
    assert warnings[0].startswith("walship warn: metrics: not serving /metrics: cannot listen on "
                                  f"127.0.0.1:{port}"), warnings
    assert "replication continues" in warnings[0]
    assert out["flush"] > 0
    restored = work / "restored.db"
    run([str(WALSHIP), "restore", "-o", str(restored), f"file://{work / 'replica'}"])
    import sqlite3
    assert sqlite3.connect(restored).execute("SELECT count(*) FROM t").fetchone()[0] == 30


def test_json_logging_to_stdout(built, work):
    db = work / "app.db"
    cfg = write_config(work / "l.yml", db, work / "replica", sync_interval="100ms",
                       extra="logging:\n  type: json\n  stderr: false\n  level: debug\n")
    out, p = run_app(work, cfg, 0, n=5)
    assert out["flush"] > 0
    assert "walship" not in p.stderr, p.stderr
    lines = [json.loads(ln) for ln in p.stdout.splitlines() if not ln.startswith('{"flush"')]
    assert lines, p.stdout
    for rec in lines:
        assert set(rec) >= {"time", "level", "msg"}, rec
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["time"]), rec
        assert rec["level"] in ("ERROR", "WARN", "INFO", "DEBUG", "TRACE"), rec
    started = [r for r in lines if r["msg"].startswith("replicating to file://")]
    assert started and started[0]["db"] == str(db) and started[0]["level"] == "INFO", lines
    assert any(r["level"] == "DEBUG" for r in lines), "logging.level: debug applies"


def test_walship_log_wins_over_the_file_level(built, work):
    db = work / "app.db"
    cfg = write_config(work / "l.yml", db, work / "replica", sync_interval="100ms",
                       extra="logging:\n  level: error\n")
    _, quiet = run_app(work, cfg, 0, n=3)
    assert "replicating to" not in quiet.stderr, quiet.stderr
    _, loud = run_app(work, cfg, 0, n=3, env={"WALSHIP_LOG": "info", "WALSHIP_LOG_FORMAT": "json"})
    recs = [json.loads(ln) for ln in loud.stderr.splitlines() if ln.startswith("{")]
    assert any(r["msg"].startswith("replicating to") for r in recs), loud.stderr
    assert not [ln for ln in loud.stderr.splitlines() if ln.startswith("walship ")], loud.stderr
