// Spend limits and rate limits that never overshoot: reserve before
// forwarding, settle after, extend mid-stream, across gateways too.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { startMock, startGateway, providersFor, assertNoKeys, from, BUILD, rawProvider, finalRecord, clocked, tempDir } from './lib/harness.mjs';

// gpt-4o: $2.50 / $10 per 1M tokens = 2500 / 10000 nanodollars a token.
const IN_ND = 2500n, OUT_ND = 10000n;
const MAX_TOKENS = 100;
const BODY = JSON.stringify({ model: 'gpt-4o', max_tokens: MAX_TOKENS, messages: [{ role: 'user', content: 'hi' }] });
const PROMPT = Math.ceil(Buffer.byteLength(BODY) / 3);           // keyless' prompt estimate (3 bytes a token)
const EST = BigInt(PROMPT) * IN_ND + BigInt(MAX_TOKENS) * OUT_ND;  // one request's reservation
// The simulator charges exactly the reservation, so a bucket of 100 x EST affords exactly 100.
const EXACT = `in=${PROMPT};out=${MAX_TOKENS};cache_read=0;cache_write=0;reasoning=0`;
const usd = (nd) => `$${nd / 1000000000n}.${String(nd % 1000000000n).padStart(9, '0')}`;

const grant = (quotas, extra = []) => [{
  src: ['*'],
  app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }, ...(quotas ? [{ quotas }] : []), ...extra] },
}];

function post(gw, path, body, headers = {}, ip = '127.0.0.1', signal = undefined) {
  return fetch(`${gw.url}${path}`, {
    method: 'POST', dispatcher: from(ip), headers: { 'content-type': 'application/json', ...headers }, body, signal,
  });
}

// Hold an ACCESS EXCLUSIVE lock on a table of the test database (a report
// that takes long, a pool nobody can read) until the function returned is
// called.
async function lockTable(table) {
  const psql = spawn('psql', [process.env.KEYLESS_TEST_PG_URL, '-v', 'ON_ERROR_STOP=1'], { stdio: 'pipe' });
  psql.stdin.write(`BEGIN; LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE; SELECT 'lo' || 'cked';\n`);
  await new Promise((res) => psql.stdout.on('data', (d) => /locked/.test(d) && res()));
  return () => psql.stdin.end('ROLLBACK;\n');
}

// A bucket's balance in the PostgreSQL pool.
function poolLevel(bucket) {
  const q = spawnSync('psql', [process.env.KEYLESS_TEST_PG_URL, '-Atc',
    `SELECT level FROM quota_pool WHERE name = '${bucket}'`], { encoding: 'utf8' });
  assert.equal(q.status, 0, q.stderr);
  return BigInt(q.stdout.trim());
}

async function usageCost(gw) {
  for (let i = 0; i < 100; i++) {
    const u = await (await fetch(`${gw.url}/api/usage?group_by=endpoint`)).json();
    const row = u.rows.find((r) => r.endpoint === 'openai.chat');
    await sleep(100); // let the writer catch up; read again to be sure it settled
    const again = (await (await fetch(`${gw.url}/api/usage?group_by=endpoint`)).json()).rows.find((r) => r.endpoint === 'openai.chat');
    if (row && again && row.requests === again.requests) return again;
  }
  throw new Error('records never settled');
}

async function burst(gws, n, headers = {}) {
  return Promise.all(Array.from({ length: n }, (_, i) =>
    post(gws[i % gws.length], '/v1/chat/completions', BODY, { 'x-mock': EXACT, ...headers }).then(async (r) => {
      await r.text();
      return r.status;
    })));
}

// A gateway whose quota makes it send an output cap (1234 tokens) upstream
// when the caller set none.
function startCapGateway(mock) {
  return startGateway({
    quotas: { cap: { capacity: '$100' } },
    limits: { default_max_output_tokens: 1234 },
    grants: grant([{ bucket: 'cap' }]),
    providers: providersFor(mock.url),
  });
}

describe('spend quotas', () => {
  it('1,000 concurrent requests at a bucket that affords exactly 100: 100 are forwarded, spend = capacity', async () => {
    const mock = await startMock(['--no-log']);
    const gw = await startGateway({
      quotas: { 'team:<user>': { capacity: usd(100n * EST), on_exceed: 'reject' } },
      grants: grant([{ bucket: 'team:<user>' }]),
      providers: providersFor(mock.url),
    });
    const before = (await mock.stats()).requests;
    const statuses = await burst([gw], 1000);
    const forwarded = (await mock.stats()).requests - before;
    assert.equal(statuses.filter((s) => s === 200).length, forwarded);
    assert.equal(statuses.filter((s) => s === 429).length, 1000 - forwarded);
    assert.equal(forwarded, 100, `forwarded ${forwarded}`);
    const row = await usageCost(gw);
    assert.ok(BigInt(row.cost_nanodollars) <= 100n * EST, `spent ${row.cost_nanodollars} > capacity ${100n * EST}`);
    assert.equal(BigInt(row.cost_nanodollars), 100n * EST);
    await gw.stop();
    await mock.stop();
  });

  it('two gateways sharing PostgreSQL never overshoot together', { skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set' }, async () => {
    const mock = await startMock(['--no-log']);
    const bucket = `shared-${Date.now()}`;
    const config = (instance) => ({
      store: { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance },
      quotas: { [bucket]: { capacity: usd(100n * EST) } },
      grants: grant([{ bucket }]),
      providers: providersFor(mock.url),
    });
    const g1 = await startGateway(config('quota-a'));
    const g2 = await startGateway(config('quota-b'));
    try {
      const before = (await mock.stats()).requests;
      // burst() alternates: even requests go to quota-a, odd ones to quota-b
      const statuses = await burst([g1, g2], 1000, { 'x-session-id': bucket });
      const forwarded = (await mock.stats()).requests - before;
      assert.equal(statuses.filter((s) => s === 200).length, forwarded);
      assert.ok(forwarded <= 100, `forwarded ${forwarded} > 100`);
      assert.ok(forwarded >= 80, `forwarded only ${forwarded}: leases stranded too much`);
      // Which gateway leased how much depends on who asked PostgreSQL first
      // (on a slow machine one may take every slice); what must hold is the
      // total. Every request has a record on the gateway that answered it
      // (the shared store also holds other tests' records: this burst's
      // session only).
      let all = [];
      for (let i = 0; i < 200 && all.filter((r) => r.state === 'done').length < 1000; i++) {
        all = (await (await fetch(`${g1.url}/api/requests?limit=1000&session=${bucket}`)).json()).requests;
        await sleep(30);
      }
      assert.equal(all.length, 1000, 'one record per request, from both gateways');
      assert.equal(all.filter((r) => r.instance === 'quota-a').length, 500);
      const served = all.filter((r) => r.status === 200);
      assert.equal(served.length, forwarded, 'one record per forwarded request');
      const spent = served.reduce((s, r) => s + BigInt(r.cost_nanodollars ?? 0), 0n);
      assert.ok(spent <= 100n * EST, `spent ${spent} > capacity`);
    } finally {
      await g1.stop();
      await g2.stop();
      await mock.stop();
    }
    assertNoKeys(assert, g1.output() + g2.output(), 'gateway logs');
  });

  it('a clean stop returns every lease to the PostgreSQL pool', { skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set' }, async () => {
    const mock = await startMock(['--no-log']);
    const bucket = `returned-${Date.now()}`;
    const gw = await startGateway({
      store: { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance: 'quota-stop' },
      quotas: { [bucket]: { capacity: usd(100n * EST) } },
      grants: grant([{ bucket }]),
      providers: providersFor(mock.url),
    });
    const r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
    assert.equal(r.status, 200);
    await r.text();
    await gw.stop();
    const q = spawnSync('psql', [process.env.KEYLESS_TEST_PG_URL, '-Atc',
      `SELECT level, capacity FROM quota_pool WHERE name = '${bucket}'`], { encoding: 'utf8' });
    assert.equal(q.status, 0, q.stderr);
    const [level, capacity] = q.stdout.trim().split('|').map(BigInt);
    assert.equal(capacity, 100n * EST);
    assert.equal(level, capacity - EST, 'all but the one request\'s cost is back in the pool');
    await mock.stop();
  });

  it('a lease never waits behind a report: leases have their own PostgreSQL session', { skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set' }, async () => {
    const mock = await startMock(['--no-log']);
    const bucket = `lane-${Date.now()}`;
    const gw = await startGateway({
      store: { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance: 'quota-lane' },
      quotas: { [bucket]: { capacity: usd(100n * EST) } },
      grants: grant([{ bucket }]),
      providers: providersFor(mock.url),
    });
    // a report held up by a lock on the records, as a long one would be
    const unlock = await lockTable('requests');
    let reportDone = false;
    const report = fetch(`${gw.url}/api/usage`).then((r) => { reportDone = true; return r.status; });
    await sleep(300); // the report is on its way, waiting for the lock
    const r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
    assert.equal(r.status, 200);
    await r.text();
    assert.equal(reportDone, false, 'the request got its lease while the report still waited');
    unlock();
    assert.equal(await report, 200);
    await gw.stop();
    await mock.stop();
  });

  it('requests arriving at once lease one slice of the pool, not a slice each', { skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set' }, async () => {
    // each had leased an eighth: 16 at once took the whole pool, and the
    // other gateways refused the bucket while this one used it
    const mock = await startMock(['--no-log']);
    const bucket = `burst-${Date.now()}`;
    const cfg = (instance) => ({
      store: { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance },
      quotas: { [bucket]: { capacity: usd(800n * EST) } },
      grants: grant([{ bucket }]),
      providers: providersFor(mock.url),
    });
    const [a, b] = [await startGateway(cfg('quota-burst-a')), await startGateway(cfg('quota-burst-b'))];
    // the pool held locked while they come, so that every one finds the first lease still on its way
    const unlock = await lockTable('quota_pool');
    const sent = burst([a], 16);
    await sleep(500);
    unlock();
    assert.deepEqual(await sent, Array(16).fill(200));
    // one slice (100 x EST), and at most each other request's own need
    const left = poolLevel(bucket);
    assert.ok(left >= 800n * EST - 100n * EST - 15n * EST, String(left));
    // the other gateway serves the bucket meanwhile
    assert.deepEqual(await burst([b], 1), [200]);
    await Promise.all([a.stop(), b.stop()]);
    await mock.stop();
  });

  it('a look at /api/quotas whose caller has left is not run: requests closed at once hold no lease up', { skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set' }, async () => {
    const mock = await startMock(['--no-log']);
    const bucket = `left-${Date.now()}`;
    const gw = await startGateway({
      store: { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance: 'quota-left' },
      quotas: { [bucket]: { capacity: usd(100n * EST) } },
      grants: grant([{ bucket }]),
      providers: providersFor(mock.url),
      log: { level: 'debug' },
    });
    const r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
    assert.equal(r.status, 200);
    await r.text();
    const level = () => poolLevel(bucket);
    const before = level();
    // the pool is locked: the leases' session waits on the first look, and the others queue behind it
    const unlock = await lockTable('quota_pool');
    const u = new URL(gw.url);
    const N = 40;
    const refill = JSON.stringify({ bucket, amount: usd(EST) });
    await Promise.all(Array.from({ length: N + 1 }, (_, i) => new Promise((res) => {
      const sock = net.connect({ host: u.hostname, port: Number(u.port) }, () => {
        // one of them an admin's refill, whose caller leaves too: it is made all the same
        sock.write(i === N ? `POST /api/quotas/refill HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n`
          + `Content-Length: ${Buffer.byteLength(refill)}\r\n\r\n${refill}` : 'GET /api/quotas HTTP/1.1\r\nHost: x\r\n\r\n');
        setTimeout(() => { sock.destroy(); res(); }, 50);
      });
      sock.on('error', res);
    })));
    await sleep(200);
    unlock();
    // a caller who stayed is answered, and a request's lease is not held up
    const q = await fetch(`${gw.url}/api/quotas`);
    assert.equal(q.status, 200);
    await q.text();
    const c = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
    assert.equal(c.status, 200);
    await c.text();
    // the look already waiting on the lock when its caller left goes on; those queued behind it are not run
    const skipped = gw.output().split('\n').filter((l) => l.includes('a query whose caller has left is not run')).length;
    assert.ok(skipped >= N / 2 && skipped <= N, `${skipped} of ${N} looks skipped`);
    assert.equal(level(), before + EST, 'the refill was made');
    await gw.stop();
    await mock.stop();
  });

  it('two quotas that name one bucket (x:<user> and x:<node> for a caller without a node) hold at the slower refill', async () => {
    // the smaller amount with the first one's period had been one request a minute, faster than ten an hour
    const mock = await startMock(['--no-log']);
    const gw = await startGateway({
      identity: { cidr: [{ range: '127.0.0.1/32', login: 'ann@example.com' }] },
      quotas: { 'x:<user>': { capacity: usd(EST), rate: `${usd(EST)}/min` },
        'x:<node>': { capacity: usd(EST), rate: `${usd(10n * EST)}/hour` } },
      grants: grant([{ bucket: 'x:<user>' }, { bucket: 'x:<node>' }]),
      providers: providersFor(mock.url),
    });
    try {
      const r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
      assert.equal(r.status, 200);
      await r.text();
      const again = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
      assert.equal(again.status, 429);
      await again.text();
      // a whole request's worth at ten requests an hour
      const wait = Number(again.headers.get('retry-after'));
      assert.ok(wait > 350 && wait <= 360, `Retry-After ${wait}`);
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });

  it('a lease goes back to the pool once idle, however often /api/quotas looks at it', { skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set' }, async () => {
    const mock = await startMock(['--no-log']);
    const bucket = `watched-${Date.now()}`;
    const gw = await startGateway({
      store: { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance: 'quota-watched' },
      quotas: { [bucket]: { capacity: usd(100n * EST) } },
      grants: grant([{ bucket }]),
      providers: providersFor(mock.url),
    });
    const r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
    assert.equal(r.status, 200);
    await r.text();
    const level = () => poolLevel(bucket);
    let back = false;
    for (let i = 0; i < 40 && !back; i++) { // an admin watching the balance
      assert.equal((await fetch(`${gw.url}/api/quotas`)).status, 200);
      await sleep(200);
      back = level() === 100n * EST - EST;
    }
    assert.ok(back, `the lease stayed out: pool level ${level()}`);
    await gw.stop();
    await mock.stop();
  });

  it('on PostgreSQL, /api/quotas shows what the pool has left, not only this gateway\'s lease', { skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set' }, async () => {
    const mock = await startMock(['--no-log']);
    const bucket = `shown-${Date.now()}`;
    const config = (instance) => ({
      store: { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance },
      quotas: { [bucket]: { capacity: usd(100n * EST) }, [`${bucket}:<user>`]: { capacity: usd(100n * EST) } },
      grants: grant([{ bucket }]),
      providers: providersFor(mock.url),
    });
    const g1 = await startGateway(config('quota-shown-a'));
    const g2 = await startGateway(config('quota-shown-b'));
    const shown = async (gw) => (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets.find((b) => b.bucket === bucket);
    try {
      const r = await post(g1, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
      assert.equal(r.status, 200);
      await r.text();
      // the gateway that served it leased a slice (an eighth) and spent one request of it
      let b = await shown(g1);
      assert.equal(BigInt(b.leased), 100n * EST / 8n - EST, JSON.stringify(b));
      assert.equal(BigInt(b.pool), 100n * EST - 100n * EST / 8n);
      assert.equal(BigInt(b.current), 99n * EST, 'the pool and the lease together');
      assert.equal(BigInt(b.available), 99n * EST);
      assert.equal(BigInt(b.capacity), 100n * EST);
      // another gateway, which never served it, shows the pool: once the lease is back, all that is left
      for (let i = 0; i < 50 && BigInt((b = await shown(g2))?.current ?? 0) !== 99n * EST; i++) await sleep(200);
      assert.equal(BigInt(b.current), 99n * EST, JSON.stringify(b));
      assert.equal(BigInt(b.leased), 0n);
      b = await shown(g1);
      assert.equal(BigInt(b.current), 99n * EST, 'the lease went back: the same balance, all in the pool');
      assert.equal(BigInt(b.pool), 99n * EST);
      // an admin's refill on one gateway is credited to the pool, where the other sees it at once
      const refill = (gw, name, amount) => post(gw, '/api/quotas/refill', JSON.stringify({ bucket: name, amount }));
      let rf = await refill(g2, bucket, usd(EST / 2n));
      assert.equal(rf.status, 200);
      assert.equal(BigInt((await rf.json()).buckets[0].pool), 99n * EST + EST / 2n);
      b = await shown(g1);
      assert.equal(BigInt(b.pool), 99n * EST + EST / 2n, 'the other gateway sees the refill');
      rf = await refill(g1, bucket, '$1000');
      assert.equal(BigInt((await rf.json()).buckets[0].current), 100n * EST, 'clamped to the capacity');
      // a bucket a quota defines but no gateway has used is full: nothing to credit
      rf = await refill(g1, `${bucket}:nobody@example.com`, '$1');
      assert.equal(rf.status, 404);
      assert.match((await rf.json()).error.message, /no gateway has used a bucket named/);
      rf = await refill(g1, `typo-${bucket}`, '$1');
      assert.equal(rf.status, 404);
      assert.match((await rf.json()).error.message, /no quota defines a bucket named typo-/);
    } finally {
      await g1.stop();
      await g2.stop();
      await mock.stop();
    }
  });

  it('a pool refilled after a long idle time is clamped to its capacity, not an overflow', { skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set' }, async () => {
    const mock = await startMock(['--no-log']);
    const bucket = `huge-${Date.now()}`;
    const config = {
      store: { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance: 'quota-huge' },
      quotas: { [bucket]: { capacity: '$2000000000.00', rate: '$2000000000.00/min' } },
      grants: grant([{ bucket }]),
      providers: providersFor(mock.url),
    };
    let gw = await startGateway(config);
    let r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
    assert.equal(r.status, 200);
    await r.text();
    await gw.stop();
    // ten idle minutes refill 10 x capacity: more than a BIGINT holds
    const q = spawnSync('psql', [process.env.KEYLESS_TEST_PG_URL, '-Atc',
      `UPDATE quota_pool SET updated_at = updated_at - 600000 WHERE name = '${bucket}' RETURNING name`], { encoding: 'utf8' });
    assert.equal(q.stdout.trim().split('\n')[0], bucket, q.stderr);
    gw = await startGateway(config);
    r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
    assert.equal(r.status, 200, await r.text());
    await gw.stop();
    assert.doesNotMatch(gw.output(), /out of range/);
    await mock.stop();
  });

  it('on_exceed "log" with PostgreSQL: spend is leased from the pool, and only a real excess is logged', { skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set' }, async () => {
    const mock = await startMock(['--no-log']);
    const roomy = `log-roomy-${Date.now()}`, tight = `log-tight-${Date.now()}`;
    const gw = await startGateway({
      store: { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance: 'quota-log' },
      quotas: {
        [roomy]: { capacity: usd(100n * EST), on_exceed: 'log' },
        [tight]: { capacity: usd(EST / 2n), on_exceed: 'log' },
      },
      grants: grant([{ bucket: roomy }]),
      providers: providersFor(mock.url),
    });
    for (let i = 0; i < 3; i++) {
      const r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
      assert.equal(r.status, 200);
      await r.text();
    }
    await gw.stop();
    assert.doesNotMatch(gw.output(), /exceeded \(on_exceed: log\)/, 'a bucket with room is not exceeded');
    const q = spawnSync('psql', [process.env.KEYLESS_TEST_PG_URL, '-Atc',
      `SELECT level FROM quota_pool WHERE name = '${roomy}'`], { encoding: 'utf8' });
    assert.equal(BigInt(q.stdout.trim()), 97n * EST, 'three requests spent from the shared pool');

    const gw2 = await startGateway({
      store: { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance: 'quota-log' },
      quotas: { [tight]: { capacity: usd(EST / 2n), on_exceed: 'log' } },
      grants: grant([{ bucket: tight }]),
      providers: providersFor(mock.url),
    });
    const r = await post(gw2, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
    assert.equal(r.status, 200, 'log only: allowed');
    await r.text();
    await gw2.stop();
    assert.match(gw2.output(), new RegExp(`quota ${tight} exceeded \\(on_exceed: log\\)`));
    await mock.stop();
  });

  it('429 with Retry-After in each dialect\'s native shape', async () => {
    const mock = await startMock();
    // one request's worth, refilled at one request's worth per minute
    const gw = await startGateway({
      quotas: { 'm:<user>': { capacity: usd(EST), rate: `${usd(EST)}/min` } },
      grants: grant([{ bucket: 'm:<user>' }]),
      providers: providersFor(mock.url),
    });
    assert.equal((await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT })).status, 200);
    const r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
    assert.equal(r.status, 429);
    const ra = Number(r.headers.get('retry-after'));
    assert.ok(ra >= 55 && ra <= 60, `Retry-After ${ra}`);
    const j = await r.json();
    assert.equal(j.error.type, 'insufficient_quota');
    assert.equal(j.error.code, 'insufficient_quota');
    const a = await post(gw, '/v1/messages', JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 100000, messages: [] }),
      { 'anthropic-version': '2023-06-01' });
    assert.equal(a.status, 429);
    const aj = await a.json();
    assert.equal(aj.type, 'error');
    assert.equal(aj.error.type, 'rate_limit_error');
    // one that can never fit: 400 FAILED_PRECONDITION ("do not retry until the
    // state is fixed"), as a 429 has Gemini CLI send it again for minutes
    const g = await post(gw, '/v1beta/models/gemini-2.5-pro:generateContent', JSON.stringify({ contents: [], generationConfig: { maxOutputTokens: 100000 } }));
    assert.equal(g.status, 400);
    const gj = await g.json();
    assert.equal(gj.error.status, 'FAILED_PRECONDITION');
    assert.equal(gj.error.code, 400);
    assert.match(gj.error.message, /more than the bucket can ever hold/);
    // Gemini CLI reads when to retry from Google's details, not the header
    const g2 = await post(gw, '/v1beta/models/gemini-2.5-flash:generateContent',
      JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }], generationConfig: { maxOutputTokens: 10 } }));
    assert.equal(g2.status, 429);
    const delay = Number(g2.headers.get('retry-after'));
    assert.ok(delay > 0, 'it fits later');
    assert.deepEqual((await g2.json()).error.details,
      [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${delay}s` }]);
    await gw.stop();
    await mock.stop();
  });

  it('refill over time admits again', async () => {
    const mock = await startMock();
    // one request's worth, refilled at one request's worth per second
    const gw = await startGateway({
      quotas: { 'f:<user>': { capacity: usd(EST), rate: `${usd(60n * EST)}/min` } },
      grants: grant([{ bucket: 'f:<user>' }]),
      providers: providersFor(mock.url),
    });
    assert.equal((await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT })).status, 200);
    const r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
    assert.equal(r.status, 429);
    assert.equal(r.headers.get('retry-after'), '1');
    await sleep(1100);
    assert.equal((await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT })).status, 200);
    await gw.stop();
    await mock.stop();
  });

  it('a request that can never fit is refused without Retry-After', async () => {
    const mock = await startMock();
    const gw = await startGateway({
      quotas: { tiny: { capacity: '$0.000001' } },
      grants: grant([{ bucket: 'tiny' }]),
      providers: providersFor(mock.url),
    });
    const r = await post(gw, '/v1/chat/completions', BODY);
    assert.equal(r.status, 429);
    assert.equal(r.headers.get('retry-after'), null);
    // a 429 the OpenAI and Anthropic SDKs and Claude Code would retry for minutes
    assert.equal(r.headers.get('x-should-retry'), 'false');
    assert.match((await r.json()).error.message, /more than the bucket can ever hold/);
    let sent = 0;
    const claude = new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 2,
      fetch: (...args) => { sent++; return fetch(...args); } });
    await assert.rejects(claude.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 100, messages: [
      { role: 'user', content: 'hi' }] }), (e) => e.status === 429);
    assert.equal(sent, 1, 'the SDK did not retry');
    await gw.stop();
    await mock.stop();
  });

  it('a model without a price under a spend quota is refused as one that never fits, not with a 429 to retry', async () => {
    const mock = await startMock();
    const providers = providersFor(mock.url);
    providers.openai.models.push('house-model');
    providers.gemini.models.push('house-gemini');
    const gw = await startGateway({ quotas: { q: { capacity: '$10' } }, grants: grant([{ bucket: 'q' }]), providers });
    const r = await post(gw, '/v1/chat/completions', JSON.stringify({ model: 'house-model', messages: [{ role: 'user', content: 'hi' }] }));
    assert.equal(r.status, 429);
    assert.equal(r.headers.get('retry-after'), null);
    assert.equal(r.headers.get('x-should-retry'), 'false', 'the SDKs and Claude Code would send it again');
    assert.match((await r.json()).error.message, /has no price/);
    const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
    assert.equal(rec.error_class, 'quota_exceeded');
    // Gemini CLI sends any 429 again for minutes: the 400 it does not
    const g = await post(gw, '/v1beta/models/house-gemini:generateContent',
      JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }));
    assert.equal(g.status, 400);
    assert.equal((await g.json()).error.status, 'FAILED_PRECONDITION');
    assert.equal((await mock.requests()).length, 0, 'nothing was forwarded');
    await gw.stop();
    await mock.stop();
  });

  it('priority processing (OpenAI, Gemini, Bedrock Converse) and Anthropic\'s fast mode, billed at a multiple of the prices a quota reserves by, are refused under a spend quota', async () => {
    const mock = await startMock();
    const HAIKU = 'us.anthropic.claude-haiku-4-5-20251001-v1:0';
    const gw = await startGateway({ quotas: { q: { capacity: '$10' } }, grants: grant([{ bucket: 'q' }]),
      providers: providersFor(mock.url, { bedrock: { baseurl: mock.url, apikey: 'x', models: [HAIKU], cost_basis: 'bedrock-us',
        compatibility: { bedrock_converse: true, bedrock_model_invoke: true } } }) });
    const chat = (tier) => JSON.stringify({ model: 'gpt-4o', max_tokens: 10, service_tier: tier, messages: [{ role: 'user', content: 'hi' }] });
    for (const [path, body] of [['/v1/chat/completions', chat('priority')], ['/v1/chat/completions', chat('ultrafast')],
      ['/v1/responses', JSON.stringify({ model: 'gpt-4o', max_output_tokens: 10, service_tier: 'priority', input: 'hi' })]]) {
      const r = await post(gw, path, body);
      assert.equal(r.status, 429, path);
      assert.equal(r.headers.get('x-should-retry'), 'false');
      assert.match((await r.json()).error.message, /a priority service_tier, a fast speed/);
    }
    // Gemini's, in either spelling of the field and of the tier
    for (const tier of [{ service_tier: 'priority' }, { serviceTier: 'SERVICE_TIER_PRIORITY' }]) {
      const g = await post(gw, '/v1beta/models/gemini-2.5-flash:generateContent',
        JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }], ...tier }));
      assert.equal(g.status, 400, JSON.stringify(tier));
      assert.equal((await g.json()).error.status, 'FAILED_PRECONDITION');
    }
    // Anthropic's fast mode (Claude Code's /fast): two to six times the rates
    const fast = await post(gw, '/v1/messages', JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 10, speed: 'fast',
      messages: [{ role: 'user', content: 'hi' }] }), { 'anthropic-version': '2023-06-01', 'anthropic-beta': 'fast-mode-2026-02-01' });
    assert.equal(fast.status, 429);
    assert.equal(fast.headers.get('x-should-retry'), 'false');
    assert.equal((await fast.json()).error.type, 'rate_limit_error');
    // Bedrock Converse's {"type": "priority"}: the AWS SDKs' exception for a limit that will not lift
    const converse = (type) => post(gw, `/model/${encodeURIComponent(HAIKU)}/converse`, JSON.stringify({
      messages: [{ role: 'user', content: [{ text: 'hi' }] }], inferenceConfig: { maxTokens: 10 }, serviceTier: { type } }));
    const b = await converse('priority');
    assert.equal(b.status, 400);
    assert.equal(b.headers.get('x-amzn-errortype'), 'ServiceQuotaExceededException');
    // Bedrock's latency-optimized inference, billed above the standard rates: in Converse's body, InvokeModel's header
    const optimized = await post(gw, `/model/${encodeURIComponent(HAIKU)}/converse`, JSON.stringify({
      messages: [{ role: 'user', content: [{ text: 'hi' }] }], inferenceConfig: { maxTokens: 10 },
      performanceConfig: { latency: 'optimized' } }));
    assert.equal(optimized.status, 400);
    const optimizedInvoke = await post(gw, `/model/${encodeURIComponent(HAIKU)}/invoke`, JSON.stringify({
      anthropic_version: 'bedrock-2023-05-31', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }),
      { 'x-amzn-bedrock-performanceconfig-latency': 'optimized' });
    assert.equal(optimizedInvoke.status, 400);
    // asked in a header keyless forwards: InvokeModel's tier, and Vertex's Priority PayGo
    const invoke = await post(gw, `/model/${encodeURIComponent(HAIKU)}/invoke`, JSON.stringify({
      anthropic_version: 'bedrock-2023-05-31', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }),
      { 'x-amzn-bedrock-service-tier': 'priority' });
    assert.equal(invoke.status, 400);
    assert.equal(invoke.headers.get('x-amzn-errortype'), 'ServiceQuotaExceededException');
    const vertex = await post(gw, '/v1beta/models/gemini-2.5-flash:generateContent',
      JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }), { 'x-vertex-ai-llm-shared-request-type': 'priority' });
    assert.equal(vertex.status, 400);
    assert.equal((await vertex.json()).error.status, 'FAILED_PRECONDITION');
    assert.equal((await mock.requests()).length, 0, 'nothing was forwarded');
    assert.equal((await post(gw, '/v1beta/models/gemini-2.5-flash:generateContent',
      JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }), { 'x-vertex-ai-llm-shared-request-type': 'flex' })).status, 200);
    assert.equal((await converse('default')).status, 200);
    assert.equal((await post(gw, `/model/${encodeURIComponent(HAIKU)}/converse`, JSON.stringify({
      messages: [{ role: 'user', content: [{ text: 'hi' }] }], inferenceConfig: { maxTokens: 10 },
      performanceConfig: { latency: 'standard' } }))).status, 200);
    assert.equal((await post(gw, '/v1/messages', JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 10, speed: 'standard',
      messages: [{ role: 'user', content: 'hi' }] }), { 'anthropic-version': '2023-06-01' })).status, 200);
    assert.equal((await post(gw, '/v1beta/models/gemini-2.5-flash:generateContent',
      JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }], serviceTier: 'SERVICE_TIER_FLEX' }))).status, 200);
    // the tiers billed at the table's prices or less go on
    for (const tier of ['auto', 'default', 'flex', 'scale'])
      assert.equal((await post(gw, '/v1/chat/completions', chat(tier))).status, 200, tier);
    await gw.stop();
    // without a spend quota keyless has nothing to keep it from
    const open = await startGateway({ providers: providersFor(mock.url) });
    assert.equal((await post(open, '/v1/chat/completions', chat('priority'))).status, 200);
    assert.equal(JSON.parse((await mock.last()).body).service_tier, 'priority');
    await open.stop();
    await mock.stop();
  });

  it('a dearer tier a provider reads where keyless did not (a repeated "type" or "latency" in Converse, a Gemini tier by its enum number) is refused under a spend quota', async () => {
    const mock = await startMock();
    const HAIKU = 'us.anthropic.claude-haiku-4-5-20251001-v1:0';
    const gw = await startGateway({ quotas: { q: { capacity: '$10' } }, grants: grant([{ bucket: 'q' }]),
      providers: providersFor(mock.url, { bedrock: { baseurl: mock.url, apikey: 'x', models: [HAIKU], cost_basis: 'bedrock-us',
        compatibility: { bedrock_converse: true } } }) });
    // written by hand: JSON.stringify cannot repeat a member; AWS's reader takes the last of them
    const converse = `/model/${encodeURIComponent(HAIKU)}/converse`;
    const msgs = '"messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"maxTokens":10}';
    for (const body of [`{${msgs},"serviceTier":{"type":"default","type":"priority"}}`,
      `{${msgs},"performanceConfig":{"latency":"standard","latency":"optimized"}}`]) {
      const r = await post(gw, converse, body);
      assert.equal(r.status, 400, body);
      assert.equal(r.headers.get('x-amzn-errortype'), 'ServiceQuotaExceededException');
    }
    // Google's JSON reads an enum by its number as well as by its name
    const g = await post(gw, '/v1beta/models/gemini-2.5-flash:generateContent',
      JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }], serviceTier: 3 }));
    assert.equal(g.status, 400);
    assert.equal((await g.json()).error.status, 'FAILED_PRECONDITION');
    assert.equal((await mock.requests()).length, 0, 'nothing was forwarded');
    // a standard tier, or none (null), goes on
    assert.equal((await post(gw, converse, `{${msgs},"serviceTier":{"type":"default"}}`)).status, 200);
    assert.equal((await post(gw, '/v1beta/models/gemini-2.5-flash:generateContent',
      JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }], serviceTier: null }))).status, 200);
    await gw.stop();
    await mock.stop();
  });

  it('a wait of hours is said, not slept on: the OpenAI and Anthropic SDKs stop at once instead of sleeping it twice', async () => {
    const mock = await startMock();
    // one request's worth, refilled at one request's worth a day
    const gw = await startGateway({
      quotas: { day: { capacity: usd(EST), rate: `${usd(EST)}/day` } },
      grants: grant([{ bucket: 'day' }]),
      providers: providersFor(mock.url),
    });
    try {
      const ok = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
      assert.equal(ok.status, 200);
      await ok.text();
      const r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
      assert.equal(r.status, 429);
      const ra = Number(r.headers.get('retry-after'));
      assert.ok(ra > 86000 && ra <= 86400, `Retry-After ${ra}: when, still said`);
      // both SDKs sleep whatever Retry-After says (a day here) before each of their two retries
      assert.equal(r.headers.get('x-should-retry'), 'false');
      assert.match((await r.json()).error.message, /quota day cannot cover this request .*: try again in 2[34]h\d+m/);
      let sent = 0;
      const counted = (...args) => { sent++; return fetch(...args); };
      const soon = (p) => Promise.race([p, sleep(10000).then(() => { throw new Error('the SDK is sleeping on Retry-After'); })]);
      const openai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'x', fetch: counted }); // its default: 2 retries
      await assert.rejects(soon(openai.chat.completions.create({ model: 'gpt-4o', max_tokens: MAX_TOKENS,
        messages: [{ role: 'user', content: 'hi' }] })), (e) => e instanceof OpenAI.RateLimitError);
      const claude = new Anthropic({ baseURL: gw.url, apiKey: 'x', fetch: counted });
      await assert.rejects(soon(claude.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 100,
        messages: [{ role: 'user', content: 'hi' }] })), (e) => e instanceof Anthropic.RateLimitError);
      assert.equal(sent, 2, 'neither SDK retried');
      // a wait of seconds is still waited for
      const rpm = await startGateway({
        grants: grant(null, [{ rate_limit: { requests_per_minute: 1 } }]),
        providers: providersFor(mock.url),
      });
      try {
        assert.equal((await post(rpm, '/v1/chat/completions', BODY)).status, 200);
        const again = await post(rpm, '/v1/chat/completions', BODY);
        assert.equal(again.status, 429);
        assert.ok(Number(again.headers.get('retry-after')) <= 60);
        assert.equal(again.headers.get('x-should-retry'), null);
      } finally {
        await rpm.stop();
      }
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });

  it('a request the provider had whole when it reset the connection keeps its reservation: it may have been billed', async () => {
    const mock = await startMock(['--no-log']);
    const gw = await startGateway({
      quotas: { cut: { capacity: usd(100n * EST) } },
      grants: grant([{ bucket: 'cut' }]),
      providers: providersFor(mock.url),
    });
    try {
      const r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': 'delay_headers_ms=100;reset_after=0' });
      assert.equal(r.status, 502);
      await r.text();
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.error_class, 'upstream_reset');
      const b = (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets.find((x) => x.bucket === 'cut');
      assert.equal(BigInt(b.current), 99n * EST, 'charged its reservation, not let off');
      assert.equal(BigInt(b.reserved), 0n);
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });

  it('a budget that does not refill, once spent, is refused without Retry-After', async () => {
    const mock = await startMock();
    const gw = await startGateway({
      quotas: { once: { capacity: usd(EST + EST / 2n) } }, // one and a half requests, never refilled
      grants: grant([{ bucket: 'once' }]),
      providers: providersFor(mock.url),
    });
    const ok = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
    assert.equal(ok.status, 200);
    await ok.text();
    const r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
    assert.equal(r.status, 429);
    assert.equal(r.headers.get('retry-after'), null, 'waiting does not help');
    assert.equal(r.headers.get('x-should-retry'), 'false');
    assert.match((await r.json()).error.message, /has less left than the request costs and does not refill/);
    // while the first request is still reserved, the second waits for it
    const slow = await startGateway({
      quotas: { once: { capacity: usd(EST + EST / 2n) } },
      grants: grant([{ bucket: 'once' }]),
      providers: providersFor(mock.url),
    });
    const before = (await mock.stats()).requests;
    const first = post(slow, '/v1/chat/completions', BODY, { 'x-mock': `${EXACT};delay_headers_ms=1500` });
    while ((await mock.stats()).requests === before) await sleep(20); // it holds its reservation
    const second = await post(slow, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
    assert.equal(second.status, 429);
    assert.equal(second.headers.get('retry-after'), '1', 'what is reserved may come back');
    await (await first).text();
    await slow.stop();
    await gw.stop();
    await mock.stop();
  });

  it('a shared pool that does not refill is not "never" while reservations are out', { skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set' }, async () => {
    const mock = await startMock();
    const bucket = `pool-once-${Date.now()}`;
    const gw = await startGateway({
      store: { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance: 'pool-once' },
      quotas: { [bucket]: { capacity: usd(EST + EST / 2n) } },
      grants: grant([{ bucket }]),
      providers: providersFor(mock.url),
    });
    try {
      const before = (await mock.stats()).requests;
      const first = post(gw, '/v1/chat/completions', BODY, { 'x-mock': `${EXACT};delay_headers_ms=1500` });
      while ((await mock.stats()).requests === before) await sleep(20);
      const second = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
      assert.equal(second.status, 429);
      assert.equal(second.headers.get('retry-after'), '1', 'the reservation may come back');
      assert.equal(second.headers.get('x-should-retry'), null);
      const g = await post(gw, '/v1beta/models/gemini-2.5-flash:generateContent',
        JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }], generationConfig: { maxOutputTokens: 400 } }));
      assert.equal(g.status, 429, 'not FAILED_PRECONDITION');
      await (await first).text();
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });

  it('a stream whose usage outgrows what is left is cut off with an error event the SDK raises', async () => {
    const mock = await startMock();
    // Claude Sonnet: $3 in / $15 out. The bucket covers the reservation and a little more.
    const gw = await startGateway({
      quotas: { s: { capacity: '$0.01' } },
      grants: grant([{ bucket: 's' }]),
      providers: providersFor(mock.url),
    });
    const c = new Anthropic({ baseURL: gw.url, apiKey: '-', maxRetries: 0 });
    const stream = c.messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 50, messages: [{ role: 'user', content: 'x' }] },
      { headers: { 'x-mock': 'in=10;out=900000;events=5;cache_read=0;cache_write=0', 'x-session-id': 'cut' } });
    await assert.rejects(stream.finalMessage(), (e) => {
      assert.match(String(e.message), /quota s cannot cover this answer/);
      return true;
    });
    let rec;
    for (let i = 0; i < 100 && !(rec && rec.state === 'done'); i++) {
      await sleep(30);
      rec = (await (await fetch(`${gw.url}/api/requests?session=cut`)).json()).requests[0];
    }
    assert.equal(rec.error_class, 'quota_exceeded');
    assert.match(rec.error_message, /cannot cover this answer/);
    assert.equal(rec.output_tokens, 900000, 'what the provider reported is still recorded');
    await gw.stop();
    await mock.stop();
  });

  it('an output cap is sent upstream when the caller set none', async () => {
    const mock = await startMock();
    const gw = await startCapGateway(mock);
    await (await post(gw, '/v1/chat/completions', JSON.stringify({ model: 'gpt-4o', messages: [] }))).text();
    assert.equal(JSON.parse((await mock.last()).body).max_completion_tokens, 1234);
    await (await post(gw, '/v1beta/models/gemini-2.5-flash:generateContent', JSON.stringify({ contents: [] }))).text();
    assert.equal(JSON.parse((await mock.last()).body).generationConfig.maxOutputTokens, 1234);
    // a cap under a key spelled with a NUL is another key to the provider, which would read no cap: keyless
    // does not take it for one, and sends its own
    await (await post(gw, '/v1/chat/completions', '{"model":"gpt-4o","max_tokens\\u0000":10,"messages":[]}')).text();
    const sent = JSON.parse((await mock.last()).body);
    assert.equal(sent.max_completion_tokens, 1234, JSON.stringify(sent));
    assert.equal(sent['max_tokens\u0000'], 10);
    // a max_completion_tokens keyless cannot read ("100000", which pydantic servers read as 100000) is no cap,
    // and replaced by keyless's own; beside a max_tokens it is refused (below: servers differ on which they read)
    await (await post(gw, '/v1/chat/completions', '{"model":"gpt-4o","max_completion_tokens":"100000","messages":[]}')).text();
    const odd = JSON.parse((await mock.last()).body);
    assert.equal(odd.max_completion_tokens, 1234, JSON.stringify(odd));
    assert.equal((await post(gw, '/v1/chat/completions',
      '{"model":"gpt-4o","max_completion_tokens":"100000","max_tokens":5,"messages":[]}')).status, 400);
    // a key that differs from one keyless reads only in case ("Max_Completion_Tokens", which Go's reader, Ollama's,
    // takes for it) is refused, not forwarded past the cap
    // (Go also folds the Kelvin sign to k and the long s to s)
    for (const body of ['{"model":"gpt-4o","Max_Completion_Tokens":100000,"messages":[]}',
      '{"model":"gpt-4o","MODEL":"gpt-4o","messages":[]}',
      '{"model":"gpt-4o","max_completion_tokens":10,"max_completion_to\\u212Aens":100000,"messages":[]}',
      '{"model":"gpt-4o","max_tokens":10,"max_token\u017F":100000,"messages":[]}']) {
      const r = await post(gw, '/v1/chat/completions', body);
      assert.equal(r.status, 400, body);
      assert.match((await r.json()).error.message, /only in the case of its letters/);
    }
    await gw.stop();
    await mock.stop();
  });

  it('the body sent upstream is the caller\'s bytes with only the members keyless sets changed', async () => {
    const mock = await startMock();
    const gw = await startCapGateway(mock);
    // a qualified model, a stream without usage but with other stream
    // options, an output cap given as null, and a large prompt with escapes
    const prompt = 'line "one"\n\u00e9\ud83d\ude00 '.repeat(20000);
    const sent = `{ "messages" : [{"role":"user","content":${JSON.stringify(prompt)}}],
      "model":"openai/gpt-4o", "stream":true, "stream_options":{"include_obfuscation":false},
      "max_completion_tokens":null, "temperature":0.25 }`;
    await (await post(gw, '/v1/chat/completions', sent)).text();
    const got = JSON.parse((await mock.last()).body);
    assert.equal(got.model, 'gpt-4o');
    assert.deepEqual(got.stream_options, { include_obfuscation: false, include_usage: true });
    assert.equal(got.max_completion_tokens, 1234);
    assert.equal(got.messages[0].content, prompt);
    assert.equal(got.temperature, 0.25);
    assert.equal(Object.keys(got).length, 6, 'no member added twice');
    // Gemini: the cap goes into the caller's generationConfig
    await (await post(gw, '/v1beta/models/gemini-2.5-flash:generateContent',
      '{"generationConfig":{"temperature":0.5},"contents":[{"parts":[{"text":"hi"}]}]}')).text();
    const g = JSON.parse((await mock.last()).body);
    assert.deepEqual(g.generationConfig, { temperature: 0.5, maxOutputTokens: 1234 });
    assert.equal(g.contents[0].parts[0].text, 'hi');
    // thoughts count against it: the cap is the answer's beyond the thinking budget (Gemini CLI's 8192)
    await (await post(gw, '/v1beta/models/gemini-2.5-flash:generateContent',
      '{"generationConfig":{"thinkingConfig":{"thinkingBudget":8192}},"contents":[{"parts":[{"text":"hi"}]}]}')).text();
    assert.equal(JSON.parse((await mock.last()).body).generationConfig.maxOutputTokens, 1234 + 8192);
    // and OpenAI's reasoning: a request asking for it (as Codex's does) gets room for it
    await (await post(gw, '/v1/responses', JSON.stringify({ model: 'gpt-4o', input: 'hi',
      reasoning: { effort: 'high', summary: 'auto' } }))).text();
    assert.equal(JSON.parse((await mock.last()).body).max_output_tokens, 1234 + 24576);
    await (await post(gw, '/v1/chat/completions', JSON.stringify({ model: 'gpt-4o', messages: [],
      reasoning_effort: 'minimal' }))).text();
    assert.equal(JSON.parse((await mock.last()).body).max_completion_tokens, 1234);
    await gw.stop();
    // limits.default_reasoning_tokens: 0 adds none
    const none = await startGateway({
      quotas: { cap: { capacity: '$100' } },
      limits: { default_max_output_tokens: 1234, default_reasoning_tokens: 0 },
      grants: grant([{ bucket: 'cap' }]),
      providers: providersFor(mock.url),
    });
    await (await post(none, '/v1/responses', JSON.stringify({ model: 'gpt-4o', input: 'hi',
      reasoning: { effort: 'high' } }))).text();
    assert.equal(JSON.parse((await mock.last()).body).max_output_tokens, 1234);
    await none.stop();
    await mock.stop();
  });

  it('every answer a request asks for is reserved: chat n, Gemini candidateCount', async () => {
    const mock = await startMock();
    // one request's worth, as quotas' other tests count it: n = 1 fits, n = 3 would
    // be billed three answers of max_tokens each and never fits
    const gw = await startGateway({
      quotas: { one: { capacity: usd(EST) } },
      grants: grant([{ bucket: 'one' }]),
      providers: providersFor(mock.url),
    });
    const three = JSON.stringify({ model: 'gpt-4o', max_tokens: MAX_TOKENS, n: 3, messages: [{ role: 'user', content: 'hi' }] });
    const r = await post(gw, '/v1/chat/completions', three, { 'x-mock': EXACT });
    assert.equal(r.status, 429);
    assert.match((await r.json()).error.message, /more than the bucket can ever hold/);
    // an n keyless cannot read is refused, not taken for one answer: pydantic (vLLM,
    // LiteLLM) reads "1_0" as 10, as Python's int() does
    for (const n of ['1_0', '1 0', true, -2, [3]]) {
      const odd = await post(gw, '/v1/chat/completions', JSON.stringify({ model: 'gpt-4o', max_tokens: MAX_TOKENS, n,
        messages: [{ role: 'user', content: 'hi' }] }), { 'x-mock': EXACT });
      assert.equal(odd.status, 400, JSON.stringify(n));
      assert.match((await odd.json()).error.message, /"n" must be a whole number/);
    }
    const g = await post(gw, '/v1beta/models/gemini-2.5-flash:generateContent',
      JSON.stringify({ contents: [], generationConfig: { maxOutputTokens: 8, candidateCount: 100000 } }));
    assert.equal(g.status, 400, 'a limit waiting will not lift, Google\'s way');
    assert.equal((await g.json()).error.status, 'FAILED_PRECONDITION');
    assert.equal((await mock.requests()).length, 0, 'neither reached the provider');
    assert.equal((await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT })).status, 200);
    await gw.stop();

    // the cap keyless sends is per answer: n answers of 1234 tokens each
    const cap = await startCapGateway(mock);
    await (await post(cap, '/v1/chat/completions', JSON.stringify({ model: 'gpt-4o', n: 2, messages: [] }))).text();
    const sent = JSON.parse((await mock.last()).body);
    assert.equal(sent.max_completion_tokens, 1234);
    assert.equal(sent.n, 2);
    assert.equal((await post(cap, '/v1/chat/completions', JSON.stringify({ model: 'gpt-4o', n: null, messages: [] }))).status,
      200, 'n: null is no n');
    await cap.stop();
    await mock.stop();
  });

  it('a chat body with several output caps is reserved for the largest, which a server may read (Ollama: max_tokens, llama.cpp: n_predict); one unread beside another is refused', async () => {
    const mock = await startMock();
    // two requests' worth at MAX_TOKENS, as the tests above count them: one of a
    // longer body fits, three times MAX_TOKENS never does
    const gw = await startGateway({
      quotas: { one: { capacity: usd(2n * EST) } },
      grants: grant([{ bucket: 'one' }]),
      providers: providersFor(mock.url),
    });
    const chat = (caps) => JSON.stringify({ model: 'gpt-4o', ...caps, messages: [{ role: 'user', content: 'hi' }] });
    // reserved for the larger: three times MAX_TOKENS never fits, whichever field holds it
    for (const caps of [{ max_completion_tokens: 1, max_tokens: 3 * MAX_TOKENS }, { max_tokens: 1, n_predict: 3 * MAX_TOKENS },
      { max_completion_tokens: 1, n_predict: 3 * MAX_TOKENS }, { n_predict: 3 * MAX_TOKENS }]) {
      const r = await post(gw, '/v1/chat/completions', chat(caps), { 'x-mock': EXACT });
      assert.equal(r.status, 429, JSON.stringify(caps));
      assert.match((await r.json()).error.message, /more than the bucket can ever hold/, JSON.stringify(caps));
    }
    // one keyless cannot read beside another: which one would the server take?
    for (const caps of [{ max_completion_tokens: '10', max_tokens: 100000 }, { max_tokens: 10, n_predict: '1_0' }, { n_predict: 'x' }]) {
      const r = await post(gw, '/v1/chat/completions', chat(caps), { 'x-mock': EXACT });
      assert.equal(r.status, 400, JSON.stringify(caps));
      assert.match((await r.json()).error.message, /output cap is ambiguous/);
    }
    assert.equal((await mock.requests()).length, 0, 'nothing was forwarded');
    // the larger one fits: forwarded as written
    for (const caps of [{ max_completion_tokens: MAX_TOKENS, max_tokens: 1 }, { max_tokens: 1, n_predict: MAX_TOKENS },
      { max_completion_tokens: MAX_TOKENS, max_tokens: null }]) {
      const r = await post(gw, '/v1/chat/completions', chat(caps), { 'x-mock': EXACT });
      assert.equal(r.status, 200, JSON.stringify(caps));
      await r.text();
      // spent: filled again for the next
      assert.equal((await post(gw, '/api/quotas/refill', JSON.stringify({ bucket: 'one', amount: usd(2n * EST) }))).status, 200);
    }
    await gw.stop();
    // without a quota there is no reservation to outrun
    const open = await startGateway({ providers: providersFor(mock.url) });
    assert.equal((await post(open, '/v1/chat/completions', chat({ max_tokens: 10, n_predict: '1_0' }))).status, 200);
    await open.stop();
    await mock.stop();
  });

  it('Gemini bodies in proto field names (generation_config, max_output_tokens) are read and capped as such', async () => {
    const mock = await startMock();
    const gw = await startCapGateway(mock);
    const gen = '/v1beta/models/gemini-2.5-flash:generateContent';
    // the caller's cap, under its proto name, is read: nothing is added
    assert.equal((await post(gw, gen, JSON.stringify({ contents: [], generation_config: { max_output_tokens: 50 } }))).status, 200);
    let got = JSON.parse((await mock.last()).body);
    assert.deepEqual(got.generation_config, { max_output_tokens: 50 });
    assert.equal(got.generationConfig, undefined, 'no second spelling of the same field');
    // no cap: it goes into the caller's generation_config, replacing a null one
    assert.equal((await post(gw, gen, JSON.stringify({ contents: [],
      generation_config: { temperature: 0.5, max_output_tokens: null } }))).status, 200);
    got = JSON.parse((await mock.last()).body);
    assert.deepEqual(got.generation_config, { temperature: 0.5, maxOutputTokens: 1234 });
    assert.equal(got.generationConfig, undefined);
    // both names of one field: which one the provider takes is not for keyless to guess
    await mock.clear();
    for (const body of [{ contents: [], generationConfig: {}, generation_config: {} },
      { contents: [], generationConfig: { maxOutputTokens: 5, max_output_tokens: 900000 } }]) {
      const r = await post(gw, gen, JSON.stringify(body));
      assert.equal(r.status, 400);
      const j = await r.json();
      assert.equal(j.error.status, 'INVALID_ARGUMENT');
      assert.match(j.error.message, /both "(generationConfig|maxOutputTokens)" and "(generation_config|max_output_tokens)"/);
    }
    assert.equal((await mock.requests()).length, 0);
    await gw.stop();
    await mock.stop();
  });

  it('a 2xx stream that is only the provider\'s error failed: recorded so, and charged nothing; one that answered first keeps its reservation', async () => {
    const SSE = 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n';
    let messages = 0;
    const up = await rawProvider((req, sock) => {
      const start = 'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message",' +
        '"role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,' +
        '"usage":{"input_tokens":100000,"output_tokens":1}}}\n\nevent: ping\ndata: {"type":"ping"}\n\n';
      if (req.includes('/v1/responses')) {
        // a whole answer "failed" after it generated some: served, so billed
        const body = JSON.stringify({ id: 'resp_1', object: 'response', status: 'failed', model: 'gpt-4o',
          error: { code: 'server_error', message: 'failed midway' },
          output: [{ type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'partial answer' }] }],
          usage: { input_tokens: 1000, output_tokens: 200, total_tokens: 1200 } });
        sock.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n` +
          `Connection: close\r\n\r\n${body}`);
      } else if (req.includes('/v1/messages'))
        sock.end(SSE + (messages++ ? start : '') +
          'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n');
      else
        sock.end(SSE + 'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,' +
          '"delta":{"role":"assistant","content":"Hello"},"finish_reason":null}]}\n\n' +
          'data: {"error":{"message":"server had an error","type":"server_error"}}\n\n');
    });
    const base = `http://127.0.0.1:${up.address().port}`;
    const gw = await startGateway({
      quotas: { q: { capacity: '$1.00' } },
      grants: grant([{ bucket: 'q' }]),
      providers: {
        openai: { baseurl: base, apikey: 'k', models: ['gpt-4o'], compatibility: { openai_chat: true, openai_responses: true } },
        anthropic: { baseurl: base, apikey: 'k', authorization: 'x-api-key', models: ['claude-sonnet-4-5'],
          compatibility: { anthropic_messages: true } },
      },
      failover: { max_attempts: 1 },
    });
    const level = async () => BigInt((await (await fetch(`${gw.url}/api/quotas`)).json()).buckets[0].current);
    const a = await post(gw, '/v1/messages', JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 1000, stream: true,
      messages: [{ role: 'user', content: 'x' }] }), { 'anthropic-version': '2023-06-01' });
    assert.match(await a.text(), /overloaded_error/);
    const ra = await finalRecord(gw, a.headers.get('x-keyless-request-id'));
    assert.equal(ra.error_class, 'upstream_error');
    assert.match(ra.error_message, /ended its answer with an error, before any of the answer/);
    assert.equal(await level(), 1000000000n, 'nothing served, nothing charged (as a 529 status would be)');
    assert.equal(ra.cost_known, 1, 'its cost is known: what the quota charged');
    assert.equal(ra.cost_nanodollars, 0);
    assert.doesNotMatch(await (await fetch(`${gw.url}/metrics`)).text(), /keyless_unpriced_requests_total\{provider="anthropic".*\} [1-9]/,
      'not an answered request of unknown cost');
    // the same after message_start: its usage is Anthropic's opening count, not a bill for an answer
    const a2 = await post(gw, '/v1/messages', JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 1000, stream: true,
      messages: [{ role: 'user', content: 'x' }] }), { 'anthropic-version': '2023-06-01' });
    assert.match(await a2.text(), /overloaded_error/);
    const ra2 = await finalRecord(gw, a2.headers.get('x-keyless-request-id'));
    assert.match(ra2.error_message, /before any of the answer/);
    assert.equal(await level(), 1000000000n, 'an opening count with no answer is charged nothing');
    assert.equal(ra2.input_tokens, 100000, 'the count it reported is recorded');
    assert.equal(ra2.cost_known, 1);
    assert.equal(ra2.cost_nanodollars, 0, 'and its cost is what the quota charged: nothing');
    // a whole answer that failed after it generated output is charged what the record says it cost
    const r = await post(gw, '/v1/responses', JSON.stringify({ model: 'gpt-4o', input: 'x', max_output_tokens: 500 }));
    assert.equal((await r.json()).status, 'failed');
    const rr = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
    assert.equal(rr.error_class, 'upstream_error');
    assert.equal(rr.output_tokens, 200);
    assert.ok(rr.cost_nanodollars > 0);
    assert.equal(await level(), 1000000000n - BigInt(rr.cost_nanodollars), 'charged as recorded');
    // a chat stream that served text and then an error, before its usage:
    // its prompt at the reserved estimate, its output from the text
    const chat = JSON.stringify({ model: 'gpt-4o', max_tokens: 100, stream: true,
      messages: [{ role: 'user', content: 'x'.repeat(900) }] });
    const c = await post(gw, '/v1/chat/completions', chat);
    assert.match(await c.text(), /server had an error/);
    const rc = await finalRecord(gw, c.headers.get('x-keyless-request-id'));
    assert.equal(rc.error_class, 'upstream_error');
    assert.equal(rc.usage_known, 2);
    assert.deepEqual([rc.input_tokens, rc.output_tokens], [Math.ceil(chat.length / 3), 2], '"Hello" is 5 bytes');
    assert.ok(rc.cost_nanodollars > 0);
    assert.equal(await level(), 1000000000n - BigInt(rr.cost_nanodollars) - BigInt(rc.cost_nanodollars),
      'charged as recorded, not the whole reservation');
    await gw.stop();
    up.close();
  });

  it('a 2xx stream that is only the provider\'s error under no event name, as Python servers write it ("type": "error"), failed and is charged nothing', async () => {
    const SSE = 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n';
    const up = await rawProvider((req, sock) => {
      // json.dumps' separators: a blank after each colon and comma
      if (req.includes('/v1/responses'))
        sock.end(SSE + 'data: {"type": "error", "code": "server_error", "message": "The server had an error", "param": null, "sequence_number": 0}\n\n');
      else if (req.includes('named'))
        sock.end(SSE + 'event: message\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n');
      else
        sock.end(SSE + 'data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n');
    });
    const base = `http://127.0.0.1:${up.address().port}`;
    const gw = await startGateway({
      quotas: { q: { capacity: '$1.00' } },
      grants: grant([{ bucket: 'q' }]),
      providers: {
        openai: { baseurl: base, apikey: 'k', models: ['gpt-4o'], compatibility: { openai_responses: true } },
        anthropic: { baseurl: base, apikey: 'k', authorization: 'x-api-key', models: ['claude-sonnet-4-5'],
          compatibility: { anthropic_messages: true } },
        named: { baseurl: `${base}/named`, apikey: 'k', authorization: 'x-api-key', models: ['claude-haiku-4-5'],
          compatibility: { anthropic_messages: true } },
      },
      failover: { max_attempts: 1 },
    });
    const level = async () => BigInt((await (await fetch(`${gw.url}/api/quotas`)).json()).buckets[0].current);
    for (const [path, body] of [
      ['/v1/messages', { model: 'claude-sonnet-4-5', max_tokens: 1000, stream: true, messages: [{ role: 'user', content: 'x' }] }],
      ['/v1/messages', { model: 'claude-haiku-4-5', max_tokens: 1000, stream: true, messages: [{ role: 'user', content: 'x' }] }],
      ['/v1/responses', { model: 'gpt-4o', input: 'x', max_output_tokens: 1000, stream: true }],
    ]) {
      const r = await post(gw, path, JSON.stringify(body), { 'anthropic-version': '2023-06-01' });
      assert.match(await r.text(), /"type": "error"/);
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.error_class, 'upstream_error', `${body.model}: ${JSON.stringify(rec)}`);
      assert.match(rec.error_message, /ended its answer with an error, before any of the answer/);
      assert.equal(rec.cost_known, 1);
      assert.equal(rec.cost_nanodollars, 0);
      assert.equal(await level(), 1000000000n, `${body.model}: nothing served, nothing charged`);
    }
    await gw.stop();
    up.close();
  });

  it('a caller that leaves on the provider\'s error event of an error-only 2xx stream, before the stream ends, is charged nothing', async () => {
    const open = [];
    const up = await rawProvider((req, sock) => {
      open.push(sock); // the stream stays open after its error event
      sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n');
      const ev = 'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n';
      sock.write(`${Buffer.byteLength(ev).toString(16)}\r\n${ev}\r\n`);
    });
    const gw = await startGateway({
      quotas: { q: { capacity: '$1.00' } },
      grants: grant([{ bucket: 'q' }]),
      providers: { anthropic: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'k', authorization: 'x-api-key',
        models: ['claude-sonnet-4-5'], compatibility: { anthropic_messages: true } } },
      failover: { max_attempts: 1 },
    });
    try {
      const level = async () => BigInt((await (await fetch(`${gw.url}/api/quotas`)).json()).buckets[0].current);
      const ac = new AbortController();
      const r = await post(gw, '/v1/messages', JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 1000, stream: true,
        messages: [{ role: 'user', content: 'x' }] }), { 'anthropic-version': '2023-06-01' }, '127.0.0.1', ac.signal);
      const reader = r.body.getReader();
      let text = '';
      while (!/overloaded_error/.test(text)) text += Buffer.from((await reader.read()).value).toString();
      ac.abort(); // the SDK raises on the error event and the caller goes
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.cost_known, 1, JSON.stringify(rec));
      assert.equal(rec.cost_nanodollars, 0);
      assert.equal(await level(), 1000000000n, 'nothing served, nothing charged, as when the caller stays');
    } finally {
      open.forEach((s) => s.destroy());
      await gw.stop();
      up.close();
    }
  });

  it('a 2xx HTML page (a captive portal, a baseurl that is not the API\'s) is a 502 in the caller\'s dialect, charged nothing; JSON labelled HTML passes', async () => {
    const page = '<!DOCTYPE html><html><head><title>Hotel Wi-Fi: log in</title></head><body>Accept the terms</body></html>';
    const answer = JSON.stringify({ id: 'c', object: 'chat.completion', model: 'gpt-4o', choices: [{ index: 0,
      message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }], usage: { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12 } });
    const up = await rawProvider((req, sock) => {
      const body = req.includes('/mislabelled/') ? answer : page;
      sock.end(`HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `Connection: close\r\n\r\n${body}`);
    });
    const base = `http://127.0.0.1:${up.address().port}`;
    const gw = await startGateway({
      quotas: { q: { capacity: '$1.00' } },
      grants: grant([{ bucket: 'q' }]),
      providers: {
        openai: { baseurl: base, apikey: 'k', models: ['gpt-4o'], compatibility: { openai_chat: true } },
        mislabelled: { baseurl: `${base}/mislabelled`, apikey: 'k', models: ['gpt-4o-mini'], compatibility: { openai_chat: true } },
        anthropic: { baseurl: base, apikey: 'k', authorization: 'x-api-key', models: ['claude-sonnet-4-5'],
          compatibility: { anthropic_messages: true } },
      },
      failover: { max_attempts: 1 },
    });
    try {
      const level = async () => BigInt((await (await fetch(`${gw.url}/api/quotas`)).json()).buckets[0].current);
      for (const [path, body, dialect] of [
        ['/v1/chat/completions', { model: 'gpt-4o', max_tokens: 100, messages: [{ role: 'user', content: 'x' }] }, 'openai'],
        ['/v1/chat/completions', { model: 'gpt-4o', max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'x' }] }, 'openai'],
        ['/v1/messages', { model: 'claude-sonnet-4-5', max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'x' }] }, 'anthropic'],
      ]) {
        const r = await post(gw, path, JSON.stringify(body), { 'anthropic-version': '2023-06-01' });
        assert.equal(r.status, 502, `${path} stream=${!!body.stream}`);
        assert.match(r.headers.get('content-type'), /application\/json/);
        const j = await r.json();
        if (dialect === 'anthropic') assert.equal(j.type, 'error');
        assert.match(j.error.message, /answered 200 with a text\/html body, not an answer.*Hotel Wi-Fi: log in/);
        const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
        assert.equal(rec.status, 502);
        assert.equal(rec.error_class, 'upstream_error');
        assert.equal(rec.cost_known, 1);
        assert.equal(rec.cost_nanodollars, 0);
        assert.equal(await level(), 1000000000n, 'the provider billed nothing for a page: nothing charged');
      }
      const ok = await post(gw, '/v1/chat/completions', JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 100,
        messages: [{ role: 'user', content: 'x' }] }));
      assert.equal(ok.status, 200);
      assert.equal((await ok.json()).choices[0].message.content, 'hi');
      const rec = await finalRecord(gw, ok.headers.get('x-keyless-request-id'));
      assert.equal(rec.input_tokens, 10);
      assert.ok(rec.cost_nanodollars > 0);
      assert.equal(await level(), 1000000000n - BigInt(rec.cost_nanodollars), 'an answer is charged as usual');
    } finally {
      await gw.stop();
      up.close();
    }
  });

  it('a stream labelled text/html (Flask\'s default mimetype) that is events is relayed as the stream the SDKs read, and charged what it used', async () => {
    // The OpenAI and Anthropic SDKs read a stream's body as events whatever
    // its Content-Type; a self-hosted server that leaves Flask's default
    // (text/html) on its event stream works without keyless.
    const events = [
      { id: 'c', object: 'chat.completion.chunk', model: 'gpt-4o', choices: [{ index: 0, delta: { role: 'assistant', content: 'hi' } }] },
      { id: 'c', object: 'chat.completion.chunk', model: 'gpt-4o', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] },
      { id: 'c', object: 'chat.completion.chunk', model: 'gpt-4o', choices: [], usage: { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12 } },
    ].map((e) => `data: ${JSON.stringify(e)}\n\n`).join('') + 'data: [DONE]\n\n';
    const up = await rawProvider((req, sock) => {
      sock.end(`HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(events)}\r\n` +
        `Connection: close\r\n\r\n${events}`);
    });
    const gw = await startGateway({
      quotas: { q: { capacity: '$1.00' } },
      grants: grant([{ bucket: 'q' }]),
      providers: { openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'k', models: ['gpt-4o'],
        compatibility: { openai_chat: true } } },
      failover: { max_attempts: 1 },
    });
    try {
      const r = await post(gw, '/v1/chat/completions', JSON.stringify({ model: 'gpt-4o', max_tokens: 100, stream: true,
        stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'x' }] }));
      const text = await r.text();
      assert.equal(r.status, 200, text);
      assert.match(text, /"content":"hi"/);
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.status, 200);
      assert.equal(rec.input_tokens, 10);
      assert.equal(rec.output_tokens, 2);
    } finally {
      await gw.stop();
      up.close();
    }
    // Anthropic's, with another provider to fail over to (its head waits
    // for the first event): the events go on; a page is still a 502
    const msgs = [
      ['message_start', { type: 'message_start', message: { id: 'm', type: 'message', role: 'assistant', model: 'claude-sonnet-4-5',
        content: [], stop_reason: null, usage: { input_tokens: 10, output_tokens: 1 } } }],
      ['content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }],
      ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'hi' } }],
      ['content_block_stop', { type: 'content_block_stop', index: 0 }],
      ['message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 2 } }],
      ['message_stop', { type: 'message_stop' }],
    ].map(([e, d]) => `event: ${e}\ndata: ${JSON.stringify(d)}\n\n`).join('');
    const page = '<!DOCTYPE html><html><head><title>Portal</title></head><body>x</body></html>';
    const up2 = await rawProvider((req, sock) => {
      const body = req.includes('/page/') ? page : msgs;
      sock.end(`HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `Connection: close\r\n\r\n${body}`);
    });
    const base = `http://127.0.0.1:${up2.address().port}`;
    const gw2 = await startGateway({
      grants: grant([]),
      providers: {
        a: { baseurl: base, apikey: 'k', authorization: 'x-api-key', models: ['claude-sonnet-4-5'], compatibility: { anthropic_messages: true } },
        b: { baseurl: base, apikey: 'k', authorization: 'x-api-key', models: ['claude-sonnet-4-5'], compatibility: { anthropic_messages: true } },
        p: { baseurl: `${base}/page`, apikey: 'k', authorization: 'x-api-key', models: ['claude-haiku-4-5'], compatibility: { anthropic_messages: true } },
        p2: { baseurl: `${base}/page`, apikey: 'k', authorization: 'x-api-key', models: ['claude-haiku-4-5'], compatibility: { anthropic_messages: true } },
      },
    });
    try {
      const r = await post(gw2, '/v1/messages', JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 100, stream: true,
        messages: [{ role: 'user', content: 'x' }] }), { 'anthropic-version': '2023-06-01' });
      const text = await r.text();
      assert.equal(r.status, 200, text);
      assert.match(text, /"text":"hi"/);
      const rec = await finalRecord(gw2, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.output_tokens, 2);
      const p = await post(gw2, '/v1/messages', JSON.stringify({ model: 'claude-haiku-4-5', max_tokens: 100, stream: true,
        messages: [{ role: 'user', content: 'x' }] }), { 'anthropic-version': '2023-06-01' });
      assert.equal(p.status, 502);
      assert.match((await p.json()).error.message, /not an answer.*Portal/);
    } finally {
      await gw2.stop();
      up2.close();
    }
  });

  it('an input the request only points at (a stored conversation, a remote file, a provider-run tool) is reserved too', async () => {
    // The body's size cannot show what previous_response_id brings in: each
    // such input reserves limits.referenced_input_tokens more prompt.
    const mock = await startMock();
    const REF = 1000;
    const gw = await startGateway({
      quotas: { r: { capacity: usd(4n * EST) } },
      limits: { referenced_input_tokens: REF },
      grants: grant([{ bucket: 'r' }]),
      providers: providersFor(mock.url),
    });
    const chained = JSON.stringify({ model: 'gpt-4o', max_output_tokens: MAX_TOKENS, input: 'hi', previous_response_id: 'resp_1' });
    const needs = BigInt(Math.ceil(Buffer.byteLength(chained) / 3)) * IN_ND + BigInt(REF) * IN_ND + BigInt(MAX_TOKENS) * OUT_ND;
    assert.ok(needs > 3n * EST && needs <= 4n * EST, 'the test\'s arithmetic');
    // a full bucket takes it (charged what the provider reports) ...
    const first = await post(gw, '/v1/responses', chained, { 'x-mock': EXACT });
    assert.equal(first.status, 200);
    await first.text();
    // ... one that has spent a plain request's worth no longer can, though a plain request still fits
    assert.equal((await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT })).status, 200);
    const second = await post(gw, '/v1/responses', chained, { 'x-mock': EXACT });
    assert.equal(second.status, 429);
    assert.match((await second.json()).error.message, /quota r/);
    assert.equal((await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT })).status, 200);
    await gw.stop();
    // a bucket smaller than what a reference reserves waits for a full bucket instead of refusing for ever
    const small = await startGateway({
      quotas: { s: { capacity: usd(2n * EST) } },
      limits: { referenced_input_tokens: 1000000 },
      grants: grant([{ bucket: 's' }]),
      providers: providersFor(mock.url),
    });
    const ok = await post(small, '/v1/responses', chained, { 'x-mock': EXACT });
    assert.equal(ok.status, 200);
    await ok.text();
    await small.stop();
    await mock.stop();
  });

  it('a Responses request chained onto an answer keyless relayed reserves that answer\'s size, not the knob', async () => {
    const mock = await startMock();
    const REF = 1000;
    const gw = await startGateway({
      quotas: { c: { capacity: '$100.00' } },
      limits: { referenced_input_tokens: REF },
      grants: grant([{ bucket: 'c' }]),
      providers: providersFor(mock.url),
    });
    const usage = (i, o) => `in=${i};out=${o};cache_read=0;cache_write=0;reasoning=0`;
    const body = (extra) => JSON.stringify({ model: 'gpt-4o', max_output_tokens: MAX_TOKENS, input: 'hi', ...extra });
    // a whole answer, in a conversation named by an object; a streamed one, whose id comes in response.completed
    const first = await (await post(gw, '/v1/responses', body({ conversation: { id: 'conv_a' } }), { 'x-mock': usage(50000, 300) })).json();
    const streamed = await (await post(gw, '/v1/responses', body({ stream: true, conversation: 'conv_b' }), { 'x-mock': usage(70000, 400) })).text();
    const sid = /"type":"response\.completed".*?"id":"(resp_[0-9a-f]+)"/.exec(streamed)[1];
    const reserved = async (b) => {
      const pending = post(gw, '/v1/responses', b, { 'x-mock': `${EXACT};delay_headers_ms=1500` });
      await sleep(500);
      const q = (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets[0];
      await (await pending).text();
      return BigInt(q.reserved);
    };
    const est = (b, stored) => BigInt(Math.ceil(Buffer.byteLength(b) / 3) + stored) * IN_ND + BigInt(MAX_TOKENS) * OUT_ND;
    for (const [ref, stored] of [
      [{ previous_response_id: first.id }, 50300],      // exactly the stored response's input and output
      [{ previous_response_id: sid }, 70400],
      [{ previous_response_id: 'resp_unknown' }, REF],  // not relayed by this gateway: the knob's share
      [{ conversation: 'conv_a' }, 50300],              // a conversation's last known size, as a string or an object
      [{ conversation: { id: 'conv_b' } }, 70400],
      [{ conversation: 'conv_a' }, REF],                // its last answer was small: never less than the knob's share
    ]) {
      const b = body(ref);
      assert.equal(await reserved(b), est(b, stored), JSON.stringify(ref));
    }
    // an id written with escapes is the one the provider reads: the answer's size, not the knob's
    const esc = body({ previous_response_id: 'X' }).replace('"X"', `"\\u0072${first.id.slice(1)}"`);
    assert.equal(await reserved(esc), est(esc, 50300));
    await gw.stop();
    // with the share turned off, a size known is still reserved
    const off = await startGateway({
      quotas: { c: { capacity: '$100.00' } },
      limits: { referenced_input_tokens: 0 },
      grants: grant([{ bucket: 'c' }]),
      providers: providersFor(mock.url),
    });
    const again = await (await post(off, '/v1/responses', body({}), { 'x-mock': usage(50000, 300) })).json();
    const reservedOff = async (b) => {
      const pending = post(off, '/v1/responses', b, { 'x-mock': `${EXACT};delay_headers_ms=1500` });
      await sleep(500);
      const q = (await (await fetch(`${off.url}/api/quotas`)).json()).buckets[0];
      await (await pending).text();
      return BigInt(q.reserved);
    };
    let b = body({ previous_response_id: again.id });
    assert.equal(await reservedOff(b), est(b, 50300));
    b = body({ previous_response_id: 'resp_unknown' });
    assert.equal(await reservedOff(b), est(b, 0));
    await off.stop();
    await mock.stop();
  });

  it('balances survive a restart; a lowered capacity clamps them; /api/quotas and refill', async () => {
    const mock = await startMock();
    const db = join(tempDir('kl-quota-'), 'q.db');
    const cfg = (capacity) => ({
      identity: { cidr: [{ range: '127.0.0.60/32', login: 'ann@example.com' }, { range: '127.0.0.61/32', login: 'ben@example.com' }], loopback: true },
      store: { path: db },
      quotas: { 'd:<user>': { capacity } },
      grants: [
        { src: ['ann@example.com', 'ben@example.com'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' }, { quotas: [{ bucket: 'd:<user>' }] }] } },
        { src: ['(loopback)'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } },
      ],
      providers: providersFor(mock.url),
    });
    let gw = await startGateway(cfg('$1.00'));
    for (let i = 0; i < 3; i++) await (await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT }, '127.0.0.60')).text();
    const mine = await (await fetch(`${gw.url}/api/quotas`, { dispatcher: from('127.0.0.60') })).json();
    assert.deepEqual(mine.buckets.map((b) => b.bucket), ['d:ann@example.com']);
    const level = mine.buckets[0].current;
    assert.equal(BigInt(level), 1000000000n - 3n * EST);
    // ben sees only his own, and may not refill
    const bens = await (await fetch(`${gw.url}/api/quotas`, { dispatcher: from('127.0.0.61') })).json();
    assert.deepEqual(bens.buckets.map((b) => b.bucket), ['d:ben@example.com']);
    const denied = await post(gw, '/api/quotas/refill', JSON.stringify({ bucket: 'd:ann@example.com', amount: '$1' }), {}, '127.0.0.61');
    assert.equal(denied.status, 403);
    await gw.stop();

    gw = await startGateway(cfg('$1.00'));
    // an admin sees every saved balance, before its owner comes back
    const listed = (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets;
    assert.deepEqual(listed.map((b) => [b.bucket, b.current]).sort(),
      [['d:ann@example.com', level], ['d:ben@example.com', 1000000000]]);
    const after = (await (await fetch(`${gw.url}/api/quotas`, { dispatcher: from('127.0.0.60') })).json()).buckets[0];
    assert.equal(after.current, level, 'the balance survived the restart');
    // admin refill (clamped to capacity)
    const rf = await post(gw, '/api/quotas/refill', JSON.stringify({ bucket: 'd:ann@example.com', amount: '$0.0001' }));
    assert.equal(rf.status, 200);
    assert.equal(BigInt((await rf.json()).buckets[0].current), BigInt(level) + 100000n);
    const all = await (await fetch(`${gw.url}/api/quotas`)).json();
    assert.ok(all.buckets.some((b) => b.bucket === 'd:ann@example.com'));
    await gw.stop();

    gw = await startGateway(cfg('$0.50'));
    const clamped = (await (await fetch(`${gw.url}/api/quotas`, { dispatcher: from('127.0.0.60') })).json()).buckets[0];
    assert.equal(clamped.current, 500000000);
    assert.equal(clamped.capacity, 500000000);
    await gw.stop();
    await mock.stop();
  });

  it('an admin\'s look at balances saved before a restart takes a quota named exactly so first, and changes no balance', async () => {
    const mock = await startMock();
    const db = join(tempDir('kl-quotag-'), 'q.db');
    const cfg = {
      identity: { cidr: [{ range: '127.0.0.60/32', login: 'ann@example.com' }], loopback: true },
      store: { path: db },
      // each saved name below also fits the template listed before its own quota
      quotas: { 'team-<user>': { capacity: '$500.00', rate: '$500.00/min' }, 'team-eng': { capacity: '$1.00' },
        'd:<user>@example.com': { capacity: '$0.01' }, 'd:<user>': { capacity: '$1.00' } },
      grants: [
        { src: ['ann@example.com'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
          { quotas: [{ bucket: 'team-eng' }, { bucket: 'd:<user>' }] }] } },
        { src: ['(loopback)'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }] } },
      ],
      providers: providersFor(mock.url),
    };
    let gw = await startGateway(cfg);
    assert.equal((await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT }, '127.0.0.60')).status, 200);
    await gw.stop();
    gw = await startGateway(cfg);
    const seen = Object.fromEntries((await (await fetch(`${gw.url}/api/quotas`)).json()).buckets.map((b) => [b.bucket, b]));
    assert.equal(seen['team-eng'].capacity, 1000000000, 'team-eng\'s own quota, not team-<user>\'s');
    assert.equal(BigInt(seen['team-eng'].current), 1000000000n - EST);
    assert.ok(seen['d:ann@example.com']);
    await sleep(1000);
    // the balances are as they were saved: neither refilled at a template's rate nor clamped to its capacity
    const mine = Object.fromEntries((await (await fetch(`${gw.url}/api/quotas`, { dispatcher: from('127.0.0.60') })).json())
      .buckets.map((b) => [b.bucket, b]));
    assert.equal(BigInt(mine['team-eng'].current), 1000000000n - EST);
    assert.equal(BigInt(mine['d:ann@example.com'].current), 1000000000n - EST);
    assert.equal(mine['d:ann@example.com'].capacity, 1000000000);
    await gw.stop();
    await mock.stop();
  });

  it('a restart that raises a capacity refills a bucket that sat full up to the old capacity until the restart, as a reload would', async () => {
    const mock = await startMock();
    const db = join(tempDir('kl-quotac-'), 'q.db');
    const cfg = (capacity) => ({ store: { path: db }, quotas: { rc: { capacity, rate: '$60.00/min' } },
      grants: grant([{ bucket: 'rc' }]), providers: providersFor(mock.url) });
    let gw = await startGateway(cfg('$1.00'));
    assert.equal((await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT })).status, 200);
    // saved below capacity; $1 a second fills it again at once, and then it
    // sits full and untouched (nobody looks, so nothing newer is saved)
    await sleep(4000);
    await gw.stop();
    const t0 = Date.now();
    gw = await startGateway(cfg('$100.00'));
    const b = (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets[0];
    const t1 = Date.now();
    assert.equal(b.capacity, 100000000000);
    // full at $1 before the restart, then $1 a second (1,000,000 nd a ms) at
    // most since it: not $1 a second for the 4 s it sat full
    assert.ok(BigInt(b.current) >= 1000000000n, b.current);
    assert.ok(BigInt(b.current) <= 1000000000n + BigInt(t1 - t0) * 1000000n, `${b.current} after ${t1 - t0} ms`);
    await gw.stop();
    await mock.stop();
  });

  it('a caller who hangs up after the request went out, before the answer\'s head, is charged its reservation', async () => {
    // the provider works on (a whole answer is billed whether or not it is
    // read): leaving early is no way around a spend limit
    const mock = await startMock();
    const gw = await startGateway({ quotas: { h: { capacity: '$1.00' } }, grants: grant([{ bucket: 'h' }]),
      providers: providersFor(mock.url), listen: { timeouts: { upstream_first_byte: '1s' } } });
    const level = async () => {
      const b = (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets[0];
      return b.reserved === 0 ? BigInt(b.current) : null;
    };
    const settled = async () => {
      for (let i = 0; i < 100; i++) {
        const l = await level();
        if (l !== null) return l;
        await sleep(50);
      }
      return null;
    };
    const ctl = new AbortController();
    const pending = fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', body: BODY, signal: ctl.signal,
      headers: { 'content-type': 'application/json', 'x-mock': `${EXACT};delay_headers_ms=1500` } }).catch((e) => e);
    await sleep(300);
    ctl.abort();
    await pending;
    await sleep(100);
    assert.equal(await settled(), 1000000000n - EST, 'hanging up is charged the reservation');
    // the provider's time-out for the head: the same
    const r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': `${EXACT};delay_headers_ms=2500` });
    assert.equal(r.status, 504);
    assert.equal(await settled(), 1000000000n - 2n * EST, 'a provider that did not answer in time may still bill');
    await gw.stop();
    await mock.stop();
  });

  it('a log-only bucket in deficit is charged an unknown answer\'s reservation too, not nothing; a cut stream its estimate', async () => {
    const mock = await startMock();
    const gw = await startGateway({ quotas: { lg: { capacity: usd(EST / 2n), on_exceed: 'log' } }, grants: grant([{ bucket: 'lg' }]),
      providers: providersFor(mock.url) });
    const body = JSON.stringify({ model: 'gpt-4o', max_tokens: MAX_TOKENS, stream: true, messages: [{ role: 'user', content: 'hi' }] });
    const amount = BigInt(Math.ceil(Buffer.byteLength(body) / 3)) * IN_ND + BigInt(MAX_TOKENS) * OUT_ND;
    const r = await post(gw, '/v1/chat/completions', body, { 'x-mock': 'events=20;delay_events_ms=100' });
    const reader = r.body.getReader();
    await reader.read(); // then the caller leaves: OpenAI's usage, at the end, never comes
    await reader.cancel();
    const changed = async (from) => {
      let current;
      for (let i = 0; i < 50; i++) {
        await sleep(50);
        current = BigInt((await (await fetch(`${gw.url}/api/quotas`)).json()).buckets[0].current);
        if (current !== from) break;
      }
      return current;
    };
    // a stream is charged its estimate, as its record says
    let current = await changed(EST / 2n);
    const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
    assert.equal(rec.usage_known, 2);
    assert.ok(rec.cost_nanodollars > 0 && BigInt(rec.cost_nanodollars) < amount);
    assert.equal(current, EST / 2n - BigInt(rec.cost_nanodollars));
    // a whole answer the caller hung up on before its head has no usage at all: the whole amount
    const whole = JSON.stringify({ model: 'gpt-4o', max_tokens: MAX_TOKENS, messages: [{ role: 'user', content: 'hi' }] });
    const wholeAmount = BigInt(Math.ceil(Buffer.byteLength(whole) / 3)) * IN_ND + BigInt(MAX_TOKENS) * OUT_ND;
    const ctl = new AbortController();
    const pending = fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', body: whole, signal: ctl.signal,
      headers: { 'content-type': 'application/json', 'x-mock': 'delay_headers_ms=1500' } }).catch((e) => e);
    await sleep(300);
    ctl.abort();
    await pending;
    assert.equal(await changed(current), current - wholeAmount);
    await gw.stop();
    await mock.stop();
  });

  it('a bucket named after a long login keeps its own balance across a restart', async () => {
    const mock = await startMock();
    const db = join(tempDir('kl-quotal-'), 'q.db');
    const login = `k8s:payments-prod/${'x'.repeat(260)}`;
    const cfg = {
      identity: { cidr: [{ range: '127.0.0.62/32', login }], loopback: true },
      store: { path: db },
      quotas: { 'd:<user>': { capacity: '$1.00' } },
      grants: [{ src: [login], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' }, { quotas: [{ bucket: 'd:<user>' }] }] } },
        { src: ['(loopback)'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }] } }],
      providers: providersFor(mock.url),
    };
    let gw = await startGateway(cfg);
    assert.equal((await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT }, '127.0.0.62')).status, 200);
    const mine = (await (await fetch(`${gw.url}/api/quotas`, { dispatcher: from('127.0.0.62') })).json()).buckets[0];
    assert.ok(mine.bucket.length <= 255, mine.bucket);
    assert.equal(BigInt(mine.current), 1000000000n - EST);
    // an admin names it in full: the bucket refilled is that one, shortened as the tables keep it
    const rf = await post(gw, '/api/quotas/refill', JSON.stringify({ bucket: `d:${login}`, amount: '$0.0001' }));
    assert.equal(rf.status, 200, await rf.clone().text());
    const refilled = (await rf.json()).buckets[0];
    assert.equal(refilled.bucket, mine.bucket);
    assert.equal(BigInt(refilled.current), 1000000000n - EST + 100000n);
    const back = (await (await fetch(`${gw.url}/api/quotas`, { dispatcher: from('127.0.0.62') })).json()).buckets[0];
    assert.equal(BigInt(back.current), 1000000000n - EST + 100000n);
    await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT }, '127.0.0.62').then((r) => r.text());
    await gw.stop();
    gw = await startGateway(cfg);
    const after = (await (await fetch(`${gw.url}/api/quotas`, { dispatcher: from('127.0.0.62') })).json()).buckets[0];
    assert.equal(after.bucket, mine.bucket);
    assert.equal(BigInt(after.current), 1000000000n - 2n * EST + 100000n, 'the saved balance is the bucket\'s own');
    await gw.stop();
    // shortened at a character's boundary: half an é is no UTF-8 (PostgreSQL refuses it)
    const accented = `a${'é'.repeat(150)}`;
    cfg.identity.cidr[0].login = accented;
    cfg.grants[0].src = [accented];
    gw = await startGateway(cfg);
    assert.equal((await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT }, '127.0.0.62')).status, 200);
    const name = (await (await fetch(`${gw.url}/api/quotas`, { dispatcher: from('127.0.0.62') })).json()).buckets[0].bucket;
    assert.ok(Buffer.byteLength(name) <= 255 && !name.includes('\ufffd'), name);
    await gw.stop();
    await mock.stop();
  });


  it('idle per-caller buckets are forgotten once full again; one still spent keeps its balance and is enforced', async (t) => {
    const clock = clocked(t);
    if (!clock)
      return;
    const { dir, offset, opts } = clock;
    const mock = await startMock();
    // twenty CI runs, each its own login (an OIDC template with a run id would mint them)
    const runs = Array.from({ length: 20 }, (_, i) => ({ range: `127.0.0.${100 + i}/32`, login: `run-${i}@ci` }));
    const cap = (extra) => ({ 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' }, ...extra] });
    const cfg = {
      identity: { cidr: [{ range: '127.0.0.60/32', login: 'ann@example.com' }, { range: '127.0.0.70/32', login: 'busy@example.com' },
                         ...runs], loopback: true },
      store: { path: join(dir, 'q.db') },
      quotas: { 'total:<user>': { capacity: usd(3n * EST) }, 'ci:<user>': { capacity: usd(EST), rate: `${usd(EST)}/min` } },
      grants: [
        { src: ['ann@example.com'], app: cap([{ quotas: [{ bucket: 'total:<user>' }] }]) },
        { src: runs.map((r) => r.login), app: cap([{ quotas: [{ bucket: 'ci:<user>' }] }, { rate_limit: { requests_per_minute: 10 } }]) },
        { src: ['busy@example.com'], app: cap([{ rate_limit: { requests_per_minute: 1000000 } }]) },
        { src: ['(loopback)'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } },
      ],
      providers: providersFor(mock.url),
    };
    let gw = await startGateway(cfg, opts);
    try {
      const ask = async (ip) => {
        const r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT }, ip);
        await r.text();
        return r.status;
      };
      const count = async () => Number(/^keyless_quota_buckets (\d+)$/m.exec(await (await fetch(`${gw.url}/metrics`)).text())?.[1]);
      const listed = async () => (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets;
      // busy's requests each reserve, and each reservation sweeps 16 of the 4,096 slots
      const sweepPass = async () => {
        for (let i = 0; i < 300; i += 10)
          assert.deepEqual(await Promise.all(Array.from({ length: 10 }, () => ask('127.0.0.70'))), Array(10).fill(200));
      };
      assert.equal(await ask('127.0.0.60'), 200);
      assert.equal(await ask('127.0.0.60'), 200); // ann has one request's worth left, and it never refills
      for (let i = 0; i < runs.length; i++) assert.equal(await ask(`127.0.0.${100 + i}`), 200); // each spends its all
      assert.equal(await count(), 1 + 2 * runs.length);

      writeFileSync(offset, String(11 * 60 * 1000)); // eleven minutes later
      await sweepPass();       // the rate limits go; the CI quotas refilled, to be saved first
      await sleep(1500);       // the writer's tick saves them full
      await sweepPass();
      const left = await listed();
      assert.deepEqual(left.map((b) => b.bucket).filter((n) => !n.startsWith('rpm:busy')), ['total:ann@example.com']);
      assert.equal(await count(), 2); // ann's and busy's
      assert.equal(BigInt(left.find((b) => b.bucket === 'total:ann@example.com').current), EST);
      // still enforced: one more request, then refused
      assert.equal(await ask('127.0.0.60'), 200);
      assert.equal(await ask('127.0.0.60'), 429);
      // a run that comes back starts full, as a new one would
      assert.equal(await ask('127.0.0.105'), 200);
      assert.equal(await ask('127.0.0.105'), 429);
      // the saved rows of the forgotten went too: a restart reads back only
      // the balances still spent (an admin sees them before their owners return)
      await gw.stop();
      gw = await startGateway(cfg, opts);
      const back = await listed();
      assert.deepEqual(back.map((b) => b.bucket).sort(), ['ci:run-5@ci', 'total:ann@example.com']);
      assert.equal(BigInt(back.find((b) => b.bucket === 'total:ann@example.com').current), 0n);
      // and run-5, which never comes back, goes once full again and read ten
      // minutes ago: from memory, and its row from the store
      writeFileSync(offset, String(22 * 60 * 1000));
      await sweepPass();
      await sleep(1500); // the writer's tick deletes the row
      assert.deepEqual((await listed()).map((b) => b.bucket).filter((n) => !n.startsWith('rpm:busy')), ['total:ann@example.com']);
      await gw.stop();
      gw = await startGateway(cfg, opts);
      assert.deepEqual((await listed()).map((b) => b.bucket), ['total:ann@example.com']);
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });

  it('a saved balance of a long login is kept while any quota it may have come from would restore it below full', async (t) => {
    const clock = clocked(t);
    if (!clock)
      return;
    const { dir, offset, opts } = clock;
    const mock = await startMock();
    // past 255 bytes, its buckets' names end in a hash of the whole name:
    // "ci:<user>:total"'s shortened name fits "ci:<user>" only, as written
    const login = `k8s:payments-prod/${'x'.repeat(260)}`;
    const cap = (extra) => ({ 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' }, ...extra] });
    const cfg = {
      identity: { cidr: [{ range: '127.0.0.62/32', login }, { range: '127.0.0.70/32', login: 'busy@example.com' }], loopback: true },
      store: { path: join(dir, 'q.db') },
      quotas: { 'ci:<user>': { capacity: usd(3n * EST), rate: `${usd(3n * EST)}/min` }, 'ci:<user>:total': { capacity: usd(2n * EST) } },
      grants: [
        { src: [login], app: cap([{ quotas: [{ bucket: 'ci:<user>' }, { bucket: 'ci:<user>:total' }] }]) },
        { src: ['busy@example.com'], app: cap([{ rate_limit: { requests_per_minute: 1000000 } }]) },
      ],
      providers: providersFor(mock.url),
    };
    let gw = await startGateway(cfg, opts);
    const ask = (ip) => post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT }, ip).then(async (r) => (await r.text(), r.status));
    try {
      assert.equal(await ask('127.0.0.62'), 200); // one of the two requests its total allows
      await gw.stop();
      gw = await startGateway(cfg, opts);
      writeFileSync(offset, String(11 * 60 * 1000));
      for (let i = 0; i < 300; i += 10) // each reservation sweeps 16 of the 4,096 slots
        assert.deepEqual(await Promise.all(Array.from({ length: 10 }, () => ask('127.0.0.70'))), Array(10).fill(200));
      await sleep(1500);
      assert.equal(await ask('127.0.0.62'), 200);
      assert.equal(await ask('127.0.0.62'), 429, 'the total, which never refills, is spent');
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });

  it('an admin refills a bucket spent before a restart that nobody has used since', async () => {
    const mock = await startMock();
    const db = join(tempDir('kl-quotar-'), 'q.db');
    const cfg = { store: { path: db }, quotas: { 'r:<user>': { capacity: '$1.00' } }, grants: grant([{ bucket: 'r:<user>' }]),
      providers: providersFor(mock.url) };
    let gw = await startGateway(cfg);
    assert.equal((await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT })).status, 200);
    await gw.stop();
    gw = await startGateway(cfg);
    const rf = await post(gw, '/api/quotas/refill', JSON.stringify({ bucket: 'r:(loopback)', amount: '$0.0001' }));
    assert.equal(rf.status, 200, await rf.clone().text());
    assert.equal(BigInt((await rf.json()).buckets[0].current), 1000000000n - EST + 100000n);
    const none = await post(gw, '/api/quotas/refill', JSON.stringify({ bucket: 'nosuch:x', amount: '$1' }));
    assert.equal(none.status, 404);
    assert.match((await none.json()).error.message, /no quota defines a bucket named nosuch:x/);
    // a name the quota could make but nobody uses (a typo) is not credited as a new bucket
    const typo = await post(gw, '/api/quotas/refill', JSON.stringify({ bucket: 'r:(lopback)', amount: '$1' }));
    assert.equal(typo.status, 404);
    assert.match((await typo.json()).error.message, /no bucket named r:\(lopback\) is in use or saved/);
    assert.ok(!(await (await fetch(`${gw.url}/api/quotas`)).json()).buckets.some((b) => b.bucket === 'r:(lopback)'));
    await gw.stop();
    await mock.stop();
  });

  it('zero retention keeps no records, but balances still survive a restart', async () => {
    const mock = await startMock();
    const db = join(tempDir('kl-quota0-'), 'q.db');
    const cfg = {
      store: { path: db },
      database: { retention: { duration: '0' } },
      quotas: { 'z:<user>': { capacity: '$1.00' } },
      grants: grant([{ bucket: 'z:<user>' }]),
      providers: providersFor(mock.url),
    };
    let gw = await startGateway(cfg);
    for (let i = 0; i < 2; i++) assert.equal((await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT })).status, 200);
    const level = (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets[0].current;
    assert.equal(BigInt(level), 1000000000n - 2n * EST);
    assert.equal((await fetch(`${gw.url}/api/requests`)).status, 404);
    await gw.stop();
    gw = await startGateway(cfg);
    const after = (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets[0];
    assert.equal(after.current, level, 'a restart must not refill the budget');
    await gw.stop();
    // the store holds no request record
    const f = join(tempDir('kl-quota0-'), 'read.hujson');
    writeFileSync(f, JSON.stringify({ store: { path: db } }));
    const ex = spawnSync(join(BUILD, 'keyless'), ['export', '--config', f], { encoding: 'utf8' });
    assert.equal(ex.status, 0, ex.stderr);
    assert.equal(ex.stdout, '');
    await mock.stop();
  });

  it('a gateway killed mid-request comes back having spent that request\'s reservation', async () => {
    // The balance is saved about once a second; what requests in flight have
    // reserved is saved as spent, since after kill -9 nothing settles them.
    const mock = await startMock();
    const db = join(tempDir('kl-quotak-'), 'q.db');
    const cfg = {
      store: { path: db },
      quotas: { 'k:<user>': { capacity: '$1.00' } },
      grants: grant([{ bucket: 'k:<user>' }]),
      providers: providersFor(mock.url),
    };
    let gw = await startGateway(cfg);
    assert.equal((await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT })).status, 200);
    const pending = post(gw, '/v1/chat/completions', BODY, { 'x-mock': `${EXACT};delay_headers_ms=30000` }).catch(() => null);
    await sleep(2500); // the writer's once-a-second save has run with the second request in flight
    const during = (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets[0];
    assert.equal(BigInt(during.reserved), EST);
    gw.proc.kill('SIGKILL');
    await pending;
    await new Promise((res) => (gw.proc.exitCode !== null || gw.proc.signalCode ? res() : gw.proc.once('exit', res)));
    gw = await startGateway(cfg);
    const after = (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets[0];
    assert.equal(BigInt(after.current), 1000000000n - 2n * EST, 'the request cut short by the kill is charged its reservation');
    await gw.stop();
    await mock.stop();
  });

  it('a grant naming an undefined bucket is a configuration error (fail closed)', () => {
    const dir = tempDir('kl-qcfg-');
    const f = join(dir, 'c.hujson');
    writeFileSync(f, JSON.stringify({ quotas: { a: { capacity: '$1' } }, grants: grant([{ bucket: 'b' }]) }));
    const r = spawnSync(join(BUILD, 'keyless'), ['check', '--config', f], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /quota bucket "b", which quotas does not define/);
    writeFileSync(f, JSON.stringify({ quotas: { a: { capacity: 'lots' } } }));
    assert.equal(spawnSync(join(BUILD, 'keyless'), ['check', '--config', f]).status, 1);
    // a rate limit in parts of a request is no limit keyless could keep: refused, not truncated
    writeFileSync(f, JSON.stringify({ grants: grant(null, [{ rate_limit: { requests_per_minute: 1.9 } }]) }));
    const frac = spawnSync(join(BUILD, 'keyless'), ['check', '--config', f], { encoding: 'utf8' });
    assert.equal(frac.status, 1);
    assert.match(frac.stderr, /rate_limit values must be whole numbers/);
  });
});

describe('rate limits', () => {
  let mock;
  before(async () => { mock = await startMock(); });
  after(async () => { await mock.stop(); });

  it('a rate limit\'s bucket is no dollar quota: /api/quotas/refill answers 404 and the limit holds', async () => {
    const gw = await startGateway({ grants: grant(null, [{ rate_limit: { requests_per_minute: 1 } }]), providers: providersFor(mock.url) });
    assert.equal((await post(gw, '/v1/chat/completions', BODY)).status, 200);
    const rpm = (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets.find((b) => b.bucket.startsWith('rpm:'));
    assert.ok(rpm, 'the rate limit is listed');
    const rf = await post(gw, '/api/quotas/refill', JSON.stringify({ bucket: rpm.bucket, amount: '$5.00' }));
    assert.equal(rf.status, 404);
    assert.match((await rf.json()).error.message, /no quota defines a bucket named rpm:/);
    assert.equal((await post(gw, '/v1/chat/completions', BODY)).status, 429);
    await gw.stop();
  });

  it('every limit that applies holds: two grants, a broad and a narrow one in a grant, a per-grant limit across a reload', async () => {
    const ap = (...caps) => ({ 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' }, ...caps] });
    const statuses = async (gw, n, body = BODY, ip = '127.0.0.1') => {
      const out = [];
      for (let i = 0; i < n; i++) out.push((await post(gw, '/v1/chat/completions', body, {}, ip)).status);
      return out;
    };
    // two grants on one caller: the narrower one narrows
    let gw = await startGateway({ grants: [
      { src: ['*'], app: ap({ rate_limit: { requests_per_minute: 1000 } }) },
      { src: ['(loopback)'], app: ap({ rate_limit: { requests_per_minute: 2 } }) },
    ], providers: providersFor(mock.url) });
    assert.deepEqual(await statuses(gw, 3), [200, 200, 429]);
    await gw.stop();
    // a broad limit and a narrow one on Claude's models, in one grant, in either order
    const claude = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] });
    for (const caps of [[{ rate_limit: { requests_per_minute: 100 } }, { models: 'anthropic/**', rate_limit: { requests_per_minute: 2 } }],
      [{ models: 'anthropic/**', rate_limit: { requests_per_minute: 2 } }, { rate_limit: { requests_per_minute: 100 } }]]) {
      gw = await startGateway({ grants: [{ src: ['*'], app: ap(...caps) }], providers: providersFor(mock.url) });
      const c = [];
      for (let i = 0; i < 3; i++) c.push((await post(gw, '/v1/messages', claude, { 'anthropic-version': '2023-06-01' })).status);
      assert.deepEqual(c, [200, 200, 429], JSON.stringify(caps));
      assert.deepEqual(await statuses(gw, 2), [200, 200], 'the narrow limit does not touch other models');
      await gw.stop();
    }
    // per grant: a grant added in front of another by a reload neither takes its count nor resets it
    const cfg = {
      identity: { cidr: [{ range: '127.0.0.30/32', login: 'alice@example.com' }, { range: '127.0.0.31/32', login: 'bob@example.com' }] },
      grants: [{ src: ['alice@example.com'], app: ap({ rate_limit: { requests_per_minute: 2, per: 'grant' } }) }],
      providers: providersFor(mock.url),
    };
    gw = await startGateway(cfg);
    assert.deepEqual(await statuses(gw, 3, BODY, '127.0.0.30'), [200, 200, 429]);
    const c2 = JSON.parse(readFileSync(gw.configPath, 'utf8'));
    c2.grants.unshift({ src: ['bob@example.com'], app: ap({ rate_limit: { requests_per_minute: 2, per: 'grant' } }) });
    writeFileSync(gw.configPath, JSON.stringify(c2));
    assert.match(await gw.reload(), /SIGHUP: configuration reloaded/);
    assert.deepEqual(await statuses(gw, 1, BODY, '127.0.0.31'), [200], 'bob has his own grant\'s count');
    assert.deepEqual(await statuses(gw, 1, BODY, '127.0.0.30'), [429], 'alice keeps hers');
    await gw.stop();
  });

  it('requests per minute', async () => {
    const gw = await startGateway({ grants: grant(null, [{ rate_limit: { requests_per_minute: 3 } }]), providers: providersFor(mock.url) });
    for (let i = 0; i < 3; i++) assert.equal((await post(gw, '/v1/chat/completions', BODY)).status, 200);
    const r = await post(gw, '/v1/chat/completions', BODY);
    assert.equal(r.status, 429);
    const ra = Number(r.headers.get('retry-after'));
    assert.ok(ra >= 1 && ra <= 20, `Retry-After ${ra}`);
    assert.equal((await r.json()).error.code, 'rate_limit_exceeded');
    await gw.stop();
  });

  it('tokens per minute (reserved like dollars)', async () => {
    const gw = await startGateway({ grants: grant(null, [{ rate_limit: { tokens_per_minute: PROMPT + MAX_TOKENS } }]), providers: providersFor(mock.url) });
    assert.equal((await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT })).status, 200);
    const r = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': EXACT });
    assert.equal(r.status, 429);
    assert.match((await r.json()).error.message, /rate limit tpm:/);
    await gw.stop();
    // a request without an output cap is sent the one it was counted for, as under a spend quota
    const capped = await startGateway({ grants: grant(null, [{ rate_limit: { tokens_per_minute: 100000 } }]),
      limits: { default_max_output_tokens: 1000 },
      providers: providersFor(mock.url, { ollama: { baseurl: mock.url, models: ['llama3.1:8b'], compatibility: { openai_chat: true } } }) });
    await mock.clear();
    assert.equal((await post(capped, '/v1/chat/completions', JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }))).status, 200);
    assert.equal(JSON.parse((await mock.last()).body).max_completion_tokens, 1000);
    // a model that is not OpenAI's, on a host that is not OpenAI's, gets max_tokens, the cap every
    // OpenAI-compatible server reads (Ollama reads no other); a cap written as null is replaced where it is
    for (const [extra, name] of [[{}, 'max_tokens'], [{ max_tokens: null }, 'max_tokens'], [{ max_completion_tokens: null }, 'max_completion_tokens']]) {
      assert.equal((await post(capped, '/v1/chat/completions', JSON.stringify({ model: 'llama3.1:8b', ...extra, messages: [{ role: 'user', content: 'hi' }] }))).status, 200);
      const sent = JSON.parse((await mock.last()).body);
      assert.equal(sent[name], 1000, JSON.stringify(sent));
      assert.equal(Object.keys(sent).filter((k) => k.startsWith('max_')).length, 1, JSON.stringify(sent));
    }
    await capped.stop();
    // a reasoning request's room for reasoning shrinks to what the limit can ever hold: with
    // 30,000 a minute, 8,192 + 24,576 never fits, and every Codex request was refused
    const tight = await startGateway({ grants: grant(null, [{ rate_limit: { tokens_per_minute: 30000 } }]),
      providers: providersFor(mock.url) });
    await mock.clear();
    const reasoning = JSON.stringify({ model: 'gpt-4o', input: 'hi', reasoning: { effort: 'high' } });
    assert.equal((await post(tight, '/v1/responses', reasoning)).status, 200);
    const cap = JSON.parse((await mock.last()).body).max_output_tokens;
    const prompt = Math.ceil(Buffer.byteLength(reasoning) / 3);
    assert.ok(cap > 8192 && prompt + cap <= 30000 && prompt + cap > 30000 - 300, `cap ${cap}: as much room as fits`);
    await tight.stop();
  });

  it('a spend bucket too small for the reasoning room still serves a reasoning request, with less room', async () => {
    // gpt-4o output at $10/M: 8,192 tokens cost $0.08192, 32,768 $0.32768; a $0.20 bucket holds the first
    const gw = await startGateway({ quotas: { small: { capacity: '$0.20' } }, grants: grant([{ bucket: 'small' }]),
      providers: providersFor(mock.url) });
    await mock.clear();
    const body = JSON.stringify({ model: 'gpt-4o', input: 'hi', reasoning: { effort: 'high' } });
    assert.equal((await post(gw, '/v1/responses', body)).status, 200);
    const cap = JSON.parse((await mock.last()).body).max_output_tokens;
    const cost = BigInt(Math.ceil(Buffer.byteLength(body) / 3)) * IN_ND + BigInt(cap) * OUT_ND;
    assert.ok(cap > 8192 && cap < 32768 && cost <= 200000000n, `cap ${cap}, reserved ${cost} nanodollars`);
    // fitted to what the bucket holds now, not to a full one: the next ones are served too (with less room)
    for (let i = 0; i < 3; i++)
      assert.equal((await post(gw, '/v1/responses', body, { 'x-mock': 'in=10;out=1000' })).status, 200, `request ${i + 2}`);
    await gw.stop();
    // failing over to a dearer provider fits the room again to its price, and sends that cap
    const providers = providersFor(mock.url);
    const backup = { ...providers.openai, preference: 0,
      model_cost_map: [{ match: 'gpt-4o', as: 'gpt-4o', adjustment: 2 }] };
    const gw2 = await startGateway({ quotas: { small: { capacity: '$0.20' } }, grants: grant([{ bucket: 'small' }]),
      providers: { primary: { ...providers.openai, preference: 10, add_headers: ['x-mock: status=503'] }, backup } });
    await mock.clear();
    const r = await post(gw2, '/v1/responses', body);
    assert.equal(r.status, 200, await r.text());
    const sent = (await mock.requests()).map((q) => JSON.parse(q.body).max_output_tokens);
    assert.equal(sent.length, 2);
    assert.ok(sent[1] < sent[0] && sent[1] >= 8192, `caps sent: ${sent}`);
    await gw2.stop();
  });

  it('the reasoning room is fitted with the share for inputs the request points at, not refused for it', async () => {
    // $1, no refill, $0.40 spent: a reasoning request with a file (200,000 referenced tokens, $0.50) fits only with
    // a small room; fitted without the file's share, the room was left whole and the request refused for ever
    const gw = await startGateway({ quotas: { ref: { capacity: '$1.00' } }, grants: grant([{ bucket: 'ref' }]),
      limits: { referenced_input_tokens: 200000 }, providers: providersFor(mock.url) });
    try {
      const spend = await post(gw, '/v1/chat/completions', BODY, { 'x-mock': 'in=0;out=40000' });
      assert.equal(spend.status, 200);
      await spend.text();
      await mock.clear();
      const body = JSON.stringify({ model: 'gpt-4o', reasoning: { effort: 'high' },
        input: [{ role: 'user', content: [{ type: 'input_file', file_id: 'file-abc' }, { type: 'input_text', text: 'hi' }] }] });
      const r = await post(gw, '/v1/responses', body, { 'x-mock': 'in=10;out=10' });
      assert.equal(r.status, 200, await r.text());
      const cap = JSON.parse((await mock.last()).body).max_output_tokens;
      assert.ok(cap >= 8192 && cap < 10000, `cap ${cap}: what $0.10 buys at $10/M, the file's $0.50 aside`);
    } finally {
      await gw.stop();
    }
  });

  it('concurrent requests', async () => {
    const gw = await startGateway({ grants: grant(null, [{ rate_limit: { concurrent: 2, per: 'grant' } }]), providers: providersFor(mock.url) });
    const slow = () => post(gw, '/v1/chat/completions', JSON.stringify({ model: 'gpt-4o', stream: true, messages: [] }),
      { 'x-mock': 'events=5;delay_events_ms=150' });
    const a = await slow(), b = await slow();
    const c = await post(gw, '/v1/chat/completions', BODY);
    assert.equal(c.status, 429);
    assert.match((await c.json()).error.message, /concurrent:/);
    await a.text();
    await b.text();
    let ok = 0;
    for (let i = 0; i < 50 && ok !== 200; i++) {
      ok = (await post(gw, '/v1/chat/completions', BODY)).status;
      if (ok !== 200) await sleep(20);
    }
    assert.equal(ok, 200, 'slots are given back when requests end');
    // a reload that raises the limit gives the slots at once
    const c2 = JSON.parse(readFileSync(gw.configPath, 'utf8'));
    c2.grants = grant(null, [{ rate_limit: { concurrent: 4, per: 'grant' } }]);
    writeFileSync(gw.configPath, JSON.stringify(c2));
    assert.match(await gw.reload(), /SIGHUP: configuration reloaded/);
    const running = [await slow(), await slow(), await slow()];
    assert.equal((await post(gw, '/v1/chat/completions', BODY)).status, 200, 'a fourth slot');
    await Promise.all(running.map((x) => x.text()));
    await gw.stop();
  });
});
