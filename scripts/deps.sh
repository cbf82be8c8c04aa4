#!/bin/sh
# Install what keyless needs to build, run and test on Debian 12.
# Idempotent and quiet: when every package is present it prints nothing and
# does not touch apt. Usage: scripts/deps.sh [build|test|bench]
set -eu

# The Hyperscan API: Intel's Hyperscan where Debian builds it (amd64), whose
# 5.4.0 matched PCRE2 on 5,000 random patterns; Vectorscan elsewhere. Debian
# 12's Vectorscan 5.4.9 on x86 misses matches of ordinary patterns and aborts
# the process on others (docs/design.md, "Guard"), so on amd64 it is replaced.
case "$(dpkg --print-architecture)" in
  amd64) hs_pkg=libhyperscan-dev; hs_other="libvectorscan-dev libvectorscan5" ;;
  *) hs_pkg=libvectorscan-dev; hs_other="" ;;
esac
build_pkgs="build-essential pkg-config libevent-dev libcurl4-openssl-dev libcjson-dev
  libjose-dev libssl-dev libsqlite3-dev libpq-dev zlib1g-dev $hs_pkg
  libcbor-dev libzstd-dev libpsl-dev"
# libclang-rt-14-dev: libFuzzer and the sanitizer runtimes (clang only
# recommends it); procps: pgrep, which a test uses
test_pkgs="libcmocka-dev nodejs npm postgresql openssl sqlite3 clang libclang-rt-14-dev zstd procps"
bench_pkgs="nginx-light wrk util-linux"

want="$build_pkgs"
case "${1:-build}" in
  build) ;;
  test) want="$want $test_pkgs" ;;
  bench) want="$want $test_pkgs $bench_pkgs" ;;
  *) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

# The SDKs and agent CLIs the tests run need Node.js 20 or later; Debian 12
# has 18. Then a Node.js 20 binary comes from the npm registry (the
# node-linux-<arch> package the `node` package installs) into .tools/node,
# which scripts/test-integration.sh puts first on PATH.
node_tool() {
  node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null && return 0
  case "$(dpkg --print-architecture)" in
    amd64) arch=x64 ;;
    arm64) arch=arm64 ;;
    *) echo "scripts/deps.sh: Node.js 20 or later is needed; install it" >&2; return 1 ;;
  esac
  root=$(cd "$(dirname "$0")/.." && pwd)
  [ -x "$root/.tools/node/node_modules/node-linux-$arch/bin/node" ] && return 0
  echo "installing: Node.js 20 from the npm registry into .tools/node" >&2
  npm install --prefix "$root/.tools/node" --no-save --no-audit --no-fund --loglevel=error "node-linux-$arch@20.20.2"
}

missing=""
for p in $want; do
  # nodejs may come from another repository whose package also provides npm.
  if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
  if [ "$p" = nodejs ] && command -v node >/dev/null 2>&1; then continue; fi
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done
if [ -z "$missing" ]; then
  [ "${1:-build}" = build ] || node_tool
  exit 0
fi
# the two libraries conflict (one soname): the one not wanted goes
remove=""
for p in $hs_other; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then remove="$remove $p-"; fi
done

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing:$missing${remove:+ (removing${remove})}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null || true
if [ -n "$remove" ]; then
  # the swap may take nothing else with it
  # shellcheck disable=SC2086
  others=$($sudo apt-get -s install -qq --no-install-recommends $missing $remove 2>/dev/null |
    awk '$1 == "Remv" {print $2}' | grep -v -x -e libvectorscan-dev -e libvectorscan5 || true)
  if [ -n "$others" ]; then
    echo "scripts/deps.sh: replacing libvectorscan with libhyperscan would also remove:" $others >&2
    echo "decide about those, then: apt-get install libhyperscan-dev (why: docs/design.md, \"Guard\")" >&2
    exit 1
  fi
fi
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing $remove >/dev/null
[ "${1:-build}" = build ] || node_tool
