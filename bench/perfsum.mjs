// Summarises `perf script -F tid,ip,sym,dso` output (stdin) of keyless into
// cost categories: each sample goes to the innermost frame that names a part
// of keyless or a libcurl entry point (so malloc inside the usage parser counts
// as usage accounting, and curl's own work under curl_multi_socket_action
// counts as the transfer); samples with no such frame go to a generic bucket
// (socket I/O, epoll, ...) by their innermost generic frame.
//
//   node perfsum.mjs --writer TID [--hz 999] [--requests N] < script.txt
//
// --requests: requests (or events) completed during the profile, to print
// microseconds of keyless CPU per request next to each share.
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const writerTid = opt('--writer', '');
const hz = Number(opt('--hz', '999'));
const requests = Number(opt('--requests', '0'));
const unit = opt('--unit', 'request');
const detail = opt('--detail', '');
const detailLeaf = new Map();

// Innermost match wins among these (order only breaks ties within one frame).
const specific = [
  [/^kl_log$|^kl_access_log|^log_access/, 'access log line (format + write(2) to the log)'],
  [/^kl_session_id$|^fingerprint$/, 'session id (SHA-256 of the first user message)'],
  [/^kl_dialect_request_facts$|^kl_json_/, 'request body: validate JSON, find model/stream/max tokens (jsonscan)'],
  [/^kl_account_|^kl_usage_|^kl_cost$|^kl_prices_|^kl_sse_/, 'usage accounting (response JSON parse, SSE split, cost)'],
  [/^kl_record_|^kl_writer_|^kl_rec_/, 'record: build row, queue to the writer (mutex, futex wake)'],
  [/^kl_identity_|^kl_whois_/, 'identity (WhoIs cache lookup)'],
  [/^kl_authorize_|^kl_grants_/, 'grants'],
  [/^kl_route_/, 'route (provider, URL, upstream headers, body splice)'],
  [/^kl_h1_run$|^send_request$|^connect_next$|^attach$/,
    'upstream request, native HTTP/1.1 (pool take, compose, writev of head + body)'],
  [/^relay_body$|^kl_h1_parse_response$|^kl_h1_body_|^emit$|^complete$/,
    'upstream response, native HTTP/1.1 (read, parse head, body framing, relay)'],
  [/^kl_h1_conn_|^kl_h1_pool_|^kl_h1_resolve/, 'upstream connection pool (native HTTP/1.1)'],
  [/^kl_upstream_run$|^curl_easy_init$|^curl_easy_setopt$|^curl_multi_add_handle$|^curl_slist_append$|^Curl_open$/,
    'upstream setup (kl_upstream_run; libcurl easy_init/setopt for https)'],
  [/^xfer_free$|^curl_easy_cleanup$|^curl_multi_remove_handle$|^curl_slist_free_all$/,
    'libcurl per-request teardown (remove_handle, easy_cleanup)'],
  [/^multi_socket_cb$|^multi_timer_cb$/, 'libcurl socket/timer callbacks (event_new/add/free, epoll_ctl)'],
  [/^on_header$|^deliver_head$|^on_body$/, 'upstream header/body callbacks (filter headers)'],
  [/^kl_respond_|^kl_conn_exchange_done$|^kl_pipeline_response_head$/, 'response to the client (head printf, chunk framing)'],
  [/^kl_http_parse_head$|^kl_dialect_classify$/, 'HTTP head parse + endpoint'],
  [/^kl_exchange_new$|^kl_exchange_free$|^kl_arena_/, 'exchange / arena alloc + free'],
  [/^kl_conn_accept$|^conn_free$|^on_accept$/, 'accept / connection setup'],
  [/^curl_multi_socket_action$|^curl_multi_info_read$|^on_multi_timer$|^curl_multi_perform$/,
    'libcurl transfer (connection reuse, send request, parse response)'],
  // writer thread
  [/^sqlite3_step$/, 'SQLite upsert (sqlite3_step)'],
  [/^sqlite3_exec$/, 'SQLite BEGIN/COMMIT (WAL append)'],
  [/^sqlite3_(bind|reset)/, 'SQLite bind/reset'],
];
const generic = [
  [/^evbuffer_write|^evbuffer_write_atmost$/, 'write(2)/writev(2) to the client socket'],
  [/^evbuffer_read$/, 'read(2) from a socket (client, or upstream outside the native client)'],
  [/^epoll_wait$|^epoll_pwait/, 'epoll_wait'],
  [/^epoll_ctl$|^event_add|^event_del|^evmap_/, 'libevent event add/del (epoll_ctl)'],
  [/^bufferevent_|^evbuffer_/, 'libevent buffers (other)'],
  [/^pthread_cond_(timed)?wait/, 'writer: waiting (cond wait)'],
  [/^malloc$|^free$|^_int_malloc$|^_int_free$|^cfree/, 'malloc/free (unattributed)'],
];

const totals = new Map();
let n = 0, nk = 0;
const byThread = new Map();
const catKernel = new Map();

function account(tid, frames) {
  n++;
  const isWriter = tid === writerTid;
  byThread.set(isWriter ? 'writer' : 'worker', (byThread.get(isWriter ? 'writer' : 'worker') || 0) + 1);
  const kernel = frames.length > 0 && frames[0].dso === '[kernel.kallsyms]';
  if (kernel) nk++;
  let cat = null;
  outer: for (const f of frames) {
    for (const [re, label] of specific) if (re.test(f.sym)) { cat = label; break outer; }
  }
  if (!cat) {
    outer2: for (const f of frames) {
      for (const [re, label] of generic) if (re.test(f.sym)) { cat = label; break outer2; }
    }
  }
  if (!cat) {
    const leaf = frames.find((f) => f.dso !== '[kernel.kallsyms]') || frames[0];
    cat = `other: ${leaf ? leaf.dso.replace(/.*\//, '').replace(/\.so.*/, '') : '?'}`;
  }
  if (isWriter) cat = `[writer thread] ${cat}`;
  if (detail && new RegExp(detail).test(cat)) {
    // The innermost frame that is not malloc/libc plumbing, with its library.
    const f = frames.find((x) => x.dso === '[kernel.kallsyms]' ? /^(__x64_sys_|__sys_|do_sys|ksys_)/.test(x.sym) : true) || frames[0];
    const key = f ? `${f.sym} (${f.dso.replace(/.*\//, '').replace(/\.so.*/, '')})` : '?';
    detailLeaf.set(key, (detailLeaf.get(key) || 0) + 1);
  }
  totals.set(cat, (totals.get(cat) || 0) + 1);
  if (kernel) catKernel.set(cat, (catKernel.get(cat) || 0) + 1);
}

let buf = '';
let tid = null, frames = [];
function line(l) {
  if (l === '') {
    if (tid !== null) account(tid, frames);
    tid = null;
    frames = [];
    return;
  }
  // A sample starts with its thread id alone on a line (perf right-aligns
  // it, so it may start with spaces); frames are an address, symbol, (dso).
  const head = /^\s*(\d+)\s*$/.exec(l);
  if (head) {
    if (tid !== null) account(tid, frames);
    tid = head[1];
    frames = [];
    return;
  }
  const m = /^\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$/.exec(l);
  if (m) frames.push({ sym: m[1].replace(/\+0x[0-9a-f]+$/, '').replace(/ \(inlined\)$/, ''), dso: m[2] });
}
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\n')) >= 0) {
    line(buf.slice(0, i));
    buf = buf.slice(i + 1);
  }
});
process.stdin.on('end', () => {
  if (buf) line(buf);
  line('');
  const usPer = (s) => (requests ? ((s / hz) * 1e6) / requests : NaN);
  console.log(`samples: ${n} (${(n / hz).toFixed(2)} s of keyless CPU at ${hz} Hz); in the kernel: ${((nk / n) * 100).toFixed(1)} %`);
  for (const [k, v] of byThread) console.log(`  ${k} thread: ${((v / n) * 100).toFixed(1)} %`);
  if (requests) console.log(`${unit}s completed in the window: ${requests}; keyless CPU per ${unit}: ${usPer(n).toFixed(1)} µs`);
  console.log('');
  console.log(`| share of keyless CPU | µs per ${unit} | of which kernel | category |`);
  console.log('|---:|---:|---:|---|');
  for (const [k, v] of [...totals].sort((a, b) => b[1] - a[1])) {
    const kern = catKernel.get(k) || 0;
    console.log(`| ${((v / n) * 100).toFixed(1)} % | ${requests ? usPer(v).toFixed(1) : '–'} | ${((kern / v) * 100).toFixed(0)} % | ${k} |`);
  }
  if (detail) {
    console.log('');
    console.log(`innermost frames in /${detail}/ (system calls by name; user-space functions as sampled):`);
    for (const [k, v] of [...detailLeaf].sort((a, b) => b[1] - a[1]).slice(0, 40))
      console.log(`  ${((v / n) * 100).toFixed(2)} %  ${requests ? usPer(v).toFixed(1) + ' µs' : ''}  ${k}`);
  }
});
