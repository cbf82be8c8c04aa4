// Aperture's pre_request hooks: a guardrail service asked before each
// request is forwarded, which allows, blocks (in the caller's dialect) or
// modifies it; its fail_policy decides what a hook that fails means.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, providersFor, assertNoKeys, finalRecord, BUILD } from './lib/harness.mjs';

// The hook service: records what it is sent; its answers come from `reply`.
function startHookServer() {
  const calls = [];
  const srv = http.createServer((req, res) => {
    let data = '';
    req.on('data', (d) => (data += d));
    req.on('end', async () => {
      const call = { path: req.url, headers: req.headers, body: JSON.parse(data) };
      calls.push(call);
      const [status, answer, delay] = await srv.reply(call);
      if (delay) await sleep(delay);
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(typeof answer === 'string' ? answer : JSON.stringify(answer));
    });
  });
  srv.calls = calls;
  srv.reply = async () => [200, { action: 'allow' }];
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv)));
}

describe('pre_request hooks', () => {
  let mock, hook, gw, url;
  const send = (name, sendWhat, events = ['pre_request']) => ({ name, events, send: sendWhat });
  before(async () => {
    mock = await startMock();
    hook = await startHookServer();
    url = `http://127.0.0.1:${hook.address().port}`;
    gw = await startGateway({
      hooks: {
        pii: { url: `${url}/pii`, apikey: 'hook-secret-000', timeout: '1s', fail_policy: 'fail_closed', preference: 10 },
        audit: { url: `${url}/audit`, authorization: 'x-api-key', apikey: 'audit-secret-000', preference: 5 },
        off: { url: `${url}/off`, disabled: true },
      },
      grants: [
        { src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
          { send_hooks: [send('audit', ['user_message'], ['pre_request', 'entire_request']), send('off', [])] }] } },
        // a capability object's models scope its send_hooks
        { src: ['*'], app: { 'tailscale.com/cap/aperture': [
          { models: 'openai/**', send_hooks: [send('pii', ['request_body', 'user_message'])] }] } },
      ],
      providers: providersFor(mock.url),
    });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    await new Promise((r) => hook.close(r));
    assertNoKeys(assert, gw.output(), 'gateway log');
    assert.ok(!gw.output().includes('hook-secret-000'), 'a hook key in the log');
  });
  beforeEach(async () => {
    hook.calls.length = 0;
    hook.reply = async () => [200, { action: 'allow' }];
    await mock.clear();
  });

  const openai = () => new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'x', maxRetries: 0 });
  const chat = (content, extra = {}) => openai().chat.completions.create({
    model: 'gpt-4o', messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'first' },
      { role: 'assistant', content: 'ok' }, { role: 'user', content }], ...extra,
  });

  it('allow: each hook is asked in preference order with what its grant sends, then the provider', async () => {
    const r = await openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hello there' }] })
      .withResponse();
    assert.equal(r.data.choices[0].message.content, 'Hello from mockllm.');
    assert.deepEqual(hook.calls.map((c) => c.path), ['/pii', '/audit']);
    const [pii, audit] = hook.calls;
    assert.equal(pii.headers.authorization, 'Bearer hook-secret-000');
    assert.equal(audit.headers['x-api-key'], 'audit-secret-000');
    assert.equal(pii.body.metadata.login_name, '(loopback)');
    assert.equal(pii.body.metadata.tailnet_name, undefined); // not a tailnet identity
    assert.equal(pii.body.metadata.model, 'gpt-4o');
    assert.equal(pii.body.metadata.provider, 'openai');
    assert.equal(pii.body.metadata.url, '/v1/chat/completions');
    assert.equal(pii.body.metadata.request_id, r.response.headers.get('x-keyless-request-id'));
    assert.ok(pii.body.metadata.session_id);
    assert.ok(Array.isArray(pii.body.metadata.grants));
    assert.equal(pii.body.request_body.messages[0].content, 'hello there');
    assert.equal(pii.body.user_message, 'hello there');
    assert.equal(audit.body.user_message, 'hello there');
    assert.equal(audit.body.request_body, undefined, 'audit is not sent the body');
    assert.ok(!JSON.stringify(hook.calls).includes('sk-'), 'no provider key reaches a hook');
  });

  it('user_message is the last user turn in every dialect', async () => {
    await chat('the last one');
    assert.equal(hook.calls[0].body.user_message, 'the last one');
    hook.calls.length = 0;
    const claude = new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 0 });
    await claude.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [
      { role: 'user', content: 'older' }, { role: 'assistant', content: 'ok' },
      { role: 'user', content: [{ type: 'text', text: 'part one' }, { type: 'text', text: 'part two' }] }] });
    assert.deepEqual(hook.calls.map((c) => c.path), ['/audit'], 'only audit applies to anthropic/**');
    assert.equal(hook.calls[0].body.user_message, 'part one\npart two');
    hook.calls.length = 0;
    const g = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:generateContent`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'gemini asks' }] }] }),
    });
    assert.equal(g.status, 200);
    assert.equal(hook.calls[0].body.user_message, 'gemini asks');
  });

  it('block: the hook\'s status and message, in the caller\'s dialect, recorded as blocked; the provider is never asked', async () => {
    hook.reply = async (c) => (c.path === '/pii' && c.body.user_message.includes('AKIA')
      ? [200, { action: 'block', status_code: 400, message: 'the prompt contains an AWS key' }]
      : [200, { action: 'allow' }]);
    await assert.rejects(chat('my key is AKIAIOSFODNN7EXAMPLE'), (e) => {
      assert.equal(e.status, 400);
      assert.match(e.message, /the prompt contains an AWS key/);
      return true;
    });
    assert.equal((await mock.requests()).length, 0);
    assert.deepEqual(hook.calls.map((c) => c.path), ['/pii'], 'a block stops the chain');
    // Anthropic's envelope for a block without a status code: 403
    hook.reply = async () => [200, { action: 'block' }];
    const r = await fetch(`${gw.url}/v1/messages`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(r.status, 403);
    const body = await r.json();
    assert.equal(body.type, 'error');
    assert.equal(body.error.message, 'request blocked by guardrail');
    const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
    assert.equal(rec.error_class, 'blocked');
    assert.equal(rec.status, 403);
  });

  it('modify: the provider gets the hook\'s body, and the next hook sees it too', async () => {
    hook.reply = async (c) => {
      if (c.path !== '/pii') return [200, { action: 'allow' }];
      const b = c.body.request_body;
      b.messages = b.messages.map((m) => ({ ...m, content: m.content.replace(/\d{3}-\d{2}-\d{4}/g, '[SSN]') }));
      return [200, { action: 'modify', request_body: b }];
    };
    const r = await chat('my SSN is 123-45-6789', { stream: true });
    let text = '';
    for await (const ev of r) text += ev.choices[0]?.delta?.content || '';
    assert.equal(text, 'Hello from mockllm.');
    const seen = JSON.parse((await mock.last()).body);
    assert.equal(seen.messages[3].content, 'my SSN is [SSN]');
    assert.equal(seen.stream, true);
    assert.equal(hook.calls[1].body.user_message, 'my SSN is [SSN]');
  });

  it('a modify that changes the model, a hook that fails or is too slow: fail_closed refuses (503), fail_open lets through', async () => {
    hook.reply = async (c) => (c.path === '/pii'
      ? [200, { action: 'modify', request_body: { ...c.body.request_body, model: 'gpt-4o-mini' } }]
      : [200, { action: 'allow' }]);
    await assert.rejects(chat('x'), (e) => e.status === 503 && /guardrail hook pii failed: .*another model/.test(e.message));
    hook.reply = async (c) => (c.path === '/pii' ? [200, { action: 'allow' }, 1500] : [200, { action: 'allow' }]);
    await assert.rejects(chat('x'), (e) => e.status === 503 && /guardrail hook pii failed: .*[Tt]imeout/.test(e.message));
    hook.reply = async (c) => (c.path === '/pii'
      ? [200, '{"action":"modify","request_body":{"model":"gpt-4o","messages":[],"messages":[{"role":"user","content":"x"}]}}']
      : [200, { action: 'allow' }]);
    await assert.rejects(chat('x'), (e) => e.status === 503 && /its modify has a duplicate key/.test(e.message));
    hook.reply = async (c) => (c.path === '/pii' ? [200, 'not json'] : [200, { action: 'allow' }]);
    await assert.rejects(chat('x'), (e) => e.status === 503 && /its answer is not/.test(e.message));
    assert.equal((await mock.requests()).length, 0);
    // audit is fail_open: its failure is logged and the request goes on
    hook.reply = async (c) => (c.path === '/audit' ? [500, { error: 'down' }] : [200, { action: 'allow' }]);
    const ok = await chat('y');
    assert.equal(ok.choices[0].message.content, 'Hello from mockllm.');
    for (let i = 0; i < 50 && !/guardrail hook audit failed \(fail_open/.test(gw.output()); i++) await sleep(20);
    assert.match(gw.output(), /guardrail hook audit failed \(fail_open, request let through\): it answered HTTP 500/);
  });

  it('what a hook reads is what the provider gets: \\u0000 and duplicate keys refused, a modify may not change streaming', async () => {
    const raw = (body) => fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body,
    });
    // cJSON would end the user message at the NUL, and read the first of two "content"s
    for (const body of [
      '{"model":"gpt-4o","messages":[{"role":"user","content":"hello\\u0000 forbidden"}]}',
      '{"model":"gpt-4o","messages":[{"role":"user","content":"hello","content":"forbidden"}]}',
    ]) {
      const r = await raw(body);
      assert.equal(r.status, 400, body);
      assert.match((await r.json()).error.message, /\\u0000 escape or a duplicate key/);
    }
    assert.equal(hook.calls.length, 0);
    // request_body is the caller's bytes, exactly
    const body = '{"model":"gpt-4o", "messages":[{"role":"user","content":"caf\\u00e9"}]}';
    assert.equal((await raw(body)).status, 200);
    assert.equal(hook.calls[0].path, '/pii');
    assert.equal(hook.calls[0].body.request_body.messages[0].content, 'café');
    // a modify that turns a plain request into a stream is refused (pii is fail_closed)
    hook.reply = async (c) => (c.path === '/pii'
      ? [200, { action: 'modify', request_body: { ...c.body.request_body, stream: true } }]
      : [200, { action: 'allow' }]);
    await assert.rejects(chat('x'), (e) => e.status === 503 && /changes whether the answer streams/.test(e.message));
  });

  it('a client that goes away while a hook thinks: nothing is forwarded, the gateway keeps serving', async () => {
    hook.reply = async (c) => [200, { action: 'allow' }, c.path === '/pii' ? 400 : 0];
    const ac = new AbortController();
    const p = openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }, { signal: ac.signal });
    await sleep(100);
    ac.abort();
    await assert.rejects(p);
    await sleep(500);
    assert.equal((await mock.requests()).length, 0);
    hook.reply = async () => [200, { action: 'allow' }];
    assert.equal((await chat('again')).choices[0].message.content, 'Hello from mockllm.');
  });

  it('keyless check: an undefined hook is an error, events not sent yet are a warning', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kl-hooks-'));
    const check = (config) => {
      const f = join(dir, 'c.hujson');
      writeFileSync(f, JSON.stringify(config));
      return spawnSync(join(BUILD, 'keyless'), ['check', '--config', f], { encoding: 'utf8' });
    };
    const grant = (sh) => [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { send_hooks: sh }] } }];
    // more hooks than one request can be sent to: an error here, not a 403 on every request
    const many = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`h${i}`, { url: 'http://h' }]));
    let r = check({ hooks: many, grants: grant(Object.keys(many).map((n) => send(n, []))) });
    assert.equal(r.status, 1);
    assert.match(r.stdout, /more than 32 pre_request hooks/);
    r = check({ hooks: { a: { url: 'http://h' } }, grants: grant([send('b', [])]) });
    assert.equal(r.status, 1);
    assert.match(r.stdout, /send_hooks names hook "b", which hooks does not define/);
    r = check({ hooks: { a: { url: 'http://h' } }, grants: grant([send('a', ['request_body'], ['entire_request'])]) });
    assert.equal(r.status, 0, r.stdout);
    assert.match(r.stdout, /only "pre_request" hooks run/);
    for (const [hooks, sh, msg] of [
      [{ a: {} }, [], /hook a needs a "url"/],
      [{ a: { url: 'ftp://x' } }, [], /url must be an http/],
      [{ a: { url: 'http://h', fail_policy: 'maybe' } }, [], /fail_policy must be/],
      [{ a: { url: 'http://h' } }, [send('a', ['everything'])], /send_hooks send must be/],
      [{ a: { url: 'http://h' } }, [{ name: 'a', send: [] }], /events must be a non-empty array/],
      [{ a: { url: 'http://h' } }, 'a', /"send_hooks" must be an array/],
    ]) {
      r = check({ hooks, grants: grant(sh) });
      assert.equal(r.status, 1, `${JSON.stringify(hooks)} ${JSON.stringify(sh)}: ${r.stdout}`);
      assert.match(r.stdout, msg);
    }
  });

});

describe('pre_request hooks at shutdown', () => {
  it('SIGTERM while a hook thinks: 503 after the grace period, recorded as shutdown, never forwarded', async () => {
    const mock = await startMock();
    const hook = await startHookServer();
    hook.reply = async () => [200, { action: 'allow' }, 5000];
    const gw = await startGateway({
      listen: { timeouts: { shutdown: '300ms' } },
      hooks: { slow: { url: `http://127.0.0.1:${hook.address().port}/slow`, timeout: '10s', fail_policy: 'fail_open' } },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
        { send_hooks: [{ name: 'slow', events: ['pre_request'], send: [] }] }] } }],
      providers: providersFor(mock.url),
    });
    const p = fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
    });
    for (let i = 0; i < 100 && hook.calls.length === 0; i++) await sleep(20);
    gw.proc.kill('SIGTERM');
    const r = await p;
    assert.equal(r.status, 503);
    assert.match((await r.json()).error.message, /shutting down/);
    await gw.stop();
    assert.equal((await mock.requests()).length, 0, 'fail_open must not forward at shutdown');
    await mock.stop();
    hook.closeAllConnections();
    await new Promise((res) => hook.close(res));
  });
});
