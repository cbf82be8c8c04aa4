#!/bin/sh
# Run the integration suite against the binaries in $1 (default: build).
# Installs the npm packages (official SDKs, Claude Code) with `npm ci` when
# node_modules is missing or older than the lock file.
set -eu
cd "$(dirname "$0")/.."
build="${1:-build}"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
export KEYLESS_BUILD="$build"
exec node --test --test-concurrency=2 --test-reporter=spec tests/integration/*.test.mjs
