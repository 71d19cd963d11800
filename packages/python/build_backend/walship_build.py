"""PEP 517 backend for the walship Python package: a wheel of walship/*.py plus libwalvfs.so.

Owns: copying the extension into the wheel (from $WALSHIP_EXTENSION, else the repository's
target/release/libwalvfs.so, else walship/libwalvfs.so as an sdist carries it) and the wheel's
metadata. Never: compiles anything (`make build` at the repository root does) or fetches anything.
The wheel is tagged py3-none-<this platform>: the .so does not depend on the Python version.
"""
import base64
import hashlib
import os
import shutil
import subprocess
import sysconfig
import tarfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
NAME = "walship"
VERSION = "0.1.0"
SUMMARY = ("Continuous backup of SQLite to S3-compatible storage from inside your Python process "
           "(reads your litestream.yml)")


def _extension() -> Path:
    for candidate in (os.environ.get("WALSHIP_EXTENSION"),
                      HERE.parent.parent / "target" / "release" / "libwalvfs.so",
                      HERE / NAME / "libwalvfs.so"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise RuntimeError(
        "walship: libwalvfs.so not found: run `make build` at the repository root first "
        "(or set WALSHIP_EXTENSION to the built libwalvfs.so)"
    )


def _tag() -> str:
    return "py3-none-" + sysconfig.get_platform().replace("-", "_").replace(".", "_")


def _metadata() -> str:
    readme = (HERE / "README.md").read_text()
    return (f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\nSummary: {SUMMARY}\n"
            "License: Apache-2.0\nRequires-Python: >=3.8\n"
            f"Description-Content-Type: text/markdown\n\n{readme}")


def _stripped_copy(src: Path, dst: Path):
    """The release build keeps debug info (28 MB); strip it when `strip` is there (4 MB)."""
    try:
        subprocess.run(["strip", "--strip-debug", "-o", str(dst), str(src)], check=True)
    except (OSError, subprocess.CalledProcessError):
        shutil.copyfile(src, dst)


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def _dist_info_files(tag: str) -> dict:
    di = f"{NAME}-{VERSION}.dist-info"
    return {
        f"{di}/METADATA": _metadata().encode(),
        f"{di}/WHEEL": (f"Wheel-Version: 1.0\nGenerator: walship_build\nRoot-Is-Purelib: false\n"
                        f"Tag: {tag}\n").encode(),
    }


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    tag = _tag()
    files = {}
    for py in sorted((HERE / NAME).glob("*.py")):
        files[f"{NAME}/{py.name}"] = py.read_bytes()
    files[f"{NAME}/py.typed"] = b""
    tmp = Path(wheel_directory) / ".libwalvfs.so.tmp"
    _stripped_copy(_extension(), tmp)
    files[f"{NAME}/libwalvfs.so"] = tmp.read_bytes()
    tmp.unlink()
    files.update(_dist_info_files(tag))
    record = f"{NAME}-{VERSION}.dist-info/RECORD"
    lines = [_record_line(name, data) for name, data in files.items()] + [f"{record},,"]
    files[record] = ("\n".join(lines) + "\n").encode()
    wheel_name = f"{NAME}-{VERSION}-{tag}.whl"
    with zipfile.ZipFile(Path(wheel_directory) / wheel_name, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return wheel_name


def build_sdist(sdist_directory, config_settings=None):
    """Sources plus the extension (so a wheel can be built from the sdist away from the repo)."""
    base = f"{NAME}-{VERSION}"
    name = f"{base}.tar.gz"
    with tarfile.open(Path(sdist_directory) / name, "w:gz") as t:
        for rel in ["pyproject.toml", "README.md", "build_backend/walship_build.py",
                    *[f"{NAME}/{p.name}" for p in sorted((HERE / NAME).glob("*.py"))]]:
            t.add(HERE / rel, arcname=f"{base}/{rel}")
        so = Path(sdist_directory) / ".libwalvfs.so.tmp"
        _stripped_copy(_extension(), so)
        t.add(so, arcname=f"{base}/{NAME}/libwalvfs.so")
        so.unlink()
        pkg_info = Path(sdist_directory) / ".PKG-INFO.tmp"
        pkg_info.write_text(_metadata())
        t.add(pkg_info, arcname=f"{base}/PKG-INFO")
        pkg_info.unlink()
    return name


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []
