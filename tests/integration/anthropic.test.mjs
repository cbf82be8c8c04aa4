// The official @anthropic-ai/sdk through keyless to the simulator.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, providersFor, KEYS, assertNoKeys, headerMap } from './lib/harness.mjs';

describe('Anthropic dialect', () => {
  let mock, gw, client;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({ providers: providersFor(mock.url) });
    client = new Anthropic({ baseURL: gw.url, apiKey: 'caller-placeholder-key', maxRetries: 0 });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  it('messages: x-api-key injected, other headers and query pass through', async () => {
    await mock.clear();
    const r = await client.messages.create({
      model: 'claude-sonnet-4-5',
      max_tokens: 100,
      messages: [{ role: 'user', content: 'hi' }],
    }, {
      headers: { 'anthropic-beta': 'prompt-caching-2024-07-31', 'x-claude-code-session-id': 'sess-1' },
      query: { beta: 'true' },
    });
    assert.equal(r.content[0].text, 'Hello from mockllm.');
    const seen = await mock.last();
    const h = headerMap(seen.headers);
    assert.equal(h['x-api-key'], KEYS.anthropic);
    assert.equal(h['anthropic-beta'], 'prompt-caching-2024-07-31');
    assert.match(h['anthropic-version'], /^\d{4}-\d{2}-\d{2}$/);
    assert.equal(h['x-claude-code-session-id'], 'sess-1');
    assert.equal(h['authorization'], undefined);
    assert.equal(seen.path, '/v1/messages?beta=true');
  });

  it('streamed message assembles the same text', async () => {
    const stream = client.messages.stream({
      model: 'claude-sonnet-4-5',
      max_tokens: 100,
      messages: [{ role: 'user', content: 'hi' }],
    }, { headers: { 'x-mock': 'events=6;out=42' } });
    const msg = await stream.finalMessage();
    assert.equal(msg.content[0].text, 'Hello from mockllm.');
    assert.equal(msg.usage.output_tokens, 42);
  });

  it('tool_use blocks stream through', async () => {
    const msg = await client.messages.stream({
      model: 'claude-haiku-4-5',
      max_tokens: 100,
      messages: [{ role: 'user', content: 'hi' }],
      tools: [{ name: 'read_file', input_schema: { type: 'object' } }],
    }, { headers: { 'x-mock': 'tools=read_file' } }).finalMessage();
    const tools = msg.content.filter((b) => b.type === 'tool_use').map((b) => b.name);
    assert.deepEqual(tools, ['read_file']);
    assert.equal(msg.stop_reason, 'tool_use');
  });

  it('count_tokens', async () => {
    const r = await client.messages.countTokens({
      model: 'claude-sonnet-4-5',
      messages: [{ role: 'user', content: 'hi' }],
    });
    assert.equal(typeof r.input_tokens, 'number');
  });

  it('model list in Anthropic shape', async () => {
    const ids = [];
    for await (const m of client.models.list()) {
      assert.equal(m.type, 'model');
      ids.push(m.id);
    }
    assert.ok(ids.includes('claude-sonnet-4-5'));
    assert.ok(!ids.includes('gpt-4o'), 'a model /v1/messages cannot call is not listed');
  });

  it('model list paged as the SDK asks: limit, after_id, before_id', async () => {
    const all = [];
    for await (const m of client.models.list()) all.push(m.id);
    assert.equal(all.length, 2);
    // one a page: the SDK follows last_id while has_more
    const paged = [];
    for await (const m of client.models.list({ limit: 1 })) paged.push(m.id);
    assert.deepEqual(paged, all);
    const first = await client.models.list({ limit: 1 });
    assert.deepEqual([first.data.map((m) => m.id), first.has_more, first.first_id, first.last_id], [[all[0]], true, all[0], all[0]]);
    const next = await client.models.list({ limit: 1, after_id: all[0] });
    assert.deepEqual([next.data.map((m) => m.id), next.has_more], [[all[1]], false]);
    const back = await client.models.list({ limit: 5, before_id: all[1] });
    assert.deepEqual([back.data.map((m) => m.id), back.has_more], [[all[0]], false]);
    const none = await client.models.list({ after_id: 'no-such-model' });
    assert.deepEqual([none.data, none.has_more, none.first_id, none.last_id], [[], false, null, null]);
    for (const q of ['limit=0', 'limit=1001', 'limit=x', 'after_id=a&before_id=b']) {
      const r = await fetch(`${gw.url}/v1/models?${q}`, { headers: { 'anthropic-version': '2023-06-01' } });
      assert.equal(r.status, 400, q);
      assert.equal((await r.json()).error.type, 'invalid_request_error', q);
    }
  });
});
