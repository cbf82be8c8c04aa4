#!/usr/bin/env bash
# Where keyless spends its time: perf profiles of keyless (pinned to its own
# core, as in bench/run.sh) under
#   s1   scenario 1: non-streaming chat, 1 KB body, 64 connections
#   s2   scenario 2: the same at 1 connection
#   s4   scenario 4: 1 MB body, 1 connection
#   s3   long-lived streams (bench/sseload, one event a second per stream)
# plus system calls per request (strace -c) for s1 and s2, for keyless and
# for nginx. Results in bench/results/<time>-profile/: perf-*.txt reports and
# syscalls-*.txt. perf.data files (~80 MB each) are kept there
# only with BENCH_KEEP_PERF=1.
#
# Two experiments (they change nothing in keyless, only where it runs or what
# its allocator is asked):
#   trim     after the streams: keyless's RSS, glibc's malloc_stats() and the
#            RSS after malloc_trim(0), called in the live process through gdb:
#            is the memory kept after load in use, or free but not returned?
#   offcore  scenarios 1 and 2 again with the record writer thread moved to the
#            other core: how much of keyless's cost on its core is SQLite's.
#   massif   (not in the default set; needs valgrind) a second keyless under
#            valgrind --tool=massif holding 500 streams: heap bytes per stream
#            by allocation site (massif.txt).
#
# Environment: BENCH_BUILD [build], BENCH_PROFILE_SECONDS [10],
# BENCH_PROFILE_STREAMS [2000], BENCH_PROFILE_ONLY (e.g. "s1 s4").
# perf needs kernel.perf_event_paranoid <= 1 (or root). Hardware counters are
# not needed: samples come from the cpu-clock software event, so this also
# works in VMs without a PMU. Call graphs are DWARF-unwound (Debian's
# libraries have no frame pointers).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PSECS=${BENCH_PROFILE_SECONDS:-10}
ONLY=" ${BENCH_PROFILE_ONLY:-s1 s2 s4 s3 trim syscalls offcore} "
want() { [[ "$ONLY" == *" $1 "* ]]; }
command -v perf >/dev/null || die "perf is not installed (linux-perf)"
perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1 || die "perf record does not work here (perf_event_paranoid?)"

bench_init profile
log "profiles in $OUT"
node "$BENCH_DIR/bodies.mjs" "$TMP"
start_tailscaled
start_mockllm
start_sseup
start_keyless
start_nginx
sleep 1
NGINX_PIDS=$(proc_pids "$NGINX_PID" | tr '\n' ' ')
ALL_PIDS="$MOCK_PID $SSEUP_PID $FTS_PID $KL_PID $NGINX_PIDS"

# Thread roles by name (keyless names them): kl-writer, kl-query, kl-worker-N.
tid_named() { { grep -lx "$1" /proc/"$KL_PID"/task/*/comm || true; } | cut -d/ -f5; }
WRITER_TID=$(tid_named kl-writer)
[ -n "$WRITER_TID" ] || die "keyless has no thread named kl-writer (a build from before threads were named?)"
mapfile -t WORKER_TIDS < <(tid_named 'kl-worker-[0-9]*')
{
  echo "keyless pid $KL_PID threads:"
  for t in /proc/"$KL_PID"/task/*; do echo "  ${t##*/} $(cat "$t/comm")"; done
} >"$OUT/threads.txt"

wrk_load() { # CONNS BODY SECONDS ADDR
  BENCH_BODY="$TMP/$2" taskset -c "$LOAD_CPU" wrk -t1 -c"$1" -d"$3s" --latency \
    -s "$BENCH_DIR/post.lua" "http://$4/v1/chat/completions"
}

# report NAME REQUESTS UNIT: text reports from $TMP/NAME.data into $OUT;
# perf-NAME-summary.md puts every sample in a cost category (bench/perfsum.mjs).
report() {
  local name=$1 reqs=$2 unit=$3 data="$TMP/$1.data" o="$OUT/perf-$1"
  perf script -i "$data" -F tid,ip,sym,dso 2>/dev/null |
    node "$BENCH_DIR/perfsum.mjs" --writer "$WRITER_TID" --hz 999 --requests "$reqs" --unit "$unit" \
      --detail 'libcurl transfer|writer' >"$o-summary.md" || true
  perf report -i "$data" --no-children --sort pid -g none --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' >"$o-threads.txt" || true
  perf report -i "$data" --no-children --sort dso -g none --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' >"$o-dso.txt" || true
  perf report -i "$data" --no-children --sort dso,sym -g none --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -150 >"$o-self.txt" || true
  perf report -i "$data" --children --sort sym -g none --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -400 >"$o-children.txt" || true
  # The worker thread(s) alone, inclusive, with callers folded in.
  local w
  for w in "${WORKER_TIDS[@]}"; do
    perf report -i "$data" --tid "$w" --children --sort sym -g none --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -400 >"$o-worker-$w.txt" || true
    perf report -i "$data" --tid "$w" --no-children --sort dso,sym -g caller,0.5,callee,function,percent --stdio 2>/dev/null |
      head -3000 >"$o-worker-$w-callgraph.txt" || true
  done
  perf report -i "$data" --tid "$WRITER_TID" --no-children --sort dso,sym -g none --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 >"$o-writer.txt" || true
  [ "${BENCH_KEEP_PERF:-0}" = 1 ] && cp "$data" "$OUT/$name.perf.data"
  log "profile $name: $(head -3 "$o-threads.txt" | tr -s ' ' | tr '\n' ';')"
}

# profile NAME CONNS BODY: perf record keyless while wrk loads it.
profile_wrk() {
  local name=$1 conns=$2 body=$3
  wrk_load "$conns" "$body" 3 "$KL_ADDR" >/dev/null 2>&1 || true   # warm-up
  # shellcheck disable=SC2086
  wait_quiet $ALL_PIDS
  wrk_load "$conns" "$body" $((PSECS + 2)) "$KL_ADDR" >"$OUT/wrk-$name.txt" 2>&1 &
  local wpid=$!
  BENCH_PIDS+=("$wpid")
  sleep 1
  perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$KL_PID" -o "$TMP/$name.data" -- sleep "$PSECS" \
    >"$TMP/$name.perf.log" 2>&1 || true
  wait "$wpid" || true
  # Requests in the profiled window: wrk's rate (perf's own overhead included) x its length.
  local reqs
  reqs=$(awk -v s="$PSECS" '/Requests\/sec/{printf "%d", $2 * s}' "$OUT/wrk-$name.txt")
  report "$name" "${reqs:-0}" request
}

want s1 && profile_wrk s1 64 chat-1k.json
want s2 && profile_wrk s2 1 chat-1k.json
want s4 && profile_wrk s4 1 chat-1m.json

if want s3; then
  n=${BENCH_PROFILE_STREAMS:-2000}
  # shellcheck disable=SC2086
  wait_quiet $ALL_PIDS
  taskset -c "$LOAD_CPU" "$TMP/sseload" client --connect "$KL_ADDR" --streams "$n" --rate 2000 --mode stamp \
    --interval-ms 1000 --body-file "$TMP/stream-sse.json" --timeout-s 120 >"$OUT/streams-s3.json" 2>&1 &
  cpid=$!
  BENCH_PIDS+=("$cpid")
  # All streams are open after n/2000 s; each gets one event a second.
  sleep $((n / 2000 + 2))
  ev=${BENCH_STREAM_EVENTS:-15}
  win=$((ev - n / 2000 - 5))
  [ $win -ge 2 ] || die "BENCH_STREAM_EVENTS too small for $n streams"
  perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$KL_PID" -o "$TMP/s3.data" -- sleep "$win" \
    >"$TMP/s3.perf.log" 2>&1 || true
  if want trim && command -v gdb >/dev/null; then
    # Heap in use while every stream is still open (glibc malloc_stats on keyless's stderr).
    n0=$(wc -l <"$TMP/keyless.err")
    r0=$(rss_kb "$KL_PID")
    gdb -batch -p "$KL_PID" -ex 'call (void) malloc_stats()' >/dev/null 2>&1 || true
    { echo "with $n streams open: VmRSS $r0 kB; glibc malloc_stats():"; tail -n +"$((n0 + 1))" "$TMP/keyless.err"; } >"$OUT/heap-streams.txt"
  fi
  wait "$cpid" || true
  report s3 $((n * win)) event
fi

if want trim && command -v gdb >/dev/null; then
  {
    echo "keyless VmRSS before malloc_trim(0): $(rss_kb "$KL_PID") kB"
    n0=$(wc -l <"$TMP/keyless.err")
    gdb -batch -p "$KL_PID" -ex 'call (void) malloc_stats()' -ex 'call (int) malloc_trim(0)' >/dev/null 2>&1 || true
    sleep 0.5
    echo "keyless VmRSS after malloc_trim(0): $(rss_kb "$KL_PID") kB"
    echo "glibc malloc_stats() (printed by keyless on stderr), before the trim:"
    tail -n +"$((n0 + 1))" "$TMP/keyless.err"
  } >"$OUT/trim.txt" 2>&1
  log "trim: $(head -2 "$OUT/trim.txt" | tr '\n' ' ')"
fi

# System calls per request, keyless and nginx (strace slows both down; the
# counts per request are what matter, not the time).
if want syscalls && command -v strace >/dev/null; then
  for conns in 64 1; do
    for tg in keyless nginx; do
      addr=$KL_ADDR; pid=$KL_PID
      [ $tg = nginx ] && addr=$NGINX_ADDR && pid=$(proc_pids "$NGINX_PID" | tail -1)
      strace -c -f -p "$pid" -o "$OUT/syscalls-$tg-c$conns.txt" &
      spid=$!
      BENCH_PIDS+=("$spid")
      sleep 1
      wrk_load "$conns" chat-1k.json 4 "$addr" >"$OUT/wrk-syscalls-$tg-c$conns.txt" 2>&1 || true
      kill -INT "$spid" 2>/dev/null || true
      wait "$spid" 2>/dev/null || true
      reqs=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$OUT/wrk-syscalls-$tg-c$conns.txt")
      calls=$(awk '$NF=="total"{print $(NF-2)}' "$OUT/syscalls-$tg-c$conns.txt")
      echo "requests: $reqs; system calls: $calls; per request: $(awk -v c="$calls" -v r="$reqs" 'BEGIN{if (r) printf "%.1f", c/r}')" \
        >>"$OUT/syscalls-$tg-c$conns.txt"
      log "syscalls $tg c$conns: $(tail -1 "$OUT/syscalls-$tg-c$conns.txt")"
    done
  done
fi
if want offcore; then
  # Back to back: writer on keyless's core (as in run.sh), then on the other.
  for conns in 64 1; do
    for where in "$PROXY_CPU" "$LOAD_CPU"; do
      taskset -p -c "$where" "$WRITER_TID" >/dev/null
      wrk_load "$conns" chat-1k.json 2 "$KL_ADDR" >/dev/null 2>&1 || true
      # shellcheck disable=SC2086
      wait_quiet $ALL_PIDS
      wrk_load "$conns" chat-1k.json 8 "$KL_ADDR" >"$OUT/wrk-offcore-c$conns-writer-cpu$where.txt" 2>&1 || true
      log "writer on cpu $where, $conns conns: $(grep -E 'Requests/sec' "$OUT/wrk-offcore-c$conns-writer-cpu$where.txt" | tr -s ' ')"
    done
  done
  taskset -p -c "$PROXY_CPU" "$WRITER_TID" >/dev/null
  {
    echo "record writer thread on keyless's core vs on the load core (wrk, 1 KB chat, 8 s each)"
    for f in "$OUT"/wrk-offcore-*.txt; do
      printf '%s: %s req/s, p50 %s, p99 %s\n' "$(basename "$f" .txt)" \
        "$(awk '/Requests\/sec/{print $2}' "$f")" "$(awk '$1=="50%"{print $2}' "$f")" "$(awk '$1=="99%"{print $2}' "$f")"
    done
  } >"$OUT/offcore.txt"
fi
if want massif && command -v valgrind >/dev/null; then
  start keyless-massif "$PROXY_CPU" valgrind --tool=massif --massif-out-file="$OUT/massif.out" \
    --max-snapshots=100 --threshold=0.5 "$BUILD/keyless" serve --config "$TMP/keyless.hujson"
  mpid=$LAST_PID
  wait_for "$TMP/keyless-massif.out" "listening on" 60
  maddr=$(sed -n 's|^keyless listening on http://||p' "$TMP/keyless-massif.out" | head -1)
  taskset -c "$LOAD_CPU" "$TMP/sseload" client --connect "$maddr" --streams 500 --rate 200 --mode stamp \
    --interval-ms 1000 --body-file "$TMP/stream-sse.json" --timeout-s 120 >"$OUT/streams-massif.json" 2>&1 || true
  kill -TERM "$mpid" 2>/dev/null || true
  wait "$mpid" 2>/dev/null || true
  ms_print "$OUT/massif.out" >"$OUT/massif.txt" 2>&1 || true
  log "massif: peak heap with 500 streams in $OUT/massif.txt"
fi
log "done: $OUT"
