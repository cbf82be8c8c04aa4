#!/bin/sh
# Run the integration suite against the binaries in $1 (default: build).
# Installs the npm packages (official SDKs, Claude Code) with `npm ci` when
# node_modules is missing or older than the lock file, and runs a private
# PostgreSQL server for the tests that share a store between gateways.
set -eu
cd "$(dirname "$0")/.."
build="${1:-build}"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
pgdir=$(mktemp -d /tmp/keyless-pg-XXXXXX)
trap 'scripts/pg-test.sh stop "$pgdir"' EXIT INT TERM
KEYLESS_TEST_PG_URL=$(scripts/pg-test.sh start "$pgdir")
export KEYLESS_TEST_PG_URL
export KEYLESS_BUILD="$build"
# No single test may hang CI: each gets at most 5 minutes.
node --test --test-concurrency=2 --test-timeout=300000 --test-reporter=spec tests/integration/*.test.mjs
