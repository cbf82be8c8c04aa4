// Built-in guardrails: secrets in a prompt are refused in the caller's
// dialect, personal data is redacted before the provider sees it, and the
// rules follow the configuration through a reload.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import { gzipSync, brotliCompressSync, crc32 } from 'node:zlib';
import {
  BedrockRuntimeClient, ConverseStreamCommand, InvokeModelWithResponseStreamCommand,
} from '@aws-sdk/client-bedrock-runtime';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import {
  startMock, startGateway, providersFor, assertNoKeys, finalRecord, rawProvider, startHook, KEYS,
} from './lib/harness.mjs';

const AWS = 'AKIAIOSFODNN7Q3XM9PL';
const HAIKU = 'us.anthropic.claude-haiku-4-5-20251001-v1:0';

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

  it('a request refused before the guardrails read it (a model not granted, malformed JSON) keeps no capture of its body', async () => {
    const mail = 'bob.smith@example.com';
    const ids = [];
    for (const body of [JSON.stringify({ model: 'gpt-4o-typo', messages: [{ role: 'user', content: `mail ${mail}` }] }),
      `{"model":"gpt-4o","messages":[{"role":"user","content":"mail ${mail}"}]`]) {
      const r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      assert.ok(r.status === 404 || r.status === 400, String(r.status));
      ids.push(r.headers.get('x-keyless-request-id'));
    }
    for (const id of ids) {
      const rec = await finalRecord(gw, id);
      assert.ok(rec.status === 404 || rec.status === 400, JSON.stringify(rec));
      assert.equal(rec.request_body, null);
      assert.ok(!JSON.stringify(rec).includes(mail), 'the address is in no field of the record');
    }
    // a body the guardrails read is captured as they left it
    const ok = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: `mail ${mail}` }] }) });
    assert.equal(ok.status, 200);
    const rec = await finalRecord(gw, ok.headers.get('x-keyless-request-id'));
    assert.match(rec.request_body, /mail \[REDACTED:email\]/);
  });

  it('base64 a request carries (Codex\'s encrypted reasoning, an image) is no key where a key\'s letters turn up in it', async () => {
    // by chance "_sk-" + 32 of the key's letters turns up in one of ~1,000
    // 8 KB blobs of URL-safe base64, and "AIza" + 35 in one of ~30 images
    // of 1 MiB: here they are planted
    const { randomBytes } = await import('node:crypto');
    const b64url = (n) => randomBytes(n).toString('base64url');
    const reasoning = [{ type: 'reasoning', id: 'rs_1', summary: [],
      encrypted_content: `gAAAAA${b64url(3000)}_sk-${b64url(60)}${b64url(3000)}` }];
    const r = await fetch(`${gw.url}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', input: [...reasoning, { role: 'user', content: 'go on' }] }) });
    assert.equal(r.status, 200, await r.clone().text());
    const image = `${randomBytes(3000).toString('base64')}+AIza${b64url(26)}/${randomBytes(3000).toString('base64')}`;
    const g = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:generateContent`, { method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ inlineData: { mimeType: 'image/png', data: image } },
        { text: 'what is it?' }] }] }) });
    assert.equal(g.status, 200, await g.clone().text());
    const rec = await finalRecord(gw, g.headers.get('x-keyless-request-id'));
    assert.deepEqual(rec.guardrails ?? [], [], 'no note: nothing was found');
  });

  it('the provider\'s signed thinking in the history goes back as it came (the API refuses an altered one); text beside it is redacted', async () => {
    await mock.clear();
    const thinking = { type: 'thinking', thinking: 'The user is jane.doe@example.com; answer her.', signature: 'EqQBCkgIBRABGAIiQLx' };
    const r = await new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 0 }).messages.create({
      model: 'claude-sonnet-4-5', max_tokens: 20, thinking: { type: 'enabled', budget_tokens: 1024 },
      messages: [{ role: 'user', content: 'who am I? jane.doe@example.com' },
        { role: 'assistant', content: [thinking, { type: 'text', text: 'You are jane.doe@example.com.' }] },
        { role: 'user', content: 'thanks' }] });
    assert.ok(r.content.length);
    const sent = JSON.parse((await mock.requests()).find((q) => q.path === '/v1/messages').body);
    assert.deepEqual(sent.messages[1].content[0], thinking, 'byte for byte what the provider signed');
    assert.equal(sent.messages[1].content[1].text, 'You are [REDACTED:email].');
    assert.equal(sent.messages[0].content, 'who am I? [REDACTED:email]');
  });

  it('a finding in the session id the caller sent (Claude Code\'s metadata.user_id) is not kept in the record', async () => {
    const send = (sid) => fetch(`${gw.url}/v1/messages`, { method: 'POST', headers: { 'content-type': 'application/json',
      'anthropic-version': '2023-06-01' }, body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 5,
      metadata: { user_id: JSON.stringify({ session_id: sid }) }, messages: [{ role: 'user', content: 'hi' }] }) });
    const blocked = await send(`s-${AWS}`);
    assert.equal(blocked.status, 400);
    let rec = await finalRecord(gw, blocked.headers.get('x-keyless-request-id'));
    assert.ok(!JSON.stringify(rec).includes(AWS), JSON.stringify(rec.session_id));
    assert.equal(rec.session_id, 's-[REDACTED:aws_access_key]');
    const redacted = await send('jane.doe@example.com');
    assert.equal(redacted.status, 200);
    await redacted.arrayBuffer();
    rec = await finalRecord(gw, redacted.headers.get('x-keyless-request-id'));
    assert.equal(rec.session_id, '[REDACTED:email]');
  });

  it('addresses redacted in two member names would name one member twice: refused, not sent ambiguous', async () => {
    await mock.clear();
    const r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', metadata: { 'a@example.com': '1', 'b@example.com': '2' },
        messages: [{ role: 'user', content: 'hi' }] }) });
    assert.equal(r.status, 400);
    assert.match((await r.json()).error.message,
      /request blocked by guardrails: it contains email, and redacting it would not leave a valid request \(it would name one member twice\)/);
    assert.equal((await mock.requests()).length, 0);
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

  it('a text file sent as base64 is scanned as the provider reads it: a secret in it blocked, personal data redacted', async () => {
    await mock.clear();
    const env = Buffer.from(`AWS_ACCESS_KEY_ID=${AWS}\nREGION=eu-west-1\n`).toString('base64');
    const ai = new GoogleGenAI({ apiKey: 'unused', httpOptions: { baseUrl: gw.url } });
    await assert.rejects(ai.models.generateContent({
      model: 'gemini-2.5-flash',
      contents: [{ role: 'user', parts: [{ text: 'what is in this file?' }, { inlineData: { mimeType: 'text/plain', data: env } }] }],
    }), (e) => e.status === 400 && /request blocked by guardrails: it contains aws_access_key/.test(e.message));
    assert.equal((await mock.requests()).length, 0);
    // the same file wrapped and spelled with escapes every JSON reader decodes (\u000a, \u000d\u000a, \/, \u00XX)
    const wrapped = (eol) => env.replace(/(.{16})/g, `$1${eol}`).replace(/\//g, '\\/').replace(/Q/g, '\\u0051');
    for (const eol of ['\\u000a', '\\u000d\\u000a', '\\u0009']) {
      const body = `{"contents":[{"role":"user","parts":[{"inlineData":{"mimeType":"text/plain","data":"${wrapped(eol)}"}}]}]}`;
      assert.deepEqual(Buffer.from(JSON.parse(body).contents[0].parts[0].inlineData.data, 'base64').toString(),
        `AWS_ACCESS_KEY_ID=${AWS}\nREGION=eu-west-1\n`, 'the test body decodes to the file');
      const w = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:generateContent`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body });
      assert.equal(w.status, 400, eol);
      assert.match((await w.json()).error.message, /it contains aws_access_key/);
    }
    assert.equal((await mock.requests()).length, 0);
    // an OpenAI file_data URL: the address is taken out of the file, which goes on as base64
    const csv = Buffer.from('name,mail\nJane,jane.doe@example.com\n').toString('base64');
    const r = await fetch(`${gw.url}/v1/responses`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', input: [{ role: 'user', content: [
        { type: 'input_text', text: 'count the rows' },
        { type: 'input_file', filename: 'people.csv', file_data: `data:text/csv;base64,${csv}` }] }] }),
    });
    assert.equal(r.status, 200);
    const sent = JSON.parse((await mock.last()).body).input[0].content[1].file_data;
    assert.match(sent, /^data:text\/csv;base64,/);
    assert.equal((sent.length - sent.indexOf(',') - 1) % 4, 0, 'padded, as strict decoders need');
    assert.equal(Buffer.from(sent.slice(sent.indexOf(',') + 1), 'base64').toString(), 'name,mail\nJane,[REDACTED:email]\n');
    // an image is not read as text
    await mock.clear();
    const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52]),
      Buffer.from(` ${AWS} `)]);
    const img = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:generateContent`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ inlineData: { mimeType: 'image/png', data: png.toString('base64') } }] }] }),
    });
    assert.equal(img.status, 200);
  });

  it('SIGHUP: guardrails switched off apply to the next request', async () => {
    const c = JSON.parse(readFileSync(gw.configPath, 'utf8'));
    c.guardrails = { secrets: 'off', pii: { action: 'block', kinds: ['email'] } };
    writeFileSync(gw.configPath, JSON.stringify(c));
    assert.match(await gw.reload(), /configuration reloaded/);
    await sleep(50);
    const ok = await openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: `use ${AWS}` }] });
    assert.equal(ok.choices[0].message.content, 'Hello from mockllm.');
    await assert.rejects(
      openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x@example.com' }] }),
      (e) => e.status === 400 && /it contains email/.test(e.message));
  });
});

describe('guardrails: configured patterns', () => {
  // Debian 12's Vectorscan, given the first pattern alone, aborted the
  // process on any run of 256 letters; keyless builds against Intel's
  // Hyperscan on amd64 (scripts/deps.sh, docs/design.md).
  let mock, gw, nested;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({
      guardrails: { patterns: [{ name: 'tag', regex: '[a-z]+[0-9]yb', action: 'redact' }] },
      providers: providersFor(mock.url),
    });
    nested = await startGateway({
      guardrails: { patterns: [{ name: 'nested', regex: '(a+)+c', action: 'block' }] },
      providers: providersFor(mock.url),
    });
  });
  after(async () => {
    await gw.stop();
    await nested.stop();
    await mock.stop();
  });
  const openai = (g) => new OpenAI({ baseURL: `${g.url}/v1`, apiKey: 'x', maxRetries: 0 });

  it('a long run of letters is scanned, the finding redacted, and the gateway keeps serving', async () => {
    await mock.clear();
    const long = 'q'.repeat(4000);
    await openai(gw).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: `${long} then abc1yb` }] });
    assert.equal(JSON.parse((await mock.last()).body).messages[0].content, `${long} then [REDACTED:tag]`);
    const again = await openai(gw).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(again.choices[0].message.content, 'Hello from mockllm.');
  });

  it('nested repeats cost one pass: text built to make a backtracking matcher take exponential time goes through', async () => {
    // 340 KB of 16-letter runs each broken by '!', then the 'c' a
    // backtracking engine would try every way of splitting each run to reach
    await mock.clear();
    const hard = `${'aaaaaaaaaaaaaaaa!'.repeat(20000)}c`;
    const ok = await openai(nested).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: hard }] });
    assert.equal(ok.choices[0].message.content, 'Hello from mockllm.');
    assert.equal(JSON.parse((await mock.last()).body).messages[0].content, hard);
    await assert.rejects(
      openai(nested).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'baaac' }] }),
      (e) => e.status === 400 && /request blocked by guardrails: it contains nested/.test(e.message));
  });
});

describe('guardrails over answers', () => {
  let mock, gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({
      guardrails: { secrets: 'block', pii: { action: 'redact', kinds: ['email'] }, answers: true },
      store: { captures: 'full' },
      providers: providersFor(mock.url, { bedrock: { baseurl: mock.url, apikey: KEYS.bedrock, models: [HAIKU],
        compatibility: { bedrock_model_invoke: true, bedrock_converse: true } } }),
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

  it('a secret in a whole answer withholds it: 400 in the dialect (not 403, a failed login to agents), usage still counted, no capture', async () => {
    let id;
    await assert.rejects(openai().chat.completions.create(
      { model: 'gpt-4o', messages: [{ role: 'user', content: 'my key?' }] },
      { headers: { 'x-mock': `text=it_is_${AWS}` } }), (e) => {
      assert.equal(e.status, 400);
      assert.equal(e.error?.type, 'invalid_request_error');
      assert.equal(e.code, 'blocked_by_policy');
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
    (e) => e.status === 400 && e.error?.error?.type === 'invalid_request_error' && /aws_access_key/.test(e.message));
  });

  it('a secret spelled across a stream\'s events never reaches the caller: the stream ends with an error', async () => {
    const stream = await openai().chat.completions.create(
      { model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'key?' }] },
      { headers: { 'x-mock': `events=8;text=the_key_is_${AWS}_ok` } }).withResponse();
    let text = '';
    await assert.rejects((async () => {
      for await (const ev of stream.data) text += ev.choices[0]?.delta?.content || '';
    })(), /the rest of the answer was withheld by guardrails: it contains aws_access_key/);
    assert.ok(!text.includes('AKIA') && !(await mock.last()).body.includes(AWS), `the caller got only ${text}`);
    const rec = await finalRecord(gw, idOf(stream.response));
    assert.equal(rec.error_class, 'blocked');
    assert.deepEqual(rec.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'block', kinds: ['aws_access_key'] }]);
    assert.ok(!rec.response_body.includes('AKIA') && !gw.output().includes(AWS), 'neither kept nor logged');
    assert.match(rec.response_body, /"role":"assistant"/, 'the capture holds what the caller had: the opening chunk');
  });

  it('personal data in a stream is redacted in the events that spell it; the others go on as they came', async () => {
    const filler = 'word_'.repeat(120);
    const stream = await openai().chat.completions.create(
      { model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'mail?' }] },
      { headers: { 'x-mock': `events=300;text=${filler}mail_jane.doe@example.com_${filler}end` } }).withResponse();
    let text = '', deltas = 0;
    for await (const ev of stream.data) {
      const d = ev.choices[0]?.delta?.content;
      if (d) { text += d; deltas++; }
    }
    const words = 'word '.repeat(120);
    assert.equal(text, `${words}mail [REDACTED:email] ${words}end`);
    assert.ok(deltas > 250, `still streamed: ${deltas} deltas`);
    const rec = await finalRecord(gw, idOf(stream.response));
    assert.equal(rec.status, 200);
    assert.deepEqual(rec.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'redact', kinds: ['email'], spans: 1 }]);
    assert.ok(!rec.response_body.includes('jane.doe') && rec.response_body.includes('[REDACTED:email]'),
      'the capture is what the caller got');
    // an event nothing was taken from is relayed byte for byte (the mock's own framing: "data: {...}\n\n")
    assert.match(rec.response_body, /data: \{"id":"chatcmpl-[^\n]*"delta":\{"content":"word "\}/);

    // Anthropic: the text deltas of a content block
    const claude = new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 0 });
    const s2 = claude.messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 50,
      messages: [{ role: 'user', content: 'mail?' }] }, { headers: { 'x-mock': 'events=6;text=mail_bob@example.org_now' } });
    let streamed = '';
    s2.on('text', (t) => { streamed += t; });
    const msg = await s2.finalMessage();
    assert.equal(msg.content[0].text, 'mail [REDACTED:email] now');
    assert.equal(streamed, 'mail [REDACTED:email] now');
    const r2 = await finalRecord(gw, (await s2.withResponse()).response.headers.get('x-keyless-request-id'));
    assert.deepEqual(r2.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'redact', kinds: ['email'], spans: 1 }]);
  });

  it('Responses, Gemini (SSE and JSON array) and Bedrock streams are read as they pass too', async () => {
    // Responses: the deltas, and the whole text its closing events repeat
    const rs = await openai().responses.create({ model: 'gpt-4o', input: 'mail?', stream: true },
      { headers: { 'x-mock': 'events=7;text=write_to_ann@example.net_soon' } });
    let deltas = '', done;
    for await (const ev of rs) {
      if (ev.type === 'response.output_text.delta') deltas += ev.delta;
      if (ev.type === 'response.completed') done = ev.response;
    }
    assert.equal(deltas, 'write to [REDACTED:email] soon');
    assert.equal(done.output[0].content[0].text, 'write to [REDACTED:email] soon');

    // Gemini: with alt=sse event by event; without, element by element of its JSON array
    const body = JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'mail?' }] }] });
    const headers = { 'content-type': 'application/json', 'x-mock': 'events=5;text=ask_lee@example.com_today' };
    const sse = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`,
      { method: 'POST', headers, body });
    assert.equal(sse.status, 200);
    const events = (await sse.text()).split(/\r?\n\r?\n/).filter((e) => e.startsWith('data: '))
      .map((e) => JSON.parse(e.slice(6)));
    assert.ok(events.length >= 5);
    assert.equal(events.map((e) => e.candidates?.[0]?.content?.parts?.[0]?.text || '').join(''),
      'ask [REDACTED:email] today');
    const arr = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent`,
      { method: 'POST', headers, body });
    assert.equal(arr.status, 200);
    const elements = await arr.json();
    assert.equal(elements.map((e) => e.candidates?.[0]?.content?.parts?.[0]?.text || '').join(''),
      'ask [REDACTED:email] today');
    const ra = await finalRecord(gw, arr.headers.get('x-keyless-request-id'));
    assert.deepEqual(ra.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'redact', kinds: ['email'], spans: 1 }]);

    // Bedrock: ConverseStream events and InvokeModel's chunks, re-framed (their CRCs checked by the SDK)
    const aws = new BedrockRuntimeClient({ region: 'us-east-1', endpoint: gw.url, maxAttempts: 1,
      requestHandler: new NodeHttpHandler(),
      credentials: { accessKeyId: 'AKIDEXAMPLEKEYLESS', secretAccessKey: 'not-a-secret' } });
    try {
      const cs = await aws.send(new ConverseStreamCommand({ modelId: HAIKU,
        messages: [{ role: 'user', content: [{ text: 'mail? [[mock events=9;text=reach_kim%40example.org_first]]' }] }] }));
      let text = '';
      for await (const ev of cs.stream) text += ev.contentBlockDelta?.delta?.text || '';
      assert.equal(text, 'reach [REDACTED:email] first');
      const im = await aws.send(new InvokeModelWithResponseStreamCommand({ modelId: HAIKU, contentType: 'application/json',
        body: JSON.stringify({ anthropic_version: 'bedrock-2023-05-31', max_tokens: 50,
          messages: [{ role: 'user', content: 'mail? [[mock events=9;text=reach_kim%40example.org_first]]' }] }) }));
      text = '';
      for await (const ev of im.body) {
        const e = JSON.parse(Buffer.from(ev.chunk.bytes).toString());
        if (e.type === 'content_block_delta') text += e.delta.text;
      }
      assert.equal(text, 'reach [REDACTED:email] first');
    } finally {
      aws.destroy();
    }
  });

  it('a tool call\'s streamed arguments are redacted inside their JSON strings', async () => {
    const up = await rawProvider((req, sock) => {
      const ev = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
      const args = ['{"to": "pat.', 'kim@exam', 'ple.com", "n', 'ote": "hi"}'];
      sock.end('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n' +
        ev('message_start', { message: { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-sonnet-4-5',
          content: [], stop_reason: null, usage: { input_tokens: 5, output_tokens: 1 } } }) +
        ev('content_block_start', { index: 0, content_block: { type: 'tool_use', id: 'toolu_1', name: 'send', input: {} } }) +
        args.map((a) => ev('content_block_delta', { index: 0, delta: { type: 'input_json_delta', partial_json: a } })).join('') +
        ev('content_block_stop', { index: 0 }) +
        ev('message_delta', { delta: { stop_reason: 'tool_use' }, usage: { output_tokens: 9 } }) +
        ev('message_stop', {}));
    });
    const gw2 = await startGateway({
      guardrails: { pii: { action: 'redact', kinds: ['email'] }, answers: true },
      providers: { anthropic: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'k', authorization: 'x-api-key',
        models: ['claude-sonnet-4-5'], compatibility: { anthropic_messages: true } } },
    });
    try {
      const claude = new Anthropic({ baseURL: gw2.url, apiKey: 'x', maxRetries: 0 });
      const msg = await claude.messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 50,
        messages: [{ role: 'user', content: 'send it' }] }).finalMessage();
      assert.deepEqual(msg.content[0].input, { to: '[REDACTED:email]', note: 'hi' });
    } finally {
      await gw2.stop();
      up.close();
    }
  });

  it('Gemini\'s bare JSON error that a redaction rewrites stays bare, as the Gemini SDKs read it', async () => {
    const error = { error: { code: 403, message: 'Permission denied for service account sa-bot@my-proj.iam.gserviceaccount.com',
      status: 'PERMISSION_DENIED' } };
    const up = await rawProvider((req, sock) => {
      const body = `data: ${JSON.stringify({ candidates: [{ content: { role: 'model', parts: [{ text: 'Hi ' }] } }] })}\r\n\r\n` +
        `${JSON.stringify(error, null, 2)}\n`;
      sock.end(`HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
    const gw2 = await startGateway({
      guardrails: { pii: { action: 'redact', kinds: ['email'] }, answers: true },
      providers: { gemini: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'g-x', authorization: 'x-goog-api-key',
        models: ['gemini-2.5-flash'], compatibility: { gemini_generate_content: true } } },
    });
    try {
      const r = await fetch(`${gw2.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`, { method: 'POST',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }) });
      const text = await r.text();
      const tail = text.slice(text.lastIndexOf('\r\n\r\n') + 4);
      assert.ok(tail.startsWith('{'), `bare, no SSE field: ${JSON.stringify(tail)}`);
      assert.equal(JSON.parse(tail).error.message, 'Permission denied for service account [REDACTED:email]');
      const rec = await finalRecord(gw2, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.error_class, 'upstream_error');
    } finally {
      await gw2.stop();
      up.close();
    }
  });

  it('a stream still streams: an event goes on once stream_hold bytes of text have followed it, before the end', async () => {
    let release;
    const more = new Promise((r) => { release = r; });
    const chunk = (t) => `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model: 'gpt-4o',
      choices: [{ index: 0, delta: { content: t }, finish_reason: null }] })}\n\n`;
    let waited = false;
    const up = await rawProvider(async (req, sock) => {
      sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n');
      for (let i = 0; i < 20; i++) sock.write(chunk(`part ${String(i).padStart(2, '0')} of the text; `)); // 20 × 20 bytes
      // the rest only once the caller has had the first delta (or after 5 s: the test then fails)
      waited = await Promise.race([more.then(() => true), sleep(5000).then(() => false)]);
      sock.end(chunk('and an address: lee@example.com.') + 'data: [DONE]\n\n');
    });
    const gw2 = await startGateway({
      guardrails: { pii: { action: 'redact', kinds: ['email'] }, answers: true, stream_hold: 200 },
      providers: { openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'k', models: ['gpt-4o'],
        compatibility: { openai_chat: true } } },
    });
    try {
      const stream = await new OpenAI({ baseURL: `${gw2.url}/v1`, apiKey: 'x', maxRetries: 0 }).chat.completions.create(
        { model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'go' }] });
      let text = '';
      for await (const ev of stream) {
        text += ev.choices[0]?.delta?.content || '';
        release();
      }
      assert.ok(waited, 'the first deltas reached the caller while the provider was still answering');
      assert.ok(text.startsWith('part 00 of the text; part 01') && text.endsWith('and an address: [REDACTED:email].'), text);
    } finally {
      await gw2.stop();
      up.close();
    }
  });

  it('a finding longer than stream_hold when it first matches gets through, and is recorded once the stream has ended', async () => {
    // an address matches only at its top-level domain: after a 100-byte domain name, its start has gone on
    const chunk = (t) => `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model: 'gpt-4o',
      choices: [{ index: 0, delta: { content: t }, finish_reason: null }] })}\n\n`;
    const pieces = ['mail bob', '@', ...Array(10).fill('x'.repeat(10)), '.com done'];
    const up = await rawProvider((req, sock) => sock.end('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n' +
      `Connection: close\r\n\r\n${pieces.map(chunk).join('')}data: [DONE]\n\n`));
    const gw2 = await startGateway({
      guardrails: { pii: { action: 'redact', kinds: ['email'] }, answers: true, stream_hold: 64 },
      store: { captures: 'full' },
      providers: { openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'k', models: ['gpt-4o'],
        compatibility: { openai_chat: true } } },
    });
    try {
      const stream = await new OpenAI({ baseURL: `${gw2.url}/v1`, apiKey: 'x', maxRetries: 0 }).chat.completions.create(
        { model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'mail?' }] }).withResponse();
      let text = '';
      for await (const ev of stream.data) text += ev.choices[0]?.delta?.content || '';
      assert.equal(text, `mail bob@${'x'.repeat(100)}.com done`);
      const rec = await finalRecord(gw2, stream.response.headers.get('x-keyless-request-id'));
      assert.deepEqual(rec.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'found', kinds: ['email'],
        why: 'recognised only once its first bytes had gone on: longer than guardrails.stream_hold when it first matched, or its block or choice ended and began again' }]);
      assert.equal(rec.response_body, null, 'what the caller should not have had is not kept a second time');
      // a pattern that needs more than stream_hold bytes to match raises the hold (keyless says so)
      const gw3 = await startGateway({
        guardrails: { answers: true, stream_hold: 64, patterns: [{ name: 'long_code', regex: 'CODE-[0-9]{100,}', action: 'redact' }] },
        providers: providersFor(mock.url),
      });
      try {
        assert.match(gw3.output(), /long_code matches no fewer than 105 bytes, so streamed answers are held back by 105 bytes/);
        assert.match(gw3.output(), /pattern long_code has no longest match: in a streamed answer, one recognised only once longer than stream_hold \(105\)/);
        const s3 = await new OpenAI({ baseURL: `${gw3.url}/v1`, apiKey: 'x', maxRetries: 0 }).chat.completions.create(
          { model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'code?' }] },
          { headers: { 'x-mock': `events=40;text=the_code_CODE-${'7'.repeat(140)}_done` } });
        let t3 = '';
        for await (const ev of s3) t3 += ev.choices[0]?.delta?.content || '';
        assert.equal(t3, 'the code [REDACTED:long_code] done');
      } finally {
        await gw3.stop();
      }
    } finally {
      await gw2.stop();
      up.close();
    }
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
        { headers: { 'x-mock': `text=${AWS}` } }), (e) => e.status === 400);
      const s = await client.chat.completions.create({ model: 'gpt-4o', stream: true,
        messages: [{ role: 'user', content: 'key?' }] }, { headers: { 'x-mock': `events=5;text=${AWS}` } });
      await assert.rejects((async () => { for await (const ev of s) void ev; })(), /withheld by guardrails/);
      for (let i = 0; i < 100 && hook.calls.length < 3; i++) await sleep(20);
      assert.equal(hook.calls.length, 3);
      // told in whatever order the calls arrive: the redacted answer; no body for the withheld answer; of the
      // stream cut short for its secret, what the caller had before (its opening chunk)
      const told = hook.calls.filter((c) => c.response_body?.choices?.[0]?.message?.content);
      assert.equal(told.length, 1, JSON.stringify(hook.calls));
      assert.equal(told[0].response_body.choices[0].message.content, 'ask [REDACTED:email]');
      assert.equal(hook.calls.filter((c) => c.keyless.status === 400)[0].response_body, undefined);
      assert.ok(!JSON.stringify(hook.calls).includes(AWS));
    } finally {
      await gw2.stop();
      await hook.close();
    }
  });

  it('a long stream passes the live scan whole; with only logging rules, one too long to keep is recorded as unscanned', async () => {
    const size = 17 * 1024 * 1024;
    const long = async (g) => {
      const stream = await new OpenAI({ baseURL: `${g.url}/v1`, apiKey: 'x', maxRetries: 0 }).chat.completions.create(
        { model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'long' }] },
        { headers: { 'x-mock': `size=${size};events=64` } }).withResponse();
      let length = 0;
      for await (const ev of stream.data) length += (ev.choices[0]?.delta?.content || '').length;
      assert.equal(length, size);
      return finalRecord(g, idOf(stream.response));
    };
    assert.equal((await long(gw)).guardrails, null, 'read as it passed: nothing found');
    // logging rules only: the stream is relayed untouched and read once it has ended, from a copy kept up to 16 MiB
    const gw2 = await startGateway({ guardrails: { pii: 'log', answers: true }, providers: providersFor(mock.url) });
    try {
      const rec = await long(gw2);
      assert.deepEqual(rec.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'unscanned',
        why: 'the answer is larger than the 16 MiB kept to scan it' }]);
      assert.match(gw2.output(), /guardrails could not scan the streamed answer: the answer is larger than the 16 MiB/);
      // and what it finds in a stream it has relayed is recorded as found
      const s = await new OpenAI({ baseURL: `${gw2.url}/v1`, apiKey: 'x', maxRetries: 0 }).chat.completions.create(
        { model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'mail?' }] },
        { headers: { 'x-mock': 'events=6;text=mail_bob@example.org_now' } }).withResponse();
      let text = '';
      for await (const ev of s.data) text += ev.choices[0]?.delta?.content || '';
      assert.equal(text, 'mail bob@example.org now');
      const r2 = await finalRecord(gw2, idOf(s.response));
      assert.deepEqual(r2.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'found', kinds: ['email'] }]);
    } finally {
      await gw2.stop();
    }
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
  it('gzip is inflated and read as any answer; a coding keyless cannot read is refused', async () => {
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
      // gzip is inflated before anything reads it: the secret is found as in a plain answer
      coding = 'gzip';
      const g = await ask(strict);
      const gtext = await g.text();
      assert.ok(!gtext.includes(AWS), gtext);
      assert.match(JSON.parse(gtext).error.message, /aws_access_key/);
      // a coding keyless cannot read is not relayed at all
      coding = 'br';
      const b = await ask(strict);
      assert.equal(b.status, 502);
      assert.match((await b.json()).error.message, /content coding keyless cannot read \(br\)/);
      const brec = await finalRecord(strict, b.headers.get('x-keyless-request-id'));
      assert.equal(brec.response_body, null, 'what was refused unread is not captured');
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
      // read before it is relayed, as a plain answer is
      assert.deepEqual(rec.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'log', kinds: ['aws_access_key'] }]);
      coding = 'br';
      r = await ask(lax);
      assert.equal(r.status, 502, 'refused whatever the rules: nothing could read it');
      await r.arrayBuffer();
    } finally {
      await strict.stop();
      await lax.stop();
      await hook.close();
      up.close();
    }
  });
});

describe('guardrails after hooks', () => {
  // a hook that adds a secret to the body it is sent; at /down, one that fails
  const enricher = async () => {
    const hook = http.createServer((req, res) => {
      let data = '';
      req.on('data', (d) => (data += d));
      req.on('end', () => {
        if (req.url === '/down') return res.writeHead(500).end();
        const b = JSON.parse(data).request_body;
        b.messages[0].content += ` ${AWS}`;
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ action: 'modify', request_body: b }));
      });
    });
    await new Promise((r) => hook.listen(0, '127.0.0.1', r));
    return hook;
  };

  it('a body a hook rewrote is scanned again: a secret it adds is blocked', async () => {
    const mock = await startMock();
    const hook = await enricher();
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

  it('a body a hook rewrote is not captured when a later hook fails closed before the guardrails read it', async () => {
    const mock = await startMock();
    const hook = await enricher();
    const u = `http://127.0.0.1:${hook.address().port}`;
    const gw = await startGateway({
      guardrails: { secrets: 'block' },
      store: { captures: 'full' },
      hooks: { enrich: { url: `${u}/enrich`, preference: 10 }, check: { url: `${u}/down`, fail_policy: 'fail_closed' } },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
        { send_hooks: [{ name: 'enrich', events: ['pre_request'], send: ['request_body'] },
          { name: 'check', events: ['pre_request'], send: [] }] }] } }],
      providers: providersFor(mock.url),
    });
    try {
      const r = await fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
      });
      assert.equal(r.status, 503);
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.deepEqual(rec.guardrails.map((n) => n.action), ['modify', 'failed_closed']);
      assert.equal(rec.request_body, null, 'the secret the first hook added, which the guardrails never read, is not kept');
    } finally {
      await gw.stop();
      await mock.stop();
      await new Promise((res) => hook.close(res));
    }
  });
});

// What a provider may send that a scan reading a stream as it passes must not
// be fooled by (or stall on).
describe('guardrails over streams, edge cases', () => {
  const SSE = 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n';
  const chat = (delta) => `data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":${delta},"finish_reason":null}]}\n\n`;
  const aev = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
  const start = aev('message_start', { message: { id: 'm', type: 'message', role: 'assistant', model: 'claude-sonnet-4-5',
    content: [], stop_reason: null, usage: { input_tokens: 5, output_tokens: 1 } } });
  const gateway = (port, guardrails, provider = 'openai', extra = {}) => startGateway({
    guardrails: { answers: true, ...guardrails }, ...extra,
    providers: provider === 'openai'
      ? { openai: { baseurl: `http://127.0.0.1:${port}`, apikey: 'k', models: ['gpt-4o'],
        compatibility: { openai_chat: true, openai_responses: true } } }
      : provider === 'gemini'
      ? { gemini: { baseurl: `http://127.0.0.1:${port}`, apikey: 'k', authorization: 'x-goog-api-key',
        models: ['gemini-2.5-flash'], compatibility: { gemini_generate_content: true } } }
      : { anthropic: { baseurl: `http://127.0.0.1:${port}`, apikey: 'k', authorization: 'x-api-key',
        models: ['claude-sonnet-4-5'], compatibility: { anthropic_messages: true } } },
  });
  const post = (gw, path, body, signal) => fetch(`${gw.url}${path}`, { method: 'POST', signal,
    headers: { 'content-type': 'application/json', 'x-api-key': 'x', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify(body) });
  const chatBody = { model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'x' }] };
  const claudeBody = { model: 'claude-sonnet-4-5', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'x' }] };
  const chatText = (raw) => raw.split('\n\n').map((e) => /^data: (\{.*\})$/m.exec(e)).filter(Boolean)
    .map((m) => JSON.parse(m[1]).choices?.[0]?.delta?.content || '').join('');
  const withProvider = async (respond, guardrails, provider, fn, extra) => {
    const up = await rawProvider(respond);
    const gw = await gateway(up.address().port, guardrails, provider, extra);
    try {
      await fn(gw);
    } finally {
      await gw.stop();
      up.close();
    }
  };

  it('a block that has ended lets its last text go: the next block streams before the answer ends', async () => {
    let release;
    const more = new Promise((r) => { release = r; });
    let waited = false;
    await withProvider(async (req, sock) => {
      sock.write(SSE + start + aev('content_block_start', { index: 0, content_block: { type: 'thinking', thinking: '' } }) +
        aev('content_block_delta', { index: 0, delta: { type: 'thinking_delta', thinking: 'let me think. ' } }) +
        aev('content_block_stop', { index: 0 }) + aev('content_block_start', { index: 1, content_block: { type: 'text', text: '' } }));
      for (let i = 0; i < 40; i++)
        sock.write(aev('content_block_delta', { index: 1, delta: { type: 'text_delta', text: `part ${String(i).padStart(2, '0')} of the text; ` } }));
      waited = await Promise.race([more.then(() => true), sleep(5000).then(() => false)]);
      sock.end(aev('content_block_stop', { index: 1 }) + aev('message_stop', {}));
    }, { pii: { action: 'redact', kinds: ['email'] } }, 'anthropic', async (gw) => {
      const r = await post(gw, '/v1/messages', claudeBody);
      let all = '';
      for await (const c of r.body) {
        all += Buffer.from(c).toString();
        if (all.includes('text_delta')) release();
      }
      assert.ok(waited, 'the text reached the caller while the provider was still answering');
      assert.match(all, /part 39 of the text/);
    });
  });

  it('an event read otherwise than the caller would (a repeated member) stops the stream', async () => {
    await withProvider((req, sock) => sock.end(SSE + chat('{"content":"a","content":"AKIAIOSF"}') +
      chat('{"content":"b","content":"ODNN7Q3XM9PL"}') + 'data: [DONE]\n\n'), { secrets: 'block' }, 'openai', async (gw) => {
      const r = await post(gw, '/v1/chat/completions', chatBody);
      const raw = await r.text();
      assert.ok(!raw.includes('AKIAIOSF'), raw);
      assert.match(raw, /guardrails could not check the answer: an event with a repeated member/);
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.error_class, 'unavailable');
      assert.deepEqual(rec.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'unscanned',
        why: 'an event with a repeated member' }]);
    });
  });

  it('a JWT, recognised only once its signature begins, is held back from its "eyJ" until it is whole', async () => {
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const jwt = `${b64({ alg: 'RS256', typ: 'JWT' })}.${b64({ iss: 'https://issuer.example.com', sub: 'x'.repeat(400) })}.Qm9n3Xy7Lk2Vp8Rt4Wz1Hd6Fj0Sa5Gc9Nb3Me7Tq`;
    const pieces = ['the token is '];
    for (let i = 0; i < jwt.length; i += 6) pieces.push(jwt.slice(i, i + 6));
    pieces.push(' ok');
    await withProvider((req, sock) => sock.end(SSE + pieces.map((p) => chat(JSON.stringify({ content: p }))).join('') +
      'data: [DONE]\n\n'), { secrets: 'redact' }, 'openai', async (gw) => {
      assert.ok(jwt.length > 500);
      const text = chatText(await (await post(gw, '/v1/chat/completions', chatBody)).text());
      assert.equal(text, 'the token is [REDACTED:jwt] ok');
    });
  });

  it('a private key in a tool call\'s arguments, a delta ending inside an escape, is still redacted', async () => {
    const key = '-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\nBKcwggSjAgEAAoIBAQC7\\n-----END PRIVATE KEY-----';
    const json = `{"note": "hi", "key": "${key}", "n": 1}`;
    const cut = json.indexOf('\\n') + 1; // between the backslash and the n
    await withProvider((req, sock) => sock.end(SSE + start +
      aev('content_block_start', { index: 0, content_block: { type: 'tool_use', id: 't', name: 'send', input: {} } }) +
      [json.slice(0, cut), json.slice(cut)].map((p) => aev('content_block_delta', { index: 0,
        delta: { type: 'input_json_delta', partial_json: p } })).join('') +
      aev('content_block_stop', { index: 0 }) + aev('message_stop', {})),
    { secrets: { action: 'redact', kinds: ['private_key'] } }, 'anthropic', async (gw) => {
      const claude = new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 0 });
      const msg = await claude.messages.stream(claudeBody).finalMessage();
      assert.deepEqual(msg.content[0].input, { note: 'hi', key: '[REDACTED:private_key]', n: 1 });
    });
  });

  it('a caller that leaves after a redaction: the record still says what was redacted', async () => {
    await withProvider(async (req, sock) => {
      sock.write(SSE + chat('{"content":"mail bob@example.com now "}'));
      for (let i = 0; i < 30; i++) sock.write(chat(JSON.stringify({ content: `filler text number ${i} ` })));
      // the stream ends only once the caller has left (the gateway then
      // drops this connection), however slowly the caller reads
      await Promise.race([new Promise((res) => sock.once('close', res)), sleep(20000)]);
      if (!sock.destroyed) sock.end('data: [DONE]\n\n');
    }, { pii: { action: 'redact', kinds: ['email'] } }, 'openai', async (gw) => {
      const ac = new AbortController();
      const r = await post(gw, '/v1/chat/completions', chatBody, ac.signal);
      let all = '';
      try {
        for await (const c of r.body) {
          all += Buffer.from(c).toString();
          if (all.includes('REDACTED')) ac.abort();
        }
      } catch { /* aborted */ }
      assert.ok(all.includes('[REDACTED:email]') && !all.includes('bob@'));
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.error_class, 'client_closed');
      assert.deepEqual(rec.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'redact', kinds: ['email'], spans: 1 }]);
    });
  });

  it('a finish_reason of "" on every chunk (some servers send it) ends nothing: the hold stands', async () => {
    const chunk = (t) => `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model: 'gpt-4o',
      choices: [{ index: 0, delta: { content: t }, finish_reason: '' }] })}\n\n`;
    await withProvider((req, sock) => sock.end(SSE + chunk('my key is AKIAIOSF') + chunk('ODNN7Q3XM9PL and more') +
      'data: [DONE]\n\n'), { secrets: 'redact' }, 'openai', async (gw) => {
      assert.equal(chatText(await (await post(gw, '/v1/chat/completions', chatBody)).text()),
        'my key is [REDACTED:aws_access_key] and more');
    });
  });

  it('a finding written with \\u escapes is found as the provider would read it: in a request and in a whole answer', async () => {
    // Python's json.dumps escapes every non-ASCII letter; a caller may escape any
    const escaped = (text) => `{"model":"gpt-4o","messages":[{"role":"user","content":"${text}"}]}`;
    const send = (gw, body) => fetch(`${gw.url}/v1/chat/completions`, { method: 'POST',
      headers: { 'content-type': 'application/json' }, body });
    let got = [];
    await withProvider((req, sock) => {
      got.push(req.slice(req.indexOf('\r\n\r\n') + 4));
      const body = '{"id":"c","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant",' +
        '"content":"it is \\u0041KIAIOSF\\u004fDNN7Q3XM9PL"},"finish_reason":"stop"}],' +
        '"usage":{"prompt_tokens":5,"completion_tokens":5,"total_tokens":10}}';
      sock.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    }, { secrets: 'block', pii: { action: 'redact', kinds: ['email'] },
      patterns: [{ name: 'codename', regex: 'Projekt Möwe', action: 'block' }] }, 'openai', async (gw) => {
      for (const text of ['my key \\u0041KIAIOSFODNN7Q3XM9PL', 'the Projekt M\\u00f6we plan']) {
        const r = await send(gw, escaped(text));
        assert.equal(r.status, 400, text);
        assert.match((await r.json()).error.message, /request blocked by guardrails: it contains (aws_access_key|codename)/);
      }
      assert.equal(got.length, 0, 'neither reached the provider');
      // redacted: the escapes that spell the address go upstream as [REDACTED:email]
      const r = await send(gw, escaped('write to bob\\u0040example.com, \\u00e9t\\u00e9'));
      assert.equal(r.status, 400, 'the answer holds an escaped key: withheld');
      assert.match((await r.json()).error.message, /withheld by guardrails: it contains aws_access_key/);
      assert.equal(got.length, 1);
      assert.equal(JSON.parse(got[0]).messages[0].content, 'write to [REDACTED:email], été');
    });
  });

  it('a finding escaped inside a tool call\'s arguments (a JSON text in a JSON string) is found as the SDK reads them', async () => {
    // the arguments' own escapes arrive with their backslash escaped; every SDK parses the arguments
    const args = (o) => JSON.stringify(o).replace('AKIA', '\\u0041KIA').replace('@', '\\u0040');
    const key = { path: 'AKIAIOSFODNN7Q3XM9PL' };
    assert.match(args(key), /\\u0041KIA/);
    const call = (a) => chat(JSON.stringify({ tool_calls: [{ index: 0, id: 'c1', type: 'function',
      function: { name: 'f', arguments: a } }] }));
    // streamed chat: blocked
    await withProvider((req, sock) => sock.end(SSE + call(args(key).slice(0, 12)) + call(args(key).slice(12)) +
      'data: [DONE]\n\n'), { secrets: 'block' }, 'openai', async (gw) => {
      const raw = await (await post(gw, '/v1/chat/completions', chatBody)).text();
      assert.ok(!raw.includes('KIAIOSFODNN7'), raw);
      assert.match(raw, /blocked by guardrails|withheld by guardrails/);
    });
    // a whole chat answer: withheld
    await withProvider((req, sock) => {
      const body = JSON.stringify({ id: 'c', object: 'chat.completion', model: 'gpt-4o', choices: [{ index: 0,
        message: { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function',
          function: { name: 'f', arguments: args(key) } }] }, finish_reason: 'tool_calls' }],
      usage: { prompt_tokens: 5, completion_tokens: 5, total_tokens: 10 } });
      sock.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    }, { secrets: 'block' }, 'openai', async (gw) => {
      const r = await post(gw, '/v1/chat/completions', { ...chatBody, stream: false });
      assert.equal(r.status, 400);
      assert.match((await r.json()).error.message, /withheld by guardrails: it contains aws_access_key/);
      // and in a request's history, refused before the provider sees it
      const q = await post(gw, '/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: 'x' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: args(key) } }] },
        { role: 'tool', tool_call_id: 'c1', content: 'ok' }] });
      assert.equal(q.status, 400);
      assert.match((await q.json()).error.message, /request blocked by guardrails: it contains aws_access_key/);
    });
    // Anthropic's input_json_delta: the address redacted where the SDK reads it
    const to = { to: 'jane@example.com', n: 1 };
    await withProvider((req, sock) => sock.end(SSE + start +
      aev('content_block_start', { index: 0, content_block: { type: 'tool_use', id: 't', name: 'send', input: {} } }) +
      aev('content_block_delta', { index: 0, delta: { type: 'input_json_delta', partial_json: args(to) } }) +
      aev('content_block_stop', { index: 0 }) + aev('message_stop', {})),
    { pii: { action: 'redact', kinds: ['email'] } }, 'anthropic', async (gw) => {
      const claude = new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 0 });
      const msg = await claude.messages.stream(claudeBody).finalMessage();
      assert.deepEqual(msg.content[0].input, { to: '[REDACTED:email]', n: 1 });
    });
    // a Gemini event that carries text beside the call: the rest of it is read decoded too
    const gev = (o) => `data: ${JSON.stringify(o)}\r\n\r\n`;
    await withProvider((req, sock) => sock.end(SSE + gev({ candidates: [{ content: { role: 'model', parts: [{ text: 'hi' },
      { functionCall: { name: 'f', args: { k: 'AKIAIOSFODNN7Q3XM9PL' } } }] }, index: 0 }] }).replace('AKIA', '\\u0041KIA') +
      gev({ candidates: [{ content: { role: 'model', parts: [{ text: '.' }] }, finishReason: 'STOP', index: 0 }],
        usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 2 } })),
    { secrets: 'block' }, 'gemini', async (gw) => {
      const raw = await (await post(gw, '/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse',
        { contents: [{ role: 'user', parts: [{ text: 'x' }] }] })).text();
      assert.ok(!raw.includes('KIAIOSFODNN7'), raw);
      assert.match(raw, /guardrails/);
    });
  });

  it('a stream request answered with a body labelled application/json is refused: the SDKs read it as events', async () => {
    // split across two events, the key would pass a scan of the body read whole
    const body = chat('{"content":"your key is AKIAIOSF"}') + chat('{"content":"ODNN7Q3XM9PL"}') + 'data: [DONE]\n\n';
    await withProvider((req, sock) => sock.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${body.length}\r\n\r\n${body}`), { secrets: 'block' }, 'openai', async (gw) => {
      const r = await post(gw, '/v1/chat/completions', chatBody);
      assert.equal(r.status, 502);
      const text = await r.text();
      assert.ok(!text.includes('AKIAIOSF'), text);
      assert.match(JSON.parse(text).error.message, /a stream request with a body labelled application\/json, which the caller may read as events/);
    });
  });

  it('a choice that ends and begins again lets its held text go: a finding whose start went on is recorded as found', async () => {
    // each chunk says finish_reason "stop", so each is let go as it comes; the key is spelled four bytes at a time
    const stop = (text) => `data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,` +
      `"delta":{"content":${JSON.stringify(text)}},"finish_reason":"stop"}]}\n\n`;
    const pieces = ['key: ', ...AWS.match(/.{1,4}/g), ' ok'];
    await withProvider((req, sock) => sock.end(SSE + pieces.map(stop).join('') + 'data: [DONE]\n\n'), { secrets: 'redact' },
      'openai', async (gw) => {
        const r = await post(gw, '/v1/chat/completions', chatBody);
        const raw = await r.text();
        assert.ok(!raw.includes(AWS.slice(-4)), 'the rest of it was redacted');
        const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
        assert.ok(rec.guardrails.some((g) => g.action === 'found' && g.kinds.includes('aws_access_key')), JSON.stringify(rec.guardrails));
      });
  });

  it('a surrogate pair a provider split across two events passes as the SDK joins it', async () => {
    // each event alone holds half a pair: cJSON refused it, JavaScript's reader takes it
    // (an event rewritten for a redaction carries U+FFFD for its half)
    const body = chat('{"content":"smile \\ud83d"}') + chat('{"content":"\\ude00 and"}') +
      chat('{"content":" mail a@example.com"}') + 'data: [DONE]\n\n';
    await withProvider((req, sock) => sock.end(SSE + body), { pii: { action: 'redact', kinds: ['email'] } }, 'openai',
      async (gw) => {
        const r = await post(gw, '/v1/chat/completions', chatBody);
        const raw = await r.text();
        assert.equal(chatText(raw), 'smile \u{1F600} and mail [REDACTED:email]');
        const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
        assert.ok(!JSON.stringify(rec.guardrails || []).includes('unscanned'), JSON.stringify(rec.guardrails));
      });
  });

  it('a finding split across parts an SDK joins (Gemini\'s text parts) withholds the whole answer', async () => {
    const whole = (o) => { const b = JSON.stringify(o); return `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${b.length}\r\n\r\n${b}`; };
    const answer = (parts) => whole({ candidates: [{ content: { role: 'model', parts }, finishReason: 'STOP', index: 0 }],
      usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 5 } });
    let parts;
    await withProvider((req, sock) => sock.end(answer(parts)), { secrets: 'block' }, 'gemini', async (gw) => {
      const ask = () => post(gw, '/v1beta/models/gemini-2.5-flash:generateContent', { contents: [{ role: 'user', parts: [{ text: 'x' }] }] });
      parts = [{ text: 'your key is AKIAIOSFOD' }, { text: 'NN7Q3XM9PL' }];
      let r = await ask();
      assert.equal(r.status, 400);
      assert.match((await r.json()).error.message, /withheld by guardrails: it contains aws_access_key, split across parts the caller's SDK joins/);
      // parts that spell nothing together pass
      parts = [{ text: 'your key is AKIA' }, { text: ' not here' }];
      r = await ask();
      assert.equal(r.status, 200);
    });
    // a repeated member: the checks would read the first content, the SDK reads the last, split: withheld
    const raw = '{"candidates":[{"content":{"parts":[{"text":"hello"}]},"content":{"parts":[{"text":"key AKIAIOSFOD"},' +
      '{"text":"NN7Q3XM9PL ok"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":5}}';
    await withProvider((req, sock) => sock.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${raw.length}\r\n\r\n${raw}`),
      { secrets: 'block' }, 'gemini', async (gw) => {
        const r = await post(gw, '/v1beta/models/gemini-2.5-flash:generateContent', { contents: [{ role: 'user', parts: [{ text: 'x' }] }] });
        const text = await r.text();
        assert.equal(r.status, 503, text);
        assert.ok(!text.includes('AKIAIOSFOD'));
        assert.match(JSON.parse(text).error.message, /a repeated member or a \\u0000 escape/);
      });
  });

  it('a Responses stream\'s text is one channel across its parts and messages, as the SDK joins output_text', async () => {
    const rev = (o) => `event: ${o.type}\ndata: ${JSON.stringify(o)}\n\n`;
    const delta = (item, out, part, text) => rev({ type: 'response.output_text.delta', item_id: item, output_index: out,
      content_index: part, delta: text });
    await withProvider((req, sock) => sock.end(SSE + rev({ type: 'response.created', response: { id: 'r', status: 'in_progress' } }) +
      delta('m1', 0, 0, 'your key is AKIAIOSF') + rev({ type: 'response.output_text.done', item_id: 'm1', output_index: 0,
        content_index: 0, text: 'your key is AKIAIOSF' }) + delta('m1', 0, 1, 'ODNN7Q3XM9PL, done') +
      rev({ type: 'response.completed', response: { id: 'r', status: 'completed',
        usage: { input_tokens: 3, output_tokens: 9, total_tokens: 12 } } })),
    { secrets: 'block' }, 'openai', async (gw) => {
      const raw = await (await post(gw, '/v1/responses', { model: 'gpt-4o', input: 'x', stream: true })).text();
      assert.ok(!raw.includes('ODNN7Q3XM9PL'), raw);
      assert.match(raw, /guardrails/);
    });
    // with redact: each part's closing events repeat its half alone, which is no finding there, and the SDK
    // joins them again; such a finding cannot be redacted, so the stream is stopped
    const parts = [['m1', 0, 0, 'my key is AKIAIOSFOD'], ['m1', 0, 1, 'NN7Q3XM9PL ok']];
    const part = (type, [item, out, idx, text]) => rev({ type, item_id: item, output_index: out, content_index: idx,
      ...(type.endsWith('.done') ? { text } : { delta: text }) });
    const message = { id: 'm1', type: 'message', role: 'assistant', status: 'completed',
      content: parts.map((x) => ({ type: 'output_text', text: x[3], annotations: [] })) };
    await withProvider((req, sock) => sock.end(SSE + rev({ type: 'response.created', response: { id: 'r', status: 'in_progress' } }) +
      part('response.output_text.delta', parts[0]) + part('response.output_text.done', parts[0]) +
      part('response.output_text.delta', parts[1]) + part('response.output_text.done', parts[1]) +
      rev({ type: 'response.output_item.done', output_index: 0, item: message }) +
      rev({ type: 'response.completed', response: { id: 'r', status: 'completed', output: [message],
        usage: { input_tokens: 3, output_tokens: 9, total_tokens: 12 } } })),
    { secrets: 'redact' }, 'openai', async (gw) => {
      const r = await post(gw, '/v1/responses', { model: 'gpt-4o', input: 'x', stream: true });
      const raw = await r.text();
      assert.ok(!raw.includes('AKIAIOSFOD') && !raw.includes('NN7Q3XM9PL'), raw);
      assert.match(raw, /withheld by guardrails: it contains aws_access_key/);
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.error_class, 'blocked');
      assert.match(JSON.stringify(rec.guardrails), /split across parts the caller's SDK joins/);
    });
  });

  it('a legacy function_call\'s arguments, a custom tool\'s input and an audio transcript are joined across chunks too', async () => {
    const halves = [
      ['{"function_call":{"name":"Read","arguments":"{\\"k\\":\\"AKIAIOSF"}}', '{"function_call":{"arguments":"ODNN7Q3XM9PL\\"}"}}'],
      ['{"tool_calls":[{"index":0,"id":"c1","type":"custom","custom":{"name":"shell","input":"echo AKIAIOSF"}}]}',
        '{"tool_calls":[{"index":0,"custom":{"input":"ODNN7Q3XM9PL"}}]}'],
      ['{"audio":{"id":"a1","transcript":"the key AKIAIOSF"}}', '{"audio":{"transcript":"ODNN7Q3XM9PL"}}'],
    ];
    for (const [a, b] of halves) {
      await withProvider((req, sock) => sock.end(SSE + chat(a) + chat(b) + 'data: [DONE]\n\n'), { secrets: 'block' },
        'openai', async (gw) => {
          const r = await post(gw, '/v1/chat/completions', chatBody);
          const raw = await r.text();
          assert.ok(!raw.includes('AKIAIOSF') && !raw.includes('ODNN7Q3XM9PL'), `${a}: ${raw}`);
          assert.match(raw, /withheld by guardrails: it contains aws_access_key/);
          const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
          assert.equal(rec.error_class, 'blocked', a);
        });
    }
  });

  it('an event with bytes after its JSON value is not read as the value alone', async () => {
    await withProvider((req, sock) => sock.end(SSE + chat('{"content":"hi"}').replace(/\n\n$/, ` "${AWS}"\n\n`) +
      'data: [DONE]\n\n'), { secrets: 'block' }, 'openai', async (gw) => {
      const raw = await (await post(gw, '/v1/chat/completions', chatBody)).text();
      assert.ok(!raw.includes(AWS));
      assert.match(raw, /guardrails could not check the answer: an event that is not JSON/);
    });
  });

  it('a stream broken off after a finding longer than the hold went on: recorded as found, capture dropped', async () => {
    const chunk = (t) => `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model: 'gpt-4o',
      choices: [{ index: 0, delta: { content: t }, finish_reason: null }] })}\n\n`;
    const pieces = ['mail bob', '@', ...Array(10).fill('x'.repeat(10)), '.com done ', ...Array(20).fill('filler text. ')];
    const body = pieces.map(chunk).join('');
    await withProvider(async (req, sock) => { // chunked, so that a close before the last chunk breaks it off
      sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n' +
        `${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n`);
      await sleep(300);
      sock.destroy();
    }, { pii: { action: 'redact', kinds: ['email'] }, stream_hold: 64 }, 'openai', async (gw) => {
      const r = await post(gw, '/v1/chat/completions', chatBody);
      const raw = await r.text();
      assert.ok(chatText(raw).includes('bob@xxxx'), 'the caller had the address');
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.error_class, 'stream_interrupted');
      assert.deepEqual(rec.guardrails?.map((n) => n.action), ['found']);
      assert.equal(rec.response_body, null);
    }, { store: { captures: 'full' } });
  });

  it('a request for token log probabilities is refused when answers are redacted: each token would spell a finding again', async () => {
    const toks = ['The key is ', 'AKIA', 'IOSF', 'ODNN', '7Q3X', 'M9PL', '.'];
    const lp = (t) => ({ token: t, logprob: -0.1, bytes: [...Buffer.from(t)], top_logprobs: [] });
    const body = JSON.stringify({ id: 'c1', object: 'chat.completion', created: 1, model: 'gpt-4o',
      choices: [{ index: 0, message: { role: 'assistant', content: toks.join('') }, finish_reason: 'stop',
        logprobs: { content: toks.map(lp), refusal: null } }],
      usage: { prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 } });
    const respond = (req, sock) => sock.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    await withProvider(respond, { secrets: 'redact' }, 'openai', async (gw) => {
      const oa = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'x', maxRetries: 0 });
      const ask = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] };
      await assert.rejects(oa.chat.completions.create({ ...ask, logprobs: true }),
        (e) => e.status === 400 && /token log probabilities \(logprobs\)/.test(e.message));
      await assert.rejects(oa.chat.completions.create({ ...ask, stream: true, logprobs: true, top_logprobs: 2 }),
        (e) => e.status === 400);
      await assert.rejects(oa.responses.create({ model: 'gpt-4o', input: 'hi', include: ['message.output_text.logprobs'] }),
        (e) => e.status === 400 && /\(include\)/.test(e.message));
      // not asked: answered, the text redacted (the provider's logprobs are not asked for, only shown here)
      const r = await oa.chat.completions.create({ ...ask, logprobs: false });
      assert.equal(r.choices[0].message.content, 'The key is [REDACTED:aws_access_key].');
    });
    await withProvider(respond, { secrets: 'redact' }, 'gemini', async (gw) => {
      const g = await post(gw, '/v1beta/models/gemini-2.5-flash:generateContent',
        { contents: [{ parts: [{ text: 'hi' }] }], generation_config: { response_logprobs: true, logprobs: 3 } });
      assert.equal(g.status, 400);
      assert.match((await g.json()).error.message, /\(response_logprobs\)/);
    });
    // a rule that only blocks withholds the whole answer, its logprobs with it: they may be asked for
    await withProvider(respond, { secrets: 'block' }, 'openai', async (gw) => {
      const oa = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'x', maxRetries: 0 });
      await assert.rejects(oa.chat.completions.create({ model: 'gpt-4o', logprobs: true, messages: [{ role: 'user', content: 'hi' }] }),
        (e) => e.status === 400 && /answer was withheld by guardrails/.test(e.message));
    });
  });

  it('OpenRouter\'s reasoning_details, the reasoning text again in pieces, is redacted as the reasoning is', async () => {
    const toks = ['The key is ', 'AKIA', 'IOSF', 'ODNN', '7Q3X', 'M9PL', '.'];
    await withProvider((req, sock) => sock.end(SSE + toks.map((t) => chat(JSON.stringify({ role: 'assistant', content: '',
      reasoning: t, reasoning_details: [{ type: 'reasoning.text', text: t, format: 'unknown', index: 0 }] }))).join('') +
      chat('{"content":"ok"}').replace('"finish_reason":null', '"finish_reason":"stop"') + 'data: [DONE]\n\n'),
    { secrets: 'redact' }, 'openai', async (gw) => {
      const raw = await (await post(gw, '/v1/chat/completions', chatBody)).text();
      let reasoning = '', details = '';
      for (const m of raw.matchAll(/^data: (\{.*\})$/gm)) {
        const d = JSON.parse(m[1]).choices[0].delta;
        reasoning += d.reasoning || '';
        details += (d.reasoning_details || []).map((x) => x.text).join('');
      }
      assert.equal(reasoning, 'The key is [REDACTED:aws_access_key].');
      assert.equal(details, 'The key is [REDACTED:aws_access_key].');
    });
  });

  it('Vertex\'s streamed function call arguments (partialArgs) are joined by jsonPath and redacted', async () => {
    const gev = (parts, fin) => `data: ${JSON.stringify({ candidates: [{ content: { role: 'model', parts }, index: 0,
      ...(fin ? { finishReason: 'STOP' } : {}) }] })}\r\n\r\n`;
    await withProvider((req, sock) => sock.end(SSE + gev([{ functionCall: { name: 'save', willContinue: true } }]) +
      ['AKIA', 'IOSF', 'ODNN', '7Q3X', 'M9PL'].map((v) => gev([{ functionCall: { willContinue: true,
        partialArgs: [{ jsonPath: '$.key', stringValue: v, willContinue: true }] } }])).join('') +
      gev([{ functionCall: {} }], true)), { secrets: 'redact' }, 'gemini', async (gw) => {
      const r = await post(gw, '/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse',
        { contents: [{ role: 'user', parts: [{ text: 'x' }] }] });
      let joined = '';
      for (const m of (await r.text()).matchAll(/^data: (\{.*\})$/gm))
        for (const pt of JSON.parse(m[1]).candidates[0].content.parts)
          joined += (pt.functionCall?.partialArgs || []).map((a) => a.stringValue).join('');
      assert.equal(joined, '[REDACTED:aws_access_key]');
    });
  });

  it('a configured pattern that ends inside a UTF-8 character takes the whole character: request, answer and stream stay UTF-8', async () => {
    const utf8 = new TextDecoder('utf-8', { fatal: true });
    const seen = [];
    const text = 'the secret=ñññññññññ ok'; // \S{1,11}: 5.5 of the 2-byte letters
    const whole = JSON.stringify({ id: 'c1', object: 'chat.completion', created: 1, model: 'gpt-4o',
      choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 } });
    const respond = (req, sock) => {
      const raw = Buffer.from(req, 'latin1');
      seen.push(raw.subarray(raw.indexOf('\r\n\r\n') + 4));
      if (!req.includes('"stream":true'))
        return sock.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n' +
          `Content-Length: ${Buffer.byteLength(whole)}\r\nConnection: close\r\n\r\n${whole}`);
      sock.end(SSE + chat(JSON.stringify({ content: text.slice(0, 14) })) + chat(JSON.stringify({ content: text.slice(14) })) +
        chat('{}').replace('"finish_reason":null', '"finish_reason":"stop"') + 'data: [DONE]\n\n');
    };
    await withProvider(respond, { patterns: [{ name: 'pw', regex: 'secret=\\S{1,11}', action: 'redact' }] }, 'openai', async (gw) => {
      const r = await post(gw, '/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: text }] });
      const answer = utf8.decode(Buffer.from(await r.arrayBuffer()));
      assert.equal(JSON.parse(answer).choices[0].message.content, 'the [REDACTED:pw]ñññ ok');
      assert.match(utf8.decode(seen[0]), /"the \[REDACTED:pw\]ñññ ok"/, 'the provider is sent UTF-8');
      const st = await post(gw, '/v1/chat/completions', { ...chatBody, messages: [{ role: 'user', content: 'x' }] });
      assert.equal(chatText(utf8.decode(Buffer.from(await st.arrayBuffer()))), 'the [REDACTED:pw]ñññ ok');
    });
  });

  it('an answer of 300 text blocks streams through (an ended block\'s channel does not count against the limit)', async () => {
    let blocks = '';
    for (let i = 0; i < 300; i++)
      blocks += aev('content_block_start', { index: i, content_block: { type: 'text', text: '' } }) +
        aev('content_block_delta', { index: i, delta: { type: 'text_delta', text: `sentence ${i}. ` } }) +
        aev('content_block_stop', { index: i });
    await withProvider((req, sock) => sock.end(SSE + start + blocks + aev('message_stop', {})),
      { secrets: 'block' }, 'anthropic', async (gw) => {
        const raw = await (await post(gw, '/v1/messages', claudeBody)).text();
        assert.ok(raw.includes('sentence 299.') && !raw.includes('"type":"error"'), raw.slice(-300));
      });
  });

  it('a Gemini array element is charged its tool calls only once relayed (a blocked call is not)', async () => {
    const el = (parts) => JSON.stringify({ candidates: [{ content: { role: 'model', parts }, index: 0 }] });
    const hex = (t) => `${Buffer.byteLength(t).toString(16)}\r\n${t}\r\n`;
    let n = 0;
    const up = await rawProvider(async (req, sock) => {
      sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n');
      if (++n > 1) return sock.end(hex(`[${el([{ text: 'fine' }])}]`) + '0\r\n\r\n');
      // one read: two text elements, then a call whose arguments a rule blocks
      sock.write(hex(`[${el([{ text: 'a'.repeat(300) }])},\r\n${el([{ text: 'b'.repeat(300) }])},\r\n` +
        el([{ functionCall: { name: 'send', args: { k: AWS } } }])));
      await sleep(200);
      sock.end(hex(']') + '0\r\n\r\n');
    });
    const gw = await startGateway({
      guardrails: { answers: true, secrets: 'block' },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
        { rate_limit: { tool_calls_per_minute: 1 } }] } }],
      providers: { gemini: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'k', authorization: 'x-goog-api-key',
        models: ['gemini-2.5-flash'], compatibility: { gemini_generate_content: true } } },
    });
    try {
      const body = { contents: [{ role: 'user', parts: [{ text: 'x' }] }],
        tools: [{ functionDeclarations: [{ name: 'send', parameters: { type: 'object', properties: { k: { type: 'string' } } } }] }] };
      const first = await post(gw, '/v1beta/models/gemini-2.5-flash:streamGenerateContent', body);
      let raw = '';
      try {
        for await (const c of first.body) raw += Buffer.from(c).toString();
      } catch { /* cut off: an array has no error element */ }
      assert.ok(raw.includes('aaaa') && !raw.includes(AWS));
      const second = await post(gw, '/v1beta/models/gemini-2.5-flash:streamGenerateContent', body);
      assert.equal(second.status, 200, 'the call that never reached the caller was not charged');
      await second.text();
    } finally {
      await gw.stop();
      up.close();
    }
  });

  it('an event stream chunk read otherwise than the AWS SDK would (two "bytes") stops the stream', async () => {
    const hdr = (name, value) => {
      const n = Buffer.from(name), v = Buffer.from(value);
      const b = Buffer.alloc(4 + n.length + v.length);
      b[0] = n.length; n.copy(b, 1); b[1 + n.length] = 7; b.writeUInt16BE(v.length, 2 + n.length); v.copy(b, 4 + n.length);
      return b;
    };
    const frame = (payload) => {
      const headers = Buffer.concat([hdr(':event-type', 'chunk'), hdr(':content-type', 'application/json'),
        hdr(':message-type', 'event')]);
      const p = Buffer.from(payload);
      const pre = Buffer.alloc(8);
      pre.writeUInt32BE(12 + headers.length + p.length + 4, 0);
      pre.writeUInt32BE(headers.length, 4);
      const pc = Buffer.alloc(4);
      pc.writeUInt32BE(crc32(pre) >>> 0, 0);
      const body = Buffer.concat([pre, pc, headers, p]);
      const mc = Buffer.alloc(4);
      mc.writeUInt32BE(crc32(body) >>> 0, 0);
      return Buffer.concat([body, mc]);
    };
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64');
    const delta = (t) => b64({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: t } });
    const up = await rawProvider((req, sock) => {
      sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/vnd.amazon.eventstream\r\nConnection: close\r\n\r\n');
      sock.end(Buffer.concat([frame(`{"bytes":"${delta('the key AKIAIOSF')}"}`),
        frame(`{"bytes":"${delta('x')}","bytes":"${delta('ODNN7Q3XM9PL')}"}`)]));
    });
    const gw = await startGateway({
      guardrails: { answers: true, secrets: 'block' },
      providers: { bedrock: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'ABSK-x', models: [HAIKU],
        compatibility: { bedrock_model_invoke: true } } },
    });
    try {
      const r = await post(gw, `/model/${encodeURIComponent(HAIKU)}/invoke-with-response-stream`,
        { anthropic_version: 'bedrock-2023-05-31', max_tokens: 50, messages: [{ role: 'user', content: 'x' }] });
      const raw = Buffer.from(await r.arrayBuffer()).toString('latin1');
      assert.ok(!raw.includes(delta('ODNN7Q3XM9PL')) && !raw.includes(delta('the key AKIAIOSF')), 'neither half went on');
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.deepEqual(rec.guardrails, [{ stage: 'answer', by: 'guardrails', action: 'unscanned',
        why: 'an event stream chunk without one base64 "bytes"' }]);
    } finally {
      await gw.stop();
      up.close();
    }
  });

  it('an InvokeModel stream from a model other than Claude cannot be followed: refused (502)', async () => {
    const LLAMA = 'meta.llama3-70b-instruct-v1:0';
    const up = await rawProvider((req, sock) => sock.end('HTTP/1.1 200 OK\r\nContent-Type: application/vnd.amazon.eventstream\r\n' +
      'Connection: close\r\n\r\n'));
    const gw = await startGateway({
      guardrails: { answers: true, secrets: 'block' },
      providers: { bedrock: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'ABSK-x', models: [LLAMA],
        compatibility: { bedrock_model_invoke: true } } },
    });
    try {
      const r = await post(gw, `/model/${encodeURIComponent(LLAMA)}/invoke-with-response-stream`, { prompt: 'x' });
      assert.equal(r.status, 502);
      assert.match((await r.json()).message, /read a streamed answer as it passes only from Claude on InvokeModel/);
    } finally {
      await gw.stop();
      up.close();
    }
  });
});

describe('guardrails over answers within listen.max_body_memory', () => {
  // A whole answer held to be scanned is counted with the request bodies: one
  // redacted is relayed from the buffer counted for it (or a copy when the
  // redaction made it longer), one that could never be held is refused with
  // its usage recorded, and the count goes back to 0.
  let mock, gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({ listen: { max_body_size: '1MiB', max_body_memory: '4MiB' },
      guardrails: { pii: { action: 'redact', kinds: ['email'] }, answers: true }, providers: providersFor(mock.url),
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } }] }, { workers: 1 });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
  });
  const metric = async () => Number(/^keyless_request_body_bytes (\d+)$/m.exec(await (await fetch(`${gw.url}/metrics`)).text())?.[1]);
  const settled = async () => {
    for (let k = 0; k < 400 && await metric() !== 0; k++) await sleep(25);
    return metric();
  };
  const ask = (mockHeader) => fetch(`${gw.url}/v1/chat/completions`, { method: 'POST',
    headers: { 'content-type': 'application/json', 'x-mock': mockHeader },
    body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }) });

  it('redacted answers are relayed whole, shorter or longer than they came; one too large for the share is 502 with its usage', async () => {
    let r = await ask('text=write_to_jane.doe@example.com_today');
    assert.equal((await r.json()).choices[0].message.content, 'write to [REDACTED:email] today');
    r = await ask(`text=mail_a@b.io_now_;size=${1 << 19}`);
    const text = (await r.json()).choices[0].message.content;
    assert.ok(text.length > (1 << 19) && !text.includes('a@b.io'), 'redacted longer than it came');
    assert.match(text, /^mail \[REDACTED:email\] now mail /);
    assert.equal(await settled(), 0);
    r = await ask(`size=${5 << 20};in=300;out=70`);
    assert.equal(r.status, 502);
    assert.match((await r.json()).error.message, /the answer is larger than the \d+ bytes keyless can check before relaying it/);
    const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
    assert.equal(rec.error_class, 'blocked');
    assert.equal(rec.output_tokens, 70);
    assert.equal(await settled(), 0);
  });
});

describe('a held answer a redaction made longer stays counted until its client reads it', () => {
  let mock, gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({ listen: { max_body_size: '1MiB', max_body_memory: '64MiB' },
      guardrails: { pii: { action: 'redact', kinds: ['email'] }, answers: true }, providers: providersFor(mock.url),
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }, { models: '**' }] } }] }, { workers: 1 });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
  });
  const metric = async () => Number(/^keyless_request_body_bytes (\d+)$/m.exec(await (await fetch(`${gw.url}/metrics`)).text())?.[1]);
  // a client that reads the head and then nothing: the answer waits in its output
  const unread = (mockHeader) => new Promise((resolve, reject) => {
    const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    const u = new URL(gw.url);
    const s = net.connect(Number(u.port), u.hostname, () => s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n` +
      `Content-Type: application/json\r\nx-mock: ${mockHeader}\r\nContent-Length: ${body.length}\r\n\r\n${body}`));
    s.once('data', (d) => {
      s.pause();
      resolve({ s, id: /x-keyless-request-id: (\S+)/i.exec(d.toString('latin1'))?.[1] });
    });
    s.on('error', reject);
  });

  // one address in 1,000 bytes: fewer findings than the scan keeps track of
  const pad = '_'.padEnd(1000, 'x');
  for (const [what, text] of [['shorter', `reach_q@verylongsubdomain.example.com${pad}_`], ['longer', `mail_a@b.io${pad}_`]]) {
    it(`redacted ${what} than it came`, async () => {
      const { s, id } = await unread(`text=${text};size=${16 << 20}`);
      try {
        const rec = await finalRecord(gw, id);
        assert.equal(rec.status, 200, rec.error_message);
        // the kernel's socket buffers take a few MB of it at most
        assert.ok(await metric() > (8 << 20), `the unread answer is counted: ${await metric()}`);
      } finally {
        s.destroy();
      }
      for (let k = 0; k < 400 && await metric() !== 0; k++) await sleep(25);
      assert.equal(await metric(), 0);
    });
  }
});
