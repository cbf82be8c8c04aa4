// Usage conformance: for every dialect, whole and streamed, the simulator
// reports known usage (cache and reasoning tokens, tool calls) and the
// stored record must match it exactly — with the cost from the price table.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import { startMock, startGateway, providersFor, assertNoKeys, finalRecord, ROOT } from './lib/harness.mjs';

const KNOBS = 'in=1000;out=200;cache_read=300;cache_write=50;reasoning=40';
const prices = JSON.parse(readFileSync(join(ROOT, 'data/prices.json'), 'utf8')).models;

// An independent reading of the price table: longest matching key, USD per
// 1M tokens as exact integers of nanodollars, one round-up at the end.
function costNano(model, u) {
  let best = null;
  for (const k of Object.keys(prices)) {
    const ok = k.endsWith('*') ? model.startsWith(k.slice(0, -1)) : model === k;
    if (ok && (!best || k.length > best.length)) best = k;
  }
  const p = prices[best];
  const nano = (usd) => BigInt(Math.round((usd ?? 0) * 1e9));
  const inP = nano(p.input);
  const total = BigInt(u.input) * inP + BigInt(u.output) * nano(p.output) +
    BigInt(u.cache_read) * (p.cache_read !== undefined ? nano(p.cache_read) : inP) +
    BigInt(u.cache_write) * (p.cache_write !== undefined ? nano(p.cache_write) : inP);
  return Number((total + 999999n) / 1000000n);
}

describe('usage and cost in records', () => {
  let mock, gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({
      providers: providersFor(mock.url, { self: { baseurl: mock.url, apikey: 'sk-self-hosted-1', models: ['house-model-7'] },
        reasoner: { baseurl: mock.url, apikey: 'sk-reasoner-1', models: ['gpt-5'] } }),
    });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  async function record(session) {
    for (let i = 0; i < 100; i++) {
      const r = await (await fetch(`${gw.url}/api/requests?session=${session}`)).json();
      const rec = r.requests.find((x) => x.state === 'done');
      if (rec) return rec;
      await sleep(30);
    }
    assert.fail(`no record for session ${session}`);
  }

  function check(rec, model, expected) {
    assert.equal(rec.usage_known, 1, JSON.stringify(rec));
    assert.equal(rec.input_tokens, expected.input, 'input');
    assert.equal(rec.output_tokens, expected.output, 'output');
    assert.equal(rec.cache_read_tokens, expected.cache_read, 'cache read');
    assert.equal(rec.cache_write_tokens, expected.cache_write, 'cache write');
    assert.equal(rec.reasoning_tokens, expected.reasoning, 'reasoning');
    assert.equal(rec.cost_known, 1);
    assert.equal(rec.cost_nanodollars, costNano(model, expected), 'cost');
    if (expected.tools) {
      assert.equal(rec.tool_calls, expected.tools.length);
      assert.equal(rec.tool_names, expected.tools.join(','));
    }
  }

  // OpenAI: prompt_tokens include the cached ones; completion includes reasoning.
  const openaiUsage = { input: 700, output: 200, cache_read: 300, cache_write: 0, reasoning: 40 };
  // Anthropic: input excludes cache reads and writes; no reasoning field.
  const anthropicUsage = { input: 1000, output: 200, cache_read: 300, cache_write: 50, reasoning: 0 };
  // Gemini: prompt includes cached; thoughts are billed as output.
  const geminiUsage = { input: 700, output: 240, cache_read: 300, cache_write: 0, reasoning: 40 };

  for (const stream of [false, true]) {
    const kind = stream ? 'stream' : 'whole';

    it(`OpenAI chat, ${kind}, with tool calls`, async () => {
      const s = `oa-chat-${kind}`;
      const c = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: '-', maxRetries: 0 });
      const r = await c.chat.completions.create({ model: 'gpt-4o', stream, messages: [{ role: 'user', content: 'x' }] },
        { headers: { 'x-mock': `${KNOBS};tools=read_file,grep;events=5`, 'x-session-id': s } });
      if (stream) for await (const _ of r) { /* drain */ }
      check(await record(s), 'gpt-4o', { ...openaiUsage, tools: ['read_file', 'grep'] });
    });

    it(`OpenAI Responses, ${kind}`, async () => {
      const s = `oa-resp-${kind}`;
      const c = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: '-', maxRetries: 0 });
      const r = await c.responses.create({ model: 'gpt-4o', input: 'x', stream },
        { headers: { 'x-mock': `${KNOBS};tools=shell`, 'x-session-id': s } });
      if (stream) for await (const _ of r) { /* drain */ }
      check(await record(s), 'gpt-4o', { ...openaiUsage, tools: ['shell'] });
    });

    it(`Anthropic Messages, ${kind}, with tool_use`, async () => {
      const s = `an-${kind}`;
      const c = new Anthropic({ baseURL: gw.url, apiKey: '-', maxRetries: 0 });
      const opts = { headers: { 'x-mock': `${KNOBS};tools=edit`, 'x-session-id': s } };
      const body = { model: 'claude-sonnet-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'x' }] };
      if (stream) await c.messages.stream(body, opts).finalMessage();
      else await c.messages.create(body, opts);
      check(await record(s), 'claude-sonnet-4-5', { ...anthropicUsage, tools: ['edit'] });
    });

    it(`Gemini, ${kind} (alt=sse)`, async () => {
      const s = `gm-${kind}`;
      const ai = new GoogleGenAI({ apiKey: '-', httpOptions: { baseUrl: gw.url, headers: { 'x-mock': KNOBS, 'x-session-id': s } } });
      if (stream) for await (const _ of await ai.models.generateContentStream({ model: 'gemini-2.5-flash', contents: 'x' })) { /* drain */ }
      else await ai.models.generateContent({ model: 'gemini-2.5-flash', contents: 'x' });
      check(await record(s), 'gemini-2.5-flash', geminiUsage);
    });
  }

  it('Gemini stream without alt=sse (a JSON array, read as it arrives)', async () => {
    const s = 'gm-array';
    const r = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-mock': `${KNOBS};events=6;tools=lookup`, 'x-session-id': s },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'x' }] }] }),
    });
    await r.text();
    check(await record(s), 'gemini-2.5-flash', { ...geminiUsage, tools: ['lookup'] });
  });

  it('embeddings', async () => {
    const s = 'emb';
    const c = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: '-', maxRetries: 0 });
    await c.embeddings.create({ model: 'text-embedding-3-small', input: 'x' }, { headers: { 'x-mock': 'in=1000', 'x-session-id': s } });
    const rec = await record(s);
    assert.equal(rec.input_tokens, 1000);
    assert.equal(rec.cost_nanodollars, costNano('text-embedding-3-small', { input: 1000, output: 0, cache_read: 0, cache_write: 0 }));
  });

  it('embeddings batches past a megabyte are read from their skeleton: numbers, and base64 past 64 MiB', async () => {
    const send = async (s, body) => {
      const r = await fetch(`${gw.url}/v1/embeddings`, { method: 'POST',
        headers: { 'content-type': 'application/json', 'x-mock': 'in=777777', 'x-session-id': s },
        body: JSON.stringify({ model: 'text-embedding-3-small', dimensions: 4096, ...body }) });
      assert.equal(r.status, 200);
      const text = await r.text();
      const j = JSON.parse(text);
      assert.equal(j.usage.prompt_tokens, 777777);
      return { rec: await record(s), size: text.length, j };
    };
    // ~2.5 MB of vectors as numbers
    let { rec, size, j } = await send('emb-numbers', { input: Array.from({ length: 60 }, (_, i) => `n${i}`) });
    assert.ok(size > 2e6, `${size}`);
    assert.equal(j.data[59].embedding.length, 4096, 'relayed whole');
    assert.equal(rec.input_tokens, 777777);
    assert.equal(rec.cost_nanodollars, costNano('text-embedding-3-small', { input: 777777, output: 0, cache_read: 0, cache_write: 0 }));
    // ~72 MB as base64: past what keyless would keep of an answer as it came
    ({ rec, size, j } = await send('emb-base64', { encoding_format: 'base64', input: Array.from({ length: 3300 }, (_, i) => `b${i}`) }));
    assert.ok(size > 64 * 1024 * 1024, `${size}`);
    assert.equal(j.data.length, 3300, 'relayed whole');
    assert.equal(j.data[3299].embedding.length, 21848);
    assert.equal(rec.input_tokens, 777777);
    assert.equal(rec.cost_nanodollars, costNano('text-embedding-3-small', { input: 777777, output: 0, cache_read: 0, cache_write: 0 }));
  });

  it('the served model is recorded and priced', async () => {
    const s = 'served';
    const c = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: '-', maxRetries: 0 });
    await c.chat.completions.create({ model: 'gpt-4o', messages: [] }, { headers: { 'x-mock': `${KNOBS};model=gpt-4o-2024-08-06`, 'x-session-id': s } });
    const rec = await record(s);
    assert.equal(rec.model_served, 'gpt-4o-2024-08-06');
    assert.equal(rec.model_requested, 'gpt-4o');
    assert.equal(rec.cost_nanodollars, costNano('gpt-4o-2024-08-06', openaiUsage));
  });

  it('/api/usage sums costs exactly past 2^53 nanodollars ($9M), in cost_nanodollars and cost_usd', async () => {
    const s = `bigsum-${process.pid}`;
    const c = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: '-', maxRetries: 0 });
    await c.chat.completions.create({ model: 'gpt-4o', messages: [] }, { headers: { 'x-mock': 'in=1;out=1000000000000', 'x-session-id': s } });
    await c.chat.completions.create({ model: 'gpt-4o-mini', messages: [] }, { headers: { 'x-mock': 'in=1;out=0;cache_read=1', 'x-session-id': s } });
    let expected = 0n;
    for (let i = 0; i < 100; i++) {
      const r = await (await fetch(`${gw.url}/api/requests?session=${s}`)).json();
      const done = r.requests.filter((x) => x.state === 'done');
      if (done.length === 2) {
        expected = done.reduce((t, x) => t + BigInt(x.cost_nanodollars), 0n);
        break;
      }
      await sleep(30);
    }
    assert.ok(expected > 2n ** 53n, String(expected));
    const text = await (await fetch(`${gw.url}/api/usage?group_by=session&since=1h`)).text();
    const row = new RegExp(`"session":"${s}"[^}]*`).exec(text)[0];
    assert.equal(/"cost_nanodollars":(\d+)/.exec(row)[1], String(expected));
    const usd = /"cost_usd":"\$(\d+)\.(\d{9})"/.exec(row);
    assert.equal(BigInt(usd[1] + usd[2]), expected);
  });

  it('a model without a price has cost unknown, never 0', async () => {
    const s = 'unpriced';
    const c = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: '-', maxRetries: 0 });
    await c.chat.completions.create({ model: 'house-model-7', messages: [] }, { headers: { 'x-mock': KNOBS, 'x-session-id': s } });
    const rec = await record(s);
    assert.equal(rec.usage_known, 1);
    assert.equal(rec.input_tokens, 700);
    assert.equal(rec.cost_known, 0);
    assert.equal(rec.cost_nanodollars, null);
    const u = await (await fetch(`${gw.url}/api/usage?group_by=model&since=1h`)).json();
    const row = u.rows.find((x) => x.model === 'house-model-7');
    assert.equal(row.unpriced_requests, 1);
    // a dated snapshot the provider served is priced by its family's entry
    const d = 'dated';
    await c.chat.completions.create({ model: 'gpt-4o', messages: [] }, { headers: { 'x-mock': `${KNOBS};model=gpt-4o-2099-01-01`, 'x-session-id': d } });
    assert.equal((await record(d)).cost_nanodollars, costNano('gpt-4o-2099-01-01', openaiUsage));
  });

  it('a stream cut by the provider keeps the usage seen so far; a failed request has none', async () => {
    const s = 'cut';
    const r = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-mock': `${KNOBS};events=6;reset_after=3`, 'x-session-id': s },
      body: JSON.stringify({ contents: [] }),
    });
    await r.text().catch(() => {});
    const rec = await record(s);
    assert.equal(rec.error_class, 'stream_interrupted');
    assert.equal(rec.usage_known, 2, 'the running counts of a stream cut short: partial');
    assert.equal(rec.input_tokens, 700);
    assert.ok(rec.output_tokens > 0 && rec.output_tokens < 240, `${rec.output_tokens}`);
    const f = 'failed';
    await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-mock': 'status=500', 'x-session-id': f },
      body: JSON.stringify({ model: 'gpt-4o', messages: [] }),
    }).then((x) => x.text());
    const frec = await record(f);
    assert.equal(frec.status, 500);
    assert.equal(frec.usage_known, 0);
  });

  it('a caller that leaves an Anthropic stream: exact input, output from the text it carried, priced, partial', async () => {
    // message_start reports the input and 1 output token; the real count
    // comes with message_delta, which a caller pressing Esc never waits for
    const s = 'left';
    const id = await new Promise((resolve, reject) => {
      const req = http.request(`${gw.url}/v1/messages`, { method: 'POST', headers: {
        'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-session-id': s,
        'x-mock': `${KNOBS};size=900;events=30;delay_events_ms=25` } }, (res) => {
        let got = '';
        res.on('data', (d) => {
          got += d;
          if ((got.match(/event: content_block_delta/g) || []).length >= 5) {
            req.destroy();
            resolve(res.headers['x-keyless-request-id']);
          }
        });
      });
      req.on('error', () => {});
      req.end(JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 1000, stream: true,
        messages: [{ role: 'user', content: 'x' }] }));
    });
    const rec = await finalRecord(gw, id);
    assert.equal(rec.error_class, 'client_closed');
    assert.equal(rec.usage_known, 2);
    assert.deepEqual([rec.input_tokens, rec.cache_read_tokens, rec.cache_write_tokens], [1000, 300, 50]);
    // at 3 bytes a token: five deltas of ~30 bytes or more, and less than all 900 bytes
    assert.ok(rec.output_tokens >= 40 && rec.output_tokens < 300, `${rec.output_tokens}`);
    assert.equal(rec.cost_known, 1);
    assert.equal(rec.cost_nanodollars, costNano('claude-sonnet-4-5', { input: 1000, output: rec.output_tokens,
      cache_read: 300, cache_write: 50 }));
  });

  it('a caller that leaves a Gemini stream: its input, output from the text it carried, priced, partial', async () => {
    // Gemini counts the output only in a stream's last chunk: cut before it,
    // the answer was charged its input alone
    for (const alt of ['?alt=sse', '']) {
      const s = `left-gemini${alt ? '-sse' : '-array'}`;
      const id = await new Promise((resolve, reject) => {
        const req = http.request(`${gw.url}/v1beta/models/gemini-2.5-pro:streamGenerateContent${alt}`, {
          method: 'POST', headers: { 'content-type': 'application/json', 'x-session-id': s,
            'x-mock': `${KNOBS};size=900;events=30;delay_events_ms=25` } }, (res) => {
          let got = '';
          res.on('data', (d) => {
            got += d;
            if ((got.match(/"text"/g) || []).length >= 5) {
              req.destroy();
              resolve(res.headers['x-keyless-request-id']);
            }
          });
        });
        req.on('error', () => {});
        req.end(JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'x' }] }] }));
      });
      const rec = await finalRecord(gw, id);
      assert.equal(rec.error_class, 'client_closed', s);
      assert.equal(rec.usage_known, 2, s);
      assert.deepEqual([rec.input_tokens, rec.cache_read_tokens], [700, 300], s);
      // at 3 bytes a token: five parts of 30 bytes or more, and less than all 900 bytes
      assert.ok(rec.output_tokens >= 50 && rec.output_tokens < 300, `${s}: ${rec.output_tokens}`);
      assert.equal(rec.cost_known, 1);
      assert.equal(rec.cost_nanodollars, costNano('gemini-2.5-pro', { input: 700, output: rec.output_tokens,
        cache_read: 300, cache_write: 0 }), s);
    }
  });

  it('a caller that leaves an OpenAI stream: its prompt at the estimate, output from its text, or the cap when it reasons', async () => {
    // OpenAI reports usage only in a stream's last chunk; cut before it, the
    // provider still bills the prompt and what it generated
    const leave = (path, body, s, enough) => new Promise((resolve) => {
      const req = http.request(`${gw.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json',
        'x-session-id': s, 'x-mock': `${KNOBS};size=900;events=30;delay_events_ms=25` } }, (res) => {
        let got = '';
        res.on('data', (d) => {
          got += d;
          if ((got.match(enough) || []).length >= 5) {
            req.destroy();
            resolve(res.headers['x-keyless-request-id']);
          }
        });
      });
      req.on('error', () => {});
      req.end(body);
    });
    const chat = JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'x'.repeat(3000) }] });
    let rec = await finalRecord(gw, await leave('/v1/chat/completions', chat, 'left-chat', /"content":"[^"]/g));
    assert.equal(rec.error_class, 'client_closed');
    assert.equal(rec.usage_known, 2);
    assert.equal(rec.input_tokens, Math.ceil(chat.length / 3), 'the body at 3 bytes a token');
    // five deltas of ~30 bytes or more, and less than all 900 bytes
    assert.ok(rec.output_tokens >= 40 && rec.output_tokens < 300, `${rec.output_tokens}`);
    assert.equal(rec.cost_known, 1);
    assert.equal(rec.cost_nanodollars, costNano('gpt-4o', { input: rec.input_tokens, output: rec.output_tokens,
      cache_read: 0, cache_write: 0 }));
    // asked to reason: the reasoning is billed and never shown, so the cap
    const resp = JSON.stringify({ model: 'gpt-4o', stream: true, input: 'x', max_output_tokens: 700,
      reasoning: { effort: 'high' } });
    rec = await finalRecord(gw, await leave('/v1/responses', resp, 'left-responses', /output_text\.delta/g));
    assert.equal(rec.error_class, 'client_closed');
    assert.equal(rec.usage_known, 2);
    assert.deepEqual([rec.input_tokens, rec.output_tokens], [Math.ceil(resp.length / 3), 700]);
    assert.equal(rec.cost_nanodollars, costNano('gpt-4o', { input: rec.input_tokens, output: 700, cache_read: 0,
      cache_write: 0 }));
    // a model that reasons by default (the price table does not mark it "reasoning": false), asked nothing about
    // it: it reasoned unseen, so the cap too; told to reason minimally: the text it carried
    const five = (extra) => JSON.stringify({ model: 'gpt-5', stream: true, max_completion_tokens: 700, ...extra,
      messages: [{ role: 'user', content: 'x' }] });
    rec = await finalRecord(gw, await leave('/v1/chat/completions', five({}), 'left-five', /"content":"[^"]/g));
    assert.equal(rec.usage_known, 2);
    assert.equal(rec.output_tokens, 700, 'a reasoning model cut short: its cap');
    rec = await finalRecord(gw, await leave('/v1/chat/completions', five({ reasoning_effort: 'minimal' }), 'left-five-min',
      /"content":"[^"]/g));
    assert.ok(rec.output_tokens >= 40 && rec.output_tokens < 300, `${rec.output_tokens}`);
  });

  it('an Anthropic stream the provider ends with an error event is partial too, its estimate within max_tokens', async () => {
    // overloaded_error arrives inside the 200 stream, which then ends cleanly
    const c = new Anthropic({ baseURL: gw.url, apiKey: '-', maxRetries: 0 });
    for (const [s, max, knobs] of [['err-a', 1000, 'size=900;events=30'], ['err-b', 20, 'size=2000;events=30']]) {
      await assert.rejects(async () => {
        const st = await c.messages.create({ model: 'claude-sonnet-4-5', max_tokens: max, stream: true,
          messages: [{ role: 'user', content: 'x' }] },
        { headers: { 'x-mock': `${KNOBS};${knobs};stream_error=529;stream_error_at=20`, 'x-session-id': s } });
        for await (const _ of st) { /* drain */ }
      }, /Overloaded|overloaded/i);
      const rec = await record(s);
      assert.equal(rec.stop_reason, 'error');
      assert.equal(rec.usage_known, 2, s);
      assert.equal(rec.input_tokens, 1000);
      assert.ok(rec.output_tokens > 1 && rec.output_tokens <= max, `${s}: ${rec.output_tokens}`);
    }
    assert.equal((await record('err-b')).output_tokens, 20, 'the text of 18 deltas comes to more than max_tokens');
  });
});
