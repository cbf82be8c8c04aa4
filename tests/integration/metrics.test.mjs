// GET /metrics: Prometheus's text format, summed over every worker; the
// counters agree with the records; only admins and scrapers granted
// {"metrics": true} may read it, and no login or bucket name appears in it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { startMock, startGateway, KEYS, assertNoKeys, from } from './lib/harness.mjs';

const ADMIN = '127.0.0.71', USER = '127.0.0.72', SCRAPER = '127.0.0.73';
const identity = {
  cidr: [
    { range: '127.0.0.71/32', login: 'root@example.com' },
    { range: '127.0.0.72/32', login: 'uma@example.com' },
    { range: '127.0.0.73/32', tags: ['tag:prometheus'] },
  ],
};
const grants = [
  { src: ['root@example.com'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } },
  { src: ['uma@example.com'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' }, { quotas: [{ bucket: 'u:<user>' }] }] } },
  { src: ['tag:prometheus'], app: { 'tailscale.com/cap/aperture': [{ metrics: true }] } },
];

// The text format, read strictly: every sample belongs to a family whose
// TYPE came first; returns {family: {type, samples: [{name, labels, value}]}}.
function parse(text) {
  const families = {};
  let current = null;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m;
    if ((m = /^# HELP (\w+) .+$/.exec(line))) continue;
    if ((m = /^# TYPE (\w+) (counter|gauge|histogram)$/.exec(line))) {
      assert.ok(!families[m[1]], `family ${m[1]} declared twice`);
      current = families[m[1]] = { type: m[2], samples: [] };
      continue;
    }
    m = /^(\w+)(?:\{(.*)\})? (\d+(?:\.\d+)?)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    assert.ok(current && m[1].startsWith(Object.keys(families).at(-1)), `sample ${m[1]} outside its family`);
    const labels = {};
    const re = /(\w+)="((?:[^"\\]|\\.)*)"(,|$)/g;
    let l, seen = 0;
    while ((l = re.exec(m[2] || ''))) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      seen += l[0].length;
    }
    assert.equal(seen, (m[2] || '').length, `bad labels: ${line}`);
    current.samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return families;
}

const sum = (fam, pred = () => true) => (fam ? fam.samples.filter((s) => pred(s.labels, s.name)).reduce((a, s) => a + s.value, 0) : 0);

async function scrape(gw, ip = ADMIN) {
  const r = await fetch(`${gw.url}/metrics`, { dispatcher: from(ip) });
  return { status: r.status, type: r.headers.get('content-type'), text: await r.text() };
}

function post(gw, ip, body) {
  return fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST', dispatcher: from(ip), headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
}

describe('/metrics', () => {
  it('counts what the records hold, over every worker, in the text format', async () => {
    const mock = await startMock();
    const weird = 'odd"provider\\name';
    const gw = await startGateway({
      identity, grants,
      quotas: { 'u:<user>': { capacity: '$5' } },
      providers: {
        primary: { baseurl: mock.url, apikey: KEYS.openai, models: ['gpt-4o'], preference: 5,
          add_headers: ['x-mock: status=503'] },
        [weird]: { baseurl: mock.url, apikey: KEYS.anthropic, models: ['gpt-4o', 'gpt-4o-mini'] },
      },
    }, { workers: 2 });
    try {
      // spread over connections from several addresses, so both workers count some
      const asks = [];
      for (let i = 0; i < 6; i++) asks.push(post(gw, i % 2 ? ADMIN : USER, { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }));
      asks.push(post(gw, ADMIN, { model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'hi' }] }));
      asks.push(post(gw, USER, { model: 'no-such-model', messages: [] }));
      const statuses = await Promise.all(asks.map(async (p) => { const r = await p; await r.text(); return r.status; }));
      assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200, 200, 404]);

      // the records, once written (the admin's own /api reads are recorded too)
      let usage;
      for (let i = 0; i < 100; i++) {
        usage = (await (await fetch(`${gw.url}/api/usage?group_by=provider`, { dispatcher: from(ADMIN) })).json()).rows;
        if (usage.reduce((a, r) => a + r.requests, 0) >= 8) break;
        await sleep(50);
      }
      const s = await scrape(gw);
      assert.equal(s.status, 200);
      assert.equal(s.type, 'text/plain; version=0.0.4; charset=utf-8');
      const f = parse(s.text);
      assert.equal(f.keyless_requests_total.type, 'counter');
      const chat = (l) => l.endpoint === 'openai.chat';
      assert.equal(sum(f.keyless_requests_total, (l) => chat(l) && l.status === '200'), 7);
      assert.equal(sum(f.keyless_requests_total, (l) => chat(l) && l.status === '200' && l.provider === weird && l.model === 'gpt-4o'), 6);
      assert.equal(sum(f.keyless_requests_total, (l) => chat(l) && l.status === '404' && l.error_class === 'not_found' &&
        l.provider === '' && l.model === ''), 1, 'a model nobody serves is not a label');
      assert.equal(sum(f.keyless_failovers_total, (l) => l.provider === 'primary'), 6);

      const row = usage.find((r) => r.provider === weird);
      assert.equal(sum(f.keyless_tokens_total, (l) => l.provider === weird && l.kind === 'input'), row.input_tokens);
      assert.equal(sum(f.keyless_tokens_total, (l) => l.provider === weird && l.kind === 'output'), row.output_tokens);
      assert.equal(sum(f.keyless_spend_nanodollars_total, (l) => l.provider === weird), row.cost_nanodollars);
      assert.ok(row.cost_nanodollars > 0);

      const h = f.keyless_request_duration_seconds;
      assert.equal(h.type, 'histogram');
      const buckets = h.samples.filter((x) => x.name.endsWith('_bucket') && x.labels.endpoint === 'openai.chat');
      for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value, 'cumulative');
      assert.equal(buckets.at(-1).labels.le, '+Inf');
      const count = h.samples.find((x) => x.name.endsWith('_count') && x.labels.endpoint === 'openai.chat').value;
      assert.equal(buckets.at(-1).value, count);
      assert.equal(count, 8);

      // time to first byte, by the provider that answered: the failed one's answers never reached a caller
      const t = f.keyless_time_to_first_byte_seconds;
      assert.equal(t.type, 'histogram');
      const tb = t.samples.filter((x) => x.name.endsWith('_bucket') && x.labels.provider === weird);
      for (let i = 1; i < tb.length; i++) assert.ok(tb[i].value >= tb[i - 1].value, 'cumulative');
      assert.equal(tb.at(-1).value, 7);
      assert.equal(t.samples.find((x) => x.name.endsWith('_count') && x.labels.provider === weird).value, 7);
      assert.ok(t.samples.find((x) => x.name.endsWith('_sum') && x.labels.provider === weird).value > 0);
      assert.ok(!t.samples.some((x) => x.labels.provider === 'primary'));

      assert.ok(f.keyless_records_written_total.samples[0].value >= 8);
      assert.equal(f.keyless_record_waits_total.type, 'counter');
      assert.equal(f.keyless_record_waits_total.samples[0].value, 0, 'no request waited for the writer here');
      assert.equal(f.keyless_inflight_requests.type, 'gauge');
      assert.ok(f.keyless_inflight_requests.samples[0].value >= 1, 'the scrape itself is in flight');
      assert.ok(!s.text.includes('example.com') && !s.text.includes('u:'), 'no login or bucket name');
      assertNoKeys(assert, s.text, '/metrics');
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });

  it('admins and {"metrics": true} scrapers only; a scraper may do nothing else', async () => {
    const gw = await startGateway({ identity, grants, quotas: { 'u:<user>': { capacity: '$5' } },
      providers: { p: { baseurl: 'http://127.0.0.1:9', apikey: KEYS.openai, models: ['gpt-4o'] } } });
    try {
      assert.equal((await scrape(gw, ADMIN)).status, 200);
      assert.equal((await scrape(gw, SCRAPER)).status, 200);
      const denied = await scrape(gw, USER);
      assert.equal(denied.status, 403);
      assert.match(JSON.parse(denied.text).error.message, /admin role or the capability \{"metrics": true\}/);
      const r = await post(gw, SCRAPER, { model: 'gpt-4o', messages: [] });
      assert.equal(r.status, 403, 'no role: no models');
      await r.text();
      const records = await fetch(`${gw.url}/api/requests`, { dispatcher: from(SCRAPER) });
      assert.equal(records.status, 403, 'no role: no records');
      await records.text();
      const post405 = await fetch(`${gw.url}/metrics`, { method: 'POST', dispatcher: from(ADMIN) });
      assert.equal(post405.status, 405);
      await post405.text();
    } finally {
      await gw.stop();
    }
  });

  it('a reload that kept the running configuration shows, until one succeeds', async () => {
    const gw = await startGateway({ identity, grants, quotas: { 'u:<user>': { capacity: '$5' } },
      providers: { p: { baseurl: 'http://127.0.0.1:9', apikey: KEYS.openai, models: ['gpt-4o'] } } });
    const value = async (name) => sum(parse((await scrape(gw)).text)[name]);
    try {
      assert.equal(await value('keyless_config_last_reload_successful'), 1, 'none came yet');
      const started = await value('keyless_config_last_reload_success_timestamp_seconds');
      assert.ok(Math.abs(started - Date.now() / 1000) < 120, `loaded at start-up: ${started}`);
      assert.equal(await value('keyless_config_reload_failures_total'), 0);
      const good = readFileSync(gw.configPath, 'utf8');
      const c = JSON.parse(good);
      writeFileSync(gw.configPath, '{ "providers": ');
      assert.match(await gw.reload(), /has errors/);
      c.listen = { ...(c.listen || {}), workers: 7 }; // only a restart applies it
      writeFileSync(gw.configPath, JSON.stringify(c));
      assert.match(await gw.reload(), /takes a restart/);
      assert.equal(await value('keyless_config_last_reload_successful'), 0);
      assert.equal(await value('keyless_config_reload_failures_total'), 2);
      assert.equal(await value('keyless_config_last_reload_success_timestamp_seconds'), started);
      await sleep(1100);
      writeFileSync(gw.configPath, good);
      assert.match(await gw.reload(), /configuration reloaded/);
      assert.equal(await value('keyless_config_last_reload_successful'), 1);
      assert.ok(await value('keyless_config_last_reload_success_timestamp_seconds') > started);
      assert.equal(await value('keyless_config_reload_failures_total'), 2);
    } finally {
      await gw.stop();
    }
  });
});
