// Built-in guardrails: secrets in a prompt are refused in the caller's
// dialect, personal data is redacted before the provider sees it, and the
// rules follow the configuration through a reload.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, providersFor, assertNoKeys, finalRecord } from './lib/harness.mjs';

const AWS = 'AKIAIOSFODNN7EXAMPLE';

describe('guardrails', () => {
  let mock, gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({
      guardrails: {
        secrets: 'block',
        pii: { action: 'redact', kinds: ['email', 'credit_card'] },
        patterns: [{ name: 'codename', regex: 'project (?:falcon|osprey)', action: 'log' }],
      },
      store: { captures: 'full' },
      providers: providersFor(mock.url),
    });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  const openai = () => new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'x', maxRetries: 0 });

  it('a secret in the prompt is refused with 400 in each dialect, never forwarded, and recorded as blocked', async () => {
    await mock.clear();
    let id;
    await assert.rejects(
      openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: `use ${AWS} for s3` }] }),
      (e) => {
        assert.equal(e.status, 400);
        assert.match(e.message, /request blocked by guardrails: it contains aws_access_key/);
        id = e.headers?.get?.('x-keyless-request-id') ?? e.headers?.['x-keyless-request-id'];
        return true;
      });
    const claude = new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 0 });
    await assert.rejects(claude.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [
      { role: 'user', content: '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----' }] }),
    (e) => e.status === 400 && e.error?.type === 'error' && /private_key/.test(e.message));
    assert.equal((await mock.requests()).length, 0);
    assert.ok(!gw.output().includes(AWS), 'the secret itself is never logged');
    assert.ok(id);
    const rec = await finalRecord(gw, id);
    assert.equal(rec.error_class, 'blocked');
    assert.equal(rec.status, 400);
    assert.ok(!JSON.stringify(rec).includes(AWS), 'a blocked secret is not kept in the capture either');
    assert.equal(rec.request_body, null);
  });

  it('personal data is redacted before the provider sees it, streams included; a logged pattern passes', async () => {
    await mock.clear();
    const stream = await openai().chat.completions.create({
      model: 'gpt-4o', stream: true,
      messages: [{ role: 'user', content: 'mail jane.doe@example.com, card 4111-1111-1111-1111, about project falcon' }],
    });
    let text = '';
    for await (const ev of stream) text += ev.choices[0]?.delta?.content || '';
    assert.equal(text, 'Hello from mockllm.');
    const seen = JSON.parse((await mock.last()).body);
    assert.equal(seen.messages[0].content,
      'mail [REDACTED:email], card [REDACTED:credit_card], about project falcon');
    // the capture holds what was forwarded
    const recs = await (await fetch(`${gw.url}/api/requests?limit=1`)).json();
    const last = await finalRecord(gw, recs.requests[0].id);
    assert.ok(!JSON.stringify(last).includes('jane.doe@example.com'));
    for (let i = 0; i < 50 && !/guardrails redacted 2 spans \(email,credit_card,codename\)/.test(gw.output()); i++) await sleep(20);
    assert.match(gw.output(), /guardrails redacted 2 spans \(email,credit_card,codename\)/);
    // Gemini: the same, model in the path
    await mock.clear();
    const g = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:generateContent`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'reach me at bob@example.org' }] }] }),
    });
    assert.equal(g.status, 200);
    assert.equal(JSON.parse((await mock.last()).body).contents[0].parts[0].text, 'reach me at [REDACTED:email]');
    // only a logged pattern: the body goes as it came
    await mock.clear();
    await openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'status of project osprey?' }] });
    assert.equal(JSON.parse((await mock.last()).body).messages[0].content, 'status of project osprey?');
    assert.match(gw.output(), /guardrails found codename \(logged only\)/);
  });

  it('SIGHUP: guardrails switched off apply to the next request', async () => {
    const c = JSON.parse(readFileSync(gw.configPath, 'utf8'));
    c.guardrails = { secrets: 'off', pii: { action: 'block', kinds: ['email'] } };
    writeFileSync(gw.configPath, JSON.stringify(c));
    gw.proc.kill('SIGHUP');
    for (let i = 0; i < 100 && !/configuration reloaded/.test(gw.output()); i++) await sleep(20);
    await sleep(50);
    const ok = await openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: `use ${AWS}` }] });
    assert.equal(ok.choices[0].message.content, 'Hello from mockllm.');
    await assert.rejects(
      openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x@example.com' }] }),
      (e) => e.status === 400 && /it contains email/.test(e.message));
  });
});

describe('guardrails after hooks', () => {
  it('a body a hook rewrote is scanned again: a secret it adds is blocked', async () => {
    const mock = await startMock();
    const hook = http.createServer((req, res) => {
      let data = '';
      req.on('data', (d) => (data += d));
      req.on('end', () => {
        const b = JSON.parse(data).request_body;
        b.messages[0].content += ` ${AWS}`;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ action: 'modify', request_body: b }));
      });
    });
    await new Promise((r) => hook.listen(0, '127.0.0.1', r));
    const gw = await startGateway({
      guardrails: { secrets: 'block' },
      hooks: { enrich: { url: `http://127.0.0.1:${hook.address().port}/` } },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
        { send_hooks: [{ name: 'enrich', events: ['pre_request'], send: ['request_body'] }] }] } }],
      providers: providersFor(mock.url),
    });
    const r = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(r.status, 400);
    assert.match((await r.json()).error.message, /aws_access_key/);
    assert.equal((await mock.requests()).length, 0);
    await gw.stop();
    await mock.stop();
    await new Promise((res) => hook.close(res));
  });
});
