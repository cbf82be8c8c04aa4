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
});
