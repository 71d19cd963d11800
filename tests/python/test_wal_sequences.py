"""The calls SQLite really makes on the WAL, recorded through the walship shim, on two SQLite versions.

design-notes.md ("How SQLite writes the WAL") and the table at the top of src/capture.rs describe
the call sequences capture relies on. This file proves each of them on the host SQLite (Debian's
/usr/bin/python3 stdlib sqlite3, SQLite 3.40) and on a newer bundled one (apsw from PyPI, 3.5x,
under the pytest python), so that an SQLite upgrade that changes the pattern fails here, loudly,
before capture silently ships a wrong stream.

How: tests/hosts/python/wal_scenarios.py runs one scenario per process with WALSHIP_TRACE=FILE;
the extension appends one line per call it observes (W+/W- write lock, PH2 commit-phase-two,
WAL-OPEN, WAL-WRITE, WAL-TRUNCATE) and the driver appends `MARK <step>` lines between steps. The
trace is parsed into tokens (see `tokenize`):

  W+ / W- / PH2   with the wal-index header read at that moment (mx, ichange, salt1; None = no shm)
  HDR             32-byte WAL header write at offset 0 (a new WAL, or a restart)
  F<i>            header write (24 bytes) at frame i, immediately followed by its page write
                  (page_size bytes at +24) — the "header then separate page" pair
  d<i>            page-only write to frame i (a rewrite in place)
  h<i>            header-only write to a frame already written in this transaction (a rewrite)
  T<n>            xTruncate of the WAL to n bytes, or xDelete of the WAL (n = 0)
  (GUARD)         not a token: marks the next HDR or T as `guarded` — capture read every
                  committed frame before SQLite was let through (only where walship replicates)
  OPEN            the WAL file was opened (header=True if it already had a valid header)
  X               any other WAL write (a combined header+page write, a partial write...): never
                  expected

Frame i starts at 32 + (i-1)*(24+page_size). No frame numbers are hard-coded: every index is
derived from the wal-index header at W+ (mxFrame) and from the trace itself.

What was observed that design-notes.md does not say (both versions alike; asserted below):
  * first-open recovery takes W+ before the wal-index is mapped (W+ mx=None); after a crash the
    recovery's W- shows the recovered mxFrame (not "unchanged") and ichange reset to 0;
  * ROLLBACK (spilled or not) gives W+ ... W- with no PH2; an empty commit gives W+ W- PH2;
  * a TRUNCATE checkpoint's T0 arrives *inside* its W+ ... W-, and the W- already shows mx=0 and
    salt1+1 (the restarted header lives in shm before any HDR write);
  * the journal_size_limit truncation (to max(limit, end of the commit frame)) happens inside the
    restarting commit's W+ ... W-, after the commit frame;
  * the switch of a new database to WAL commits in rollback-journal mode first: one PH2 (mx=None)
    before the WAL is ever opened;
  * in EXCLUSIVE mode a ROLLBACK leaves no trace at all, even after spilling frames: the next
    commit simply writes over the rolled-back frames from the same index, then PH2.
Not visible in the trace, so not proven here: xSync and xShmBarrier (the FULL-vs-NORMAL
difference, the sync after a restart header), xShmMap arguments, commit padding.
"""
import json
import os
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from conftest import EXT, ROOT, SYS_PYTHON

DRIVER = ROOT / "tests" / "hosts" / "python" / "wal_scenarios.py"
HOSTS = ["sqlite3", "apsw"]
SCENARIOS = [
    "commit_normal", "commit_full", "empty", "crash_recovery", "spill", "spill_rollback",
    "restart", "exclusive", "close", "size_limit", "page512", "page65536",
]
PAGE_SIZE = {"page512": 512, "page65536": 65536}
U32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Running the scenarios: all of them, both hosts, once per module, a few processes at a time.

@dataclass
class Run:
    host: str
    scenario: str
    dir: Path
    db: Path
    out: dict
    tokens: list
    page_size: int

    @property
    def who(self):
        return f"[{self.scenario} on SQLite {self.out.get('sqlite_version')} via {self.host}]"

    def seg(self, name):
        """Tokens between `MARK name` and the next mark (or the end of the trace)."""
        names = [t.name for t in self.tokens if t.kind == "MARK"]
        assert name in names, f"{self.who} no step {name!r} in the trace (steps: {names})"
        out, inside = [], False
        for t in self.tokens:
            if t.kind == "MARK":
                if inside:
                    break
                inside = t.name == name
            elif inside:
                out.append(t)
        return out

    def before_first_mark(self):
        out = []
        for t in self.tokens:
            if t.kind == "MARK":
                break
            out.append(t)
        return out


def host_cmd(host):
    if host == "sqlite3":
        if not Path(SYS_PYTHON).exists():
            pytest.fail(f"{SYS_PYTHON} is missing: apt-get install python3")
        return [SYS_PYTHON]
    try:
        import apsw  # noqa: F401
    except ImportError:
        pytest.fail("apsw is not installed for the pytest python: pip install apsw")
    return [sys.executable]


def run_one(root: Path, host: str, scenario: str) -> Run:
    d = root / f"{host}-{scenario}"
    d.mkdir()
    d = Path(os.path.realpath(d))  # SQLite names the database by its real path in the trace
    db = d / "app.db"
    trace = d / "trace"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSHIP_")}
    env["WALSHIP_TRACE"] = str(trace)
    # Replicated, so the guards run (and are traced) as they do in production.
    env["WALSHIP_REPLICA_URL"] = f"file://{d}/replica"
    p = subprocess.run(
        host_cmd(host) + [str(DRIVER), scenario, str(db), str(EXT), host],
        env=env, cwd=d, capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 0, f"{host} {scenario} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 1, f"{host} {scenario}: expected one JSON line\n{p.stdout}\n{p.stderr}"
    out = json.loads(lines[0])
    ps = PAGE_SIZE.get(scenario, 4096)
    tokens = tokenize(trace.read_text().splitlines(), str(db), ps)
    assert any(t.kind != "MARK" for t in tokens), (
        f"{host} {scenario}: WALSHIP_TRACE recorded no call for {db}:\n{trace.read_text()[:2000]}"
    )
    return Run(host, scenario, d, db, out, tokens, ps)


@pytest.fixture(scope="module")
def runs(built, tmp_path_factory):
    root = tmp_path_factory.mktemp("walseq")
    jobs = [(h, s) for h in HOSTS for s in SCENARIOS]
    for h in HOSTS:
        host_cmd(h)  # fail early and clearly when a host is missing
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {(h, s): pool.submit(run_one, root, h, s) for h, s in jobs}
        return {k: f.result() for k, f in futures.items()}


# ---------------------------------------------------------------------------------------------
# The trace, as tokens.

@dataclass(eq=False)
class Tok:
    kind: str  # W+ W- PH2 HDR F d h T OPEN MARK X
    i: Optional[int] = None  # frame index (F, d, h)
    pgno: Optional[int] = None
    commit: Optional[int] = None
    salt1: Optional[int] = None  # frame header's salt-1 (F, h)
    mx: Optional[int] = None  # wal-index header (W+, W-, PH2); None when no shm is mapped
    ichange: Optional[int] = None
    shm_salt1: Optional[int] = None
    size: Optional[int] = None  # T
    guarded: bool = False  # HDR, T: capture's guard ran just before
    header: Optional[bool] = None  # OPEN
    name: Optional[str] = None  # MARK
    paged: bool = False  # F: its page write followed at once
    raw: list = field(default_factory=list)

    def __str__(self):
        k = self.kind
        if k in ("F", "h"):
            extra = f"p{self.pgno}" + (f",c{self.commit}" if self.commit else "") + f",s{self.salt1}"
            return f"{k}{self.i}({extra}{'' if k == 'h' or self.paged else ',NO-PAGE'})"
        if k == "d":
            return f"d{self.i}"
        if k in ("W+", "W-", "PH2"):
            return f"{k}[mx={self.mx},ich={self.ichange},salt1={self.shm_salt1}]"
        if k == "T":
            return f"T{self.size}"
        if k == "OPEN":
            return f"OPEN(header={self.header})"
        if k == "MARK":
            return f"#{self.name}"
        if k == "X":
            return f"X({' '.join(self.raw)})"
        return k


def show(tokens, limit=60):
    s = [str(t) for t in tokens]
    if len(s) > limit:
        s = s[: limit // 2] + [f"... ({len(s) - limit} more) ..."] + s[-limit // 2:]
    return " ".join(s)


def _num(v):
    return None if v == "-" else int(v)


def tokenize(lines, db: str, page_size: int):
    """Trace lines of database `db` (and MARK lines) to tokens, classifying WAL writes.

    A header write to a frame not yet written in the current transaction opens an F token; the
    page write that immediately follows it completes the pair (`paged`). Page writes otherwise are
    d tokens, header writes to frames already written in the transaction are h tokens. The
    transaction's written set is reset at W+, W-, PH2 and at a WAL header write."""
    frame = 24 + page_size
    toks, written = [], set()
    guard = False
    prefix = db + " "
    for line in lines:
        if line.startswith("MARK "):
            toks.append(Tok("MARK", name=line[5:].strip()))
            continue
        if not line.startswith(prefix):
            continue
        kw, *rest = line[len(prefix):].split()
        if kw == "GUARD":
            guard = True
            continue
        if kw == "JOURNAL":
            continue
        f = dict(x.split("=", 1) for x in rest)
        if kw in ("W+", "W-", "PH2"):
            toks.append(Tok(kw, mx=_num(f["mx"]), ichange=_num(f["ichange"]), shm_salt1=_num(f["salt1"])))
            written = set()
        elif kw == "WAL-OPEN":
            toks.append(Tok("OPEN", header=f["header"] == "true"))
        elif kw in ("WAL-TRUNCATE", "WAL-DELETE"):
            toks.append(Tok("T", size=int(f.get("size", 0)), guarded=guard))
            guard = False
        elif kw == "WAL-WRITE":
            off, n = int(f["off"]), int(f["len"])
            q, r = divmod(off - 32, frame) if off >= 32 else (None, None)
            if off == 0 and n == 32:
                toks.append(Tok("HDR", guarded=guard))
                guard = False
                written = set()
            elif r == 0 and n == 24:
                i = q + 1
                kind = "h" if i in written else "F"
                written.add(i)
                toks.append(Tok(kind, i=i, pgno=int(f["pgno"]), commit=int(f["commit"]), salt1=int(f["salt1"])))
            elif r == 24 and n == page_size:
                i = q + 1
                last = toks[-1] if toks else None
                if last is not None and last.kind == "F" and last.i == i and not last.paged:
                    last.paged = True
                else:
                    toks.append(Tok("d", i=i))
            else:
                toks.append(Tok("X", raw=rest))
        else:
            toks.append(Tok("X", raw=[kw, *rest]))
    return toks


def kinds(seg):
    return [t.kind for t in seg]


def frames(seg):
    return [t for t in seg if t.kind == "F"]


def check_layout(r: Run):
    """Every scenario: WAL writes are only headers, header+page pairs, and in-place rewrites."""
    bad = [t for t in r.tokens if t.kind == "X"]
    assert not bad, f"{r.who} WAL writes that are neither a WAL header, a frame header nor a page: {show(bad)}"
    # Capture's invariant: nothing that destroys WAL frames reaches the file unguarded.
    unguarded = [t for t in r.tokens if (t.kind == "HDR" or (t.kind == "T" and t.size == 0))
                 and not t.guarded]
    assert not unguarded, f"{r.who} WAL restarts/truncations/deletions not guarded: {show(r.tokens, 200)}"
    unpaired = [t for t in r.tokens if t.kind == "F" and not t.paged]
    assert not unpaired, (
        f"{r.who} frame header writes not followed at once by their separate page write: {show(unpaired)}\n"
        f"trace: {show(r.tokens, 200)}"
    )


def check_commit(r: Run, seg, what, restart=False):
    """W+ [HDR] F... (last one the commit frame) W- PH2, frames appended after mxFrame at W+."""
    ctx = f"{r.who} {what}: {show(seg)}"
    want = ["W+"] + (["HDR"] if restart else []) + ["F"] * len(frames(seg)) + ["W-", "PH2"]
    assert kinds(seg) == want, f"{ctx}\nexpected the shape {want}"
    wp, wm, ph2 = seg[0], seg[-2], seg[-1]
    fs = frames(seg)
    assert fs, f"{ctx}\na commit without frames"
    first = 1 if restart else wp.mx + 1
    assert [f.i for f in fs] == list(range(first, first + len(fs))), f"{ctx}\nframes not appended from {first}"
    assert fs[-1].commit > 0 and all(f.commit == 0 for f in fs[:-1]), f"{ctx}\nthe commit field is set on the last frame only"
    assert wm.mx == fs[-1].i, f"{ctx}\nat W- mxFrame must already be the commit frame"
    assert wm.ichange == (wp.ichange + 1) & U32, f"{ctx}\nichange must grow by exactly 1 per commit"
    assert (ph2.mx, ph2.ichange, ph2.shm_salt1) == (wm.mx, wm.ichange, wm.shm_salt1), f"{ctx}\nPH2 sees the W- header"
    assert all(f.salt1 == wm.shm_salt1 for f in fs), f"{ctx}\nframes without a rewrite carry the real salt-1"
    return fs


def check_no_write(r: Run, seg, what, want):
    ctx = f"{r.who} {what}: {show(seg)}"
    assert kinds(seg) == want, f"{ctx}\nexpected {want}"
    wp, wm = seg[0], seg[1]
    assert (wm.mx, wm.ichange, wm.shm_salt1) == (wp.mx, wp.ichange, wp.shm_salt1), f"{ctx}\nthe wal-index must not change"


# ---------------------------------------------------------------------------------------------
# 1. One-row commit, synchronous NORMAL and FULL (xSync is not traced: the sequences are equal).

@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("scenario", ["commit_normal", "commit_full"])
def test_one_row_commit(runs, host, scenario):
    r = runs[host, scenario]
    check_layout(r)
    # The very first WAL transaction of a new database writes the WAL header first.
    setup = r.before_first_mark()
    first_write = next(t for t in setup if t.kind in ("HDR", "F", "d", "h", "X"))
    assert first_write.kind == "HDR", f"{r.who} a new WAL starts with its header: {show(setup)}"
    for n in range(3):
        seg = r.seg(f"commit{n}")
        fs = check_commit(r, seg, f"commit{n}")
        assert len(fs) == 1, f"{r.who} a one-row insert into a small table is one frame: {show(seg)}"
    assert r.out["rows"] == 6, r.out


# ---------------------------------------------------------------------------------------------
# 2. Empty commit, ROLLBACK, first-open recovery: W+ ... W- with no WAL write.

@pytest.mark.parametrize("host", HOSTS)
def test_empty_commit_rollback_and_recovery(runs, host):
    r = runs[host, "empty"]
    check_layout(r)
    check_no_write(r, r.seg("empty-commit"), "BEGIN IMMEDIATE; COMMIT", ["W+", "W-", "PH2"])
    check_no_write(r, r.seg("rollback"), "unspilled ROLLBACK (no PH2)", ["W+", "W-"])
    # First open of a database whose WAL is gone: recovery takes the write lock before the
    # wal-index is even mapped (W+ has no shm), writes nothing, and leaves an empty index.
    seg = r.seg("recovery")
    ctx = f"{r.who} first-open recovery: {show(seg)}"
    assert kinds(seg) == ["OPEN", "W+", "W-"], ctx
    assert seg[0].header is False, ctx
    assert seg[1].mx is None, f"{ctx}\nobserved: no shm mapped at the recovery's W+"
    assert seg[2].mx == 0, ctx
    assert r.out["rows"] == 3, r.out
    # The same at the creation of the database (before the first mark): recovery, then the first
    # writer. Before the WAL exists, the switch to WAL commits in rollback-journal mode (one PH2
    # without shm).
    setup = r.before_first_mark()
    assert kinds(setup)[:5] == ["PH2", "OPEN", "W+", "W-", "W+"], f"{r.who} creation: {show(setup)}"
    assert setup[0].mx is None and setup[2].mx is None and setup[3].mx == 0, f"{r.who} creation: {show(setup)}"


@pytest.mark.parametrize("host", HOSTS)
def test_recovery_after_crash(runs, host):
    """Recovery of a WAL with frames left by a process that exited without closing."""
    r = runs[host, "crash_recovery"]
    check_layout(r)
    child = r.seg("child")
    last = [t for t in child if t.kind == "W-"][-1]
    assert last.mx > 0
    seg = r.seg("recovery")
    ctx = f"{r.who} recovery of a crashed WAL (child's last W-: {last}): {show(seg)}"
    assert kinds(seg) == ["OPEN", "W+", "W-"], f"{ctx}\nrecovery writes nothing"
    assert seg[0].header is True, ctx
    assert seg[1].mx is None, f"{ctx}\nobserved: no shm mapped at the recovery's W+"
    # Differs from "mx unchanged": the W- shows the recovered frames, and ichange starts over.
    assert (seg[2].mx, seg[2].shm_salt1) == (last.mx, last.shm_salt1), f"{ctx}\nW- shows the recovered WAL"
    assert seg[2].ichange == 0, f"{ctx}\nobserved: recovery resets ichange to 0"
    assert r.out["rows"] == 4, r.out


# ---------------------------------------------------------------------------------------------
# 3. A spilled transaction that touches its spilled pages again.

@pytest.mark.parametrize("host", HOSTS)
def test_spilled_transaction_rewrites(runs, host):
    r = runs[host, "spill"]
    check_layout(r)
    seg = r.seg("spill")
    ctx = f"{r.who} spilled transaction: {show(seg, 400)}"
    assert seg[0].kind == "W+" and kinds(seg)[-2:] == ["W-", "PH2"], ctx
    wp, wm = seg[0], seg[-2]
    body = seg[1:-2]
    assert set(kinds(body)) <= {"F", "d", "h"}, ctx
    fs = frames(body)
    assert [f.i for f in fs] == list(range(wp.mx + 1, wp.mx + 1 + len(fs))), f"{ctx}\nframes appended after mxFrame"
    commits = [f for f in fs if f.commit]
    assert commits == [fs[-1]], f"{ctx}\nonly the last frame appended is a commit frame"
    c = fs[-1]
    assert wm.mx == c.i and wm.ichange == (wp.ichange + 1) & U32, ctx
    at_commit = body.index(c)

    # Page-only rewrites, all before the commit frame, all of frames of this same transaction.
    ds = [t for t in body if t.kind == "d"]
    assert ds, f"{ctx}\nno page-only rewrite: the scenario no longer makes SQLite rewrite spilled frames"
    assert all(body.index(t) < at_commit for t in ds), f"{ctx}\npage rewrites after the commit frame"
    for t in ds:
        assert wp.mx < t.i < c.i, f"{ctx}\nd{t.i} rewrites a frame of an earlier transaction (mx at W+ = {wp.mx})"
        assert any(f.i == t.i for f in body[: body.index(t)] if f.kind == "F"), f"{ctx}\nd{t.i} before its frame"

    # Salts: headers appended before the first rewrite carry the real salt-1, headers appended
    # after it (the commit frame's first write included) carry 0.
    real = wp.shm_salt1
    first_d = body.index(ds[0])
    for f in fs:
        want = real if body.index(f) < first_d else 0
        assert f.salt1 == want, f"{ctx}\n{f}: salt-1 {f.salt1}, expected {want}"
    assert c.salt1 == 0, f"{ctx}\nthe commit frame's first header write carries salt-1 0"

    # After the commit frame: header-only rewrites from the earliest rewritten frame through the
    # commit frame, with the real salt, page numbers and commit fields unchanged.
    hs = body[at_commit + 1:]
    assert all(t.kind == "h" for t in hs), f"{ctx}\nafter the commit frame only header rewrites"
    assert not [t for t in body[:at_commit] if t.kind == "h"], f"{ctx}\nheader rewrites before the commit frame"
    r0 = min(t.i for t in ds)
    assert [t.i for t in hs] == list(range(r0, c.i + 1)), f"{ctx}\nrewrites must cover frames {r0}..{c.i}"
    orig = {f.i: f for f in fs}
    for t in hs:
        assert t.salt1 == real == wm.shm_salt1, f"{ctx}\n{t}: rewritten header without the real salt-1"
        assert (t.pgno, t.commit) == (orig[t.i].pgno, orig[t.i].commit), f"{ctx}\n{t} changes {orig[t.i]}"
    assert r.out["integrity"] == "ok" and r.out["rows"] == 343, r.out


# ---------------------------------------------------------------------------------------------
# 4. ROLLBACK of a spilled transaction: frames stay, mxFrame does not move, the next transaction
#    writes over them from mxFrame + 1.

@pytest.mark.parametrize("host", HOSTS)
def test_spilled_rollback(runs, host):
    r = runs[host, "spill_rollback"]
    check_layout(r)
    seg = r.seg("spill")
    ctx = f"{r.who} spilled ROLLBACK: {show(seg)}"
    assert seg[0].kind == "W+" and seg[-1].kind == "W-", f"{ctx}\nno PH2 after a rollback"
    assert set(kinds(seg[1:-1])) <= {"F", "d"}, ctx
    wp, wm = seg[0], seg[-1]
    fs = frames(seg)
    assert fs and fs[0].i == wp.mx + 1, f"{ctx}\nframes were written from mxFrame+1"
    assert not any(f.commit for f in fs), f"{ctx}\nno commit frame"
    assert (wm.mx, wm.ichange, wm.shm_salt1) == (wp.mx, wp.ichange, wp.shm_salt1), f"{ctx}\nmxFrame unchanged"
    nxt = r.seg("next")
    fs2 = check_commit(r, nxt, "the transaction after the rollback")
    assert nxt[0].mx == wp.mx and fs2[0].i == wp.mx + 1, f"{r.who} next: {show(nxt)}\nwrites from mxFrame+1"
    assert fs[-1].i > fs2[-1].i, f"{ctx}\nstale frames of the rollback remain past the next commit"
    assert r.out["rows"] == 4 and r.out["integrity"] == "ok", r.out


# ---------------------------------------------------------------------------------------------
# 5. WAL restart after a RESTART checkpoint; TRUNCATE checkpoint.

@pytest.mark.parametrize("host", HOSTS)
def test_wal_restart_and_truncate(runs, host):
    r = runs[host, "restart"]
    check_layout(r)
    assert r.out["ckpt_restart"][0] == 0 and r.out["ckpt_truncate"][0] == 0, f"{r.who} busy: {r.out}"
    ck = r.seg("ckpt-restart")
    check_no_write(r, ck, "RESTART checkpoint", ["W+", "W-"])
    old = ck[0]
    assert old.mx > 0, f"{r.who} {show(ck)}"

    seg = r.seg("after-restart")
    fs = check_commit(r, seg, "first write after RESTART", restart=True)
    assert seg[0].mx == old.mx and seg[0].shm_salt1 == old.shm_salt1, f"{r.who} {show(seg)}"
    assert fs[0].salt1 == (old.shm_salt1 + 1) & U32, f"{r.who} {show(seg)}\nsalt-1 = old salt-1 + 1"
    second = r.seg("second")
    fs2 = check_commit(r, second, "second write after the restart")
    assert fs2[0].i == fs[-1].i + 1, f"{r.who} {show(second)}"

    # TRUNCATE: T0 inside the checkpoint's W+ ... W-; its W- already shows the restarted header.
    tr = r.seg("ckpt-truncate")
    ctx = f"{r.who} TRUNCATE checkpoint: {show(tr)}"
    assert kinds(tr) == ["W+", "T", "W-"] and tr[1].size == 0, ctx
    assert tr[2].mx == 0, f"{ctx}\nobserved: mxFrame already 0 at the checkpoint's W-"
    assert tr[2].shm_salt1 == (tr[0].shm_salt1 + 1) & U32, f"{ctx}\nobserved: salt-1 + 1 already at the checkpoint's W-"
    assert tr[2].ichange == tr[0].ichange, ctx
    assert r.out["wal_size_after_truncate"] == 0, r.out
    after = r.seg("after-truncate")
    fs3 = check_commit(r, after, "first write after TRUNCATE", restart=True)
    assert after[0].mx == 0 and fs3[0].salt1 == tr[2].shm_salt1, f"{r.who} {show(after)}"


# ---------------------------------------------------------------------------------------------
# 6. locking_mode=EXCLUSIVE before the first access: no shm, no lock calls; PH2 ends a commit.

@pytest.mark.parametrize("host", HOSTS)
def test_exclusive_locking_mode(runs, host):
    r = runs[host, "exclusive"]
    check_layout(r)
    assert r.out["locking_mode"] == "exclusive" and r.out["journal_mode"] == "wal", r.out
    locks = [t for t in r.tokens if t.kind in ("W+", "W-")]
    assert not locks, f"{r.who} lock calls in EXCLUSIVE mode: {show(r.tokens, 200)}"
    assert all(t.mx is None for t in r.tokens if t.kind == "PH2"), f"{r.who} shm in EXCLUSIVE mode"
    prev_end = None
    for step in ("commit0", "commit1", "commit2", "multi"):
        seg = r.seg(step)
        ctx = f"{r.who} {step}: {show(seg)}"
        fs = frames(seg)
        assert kinds(seg) == ["F"] * len(fs) + ["PH2"], ctx
        assert fs[-1].commit > 0 and not any(f.commit for f in fs[:-1]), ctx
        if prev_end is not None:
            assert fs[0].i == prev_end + 1, ctx
        prev_end = fs[-1].i
    assert len(frames(r.seg("multi"))) > 1, r.seg("multi")
    assert r.seg("rollback") == [], f"{r.who} unspilled rollback: {show(r.seg('rollback'))}"

    # A spilled ROLLBACK in EXCLUSIVE mode: frames (and page rewrites) from the last commit + 1,
    # then nothing at all marks the rollback (no lock, no PH2)...
    seg = r.seg("spill-rollback")
    ctx = f"{r.who} spilled ROLLBACK in EXCLUSIVE mode: {show(seg)}"
    fs = frames(seg)
    assert set(kinds(seg)) == {"F", "d"}, ctx
    assert fs[0].i == prev_end + 1 and not any(f.commit for f in fs), ctx
    # ...and the next commit writes over the rolled-back frames from the same index. The trace
    # has no boundary between the two, so (like capture) the tokenizer sees a "rewrite" h/d of a
    # frame of the rolled-back transaction: the header now carries the commit size and the real
    # salt, then the page, then PH2.
    nxt = r.seg("after-spill-rollback")
    ctx = f"{r.who} commit after a spilled ROLLBACK in EXCLUSIVE mode: {show(nxt)}"
    assert kinds(nxt) == ["h", "d", "PH2"], ctx
    assert nxt[0].i == nxt[1].i == prev_end + 1, f"{ctx}\nwrites from the last commit + 1, over stale frames"
    assert nxt[0].commit > 0 and nxt[0].salt1 == fs[0].salt1 != 0, ctx
    assert max(f.i for f in fs) > nxt[0].i, ctx
    assert r.out["rows"] == 17, r.out
    assert kinds(r.seg("close")) == ["T"] and r.seg("close")[0].size == 0, f"{r.who} close: {show(r.seg('close'))}"


# ---------------------------------------------------------------------------------------------
# 7. Close: a non-last connection just closes; the last one checkpoints and deletes the WAL.

@pytest.mark.parametrize("host", HOSTS)
def test_close(runs, host):
    r = runs[host, "close"]
    check_layout(r)
    assert r.seg("close-first") == [], f"{r.who} non-last close: {show(r.seg('close-first'))}"
    last = r.seg("close-last")
    assert kinds(last) == ["T"] and last[0].size == 0, f"{r.who} last close: {show(last)}"
    assert r.out["wal_after_first_close"] is True and r.out["wal_after_last_close"] is False, r.out
    # The checkpoint happened before the delete: the database file alone holds every row.
    con = sqlite3.connect(f"file:{r.db}?mode=ro", uri=True)
    try:
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 4
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------
# 8. journal_size_limit: the restarting commit truncates the WAL to a non-zero size.

@pytest.mark.parametrize("host", HOSTS)
def test_journal_size_limit(runs, host):
    r = runs[host, "size_limit"]
    check_layout(r)
    limit = r.out["journal_size_limit"]
    assert limit == 16384, r.out
    ck = r.seg("ckpt")
    check_no_write(r, ck, "RESTART checkpoint with journal_size_limit", ["W+", "W-"])
    assert r.out["wal_size_after_ckpt"] == r.out["wal_size_before"] > limit, f"{r.who} the checkpoint does not truncate: {r.out}"
    seg = r.seg("restarting-commit")
    ctx = f"{r.who} restarting commit: {show(seg)}"
    fs = frames(seg)
    assert kinds(seg) == ["W+", "HDR"] + ["F"] * len(fs) + ["T", "W-", "PH2"], ctx
    end = 32 + fs[-1].i * (24 + r.page_size)
    want = max(limit, end)
    assert seg[-3].size == want != 0, f"{ctx}\ntruncated to max(limit, end of the commit) = {want}"
    assert r.out["wal_size_after_commit"] == want, r.out
    nxt = r.seg("next")
    check_commit(r, nxt, "commit after the truncation")


# ---------------------------------------------------------------------------------------------
# 9. Page sizes 512 and 65536: frame offsets follow 32 + (i-1)*(24+page_size).

@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("scenario", ["page512", "page65536"])
def test_page_sizes(runs, host, scenario):
    r = runs[host, scenario]
    assert r.out["page_size_read"] == r.page_size, r.out
    # check_layout fails on any write that is not at the formula's offsets for this page size.
    check_layout(r)
    frames_seen = [t for t in r.tokens if t.kind == "F"]
    assert frames_seen, f"{r.who} {show(r.tokens)}"
    check_commit(r, r.seg("commit"), "one-row commit")
    fs = check_commit(r, r.seg("multi"), "multi-page commit")
    assert len(fs) >= 3, f"{r.who} {show(r.seg('multi'))}"
