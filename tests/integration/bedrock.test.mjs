// Amazon Bedrock through keyless: the official AWS SDK (Converse,
// ConverseStream, InvokeModel and its response stream, in the AWS event
// stream framing), the Anthropic Bedrock SDK, and Claude Code in its Bedrock
// mode, against the simulator speaking Bedrock Runtime.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  BedrockRuntimeClient, ConverseCommand, ConverseStreamCommand, InvokeModelCommand,
  InvokeModelWithResponseStreamCommand,
} from '@aws-sdk/client-bedrock-runtime';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { EventStreamCodec } from '@smithy/eventstream-codec';
import { toUtf8, fromUtf8 } from '@smithy/util-utf8';
import AnthropicBedrock from '@anthropic-ai/bedrock-sdk';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { fromIni } from '@aws-sdk/credential-provider-ini';
import { Agent } from 'undici';
import {
  startMock, startGateway, startHook, KEYS, assertNoKeys, headerMap, finalRecord, runCommand, ROOT, BUILD, clocked, tempDir
} from './lib/harness.mjs';

const HAIKU = 'us.anthropic.claude-haiku-4-5-20251001-v1:0';
const SONNET = 'global.anthropic.claude-sonnet-4-6';
const LLAMA = 'meta.llama3-3-70b-instruct-v1:0';
const CAP = 'tailscale.com/cap/aperture';
const prices = JSON.parse(readFileSync(join(ROOT, 'data', 'prices.json'), 'utf8')).models;
// nanodollars: tokens × $ per 1M tokens × 1000, as the price table says for the model
const cost = (model, u) => Math.ceil(u.in * prices[model].input * 1000 + u.out * prices[model].output * 1000 +
  (u.cr || 0) * prices[model].cache_read * 1000 + (u.cw || 0) * prices[model].cache_write * 1000);

const bedrockProvider = (url, extra = {}) => ({
  baseurl: url,
  apikey: KEYS.bedrock,
  models: [HAIKU, SONNET, LLAMA],
  cost_basis: 'bedrock-us',
  compatibility: { bedrock_model_invoke: true, bedrock_converse: true },
  ...extra,
});

describe('Amazon Bedrock', () => {
  let mock, gw, aws;
  const records = async (filter) => (await (await fetch(`${gw.url}/api/requests?limit=100&${filter}`)).json()).requests;
  // the newest finished record of an endpoint, once the writer has it
  const lastRecord = async (endpoint, pred = () => true) => {
    for (let i = 0; i < 100; i++) {
      const hit = (await records('')).find((r) => r.endpoint === endpoint && pred(r));
      if (hit) return finalRecord(gw, hit.id);
      await new Promise((res) => setTimeout(res, 30));
    }
    throw new Error(`no ${endpoint} record`);
  };
  before(async () => {
    mock = await startMock();
    gw = await startGateway({
      providers: { bedrock: bedrockProvider(mock.url) },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' },
        { models: `bedrock/${SONNET}`, tools: { deny: ['Bash'] } }] } }],
    });
    // the AWS SDK signs with SigV4 whatever the endpoint: dummy credentials, dropped by keyless;
    // its Bedrock client speaks HTTP/2 unless told otherwise, keyless HTTP/1.1
    aws = new BedrockRuntimeClient({ region: 'us-east-1', endpoint: gw.url, maxAttempts: 1,
      requestHandler: new NodeHttpHandler(),
      credentials: { accessKeyId: 'AKIDEXAMPLEKEYLESS', secretAccessKey: 'not-a-secret', sessionToken: 'caller-token' } });
  });
  after(async () => {
    aws.destroy();
    await gw.stop();
    await mock.stop();
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  it('Converse (AWS SDK): the Bedrock key replaces the caller\'s signature; usage and cost recorded', async () => {
    await mock.clear();
    const r = await aws.send(new ConverseCommand({ modelId: HAIKU,
      messages: [{ role: 'user', content: [{ text: 'hi [[mock in=1200;out=80;cache_read=300;cache_write=40]]' }] }],
      inferenceConfig: { maxTokens: 200 } }));
    assert.equal(r.output.message.content[0].text, 'Hello from mockllm.');
    assert.equal(r.usage.inputTokens, 1200);
    const seen = await mock.last();
    assert.equal(seen.path, '/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/converse');
    const h = headerMap(seen.headers);
    assert.equal(h.authorization, `Bearer ${KEYS.bedrock}`);
    for (const k of ['x-amz-date', 'x-amz-security-token', 'x-amz-content-sha256'])
      assert.equal(h[k], undefined, `${k} is the caller's signature, not forwarded`);
    const rec = await lastRecord('bedrock.converse');
    assert.equal(rec.dialect, 'bedrock');
    assert.equal(rec.provider, 'bedrock');
    assert.equal(rec.model_requested, HAIKU);
    assert.deepEqual([rec.input_tokens, rec.output_tokens, rec.cache_read_tokens, rec.cache_write_tokens],
      [1200, 80, 300, 40]);
    assert.equal(Number(rec.cost_nanodollars), cost('claude-haiku-4-5*', { in: 1200, out: 80, cr: 300, cw: 40 }),
      'Claude on Bedrock at Anthropic\'s prices');
    assert.equal(rec.stop_reason, 'end_turn');
  });

  it('ConverseStream (AWS SDK): events relayed as the SDK decodes them; usage from metadata, tool calls counted', async () => {
    const r = await aws.send(new ConverseStreamCommand({ modelId: HAIKU,
      messages: [{ role: 'user', content: [{ text: 'go [[mock events=12;in=900;out=61;tools=read_file,grep]]' }] }] }));
    let text = '';
    const tools = [];
    let usage;
    for await (const ev of r.stream) {
      if (ev.contentBlockDelta?.delta?.text) text += ev.contentBlockDelta.delta.text;
      if (ev.contentBlockStart?.start?.toolUse) tools.push(ev.contentBlockStart.start.toolUse.name);
      if (ev.metadata) usage = ev.metadata.usage;
    }
    assert.equal(text, '', 'an answer of tool calls only');
    assert.deepEqual(tools, ['read_file', 'grep']);
    assert.equal(usage.outputTokens, 61);
    const rec = await lastRecord('bedrock.converse_stream');
    assert.equal(rec.stream, 1);
    assert.deepEqual([rec.input_tokens, rec.output_tokens, rec.tool_calls, rec.tool_names], [900, 61, 2, 'read_file,grep']);
    assert.equal(rec.stop_reason, 'tool_use');
    assert.equal(rec.status, 200);
  });

  it('InvokeModel and its response stream (AWS SDK): Claude\'s body and events, usage exact', async () => {
    const body = (text) => JSON.stringify({ anthropic_version: 'bedrock-2023-05-31', max_tokens: 100,
      messages: [{ role: 'user', content: text }] });
    const r = await aws.send(new InvokeModelCommand({ modelId: HAIKU, contentType: 'application/json',
      body: body('hi [[mock in=50;out=7]]') }));
    const msg = JSON.parse(Buffer.from(r.body).toString());
    assert.equal(msg.content[0].text, 'Hello from mockllm.');
    let rec = await lastRecord('bedrock.invoke');
    assert.deepEqual([rec.input_tokens, rec.output_tokens, rec.model_served], [50, 7, 'claude-haiku-4-5-20251001']);

    const s = await aws.send(new InvokeModelWithResponseStreamCommand({ modelId: HAIKU, contentType: 'application/json',
      body: body('hi [[mock events=9;in=70;out=33;tools=read_file]]') }));
    const types = [];
    for await (const ev of s.body) types.push(JSON.parse(Buffer.from(ev.chunk.bytes).toString()).type);
    assert.equal(types[0], 'message_start');
    assert.equal(types.at(-1), 'message_stop');
    rec = await lastRecord('bedrock.invoke_stream');
    assert.deepEqual([rec.input_tokens, rec.output_tokens, rec.tool_names], [70, 33, 'read_file']);
    assert.equal(Number(rec.cost_nanodollars), cost('claude-haiku-4-5*', { in: 70, out: 33, cr: rec.cache_read_tokens,
      cw: rec.cache_write_tokens }));
  });

  it('a model_cost_map rule for the provider\'s model ids prices InvokeModel too, whose answer names another model', async () => {
    // Claude's InvokeModel body names "claude-haiku-4-5-20251001": the rule
    // written for the Bedrock id (a regional premium) was matched against that
    // name, missed, and the request was priced without it
    const g = await startGateway({
      providers: { bedrock: bedrockProvider(mock.url, { model_cost_map: [{ match: '*anthropic.claude-*', adjustment: 1.1 }] }) },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' }] } }],
    });
    try {
      const post = (path, body) => fetch(`${g.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body) });
      const id = encodeURIComponent(HAIKU);
      const inv = await post(`/model/${id}/invoke`, { anthropic_version: 'bedrock-2023-05-31', max_tokens: 2000,
        messages: [{ role: 'user', content: 'hi [[mock in=1000;out=1000;cache_read=0;cache_write=0]]' }] });
      assert.equal(inv.status, 200);
      const conv = await post(`/model/${id}/converse`, { inferenceConfig: { maxTokens: 2000 },
        messages: [{ role: 'user', content: [{ text: 'hi [[mock in=1000;out=1000;cache_read=0;cache_write=0]]' }] }] });
      assert.equal(conv.status, 200);
      const a = await finalRecord(g, inv.headers.get('x-keyless-request-id'));
      const b = await finalRecord(g, conv.headers.get('x-keyless-request-id'));
      assert.equal(a.model_served, 'claude-haiku-4-5-20251001');
      const base = cost('claude-haiku-4-5*', { in: 1000, out: 1000 });
      assert.equal(Number(b.cost_nanodollars), Math.round(base * 1.1), 'Converse, which names no model');
      assert.equal(Number(a.cost_nanodollars), Number(b.cost_nanodollars), 'InvokeModel at the same adjusted price');
    } finally {
      await g.stop();
    }
  });

  it('another model family on InvokeModel is counted by Bedrock\'s own token counts', async () => {
    // mockllm answers every InvokeModel in Claude's shape; what keyless must use here is
    // the X-Amzn-Bedrock-*-Token-Count headers when the body has no usage of its own
    const upstream = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json', 'x-amzn-bedrock-input-token-count': '31',
          'x-amzn-bedrock-output-token-count': '12' });
        res.end(JSON.stringify({ generation: 'hello', prompt_token_count: 31, generation_token_count: 12,
          stop_reason: 'stop' }));
      });
    });
    await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
    const g = await startGateway({ providers: { bedrock: bedrockProvider(`http://127.0.0.1:${upstream.address().port}`) } });
    try {
      const r = await fetch(`${g.url}/model/${encodeURIComponent(LLAMA)}/invoke`, { method: 'POST',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'hi', max_gen_len: 20 }) });
      assert.equal(r.status, 200);
      assert.equal((await r.json()).generation, 'hello');
      let rec;
      for (let i = 0; i < 100 && !(rec && rec.state === 'done'); i++) {
        await new Promise((res) => setTimeout(res, 30));
        rec = (await (await fetch(`${g.url}/api/requests?limit=1&model=${encodeURIComponent(LLAMA)}`)).json()).requests[0];
      }
      assert.deepEqual([rec.usage_known, rec.input_tokens, rec.output_tokens], [1, 31, 12]);
      assert.equal(rec.cost_known, 0, 'no price for Llama in the table: cost unknown, not 0');
    } finally {
      await g.stop();
      await new Promise((r) => upstream.close(r));
    }
  });

  it('Anthropic Bedrock SDK (skipAuth): messages and a stream with its usage', async () => {
    const c = new AnthropicBedrock({ baseURL: gw.url, awsRegion: 'us-east-1', skipAuth: true, maxRetries: 0 });
    const m = await c.messages.create({ model: HAIKU, max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] },
      { headers: { 'x-mock': 'in=11;out=5' } });
    assert.equal(m.content[0].text, 'Hello from mockllm.');
    assert.equal(m.usage.output_tokens, 5);
    const fin = await c.messages.stream({ model: HAIKU, max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] },
      { headers: { 'x-mock': 'events=7;in=13;out=21', 'x-session-id': 'bedrock-sdk' } }).finalMessage();
    assert.equal(fin.content[0].text, 'Hello from mockllm.');
    assert.equal(fin.usage.output_tokens, 21);
    const rec = await lastRecord('bedrock.invoke_stream', (r) => r.session_id === 'bedrock-sdk');
    assert.deepEqual([rec.input_tokens, rec.output_tokens], [13, 21]);
  });

  it('errors in Bedrock\'s shape: the AWS SDK raises the modeled exception', async () => {
    await assert.rejects(aws.send(new ConverseCommand({ modelId: 'us.anthropic.claude-nope-v1:0',
      messages: [{ role: 'user', content: [{ text: 'hi' }] }] })), (e) => {
      assert.equal(e.name, 'ResourceNotFoundException');
      assert.equal(e.$metadata.httpStatusCode, 404);
      assert.match(e.message, /claude-nope/);
      return true;
    });
    const bad = await fetch(`${gw.url}/model/${encodeURIComponent(HAIKU)}/converse`, { method: 'POST', body: '{"messages":' });
    assert.equal(bad.status, 400);
    assert.match(bad.headers.get('x-amzn-errortype'), /^ValidationException/);
    assert.match((await bad.json()).message, /malformed JSON/);
    // the provider's own errors pass through: ThrottlingException with its status
    await assert.rejects(aws.send(new ConverseCommand({ modelId: HAIKU,
      messages: [{ role: 'user', content: [{ text: 'hi [[mock status=429]]' }] }] })), (e) => {
      assert.equal(e.name, 'ThrottlingException');
      return true;
    });
  });

  it('a quota that can never cover the request: ServiceQuotaExceededException, which the AWS SDK does not retry', async () => {
    const tiny = await startGateway({ providers: { bedrock: bedrockProvider(mock.url) }, quotas: { tiny: { capacity: '$0.000001' } },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: '**' }, { quotas: [{ bucket: 'tiny' }] }] } }] });
    let sent = 0;
    const retrying = new BedrockRuntimeClient({ region: 'us-east-1', endpoint: tiny.url, maxAttempts: 3,
      requestHandler: new NodeHttpHandler(),
      credentials: { accessKeyId: 'AKIDEXAMPLEKEYLESS', secretAccessKey: 'not-a-secret' } });
    retrying.middlewareStack.add((next) => (args) => { sent++; return next(args); }, { step: 'finalizeRequest' });
    try {
      await assert.rejects(retrying.send(new ConverseCommand({ modelId: HAIKU,
        messages: [{ role: 'user', content: [{ text: 'hi' }] }] })), (e) => {
        assert.equal(e.name, 'ServiceQuotaExceededException');
        assert.equal(e.$metadata.httpStatusCode, 400);
        assert.match(e.message, /quota tiny cannot cover this request .*more than the bucket can ever hold/);
        return true;
      });
      assert.equal(sent, 1, 'not sent again');
    } finally {
      retrying.destroy();
      await tiny.stop();
    }
  });

  it('a stream that breaks midway ends with an exception message the AWS SDK raises', async () => {
    const s = await aws.send(new ConverseStreamCommand({ modelId: HAIKU,
      messages: [{ role: 'user', content: [{ text: 'go [[mock events=20;reset_after=6]]' }] }] }));
    let text = '';
    await assert.rejects((async () => {
      for await (const ev of s.stream) text += ev.contentBlockDelta?.delta?.text || '';
    })(), (e) => {
      assert.equal(e.name, 'ModelStreamErrorException');
      assert.match(e.message, /upstream|provider|connection/i);
      return true;
    });
    assert.ok(text.length > 0, 'what came before the break was relayed');
    const rec = await lastRecord('bedrock.converse_stream', (r) => r.error_class);
    assert.equal(rec.error_class, 'stream_interrupted');
  });

  it('tool policy on Converse: a refused tool is taken out of toolConfig, and an answer calling it is stopped', async () => {
    await mock.clear();
    const spec = (name) => ({ toolSpec: { name, inputSchema: { json: { type: 'object' } } } });
    await aws.send(new ConverseCommand({ modelId: SONNET,
      messages: [{ role: 'user', content: [{ text: 'hi' }] }],
      toolConfig: { tools: [spec('Read'), spec('Bash')] } }));
    const sent = JSON.parse((await mock.last()).body);
    assert.deepEqual(sent.toolConfig.tools.map((t) => t.toolSpec.name), ['Read']);
    // forcing it is refused outright
    await assert.rejects(aws.send(new ConverseCommand({ modelId: SONNET,
      messages: [{ role: 'user', content: [{ text: 'hi' }] }],
      toolConfig: { tools: [spec('Bash')], toolChoice: { tool: { name: 'Bash' } } } })), (e) => {
      assert.equal(e.name, 'ValidationException');
      assert.equal(e.$metadata.httpStatusCode, 400);
      return true;
    });
    // a stream calling it stops before the call reaches the caller
    const s = await aws.send(new ConverseStreamCommand({ modelId: SONNET,
      messages: [{ role: 'user', content: [{ text: 'go [[mock tools=Read,Bash]]' }] }] }));
    const started = [];
    await assert.rejects((async () => {
      for await (const ev of s.stream) if (ev.contentBlockStart) started.push(ev.contentBlockStart.start.toolUse.name);
    })(), (e) => {
      assert.equal(e.name, 'ValidationException');
      assert.match(e.message, /the tool 'Bash', which the tool policy does not allow/);
      return true;
    });
    assert.deepEqual(started, ['Read']);
    const rec = await lastRecord('bedrock.converse_stream', (r) => r.error_class === 'blocked');
    assert.equal(rec.tool_names, 'Read,Bash');
    // a whole answer calling it is refused in its place
    await assert.rejects(aws.send(new ConverseCommand({ modelId: SONNET,
      messages: [{ role: 'user', content: [{ text: 'go [[mock tools=Bash]]' }] }] })),
    (e) => e.$metadata.httpStatusCode === 400 && /Bash/.test(e.message));
  });

  it('a malformed message from the provider: relayed as it came, or stopped under tool limits', async () => {
    // without tool limits the bytes go on (the client's decoder judges the CRC)
    const t0 = Date.now();
    const s = await aws.send(new ConverseStreamCommand({ modelId: HAIKU,
      messages: [{ role: 'user', content: [{ text: 'go [[mock events=6;malformed=1]]' }] }] }));
    await assert.rejects((async () => { for await (const ev of s.stream) void ev; })(), /checksum|crc/i);
    // and the record says the answer ended with an error, its prompt billed: not a clean answer without usage
    const bad = await lastRecord('bedrock.converse_stream', (r) => r.model_requested === HAIKU && r.started_at >= t0);
    assert.equal(bad.error_class, 'upstream_error');
    assert.equal(bad.status, 200);
    assert.ok(bad.input_tokens > 0 && bad.cost_nanodollars > 0, JSON.stringify(bad));
    // under a tool policy an unreadable message stops the stream with keyless's own exception
    const t = await aws.send(new ConverseStreamCommand({ modelId: SONNET,
      messages: [{ role: 'user', content: [{ text: 'go [[mock events=6;malformed=1]]' }] }] }));
    await assert.rejects((async () => { for await (const ev of t.stream) void ev; })(), (e) => {
      assert.equal(e.name, 'ModelStreamErrorException');
      assert.match(e.message, /does not check out/);
      return true;
    });
  });

  it('a spend quota ends an InvokeModel stream that outgrows it with a throttlingException', async () => {
    const g = await startGateway({
      providers: { bedrock: bedrockProvider(mock.url) },
      quotas: { s: { capacity: '$0.01' } },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' }, { quotas: [{ bucket: 's' }] }] } }],
    });
    const c = new AnthropicBedrock({ baseURL: g.url, awsRegion: 'us-east-1', skipAuth: true, maxRetries: 0 });
    try {
      await assert.rejects(c.messages.stream({ model: HAIKU, max_tokens: 50, messages: [{ role: 'user', content: 'x' }] },
        { headers: { 'x-mock': 'in=10;out=900000;events=5' } }).finalMessage(), /quota s cannot cover this answer/);
      let rec;
      for (let i = 0; i < 100 && !(rec && rec.state === 'done'); i++) {
        await new Promise((res) => setTimeout(res, 30));
        rec = (await (await fetch(`${g.url}/api/requests?limit=1&model=${encodeURIComponent(HAIKU)}`)).json()).requests[0];
      }
      assert.equal(rec.error_class, 'quota_exceeded');
      assert.equal(rec.output_tokens, 900000, 'what the provider reported is recorded');
      const q = (await (await fetch(`${g.url}/api/quotas`)).json());
      assert.ok(JSON.stringify(q).includes('"s"'), 'the bucket is there');
    } finally {
      await g.stop();
    }
  });

  it('hooks told after the answer get a Bedrock stream put back together, its events, and its tool calls', async () => {
    const hook = await startHook();
    const told = hook.calls;
    const g = await startGateway({
      providers: { bedrock: bedrockProvider(mock.url) },
      hooks: { audit: { url: hook.url('/audit') } },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: '**' }, { send_hooks: [{ name: 'audit',
        events: ['entire_request'], send: ['response_body', 'raw_responses', 'tools', 'user_message'] }] }] } }],
    });
    const a = new BedrockRuntimeClient({ region: 'us-east-1', endpoint: g.url, maxAttempts: 1,
      requestHandler: new NodeHttpHandler(), credentials: { accessKeyId: 'AKIDEXAMPLEKEYLESS', secretAccessKey: 'x' } });
    try {
      const s = await a.send(new ConverseStreamCommand({ modelId: HAIKU,
        messages: [{ role: 'user', content: [{ text: 'look [[mock events=4;in=5;out=9;tools=read_file]]' }] }] }));
      for await (const ev of s.stream) void ev;
      const i = await a.send(new InvokeModelWithResponseStreamCommand({ modelId: HAIKU, contentType: 'application/json',
        body: JSON.stringify({ anthropic_version: 'bedrock-2023-05-31', max_tokens: 100,
          messages: [{ role: 'user', content: 'say [[mock events=5;text=Bedrock_answers]]' }] }) }));
      for await (const ev of i.body) void ev;
      for (let k = 0; k < 100 && told.length < 2; k++) await new Promise((res) => setTimeout(res, 30));
      const conv = told.find((t) => t.metadata.url.endsWith('/converse-stream'));
      assert.match(conv.user_message, /^look /);
      assert.deepEqual(conv.response_body.output.message.content,
        [{ toolUse: { toolUseId: conv.response_body.output.message.content[0].toolUse.toolUseId, name: 'read_file',
          input: { path: 'README.md' } } }]);
      assert.equal(conv.response_body.stopReason, 'tool_use');
      assert.equal(conv.response_body.usage.outputTokens, 9);
      assert.deepEqual(conv.tool_calls, [{ name: 'read_file', params: { path: 'README.md' } }]);
      assert.ok(conv.raw_responses.some((e) => e.metadata), 'the events as the AWS SDK gives them');
      assert.ok(conv.raw_responses.every((e) => Object.keys(e).length === 1 && !Object.values(e)[0].p),
        'without Bedrock\'s padding');
      const inv = told.find((t) => t.metadata.url.endsWith('/invoke-with-response-stream'));
      assert.equal(inv.response_body.type, 'message');
      assert.equal(inv.response_body.content[0].text, 'Bedrock answers');
      assert.equal(inv.raw_responses[0].type, 'message_start');
    } finally {
      a.destroy();
      await g.stop();
      await hook.close();
    }
  });

  it('CountTokens is answered and recorded as counting nothing', async () => {
    const body = Buffer.from(JSON.stringify({ anthropic_version: 'bedrock-2023-05-31', max_tokens: 10,
      messages: [{ role: 'user', content: 'count me [[mock in=17]]' }] })).toString('base64');
    const r = await fetch(`${gw.url}/model/${encodeURIComponent(HAIKU)}/count-tokens`, { method: 'POST',
      headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input: { invokeModel: { body } } }) });
    assert.equal(r.status, 200);
    assert.equal((await r.json()).inputTokens, 17);
    const rec = await lastRecord('bedrock.count_tokens');
    assert.deepEqual([rec.usage_known, rec.input_tokens, Number(rec.cost_nanodollars)], [1, 0, 0]);
  });

  it('Claude Code in its Bedrock mode answers through the gateway', { timeout: 180000 }, async () => {
    await mock.clear();
    const home = tempDir('kl-claude-bedrock-');
    const env = {
      PATH: process.env.PATH, HOME: home,
      CLAUDE_CODE_USE_BEDROCK: '1', CLAUDE_CODE_SKIP_BEDROCK_AUTH: '1', ANTHROPIC_BEDROCK_BASE_URL: gw.url,
      AWS_REGION: 'us-east-1', ANTHROPIC_MODEL: HAIKU, ANTHROPIC_SMALL_FAST_MODEL: HAIKU,
      ANTHROPIC_DEFAULT_HAIKU_MODEL: HAIKU,
      DISABLE_TELEMETRY: '1', DISABLE_AUTOUPDATER: '1', DISABLE_ERROR_REPORTING: '1',
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    };
    const claude = join(ROOT, 'node_modules', '.bin', 'claude');
    const r = await runCommand(claude, ['-p', 'Say hello. [[mock text=Hello_from_Bedrock_via_keyless;in=1500;out=42]]'], env);
    assert.equal(r.code, 0, `claude failed: ${r.out}\n${r.err}`);
    assert.match(r.out, /Hello from Bedrock via keyless/);
    const reqs = (await mock.requests()).filter((q) => q.path.startsWith('/model/'));
    assert.ok(reqs.length >= 1, 'Claude Code reached Bedrock through keyless');
    for (const q of reqs) assert.equal(headerMap(q.headers).authorization, `Bearer ${KEYS.bedrock}`);
    const rec = await lastRecord('bedrock.invoke_stream', (x) => x.output_tokens === 42);
    assert.equal(rec.input_tokens, 1500);
    assert.ok(Number(rec.cost_nanodollars) > 0);
  });
});

// Answers the simulator does not give: other model families' InvokeModel
// bodies, and event streams that end midway, written here with the AWS SDK's
// own event stream encoder.
describe('Amazon Bedrock: other model families and broken streams', () => {
  const codec = new EventStreamCodec(toUtf8, fromUtf8);
  const frame = (headers, obj) => Buffer.from(codec.encode({
    headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, { type: 'string', value: v }])),
    body: fromUtf8(JSON.stringify(obj)) }));
  const chunk = (obj) => frame({ ':message-type': 'event', ':event-type': 'chunk', ':content-type': 'application/json' },
    { bytes: Buffer.from(JSON.stringify(obj)).toString('base64'), p: 'abc' });
  const event = (name, obj) => frame({ ':message-type': 'event', ':event-type': name, ':content-type': 'application/json' }, obj);
  const NOVA = 'us.amazon.nova-lite-v1:0';
  let up, gw, seen, answer;
  before(async () => {
    up = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        seen = { url: req.url, headers: req.headers, body };
        answer(req, res);
      });
    });
    await new Promise((r) => up.listen(0, '127.0.0.1', r));
    gw = await startGateway({
      providers: { bedrock: bedrockProvider(`http://127.0.0.1:${up.address().port}`, { models: [HAIKU, LLAMA, NOVA] }) },
      store: { captures: 'metadata' },
      quotas: { spend: { capacity: '$100' } },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' },
        { models: `bedrock/${HAIKU}`, tools: { deny: ['Bash'] } },
        { models: `bedrock/${NOVA}`, tools: { deny: ['Bash'] } },
        { models: `bedrock/${LLAMA}`, quotas: [{ bucket: 'spend' }] }] } }],
    });
  });
  after(async () => {
    await gw.stop();
    await new Promise((r) => up.close(r));
    assertNoKeys(assert, gw.output(), 'gateway log');
  });
  const post = (model, action, body, headers = {}) => fetch(`${gw.url}/model/${encodeURIComponent(model)}/${action}`,
    { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const record = async (id) => finalRecord(gw, id);

  it('Nova\'s whole answer and a Llama stream are counted by Bedrock\'s own numbers', async () => {
    answer = () => assert.fail('nothing may reach the provider');
    let r = await post(LLAMA, 'invoke-with-response-stream', { prompt: 'hi', max_gen_len: 20 });
    assert.equal(r.status, 403, 'a spend limit cannot hold a Llama body to its price');
    assert.match((await r.json()).message, /spend limit applies .* only for Claude: call .* through Converse/);
    // the same models through a gateway without limits
    const g = await startGateway({ providers: { bedrock: bedrockProvider(`http://127.0.0.1:${up.address().port}`,
      { models: [LLAMA, NOVA] }) } });
    try {
      answer = (req, res) => {
        res.writeHead(200, { 'content-type': 'application/json', 'x-amzn-bedrock-input-token-count': '31',
          'x-amzn-bedrock-output-token-count': '12' });
        res.end(JSON.stringify({ output: { message: { role: 'assistant', content: [{ text: 'hi' }] } },
          stopReason: 'end_turn', usage: { inputTokens: 31, outputTokens: 12, totalTokens: 43 } }));
      };
      r = await fetch(`${g.url}/model/${encodeURIComponent(NOVA)}/invoke`, { method: 'POST',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: [{ text: 'hi' }] }] }) });
      assert.equal(r.status, 200);
      await r.json();
      let rec = await finalRecord(g, r.headers.get('x-keyless-request-id'));
      assert.deepEqual([rec.usage_known, rec.input_tokens, rec.output_tokens], [1, 31, 12], 'not Anthropic\'s zeros');

      answer = (req, res) => {
        res.writeHead(200, { 'content-type': 'application/vnd.amazon.eventstream' });
        res.write(chunk({ generation: 'Hel', prompt_token_count: 21, generation_token_count: 1, stop_reason: null }));
        res.end(chunk({ generation: 'lo', generation_token_count: 8, stop_reason: 'stop',
          'amazon-bedrock-invocationMetrics': { inputTokenCount: 21, outputTokenCount: 8, invocationLatency: 5, firstByteLatency: 2 } }));
      };
      r = await fetch(`${g.url}/model/${encodeURIComponent(LLAMA)}/invoke-with-response-stream`, { method: 'POST',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'hi', max_gen_len: 20 }) });
      assert.equal(r.status, 200);
      await r.arrayBuffer();
      assert.ok(!JSON.parse(seen.body).max_tokens, 'no Claude output cap written into a Llama body');
      rec = await finalRecord(g, r.headers.get('x-keyless-request-id'));
      assert.deepEqual([rec.usage_known, rec.input_tokens, rec.output_tokens], [1, 21, 8]);
    } finally {
      await g.stop();
    }
  });

  it('a ConverseStream exception message without its :exception-type is an error end, its prompt billed', async () => {
    answer = (req, res) => {
      res.writeHead(200, { 'content-type': 'application/vnd.amazon.eventstream' });
      res.write(event('messageStart', { role: 'assistant' }));
      res.write(event('contentBlockDelta', { contentBlockIndex: 0, delta: { text: 'Hel' } }));
      res.end(frame({ ':message-type': 'exception', ':content-type': 'application/json' }, { message: 'overloaded' }));
    };
    const r = await post(HAIKU, 'converse-stream', { messages: [{ role: 'user', content: [{ text: 'hi' }] }] });
    assert.equal(r.status, 200);
    await r.arrayBuffer();
    const rec = await record(r.headers.get('x-keyless-request-id'));
    assert.equal(rec.error_class, 'upstream_error');
    assert.ok(rec.input_tokens > 0 && rec.cost_nanodollars > 0, JSON.stringify(rec));
  });

  it('a tool policy refuses InvokeModel for a family whose tools keyless cannot read', async () => {
    answer = () => assert.fail('nothing may reach the provider');
    const r = await post(NOVA, 'invoke', { toolConfig: { tools: [{ toolSpec: { name: 'Bash' } }] },
      messages: [{ role: 'user', content: [{ text: 'hi' }] }] });
    assert.equal(r.status, 403);
    assert.match(r.headers.get('x-amzn-errortype'), /^AccessDeniedException/);
    assert.match((await r.json()).message, /tool policy applies .* through Converse/);
  });

  it('a stream whose tail does not check out ends with keyless\'s exception under a tool policy', async () => {
    answer = (req, res) => {
      res.writeHead(200, { 'content-type': 'application/vnd.amazon.eventstream' });
      res.write(Buffer.concat([event('messageStart', { role: 'assistant' }),
        event('contentBlockDelta', { contentBlockIndex: 0, delta: { text: 'hello' } })]));
      res.end(event('messageStop', { stopReason: 'end_turn' }).subarray(0, 20));
    };
    const aws = new BedrockRuntimeClient({ region: 'us-east-1', endpoint: gw.url, maxAttempts: 1,
      requestHandler: new NodeHttpHandler(), credentials: { accessKeyId: 'AKIDEXAMPLEKEYLESS', secretAccessKey: 'x' } });
    try {
      const s = await aws.send(new ConverseStreamCommand({ modelId: HAIKU, messages: [{ role: 'user', content: [{ text: 'hi' }] }] }));
      let text = '';
      await assert.rejects((async () => {
        for await (const ev of s.stream) text += ev.contentBlockDelta?.delta?.text || '';
      })(), (e) => e.name === 'ModelStreamErrorException' && /does not check out/.test(e.message));
      assert.equal(text, 'hello');
      let hit;
      for (let i = 0; i < 100 && !hit; i++) {
        await new Promise((res) => setTimeout(res, 30));
        hit = (await (await fetch(`${gw.url}/api/requests?limit=5&error_class=blocked`)).json()).requests
          .find((q) => q.endpoint === 'bedrock.converse_stream');
      }
      assert.ok(hit, 'recorded as blocked');
    } finally {
      aws.destroy();
    }
  });

  it('a tokens-per-minute limit writes no max_tokens into another family\'s InvokeModel body', async () => {
    const g = await startGateway({ providers: { bedrock: bedrockProvider(`http://127.0.0.1:${up.address().port}`, { models: [LLAMA] }) },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' }, { rate_limit: { tokens_per_minute: 400000 } }] } }] });
    try {
      answer = (req, res) => res.writeHead(200, { 'content-type': 'application/json', 'x-amzn-bedrock-input-token-count': '3',
        'x-amzn-bedrock-output-token-count': '2' }).end(JSON.stringify({ generation: 'hi', stop_reason: 'stop' }));
      const r = await fetch(`${g.url}/model/${encodeURIComponent(LLAMA)}/invoke`, { method: 'POST',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'hi', max_gen_len: 50 }) });
      assert.equal(r.status, 200);
      await r.json();
      assert.deepEqual(JSON.parse(seen.body), { prompt: 'hi', max_gen_len: 50 }, 'Llama\'s schema has no max_tokens');
    } finally {
      await g.stop();
    }
  });

  it('a captured event stream is kept whole, as base64 with its encoding named, not cut at its first NUL byte', async () => {
    const g = await startGateway({ providers: { bedrock: bedrockProvider(`http://127.0.0.1:${up.address().port}`,
      { models: [HAIKU] }) }, store: { captures: 'full' } });
    try {
      const frames = Buffer.concat([
        codec.encode({ headers: { ':message-type': { type: 'string', value: 'event' },
          ':event-type': { type: 'string', value: 'messageStart' } }, body: Buffer.from('{"role":"assistant"}') }),
        codec.encode({ headers: { ':message-type': { type: 'string', value: 'event' },
          ':event-type': { type: 'string', value: 'messageStop' } }, body: Buffer.from('{"stopReason":"end_turn"}') }),
      ].map((u) => Buffer.from(u)));
      answer = (req, res) => res.writeHead(200, { 'content-type': 'application/vnd.amazon.eventstream' }).end(frames);
      const r = await fetch(`${g.url}/model/${encodeURIComponent(HAIKU)}/converse-stream`, { method: 'POST',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: [{ text: 'hi' }] }] }) });
      assert.deepEqual(Buffer.from(await r.arrayBuffer()), frames);
      const id = r.headers.get('x-keyless-request-id');
      await finalRecord(g, id);
      const rec = await (await fetch(`${g.url}/api/requests/${id}`)).json();
      assert.equal(rec.response_body_encoding, 'base64');
      assert.deepEqual(Buffer.from(rec.response_body, 'base64'), frames);
      assert.equal(rec.request_body_encoding, undefined, 'a JSON body is text');
      assert.match(rec.request_body, /"hi"/);
    } finally {
      await g.stop();
    }
  });

  it('an event stream error message (not an exception) is the provider\'s error: recorded upstream_error', async () => {
    answer = (req, res) => {
      res.writeHead(200, { 'content-type': 'application/vnd.amazon.eventstream' });
      res.end(Buffer.from(codec.encode({ headers: {
        ':message-type': { type: 'string', value: 'error' }, ':error-code': { type: 'string', value: 'ThrottlingException' },
        ':error-message': { type: 'string', value: 'slow down' } }, body: new Uint8Array(0) })));
    };
    const r = await post(HAIKU, 'converse-stream', { messages: [{ role: 'user', content: [{ text: 'hi' }] }] });
    await r.arrayBuffer();
    const rec = await record(r.headers.get('x-keyless-request-id'));
    assert.equal(rec.error_class, 'upstream_error', JSON.stringify(rec));
  });

  it('a passthrough provider gets a caller\'s SigV4 signature whole', async () => {
    const g = await startGateway({ providers: { aws: { baseurl: `http://127.0.0.1:${up.address().port}`,
      auth_mode: 'passthrough', models: ['self-hosted'], compatibility: { openai_chat: true } } } });
    answer = (req, res) => res.writeHead(200, { 'content-type': 'application/json' })
      .end('{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}');
    try {
      const sig = { authorization: 'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/execute-api/aws4_request, '
        + 'SignedHeaders=host;x-amz-date, Signature=abc', 'x-amz-date': '20261127T070000Z',
        'x-amz-security-token': 'session', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' };
      const r = await fetch(`${g.url}/v1/chat/completions`, { method: 'POST',
        headers: { 'content-type': 'application/json', ...sig }, body: JSON.stringify({ model: 'self-hosted', messages: [] }) });
      assert.equal(r.status, 200);
      await r.json();
      for (const [k, v] of Object.entries(sig)) assert.equal(seen.headers[k], v, k);
    } finally {
      await g.stop();
    }
  });

  it('a passthrough provider that gets keyless\'s key gets no part of a caller\'s SigV4 signature beside it', async () => {
    // the rest of a signature without its Authorization header (or with a workload token in it) is no
    // credential of the caller's: keyless's key goes, and the caller's session token must not go with it
    const g = await startGateway({ providers: { aws: { baseurl: `http://127.0.0.1:${up.address().port}`, apikey: 'sk-own-key-000',
      auth_mode: 'passthrough', models: ['self-hosted'], compatibility: { openai_chat: true } } } });
    answer = (req, res) => res.writeHead(200, { 'content-type': 'application/json' })
      .end('{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}');
    try {
      const r = await fetch(`${g.url}/v1/chat/completions`, { method: 'POST',
        headers: { 'content-type': 'application/json', 'x-amz-date': '20261127T070000Z',
          'x-amz-security-token': 'SECRETSESSION', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
        body: JSON.stringify({ model: 'self-hosted', messages: [] }) });
      assert.equal(r.status, 200);
      await r.json();
      assert.equal(seen.headers.authorization, 'Bearer sk-own-key-000');
      for (const k of ['x-amz-date', 'x-amz-security-token', 'x-amz-content-sha256']) assert.equal(seen.headers[k], undefined, k);
    } finally {
      await g.stop();
    }
  });

  it('a caller\'s AWS session token is neither forwarded nor captured; CountTokens is not charged', async () => {
    answer = (req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"inputTokens":3}');
    const body = { input: { converse: { messages: [{ role: 'user', content: [{ text: 'hi' }] }] } } };
    const r = await fetch(`${gw.url}/model/${encodeURIComponent(LLAMA)}/count-tokens?X-Amz-Security-Token=SECRETSESSION&x=1`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-amz-security-token': 'SECRETSESSION' },
      body: JSON.stringify(body) });
    assert.equal(r.status, 200, 'counting is free: no spend limit applies to it');
    await r.json();
    assert.equal(seen.url, `/model/${encodeURIComponent(LLAMA)}/count-tokens?x=1`);
    assert.equal(seen.headers['x-amz-security-token'], undefined);
    assert.deepEqual(JSON.parse(seen.body), body, 'no output cap injected into a count');
    const rec = await record(r.headers.get('x-keyless-request-id'));
    assert.match(rec.request_headers, /x-amz-security-token: \[redacted\]/);
    assert.ok(!JSON.stringify(rec).includes('SECRETSESSION'));
  });
});

// Bedrock with IAM credentials (provider "aws"): keyless signs each request
// with SigV4. The upstream here checks every signature as AWS does, with the
// AWS SDK's own signer over the headers the request says it signed, and
// answers AWS's 403 when it does not match.
describe('Amazon Bedrock with IAM credentials (SigV4)', () => {
  const creds = { accessKeyId: 'AKIAKEYLESSTEST00001', secretAccessKey: 'kEyLeSs/sEcReT+aCcEsS/kEy0123456789abcdEF',
    sessionToken: 'IQoJb3JpZ2luX2VjKEYLESS-session-token-EXAMPLE' };
  let up;
  const seen = [];
  const issued = []; // temporary credentials the simulators below hand out
  const signingDate = (d) => new Date(Date.UTC(+d.slice(0, 4), +d.slice(4, 6) - 1, +d.slice(6, 8), +d.slice(9, 11),
    +d.slice(11, 13), +d.slice(13, 15)));
  async function verify(req, body) {
    const auth = req.headers.authorization || '';
    const m = auth.match(/^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/);
    const known = m && [creds, ...issued].find((c) => c.accessKeyId === m[1]);
    if (!known || !req.headers['x-amz-date']) return false;
    const signer = new SignatureV4({ credentials: known, region: m[3], service: m[4], sha256: Sha256,
      uriEscapePath: true, applyChecksum: false });
    const [path, qs] = req.url.split('?');
    const headers = {};
    for (const h of m[5].split(';')) headers[h] = req.headers[h];
    const signed = await signer.sign({ method: req.method, protocol: 'http:', hostname: '127.0.0.1',
      port: up.address().port, path, query: Object.fromEntries(new URLSearchParams(qs || '')), headers, body },
    { signingDate: signingDate(req.headers['x-amz-date']) });
    return signed.headers.authorization === auth && m[3] === 'us-east-1' && m[4] === 'bedrock';
  }
  before(async () => {
    up = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (d) => chunks.push(d));
      req.on('end', async () => {
        const body = Buffer.concat(chunks).toString();
        const ok = await verify(req, body);
        seen.push({ url: req.url, headers: req.headers, body, ok });
        if (req.headers['x-case'] === 'echo') { // a debugging proxy that echoes what it was sent
          const sent = `${req.headers.authorization} ${req.headers['x-amz-security-token']}`;
          return res.writeHead(403, { 'content-type': 'application/json', 'x-echo': sent })
            .end(JSON.stringify({ message: `you sent ${sent}` }));
        }
        if (!ok) {
          return res.writeHead(403, { 'content-type': 'application/json', 'x-amzn-errortype': 'InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral.service/' })
            .end(JSON.stringify({ message: 'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.' }));
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({
          output: { message: { role: 'assistant', content: [{ text: 'signed and served' }] } }, stopReason: 'end_turn',
          usage: { inputTokens: 7, outputTokens: 3, totalTokens: 10 }, metrics: { latencyMs: 5 } }));
      });
    });
    await new Promise((r) => up.listen(0, '127.0.0.1', r));
  });
  after(() => new Promise((r) => up.close(r)));
  const provider = (aws) => ({ baseurl: `http://127.0.0.1:${up.address().port}`, aws, models: [HAIKU],
    compatibility: { bedrock_converse: true, bedrock_model_invoke: true } });
  const client = (g) => new BedrockRuntimeClient({ endpoint: g.url, region: 'us-east-1', maxAttempts: 1,
    credentials: { accessKeyId: 'caller-dummy', secretAccessKey: 'caller-dummy' }, requestHandler: new NodeHttpHandler() });

  it('the AWS SDK\'s requests reach Bedrock signed with the gateway\'s credentials; the caller\'s signature does not', async () => {
    const dir = tempDir('kl-aws-');
    writeFileSync(join(dir, 'secret'), `${creds.secretAccessKey}\n`);
    const g = await startGateway({ providers: { bedrock: provider({ access_key_id: creds.accessKeyId,
      access_secret: `file:${join(dir, 'secret')}`, session_token: '${KL_TEST_AWS_SESSION}', region: 'us-east-1' }) } },
    { env: { KL_TEST_AWS_SESSION: creds.sessionToken } });
    const aws = client(g);
    try {
      const r = await aws.send(new ConverseCommand({ modelId: HAIKU, messages: [{ role: 'user', content: [{ text: 'hi' }] }] }));
      assert.equal(r.output.message.content[0].text, 'signed and served');
      const s = seen.at(-1);
      assert.ok(s.ok, 'the signature checks out');
      assert.equal(s.url, `/model/${encodeURIComponent(HAIKU)}/converse`, 'the model id\'s colon is sent as %3A (and signed as %253A)');
      assert.equal(s.headers['x-amz-security-token'], creds.sessionToken);
      assert.match(s.headers.authorization, /SignedHeaders=host;x-amz-date;x-amz-security-token,/);
      assert.ok(!s.headers.authorization.includes('caller-dummy'), 'the caller\'s own signature is not forwarded');
      // a body keyless rewrites (the output cap a quota needs is not the case here, but the
      // InvokeModel body is sent as keyless holds it) is signed as sent
      const inv = await fetch(`${g.url}/model/${encodeURIComponent(HAIKU)}/invoke?trace=1`, { method: 'POST',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify({ anthropic_version: 'bedrock-2023-05-31',
          max_tokens: 20, messages: [{ role: 'user', content: 'hi' }] }) });
      assert.equal(inv.status, 200);
      await inv.text();
      assert.ok(seen.at(-1).ok, 'a query string and an InvokeModel body are signed too');
      // an upstream that echoes the session token and key id hands neither to the caller
      const echo = await fetch(`${g.url}/model/${encodeURIComponent(HAIKU)}/converse`, { method: 'POST',
        headers: { 'content-type': 'application/json', 'x-case': 'echo' },
        body: JSON.stringify({ messages: [{ role: 'user', content: [{ text: 'hi' }] }] }) });
      assert.equal(echo.status, 403);
      const text = await echo.text();
      assert.match(text, /you sent AWS4-HMAC-SHA256 Credential=\*{20}\//);
      for (const secret of [creds.sessionToken, creds.accessKeyId]) {
        assert.ok(!text.includes(secret), 'not in the body');
        assert.ok(![...echo.headers.values()].some((v) => v.includes(secret)), 'not in a header');
      }
    } finally {
      aws.destroy();
      await g.stop();
    }
    for (const secret of [creds.secretAccessKey, creds.sessionToken])
      assert.ok(!g.output().includes(secret), 'the credentials are not logged');
  });

  // Temporary credentials as AWS's credential services hand them out: an hour (or six) of life,
  // an ASIA… key id, a session token.
  const temporary = (tag) => {
    const c = { accessKeyId: `ASIA${tag.toUpperCase().replace(/[^A-Z0-9]/g, '').slice(0, 6).padEnd(6, 'X')}${crypto.randomBytes(5).toString('hex').toUpperCase()}`,
      secretAccessKey: crypto.randomBytes(30).toString('base64'), sessionToken: `IQoJ${tag}-${crypto.randomBytes(40).toString('base64')}` };
    issued.push(c);
    return c;
  };
  const expiry = () => new Date(Date.now() + 3600e3).toISOString().replace(/\.\d+Z$/, 'Z');
  const listen = async (handler) => {
    const srv = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => handler(req, res, body));
    });
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    return { srv, url: `http://127.0.0.1:${srv.address().port}`, close: () => new Promise((r) => srv.close(r)) };
  };
  const converse = async (g) => {
    const aws = client(g);
    try {
      return await aws.send(new ConverseCommand({ modelId: HAIKU, messages: [{ role: 'user', content: [{ text: 'hi' }] }] }));
    } finally {
      aws.destroy();
    }
  };

  // nothing of the test runner's own environment takes part (an empty variable counts as unset;
  // the shared config files named are absent, so no ~/.aws of the machine's is read)
  const clean = { AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '', AWS_SESSION_TOKEN: '', AWS_WEB_IDENTITY_TOKEN_FILE: '',
    AWS_ROLE_ARN: '', AWS_CONTAINER_CREDENTIALS_FULL_URI: '', AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '',
    AWS_EC2_METADATA_DISABLED: '', AWS_EC2_METADATA_SERVICE_ENDPOINT: '', AWS_PROFILE: '', AWS_ENDPOINT_URL_STS: '', AWS_ENDPOINT_URL_SSO: '', AWS_ENDPOINT_URL_SSO_OIDC: '',
    AWS_REGION: '',
    AWS_DEFAULT_REGION: '', HOME: '', AWS_CONFIG_FILE: '/nonexistent/keyless-test/config',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/keyless-test/credentials' };

  it('no keys in the config: the environment\'s credentials, from a web identity (EKS IRSA), the container endpoint (ECS, EKS Pod Identity) or IMDSv2', async () => {
    const dir = tempDir('kl-aws-env-');
    // AWS STS, AssumeRoleWithWebIdentity (Query API, XML answer)
    const jwt = `eyJhbGciOiJSUzI1NiJ9.${Buffer.from(JSON.stringify({ sub: 'system:serviceaccount:ai:keyless' })).toString('base64url')}.sig`;
    writeFileSync(join(dir, 'token'), `${jwt}\n`);
    const role = 'arn:aws:iam::123456789012:role/keyless-bedrock';
    let stsCreds;
    const sts = await listen((req, res, body) => {
      const f = new URLSearchParams(body);
      if (req.method !== 'POST' || f.get('Action') !== 'AssumeRoleWithWebIdentity' || f.get('Version') !== '2011-06-15' ||
          f.get('RoleArn') !== role || f.get('WebIdentityToken') !== jwt || !f.get('RoleSessionName'))
        return res.writeHead(400, { 'content-type': 'text/xml' }).end('<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Couldn\'t retrieve verification key from your identity provider</Message></Error><RequestId>x</RequestId></ErrorResponse>');
      stsCreds = temporary('sts');
      res.writeHead(200, { 'content-type': 'text/xml' }).end(`<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ai:keyless</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/keyless-bedrock/${f.get('RoleSessionName')}</Arn><AssumedRoleId>AROAEXAMPLE:${f.get('RoleSessionName')}</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <SessionToken>${stsCreds.sessionToken}</SessionToken>
      <SecretAccessKey>${stsCreds.secretAccessKey}</SecretAccessKey>
      <Expiration>${expiry()}</Expiration>
      <AccessKeyId>${stsCreds.accessKeyId}</AccessKeyId>
    </Credentials>
    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>4d1b9a4c-0000-0000-0000-000000000000</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>`);
    });
    // the container endpoint, as the EKS Pod Identity agent serves it (an authorization token from a file)
    writeFileSync(join(dir, 'pod-token'), 'pod-identity-authorization-token');
    let podCreds;
    const pod = await listen((req, res) => {
      if (req.url !== '/v1/credentials' || req.headers.authorization !== 'pod-identity-authorization-token')
        return res.writeHead(403, { 'content-type': 'application/json' }).end('{"message":"Access denied"}');
      podCreds = temporary('pod');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ AccessKeyId: podCreds.accessKeyId,
        SecretAccessKey: podCreds.secretAccessKey, Token: podCreds.sessionToken, AccountId: '123456789012', Expiration: expiry() }));
    });
    // IMDSv2: a session token first (PUT), then the role and its credentials, none without the token
    let imdsCreds;
    const imds = await listen((req, res) => {
      if (req.method === 'PUT' && req.url === '/latest/api/token' && req.headers['x-aws-ec2-metadata-token-ttl-seconds'])
        return res.writeHead(200, { 'content-type': 'text/plain' }).end('AQAEAImdsSessionToken==');
      if (req.headers['x-aws-ec2-metadata-token'] !== 'AQAEAImdsSessionToken==') return res.writeHead(401).end();
      if (req.url === '/latest/meta-data/iam/security-credentials/')
        return res.writeHead(200, { 'content-type': 'text/plain' }).end('keyless-instance-role');
      if (req.url !== '/latest/meta-data/iam/security-credentials/keyless-instance-role') return res.writeHead(404).end();
      imdsCreds = temporary('imds');
      res.writeHead(200, { 'content-type': 'text/plain' }).end(JSON.stringify({ Code: 'Success', LastUpdated: new Date().toISOString(),
        Type: 'AWS-HMAC', AccessKeyId: imdsCreds.accessKeyId, SecretAccessKey: imdsCreds.secretAccessKey,
        Token: imdsCreds.sessionToken, Expiration: expiry() }));
    });
    const envs = [
      ['web identity', { AWS_WEB_IDENTITY_TOKEN_FILE: join(dir, 'token'), AWS_ROLE_ARN: role, AWS_ENDPOINT_URL_STS: sts.url }, () => stsCreds],
      ['container', { AWS_CONTAINER_CREDENTIALS_FULL_URI: `${pod.url}/v1/credentials`,
        AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: join(dir, 'pod-token') }, () => podCreds],
      ['instance metadata', { AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.url }, () => imdsCreds],
    ];
    try {
      for (const [name, env, which] of envs) {
        const g = await startGateway({ providers: { bedrock: provider({ region: 'us-east-1' }) },
          grants: [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' }] } }] }, { env: { ...clean, ...env } });
        try {
          const metrics = await (await fetch(`${g.url}/metrics`)).text();
          const left = metrics.match(new RegExp(`keyless_aws_credentials_seconds_left\\{source="${name}"\\} (\\d+)\n`));
          // an hour's credentials, used until a minute before they expire
          assert.ok(left && left[1] >= 3500 && left[1] <= 3540, `${name}: an hour's credentials, ${left?.[1]} s still used`);
          assert.match(metrics, new RegExp(`keyless_aws_credentials_failures\\{source="${name}"\\} 0\n`));
          const r = await converse(g);
          assert.equal(r.output.message.content[0].text, 'signed and served', name);
          const s = seen.at(-1);
          assert.ok(s.ok, `${name}: the signature checks out`);
          assert.ok(s.headers.authorization.includes(`Credential=${which().accessKeyId}/`), `${name}: its credentials`);
          assert.equal(s.headers['x-amz-security-token'], which().sessionToken);
        } finally {
          await g.stop();
        }
        for (const secret of [which().secretAccessKey, which().sessionToken])
          assert.ok(!g.output().includes(secret), `${name}: the credentials are not logged`);
      }
      // none anywhere: 503, and the log says why
      const g = await startGateway({ providers: { bedrock: provider({ region: 'us-east-1' }) } },
        { env: { ...clean, AWS_EC2_METADATA_DISABLED: 'true' } });
      try {
        const r = await fetch(`${g.url}/model/${encodeURIComponent(HAIKU)}/converse`, { method: 'POST',
          headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: [{ text: 'hi' }] }] }) });
        assert.equal(r.status, 503);
        assert.match((await r.json()).message, /no AWS credentials/);
        assert.match(g.output(), /AWS credentials: no AWS credentials: no access key, web identity or container endpoint/);
      } finally {
        await g.stop();
      }
      // credentials that arrive expired (a wrong clock), nearly spent (an agent's cached ones near their end: not a
      // question of the clock), or hold a line break (a header injection): refused, and said
      for (const [bad, why, not] of [[{ Expiration: new Date(Date.now() - 600e3).toISOString() }, /container credentials expired at \d+ ms since the epoch, 6\d\d s before this machine's clock: is the clock right\?/],
        [{ Expiration: new Date(Date.now() + 30e3).toISOString() }, /container credentials came with [23]\d s left, less than the 2 minutes keyless needs/, /clock/],
        [{ Token: 'IQoJ\r\nX-Injected: 1' }, /HTTP 200, no credentials/]]) {
        const odd = await listen((req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({
          AccessKeyId: 'ASIAODDCREDENTIALS1', SecretAccessKey: 'secret', Token: 'IQoJtoken', Expiration: expiry(), ...bad })));
        const g4 = await startGateway({ providers: { bedrock: provider({ region: 'us-east-1' }) } },
          { env: { ...clean, AWS_CONTAINER_CREDENTIALS_FULL_URI: `${odd.url}/v1/credentials` } });
        try {
          const r = await fetch(`${g4.url}/model/${encodeURIComponent(HAIKU)}/converse`, { method: 'POST',
            headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [] }) });
          assert.equal(r.status, 503);
          await r.text();
          assert.match(g4.output(), why);
          if (not)
            assert.doesNotMatch(g4.output(), not);
        } finally {
          await g4.stop();
          await odd.close();
        }
      }
      // a container endpoint elsewhere, dressed as a local one: refused before any token is sent
      const g3 = await startGateway({ providers: { bedrock: provider({ region: 'us-east-1' }) } },
        { env: { ...clean, AWS_CONTAINER_CREDENTIALS_FULL_URI: `http://127.0.0.1:80@127.0.0.2:${pod.srv.address().port}/v1/credentials`,
          AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: join(dir, 'pod-token') } });
      try {
        const r = await fetch(`${g3.url}/model/${encodeURIComponent(HAIKU)}/converse`, { method: 'POST',
          headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [] }) });
        assert.equal(r.status, 503);
        await r.text();
        assert.match(g3.output(), /AWS_CONTAINER_CREDENTIALS_FULL_URI must name the ECS or EKS Pod Identity agent/);
      } finally {
        await g3.stop();
      }
      // a web identity STS refuses: its code and message in the log
      writeFileSync(join(dir, 'token'), 'not-the-token\n');
      const g2 = await startGateway({ providers: { bedrock: provider({ region: 'us-east-1' }) } }, { env: { ...clean, ...envs[0][1] } });
      try {
        const r = await fetch(`${g2.url}/model/${encodeURIComponent(HAIKU)}/converse`, { method: 'POST',
          headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: [{ text: 'hi' }] }] }) });
        assert.equal(r.status, 503);
        await r.text();
        assert.match(g2.output(), /AssumeRoleWithWebIdentity for arn:aws:iam::123456789012:role\/keyless-bedrock\): HTTP 400 InvalidIdentityToken: Couldn't retrieve/);
        assert.ok(!g2.output().includes('not-the-token'), 'the web identity token is not logged');
      } finally {
        await g2.stop();
      }
    } finally {
      await sts.close();
      await pod.close();
      await imds.close();
    }
  });

  it('a web identity\'s role is assumed at STS of its own partition, whatever the first Bedrock provider\'s region', async () => {
    const dir = tempDir('kl-aws-part-');
    writeFileSync(join(dir, 'token'), 'eyJhbGciOiJSUzI1NiJ9.e30.sig\n');
    // a proxy that says where keyless went (STS is https: a CONNECT), and lets nothing through
    const targets = [];
    const proxy = http.createServer();
    proxy.on('connect', (req, sock) => {
      targets.push(req.url);
      sock.end('HTTP/1.1 403 Forbidden\r\n\r\n');
    });
    await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
    const purl = `http://127.0.0.1:${proxy.address().port}`;
    const bedrock = (region) => ({ ...provider({ region }), models: [`m-${region}`] });
    try {
      for (const [role, sts] of [['arn:aws-cn:iam::123456789012:role/keyless', 'sts.cn-north-1.amazonaws.com.cn:443'],
        ['arn:aws-us-gov:iam::123456789012:role/keyless', 'sts.us-gov-west-1.amazonaws.com:443'],
        ['arn:aws:iam::123456789012:role/keyless', 'sts.us-east-1.amazonaws.com:443']]) {
        targets.length = 0;
        // the first provider is of the other partition (the region the keeper is started with)
        const first = role.startsWith('arn:aws:') ? 'cn-north-1' : 'us-east-1';
        const g = await startGateway({ providers: { a: bedrock(first), b: bedrock(role.startsWith('arn:aws-cn:') ? 'cn-north-1' : 'us-gov-west-1') } },
          { env: { ...clean, AWS_WEB_IDENTITY_TOKEN_FILE: join(dir, 'token'), AWS_ROLE_ARN: role,
            HTTPS_PROXY: purl, https_proxy: purl, NO_PROXY: '', no_proxy: '' } });
        try {
          for (let i = 0; i < 100 && !targets.length; i++) await new Promise((r) => setTimeout(r, 50));
          assert.equal(targets[0], sts, role);
        } finally {
          await g.stop();
        }
      }
    } finally {
      await new Promise((r) => proxy.close(r));
    }
  });

  it('a failing container endpoint is logged by its host and path: not a full URI\'s query, nor a relative URI\'s path', async () => {
    const fail = await listen((req, res) => res.writeHead(500, { 'content-type': 'application/json' }).end('{"message":"agent unavailable"}'));
    const cases = [
      // an answer without credentials, and no answer at all
      [{ AWS_CONTAINER_CREDENTIALS_FULL_URI: `${fail.url}/v1/credentials?token=QuErYsEcReT1` }, 'QuErYsEcReT1',
        /AWS credentials: GET http:\/\/127\.0\.0\.1:\d+\/v1\/credentials: HTTP 500, no credentials/],
      [{ AWS_CONTAINER_CREDENTIALS_FULL_URI: `http://127.0.0.1:1/v1/credentials?token=QuErYsEcReT2` }, 'QuErYsEcReT2',
        /AWS credentials: GET http:\/\/127\.0\.0\.1:1\/v1\/credentials: /],
      // ECS's relative URI names the task's credentials: the agent's address is not reachable here
      [{ AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '/v2/credentials/5e0c6a1f-rElAtIvE-uuid' }, 'rElAtIvE',
        /AWS credentials: GET http:\/\/169\.254\.170\.2 \(at AWS_CONTAINER_CREDENTIALS_RELATIVE_URI\): /],
    ];
    try {
      for (const [env, secret, why] of cases) {
        const g = await startGateway({ providers: { bedrock: provider({ region: 'us-east-1' }) } }, { env: { ...clean, ...env } });
        try {
          for (let i = 0; i < 100 && !why.test(g.output()); i++) await new Promise((r) => setTimeout(r, 100));
          assert.match(g.output(), why);
        } finally {
          await g.stop();
        }
        assert.ok(!g.output().includes(secret), `${secret} is not logged: ${g.output()}`);
      }
    } finally {
      await fail.close();
    }
  });

  it('temporary credentials are renewed while still used, by one thread: a failed renewal keeps the old ones until their last minute, then 503', async (t) => {
    const clock = clocked(t);
    if (!clock)
      return;
    const { offset, opts } = clock;
    const gatewayNow = () => Date.now() + Number(readFileSync(offset, 'utf8'));
    // the gateway's clock moved to `ms` past credentials' last minute's start (a minute before they expire)
    const lastMinute = (c, ms) => writeFileSync(offset, String(c.expires - 60e3 + ms - Date.now()));
    // the container endpoint (ECS, EKS Pod Identity) hands out two minutes' credentials, each time new ones
    // (an agent whose role allows no more, or one that serves its cached credentials until they are nearly spent)
    let mode = 'ok', then = null; // then: the mode after the next credentials served
    const served = [];
    const hung = [];
    const pod = await listen((req, res) => {
      if (mode === 'fail')
        return res.writeHead(500, { 'content-type': 'application/json' }).end('{"message":"agent unavailable"}');
      if (mode === 'hang')
        return hung.push(res);
      const c = { ...temporary('short'), expires: Math.floor((gatewayNow() + 122e3) / 1000) * 1000 };
      served.push(c);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ AccessKeyId: c.accessKeyId,
        SecretAccessKey: c.secretAccessKey, Token: c.sessionToken, Expiration: new Date(c.expires).toISOString() }));
      if (then)
        [mode, then] = [then, null];
    });
    const g = await startGateway({ providers: { bedrock: provider({ region: 'us-east-1' }) },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' }] } }] },
    { env: { ...clean, ...opts.env, AWS_CONTAINER_CREDENTIALS_FULL_URI: `${pod.url}/v1/credentials` } });
    const converseRaw = async () => {
      const t0 = Date.now();
      const r = await fetch(`${g.url}/model/${encodeURIComponent(HAIKU)}/converse`, { method: 'POST',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: [{ text: 'hi' }] }] }) });
      return { status: r.status, errortype: r.headers.get('x-amzn-errortype'), body: await r.json(), ms: Date.now() - t0,
        key: r.status === 200 ? seen.at(-1).headers.authorization.match(/Credential=([^/]+)\//)[1] : null };
    };
    try {
      assert.equal(served.length, 1);
      let r = await converseRaw();
      assert.equal(r.status, 200);
      assert.equal(r.key, served[0].accessKeyId);
      // renewed while they still have more than the minute they are used until (not with a quarter of two minutes
      // left, 30 s after they stopped being used)
      for (let i = 0; i < 150 && served.length < 2; i++) await new Promise((res) => setTimeout(res, 100));
      lastMinute(served[0], 2e3); // the first credentials are no longer used
      r = await converseRaw();
      assert.equal(r.status, 200, `renewed before the first ones' last minute: ${JSON.stringify(r.body)}`);
      assert.equal(r.key, served.at(-1).accessKeyId);
      assert.ok(seen.at(-1).ok, 'signed with the new ones');
      // twenty requests at once on two workers: the one thread's credentials, no fetch of their own
      const before = served.length;
      const all = await Promise.all(Array.from({ length: 20 }, () => converseRaw()));
      assert.ok(all.every((x) => x.status === 200));
      assert.ok(served.length - before <= 1, `${served.length - before} fetches for 20 requests`);
      // the agent hangs after its next credentials, then fails: requests meanwhile are served at once with them
      then = 'hang';
      for (let i = 0; i < 300 && !hung.length; i++) await new Promise((res) => setTimeout(res, 100));
      assert.ok(hung.length, 'a renewal was tried');
      const held = served.at(-1);
      r = await converseRaw();
      assert.equal(r.status, 200);
      assert.equal(r.key, held.accessKeyId);
      assert.ok(r.ms < 1000, `not held up by the hanging agent (${r.ms} ms)`);
      mode = 'fail';
      for (const res of hung.splice(0)) res.destroy();
      r = await converseRaw();
      assert.equal(r.status, 200);
      assert.equal(r.key, held.accessKeyId);
      // past their last minute with no renewal: 503 in Bedrock's dialect, and the log says why
      lastMinute(held, 2e3);
      r = await converseRaw();
      assert.equal(r.status, 503);
      assert.equal(r.errortype, 'ServiceUnavailableException');
      assert.match(r.body.message, /no AWS credentials: getting them failed/);
      assert.match(await (await fetch(`${g.url}/metrics`)).text(), /keyless_aws_credentials_seconds_left\{source="container"\} 0\n/,
        'no longer used: no seconds left');
      const why = /AWS credentials: GET http:\/\/127\.0\.0\.1:\d+\/v1\/credentials: HTTP 500, no credentials/;
      for (let i = 0; i < 100 && !why.test(g.output()); i++) await new Promise((res) => setTimeout(res, 100));
      assert.match(g.output(), why);
      // the agent answers again: served again
      mode = 'ok';
      for (let i = 0; i < 100 && (r = await converseRaw()).status !== 200; i++) await new Promise((res) => setTimeout(res, 100));
      assert.equal(r.status, 200);
      assert.equal(r.key, served.at(-1).accessKeyId);
    } finally {
      mode = 'ok';
      for (const res of hung.splice(0)) res.destroy();
      await g.stop();
      await pod.close();
    }
    for (const c of served)
      for (const secret of [c.secretAccessKey, c.sessionToken])
        assert.ok(!g.output().includes(secret), 'the credentials are not logged');
  });

  it('credentials that expired while their renewal still runs: the 503 says so, not "yet"', async (t) => {
    const clock = clocked(t);
    if (!clock)
      return;
    const { offset, opts } = clock;
    const gatewayNow = () => Date.now() + Number(readFileSync(offset, 'utf8'));
    let mode = 'ok';
    const served = [], hung = [];
    // two minutes' credentials, renewed 10 s later: the renewal hangs (the agent's 5 s are not over)
    const pod = await listen((req, res) => {
      if (mode === 'hang')
        return hung.push(res);
      const c = { ...temporary('short'), expires: Math.floor((gatewayNow() + 122e3) / 1000) * 1000 };
      served.push(c);
      mode = 'hang';
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ AccessKeyId: c.accessKeyId,
        SecretAccessKey: c.secretAccessKey, Token: c.sessionToken, Expiration: new Date(c.expires).toISOString() }));
    });
    const g = await startGateway({ providers: { bedrock: provider({ region: 'us-east-1' }) } },
      { env: { ...clean, ...opts.env, AWS_CONTAINER_CREDENTIALS_FULL_URI: `${pod.url}/v1/credentials` } });
    try {
      assert.equal(served.length, 1);
      for (let i = 0; i < 200 && !hung.length; i++) await new Promise((res) => setTimeout(res, 100));
      assert.ok(hung.length, 'a renewal was tried');
      // the machine slept (the wall clock moved on) while the renewal hangs: past the credentials' last minute
      writeFileSync(offset, String(served[0].expires - 60e3 + 2e3 - Date.now()));
      const r = await fetch(`${g.url}/model/${encodeURIComponent(HAIKU)}/converse`, { method: 'POST',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: [{ text: 'hi' }] }] }) });
      assert.equal(r.status, 503);
      assert.equal(r.headers.get('x-amzn-errortype'), 'ServiceUnavailableException');
      assert.match((await r.json()).message, /no AWS credentials: the last ones expired, and no renewal has ended since/);
    } finally {
      for (const res of hung.splice(0)) res.destroy();
      await g.stop();
      await pod.close();
    }
  });

  it('a profile of the shared config files: its keys, a role chain (AssumeRole signed by its source), credential_process, IAM Identity Center (SSO)', async () => {
    const home = tempDir('kl-aws-home-');
    mkdirSync(join(home, '.aws', 'sso', 'cache'), { recursive: true });
    const defaultKeys = temporary('default');
    defaultKeys.sessionToken = undefined;
    const baseKeys = temporary('base');
    writeFileSync(join(home, '.aws', 'credentials'), `[default]
aws_access_key_id = ${defaultKeys.accessKeyId}
aws_secret_access_key = ${defaultKeys.secretAccessKey}

[base]
aws_access_key_id=${baseKeys.accessKeyId} ; the platform team's
aws_secret_access_key=${baseKeys.secretAccessKey}
aws_session_token=${baseKeys.sessionToken}
`);
    // the process profile prints what this file holds
    const processOut = join(home, 'process.json');
    writeFileSync(join(home, '.aws', 'config'), `[default]
region = us-east-1

[profile middle]
role_arn = arn:aws:iam::123456789012:role/middle
source_profile = base

[profile deploy]
role_arn = arn:aws:iam::123456789012:role/keyless-bedrock
source_profile = middle
external_id = keyless-ext
role_session_name = keyless-gw
duration_seconds = 7200

[profile "vault"]
credential_process = cat "${processOut}"

[profile broken-vault]
credential_process = echo "the vault is locked" >&2; exit 3

[profile slow-vault]
credential_process = sleep 37.25; echo never

[profile sso-dev]
sso_session = corp
sso_account_id = 123456789012
sso_role_name = BedrockUser

[sso-session corp]
sso_region = us-east-1
sso_start_url = https://corp.awsapps.com/start

[profile sso-old]
sso_start_url = https://old.awsapps.com/start
sso_region = us-east-1
sso_account_id = 123456789012
sso_role_name = BedrockUser

[profile regiononly]
region = eu-west-1

[profile envsrc]
role_arn = arn:aws:iam::123456789012:role/envsrc
credential_source = Environment

[profile fifo-identity]
role_arn = arn:aws:iam::123456789012:role/fifo
web_identity_token_file = ${join(home, 'token-fifo')}

[profile mfa]
role_arn = arn:aws:iam::123456789012:role/admin
source_profile = base
mfa_serial = arn:aws:iam::123456789012:mfa/dev
`);
    // STS AssumeRole: the Query API form, signed (service sts) by credentials it knows
    const assumed = [];
    const sts = await listen(async (req, res, body) => {
      const f = new URLSearchParams(body);
      const auth = req.headers.authorization || '';
      const m = auth.match(/^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/sts\/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/);
      const signer = m && [defaultKeys, baseKeys, ...issued].find((c) => c.accessKeyId === m[1]);
      let ok = false;
      if (signer) {
        const headers = {};
        for (const h of m[4].split(';')) headers[h] = req.headers[h];
        const signed = await new SignatureV4({ credentials: signer, region: m[3], service: 'sts', sha256: Sha256,
          uriEscapePath: true, applyChecksum: false }).sign({ method: 'POST', protocol: 'http:', hostname: '127.0.0.1',
          port: sts.srv.address().port, path: req.url, headers, body }, { signingDate: signingDate(req.headers['x-amz-date']) });
        ok = signed.headers.authorization === auth && (!signer.sessionToken || req.headers['x-amz-security-token'] === signer.sessionToken);
      }
      if (!ok || f.get('Action') !== 'AssumeRole' || f.get('Version') !== '2011-06-15')
        return res.writeHead(403, { 'content-type': 'text/xml' }).end('<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message></Error><RequestId>x</RequestId></ErrorResponse>');
      const c = temporary(f.get('RoleArn').split('/').pop());
      assumed.push({ by: signer.accessKeyId, role: f.get('RoleArn'), session: f.get('RoleSessionName'),
        external: f.get('ExternalId'), duration: f.get('DurationSeconds'), got: c.accessKeyId });
      res.writeHead(200, { 'content-type': 'text/xml' }).end(`<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/x/${f.get('RoleSessionName')}</Arn><AssumedRoleId>AROA:x</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <AccessKeyId>${c.accessKeyId}</AccessKeyId>
      <SecretAccessKey>${c.secretAccessKey}</SecretAccessKey>
      <SessionToken>${c.sessionToken}</SessionToken>
      <Expiration>${expiry()}</Expiration>
    </Credentials>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>c6104cbe-0000-0000-0000-000000000000</RequestId></ResponseMetadata>
</AssumeRoleResponse>`);
    });
    // IAM Identity Center's portal: GetRoleCredentials with the token `aws sso login` cached
    const ssoTokens = { corp: 'aoaAAAAAcorp-sso-access-token', 'https://old.awsapps.com/start': 'aoaAAAAAold-sso-access-token' };
    const iso = (ms) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
    const cacheFile = (key) => join(home, '.aws', 'sso', 'cache', `${crypto.createHash('sha1').update(key).digest('hex')}.json`);
    // the older kind: a token for eight hours, no refresh
    writeFileSync(cacheFile('https://old.awsapps.com/start'), JSON.stringify({ startUrl: 'https://old.awsapps.com/start',
      region: 'us-east-1', accessToken: ssoTokens['https://old.awsapps.com/start'], expiresAt: iso(Date.now() + 8 * 3600e3) }));
    // an sso-session's: its access token has two minutes left (the portal no longer takes it), and a refresh token
    const registration = { clientId: 'kl-test-client-id', clientSecret: 'kl-test-client-secret-jwt', registrationExpiresAt: iso(Date.now() + 90 * 86400e3) };
    writeFileSync(cacheFile('corp'), JSON.stringify({ startUrl: 'https://corp.awsapps.com/start', region: 'us-east-1',
      accessToken: 'aoaAAAAAcorp-stale-access-token', expiresAt: iso(Date.now() + 120e3), refreshToken: 'aorAAAAAcorp-refresh-1',
      ...registration }));
    // IAM Identity Center's OIDC service: CreateToken, the refresh token grant
    const refreshed = [];
    const oidc = await listen((req, res, body) => {
      const b = JSON.parse(body || '{}');
      refreshed.push(b.refreshToken);
      if (req.url !== '/token' || b.grantType !== 'refresh_token' || b.clientId !== registration.clientId ||
          b.clientSecret !== registration.clientSecret || b.refreshToken !== 'aorAAAAAcorp-refresh-1')
        return res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"invalid_grant","error_description":"Invalid refresh token provided"}');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ accessToken: ssoTokens.corp,
        tokenType: 'Bearer', expiresIn: 3600, refreshToken: 'aorAAAAAcorp-refresh-2' }));
    });
    let ssoCreds;
    const portal = await listen((req, res) => {
      const u = new URL(req.url, 'http://portal');
      if (u.pathname !== '/federation/credentials' || !Object.values(ssoTokens).includes(req.headers['x-amz-sso_bearer_token']))
        return res.writeHead(401, { 'content-type': 'application/json', 'x-amzn-errortype': 'UnauthorizedException' })
          .end('{"message":"Session token not found or invalid"}');
      if (u.searchParams.get('role_name') !== 'BedrockUser' || u.searchParams.get('account_id') !== '123456789012')
        return res.writeHead(403, { 'content-type': 'application/json' }).end('{"message":"No access"}');
      ssoCreds = temporary('sso');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ roleCredentials: {
        accessKeyId: ssoCreds.accessKeyId, secretAccessKey: ssoCreds.secretAccessKey, sessionToken: ssoCreds.sessionToken,
        expiration: Date.now() + 3600e3 } }));
    });
    const processCreds = temporary('process');
    writeFileSync(processOut, JSON.stringify({ Version: 1, AccessKeyId: processCreds.accessKeyId,
      SecretAccessKey: processCreds.secretAccessKey, SessionToken: processCreds.sessionToken, Expiration: expiry() }));
    const env = { ...clean, HOME: home, AWS_CONFIG_FILE: '', AWS_SHARED_CREDENTIALS_FILE: '', AWS_ENDPOINT_URL_STS: sts.url,
      AWS_ENDPOINT_URL_SSO: portal.url, AWS_ENDPOINT_URL_SSO_OIDC: oidc.url, AWS_EC2_METADATA_DISABLED: 'true' };
    const start = (profile, extra = {}) => startGateway({ providers: { bedrock: provider({ region: 'us-east-1' }) },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' }] } }] }, { env: { ...env, AWS_PROFILE: profile, ...extra } });
    // keys in the environment: a profile AWS_PROFILE names comes first, and may sign with them
    const envKeys = temporary('envkeys');
    const deployKeys = () => issued.find((c) => c.accessKeyId === assumed.at(-1).got);
    const cases = [
      // keys that do not expire: no seconds_left line (checked below)
      ['', 'profile', () => defaultKeys, /keyless_aws_credentials_failures\{source="profile"\} 0\n/],
      ['deploy', 'profile assume role', deployKeys, /seconds_left\{source="profile assume role"\} (3[0-5]\d\d)\n/],
      ['vault', 'profile process', () => processCreds, /seconds_left\{source="profile process"\} (3[0-5]\d\d)\n/],
      ['sso-dev', 'profile sso', () => ssoCreds, /seconds_left\{source="profile sso"\} (3[0-5]\d\d)\n/],
      ['sso-old', 'profile sso', () => ssoCreds, /seconds_left\{source="profile sso"\} (3[0-5]\d\d)\n/],
      ['envsrc', 'profile assume role', () => issued.find((c) => c.accessKeyId === assumed.at(-1).got),
        /seconds_left\{source="profile assume role"\} (3[0-5]\d\d)\n/, { AWS_ACCESS_KEY_ID: envKeys.accessKeyId,
          AWS_SECRET_ACCESS_KEY: envKeys.secretAccessKey, AWS_SESSION_TOKEN: envKeys.sessionToken }],
      // without AWS_PROFILE the environment's keys come before the default profile
      ['', 'environment', () => envKeys, /keyless_aws_credentials_failures\{source="environment"\} 0\n/, {
        AWS_ACCESS_KEY_ID: envKeys.accessKeyId, AWS_SECRET_ACCESS_KEY: envKeys.secretAccessKey, AWS_SESSION_TOKEN: envKeys.sessionToken }],
    ];
    try {
      for (const [profile, source, which, left, extra] of cases) {
        const g = await start(profile, extra);
        try {
          const metrics = await (await fetch(`${g.url}/metrics`)).text();
          assert.match(metrics, left, `${profile || 'default'}: ${source}`);
          if (source === 'profile' || source === 'environment')
            assert.doesNotMatch(metrics, /keyless_aws_credentials_seconds_left/, 'keys that do not expire');
          const r = await converse(g);
          assert.equal(r.output.message.content[0].text, 'signed and served', profile);
          const s = seen.at(-1);
          assert.ok(s.ok, `${profile || 'default'}: the signature checks out`);
          assert.ok(s.headers.authorization.includes(`Credential=${which().accessKeyId}/`), `${profile || 'default'}: its credentials`);
          assert.equal(s.headers['x-amz-security-token'], which().sessionToken);
        } finally {
          await g.stop();
        }
        for (const secret of [which().secretAccessKey, which().sessionToken, ...Object.values(ssoTokens), registration.clientSecret,
          'aorAAAAAcorp-refresh'].filter(Boolean))
          assert.ok(!g.output().includes(secret), `${profile || 'default'}: no credential in the log`);
      }
      assert.deepEqual(assumed.at(-1).by, envKeys.accessKeyId, 'envsrc: its credential_source, the environment\'s keys, signed');
      assert.equal(assumed.at(-1).role, 'arn:aws:iam::123456789012:role/envsrc');
      // the sso-session's token was refreshed once, and cached back as the AWS CLI caches it
      assert.deepEqual(refreshed, ['aorAAAAAcorp-refresh-1']);
      const cached = JSON.parse(readFileSync(cacheFile('corp'), 'utf8'));
      assert.equal(cached.accessToken, ssoTokens.corp);
      assert.equal(cached.refreshToken, 'aorAAAAAcorp-refresh-2');
      assert.equal(cached.clientId, registration.clientId);
      assert.ok(Math.abs(Date.parse(cached.expiresAt) - Date.now() - 3600e3) < 60e3, cached.expiresAt);
      // the chain: base's keys signed for middle, middle's temporary ones for deploy, with its settings
      const chain = [assumed.find((a) => a.role.endsWith('/middle')), assumed.find((a) => a.role.endsWith('/keyless-bedrock'))];
      assert.deepEqual(chain.map((a) => [a.by, a.role]), [[baseKeys.accessKeyId, 'arn:aws:iam::123456789012:role/middle'],
        [chain[0].got, 'arn:aws:iam::123456789012:role/keyless-bedrock']]);
      assert.deepEqual([chain[1].session, chain[1].external, chain[1].duration], ['keyless-gw', 'keyless-ext', '7200']);
      assert.deepEqual([chain[0].session, chain[0].external, chain[0].duration], ['keyless', null, null]);

      // the AWS SDK's own reader of the same files (fromIni) takes each profile the same way
      const sdkEnv = { HOME: home, AWS_ENDPOINT_URL_STS: sts.url, AWS_ENDPOINT_URL_SSO: portal.url, AWS_REGION: 'us-east-1',
        AWS_CONFIG_FILE: join(home, '.aws', 'config'), AWS_SHARED_CREDENTIALS_FILE: join(home, '.aws', 'credentials') };
      const saved = Object.fromEntries(Object.keys(sdkEnv).map((k) => [k, process.env[k]]));
      Object.assign(process.env, sdkEnv);
      try {
        const sdk = (profile) => fromIni({ profile, ignoreCache: true })();
        assert.equal((await sdk('default')).accessKeyId, defaultKeys.accessKeyId);
        assert.equal((await sdk('vault')).accessKeyId, processCreds.accessKeyId);
        assert.equal((await sdk('sso-dev')).accessKeyId, ssoCreds.accessKeyId);
        assert.equal((await sdk('sso-old')).accessKeyId, ssoCreds.accessKeyId);
        const n = assumed.length;
        assert.equal((await sdk('deploy')).accessKeyId, assumed.at(-1).got);
        assert.deepEqual(assumed.slice(n).map((a) => [a.by, a.role]), [[baseKeys.accessKeyId, 'arn:aws:iam::123456789012:role/middle'],
          [assumed[n].got, 'arn:aws:iam::123456789012:role/keyless-bedrock']]);
        assert.equal(assumed.at(-1).external, 'keyless-ext');
        for (const profile of ['nope', 'mfa', 'broken-vault', 'regiononly'])
          await assert.rejects(sdk(profile), `the SDK cannot use ${profile} either`);
      } finally {
        for (const [k, v] of Object.entries(saved)) {
          if (v === undefined) delete process.env[k];
          else process.env[k] = v;
        }
      }

      // what cannot work is said in the log, and the caller gets a 503
      assert.equal(spawnSync('mkfifo', [join(home, 'token-fifo')]).status, 0);
      writeFileSync(cacheFile('corp'), JSON.stringify({ accessToken: ssoTokens.corp, expiresAt: '2026-01-01T00:00:00Z',
        refreshToken: 'aorAAAAAcorp-revoked', ...registration }));
      writeFileSync(cacheFile('https://old.awsapps.com/start'), JSON.stringify({ accessToken: 'x', expiresAt: '2026-01-01T00:00:00Z' }));
      for (const [profile, why] of [
        ['nope', /AWS_PROFILE is nope, a profile neither the shared config file nor the credentials file has/],
        ['mfa', /AWS profile mfa asks for an MFA code \(mfa_serial\)/],
        ['broken-vault', /AWS profile broken-vault: credential_process exited with status 3: the vault is locked/],
        ['sso-dev', /AWS profile sso-dev: the SSO session expired \(refreshing it: POST http:\/\/127\.0\.0\.1:\d+\/token \(CreateToken\): HTTP 400 invalid_grant\): run `aws sso login --profile sso-dev`/],
        ['sso-old', /AWS profile sso-old: the SSO session expired: run `aws sso login --profile sso-old`/],
        // a profile with only a region names no credentials: the chain goes on (here to its end)
        ['regiononly', /no AWS credentials: no access key, web identity or container endpoint in the environment, no profile/],
        // a token file that is a FIFO (nothing ever writes it) is refused, not waited on: the gateway still stops
        ['fifo-identity', /the token file \S+token-fifo: not a regular file/],
      ]) {
        const g = await start(profile);
        try {
          const r = await fetch(`${g.url}/model/${encodeURIComponent(HAIKU)}/converse`, { method: 'POST',
            headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: [{ text: 'hi' }] }] }) });
          assert.equal(r.status, 503, profile);
          await r.text();
          assert.match(g.output(), why);
        } finally {
          await g.stop();
        }
      }
      // without AWS_PROFILE, a default profile that fails lets the chain go on (here to a container endpoint),
      // and a file that cannot be read (a directory) is taken for absent; both are said. With nothing after it,
      // the profile's error is the one logged; with AWS_PROFILE, the unreadable file is an error.
      const podKeys = temporary('pod2');
      const pod = await listen((req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({
        AccessKeyId: podKeys.accessKeyId, SecretAccessKey: podKeys.secretAccessKey, Token: podKeys.sessionToken, Expiration: expiry() })));
      writeFileSync(join(home, 'broken-config'), '[default]\ncredential_process = exit 4\n');
      const files = (config) => ({ AWS_CONFIG_FILE: config, AWS_SHARED_CREDENTIALS_FILE: join(home, 'no-such-file') });
      try {
        for (const [config, said] of [[join(home, 'broken-config'),
          /AWS credentials: the default profile failed \(AWS profile default: credential_process exited with status 4\); the container's are used/],
        [home, /AWS credentials: .*: not a regular file \(taken for absent\)/]]) {
          const g = await start('', { ...files(config), AWS_CONTAINER_CREDENTIALS_FULL_URI: `${pod.url}/creds` });
          try {
            await converse(g);
            assert.ok(seen.at(-1).ok && seen.at(-1).headers.authorization.includes(`Credential=${podKeys.accessKeyId}/`));
            assert.match(g.output(), said);
          } finally {
            await g.stop();
          }
        }
        for (const [profile, config, why] of [['', join(home, 'broken-config'), /AWS credentials: AWS profile default: credential_process exited with status 4/],
          ['vault', home, /AWS credentials: .*: not a regular file$/m]]) {
          const g = await start(profile, files(config));
          try {
            const r = await fetch(`${g.url}/model/${encodeURIComponent(HAIKU)}/converse`, { method: 'POST',
              headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: [{ text: 'hi' }] }] }) });
            assert.equal(r.status, 503);
            await r.text();
            assert.match(g.output(), why);
          } finally {
            await g.stop();
          }
        }
      } finally {
        await pod.close();
      }
      // a process that does not answer is stopped with the gateway, with what it started
      const slow = await start('slow-vault');
      await slow.stop();
      assert.equal(spawnSync('pgrep', ['-f', 'sleep 37.25']).status, 1, 'no process of the profile\'s left behind');
    } finally {
      await sts.close();
      await portal.close();
      await oidc.close();
    }
  });

  // The keeper of the environment's credentials, first needed by a reloaded configuration, is
  // started on the main thread while the workers answer /metrics, which asks it how its credentials
  // are: under ThreadSanitizer (make TSAN=1) an unsynchronized pointer between them is a report.
  it('a reload that first needs the environment\'s credentials starts their keeper while /metrics is read', async () => {
    const podKeys = temporary('reload');
    // the container endpoint answers after a while: the reload waits for it, scrapes go on meanwhile
    const pod = await listen((req, res) => setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ AccessKeyId: podKeys.accessKeyId, SecretAccessKey: podKeys.secretAccessKey,
        Token: podKeys.sessionToken, Expiration: expiry() })), 500));
    const config = (aws) => ({ providers: { bedrock: provider(aws) },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' }] } }] });
    const g = await startGateway(config({ access_key_id: creds.accessKeyId, access_secret: creds.secretAccessKey,
      region: 'us-east-1' }), { env: { ...clean, AWS_CONTAINER_CREDENTIALS_FULL_URI: `${pod.url}/creds` } });
    try {
      let scraping = true;
      const scrape = async () => {
        // a new connection each time, so every worker answers some
        for (let i = 0; scraping || i < 2; i++) {
          const agent = new Agent();
          const r = await fetch(`${g.url}/metrics`, { dispatcher: agent });
          assert.equal(r.status, 200);
          await r.text();
          await agent.close();
        }
      };
      const scrapers = [scrape(), scrape(), scrape()];
      const text = JSON.stringify({ ...JSON.parse(readFileSync(g.configPath, 'utf8')), ...config({ region: 'us-east-1' }) });
      writeFileSync(g.configPath, text);
      assert.match(await g.reload(), /configuration reloaded/);
      scraping = false;
      await Promise.all(scrapers);
      const metrics = await (await fetch(`${g.url}/metrics`)).text();
      assert.match(metrics, /keyless_aws_credentials_seconds_left\{source="container"\} 3[0-5]\d\d\n/);
      await converse(g);
      assert.ok(seen.at(-1).ok && seen.at(-1).headers.authorization.includes(`Credential=${podKeys.accessKeyId}/`));
    } finally {
      await g.stop();
      await pod.close();
    }
  });

  it('a wrong secret: Bedrock\'s 403 reaches the caller as the SDK\'s exception; an unset secret: 503; a missing region is a configuration error', async () => {
    const g = await startGateway({ providers: { bedrock: provider({ access_key_id: creds.accessKeyId,
      access_secret: 'not-the-secret', region: 'us-east-1' }) } });
    const aws = client(g);
    try {
      await assert.rejects(aws.send(new ConverseCommand({ modelId: HAIKU, messages: [{ role: 'user', content: [{ text: 'hi' }] }] })),
        (e) => e.$metadata.httpStatusCode === 403 && /signature we calculated does not match/.test(e.message));
      assert.equal(seen.at(-1).ok, false);
    } finally {
      aws.destroy();
      await g.stop();
    }
    // credentials from a variable that is not set: the provider answers 503, as one without its apikey does
    const g2 = await startGateway({ providers: { bedrock: provider({ access_key_id: creds.accessKeyId,
      access_secret: '${KL_TEST_AWS_SECRET_NOT_SET}', region: 'us-east-1' }) } });
    try {
      const r = await fetch(`${g2.url}/model/${encodeURIComponent(HAIKU)}/converse`, { method: 'POST',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: [{ text: 'hi' }] }] }) });
      assert.equal(r.status, 503);
      assert.match((await r.json()).message, /environment variable KL_TEST_AWS_SECRET_NOT_SET is not set/);
    } finally {
      await g2.stop();
    }
    const bin = join(BUILD, 'keyless');
    const cfg = join(tempDir('kl-aws-'), 'k.hujson');
    writeFileSync(cfg, JSON.stringify({ providers: { bedrock: provider({ access_key_id: 'AKIA', access_secret: 's' }) } }));
    const out = await runCommand(bin, ['check', '--config', cfg], process.env);
    assert.notEqual(out.code, 0);
    assert.match(out.out + out.err, /aws needs a region/);
  });
});
