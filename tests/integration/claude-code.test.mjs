// A real coding agent (Claude Code, print mode) through keyless to the
// simulator: the way developers will actually use the gateway.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startMock, startGateway, startHook, providersFor, KEYS, assertNoKeys, headerMap, runCommand as run, ROOT, tempDir } from './lib/harness.mjs';

describe('Claude Code', () => {
  let mock, gw, hook, told; // told: what an audit hook is told of each turn that called tools
  before(async () => {
    mock = await startMock();
    hook = await startHook();
    told = hook.calls;
    gw = await startGateway({
      providers: providersFor(mock.url),
      hooks: { audit: { url: hook.url('/audit') } },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
        { send_hooks: [{ name: 'audit', events: ['tool_call_entire_request'], send: ['tools', 'response_body'] }] }] } }],
    });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    await hook.close();
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  const claudeEnv = (home) => ({
    PATH: process.env.PATH,
    HOME: home,
    ANTHROPIC_BASE_URL: gw.url,
    ANTHROPIC_API_KEY: '-',
    ANTHROPIC_MODEL: 'claude-sonnet-4-5',
    ANTHROPIC_DEFAULT_HAIKU_MODEL: 'claude-haiku-4-5',
    ANTHROPIC_SMALL_FAST_MODEL: 'claude-haiku-4-5',
    DISABLE_TELEMETRY: '1',
    DISABLE_AUTOUPDATER: '1',
    DISABLE_ERROR_REPORTING: '1',
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
  });

  it('claude -p answers through the gateway', { timeout: 180000 }, async () => {
    await mock.clear();
    const env = claudeEnv(tempDir('kl-claude-home-'));
    const claude = join(ROOT, 'node_modules', '.bin', 'claude');
    const r = await run(claude, ['-p', 'Say hello. [[mock text=Hello_from_keyless_via_Claude_Code;in=2000;out=77;cache_read=1500;cache_write=120]]'], env);
    assert.equal(r.code, 0, `claude failed: ${r.out}\n${r.err}`);
    assert.match(r.out, /Hello from keyless via Claude Code/);
    const reqs = await mock.requests();
    const msgs = reqs.filter((q) => q.path.startsWith('/v1/messages'));
    assert.ok(msgs.length >= 1, 'Claude Code reached the provider through keyless');
    for (const q of msgs) {
      const h = headerMap(q.headers);
      assert.equal(h['x-api-key'], KEYS.anthropic);
      assert.ok(h['anthropic-version']);
    }
    assert.ok(msgs.some((q) => headerMap(q.headers)['x-claude-code-session-id']), 'session header passes through');

    // the record of the main turn: usage read from Claude Code's stream, its session
    const session = headerMap(msgs.find((q) => headerMap(q.headers)['x-claude-code-session-id']).headers)['x-claude-code-session-id'];
    let rec;
    for (let i = 0; i < 100 && !rec; i++) {
      const list = (await (await fetch(`${gw.url}/api/requests?session=${session}&limit=100`)).json()).requests;
      rec = list.find((x) => x.state === 'done' && x.output_tokens === 77);
      if (!rec) await new Promise((res) => setTimeout(res, 50));
    }
    assert.ok(rec, 'a record with the usage of the Claude Code turn');
    assert.equal(rec.input_tokens, 2000);
    assert.equal(rec.cache_read_tokens, 1500);
    assert.equal(rec.cache_write_tokens, 120);
    assert.equal(rec.stream, 1);
    assert.equal(rec.endpoint, 'anthropic.messages');
    assert.equal(rec.cost_known, 1);
    assert.match(rec.user_agent, /claude/i);
    assert.equal(told.length, 0, 'no tool was called: the tool hook is not told');
  });

  it('a turn that calls a tool: the audit hook is told which, with what, from Claude Code\'s own stream', { timeout: 180000 }, async () => {
    await mock.clear();
    const claude = join(ROOT, 'node_modules', '.bin', 'claude');
    // the simulator answers the first turn with a Glob call, then (seeing its result) with text
    const r = await run(claude, ['-p', 'List the files. [[mock tools=Glob;text=Done_listing]]'],
      claudeEnv(tempDir('kl-claude-home-')));
    assert.equal(r.code, 0, `claude failed: ${r.out}\n${r.err}`);
    for (let i = 0; i < 100 && told.length === 0; i++) await new Promise((res) => setTimeout(res, 50));
    const turn = told.find((t) => t.tool_calls?.some((c) => c.name === 'Glob'));
    assert.ok(turn, `told of the Glob call: ${JSON.stringify(told).slice(0, 500)}`);
    assert.deepEqual(turn.tool_calls, [{ name: 'Glob', params: { path: 'README.md' } }]);
    const use = turn.response_body.content.find((b) => b.type === 'tool_use');
    assert.deepEqual(use.input, { path: 'README.md' });
    assert.equal(turn.response_body.stop_reason, 'tool_use');
    assert.ok(!JSON.stringify(told).includes(KEYS.anthropic), 'no provider key reaches a hook');
  });

  it('under a tool policy: Claude Code is sent without the refused tools, and a call to one is stopped', { timeout: 180000 }, async () => {
    const gw2 = await startGateway({
      providers: providersFor(mock.url),
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' },
        { tools: { deny: ['Bash', 'Write'] } }] } }],
    });
    try {
      await mock.clear();
      const claude = join(ROOT, 'node_modules', '.bin', 'claude');
      const env = { ...claudeEnv(tempDir('kl-claude-home-')), ANTHROPIC_BASE_URL: gw2.url };
      // the simulator answers with a Bash call although Bash was not offered
      const r = await run(claude, ['-p', 'Run ls. [[mock tools=Bash;text=Running]]'], env);
      const sent = (await mock.requests()).filter((q) => q.path.startsWith('/v1/messages') &&
        JSON.parse(q.body).tools?.length);
      assert.ok(sent.length >= 1, `Claude Code's turn with tools reached the provider: ${r.out}\n${r.err}`);
      for (const q of sent) {
        const names = JSON.parse(q.body).tools.map((t) => t.name);
        assert.ok(names.includes('Read') && names.includes('Edit'), `the other tools are kept: ${names}`);
        assert.ok(!names.includes('Bash') && !names.includes('Write'), `refused tools are not sent: ${names}`);
      }
      assert.match(gw2.output(), /tool policy removed .*Bash/);
      assert.match(r.out + r.err, /the tool 'Bash', which the tool policy does not allow/);
      let blocked = false; // records are written asynchronously
      for (let i = 0; i < 100 && !blocked; i++) {
        const recs = await (await fetch(`${gw2.url}/api/requests?limit=20&error_class=blocked`)).json();
        blocked = recs.requests.some((q) => q.error_class === 'blocked' && q.tool_names === 'Bash');
        if (!blocked) await new Promise((res) => setTimeout(res, 30));
      }
      assert.ok(blocked, 'the stopped turn is on record as blocked');

      // the call as the answer's first block: the stream stops before any
      // block ended, where Claude Code would send the turn again without
      // streaming (billed in full, then refused as "Failed to authenticate")
      await mock.clear();
      const r2 = await run(claude, ['-p', 'Run ls. [[mock tools=Bash]]'], env);
      assert.notEqual(r2.code, 0);
      assert.match(r2.out + r2.err, /the tool 'Bash', which the tool policy does not allow/);
      assert.doesNotMatch(r2.out + r2.err, /authenticate/i);
      const turns = (await mock.requests()).filter((q) => q.path.startsWith('/v1/messages') &&
        JSON.parse(q.body).tools?.length);
      assert.equal(turns.length, 1, 'the turn was not sent again');
      assert.equal(JSON.parse(turns[0].body).stream, true);
    } finally {
      await gw2.stop();
    }
  });

  it('an answer guardrails withhold is shown as such, not as a failed login', { timeout: 180000 }, async () => {
    const gw2 = await startGateway({ providers: providersFor(mock.url),
      guardrails: { secrets: 'block', answers: true } });
    try {
      await mock.clear();
      const claude = join(ROOT, 'node_modules', '.bin', 'claude');
      const env = { ...claudeEnv(tempDir('kl-claude-home-')), ANTHROPIC_BASE_URL: gw2.url };
      // the provider's stream fails before its first block, so Claude Code asks again without streaming; that
      // whole answer holds a key, and is withheld (401 and 403 are "Failed to authenticate · Please run /login")
      const r = await run(claude,
        ['-p', 'My key? [[mock text=it_is_%41KIAIOSFODNN7Q3XM9PL;stream_error=500;stream_error_at=0]]'], env);
      assert.notEqual(r.code, 0);
      const whole = (await mock.requests())
        .filter((q) => q.path.startsWith('/v1/messages') && !JSON.parse(q.body).stream);
      assert.ok(whole.length >= 1, `Claude Code asked without streaming: ${r.out}\n${r.err}`);
      assert.match(r.out + r.err, /the answer was withheld by guardrails: it contains aws_access_key/);
      assert.doesNotMatch(r.out + r.err, /authenticate|\/login/i);
      assert.doesNotMatch(r.out + r.err, /AKIAIOSFODNN7Q3XM9PL/);
    } finally {
      await gw2.stop();
    }
  });

  it('a provider key that is not set: Claude Code shows why after one try, not after minutes of retries', { timeout: 180000 }, async () => {
    const providers = providersFor(mock.url);
    providers.anthropic.apikey = '${KEYLESS_TEST_UNSET_VAR}';
    const gw2 = await startGateway({ providers });
    try {
      const claude = join(ROOT, 'node_modules', '.bin', 'claude');
      const env = { ...claudeEnv(tempDir('kl-claude-home-')), ANTHROPIC_BASE_URL: gw2.url };
      // an overloaded_error is retried whatever x-should-retry says: 9 tries over 2 minutes, then killed here
      const r = await run(claude, ['-p', 'hi'], env, { timeoutMs: 60000 });
      assert.equal(r.code, 1, `claude: ${r.out}\n${r.err}`);
      assert.match(r.out + r.err, /provider anthropic has no API key: environment variable KEYLESS_TEST_UNSET_VAR is not set/);
      const tries = () => gw2.output().split('\n').filter((l) => l.includes('"POST /v1/messages') && / 503 unavailable /.test(l));
      for (let k = 0; k < 100 && !tries().length; k++) await new Promise((res) => setTimeout(res, 20)); // access lines are buffered
      assert.equal(tries().length, 1, tries().join('\n'));
    } finally {
      await gw2.stop();
    }
  });
});
