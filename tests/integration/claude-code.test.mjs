// A real coding agent (Claude Code, print mode) through keyless to the
// simulator: the way developers will actually use the gateway.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMock, startGateway, providersFor, KEYS, assertNoKeys, headerMap, ROOT } from './lib/harness.mjs';

function run(cmd, args, env, timeoutMs = 120000) {
  return new Promise((resolveP) => {
    const p = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('exit', (code) => {
      clearTimeout(t);
      resolveP({ code, out, err });
    });
  });
}

describe('Claude Code', () => {
  let mock, gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({ providers: providersFor(mock.url) });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  it('claude -p answers through the gateway', { timeout: 180000 }, async () => {
    await mock.clear();
    const home = mkdtempSync(join(tmpdir(), 'kl-claude-home-'));
    const env = {
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
    };
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
  });
});
