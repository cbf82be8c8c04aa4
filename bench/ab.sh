#!/usr/bin/env bash
# Interleaved A/B of two keyless builds on scenario 1 (or 2): the machine's
# speed drifts by tens of percent over minutes, so a change is only judged
# against the build before it measured in alternation on the same machine.
#
#   bench/ab.sh BUILD_A BUILD_B [ROUNDS]
#
# Each round starts keyless from A, then from B (the same config as
# bench/run.sh: WhoIs identity, grants, accounting, SQLite records, access
# log), warms it for 2 s and loads it for BENCH_AB_SECONDS (8) with wrk at
# BENCH_AB_CONNS (64) connections. Per run it prints req/s, keyless's CPU per
# request (all threads, from /proc schedstat) and wrk's p99; at the end the
# median of each column per build. mockllm and fake-tailscaled are started once.
# Each run starts with an empty record store, unless BENCH_AB_PREFILL is a
# number of seconds: then build A first fills one under scenario 1's load for
# that long (~10k rows a second), and every run starts from a copy of it, as
# a gateway with a history would (checkpoints and index writes cost more in
# a large database).
# BENCH_AB_BODY=chat-1k-stream.json with BENCH_XMOCK=events=20 loads
# scenario 3a (SSE, 20 events) instead of scenario 1.
# BENCH_AB_CAPS_B adds capability objects to B's grant (the same build twice
# then measures what a feature costs when configured), e.g.
#   BENCH_AB_CAPS_B='{"tools": {"deny": ["Bash"]}}' bench/ab.sh build build
# BENCH_AB_STORE_B adds members to B's "store" object, e.g.
#   BENCH_AB_STORE_B=', "batch": 128' bench/ab.sh build build
# BENCH_AB_CONFIG_B adds top-level members to B's configuration, e.g.
#   BENCH_AB_CONFIG_B='"guardrails": {"secrets": "block", "pii": "redact", "answers": true},' \
#   BENCH_AB_BODY=chat-1k-stream.json BENCH_XMOCK=events=20 bench/ab.sh build build
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -ge 2 ] || die "usage: bench/ab.sh BUILD_A BUILD_B [ROUNDS]"
A=$(cd "$1" && pwd)
B=$(cd "$2" && pwd)
ROUNDS=${3:-5}
SECS=${BENCH_AB_SECONDS:-8}
CONNS=${BENCH_AB_CONNS:-64}
BODY=${BENCH_AB_BODY:-chat-1k.json}     # chat-1k-stream.json + BENCH_XMOCK=events=20: scenario 3a
BENCH_BUILD=$A
bench_init ab
node "$BENCH_DIR/bodies.mjs" "$TMP"
start_tailscaled
start_mockllm

one() { # LABEL BUILD
  BUILD=$2
  if [ "$1" = B ]; then
    BENCH_KEYLESS_CAPS=${BENCH_AB_CAPS_B:-}; BENCH_STORE_EXTRA=${BENCH_AB_STORE_B:-}; BENCH_KEYLESS_EXTRA=${BENCH_AB_CONFIG_B:-}
  else
    BENCH_KEYLESS_CAPS=; BENCH_STORE_EXTRA=; BENCH_KEYLESS_EXTRA=
  fi
  rm -f "$TMP"/keyless.db*
  [ -z "${BENCH_AB_PREFILL:-}" ] || cp "$TMP/prefilled.db" "$TMP/keyless.db"
  start_keyless
  BENCH_BODY="$TMP/$BODY" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s -s "$BENCH_DIR/post.lua" \
    "http://$KL_ADDR/v1/chat/completions" >/dev/null
  local c0 c1
  c0=$(cpu_ns "$KL_PID")
  BENCH_BODY="$TMP/$BODY" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" --latency \
    -s "$BENCH_DIR/post.lua" "http://$KL_ADDR/v1/chat/completions" >"$TMP/wrk.txt"
  c1=$(cpu_ns "$KL_PID")
  kill -TERM "$KL_PID"
  wait "$KL_PID" 2>/dev/null || true
  local n rps p99
  n=$(awk '/requests in/{print $1}' "$TMP/wrk.txt")
  rps=$(awk '/^Requests\/sec/{printf "%.0f", $2}' "$TMP/wrk.txt")
  p99=$(awk '$1=="99%"{print $2}' "$TMP/wrk.txt")
  printf '%s %s %.1f %s\n' "$1" "$rps" "$(echo "($c1 - $c0) / 1000 / $n" | bc -l)" "$p99" | tee -a "$OUT/ab.txt"
}

if [ -n "${BENCH_AB_PREFILL:-}" ]; then
  BUILD=$A
  rm -f "$TMP"/keyless.db*
  start_keyless
  BENCH_BODY="$TMP/chat-1k.json" taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"${BENCH_AB_PREFILL}s" -s "$BENCH_DIR/post.lua" \
    "http://$KL_ADDR/v1/chat/completions" >/dev/null
  kill -TERM "$KL_PID"
  wait "$KL_PID" 2>/dev/null || true
  mv "$TMP/keyless.db" "$TMP/prefilled.db"
  rm -f "$TMP"/keyless.db*
  log "record store prefilled: $(sqlite3 "$TMP/prefilled.db" 'SELECT count(*) FROM requests') rows"
fi
log "A = $A, B = $B, $ROUNDS rounds of ${SECS}s at $CONNS connections; results in $OUT/ab.txt"
echo "build req/s cpu_us_per_req p99" | tee "$OUT/ab.txt"
for r in $(seq "$ROUNDS"); do
  one A "$A"
  one B "$B"
done
# medians per build, and the median of the per-round differences (B - A),
# which the drift between rounds affects least
med() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
for x in A B; do
  printf 'median %s: %s req/s, %s us CPU per request\n' "$x" \
    "$(awk -v x="$x" '$1==x{print $2}' "$OUT/ab.txt" | med)" "$(awk -v x="$x" '$1==x{print $3}' "$OUT/ab.txt" | med)"
done
printf 'median of B - A per round: %s us CPU per request\n' \
  "$(awk '$1=="A"{a=$3} $1=="B"{printf "%.1f\n", $3-a}' "$OUT/ab.txt" | med)"
