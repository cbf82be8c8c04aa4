// The request record: one per request, including refused, failed, cancelled
// and interrupted ones, in SQLite and in a PostgreSQL shared by gateways.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import http from 'node:http';
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startMock, startGateway, providersFor, KEYS, assertNoKeys, from, BUILD, rawRequest, tempDir } from './lib/harness.mjs';

const USER = '127.0.0.40', ADMIN = '127.0.0.41', OUTSIDER = '127.0.0.42';
const identity = {
  cidr: [
    { range: '127.0.0.40/32', login: 'uma@example.com' },
    { range: '127.0.0.41/32', login: 'root@example.com' },
    { range: '127.0.0.42/32', login: 'nobody@example.com' },
  ],
  loopback: true,
};
const grants = [
  { src: ['uma@example.com', '(loopback)'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: ['openai/*', 'anthropic/*'] }] } },
  { src: ['root@example.com'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } },
];

async function getJSON(gw, path, ip = ADMIN) {
  const r = await fetch(`${gw.url}${path}`, { dispatcher: from(ip) });
  return { status: r.status, body: await r.json() };
}

// Records are written asynchronously: wait until the store has n of them.
async function waitForRecords(gw, n, filter = '') {
  let got = [];
  for (let i = 0; i < 100; i++) {
    got = (await getJSON(gw, `/api/requests?limit=1000${filter}`)).body.requests ?? [];
    if (got.filter((r) => r.path !== '/api/requests').length >= n) return got.filter((r) => r.path !== '/api/requests');
    await sleep(50);
  }
  return got;
}

// A request's record, polled until until(record) holds (bounded: ~10 s).
async function recordUntil(gw, id, until) {
  let rec;
  for (let i = 0; i < 200; i++) {
    rec = (await getJSON(gw, `/api/requests/${id}`)).body;
    if (until(rec)) break;
    await sleep(50);
  }
  return rec;
}

// A stream the provider answers slowly, its first bytes read and its record seen in progress: a request in flight.
async function streamInFlight(gw) {
  const r = await chat(gw, USER, { model: 'gpt-4o', stream: true, messages: [] }, { 'x-mock': 'events=100;delay_events_ms=100' });
  const id = r.headers.get('x-keyless-request-id');
  const reader = r.body.getReader();
  await reader.read();
  assert.equal((await recordUntil(gw, id, (x) => x.state === 'in_progress')).state, 'in_progress');
  return { id, reader };
}

// other, a gateway just started on PostgreSQL, left the request id of
// another gateway in flight alone; then the stream (reader), other and the
// rest are stopped.
async function leftInFlight(other, id, reader, ...rest) {
  try {
    assert.equal((await getJSON(other, `/api/requests/${id}`)).body.state, 'in_progress');
    assert.doesNotMatch(other.output(), /marked interrupted/);
  } finally {
    await reader.cancel();
    for (const x of [other, ...rest]) await x.stop();
  }
}

function chat(gw, ip, body, headers = {}) {
  return fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST', dispatcher: from(ip), headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

describe('records (SQLite)', () => {
  let mock, gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({ identity, grants, store: { captures: 'full' }, providers: providersFor(mock.url) });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  it('every outcome has a record with status and error class', async () => {
    const ok = await chat(gw, USER, { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] },
      { 'x-claude-code-session-id': 'sess-42', 'user-agent': 'records-test/1.0' });
    assert.equal(ok.status, 200);
    await ok.text();
    const up500 = await chat(gw, USER, { model: 'gpt-4o', messages: [] }, { 'x-mock': 'status=500' });
    assert.equal(up500.status, 500);
    await up500.text();
    const refused = await chat(gw, OUTSIDER, { model: 'gpt-4o', messages: [] });
    assert.equal(refused.status, 403);
    await refused.text();
    const notGranted = await chat(gw, USER, { model: 'gemini-2.5-flash', messages: [] });
    assert.equal(notGranted.status, 404);
    await notGranted.text();
    const reset = await chat(gw, USER, { model: 'gpt-4o', stream: true, messages: [] }, { 'x-mock': 'events=6;reset_after=2' });
    await reset.text().catch(() => {});
    // a client that leaves mid-stream
    const ctl = new AbortController();
    const r = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', dispatcher: from(USER), signal: ctl.signal,
      headers: { 'content-type': 'application/json', 'x-mock': 'events=40;delay_events_ms=100' },
      body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [] }),
    });
    await r.body.getReader().read();
    ctl.abort();

    const recs = await waitForRecords(gw, 6);
    const find = (pred) => recs.find(pred);
    const okRec = find((x) => x.status === 200 && x.session_id === 'sess-42');
    assert.ok(okRec, JSON.stringify(recs, null, 1));
    assert.equal(okRec.login, 'uma@example.com');
    assert.equal(okRec.identity_source, 'cidr');
    assert.equal(okRec.provider, 'openai');
    assert.equal(okRec.model_requested, 'gpt-4o');
    assert.equal(okRec.endpoint, 'openai.chat');
    assert.equal(okRec.dialect, 'openai');
    assert.equal(okRec.user_agent, 'records-test/1.0');
    assert.equal(okRec.state, 'done');
    assert.match(okRec.source_addr, /^127\.0\.0\.40:\d+$/);
    assert.ok(okRec.ended_at >= okRec.started_at);
    assert.ok(okRec.bytes_out > 0);
    assert.equal(find((x) => x.status === 500)?.error_class, 'upstream_error');
    assert.equal(find((x) => x.status === 403)?.error_class, 'forbidden');
    assert.equal(find((x) => x.status === 403)?.login, 'nobody@example.com');
    assert.equal(find((x) => x.status === 404 && x.model_requested === 'gemini-2.5-flash')?.error_class, 'not_found');
    assert.ok(find((x) => x.error_class === 'stream_interrupted'), 'provider reset mid-stream');
    assert.ok(find((x) => x.error_class === 'client_closed'), 'client gone mid-stream');
  });

  it('captures redact credentials and hold no provider key', async () => {
    const r = await chat(gw, USER, { model: 'gpt-4o', messages: [] }, { authorization: 'Bearer caller-secret-1', cookie: 'a=b' });
    const id = r.headers.get('x-keyless-request-id');
    await r.text();
    let rec;
    for (let i = 0; i < 50 && !(rec && rec.state === 'done'); i++) {
      await sleep(50);
      rec = (await getJSON(gw, `/api/requests/${id}`)).body;
    }
    assert.match(rec.request_headers, /authorization: \[redacted\]/i);
    assert.match(rec.request_headers, /cookie: \[redacted\]/i);
    // the provider's headers as relayed (none were kept before)
    assert.match(rec.response_headers, /^content-type: application\/json$/im);
    assert.ok(!rec.response_headers.includes('\r'));
    assert.ok(!JSON.stringify(rec).includes('caller-secret-1'));
    assert.ok(rec.request_body.includes('gpt-4o'));
    const all = spawnSync(join(BUILD, 'keyless'), ['export', '--config', gw.configPath], { encoding: 'utf8' });
    assert.equal(all.status, 0, all.stderr);
    assert.ok(all.stdout.split('\n').length > 5);
    assertNoKeys(assert, all.stdout, 'exported records');
  });

  it('users see only their own records; admins see everyone', async () => {
    const mine = await getJSON(gw, '/api/requests?limit=1000', USER);
    assert.equal(mine.status, 200);
    assert.ok(mine.body.requests.length > 0);
    assert.ok(mine.body.requests.every((x) => x.login === 'uma@example.com'));
    const asked = await getJSON(gw, '/api/requests?user=root@example.com', USER);
    assert.ok(asked.body.requests.every((x) => x.login === 'uma@example.com'));
    const all = await getJSON(gw, '/api/requests?limit=1000', ADMIN);
    assert.ok(all.body.requests.some((x) => x.login === 'nobody@example.com'));
    const none = await getJSON(gw, '/api/usage', OUTSIDER);
    assert.equal(none.status, 403);
    const other = all.body.requests.find((x) => x.login === 'nobody@example.com');
    assert.equal((await getJSON(gw, `/api/requests/${other.id}`, USER)).status, 404);
  });

  it('GET /api/usage groups by user, model, provider, day, session', async () => {
    const u = await getJSON(gw, '/api/usage?group_by=user,model,provider,day,session&since=1h');
    assert.equal(u.status, 200);
    const row = u.body.rows.find((x) => x.session === 'sess-42');
    assert.equal(row.user, 'uma@example.com');
    assert.equal(row.provider, 'openai');
    assert.match(row.day, /^\d{4}-\d{2}-\d{2}$/);
    assert.equal((await getJSON(gw, '/api/usage?group_by=color')).status, 400);
    const cli = spawnSync(join(BUILD, 'keyless'), ['usage', '--config', gw.configPath, '--by', 'user', '--since', '1h'], { encoding: 'utf8' });
    assert.equal(cli.status, 0, cli.stderr);
    assert.match(cli.stdout, /uma@example\.com/);
    assert.ok(cli.stdout.split('\n').every((line) => !/ $/.test(line)), 'no line ends in blanks');
    // refused requests have no price: their cost is unknown, not $0
    const nobody = cli.stdout.split('\n').find((line) => line.startsWith('nobody@example.com')).trim().split(/ {2,}/);
    assert.equal(nobody[7], '-');
    assert.equal(nobody[8], nobody[1], 'every request of the row unpriced');
    // an argument that is no usage of the command is a usage error (2), help is no error
    const run = (...args) => spawnSync(join(BUILD, 'keyless'), args, { encoding: 'utf8' });
    for (const [args, said] of [[['--by', 'user,bogus'], /cannot group by "bogus"/], [['--user', '--json'], /--user needs a value/],
      [['--since', '1h', '--since', '2h'], /--since is given twice/], [['--json=no'], /--json takes no value/],
      [['--since', '1h', '--until', '2h'], /--since must be before --until/]]) {
      const bad = run('usage', '--config', gw.configPath, ...args);
      assert.equal(bad.status, 2, args.join(' '));
      assert.match(bad.stderr, said);
    }
    assert.equal(run('usage', '--user=--odd', '--config', gw.configPath).status, 0);
    const exportBackwards = run('export', '--config', gw.configPath, '--since', '2026-11-02', '--until', '2026-11-01');
    assert.equal(exportBackwards.status, 2);
    assert.match(exportBackwards.stderr, /--since must be before --until/);
    assert.match(run('export', '--help').stdout, /--model M\] \[--format jsonl\]/, 'export --help names --model');
    for (const cmd of ['check', 'usage', 'export', 'serve']) {
      const help = run(cmd, '--help');
      assert.equal(help.status, 0, cmd);
      assert.match(help.stdout, /^usage: keyless/);
    }
    // a reader never writes: a file that is no store stays as it was
    const empty = join(dirname(gw.configPath), 'empty.db');
    writeFileSync(empty, '');
    const onEmpty = join(dirname(gw.configPath), 'on-empty.hujson');
    writeFileSync(onEmpty, JSON.stringify({ ...JSON.parse(readFileSync(gw.configPath, 'utf8')), store: { driver: 'sqlite', path: empty } }));
    const none = run('usage', '--config', onEmpty);
    assert.equal(none.status, 1);
    assert.match(none.stderr, /no such table: requests/);
    assert.equal(statSync(empty).size, 0);
    const json = spawnSync(join(BUILD, 'keyless'), ['usage', '--config', gw.configPath, '--by', 'model', '--json'], { encoding: 'utf8' });
    assert.ok(JSON.parse(json.stdout).some((x) => x.model === 'gpt-4o'));
    // the service's secrets (an exporter's, in keyless.env or systemd credentials) are not the reader's: keyless usage
    // reads the records without them, where keyless check (the service's) refuses the file
    const withS3 = join(dirname(gw.configPath), 'with-s3.hujson');
    writeFileSync(withS3, JSON.stringify({ ...JSON.parse(readFileSync(gw.configPath, 'utf8')), exporters: { s3: {
      bucket_name: 'llm-audit', region: 'eu-central-1', access_key_id: '${KL_TEST_UNSET_S3_ID}',
      access_secret: 'file:/nonexistent/s3-secret' } } }));
    const reader = spawnSync(join(BUILD, 'keyless'), ['usage', '--config', withS3, '--by', 'user', '--since', '1h'], { encoding: 'utf8' });
    assert.equal(reader.status, 0, reader.stderr);
    assert.match(reader.stdout, /uma@example\.com/);
    const strict = spawnSync(join(BUILD, 'keyless'), ['check', '--config', withS3], { encoding: 'utf8' });
    assert.equal(strict.status, 1);
    assert.match(strict.stderr, /KL_TEST_UNSET_S3_ID/);
    // output that cannot be written (a full disk) is a failure, not an empty success
    for (const cmd of [['usage'], ['export', '--since', '1h']]) {
      const full = spawnSync('sh', ['-c', `"$0" "$@" > /dev/full`, join(BUILD, 'keyless'), ...cmd, '--config', gw.configPath],
        { encoding: 'utf8' });
      assert.equal(full.status, 1, cmd[0]);
      assert.match(full.stderr, new RegExp(`keyless ${cmd[0]}: writing the output failed`));
    }
  });

  it('paging with next_before walks every record once', async () => {
    const seen = new Set();
    let before = '';
    for (let i = 0; i < 100; i++) {
      const p = await getJSON(gw, `/api/requests?limit=3${before ? `&before=${before}` : ''}`);
      for (const x of p.body.requests) {
        assert.ok(!seen.has(x.id));
        seen.add(x.id);
      }
      if (!p.body.next_before) break;
      before = p.body.next_before;
    }
    assert.ok(seen.size >= 8);
  });
});

describe('keyless usage and export before any store exists', () => {
  it('print an empty report and exit 0, say why on stderr, and make no file', () => {
    // a new host, or one whose gateway has not started yet: "no records", not "cannot open"
    const dir = tempDir('kl-no-store-');
    for (const db of [join(dir, 'keyless.db'), join(dir, 'not-made-yet', 'keyless.db')]) {
      const cfg = join(dir, 'keyless.hujson');
      writeFileSync(cfg, JSON.stringify({ providers: providersFor('http://127.0.0.1:9'), store: { path: db } }));
      const run = (...args) => spawnSync(join(BUILD, 'keyless'), [...args, '--config', cfg], { encoding: 'utf8' });
      const table = run('usage', '--by', 'user,day');
      assert.equal(table.status, 0, table.stderr);
      assert.equal(table.stdout.trim().split('\n').length, 1, table.stdout);
      assert.match(table.stdout, /^user {2}day {2}requests/);
      assert.match(table.stderr, /no record store at \S*keyless\.db yet/);
      const json = run('usage', '--json');
      assert.equal(json.status, 0, json.stderr);
      assert.deepEqual(JSON.parse(json.stdout), []);
      const ex = run('export', '--since', '7d');
      assert.equal(ex.status, 0, ex.stderr);
      assert.equal(ex.stdout, '');
      assert.match(ex.stderr, /no record store at \S*keyless\.db yet/);
      assert.ok(!existsSync(db), 'no store file made');
      // bad arguments are still refused
      assert.equal(run('usage', '--by', 'bogus').status, 2);
    }
  });
});

describe('in-progress records', () => {
  it('are written for requests still running 100 ms after they are forwarded, and never for quick ones', async () => {
    const mock = await startMock();
    // a guardrail hook that takes 300 ms: the 100 ms count from forwarding,
    // so a quick answer after a slow hook is still a quick request
    const hook = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"action": "allow"}');
      }, 300));
    });
    await new Promise((r) => hook.listen(0, '127.0.0.1', r));
    const path = join(tempDir('kl-begin-'), 'records.db');
    const hooked = [{ src: ['uma@example.com'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' },
      { models: '**', send_hooks: [{ name: 'slow', events: ['pre_request'], send: [] }] }] } }, grants[1]];
    const config = {
      identity, grants: hooked, store: { path }, providers: providersFor(mock.url),
      hooks: { slow: { url: `http://127.0.0.1:${hook.address().port}/` } },
    };
    await (await startGateway(config)).stop(); // the schema is in place
    // every row inserted, with its state at insertion
    const sql = (q) => spawnSync('sqlite3', ['-batch', path, q], { encoding: 'utf8' });
    let out = sql('CREATE TABLE inserted (id TEXT, state TEXT);' +
      'CREATE TRIGGER log_insert AFTER INSERT ON requests BEGIN INSERT INTO inserted VALUES (new.id, new.state); END;');
    assert.equal(out.status, 0, out.stderr);
    const gw = await startGateway(config);
    const quick = await chat(gw, USER, { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(quick.status, 200);
    await quick.text();
    const slow = await chat(gw, USER, { model: 'gpt-4o', stream: true, messages: [] },
      { 'x-mock': 'events=8;delay_events_ms=100' });
    const reader = slow.body.getReader();
    await reader.read();
    const slowId = slow.headers.get('x-keyless-request-id');
    // while it runs, the record says so
    const running = await recordUntil(gw, slowId, (r) => r.state === 'in_progress');
    assert.equal(running.state, 'in_progress', JSON.stringify(running));
    assert.equal(running.login, 'uma@example.com');
    // what was known when it was forwarded, not part of the answer (the
    // stream had sent its first event when the record was written)
    assert.equal(running.upstream_status, null, JSON.stringify(running));
    assert.equal(running.first_byte_at, null);
    assert.equal(running.bytes_out, 0);
    assert.ok(!running.usage_known);
    while (!(await reader.read()).done);
    const done = await recordUntil(gw, slowId, (r) => r.state === 'done');
    assert.equal(done.state, 'done', JSON.stringify(done));
    const quickId = quick.headers.get('x-keyless-request-id');
    assert.equal((await recordUntil(gw, quickId, (r) => r.state === 'done')).state, 'done');
    await gw.stop();
    out = sql('SELECT id || \':\' || state FROM inserted ORDER BY rowid');
    assert.equal(out.status, 0, out.stderr);
    const rows = out.stdout.trim().split('\n');
    // the quick chat and the /api/ reads: one row each, inserted done; the
    // stream: its in-progress row, then the final record as an update
    assert.ok(rows.includes(`${quickId}:done`), out.stdout);
    assert.ok(rows.includes(`${slowId}:in_progress`), out.stdout);
    assert.deepEqual(rows.filter((r) => r.endsWith(':in_progress')), [`${slowId}:in_progress`], out.stdout);
    assert.equal(rows.filter((r) => r.startsWith(slowId)).length, 1, out.stdout);
    assert.ok(rows.length >= 4, out.stdout);
    await mock.stop();
    await new Promise((r) => hook.close(r));
  });
});

describe('records survive kill -9', () => {
  const pg = process.env.KEYLESS_TEST_PG_URL;
  for (const driver of ['sqlite', 'postgres']) {
    it(`${driver}: a stream in flight when the gateway is killed is recorded as interrupted after restart`,
      { skip: driver === 'postgres' && !pg && 'KEYLESS_TEST_PG_URL is not set (make test starts PostgreSQL)' }, async () => {
      const mock = await startMock();
      const store = driver === 'sqlite'
        ? { path: join(tempDir('kl-kill-'), 'records.db') }
        : { driver: 'postgres', url: pg, instance: `gw-kill-${process.pid}` };
      const config = { identity, grants, store, providers: providersFor(mock.url) };
      // PostgreSQL: another gateway's request in flight on the same database
      // is not this restart's to mark
      const other = driver === 'postgres' &&
        await startGateway({ ...config, store: { ...store, instance: `gw-other-${process.pid}` } });
      const otherRes = other && await chat(other, USER, { model: 'gpt-4o', stream: true, messages: [] }, { 'x-mock': 'events=100;delay_events_ms=100' });
      const gw = await startGateway(config);
      const r = await chat(gw, USER, { model: 'gpt-4o', stream: true, messages: [] }, { 'x-mock': 'events=100;delay_events_ms=100' });
      const id = r.headers.get('x-keyless-request-id');
      const reader = r.body.getReader();
      await reader.read();
      // killed once its in-progress record is in the store (a fixed wait raced a slow commit on a loaded machine)
      const running = await recordUntil(gw, id, (x) => x.state === 'in_progress');
      assert.equal(running.state, 'in_progress', JSON.stringify(running));
      gw.proc.kill('SIGKILL');
      await reader.read().catch(() => {});
      await new Promise((res) => (gw.proc.exitCode !== null || gw.proc.signalCode ? res() : gw.proc.once('exit', res)));
      // the same store, a new process
      const gw2 = await startGateway(config);
      const rec = (await getJSON(gw2, `/api/requests/${id}`)).body;
      assert.equal(rec.state, 'interrupted', JSON.stringify(rec));
      assert.equal(rec.error_class, 'interrupted');
      assert.equal(rec.login, 'uma@example.com');
      assert.equal(rec.model_requested, 'gpt-4o');
      if (other) {
        const otherId = otherRes.headers.get('x-keyless-request-id');
        const o = (await getJSON(gw2, `/api/requests/${otherId}`)).body;
        assert.equal(o.state, 'in_progress', JSON.stringify(o));
        await otherRes.body.cancel();
        await other.stop();
      }
      await gw2.stop();
      await mock.stop();
    });
  }
});

describe('records of a gateway that never comes back', () => {
  it('PostgreSQL: the requests in flight of a gateway killed for good are marked interrupted by the next one to start, not left in progress for ever',
    { skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set (make test starts PostgreSQL)' }, async () => {
    const mock = await startMock();
    const pg = process.env.KEYLESS_TEST_PG_URL;
    const config = (instance) => ({ identity, grants, store: { driver: 'postgres', url: pg, instance }, providers: providersFor(mock.url) });
    // a gateway that is replaced rather than restarted (a new host, a new
    // pod name): nobody starts again under its name
    const gone = await startGateway(config(`gw-gone-${process.pid}`));
    const { id, reader } = await streamInFlight(gone);
    // one still running under its own name keeps its requests in flight
    const alive = await startGateway(config(`gw-alive-${process.pid}`));
    const { id: aliveId, reader: aliveReader } = await streamInFlight(alive);
    gone.proc.kill('SIGKILL');
    await reader.read().catch(() => {});
    await new Promise((res) => (gone.proc.exitCode !== null || gone.proc.signalCode ? res() : gone.proc.once('exit', res)));
    await sleep(200); // the server ends the killed gateway's sessions, and their locks, when it reads their close
    const next = await startGateway(config(`gw-next-${process.pid}`));
    const rec = (await getJSON(next, `/api/requests/${id}`)).body;
    assert.equal(rec.state, 'interrupted', JSON.stringify(rec));
    assert.equal(rec.error_class, 'interrupted');
    assert.equal((await getJSON(next, `/api/requests/${aliveId}`)).body.state, 'in_progress');
    await aliveReader.cancel();
    await alive.stop();
    await next.stop();
    await mock.stop();
  });

  it('PostgreSQL: a gateway that could not hold its name at start (a dead session of its crashed predecessor still held it) takes it once free, so another gateway starting later leaves its requests in flight alone',
    { skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set (make test starts PostgreSQL)' }, async () => {
    const mock = await startMock();
    const pg = process.env.KEYLESS_TEST_PG_URL;
    const name = `gw-reclaim-${process.pid}`;
    const config = (instance) => ({ identity, grants, store: { driver: 'postgres', url: pg, instance }, providers: providersFor(mock.url) });
    // the session of a gateway that died with its host: it holds the name until PostgreSQL notices
    const dead = spawn('psql', [pg, '-Aq'], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    dead.stdout.on('data', (d) => (out += d));
    dead.stdin.write(`SELECT pg_try_advisory_lock(27500, hashtext('${name}'));\n`);
    for (let i = 0; i < 100 && !out.includes('t'); i++) await sleep(50);
    assert.match(out, /t/, 'the dead session holds the name');
    const gw = await startGateway(config(name));
    assert.match(gw.output(), /is held by another session/);
    dead.stdin.end();
    await new Promise((r) => (dead.exitCode !== null ? r() : dead.once('exit', r)));
    await sleep(5500); // the name is free now; the gateway asks for it again every 5 s
    const { id, reader } = await streamInFlight(gw);
    const other = await startGateway(config(`gw-reclaim-other-${process.pid}`));
    await leftInFlight(other, id, reader, gw, mock);
  });
});

async function loadTest(gwList, n) {
  const reqs = [];
  for (let i = 0; i < n; i++) {
    const gw = gwList[i % gwList.length];
    reqs.push(chat(gw, USER, { model: 'gpt-4o', messages: [{ role: 'user', content: `n${i}` }] }, { 'x-load-test': 'yes' })
      .then(async (r) => { await r.text(); return r.status; }));
  }
  return Promise.all(reqs);
}

describe('records under load', () => {
  it('SQLite: record count equals request count', async () => {
    const mock = await startMock();
    const gw = await startGateway({ identity, grants, providers: providersFor(mock.url) });
    const statuses = await loadTest([gw], 600);
    assert.ok(statuses.every((s) => s === 200));
    let n = 0;
    for (let i = 0; i < 100 && n < 600; i++) {
      n = (await getJSON(gw, '/api/usage?group_by=endpoint&user=uma@example.com')).body.rows.find((x) => x.endpoint === 'openai.chat')?.requests ?? 0;
      if (n < 600) await sleep(50);
    }
    assert.equal(n, 600);
    await gw.stop();
    await mock.stop();
  });

  it('PostgreSQL shared by two gateways: record count equals request count', { skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set (make test starts PostgreSQL)' }, async () => {
    const mock = await startMock();
    const url = process.env.KEYLESS_TEST_PG_URL;
    const store = (instance) => ({ driver: 'postgres', url, instance });
    const g1 = await startGateway({ identity, grants, store: store('gw-a'), providers: providersFor(mock.url) });
    const g2 = await startGateway({ identity, grants, store: store('gw-b'), providers: providersFor(mock.url) });
    const before = (await getJSON(g1, '/api/usage?group_by=endpoint&user=uma@example.com')).body.rows.find((x) => x.endpoint === 'openai.chat')?.requests ?? 0;
    const statuses = await loadTest([g1, g2], 600);
    assert.ok(statuses.every((s) => s === 200));
    let n = 0;
    for (let i = 0; i < 100 && n < before + 600; i++) {
      n = (await getJSON(g2, '/api/usage?group_by=endpoint&user=uma@example.com')).body.rows.find((x) => x.endpoint === 'openai.chat')?.requests ?? 0;
      if (n < before + 600) await sleep(50);
    }
    assert.equal(n - before, 600);
    const byInstance = (await getJSON(g1, '/api/requests?limit=1000&user=uma@example.com')).body.requests;
    assert.ok(byInstance.some((x) => x.instance === 'gw-a') && byInstance.some((x) => x.instance === 'gw-b'));
    await g1.stop();
    await g2.stop();
    await mock.stop();
    assertNoKeys(assert, g1.output() + g2.output(), 'gateway logs');
  });
});

describe('records (PostgreSQL)', { skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set (make test starts PostgreSQL)' }, () => {
  it('usage by every dimension, exact time ranges and retention', async () => {
    const mock = await startMock();
    const gw = await startGateway({
      identity, grants,
      store: { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance: 'gw-report', captures: 'full' },
      database: { retention: { duration: '3s', purge: ['captures'] } },
      providers: providersFor(mock.url),
    });
    const session = `sess-pg-${process.pid}`;
    const r = await chat(gw, USER, { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] },
      { 'x-claude-code-session-id': session });
    assert.equal(r.status, 200);
    const id = r.headers.get('x-keyless-request-id');
    await r.text();
    let rec = await recordUntil(gw, id, (x) => x.state === 'done');
    assert.equal(rec.state, 'done');
    assert.ok(rec.request_body, 'captured at first');
    assert.match(rec.request_body, /^\{"model":"gpt-4o"/, 'the captured body as sent, not bytea hex');

    // "user" is a reserved word in PostgreSQL: every dimension at once
    const u = await getJSON(gw, '/api/usage?group_by=user,model,provider,day,session,node,endpoint&since=1h');
    assert.equal(u.status, 200, JSON.stringify(u.body));
    const row = u.body.rows.find((x) => x.session === session);
    assert.equal(row.user, 'uma@example.com');
    assert.equal(row.model, rec.model_served ?? 'gpt-4o');
    assert.equal(row.requests, 1);
    const cli = spawnSync(join(BUILD, 'keyless'), ['usage', '--config', gw.configPath, '--by', 'user', '--since', '1h'], { encoding: 'utf8' });
    assert.equal(cli.status, 0, cli.stderr);
    assert.match(cli.stdout, /uma@example\.com/);
    // groups without a value come first, as from SQLite (this store holds
    // records of /api/ reads, which have no provider)
    const byProvider = (await getJSON(gw, '/api/usage?group_by=provider')).body.rows;
    assert.ok(byProvider.some((x) => x.provider === null) && byProvider[0].provider === null, JSON.stringify(byProvider));

    // since is inclusive and until exclusive, to the millisecond (the range
    // also bounds the primary key, whose order is the database's collation)
    const t = rec.started_at;
    const ids = async (q) => (await getJSON(gw, `/api/requests?session=${session}&${q}`)).body.requests.map((x) => x.id);
    assert.deepEqual(await ids(`since=${t}`), [id]);
    assert.deepEqual(await ids(`since=${t + 1}`), []);
    assert.deepEqual(await ids(`until=${t + 1}`), [id]);
    assert.deepEqual(await ids(`until=${t}`), []);
    assert.deepEqual(await ids(`since=${t}&until=${t + 1}`), [id]);
    // as a script writes them: toISOString's milliseconds, an RFC 3339 offset
    assert.deepEqual(await ids(`since=${new Date(t).toISOString()}`), [id]);
    assert.deepEqual(await ids(`since=${new Date(t + 1).toISOString()}`), []);
    const plus2 = new Date(t + 7200000).toISOString().replace('Z', '+02:00');
    assert.deepEqual(await ids(`since=${encodeURIComponent(plus2)}`), [id]);
    const open = (await getJSON(gw, '/api/usage?group_by=')).body;
    assert.ok(open.since === null && open.until === null, JSON.stringify(open));

    // retention: the capture goes, the metric row stays
    rec = await recordUntil(gw, id, (x) => !x.request_body);
    assert.equal(rec.request_body, null, 'the capture was purged');
    assert.equal(rec.status, 200, 'the metric row stays');
    await gw.stop();
    await mock.stop();
  });

  it('a login too long for the store\'s index is refused (401); the records behind it are written', async () => {
    const mock = await startMock();
    const gw = await startGateway({
      identity: { ...identity, serve_headers: true },
      grants: [...grants, { src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: 'openai/*' }] } }],
      store: { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance: `gw-longlogin-${process.pid}` },
      providers: providersFor(mock.url),
    });
    // random, so PostgreSQL cannot compress it below its index limit
    const login = (n) => randomBytes(n).toString('base64url').slice(0, n - 12) + '@example.com';
    const serve = (l) => chat(gw, '127.0.0.1', { model: 'gpt-4o', messages: [] }, { 'tailscale-user-login': l });
    const most = login(2048);
    const ok = await serve(most);
    assert.equal(ok.status, 200, await ok.clone().text());
    const okRec = await recordUntil(gw, ok.headers.get('x-keyless-request-id'), (x) => x.state === 'done');
    assert.equal(okRec.login, most, 'the longest login accepted fits the store');
    const long = await serve(login(6000));
    assert.equal(long.status, 401);
    assert.match((await long.json()).error.message, /has a login of 6000 bytes; at most 2048 are accepted/);
    const longRec = await recordUntil(gw, long.headers.get('x-keyless-request-id'), (x) => x.state === 'done');
    assert.equal(longRec.status, 401);
    assert.equal(longRec.login, null);
    // the store goes on writing
    const after = await chat(gw, USER, { model: 'gpt-4o', messages: [] });
    assert.equal(after.status, 200);
    const rec = await recordUntil(gw, after.headers.get('x-keyless-request-id'), (x) => x.state === 'done');
    assert.equal(rec.state, 'done');
    await gw.stop();
    await mock.stop();
  });

  it('a session the server ends (restart, pg_terminate_backend) is replaced on the next call', async () => {
    const mock = await startMock();
    const app = `kl-term-${process.pid}`;
    const url = `${process.env.KEYLESS_TEST_PG_URL}?application_name=${app}`;
    const gw = await startGateway({
      identity, grants, store: { driver: 'postgres', url, instance: app }, providers: providersFor(mock.url),
    });
    const first = await chat(gw, USER, { model: 'gpt-4o', messages: [] });
    assert.equal(first.status, 200);
    await first.text();
    assert.equal((await getJSON(gw, '/api/usage')).status, 200);
    const t = spawnSync('psql', [process.env.KEYLESS_TEST_PG_URL, '-Atc',
      `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '${app}'`],
    { encoding: 'utf8' });
    assert.equal(t.status, 0, t.stderr);
    assert.equal(t.stdout.trim(), '4', 'the writer\'s, the query thread\'s, the quota leases\' and the stored answers\' sessions');
    await sleep(200);
    const u = await getJSON(gw, '/api/usage');
    assert.equal(u.status, 200, JSON.stringify(u.body));
    // an answer this gateway has not seen is looked up in the store, on a new session
    const chained = await fetch(`${gw.url}/v1/responses`, { method: 'POST', dispatcher: from(USER),
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', previous_response_id: 'resp_00112233445566778899', input: 'x' }) });
    assert.equal(chained.status, 200, await chained.clone().text());
    await chained.text();
    const r = await chat(gw, USER, { model: 'gpt-4o', messages: [] });
    assert.equal(r.status, 200);
    const id = r.headers.get('x-keyless-request-id');
    await r.text();
    assert.equal((await recordUntil(gw, id, (x) => x.state === 'done')).state, 'done');
    await gw.stop();
    await mock.stop();
    assert.doesNotMatch(gw.output(), /write failed|store (query )?failed/);
    // the writer's new session holds the instance name again, which nobody else took
    assert.doesNotMatch(gw.output(), /store.instance/);
  });

  it('a gateway whose sessions the server ended while a stream ran, writing nothing since, holds its name again within seconds: another gateway starting then leaves the stream in flight', async () => {
    const mock = await startMock();
    const app = `kl-idle-term-${process.pid}`;
    const pg = process.env.KEYLESS_TEST_PG_URL;
    const gw = await startGateway({
      identity, grants, store: { driver: 'postgres', url: `${pg}?application_name=${app}`, instance: app },
      providers: providersFor(mock.url),
    });
    const { id, reader } = await streamInFlight(gw);
    const t = spawnSync('psql', [pg, '-Atc',
      `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '${app}'`],
    { encoding: 'utf8' });
    assert.equal(t.status, 0, t.stderr);
    await sleep(2500); // no record to write meanwhile: the stream goes on
    const other = await startGateway({
      identity, grants, store: { driver: 'postgres', url: pg, instance: `${app}-other` }, providers: providersFor(mock.url),
    });
    await leftInFlight(other, id, reader, gw, mock);
  });

  it('a store a newer keyless migrated is refused at start, not written to', async () => {
    // a schema of its own: the shared database's schema_migrations stays as it is
    const schema = `kl_newer_${process.pid}`;
    const psql = (q) => spawnSync('psql', [process.env.KEYLESS_TEST_PG_URL, '-Atc', q], { encoding: 'utf8' });
    assert.equal(psql(`DROP SCHEMA IF EXISTS ${schema} CASCADE; CREATE SCHEMA ${schema}`).status, 0);
    const url = `${process.env.KEYLESS_TEST_PG_URL}?options=-csearch_path%3D${schema}`;
    const mock = await startMock();
    const store = { driver: 'postgres', url, instance: schema };
    const gw = await startGateway({ identity, grants, store, providers: providersFor(mock.url) });
    await gw.stop();
    assert.equal(psql(`INSERT INTO ${schema}.schema_migrations VALUES (11, 0)`).status, 0);
    const dir = tempDir('kl-newer-');
    writeFileSync(join(dir, 'k.json'), JSON.stringify({ listen: { addresses: ['127.0.0.1:0'] }, identity, grants, store,
      providers: providersFor(mock.url) }));
    const r = spawnSync(join(BUILD, 'keyless'), ['serve', '--config', join(dir, 'k.json')], { encoding: 'utf8', timeout: 10000 });
    await mock.stop();
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /record store: the store was migrated by a newer keyless \(schema version 11; this one knows up to 10\)/);
    assert.equal(psql(`SELECT max(version) FROM ${schema}.schema_migrations`).stdout.trim(), '11');
    assert.equal(psql(`DROP SCHEMA ${schema} CASCADE`).status, 0);
  });

  it('a gateway migrating a large store lets the other gateways read it meanwhile', async () => {
    // a store of migration 8 (before the (login, id) index and response_id),
    // in a schema of its own, with enough rows that the index takes a while
    const schema = `kl_migrate_${process.pid}`;
    const psql = (q) => spawnSync('psql', [process.env.KEYLESS_TEST_PG_URL, '-v', 'ON_ERROR_STOP=1', '-Atc', q], { encoding: 'utf8' });
    assert.equal(psql(`DROP SCHEMA IF EXISTS ${schema} CASCADE; CREATE SCHEMA ${schema}`).status, 0);
    const url = `${process.env.KEYLESS_TEST_PG_URL}?options=-csearch_path%3D${schema}`;
    const mock = await startMock();
    const cfg = { identity, grants, store: { driver: 'postgres', url, instance: schema }, providers: providersFor(mock.url) };
    await (await startGateway(cfg)).stop();
    const old = psql(`SET search_path = ${schema};
      ALTER TABLE requests DROP COLUMN response_id; DROP INDEX requests_login_id;
      CREATE INDEX requests_login ON requests (login, started_at); DELETE FROM schema_migrations WHERE version >= 9;
      INSERT INTO requests (id, state, started_at, login) SELECT lpad(to_hex(i), 8, '0') || '-0000-7000-8000-' ||
        lpad(to_hex(i), 12, '0'), 'done', i, 'user' || (i % 997) FROM generate_series(1, 300000) i`);
    assert.equal(old.status, 0, old.stderr);
    // another gateway's reads meanwhile: none may wait half a second for a lock
    const reader = spawn('psql', [process.env.KEYLESS_TEST_PG_URL, '-Aqt'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let errs = '';
    reader.stdout.on('data', (d) => (out += d));
    reader.stderr.on('data', (d) => (errs += d));
    reader.stdin.write("SET lock_timeout = '500ms';\n");
    const ticker = setInterval(() => reader.stdin.write(`SELECT 'tick' FROM ${schema}.requests WHERE id > '0' LIMIT 1;\n`), 50);
    await sleep(300);
    const gw = await startGateway(cfg);
    await sleep(300);
    clearInterval(ticker);
    reader.stdin.end();
    await new Promise((r) => reader.on('exit', r));
    await gw.stop();
    await mock.stop();
    assert.doesNotMatch(errs, /lock timeout/);
    assert.ok(out.split('\n').filter((l) => l === 'tick').length >= 10, out);
    assert.equal(psql(`SELECT max(version) FROM ${schema}.schema_migrations`).stdout.trim(), '10');
    assert.equal(psql(`SELECT count(*) FROM pg_indexes WHERE schemaname = '${schema}' AND indexname IN
      ('requests_login_id', 'requests_response')`).stdout.trim(), '2');
    assert.equal(psql(`SELECT count(*) FROM pg_indexes WHERE schemaname = '${schema}' AND indexname = 'requests_login'`).stdout.trim(), '0');
    assert.equal(psql(`DROP SCHEMA ${schema} CASCADE`).status, 0);
  });

  it('a second gateway started under a name another one runs under is warned, and still starts', async () => {
    // each would take the other's requests in flight, cut short by a crash, for its own
    const mock = await startMock();
    const name = `kl-twin-${process.pid}`;
    const start = (instance) => startGateway({
      identity, grants, store: { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance },
      providers: providersFor(mock.url),
    });
    const a = await start(name);
    const b = await start(name);
    const c = await start(`${name}-other`);
    try {
      assert.match(b.output(), /store.instance "kl-twin-\d+" is held by another session on this PostgreSQL database: another gateway runs under this name/);
      assert.doesNotMatch(a.output(), /store.instance/);
      assert.doesNotMatch(c.output(), /store.instance/);
      const r = await chat(b, USER, { model: 'gpt-4o', messages: [] });
      assert.equal(r.status, 200);
      await r.text();
    } finally {
      await Promise.all([a.stop(), b.stop(), c.stop()]);
      await mock.stop();
    }
    // the name is free again once its holder has stopped
    const d = await start(name);
    await d.stop();
    assert.doesNotMatch(d.output(), /store.instance/);
  });
});

describe('a PostgreSQL server that stops answering', () => {
  // Speaks PostgreSQL's wire protocol as far as "ready for query", then
  // answers nothing more: a frozen host, or a partition that drops packets
  // (the kernel there may still acknowledge them, so TCP sees nothing amiss).
  function frozenPostgres() {
    const server = net.createServer((sock) => {
      sock.on('error', () => {});
      let buf = Buffer.alloc(0);
      let ready = false;
      sock.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        while (!ready && buf.length >= 8) {
          const len = buf.readInt32BE(0);
          if (buf.length < len) return;
          const code = buf.readInt32BE(4);
          buf = buf.subarray(len);
          if (code === 80877103 || code === 80877104) { // SSLRequest, GSSENCRequest: no
            sock.write('N');
            continue;
          }
          const msg = (type, body) => { const h = Buffer.alloc(5); h.write(type, 0); h.writeInt32BE(body.length + 4, 1); return Buffer.concat([h, body]); };
          const i32 = (...v) => { const b = Buffer.alloc(4 * v.length); v.forEach((x, k) => b.writeInt32BE(x, 4 * k)); return b; };
          sock.write(Buffer.concat([msg('R', i32(0)), msg('S', Buffer.from('server_version\u000016.0\u0000')),
            msg('S', Buffer.from('client_encoding\u0000UTF8\u0000')), msg('K', i32(4242, 1)), msg('Z', Buffer.from('I'))]));
          ready = true; // from here on: silence
        }
      });
    });
    return new Promise((res) => server.listen(0, '127.0.0.1', () => res(server)));
  }

  it('a statement waits 15 s at most: the start-up fails with the reason instead of hanging', async () => {
    const pg = await frozenPostgres();
    const dir = tempDir('kl-frozen-');
    const f = join(dir, 'c.hujson');
    writeFileSync(f, JSON.stringify({ listen: { addresses: ['127.0.0.1:0'] }, store: { driver: 'postgres',
      url: `postgresql://keyless@127.0.0.1:${pg.address().port}/keyless?sslmode=disable&gssencmode=disable` } }));
    const r = await new Promise((res) => {
      const p = spawn(join(BUILD, 'keyless'), ['serve', '--config', f], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (out += d));
      const kill = setTimeout(() => p.kill('SIGKILL'), 120000);
      p.on('exit', (code, signal) => { clearTimeout(kill); res({ code, signal, out }); });
    });
    pg.close();
    assert.equal(r.signal, null, `keyless hung: ${r.out}`);
    assert.equal(r.code, 1);
    assert.match(r.out, /no answer in time \(15 s/);
  });
});

describe('a PostgreSQL server gone silent while the writer is idle', () => {
  it('does not hold the gateway\'s shutdown for connect_timeout', {
    skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set (make test starts PostgreSQL)',
  }, async () => {
    // a relay to the real server that, switched, ends its sessions and then
    // accepts connections it never answers: a host that froze after a restart
    const pg = new URL(process.env.KEYLESS_TEST_PG_URL);
    let silent = false;
    const socks = new Set();
    const relay = net.createServer((c) => {
      c.on('error', () => {});
      socks.add(c);
      if (silent) return;
      const u = net.connect(Number(pg.port || 5432), pg.hostname);
      u.on('error', () => c.destroy());
      socks.add(u);
      c.pipe(u).pipe(c);
    });
    await new Promise((res) => relay.listen(0, '127.0.0.1', res));
    const url = new URL(process.env.KEYLESS_TEST_PG_URL);
    url.host = `127.0.0.1:${relay.address().port}`;
    const mock = await startMock();
    const gw = await startGateway({ identity, grants, providers: providersFor(mock.url),
      store: { driver: 'postgres', url: url.href, instance: `gw-silent-${process.pid}` } });
    try {
      const r = await chat(gw, USER, { model: 'gpt-4o', messages: [] });
      assert.equal(r.status, 200);
      await recordUntil(gw, r.headers.get('x-keyless-request-id'), (x) => x.state === 'done');
      await sleep(1000); // the reads' own records written: nothing left to write
      silent = true;
      for (const s of socks) s.destroy();
      await sleep(2000); // the idle writer has seen its session end meanwhile
      const t0 = Date.now();
      await gw.stop();
      assert.ok(Date.now() - t0 < 5000, `stopping took ${Date.now() - t0} ms: ${gw.output().slice(-3000)}`);
    } finally {
      await gw.stop();
      await mock.stop();
      for (const s of socks) s.destroy();
      relay.close();
    }
  });
});

describe('records hold UTF-8 only', () => {
  for (const driver of ['sqlite', 'postgres']) {
    it(`${driver}: a header that is not UTF-8 is recorded with U+FFFD and the writer goes on`,
      { skip: driver === 'postgres' && !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set (make test starts PostgreSQL)' }, async () => {
      const mock = await startMock();
      const store = driver === 'sqlite' ? { queue: 16 }
        : { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance: `gw-utf8-${process.pid}`, queue: 16 };
      const gw = await startGateway({ identity, grants, store, providers: providersFor(mock.url) });
      const body = '{"model":"gpt-4o","messages":[]}';
      const raw = await rawRequest(gw.url, Buffer.from(
        `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n` +
        `User-Agent: bad\xff\xc0\x80agent\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 'latin1'),
        { localAddress: USER });
      assert.match(raw, /^HTTP\/1.1 200 /);
      const id = raw.match(/x-keyless-request-id: (\S+)/i)[1];
      const rec = await recordUntil(gw, id, (x) => x.state === 'done');
      assert.equal(rec.user_agent, 'bad\ufffd\ufffd\ufffdagent');
      // more requests than the queue holds: the writer is still writing.
      // On a loaded machine (sanitizers, PostgreSQL's fsync) the 16 slots
      // may fill for a moment and answer 503, as designed; a stuck writer
      // would keep answering it.
      for (let i = 0; i < 40; i++) {
        let r;
        for (let t = 0; t < 100; t++) {
          r = await chat(gw, USER, { model: 'gpt-4o', messages: [{ role: 'user', content: `after ${i}` }] });
          await r.text();
          if (r.status !== 503) break;
          await sleep(50);
        }
        assert.equal(r.status, 200);
      }
      await gw.stop();
      await mock.stop();
      assert.doesNotMatch(gw.output(), /refused by the record store|write failed/);
    });
  }
});

describe('records hold a caller\'s own text bounded', () => {
  it('a long User-Agent, path or path model costs its record at most 1 KiB each: a page of /api/requests stays small', async () => {
    const mock = await startMock();
    const gw = await startGateway({ identity, grants, providers: providersFor(mock.url) });
    const send = async (path, ua, body) => {
      const raw = await rawRequest(gw.url, Buffer.concat([Buffer.from(`POST ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n` +
        'Content-Type: application/json\r\nUser-Agent: ', 'latin1'), ua,
        Buffer.from(`\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 'latin1')]), { localAddress: USER });
      return [raw.slice(9, 12), raw.match(/x-keyless-request-id: (\S+)/i)[1]];
    };
    // not UTF-8: each byte would be a three-byte U+FFFD in the store, 180 KB a row
    let [status, id] = await send('/v1/chat/completions', Buffer.alloc(60000, 0xff), '{"model":"not-granted","messages":[]}');
    assert.equal(status, '404');
    let rec = await recordUntil(gw, id, (x) => x.state === 'done');
    assert.equal(rec.login, 'uma@example.com');
    assert.equal(rec.user_agent.length, 1024);
    assert.match(rec.user_agent, /^\ufffd+$/);
    // a UTF-8 character is not cut in half
    [status, id] = await send('/v1/chat/completions', Buffer.from(`a${'é'.repeat(30000)}`), '{"model":"not-granted","messages":[]}');
    rec = await recordUntil(gw, id, (x) => x.state === 'done');
    assert.equal(rec.user_agent.length, 512);
    assert.equal(rec.user_agent, `a${'é'.repeat(511)}`);
    // a path's own segment (a Vertex project) is the caller's to make long
    const vertex = `/v1/projects/${'p'.repeat(60000)}/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent`;
    [status, id] = await send(vertex, Buffer.from('ua'), '{"contents":[]}');
    rec = await recordUntil(gw, id, (x) => x.state === 'done');
    assert.equal(rec.login, 'uma@example.com');
    assert.equal(rec.path.length, 1024);
    assert.equal(rec.path, vertex.slice(0, 1024));
    // a model in the path is held to the 256 characters of one in the body
    [status, id] = await send(`/v1beta/models/${'g'.repeat(60000)}:generateContent`, Buffer.from('ua'), '{"contents":[]}');
    assert.equal(status, '404');
    rec = await recordUntil(gw, id, (x) => x.state === 'done');
    assert.equal(rec.model_requested, null);
    assert.equal(rec.path.length, 1024);
    [status, id] = await send(`/v1beta/models/${'g'.repeat(256)}:generateContent`, Buffer.from('ua'), '{"contents":[]}');
    rec = await recordUntil(gw, id, (x) => x.state === 'done');
    assert.equal(rec.model_requested, 'g'.repeat(256), 'a model of 256 characters is still one');
    const page = await fetch(`${gw.url}/api/requests?limit=1000`, { dispatcher: from(USER) });
    assert.equal(page.status, 200);
    assert.ok((await page.text()).length < 32 * 1024, 'the page of five records is a few KiB');
    await gw.stop();
    await mock.stop();
  });
});

describe('captured request headers are bounded', () => {
  it('a head of 60 KB is captured as its first 8 KiB, not 180 KB of U+FFFD', async () => {
    const mock = await startMock();
    const gw = await startGateway({ identity, grants, store: { captures: 'metadata' }, providers: providersFor(mock.url) });
    const body = '{"model":"not-granted","messages":[]}';
    const raw = await rawRequest(gw.url, Buffer.concat([Buffer.from('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n' +
      'Connection: close\r\nContent-Type: application/json\r\nUser-Agent: ', 'latin1'), Buffer.alloc(60000, 0xff),
      Buffer.from(`\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 'latin1')]), { localAddress: USER });
    const id = raw.match(/x-keyless-request-id: (\S+)/i)[1];
    const rec = await recordUntil(gw, id, (x) => x.state === 'done');
    assert.match(rec.request_headers, /^Host: x\nConnection: close\nContent-Type: application\/json\nUser-Agent: \ufffd+$/);
    assert.equal(rec.request_headers.length, 8192);
    await gw.stop();
    await mock.stop();
  });
});

describe('captures cut inside a character', () => {
  for (const driver of ['sqlite', 'postgres']) {
    it(`${driver}: a text body cut at capture_max inside a character stays text, less the half character`,
      { skip: driver === 'postgres' && !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set (make test starts PostgreSQL)' }, async () => {
      const mock = await startMock();
      const store = driver === 'sqlite' ? { captures: 'full', capture_max: '100' }
        : { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance: `gw-cut-${process.pid}`, captures: 'full',
          capture_max: '100' };
      const gw = await startGateway({ identity, grants, store, providers: providersFor(mock.url) });
      const sent = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: `x${'é'.repeat(80)}` }] });
      const r = await chat(gw, USER, JSON.parse(sent));
      const id = r.headers.get('x-keyless-request-id');
      await r.text();
      await recordUntil(gw, id, (x) => x.state === 'done');
      const full = (await getJSON(gw, `/api/requests/${id}`)).body;
      assert.equal(full.request_body_encoding, undefined, 'text, not base64');
      const whole = Buffer.from(sent).subarray(0, 100).toString('utf8').replace(/\ufffd$/, '');
      assert.equal(full.request_body, whole);
      await gw.stop();
      await mock.stop();
    });
  }
});

describe('retention', () => {
  it('database.retention purges captures after the duration, keeping the metric rows', async () => {
    const mock = await startMock();
    const gw = await startGateway({
      identity, grants, store: { captures: 'full' },
      database: { retention: { duration: '2s', purge: ['captures'] } },
      providers: providersFor(mock.url),
    });
    const r = await chat(gw, USER, { model: 'gpt-4o', messages: [] });
    const id = r.headers.get('x-keyless-request-id');
    await r.text();
    let rec = await recordUntil(gw, id, (x) => x.state === 'done');
    assert.ok(rec.request_body, 'captured at first');
    rec = await recordUntil(gw, id, (x) => !x.request_body);
    assert.equal(rec.request_body, null, 'the capture was purged');
    assert.equal(rec.request_headers, null);
    assert.equal(rec.status, 200, 'the metric row stays');
    await gw.stop();
    await mock.stop();
  });

  it('zero retention keeps no records at all', async () => {
    const mock = await startMock();
    const gw = await startGateway({ identity, grants, database: { retention: { duration: '0' } }, providers: providersFor(mock.url) });
    assert.equal((await chat(gw, USER, { model: 'gpt-4o', messages: [] })).status, 200);
    const l = await getJSON(gw, '/api/requests');
    assert.equal(l.status, 404);
    assert.match(l.body.error.message, /no records are kept/);
    await gw.stop();
    await mock.stop();
  });
});

describe('records API: callers that leave', () => {
  it('a query whose caller has gone is not run: requests closed at once hold nobody else\'s query up', async () => {
    const ids = { cidr: [{ range: '127.0.0.53/32', login: 'uma@example.com' }, { range: '127.0.0.54/32', login: 'root@example.com' }] };
    const g = [
      { src: ['uma@example.com'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' }] } },
      { src: ['root@example.com'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } },
    ];
    const gw = await startGateway({ identity: ids, grants: g, providers: providersFor('http://127.0.0.1:1'),
      log: { level: 'debug' } });
    try {
      // enough rows for a report by session to take a while
      const ins = spawnSync('sqlite3', [join(gw.dir, 'keyless.db'), `PRAGMA busy_timeout=10000;
        WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 300000)
        INSERT INTO requests (id, instance, state, started_at, login, status, session_id)
        SELECT printf('%08x-%04x-7000-8000-%012x', (1700000000000 + i)/65536, (1700000000000 + i)%65536, i), 'x', 'done',
               1700000000000 + i, 'uma@example.com', 200, 's' || (i % 50000) FROM c;`], { encoding: 'utf8' });
      assert.equal(ins.status, 0, ins.stderr);
      const report = '/api/usage?group_by=session';
      assert.equal((await getJSON(gw, report, '127.0.0.53')).status, 200);
      // 24 reports, each closed 30 ms after it was sent, while the first of them runs
      await Promise.all(Array.from({ length: 24 }, () => new Promise((resolve) => {
        const sock = net.connect({ host: new URL(gw.url).hostname, port: new URL(gw.url).port, localAddress: '127.0.0.53' }, () => {
          sock.write(`GET ${report} HTTP/1.1\r\nHost: x\r\n\r\n`);
          setTimeout(() => { sock.destroy(); resolve(); }, 30);
        });
        sock.on('error', resolve);
      })));
      const r = await getJSON(gw, '/api/requests?limit=1', '127.0.0.54');
      assert.equal(r.status, 200);
      // the one already running when its caller left finishes; those still queued are not run (a margin for a
      // report that finished before its caller was seen to go)
      const skipped = gw.output().split('\n').filter((l) => l.includes('a query whose caller has left is not run')).length;
      assert.ok(skipped >= 12 && skipped <= 24, `${skipped} of 24 queries skipped`);
    } finally {
      await gw.stop();
    }
  });
});

describe('records API: pages held by clients that do not read', () => {
  it('a page over 64 KiB is counted in listen.max_body_memory until it is written: 503 when there is no room, and one larger than the share says to ask for fewer', async () => {
    const gw = await startGateway({ providers: providersFor('http://127.0.0.1:1'),
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } }],
      listen: { max_body_size: '256KiB', max_body_memory: '512KiB' } }, { workers: 1 });
    let held;
    try {
      // 400 rows of ~1.6 KB (a 1 KiB User-Agent each): a page of all of them is ~650 KB
      const ins = spawnSync('sqlite3', [join(gw.dir, 'keyless.db'), `PRAGMA busy_timeout=10000;
        WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 400)
        INSERT INTO requests (id, instance, state, started_at, login, status, user_agent)
        SELECT printf('%08x-%04x-7000-8000-%012x', (1700000000000 + i)/65536, (1700000000000 + i)%65536, i), 'x', 'done',
               1700000000000 + i, '(loopback)', 200, printf('%.1024c', 'u') FROM c;`], { encoding: 'utf8' });
      assert.equal(ins.status, 0, ins.stderr);
      const get = (q) => fetch(`${gw.url}/api/requests?${q}`);
      let r = await get('limit=1000');
      assert.equal(r.status, 503);
      assert.equal(r.headers.get('x-should-retry'), 'false');
      await r.text();
      // a HEAD holds no page: it gets the head the GET would have
      r = await fetch(`${gw.url}/api/requests?limit=1000`, { method: 'HEAD' });
      assert.equal(r.status, 200);
      assert.ok(Number(r.headers.get('content-length')) > 524288, r.headers.get('content-length'));
      r = await get('limit=1000');
      assert.match((await r.json()).error.message,
        /the answer \(\d+ bytes\) is larger than this worker's share of listen\.max_body_memory \(524288 bytes\); ask for fewer records \(limit\)/);
      r = await get('limit=150');
      assert.equal(r.status, 200);
      const page = await r.text();
      assert.ok(page.length > 200000 && page.length < 300000, `${page.length} bytes`);
      assert.equal(JSON.parse(page).requests.length, 150);
      // a body of 250 KB being uploaded takes its room: the page does not fit beside it
      held = net.connect({ host: '127.0.0.1', port: Number(new URL(gw.url).port) });
      held.on('error', () => {});
      await new Promise((res) => held.once('connect', res));
      held.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        `Content-Length: 250000\r\n\r\n${'x'.repeat(240000)}`);
      const metric = async () => Number(/^keyless_request_body_bytes (\d+)$/m.exec(await (await fetch(`${gw.url}/metrics`)).text())?.[1]);
      for (let k = 0; k < 200 && !(await metric() >= 240000); k++) await sleep(10);
      assert.ok(await metric() >= 240000);
      r = await get('limit=150');
      assert.equal(r.status, 503);
      assert.equal(r.headers.get('retry-after'), '1');
      assert.match((await r.json()).error.message, /listen\.max_body_memory\); try again shortly/);
      // a small page (up to 64 KiB) is still served, uncounted
      r = await get('limit=20');
      assert.equal(r.status, 200);
      assert.equal((await r.json()).requests.length, 20);
      held.destroy();
      for (let k = 0; k < 200 && await metric() !== 0; k++) await sleep(10);
      r = await get('limit=150');
      assert.equal(r.status, 200);
      assert.equal((await r.json()).requests.length, 150);
      // and once written, the page's count is given back
      for (let k = 0; k < 200 && await metric() !== 0; k++) await sleep(10);
      assert.equal(await metric(), 0);
    } finally {
      held?.destroy();
      await gw.stop();
    }
  });
});

describe('records API: a usage report larger than the share', () => {
  it('says how to narrow it (range, filters, grouping), not to ask for fewer records', async () => {
    const gw = await startGateway({ providers: providersFor('http://127.0.0.1:1'),
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } }],
      listen: { max_body_size: '128KiB', max_body_memory: '256KiB' } }, { workers: 1 });
    try {
      // 300 sessions of 1 KiB names: grouped by session, ~360 KB of rows
      const ins = spawnSync('sqlite3', [join(gw.dir, 'keyless.db'), `PRAGMA busy_timeout=10000;
        WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 300)
        INSERT INTO requests (id, instance, state, started_at, login, status, session_id)
        SELECT printf('%08x-%04x-7000-8000-%012x', (1700000000000 + i)/65536, (1700000000000 + i)%65536, i), 'x', 'done',
               1700000000000 + i, '(loopback)', 200, printf('%.1024c', 's') || i FROM c;`], { encoding: 'utf8' });
      assert.equal(ins.status, 0, ins.stderr);
      let r = await fetch(`${gw.url}/api/usage?group_by=session`);
      assert.equal(r.status, 503);
      assert.equal(r.headers.get('x-should-retry'), 'false');
      assert.match((await r.json()).error.message, /the answer \(\d+ bytes\) is larger than this worker's share of listen\.max_body_memory \(262144 bytes\); narrow the range \(since, until\), the filters or the grouping \(group_by\)$/);
      r = await fetch(`${gw.url}/api/usage?group_by=user`);
      assert.equal(r.status, 200);
      assert.ok((await r.json()).rows[0].requests >= 300); // and the admin reads' own records
    } finally {
      await gw.stop();
    }
  });
});

describe('records API: one record larger than the share', () => {
  it('a record whose captures make it larger than the worker\'s share is still served, when the worker holds nothing else', async () => {
    // 250,000 raw control bytes (a body refused with 400, still captured)
    // are 1.5 MB as JSON: larger than a 512 KiB share, so it was refused
    // for good (503, x-should-retry: false), by the caller's own doing
    const mock = await startMock();
    const gw = await startGateway({ providers: providersFor(mock.url),
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } }],
      store: { captures: 'full', capture_max: '1MiB' },
      listen: { max_body_size: '256KiB', max_body_memory: '512KiB' } }, { workers: 1 });
    let held;
    try {
      const body = '{"model":"gpt-4o","messages":[{"role":"user","content":"' + '\x01'.repeat(250000) + '"}]}';
      let r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      assert.equal(r.status, 400);
      await r.text();
      const id = r.headers.get('x-keyless-request-id');
      const one = () => fetch(`${gw.url}/api/requests/${id}`);
      for (let k = 0; k < 200 && (await (await one()).text()).includes('no record'); k++) await sleep(10);
      r = await one();
      const page = await r.text();
      assert.equal(r.status, 200, page.slice(0, 300));
      assert.ok(page.length > 524288, `${page.length} bytes`);
      assert.equal(JSON.parse(page).id, id);
      const metric = async () => Number(/^keyless_request_body_bytes (\d+)$/m.exec(await (await fetch(`${gw.url}/metrics`)).text())?.[1]);
      for (let k = 0; k < 200 && await metric() !== 0; k++) await sleep(10);
      assert.equal(await metric(), 0);
      // while the worker holds a body, it waits its turn
      held = net.connect({ host: '127.0.0.1', port: Number(new URL(gw.url).port) });
      held.on('error', () => {});
      await new Promise((res) => held.once('connect', res));
      held.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        `Content-Length: 250000\r\n\r\n${'x'.repeat(100000)}`);
      for (let k = 0; k < 200 && !(await metric() >= 100000); k++) await sleep(10);
      r = await one();
      assert.equal(r.status, 503);
      assert.equal(r.headers.get('retry-after'), '1');
      assert.notEqual(r.headers.get('x-should-retry'), 'false');
      await r.text();
      held.destroy();
      for (let k = 0; k < 200 && await metric() !== 0; k++) await sleep(10);
      r = await one();
      assert.equal(r.status, 200);
      assert.equal(JSON.parse(await r.text()).id, id);
    } finally {
      held?.destroy();
      await gw.stop();
      await mock.stop();
    }
  });
});

describe('records API: bad input and whose records', () => {
  // Two logins where one is the other's first 255 characters: a filter cut
  // to a fixed buffer would show one the other's records.
  const A = `a${'x'.repeat(299)}@example.com`, B = A.slice(0, 255), ROOT = '127.0.0.52';
  const ids = {
    cidr: [
      { range: '127.0.0.50/32', login: A },
      { range: '127.0.0.51/32', login: B },
      { range: '127.0.0.52/32', login: 'root@example.com' },
    ],
  };
  const g = [
    { src: [A, B], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' }] } },
    { src: ['root@example.com'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } },
  ];
  let mock, gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({ identity: ids, grants: g, providers: providersFor(mock.url) });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
  });

  it('a user sees only records of exactly their own login', async () => {
    for (const ip of ['127.0.0.50', '127.0.0.51']) {
      const r = await chat(gw, ip, { model: 'gpt-4o', messages: [{ role: 'user', content: ip }] });
      assert.equal(r.status, 200);
      await r.text();
    }
    let all = [];
    for (let i = 0; i < 100 && all.length < 2; i++) {
      all = (await getJSON(gw, '/api/requests', ROOT)).body.requests.filter((x) => x.path === '/v1/chat/completions');
      if (all.length < 2) await sleep(50);
    }
    const mineA = (await getJSON(gw, '/api/requests?limit=1000', '127.0.0.50')).body.requests;
    const mineB = (await getJSON(gw, '/api/requests?limit=1000', '127.0.0.51')).body.requests;
    assert.ok(mineA.length >= 1 && mineA.every((x) => x.login === A), 'A sees only A');
    assert.ok(mineB.length >= 1 && mineB.every((x) => x.login === B), 'B sees only B');
    const bId = all.find((x) => x.login === B).id;
    assert.equal((await getJSON(gw, `/api/requests/${bId}`, '127.0.0.50')).status, 404);
    assert.equal((await getJSON(gw, `/api/requests/${bId}`, '127.0.0.51')).status, 200);
    const usage = (await getJSON(gw, '/api/usage?group_by=user', '127.0.0.50')).body.rows;
    assert.deepEqual(usage.map((x) => x.user), [A]);
    // an admin's user filter is not cut either
    const rootA = (await getJSON(gw, `/api/requests?user=${encodeURIComponent(A)}`, ROOT)).body.requests;
    assert.ok(rootA.length >= 1 && rootA.every((x) => x.login === A));
  });

  it('malformed filters get a 400 that says which, never a 500', async () => {
    for (const q of [
      '/api/requests?limit=abc', '/api/requests?limit=0', '/api/requests?limit=-5', '/api/requests?limit=4294967297',
      '/api/requests?status=abc', '/api/requests?status=4294967496', '/api/requests?status=-1',
      '/api/requests?since=nan', '/api/requests?since=0x10h', '/api/requests?since=1e3s', '/api/requests?since=2026-02-31',
      '/api/requests?since=99999999999999999999', '/api/requests?since=%202026-11-01', '/api/requests?since=2026-11-01T12:00:00%2B25:00', '/api/requests?since=1h&until=2h', '/api/requests?before=zzz',
      '/api/usage?group_by=model,model', '/api/usage?group_by=user,', '/api/usage?group_by=,user',
      '/api/usage?group_by=user%00,bogus', '/api/usage?group_by=colour', '/api/requests?user=%FF', '/api/usage?model=a%C0%80', `/api/usage?group_by=${'user,'.repeat(30)}user`,
      // digits only, and each parameter once (which of two would a reader take?)
      '/api/requests?limit=+5', '/api/requests?limit=%205', '/api/requests?status=200&status=abc',
      '/api/requests?limit=1&limit=abc', '/api/usage?group_by=user&group_by=model', '/api/requests?user=a&user=b',
    ]) {
      const r = await getJSON(gw, q, ROOT);
      assert.equal(r.status, 400, `${q}: ${JSON.stringify(r.body)}`);
      assert.equal(typeof r.body.error?.message, 'string', q);
      assert.ok(!/sqlite|syntax|SELECT/i.test(r.body.error.message), `${q}: ${r.body.error.message}`);
    }
    const wide = await getJSON(gw, '/api/usage?group_by=user,model,provider,day,session,node,endpoint', ROOT);
    assert.equal(wide.status, 200);
    assert.deepEqual(wide.body.group_by, ['user', 'model', 'provider', 'day', 'session', 'node', 'endpoint']);
    const many = await getJSON(gw, '/api/requests?limit=5000', ROOT);
    assert.equal(many.status, 200);
    const page = await getJSON(gw, '/api/requests?limit=1', ROOT);
    assert.equal(page.body.requests.length, 1);
    assert.equal(page.body.next_before, page.body.requests[0].id);
  });

  it('an empty login in the configuration is an error', () => {
    const dir = tempDir('kl-empty-login-');
    const cfg = join(dir, 'keyless.hujson');
    writeFileSync(cfg, JSON.stringify({ identity: { cidr: [{ range: '10.0.0.0/8', login: '' }] }, providers: {} }));
    const r = spawnSync(join(BUILD, 'keyless'), ['check', '--config', cfg], { encoding: 'utf8' });
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /"login" must be a non-empty string/);
  });

  it('a SQLite store file removed while in use is made again, and the records go on into it', async () => {
    const mock = await startMock();
    const dir = tempDir('kl-rm-store-');
    const db = join(dir, 'r.db');
    const gw = await startGateway({ identity, grants, store: { path: db }, providers: providersFor(mock.url) });
    try {
      const ask = async () => {
        const r = await chat(gw, USER, { model: 'gpt-4o', messages: [] });
        assert.equal(r.status, 200);
        await r.text();
        return r.headers.get('x-keyless-request-id');
      };
      const before = await ask();
      assert.equal((await recordUntil(gw, before, (x) => x.state === 'done')).state, 'done');
      for (const f of [db, `${db}-wal`, `${db}-shm`]) rmSync(f, { force: true });
      const after = await ask();
      // written to the new file, and read from it (the query thread reopens too)
      assert.equal((await recordUntil(gw, after, (x) => x.state === 'done')).state, 'done');
      assert.ok(existsSync(db));
      const rows = spawnSync('sqlite3', [db, 'SELECT id FROM requests'], { encoding: 'utf8' }).stdout.trim().split('\n');
      assert.ok(rows.includes(after), rows.join(','));
      assert.match(gw.output(), /record store .*r\.db was removed or replaced while in use: a new one is made there/);
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });

  it('keyless check says when serve could not open the SQLite store path here, and creates nothing', () => {
    // a note, not an error: a deploy pipeline may check the file on a machine
    // where the path does not exist
    const dir = tempDir('kl-check-store-');
    const check = (store) => {
      const cfg = join(dir, 'keyless.hujson');
      writeFileSync(cfg, JSON.stringify({ providers: providersFor('http://127.0.0.1:9'), store }));
      return spawnSync(join(BUILD, 'keyless'), ['check', '--config', cfg], { encoding: 'utf8' });
    };
    let r = check({ path: join(dir, 'missing', 'keyless.db') });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr,
      /note: on this machine, serve could not create store.path .*missing\/keyless.db in .*missing: No such file/);
    r = check({ path: dir });
    assert.match(r.stderr, /note: on this machine, serve could not open store.path .*: it is a directory/);
    // what serve would open draws no note, and check made no file
    r = check({ path: join(dir, 'keyless.db') });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /store.path/);
    assert.ok(!existsSync(join(dir, 'keyless.db')));
    // a store a newer keyless migrated, which serve refuses: said, and left as it was
    const db = join(dir, 'newer.db');
    const sql = (q) => spawnSync('sqlite3', ['-batch', db, q], { encoding: 'utf8' });
    assert.equal(sql('CREATE TABLE requests (id TEXT PRIMARY KEY); CREATE TABLE schema_migrations (version BIGINT '
      + 'PRIMARY KEY, applied_at BIGINT); INSERT INTO schema_migrations VALUES (10, 0), (11, 0)').status, 0);
    const schema = () => sql('SELECT group_concat(name) FROM sqlite_master').stdout;
    const before = schema();
    r = check({ path: db });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /note: on this machine, serve would refuse store.path .*newer.db: it was migrated by a newer keyless \(schema version 11; this one knows up to 10\)/);
    assert.equal(schema(), before);
    // the server behind a PostgreSQL store is not contacted by check
    r = check({ driver: 'postgres', url: 'postgresql://nobody@127.0.0.1:9/none' });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /serve could not/);
  });
});

describe('stored Responses answers are carried on by their own caller only', () => {
  const ALICE = '127.0.0.70', MALLORY = '127.0.0.71';
  const ids = { cidr: [{ range: `${ALICE}/32`, login: 'alice@example.com' }, { range: `${MALLORY}/32`, login: 'mallory@example.com' }] };
  const g = [{ src: ['alice@example.com', 'mallory@example.com'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' }] } }];
  const respond = (gw, ip, body, stream = false) => fetch(`${gw.url}/v1/responses`, {
    method: 'POST', dispatcher: from(ip), headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify({ model: 'gpt-4o', stream, ...body }),
  });

  it('another caller naming the answer as previous_response_id gets OpenAI\'s not-found 400, before and after a restart; its owner goes on', async () => {
    const mock = await startMock();
    const db = join(tempDir('kl-owner-'), 'r.db');
    const opts = { identity: ids, grants: g, store: { path: db }, providers: providersFor(mock.url) };
    let gw = await startGateway(opts);
    try {
      // a streamed answer: its id comes in the events
      const first = await respond(gw, ALICE, { input: 'my secret plans' }, true);
      assert.equal(first.status, 200);
      const id = /"id":"(resp_[0-9a-f]+)"/.exec(await first.text())?.[1];
      assert.ok(id, 'the answer has an id');
      const stolen = async () => {
        const forwarded = (await mock.requests()).length;
        for (const body of [JSON.stringify({ model: 'gpt-4o', previous_response_id: id, input: 'repeat everything above' }),
          // the id escaped is the same id to the provider
          `{"model":"gpt-4o","previous_response_id":"\\u0072${id.slice(1)}","input":"repeat everything above"}`]) {
          const r = await respond(gw, MALLORY, body);
          assert.equal(r.status, 400, body);
          assert.equal((await r.json()).error.message, `Previous response with id '${id}' not found.`);
        }
        assert.equal((await mock.requests()).length, forwarded, 'nothing reached the provider');
      };
      await stolen();
      const own = await respond(gw, ALICE, { previous_response_id: id, input: 'and then?' });
      assert.equal(own.status, 200);
      await own.text();
      // an id keyless has never seen is the provider's to judge
      const unknown = await respond(gw, MALLORY, { previous_response_id: 'resp_0123456789abcdef', input: 'x' });
      assert.equal(unknown.status, 200);
      await unknown.text();
      let rec;
      for (let i = 0; i < 100 && !rec; i++) {
        rec = (await getJSON(gw, '/api/requests?limit=100', ALICE)).body.requests.find((x) => x.response_id === id);
        if (!rec) await sleep(50);
      }
      assert.ok(rec, 'the record names the answer it received');
      assert.equal(rec.login, 'alice@example.com');

      // after a restart the memory is empty: the store says whose it is
      await gw.stop();
      gw = await startGateway(opts);
      await stolen();
      const again = await respond(gw, ALICE, { previous_response_id: id, input: 'still mine' });
      assert.equal(again.status, 200);
      await again.text();
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });

  it('a store that cannot say whose the answer is gives a 503, for its owner too; nothing reaches the provider', async () => {
    const mock = await startMock();
    const db = join(tempDir('kl-owner-'), 'r.db');
    const opts = { identity: ids, grants: g, store: { path: db }, providers: providersFor(mock.url) };
    let gw = await startGateway(opts);
    const sql = (q) => {
      const r = spawnSync('sqlite3', ['-batch', db, `PRAGMA busy_timeout=10000; ${q}`], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
    };
    try {
      const first = await respond(gw, ALICE, { input: 'my secret plans' });
      assert.equal(first.status, 200);
      const { id } = await first.json();
      // its record is written before the restart empties the memory
      await gw.stop();
      gw = await startGateway(opts);
      sql('ALTER TABLE requests RENAME TO requests_away');
      const forwarded = (await mock.requests()).length;
      for (const ip of [MALLORY, ALICE]) {
        const r = await respond(gw, ip, { previous_response_id: id, input: 'go on' });
        assert.equal(r.status, 503, ip);
        const e = (await r.json()).error;
        assert.match(e.message, /cannot check whose the previous response is/);
        assert.equal(typeof e.type, 'string');
      }
      assert.equal((await mock.requests()).length, forwarded, 'nothing reached the provider');
      // the store answers again: the refusal is the not-found 400 again
      sql('ALTER TABLE requests_away RENAME TO requests');
      const r = await respond(gw, MALLORY, { previous_response_id: id, input: 'go on' });
      assert.equal(r.status, 400);
      assert.equal((await r.json()).error.message, `Previous response with id '${id}' not found.`);
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });
});
