"""Shared by test_packages.py and test_examples.py: the npm and Python packages, built and installed
the way a user installs them, once per session.

* `node_project`: `npm pack` of packages/npm (its prepack copies target/release/libwalvfs.so into
  prebuilds/), then `npm install <walship-x.y.z.tgz> better-sqlite3@<the version tests/hosts/node
  pins>` into a fresh project. better-sqlite3 has no reachable prebuilt binary here and compiling
  it takes ~2 min on 2 cores, so its install script is skipped (--ignore-scripts) and the addon
  test_hosts.py compiled for the same version and node is copied in (`ensure_node_modules`).
  Everything else, walship included, is installed by npm from the tarball and the registry.
* `py_package`: `pip install --target <dir> ./packages/python` (in-tree build backend, offline).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, WALSHIP
from test_hosts import NODE_DIR, ensure_node_modules, host_env, host_run, require

NPM_PKG = ROOT / "packages" / "npm"
PY_PKG = ROOT / "packages" / "python"

_cache = {}


def _once(key, make):
    if key not in _cache:
        _cache[key] = make()
    return _cache[key]


def npm_pack(dest: Path) -> Path:
    npm = require("npm")
    p = host_run([npm, "pack", "--pack-destination", dest], host_env(), NPM_PKG, timeout=300)
    name = p.stdout.strip().splitlines()[-1]
    tgz = dest / name
    assert tgz.exists(), p.stdout
    return tgz


def _make_node_project(base: Path) -> dict:
    ensure_node_modules()  # compiles tests/hosts/node's better-sqlite3 once (kept as a cache)
    npm = require("npm")
    tgz = npm_pack(base)
    version = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["better-sqlite3"]
    proj = base / "project"
    proj.mkdir()
    (proj / "package.json").write_text(json.dumps({"name": "fresh-app", "private": True}))
    host_run(
        [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", tgz, f"better-sqlite3@{version}"],
        host_env(extra={"npm_config_nodedir": "/usr"}),
        proj,
        timeout=600,
    )
    addon = Path("build") / "Release" / "better_sqlite3.node"
    (proj / "node_modules" / "better-sqlite3" / addon.parent).mkdir(parents=True, exist_ok=True)
    shutil.copy2(NODE_DIR / "node_modules" / "better-sqlite3" / addon, proj / "node_modules" / "better-sqlite3" / addon)
    # What npm recorded: walship from the tarball, better-sqlite3 from the registry.
    deps = json.loads((proj / "package.json").read_text())["dependencies"]
    assert deps["walship"].startswith("file:") and deps["walship"].endswith(".tgz"), deps
    assert not (proj / "node_modules" / "walship").is_symlink()
    return {"dir": proj, "tgz": tgz}


@pytest.fixture
def node_project(built, tmp_path_factory):
    """{"dir": a fresh npm project with walship (from its tarball) and better-sqlite3, "tgz": ...}"""
    return _once("node", lambda: _make_node_project(tmp_path_factory.mktemp("npm")))


def _install_py_package(base: Path) -> Path:
    target = base / "site"
    host_run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
         "--target", target, PY_PKG],
        host_env(),
        base,
        timeout=300,
    )
    assert (target / "walship" / "libwalvfs.so").exists()
    return target


@pytest.fixture
def py_package(built, tmp_path_factory):
    """A directory holding the installed `walship` Python package (put it on PYTHONPATH)."""
    return _once("python", lambda: _install_py_package(tmp_path_factory.mktemp("pip")))


def walship_restore_db(project: Path, db_rel: str, out: Path, config="litestream.yml"):
    """`walship restore -config litestream.yml -o OUT ./data/app.db`, run in the project, as a user would."""
    return host_run([WALSHIP, "restore", "-config", config, "-o", out, db_rel], host_env(), project)


def copy_example(name: str, dest: Path, files) -> Path:
    src = ROOT / "examples" / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        s = src / f
        if s.is_dir():
            shutil.copytree(s, dest / f)
        else:
            shutil.copy2(s, dest / f)
    return dest


def popen(cmd, env, cwd):
    return subprocess.Popen(
        [str(c) for c in cmd], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
