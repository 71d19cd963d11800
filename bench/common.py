"""Shared by the benchmark sections: paths, the local S3 server (moto on 127.0.0.1), Litestream,
and the row format every section reports in (walship, baseline, ratio, target, met).

A section is a module `bench/sec_*.py` with `run(ctx) -> str`, returning its Markdown (heading,
the command that reproduces it, a table, and notes). `ctx` is a `Ctx`.
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXT = ROOT / "target" / "release" / "libwalvfs.so"
PY = "/usr/bin/python3"
KEY_ID, SECRET, BUCKET = "AKIAWALSHIPBENCH0001", "walship/bench+secret/0123456789abcdefghij", "bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(workdir):
    exe = shutil.which("moto_server")
    if not exe:
        sys.exit("moto_server not found: python3 -m pip install 'moto[server]'")
    port = free_port()
    log = open(workdir / "moto.log", "w")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    return proc, endpoint



LITESTREAM = shutil.which("litestream")
WALSHIP = ROOT / "target" / "release" / "walship"


def litestream_env(extra=None):
    """Litestream 0.5.17 fails while AWS_CA_BUNDLE is set (see README): run it without."""
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(extra or {})
    return env


def litestream_version():
    if not LITESTREAM:
        return "not installed"
    p = subprocess.run([LITESTREAM, "version"], env=litestream_env(), capture_output=True, text=True)
    return p.stdout.strip() or p.stderr.strip()


@dataclass
class Ctx:
    quick: bool
    work: Path  # a scratch directory, removed after the run
    endpoint: str  # the shared moto server, bucket BUCKET exists
    command: str  # "make bench" or "make bench-quick"
    extra: dict = field(default_factory=dict)


def med(xs):
    return statistics.median(xs)


def spread(xs, f="{:,.0f}"):
    """'median (min–max)' of several runs."""
    return f"{f.format(med(xs))} ({f.format(min(xs))}–{f.format(max(xs))})"


def table(rows):
    """rows: (measure, walship, baseline, ratio, target, met: bool|None) → Markdown table lines."""
    out = ["| measure | walship | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
    for m, w, b, r, t, ok in rows:
        met = "n/a" if ok is None else ("yes" if ok else "**no**")
        out.append(f"| {m} | {w} | {b} | {r} | {t} | {met} |")
    return out
