// Renders one bench/run.sh run (results.jsonl + wrk outputs in argv[2]) as the
// Markdown section that run.sh prints and appends to BENCHMARKS.md.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
const rows = readFileSync(join(dir, 'results.jsonl'), 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
const meta = rows.find((r) => r.kind === 'meta') ?? {};
const rss = rows.find((r) => r.kind === 'rss') ?? {};
const records = rows.find((r) => r.kind === 'records') ?? {};

// ---- wrk output ----
function us(v) {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v);
  if (!m) return NaN;
  return Number(m[1]) * { us: 1, ms: 1e3, s: 1e6, m: 60e6 }[m[2]];
}
function parseWrk(file) {
  const t = readFileSync(join(dir, file), 'utf8');
  const pick = (re) => (re.exec(t) || [])[1];
  const lat = {};
  for (const m of t.matchAll(/^\s+(50|75|90|99)%\s+(\S+)/gm)) lat[m[1]] = us(m[2]);
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(t);
  return {
    rps: Number(pick(/Requests\/sec:\s+([\d.]+)/)),
    requests: Number(pick(/(\d+) requests in/)),
    p50: lat['50'], p90: lat['90'], p99: lat['99'],
    non2xx: Number(pick(/Non-2xx or 3xx responses: (\d+)/) ?? 0),
    errors: se ? se.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
  };
}

// Scenarios 1 and 2 run in rounds (every target in turn, BENCH_ROUNDS times):
// a table cell is the median over the rounds, and a ratio or difference
// between targets is taken within each round first, then its median (the
// machine's speed drifts between rounds more than between the targets of one).
const wrk = rows.filter((r) => r.kind === 'wrk').map((r) => ({ ...r, ...parseWrk(r.wrk) }));
const median = (v) => {
  const a = v.filter(Number.isFinite).sort((x, y) => x - y);
  return a.length ? (a.length % 2 ? a[(a.length - 1) / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2) : NaN;
};
const runsOf = (sc, tg) => wrk.filter((r) => String(r.scenario) === sc && r.target === tg);
const roundsOf = (sc) => [...new Set(wrk.filter((r) => String(r.scenario) === sc).map((r) => String(r.round ?? 1)))];
// get: one target's medians over its rounds (a row shaped like one run).
function get(sc, tg) {
  const v = runsOf(sc, tg);
  if (!v.length) return undefined;
  const m = (f) => median(v.map(f));
  return {
    ...v[0], rounds: v.length, rps: m((r) => r.rps), p50: m((r) => r.p50), p99: m((r) => r.p99),
    cpuPerReq: m((r) => (r.requests ? r.target_cpu_ns / r.requests / 1000 : NaN)),
    rss_peak_kb: Math.max(0, ...v.map((r) => r.rss_peak_kb || 0)),
    busy: m((r) => r.target_cpu_ns / r.wall_ns), rpsMin: Math.min(...v.map((r) => r.rps)), rpsMax: Math.max(...v.map((r) => r.rps)),
  };
}
// within: the median over the rounds of f(a's run, b's run) in the same round.
function within(sc, a, b, f) {
  const vals = roundsOf(sc).map((rd) => {
    const x = runsOf(sc, a).find((r) => String(r.round ?? 1) === rd), y = runsOf(sc, b).find((r) => String(r.round ?? 1) === rd);
    return x && y ? f(x, y) : NaN;
  });
  return median(vals);
}
const ratio = (sc, a, b) => within(sc, a, b, (x, y) => x.rps / y.rps);
const diff = (sc, a, b, k) => within(sc, a, b, (x, y) => x[k] - y[k]);
const streams = rows.filter((r) => r.kind === 'streams');
const sget = (label) => streams.find((r) => r.label === label);

const f0 = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–');
const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : '–');
const lat = (x) => (!Number.isFinite(x) ? '–' : x >= 10000 ? `${(x / 1000).toFixed(1)} ms` : x >= 1000 ? `${(x / 1000).toFixed(2)} ms` : `${Math.round(x)} µs`);
const signed = (x) => (!Number.isFinite(x) ? '–' : (x >= 0 ? '+' : '−') + lat(Math.abs(x)));
const pct = (x) => (Number.isFinite(x) ? `${Math.round(x * 100)} %` : '–');
const mb = (kb) => (kb ? `${(kb / 1024).toFixed(1)} MB` : '–');

const out = [];
const p = (s = '') => out.push(s);

p(`### ${meta.date} — commit ${meta.commit}`);
p();
p(`${meta.cpu}, ${meta.cores} cores, kernel ${meta.kernel}; nginx ${meta.nginx}, wrk ${meta.wrk}. ` +
  `Proxy under test alone on cpu ${meta.proxy_cpu}; wrk, the upstream (mockllm / sseload) and fake-tailscaled on cpu ${meta.load_cpu}. ` +
  `${meta.seconds} s per measurement after ${meta.warmup} s of warm-up; \`ulimit -n\` ${meta.nofile}. Binaries: \`${meta.build}\`.`);
p();

const noisy = wrk.filter((r) => r.foreign_pct > 15 || r.note).map((r) => `${r.scenario}/${r.target}: others used ${r.foreign_pct} % of a core${r.note ? ` (${r.note})` : ''}`);
for (const s of streams) if (s.note) noisy.push(`streams ${s.label}: ${s.note}`);
const bad = wrk.filter((r) => r.non2xx || r.errors).map((r) => `${r.scenario}/${r.target}: ${r.non2xx} non-2xx, ${r.errors} socket errors`);

p('| scenario | target | req/s | p50 | p99 | proxy CPU / req | proxy core busy | keyless ÷ nginx | keyless ÷ relay | keyless ÷ direct |');
p('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
const names = {
  1: '1. chat, 1 KB body, 64 conns',
  2: '2. chat, 1 KB body, 1 conn',
  '3a': '3a. SSE, 20 events, 64 conns',
  4: '4. 1 MB body, 1 conn',
  '4c8': '4. 1 MB body, 8 conns',
};
const targets = ['direct', 'relay', 'nginx', 'keyless'];
for (const sc of ['1', '2', '3a', '4', '4c8']) {
  for (const tg of targets) {
    const r = get(sc, tg);
    if (!r) continue;
    const isK = tg === 'keyless';
    const rounds = r.rounds > 1 ? ` (${r.rounds} rounds: ${f0(r.rpsMin)}–${f0(r.rpsMax)})` : '';
    const rat = (b) => (isK && get(sc, b) ? pct(ratio(sc, 'keyless', b)) : '');
    p(`| ${tg === 'direct' ? names[sc] : ''} | ${tg} | ${f0(r.rps)}${rounds} | ${lat(r.p50)} | ${lat(r.p99)} | ` +
      `${tg === 'direct' ? '–' : lat(r.cpuPerReq)} | ${tg === 'direct' ? '–' : pct(r.busy)} | ` +
      `${rat('nginx')} | ${rat('relay')} | ${rat('direct')} |`);
  }
}
p();
p('"proxy CPU / req": CPU time (user + system, all threads) of the proxy process during the measurement ÷ requests completed. ' +
  '"proxy core busy": that CPU time ÷ wall time; near 100 % the proxy is the bottleneck, well below it the load side (wrk + mockllm sharing one core) is. ' +
  '"relay": bench/relay, which only copies bytes between the client\'s connection and an upstream connection of its own: the floor, what one more process in the path costs on this machine. ' +
  'Where a scenario ran in rounds (every target in turn), a cell is the median over the rounds (the req/s range in brackets) and a ratio is the median of the per-round ratios.');
p();

// Added latency: per round, proxy minus direct, then the median.
const added = [];
for (const [sc, what] of [['2', '1 KB body, 1 connection'], ['4', '1 MB body, 1 connection'], ['1', '1 KB body, 64 connections'], ['3a', 'SSE 20 events (whole stream), 64 connections']]) {
  if (!get(sc, 'direct') || !get(sc, 'keyless')) continue;
  const a = (tg, k) => (get(sc, tg) ? signed(diff(sc, tg, 'direct', k)) : '–');
  added.push(`| ${what} | ${a('keyless', 'p50')} | ${a('keyless', 'p99')} | ${a('relay', 'p50')} | ${a('relay', 'p99')} | ` +
    `${a('nginx', 'p50')} | ${a('nginx', 'p99')} | ${get(sc, 'relay') ? signed(diff(sc, 'keyless', 'relay', 'p50')) : '–'} | ` +
    `${get(sc, 'relay') ? signed(diff(sc, 'keyless', 'relay', 'p99')) : '–'} |`);
}
if (added.length) {
  p('Added latency (proxy minus direct; the last two columns: keyless minus the relay, i.e. what keyless adds above the floor):');
  p();
  p('| load | keyless p50 | keyless p99 | relay p50 | relay p99 | nginx p50 | nginx p99 | keyless − relay p50 | keyless − relay p99 |');
  p('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  added.forEach((l) => p(l));
  p();
}

// Long-lived streams.
if (streams.length) {
  const n = streams[0].streams, ev = streams[0].events_per_stream;
  p(`Long-lived streams: ${f0(n)} concurrent streams, one event a second, ${ev} text events each` +
    (n < 10000 ? ` (${f0(n)}, not 10,000: the hard \`ulimit -n\` here is ${meta.nofile} and the proxy needs two sockets per stream plus its own)` : '') + '.');
  p();
  p('| upstream / target | completed | event delay p50 | p99 | p99.9 | steady p50 | steady p99 | head p50 | head p99 | proxy CPU / event | proxy RSS peak | RSS 5 s after |');
  p('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const s of streams) {
    const c = s.client || {};
    if (c.steady && !c.steady.n) c.steady = undefined;
    const steadyEvents = s.streams * (s.steady_wall_ns / 1e9);
    const cpuEv = s.target !== 'direct' && s.steady_wall_ns ? s.steady_cpu_ns / steadyEvents / 1000 : NaN;
    p(`| ${s.label.replace('-', ' / ')} | ${f0(c.completed)} / ${f0(s.streams)} | ${lat(c.event?.p50_us)} | ${lat(c.event?.p99_us)} | ` +
      `${lat(c.event?.p999_us)} | ${lat(c.steady?.p50_us)} | ${lat(c.steady?.p99_us)} | ${lat(c.head?.p50_us)} | ${lat(c.head?.p99_us)} | ${Number.isFinite(cpuEv) ? lat(cpuEv) : '–'} | ` +
      `${s.target === 'keyless' ? mb(s.rss_peak_kb) : '–'} | ${s.target === 'keyless' ? mb(s.rss_after_kb) : '–'} |`);
  }
  p();
  p('"mock": mockllm with `delay_events_ms=1000`; the delay is arrival − request sent − k s for event k, so it includes the way in once and mockllm\'s millisecond timer slack. ' +
    '"stamp": bench/sseload\'s upstream writes its send time (CLOCK_MONOTONIC) into each event; the delay is arrival − send time, exact to the microsecond. ' +
    '"steady": only events that arrived while every stream was open and none was starting or ending. ' +
    '"head": request written → response head read (per-stream setup). CPU per event is measured in the steady window.');
  p();
  const sd = sget('stamp-direct'), sk = sget('stamp-keyless'), sn = sget('stamp-nginx'), sr = sget('stamp-relay');
  const addEv = (x, k, base = sd) => (x.client[k] && base.client[k]
    ? `${signed(x.client[k].p50_us - base.client[k].p50_us)} / ${signed(x.client[k].p99_us - base.client[k].p99_us)}` : '–');
  if (sd && sk) {
    const others = (k) => `${sr ? `, relay ${addEv(sr, k)}` : ''}${sn ? `, nginx ${addEv(sn, k)}` : ''}`;
    p(`Added per event (stamp, p50 / p99): all events: keyless ${addEv(sk, 'event')}${others('event')}; ` +
      `steady window: keyless ${addEv(sk, 'steady')}${others('steady')}` +
      `${sr ? `; keyless minus the relay (steady): ${addEv(sk, 'steady', sr)}` : ''}.`);
    p();
  }
}

// Memory.
const k1 = get('1', 'keyless');
const mk = sget('mock-keyless') || sget('stamp-keyless');
p(`keyless RSS: idle ${mb(rss.idle_kb)}; under scenario 1 (peak) ${mb(k1?.rss_peak_kb)}; 3 s after it ${mb(rss.after_1_kb)}; ` +
  `after all wrk scenarios ${mb(rss.after_wrk_kb)}; with ${f0(mk?.streams)} streams (peak) ${mb(Math.max(...streams.filter((s) => s.target === 'keyless').map((s) => s.rss_peak_kb), 0))}; ` +
  `at the end ${mb(rss.final_kb)}` +
  (rss.pool_empty_kb ? `; 62 s later, once idle upstream connections have timed out, ${mb(rss.pool_empty_kb)}` : '') +
  ` (VmHWM ${mb(rss.hwm_kb)}).`);
p();
p(`Records: ${f0(records.total)} rows in SQLite (state|status|count: ${records.by_state?.trim()}).`);
p();

// Goals.
const g = [];
const goal = (name, ok, detail) => g.push(`| ${name} | ${ok === null ? 'not measured' : ok ? '**met**' : '**missed**'} | ${detail} |`);
{
  const k = get('1', 'keyless'), n = get('1', 'nginx');
  const r = k && n ? ratio('1', 'keyless', 'nginx') : NaN;
  goal('req/s ≥ 90 % of nginx (scenario 1, full governed path)', k && n ? r >= 0.9 : null,
    k && n ? `${(r * 100).toFixed(1)} %${k.rounds > 1 ? ` (median of ${k.rounds} rounds' ratios)` : ''}; medians ${f0(k.rps)} vs ${f0(n.rps)} req/s` : '');
}
{
  const k = get('2', 'keyless'), d = get('2', 'direct'), r = get('2', 'relay');
  goal('p99 added latency ≤ 50 µs at 1 connection', k && d ? diff('2', 'keyless', 'direct', 'p99') <= 50 : null,
    k && d ? `p99 ${signed(diff('2', 'keyless', 'direct', 'p99'))} (p50 ${signed(diff('2', 'keyless', 'direct', 'p50'))})` +
      (r ? `; the relay alone: p99 ${signed(diff('2', 'relay', 'direct', 'p99'))} (p50 ${signed(diff('2', 'relay', 'direct', 'p50'))})` : '') : '');
  if (k && r)
    goal('… above the floor: keyless − relay, p99 ≤ 50 µs at 1 connection', diff('2', 'keyless', 'relay', 'p99') <= 50,
      `p99 ${signed(diff('2', 'keyless', 'relay', 'p99'))} (p50 ${signed(diff('2', 'keyless', 'relay', 'p50'))})`);
}
{
  // The first burst of streams in this keyless process; later bursts start
  // from the memory the first one left behind (see the RSS goal).
  const ks = streams.filter((s) => s.target === 'keyless');
  const first = ks[0]?.rss_peak_kb ?? 0;
  const peak = Math.max(0, ...ks.map((s) => s.rss_peak_kb));
  const n = ks[0]?.streams;
  const base = rss.after_wrk_kb || rss.idle_kb || 0;
  const per = ks.length ? (first - base) / n : NaN;
  const est = first + Math.max(0, 10000 - n) * per;
  const why = n >= Math.floor((meta.nofile - 400) / 2) ? 'fd limit' : 'BENCH_STREAMS';
  goal(`10k concurrent streams in ≤ 300 MB RSS`, ks.length && n >= 9000 ? est <= 300 * 1024 : null,
    ks.length ? `first burst ${mb(first)} with ${f0(n)} streams (${per.toFixed(1)} KB per stream` +
      `${n < 10000 ? `; ${f0(n)}, not 10,000: ${why}; ≈ ${mb(est)} at 10,000` : ''})` +
      `${ks.length > 1 ? `; next burst in the same process ${mb(peak)}` : ''}` : '');
  const sd = sget('stamp-direct'), sk = sget('stamp-keyless');
  const st = (x) => (x?.client?.steady?.n ? x.client.steady : null);
  goal('≤ 1 µs added per event', sd && sk && st(sd) && st(sk) ? st(sk).p50_us - st(sd).p50_us <= 1 : null,
    sd && sk && st(sd) && st(sk) ? `steady p50 ${signed(sk.client.steady.p50_us - sd.client.steady.p50_us)}, p99 ${signed(sk.client.steady.p99_us - sd.client.steady.p99_us)}; ` +
      `all events p50 ${signed(sk.client.event.p50_us - sd.client.event.p50_us)}, p99 ${signed(sk.client.event.p99_us - sd.client.event.p99_us)}` +
      (st(sget('stamp-nginx')) ? ` (nginx: steady p50 ${signed(st(sget('stamp-nginx')).p50_us - sd.client.steady.p50_us)})` : '') +
      (st(sget('stamp-relay')) ? ` (the relay alone: steady p50 ${signed(st(sget('stamp-relay')).p50_us - sd.client.steady.p50_us)})` : '') : '');
  const sr = sget('stamp-relay');
  if (sr && sk && st(sr) && st(sk))
    goal('… above the floor: keyless − relay, ≤ 1 µs per event (steady p50)', st(sk).p50_us - st(sr).p50_us <= 1,
      `steady p50 ${signed(st(sk).p50_us - st(sr).p50_us)}, p99 ${signed(st(sk).p99_us - st(sr).p99_us)}`);
}
{
  const k = get('4', 'keyless'), d = get('4', 'direct');
  goal('1 MB body adds ≤ 2 ms', k && d ? diff('4', 'keyless', 'direct', 'p50') <= 2000 : null,
    k && d ? `p50 ${signed(diff('4', 'keyless', 'direct', 'p50'))}, p99 ${signed(diff('4', 'keyless', 'direct', 'p99'))}` : '');
}
{
  const settled = rss.pool_empty_kb || rss.final_kb;
  const near = rss.idle_kb && settled ? settled <= rss.idle_kb + Math.max(10 * 1024, rss.idle_kb * 0.25) : null;
  goal('RSS returns to near idle after load (≤ idle + max(10 MB, 25 %), once idle upstream connections time out)', near,
    `idle ${mb(rss.idle_kb)}, after load ${mb(rss.after_wrk_kb)}, 5 s after the streams ${mb(rss.final_kb)}` +
    (rss.pool_empty_kb ? `, 62 s later ${mb(rss.pool_empty_kb)}` : ''));
}
p('| goal | status | measured |');
p('|---|---|---|');
g.forEach((l) => p(l));
p();
if (noisy.length) p(`Noise: ${noisy.join('; ')}.`), p();
else p(`Noise: no other process used more than 15 % of a core during any measurement (max ${Math.max(...wrk.map((r) => r.foreign_pct))} %).`), p();
if (bad.length) p(`Errors: ${bad.join('; ')}.`), p();
p(`Raw outputs: \`bench/results/${dir.split('/').pop()}/\` (not committed).`);
console.log(out.join('\n'));
