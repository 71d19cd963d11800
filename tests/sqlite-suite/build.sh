#!/usr/bin/env bash
# Fetches SQLite's full source as Debian ships it (the source package: upstream tree with test/,
# Debian's patches applied) and builds two testfixtures from it: a plain one and one whose
# default VFS is walship (walship_hook.c, linked in through SQLITE_EXTRA_INIT).
#
#   tests/sqlite-suite/build.sh VERSION     VERSION: 3.40 (bookworm's 3.40.1) or 3.46 (trixie's
#                                           3.46.1, built with --enable-debug: SQLite's asserts on)
#
# Everything is cached under $SQLITE_SUITE_CACHE (default target/sqlite-suite/): the private apt
# lists and downloaded source package (apt/, dl/), the unpacked tree (<VERSION>/src) and the two
# builds (<VERSION>/plain, <VERSION>/walship). A second run does nothing unless walship_hook.c
# or the build options changed. Needs: apt-get, dpkg-source (dpkg-dev), gcc, make, tcl-dev;
# apt-get runs as root.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${SQLITE_SUITE_CACHE:-$root/target/sqlite-suite}
version=${1:?usage: build.sh 3.40|3.46}

case "$version" in
  3.40) suite=bookworm; upstream=3.40.1; configure_extra=() ;;
  3.46) suite=trixie;   upstream=3.46.1; configure_extra=(--enable-debug) ;;
  *) echo "build.sh: unknown version $version (3.40 or 3.46)" >&2; exit 2 ;;
esac
tcl_dir=${TCL_DIR:-/usr/lib/tcl8.6}
[ -f "$tcl_dir/tclConfig.sh" ] || { echo "build.sh: no $tcl_dir/tclConfig.sh: install tcl-dev" >&2; exit 1; }

say() { echo "sqlite-suite: $*"; }

# --- 1. the source package, through a private apt source list (the system's is left alone) ---
apt_dir=$cache/apt
dl=$cache/dl
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dl"
cat >"$apt_dir/sources.list.new" <<EOF
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
EOF
mv "$apt_dir/sources.list.new" "$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
  -o APT::Sandbox::User=root -q)

dsc=$(ls "$dl"/sqlite3_"$upstream"-*.dsc 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$dsc" ]; then
  say "fetching sqlite3 $upstream ($suite) source package"
  apt-get "${apt_opts[@]}" update >"$apt_dir/update.log" 2>&1 \
    || { cat "$apt_dir/update.log" >&2; exit 1; }
  (cd "$dl" && apt-get "${apt_opts[@]}" source --download-only "sqlite3/$suite" >"$apt_dir/source-$suite.log" 2>&1) \
    || { cat "$apt_dir/source-$suite.log" >&2; exit 1; }
  dsc=$(ls "$dl"/sqlite3_"$upstream"-*.dsc 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$dsc" ] || { echo "build.sh: $suite no longer ships sqlite3 $upstream:" >&2; ls "$dl" >&2; exit 1; }
fi

# --- 2. unpack with Debian's patches ---
vdir=$cache/$version
src=$vdir/src
if [ ! -f "$src/.unpacked-$(basename "$dsc")" ]; then
  say "unpacking $(basename "$dsc")"
  rm -rf "$src" "$vdir/plain" "$vdir/walship"
  mkdir -p "$vdir"
  dpkg-source --no-check -x "$dsc" "$src" >"$vdir/unpack.log" 2>&1 \
    || { cat "$vdir/unpack.log" >&2; exit 1; }
  touch "$src/.unpacked-$(basename "$dsc")"
fi

# --- 3. the two testfixtures ---
configure_build() {  # dir
  local bd=$1
  mkdir -p "$bd"
  if [ ! -f "$bd/Makefile" ]; then
    (cd "$bd" && "$src/configure" --with-tcl="$tcl_dir" "${configure_extra[@]}" >configure.log 2>&1) \
      || { tail -30 "$bd/configure.log" >&2; exit 1; }
  fi
}

# Both builds: SQLITE_ENABLE_SNAPSHOT, so that the snapshot*.test files (which read and rewind
# the wal-index) run instead of skipping. The walship build adds the hook.
common_opts="-DSQLITE_ENABLE_SNAPSHOT=1"
build_fixture() {  # name opts libs
  local bd=$vdir/$1 opts=$2 libs=$3 stamp
  stamp=$( (echo "$opts|$libs|${configure_extra[*]}"; [ "$1" = plain ] || cat "$here/walship_hook.c") \
    | sha256sum | cut -c1-16)
  if [ -x "$bd/testfixture" ] && [ "$(cat "$bd/build.stamp" 2>/dev/null)" = "$stamp" ]; then
    return
  fi
  say "building the $1 testfixture ($version${configure_extra[*]:+ ${configure_extra[*]}})"
  configure_build "$bd"
  rm -f "$bd/testfixture"
  make -C "$bd" sqlite3.h >"$bd/make.log" 2>&1 || { tail -30 "$bd/make.log" >&2; exit 1; }
  if [ "$1" = walship ]; then
    # The extension's path is read from $WALSHIP_EXT at run time; this is only the fallback.
    gcc -O2 -Wall -Werror -I"$bd" -DWALSHIP_EXT_DEFAULT="\"$root/target/release/libwalvfs.so\"" \
      -c "$here/walship_hook.c" -o "$bd/walship_hook.o"
  fi
  make -C "$bd" -j2 testfixture OPTS="$opts" LIBS="$libs" >>"$bd/make.log" 2>&1 \
    || { tail -30 "$bd/make.log" >&2; exit 1; }
  echo "$stamp" >"$bd/build.stamp"
}
build_fixture plain "$common_opts" ""
build_fixture walship "$common_opts -DSQLITE_EXTRA_INIT=walship_suite_init" "$vdir/walship/walship_hook.o -ldl"
say "$version ready: $vdir/plain/testfixture, $vdir/walship/testfixture (tests in $src/test)"
