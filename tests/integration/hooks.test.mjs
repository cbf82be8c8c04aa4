// Aperture's hooks: a guardrail service asked before each request is
// forwarded (pre_request), which allows, blocks (in the caller's dialect) or
// modifies it, its fail_policy deciding what a hook that fails means; and
// services told what happened once a forwarded request ended
// (entire_request, tool_call_entire_request), with the answer put back
// together from its stream.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, providersFor, assertNoKeys, finalRecord, rawRequest, BUILD, tempDir } from './lib/harness.mjs';

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
      store: { captures: 'full' },
      grants: [
        { src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
          { send_hooks: [send('audit', ['user_message']), send('off', [])] }] } },
        // a capability object's models scope its send_hooks
        { src: ['*'], app: { 'tailscale.com/cap/aperture': [
          { models: 'openai/**', send_hooks: [send('pii', ['request_body', 'user_message', 'grants'])] }],
          'example.com/cap/custom': [{ tier: 'gold' }] } },
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
    // "grants": the caller's other capabilities, keyed by name (Aperture's shape), only when asked
    assert.deepEqual(pii.body.metadata.grants, { 'example.com/cap/custom': [{ tier: 'gold' }] });
    assert.equal(audit.body.metadata.grants, undefined);
    assert.equal(pii.body.request_body.messages[0].content, 'hello there');
    assert.equal(pii.body.user_message, 'hello there');
    assert.equal(audit.body.user_message, 'hello there');
    assert.equal(audit.body.request_body, undefined, 'audit is not sent the body');
    assert.ok(!JSON.stringify(hook.calls).includes('sk-'), 'no provider key reaches a hook');
  });

  it('user_agent and url: the first 1 KiB of each, cut between characters, as records keep them', async () => {
    // "ab" then 1,000 U+20AC (3 bytes each): cut at 1,024 bytes, 340 whole ones
    const ua = Buffer.from('ab' + '\u20ac'.repeat(1000), 'utf8');
    const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    const answer = await rawRequest(gw.url, Buffer.concat([
      Buffer.from('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n'),
      Buffer.from('User-Agent: '), ua, Buffer.from(`\r\nContent-Length: ${body.length}\r\n\r\n${body}`)]));
    assert.match(answer, /^HTTP\/1\.1 200/);
    assert.deepEqual(hook.calls.map((c) => c.path), ['/pii', '/audit']);
    for (const c of hook.calls) {
      assert.equal(c.body.metadata.user_agent, 'ab' + '\u20ac'.repeat(340));
      assert.equal(c.body.metadata.url, '/v1/chat/completions');
    }
    const rec = await finalRecord(gw, answer.match(/x-keyless-request-id: (\S+)/i)[1]);
    assert.equal(Buffer.from(rec.user_agent, 'utf8').toString('utf8'), hook.calls[0].body.metadata.user_agent, 'as the record');
  });

  it('a caller over its rate limit is refused before the hooks are asked: no hook call for a request that cannot go', async () => {
    const g = await startGateway({
      hooks: { pii: { url: `${url}/pii` } },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
        { rate_limit: { requests_per_minute: 1 } },
        { send_hooks: [send('pii', ['request_body'])] }] } }],
      providers: providersFor(mock.url),
    });
    try {
      const ask = () => fetch(`${g.url}/v1/chat/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
      });
      assert.equal((await ask()).status, 200);
      assert.equal(hook.calls.length, 1);
      const r = await ask();
      assert.equal(r.status, 429);
      assert.match((await r.json()).error.message, /rate limit rpm:\S+ exceeded/);
      assert.ok(Number(r.headers.get('retry-after')) > 0);
      assert.equal(hook.calls.length, 1, 'the hook was not asked about a request over the rate limit');
      const rec = await finalRecord(g, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.error_class, 'rate_limited');
      assert.equal(rec.guardrails, null);
    } finally {
      await g.stop();
    }
  });

  it('Aperture\'s other webhook styles: Splunk HEC and Cloudflare AI Gateway (hooks only, not providers)', async () => {
    const g = await startGateway({
      hooks: {
        splunk: { url: `${url}/splunk`, authorization: 'hec', apikey: 'hec-token-000', preference: 2 },
        cf: { url: `${url}/cf`, authorization: 'cf-aig-authorization', apikey: 'cf-token-000', preference: 1 },
        // a key longer than the 8 KiB header buffer keyless had cut it to
        long: { url: `${url}/long`, apikey: `long-${'k'.repeat(10000)}`, preference: 0 },
      },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
        { send_hooks: [send('splunk', []), send('cf', []), send('long', [])] }] } }],
      providers: providersFor(mock.url),
    });
    try {
      const r = await new OpenAI({ baseURL: `${g.url}/v1`, apiKey: 'x', maxRetries: 0 }).chat.completions.create({
        model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
      assert.ok(r.choices[0].message.content);
      const [splunk, cf, long] = hook.calls;
      assert.equal(long.path, '/long');
      assert.equal(long.headers.authorization, `Bearer long-${'k'.repeat(10000)}`);
      assert.equal(splunk.path, '/splunk');
      assert.equal(splunk.headers.authorization, 'Splunk hec-token-000');
      assert.equal(cf.path, '/cf');
      assert.equal(cf.headers['cf-aig-authorization'], 'Bearer cf-token-000');
      assert.equal(cf.headers.authorization, undefined);
    } finally {
      await g.stop();
    }
    const dir = tempDir('kl-hook-auth-');
    const f = join(dir, 'c.hujson');
    writeFileSync(f, JSON.stringify({ providers: { p: { baseurl: mock.url, apikey: 'x', authorization: 'hec', models: ['m'] } } }));
    const check = spawnSync(join(BUILD, 'keyless'), ['check', '--config', f], { encoding: 'utf8' });
    rmSync(dir, { recursive: true, force: true });
    assert.equal(check.status, 1);
    assert.match(check.stderr, /authorization must be "bearer", "x-api-key" or "x-goog-api-key"/);
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
    await assert.rejects(chat('my key is AKIAIOSFODNN7Q3XM9PL'), (e) => {
      assert.equal(e.status, 400);
      assert.match(e.message, /the prompt contains an AWS key/);
      return true;
    });
    assert.equal((await mock.requests()).length, 0);
    assert.deepEqual(hook.calls.map((c) => c.path), ['/pii'], 'a block stops the chain');
    // a status of its own keeps its class in the body: a 422 is an invalid request, not a permission error
    hook.reply = async () => [200, { action: 'block', status_code: 422, message: 'not that' }];
    const u = await fetch(`${gw.url}/v1/messages`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(u.status, 422);
    assert.equal((await u.json()).error.type, 'invalid_request_error');
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
    assert.deepEqual(rec.guardrails, [
      { stage: 'request', by: 'hook', hook: 'audit', action: 'block', why: 'request blocked by guardrail' }]);
    // what a guardrail refused is not kept in a capture, as for the built-in rules
    const full = await (await fetch(`${gw.url}/api/requests/${rec.id}`)).json();
    assert.equal(full.request_body ?? null, null, JSON.stringify(full.request_body));
    assert.ok(full.request_headers, 'the rest of the capture is kept');
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
    await assert.rejects(chat('x'), (e) => e.status === 503 && /its answer has a duplicate key/.test(e.message));
    hook.reply = async (c) => (c.path === '/pii' ? [200, 'not json'] : [200, { action: 'allow' }]);
    await assert.rejects(chat('x'), (e) => e.status === 503 && /its answer is not/.test(e.message));
    // a verdict with more after it, a verdict given twice (Aperture's Go reader takes the last),
    // a modify with a \u0000 (cJSON would cut the text there): no verdict, fail_policy
    for (const [answer, re] of [['{"action":"allow"}{"action":"block"}', /its answer is not/],
      ['{"action":"allow"} xyz', /its answer is not/],
      ['{"action":"allow","action":"block"}', /its answer has a duplicate key/],
      ['{"action":"modify","request_body":{"model":"gpt-4o","messages":[{"role":"user","content":"keep\\u0000 this"}]}}',
        /\\u0000 escape/]]) {
      hook.reply = async (c) => (c.path === '/pii' ? [200, answer] : [200, { action: 'allow' }]);
      await assert.rejects(chat('x'), (e) => e.status === 503 && re.test(e.message), answer);
    }
    assert.equal((await mock.requests()).length, 0);
    // a modify goes upstream as the hook wrote it: a 20-digit seed keeps its digits
    hook.reply = async (c) => (c.path === '/pii'
      ? [200, '{"action":"modify","request_body":{"model":"gpt-4o","seed":12345678901234567891,' +
        '"messages":[{"role":"user","content":"x"}]}}'] : [200, { action: 'allow' }]);
    await chat('x');
    assert.match((await mock.last()).body, /"seed":12345678901234567891/);
    await mock.clear();
    // audit is fail_open: its failure is logged and the request goes on
    hook.reply = async (c) => (c.path === '/audit' ? [500, { error: 'down' }] : [200, { action: 'allow' }]);
    const { data: ok, response } = await chat('y').withResponse();
    assert.equal(ok.choices[0].message.content, 'Hello from mockllm.');
    for (let i = 0; i < 50 && !/guardrail hook audit failed \(fail_open/.test(gw.output()); i++) await sleep(20);
    assert.match(gw.output(), /guardrail hook audit failed \(fail_open, request let through\): it answered HTTP 500/);
    // the record says which hooks judged it, and how
    const rec = await finalRecord(gw, response.headers.get('x-keyless-request-id'));
    assert.deepEqual(rec.guardrails, [
      { stage: 'request', by: 'hook', hook: 'pii', action: 'allow' },
      { stage: 'request', by: 'hook', hook: 'audit', action: 'failed_open', why: 'it answered HTTP 500' }]);
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

  it('keyless check: an undefined hook is an error; Aperture\'s events and send values are accepted', () => {
    const dir = tempDir('kl-hooks-');
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
    assert.match(r.stderr, /more than 32 hooks/);
    r = check({ hooks: { a: { url: 'http://h' } }, grants: grant([send('b', [])]) });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /send_hooks names hook "b", which hooks does not define/);
    // Aperture's documented example, and every send value its protocol lists
    r = check({ hooks: { a: { url: 'http://h' } }, grants: grant([send('a', ['estimated_cost'], ['entire_request'])]) });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /send_hooks|not sent/);
    r = check({ hooks: { a: { url: 'http://h' } }, grants: grant([send('a', ['tools', 'request_body', 'response_body',
      'raw_responses', 'user_message', 'grants', 'estimated_cost', 'quotas'], ['pre_request', 'tool_call_entire_request'])]) });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /send_hooks|not sent/);
    for (const [hooks, sh, msg] of [
      [{ a: {} }, [], /hook a needs a "url"/],
      [{ a: { url: 'ftp://x' } }, [], /url must be an http/],
      [{ a: { url: 'http://h', fail_policy: 'maybe' } }, [], /fail_policy must be/],
      [{ a: { url: 'http://h' } }, [send('a', ['everything'])], /send_hooks send must be/],
      [{ a: { url: 'http://h' } }, [{ name: 'a', send: [] }], /events must be a non-empty array/],
      [{ a: { url: 'http://h' } }, 'a', /"send_hooks" must be an array/],
    ]) {
      r = check({ hooks, grants: grant(sh) });
      assert.equal(r.status, 1, `${JSON.stringify(hooks)} ${JSON.stringify(sh)}: ${r.stderr}`);
      assert.match(r.stderr, msg);
    }
  });

});

describe('entire_request and tool_call_entire_request hooks', () => {
  let mock, hook, gw;
  const ALL = ['request_body', 'user_message', 'response_body', 'raw_responses', 'tools', 'grants', 'estimated_cost', 'quotas'];
  before(async () => {
    mock = await startMock();
    hook = await startHookServer();
    const url = `http://127.0.0.1:${hook.address().port}`;
    hook.reply = async () => [200, {}];
    gw = await startGateway({
      hooks: {
        told: { url: `${url}/told`, apikey: 'told-secret-000' },
        tools: { url: `${url}/tools`, fail_policy: 'fail_closed' }, // after the answer, hooks fail open whatever this says
        gate: { url: `${url}/gate`, fail_policy: 'fail_closed' },
      },
      quotas: { 'daily:<user>': { capacity: '$10.00', rate: '$5.00/day' } },
      grants: [
        { src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
          { quotas: [{ bucket: 'daily:<user>' }] },
          { send_hooks: [{ name: 'told', events: ['entire_request'], send: ALL },
            { name: 'tools', events: ['tool_call_entire_request'], send: ['tools'] },
            { name: 'gate', events: ['pre_request'], send: ['user_message', 'quotas', 'estimated_cost'] }] }],
          'example.com/cap/custom': [{ tier: 'gold' }] } },
        // a grant of nothing but a third-party capability still names the caller
        { src: ['(loopback)'], app: { 'example.com/cap/team': [{ name: 'infra' }] } },
      ],
      providers: providersFor(mock.url),
    });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    await new Promise((r) => hook.close(r));
    assertNoKeys(assert, gw.output(), 'gateway log');
    assert.ok(!gw.output().includes('told-secret-000'), 'a hook key in the log');
  });
  beforeEach(() => {
    hook.calls.length = 0;
    hook.reply = async (c) => (c.path === '/gate'
      ? [200, { action: c.body.user_message === 'BLOCK' ? 'block' : 'allow' }] : [200, {}]);
  });

  // the calls told about request id, once both hooks had time to be told
  const toldOf = async (id, paths = ['/told']) => {
    const of = () => hook.calls.filter((c) => c.path !== '/gate' && c.body.metadata.request_id === id);
    for (let i = 0; i < 200 && of().length < paths.length; i++) await sleep(10);
    await sleep(50); // nothing more comes
    const calls = of();
    assert.deepEqual(calls.map((c) => c.path).sort(), [...paths].sort(), `hooks told of ${id}`);
    assert.ok(!JSON.stringify(calls).includes('sk-'), 'no provider key reaches a hook');
    return Object.fromEntries(calls.map((c) => [c.path.slice(1), c]));
  };
  const openai = () => new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'x', maxRetries: 0 });
  const TOOLS = [{ name: 'read_file', params: { path: 'README.md' } }, { name: 'grep', params: { path: 'README.md' } }];

  it('a hook told of a request may answer anything, of any size: only its status is looked at', async () => {
    hook.reply = async (c) => (c.path === '/gate' ? [200, { action: 'allow' }] : [200, 'x'.repeat(2 << 20)]);
    const r = await openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] })
      .withResponse();
    const id = r.response.headers.get('x-keyless-request-id');
    await toldOf(id);
    await sleep(200); // its answer read to the end
    assert.ok(!gw.output().includes(`${id}: hook told`), gw.output().split('\n').filter((l) => l.includes(id)).join('\n'));
  });

  it('a whole answer: metadata with cost, quotas and the other grants; the body asked, the answer, its tool calls', async () => {
    const r = await openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'look around' }] },
      { headers: { 'x-mock': 'tools=read_file,grep' } }).withResponse();
    const id = r.response.headers.get('x-keyless-request-id');
    const { told, tools } = await toldOf(id, ['/told', '/tools']);
    assert.equal(told.headers.authorization, 'Bearer told-secret-000');
    const md = told.body.metadata;
    assert.equal(md.login_name, '(loopback)');
    assert.equal(md.model, 'gpt-4o');
    assert.equal(md.provider, 'openai');
    assert.ok(md.session_id);
    assert.deepEqual(md.grants, { 'example.com/cap/custom': [{ tier: 'gold' }], 'example.com/cap/team': [{ name: 'infra' }] });
    const rec = await finalRecord(gw, id);
    assert.equal(md.estimated_cost.usage.input_tokens, rec.input_tokens);
    assert.equal(md.estimated_cost.usage.output_tokens, rec.output_tokens);
    assert.equal(md.estimated_cost.usage.cached_tokens, rec.cache_read_tokens);
    assert.ok(md.estimated_cost.dollars > 0);
    assert.equal(Math.round(md.estimated_cost.dollars * 1e9), rec.cost_nanodollars);
    assert.equal(md.estimated_cost.cost_basis, 'openai/gpt-4o');
    const q = md.quotas['daily:(loopback)'];
    assert.equal(q.capacity, 10e9);
    assert.equal(q.rate, '$5.00/day');
    // charged, less what refilled since ($5/day: ~58 nd per ms)
    assert.ok(q.current <= 10e9 - rec.cost_nanodollars + 1e6, `${q.current} reflects the charge`);
    // a pre_request hook sees the balance before the request reserved anything
    const gate = hook.calls.find((c) => c.path === '/gate' && c.body.metadata.request_id === id);
    const before = gate.body.metadata.quotas['daily:(loopback)'];
    assert.equal(before.capacity, 10e9);
    const spent = before.current - q.current; // less what refilled meanwhile ($5/day: ~58 nd per ms)
    assert.ok(spent <= rec.cost_nanodollars && spent > rec.cost_nanodollars - 1e6, `${spent} vs ${rec.cost_nanodollars}`);
    // and the most the request can cost (the request's cap on output: the gateway's default, none was asked)
    const est = gate.body.metadata.estimated_cost;
    assert.equal(est.cost_basis, 'openai/gpt-4o');
    assert.ok(est.dollars * 1e9 >= rec.cost_nanodollars, `${est.dollars} covers ${rec.cost_nanodollars} nd`);
    assert.ok(est.usage.input_tokens > 0 && est.usage.output_tokens > 0);
    assert.equal(told.body.user_message, 'look around');
    assert.equal(told.body.request_body.messages[0].content, 'look around');
    assert.deepEqual(told.body.response_body, r.data, 'the answer as the caller got it');
    assert.equal(told.body.raw_responses, undefined, 'an answer that did not stream has no events');
    assert.deepEqual(told.body.tool_calls, TOOLS);
    assert.equal(told.body.keyless.status, 200);
    assert.equal(told.body.keyless.upstream_status, 200);
    assert.equal(told.body.keyless.error_class, undefined);
    // tools is sent only what it asked for (and how the request ended)
    assert.deepEqual(Object.keys(tools.body).sort(), ['keyless', 'metadata', 'tool_calls']);
    assert.equal(tools.body.metadata.grants, undefined);
    assert.deepEqual(tools.body.tool_calls, TOOLS);
    // no tool call: entire_request only
    const plain = await openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] })
      .withResponse();
    const { told: t2 } = await toldOf(plain.response.headers.get('x-keyless-request-id'));
    assert.deepEqual(t2.body.tool_calls, []);
    assert.equal(t2.body.response_body.choices[0].message.content, 'Hello from mockllm.');
  });

  it('streams: the answer put back together as each SDK puts it back together, and the events as sent', async () => {
    // OpenAI chat
    const s = openai().chat.completions.stream({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] },
      { headers: { 'x-mock': 'tools=read_file,grep;text=Let_me_look.;events=7' } });
    const fin = await s.finalChatCompletion();
    let { told, tools } = await toldOf(await nextId(), ['/told', '/tools']);
    const m = told.body.response_body.choices[0].message;
    assert.equal(told.body.response_body.object, 'chat.completion');
    assert.equal(m.content, fin.choices[0].message.content);
    assert.equal(m.content, 'Let me look.');
    assert.deepEqual(m.tool_calls.map((c) => [c.id, c.type, c.function.name, c.function.arguments]),
      fin.choices[0].message.tool_calls.map((c) => [c.id, c.type, c.function.name, c.function.arguments]));
    assert.equal(told.body.response_body.choices[0].finish_reason, 'tool_calls');
    assert.ok(told.body.response_body.usage.prompt_tokens > 0, 'the usage chunk keyless asked for is in the answer');
    assert.ok(told.body.raw_responses.length >= 9 && told.body.raw_responses.every((e) => e.object === 'chat.completion.chunk'));
    assert.deepEqual(tools.body.tool_calls, TOOLS);

    // OpenAI Responses
    const rs = openai().responses.stream({ model: 'gpt-4o', input: 'x' }, { headers: { 'x-mock': 'tools=read_file' } });
    const rfin = await rs.finalResponse();
    ({ told } = await toldOf(await nextId(), ['/told', '/tools']));
    assert.equal(told.body.response_body.id, rfin.id);
    // (the SDK adds parsed_arguments to what the provider sent)
    assert.deepEqual(told.body.response_body.output, rfin.output.map(({ parsed_arguments, ...item }) => item));
    assert.deepEqual(told.body.tool_calls, [TOOLS[0]]);

    // Anthropic
    const claude = new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 0 });
    const as = claude.messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 50, messages: [{ role: 'user', content: 'x' }] },
      { headers: { 'x-mock': 'tools=read_file,grep;text=Looking.' } });
    const afin = await as.finalMessage();
    ({ told } = await toldOf(await nextId(), ['/told', '/tools']));
    const ab = told.body.response_body;
    assert.deepEqual(ab.content, afin.content);
    assert.equal(ab.stop_reason, 'tool_use');
    assert.equal(ab.usage.output_tokens, afin.usage.output_tokens);
    assert.deepEqual(told.body.tool_calls, TOOLS);
    assert.deepEqual(told.body.raw_responses.map((e) => e.type).slice(0, 2), ['message_start', 'content_block_start']);

    // Gemini, with and without alt=sse
    for (const path of [':streamGenerateContent?alt=sse', ':streamGenerateContent']) {
      const g = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash${path}`, {
        method: 'POST', headers: { 'content-type': 'application/json', 'x-mock': 'tools=grep;text=Searching_now.;events=5' },
        body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'x' }] }] }),
      });
      await g.text();
      ({ told } = await toldOf(g.headers.get('x-keyless-request-id'), ['/told', '/tools']));
      const parts = told.body.response_body.candidates[0].content.parts;
      assert.equal(parts.filter((p) => 'text' in p).map((p) => p.text).join(''), 'Searching now.', path);
      assert.equal(parts.filter((p) => 'text' in p).length, 1, `adjacent text parts are merged (${path})`);
      assert.deepEqual(told.body.tool_calls, [TOOLS[1]]);
      assert.ok(told.body.response_body.usageMetadata.promptTokenCount > 0);
      assert.ok(told.body.raw_responses.length >= 5, path);
    }
  });

  it('told of errors, not of what was never forwarded; a hook that fails is logged and changes nothing', async () => {
    // the provider's error: told, with the provider's error body
    const r = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-mock': 'status=429' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(r.status, 429);
    const errBody = await r.json();
    const { told } = await toldOf(r.headers.get('x-keyless-request-id'));
    assert.deepEqual(told.body.response_body, errBody);
    assert.equal(told.body.keyless.status, 429);
    assert.equal(told.body.keyless.error_class, 'upstream_error');
    assert.equal(told.body.metadata.estimated_cost, undefined, 'no usage reported, no cost');
    // blocked before forwarding: nobody is told
    const before = hook.calls.length;
    await assert.rejects(openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'BLOCK' }] }),
      (e) => e.status === 403);
    await sleep(150);
    assert.deepEqual(hook.calls.slice(before).map((c) => c.path), ['/gate']);
    // a failing hook: the caller is not affected (fail_closed means nothing after the answer)
    hook.reply = async (c) => (c.path === '/gate' ? [200, { action: 'allow' }] : [500, { error: 'down' }]);
    const ok = await openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] },
      { headers: { 'x-mock': 'tools=grep' } });
    assert.equal(ok.choices[0].finish_reason, 'tool_calls');
    for (let i = 0; i < 100 && !/hook tools answered HTTP 500/.test(gw.output()); i++) await sleep(20);
    assert.match(gw.output(), /hook told answered HTTP 500 to being told of the request/);
    assert.match(gw.output(), /hook tools answered HTTP 500 to being told of the request/);
  });

  it('an answer larger than what is kept: told without it, and the caller gets all of it', async () => {
    const size = 17 * 1024 * 1024;
    const r = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-mock': `size=${size};events=64` },
      body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'x' }] }),
    });
    let text = '';
    for (const line of (await r.text()).split('\n')) {
      if (line.startsWith('data: {')) text += JSON.parse(line.slice(6)).choices[0]?.delta?.content || '';
    }
    assert.equal(text.length, size);
    const { told } = await toldOf(r.headers.get('x-keyless-request-id'));
    assert.equal(told.body.response_body, undefined);
    assert.equal(told.body.raw_responses, undefined);
    assert.ok(told.body.metadata.estimated_cost.usage.output_tokens > 0, 'the rest of the payload is there');
  });

  // the request id of the next request /told is told of (for SDK streams,
  // which do not show the response headers); requests here run one by one
  const seen = new Set();
  async function nextId() {
    const fresh = () => hook.calls.find((c) => c.path === '/told' && !seen.has(c.body.metadata.request_id));
    for (let i = 0; i < 200 && !fresh(); i++) await sleep(10);
    const id = fresh().body.metadata.request_id;
    seen.add(id);
    return id;
  }
});

describe('hooks told after the answer, at shutdown', () => {
  it('a stopping gateway waits for them within its grace period', async () => {
    const mock = await startMock();
    const hook = await startHookServer();
    let answeredAt = 0;
    hook.reply = async () => { await sleep(400); answeredAt = Date.now(); return [200, {}]; };
    const gw = await startGateway({
      listen: { timeouts: { shutdown: '5s' } },
      hooks: { told: { url: `http://127.0.0.1:${hook.address().port}/told` } },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
        { send_hooks: [{ name: 'told', events: ['entire_request'], send: ['response_body'] }] }] } }],
      providers: providersFor(mock.url),
    });
    const r = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(r.status, 200);
    await r.text();
    for (let i = 0; i < 100 && hook.calls.length === 0; i++) await sleep(10);
    assert.equal(hook.calls.length, 1);
    const exited = new Promise((res) => gw.proc.on('exit', () => res(Date.now())));
    gw.proc.kill('SIGTERM');
    const exitAt = await exited;
    assert.ok(answeredAt > 0 && exitAt >= answeredAt, 'the gateway stopped only once the hook had answered');
    assert.doesNotMatch(gw.output(), /was not told/);
    await gw.stop();
    await mock.stop();
    await new Promise((res) => hook.close(res));
  });
});

describe('hooks told after the answer, when the hook is slow', () => {
  // A hook that takes every call and answers none: each call in flight
  // holds its payload and a connection, so a worker keeps at most 256 of
  // them, their payloads within half its share of listen.max_body_memory;
  // past that a call is cut to the room left (counted, logged), past 256
  // skipped (counted, logged), the request unaffected.
  let mock, hook, gw;
  const held = [];
  const payloads = [];
  before(async () => {
    mock = await startMock();
    hook = http.createServer((req, res) => {
      held.push(res);
      let data = '';
      req.on('data', (d) => (data += d));
      req.on('end', () => payloads.push(JSON.parse(data)));
    });
    await new Promise((r) => hook.listen(0, '127.0.0.1', r));
    gw = await startGateway({
      listen: { max_body_size: '1MiB', max_body_memory: '8MiB' },
      hooks: { told: { url: `http://127.0.0.1:${hook.address().port}/told`, timeout: '0' } },
      store: { captures: 'full' },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' },
        { send_hooks: [{ name: 'told', events: ['entire_request'], send: ['request_body'] }] }] } }],
      providers: providersFor(mock.url),
    }, { workers: 1 });
  });
  after(async () => {
    for (const r of held) r.destroy();
    await gw.stop();
    await mock.stop();
    await new Promise((r) => hook.close(r));
  });
  const metric = async (name) => {
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    return Number(text.match(new RegExp(`^${name} (\\d+)$`, 'm'))[1]);
  };
  const ask = async (content) => {
    const r = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content }] }),
    });
    await r.text();
    return r;
  };
  const settle = async (n) => {
    for (let i = 0; i < 300 && held.length < n; i++) await sleep(10);
  };

  it('a payload past half the worker\'s share of max_body_memory is cut to the room left, the requests answered and recorded', async () => {
    // 8 MiB, one worker: 4 MiB for hook payloads, ~13 of 300 KB
    for (let i = 0; i < 13; i++) assert.equal((await ask('x'.repeat(300000))).status, 200);
    await settle(13);
    assert.equal(held.length, 13);
    assert.equal(await metric('keyless_hook_calls_skipped_total'), 0);
    const bytes = await metric('keyless_request_body_bytes');
    assert.ok(bytes > 13 * 300000 && bytes < 4 * 1048576, `payloads counted: ${bytes}`);
    const r = await ask('y'.repeat(300000));
    assert.equal(r.status, 200);
    const id = r.headers.get('x-keyless-request-id');
    const rec = await finalRecord(gw, id);
    assert.equal(rec.status, 200);
    assert.equal(rec.error_class, null);
    await settle(14);
    for (let i = 0; i < 300 && payloads.length < 14; i++) await sleep(10);
    const told = payloads.find((p) => p.metadata.request_id === id);
    assert.ok(told, 'the hook is told of the request');
    assert.equal(told.request_body, undefined);
    assert.ok(told.keyless.cut.request_body.bytes > 300000);
    assert.ok(told.keyless.cut.request_body.head.startsWith('{"model":"gpt-4o"'));
    assert.equal(await metric('keyless_hook_calls_skipped_total'), 0);
    assert.equal(await metric('keyless_hook_calls_cut_total'), 1);
    assert.equal(await metric('keyless_hook_calls_in_flight'), 14);
    assert.ok(await metric('keyless_request_body_bytes') <= 4 * 1048576 + 4096);
    assert.match(gw.output(), new RegExp(`${id}: hook told was told of the request with its payload of \\d+ bytes cut to \\d+`));
    // requests still have the other half
    assert.equal((await ask('z'.repeat(900000))).status, 200);
  });

  it('at most 256 calls in flight per worker; one more is skipped, with a warning at most every 10 s', async () => {
    for (let i = 0; i < 260; i += 20)
      await Promise.all(Array.from({ length: 20 }, async () => assert.equal((await ask('hi')).status, 200)));
    await settle(256);
    await sleep(100);
    assert.equal(held.length, 256);
    assert.equal(await metric('keyless_hook_calls_in_flight'), 256);
    // 15 in flight from the test before (the last two cut)
    assert.equal(await metric('keyless_hook_calls_skipped_total'), 20 * 13 - (256 - 15));
    assert.equal(gw.output().match(/was not told of the request: worker/g).length, 1, 'the warning is rate-limited');
    // once the hook answers (here: fails), the room comes back
    for (const r of held.splice(0)) r.destroy();
    for (let i = 0; i < 300 && await metric('keyless_hook_calls_in_flight') > 0; i++) await sleep(10);
    assert.equal(await metric('keyless_request_body_bytes'), 0);
    assert.equal((await ask('again')).status, 200);
    await settle(1);
    assert.equal(held.length, 1);
  });
});

// A gateway whose every caller's requests are told, after the answer, to a
// hook served by handler (request_body sent), with listen settings and
// workers as given, and the hook's own settings (timeout) added.
async function toldGateway(handler, listen, hookSettings, workers) {
  const mock = await startMock();
  const hook = http.createServer(handler);
  await new Promise((r) => hook.listen(0, '127.0.0.1', r));
  const gw = await startGateway({
    listen,
    hooks: { told: { url: `http://127.0.0.1:${hook.address().port}/told`, ...hookSettings } },
    grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' },
      { send_hooks: [{ name: 'told', events: ['entire_request'], send: ['request_body'] }] }] } }],
    providers: providersFor(mock.url),
  }, { workers });
  return { mock, hook, gw };
}

describe('hooks told after the answer, a payload over half the share', () => {
  it('is cut to fit, even with no call in flight: the hook still hears of the request, told what was cut', async () => {
    // two workers of 2 MiB: each share is max_body_size + 1, half of it 512 KiB;
    // a caller padding its request past that does not stay out of an audit hook
    const told = [];
    const { mock, hook, gw } = await toldGateway((req, res) => {
      let data = '';
      req.on('data', (d) => { data += d; });
      req.on('end', () => { told.push({ size: Buffer.byteLength(data), body: JSON.parse(data) }); res.end('{}'); });
    }, { max_body_size: '1MiB', max_body_memory: '2MiB' }, {}, 2);
    try {
      const ids = [];
      for (const size of [100000, 600000]) {
        const r = await fetch(`${gw.url}/v1/chat/completions`, {
          method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(size) }] }),
        });
        assert.equal(r.status, 200);
        ids.push(r.headers.get('x-keyless-request-id'));
        await r.text();
      }
      for (let i = 0; i < 300 && told.length < 2; i++) await sleep(10);
      assert.equal(told.length, 2);
      const [small, big] = ids.map((id) => told.find((t) => t.body.metadata.request_id === id));
      assert.ok(small.size > 100000 && small.size < 200000);
      assert.equal(small.body.keyless.cut, undefined);
      assert.equal(small.body.request_body.messages[0].content.length, 100000);
      assert.ok(big.size <= 524288 && big.size > 400000, `cut to the half share: ${big.size}`);
      assert.equal(big.body.request_body, undefined, 'an Aperture field cut is absent, not of another type');
      assert.ok(big.body.keyless.cut.request_body.bytes > 600000);
      assert.match(big.body.keyless.cut.request_body.head, /^\{"model":"gpt-4o","messages":\[\{"role":"user","content":"xxx/);
      assert.equal(big.body.keyless.status, 200);
      assert.equal(big.body.metadata.model, 'gpt-4o');
      assert.match(gw.output(), new RegExp(`${ids[1]}: hook told was told of the request with its payload of \\d+ bytes cut to ${big.size} \\(keyless\\.cut says what was taken out\\): the whole is more than half the worker's share`));
      assert.doesNotMatch(gw.output(), /was not told/);
    } finally {
      await gw.stop();
      await mock.stop();
      await new Promise((r) => hook.close(r));
    }
  });
});

describe('hooks told after the answer, the share taken by requests', () => {
  it('a call without room in the worker\'s share is cut to the room left, and says so', async () => {
    // one worker of 4 MiB, half of it 2 MiB for hook payloads: one small
    // call in flight, two requests of ~1.95 MB waiting for their answer;
    // a 150 KB request's call fits under the calls' limits, not in the share
    const told = [];
    // each call answered 3 s after it came: the first is in flight throughout
    const { mock, hook, gw } = await toldGateway((req, res) => {
      let data = '';
      req.on('data', (d) => { data += d; });
      req.on('end', () => told.push(JSON.parse(data)));
      setTimeout(() => res.end('{}'), 3000);
    }, { max_body_size: '2MiB', max_body_memory: '4MiB' }, { timeout: '0' }, 1);
    const ask = async (size, headers = {}) => {
      const r = await fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(size) }] }),
      });
      await r.text();
      return r;
    };
    try {
      assert.equal((await ask(1000)).status, 200);
      for (let i = 0; i < 300 && !told.length; i++) await sleep(10);
      assert.equal(told.length, 1);
      const big = [1, 2].map(() => ask(1950000, { 'x-mock': 'delay_headers_ms=2000' }));
      await sleep(700);
      const r = await ask(150000);
      assert.equal(r.status, 200, 'the request itself is not affected');
      assert.deepEqual((await Promise.all(big)).map((b) => b.status), [200, 200]);
      const id = r.headers.get('x-keyless-request-id');
      for (let i = 0; i < 300 && !told.some((t) => t.metadata.request_id === id); i++) await sleep(10);
      const cut = told.find((t) => t.metadata.request_id === id);
      assert.ok(cut, 'the hook is told of the request');
      assert.ok(cut.keyless.cut.request_body.bytes > 150000);
      assert.match(gw.output(), new RegExp(`${id}: hook told was told of the request with its payload of \\d+ bytes cut to \\d+ \\(keyless\\.cut says what was taken out\\): the worker's share of listen\\.max_body_memory had no room for the whole`));
      assert.doesNotMatch(gw.output(), /was not told/);
    } finally {
      await gw.stop();
      await mock.stop();
      await new Promise((r) => hook.close(r));
    }
  });
});

describe('hooks told after the answer, the half share taken by calls in flight', () => {
  it('a call whose metadata alone is past the 4 KiB left is still made, with everything that grows cut', async () => {
    // one worker of 1 MiB, 512 KiB for hook payloads, taken by the calls of
    // three padded requests the hook has not answered; a caller's next
    // request, its User-Agent 1 KiB of bytes that are not UTF-8 (3 KiB once
    // U+FFFD) and the caller's grant with a capability of 1 KB, has
    // metadata over the 4 KiB a cut call is let have: the audit hook must
    // still hear of it
    const told = [];
    const held = [];
    const mock = await startMock();
    const hook = http.createServer((req, res) => {
      let data = Buffer.alloc(0);
      req.on('data', (d) => { data = Buffer.concat([data, d]); });
      req.on('end', () => { told.push({ size: data.length, body: JSON.parse(data.toString()) }); held.push(res); });
    });
    await new Promise((r) => hook.listen(0, '127.0.0.1', r));
    const gw = await startGateway({
      listen: { max_body_size: '1MiB', max_body_memory: '1MiB' },
      hooks: { told: { url: `http://127.0.0.1:${hook.address().port}/told`, timeout: '0' } },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' },
        { send_hooks: [{ name: 'told', events: ['entire_request'], send: ['request_body', 'grants'] }] }],
      'example.com/cap/audit': [{ team: 'infra', members: 'm'.repeat(1000) }] } }],
      providers: providersFor(mock.url),
    }, { workers: 1 });
    const metric = async (name) => {
      const text = await (await fetch(`${gw.url}/metrics`)).text();
      return Number(text.match(new RegExp(`^${name} (\\d+)$`, 'm'))[1]);
    };
    try {
      for (let k = 0; k < 3; k++) {
        const r = await fetch(`${gw.url}/v1/chat/completions`, {
          method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(400000) }] }),
        });
        assert.equal(r.status, 200);
        await r.text();
        for (let i = 0; i < 300 && told.length < k + 1; i++) await sleep(10);
      }
      assert.ok(told.reduce((n, t) => n + t.size, 0) > 512 * 1024 - 4096, 'the half share is taken');
      const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
      const out = await rawRequest(gw.url, Buffer.concat([Buffer.from('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n'
        + `Content-Type: application/json\r\nConnection: close\r\nContent-Length: ${body.length}\r\nUser-Agent: `),
      Buffer.alloc(1024, 0xff), Buffer.from(`\r\n\r\n${body}`)]));
      assert.match(out, /^HTTP\/1\.1 200/);
      const id = /x-keyless-request-id: (\S+)/i.exec(out)[1];
      for (let i = 0; i < 300 && !told.some((t) => t.body.metadata.request_id === id); i++) await sleep(10);
      const cut = told.find((t) => t.body.metadata.request_id === id);
      assert.ok(cut, 'the hook is told of the request');
      assert.ok(cut.size > 4096, `its metadata alone: ${cut.size}`);
      assert.equal(cut.body.request_body, undefined);
      assert.ok(cut.body.keyless.cut.request_body.bytes > 50);
      assert.equal(cut.body.metadata.user_agent, '\ufffd'.repeat(1024));
      assert.equal(cut.body.metadata.grants['example.com/cap/audit'][0].team, 'infra');
      assert.equal(await metric('keyless_hook_calls_skipped_total'), 0);
      assert.doesNotMatch(gw.output(), /was not told/);
    } finally {
      for (const r of held) r.destroy();
      await gw.stop();
      await mock.stop();
      await new Promise((r) => hook.close(r));
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

describe('hook payloads are UTF-8 whatever the caller sends', () => {
  it('a User-Agent and a body that are not UTF-8 reach every hook as U+FFFD, the payload valid JSON', async () => {
    // read as bytes: Node's own decoding would replace the bad bytes itself
    const calls = [];
    const hook = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (d) => chunks.push(d));
      req.on('end', () => {
        const bytes = Buffer.concat(chunks);
        let body = null;
        try {
          body = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
        } catch { /* counted below */ }
        calls.push({ path: req.url, body });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"action":"allow"}');
      });
    });
    await new Promise((r) => hook.listen(0, '127.0.0.1', r));
    const mock = await startMock();
    const url = `http://127.0.0.1:${hook.address().port}`;
    const gw = await startGateway({
      hooks: { told: { url: `${url}/told` }, gate: { url: `${url}/gate`, fail_policy: 'fail_closed' } },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' },
        { send_hooks: [{ name: 'told', events: ['entire_request'], send: ['request_body', 'user_message', 'response_body'] },
          { name: 'gate', events: ['pre_request'], send: ['request_body', 'user_message'] }] }] } }],
      providers: providersFor(mock.url),
    });
    try {
      const body = Buffer.concat([Buffer.from('{"model":"gpt-4o","messages":[{"role":"user","content":"a'),
        Buffer.from([0xff, 0xc3]), Buffer.from('b"}]}')]);
      const head = Buffer.from('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        `User-Agent: agent\xff/1\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`, 'latin1');
      const out = await rawRequest(gw.url, Buffer.concat([head, body]));
      assert.match(out, /^HTTP\/1\.1 200 /, 'a fail_closed hook that reads strictly does not fail');
      for (let i = 0; i < 300 && calls.length < 2; i++) await sleep(10);
      assert.deepEqual(calls.map((c) => c.path).sort(), ['/gate', '/told']);
      for (const c of calls) {
        assert.ok(c.body, `${c.path}: the payload is UTF-8 JSON`);
        assert.equal(c.body.metadata.user_agent, 'agent\ufffd/1');
        assert.equal(c.body.user_message, 'a\ufffd\ufffdb');
        assert.equal(c.body.request_body.messages[0].content, 'a\ufffd\ufffdb');
      }
    } finally {
      await gw.stop();
      await mock.stop();
      await new Promise((r) => hook.close(r));
    }
  });
});
