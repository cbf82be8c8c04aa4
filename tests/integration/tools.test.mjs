// Tool policy: tools a grant refuses are taken out of the request before the
// provider sees it, and an answer that calls a refused tool, or more tools
// than max_calls, is stopped there, in the caller's dialect, with the
// official SDKs; the record keeps the usage the provider charged for.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync, brotliCompressSync } from 'node:zlib';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import { startMock, startGateway, providersFor, assertNoKeys, finalRecord, rawProvider, startProxy, BUILD, tempDir } from './lib/harness.mjs';

const CAP = 'tailscale.com/cap/aperture';
const fn = (name) => ({ type: 'function', function: { name, parameters: { type: 'object', properties: {} } } });
const claudeTool = (name) => ({ name, input_schema: { type: 'object', properties: {} } });

describe('tool policy', () => {
  let mock, gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({
      providers: providersFor(mock.url),
      grants: [{ src: ['*'], app: { [CAP]: [
        { role: 'user' }, { models: '**' },
        { tools: { deny: ['Bash', 'mcp__prod__*'], max_calls: 2 } },
        // Claude models get a shorter list on top: both policies apply
        { models: 'anthropic/**', tools: { allow: ['Read', 'Grep', 'Bash', 'read_file', 'grep', 'web_search'] } },
      ] } }],
    });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  const openai = () => new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'x', maxRetries: 0 });
  const claude = () => new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 0 });
  const forwarded = async () => JSON.parse((await mock.last()).body);
  // records are written asynchronously: the newest blocked one that matches, once it is there
  const recordWhere = async (pred) => {
    for (let i = 0; i < 100; i++) {
      const { requests } = await (await fetch(`${gw.url}/api/requests?limit=50&error_class=blocked`)).json();
      const hit = requests.find(pred);
      if (hit) return finalRecord(gw, hit.id);
      await new Promise((res) => setTimeout(res, 30));
    }
    throw new Error('no such record');
  };

  it('refused tools are taken out of each dialect\'s request; the rest is forwarded as sent', async () => {
    await mock.clear();
    const r = await openai().chat.completions.create({
      model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }],
      tools: [fn('Bash'), fn('read_file'), fn('mcp__prod__drop_table'), { type: 'custom', custom: { name: 'Bash' } }],
      parallel_tool_calls: false,
    });
    assert.equal(r.choices[0].message.content, 'Hello from mockllm.');
    let body = await forwarded();
    assert.deepEqual(body.tools.map((t) => t.function.name), ['read_file']);
    assert.equal(body.parallel_tool_calls, false);
    assert.equal(body.messages[0].content, 'hi');
    assert.match(gw.output(), /tool policy removed Bash,mcp__prod__drop_table,Bash from the request/);
    // a name longer than any provider takes (here 32 KiB) is refused without being matched against every glob
    await openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }],
      tools: [fn('x'.repeat(32768)), fn('read_file')] });
    assert.deepEqual((await forwarded()).tools.map((t) => t.function.name), ['read_file']);

    // every tool refused: the list goes, and what only makes sense with it
    await openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }],
      tools: [fn('Bash')], tool_choice: 'auto', parallel_tool_calls: true });
    body = await forwarded();
    assert.deepEqual(Object.keys(body).sort(), ['messages', 'model']);

    // Responses: function tools by name, built-in tools by type
    await openai().responses.create({ model: 'gpt-4o', input: 'hi',
      tools: [{ type: 'function', name: 'Bash', parameters: {} }, { type: 'function', name: 'grep', parameters: {} },
        { type: 'web_search' }] });
    body = await forwarded();
    assert.deepEqual(body.tools.map((t) => t.name || t.type), ['grep', 'web_search']);

    // Anthropic: both policies apply (the allow list and the deny list)
    await claude().messages.create({ model: 'claude-sonnet-4-5', max_tokens: 50, messages: [{ role: 'user', content: 'hi' }],
      tools: [claudeTool('Bash'), claudeTool('Read'), claudeTool('Write'), { type: 'web_search_20250305', name: 'web_search' }] });
    body = await forwarded();
    assert.deepEqual(body.tools.map((t) => t.name), ['Read', 'web_search']);
    // and its token count, as Claude Code counts its context: the tools the request will carry
    const counted = await claude().messages.countTokens({ model: 'claude-sonnet-4-5',
      messages: [{ role: 'user', content: 'hi' }], tools: [claudeTool('Bash'), claudeTool('Read')] });
    assert.ok(counted.input_tokens > 0);
    body = await forwarded();
    assert.deepEqual(body.tools.map((t) => t.name), ['Read']);

    // Gemini: declarations by name, built-in tools by key; emptied objects go
    const g = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:generateContent`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }],
        tools: [{ functionDeclarations: [{ name: 'Bash' }, { name: 'grep' }] }, { functionDeclarations: [{ name: 'mcp__prod__x' }] },
          { googleSearch: {} }],
        toolConfig: { functionCallingConfig: { mode: 'ANY', allowedFunctionNames: ['Bash', 'grep'] } } }),
    });
    assert.equal(g.status, 200);
    body = await forwarded();
    assert.deepEqual(body.tools, [{ functionDeclarations: [{ name: 'grep' }] }, { googleSearch: {} }]);
    assert.deepEqual(body.toolConfig.functionCallingConfig.allowedFunctionNames, ['grep']);
  });

  it('an edited body keeps every member it does not edit byte for byte (numbers, escapes, spacing)', async () => {
    await mock.clear();
    // as an SDK would never write it, to see it kept: a seed beyond 2^53,
    // escapes, a float cJSON would print otherwise, spacing; the tool list
    // under a key written with an escape is still found and edited
    const kept = ['"seed" : 12345678901234567890', '"temperature":1.10', '"metadata":{"note":"caf\\u00e9 \\/ \\ud83d\\ude00"}',
      '"messages":[ {"role":"user","content":"hi\\n"} ]',
      // a member only Bedrock's Converse edits is anyone else's own
      '"additionalModelRequestFields":{"seed":12345678901234567891, "x" : 1.0}'];
    const raw = `{ "model":"gpt-4o", ${kept[0]}, "tool\\u0073": [{"type":"function","function":{"name":"Bash","parameters":{}}},`
      + `{"type":"function","function":{"name":"grep","parameters":{"type":"object"}}}], ${kept[1]},\n ${kept[2]}, ${kept[3]}, ${kept[4]} }`;
    const r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: raw });
    assert.equal(r.status, 200, await r.text());
    const sent = (await mock.last()).body;
    for (const k of kept) assert.ok(sent.includes(k), `${k} forwarded as written, in ${sent}`);
    assert.ok(sent.startsWith('{"model":"gpt-4o",'), sent);
    const body = JSON.parse(sent);
    assert.deepEqual(body.tools.map((t) => t.function.name), ['grep']);
    assert.ok(!sent.includes('Bash'));
    assert.ok(!sent.includes('tool\\u0073'), 'the edited member is written once, under its name');
  });

  it('a request that forces a refused tool is refused with 400 in its dialect and recorded as blocked', async () => {
    await mock.clear();
    let id;
    await assert.rejects(openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }],
      tools: [fn('Bash'), fn('grep')], tool_choice: { type: 'function', function: { name: 'Bash' } } }),
    (e) => {
      assert.equal(e.status, 400);
      assert.equal(e.error.type, 'invalid_request_error');
      assert.equal(e.code, 'blocked_by_policy');
      assert.match(e.message, /tool_choice forces the tool 'Bash', which the tool policy does not allow/);
      id = e.headers.get('x-keyless-request-id');
      return true;
    });
    await assert.rejects(claude().messages.create({ model: 'claude-sonnet-4-5', max_tokens: 50,
      messages: [{ role: 'user', content: 'hi' }], tools: [claudeTool('Write')], tool_choice: { type: 'any' } }),
    (e) => e.status === 400 && e.error?.error?.type === 'invalid_request_error' && /requires a tool call/.test(e.message));
    assert.equal((await mock.requests()).length, 0, 'nothing was forwarded');
    const rec = await finalRecord(gw, id);
    assert.equal(rec.error_class, 'blocked');
    assert.equal(rec.status, 400);
  });

  it('a stream that calls a refused tool ends with an error event before the call reaches the caller', async () => {
    const stream = await openai().chat.completions.create({ model: 'gpt-4o', stream: true,
      stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'hi' }] },
    { headers: { 'x-mock': 'tools=Bash;text=Running_it.' } });
    let text = '';
    const calls = [];
    await assert.rejects((async () => {
      for await (const ch of stream) {
        text += ch.choices[0]?.delta?.content || '';
        for (const tc of ch.choices[0]?.delta?.tool_calls || []) calls.push(tc);
      }
    })(), (e) => /the answer calls the tool 'Bash', which the tool policy does not allow/.test(e.message));
    assert.equal(text, 'Running it.', 'the text before the call was relayed');
    assert.deepEqual(calls, [], 'no part of the refused call was');
    const rec = await recordWhere((q) => q.tool_names === 'Bash' && q.stream);
    assert.equal(rec.error_class, 'blocked');
    assert.equal(rec.upstream_status, 200);
    assert.equal(rec.usage_known, 2, 'the stream ended before its usage: estimated');
    assert.equal(rec.model_served, 'gpt-4o', 'the chunks named the model that served it');

    // Anthropic: the tool_use block never starts
    const s = claude().messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 50,
      messages: [{ role: 'user', content: 'hi' }] }, { headers: { 'x-mock': 'tools=Read,Write' } });
    const blocks = [];
    s.on('contentBlock', (b) => blocks.push(b));
    await assert.rejects(s.finalMessage(), (e) => /the tool 'Write'/.test(e.message));
    assert.deepEqual(blocks.map((b) => b.name), ['Read']);
    const rec2 = await recordWhere((q) => q.tool_names === 'Read,Write');
    assert.equal(rec2.error_class, 'blocked');
    assert.ok(rec2.input_tokens > 0 && rec2.cost_nanodollars > 0, 'the usage the provider reported before the cut is recorded');

    // Responses: stopped at the item that adds the call
    const rs = openai().responses.stream({ model: 'gpt-4o', input: 'x' }, { headers: { 'x-mock': 'tools=grep,Bash' } });
    const added = [];
    rs.on('response.output_item.added', (ev) => added.push(ev.item.name));
    await assert.rejects(rs.finalResponse(), (e) => /the tool 'Bash'/.test(e.message));
    assert.deepEqual(added, ['grep']);
  });

  it('more calls than max_calls stop the answer at the call one too many; up to it the answer passes', async () => {
    // two calls: allowed whole and streamed
    const ok = await openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] },
      { headers: { 'x-mock': 'tools=read_file,grep' } });
    assert.deepEqual(ok.choices[0].message.tool_calls.map((t) => t.function.name), ['read_file', 'grep']);
    // three: the whole answer is held and refused in its place
    let id;
    await assert.rejects(openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] },
      { headers: { 'x-mock': 'tools=read_file,grep,read_file' } }),
    (e) => {
      id = e.headers.get('x-keyless-request-id');
      return e.status === 400 && /more than 2 tool calls, the most the tool policy allows/.test(e.message);
    });
    const rec = await finalRecord(gw, id);
    assert.equal(rec.status, 400);
    assert.equal(rec.upstream_status, 200);
    assert.equal(rec.tool_calls, 3);
    assert.equal(rec.error_class, 'blocked');
    assert.ok(rec.cost_nanodollars > 0);
    // a refused tool in a whole Anthropic answer
    await assert.rejects(claude().messages.create({ model: 'claude-sonnet-4-5', max_tokens: 50,
      messages: [{ role: 'user', content: 'hi' }] }, { headers: { 'x-mock': 'tools=Write' } }),
    (e) => e.status === 400 && e.error?.error?.type === 'invalid_request_error' && /the tool 'Write'/.test(e.message));
    // Gemini's JSON-array stream: cut at the element with the third call
    const g = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-mock': 'tools=grep,grep,grep;text=Go.' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
    });
    assert.equal(g.status, 200);
    let got = '';
    await assert.rejects((async () => {
      for await (const piece of g.body) got += Buffer.from(piece).toString();
    })(), 'the array is cut off, not ended as if whole');
    assert.match(got, /^\[\{"candidates"/, 'the elements before the call were relayed');
    assert.match(got, /"text":"G"/);
    assert.ok(!got.includes('functionCall'), 'no piece of the element with the calls was');
    // within the limit, the same stream passes whole
    const g2 = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-mock': 'tools=grep,grep;text=Go.' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
    });
    assert.match(await g2.text(), /"functionCall"/);
  });

  it('max_calls is per answer (each of n choices its own); a refused name spelled in two pieces with two ids is stopped', async () => {
    const call = (id, name) => ({ id, type: 'function', function: { name, arguments: '{}' } });
    const whole = (choices) => JSON.stringify({ id: 'x', object: 'chat.completion', model: 'gpt-4o',
      choices: choices.map((calls, index) => ({ index, message: { role: 'assistant', content: null, tool_calls: calls },
        finish_reason: 'tool_calls' })), usage: { prompt_tokens: 5, completion_tokens: 5, total_tokens: 10 } });
    const chunk = (delta, finish = null) => `data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', model: 'gpt-4o',
      choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
    const answers = {
      two: whole([[call('a', 'Read')], [call('b', 'Read')]]),
      one: whole([[call('a', 'Read'), call('b', 'Read')]]),
      split: chunk({ role: 'assistant', tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'Ba', arguments: '' } }] }) +
        chunk({ tool_calls: [{ index: 0, id: 'call_b', function: { name: 'sh', arguments: '{}' } }] }) +
        chunk({}, 'tool_calls') + 'data: [DONE]\n\n',
      // Ollama's parallel calls: each at index 0 with its own id
      par: chunk({ role: 'assistant', tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'Read', arguments: '{}' } }] }) +
        chunk({ tool_calls: [{ index: 0, id: 'call_b', type: 'function', function: { name: 'Grep', arguments: '{}' } }] }) +
        chunk({}, 'tool_calls') + 'data: [DONE]\n\n',
    };
    const up = await rawProvider((req, sock) => {
      const which = /x-case: (\w+)/i.exec(req)[1];
      const type = which === 'split' || which === 'par' ? 'text/event-stream' : 'application/json';
      sock.end(`HTTP/1.1 200 OK\r\nContent-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(answers[which])}\r\n` +
        `Connection: close\r\n\r\n${answers[which]}`);
    });
    const g = await startGateway({
      providers: { openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'sk-tools-n-0123456789', models: ['gpt-4o'] } },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: '**' }, { tools: { deny: ['Bash'], max_calls: 1 } }] } }],
    });
    const ask = (which, extra = {}) => fetch(`${g.url}/v1/chat/completions`, { method: 'POST',
      headers: { 'content-type': 'application/json', 'x-case': which },
      body: JSON.stringify({ model: 'gpt-4o', tools: [fn('Read'), fn('Bash')], messages: [{ role: 'user', content: 'hi' }], ...extra }) });
    try {
      let r = await ask('two', { n: 2 });
      assert.equal(r.status, 200, 'one call in each of two answers is within max_calls 1');
      assert.equal((await r.json()).choices.length, 2);
      r = await ask('one');
      assert.equal(r.status, 400, 'two calls in one answer are not');
      assert.match((await r.json()).error.message, /more than 1 tool call/);
      r = await ask('split', { stream: true });
      const text = await r.text();
      assert.match(text, /the tool 'Bash' \(its name in pieces, as an SDK joins them\), which the tool policy does not allow/);
      assert.ok(!text.includes('"sh"'), 'the second piece never reached the caller');
    } finally {
      await g.stop();
    }
    // under an allow list, parallel calls at one index are each allowed: their joined name is no tool at all
    const g2 = await startGateway({
      providers: { openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'sk-tools-n-0123456789', models: ['gpt-4o'] } },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: '**' }, { tools: { allow: ['Read', 'Grep'] } }] } }],
    });
    try {
      const r = await fetch(`${g2.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-case': 'par' },
        body: JSON.stringify({ model: 'gpt-4o', stream: true, tools: [fn('Read'), fn('Grep')], messages: [{ role: 'user', content: 'hi' }] }) });
      const text = await r.text();
      assert.match(text, /"name":"Grep"/);
      assert.doesNotMatch(text, /tool policy/);
    } finally {
      await g2.stop();
      up.close();
    }
  });

  it('a Responses stream with as many calls as max_calls ends whole (each call counted once)', async () => {
    const stream = openai().responses.stream({ model: 'gpt-4o', input: 'hi', tools: [fn('grep'), fn('read_file')].map((t) =>
      ({ type: 'function', name: t.function.name, parameters: t.function.parameters })) }, { headers: { 'x-mock': 'tools=grep,read_file' } });
    const fin = await stream.finalResponse();
    assert.deepEqual(fin.output.filter((o) => o.type === 'function_call').map((o) => o.name), ['grep', 'read_file']);
  });

  it('with guardrails over answers, the text before a refused call still reaches the caller', async () => {
    // the guardrails hold a stream's last stream_hold bytes of text until more
    // comes; a refused call ends the text, so what they held goes on
    const gw2 = await startGateway({ providers: providersFor(mock.url),
      guardrails: { secrets: 'block', answers: true },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: '**' }, { tools: { deny: ['Bash'] } }] } }] });
    try {
      const text = 'Let me look at the files first, then run the tests.';
      const chat = await fetch(`${gw2.url}/v1/chat/completions`, { method: 'POST',
        headers: { 'content-type': 'application/json', 'x-mock': `text=${text.replaceAll(' ', '_')};tools=Bash` },
        body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }] }) });
      const body = await chat.text();
      const said = [...body.matchAll(/"content":"([^"]*)"/g)].map((m) => m[1]).join('');
      assert.equal(said, text, body);
      assert.match(body, /the tool 'Bash', which the tool policy does not allow/);
      assert.ok(!body.includes('"name":"Bash"'), 'the refused call itself is not relayed');
      const g = await fetch(`${gw2.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`, { method: 'POST',
        headers: { 'content-type': 'application/json', 'x-mock': `text=${text.replaceAll(' ', '_')};tools=Bash` },
        body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }) });
      const gb = await g.text();
      assert.equal([...gb.matchAll(/"text":"([^"]*)"/g)].map((m) => m[1]).join(''), text, gb);
      assert.match(gb, /the tool 'Bash', which the tool policy does not allow/);
    } finally {
      await gw2.stop();
    }
    // not when other answers run beside the one that calls (n = 2): their text may go on
    // in what is never relayed, a secret with it, so what is held of it is dropped
    const chunk = (c) => `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', model: 'gpt-4o', choices: [c] })}\n\n`;
    const up = await rawProvider((req, sock) => sock.end('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n' +
      'Connection: close\r\n\r\n' + chunk({ index: 1, delta: { role: 'assistant', content: 'The key is AKIAQ3EGUMXZ7WPL4R' } }) +
      chunk({ index: 0, delta: { role: 'assistant', tool_calls: [{ index: 0, id: 't', type: 'function',
        function: { name: 'Bash', arguments: '' } }] } }) + 'data: [DONE]\n\n'));
    const gw3 = await startGateway({ guardrails: { secrets: 'block', answers: true },
      providers: { openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'k', models: ['gpt-4o'],
        compatibility: { openai_chat: true } } },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: '**' }, { tools: { deny: ['Bash'] } }] } }] });
    try {
      const two = await fetch(`${gw3.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', n: 2, stream: true, messages: [{ role: 'user', content: 'hi' }] }) });
      const tb = await two.text();
      assert.match(tb, /the tool 'Bash', which the tool policy does not allow/);
      assert.ok(!tb.includes('AKIAQ3'), tb);
    } finally {
      await gw3.stop();
      up.close();
    }
  });

  it('a whole answer larger than can be held is refused with 502, not relayed unchecked', { timeout: 60000 }, async () => {
    const r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST',
      headers: { 'content-type': 'application/json', 'x-mock': `size=${65 * 1024 * 1024}` },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }) });
    assert.equal(r.status, 502);
    assert.match((await r.json()).error.message, /larger than the 64 MiB keyless can check before relaying it \(tool limits, guardrails\)/);
    const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
    assert.equal(rec.error_class, 'blocked');
    assert.equal(rec.upstream_status, 200);
  });

  it('tool_calls_per_minute: calls are counted as they start; the one the limit cannot cover is stopped', async () => {
    const gw2 = await startGateway({ providers: providersFor(mock.url),
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: '**' }, { rate_limit: { tool_calls_per_minute: 3 } }] } }] });
    try {
      const client = new OpenAI({ baseURL: `${gw2.url}/v1`, apiKey: 'x', maxRetries: 0 });
      const ask = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], tools: [fn('read_file'), fn('grep')] };
      // four calls in a whole answer: more than the limit holds now; refused with when to retry, and not charged
      await assert.rejects(client.chat.completions.create(ask, { headers: { 'x-mock': 'tools=grep,grep,grep,grep' } }),
        (e) => {
          assert.equal(e.status, 429);
          assert.match(e.message, /rate limit tcpm:\S+ cannot cover this tool call any more/);
          assert.equal(e.headers.get('retry-after'), '20', 'one call short at 3 a minute');
          return true;
        });
      // two calls in a whole answer: 1 left
      const a = await client.chat.completions.create(ask, { headers: { 'x-mock': 'tools=read_file,grep' } });
      assert.equal(a.choices[0].message.tool_calls.length, 2);
      // a stream with two: the first is covered, the second is stopped before it reaches the caller
      const { data: stream, response } = await client.chat.completions.create({ ...ask, stream: true },
        { headers: { 'x-mock': 'tools=read_file,grep' } }).withResponse();
      const names = [];
      await assert.rejects((async () => {
        for await (const ch of stream)
          for (const tc of ch.choices[0]?.delta?.tool_calls || []) if (tc.function?.name) names.push(tc.function.name);
      })(), (e) => /rate limit tcpm:\S+ cannot cover this tool call any more: stopped by the gateway\. Please try again in 20s\./
        .test(e.message)); // in the words Codex reads, which otherwise retries at once into the same stop
      assert.deepEqual(names, ['read_file']);
      const rec = await finalRecord(gw2, response.headers.get('x-keyless-request-id'));
      assert.equal(rec.error_class, 'rate_limited');
      // spent: a request that offers tools is refused before it is forwarded, with when to retry
      await mock.clear();
      await assert.rejects(client.chat.completions.create(ask), (e) => {
        assert.equal(e.status, 429);
        assert.equal(e.error.code, 'rate_limit_exceeded');
        assert.ok(Number(e.headers.get('retry-after')) >= 1);
        return true;
      });
      assert.equal((await mock.requests()).length, 0);
      // one that offers none still passes
      const t = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
      assert.equal(t.choices[0].message.content, 'Hello from mockllm.');
    } finally {
      await gw2.stop();
    }
  });

  it('through libcurl (the path of https:// providers): held answers and stopped streams alike', async () => {
    const proxy = await startProxy();
    const gw2 = await startGateway({ providers: providersFor(mock.url),
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: '**' }, { tools: { deny: 'Bash', max_calls: 2 } }] } }] },
    { env: { http_proxy: proxy.url, no_proxy: '' } });
    try {
      const client = new OpenAI({ baseURL: `${gw2.url}/v1`, apiKey: 'x', maxRetries: 0 });
      // a whole answer is held, its head kept past libcurl's transfer, and relayed with it
      const { data, response } = await client.chat.completions.create({ model: 'gpt-4o',
        messages: [{ role: 'user', content: 'hi' }] }, { headers: { 'x-mock': 'tools=grep' } }).withResponse();
      assert.equal(data.choices[0].message.tool_calls[0].function.name, 'grep');
      assert.match(response.headers.get('x-request-id'), /^req_/, 'the provider\'s headers are relayed');
      assert.equal(response.headers.get('content-type'), 'application/json');
      await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] },
        { headers: { 'x-mock': 'tools=Bash' } }), (e) => e.status === 400 && /the tool 'Bash'/.test(e.message));
      const stream = await client.chat.completions.create({ model: 'gpt-4o', stream: true,
        messages: [{ role: 'user', content: 'hi' }] }, { headers: { 'x-mock': 'tools=grep,grep,grep' } });
      await assert.rejects((async () => { for await (const _ of stream) { /* drain */ } })(),
        (e) => /more than 2 tool calls/.test(e.message));
      assert.ok(proxy.seen >= 3, 'the requests went through the proxy');
    } finally {
      await gw2.stop();
      proxy.close();
    }
  });

  it('Gemini: an event line that is no SSE field (" data: …", bare JSON), which the Gemini SDKs read as data, stops the stream', async () => {
    const call = { candidates: [{ content: { role: 'model', parts: [{ functionCall: { name: 'Bash', args: { cmd: 'id' } } }] },
      finishReason: 'STOP' }] };
    const text = { candidates: [{ content: { role: 'model', parts: [{ text: 'Sure.' }] } }] };
    let odd;
    const up = await rawProvider((req, sock) => {
      const body = `data: ${JSON.stringify(text)}\r\n\r\n${odd}\r\n\r\n`;
      sock.end(`HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
    const gw2 = await startGateway({
      providers: { gemini: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'g-x', authorization: 'x-goog-api-key',
        models: ['gemini-2.5-flash'], compatibility: { gemini_generate_content: true } } },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: '**' }, { tools: { deny: 'Bash' } }] } }],
    });
    try {
      const ai = new GoogleGenAI({ apiKey: 'unused', httpOptions: { baseUrl: gw2.url } });
      for (const o of [` data: ${JSON.stringify(call)}`, JSON.stringify(call, null, 2)]) {
        odd = o;
        const calls = [];
        await assert.rejects((async () => {
          for await (const c of await ai.models.generateContentStream({ model: 'gemini-2.5-flash', contents: 'hi' }))
            calls.push(...(c.functionCalls ?? []));
        })(), (e) => e.status === 502 && /no SSE field/.test(e.message), o);
        assert.deepEqual(calls, [], 'the SDK was never given the call');
      }
    } finally {
      await gw2.stop();
      up.close();
    }
  });

  it('a compressed answer (keyless asks for none) is read inflated or refused; one framed otherwise than asked is refused', async () => {
    const answer = JSON.stringify({ id: 'c', object: 'chat.completion', model: 'gpt-4o',
      choices: [{ index: 0, message: { role: 'assistant', content: null, tool_calls: [
        { id: 't', type: 'function', function: { name: 'Bash', arguments: '{}' } }] }, finish_reason: 'tool_calls' }],
      usage: { prompt_tokens: 11, completion_tokens: 4, total_tokens: 15 } });
    let coding = 'gzip';
    const up = await rawProvider((req, sock) => {
      if (req.includes(':streamGenerateContent')) {
        // a JSON array labelled as events, or sent as an array to a request that asked for events
        const arr = JSON.stringify([{ candidates: [{ content: { role: 'model', parts: [
          { functionCall: { name: 'Bash', args: { cmd: 'rm -rf /' } } }] }, finishReason: 'STOP' }] }]);
        const type = req.includes('alt=sse') ? 'application/json' : 'text/event-stream';
        sock.end(`HTTP/1.1 200 OK\r\nContent-Type: ${type}\r\nContent-Length: ${arr.length}\r\n\r\n${arr}`);
        return;
      }
      if (coding === 'sse') {
        const ev = `data: ${answer}\n\n`;
        sock.end(`HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: ${ev.length}\r\n\r\n${ev}`);
        return;
      }
      const body = coding === 'gzip' ? gzipSync(answer) : brotliCompressSync(answer);
      sock.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n' +
        `Content-Encoding: ${coding}\r\nContent-Length: ${body.length}\r\n\r\n`), body]));
    });
    const gw2 = await startGateway({
      providers: providersFor(mock.url, { openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'sk-x',
        models: ['gpt-4o'], compatibility: { openai_chat: true } },
      gemini: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'g-x', authorization: 'x-goog-api-key',
        models: ['gemini-2.5-flash'], compatibility: { gemini_generate_content: true } } }),
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: '**' }, { tools: { deny: 'Bash' } }] } }],
    });
    try {
      // a Gemini stream framed otherwise than the request asked could be read otherwise by the caller
      for (const [query, why] of [['', /framed its stream as events although the request asked for a JSON array/],
        ['?alt=sse', /framed its stream as a JSON array although the request asked for events/],
        ['?alt=sse&%61lt=json', /framed its stream as a JSON array although the request asked for events/]]) {
        const g = await fetch(`${gw2.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent${query}`, { method: 'POST',
          headers: { 'content-type': 'application/json' }, body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }) });
        const gtext = await g.text();
        assert.equal(g.status, 502, query);
        assert.ok(!gtext.includes('Bash'), gtext);
        assert.match(JSON.parse(gtext).error.message, why);
        const grec = await finalRecord(gw2, g.headers.get('x-keyless-request-id'));
        assert.equal(grec.error_class, 'blocked');
      }

      const ask = () => fetch(`${gw2.url}/v1/chat/completions`, { method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }) });
      for (const c of ['gzip', 'br']) {
        coding = c;
        const r = await ask();
        const body = await r.text();
        assert.ok(!body.includes('"Bash"'), body);
        const rec = await finalRecord(gw2, r.headers.get('x-keyless-request-id'));
        assert.equal(rec.upstream_status, 200);
        if (c === 'gzip') { // inflated before anything reads it: the refused call is seen as in a plain answer
          assert.match(JSON.parse(body).error.message, /calls the tool 'Bash', which the tool policy does not allow/);
          assert.equal(rec.error_class, 'blocked');
        } else { // a coding keyless cannot read is not relayed at all
          assert.equal(r.status, 502);
          assert.match(JSON.parse(body).error.message, /content coding keyless cannot read \(br\)/);
          assert.equal(rec.error_class, 'upstream_error');
        }
      }
      // a whole answer framed as an event stream is read as what was asked for, and refused when it cannot be
      coding = 'sse';
      const r = await ask();
      assert.equal(r.status, 502);
      assert.match((await r.json()).error.message, /not a JSON object, which the tool limits cannot read as the caller would/);
    } finally {
      await gw2.stop();
      up.close();
    }
  });

  it('a policy that cannot be read is a configuration error; one from the tailnet policy refuses the request', async () => {
    const dir = tempDir('keyless-tools-');
    const path = join(dir, 'bad.json');
    writeFileSync(path, JSON.stringify({ providers: providersFor(mock.url), grants: [{ src: ['*'], app: { [CAP]: [
      { role: 'user' }, { models: '**' }, { tools: { denied: ['Bash'] } }] } }] }));
    let out = '';
    try {
      execFileSync(join(BUILD, 'keyless'), ['check', '--config', path], { stdio: 'pipe' });
    } catch (e) {
      out = String(e.stdout) + String(e.stderr);
    }
    assert.match(out, /"tools": unknown key "denied" \(allow, deny, max_calls\)/);

    // through tailscale serve: the caller's capabilities arrive in a header
    const gw2 = await startGateway({ identity: { serve_headers: true }, grants: [], providers: providersFor(mock.url) });
    try {
      const ask = (caps) => fetch(`${gw2.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'Tailscale-User-Login': 'erin@example.com',
          'Tailscale-App-Capabilities': JSON.stringify({ [CAP]: caps }) },
        body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], tools: [fn('Bash'), fn('grep')] }),
      });
      await mock.clear();
      let r = await ask([{ role: 'user' }, { models: '**' }, { tools: { deny: 'Bash', max: 1 } }]);
      assert.equal(r.status, 403);
      assert.match((await r.json()).error.message,
        /access denied: a capability from the tailnet policy cannot be read: "tools": unknown key "max"/);
      assert.equal((await mock.requests()).length, 0);
      r = await ask([{ role: 'user' }, { models: '**' }, { tools: { deny: 'Bash' } }]);
      assert.equal(r.status, 200);
      assert.deepEqual((await forwarded()).tools.map((t) => t.function.name), ['grep']);
    } finally {
      await gw2.stop();
    }
  });
});

describe('held answers and listen.max_body_memory', () => {
  // An answer a policy holds before relaying it is counted with the request
  // bodies: past the worker's share it is refused (its usage still read and
  // recorded), and its memory is let go on every path.
  let mock, gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({ listen: { max_body_size: '1MiB', max_body_memory: '4MiB',
      timeouts: { upstream_idle: '2s' } },
      providers: providersFor(mock.url),
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' }, { tools: { deny: ['Bash'] } }] } }] },
    { workers: 1 });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
  });
  const metric = async () => Number(/^keyless_request_body_bytes (\d+)$/m.exec(await (await fetch(`${gw.url}/metrics`)).text())?.[1]);
  const settled = async () => {
    for (let k = 0; k < 400 && await metric() !== 0; k++) await new Promise((res) => setTimeout(res, 25));
    return metric();
  };
  const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
  const ask = (mockHeader, signal) => fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', signal,
    headers: { 'content-type': 'application/json', 'x-mock': mockHeader }, body });
  // a stalled answer of 3 MiB: its head and half its body come, then nothing; held, it is counted
  const stall = async () => {
    const ac = new AbortController();
    const p = ask(`size=${3 << 20};stall=1`, ac.signal).catch((e) => e);
    for (let k = 0; k < 400 && !(await metric() > (1 << 20)); k++) await new Promise((res) => setTimeout(res, 25));
    assert.ok(await metric() > (1 << 20), 'the half answer held is counted with the bodies');
    return { ac, p };
  };

  it('an answer that does not fit beside those held is refused 503 with Retry-After, its usage recorded; under the budget they pass', async () => {
    assert.equal(await metric(), 0);
    const { ac, p } = await stall();
    try {
      const r = await ask(`size=${3 << 20};in=1234;out=567`);
      assert.equal(r.status, 503);
      assert.equal(r.headers.get('retry-after'), '1');
      const err = (await r.json()).error;
      assert.equal(err.code, 'service_unavailable', JSON.stringify(err));
      assert.match(err.message, /listen\.max_body_memory/);
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.status, 503);
      assert.equal(rec.error_class, 'unavailable');
      assert.equal(rec.upstream_status, 200);
      assert.equal(rec.input_tokens, 1234 - 40, 'the usage is read although the answer was not held (less the cached)');
      assert.equal(rec.output_tokens, 567);
      assert.ok(rec.cost_nanodollars > 0);
      assert.match(gw.output(), /request bodies and held answers take \d+ bytes, its share of listen\.max_body_memory \(4194304\): refusing more with 503/);
    } finally {
      ac.abort();
      await p;
    }
    assert.equal(await settled(), 0, 'the caller that left let its held answer go');
    // answers that fit together are all relayed whole
    const rs = await Promise.all([0, 1, 2].map(() => ask(`size=${1 << 20}`)));
    for (const r of rs) {
      assert.equal(r.status, 200);
      assert.equal((await r.json()).choices[0].message.content.length, 1 << 20);
    }
    assert.equal(await settled(), 0);
  });

  it('an answer larger than the worker\'s share is refused 502, with its record and usage', async () => {
    const r = await ask(`size=${5 << 20};in=300;out=70`);
    assert.equal(r.status, 502);
    assert.match((await r.json()).error.message,
      /the answer is larger than the \d+ bytes keyless can check before relaying it \(tool limits, guardrails; this worker's share of listen\.max_body_memory, less the request's body\)/);
    const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
    assert.equal(rec.error_class, 'blocked');
    assert.equal(rec.output_tokens, 70);
    assert.equal(await settled(), 0);
  });

  it('a held answer\'s memory is let go when the provider breaks off or goes silent', async () => {
    let r = await ask(`size=${3 << 20};reset_after=1`);
    assert.ok(r.status >= 500, String(r.status));
    assert.equal(await settled(), 0, 'after a reset');
    const { p } = await stall();
    r = await p;
    assert.equal(r.status, 504, 'timeouts.upstream_idle');
    assert.equal(await settled(), 0, 'after a provider gone silent');
    r = await ask('text=fine');
    assert.equal(r.status, 200, 'the gateway keeps serving');
  });
});

describe('an answer refused before it came', () => {
  it('a stream request answered whole as JSON is refused 502, read to its end: its record keeps the usage the provider billed', async () => {
    // a server that ignores "stream": the answer, long enough to come in many pieces, has its usage at its end
    const ans = JSON.stringify({ id: 'c1', object: 'chat.completion', model: 'gpt-4o', choices: [{ index: 0,
      message: { role: 'assistant', content: 'hi '.repeat(100000) }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 1234, completion_tokens: 567, total_tokens: 1801 } });
    const up = await rawProvider((req, sock) => sock.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n' +
      `Content-Length: ${ans.length}\r\n\r\n${ans}`));
    const gw = await startGateway({ providers: { openai: { baseurl: `http://127.0.0.1:${up.address().port}`,
      apikey: 'sk-unread-0123456789abcdef', models: ['gpt-4o'], compatibility: { openai_chat: true } } },
    grants: [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' }, { tools: { deny: ['Bash'] } }] } }] });
    try {
      const r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }] }) });
      assert.equal(r.status, 502);
      assert.match((await r.json()).error.message, /a stream request with a body labelled application\/json/);
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.error_class, 'blocked');
      assert.equal(rec.upstream_status, 200);
      assert.equal(rec.input_tokens, 1234);
      assert.equal(rec.output_tokens, 567);
      assert.ok(rec.cost_nanodollars > 0);
      assert.equal(Number(/^keyless_request_body_bytes (\d+)$/m.exec(await (await fetch(`${gw.url}/metrics`)).text())[1]), 0,
        'nothing of it held');
    } finally {
      await gw.stop();
      up.close();
    }
  });
});

describe('a held answer being written', () => {
  it('is counted for its length while a slow client reads it, not for the room it grew into: an answer beside it fits', async () => {
    // inflated (no Content-Length to size it by), a 40 MB answer grew into 64 MiB by doubling
    const mock = await startMock();
    const answer = JSON.stringify({ id: 'c', object: 'chat.completion', model: 'gpt-4o-mini', choices: [{ index: 0,
      message: { role: 'assistant', content: 'x'.repeat(40e6) }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 11, completion_tokens: 4, total_tokens: 15 } });
    const gz = gzipSync(answer);
    const up = await rawProvider((req, sock) => sock.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\n' +
      `Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: ${gz.length}\r\n\r\n`), gz])));
    const gw = await startGateway({ listen: { max_body_size: '1MiB', max_body_memory: '64MiB' },
      providers: { openai: { ...providersFor(mock.url).openai, models: ['gpt-4o'] },
        zipped: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'sk-zipped-0123456789abcdef',
          models: ['gpt-4o-mini'], compatibility: { openai_chat: true } } },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' }, { tools: { deny: ['Bash'] } }] } }] },
    { workers: 1 });
    const metric = async () => Number(/^keyless_request_body_bytes (\d+)$/m.exec(await (await fetch(`${gw.url}/metrics`)).text())?.[1]);
    const u = new URL(gw.url);
    const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] });
    let head = '';
    const slow = net.connect(Number(u.port), u.hostname, () => slow.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n' +
      `content-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`));
    slow.on('error', () => {});
    slow.once('data', (d) => {
      head = d.toString('latin1');
      slow.pause(); // and reads no more
    });
    try {
      for (let k = 0; k < 400 && !head; k++) await new Promise((res) => setTimeout(res, 25));
      assert.match(head, /^HTTP\/1\.1 200 OK\r\n[^]*Content-Length: 40000219\r\n/);
      assert.equal(await metric(), 40000219, 'the answer in the slow client\'s output, counted for what it takes');
      const r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST',
        headers: { 'content-type': 'application/json', 'x-mock': `size=${10 << 20}` },
        body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }) });
      assert.equal(r.status, 200, 'held beside it within the 64 MiB');
      assert.equal((await r.json()).choices[0].message.content.length, 10 << 20);
    } finally {
      slow.destroy();
      await gw.stop();
      up.close();
      await mock.stop();
    }
  });
});

describe('a provider\'s error held beside a full listen.max_body_memory', () => {
  it('one past the 64 MiB read to say it is a 502 that says so, not one that blames tool limits or guardrails', async () => {
    const size = 64 * 1048576 + 1;
    const up = await rawProvider((req, sock) => {
      sock.write(`HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\nContent-Length: ${size}\r\n\r\n`);
      const chunk = Buffer.alloc(1048576, 'x');
      let left = size;
      const more = () => {
        while (left > 0) {
          const n = Math.min(left, chunk.length);
          left -= n;
          if (!sock.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return sock.once('drain', more);
        }
        sock.end();
      };
      sock.on('error', () => {});
      more();
    });
    const gw = await startGateway({
      providers: { openai: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'sk-big-error-0123456789',
        models: ['gpt-4o'], compatibility: { openai_chat: true } } },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' }] } }] });
    try {
      const r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }) });
      assert.equal(r.status, 502);
      const msg = (await r.json()).error.message;
      assert.match(msg, /the provider's error is larger than the 64 MiB keyless reads to say it in the caller's API dialect/);
      assert.doesNotMatch(msg, /tool limits|guardrails/);
    } finally {
      await gw.stop();
      up.close();
    }
  });

  it('is said as the provider\'s (429, its Retry-After), not refused as the gateway\'s 503', async () => {
    // an error body not labelled JSON is held to be said in the caller's dialect: no policy holds it
    let answer;
    const answered = new Promise((res) => (answer = res));
    const up = await rawProvider(async (req, sock) => {
      await answered;
      sock.end('HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nRetry-After: 30\r\n' +
        'Transfer-Encoding: chunked\r\n\r\n11\r\nslow down please\n\r\n0\r\n\r\n');
    });
    const gw = await startGateway({ listen: { max_body_size: '1MiB', max_body_memory: '4MiB' },
      providers: { anthropic: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'sk-ant-wrapped-0123456789',
        authorization: 'x-api-key', models: ['claude-sonnet-4-5'], compatibility: { anthropic_messages: true } } },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' }] } }] }, { workers: 1 });
    const metric = async () => Number(/^keyless_request_body_bytes (\d+)$/m.exec(await (await fetch(`${gw.url}/metrics`)).text())?.[1]);
    const u = new URL(gw.url);
    const socks = [];
    try {
      const p = fetch(`${gw.url}/v1/messages`, { method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
        body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 50, messages: [{ role: 'user', content: 'hi' }] }) });
      for (let k = 0; k < 400 && !(await metric() > 0); k++) await new Promise((res) => setTimeout(res, 25));
      // uploads stopped short, their bodies counted: all of the share but 6000 bytes
      const room = 4194304 - await metric();
      for (const cl of [1048576, 1048576, 1048576, room - 3 * 1048577 - 1 - 6000]) {
        const before = await metric();
        const s = net.connect(Number(u.port), u.hostname);
        s.on('error', () => {});
        s.write(`POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: ${cl}\r\n\r\n`);
        s.write(Buffer.alloc(Math.ceil(cl * 0.9), 'a'));
        socks.push(s);
        for (let k = 0; k < 400 && await metric() < before + cl; k++) await new Promise((res) => setTimeout(res, 25));
      }
      assert.equal(await metric(), 4194304 - 6000);
      answer();
      const r = await p;
      assert.equal(r.status, 429);
      assert.equal(r.headers.get('retry-after'), '30');
      const err = (await r.json()).error;
      assert.equal(err.type, 'rate_limit_error');
      assert.match(err.message, /provider anthropic answered 429 with a text\/plain body: slow down please/);
      const rec = await finalRecord(gw, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.status, 429);
      assert.equal(rec.error_class, 'upstream_error');
    } finally {
      answer();
      for (const s of socks) s.destroy();
      await gw.stop();
      up.close();
    }
  });
});
