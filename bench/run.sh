#!/usr/bin/env bash
# keyless benchmarks (`make bench`). One run measures the same load against
#   direct   mockllm itself
#   relay    bench/relay: copies bytes between each client connection and an
#            upstream connection of its own, nothing else (the floor: what one
#            more process between client and upstream costs on this box)
#   nginx    nginx proxy_pass with upstream keepalive (the practical limit for
#            an HTTP proxy on this box)
#   keyless  the full governed path: WhoIs identity (fake-tailscaled), grants,
#            usage and cost accounting, SQLite records, access log
# with the proxy under test alone on one core and wrk + the upstream on the
# other, prints a table and appends it to BENCHMARKS.md. See bench/README.md.
#
# Environment (defaults in brackets):
#   BENCH_BUILD      binaries to measure [build]
#   BENCH_SECONDS    seconds per wrk measurement [8]
#   BENCH_WARMUP     seconds of warm-up load before each measurement [2]
#   BENCH_ROUNDS     rounds of scenarios 1 and 2, the targets alternating in
#                    each (the machine drifts; ratios are taken per round) [3]
#   BENCH_STREAMS    concurrent long-lived streams [10000] (capped by the fd limit)
#   BENCH_STREAM_EVENTS  events per long-lived stream, one a second [15]
#   BENCH_STREAM_RATE    new streams per second while ramping up [2000]
#   BENCH_SKIP       space-separated scenario numbers to skip, e.g. "3b 4"
#   BENCH_APPEND     0: do not append to BENCHMARKS.md [1]
#   BENCH_RSS_SETTLE 0: skip the last RSS reading, 62 s after the load [1]
#   BENCH_PROFILE    1: also run bench/profile.sh afterwards [0]
#   BENCH_MAX_FOREIGN  % of a core others may use before we wait [15]
#   BENCH_QUIET_WAIT   seconds to wait for a quiet machine, then go on [180]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SECS=${BENCH_SECONDS:-8}
WARM=${BENCH_WARMUP:-2}
ROUNDS=${BENCH_ROUNDS:-3}
SKIP=" ${BENCH_SKIP:-} "
skip() { [[ "$SKIP" == *" $1 "* ]]; }

bench_init run
RES=$OUT/results.jsonl
: >"$RES"
log "results in $OUT"
node "$BENCH_DIR/bodies.mjs" "$TMP"

start_tailscaled
start_mockllm
start_sseup
start_keyless
start_nginx
start_relay
NGINX_PIDS=$(proc_pids "$NGINX_PID" | tr '\n' ' ')
ALL_PIDS="$MOCK_PID $SSEUP_PID $FTS_PID $KL_PID $NGINX_PIDS $RELAY_PIDS"
log "mockllm $MOCK_ADDR, relay $RELAY_ADDR, nginx $NGINX_ADDR, keyless $KL_ADDR (proxies on cpu $PROXY_CPU; wrk, mockllm, tailscaled on cpu $LOAD_CPU)"

sleep 1
RSS_IDLE=$(rss_kb "$KL_PID")

# ---- sanity: every target answers, keyless knows the caller through WhoIs ----
for a in "$MOCK_ADDR" "$RELAY_ADDR" "$NGINX_ADDR" "$KL_ADDR"; do
  code=$(curl -s -o "$TMP/check.json" -w '%{http_code}' "http://$a/v1/chat/completions" \
    -H 'Content-Type: application/json' -H 'Authorization: Bearer sk-placeholder-not-a-key' \
    --data-binary @"$TMP/chat-1k.json")
  [ "$code" = 200 ] || die "$a answered $code: $(head -c 300 "$TMP/check.json")"
done
curl -s "http://$KL_ADDR/api/whoami" >"$OUT/whoami.json"
grep -q '"source":"tailscale"' "$OUT/whoami.json" || die "keyless did not identify the caller through WhoIs: $(cat "$OUT/whoami.json")"

target_addr() {
  case $1 in direct) echo "$MOCK_ADDR" ;; relay) echo "$RELAY_ADDR" ;; nginx) echo "$NGINX_ADDR" ;; keyless) echo "$KL_ADDR" ;; esac
}
target_pids() {
  case $1 in direct) echo "$MOCK_PID" ;; relay) echo "$RELAY_PIDS" ;; nginx) echo "$NGINX_PIDS" ;; keyless) echo "$KL_PID" ;; esac
}

# wrk_run SCENARIO TARGET CONNS BODY XMOCK ROUND
wrk_run() {
  local sc=$1 tg=$2 conns=$3 body=$4 xmock=$5 round=$6
  local addr pids url file
  addr=$(target_addr "$tg")
  pids=$(target_pids "$tg")
  url="http://$addr/v1/chat/completions"
  file="$OUT/wrk-$sc-$tg-$round.txt"
  if [ "$WARM" -gt 0 ]; then
    BENCH_BODY="$TMP/$body" BENCH_XMOCK="$xmock" taskset -c "$LOAD_CPU" \
      wrk -t1 -c"$conns" -d"${WARM}s" -s "$BENCH_DIR/post.lua" "$url" >/dev/null 2>&1 || true
  fi
  # shellcheck disable=SC2086
  wait_quiet $ALL_PIDS
  local sampling=0
  if [ "$tg" = keyless ]; then rss_sampler "$KL_PID" "$TMP/rss-$sc.txt"; sampling=1; fi
  local b0 s0 c0 u0 w0 t0 b1 s1 c1 u1 w1 t1
  # shellcheck disable=SC2086
  { b0=$(busy_ns); s0=$(steal_ns); c0=$(cpu_ns $pids); u0=$(cpu_ns "$MOCK_PID"); children_ns w0; t0=$(now_ns); }
  BENCH_BODY="$TMP/$body" BENCH_XMOCK="$xmock" taskset -c "$LOAD_CPU" \
    wrk -t1 -c"$conns" -d"${SECS}s" --latency -s "$BENCH_DIR/post.lua" "$url" >"$file" 2>&1 || true
  # shellcheck disable=SC2086
  { b1=$(busy_ns); s1=$(steal_ns); c1=$(cpu_ns $pids); u1=$(cpu_ns "$MOCK_PID"); children_ns w1; t1=$(now_ns); }
  local rss_peak=0
  if [ $sampling = 1 ]; then stop_sampler; rss_peak=$(max_of "$TMP/rss-$sc.txt"); fi
  local up=$((u1 - u0))
  [ "$tg" = direct ] && up=0
  local foreign
  foreign=$(awk -v b=$((b1 - b0)) -v m=$((c1 - c0 + up + w1 - w0)) -v t=$((t1 - t0)) \
    'BEGIN{f=(b-m)/t*100; if (f<0) f=0; printf "%.0f", f}')
  json_kv kind wrk scenario "$sc" target "$tg" round "$round" conns "$conns" seconds "$SECS" body "$body" xmock "$xmock" \
    wrk "$(basename "$file")" target_cpu_ns $((c1 - c0)) upstream_cpu_ns "$up" wrk_cpu_ns $((w1 - w0)) \
    wall_ns $((t1 - t0)) foreign_pct "$foreign" steal_ns $((s1 - s0)) rss_peak_kb "$rss_peak" \
    load "$(cut -d' ' -f1 /proc/loadavg)" note "$QUIET_NOTE" >>"$RES"
  log "$sc $tg${round:+ (round $round)}: $(grep -E 'Requests/sec' "$file" | tr -s ' ') (others: ${foreign}% of a core)"
}

# scenario_wrk SCENARIO CONNS BODY XMOCK [ROUNDS]: every target in turn, ROUNDS
# times (report.mjs takes each ratio and difference within a round, then the
# median over the rounds).
scenario_wrk() {
  local sc=$1 conns=$2 body=$3 xmock=$4 rounds=${5:-1} tg r
  for r in $(seq "$rounds"); do
    for tg in direct relay nginx keyless; do wrk_run "$sc" "$tg" "$conns" "$body" "$xmock" "$r"; done
  done
}

# ---- 1: non-streaming, 1 KB body, 64 connections ----
if ! skip 1; then
  log "scenario 1: non-streaming chat, 1 KB body, 64 connections"
  scenario_wrk 1 64 chat-1k.json "" "$ROUNDS"
  sleep 3
  RSS_AFTER_1=$(rss_kb "$KL_PID")
fi

# ---- 2: added latency at 1 connection ----
if ! skip 2; then
  log "scenario 2: latency at 1 connection"
  scenario_wrk 2 1 chat-1k.json "" "$ROUNDS"
fi

# ---- 3a: SSE, 20 events per response ----
if ! skip 3a; then
  log "scenario 3a: SSE, 20 events per response, 64 connections"
  scenario_wrk 3a 64 chat-1k-stream.json "events=20"
fi

# ---- 4: 1 MB request body ----
if ! skip 4; then
  log "scenario 4: 1 MB request body, 1 and 8 connections"
  scenario_wrk 4 1 chat-1m.json ""
  scenario_wrk 4c8 8 chat-1m.json ""
fi
sleep 3
RSS_AFTER_WRK=$(rss_kb "$KL_PID")

# ---- 3b: long-lived concurrent streams, one event a second ----
# streams_run LABEL TARGET ADDR MODE BODY XMOCK UPSTREAM_PID
streams_run() {
  local label=$1 tg=$2 addr=$3 mode=$4 body=$5 xmock=$6 up_pid=$7
  local pids ev=${BENCH_STREAM_EVENTS:-15} rate=${BENCH_STREAM_RATE:-2000}
  case $tg in direct) pids=$up_pid ;; relay) pids=$RELAY_PIDS ;; nginx) pids=$NGINX_PIDS ;; keyless) pids=$KL_PID ;; esac
  # The steady window: every stream open, none starting or ending. Streams
  # open during the first NSTREAMS/rate seconds; the first one ends ev - 1 s
  # after it started (mockllm's a little later).
  local from to steady
  from=$(awk -v n="$NSTREAMS" -v r="$rate" 'BEGIN{printf "%.1f", n / r + 1}')
  to=$(awk -v e="$ev" 'BEGIN{printf "%.1f", e - 1.5}')
  steady=$(awk -v a="$from" -v b="$to" 'BEGIN{d = b - a; printf "%.1f", (d > 0 ? d : 0)}')
  # shellcheck disable=SC2086
  wait_quiet $ALL_PIDS
  local sampling=0
  if [ "$tg" = keyless ]; then rss_sampler "$KL_PID" "$TMP/rss-$label.txt"; sampling=1; fi
  local extra=()
  [ -n "$xmock" ] && extra+=(--header "x-mock: $xmock")
  awk -v d="$steady" 'BEGIN{exit !(d > 0)}' && extra+=(--steady "$from:$to")
  taskset -c "$LOAD_CPU" "$TMP/sseload" client --connect "$addr" --streams "$NSTREAMS" --rate "$rate" \
    --mode "$mode" --interval-ms 1000 --body-file "$TMP/$body" "${extra[@]}" \
    --timeout-s $((NSTREAMS / rate + ev + 60)) >"$OUT/streams-$label.json" 2>"$TMP/streams-$label.err" &
  local cpid=$!
  BENCH_PIDS+=("$cpid")
  # The proxy's CPU in the same window: one event a second per stream.
  local c0=0 c1=0 fds=0 b0=0 b1=0 t0=0 t1=0 u0=0 u1=0
  sleep "$from"
  # shellcheck disable=SC2086
  if awk -v d="$steady" 'BEGIN{exit !(d >= 1)}'; then
    b0=$(busy_ns); c0=$(cpu_ns $pids); u0=$(cpu_ns "$up_pid"); t0=$(now_ns)
    fds=$(fds_of "${pids%% *}")
    sleep "$steady"
    b1=$(busy_ns); c1=$(cpu_ns $pids); u1=$(cpu_ns "$up_pid"); t1=$(now_ns)
  else
    log "warning: no steady window (BENCH_STREAM_EVENTS too small for $NSTREAMS streams at $rate/s)"
  fi
  wait "$cpid" || log "streams $label: the client reported failures ($(tail -2 "$TMP/streams-$label.err"))"
  local rss_peak=0 rss_after=0
  if [ $sampling = 1 ]; then
    stop_sampler
    rss_peak=$(max_of "$TMP/rss-$label.txt")
    sleep 5
    rss_after=$(rss_kb "$KL_PID")
  fi
  local client
  client=$(cat "$OUT/streams-$label.json")
  [ -n "$client" ] || client='{}'
  local meta
  meta=$(json_kv kind streams label "$label" target "$tg" mode "$mode" streams "$NSTREAMS" events_per_stream "$ev" \
    steady_s "$steady" steady_cpu_ns $((c1 - c0)) steady_upstream_cpu_ns $((u1 - u0)) steady_busy_ns $((b1 - b0)) \
    steady_wall_ns $((t1 - t0)) fds_in_proxy "$fds" rss_peak_kb "$rss_peak" rss_after_kb "$rss_after" note "$QUIET_NOTE")
  echo "${meta%\}},\"client\":$client}" >>"$RES"
  log "streams $label: $(head -c 240 "$OUT/streams-$label.json")"
}

if ! skip 3b; then
  # The proxy needs two sockets per stream, plus its listeners, idle upstream
  # keep-alive connections (nginx: up to 64 per upstream) and files.
  NSTREAMS=${BENCH_STREAMS:-10000}
  cap=$(( (NOFILE - 400) / 2 ))
  if [ "$NSTREAMS" -gt "$cap" ]; then
    log "warning: ulimit -n is $NOFILE (hard); running $cap streams instead of $NSTREAMS"
    NSTREAMS=$cap
  fi
  EV=${BENCH_STREAM_EVENTS:-15}
  log "scenario 3b: $NSTREAMS concurrent streams, one event a second, $EV events each"
  # The time-stamping upstream: the one-way delay of each event, exactly. It
  # closes each connection after its stream, so the proxies pool none of them.
  streams_run stamp-direct direct "$SSEUP_ADDR" stamp stream-sse.json "" "$SSEUP_PID"
  streams_run stamp-relay relay "$RELAY_SSE_ADDR" stamp stream-sse.json "" "$SSEUP_PID"
  streams_run stamp-nginx nginx "$NGINX_SSE_ADDR" stamp stream-sse.json "" "$SSEUP_PID"
  streams_run stamp-keyless keyless "$KL_ADDR" stamp stream-sse.json "" "$SSEUP_PID"
  # mockllm as the provider (delay_events_ms=1000): memory, and lateness
  # measured from the request (millisecond-grained: mockllm's timers). Last,
  # because afterwards keyless's libcurl keeps up to 1024 idle connections
  # to mockllm (CURLMOPT_MAXCONNECTS), fds a following 10k run would lack.
  streams_run mock-direct direct "$MOCK_ADDR" mock stream-small.json "events=$EV;delay_events_ms=1000" "$MOCK_PID"
  streams_run mock-keyless keyless "$KL_ADDR" mock stream-small.json "events=$EV;delay_events_ms=1000" "$MOCK_PID"
fi

sleep 5
RSS_FINAL=$(rss_kb "$KL_PID")
# Idle upstream connections stay pooled for 60 s (as nginx's keepalive_timeout);
# the memory they and the streams held should be back once the pool is empty.
RSS_POOL_EMPTY=0
if [ "${BENCH_RSS_SETTLE:-1}" = 1 ]; then
  log "waiting 62 s for the upstream keep-alive pool to empty"
  sleep 62
  RSS_POOL_EMPTY=$(rss_kb "$KL_PID")
fi
json_kv kind rss idle_kb "$RSS_IDLE" after_1_kb "${RSS_AFTER_1:-0}" after_wrk_kb "$RSS_AFTER_WRK" \
  final_kb "$RSS_FINAL" pool_empty_kb "$RSS_POOL_EMPTY" hwm_kb "$(hwm_kb "$KL_PID")" >>"$RES"

# What keyless wrote down: one record per request, and every one answered 200.
sqlite3 "$TMP/keyless.db" "SELECT state, status, count(*) FROM requests GROUP BY 1, 2" >"$OUT/records.txt" 2>&1 || true
records=$(awk -F'|' '{n+=$3} END{print n+0}' "$OUT/records.txt")
json_kv kind records total "$records" by_state "$(tr '\n' ' ' <"$OUT/records.txt")" >>"$RES"
cp "$TMP/keyless.hujson" "$TMP/nginx/nginx.conf" "$OUT/"
tail -n 20 "$TMP/keyless.err" >"$OUT/keyless-log-tail.txt" 2>/dev/null || true

# ---- the machine and the code ----
# BENCH_COMMIT names the code when BENCH_BUILD was built elsewhere (e.g. from
# `git archive`); otherwise HEAD, flagged when src/ or tools/ differ from it.
if [ -n "${BENCH_COMMIT:-}" ]; then
  commit=$BENCH_COMMIT dirty=""
else
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  dirty=""
  if [ -n "$(git -C "$ROOT" status --porcelain -- src tools Makefile 2>/dev/null)" ]; then
    dirty=" (working tree differs from the commit)"
  fi
fi
json_kv kind meta date "$(date -u '+%Y-%m-%d %H:%M UTC')" cpu "$(lscpu | sed -n 's/^Model name: *//p' | head -1)" \
  cores "$(nproc --all)" kernel "$(uname -r)" commit "$commit$dirty" build "$BUILD" \
  nginx "$(nginx -v 2>&1 | sed 's/.*nginx\///')" wrk "$(wrk -v 2>&1 | head -1 | awk '{print $2}')" \
  nofile "$NOFILE" seconds "$SECS" warmup "$WARM" proxy_cpu "$PROXY_CPU" load_cpu "$LOAD_CPU" >>"$RES"

node "$BENCH_DIR/report.mjs" "$OUT" >"$OUT/summary.md"
cat "$OUT/summary.md"
if [ "${BENCH_APPEND:-1}" = 1 ]; then
  { echo; cat "$OUT/summary.md"; } >>"$ROOT/BENCHMARKS.md"
  log "appended to BENCHMARKS.md"
fi

if [ "${BENCH_PROFILE:-0}" = 1 ]; then
  bench_stop_all
  "$BENCH_DIR/profile.sh"
fi
