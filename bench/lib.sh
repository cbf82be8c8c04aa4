# shellcheck shell=bash disable=SC2034
# Shared by bench/run.sh and bench/profile.sh (bash). Starts and stops the
# processes under test, pins them to cores, samples CPU and memory from /proc.
#
# Everything started here is recorded in BENCH_PIDS and stopped by
# bench_cleanup (installed as an EXIT/INT/TERM trap by bench_init).

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)

# Core split (see BENCHMARKS.md): the proxy under test gets PROXY_CPU alone;
# the load generator, the upstream and fake-tailscaled share LOAD_CPU.
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}

BENCH_PIDS=()
TMP=""

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Stop everything we started (TERM, then KILL after 5 s), by pid.
bench_stop_all() {
  local p
  for p in "${BENCH_PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${BENCH_PIDS[@]}"; do
    local i=0
    while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  BENCH_PIDS=()
}

bench_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  bench_stop_all
  if [ -n "$TMP" ] && [ -d "$TMP" ] && [ -z "${BENCH_KEEP_TMP:-}" ]; then
    rm -rf "$TMP"
  fi
  exit $rc
}

# bench_init NAME: results directory $OUT, scratch $TMP, traps, fd limit.
bench_init() {
  local name=$1
  BUILD=${BENCH_BUILD:-$ROOT/build}
  case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
  for b in keyless mockllm fake-tailscaled; do
    [ -x "$BUILD/$b" ] || die "$BUILD/$b is missing: run make (or set BENCH_BUILD)"
  done
  command -v wrk >/dev/null || die "wrk is not installed (scripts/deps.sh bench)"
  command -v taskset >/dev/null || die "taskset is not installed (util-linux)"
  [ "$(nproc --all)" -ge 2 ] || die "needs at least 2 cores (proxy on one, load on the other)"
  STAMP=$(date -u +%Y%m%dT%H%M%SZ)
  OUT=${BENCH_OUT:-$ROOT/bench/results/$STAMP-$name}
  mkdir -p "$OUT"
  TMP=$(mktemp -d /tmp/keyless-bench-XXXXXX)
  trap bench_cleanup EXIT INT TERM
  # 10,000 streams need 10k sockets in the client and 2 x 10k in the proxy.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  NOFILE=$(ulimit -n)
  cc -O2 -Wall -Wextra -o "$TMP/sseload" "$BENCH_DIR/sseload.c" || die "cannot build bench/sseload.c"
  cc -O2 -Wall -Wextra -o "$TMP/relay" "$BENCH_DIR/relay.c" || die "cannot build bench/relay.c"
}

# start NAME CPU CMD...: run CMD pinned to CPU in the background, stdout in
# $TMP/NAME.out, stderr in $TMP/NAME.err. Sets LAST_PID.
start() {
  local name=$1 cpu=$2
  shift 2
  taskset -c "$cpu" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  LAST_PID=$!
  BENCH_PIDS+=("$LAST_PID")
}

# wait_for FILE PATTERN [SECONDS]: until a line of FILE matches PATTERN.
wait_for() {
  local file=$1 pat=$2 secs=${3:-10} i=0
  while ! grep -q "$pat" "$file" 2>/dev/null; do
    i=$((i + 1))
    [ $i -gt $((secs * 20)) ] && die "timed out waiting for '$pat' in $file: $(tail -3 "${file%.out}.err" 2>/dev/null)"
    sleep 0.05
  done
}

# A free loopback TCP port (for nginx, which cannot listen on port 0).
free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

start_mockllm() {
  start mockllm "$LOAD_CPU" "$BUILD/mockllm" --listen 127.0.0.1:0 --no-log --threads 1
  MOCK_PID=$LAST_PID
  wait_for "$TMP/mockllm.out" "listening on"
  MOCK_ADDR=$(sed -n 's/^mockllm listening on //p' "$TMP/mockllm.out")
}

start_sseup() {
  # --close: proxies keep no idle connections to it after a stream test, so
  # they have every fd for the next one.
  start sseup "$LOAD_CPU" "$TMP/sseload" upstream --listen 127.0.0.1:0 \
    --events "${BENCH_STREAM_EVENTS:-15}" --interval-ms 1000 --close
  SSEUP_PID=$LAST_PID
  wait_for "$TMP/sseup.out" "listening on"
  SSEUP_ADDR=$(sed -n 's/^sseload upstream listening on //p' "$TMP/sseup.out")
}

# fake-tailscaled answers WhoIs for 127.0.0.1 (wrk cannot bind another source
# address) with the fixture node bob-thinkpad / bob@example.com, group:eng.
start_tailscaled() {
  cp "$ROOT/tests/fixtures/whois/bob.json" "$TMP/bob.json"
  printf '{"127.0.0.1": "bob.json"}\n' >"$TMP/whois-table.json"
  start tailscaled "$LOAD_CPU" "$BUILD/fake-tailscaled" --socket "$TMP/tailscaled.sock" --table "$TMP/whois-table.json"
  FTS_PID=$LAST_PID
  wait_for "$TMP/tailscaled.out" "listening on"
}

# keyless with everything a deployment runs: WhoIs identity (loopback identity
# off, so every caller must be known to tailscaled), grants, usage and cost
# accounting, one SQLite record per request (in_progress + final), access log.
# The price table is the one of the build's own tree, which an older build
# (bench/ab.sh) can read.
start_keyless() {
  cat >"$TMP/keyless.hujson" <<EOF
{
  "listen": {"addresses": ["127.0.0.1:0"], "workers": ${BENCH_KEYLESS_WORKERS:-1}},
  "log": {"level": "info", "access": true},
  "identity": {"tailscale": {"socket": "$TMP/tailscaled.sock"}, "loopback": false},${BENCH_KEYLESS_EXTRA:-}
  "grants": [
    {"src": ["group:eng"],
     "app": {"tailscale.com/cap/aperture": [{"role": "user"}, {"models": ["openai/**", "sse/**"]}${BENCH_KEYLESS_CAPS:+, $BENCH_KEYLESS_CAPS}]}},
  ],
  "store": {"driver": "sqlite", "path": "$TMP/keyless.db"${BENCH_STORE_EXTRA:-}},
  "pricing": {"file": "$(cd "$BUILD/.." && pwd)/data/prices.json"},
  "providers": {
    "openai": {"baseurl": "http://$MOCK_ADDR", "apikey": "sk-bench-not-a-real-key",
               "models": ["gpt-4o"], "compatibility": {"openai_chat": true}},
    "sse": {"baseurl": "http://${SSEUP_ADDR:-127.0.0.1:9}", "apikey": "sk-bench-not-a-real-key",
            "models": ["sse-gpt"], "compatibility": {"openai_chat": true}},
  },
}
EOF
  "$BUILD/keyless" check --config "$TMP/keyless.hujson" >"$TMP/keyless-check.txt" 2>&1 ||
    die "keyless check failed: $(cat "$TMP/keyless-check.txt")"
  # keyless's log goes to a file, as journald would take it.
  start keyless "$PROXY_CPU" "$BUILD/keyless" serve --config "$TMP/keyless.hujson"
  KL_PID=$LAST_PID
  wait_for "$TMP/keyless.out" "listening on"
  KL_ADDR=$(sed -n 's|^keyless listening on http://||p' "$TMP/keyless.out" | head -1)
}

# nginx as a plain reverse proxy: one worker, upstream keepalive, no response
# buffering (needed for SSE), the provider key set like keyless sets it, the
# body kept in memory (as keyless does), no access log. Runs as the current
# user with every path inside $TMP; loopback only.
start_nginx() {
  command -v nginx >/dev/null || die "nginx is not installed (scripts/deps.sh bench)"
  local port port2 user_line="" try i
  [ "$(id -u)" = 0 ] && user_line="user root;"
  mkdir -p "$TMP/nginx"
  for try in 1 2 3 4 5; do
    port=$(free_port)
    port2=$(free_port)
    cat >"$TMP/nginx/nginx.conf" <<EOF
$user_line
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
daemon off;
events { worker_connections $((NOFILE * 2)); multi_accept on; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  client_max_body_size 32m;
  client_body_buffer_size 2m;
  keepalive_requests 1000000;
  keepalive_timeout 600s;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Authorization "Bearer sk-bench-not-a-real-key";
  proxy_buffering off;
  proxy_read_timeout 600s;
  upstream mock { server $MOCK_ADDR; keepalive 64; keepalive_requests 1000000; }
  upstream sse { server ${SSEUP_ADDR:-127.0.0.1:9}; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$port backlog=4096; location / { proxy_pass http://mock; } }
  server { listen 127.0.0.1:$port2 backlog=4096; location / { proxy_pass http://sse; } }
}
EOF
    start nginx "$PROXY_CPU" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"
    NGINX_PID=$LAST_PID
    i=0
    while [ $i -lt 40 ] && kill -0 "$NGINX_PID" 2>/dev/null; do
      # Both servers are bound together: nginx exits if either port is taken.
      if curl -s -o /dev/null "http://127.0.0.1:$port/v1/models" 2>/dev/null; then
        NGINX_ADDR=127.0.0.1:$port
        NGINX_SSE_ADDR=127.0.0.1:$port2
        return 0
      fi
      sleep 0.05
      i=$((i + 1))
    done
    log "nginx did not start on ports $port/$port2 (try $try): $(tail -2 "$TMP/nginx/error.log" 2>/dev/null)"
    kill "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
  done
  die "nginx did not start"
}

# The floor: bench/relay copies bytes between each client connection and
# one upstream connection of its own, and does nothing else. Two of them, like
# nginx's two servers: RELAY_ADDR to mockllm, RELAY_SSE_ADDR to sseload's
# upstream (when started). RELAY_PIDS has both.
start_relay() {
  start relay "$PROXY_CPU" "$TMP/relay" --listen 127.0.0.1:0 --to "$MOCK_ADDR"
  RELAY_PIDS=$LAST_PID
  wait_for "$TMP/relay.out" "listening on"
  RELAY_ADDR=$(sed -n 's/^relay listening on //p' "$TMP/relay.out")
  RELAY_SSE_ADDR=""
  if [ -n "${SSEUP_ADDR:-}" ]; then
    start relay-sse "$PROXY_CPU" "$TMP/relay" --listen 127.0.0.1:0 --to "$SSEUP_ADDR"
    RELAY_PIDS="$RELAY_PIDS $LAST_PID"
    wait_for "$TMP/relay-sse.out" "listening on"
    RELAY_SSE_ADDR=$(sed -n 's/^relay listening on //p' "$TMP/relay-sse.out")
  fi
}

# All pids of a process: nginx's master and workers.
proc_pids() {
  local p=$1
  echo "$p"
  if [ -r "/proc/$p/task/$p/children" ]; then
    cat "/proc/$p/task/$p/children"
  fi
}

# cpu_ns PID...: CPU time (user+sys) of the processes and their threads, ns.
cpu_ns() {
  local total=0 p t v
  for p in "$@"; do
    for t in /proc/"$p"/task/*/schedstat; do
      [ -r "$t" ] || continue
      read -r v _ <"$t" 2>/dev/null || continue
      total=$((total + v))
    done
  done
  echo "$total"
}

# busy_ns: CPU time of the whole machine that was not idle (incl. steal), ns.
busy_ns() {
  local hz
  hz=$(getconf CLK_TCK)
  awk -v hz="$hz" '/^cpu /{b=$2+$3+$4+$7+$8+$9; printf "%.0f\n", b*1e9/hz; exit}' /proc/stat
}
steal_ns() {
  local hz
  hz=$(getconf CLK_TCK)
  awk -v hz="$hz" '/^cpu /{printf "%.0f\n", $9*1e9/hz; exit}' /proc/stat
}
now_ns() { date +%s%N; }

rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds_of() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

# rss_sampler PID FILE: VmRSS every 0.2 s into FILE until stop_sampler (sets
# SAMPLER_PID). Bash builtins only (read, kill -0, a timed read on a FIFO as
# the pause), on the load core: forking awk and sleep five times a second,
# often on the proxy's core, added 0.2-0.4 ms to keyless's p99 at one
# connection (the only target sampled).
rss_sampler() {
  local pid=$1 file=$2
  [ -p "$TMP/pause.fifo" ] || mkfifo "$TMP/pause.fifo"
  (
    exec 9<>"$TMP/pause.fifo"
    while kill -0 "$pid" 2>/dev/null; do
      while read -r k v _; do
        if [ "$k" = VmRSS: ]; then echo "$v"; break; fi
      done <"/proc/$pid/status"
      read -r -t 0.2 -u 9 _ || true
    done
  ) >"$file" &
  SAMPLER_PID=$!
  taskset -p -c "$LOAD_CPU" "$SAMPLER_PID" >/dev/null
  BENCH_PIDS+=("$SAMPLER_PID")
}
stop_sampler() {
  kill "$SAMPLER_PID" 2>/dev/null || true
  wait "$SAMPLER_PID" 2>/dev/null || true
}
max_of() { sort -n "$1" | tail -1; }

# foreign_pct MINE_PIDS... : over one second, the CPU used by processes that
# are not ours, in % of one core (someone compiling or testing on the box).
foreign_pct() {
  local b0 m0 b1 m1 t0 t1
  b0=$(busy_ns); m0=$(cpu_ns "$@"); t0=$(now_ns)
  sleep 1
  b1=$(busy_ns); m1=$(cpu_ns "$@"); t1=$(now_ns)
  awk -v b=$((b1 - b0)) -v m=$((m1 - m0)) -v t=$((t1 - t0)) 'BEGIN{f=(b-m)/t*100; if (f<0) f=0; printf "%.0f\n", f}'
}

# wait_quiet PIDS...: wait until other users leave the CPUs alone (at most
# BENCH_QUIET_WAIT seconds, then go on and flag the result as noisy).
QUIET_NOTE=""
wait_quiet() {
  local max=${BENCH_MAX_FOREIGN:-15} waited=0 limit=${BENCH_QUIET_WAIT:-180} f
  QUIET_NOTE=""
  while :; do
    f=$(foreign_pct "$@")
    if [ "$f" -le "$max" ]; then
      [ $waited -gt 0 ] && QUIET_NOTE="waited ${waited}s for a quiet machine"
      return 0
    fi
    if [ $waited -ge "$limit" ]; then
      QUIET_NOTE="machine busy (${f}% of a core used by others; load $(cut -d' ' -f1-3 /proc/loadavg))"
      log "warning: $QUIET_NOTE; measuring anyway"
      return 0
    fi
    [ $waited -eq 0 ] && log "others use ${f}% of a core (load $(cut -d' ' -f1-3 /proc/loadavg)); waiting"
    sleep 4
    waited=$((waited + 5))
  done
}

# children_ns VAR: CPU time of this shell's finished children (wrk), ns, into
# VAR. `times` must run in this shell, not in a $(...) subshell.
children_ns() {
  times >"$TMP/times.txt"
  printf -v "$1" '%s' "$(awk 'NR==2{
    split($1,u,/[ms]/); split($2,s,/[ms]/);
    printf "%.0f\n", ((u[1]*60+u[2]) + (s[1]*60+s[2]))*1e9 }' "$TMP/times.txt")"
}

# json_kv k v k v ...: one JSON object (numbers stay numbers).
json_kv() {
  local out="{" sep="" k v
  while [ $# -ge 2 ]; do
    k=$1 v=$2
    shift 2
    if [[ "$v" =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then
      out="$out$sep\"$k\":$v"
    else
      v=${v//\\/\\\\}
      v=${v//\"/\\\"}
      out="$out$sep\"$k\":\"$v\""
    fi
    sep=","
  done
  echo "$out}"
}
