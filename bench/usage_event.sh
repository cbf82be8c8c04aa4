#!/usr/bin/env bash
# The usage parser's cost per chat chunk (bench/usage_event.c), linked
# against the objects of a built tree: bench/usage_event.sh [TREE] (default
# this one; build it first with make). Compare two trees by running both,
# alternately: the machine's speed drifts.
set -euo pipefail
tree=$(cd "${1:-$(dirname "$0")/..}" && pwd)
pkgs="libevent libevent_pthreads libevent_openssl libcurl libcjson jose openssl sqlite3 libpq zlib libhs libcbor libzstd libpsl"
out=$(mktemp -d /tmp/keyless-usage-event-XXXXXX)
trap 'rm -rf "$out"' EXIT
# shellcheck disable=SC2046
gcc -std=c17 -D_GNU_SOURCE -O2 -I"$tree/src" "$(dirname "$0")/usage_event.c" \
    $(find "$tree/build/obj/src" -name '*.o' ! -name main.o) $(pkg-config --libs $pkgs) -lpthread -lm \
    -o "$out/usage_event"
"$out/usage_event"
