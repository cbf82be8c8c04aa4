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
import { gzipSync, brotliCompressSync } from 'node:zlib';
import { startMock, startGateway, providersFor, assertNoKeys, finalRecord, rawProvider, startHook } from './lib/harness.mjs';

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
    assert.deepEqual(rec.guardrails, [{ stage: 'request', by: 'guardrails', action: 'block', kinds: ['aws_access_key'] }]);
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

describe('guardrails over answers', () => {
  let mock, gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({
      guardrails: { secrets: 'block', pii: { action: 'redact', kinds: ['email'] }, answers: true },
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
  const idOf = (resp) => resp.headers.get('x-keyless-request-id');

  it('personal data in a whole answer is redacted before the caller gets it, and the record says so', async () => {
    const { data, response } = await openai().chat.completions.create(
      { model: 'gpt-4o', messages: [{ role: 'user', content: 'who do I write to? reply to sam@example.com' }] },
      { headers: { 'x-mock': 'text=write_to_jane.doe@example.com_today' } }).withResponse();
    assert.equal(data.choices[0].message.content, 'write to [REDACTED:email] today');
    assert.equal(data.usage.completion_tokens, 20, 'the rest of the answer is as the provider sent it');
    const rec = await finalRecord(gw, idOf(response));
    assert.equal(rec.status, 200);
    assert.deepEqual(rec.guardrails, [
      { stage: 'request', by: 'guardrails', action: 'redact', kinds: ['email'], spans: 1 },
      { stage: 'answer', by: 'guardrails', action: 'redact', kinds: ['email'], spans: 1 },
    ]);
    // (the x-mock header that made the mock say it is captured as sent)
    assert.ok(!rec.request_body.includes('@example.com') && !rec.response_body.includes('@example.com'),
      'neither captured body keeps the address');
    assert.match(rec.response_body, /\[REDACTED:email\]/, 'the capture is what the caller got');
  });

  it('a secret in a whole answer withholds it: 403 in the dialect, usage still counted, no capture', async () => {
    let id;
    await assert.rejects(openai().chat.completions.create(
      { model: 'gpt-4o', messages: [{ role: 'user', content: 'my key?' }] },
      { headers: { 'x-mock': `text=it_is_${AWS}` } }), (e) => {
      assert.equal(e.status, 403);
      assert.equal(e.error?.type, 'permission_error');
      assert.match(e.message, /the answer was withheld by guardrails: it contains aws_access_key/);
      id = e.headers?.get?.('x-keyless-request-id');
      return true;
    });
    const rec = await finalRecord(gw, id);
    assert.equal(rec.error_class, 'blocked');
    assert.equal(rec.upstream_status, 200);
    assert.equal(rec.output_tokens, 20, 'the provider was paid: its usage is recorded');
    assert.ok(rec.cost_nanodollars > 0);
    assert.equal(rec.response_body, null);
    assert.deepEqual(rec.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'block', kinds: ['aws_access_key'] }]);
    assert.ok(!gw.output().includes(AWS), 'the secret itself is never logged');
    // Anthropic: the same refusal in its envelope
    const claude = new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 0 });
    await assert.rejects(claude.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 50,
      messages: [{ role: 'user', content: 'key?' }] }, { headers: { 'x-mock': `text=${AWS}` } }),
    (e) => e.status === 403 && e.error?.error?.type === 'permission_error' && /aws_access_key/.test(e.message));
  });

  it('a stream is relayed, scanned once it ends (a secret split across its events is found), and recorded', async () => {
    const stream = await openai().chat.completions.create(
      { model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'key?' }] },
      { headers: { 'x-mock': `events=8;text=the_key_is_${AWS}_ok` } }).withResponse();
    let text = '', deltas = 0;
    for await (const ev of stream.data) {
      const d = ev.choices[0]?.delta?.content;
      if (d) { text += d; deltas++; }
    }
    assert.equal(text, `the key is ${AWS} ok`, 'a stream cannot be taken back: the caller has it');
    assert.ok(deltas >= 4 && !(await mock.last()).body.includes(AWS), 'the secret came in pieces');
    const rec = await finalRecord(gw, idOf(stream.response));
    assert.equal(rec.status, 200);
    assert.equal(rec.error_class, null);
    assert.deepEqual(rec.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'found', kinds: ['aws_access_key'] }]);
    assert.equal(rec.response_body, null, 'a secret the caller has had is not kept a second time');
    assert.match(gw.output(), /guardrails found aws_access_key in the streamed answer, already relayed/);
    // an Anthropic stream with only personal data: found, its capture kept redacted? no: withheld too
    const claude = new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 0 });
    const s2 = claude.messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 50,
      messages: [{ role: 'user', content: 'mail?' }] }, { headers: { 'x-mock': 'events=6;text=mail_bob@example.org_now' } });
    const msg = await s2.finalMessage();
    assert.equal(msg.content[0].text, 'mail bob@example.org now');
    const r2 = await finalRecord(gw, (await s2.withResponse()).response.headers.get('x-keyless-request-id'));
    assert.deepEqual(r2.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'found', kinds: ['email'] }]);
  });

  it('the hooks told after the answer get what the caller got: the redacted answer, or none when it was withheld', async () => {
    const hook = await startHook();
    const gw2 = await startGateway({
      guardrails: { secrets: 'block', pii: { action: 'redact', kinds: ['email'] }, answers: true },
      hooks: { audit: { url: hook.url('/audit') } },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
        { send_hooks: [{ name: 'audit', events: ['entire_request'], send: ['response_body'] }] }] } }],
      providers: providersFor(mock.url),
    });
    try {
      const client = new OpenAI({ baseURL: `${gw2.url}/v1`, apiKey: 'x', maxRetries: 0 });
      await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'who?' }] },
        { headers: { 'x-mock': 'text=ask_jane@example.com' } });
      await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'key?' }] },
        { headers: { 'x-mock': `text=${AWS}` } }), (e) => e.status === 403);
      const s = await client.chat.completions.create({ model: 'gpt-4o', stream: true,
        messages: [{ role: 'user', content: 'key?' }] }, { headers: { 'x-mock': `events=5;text=${AWS}` } });
      for await (const ev of s) void ev;
      for (let i = 0; i < 100 && hook.calls.length < 3; i++) await sleep(20);
      assert.equal(hook.calls.length, 3);
      // told in whatever order the calls arrive: only the redacted answer has a body, neither the withheld
      // answer nor the stream that held a secret
      const told = hook.calls.filter((c) => c.response_body !== undefined);
      assert.equal(told.length, 1, JSON.stringify(hook.calls));
      assert.equal(told[0].response_body.choices[0].message.content, 'ask [REDACTED:email]');
      assert.ok(!JSON.stringify(hook.calls).includes(AWS));
    } finally {
      await gw2.stop();
      await hook.close();
    }
  });

  it('a stream larger than what is kept to scan is relayed whole and recorded as unscanned', async () => {
    const size = 17 * 1024 * 1024;
    const stream = await openai().chat.completions.create(
      { model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'long' }] },
      { headers: { 'x-mock': `size=${size};events=64` } }).withResponse();
    let length = 0;
    for await (const ev of stream.data) length += (ev.choices[0]?.delta?.content || '').length;
    assert.equal(length, size);
    const rec = await finalRecord(gw, idOf(stream.response));
    assert.deepEqual(rec.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'unscanned',
      why: 'the answer is larger than the 16 MiB kept to scan it' }]);
    assert.match(gw.output(), /guardrails could not scan the streamed answer: the answer is larger than the 16 MiB/);
  });

  it('an answer with nothing in it has no notes, and a request with none of them is recorded without any', async () => {
    const { response } = await openai().chat.completions.create(
      { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }).withResponse();
    const rec = await finalRecord(gw, idOf(response));
    assert.equal(rec.guardrails, null);
    assert.match(rec.response_body, /Hello from mockllm/);
  });
});

describe('guardrails over compressed answers', () => {
  it('refused when a rule would block or redact; scanned once relayed when every rule logs', async () => {
    const answer = JSON.stringify({ id: 'c', object: 'chat.completion', model: 'gpt-4o',
      choices: [{ index: 0, message: { role: 'assistant', content: `key ${AWS}` }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 11, completion_tokens: 4, total_tokens: 15 } });
    let coding = 'gzip';
    const up = await rawProvider((req, sock) => {
      if (coding === 'sse') { // a stream the request did not ask for
        const ev = `data: ${answer}\n\n`;
        sock.end(`HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: ${ev.length}\r\n\r\n${ev}`);
        return;
      }
      if (coding === 'cut') { // half the answer, then the connection breaks
        sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${answer.length}\r\n\r\n` +
          answer.slice(0, answer.indexOf(AWS) + AWS.length + 2));
        setTimeout(() => sock.destroy(), 50);
        return;
      }
      const body = coding === 'gzip' ? gzipSync(answer) : brotliCompressSync(answer);
      sock.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n' +
        `Content-Encoding: ${coding}\r\nContent-Length: ${body.length}\r\n\r\n`), body]));
    });
    const providers = { openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'sk-x',
      models: ['gpt-4o'], compatibility: { openai_chat: true } } };
    const ask = (gw) => fetch(`${gw.url}/v1/chat/completions`, { method: 'POST',
      headers: { 'content-type': 'application/json', 'accept-encoding': 'identity' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }) });
    const hook = await startHook();
    const strict = await startGateway({ guardrails: { secrets: 'block', answers: true }, providers,
      store: { captures: 'full' }, hooks: { audit: { url: hook.url('/audit') } },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
        { send_hooks: [{ name: 'audit', events: ['entire_request'], send: ['response_body'] }] }] } }] });
    const lax = await startGateway({ guardrails: { secrets: 'log', answers: true }, providers });
    try {
      for (const c of ['gzip', 'br']) {
        coding = c;
        const r = await ask(strict);
        assert.equal(r.status, 502);
        assert.match((await r.json()).error.message,
          new RegExp(`compressed \\(${c}\\) although keyless asked for none, and the guardrails read every answer`));
        const rec = await finalRecord(strict, r.headers.get('x-keyless-request-id'));
        assert.equal(rec.response_body, null, 'what was refused unread is not captured');
      }
      // an event stream for a request that asked for none cannot be read before it is relayed either
      coding = 'sse';
      let sr = await ask(strict);
      assert.equal(sr.status, 502);
      assert.match((await sr.json()).error.message, /answered with an event stream although the request asked for none/);
      // a held answer the provider breaks off: 502, and the part that came is not captured
      coding = 'cut';
      sr = await ask(strict);
      assert.equal(sr.status, 502);
      await sr.arrayBuffer();
      const cut = await finalRecord(strict, sr.headers.get('x-keyless-request-id'));
      assert.equal(cut.upstream_status, 200);
      assert.equal(cut.response_body, null);
      assert.ok(!JSON.stringify(cut).includes(AWS));
      // nor is any of what was refused unread told to the hooks after the answer
      for (let i = 0; i < 100 && hook.calls.length < 4; i++) await sleep(20);
      assert.equal(hook.calls.length, 4);
      assert.ok(hook.calls.every((c) => c.response_body === undefined), JSON.stringify(hook.calls));
      coding = 'gzip';
      let r = await ask(lax);
      assert.equal(r.status, 200);
      await r.arrayBuffer();
      let rec = await finalRecord(lax, r.headers.get('x-keyless-request-id'));
      assert.deepEqual(rec.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'found', kinds: ['aws_access_key'] }]);
      coding = 'br';
      r = await ask(lax);
      assert.equal(r.status, 200);
      await r.arrayBuffer();
      rec = await finalRecord(lax, r.headers.get('x-keyless-request-id'));
      assert.deepEqual(rec.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'unscanned',
        why: 'its content coding cannot be read' }]);
    } finally {
      await strict.stop();
      await lax.stop();
      await hook.close();
      up.close();
    }
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
    const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
    assert.deepEqual(rec.guardrails, [
      { stage: 'request', by: 'hook', hook: 'enrich', action: 'modify' },
      { stage: 'request', by: 'guardrails', action: 'block', kinds: ['aws_access_key'] }]);
    await gw.stop();
    await mock.stop();
    await new Promise((res) => hook.close(res));
  });
});
