// Concurrency stress for a sanitizer build (ThreadSanitizer): many parallel
// requests in every dialect, streamed and not, some carrying an e-mail
// address the guardrails redact (in the prompt and in the answer), while the
// configuration is reloaded again and again (the guardrails' pattern database
// with it) and /metrics and the admin APIs are read. scripts/stress-tsan.sh
// (make stress) runs it in CI.
//   KEYLESS_BUILD=build-tsan TSAN_OPTIONS=log_path=/tmp/t/r node tests/stress-tsan.mjs [seconds]
import { writeFileSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { startMock, startGateway, startTailscaled, startHook, providersFor, from } from './integration/lib/harness.mjs';

const SECONDS = Number(process.argv[2] || 30);
const PG = process.env.KEYLESS_TEST_PG_URL;
const USERS = ['127.0.0.2', '127.0.0.3', '127.0.0.5', '127.0.0.12'];
const ADMIN = '127.0.0.8';

const mock = await startMock();
const ts = await startTailscaled();
const hook = await startHook();
const cap = (extra = []) => ({ 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
  { quotas: [{ bucket: 'u:<user>' }, { bucket: 'pool' }] },
  { send_hooks: [{ name: 'pre', events: ['pre_request'], send: ['user_message'] },
    { name: 'post', events: ['entire_request'], send: ['request_body', 'response_body'] }] }, ...extra] });
const config = (n) => ({
  identity: { tailscale: { socket: ts.socket, cache_ttl: n % 2 ? '1s' : '2s' } },
  grants: [
    { src: ['*'], app: cap() },
    { src: ['carol@example.com'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } },
  ],
  hooks: { pre: { url: hook.url('/pre'), timeout: '2s' }, post: { url: hook.url('/post') } },
  quotas: { 'u:<user>': { capacity: `$${1000 + n}`, rate: '$100/min' }, pool: { capacity: `$${100000 + n}` } },
  store: PG ? { driver: 'postgres', url: PG, instance: `stress-${process.pid}`, captures: 'full' } : { captures: 'full' },
  providers: providersFor(mock.url, n % 3 === 0 ? {} : {
    extra: { baseurl: mock.url.replace('127.0.0.1', 'localhost'), apikey: 'sk-extra-000000000000000000000', models: ['gpt-4o'], preference: n % 5 } }),
  guardrails: { answers: true, pii: { action: 'redact', kinds: ['email'] },
    patterns: [{ name: `word${n % 4}`, regex: `stress${n % 4}x`, action: 'log' }] },
  log: { level: 'info', access: false },
});
const gw = await startGateway(config(0), { workers: Number(process.env.WORKERS || 4) });
console.log('gateway', gw.url);

const stop = Date.now() + SECONDS * 1000;
const stats = {};
const count = (k) => (stats[k] = (stats[k] || 0) + 1);

async function one(ip, i) {
  const stream = i % 2 === 0;
  let url, body, headers = { 'content-type': 'application/json' };
  const text = i % 3 === 0 ? `mail stress${i % 4}x ${i} to ops${i}@example.com [[mock text=reply_to_ann${i}%40example.com]]` : `hi ${i}`;
  switch (i % 5) {
    case 0: case 1:
      url = '/v1/chat/completions';
      body = { model: 'gpt-4o', stream, messages: [{ role: 'user', content: text }] };
      if (stream) body.stream_options = { include_usage: true };
      break;
    case 4:
      url = '/v1/responses';
      body = { model: 'gpt-4o', stream, input: text };
      break;
    case 2:
      url = '/v1/messages';
      body = { model: 'claude-haiku-4-5', max_tokens: 100, stream, messages: [{ role: 'user', content: text }] };
      break;
    case 3:
      url = `/v1beta/models/gemini-2.5-flash:${stream ? 'streamGenerateContent?alt=sse' : 'generateContent'}`;
      body = { contents: [{ role: 'user', parts: [{ text }] }] };
      break;
  }
  if (i % 17 === 0) headers['x-mock'] = 'status=503';
  try {
    const r = await fetch(gw.url + url, { method: 'POST', dispatcher: from(ip), headers, body: JSON.stringify(body) });
    const answer = await r.text();
    count(`req ${r.status}`);
    if (r.status === 200 && text !== `hi ${i}`)
      count(answer.includes(`ann${i}@example.com`) ? 'answer e-mail kept' : 'answer e-mail redacted');
  } catch (e) {
    count(`req error ${e.message}`);
  }
}

async function clients(ip) {
  for (let i = 0; Date.now() < stop; i++) await one(ip, i + USERS.indexOf(ip));
}

async function reloader() {
  for (let n = 1; Date.now() < stop; n++) {
    writeFileSync(gw.configPath, JSON.stringify({ ...config(n), listen: JSON.parse(readFileSync(gw.configPath)).listen }));
    count(`reload ${(await gw.reload()).slice(0, 30)}`);
    await sleep(200);
  }
}

async function reader(path) {
  while (Date.now() < stop) {
    try {
      const r = await fetch(gw.url + path, { dispatcher: from(ADMIN) });
      await r.text();
      count(`${path.split('?')[0]} ${r.status}`);
    } catch (e) {
      count(`${path} error ${e.message}`);
    }
    await sleep(50);
  }
}

async function refiller() {
  while (Date.now() < stop) {
    for (const bucket of ['pool', 'u:alice@example.com', 'u:bob@example.com']) {
      try {
        const r = await fetch(gw.url + '/api/quotas/refill', { method: 'POST', dispatcher: from(ADMIN),
          headers: { 'content-type': 'application/json' }, body: JSON.stringify({ bucket, amount: '$1.00' }) });
        await r.text();
        count(`refill ${r.status}`);
      } catch (e) { count(`refill error ${e.message}`); }
    }
    await sleep(100);
  }
}

const tasks = [];
tasks.push(refiller());
for (const ip of USERS) for (let k = 0; k < 3; k++) tasks.push(clients(ip));
tasks.push(reloader());
for (const p of ['/metrics', '/api/quotas', '/api/usage', '/api/requests?limit=5', '/api/whoami', '/v1/models',
  '/api/export?limit=20', '/api/usage?group_by=model'])
  tasks.push(reader(p));
// the last seconds: SIGTERM while the load still runs
// how the gateway ended (scripts/stress-tsan.sh wants code 0, no signal):
// one that crashed under the load still answered most of it
let exit;
if (process.env.STOP_UNDER_LOAD) {
  await sleep(SECONDS * 1000 - 3000);
  const stopped = gw.stop();
  await Promise.all(tasks);
  exit = await stopped;
  console.log(stats);
} else {
  await Promise.all(tasks);
  console.log(stats);
  exit = await gw.stop();
}
console.log('keyless exited', JSON.stringify(exit));
await ts.stop();
await mock.stop();
await hook.close();
process.exit(0);
