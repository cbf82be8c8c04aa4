#!/bin/sh
# The concurrency stress (tests/stress-tsan.mjs) against a ThreadSanitizer
# build: every dialect, streamed and not, quotas, hooks, guardrails, admin
# reads and refills, while the configuration is reloaded again and again;
# once on a SQLite store and once on PostgreSQL with pooled quotas, stopped
# under load.
# Fails on any ThreadSanitizer report, when the load did not get through (or
# a reload did not take), when the gateway did not exit cleanly, or when an
# answer kept what the guardrails redact.
#   scripts/stress-tsan.sh [seconds per store]     (make stress)
# The whole suite under TSan (make test TSAN=1) is too slow for CI on two
# cores; this covers the threads' shared structures in a few minutes.
set -eu
cd "$(dirname "$0")/.."
seconds="${1:-40}"
build="${KEYLESS_STRESS_BUILD:-build-tsan}" # another build: tests/integration/stress-script.test.mjs
. scripts/node-env.sh
work=$(mktemp -d /tmp/keyless-stress-XXXXXX)
pgdir=$(mktemp -d /tmp/keyless-pg-XXXXXX) # PostgreSQL runs as its own user
trap 'scripts/pg-test.sh stop "$pgdir"; rm -rf "$work"' EXIT
# a trapped signal would otherwise end only the command it came in, and the
# script go on with its files removed
trap 'exit 130' INT
trap 'exit 143' TERM
TMPDIR="$work"
export TMPDIR KEYLESS_BUILD="$build"

# one run: $1 names it; the TSan reports go to $work/$1.<pid>
run() {
  name="$1"
  TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp log_path=$work/tsan-$name" \
    node tests/stress-tsan.mjs "$seconds" >"$work/$name.out" 2>&1 || {
      echo "stress-tsan: the $name run failed:" >&2
      tail -n 30 "$work/$name.out" >&2
      return 1
    }
  cat "$work/$name.out"
  # the load must have got through: successful requests, reloads that took
  # (every configuration it writes is valid: a reload that has errors or
  # takes a restart is a failure; one unanswered while stopping is not)
  ok=$(grep -Eo "'req 200': [0-9]+" "$work/$name.out" | grep -Eo '[0-9]+$' || echo 0)
  reloads=$(grep -Eo "'reload SIGHUP: configuration reloaded': [0-9]+" "$work/$name.out" | grep -Eo '[0-9]+$' || echo 0)
  refused=$(grep -Eo "'reload SIGHUP: [^']*': [0-9]+" "$work/$name.out" | grep -v "configuration reloaded" || true)
  if [ "$ok" -lt 100 ] || [ "$reloads" -lt 1 ] || [ -n "$refused" ]; then
    echo "stress-tsan: the $name run served $ok requests and took $reloads reloads${refused:+; reloads not taken: $refused}" >&2
    return 1
  fi
  # the guardrails redact every answer's e-mail address, under every reload
  if grep -q "answer e-mail kept" "$work/$name.out"; then
    echo "stress-tsan: the $name run relayed answers with the e-mail address the guardrails redact" >&2
    return 1
  fi
  if ls "$work"/tsan-"$name".* >/dev/null 2>&1; then
    echo "stress-tsan: ThreadSanitizer reports in the $name run:" >&2
    cat "$work"/tsan-"$name".* >&2
    return 1
  fi
  # a gateway that crashed (an abort, which ThreadSanitizer does not
  # report) or exited with an error is no pass, however much it served
  if ! grep -qx 'keyless exited {"code":0,"signal":null}' "$work/$name.out"; then
    echo "stress-tsan: the $name run's gateway did not exit cleanly: $(grep '^keyless exited' "$work/$name.out" || echo 'no exit seen')" >&2
    return 1
  fi
  echo "stress-tsan: $name: $ok requests answered 200, no ThreadSanitizer report"
}

run sqlite
KEYLESS_TEST_PG_URL=$(scripts/pg-test.sh start "$pgdir")
STOP_UNDER_LOAD=1
export KEYLESS_TEST_PG_URL STOP_UNDER_LOAD
run postgres
