"""A newcomer switches the example node service from a Litestream sidecar to walship, following
only docs/COMING-FROM-LITESTREAM.md, and restores its database. The steps come from the page
itself, so the page and this test cannot drift apart:

1. Before: the service as it is today. This is examples/node-service with the page's diff undone
   (better-sqlite3's `new Database`), run the way the usual guide says:
   `litestream replicate -config litestream.yml -exec "node src/index.js"`. Notes are POSTed,
   then SIGTERM stops it.
2. The switch: the page's diff applied as written; `npm install walship` is the tarball of
   packages/npm (see package_harness). Same `litestream.yml`, untouched. Then `node src/index.js`,
   more notes, SIGTERM.
3. The page's restore command, run as written (only `/tmp/restored.db` becomes a path under the
   test's directory). The result must hold every note from both eras, pass `integrity_check` and
   equal the live database. The real `litestream restore` must read the same replica too: its
   history is Litestream's files followed by walship's.
"""
import re
import shlex
import signal
import subprocess
import time

from conftest import ROOT, WALSHIP, content_hash, integrity, litestream_bin
from package_harness import copy_example, node_project, popen  # noqa: F401 (fixture)
from test_examples import http, rows
from test_hosts import host_env

PAGE = ROOT / "docs" / "COMING-FROM-LITESTREAM.md"


def page_diff():
    """[(old lines, new lines)] from the page's ```diff block, one pair per -/+ run."""
    block = re.search(r"```diff\n(.*?)```", PAGE.read_text(), re.S).group(1)
    pairs = []
    for line in block.splitlines():
        sign, text = line[:1], line[1:]
        if sign == "-" and (not pairs or pairs[-1][1]):
            pairs.append(([], []))
        pairs[-1][0 if sign == "-" else 1].append(text)
    return [("\n".join(a) + "\n", "\n".join(b) + "\n") for a, b in pairs]


def apply(path, pairs, reverse=False):
    text = path.read_text()
    for old, new in pairs:
        old, new = (new, old) if reverse else (old, new)
        assert text.count(old) == 1, f"{path.name} does not hold exactly one {old!r}"
        text = text.replace(old, new)
    path.write_text(text)


def page_command(prefix):
    line = next(l.split("#")[0].strip() for l in PAGE.read_text().splitlines() if l.startswith(prefix))
    return shlex.split(line)


def serve(cmd, app, notes, tag, linger=0.0):
    """Starts the service, POSTs `notes` notes, waits `linger` s, sends SIGTERM; returns
    (returncode, stderr)."""
    proc = popen(cmd, host_env(extra={"PORT": "0"}), app)
    try:
        seen = []  # Litestream logs to stdout too, before the app's first line
        while not (m := re.search(r"listening on (http://\S+)", seen[-1] if seen else "")):
            line = proc.stdout.readline()
            assert line, ("".join(seen), proc.stderr.read())
            seen.append(line)
        for i in range(notes):
            assert http("POST", f"{m.group(1)}/notes", f"{tag} {i}".encode())[0] == 201
        time.sleep(linger)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def test_switch_from_a_litestream_sidecar_by_the_page(node_project, tmp_path):
    app = copy_example("node-service", tmp_path / "svc", ["package.json", "litestream.yml", "src"])
    (app / "node_modules").symlink_to(node_project["dir"] / "node_modules")
    index = app / "src" / "index.js"
    diff = page_diff()
    assert len(diff) == 2, diff

    # 1. Today: better-sqlite3 under `litestream replicate -exec`, as the usual guide runs it.
    apply(index, diff, reverse=True)
    assert "require('walship')" not in index.read_text()
    exec_cmd = [litestream_bin(), "replicate", "-config", "litestream.yml", "-exec", "node src/index.js"]
    # (The service runs a few seconds, as a real one would: Litestream polls every second.)
    rc, err = serve(exec_cmd, app, 60, "litestream", linger=3)
    assert rc == 0, err[-2000:]
    assert (app / "backups" / "app").is_dir(), "Litestream replicated nothing"

    # 2. The switch, exactly as the page shows it; litestream.yml unchanged.
    yml = (app / "litestream.yml").read_text()
    apply(index, diff)
    rc, err = serve(["node", "src/index.js"], app, 90, "walship")
    assert rc == -signal.SIGTERM, (rc, err[-2000:])
    assert (app / "litestream.yml").read_text() == yml
    assert "error" not in err, err[-2000:]

    # 3. The page's restore command.
    cmd = page_command("walship restore -config litestream.yml -o /tmp/restored.db")
    out = tmp_path / "restored.db"
    cmd = [str(WALSHIP) if c == "walship" else str(out) if c == "/tmp/restored.db" else c for c in cmd]
    p = subprocess.run(cmd, cwd=app, env=host_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert integrity(out) == "ok"
    got = rows(out, "SELECT count(*), sum(body LIKE 'litestream %'), sum(body LIKE 'walship %') FROM notes")
    assert got == [(150, 60, 90)], got
    assert content_hash(out) == content_hash(app / "data" / "app.db")

    # Litestream reads the same replica: its own files, then walship's.
    other = tmp_path / "by-litestream.db"
    p = subprocess.run([litestream_bin(), "restore", "-config", "litestream.yml", "-o", str(other), "./data/app.db"],
                       cwd=app, env=host_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert integrity(other) == "ok"
    assert content_hash(other) == content_hash(out)
