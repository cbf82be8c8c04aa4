#!/usr/bin/env bash
# Every process on ONE core: wrk, mockllm, fake-tailscaled and the proxy
# under test (direct, relay, nginx, keyless) all pinned to the same cpu.
#
#   bench/onecore.sh [ROUNDS]
#
# Why: in bench/run.sh the proxy has a core to itself, and on this VM every
# message between the two cores costs a wake-up of the other one (an IPI,
# the hypervisor's exit from idle): the byte relay, which does nothing else,
# adds ~400 us to scenario 2's p99. On one core there are no cross-core
# wake-ups, so what a proxy adds to a request is its own work and its
# context switches; that is where keyless's added latency at one connection
# can be compared with the goal (p99 <= 50 us). With BENCH_ONECORE_CONNS=64
# it also shows a gateway on a machine too small for its load: the record
# writer competes with the worker, wrk and the upstream for the one core.
#
# Each round loads every target in turn (2 s warm-up, BENCH_ONECORE_SECONDS
# [8] measured) with wrk at BENCH_ONECORE_CONNS [1] connections, the same
# config as run.sh (WhoIs identity, grants, accounting, SQLite records,
# access log); per run: req/s, wrk's p50/p90/p99 and the answers that were
# not 2xx; then per target the medians and the p50/p99 added to direct.
# BENCH_ONECORE_CPU [1] is the core; BENCH_ONECORE_TARGETS
# ["direct relay nginx keyless"] the targets. Results in
# bench/results/<time>-onecore/onecore.txt. About 2.5 min for 3 rounds.
set -euo pipefail
export BENCH_PROXY_CPU=${BENCH_ONECORE_CPU:-1} BENCH_LOAD_CPU=${BENCH_ONECORE_CPU:-1}
. "$(dirname "$0")/lib.sh"

ROUNDS=${1:-3}
SECS=${BENCH_ONECORE_SECONDS:-8}
CONNS=${BENCH_ONECORE_CONNS:-1}
TARGETS=${BENCH_ONECORE_TARGETS:-direct relay nginx keyless}
bench_init onecore
node "$BENCH_DIR/bodies.mjs" "$TMP"
start_tailscaled
start_mockllm
start_relay
start_nginx
start_keyless
sleep 1
log "$ROUNDS rounds of $SECS s at $CONNS connections, everything on cpu $LOAD_CPU; results in $OUT/onecore.txt"

addr_of() {
  case $1 in
    direct) echo "$MOCK_ADDR" ;;
    relay) echo "$RELAY_ADDR" ;;
    nginx) echo "$NGINX_ADDR" ;;
    keyless) echo "$KL_ADDR" ;;
    *) die "unknown target $1" ;;
  esac
}

# wrk's latency ("40.00us", "1.61ms", "2.00s") in us.
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /ms$/) n *= 1000; else if (v ~ /[0-9]s$/) n *= 1000000; printf "%.0f", n }'; }

one() { # TARGET
  local url="http://$(addr_of "$1")/v1/chat/completions" w="$TMP/wrk-$1.txt"
  BENCH_BODY="$TMP/chat-1k.json" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s -s "$BENCH_DIR/post.lua" "$url" >/dev/null
  BENCH_BODY="$TMP/chat-1k.json" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" --latency \
    -s "$BENCH_DIR/post.lua" "$url" >"$w"
  local rps p50 p90 p99 bad
  rps=$(awk '/^Requests\/sec/{printf "%.0f", $2}' "$w")
  p50=$(to_us "$(awk '$1=="50%"{print $2}' "$w")")
  p90=$(to_us "$(awk '$1=="90%"{print $2}' "$w")")
  p99=$(to_us "$(awk '$1=="99%"{print $2}' "$w")")
  bad=$(awk '/Non-2xx/{print $NF}' "$w")
  printf '%s %s %s %s %s %s\n' "$1" "$rps" "$p50" "$p90" "$p99" "${bad:-0}" | tee -a "$OUT/runs.txt"
}

echo "target req/s p50_us p90_us p99_us not_2xx" | tee "$OUT/runs.txt"
for _ in $(seq "$ROUNDS"); do
  for t in $TARGETS; do one "$t"; done
done

# Medians per target, and what each adds to direct's medians.
awk -v targets="$TARGETS" 'NR > 1 { n[$1]++; rps[$1, n[$1]] = $2; p50[$1, n[$1]] = $3; p99[$1, n[$1]] = $5; bad[$1] += $6 }
  function med(a, t, k,   i, j, x, v) {
    for (i = 1; i <= k; i++) v[i] = a[t, i]
    for (i = 2; i <= k; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
    return k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
  }
  END {
    printf "\nmedians: target req/s p50_us p99_us not_2xx(all runs) p50_added p99_added (to direct)\n"
    d50 = ("direct" in n) ? med(p50, "direct", n["direct"]) : 0
    d99 = ("direct" in n) ? med(p99, "direct", n["direct"]) : 0
    k = split(targets, ts, " ")
    for (i = 1; i <= k; i++) {
      t = ts[i]
      if (!(t in n)) continue
      m50 = med(p50, t, n[t]); m99 = med(p99, t, n[t])
      printf "%s %.0f %.0f %.0f %d %+.0f %+.0f\n", t, med(rps, t, n[t]), m50, m99, bad[t], m50 - d50, m99 - d99
    }
  }' "$OUT/runs.txt" | tee "$OUT/onecore.txt"
