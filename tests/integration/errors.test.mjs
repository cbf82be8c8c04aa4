// Every gateway-made error in the caller's own dialect, and provider errors
// passed through unchanged. The gateway must keep serving after each.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import zlib from 'node:zlib';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startMock, startGateway, providersFor, KEYS, assertNoKeys, rawRequest, rawProvider, finalRecord, BUILD,
  tempDir } from './lib/harness.mjs';

// A port nothing listens on: bind, learn it, close.
async function deadPort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const port = srv.address().port;
  await new Promise((r) => srv.close(r));
  return port;
}

const post = (url, body, headers = {}) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });

// A gateway whose openai provider is the raw server up, every caller an admin
// charged to one $1.00 quota, and that quota's level in nanodollars.
async function quotaGateway(mock, up) {
  const gw = await startGateway({
    providers: providersFor(mock.url, {
      openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: KEYS.openai, models: ['gpt-4o'],
                compatibility: { openai_chat: true } },
    }),
    quotas: { q: { capacity: '$1.00' } },
    grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }, { quotas: [{ bucket: 'q' }] }] } }],
  });
  const level = async () => BigInt((await (await fetch(`${gw.url}/api/quotas`)).json()).buckets[0].current);
  return { gw, level };
}

describe('errors', () => {
  let mock, gw, responses = '';
  before(async () => {
    mock = await startMock();
    const dead = await deadPort();
    gw = await startGateway({
      listen: { max_body_size: '64KiB', timeouts: { upstream_first_byte: '1s', upstream_idle: '1s' } },
      providers: providersFor(mock.url, {
        deadend: { baseurl: `http://127.0.0.1:${dead}`, apikey: 'sk-deadend-key-000', models: ['dead-model'],
                   compatibility: { openai_chat: true, anthropic_messages: true, gemini_generate_content: true } },
        nokey: { baseurl: mock.url, apikey: '${KEYLESS_TEST_UNSET_VAR}', models: ['nokey-model'] },
      }),
    });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    assertNoKeys(assert, gw.output() + responses, 'gateway log or responses');
    assert.ok(!(gw.output() + responses).includes('sk-deadend-key-000'));
  });

  // Fetch and keep the whole response for the credential scan.
  async function call(path, body, headers = {}, method = 'POST') {
    const r = await fetch(`${gw.url}${path}`, {
      method, headers: { 'content-type': 'application/json', ...headers }, body,
    });
    const text = await r.text();
    responses += JSON.stringify([...r.headers]) + text;
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: r.status, headers: r.headers, text, json };
  }

  it('400 malformed JSON and missing model, per dialect', async () => {
    let r = await call('/v1/chat/completions', '{"model": "gpt-4o", ');
    assert.equal(r.status, 400);
    assert.equal(r.json.error.type, 'invalid_request_error');
    assert.match(r.json.error.message, /malformed JSON/);
    r = await call('/v1/messages', '{"max_tokens": 5}', { 'anthropic-version': '2023-06-01' });
    assert.equal(r.status, 400);
    assert.equal(r.json.type, 'error');
    assert.equal(r.json.error.type, 'invalid_request_error');
    assert.match(r.json.error.message, /model/);
    r = await call('/v1beta/models/gemini-2.5-flash:generateContent', 'not json');
    assert.equal(r.status, 400);
    assert.equal(r.json.error.status, 'INVALID_ARGUMENT');
    assert.equal(r.json.error.code, 400);
    // a NUL would end the name keyless checks before the name the provider reads
    r = await call('/v1/chat/completions', '{"model": "gpt-4o-mini\\u0000-other", "messages": []}');
    assert.equal(r.status, 400);
    assert.match(r.json.error.message, /"model" contains a control character/);
  });

  it('400 for a "stream" that is no boolean, per dialect, before the provider is asked', async () => {
    // vLLM and LiteLLM (pydantic) read "true" and 1 as true and stream: an
    // answer keyless took for a whole body, its usage not asked for (unknown)
    await mock.clear();
    for (const v of ['"true"', '1', '"yes"']) {
      let r = await call('/v1/chat/completions', `{"model": "gpt-4o", "stream": ${v}, "messages": [{"role": "user", "content": "hi"}]}`);
      assert.equal(r.status, 400);
      assert.equal(r.json.error.type, 'invalid_request_error');
      assert.match(r.json.error.message, /"stream" must be a boolean \(true or false\), not /);
      r = await call('/v1/responses', `{"model": "gpt-4o", "stream": ${v}, "input": "hi"}`);
      assert.equal(r.status, 400);
      assert.equal(r.json.error.type, 'invalid_request_error');
      assert.match(r.json.error.message, /"stream" must be a boolean/);
      r = await call('/v1/responses', `{"model": "gpt-4o", "background": ${v}, "input": "hi"}`);
      assert.equal(r.status, 400);
      assert.match(r.json.error.message, /"background" must be a boolean/);
      r = await call('/v1/messages', `{"model": "claude-haiku-4-5", "max_tokens": 5, "stream": ${v}, "messages": [{"role": "user", "content": "hi"}]}`,
        { 'anthropic-version': '2023-06-01' });
      assert.equal(r.status, 400);
      assert.equal(r.json.type, 'error');
      assert.equal(r.json.error.type, 'invalid_request_error');
      assert.match(r.json.error.message, /"stream" must be a boolean/);
    }
    assert.equal((await mock.requests()).length, 0);
    // the record of one refused says which model it named
    const r = await call('/v1/chat/completions', '{"model": "gpt-4o", "stream": "true", "messages": [{"role": "user", "content": "hi"}]}');
    const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
    assert.equal(rec.status, 400);
    assert.equal(rec.model_requested, 'gpt-4o');
    // true, false and null still go through
    for (const v of ['true', 'false', 'null']) {
      const r = await call('/v1/chat/completions', `{"model": "gpt-4o", "stream": ${v}, "messages": [{"role": "user", "content": "hi"}]}`);
      assert.equal(r.status, 200, r.text);
    }
  });

  it('400 for a "stream_options.include_usage" that is no boolean or a repeated member of stream_options, before the provider is asked', async () => {
    // pydantic servers read "true" and 1 as true: keyless had taken them for
    // absent, asked for usage itself and stripped the caller's usage chunk
    await mock.clear();
    for (const so of ['{"include_usage": "true"}', '{"include_usage": 1}', '{"include_usage": "yes"}',
      '{"include_usage": true, "include_usage": false}']) {
      const r = await call('/v1/chat/completions', `{"model": "gpt-4o", "stream": true, "stream_options": ${so}, "messages": [{"role": "user", "content": "hi"}]}`);
      assert.equal(r.status, 400, so);
      assert.equal(r.json.error.type, 'invalid_request_error');
      assert.match(r.json.error.message, /"stream_options.include_usage" must be a boolean|duplicate key in "stream_options"/);
    }
    assert.equal((await mock.requests()).length, 0);
    // a caller that asks for usage gets its usage chunk
    for (const so of ['{"include_usage": true}', '{"include_usage": false}', '{"include_usage": null}', '{}']) {
      const r = await call('/v1/chat/completions', `{"model": "gpt-4o", "stream": true, "stream_options": ${so}, "messages": [{"role": "user", "content": "hi"}]}`);
      assert.equal(r.status, 200, so);
      assert.equal(/"choices":\[\],"usage"|"usage":\{"prompt_tokens"/.test(r.text), so === '{"include_usage": true}', `${so}: ${r.text}`);
    }
  });

  it('400 for an output cap or a count with a fraction (12.5), per dialect, as the providers refuse it, before the provider is asked', async () => {
    // it had been read as 12: a cap no server reads reserved for
    await mock.clear();
    const msgs = '"messages": [{"role": "user", "content": "hi"}]';
    for (const [path, body, name, headers] of [
      ['/v1/chat/completions', `{"model": "gpt-4o", "max_tokens": 12.5, ${msgs}}`, 'max_tokens'],
      ['/v1/chat/completions', `{"model": "gpt-4o", "max_completion_tokens": 1.2345e3, ${msgs}}`, 'max_completion_tokens'],
      ['/v1/chat/completions', `{"model": "gpt-4o", "n": 2.5, ${msgs}}`, 'n'],
      ['/v1/responses', '{"model": "gpt-4o", "max_output_tokens": 12.5, "input": "hi"}', 'max_output_tokens'],
      ['/v1/messages', `{"model": "claude-haiku-4-5", "max_tokens": 12.5, ${msgs}}`, 'max_tokens', { 'anthropic-version': '2023-06-01' }],
      ['/v1beta/models/gemini-2.5-flash:generateContent', '{"contents": [], "generationConfig": {"maxOutputTokens": 12.5}}',
        'generationConfig.maxOutputTokens'],
    ]) {
      const r = await call(path, body, headers);
      assert.equal(r.status, 400, `${path} ${r.text}`);
      const message = path.startsWith('/v1beta') ? (assert.equal(r.json.error.status, 'INVALID_ARGUMENT'), r.json.error.message)
        : (assert.equal(r.json.error.type, 'invalid_request_error'), r.json.error.message);
      assert.equal(message, `"${name}" must be an integer, not ${body.match(/: ([0-9.e]+)[,}]/)[1]}`);
    }
    assert.equal((await mock.requests()).length, 0);
    // a whole number written with a fraction or an exponent is that number
    for (const v of ['12.0', '1.2e1']) {
      const r = await call('/v1/chat/completions', `{"model": "gpt-4o", "max_tokens": ${v}, ${msgs}}`);
      assert.equal(r.status, 200, r.text);
    }
  });

  it('404 unknown model and unknown path, per dialect', async () => {
    let r = await call('/v1/chat/completions', '{"model":"gpt-99","messages":[]}');
    assert.equal(r.status, 404);
    assert.match(r.json.error.message, /gpt-99/);
    r = await call('/v1/messages', '{"model":"claude-0","max_tokens":5,"messages":[]}', { 'anthropic-version': '2023-06-01' });
    assert.equal(r.status, 404);
    assert.equal(r.json.error.type, 'not_found_error');
    r = await call('/v1beta/models/gemini-0:generateContent', '{"contents":[]}');
    assert.equal(r.status, 404);
    assert.equal(r.json.error.status, 'NOT_FOUND');
    r = await call('/v1/nonsense', '{}');
    assert.equal(r.status, 404);
    assert.ok(r.json.error);
    // a model that exists but not for this API
    r = await call('/v1/messages', '{"model":"gpt-4o","max_tokens":5,"messages":[]}', { 'anthropic-version': '2023-06-01' });
    assert.equal(r.status, 404);
    assert.match(r.json.error.message, /not served/);
  });

  it('405 wrong method with Allow', async () => {
    const r = await call('/v1/chat/completions', undefined, {}, 'GET');
    assert.equal(r.status, 405);
    assert.equal(r.headers.get('allow'), 'POST');
    assert.equal(r.json.error.code, 'method_not_allowed');
    const g = await call('/v1/models', '{}', {}, 'POST');
    assert.equal(g.status, 405);
    // keyless's own endpoints: Allow names the method the message says
    for (const [path, method, allow] of [['/api/quotas/refill', 'GET', 'POST'], ['/api/quotas', 'POST', 'GET, HEAD'],
      ['/api/requests', 'DELETE', 'GET, HEAD'], ['/metrics', 'POST', 'GET, HEAD']]) {
      const a = await call(path, method === 'GET' ? undefined : '{}', {}, method);
      assert.equal(a.status, 405, path);
      assert.equal(a.headers.get('allow'), allow, `${method} ${path}: ${a.json.error.message}`);
    }
  });

  it('413 body too large, in the dialect, before reading it all', async () => {
    const big = JSON.stringify({ model: 'claude-sonnet-4-5', pad: 'x'.repeat(100 * 1024) });
    const r = await call('/v1/messages', big, { 'anthropic-version': '2023-06-01' });
    assert.equal(r.status, 413);
    assert.equal(r.json.error.type, 'request_too_large');
    // chunked bodies are counted as they arrive
    const raw = await rawRequest(gw.url,
      'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n' +
      `20000\r\n${'y'.repeat(0x20000)}\r\n0\r\n\r\n`);
    assert.match(raw, /^HTTP\/1.1 413 /);
    assert.match(raw, /request_too_large/);
  });

  it('413 reaches an SDK still uploading a large body: the connection lingers instead of resetting', async () => {
    // Closing with the rest of the body unread made the kernel reset the
    // connection, and the SDK reported a connection error instead of the 413
    // in about half of these.
    const an = new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 0 });
    const content = 'x'.repeat(8 * 1024 * 1024);
    for (let i = 0; i < 8; i++) {
      await assert.rejects(an.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 5,
        messages: [{ role: 'user', content }] }), (e) => {
        assert.equal(e.status, 413, `attempt ${i}: ${e.constructor.name} ${e.message}`);
        assert.equal(e.error?.error?.type, 'request_too_large');
        return true;
      });
    }
    const ok = await an.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] });
    assert.equal(ok.type, 'message', 'the gateway keeps serving');
  });

  it('a malformed chunked body is answered 400 to a client still sending it: the connection lingers, no reset', async () => {
    const u = new URL(gw.url);
    const result = await new Promise((res) => {
      const sock = net.connect({ host: u.hostname, port: Number(u.port) });
      let data = '';
      sock.on('data', (d) => { data += d.toString('latin1'); });
      sock.on('end', () => { sock.destroy(); res({ data, ended: true }); });
      sock.on('error', (e) => res({ data, error: e.code }));
      sock.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n');
      sock.write('x'.repeat(2 * 1024 * 1024));
    });
    assert.match(result.data, /^HTTP\/1.1 400 /);
    assert.match(result.data, /malformed chunked request body/);
    assert.equal(result.error, undefined, 'the connection was reset instead of closed');
    assert.ok(result.ended);
  });

  it('502 upstream unreachable, in each dialect and through each SDK', async () => {
    const oa = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'x', maxRetries: 0 });
    // the SDKs' request id is keyless's (the record's), so an error they show names the record
    await assert.rejects(oa.chat.completions.create({ model: 'dead-model', messages: [] }), (e) => {
      assert.equal(e.status, 502);
      assert.match(e.message, /unreachable/);
      assert.match(e.requestID, /\S/);
      assert.equal(e.requestID, e.headers.get('x-keyless-request-id'));
      return true;
    });
    const an = new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 0 });
    await assert.rejects(an.messages.create({ model: 'dead-model', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }), (e) => {
      assert.equal(e.status, 502);
      assert.equal(e.error.error.type, 'api_error');
      assert.match(e.requestID, /\S/);
      assert.equal(e.requestID, e.headers.get('x-keyless-request-id'));
      return true;
    });
    const r = await call('/v1beta/models/dead-model:generateContent', '{"contents":[]}');
    assert.equal(r.status, 502);
    assert.equal(r.json.error.status, 'UNAVAILABLE');
    const b = await call('/model/dead-model/converse', '{"messages":[]}');
    assert.ok(b.status >= 400, b.text);
    assert.match(b.headers.get('x-amzn-requestid'), /\S/);
    assert.equal(b.headers.get('x-amzn-requestid'), b.headers.get('x-keyless-request-id'));
  });

  it('502 when the provider resets the connection before answering', async () => {
    const r = await call('/v1/chat/completions', '{"model":"gpt-4o","messages":[]}', { 'x-mock': 'reset_after=0' });
    assert.equal(r.status, 502);
    assert.equal(r.json.error.type, 'server_error');
  });

  it('504 when the provider does not answer in time', async () => {
    const r = await call('/v1/messages', '{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}',
      { 'anthropic-version': '2023-06-01', 'x-mock': 'delay_headers_ms=3000' });
    assert.equal(r.status, 504);
    assert.equal(r.json.error.type, 'timeout_error');
  });

  it('a stream the provider stops feeding ends with an error event', async () => {
    const an = new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 0 });
    const stream = an.messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] },
      { headers: { 'x-mock': 'stall=1' } });
    await assert.rejects(stream.finalMessage(), (e) => {
      assert.match(String(e.message), /stopped sending|timeout/i);
      return true;
    });
  });

  it('a reset mid-stream reaches the SDK as an error, not a clean end', async () => {
    const oa = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'x', maxRetries: 0 });
    const s = await oa.chat.completions.create({ model: 'gpt-4o', stream: true, messages: [] },
      { headers: { 'x-mock': 'events=6;reset_after=2' } });
    await assert.rejects((async () => { for await (const _ of s) { /* drain */ } })());
  });

  it('provider errors pass through unchanged', async () => {
    for (const [path, body, hdrs] of [
      ['/v1/chat/completions', '{"model":"gpt-4o","messages":[]}', {}],
      ['/v1/messages', '{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}', { 'anthropic-version': '2023-06-01' }],
      ['/v1beta/models/gemini-2.5-flash:generateContent', '{"contents":[]}', {}],
    ]) {
      await mock.clear();
      const r = await call(path, body, { ...hdrs, 'x-mock': 'status=429;retry_after=7' });
      assert.equal(r.status, 429);
      assert.equal(r.headers.get('retry-after'), '7');
      // byte-for-byte what the provider said: compare with a direct request
      const direct = await fetch(`${mock.url}${path}`, {
        method: 'POST', headers: { 'content-type': 'application/json', ...hdrs, 'x-mock': 'status=429;retry_after=7' }, body,
      });
      const dt = await direct.text();
      assert.equal(r.text.replace(/"(id|request_id)":"[^"]*"/g, ''), dt.replace(/"(id|request_id)":"[^"]*"/g, ''));
    }
    const r = await call('/v1/chat/completions', '{"model":"gpt-4o","messages":[]}', { 'x-mock': 'status=500' });
    assert.equal(r.status, 500);
  });

  it('503 when the provider key is not configured, with the reason, and not to be retried: it lasts until a reload', async () => {
    const r = await call('/v1/chat/completions', '{"model":"nokey-model","messages":[]}');
    assert.equal(r.status, 503);
    assert.match(r.json.error.message, /KEYLESS_TEST_UNSET_VAR is not set/);
    // the SDKs retried it before showing why
    assert.equal(r.headers.get('x-should-retry'), 'false');
    let sent = 0;
    const sdk = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'x', fetch: (...a) => { sent++; return fetch(...a); } });
    await assert.rejects(sdk.chat.completions.create({ model: 'nokey-model', messages: [] }),
      (e) => e.status === 503 && /KEYLESS_TEST_UNSET_VAR is not set/.test(e.message));
    assert.equal(sent, 1, 'the SDK did not retry');
  });

  it('garbage on the socket gets a 400 and the server keeps serving', async () => {
    for (const payload of [
      'HELLO\r\n\r\n',
      'GET / HTTP/9.9\r\nHost: x\r\n\r\n',
      'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc',
      'GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n',
      '\x00\x01\x02\x03\r\n\r\n',
      `GET /${'a'.repeat(70000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
    ]) {
      const raw = await rawRequest(gw.url, payload);
      assert.match(raw, /^HTTP\/1.1 (400|414|431|505) /, JSON.stringify(payload.slice(0, 40)));
    }
    const ok = await fetch(`${gw.url}/`);
    assert.equal(ok.status, 200);
  });

  it('HEAD / and GET / answer at once', async () => {
    const h = await fetch(`${gw.url}/`, { method: 'HEAD' });
    assert.equal(h.status, 200);
    const g = await fetch(`${gw.url}/`);
    assert.equal(g.status, 200);
  });

  it('a client that pipelines requests and reads nothing for a while still gets every answer, in order', async () => {
    // the gateway stops serving while 256 KiB of answers wait unwritten, and
    // goes on once the client reads: nothing is lost, nothing piles up
    const u = new URL(gw.url);
    const n = 3000;
    const sock = net.connect({ host: u.hostname, port: Number(u.port) });
    sock.on('error', () => {});
    await new Promise((r) => sock.on('connect', r));
    sock.pause();
    let reqs = '';
    for (let i = 0; i < n; i++) reqs += `GET /v1/models?i=${i} HTTP/1.1\r\nHost: x\r\n${i === n - 1 ? 'Connection: close\r\n' : ''}\r\n`;
    sock.write(reqs);
    await new Promise((r) => setTimeout(r, 500));
    let data = '';
    sock.on('data', (d) => (data += d.toString('latin1')));
    sock.resume();
    await new Promise((r) => sock.on('end', r));
    assert.equal((data.match(/HTTP\/1\.1 200 OK\r\n/g) || []).length, n, data.slice(-300));
  });

  it('Expect: 100-continue, keep-alive and pipelining', async () => {
    const body = '{"model":"gpt-4o","messages":[]}';
    const one = `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    const raw = await rawRequest(gw.url, one + one + 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.equal(raw.match(/HTTP\/1.1 200 OK/g).length, 3);
    const cont = await rawRequest(gw.url,
      `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    assert.match(cont, /^HTTP\/1.1 100 Continue\r\n\r\nHTTP\/1.1 200 OK/);
    // a path that does not exist, or a method it does not take, is answered at once: no 100 Continue, no upload
    for (const [line, status] of [['POST /v1/nothing-here', 404], ['PUT /v1/chat/completions', 405]]) {
      const r = await rawRequest(gw.url,
        `${line} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 9000\r\n\r\n`);
      assert.match(r, new RegExp(`^HTTP/1.1 ${status} `), r.slice(0, 100));
      assert.match(r, /\r\nconnection: close\r\n/i);
    }
  });
});

// Write parts to a new connection, waiting pauseMs before each part after
// the first; resolve with what came back and when the gateway closed (ms
// after the last part was written).
function trickle(url, parts, pauseMs, { limitMs = 8000 } = {}) {
  const u = new URL(url);
  return new Promise((resolveP, reject) => {
    const sock = net.connect({ host: u.hostname, port: Number(u.port) });
    let data = '', lastWrite = 0;
    const timer = setTimeout(() => { sock.destroy(); resolveP({ data, closedAfter: null }); }, limitMs);
    const done = () => { clearTimeout(timer); resolveP({ data, closedAfter: Date.now() - lastWrite }); };
    sock.on('connect', async () => {
      for (let i = 0; i < parts.length; i++) {
        if (i) await new Promise((r) => setTimeout(r, pauseMs));
        sock.write(parts[i]);
        lastWrite = Date.now();
      }
    });
    sock.on('data', (d) => (data += d.toString('latin1')));
    sock.on('end', done);
    sock.on('close', done);
    sock.on('error', (e) => (data ? done() : reject(e)));
  });
}

describe('connection limits', () => {
  // A connection that sends request and stays open (keep-alive); answered() resolves with the answer once it ends
  // with end (a string).
  function kept(url, request = 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', end = '\r\n\r\nkeyless\n') {
    const u = new URL(url);
    const sock = net.connect({ host: u.hostname, port: Number(u.port) });
    sock.on('error', () => {});
    sock.gone = new Promise((r) => sock.on('close', r));
    let data = '';
    sock.answered = new Promise((r) => {
      sock.on('data', (d) => { data += d.toString('latin1'); if (data.endsWith(end)) r(data); });
    });
    sock.write(request);
    return sock;
  }

  it('at listen.max_connections the connection idle longest makes room; with none idle, new callers wait', async () => {
    const mock = await startMock();
    const gw = await startGateway({ listen: { max_connections: 3 }, providers: providersFor(mock.url) }, { workers: 1 });
    try {
      const [a, b, c] = [kept(gw.url), kept(gw.url), kept(gw.url)];
      for (const s of [a, b, c]) assert.match(await s.answered, /^HTTP\/1\.1 200 /);
      // a fourth caller is served, and the connection idle longest (a) is the one closed for it
      const close = (req) => `${req}Connection: close\r\n\r\n`;
      assert.match(await rawRequest(gw.url, close('GET / HTTP/1.1\r\nHost: x\r\n')), /^HTTP\/1\.1 200 /);
      await a.gone;
      assert.equal(b.destroyed || c.destroyed, false, 'only the one idle longest was closed');
      for (const s of [b, c]) s.destroy();
      // three streams in flight hold every connection: the next caller is not accepted until one ends, and its
      // connection, idle then, makes room
      const body = JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 's' }] });
      const ended = [];
      const streams = [];
      for (let i = 0; i < 3; i++) {
        const s = kept(gw.url, `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
          `x-mock: events=4;delay_events_ms=400\r\nContent-Length: ${body.length}\r\n\r\n${body}`, '0\r\n\r\n');
        streams.push(s);
        s.answered.then(() => ended.push(i));
        // one at a time, each in flight before the next connects (a connection that has sent nothing yet is idle)
        for (let k = 0; k < 500 && (await mock.requests()).length < i + 1; k++) await new Promise((res) => setTimeout(res, 10));
      }
      const late = await rawRequest(gw.url, close('GET / HTTP/1.1\r\nHost: x\r\n'), { timeoutMs: 20000 });
      assert.match(late, /^HTTP\/1\.1 200 /);
      assert.ok(ended.length >= 1, 'the fourth caller was answered only after a stream had ended');
      for (const s of streams) assert.match(await s.answered, /^HTTP\/1\.1 200 [\s\S]*data: \[DONE\]/);
      await Promise.race(streams.map((s) => s.gone));
      assert.equal(streams.filter((s) => s.destroyed).length, 1, 'the stream\'s connection idle longest made room');
      for (const s of streams) s.destroy();
      assert.match(gw.output(), /its share of listen\.max_connections \(3\): closing those idle longest to accept more/);
      assert.match(gw.output(), /its share of listen\.max_connections \(3\): none idle; not accepting until one closes/);
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });

  it('past listen.max_body_memory a body is refused 503 in its dialect, with Retry-After, until bodies are done', async () => {
    const mock = await startMock();
    const gw = await startGateway({ listen: { max_body_size: '48KiB', max_body_memory: '64KiB' },
      providers: providersFor(mock.url), grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } }] },
    { workers: 1 });
    let held;
    try {
      const content = 'x'.repeat(40000);
      const body = JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content }] });
      const metric = async () => Number(/^keyless_request_body_bytes (\d+)$/m.exec(await (await fetch(`${gw.url}/metrics`)).text())?.[1]);
      assert.equal(await metric(), 0);
      // a stream in flight holds its 40 KB body (kept for a failover) until it is done
      held = kept(gw.url, 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        `x-mock: events=200;delay_events_ms=100\r\nContent-Length: ${body.length}\r\n\r\n${body}`, '0\r\n\r\n');
      for (let k = 0; k < 500 && (await mock.requests()).length < 1; k++) await new Promise((res) => setTimeout(res, 10));
      assert.ok(await metric() > 40000, 'the body held is counted');
      // a second one does not fit: 503, Anthropic's overloaded_error, told when to try again
      const anthropic = new Anthropic({ baseURL: gw.url, apiKey: 'unused', maxRetries: 0 });
      const err = await anthropic.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 10,
        messages: [{ role: 'user', content }] }).catch((e) => e);
      assert.equal(err.status, 503, String(err));
      assert.equal(err.error?.error?.type, 'overloaded_error');
      assert.match(err.error?.error?.message, /listen\.max_body_memory/);
      assert.equal(err.headers?.get?.('retry-after'), '1');
      // a chunked body is refused as it grows past the room, and the connection closes after the answer
      const chunk = (s) => `${s.length.toString(16)}\r\n${s}\r\n`;
      const chunked = 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        `Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n${chunk(body.slice(0, 20000))}${chunk(body.slice(20000))}0\r\n\r\n`;
      let raw = await rawRequest(gw.url, chunked);
      assert.match(raw, /^HTTP\/1\.1 503 /);
      assert.match(raw, /\r\nConnection: close\r\n/i);
      assert.match(raw, /"code":"service_unavailable"/);
      // a body announced larger than the room left is refused before the client is told to send it
      raw = await rawRequest(gw.url, 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        `Expect: 100-continue\r\nContent-Length: ${body.length}\r\n\r\n`);
      assert.match(raw, /^HTTP\/1\.1 503 /, 'no 100 Continue first');
      let recs = [];
      for (let k = 0; k < 100 && recs.length < 3; k++) {
        recs = (await (await fetch(`${gw.url}/api/requests?status=503`)).json()).requests;
        if (recs.length < 3) await new Promise((res) => setTimeout(res, 50)); /* records are written in batches */
      }
      assert.equal(recs.length, 3, 'each refusal has its record');
      assert.ok(recs.every((r) => r.error_class === 'unavailable'), JSON.stringify(recs));
      assert.match(gw.output(), /its share of listen\.max_body_memory \(65536\): refusing more with 503/);
      assert.equal((await mock.requests()).length, 1, 'neither reached the provider');
      // the stream's caller leaves: its body is let go, and the next one is served
      held.destroy();
      for (let k = 0; k < 200 && await metric() !== 0; k++) await new Promise((res) => setTimeout(res, 25));
      assert.equal(await metric(), 0);
      const ok = await anthropic.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 10,
        messages: [{ role: 'user', content }] });
      assert.equal(ok.type, 'message');
      // and the chunked one, alone, fits: its buffer is held to max_body_size, not doubled past it
      raw = await rawRequest(gw.url, chunked);
      assert.match(raw, /^HTTP\/1\.1 200 /, raw.slice(0, 300));
    } finally {
      held?.destroy();
      await gw.stop();
      await mock.stop();
    }
  });

  it('listen.max_body_memory below max_body_size is a configuration error', () => {
    const path = join(tempDir('keyless-errors-'), 'bad.hujson');
    writeFileSync(path, JSON.stringify({ listen: { max_body_size: '1MiB', max_body_memory: '512KiB' } }));
    const bad = spawnSync(join(BUILD, 'keyless'), ['check', '--config', path], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stdout + bad.stderr, /max_body_memory \(524288 bytes\) is less than max_body_size \(1048576 bytes\)/);
  });

  it('a connection that sends nothing is closed after timeouts.header, not held for timeouts.idle', async () => {
    const gw = await startGateway({ listen: { timeouts: { header: '1s', idle: '120s' } }, providers: {} });
    try {
      const r = await trickle(gw.url, [''], 0, { limitMs: 20000 });
      assert.equal(r.data, '');
      assert.ok(r.closedAfter !== null, 'closed before the 20 s the test waits');
    } finally {
      await gw.stop();
    }
  });
});

describe('slow clients', () => {
  let mock, gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({
      listen: { timeouts: { header: '1s', body: '2s', idle: '1s' } },
      // admin: the stalled request has no identity yet, so only an admin sees its record
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } }],
      providers: providersFor(mock.url),
    });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
  });
  const body = '{"model":"gpt-4o","messages":[{"role":"user","content":"slow"}]}';
  const head = (len) => `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${len}\r\n\r\n`;

  it('a head that stops coming is answered 408 in its dialect after timeouts.header, and recorded', async () => {
    const r = await trickle(gw.url, ['POST /v1/messages HTTP/1.1\r\nHost: x\r\n'], 0);
    assert.match(r.data, /^HTTP\/1.1 408 /, r.data);
    assert.match(r.data, /\r\nconnection: close\r\n/i);
    const err = JSON.parse(r.data.slice(r.data.indexOf('\r\n\r\n') + 4));
    assert.equal(err.type, 'error', 'Anthropic\'s shape');
    assert.equal(err.error.message, 'request head timed out: incomplete after 1 s (timeouts.header)');
    assert.ok(r.closedAfter !== null && r.closedAfter >= 900, `closed after ${r.closedAfter} ms`);
    const rec = await recordWithStatus(408);
    assert.ok(rec, 'the unfinished head has its record');
    assert.equal(rec.path, '/v1/messages');
    assert.equal(rec.error_class, 'client_timeout');
    assert.ok(rec.latency_ms >= 900, `${rec.latency_ms} ms on record`);
    // its id is made from its start, as every id is: a time range bounds records by id too
    assert.equal(parseInt(rec.id.slice(0, 8) + rec.id.slice(9, 13), 16), rec.started_at, `${rec.id} started at ${rec.started_at}`);
    const within = await (await fetch(`${gw.url}/api/requests?status=408&until=${rec.started_at + 1}`)).json();
    assert.ok(within.requests.some((x) => x.id === rec.id), 'until= just after its start lists it');
    // a connection that never sent a byte, or only the empty lines some clients send after a body, has no
    // request to record: closed, quietly
    for (const nothing of ['', '\r\n', 'GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n']) {
      const quiet = await trickle(gw.url, [nothing], 0);
      assert.equal(quiet.data.replace(/^HTTP\/1.1 200 [\s\S]*keyless\n/, ''), '', JSON.stringify(nothing));
      assert.ok(quiet.closedAfter !== null);
    }
  });

  it('a head that arrives in pieces is read once its end comes, however its blank line is split', async () => {
    for (const cut of [[-1], [-2], [-3], [-4, -3, -2, -1]]) {
      const h = 'GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';
      const at = [0, ...cut.map((k) => h.length + k), h.length];
      const parts = [h.slice(0, 5), h.slice(5, 20), ...at.slice(1).map((e, i) => h.slice(Math.max(at[i], 20), e))]
        .filter((p) => p);
      const r = await trickle(gw.url, parts, 30);
      assert.match(r.data, /^HTTP\/1.1 200 /, JSON.stringify(parts));
    }
    // bare LFs end a head too
    const r = await trickle(gw.url, ['GET / HTTP/1.1\nHost: x\nConnection: close\n', '\n'], 30);
    assert.match(r.data, /^HTTP\/1.1 200 /);
  });

  it('an idle keep-alive connection is closed after timeouts.idle', async () => {
    const r = await trickle(gw.url, ['GET / HTTP/1.1\r\nHost: x\r\n\r\n'], 0);
    assert.match(r.data, /^HTTP\/1.1 200 /);
    assert.ok(r.closedAfter !== null && r.closedAfter >= 900, `closed after ${r.closedAfter} ms`);
  });

  it('a body paused for less than timeouts.body at a time is served, however long it takes', async () => {
    const parts = [head(body.length) + body.slice(0, 10), body.slice(10, 30), body.slice(30)];
    const r = await trickle(gw.url, parts, 800);  // 1.6 s in all, pauses under 2 s
    assert.match(r.data, /^HTTP\/1.1 200 /, r.data.slice(0, 200));
  });

  // The newest record with this status that match accepts (records are written asynchronously).
  async function recordWithStatus(status, match = () => true) {
    for (let i = 0; i < 100; i++) {
      const l = await (await fetch(`${gw.url}/api/requests?status=${status}`)).json();
      const rec = l.requests?.find(match);
      if (rec) return rec;
      await new Promise((res) => setTimeout(res, 50));
    }
    return undefined;
  }

  it('a body that stalls is answered 408 in its dialect after timeouts.body, and recorded', async () => {
    const r = await trickle(gw.url, [head(body.length + 50) + body], 0);
    assert.match(r.data, /^HTTP\/1.1 408 /, r.data);
    assert.match(r.data, /\r\nconnection: close\r\n/i);
    const err = JSON.parse(r.data.slice(r.data.indexOf('\r\n\r\n') + 4)).error;
    assert.equal(err.code, 'request_timeout');
    assert.equal(err.message, 'request body timed out: no byte for 2 s (timeouts.body)');
    assert.ok(r.closedAfter !== null && r.closedAfter >= 1900, `closed after ${r.closedAfter} ms`);
    const rec = await recordWithStatus(408, (x) => x.error_message.startsWith('request body'));
    assert.ok(rec, 'the stalled request has its record');
    assert.equal(rec.error_message, 'request body timed out: no byte for 2 s (timeouts.body)');
    assert.equal(rec.error_class, 'client_timeout');
    assert.equal(rec.path, '/v1/chat/completions');
    assert.equal(rec.bytes_in > body.length, true);
    const ok = await fetch(`${gw.url}/`);
    assert.equal(ok.status, 200, 'the gateway keeps serving');
  });

  it('a client that reads nothing for timeouts.send is dropped, and recorded as timed out, not as gone', async () => {
    const g = await startGateway({ listen: { timeouts: { send: '1s' } }, providers: providersFor(mock.url) });
    try {
      const u = new URL(g.url);
      const sock = net.connect(Number(u.port), u.hostname);
      sock.on('error', () => {});
      sock.pause(); // reads nothing: the kernel's buffers fill, then the gateway's
      const req = JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'x' }] });
      sock.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
        `x-mock: size=67108864;events=4096\r\nContent-Length: ${req.length}\r\n\r\n${req}`);
      let line;
      for (let i = 0; i < 300 && !line; i++) {
        line = /(\S+) \S+ "POST \/v1\/chat\/completions" 200 client_timeout/.exec(g.output());
        if (!line) await new Promise((r) => setTimeout(r, 50));
      }
      sock.destroy();
      assert.ok(line, g.output());
      const rec = await finalRecord(g, line[1]);
      assert.equal(rec.error_class, 'client_timeout');
      assert.equal(rec.error_message, 'the client read nothing for 1 s (timeouts.send)');
    } finally {
      await g.stop();
    }
  });

  it('a head refused before parsing ends gets its record and its dialect', async () => {
    const raw = await rawRequest(gw.url, 'POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n' +
      'Transfer-Encoding: chunked\r\n\r\nabc');
    assert.match(raw, /^HTTP\/1.1 400 /);
    const body = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4));
    assert.equal(body.type, 'error', 'the Anthropic error shape for an Anthropic path');
    assert.equal(body.error.type, 'invalid_request_error');
    const rec = await recordWithStatus(400);
    assert.ok(rec, 'the refused head has its record');
    assert.equal(rec.path, '/v1/messages');
    assert.equal(rec.dialect, 'anthropic');
    assert.equal(rec.error_class, 'bad_request');
    assert.match(rec.error_message, /both Transfer-Encoding and Content-Length/);
    for (let i = 0; i < 60 && !/"POST \/v1\/messages" 400 bad_request/.test(gw.output()); i++)
      await new Promise((res) => setTimeout(res, 50)); /* the access log is flushed in batches */
    assert.match(gw.output(), /"POST \/v1\/messages" 400 bad_request/);
  });

  it('a head too large, a request line too long, another HTTP version or a NUL byte still gets its path\'s dialect and record', async () => {
    const bodyOf = (raw) => JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4));
    let raw = await rawRequest(gw.url, `POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Big: ${'z'.repeat(70000)}\r\n\r\n{}`);
    assert.match(raw, /^HTTP\/1.1 431 /);
    assert.equal(bodyOf(raw).type, 'error', 'Anthropic\'s shape');
    assert.equal(bodyOf(raw).error.type, 'request_too_large');
    let rec = await recordWithStatus(431);
    assert.equal(rec.method, 'POST');
    assert.equal(rec.path, '/v1/messages');
    // answered as any refusal: its request id, the bytes it took on record, the connection closed after it
    assert.equal(/\r\nx-keyless-request-id: (\S+)\r\n/i.exec(raw)?.[1], rec.id);
    assert.equal(rec.bytes_out, raw.length);
    assert.match(raw, /\r\nConnection: close\r\n/i);
    // a request line longer than a whole head may be is 414, in the dialect of the path before its query
    raw = await rawRequest(gw.url, `GET /v1beta/models?pageSize=${'9'.repeat(70000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.match(raw, /^HTTP\/1.1 414 URI Too Long\r\n/);
    assert.equal(bodyOf(raw).error.status, 'INVALID_ARGUMENT', 'Google\'s shape');
    assert.equal(bodyOf(raw).error.code, 414);
    rec = await recordWithStatus(414);
    assert.equal(rec.method, 'GET');
    assert.equal(rec.path, '/v1beta/models');
    assert.equal(rec.error_class, 'too_large');
    assert.match(rec.error_message, /request line too long/);
    // Bedrock: its error type, where the AWS SDKs read which exception to raise
    raw = await rawRequest(gw.url, 'POST /model/x/converse HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n');
    assert.match(raw, /^HTTP\/1.1 400 /);
    assert.match(raw, /\r\nx-amzn-ErrorType: ValidationException\r\n/i);
    raw = await rawRequest(gw.url, 'POST /v1beta/models/gemini-2.5-flash:generateContent HTTP/2.0\r\nHost: x\r\n' +
      'Content-Length: 2\r\n\r\n{}');
    assert.match(raw, /^HTTP\/1.1 505 /);
    assert.ok(bodyOf(raw).error.status, 'Gemini\'s shape');
    assert.equal(bodyOf(raw).error.code, 505, 'the code its body gives is the status');
    rec = await recordWithStatus(505);
    assert.equal(rec.path, '/v1beta/models/gemini-2.5-flash:generateContent');
    assert.equal(rec.dialect, 'gemini');
    // a later minor version of HTTP/1 is served as HTTP/1.1 (RFC 9112 section 2.3), Host required as there
    raw = await rawRequest(gw.url, 'GET /v1/models HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.match(raw, /^HTTP\/1.1 200 /);
    assert.ok(Array.isArray(bodyOf(raw).data));
    raw = await rawRequest(gw.url, 'GET /v1/models HTTP/1.9\r\nConnection: close\r\n\r\n');
    assert.match(raw, /^HTTP\/1.1 400 /);
    raw = await rawRequest(gw.url, 'POST /v1/messages HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\n{}');
    assert.match(raw, /^HTTP\/1.1 400 /);
    assert.equal(bodyOf(raw).type, 'error');
    assert.match(bodyOf(raw).error.message, /NUL byte/);
  });

  it('a client that leaves mid-body has a 499 on record', async () => {
    const u = new URL(gw.url);
    const sock = net.connect({ host: u.hostname, port: Number(u.port) });
    await new Promise((res) => sock.on('connect', res));
    sock.write(head(body.length + 50) + body.slice(0, 20));
    await new Promise((res) => setTimeout(res, 200));
    sock.destroy();
    const rec = await recordWithStatus(499);
    assert.ok(rec, 'the abandoned request has its record');
    assert.equal(rec.error_class, 'client_closed');
    assert.equal(rec.error_message, 'client closed while sending the body');
  });
});

const doneRecord = (gw, r) => finalRecord(gw, r.headers.get('x-keyless-request-id'));

describe('provider framing', () => {
  // A provider on a raw socket: respond(requestText, socket) writes what it likes.
  it('a stream cut inside an event ends with the error event alone, not glued to half an event', async () => {
    const mock = await startMock();
    const start = 'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant",' +
      '"model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":10,"output_tokens":1}}}\n\n';
    const up = await rawProvider((req, sock) => {
      sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n');
      const part = start + 'event: ping\ndata: {"ty';
      sock.write(`${part.length.toString(16)}\r\n${part}\r\n`);
      setTimeout(() => sock.destroy(), 50);
    });
    const gw = await startGateway({
      providers: providersFor(mock.url, {
        anthropic: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: KEYS.anthropic, authorization: 'x-api-key',
                     models: ['claude-sonnet-4-5'], compatibility: { anthropic_messages: true } },
      }),
    });
    const client = new Anthropic({ baseURL: gw.url, apiKey: 'unused', maxRetries: 0 });
    const stream = await client.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 5, stream: true,
      messages: [{ role: 'user', content: 'hi' }] });
    const seen = [];
    await assert.rejects(async () => { for await (const ev of stream) seen.push(ev.type); }, (e) => {
      assert.match(String(e.message), /connection to provider anthropic failed/);
      return true;
    });
    assert.deepEqual(seen, ['message_start']);
    await gw.stop();
    await mock.stop();
    up.close();
  });

  it('a stream event that never ends is not held without end: stopped past 16 MiB', async () => {
    // data: lines with no blank line after them: one event that only grows
    const mock = await startMock();
    const line = `data: ${'q'.repeat(1 << 20)}\n`;
    const up = await rawProvider((req, sock) => {
      sock.on('error', () => {});
      sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n');
      let sent = 0;
      const more = () => {
        while (sent < 40 && !sock.destroyed) {
          sent++;
          if (!sock.write(`${line.length.toString(16)}\r\n${line}\r\n`)) return sock.once('drain', more);
        }
        if (!sock.destroyed) sock.end('0\r\n\r\n');
      };
      more();
    });
    const gw = await startGateway({
      providers: providersFor(mock.url, {
        openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: KEYS.openai, models: ['gpt-4o'],
                  compatibility: { openai_chat: true } },
      }),
    });
    const r = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-session-id': 'endless' },
      body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    });
    const text = await r.text();
    assert.ok(text.length < 1 << 20, `the event was relayed (${text.length} bytes)`);
    assert.match(text, /a stream event longer than 16 MiB/);
    // the final record (one that ran past 100 ms has an in-progress record first)
    let rec;
    for (let i = 0; i < 100 && !(rec && rec.state === 'done'); i++) {
      await new Promise((res) => setTimeout(res, 50));
      rec = (await (await fetch(`${gw.url}/api/requests?session=endless`)).json()).requests[0];
    }
    await gw.stop();
    await mock.stop();
    up.close();
    assert.equal(rec.error_class, 'upstream_error');
  });

  it('a provider that compresses anyway is inflated, relayed plain and accounted; a coding keyless cannot read is refused', async () => {
    const { gzipSync } = await import('node:zlib');
    const mock = await startMock();
    const whole = JSON.stringify({ id: 'c', object: 'chat.completion', model: 'gpt-4o',
      choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 11, completion_tokens: 4, total_tokens: 15 } });
    const chunk = (o) => `data: ${JSON.stringify(o)}\n\n`;
    const base = { id: 'c', object: 'chat.completion.chunk', model: 'gpt-4o' };
    const events = chunk({ ...base, choices: [{ index: 0, delta: { content: 'hi' } }], usage: null }) +
      chunk({ ...base, choices: [], usage: { prompt_tokens: 13, completion_tokens: 6, total_tokens: 19 } }) + 'data: [DONE]\n\n';
    const { deflateRawSync, brotliCompressSync } = await import('node:zlib');
    let coding = 'gzip';
    const up = await rawProvider((req, sock) => {
      const stream = /"stream":true/.test(req);
      // a stream as two gzip members (RFC 1952 allows it; Node's and browsers' decoders read both)
      const cut = events.indexOf('data: ', 10);
      const plain = Buffer.from(stream ? events : whole);
      const body = coding === 'deflate' ? deflateRawSync(plain) : coding === 'br' ? brotliCompressSync(plain)
        : coding === 'cut' ? gzipSync(plain).subarray(0, 30)
        : stream ? Buffer.concat([gzipSync(Buffer.from(events.slice(0, cut))), gzipSync(Buffer.from(events.slice(cut)))])
        : gzipSync(plain);
      // 'cut': framed by the connection's close, which comes before the compressed data ends
      sock.write(`HTTP/1.1 200 OK\r\nContent-Type: ${stream ? 'text/event-stream' : 'application/json'}\r\n` +
        `Content-Encoding: ${coding === 'cut' ? 'gzip' : coding}\r\n` +
        (coding === 'cut' ? 'Connection: close\r\n\r\n' : `Content-Length: ${body.length}\r\n\r\n`));
      // in two pieces, cut inside the compressed data
      sock.write(body.subarray(0, 10));
      setTimeout(() => sock.end(body.subarray(10)), 20);
    });
    const { gw, level } = await quotaGateway(mock, up);
    let r = await post(`${gw.url}/v1/chat/completions`, JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
      { 'accept-encoding': 'identity' });
    assert.equal(r.headers.get('content-encoding'), null);
    assert.equal(await r.text(), whole, 'plain, as the caller asked');
    let rec = await doneRecord(gw, r);
    assert.equal(rec.usage_known, 1);
    assert.equal(rec.input_tokens, 11);
    assert.equal(rec.output_tokens, 4);
    assert.equal(rec.cost_known, 1);
    r = await post(`${gw.url}/v1/chat/completions`, JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }] }));
    const text = await r.text();
    assert.match(text, /data: \[DONE\]/);
    assert.doesNotMatch(text, /prompt_tokens/, 'the usage chunk keyless asked for is taken out, as from a plain stream');
    rec = await doneRecord(gw, r);
    assert.equal(rec.usage_known, 1);
    assert.equal(rec.input_tokens, 13);
    assert.equal(rec.output_tokens, 6);
    // raw deflate under "deflate" (some servers send it so)
    coding = 'deflate';
    r = await post(`${gw.url}/v1/chat/completions`, JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }));
    assert.equal(await r.text(), whole);
    assert.equal((await doneRecord(gw, r)).input_tokens, 11);
    // a stream whose compressed data stops where the connection closes: cut short, not whole
    coding = 'cut';
    r = await post(`${gw.url}/v1/chat/completions`, JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }] }));
    assert.match(await r.text(), /compressed body ends before its end/);
    rec = await doneRecord(gw, r);
    assert.equal(rec.error_class, 'stream_interrupted');
    // a coding keyless cannot read: its usage, calls or an echoed key could not be seen
    coding = 'br';
    const before = await level();
    r = await post(`${gw.url}/v1/chat/completions`, JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }));
    assert.equal(r.status, 502);
    assert.match((await r.json()).error.message, /answered 200 in a content coding keyless cannot read \(br\), although it asked for none/);
    rec = await doneRecord(gw, r);
    assert.deepEqual([rec.error_class, rec.upstream_status], ['upstream_error', 200]);
    // the provider served (and billed) that answer: its cost is unknown, not 0
    // (0 is for a 2xx stream that was only the provider's error)
    assert.deepEqual([rec.cost_known, rec.cost_nanodollars], [0, null]);
    assert.ok(await level() < before, 'and the quota keeps what it reserved for it, not 0');
    // the provider's key echoed where the coding goes (a debugging proxy): not quoted back
    coding = KEYS.openai;
    r = await post(`${gw.url}/v1/chat/completions`, JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }));
    assert.equal(r.status, 502);
    const echoed = await r.text();
    assert.match(echoed, /content coding keyless cannot read \(one not registered\)/);
    assertNoKeys(assert, echoed, 'the 502');
    assertNoKeys(assert, JSON.stringify(await doneRecord(gw, r)), 'the record');
    // an empty Content-Encoding names no coding: relayed as libcurl relays it
    coding = '';
    r = await post(`${gw.url}/v1/chat/completions`, JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }));
    assert.equal(r.status, 200, 'relayed as it came, as libcurl relays it');
    await r.arrayBuffer();
    await gw.stop();
    await mock.stop();
    up.close();
  });

  it('a redirect from the provider is no answer: the quota is charged nothing for it', async () => {
    const mock = await startMock();
    const up = await rawProvider((req, sock) =>
      sock.write('HTTP/1.1 302 Found\r\nLocation: https://elsewhere.example/\r\nContent-Length: 0\r\n\r\n'));
    const { gw, level } = await quotaGateway(mock, up);
    const before = await level();
    for (const stream of [false, true]) {
      const r = await post(`${gw.url}/v1/chat/completions`,
        JSON.stringify({ model: 'gpt-4o', stream, messages: [{ role: 'user', content: 'hi' }] }));
      assert.equal(r.status, 302);
      await r.arrayBuffer();
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.error_class, 'upstream_error');
    }
    // keyless follows no redirect: nothing was generated, nothing billed (as for a 4xx)
    assert.equal(await level(), before, 'a 302 keeps none of what was reserved for it');
    await gw.stop();
    await mock.stop();
    up.close();
  });

  it('a provider error that is not JSON (a proxy\'s HTML page, plain text) reaches the SDK in its own dialect, status kept', async () => {
    const mock = await startMock();
    const page = '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n' +
      '<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n';
    const up = await rawProvider((req, sock) => {
      const c = /x-case: (\S+)/i.exec(req)?.[1] || 'html';
      const [status, type, body] = {
        html: ['502 Bad Gateway\r\nx-request-id: req_proxy_42\r\nCF-RAY: 8a1b2c', 'text/html', page],
        text: ['520 Origin Error', 'text/plain', 'upstream connect error or disconnect/reset before headers. reset reason: overflow'],
        busy: ['429 Too Many Requests\r\nRetry-After: 17', 'text/html; charset=utf-8',
          `<html><body>slow down ${/x-goog-api-key: (\S+)/i.exec(req)?.[1]}</body></html>`],
        unlabelled: ['404 Not Found', null, '{"error":{"message":"no such model","type":"invalid_request_error"}}'],
      }[c];
      sock.end(`HTTP/1.1 ${status}\r\n${type ? `Content-Type: ${type}\r\n` : ''}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
    const base = `http://127.0.0.1:${up.address().port}`;
    const gw = await startGateway({ providers: providersFor(mock.url, {
      openai: { baseurl: base, apikey: KEYS.openai, models: ['gpt-4o'], compatibility: { openai_chat: true } },
      anthropic: { baseurl: base, apikey: KEYS.anthropic, authorization: 'x-api-key', models: ['claude-sonnet-4-5'],
        compatibility: { anthropic_messages: true } },
      gemini: { baseurl: base, apikey: KEYS.gemini, authorization: 'x-goog-api-key', models: ['gemini-2.5-flash'],
        compatibility: { gemini_generate_content: true } },
    }), failover: { max_attempts: 1 } });
    try {
      const oa = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: '-', maxRetries: 0, defaultHeaders: { 'x-case': 'html' } });
      await assert.rejects(oa.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }), (e) => {
        assert.equal(e.status, 502);
        assert.equal(e.error?.type, 'server_error');
        assert.equal(e.error.message, 'provider openai answered 502 with a text/html body: 502 Bad Gateway');
        // the provider's other headers go on, as with any answer it gives; what described its body does not
        assert.equal(e.headers.get('x-request-id'), 'req_proxy_42');
        assert.equal(e.headers.get('cf-ray'), '8a1b2c');
        assert.equal(e.headers.get('content-type'), 'application/json');
        return true;
      });
      const an = new Anthropic({ baseURL: gw.url, apiKey: '-', maxRetries: 0, defaultHeaders: { 'x-case': 'text' } });
      await assert.rejects(an.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }), (e) => {
        assert.equal(e.status, 520, 'a status keyless has no kind for is kept too');
        assert.equal(e.error?.error?.type, 'api_error');
        assert.match(e.error.error.message, /answered 520 with a text\/plain body: upstream connect error or disconnect\/reset/);
        return true;
      });
      const r = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:generateContent`, { method: 'POST',
        headers: { 'content-type': 'application/json', 'x-case': 'busy' }, body: '{"contents":[{"parts":[{"text":"hi"}]}]}' });
      assert.equal(r.status, 429);
      assert.equal(r.headers.get('retry-after'), '17');
      const gtext = await r.text();
      assert.ok(!gtext.includes(KEYS.gemini), 'the key it echoed is masked in the message too');
      assert.equal(JSON.parse(gtext).error.status, 'RESOURCE_EXHAUSTED');
      assert.match(JSON.parse(gtext).error.message, /answered 429 with a text\/html body: slow down/);
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.deepEqual([rec.status, rec.upstream_status, rec.error_class], [429, 429, 'upstream_error']);
      // JSON without its label goes on as it came
      const u = await post(`${gw.url}/v1/chat/completions`, JSON.stringify({ model: 'gpt-4o', messages: [] }), { 'x-case': 'unlabelled' });
      assert.equal(u.status, 404);
      assert.equal((await u.json()).error.message, 'no such model');
    } finally {
      await gw.stop();
      await mock.stop();
      up.close();
    }
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  it('a stream the provider sends without an event-stream Content-Type is still accounted', async () => {
    const mock = await startMock();
    const chunk = (o) => `data: ${JSON.stringify(o)}\n\n`;
    const base = { id: 'c', object: 'chat.completion.chunk', model: 'gpt-4o' };
    const body = chunk({ ...base, choices: [{ index: 0, delta: { content: 'hi' } }], usage: null }) +
      chunk({ ...base, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }], usage: null }) +
      chunk({ ...base, choices: [], usage: { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 } }) +
      'data: [DONE]\n\n';
    const up = await rawProvider((req, sock) => {
      sock.end(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    });
    const gw = await startGateway({
      providers: providersFor(mock.url, {
        openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: KEYS.openai, models: ['gpt-4o'],
                  compatibility: { openai_chat: true } },
      }),
    });
    const r = await post(`${gw.url}/v1/chat/completions`, JSON.stringify({ model: 'gpt-4o', stream: true,
      messages: [{ role: 'user', content: 'hi' }] }));
    const text = await r.text();
    assert.equal(r.status, 200);
    assert.doesNotMatch(text, /"choices":\[\],"usage"/, 'the usage chunk keyless asked for is not relayed');
    assert.match(text, /data: \[DONE\]/);
    const rec = await doneRecord(gw, r);
    assert.equal(rec.usage_known, 1);
    assert.equal(rec.input_tokens, 7);
    assert.equal(rec.output_tokens, 3);
    await gw.stop();
    await mock.stop();
    up.close();
  });

  it('provider response headers: hop-by-hop and forged x-keyless- ones go, an echoed key goes (in a body too), a 204 has no length', async () => {
    const mock = await startMock();
    const J = '{"id":"x","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant",' +
      '"content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}';
    const up = net.createServer((s) => {
      let req = '';
      s.on('data', (d) => {
        req += d.toString('latin1');
        if (!req.includes('\r\n\r\n')) return;
        const which = /x-case: (\S+)/i.exec(req)[1];
        const auth = /authorization: (.*)\r\n/i.exec(req)[1];
        const head = {
          hop: `HTTP/1.1 200 OK\r\nConnection: X-Secret-Hop\r\nX-Secret-Hop: internal\r\nX-Keyless-Request-Id: forged\r\n` +
            `Content-Type: application/json\r\nContent-Length: ${J.length}\r\n\r\n${J}`,
          echo: `HTTP/1.1 401 Unauthorized\r\nX-Echo: ${auth}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`,
          empty: `HTTP/1.1 204 No Content\r\nContent-Length: ${J.length}\r\n\r\n`,
          body: (() => {
            const b = JSON.stringify({ error: { message: `you sent ${auth}` } });
            return `HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\n\r\n${b}`;
          })(),
          // the key as a PHP JSON encoder ('/' escaped) and a URL (percent-encoded) spell it
          spelled: (() => {
            const k = auth.slice('Bearer '.length);
            const b = `{"error":{"message":"you sent ${k.replace(/\//g, '\\/')}","retry":"https://x/?key=${encodeURIComponent(k)}",` +
              `"lower":"${encodeURIComponent(k).replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase())}"}}`;
            return `HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\n\r\n${b}`;
          })(),
        }[which];
        if (which === 'gz') {
          // compressed although keyless asked for none: inflated, then masked as a plain body is
          const b = zlib.gzipSync(Buffer.from(JSON.stringify({ error: { message: `you sent ${auth}` } })));
          s.write(`HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n` +
            `Content-Length: ${b.length}\r\n\r\n`);
          s.end(b);
          return;
        }
        if (which === 'stream') {
          // the key spelled across writes of a chunked event stream
          const ev = `data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', model: 'gpt-4o',
            choices: [{ index: 0, delta: { content: `header was ${auth}` }, finish_reason: null }] })}\n\n`;
          const at = ev.indexOf(auth) + 10;
          const chunk = (t) => `${t.length.toString(16)}\r\n${t}\r\n`;
          s.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n' + chunk(ev.slice(0, at)));
          setTimeout(() => s.end(chunk(ev.slice(at)) + chunk('data: [DONE]\n\n') + '0\r\n\r\n'), 50);
          return;
        }
        s.end(head);
      });
    });
    await new Promise((r) => up.listen(0, '127.0.0.1', r));
    const gw = await startGateway({
      providers: providersFor(mock.url, {
        openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: KEYS.openai, models: ['gpt-4o'],
                  compatibility: { openai_chat: true } },
      }),
    });
    const ask = (which) => rawRequest(gw.url, `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n` +
      `x-case: ${which}\r\nContent-Type: application/json\r\nContent-Length: 34\r\n\r\n{"model":"gpt-4o","messages":[{}]}`);
    const hop = await ask('hop');
    assert.match(hop, /^HTTP\/1.1 200 /);
    assert.doesNotMatch(hop, /x-secret-hop|forged/i);
    assert.equal(hop.match(/x-keyless-request-id/gi).length, 1);
    const echo = await ask('echo');
    assert.match(echo, /^HTTP\/1.1 401 /);
    assert.ok(!echo.includes(KEYS.openai), 'the provider key reached the caller');
    assert.doesNotMatch(echo, /x-echo/i);
    // in a body too: masked to as many '*', so the length still holds
    const body = await ask('body');
    assert.match(body, /^HTTP\/1.1 401 /);
    assert.ok(!body.includes(KEYS.openai), 'the provider key reached the caller in a body');
    assert.match(body, /you sent Bearer \*{10,}/);
    assert.equal(JSON.parse(body.slice(body.indexOf('\r\n\r\n') + 4)).error.message,
      `you sent Bearer ${'*'.repeat(KEYS.openai.length)}`);
    const streamed = await rawRequest(gw.url, `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n` +
      `x-case: stream\r\nContent-Type: application/json\r\nContent-Length: 48\r\n\r\n{"model":"gpt-4o","messages":[{}],"stream":true}`);
    assert.match(streamed, /^HTTP\/1.1 200 /);
    assert.ok(!streamed.includes(KEYS.openai), 'the provider key reached the caller in a stream');
    assert.match(streamed, /header was Bearer \*{10,}/);
    // ... and in a compressed one, inflated first
    const gz = await ask('gz');
    assert.match(gz, /^HTTP\/1.1 401 /);
    assert.doesNotMatch(gz, /content-encoding/i);
    assert.ok(!gz.includes(KEYS.openai), `the provider key reached the caller in a compressed body: ${gz}`);
    assert.ok(gz.includes(`"you sent Bearer ${'*'.repeat(KEYS.openai.length)}"`), gz);
    const empty = await ask('empty');
    assert.match(empty, /^HTTP\/1.1 204 /);
    assert.doesNotMatch(empty, /content-length|transfer-encoding/i);
    // a key with '/', '+' and '=' (a Bedrock API key is base64) in the other spellings of it an answer may hold
    const slashKey = 'ABSKQmVkcm9jay/test+key/0123==';
    const gw2 = await startGateway({ providers: { openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: slashKey,
      models: ['gpt-4o'], compatibility: { openai_chat: true } } } });
    try {
      const spelled = await rawRequest(gw2.url, `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n` +
        `x-case: spelled\r\nContent-Type: application/json\r\nContent-Length: 34\r\n\r\n{"model":"gpt-4o","messages":[{}]}`);
      assert.match(spelled, /^HTTP\/1.1 401 /);
      const err = JSON.parse(spelled.slice(spelled.indexOf('\r\n\r\n') + 4)).error;
      for (const v of [err.message, decodeURIComponent(err.retry), decodeURIComponent(err.lower)])
        assert.ok(!v.includes(slashKey) && !v.includes('test+key'), `the key reached the caller: ${v}`);
    } finally {
      await gw2.stop();
    }
    await gw.stop();
    await mock.stop();
    up.close();
    assert.match(gw.output(), /echoed its key in a response header/);
    assert.match(gw.output(), /echoed its key in its answer; it was masked/);
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  it('an answer of no announced length cut short reaches an HTTP/1.0 caller as a reset, not as a clean end it would take for the whole', async () => {
    const mock = await startMock();
    const part = '{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hel';
    const up = await rawProvider((req, sock) => {
      sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n` +
        `${part.length.toString(16)}\r\n${part}\r\n`);
      setTimeout(() => sock.destroy(), 100);
    });
    const gw = await startGateway({
      providers: providersFor(mock.url, {
        openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: KEYS.openai, models: ['gpt-4o'],
                  compatibility: { openai_chat: true } },
      }),
    });
    const u = new URL(gw.url);
    const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    // HTTP/1.0 (as nginx speaks to its upstreams by default): the body ends where the connection does
    const got = await new Promise((res) => {
      const s = net.connect(Number(u.port), u.hostname);
      let data = '';
      s.on('data', (d) => (data += d.toString('latin1')));
      s.on('end', () => res({ how: 'end', data }));
      s.on('error', (e) => res({ how: e.code, data }));
      s.write(`POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    });
    assert.match(got.data, /^HTTP\/1.1 200 OK\r\n/);
    assert.doesNotMatch(got.data, /content-length|transfer-encoding/i);
    assert.equal(got.how, 'ECONNRESET', 'the caller can tell the answer was cut');
    await gw.stop();
    await mock.stop();
    up.close();
  });

  it('a stream the provider framed with Content-Length and cut short still ends with a well-framed error event', async () => {
    const mock = await startMock();
    // a provider that declares more than it sends, then resets
    const ev = 'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant",' +
      '"model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":3,"output_tokens":1}}}\n\n';
    const up = net.createServer((s) => {
      s.once('data', () => {
        s.write(`HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: ${ev.length + 10}\r\n\r\n${ev}`);
        setTimeout(() => s.destroy(), 50);
      });
    });
    await new Promise((r) => up.listen(0, '127.0.0.1', r));
    const gw = await startGateway({
      providers: providersFor(mock.url, {
        anthropic: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: KEYS.anthropic, authorization: 'x-api-key',
                     models: ['claude-sonnet-4-5'], compatibility: { anthropic_messages: true } },
      }),
    });
    const body = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 5, stream: true, messages: [{ role: 'user', content: 'hi' }] });
    const req = `POST /v1/messages HTTP/1.1\r\nHost: x\r\nanthropic-version: 2023-06-01\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${body.length}\r\n\r\n${body}`;
    // the same connection then serves another request: nothing was written past the response's framing
    const raw = await rawRequest(gw.url, req + 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const [head, rest] = raw.split('\r\n\r\n', 2);
    assert.match(head, /^HTTP\/1.1 200 /);
    assert.match(head, /transfer-encoding: chunked/i);
    assert.doesNotMatch(head, /content-length/i);
    const end = raw.indexOf('\r\n0\r\n\r\n');
    assert.ok(end > 0, 'the chunked body ends');
    assert.match(raw.slice(0, end), /event: error\ndata: \{"type":"error"/);
    assert.match(raw.slice(end + 7), /^HTTP\/1.1 200 OK\r\n[\s\S]*keyless\n$/, 'the next response follows cleanly');
    assert.ok(rest.length > 0);
    await gw.stop();
    await mock.stop();
    up.close();
  });
});
