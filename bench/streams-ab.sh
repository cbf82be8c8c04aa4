#!/usr/bin/env bash
# The long-lived streams of scenario 3b against keyless and the relay (the
# floor) in alternation: run.sh measures each target once, one after the
# other, and a per-event p99 measured once moves by milliseconds between
# runs under the same load, so keyless's p99 above the floor is only
# judged against the relay measured in turn with it.
#
#   bench/streams-ab.sh [ROUNDS]
#
# Each round runs bench/sseload's client against keyless, then against the
# relay (BENCH_STREAMS streams, 9800; BENCH_STREAM_RATE new ones a second,
# 2000; BENCH_STREAM_EVENTS events each, 15; one a second from sseload's
# time-stamping upstream) and prints per run the steady window's per-event
# delay p50 and p99 and the client's CPU time; at the end the medians.
# Same configuration as run.sh (keyless with WhoIs identity, grants,
# accounting, SQLite records, access log).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ROUNDS=${1:-3}
NSTREAMS=${BENCH_STREAMS:-9800}
RATE=${BENCH_STREAM_RATE:-2000}
EVENTS=${BENCH_STREAM_EVENTS:-15}
bench_init streams-ab
node "$BENCH_DIR/bodies.mjs" "$TMP"
start_tailscaled
start_mockllm
start_sseup
start_keyless
start_relay
sed 's/"model": *"[^"]*"/"model": "sse-gpt"/' "$TMP/chat-1k-stream.json" >"$TMP/sse.json"
# the steady window: every stream open, none starting or ending (as run.sh)
FROM=$(awk -v n="$NSTREAMS" -v r="$RATE" 'BEGIN{printf "%.1f", n / r + 1}')
TO=$(awk -v e="$EVENTS" 'BEGIN{printf "%.1f", e - 1.5}')

one() { # TARGET ADDR
  # shellcheck disable=SC2086
  wait_quiet $MOCK_PID $SSEUP_PID $FTS_PID $KL_PID $RELAY_PIDS
  local c0 c1
  children_ns c0
  taskset -c "$LOAD_CPU" "$TMP/sseload" client --connect "$2" --streams "$NSTREAMS" --rate "$RATE" --mode stamp \
    --interval-ms 1000 --body-file "$TMP/sse.json" --steady "$FROM:$TO" --timeout-s $((NSTREAMS / RATE + EVENTS + 60)) \
    >"$TMP/client.json" 2>"$TMP/client.err" || die "sseload client failed: $(tail -2 "$TMP/client.err")"
  children_ns c1
  node -e '
    const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).steady;
    console.log([process.argv[2], s.n, s.p50_us.toFixed(1), s.p99_us.toFixed(0), (process.argv[3] / 1e9).toFixed(2)].join(" "));
  ' "$TMP/client.json" "$1" "$((c1 - c0))" | tee -a "$OUT/streams-ab.txt"
}

log "$ROUNDS rounds of $NSTREAMS streams ($EVENTS events, steady window $FROM-$TO s); results in $OUT/streams-ab.txt"
echo "target steady_events p50_us p99_us client_cpu_s" | tee "$OUT/streams-ab.txt"
for _ in $(seq "$ROUNDS"); do
  one keyless "$KL_ADDR"
  one relay "$RELAY_SSE_ADDR"
done
awk 'NR > 1 { p50[$1] = p50[$1] " " $3; p99[$1] = p99[$1] " " $4 }
  function med(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END { for (t in p50) printf "median %s: steady p50 %s us, p99 %s us\n", t, med(p50[t]), med(p99[t]) }' \
  "$OUT/streams-ab.txt"
