#!/bin/sh
# Run the integration suite against the binaries in $1 (default: build).
# Installs the npm packages (official SDKs, Claude Code) with `npm ci` when
# node_modules is missing or older than the lock file, and runs a private
# PostgreSQL server for the tests that share a store between gateways.
set -eu
cd "$(dirname "$0")/.."
build="${1:-build}"
. scripts/node-env.sh
pgdir=$(mktemp -d /tmp/keyless-pg-XXXXXX)
tests_tmp=""
trap 'scripts/pg-test.sh stop "$pgdir"; [ -z "$tests_tmp" ] || rm -rf "$tests_tmp"' EXIT INT TERM
KEYLESS_TEST_PG_URL=$(scripts/pg-test.sh start "$pgdir")
export KEYLESS_TEST_PG_URL
# every test's temporary files (configs, stores, agent homes) in one
# directory, removed when the run ends (PostgreSQL, started before, runs as
# its own user and keeps its files in $pgdir)
tests_tmp=$(mktemp -d /tmp/keyless-tests-XXXXXX)
TMPDIR=$tests_tmp
export TMPDIR
export KEYLESS_BUILD="$build"
# a ThreadSanitizer build (make TSAN=1) leaves out what is not keyless's
TSAN_OPTIONS="${TSAN_OPTIONS:-suppressions=$PWD/tests/tsan.supp}"
export TSAN_OPTIONS
# No single test may hang CI: each gets at most 5 minutes.
node --test --test-concurrency=2 --test-timeout=300000 --test-reporter=spec tests/integration/*.test.mjs
