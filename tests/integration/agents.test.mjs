// The other coding agents the README tells how to point at keyless, run for
// real (Codex CLI over the Responses API, Gemini CLI over Gemini's SSE
// stream) against the simulator: a turn is answered and recorded with the
// provider's key added and the caller's dropped, and under a tool policy the
// agent is sent its tools without the refused ones and a call to one is
// stopped.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startMock, startGateway, providersFor, KEYS, assertNoKeys, headerMap, runCommand, ROOT, tempDir } from './lib/harness.mjs';

const CAP = 'tailscale.com/cap/aperture';

// The newest finished record that matches, once it is there (records are
// written asynchronously), or undefined.
// (Only a provider's records: the polls are recorded too.)
async function recordWhere(gw, pred, provider = 'openai') {
  for (let i = 0; i < 100; i++) {
    const list = (await (await fetch(`${gw.url}/api/requests?limit=50&provider=${provider}`)).json()).requests;
    const hit = list.find((r) => r.state === 'done' && pred(r));
    if (hit) return hit;
    await new Promise((res) => setTimeout(res, 50));
  }
  return undefined;
}

describe('Codex CLI and Gemini CLI', () => {
  let mock, gw, strict;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({ providers: providersFor(mock.url) });
    strict = await startGateway({
      providers: providersFor(mock.url),
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: '**' },
        { tools: { deny: ['exec_command', 'read_file'] } }] } }],
    });
  });
  after(async () => {
    await gw.stop();
    await strict.stop();
    await mock.stop();
    assertNoKeys(assert, gw.output() + strict.output(), 'gateway log');
  });

  // Codex reads its provider from $CODEX_HOME/config.toml, as the README says.
  function codex(target, prompt, model = 'gpt-4o', more = []) {
    const home = tempDir('kl-codex-');
    writeFileSync(join(home, 'config.toml'), [
      `model = "${model}"`, ...more, 'model_provider = "gw"', '[model_providers.gw]', 'name = "keyless"',
      `base_url = "${target.url}/v1"`, 'env_key = "OPENAI_API_KEY"', 'wire_api = "responses"', ''].join('\n'));
    return runCommand(join(ROOT, 'node_modules', '.bin', 'codex'), ['exec', '--skip-git-repo-check', prompt],
      { PATH: process.env.PATH, HOME: home, CODEX_HOME: home, OPENAI_API_KEY: 'sk-caller-must-not-pass' }, { cwd: home });
  }

  function gemini(target, prompt, timeoutMs, model = 'gemini-2.5-flash') {
    const home = tempDir('kl-gemini-');
    mkdirSync(join(home, '.gemini'));
    writeFileSync(join(home, '.gemini', 'settings.json'),
      JSON.stringify({ security: { auth: { selectedType: 'gemini-api-key' } } }));
    return runCommand(join(ROOT, 'node_modules', '.bin', 'gemini'), ['-m', model, '-p', prompt],
      { PATH: process.env.PATH, HOME: home, GOOGLE_GEMINI_BASE_URL: target.url, GEMINI_API_KEY: 'caller-must-not-pass',
        GEMINI_CLI_TRUST_WORKSPACE: 'true' }, { cwd: home, timeoutMs });
  }

  it('codex exec answers through the gateway over the Responses API, recorded with its usage', { timeout: 180000 }, async () => {
    await mock.clear();
    const r = await codex(gw, 'Say hello. [[mock text=Hello_from_keyless_via_Codex;in=3000;out=55]]');
    assert.equal(r.code, 0, `codex failed: ${r.out}\n${r.err}`);
    assert.match(r.out, /Hello from keyless via Codex/);
    const sent = (await mock.requests()).filter((q) => q.path === '/v1/responses');
    assert.ok(sent.length >= 1, 'Codex reached the provider through keyless');
    for (const q of sent) {
      const h = headerMap(q.headers);
      assert.equal(h.authorization, `Bearer ${KEYS.openai}`, 'the provider key is added, the caller\'s dropped');
      assert.equal(JSON.parse(q.body).stream, true);
    }
    const rec = await recordWhere(gw, (x) => x.output_tokens === 55);
    assert.ok(rec, 'a record with the usage of the Codex turn');
    assert.equal(rec.endpoint, 'openai.responses');
    assert.equal(rec.input_tokens + rec.cache_read_tokens, 3000, 'prompt tokens, cached ones apart');
    assert.equal(rec.cost_known, 1);
    assert.ok(rec.session_id, 'Codex\'s turn is tied to its session');
  });

  it('codex exec under a spend quota: its reasoning request gets an output cap with room for the reasoning', { timeout: 180000 }, async () => {
    const providers = providersFor(mock.url);
    providers.openai.models.push('gpt-5.5');
    const capped = await startGateway({ providers, quotas: { team: { capacity: '$50' } },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: '**' }, { quotas: [{ bucket: 'team' }] }] } }] });
    try {
      await mock.clear();
      const r = await codex(capped, 'Say hello. [[mock text=Reasoned_hello;out=30]]', 'gpt-5.5',
        ['model_reasoning_effort = "high"']);
      assert.equal(r.code, 0, `codex failed: ${r.out}\n${r.err}`);
      assert.match(r.out, /Reasoned hello/);
      const sent = (await mock.requests()).filter((q) => q.path === '/v1/responses').map((q) => JSON.parse(q.body));
      assert.ok(sent.length >= 1);
      for (const b of sent) {
        assert.ok(b.reasoning && b.reasoning.effort !== 'none', `Codex asks for reasoning: ${JSON.stringify(b.reasoning)}`);
        // the default 8192 for the answer, and 24576 for the reasoning that counts against the cap
        assert.equal(b.max_output_tokens, 8192 + 24576);
      }
    } finally {
      await capped.stop();
    }
  });

  it('gemini -p on a Gemini 3 model under a spend quota: its thinking level gets the reasoning room, as Gemini 2.5\'s budget does', { timeout: 180000 }, async () => {
    const providers = providersFor(mock.url);
    providers.gemini.models.push('gemini-3.1-pro-preview');
    const capped = await startGateway({ providers, quotas: { team: { capacity: '$50' } },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: '**' }, { quotas: [{ bucket: 'team' }] }] } }] });
    try {
      await mock.clear();
      const r = await gemini(capped, 'Say hello. [[mock text=Thought_hello;out=30]]', undefined, 'gemini-3.1-pro-preview');
      assert.equal(r.code, 0, `gemini failed: ${r.out}\n${r.err}`);
      assert.match(r.out, /Thought hello/);
      const sent = (await mock.requests()).filter((q) => q.path.includes(':streamGenerateContent')).map((q) => JSON.parse(q.body));
      assert.ok(sent.length >= 1);
      for (const b of sent) {
        assert.equal(b.generationConfig.thinkingConfig.thinkingLevel, 'HIGH', 'Gemini CLI asks Gemini 3 to think hard');
        // thoughts count against the cap: the default 8192 for the answer, and 24576 for the thinking
        assert.equal(b.generationConfig.maxOutputTokens, 8192 + 24576);
      }
    } finally {
      await capped.stop();
    }
  });

  it('a quota that can never cover the turn: Gemini CLI and Codex stop at once', { timeout: 120000 }, async () => {
    const tiny = await startGateway({ providers: providersFor(mock.url), quotas: { tiny: { capacity: '$0.000001' } },
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: '**' }, { quotas: [{ bucket: 'tiny' }] }] } }] });
    try {
      await mock.clear();
      // a 429 Gemini CLI takes for a passing limit it sends again ten times over three minutes
      const g = await gemini(tiny, 'Say hello.', 60000);
      assert.notEqual(g.code, null, 'Gemini CLI ended by itself');
      assert.notEqual(g.code, 0);
      assert.match(g.out + g.err, /quota tiny cannot cover this request .*more than the bucket can ever hold/);
      assert.equal((await mock.requests()).length, 0, 'nothing reached the provider');
      assert.ok(await recordWhere(tiny, (x) => x.error_class === 'quota_exceeded' && x.status === 400, 'gemini'));
      const list = (await (await fetch(`${tiny.url}/api/requests?limit=50&provider=gemini`)).json()).requests;
      assert.equal(list.filter((x) => x.error_class === 'quota_exceeded').length, 1, `asked once: ${JSON.stringify(list)}`);
      // Codex reads insufficient_quota as final (and shows its own words for it)
      const c = await codex(tiny, 'Say hello.');
      assert.notEqual(c.code, 0);
      assert.match(c.out + c.err, /Quota exceeded/);
      const cl = (await (await fetch(`${tiny.url}/api/requests?limit=50&provider=openai`)).json()).requests;
      assert.equal(cl.filter((x) => x.error_class === 'quota_exceeded').length, 1, 'Codex asked once');
    } finally {
      await tiny.stop();
    }
  });

  it('gemini -p answers through the gateway over streamGenerateContent, recorded with its usage', { timeout: 180000 }, async () => {
    await mock.clear();
    const r = await gemini(gw, 'Say hello. [[mock text=Hello_from_keyless_via_Gemini;in=2500;out=44]]');
    assert.equal(r.code, 0, `gemini failed: ${r.out}\n${r.err}`);
    assert.match(r.out, /Hello from keyless via Gemini/);
    const sent = (await mock.requests()).filter((q) => q.path.includes(':streamGenerateContent'));
    assert.ok(sent.length >= 1, 'Gemini CLI reached the provider through keyless');
    for (const q of sent) assert.equal(headerMap(q.headers)['x-goog-api-key'], KEYS.gemini);
    const rec = await recordWhere(gw, (x) => x.usage_known, 'gemini');
    assert.ok(rec, 'a record with the usage of the Gemini CLI turn');
    assert.equal(rec.input_tokens + rec.cache_read_tokens, 2500, 'prompt tokens, cached ones apart');
    assert.ok(rec.output_tokens >= 44, 'output (thoughts included)');
    assert.equal(rec.cost_known, 1);
  });

  it('under a tool policy: each agent is sent its tools without the refused one, and a call to it is stopped', { timeout: 240000 }, async () => {
    await mock.clear();
    // Codex: exec_command is refused; the simulator calls it anyway
    const c = await codex(strict, 'Run ls. [[mock tools=exec_command;text=Running]]');
    assert.notEqual(c.code, 0, 'the turn did not complete');
    assert.match(c.out + c.err, /the tool 'exec_command', which the tool policy does not allow/,
      'Codex shows why (from the response.failed event)');
    const cx = (await mock.requests()).filter((q) => q.path === '/v1/responses');
    assert.equal(cx.length, 1, 'Codex does not send the refused turn again (each time a billed request)');
    for (const q of cx) {
      const names = JSON.parse(q.body).tools.map((t) => t.name || t.type);
      assert.ok(!names.includes('exec_command'), `refused tool not sent: ${names}`);
      assert.ok(names.includes('write_stdin'), `the others are: ${names}`);
    }
    // Gemini CLI: read_file is refused. The call comes in the same moment as
    // the text; the error Google's way (bare JSON after the events) still
    // comes as a read of its own, so the CLI's SDK raises it (a 400, which the
    // CLI does not retry) rather than one the CLI takes for a broken
    // connection and sends again.
    await mock.clear();
    const g = await gemini(strict, 'Read README. [[mock tools=read_file;text=Reading]]');
    assert.notEqual(g.code, 0, 'the turn did not complete');
    assert.match(g.out + g.err, /the tool 'read_file', which the tool policy does not allow/, 'Gemini CLI shows why');
    const gm = (await mock.requests()).filter((q) => q.path.includes(':streamGenerateContent'));
    assert.equal(gm.length, 1, 'not retried');
    for (const q of gm) {
      const names = JSON.parse(q.body).tools.flatMap((t) => (t.functionDeclarations || []).map((d) => d.name));
      assert.ok(!names.includes('read_file'), `refused tool not sent: ${names}`);
      assert.ok(names.includes('list_directory'), `the others are: ${names}`);
    }
    assert.ok(await recordWhere(strict, (x) => x.error_class === 'blocked' && x.tool_names === 'exec_command'));
    assert.ok(await recordWhere(strict, (x) => x.error_class === 'blocked' && x.tool_names === 'read_file', 'gemini'));
  });
});
