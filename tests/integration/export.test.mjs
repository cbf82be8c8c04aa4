// The S3 exporter (Aperture's exporters.s3): records reach the bucket as
// zstd-compressed CBOR, each exactly once, signed with AWS Signature V4, and
// none is lost while the bucket refuses them. S3 cannot run here, so the
// bucket is a small server in this file that checks every request's
// signature with AWS's own signer (@smithy/signature-v4, the one the AWS SDK
// for JavaScript uses) and the payload hash S3 requires.
import { describe, it, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { decode } from 'cborg';
import { SignatureV4 } from '@smithy/signature-v4';
import { HttpRequest } from '@smithy/protocol-http';
import { Sha256 } from '@aws-crypto/sha256-js';
import { writeFileSync } from 'node:fs';
import { startMock, startGateway, providersFor, assertNoKeys, BUILD, tempDir } from './lib/harness.mjs';

const ACCESS_KEY = 'AKIAKEYLESSTEST0001';
const SECRET = 'kl-test-secret/0123456789abcdefghijklmnopqrstuv';
const REGION = 'eu-central-1';

// An S3 bucket endpoint (path-style PUT only), strict about what S3 checks.
async function startBucket(bucket) {
  const objects = new Map();
  const refusals = [];
  let failNext = 0;
  let refuseIf = null; // (document) => true: that object is refused
  const srv = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    const error = (status, code, message) => {
      refusals.push(code);
      res.writeHead(status, { 'content-type': 'application/xml' });
      res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`);
    };
    if (failNext > 0) {
      failNext--;
      return error(503, 'SlowDown', 'Please reduce your request rate.');
    }
    if (refuseIf && refuseIf(open({ body }).doc)) return error(503, 'SlowDown', 'Please reduce your request rate.');
    const url = new URL(req.url, 'http://bucket');
    const [, b, ...rest] = url.pathname.split('/');
    const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/s3\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/
      .exec(req.headers.authorization || '');
    if (req.method !== 'PUT' || b !== bucket || !rest.length) return error(400, 'InvalidRequest', 'PUT /bucket/key only');
    if (!m) return error(403, 'AccessDenied', 'no Signature V4');
    const [, akid, day, region, signedList, signature] = m;
    if (akid !== ACCESS_KEY) return error(403, 'InvalidAccessKeyId', 'unknown key id');
    if (region !== REGION) return error(400, 'AuthorizationHeaderMalformed', `region ${region} is wrong`);
    const signed = signedList.split(';');
    const sha = req.headers['x-amz-content-sha256'];
    if (!sha) return error(400, 'InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
    if (!signed.includes('x-amz-content-sha256') || !signed.includes('host'))
      return error(403, 'AccessDenied', 'host and x-amz-content-sha256 must be signed');
    if (sha !== createHash('sha256').update(body).digest('hex'))
      return error(400, 'XAmzContentSHA256Mismatch', 'The provided x-amz-content-sha256 header does not match what was computed.');
    const d = req.headers['x-amz-date'] || '';
    if (!d.startsWith(day)) return error(403, 'AccessDenied', 'x-amz-date and credential scope disagree');
    const headers = {};
    for (const h of signed) headers[h] = req.headers[h];
    const signer = new SignatureV4({
      credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET }, region: REGION, service: 's3',
      sha256: Sha256, uriEscapePath: false,
    });
    const when = new Date(Date.UTC(+d.slice(0, 4), +d.slice(4, 6) - 1, +d.slice(6, 8), +d.slice(9, 11), +d.slice(11, 13), +d.slice(13, 15)));
    const expected = await signer.sign(new HttpRequest({
      method: req.method, protocol: 'http:', hostname: '127.0.0.1', path: url.pathname,
      query: Object.fromEntries(url.searchParams), headers, body,
    }), { signingDate: when, signableHeaders: new Set(signed) });
    if (!expected.headers.authorization.endsWith(`Signature=${signature}`))
      return error(403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided.');
    objects.set(decodeURIComponent(rest.join('/')), { body, type: req.headers['content-type'] });
    res.writeHead(200, { etag: `"${createHash('md5').update(body).digest('hex')}"` });
    res.end();
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${srv.address().port}`,
    objects,
    refusals,
    failNext(n) { failNext = n; },
    refuseIf(fn) { refuseIf = fn; },
    close: () => new Promise((r) => srv.close(r)),
  };
}

// An object's document: zstd (Debian's zstd, the reference decoder), then
// CBOR. 64-bit CBOR integers decode as BigInt; they are compared as numbers.
function open(obj) {
  const z = spawnSync('zstd', ['-dc'], { input: obj.body });
  assert.equal(z.status, 0, `zstd -d: ${z.stderr}`);
  const num = (v) => (typeof v === 'bigint' ? Number(v) : v);
  const doc = decode(z.stdout);
  doc.exported_at = num(doc.exported_at);
  doc.records = doc.records.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, num(v)])));
  return { raw: z.stdout, doc };
}

function exportedRecords(bucket) {
  const out = [];
  for (const [key, obj] of bucket.objects) {
    const { doc } = open(obj);
    for (const r of doc.records) out.push({ key, ...r });
  }
  return out;
}

// A database of its own on the test server, for a test whose killed
// gateway's rows in progress must be marked by its own restart: a gateway of
// another test file starting on the shared database meanwhile marks them
// interrupted itself (a name no session holds has no gateway).
function ownDatabase(name) {
  const url = new URL(process.env.KEYLESS_TEST_PG_URL);
  for (const sql of [`DROP DATABASE IF EXISTS ${name}`, `CREATE DATABASE ${name}`]) {
    const q = spawnSync('psql', [url.href, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { encoding: 'utf8' });
    assert.equal(q.status, 0, q.stderr);
  }
  url.pathname = `/${name}`;
  return url.href;
}

async function waitFor(cond, what, ms = 15000) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await cond()) return;
    await sleep(100);
  }
  assert.fail(`timed out waiting for ${what}`);
}

// The sqlite3 shell against the gateway's live store: it waits for the
// writer's transaction (up to 5 s) instead of failing with "database is locked".
function sql(db, query) {
  const r = spawnSync('sqlite3', ['-cmd', '.timeout 5000', db, query], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

// The record id reaches the bucket, once, as interrupted.
async function exportedInterrupted(bucket, id) {
  await waitFor(() => exportedRecords(bucket).some((x) => x.id === id), 'the interrupted record exported');
  const recs = exportedRecords(bucket).filter((x) => x.id === id);
  assert.equal(recs.length, 1);
  assert.equal(recs[0].state, 'interrupted');
  assert.equal(recs[0].error_class, 'interrupted');
}

// A stream started on gw, on record in progress, then gw killed with -9:
// the request's id.
async function killMidStream(gw) {
  const r = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-mock': 'events=100;delay_events_ms=100' },
    body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'long' }] }),
  });
  const id = r.headers.get('x-keyless-request-id');
  const reader = r.body.getReader();
  await reader.read();
  await waitFor(async () => (await (await fetch(`${gw.url}/api/requests/${id}`)).json()).state === 'in_progress',
    'the in-progress row');
  gw.proc.kill('SIGKILL');
  await reader.read().catch(() => {});
  await new Promise((res) => (gw.proc.exitCode !== null || gw.proc.signalCode ? res() : gw.proc.once('exit', res)));
  return id;
}

async function chat(gw, content) {
  const r = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer placeholder' },
    body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content }] }),
  });
  assert.equal(r.status, 200);
  await r.json();
  return r.headers.get('x-keyless-request-id');
}

const ADMIN_GRANTS = [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } }];

// A gateway with no exporter started on the PostgreSQL database url under
// instance: it marks the row id of a killed gateway interrupted. Stopped then.
async function markedByPlain(mock, url, instance, id) {
  const gw = await startGateway({
    providers: providersFor(mock.url), grants: ADMIN_GRANTS, store: { driver: 'postgres', url, instance },
  });
  try {
    await waitFor(async () => (await (await fetch(`${gw.url}/api/requests/${id}`)).json()).state === 'interrupted',
      'the row marked interrupted by the gateway without an exporter');
  } finally {
    await gw.stop();
  }
}

async function status(gw) {
  const r = await fetch(`${gw.url}/api/export`);
  return { status: r.status, body: await r.json() };
}

function exporter(bucket, extra = {}) {  // eslint-disable-line
  return {
    s3: {
      endpoint: bucket.url, bucket_name: 'audit', region: REGION,
      access_key_id: ACCESS_KEY, access_secret: '${KL_TEST_S3_SECRET}', prefix: 'gw/', every: '1s', ...extra,
    },
  };
}

describe('exporters.s3', () => {
  let mock;
  before(async () => { mock = await startMock(); });
  after(async () => { await mock?.stop(); });

  it('sends every record once, as zstd CBOR, signed; keeps them in the store; no credential in it', async () => {
    const bucket = await startBucket('audit');
    const gw = await startGateway({
      providers: providersFor(mock.url), exporters: exporter(bucket, { max_records: 2 }), store: { instance: 'gw-east/1' },
      grants: ADMIN_GRANTS,
    }, { env: { KL_TEST_S3_SECRET: SECRET } });
    try {
      const ids = [];
      for (let i = 0; i < 3; i++) ids.push(await chat(gw, `export me ${i}`));
      await waitFor(() => exportedRecords(bucket).length >= 3, 'three exported records');
      await sleep(1500); // another round: nothing is sent twice
      const recs = exportedRecords(bucket);
      assert.deepEqual(recs.map((r) => r.id).sort(), [...ids].sort(), 'each record exactly once');
      assert.ok(bucket.objects.size >= 2, 'max_records: 2 splits three records over two objects or more');
      for (const [key, obj] of bucket.objects) {
        assert.match(key, /^gw\/keyless\/gw-east_1\/\d{4}\/\d{2}\/\d{2}\/\d{12}-\d{12}-\d{13}\.cbor\.zst$/);
        assert.ok(open(obj).doc.records.length <= 2);
        assert.equal(obj.type, 'application/zstd');
        const { raw, doc } = open(obj);
        assert.equal(doc.format, 'keyless.records');
        assert.equal(doc.version, 1);
        assert.equal(doc.instance, 'gw-east/1');
        assert.ok(Math.abs(doc.exported_at - Date.now()) < 60000);
        assertNoKeys(assert, raw.toString('latin1'), `export object ${key}`);
        assert.ok(!raw.includes(SECRET));
      }
      const r = recs[0];
      assert.equal(r.state, 'done');
      assert.equal(r.status, 200);
      assert.equal(r.provider, 'openai');
      assert.equal(r.model_requested, 'gpt-4o');
      assert.equal(r.login, '(loopback)');
      assert.equal(r.instance, 'gw-east/1');
      assert.ok(r.input_tokens > 0 && r.output_tokens > 0, 'usage is in the export');
      assert.equal(typeof r.started_at, 'number');
      assert.equal(typeof r.cost_nanodollars, 'number');
      const db = join(gw.dir, 'keyless.db');
      assert.equal(sql(db, 'SELECT count(*) FROM export_queue'), '0', 'queue drained');
      assert.equal(Number(sql(db, "SELECT count(*) FROM requests WHERE path = '/v1/chat/completions'")), 3,
        'records stay in the store (retention is forever)');
      assert.match(gw.output(), /export: \d+ records to s3:\/\/audit\/gw\/keyless\//);
      const st = (await status(gw)).body;
      assert.equal(st.configured, true);
      assert.equal(st.bucket, 'audit');
      assert.equal(st.records_exported, 3);
      assert.equal(st.queued, 0);
      assert.equal(typeof st.last_success_at, 'number');
      assert.equal(st.last_error, null);
      assert.equal(st.failing_rounds, 0);
      assert.ok(!gw.output().includes(SECRET), 'the secret is never logged');
    } finally {
      await gw.stop();
      await bucket.close();
    }
  });

  it('a bucket that refuses (bad secret) loses nothing: the queue outlives a restart, a rotated secret applies on SIGHUP', async () => {
    const bucket = await startBucket('audit');
    const secretFile = join(tempDir('keyless-s3-'), 'secret');
    writeFileSync(secretFile, 'not-the-secret\n');
    const config = {
      providers: providersFor(mock.url), grants: ADMIN_GRANTS,
      exporters: exporter(bucket, { access_secret: `file:${secretFile}` }),
    };
    let gw = await startGateway(config);
    const ids = [];
    let db;
    try {
      for (let i = 0; i < 2; i++) ids.push(await chat(gw, `refused ${i}`));
      await waitFor(() => /SignatureDoesNotMatch/.test(gw.output()), 'the refusal in the log');
      assert.match(gw.output(), /export to s3:\/\/audit failed \(1 times in a row; the records stay queued.*HTTP 403 SignatureDoesNotMatch/);
      assert.equal(bucket.objects.size, 0);
      db = join(gw.dir, 'keyless.db');
      assert.equal(sql(db, 'SELECT count(*) FROM export_queue'), '2');
      const st = (await status(gw)).body;
      assert.ok(st.failing_rounds >= 1);
      assert.match(st.last_error, /HTTP 403 SignatureDoesNotMatch/);
      assert.equal(st.records_exported, 0);
      assert.equal(st.queued, 2);
      assert.ok(!JSON.stringify(st).includes('not-the-secret'));
    } finally {
      await gw.stop();
    }
    assert.ok(!gw.output().includes('not-the-secret'), 'the secret is never logged');
    // the same store after a restart, still refused; then the secret is rotated and the gateway told
    gw = await startGateway({ ...config, store: { path: db } });
    try {
      await waitFor(() => (gw.output().match(/SignatureDoesNotMatch/g) || []).length >= 1, 'refused again');
      writeFileSync(secretFile, `${SECRET}\n`);
      gw.proc.kill('SIGHUP');
      await waitFor(() => /SIGHUP: configuration reloaded/.test(gw.output()), 'the reload');
      await waitFor(() => ids.every((id) => exportedRecords(bucket).some((r) => r.id === id)), 'the held records');
      // (the status requests' own records are exported too)
      assert.deepEqual(exportedRecords(bucket).filter((r) => r.path === '/v1/chat/completions').map((r) => r.id).sort(),
        [...ids].sort());
      await waitFor(() => sql(db, "SELECT count(*) FROM export_queue q JOIN requests r ON r.id = q.id "
        + "WHERE r.path = '/v1/chat/completions'") === '0', 'the queue drained');
      assert.ok(!gw.output().includes(SECRET), 'the secret is never logged');
    } finally {
      await gw.stop();
      await bucket.close();
    }
  });

  it('a bucket that cannot be reached: the connection error is reported and the records stay queued', async () => {
    const gone = await startBucket('audit');
    const url = gone.url;
    await gone.close(); // nothing listens there now
    const gw = await startGateway({
      providers: providersFor(mock.url), grants: ADMIN_GRANTS, exporters: exporter({ url }),
    }, { env: { KL_TEST_S3_SECRET: SECRET } });
    try {
      const id = await chat(gw, 'nowhere to go');
      await waitFor(async () => /Couldn't connect/.test((await status(gw)).body.last_error || ''), 'the error');
      const st = (await status(gw)).body;
      assert.ok(st.failing_rounds >= 1);
      assert.equal(st.records_exported, 0);
      assert.match(gw.output(), /export to s3:\/\/audit failed .*Couldn't connect/);
      const db = join(gw.dir, 'keyless.db');
      assert.equal(sql(db, `SELECT count(*) FROM export_queue WHERE id = '${id}'`), '1');
    } finally {
      await gw.stop();
    }
  });

  it('require_export: retention spares records the bucket does not have yet', async () => {
    const bucket = await startBucket('audit');
    bucket.failNext(1000);
    const gw = await startGateway({
      providers: providersFor(mock.url), exporters: exporter(bucket),
      database: { retention: { duration: '1s', require_export: true } },
    }, { env: { KL_TEST_S3_SECRET: SECRET } });
    try {
      const db = join(gw.dir, 'keyless.db');
      const id = await chat(gw, 'keep me until exported');
      // a control: an old record that is not queued (written before the exporter was configured)
      sql(db, "INSERT INTO requests (id, state, started_at) VALUES ('00000000-0001-7000-8000-000000000001', 'done', 1)");
      await waitFor(() => bucket.refusals.length >= 2, 'two refused rounds');
      await waitFor(() => sql(db, "SELECT count(*) FROM requests WHERE started_at = 1") === '0', 'the purge of the control');
      await sleep(1200); // past retention for the queued one too
      assert.equal(sql(db, `SELECT count(*) FROM requests WHERE id = '${id}'`), '1', 'not purged while unexported');
      assert.match(gw.output(), /HTTP 503 SlowDown/);
      const st = await status(gw);
      assert.equal(st.status, 403, 'the export status is for admins');
      bucket.failNext(0);
      await waitFor(() => exportedRecords(bucket).some((r) => r.id === id), 'the export');
      await waitFor(() => sql(db, `SELECT count(*) FROM requests WHERE id = '${id}'`) === '0', 'the purge after it');
    } finally {
      await gw.stop();
      await bucket.close();
    }
  });

  it('retention without require_export: what it removes before the export is counted as lost, and said', async () => {
    const bucket = await startBucket('audit');
    // the bucket refuses every object holding that record (any object before it is known), so
    // retention removes it first, whenever the exporter's rounds come; other records go in
    let id;
    bucket.refuseIf((doc) => id === undefined || doc.records.some((r) => r.id === id));
    const gw = await startGateway({
      providers: providersFor(mock.url), exporters: exporter(bucket), grants: ADMIN_GRANTS,
      database: { retention: { duration: '1s' } },
    }, { env: { KL_TEST_S3_SECRET: SECRET } });
    try {
      const db = join(gw.dir, 'keyless.db');
      id = await chat(gw, 'purged first');
      // written first (the writer is asynchronous: absent at once would prove nothing), then purged
      await waitFor(() => sql(db, `SELECT count(*) FROM export_queue WHERE id = '${id}'`) === '1', 'the record queued');
      await waitFor(() => sql(db, `SELECT count(*) FROM requests WHERE id = '${id}'`) === '0', 'the purge');
      await waitFor(async () => (await status(gw)).body.records_lost >= 1, 'the loss counted');
      const later = await chat(gw, 'exported after');
      await waitFor(() => exportedRecords(bucket).some((r) => r.id === later), 'a later record exported');
      assert.ok(!exportedRecords(bucket).some((r) => r.id === id), 'the purged record never reaches the bucket');
      assert.match(gw.output(), /queued records were removed by retention before they could be exported/);
    } finally {
      await gw.stop();
      await bucket.close();
    }
  });

  it('zero retention: records are kept only until the bucket has them', async () => {
    const bucket = await startBucket('audit');
    const gw = await startGateway({
      providers: providersFor(mock.url), exporters: exporter(bucket),
      database: { retention: { duration: '0', require_export: true } },
    }, { env: { KL_TEST_S3_SECRET: SECRET } });
    try {
      const db = join(gw.dir, 'keyless.db');
      const id = await chat(gw, 'archive only');
      await waitFor(() => exportedRecords(bucket).some((r) => r.id === id), 'the export');
      await waitFor(() => sql(db, 'SELECT count(*) FROM requests') === '0', 'the local copy removed');
      assert.equal(sql(db, 'SELECT count(*) FROM export_queue'), '0');
      assert.match(gw.output(), /kept only until they are exported/);
    } finally {
      await gw.stop();
      await bucket.close();
    }
  });

  // plain: before the restart, another gateway of the fleet, configured
  // without an exporter, starts and marks the row of the name no session
  // holds interrupted; the restart must still export it
  for (const [driver, plain] of [['sqlite', false], ['postgres', false], ['postgres', true]]) {
    it(`${driver}: a stream cut short by kill -9 is exported as interrupted after the restart, never as in progress` +
       (plain ? ', also when a gateway without an exporter marked it first' : ''), {
      skip: driver === 'postgres' && !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set (make test starts PostgreSQL)',
    }, async () => {
      const bucket = await startBucket('audit');
      bucket.failNext(1000); // nothing goes out before the kill: the exporter has never sent anything
      const store = driver === 'sqlite'
        ? { path: join(tempDir('keyless-export-kill-'), 'keyless.db') }
        : { driver: 'postgres', url: ownDatabase(`kl_export_kill${plain ? '_plain' : ''}_${process.pid}`), instance: `gw-exp-kill-${process.pid}` };
      const config = { providers: providersFor(mock.url), exporters: exporter(bucket), grants: ADMIN_GRANTS, store };
      const gw = await startGateway(config, { env: { KL_TEST_S3_SECRET: SECRET } });
      const id = await killMidStream(gw);
      if (driver === 'sqlite')
        assert.equal(sql(store.path, `SELECT count(*) FROM export_queue WHERE id = '${id}'`), '0', 'an in-progress row is not queued');
      if (plain)
        await markedByPlain(mock, store.url, `gw-exp-kill-plain-${process.pid}`, id);
      bucket.failNext(0);
      const gw2 = await startGateway(config, { env: { KL_TEST_S3_SECRET: SECRET } });
      try {
        await exportedInterrupted(bucket, id);
      } finally {
        await gw2.stop();
        await bucket.close();
      }
    });
  }

  it('postgres: on a database no gateway exports from, rows marked interrupted are not queued', {
    skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set (make test starts PostgreSQL)',
  }, async () => {
    const url = ownDatabase(`kl_export_none_${process.pid}`);
    const gw = await startGateway({
      providers: providersFor(mock.url), grants: ADMIN_GRANTS,
      store: { driver: 'postgres', url, instance: `gw-exp-none-a-${process.pid}` },
    });
    const id = await killMidStream(gw);
    await markedByPlain(mock, url, `gw-exp-none-b-${process.pid}`, id);
    const q = spawnSync('psql', [url, '-tAc', 'SELECT count(*) FROM export_queue'], { encoding: 'utf8' });
    assert.equal(q.status, 0, q.stderr);
    assert.equal(q.stdout.trim(), '0', 'nothing queued that no exporter would ever take off');
  });

  it('configuration errors are reported by keyless check', () => {
    const path = join(tempDir('keyless-export-'), 'bad.hujson');
    writeFileSync(path, JSON.stringify({ exporters: { s3: { bucket_name: 'audit', every: '10ms', prefix: '/abs', endpoint: 'ftp://x' } } }));
    const bad = spawnSync(join(BUILD, 'keyless'), ['check', '--config', path], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stdout + bad.stderr, /needs "region"/);
    assert.match(bad.stdout + bad.stderr, /needs "access_key_id" and "access_secret"/);
    assert.match(bad.stdout + bad.stderr, /every must be a duration of at least "1s"/);
    assert.match(bad.stdout + bad.stderr, /prefix may hold/);
    assert.match(bad.stdout + bad.stderr, /endpoint must be an http/);
  });

  it('PostgreSQL shared by two gateways: each record is exported once', {
    skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set (make test starts PostgreSQL)',
  }, async () => {
    const bucket = await startBucket('audit');
    const url = process.env.KEYLESS_TEST_PG_URL;
    const start = (instance) => startGateway({
      providers: providersFor(mock.url), exporters: exporter(bucket), store: { driver: 'postgres', url, instance },
    }, { env: { KL_TEST_S3_SECRET: SECRET } });
    const a = await start(`gw-exp-a-${process.pid}`), b = await start(`gw-exp-b-${process.pid}`);
    try {
      const ids = [];
      for (let i = 0; i < 10; i++) ids.push(await chat(i % 2 ? a : b, `shared ${i}`));
      await waitFor(() => ids.every((id) => exportedRecords(bucket).some((r) => r.id === id)), 'all ten exported');
      await sleep(2500); // more rounds on both: still once each
      const mine = exportedRecords(bucket).filter((r) => ids.includes(r.id));
      assert.equal(mine.length, 10, 'no record exported twice');
      assert.deepEqual(new Set(mine.map((r) => r.instance)),
        new Set([`gw-exp-a-${process.pid}`, `gw-exp-b-${process.pid}`]));
    } finally {
      await a.stop();
      await b.stop();
      await bucket.close();
    }
  });
});
