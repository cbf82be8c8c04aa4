// The official openai SDK through keyless to the simulator.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { gzipSync, deflateRawSync, brotliCompressSync } from 'node:zlib';
import OpenAI from 'openai';
import { startMock, startGateway, providersFor, KEYS, assertNoKeys, headerMap, rawProvider, rawRequest } from './lib/harness.mjs';

describe('OpenAI dialect', () => {
  let mock, gw, client;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({ providers: providersFor(mock.url) });
    client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'caller-placeholder-key', maxRetries: 0 });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  it('chat completion: provider key injected, caller key removed', async () => {
    await mock.clear();
    const r = await client.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'hi' }],
    }, { headers: { 'x-mock': 'text=Hi_there' } });
    assert.equal(r.choices[0].message.content, 'Hi there');
    assert.equal(r.model, 'gpt-4o');
    const seen = await mock.last();
    const h = headerMap(seen.headers);
    assert.equal(h['authorization'], `Bearer ${KEYS.openai}`);
    assert.ok(!JSON.stringify(seen).includes('caller-placeholder-key'));
    assert.equal(seen.path, '/v1/chat/completions');
    assert.equal(JSON.parse(seen.body).model, 'gpt-4o');
  });

  it('a compressed request body (Codex sends zstd, others gzip) is read plain, and goes on plain', async () => {
    const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'compressed hello '.repeat(200) }] });
    const zstd = (b) => {
      const r = spawnSync('zstd', ['-3', '-c'], { input: b });
      assert.equal(r.status, 0, String(r.stderr));
      return r.stdout;
    };
    const send = (coding, data, headers = {}) => fetch(`${gw.url}/v1/chat/completions`, { method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': coding, ...headers }, body: data });
    for (const [coding, data] of [['zstd', zstd(Buffer.from(body))], ['gzip', gzipSync(body)],
      ['deflate', deflateRawSync(body)]]) {
      await mock.clear();
      const r = await send(coding, data);
      assert.equal(r.status, 200, `${coding}: ${await r.clone().text()}`);
      await r.json();
      const seen = await mock.last();
      assert.equal(seen.body, body, `${coding}: the provider gets the plain body`);
      assert.equal(headerMap(seen.headers)['content-encoding'], undefined, coding);
    }
    // not what it says it is, a coding keyless does not read, more than the limit once inflated
    let r = await send('zstd', Buffer.from(body));
    assert.equal(r.status, 400);
    assert.match((await r.json()).error.message, /does not decompress as its Content-Encoding \(zstd\) says/);
    r = await send('br', brotliCompressSync(body));
    assert.equal(r.status, 400);
    assert.match((await r.json()).error.message, /Content-Encoding is br: keyless reads gzip, deflate and zstd/);
    r = await send('gzip', gzipSync(Buffer.alloc(64 * 1024 * 1024, 32)));
    assert.equal(r.status, 413);
    assert.match((await r.json()).error.message, /larger than the limit of \d+ bytes once decompressed/);
  });

  it('a header dropped by name is dropped under its \'_\' twin too, which CGI, WSGI and PHP servers read as it', async () => {
    await mock.clear();
    const r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json',
      X_Api_Key: 'sk-caller-underscored', authorization: 'Bearer caller-placeholder-key', Tailscale_User_Login: 'boss@example.com',
      openai_organization: 'org-caller', session_id: 'codex-session-1', 'x-custom-trace': 't-1' },
    body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }) });
    assert.equal(r.status, 200);
    await r.arrayBuffer();
    const h = headerMap((await mock.last()).headers);
    for (const name of ['x_api_key', 'tailscale_user_login', 'openai_organization'])
      assert.equal(h[name], undefined, name);
    assert.equal(h.authorization, `Bearer ${KEYS.openai}`);
    // any other name with '_' goes: Codex CLI's session_id routes its prompt cache
    assert.equal(h.session_id, 'codex-session-1');
    assert.equal(h['x-custom-trace'], 't-1');
  });

  it('headers the caller\'s Connection lists are hop-by-hop and go no further, however many it lists', async () => {
    const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    // thousands of listed names beside thousands of headers: each header is looked up once, in sorted names
    const many = Array.from({ length: 3000 }, (_, i) => `x-h${i}`);
    for (const [connection, extra] of [['keep-alive, X-Hop-A ,x-hop-b', ''],
      [`${many.filter((_, i) => i % 2 === 0).join(',')}, X-Hop-A ,x-hop-b`, many.map((n) => `${n}: v\r\n`).join('')]]) {
      await mock.clear();
      const text = await rawRequest(gw.url, `POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n` +
        `Connection: ${connection}\r\nConnection: X-Hop-C, close\r\nX-Hop-A: 1\r\nx-HOP-b: 2\r\nX-Hop-C: 3\r\n` +
        `X-Hop-Kept: 4\r\n${extra}Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      { timeoutMs: 3000 });
      assert.match(text, /^HTTP\/1\.1 200 /, text.slice(0, 300));
      const h = headerMap((await mock.last()).headers);
      for (const name of ['x-hop-a', 'x-hop-b', 'x-hop-c', 'connection'])
        assert.equal(h[name], undefined, name);
      assert.equal(h['x-hop-kept'], '4');
      if (extra) {
        assert.equal(h['x-h0'], undefined);
        assert.equal(h['x-h2998'], undefined);
        assert.equal(h['x-h1'], 'v');
        assert.equal(h['x-h2999'], 'v');
      }
    }
  });

  it('auth_mode "none": add_headers may set the credential a server behind a proxy wants, masked if echoed', async () => {
    // a self-hosted model behind basic auth: the gateway sends no key of its own
    const basic = `Basic ${Buffer.from('gateway:s3cret-proxy-pass').toString('base64')}`;
    let seen;
    const up = await rawProvider((req, sock) => {
      seen = req;
      const auth = /\r\nauthorization: (.*)\r\n/i.exec(req)?.[1] ?? '';
      const b = JSON.stringify({ error: { message: `proxy saw ${auth} and ${auth.split(' ')[1]}` } });
      sock.end(`HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\n\r\n${b}`);
    });
    const g = await startGateway({ providers: { self: { baseurl: `http://127.0.0.1:${up.address().port}`, auth_mode: 'none',
      add_headers: [`Authorization: ${basic}`], models: ['llama-3'] } } });
    try {
      const r = await fetch(`${g.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json',
        authorization: 'Bearer caller-placeholder-key' }, body: JSON.stringify({ model: 'llama-3', messages: [] }) });
      assert.equal(r.status, 401);
      const text = await r.text();
      assert.equal((seen.match(/\r\nauthorization: /gi) || []).length, 1, seen);
      assert.match(seen, new RegExp(`\r\nauthorization: ${basic.replace('+', '\\+')}\r\n`, 'i'));
      assert.ok(!text.includes(basic.split(' ')[1]), `the proxy's credential reached the caller: ${text}`);
      assert.ok(!g.output().includes(basic.split(' ')[1]));
    } finally {
      await g.stop();
      up.close();
    }
    // with any other auth_mode it is a configuration error (tests/unit/test_config.c)
  });

  it('the caller\'s organization and project headers never go beside the gateway\'s key', async () => {
    // the SDK sends them from OPENAI_ORG_ID / OPENAI_PROJECT_ID: with the
    // gateway's key, OpenAI refuses a mismatch or bills the caller's choice
    await mock.clear();
    const c = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'x', organization: 'org-caller', project: 'proj_caller', maxRetries: 0 });
    await c.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    const h = headerMap((await mock.last()).headers);
    assert.equal(h['authorization'], `Bearer ${KEYS.openai}`);
    assert.equal(h['openai-organization'], undefined);
    assert.equal(h['openai-project'], undefined);
    // a provider that forwards the caller's own key forwards them with it
    const pass = await startGateway({ providers: { p: { baseurl: mock.url, auth_mode: 'passthrough', models: ['gpt-4o'] } } });
    await mock.clear();
    await new OpenAI({ baseURL: `${pass.url}/v1`, apiKey: 'sk-callers-own', organization: 'org-caller', maxRetries: 0 })
      .chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    const ph = headerMap((await mock.last()).headers);
    assert.equal(ph['authorization'], 'Bearer sk-callers-own');
    assert.equal(ph['openai-organization'], 'org-caller');
    await pass.stop();
    // ... but not when the caller sent no key and the gateway's goes instead
    const fallback = await startGateway({ providers: { p: { baseurl: mock.url, auth_mode: 'passthrough', apikey: KEYS.openai,
      models: ['gpt-4o'] } } });
    await mock.clear();
    await fetch(`${fallback.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json',
      'openai-organization': 'org-caller' }, body: JSON.stringify({ model: 'gpt-4o', messages: [] }) });
    const fh = headerMap((await mock.last()).headers);
    assert.equal(fh['authorization'], `Bearer ${KEYS.openai}`);
    assert.equal(fh['openai-organization'], undefined);
    await fallback.stop();
  });

  it('qualified model name is rewritten to the bare id upstream', async () => {
    await mock.clear();
    const r = await client.chat.completions.create({
      model: 'openai/gpt-4o-mini',
      messages: [{ role: 'user', content: 'hi' }],
    });
    assert.equal(r.choices[0].message.content, 'Hello from mockllm.');
    const seen = await mock.last();
    assert.equal(JSON.parse(seen.body).model, 'gpt-4o-mini');
  });

  it('streaming chat arrives event by event; usage asked for upstream but not shown', async () => {
    await mock.clear();
    const stream = await client.chat.completions.create({
      model: 'gpt-4o',
      stream: true,
      messages: [{ role: 'user', content: 'hi' }],
    }, { headers: { 'x-mock': 'events=5' } });
    let text = '';
    let chunks = 0;
    let sawUsage = false;
    for await (const c of stream) {
      chunks++;
      if (c.usage) sawUsage = true;
      if (c.choices.length === 0) sawUsage = true;
      text += c.choices[0]?.delta?.content ?? '';
    }
    assert.equal(text, 'Hello from mockllm.');
    assert.ok(chunks >= 5);
    assert.equal(sawUsage, false, 'the caller did not ask for usage, so it must not see the usage chunk');
    const body = JSON.parse((await mock.last()).body);
    assert.deepEqual(body.stream_options, { include_usage: true });
  });

  it('streaming chat that asked for usage keeps it', async () => {
    const stream = await client.chat.completions.create({
      model: 'gpt-4o',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'hi' }],
    }, { headers: { 'x-mock': 'in=11;out=7' } });
    let usage = null;
    for await (const c of stream) if (c.usage) usage = c.usage;
    assert.equal(usage.prompt_tokens, 11);
    assert.equal(usage.completion_tokens, 7);
  });

  it('Responses API, whole and streamed', async () => {
    const r = await client.responses.create({ model: 'gpt-4o', input: 'hi' });
    assert.equal(r.output_text, 'Hello from mockllm.');
    const s = await client.responses.create({ model: 'gpt-4o', input: 'hi', stream: true });
    let text = '';
    let completed = false;
    for await (const ev of s) {
      if (ev.type === 'response.output_text.delta') text += ev.delta;
      if (ev.type === 'response.completed') completed = true;
    }
    assert.equal(text, 'Hello from mockllm.');
    assert.ok(completed);
  });

  it('a background response is refused before anything is paid for: its result could not be fetched', async () => {
    await mock.clear();
    await assert.rejects(client.responses.create({ model: 'gpt-4o', input: 'hi', background: true }),
      (e) => e.status === 400 && /"background": true is not supported/.test(e.message));
    assert.equal((await mock.requests()).length, 0);
    const r = await client.responses.create({ model: 'gpt-4o', input: 'hi', background: false });
    assert.equal(r.output_text, 'Hello from mockllm.');
  });

  it('embeddings', async () => {
    const r = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'hello' });
    assert.ok(r.data[0].embedding.length > 0);
  });

  it('model list in OpenAI shape', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.ok(ids.includes('gpt-4o'));
    assert.ok(!ids.includes('claude-sonnet-4-5'), 'a model the OpenAI endpoints cannot call is not listed');
    assert.ok(!ids.includes('gemini-2.5-flash'));
    const one = await client.models.retrieve('gpt-4o');
    assert.equal(one.id, 'gpt-4o');
    assert.equal((await client.models.retrieve('openai/gpt-4o')).id, 'gpt-4o', 'a qualified id, percent-encoded by the SDK');
  });

  it('a model looked up by id is found at the provider the caller may use, as the list shows it, not only the preferred one', async () => {
    const g = await startGateway({
      providers: {
        p1: { baseurl: mock.url, apikey: 'sk-p1-0123456789abcdef', models: ['gpt-4o'], preference: 10 },
        p2: { baseurl: mock.url, apikey: 'sk-p2-0123456789abcdef', models: ['gpt-4o'], preference: 1 },
      },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: 'p2/**' }] } }],
    });
    try {
      const list = await (await fetch(`${g.url}/v1/models`)).json();
      assert.deepEqual(list.data.map((m) => [m.id, m.owned_by]), [['gpt-4o', 'p2']]);
      const one = await fetch(`${g.url}/v1/models/gpt-4o`);
      assert.equal(one.status, 200);
      assert.equal((await one.json()).owned_by, 'p2');
      assert.equal((await fetch(`${g.url}/v1/models/p1%2Fgpt-4o`)).status, 404);
    } finally {
      await g.stop();
    }
  });

  it('the list names as owner the provider a request would go to, as the lookup does, not the first in the file', async () => {
    const g = await startGateway({
      providers: {
        p1: { baseurl: mock.url, apikey: 'sk-p1-0123456789abcdef', models: ['gpt-4o'], preference: 1 },
        p2: { baseurl: mock.url, apikey: 'sk-p2-0123456789abcdef', models: ['gpt-4o'], preference: 10 },
      },
    });
    try {
      const list = await (await fetch(`${g.url}/v1/models`)).json();
      assert.deepEqual(list.data.map((m) => [m.id, m.owned_by]), [['gpt-4o', 'p2']]);
      assert.equal((await (await fetch(`${g.url}/v1/models/gpt-4o`)).json()).owned_by, 'p2');
    } finally {
      await g.stop();
    }
  });

  it('tool calls stream through', async () => {
    const stream = await client.chat.completions.create({
      model: 'gpt-4o',
      stream: true,
      messages: [{ role: 'user', content: 'read it' }],
      tools: [{ type: 'function', function: { name: 'read_file', parameters: { type: 'object' } } }],
    }, { headers: { 'x-mock': 'tools=read_file' } });
    const names = [];
    let finish = null;
    for await (const c of stream) {
      for (const tc of c.choices[0]?.delta?.tool_calls ?? []) if (tc.function?.name) names.push(tc.function.name);
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    assert.deepEqual(names, ['read_file']);
    assert.equal(finish, 'tool_calls');
  });
});
