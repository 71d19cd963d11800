#!/usr/bin/env python3
"""Runs SQLite's own TCL test files with the plain testfixture and with the walship one, and
compares. See tests/sqlite-suite/README.md.

Each file runs in its own fresh directory (`<runs>/<file>/<build>/work`, the test's working
directory), as an unprivileged user (root ignores file permissions, which some tests rely on),
under a timeout. The walship run gets its own replica (`WALSHIP_REPLICA_URL=file://<runs>/<file>/
walship/replica`), so every database the test opens is replicated.

A file fails the comparison when it passes with the plain testfixture and, with walship, fails,
times out, or takes more than 1.5x the plain time plus 5 s. Files that fail on the plain build
are reported and ignored. Exit status: 0 if no file failed the comparison, 1 otherwise.
"""
import argparse
import concurrent.futures
import json
import os
import pwd
import resource
import re
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SLOW_FACTOR = 1.5
SLOW_GRACE = 5.0

RESULT_RE = re.compile(r"^(\d+) errors out of (\d+) tests", re.M)
FAILURES_RE = re.compile(r"^!Failures on these tests:(.*)$", re.M)
# What finish_test counts as errors beyond failed tests.
EXIT_CHECKS_RE = re.compile(r"^(-?\d+ files were left open|Unfreed memory: \d+ bytes)", re.M)
WALSHIP_LOG_RE = re.compile(r"^walship (error|warn|info|debug|trace): ", re.M)


def no_core_dumps():
    # Crash tests kill their children on purpose; a core file each would fill the disk.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def read_list(path):
    """Test files from a list: one per line, `name.test [timeout-seconds]`, `#` comments."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if line:
                out.append((line[0], float(line[1]) if len(line) > 1 else None))
    return out


class Runner:
    def __init__(self, a):
        self.a = a
        self.cache = a.cache
        vdir = os.path.join(self.cache, a.version)
        self.testdir = os.path.join(vdir, "src", "test")
        self.fixture = {b: os.path.join(vdir, b, "testfixture") for b in ("plain", "walship")}
        self.runs = os.path.join(self.cache, "runs", a.version)
        self.user = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam(a.user)
            except KeyError:
                subprocess.run(["useradd", "--create-home", a.user], check=True)
                self.user = pwd.getpwnam(a.user)
        self.lock = threading.Lock()

    def user_can_run(self):
        """Whether the test user can read the tests and run both testfixtures and the extension
        where they are (every directory above them must be world-searchable)."""
        probe = ["setpriv", "--reuid", str(self.user.pw_uid), "--regid", str(self.user.pw_gid),
                 "--init-groups", "--", "test", "-r", os.path.join(self.testdir, "tester.tcl")]
        for f in self.fixture.values():
            probe += ["-a", "-x", f]
        os.makedirs(self.runs, exist_ok=True)
        os.chmod(self.runs, 0o755)
        probe += ["-a", "-r", self.a.ext, "-a", "-x", self.runs]
        return subprocess.run(probe).returncode == 0

    def stage(self):
        """Copies the tests, both testfixtures and the extension under /var/tmp, for a checkout
        the test user cannot reach (e.g. under /root)."""
        base = os.path.join("/var/tmp", "walship-sqlite-suite")
        vdir = os.path.join(base, self.a.version)
        print(f"sqlite-suite: user {self.user.pw_name} cannot reach {self.cache}; "
              f"running from a copy in {base}", flush=True)
        shutil.rmtree(vdir, ignore_errors=True)
        os.makedirs(vdir)
        src = os.path.join(self.cache, self.a.version, "src")
        subprocess.run(["cp", "-a", src, os.path.join(vdir, "src")], check=True)
        for b, f in self.fixture.items():
            os.makedirs(os.path.join(vdir, b))
            shutil.copy2(f, os.path.join(vdir, b, "testfixture"))
            self.fixture[b] = os.path.join(vdir, b, "testfixture")
        ext = os.path.join(base, "libwalvfs.so")
        shutil.copy2(self.a.ext, ext)
        self.a.ext = ext
        self.testdir = os.path.join(vdir, "src", "test")
        self.runs = os.path.join(base, "runs", self.a.version)
        for d in (base, vdir):
            os.chmod(d, 0o755)
        os.makedirs(self.runs, exist_ok=True)
        if not self.user_can_run():
            sys.exit(f"run.py: user {self.user.pw_name} cannot run the staged copy in {base}")

    def base_env(self, home):
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "LANG": "C.UTF-8",
            "TMPDIR": home,
        }
        return env

    def run_one(self, name, build, timeout):
        d = os.path.join(self.runs, os.path.basename(name), build)
        shutil.rmtree(d, ignore_errors=True)
        work = os.path.join(d, "work")
        os.makedirs(work)
        env = self.base_env(d)
        if build == "walship":
            replica = os.path.join(d, "replica")
            os.makedirs(replica)
            env["WALSHIP_REPLICA_URL"] = "file://" + replica
            env["WALSHIP_LOG"] = self.a.log_level
            env["WALSHIP_EXT"] = self.a.ext
            if os.environ.get("WALSHIP_JUDGE"):
                env["WALSHIP_JUDGE"] = os.environ["WALSHIP_JUDGE"]
                # Verdicts go to a file: one line per comparison ("ok ..." or "MISMATCH ...").
                env["WALSHIP_JUDGE_LOG"] = os.path.join(d, "judge.log")
            # WALSHIP_TRACE=1: one line per VFS call walship observes, in <run>/trace.log.
            if os.environ.get("WALSHIP_TRACE"):
                env["WALSHIP_TRACE"] = os.path.join(d, "trace.log")
        if self.user:
            for p in (d, work) + ((env["WALSHIP_REPLICA_URL"][7:],) if build == "walship" else ()):
                os.chown(p, self.user.pw_uid, self.user.pw_gid)
        cmd = ["timeout", "-k", "10", str(int(timeout))]
        if self.user:
            cmd += ["setpriv", "--reuid", str(self.user.pw_uid), "--regid",
                    str(self.user.pw_gid), "--init-groups", "--"]
        cmd += [self.fixture[build], os.path.join(self.testdir, name)]
        log_path = os.path.join(d, "output.log")
        t0 = time.monotonic()
        with open(log_path, "wb") as log:
            p = subprocess.run(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, preexec_fn=no_core_dumps)
        secs = time.monotonic() - t0
        with open(log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        r = {"rc": p.returncode, "secs": round(secs, 2), "timeout": timeout, "log": log_path}
        m = RESULT_RE.search(text)
        r["errors"], r["tests"] = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        fm = FAILURES_RE.search(text)
        r["failed"] = fm.group(1).split() if fm else []
        r["walship_log_lines"] = len(WALSHIP_LOG_RE.findall(text))
        r["exit_checks"] = EXIT_CHECKS_RE.findall(text)
        judge = os.path.join(d, "judge.log")
        verdicts = open(judge, errors="replace").read().splitlines() if os.path.exists(judge) else []
        r["judge_ok"] = sum(1 for v in verdicts if v.startswith("ok "))
        r["judge_bad"] = [v for v in verdicts if "MISMATCH" in v]
        if p.returncode == 124 or p.returncode == 137:
            r["status"] = "timeout"
        elif r["judge_bad"]:
            r["status"] = "fail"  # the replica differed from the database: the judge's verdict
        elif m and p.returncode == 0 and r["errors"] == 0:
            r["status"] = "pass"
        elif m:
            r["status"] = "fail"
        else:
            r["status"] = "crash"
        return r

    def run_file(self, name, timeout):
        res = {"file": name}
        if "plain" in self.a.builds:
            res["plain"] = self.run_one(name, "plain", timeout)
        plain = res.get("plain")
        if "walship" in self.a.builds and plain and plain["status"] != "pass":
            pass  # not judged: the plain build fails it already
        elif "walship" in self.a.builds:
            wt = timeout
            if plain and plain["status"] == "pass" and self.a.walship_timeout == "auto":
                # Long enough to tell a slowdown from a hang, short enough to keep CI bounded.
                wt = min(timeout, max(60.0, 3 * plain["secs"] + 60))
            res["walship"] = self.run_one(name, "walship", wt)
        res["verdict"] = verdict(res)
        if res["verdict"] == "ok" and not self.a.keep:
            # Keep output.log; the databases and replica of a file that passed are only disk.
            for b in ("plain", "walship"):
                for sub in ("work", "replica"):
                    shutil.rmtree(os.path.join(self.runs, os.path.basename(name), b, sub),
                                  ignore_errors=True)
        with self.lock:
            print(f"  {row(res)}", flush=True)
        return res


def describe(r):
    if r is None:
        return "-"
    if r["status"] == "timeout":
        return f"TIMEOUT>{int(r['timeout'])}s"
    if r["status"] == "crash":
        return f"CRASH rc={r['rc']}"
    if r["status"] == "pass":
        return f"ok {r['tests']}"
    return f"{r['errors']}/{r['tests']} err"


def verdict(res):
    p, w = res.get("plain"), res.get("walship")
    if p is not None and p["status"] != "pass":
        return "plain-fails"
    if p is None or w is None:
        return "-"
    if w["status"] != "pass":
        return "FAIL"
    if w["secs"] > SLOW_FACTOR * p["secs"] + SLOW_GRACE:
        return "SLOW"
    return "ok"


def fmt_secs(r):
    return "-" if r is None else f"{r['secs']:.1f}"


def ratio(res):
    p, w = res.get("plain"), res.get("walship")
    if not p or not w or p["secs"] <= 0:
        return "-"
    return f"{w['secs'] / max(p['secs'], 0.01):.2f}"


def row(res):
    p, w = res.get("plain"), res.get("walship")
    note = ""
    if w and w["status"] != "pass" and w["failed"]:
        note = " ".join(w["failed"][:4]) + (" ..." if len(w["failed"]) > 4 else "")
    if w and w.get("exit_checks"):
        note = (note + " " if note else "") + "; ".join(w["exit_checks"])
    if w and (w.get("judge_ok") or w.get("judge_bad")):
        note = (note + " " if note else "") + f"[judge: {w['judge_ok']} equal, {len(w['judge_bad'])} differ]"
        if w["judge_bad"]:
            note += " " + w["judge_bad"][0]
    if w and w["walship_log_lines"]:
        note = (note + " " if note else "") + f"[{w['walship_log_lines']} walship log lines]"
    return (f"{res['file']:<20} {describe(p):>16} {describe(w):>16} {fmt_secs(p):>8} "
            f"{fmt_secs(w):>8} {ratio(res):>6}  {res['verdict']:<11} {note}").rstrip()


HEADER = (f"{'file':<20} {'plain':>16} {'walship':>16} {'plain s':>8} {'walship s':>8} "
          f"{'ratio':>6}  {'verdict':<11} note")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("files", nargs="*", help="test files (default: --list)")
    ap.add_argument("--version", default="3.40", help="3.40 or 3.46 (built by build.sh)")
    ap.add_argument("--list", default=os.path.join(HERE, "ci.list"))
    ap.add_argument("--all-files", action="store_true",
                    help="every *.test file of the version's test/ directory but --exclude's")
    ap.add_argument("--exclude", default=os.path.join(HERE, "full-exclude.list"))
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600, help="per-file timeout, seconds")
    ap.add_argument("--walship-timeout", choices=("auto", "full"), default="auto",
                    help="auto: walship gets min(timeout, max(60, 3*plain+60)) s")
    ap.add_argument("--builds", default="plain,walship")
    ap.add_argument("--cache", default=os.environ.get("SQLITE_SUITE_CACHE",
                                                      os.path.join(ROOT, "target", "sqlite-suite")))
    ap.add_argument("--ext", default=os.environ.get("WALSHIP_EXT") or
                    os.path.join(ROOT, "target", "release", "libwalvfs.so"))
    ap.add_argument("--log-level", default=os.environ.get("SQLITE_SUITE_WALSHIP_LOG", "warn"),
                    help="WALSHIP_LOG for the walship runs (default warn)")
    ap.add_argument("--user", default=os.environ.get("SQLITE_SUITE_USER", "walshiptest"))
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--keep", action="store_true",
                    help="keep work/ and replica/ of files that passed too (default: only of "
                         "failures; output.log always)")
    a = ap.parse_args()
    a.builds = a.builds.split(",")
    a.ext = os.path.abspath(a.ext)
    if "walship" in a.builds and not os.path.exists(a.ext):
        sys.exit(f"run.py: no extension at {a.ext} (cargo build --release, or set WALSHIP_EXT)")

    r = Runner(a)
    if a.files:
        files = [(f if f.endswith(".test") else f + ".test", None) for f in a.files]
    elif a.all_files:
        skip = {f for f, _ in read_list(a.exclude)}
        files = [(f, None) for f in sorted(os.listdir(r.testdir))
                 if f.endswith(".test") and f not in skip]
    else:
        files = read_list(a.list)
    for b in a.builds:
        if not os.access(r.fixture[b], os.X_OK):
            sys.exit(f"run.py: no {r.fixture[b]}: run tests/sqlite-suite/build.sh {a.version}")
    if r.user and not r.user_can_run():
        r.stage()
    print(f"sqlite-suite {a.version}: {len(files)} files, {a.jobs} at a time, as "
          f"{a.user if r.user else 'the current user'}; extension {a.ext}; "
          f"WALSHIP_LOG={a.log_level}{'; WALSHIP_JUDGE=' + os.environ['WALSHIP_JUDGE'] if os.environ.get('WALSHIP_JUDGE') else ''}")
    print(f"  {HEADER}", flush=True)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as ex:
        futs = [ex.submit(r.run_file, f, t or a.timeout) for f, t in files]
        results = [f.result() for f in futs]
    wall = time.monotonic() - t0

    print(f"\nsqlite-suite {a.version} results (wall {wall:.0f} s; plain/walship: 'ok N' = N tests "
          f"passed, 'E/N err' = E of N failed; verdict SLOW = walship > {SLOW_FACTOR}x plain + "
          f"{SLOW_GRACE:.0f} s):")
    print(f"  {HEADER}")
    for res in results:
        print(f"  {row(res)}")
    # SQLITE_SUITE_SLOW=report (CI, for now): a slowdown is printed but does not fail the run;
    # a failure or a judge mismatch always does. The slowdowns come from a shipper started and
    # stopped at every open and close (issue 11's shared shipper pool is the fix).
    gating = ("FAIL",) if os.environ.get("SQLITE_SUITE_SLOW") == "report" else ("FAIL", "SLOW")
    slow_reported = [x for x in results if x["verdict"] == "SLOW" and "SLOW" not in gating]
    bad = [x for x in results if x["verdict"] in gating]
    for x in slow_reported:
        print(f"  {x['file']}: SLOW (reported, not failing: SQLITE_SUITE_SLOW=report): "
              f"{x['walship']['log']}")
    skipped = [x for x in results if x["verdict"] == "plain-fails"]
    for x in bad:
        w = x["walship"]
        print(f"  {x['file']}: {x['verdict']}: walship log {w['log']}")
    for x in skipped:
        print(f"  {x['file']}: fails on the plain build too ({describe(x['plain'])}); not judged: "
              f"{x['plain']['log']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"version": a.version, "wall": wall, "results": results}, f, indent=1)
    judged = [x for x in results if x["verdict"] not in ("plain-fails", "-")]
    print(f"sqlite-suite-{a.version}: {len(judged) - len(bad)} passed, {len(bad)} failed")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
