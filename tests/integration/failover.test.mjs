// Failover: a provider that fails before the caller got anything (unreachable,
// or answering 429/5xx) is replaced by the next provider serving the same
// model under the same policy; the caller sees one answer, the record lists
// the providers that failed, and a spend quota is reserved and charged at the
// price of the provider that answered.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import { spawn } from 'node:child_process';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startMock, startGateway, startHook, finalRecord, assertNoKeys, rawProvider, startProxy, scriptedUpstream, KEYS, BUILD } from './lib/harness.mjs';

const BACKUP_KEY = 'sk-backup-failover-0123456789abcdef';
const THIRD_KEY = 'sk-third-failover-0123456789abcdef';

// A port nothing listens on.
async function closedPort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

// A host that never answers a connection: a listener in a child process
// whose event loop is blocked, so it accepts nothing, with its accept queue
// filled; the kernel then drops every further SYN and a connect() hangs (a
// host that is down, or a firewall that drops).
async function stalledListener() {
  const child = spawn(process.execPath, ['-e', `
    const s = require('net').createServer();
    s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
      process.stdout.write(s.address().port + '\\n');
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    });`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(Number(out.trim()));
    });
    child.on('exit', () => reject(new Error('the stalled listener exited')));
  });
  const fillers = [];
  for (let i = 0; i < 4; i++) fillers.push(net.connect(port, '127.0.0.1').on('error', () => {}));
  await sleep(200);
  return { port, close: () => { for (const f of fillers) f.destroy(); child.kill('SIGKILL'); } };
}

// primary (preference 10) fails as `fault` says; backup (0) and third (-5)
// serve the same models from the same simulator with their own keys.
function providers(mockUrl, { fault = 'status=503', primaryUrl = mockUrl, thirdFault, backup = {} } = {}) {
  const chat = { openai_chat: true, openai_responses: true, anthropic_messages: true };
  return {
    primary: {
      baseurl: primaryUrl, apikey: KEYS.openai, models: ['gpt-4o', 'claude-sonnet-4-5'], preference: 10,
      compatibility: chat, add_headers: fault ? [`x-mock: ${fault}`] : [],
    },
    backup: {
      baseurl: mockUrl, apikey: BACKUP_KEY, models: ['gpt-4o', 'claude-sonnet-4-5'], preference: 0,
      compatibility: chat, ...backup,
    },
    third: {
      baseurl: mockUrl, apikey: THIRD_KEY, models: ['gpt-4o', 'claude-sonnet-4-5'], preference: -5,
      compatibility: chat, add_headers: thirdFault ? [`x-mock: ${thirdFault}`] : [],
    },
  };
}

const keyOf = (req) => {
  const h = req.headers.find(([n]) => n.toLowerCase() === 'authorization' || n.toLowerCase() === 'x-api-key');
  return h && h[1].replace(/^Bearer /, '');
};

function openai(gw) {
  return new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'unused', maxRetries: 0 });
}

// A primary provider that answers 503 while primary.fail, else a chat
// completion "from primary"; primary.seen counts the requests it had.
async function startPrimary() {
  const primary = { fail: true, seen: 0 };
  const body = '{"id":"x","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"from primary"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}';
  const up = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      primary.seen++;
      res.writeHead(primary.fail ? 503 : 200, { 'content-type': 'application/json' });
      res.end(primary.fail ? '{"error":{"message":"overloaded"}}' : body);
    });
  });
  await new Promise((r) => up.listen(0, '127.0.0.1', r));
  return { primary, up };
}

async function chat(gw, model = 'gpt-4o', headers = {}, signal = undefined) {
  return fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    signal,
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model, max_tokens: 50, messages: [{ role: 'user', content: 'hi' }] }),
  });
}

// One request that fails over from primary to backup, then the same request
// at third's ordinary price (named by its provider): both records.
async function failedOverThenPlain(gw) {
  const r = await chat(gw);
  assert.equal(r.status, 200);
  await r.json();
  const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
  assert.equal(rec.provider, 'backup');
  const plain = await chat(gw, 'third/gpt-4o');
  assert.equal(plain.status, 200);
  await plain.json();
  return { rec, base: await finalRecord(gw, plain.headers.get('x-keyless-request-id')) };
}

describe('failover', () => {
  let mock;
  before(async () => { mock = await startMock(); });
  after(async () => { await mock.stop(); });

  // A gateway started from cfg answers one chat request with status, having
  // asked the providers whose keys are given, in that order.
  async function answersAfterAsking(cfg, status, keys) {
    const gw = await startGateway(cfg);
    try {
      await mock.clear();
      const r = await chat(gw);
      assert.equal(r.status, status);
      await r.text();
      assert.deepEqual((await mock.requests()).map(keyOf), keys);
    } finally {
      await gw.stop();
    }
  }

  for (const driver of ['sqlite', 'postgres']) it(`${driver}: a provider answering 503 is replaced by the next: one answer for the caller, both attempts on record`, {
    skip: driver === 'postgres' && !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set (make test starts PostgreSQL)',
  }, async () => {
    const store = driver === 'postgres'
      ? { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance: `gw-failover-${process.pid}` } : undefined;
    const gw = await startGateway({ providers: providers(mock.url), ...(store ? { store } : {}) });
    try {
      await mock.clear();
      const r = await openai(gw).chat.completions.create({
        model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }],
      }).withResponse();
      assert.equal(r.response.status, 200);
      assert.equal(r.data.choices[0].message.content, 'Hello from mockllm.');
      const seen = await mock.requests();
      assert.deepEqual(seen.map(keyOf), [KEYS.openai, BACKUP_KEY], 'primary first, then backup');
      assert.equal(seen[0].body, seen[1].body, 'the same request body both times');

      const id = r.response.headers.get('x-keyless-request-id');
      const rec = await finalRecord(gw, id);
      assert.equal(rec.provider, 'backup');
      assert.equal(rec.status, 200);
      assert.equal(rec.upstream_status, 200);
      assert.equal(rec.error_class, null);
      assert.equal(rec.input_tokens, 60); // mockllm's 100, 40 of them cached
      assert.equal(rec.attempts.length, 1);
      assert.equal(rec.attempts[0].provider, 'primary');
      assert.equal(rec.attempts[0].status, 503);
      assert.equal(rec.attempts[0].error_class, 'upstream_error');
      assert.ok(rec.attempts[0].at_ms >= 0);
      assert.match(gw.output(), /provider primary failed \(provider primary answered 503\); sending the request to provider backup/);
    } finally {
      await gw.stop();
    }
    assertNoKeys(assert, gw.output(), 'gateway output');
  });

  it('streams fail over before the first byte: an Anthropic stream whose provider is overloaded (529)', async () => {
    const gw = await startGateway({ providers: providers(mock.url, { fault: 'status=529' }) });
    try {
      await mock.clear();
      const client = new Anthropic({ baseURL: gw.url, apiKey: 'unused', maxRetries: 0 });
      const stream = client.messages.stream({
        model: 'claude-sonnet-4-5', max_tokens: 50, messages: [{ role: 'user', content: 'hi' }],
      });
      const { response } = await stream.withResponse();
      const msg = await stream.finalMessage();
      assert.equal(msg.content[0].text, 'Hello from mockllm.');
      assert.equal(msg.usage.output_tokens, 20);
      assert.deepEqual((await mock.requests()).map(keyOf), [KEYS.openai, BACKUP_KEY]);
      const rec = await finalRecord(gw, response.headers.get('x-keyless-request-id'));
      assert.equal(rec.provider, 'backup');
      assert.equal(rec.stream, 1);
      assert.equal(rec.output_tokens, 20);
      assert.deepEqual(rec.attempts.map((a) => [a.provider, a.status]), [['primary', 529]]);
    } finally {
      await gw.stop();
    }
  });

  it('Gemini: generateContent fails over between two Gemini providers; the record lists it, so do the list and keyless export', async () => {
    const gem = { gemini_generate_content: true };
    const gw = await startGateway({ providers: {
      g1: { baseurl: mock.url, apikey: KEYS.gemini, authorization: 'x-goog-api-key', models: ['gemini-2.5-flash'],
        preference: 1, compatibility: gem, add_headers: ['x-mock: status=503'] },
      g2: { baseurl: mock.url, apikey: BACKUP_KEY, authorization: 'x-goog-api-key', models: ['gemini-2.5-flash'],
        compatibility: gem },
    } });
    try {
      await mock.clear();
      const ai = new GoogleGenAI({ apiKey: 'unused', httpOptions: { baseUrl: gw.url } });
      const r = await ai.models.generateContent({ model: 'gemini-2.5-flash', contents: 'hi' });
      assert.equal(r.text, 'Hello from mockllm.');
      const seen = await mock.requests();
      assert.deepEqual(seen.map((q) => q.headers.find(([n]) => n.toLowerCase() === 'x-goog-api-key')[1]), [KEYS.gemini, BACKUP_KEY]);
      assert.deepEqual(seen.map((q) => q.path), Array(2).fill('/v1beta/models/gemini-2.5-flash:generateContent'));
      let rec;
      for (let i = 0; i < 100 && !(rec && rec.state === 'done'); i++) {
        await sleep(30);
        rec = (await (await fetch(`${gw.url}/api/requests?provider=g2`)).json()).requests[0];
      }
      assert.deepEqual(rec.attempts.map((a) => [a.provider, a.status]), [['g1', 503]], 'the list gives the array too');
      const out = spawnSync(join(BUILD, 'keyless'), ['export', '--config', gw.configPath], { encoding: 'utf8' });
      assert.equal(out.status, 0, out.stderr);
      const line = out.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((x) => x.provider === 'g2');
      assert.deepEqual(JSON.parse(line.attempts), [{ provider: 'g1', status: 503, error_class: 'upstream_error',
        error: 'provider g1 answered 503', at_ms: JSON.parse(line.attempts)[0].at_ms }], 'keyless export: the JSON text');
    } finally {
      await gw.stop();
    }
  });

  it('a stream that begins with the provider\'s error (Anthropic\'s overloaded_error, a Bedrock exception) fails over; one that errs later does not', async () => {
    const ask = (gw) => new Anthropic({ baseURL: gw.url, apiKey: 'unused', maxRetries: 0 }).messages.stream({
      model: 'claude-sonnet-4-5', max_tokens: 50, messages: [{ role: 'user', content: 'hi' }] });
    // the 200's first event is the error: the caller gets the backup's answer
    let gw = await startGateway({ providers: providers(mock.url, { fault: 'stream_error=529;stream_error_at=0' }) });
    try {
      await mock.clear();
      const stream = ask(gw);
      const { response } = await stream.withResponse();
      const msg = await stream.finalMessage();
      assert.equal(msg.content[0].text, 'Hello from mockllm.');
      assert.deepEqual((await mock.requests()).map(keyOf), [KEYS.openai, BACKUP_KEY]);
      const rec = await finalRecord(gw, response.headers.get('x-keyless-request-id'));
      assert.equal(rec.provider, 'backup');
      assert.equal(rec.output_tokens, 20, 'the usage of the answer the caller got');
      assert.deepEqual(rec.attempts.map((a) => [a.provider, a.status, a.error_class]), [['primary', 529, 'upstream_error']]);
      assert.match(rec.attempts[0].error, /primary's stream began with overloaded_error: Overloaded/);
      assert.match(gw.output(), /provider primary failed \(provider primary's stream began with overloaded_error/);
    } finally {
      await gw.stop();
    }
    // an error in the middle: the caller has had the head and events by then
    gw = await startGateway({ providers: providers(mock.url, { fault: 'stream_error=529' }) });
    try {
      await mock.clear();
      const stream = ask(gw);
      await assert.rejects(stream.finalMessage(), /overloaded/i);
      assert.deepEqual((await mock.requests()).map(keyOf), [KEYS.openai]);
    } finally {
      await gw.stop();
    }
    // no provider to fail over to: the error event reaches the caller as the provider sent it
    const alone = providers(mock.url, { fault: 'stream_error=529;stream_error_at=0' });
    delete alone.backup;
    delete alone.third;
    gw = await startGateway({ providers: alone });
    try {
      const stream = ask(gw);
      await assert.rejects(stream.finalMessage(), (e) => e.error?.error?.type === 'overloaded_error' || /overloaded/i.test(e.message));
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      assert.doesNotMatch(metrics, /keyless_failovers_total\{[^}]*provider="primary"/);
    } finally {
      await gw.stop();
    }
    // Bedrock's ConverseStream: a throttlingException as the first message
    const bedrock = (fault, pref) => ({ baseurl: mock.url, apikey: KEYS.bedrock, models: ['us.anthropic.claude-haiku-4-5-20251001-v1:0'],
      preference: pref, compatibility: { bedrock_converse: true }, add_headers: fault ? [`x-mock: ${fault}`] : [] });
    gw = await startGateway({ providers: { b1: bedrock('stream_error=429;stream_error_at=0', 10), b2: bedrock(null, 0) } });
    try {
      const r = await fetch(`${gw.url}/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/converse-stream`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: [{ text: 'hi' }] }] }) });
      assert.equal(r.status, 200);
      const bytes = Buffer.from(await r.arrayBuffer()).toString('latin1');
      assert.match(bytes, /messageStart/);
      assert.doesNotMatch(bytes, /throttlingException/);
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.provider, 'b2');
      assert.deepEqual(rec.attempts.map((a) => [a.provider, a.status]), [['b1', 429]]);
      assert.match(rec.attempts[0].error, /b1's stream began with throttlingException/);
    } finally {
      await gw.stop();
    }
  });

  it('Gemini: a stream that begins with Google\'s bare JSON error fails over; one broken off later reaches the SDK as its error', async () => {
    const gem = { gemini_generate_content: true };
    const g = (fault, key, pref) => ({ baseurl: mock.url, apikey: key, authorization: 'x-goog-api-key',
      models: ['gemini-2.5-flash'], preference: pref, compatibility: gem, add_headers: fault ? [`x-mock: ${fault}`] : [] });
    const stream = async (gw) => {
      const ai = new GoogleGenAI({ apiKey: 'unused', httpOptions: { baseUrl: gw.url } });
      let text = '';
      for await (const c of await ai.models.generateContentStream({ model: 'gemini-2.5-flash', contents: 'hi' })) text += c.text ?? '';
      return text;
    };
    let gw = await startGateway({ providers: { g1: g('stream_error=503;stream_error_at=0', KEYS.gemini, 10),
      g2: g(null, BACKUP_KEY, 0) } });
    try {
      await mock.clear();
      assert.equal(await stream(gw), 'Hello from mockllm.');
      const seen = await mock.requests();
      assert.deepEqual(seen.map((q) => q.headers.find(([n]) => n.toLowerCase() === 'x-goog-api-key')[1]), [KEYS.gemini, BACKUP_KEY]);
      let rec;
      for (let i = 0; i < 100 && !(rec && rec.state === 'done'); i++) {
        await sleep(30);
        rec = (await (await fetch(`${gw.url}/api/requests?provider=g2`)).json()).requests[0];
      }
      assert.deepEqual(rec.attempts.map((a) => [a.provider, a.status, a.error_class]), [['g1', 503, 'upstream_error']]);
      assert.match(rec.attempts[0].error, /g1's stream began with UNAVAILABLE: The model is overloaded/);
    } finally {
      await gw.stop();
    }
    // broken off in the middle, nobody to fail over to: the tail goes on as Google sent it
    gw = await startGateway({ providers: { g1: g('stream_error=503;events=4;delay_events_ms=100', KEYS.gemini, 0) } });
    try {
      await mock.clear();
      const raw = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }) });
      const body = await raw.text();
      assert.equal(raw.status, 200);
      assert.match(body, /\r\n\r\n\{\n {2}"error": \{\n {4}"code": 503,\n/, body);
      const rec = await finalRecord(gw, raw.headers.get('x-keyless-request-id'));
      assert.equal(rec.error_class, 'upstream_error', JSON.stringify(rec));
      await assert.rejects(stream(gw), (e) => e.status === 503 && /The model is overloaded/.test(e.message));
    } finally {
      await gw.stop();
    }
    // the provider's connection lost midway: keyless ends the stream with the error event and
    // then the bare tail; a client that leaves in the gap before the tail (conn.c,
    // kl_respond_last_apart) ends the wait, and the record keeps the provider's failure
    gw = await startGateway({ providers: { g1: g('reset_after=2;delay_events_ms=50', KEYS.gemini, 0) } });
    try {
      const sock = net.connect(Number(new URL(gw.url).port), '127.0.0.1');
      const req = JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] });
      sock.write('POST /v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse HTTP/1.1\r\nHost: x\r\n' +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(req)}\r\n\r\n${req}`);
      let got = '';
      await new Promise((resolve, reject) => {
        sock.on('data', (d) => {
          got += d.toString();
          if (/data: \{"error"/.test(got)) sock.destroy();
        });
        sock.on('error', reject);
        sock.on('close', resolve);
      });
      assert.match(got, /data: \{"error":\{"code":502/);
      assert.ok(!/\n\{\n {2}"error"/.test(got), 'the client left before the bare tail');
      const left = await finalRecord(gw, /x-keyless-request-id: (\S+)/.exec(got)[1]);
      assert.equal(left.state, 'done');
      assert.equal(left.error_class, 'stream_interrupted', JSON.stringify(left));
      assert.equal(await stream(gw).catch((e) => e.status), 502, 'the gateway goes on serving');
    } finally {
      await gw.stop();
    }
  });

  it('the first event decides, not a keep-alive before it; an error event left unterminated at the end; both upstream paths drain briefly', async () => {
    const overloaded = 'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}';
    const head = 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n';
    const chunk = (t) => `${Buffer.byteLength(t).toString(16)}\r\n${t}\r\n`;
    // a keep-alive comment, then the error, then nothing more: the connection stays open
    // (until the test ends: the proxy does not close its side when keyless leaves)
    const open = [];
    const keepalive = await rawProvider((req, sock) => {
      open.push(sock);
      sock.write(head + chunk(': keepalive\n\n') + chunk(`${overloaded}\n\n`));
    });
    // the error without its blank line, and the stream ends
    const unterminated = await rawProvider((req, sock) => {
      sock.write(head + chunk(overloaded) + '0\r\n\r\n');
    });
    const proxy = await startProxy();
    try {
      for (const [up, env] of [[keepalive, {}], [unterminated, {}], [keepalive, { http_proxy: proxy.url }]]) {
        const gw = await startGateway({ providers: providers(mock.url, { fault: null,
          primaryUrl: `http://127.0.0.1:${up.address().port}` }), listen: { timeouts: { upstream_idle: '120s' } } }, { env });
        try {
          await mock.clear();
          const r = await fetch(`${gw.url}/v1/messages`, { method: 'POST', signal: AbortSignal.timeout(20000),
            headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
            body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'hi' }] }) });
          assert.equal(r.status, 200);
          const text = await r.text();
          assert.match(text, /^event: message_start\n/, 'the backup\'s stream, from its first event');
          assert.match(text, /event: message_stop/);
          assert.doesNotMatch(text, /overloaded|keepalive/);
          const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
          assert.equal(rec.provider, 'backup');
          assert.deepEqual(rec.attempts.map((a) => [a.provider, a.status]), [['primary', 529]]);
        } finally {
          await gw.stop();
        }
      }
      assert.ok(proxy.seen >= 1, 'the last gateway reached its providers through libcurl');
    } finally {
      open.forEach((sock) => sock.destroy());
      for (const srv of [keepalive, unterminated, proxy]) srv.close();
    }
  });

  it('a first event that is Anthropic\'s error under no event name, as Python-served servers write it, fails over too', async () => {
    const up = await rawProvider((req, sock) => {
      sock.end('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n' +
        'data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n');
    });
    const gw = await startGateway({ providers: providers(mock.url, { fault: null,
      primaryUrl: `http://127.0.0.1:${up.address().port}` }) });
    try {
      await mock.clear();
      const r = await fetch(`${gw.url}/v1/messages`, { method: 'POST',
        headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
        body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'hi' }] }) });
      assert.equal(r.status, 200);
      const text = await r.text();
      assert.match(text, /^event: message_start\n/, 'the backup\'s stream, from its first event');
      assert.doesNotMatch(text, /overloaded/);
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.provider, 'backup');
      assert.deepEqual(rec.attempts.map((a) => [a.provider, a.status]), [['primary', 529]]);
    } finally {
      await gw.stop();
      up.close();
    }
  });

  it('with no provider to fail over to, a stream\'s head is not held for its first event', async () => {
    const head = 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n';
    const chunk = (t) => `${Buffer.byteLength(t).toString(16)}\r\n${t}\r\n`;
    // the head and a keep-alive; the events only once the caller has the head
    let release;
    const released = new Promise((r) => (release = r));
    const slow = await rawProvider(async (req, sock) => {
      sock.write(head + chunk(': keepalive\n\n'));
      await released;
      sock.write(chunk(`event: message_start\ndata: ${JSON.stringify({ type: 'message_start', message: { id: 'msg_1',
        type: 'message', role: 'assistant', model: 'claude-sonnet-4-5', content: [], stop_reason: null,
        usage: { input_tokens: 5, output_tokens: 1 } } })}\n\n`) +
        chunk('event: message_stop\ndata: {"type":"message_stop"}\n\n') + '0\r\n\r\n');
    });
    const alone = providers(mock.url, { fault: null, primaryUrl: `http://127.0.0.1:${slow.address().port}` });
    delete alone.backup;
    delete alone.third;
    const gw = await startGateway({ providers: alone });
    try {
      const r = await fetch(`${gw.url}/v1/messages`, { method: 'POST', signal: AbortSignal.timeout(20000),
        headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
        body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'hi' }] }) });
      assert.equal(r.status, 200, 'the head came while the provider still held its events');
      release();
      const text = await r.text();
      assert.match(text, /event: message_start/);
      assert.match(text, /event: message_stop/);
    } finally {
      release();
      await gw.stop();
      slow.close();
    }
  });

  it('no failover once an answer began (a stream cut after its head), nor to or from a passthrough provider', async () => {
    let gw = await startGateway({ providers: providers(mock.url, { fault: 'reset_after=2' }) });
    try {
      await mock.clear();
      const r = await fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
      });
      assert.equal(r.status, 200);
      const text = await r.text();
      assert.match(text, /error/, 'the stream ends with an error event');
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.provider, 'primary');
      assert.equal(rec.error_class, 'stream_interrupted');
      assert.equal(rec.attempts, null);
      assert.equal((await mock.requests()).length, 1);
    } finally {
      await gw.stop();
    }
    for (const side of ['primary', 'backup']) {
      const cfg = providers(mock.url);
      cfg[side].auth_mode = 'passthrough';
      delete cfg.third; // else third would be the failover target
      gw = await startGateway({ providers: cfg });
      try {
        await mock.clear();
        const r = await chat(gw);
        assert.equal(r.status, 503, side);
        await r.text();
        assert.equal((await mock.requests()).length, 1, side);
      } finally {
        await gw.stop();
      }
    }
  });

  it('to a cheaper provider: the difference goes back to the bucket; a log-only bucket is charged the same way', async () => {
    const cheap = { model_cost_map: [{ match: 'gpt-4o', as: 'gpt-4o', adjustment: 0.5 }] };
    const grants = [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' },
      { quotas: [{ bucket: 'strict' }, { bucket: 'audit' }] }] } }];
    const gw = await startGateway({ providers: providers(mock.url, { backup: cheap }), grants,
      quotas: { strict: { capacity: '$1' }, audit: { capacity: '$0.0000001', on_exceed: 'log' } } });
    try {
      const { rec, base } = await failedOverThenPlain(gw);
      assert.equal(rec.cost_nanodollars * 2, base.cost_nanodollars, 'priced as backup: half');
      const buckets = (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets;
      const strict = buckets.find((b) => b.bucket === 'strict');
      assert.equal(strict.current, 1000000000 - rec.cost_nanodollars - base.cost_nanodollars);
      assert.equal(strict.reserved, 0);
      const audit = buckets.find((b) => b.bucket === 'audit');
      assert.equal(audit.reserved, 0);
      assert.equal(audit.current, 100 - rec.cost_nanodollars - base.cost_nanodollars, 'log-only: charged, never refused');
    } finally {
      await gw.stop();
    }
  });

  it('an unreachable provider fails over; a refused connection is on record', async () => {
    const gw = await startGateway({
      providers: providers(mock.url, { fault: null, primaryUrl: `http://127.0.0.1:${await closedPort()}` }),
    });
    try {
      await mock.clear();
      const r = await chat(gw);
      assert.equal(r.status, 200);
      await r.json();
      assert.deepEqual((await mock.requests()).map(keyOf), [BACKUP_KEY]);
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.provider, 'backup');
      assert.equal(rec.attempts[0].provider, 'primary');
      assert.equal(rec.attempts[0].error_class, 'upstream_unreachable');
      assert.equal(rec.attempts[0].status, undefined);
      assert.match(rec.attempts[0].error, /provider primary is unreachable/);
    } finally {
      await gw.stop();
    }
  });

  it('a provider without credentials (its key not set) fails over and cools down; alone, it answers 503 with the reason', async () => {
    const cfg = { providers: providers(mock.url, { fault: null }) };
    cfg.providers.primary.apikey = '${KEYLESS_TEST_UNSET_PRIMARY}';
    const gw = await startGateway(cfg);
    try {
      for (let i = 0; i < 2; i++) {
        await mock.clear();
        const r = await chat(gw);
        assert.equal(r.status, 200);
        await r.json();
        assert.deepEqual((await mock.requests()).map(keyOf), [BACKUP_KEY]);
        const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
        assert.equal(rec.provider, 'backup');
        assert.equal(rec.attempts[0].provider, 'primary');
        assert.match(rec.attempts[0].error ?? '', /KEYLESS_TEST_UNSET_PRIMARY is not set/);
      }
    } finally {
      await gw.stop();
    }
    const alone = await startGateway({ providers: { primary: cfg.providers.primary } });
    try {
      const r = await chat(alone);
      assert.equal(r.status, 503);
      assert.match((await r.json()).error.message, /KEYLESS_TEST_UNSET_PRIMARY is not set/);
    } finally {
      await alone.stop();
    }
  });

  it('a provider that accepts no connection fails over after timeouts.upstream_connect, on both upstream paths', async () => {
    const stalled = await stalledListener();
    try {
      // http://: keyless's own HTTP/1.1 client; https://: libcurl (the TCP connect hangs before any TLS)
      for (const scheme of ['http', 'https']) {
        const gw = await startGateway({
          listen: { timeouts: { upstream_connect: '300ms' } },
          providers: providers(mock.url, { fault: null, primaryUrl: `${scheme}://127.0.0.1:${stalled.port}` }),
        });
        try {
          await mock.clear();
          const t0 = Date.now();
          const r = await chat(gw);
          // not a speed check: the default connect timeout (10 s) must not be the one that fired
          assert.ok(Date.now() - t0 < 8000, `${scheme}: failed over after ${Date.now() - t0} ms`);
          assert.equal(r.status, 200, scheme);
          await r.json();
          assert.deepEqual((await mock.requests()).map(keyOf), [BACKUP_KEY], scheme);
          const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
          assert.equal(rec.provider, 'backup', scheme);
          assert.equal(rec.attempts.length, 1, scheme);
          assert.equal(rec.attempts[0].provider, 'primary', scheme);
          assert.equal(rec.attempts[0].error_class, 'upstream_timeout', scheme);
          assert.match(rec.attempts[0].error, scheme === 'http' ? /provider primary timed out: no connection after 300 ms/
            : /provider primary timed out: Timeout was reached/, scheme);
        } finally {
          await gw.stop();
        }
      }
    } finally {
      stalled.close();
    }
  });

  it('a failed answer whose body does not end fails over after a short drain; so does the libcurl path', async () => {
    const timers = [];
    // 64 KiB and more, never ending: cut at the drain's size limit
    const endless = await rawProvider((req, sock) => {
      sock.write('HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n');
      const chunk = 'x'.repeat(8192);
      const t = setInterval(() => { if (!sock.destroyed) sock.write(`${(8192).toString(16)}\r\n${chunk}\r\n`); }, 5);
      timers.push(t);
      sock.on('close', () => clearInterval(t));
    });
    // ten bytes of a thousand, then silence: cut when the drain's idle time is up
    const stalled = await rawProvider((req, sock) => {
      sock.write('HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"error":1');
    });
    // a byte every 200 ms: cut when the drain's whole time is up
    const trickle = await rawProvider((req, sock) => {
      sock.write('HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n');
      const t = setInterval(() => { if (!sock.destroyed) sock.write('1\r\nx\r\n'); }, 200);
      timers.push(t);
      sock.on('close', () => clearInterval(t));
    });
    const proxy = await startProxy();
    try {
      for (const [up, env] of [[endless, {}], [stalled, {}], [trickle, {}], [null, { http_proxy: proxy.url }]]) {
        const primaryUrl = up ? `http://127.0.0.1:${up.address().port}` : mock.url;
        // a long upstream_idle: only the drain's own limits can end these in time
        const gw = await startGateway({ providers: providers(mock.url, { fault: up ? null : 'status=503', primaryUrl }),
          listen: { timeouts: { upstream_idle: '120s' } } }, { env });
        try {
          await mock.clear();
          const r = await chat(gw, 'gpt-4o', {}, AbortSignal.timeout(20000));
          assert.equal(r.status, 200);
          await r.json();
          const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
          assert.equal(rec.provider, 'backup');
          assert.deepEqual(rec.attempts.map((a) => [a.provider, a.status, a.error_class]), [['primary', 503, 'upstream_error']]);
          assert.deepEqual((await mock.requests()).map(keyOf), up ? [BACKUP_KEY] : [KEYS.openai, BACKUP_KEY]);
        } finally {
          await gw.stop();
        }
      }
      assert.ok(proxy.seen >= 2, 'the last gateway reached its providers through libcurl');
    } finally {
      timers.forEach(clearInterval);
      for (const srv of [endless, stalled, trickle, proxy]) srv.close();
    }
  });

  it('a reset before the request was sent fails over; one after it was sent does not (it may have been served)', async () => {
    // reads the whole request, then resets: it may have been generating
    const afterSend = await rawProvider((req, sock) => sock.resetAndDestroy());
    // resets at the first bytes of an 8 MB body: it cannot have been served
    const duringSend = net.createServer((sock) => sock.once('data', () => sock.resetAndDestroy()));
    await new Promise((r) => duringSend.listen(0, '127.0.0.1', r));
    const big = JSON.stringify({ model: 'gpt-4o', max_tokens: 5, messages: [{ role: 'user', content: 'y'.repeat(8 << 20) }] });
    try {
      for (const [srv, body, status, cls] of [[afterSend, null, 502, null], [duringSend, big, 200, 'upstream_reset']]) {
        const gw = await startGateway({ providers: providers(mock.url, { fault: null, primaryUrl: `http://127.0.0.1:${srv.address().port}` }) });
        try {
          await mock.clear();
          const r = body
            ? await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
            : await chat(gw);
          assert.equal(r.status, status);
          await r.text();
          const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
          if (cls) {
            assert.equal(rec.provider, 'backup');
            assert.deepEqual(rec.attempts.map((a) => [a.provider, a.error_class]), [['primary', cls]]);
            assert.deepEqual((await mock.requests()).map(keyOf), [BACKUP_KEY]);
          } else {
            assert.equal(rec.provider, 'primary');
            assert.equal(rec.error_class, 'upstream_reset');
            assert.equal(rec.attempts, null);
            assert.deepEqual(await mock.requests(), []);
          }
        } finally {
          await gw.stop();
        }
      }
    } finally {
      afterSend.close();
      duringSend.close();
    }
  });

  it('a provider that stops reading the request body fails over at upstream_first_byte, on both upstream paths', async () => {
    // reads the head, then nothing more: an 8 MB body cannot all go out, so it cannot have been served
    const deaf = net.createServer((sock) => { sock.on('error', () => {}); sock.once('data', () => sock.pause()); });
    await new Promise((r) => deaf.listen(0, '127.0.0.1', r));
    const port = deaf.address().port;
    const big = JSON.stringify({ model: 'gpt-4o', max_tokens: 5, messages: [{ role: 'user', content: 'y'.repeat(8 << 20) }] });
    try {
      // http://127.0.0.1: keyless's own client; through a proxy (the deaf server itself): libcurl
      for (const [primaryUrl, env] of [[`http://127.0.0.1:${port}`, {}],
        ['http://primary.test', { http_proxy: `http://127.0.0.1:${port}`, no_proxy: '127.0.0.1' }]]) {
        const gw = await startGateway({ providers: providers(mock.url, { fault: null, primaryUrl }),
          listen: { timeouts: { upstream_first_byte: '1s' } } }, { env });
        try {
          await mock.clear();
          const r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: big });
          assert.equal(r.status, 200, primaryUrl);
          await r.json();
          const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
          assert.equal(rec.provider, 'backup', primaryUrl);
          assert.deepEqual(rec.attempts.map((a) => [a.provider, a.error_class]), [['primary', 'upstream_timeout']], primaryUrl);
          assert.deepEqual((await mock.requests()).map(keyOf), [BACKUP_KEY], primaryUrl);
        } finally {
          await gw.stop();
        }
      }
    } finally {
      deaf.close();
    }
  });

  it('libcurl path: a broken answer on a reused connection after the whole request was sent does not fail over', async () => {
    // the "proxy" is the provider itself: it answers the first request on a
    // connection, and breaks the connection once it has read the second
    const body = '{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}';
    const fake = scriptedUpstream({
      ok(sock, req) {
        if (req.onConn === 2) { sock.end('NOT HTTP\r\n\r\n'); return; } // a reply curl cannot read: no retry of its own
        sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      },
    });
    const port = await fake.listen();
    const gw = await startGateway({ providers: providers(mock.url, { fault: null, primaryUrl: 'http://primary.test' }) },
      { workers: 1, env: { http_proxy: `http://127.0.0.1:${port}`, no_proxy: '127.0.0.1' } });
    try {
      await mock.clear();
      const first = await chat(gw);
      assert.equal(first.status, 200);
      await first.json();
      const second = await chat(gw);
      assert.equal(second.status, 502);
      await second.text();
      assert.equal(fake.seen.length, 2);
      assert.equal(fake.conns(), 1, 'the second request reused the connection');
      assert.match(fake.seen[1].line, /^POST http:\/\/primary\.test\/v1\/chat\/completions/);
      const rec = await finalRecord(gw, second.headers.get('x-keyless-request-id'));
      assert.equal(rec.provider, 'primary');
      assert.equal(rec.error_class, 'upstream_reset');
      assert.equal(rec.attempts, null);
      assert.deepEqual(await mock.requests(), [], 'backup never asked');
    } finally {
      await gw.stop();
      fake.close();
    }
  });

  it('a request retried after its reused connection broke, whose retry finds the provider gone, is not failed over', async () => {
    // The provider read the whole request on a pooled connection, worked on
    // it, and died: the retry's connect is refused. It may have served the
    // request, so the backup is not asked, and the record says it was sent.
    const body = '{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}';
    const dying = scriptedUpstream({
      ok(sock, req) {
        if (req.onConn === 2) {
          dying.close();
          setTimeout(() => sock.destroy(), 200);
          return;
        }
        sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      },
    });
    const port = await dying.listen();
    const gw = await startGateway({ providers: providers(mock.url, { fault: null, primaryUrl: `http://127.0.0.1:${port}` }) },
      { workers: 1 });
    try {
      await mock.clear();
      const first = await chat(gw);
      assert.equal(first.status, 200);
      await first.json();
      const second = await chat(gw);
      assert.equal(second.status, 502);
      await second.text();
      assert.equal(dying.seen.length, 2, 'the provider had the request');
      const rec = await finalRecord(gw, second.headers.get('x-keyless-request-id'));
      assert.equal(rec.provider, 'primary');
      assert.equal(rec.error_class, 'upstream_reset');
      assert.match(rec.error_message, /broke after it took the whole request, and a fresh connection could not reach it/);
      assert.equal(rec.attempts, null);
      assert.deepEqual(await mock.requests(), [], 'backup never asked');
    } finally {
      await gw.stop();
    }
  });

  it('a client that leaves while a failed answer drains: the record keeps the provider that failed, with its status', async () => {
    const stalled = await rawProvider((req, sock) => {
      sock.write('HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{');
    });
    const gw = await startGateway({ providers: providers(mock.url, { fault: null, primaryUrl: `http://127.0.0.1:${stalled.address().port}` }) });
    try {
      await mock.clear();
      const before = Date.now();
      await assert.rejects(chat(gw, 'gpt-4o', {}, AbortSignal.timeout(300)));
      let rec;
      for (let i = 0; i < 100 && !(rec && rec.state === 'done'); i++) {
        await sleep(30);
        const list = (await (await fetch(`${gw.url}/api/requests?limit=10`)).json()).requests;
        rec = list.find((x) => x.path === '/v1/chat/completions' && x.started_at >= before - 1000);
      }
      assert.equal(rec.provider, 'primary');
      assert.equal(rec.upstream_status, 503);
      assert.equal(rec.error_class, 'client_closed');
      assert.equal(rec.attempts, null);
      assert.deepEqual(await mock.requests(), [], 'backup never asked');
    } finally {
      await gw.stop();
      stalled.close();
    }
  });

  it('no failover for a request pre_request hooks allowed for its provider (they may judge by provider)', async () => {
    const hook = await startHook();
    try {
      await answersAfterAsking({
        providers: providers(mock.url),
        hooks: { pii: { url: hook.url('/pii') } },
        grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
          { send_hooks: [{ name: 'pii', events: ['pre_request'], send: ['request_body'] }] }] } }],
      }, 503, [KEYS.openai]);
    } finally {
      await hook.close();
    }
  });

  it('postgres: a gateway starts while a long report holds requests (migration 6 looks before it alters)', {
    skip: !process.env.KEYLESS_TEST_PG_URL && 'KEYLESS_TEST_PG_URL is not set (make test starts PostgreSQL)',
  }, async () => {
    const store = { driver: 'postgres', url: process.env.KEYLESS_TEST_PG_URL, instance: `gw-failover-lock-${process.pid}` };
    let gw = await startGateway({ providers: providers(mock.url), store });
    await gw.stop();
    // a reader inside a transaction: holds ACCESS SHARE on requests until it ends
    const reader = spawn('psql', [process.env.KEYLESS_TEST_PG_URL, '-Aq'], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    reader.stdout.on('data', (d) => (out += d));
    reader.stdin.write('BEGIN; SELECT count(*) >= 0 AS held FROM requests;\n');
    for (let i = 0; i < 100 && !out.includes('t'); i++) await sleep(50);
    assert.match(out, /t/, 'the reader holds its lock');
    try {
      gw = await startGateway({ providers: providers(mock.url), store }); // waited for the lock before
      const r = await chat(gw);
      assert.equal(r.status, 200);
      await r.json();
      await gw.stop();
    } finally {
      reader.stdin.end('ROLLBACK;\n');
      await new Promise((r) => reader.once('exit', r));
    }
  });

  it('a provider that failed cooldown_after times in a row is passed over for cooldown, then tried again; a success clears it', async () => {
    const { primary, up } = await startPrimary();
    const admin = [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } }];
    const gw = await startGateway({ grants: admin, failover: { cooldown: '1s', cooldown_after: 3 },
      providers: providers(mock.url, { fault: null, primaryUrl: `http://127.0.0.1:${up.address().port}` }) });
    const cooling = async () => {
      const m = /keyless_provider_cooling_down\{provider="primary"\} (\d)/.exec(await (await fetch(`${gw.url}/metrics`)).text());
      return m && Number(m[1]);
    };
    const ask = async () => {
      const r = await chat(gw);
      assert.equal(r.status, 200);
      const j = await r.json();
      return { text: j.choices[0].message.content, rec: await finalRecord(gw, r.headers.get('x-keyless-request-id')) };
    };
    try {
      for (let i = 1; i <= 3; i++) {
        const { rec } = await ask();
        assert.equal(rec.provider, 'backup');
        assert.equal(primary.seen, i, 'primary is still asked');
      }
      assert.equal(await cooling(), 1);
      const skipped = await ask();
      assert.equal(primary.seen, 3, 'cooling down: not asked');
      assert.equal(skipped.rec.provider, 'backup');
      assert.deepEqual(skipped.rec.attempts.map((a) => [a.provider, a.error_class]), [['primary', 'provider_down']]);
      assert.match(skipped.rec.attempts[0].error, /provider primary is cooling down after 3 failures in a row/);

      primary.fail = false;
      await sleep(1100);
      const back = await ask();
      assert.equal(primary.seen, 4, 'the cool-down is over: asked again');
      assert.equal(back.text, 'from primary');
      assert.equal(back.rec.attempts, null);
      assert.equal(await cooling(), 0);

      // the success cleared the count: one failure now does not cool it down
      primary.fail = true;
      await ask();
      primary.fail = false;
      const again = await ask();
      assert.equal(primary.seen, 6);
      assert.equal(again.text, 'from primary');
    } finally {
      await gw.stop();
      up.close();
    }
  });

  it('a request that was to probe a provider after its cool-down but was refused before it was sent leaves the probe to the next', async () => {
    const { primary, up } = await startPrimary();
    const admin = [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } }];
    const gw = await startGateway({ grants: admin, failover: { cooldown: '1s', cooldown_after: 1 }, guardrails: { secrets: 'block' },
      providers: providers(mock.url, { fault: null, primaryUrl: `http://127.0.0.1:${up.address().port}` }) });
    try {
      let r = await chat(gw);
      assert.equal(r.status, 200);
      assert.equal((await finalRecord(gw, r.headers.get('x-keyless-request-id'))).provider, 'backup');
      assert.equal(primary.seen, 1);
      primary.fail = false;
      await sleep(1100);
      // the cool-down is over; the first request after it, the probe, is blocked by the guardrails
      r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'key AKIAIOSFODNN7Q3XM9PL' }] }) });
      assert.equal(r.status, 400);
      await r.text();
      // so the next one probes: not passed over for another second
      r = await chat(gw);
      assert.equal(r.status, 200);
      assert.equal((await r.json()).choices[0].message.content, 'from primary');
      assert.equal(primary.seen, 2);
    } finally {
      await gw.stop();
      up.close();
    }
  });

  it('cool-downs: passing over does not use up max_attempts; pre_request hooks see the provider used; passthrough answers do not count', async () => {
    // primary 503, backup 502, third healthy; two attempts a request
    let gw = await startGateway({ failover: { max_attempts: 2, cooldown_after: 1, cooldown: '60s' },
      providers: providers(mock.url, { backup: { add_headers: ['x-mock: status=502'] } }) });
    try {
      await mock.clear();
      let r = await chat(gw);
      assert.equal(r.status, 502, 'primary, then backup: two attempts');
      await r.text();
      await mock.clear();
      r = await chat(gw);
      assert.equal(r.status, 200, 'both cooling: passed over, third answers');
      await r.json();
      assert.deepEqual((await mock.requests()).map(keyOf), [THIRD_KEY]);
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.deepEqual(rec.attempts.map((a) => [a.provider, a.error_class]), [['primary', 'provider_down'], ['backup', 'provider_down']]);
    } finally {
      await gw.stop();
    }

    const hook = await startHook();
    const told = hook.calls;
    gw = await startGateway({ failover: { cooldown_after: 2, cooldown: '60s' },
      providers: providers(mock.url),
      hooks: { pii: { url: hook.url('/pii') } },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
        { send_hooks: [{ name: 'pii', events: ['pre_request'], send: ['request_body'] }] }] } }] });
    try {
      for (let i = 0; i < 2; i++) {
        const r = await chat(gw);
        assert.equal(r.status, 503, 'hooks were asked: no failover');
        await r.text();
      }
      await mock.clear();
      const r = await chat(gw);
      assert.equal(r.status, 200, 'cooling down: passed over before the hooks are asked');
      await r.json();
      assert.deepEqual((await mock.requests()).map(keyOf), [BACKUP_KEY]);
      const meta = JSON.stringify(told.at(-1));
      assert.match(meta, /backup/, 'the hook was told the provider that was used');
    } finally {
      await gw.stop();
      await hook.close();
    }

    const cfg = providers(mock.url, { fault: 'status=429' });
    cfg.primary.auth_mode = 'passthrough';
    gw = await startGateway({ failover: { cooldown_after: 1 }, providers: cfg,
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } }] });
    try {
      for (let i = 0; i < 2; i++) {
        const r = await chat(gw, 'gpt-4o', { authorization: 'Bearer caller-own-key' });
        assert.equal(r.status, 429);
        await r.text();
      }
      assert.doesNotMatch(await (await fetch(`${gw.url}/metrics`)).text(), /keyless_provider_cooling_down\{provider="primary"\}/);
    } finally {
      await gw.stop();
    }
  });

  it('every provider failing: the last error reaches the caller in its dialect, after max_attempts providers', async () => {
    const cfg = { providers: providers(mock.url, { backup: { add_headers: ['x-mock: status=502'] }, thirdFault: 'status=500' }) };
    const gw = await startGateway(cfg);
    try {
      await mock.clear();
      const r = await chat(gw);
      assert.equal(r.status, 500);
      const body = await r.json();
      assert.equal(typeof body.error.message, 'string');
      assert.deepEqual((await mock.requests()).map(keyOf), [KEYS.openai, BACKUP_KEY, THIRD_KEY]);
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.provider, 'third');
      assert.equal(rec.upstream_status, 500);
      assert.equal(rec.error_class, 'upstream_error');
      assert.deepEqual(rec.attempts.map((a) => [a.provider, a.status]), [['primary', 503], ['backup', 502]]);
    } finally {
      await gw.stop();
    }
    await answersAfterAsking({ ...cfg, failover: { max_attempts: 2 } }, 502, [KEYS.openai, BACKUP_KEY]);
  });

  it('what does not fail over: a 400, a status left out of failover.statuses, a slow answer, a qualified name, max_attempts 1', async () => {
    const cases = [
      [{ providers: providers(mock.url, { fault: 'status=400' }) }, 'gpt-4o', 400],
      [{ providers: providers(mock.url, { fault: 'status=429' }), failover: { statuses: [503] } }, 'gpt-4o', 429],
      [{ providers: providers(mock.url), failover: { max_attempts: 1 } }, 'gpt-4o', 503],
      // named by its provider: that provider's answer stands
      [{ providers: providers(mock.url) }, 'primary/gpt-4o', 503],
      // a provider that is slow to answer may be working (and billing): 504, not a second request
      [{ providers: providers(mock.url, { fault: 'delay_headers_ms=2000' }),
        listen: { timeouts: { upstream_first_byte: '300ms' } } }, 'gpt-4o', 504],
    ];
    for (const [cfg, model, status] of cases) {
      const gw = await startGateway(cfg);
      try {
        await mock.clear();
        const r = await chat(gw, model);
        assert.equal(r.status, status, `${JSON.stringify(cfg.failover || cfg.listen || {})} ${model}`);
        await r.text();
        const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
        assert.equal(rec.provider, 'primary');
        assert.equal(rec.attempts, null);
        assert.deepEqual((await mock.requests()).map(keyOf), [KEYS.openai]);
      } finally {
        await gw.stop();
      }
    }
  });

  it('only to a provider under the same policy: a limit that treats backup differently keeps the 503', async () => {
    const grantsWith = (extra) => [{
      src: ['*'],
      app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: ['primary/*', 'backup/*'] }, ...extra] },
    }];
    // a rate limit only on primary/*: backup would be outside it
    await answersAfterAsking({
      providers: providers(mock.url),
      grants: grantsWith([{ models: 'primary/*', rate_limit: { requests_per_minute: 100 } }]),
    }, 503, [KEYS.openai]);
    // models granted in separate capabilities decide nothing after authorize: backup is fine
    await answersAfterAsking({
      providers: providers(mock.url),
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: 'primary/*' }, { models: 'backup/*' }] } }],
    }, 200, [KEYS.openai, BACKUP_KEY]);
    // the caller may not use third: never tried, although it serves the model
    await answersAfterAsking({
      providers: providers(mock.url, { backup: { add_headers: ['x-mock: status=503'] } }),
      grants: grantsWith([]),
    }, 503, [KEYS.openai, BACKUP_KEY]);
  });

  it('a spend quota is reserved at the next provider\'s price and charged what it cost; a price the bucket cannot cover is not tried', async () => {
    // backup charges double (model_cost_map adjustment 2)
    const dear = { model_cost_map: [{ match: 'gpt-4o', as: 'gpt-4o', adjustment: 2 }] };
    const grants = [{
      src: ['*'],
      app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }, { quotas: [{ bucket: 'team' }] }] },
    }];
    let gw = await startGateway({ providers: providers(mock.url, { backup: dear }), grants, quotas: { team: { capacity: '$1' } } });
    try {
      await mock.clear();
      const { rec, base } = await failedOverThenPlain(gw);
      assert.ok(base.cost_nanodollars > 0);
      assert.equal(rec.cost_nanodollars, 2 * base.cost_nanodollars, 'priced as backup');
      const q = (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets.find((b) => b.bucket === 'team');
      assert.equal(q.current, 1000000000 - rec.cost_nanodollars - base.cost_nanodollars, 'charged exactly the records\' cost');
      assert.equal(q.reserved, 0, 'nothing left reserved');
    } finally {
      await gw.stop();
    }
    // A bucket that covers primary's reservation (~$0.0005 for 50 output
    // tokens) but not backup's double: no failover, the 503 stands, nothing charged.
    gw = await startGateway({ providers: providers(mock.url, { backup: dear, thirdFault: 'status=503' }), grants,
      quotas: { team: { capacity: '$0.0007' } } });
    try {
      await mock.clear();
      const r = await chat(gw);
      assert.equal(r.status, 503, 'third is tried only if reservable: it is (same price), and fails too');
      await r.text();
      assert.deepEqual((await mock.requests()).map(keyOf), [KEYS.openai, THIRD_KEY], 'backup passed over');
      const q = (await (await fetch(`${gw.url}/api/quotas`)).json()).buckets.find((b) => b.bucket === 'team');
      assert.equal(q.current, 700000);
      assert.equal(q.reserved, 0);
      assert.match(gw.output(), /failover passes over provider backup: the quota cannot cover its price/);
    } finally {
      await gw.stop();
    }
  });

  for (const path of ['native client', 'libcurl']) it(`${path}: out of descriptors, a connection the gateway cannot open is its own 503, neither failed over nor held against the provider`, async () => {
    // 64 descriptors and 30 slow requests at once: every caller's connection is taken before
    // the providers are asked, so some upstream socket() calls fail with EMFILE. That is this
    // machine's overload: it had been "provider primary is unreachable" (502), failed over to
    // backup (which failed alike) and started both providers' cool-downs.
    const proxy = path === 'libcurl' ? await startProxy() : null;
    const admin = [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } }];
    const gw = await startGateway({ grants: admin, listen: { max_connections: 1000 }, failover: { cooldown: '60s', cooldown_after: 1 },
      providers: providers(mock.url, { fault: 'delay_headers_ms=1500' }) },
    { nofile: 64, workers: 1, env: proxy ? { http_proxy: proxy.url } : {} });
    try {
      const ask = () => fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json', connection: 'close' },
        body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
      }).then(async (r) => ({ status: r.status, body: await r.text(), id: r.headers.get('x-keyless-request-id') }));
      const all = Promise.all(Array.from({ length: 30 }, ask));
      await sleep(700); // the refusals are made; the answers are not yet
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      assert.deepEqual(metrics.match(/keyless_provider_cooling_down\{.*\} 1/g), null, 'no provider is blamed');
      const rs = await all;
      const refused = rs.filter((r) => r.status !== 200);
      assert.ok(refused.length > 0, 'some upstream connections could not be opened');
      for (const r of refused) {
        assert.equal(r.status, 503, r.body);
        assert.equal(JSON.parse(r.body).error.message,
          'the gateway cannot open a connection to provider primary now: Too many open files');
      }
      const rec = await finalRecord(gw, refused[0].id);
      assert.equal(rec.error_class, 'unavailable');
      assert.equal(rec.attempts, null, 'not failed over');
      assert.doesNotMatch(gw.output(), /sending the request to provider backup/);
      const again = await chat(gw);
      assert.equal(again.status, 200);
      await again.json();
      assert.equal((await finalRecord(gw, again.headers.get('x-keyless-request-id'))).provider, 'primary');
    } finally {
      await gw.stop();
      proxy?.close();
    }
  });
});
