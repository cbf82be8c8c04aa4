// Start-up, SIGHUP and graceful SIGTERM with a stream in flight.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, providersFor, BUILD, ROOT } from './lib/harness.mjs';

describe('lifecycle', () => {
  it('keyless check validates the example config and reports errors with positions', () => {
    const ok = spawnSync(join(BUILD, 'keyless'), ['check', '--config', join(ROOT, 'keyless.example.hujson')], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    const dir = mkdtempSync(join(tmpdir(), 'kl-check-'));
    const bad = join(dir, 'bad.hujson');
    writeFileSync(bad, '{\n  // comment\n  "providers": {"x": {"baseurl": 5,}},\n  "hooks": {},\n}\n');
    const r = spawnSync(join(BUILD, 'keyless'), ['check', '--config', bad], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stdout, /bad\.hujson:3:\d+: error: baseurl must be a string/);
    assert.match(r.stdout, /bad\.hujson:4:\d+: warning: section "hooks" is read but not enforced yet/);
  });

  it('refuses to start on a broken config', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kl-bad-'));
    const bad = join(dir, 'bad.hujson');
    writeFileSync(bad, '{"listen": {"workers": "many"}}');
    const r = spawnSync(join(BUILD, 'keyless'), ['serve', '--config', bad], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /workers must be a whole number/);
  });

  it('a second gateway on the same address is warned about (the kernel would split connections)', async () => {
    const net = await import('node:net');
    const probe = net.createServer();
    await new Promise((r) => probe.listen(0, '127.0.0.1', r));
    const port = probe.address().port;
    await new Promise((r) => probe.close(r));
    const config = { listen: { addresses: [`127.0.0.1:${port}`] }, providers: {} };
    const a = await startGateway(config);
    const b = await startGateway(config);
    assert.doesNotMatch(a.output(), /another process already listens/);
    assert.match(b.output(), new RegExp(`another process already listens on 127\\.0\\.0\\.1:${port}`));
    await b.stop();
    await a.stop();
  });

  it('SIGHUP is logged as not supported yet and the gateway keeps serving', async () => {
    const mock = await startMock();
    const gw = await startGateway({ providers: providersFor(mock.url) });
    gw.proc.kill('SIGHUP');
    for (let i = 0; i < 50 && !/reload is not supported/.test(gw.output()); i++) await sleep(20);
    assert.match(gw.output(), /reload is not supported/);
    assert.equal((await fetch(`${gw.url}/`)).status, 200);
    await gw.stop();
    await mock.stop();
  });

  it('access log lines are buffered but every one is written whole by SIGTERM', async () => {
    const mock = await startMock();
    const gw = await startGateway({ providers: providersFor(mock.url) });
    const n = 120;
    const ids = [];
    await Promise.all(Array.from({ length: n }, async (_, i) => {
      const r = await fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: i % 3 ? 'gpt-4o' : 'no-such-model', messages: [{ role: 'user', content: `hi ${i}` }] }),
      });
      await r.arrayBuffer();
      ids.push(r.headers.get('x-keyless-request-id'));
    }));
    const { code } = await gw.stop('SIGTERM');
    assert.equal(code, 0);
    await mock.stop();
    const access = gw.output().split('\n').filter((l) => /"POST \/v1\/chat\/completions"/.test(l));
    assert.equal(access.length, n, 'one access line per request');
    for (const l of access) {
      assert.match(l, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info \S+ 127\.0\.0\.1:\d+ "POST \/v1\/chat\/completions" (200 ok|404 \S+) login=\S+ model=(gpt-4o|no-such-model) provider=\S+ in=\d+ out=\d+ \d+\.\dms$/);
    }
    assert.equal(ids.filter(Boolean).length, n);
    for (const id of ids) assert.equal(access.filter((l) => l.includes(` ${id} `)).length, 1, id);
  });

  it('SIGTERM lets an in-flight stream finish, refuses new connections, exits 0', async () => {
    const mock = await startMock();
    const gw = await startGateway({ providers: providersFor(mock.url) });
    const client = new Anthropic({ baseURL: gw.url, apiKey: 'x', maxRetries: 0 });
    const stream = client.messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] },
      { headers: { 'x-mock': 'events=8;delay_events_ms=150' } });
    const first = new Promise((r) => stream.once('text', r));
    await first;
    const exited = new Promise((r) => gw.proc.once('exit', (code) => r(code)));
    gw.proc.kill('SIGTERM');
    const msg = await stream.finalMessage();
    assert.equal(msg.content[0].text, 'Hello from mockllm.');
    await assert.rejects(fetch(`${gw.url}/`));
    assert.equal(await exited, 0);
    await mock.stop();
  });
});
