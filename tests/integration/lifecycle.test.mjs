// Start-up, SIGHUP and graceful SIGTERM with a stream in flight.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { writeFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, providersFor, finalRecord, rawRequest, BUILD, ROOT, tempDir } from './lib/harness.mjs';

// A raw connection to gw: what it reads so far (got()), and when it closes.
async function rawConn(gw) {
  const u = new URL(gw.url);
  const sock = net.connect(Number(u.port), u.hostname);
  let got = '';
  sock.on('data', (d) => (got += d.toString('latin1')));
  const closed = new Promise((r) => sock.on('close', r));
  sock.on('error', () => {});
  await new Promise((r) => sock.on('connect', r));
  return { sock, closed, got: () => got };
}

// Another process takes the store's write lock and holds it (its transaction open) until lock.stdin ends with
// COMMIT; locked resolves once it holds it. sqlite3 waits (.timeout) for the writer if that is in a transaction.
function lockStore(db) {
  const lock = spawn('sqlite3', [db], { stdio: ['pipe', 'pipe', 'ignore'] });
  const locked = new Promise((resolve) => lock.stdout.on('data', (d) => String(d).includes('locked') && resolve()));
  lock.stdin.write(".timeout 10000\nBEGIN EXCLUSIVE;\nINSERT INTO requests SELECT * FROM requests LIMIT 0;\nSELECT 'locked';\n");
  return { lock, locked };
}

describe('lifecycle', () => {
  it('keyless check validates the example config and reports errors with positions', () => {
    const ok = spawnSync(join(BUILD, 'keyless'), ['check', '--config', join(ROOT, 'keyless.example.hujson')], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    const dir = tempDir('kl-check-');
    const bad = join(dir, 'bad.hujson');
    writeFileSync(bad, '{\n  // comment\n  "providers": {"x": {"baseurl": 5,}},\n  "connectors": {},\n}\n');
    const r = spawnSync(join(BUILD, 'keyless'), ['check', '--config', bad], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /bad\.hujson:3:\d+: error: baseurl must be a string/);
    assert.match(r.stderr, /bad\.hujson:4:\d+: warning: section "connectors" is read but not enforced yet/);
  });

  it('keyless check writes its problems to stderr and only the summary to stdout (as nginx -t, caddy validate)', () => {
    // a script's `keyless check 2>errors.log` keeps every problem, and its stdout is the verdict alone
    const dir = tempDir('kl-check-streams-');
    const bad = join(dir, 'bad.hujson');
    writeFileSync(bad, '{\n  "providers": {"x": {"baseurl": 5}},\n  "connectors": {},\n}\n');
    const r = spawnSync(join(BUILD, 'keyless'), ['check', '--config', bad], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stdout, /^\S*bad\.hujson: 1 error, \d+ warnings?\n$/);
    assert.match(r.stderr, /^\S*bad\.hujson:2:\d+: error: baseurl must be a string\n/);
    assert.match(r.stderr, /warning: section "connectors"/);
    assert.doesNotMatch(r.stderr, /1 error,/);
    const ok = spawnSync(join(BUILD, 'keyless'), ['check', '--config', join(ROOT, 'keyless.example.hujson')], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /^\S*keyless\.example\.hujson: 0 errors, \d+ warnings?\n$/);
  });

  it('an empty --config (a script\'s unset variable) is a usage error (2) for every command, not a file that cannot be opened', () => {
    for (const cmd of ['check', 'serve', 'usage', 'export']) {
      for (const args of [['--config', ''], ['--config=']]) {
        const r = spawnSync(join(BUILD, 'keyless'), [cmd, ...args], { encoding: 'utf8', timeout: 10000 });
        assert.equal(r.status, 2, `${cmd} ${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, new RegExp(`^keyless ${cmd}: --config FILE is required\n$`));
        assert.equal(r.stdout, '');
      }
    }
  });

  it('version prints the version, and takes no arguments', () => {
    const run = (...args) => spawnSync(join(BUILD, 'keyless'), args, { encoding: 'utf8' });
    for (const cmd of ['version', '--version']) {
      let r = run(cmd);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^keyless \d+\.\d+\.\d+\n$/);
      r = run(cmd, '--config');
      assert.equal(r.status, 2);
      assert.equal(r.stderr, `keyless: ${cmd} takes no arguments\n`);
      assert.equal(r.stdout, '');
    }
  });

  it('make run stops, saying why, when the simulator cannot listen (its port taken)', async (t) => {
    const taken = net.createServer();
    await new Promise((res, rej) => { taken.once('error', rej); taken.listen(8090, '127.0.0.1', res); }).catch(() => null);
    if (!taken.listening) return t.skip('127.0.0.1:8090 is in use by another process');
    try {
      // its own process group, all of it stopped if the script goes on to serve (as it had)
      const p = spawn('sh', [join(ROOT, 'scripts', 'run-example.sh')], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      p.stderr.on('data', (d) => (err += d));
      p.stdout.resume();
      const kill = setTimeout(() => process.kill(-p.pid, 'SIGKILL'), 15000);
      const code = await new Promise((res) => p.on('exit', (c, sig) => res(sig ?? c)));
      clearTimeout(kill);
      assert.equal(code, 1, err);
      assert.match(err, /make run: the simulator did not start \(is 127\.0\.0\.1:8090 in use\?\)/);
    } finally {
      taken.close();
    }
  });

  it('a provider baseurl with user:password@ is warned about, at check and at start, without the password', async () => {
    // libcurl sends the userinfo as Basic authorization, or drops it beside keyless's own Authorization header,
    // and no answer is masked for it as for an apikey
    const mock = await startMock();
    const providers = providersFor(mock.url.replace('http://', 'http://ops:hunter2@'));
    const dir = tempDir('kl-userinfo-');
    const cfg = join(dir, 'k.hujson');
    writeFileSync(cfg, JSON.stringify({ providers }));
    const r = spawnSync(join(BUILD, 'keyless'), ['check', '--config', cfg], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /warning: provider openai: baseurl carries credentials \(user:password@\)/);
    assert.doesNotMatch(r.stdout + r.stderr, /hunter2|ops:/);
    const gw = await startGateway({ providers });
    try {
      const res = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }) });
      assert.equal(res.status, 200);
      assert.doesNotMatch(await res.text(), /hunter2/);
      const who = await (await fetch(`${gw.url}/api/whoami`)).text();
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      const rec = JSON.stringify(await finalRecord(gw, res.headers.get('x-keyless-request-id')));
      assert.doesNotMatch(who + metrics + rec, /hunter2/);
      assert.match(gw.output(), /baseurl carries credentials/);
      assert.doesNotMatch(gw.output(), /hunter2/);
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });

  it('refuses to start on a broken config', () => {
    const dir = tempDir('kl-bad-');
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

  it('SIGHUP reloads the configuration whole; a stream in flight finishes on the one it started with', async () => {
    const mock = await startMock();
    const grants = (models) => [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models }] } }];
    const base = { providers: providersFor(mock.url), listen: { addresses: ['127.0.0.1:0'], workers: 2 }, log: { level: 'info', access: true } };
    const gw = await startGateway({ ...base, grants: grants('openai/*') });
    const write = (c) => writeFileSync(gw.configPath, typeof c === 'string' ? c : JSON.stringify(c));
    const claude = async () => {
      const r = await fetch(`${gw.url}/v1/messages`, {
        method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
        body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }),
      });
      await r.arrayBuffer();
      return r;
    };
    const hup = async (re) => {
      assert.match(await gw.reload(), re);
      await sleep(50); // the workers take the new snapshot through their mailboxes
    };
    assert.equal((await claude()).status, 404, 'not granted yet');
    // an OpenAI stream in flight across the reload
    const stream = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-mock': 'events=6;delay_events_ms=100' },
      body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'x' }] }),
    });
    const reader = stream.body.getReader();
    await reader.read();

    write({ ...base, grants: grants('**'), log: { level: 'warn', access: true } });
    await hup(/SIGHUP: configuration reloaded from \S+ \(\d+ providers\)/);
    const granted = await claude();
    assert.equal(granted.status, 200, 'the new grants apply');
    let text = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    assert.match(text, /data: \[DONE\]/, 'the stream finished');

    // a file with errors, or one that changes what only a restart applies: nothing is reloaded
    write('{"grants": [');
    await hup(/has errors; keeping the running configuration/);
    assert.equal((await claude()).status, 200);
    write({ ...base, listen: { ...base.listen, workers: 3 }, grants: grants('openai/*') });
    await hup(/listen\.workers changed in \S+, which takes a restart; nothing was reloaded/);
    assert.equal((await claude()).status, 200, 'the grants of that file were not applied either');
    await gw.stop();
    await mock.stop();
    // log.level "warn" from the reload on: the requests after it wrote no access line
    const id = granted.headers.get('x-keyless-request-id');
    assert.ok(id);
    assert.ok(!gw.output().includes(id), 'an info access line after the reload to warn');
    assert.match(gw.output(), /"POST \/v1\/messages" 404/, 'the access line from before the reload');
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

  it('a path any client sends cannot break or reorder its access line: line separators, C1 controls, bidi overrides and quotes as %XX', async () => {
    const gw = await startGateway({ providers: {} });
    // what a viewer that breaks lines at U+2028 (or NEL) would show as a line of its own
    const forged = '/x\u2028' + '2026-01-01T00:00:00.000Z\u00a0info\u00a0id\u00a0100.64.0.9:1\u00a0"POST\u00a0/v1/chat/completions"' +
      '\u00a0200\u00a0ok\u00a0login=ceo@corp\u0085\u202e/model/us.claude%3A0';
    await rawRequest(gw.url, Buffer.concat([Buffer.from('GET '), Buffer.from(forged, 'utf8'),
      Buffer.from(' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')]));
    await gw.stop();
    const line = gw.output().split('\n').find((l) => l.includes('"GET /x'));
    assert.ok(line, gw.output());
    assert.doesNotMatch(line, /[\u2028\u0085\u202e]/);
    assert.match(line, / "GET \/x%E2%80%A82026-01-01T00:00:00\.000Z\u00a0info[^"]*%22POST\u00a0\/v1\/chat\/completions%22[^"]*%C2%85%E2%80%AE\/model\/us\.claude%3A0" 404 not_found login=- /);
  });

  it('a byte of a path that begins no UTF-8 character is %XX alone: it carries no quote, NEL or U+2028 onto the access line', async () => {
    const gw = await startGateway({ providers: {} });
    // each lead byte (F0, C3, E0) is followed by what it would have carried
    const path = Buffer.concat([Buffer.from('/x'), Buffer.from([0xf0]), Buffer.from('"\u00a0login=ceo', 'utf8'),
      Buffer.from([0xc3]), Buffer.from('\u0085', 'utf8'), Buffer.from([0xe0]), Buffer.from('\u2028', 'utf8'),
      Buffer.from([0xf0]), Buffer.from('\u202e', 'utf8'), Buffer.from('/end')]);
    await rawRequest(gw.url, Buffer.concat([Buffer.from('GET '), path,
      Buffer.from(' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')]));
    await gw.stop();
    const line = gw.output().split('\n').find((l) => l.includes('"GET /x'));
    assert.ok(line, gw.output());
    assert.doesNotMatch(line, /[\u2028\u0085\u202e\ufffd]/);
    assert.match(line, / "GET \/x%F0%22\u00a0login=ceo%C3%C2%85%E0%E2%80%A8%F0%E2%80%AE\/end" 404 not_found login=- /);
  });

  it('a long path is cut to its first 1 KiB in the access line, as in the record, so the fields after it stay', async () => {
    const gw = await startGateway({ providers: {} });
    // "/" + 1,022 "p" + U+20AC: the cut at 1,024 bytes would split the character
    const path = '/' + 'p'.repeat(1022) + '\u20ac' + 'q'.repeat(5000);
    await rawRequest(gw.url, Buffer.concat([Buffer.from('GET '), Buffer.from(path, 'utf8'),
      Buffer.from(' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')]));
    await gw.stop();
    const line = gw.output().split('\n').find((l) => l.includes('"GET /ppp'));
    assert.ok(line, gw.output());
    assert.match(line, new RegExp(` "GET /p{1022}" 404 not_found login=- model=- provider=- in=\\d+ out=\\d+ \\d+\\.\\dms$`));
  });

  it('a path of escaped bytes, a long method or a long login pushes no field off the access line', async () => {
    const mock = await startMock();
    const gw = await startGateway({ identity: { serve_headers: true }, providers: providersFor(mock.url) });
    // 500 NELs (two bytes each, six once escaped): within the 1 KiB kept, three times that on the line
    await rawRequest(gw.url, Buffer.concat([Buffer.from('GET /n'), Buffer.from('\u0085'.repeat(500), 'utf8'),
      Buffer.from(' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')]));
    await rawRequest(gw.url, Buffer.from(`${'M'.repeat(1500)} /m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    // a 2,000-byte login (2,048 are accepted), its spaces escaped
    const login = 'a b'.repeat(660) + '@example.com';
    const r = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'tailscale-user-login': login },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(r.status, 200);
    await r.arrayBuffer();
    await gw.stop();
    await mock.stop();
    const lines = gw.output().split('\n');
    const nel = lines.find((l) => l.includes('"GET /n%C2%85'));
    assert.ok(nel, gw.output());
    assert.match(nel, /"GET \/n(%C2%85)+" 404 not_found login=- model=- provider=- in=\d+ out=\d+ \d+\.\dms$/);
    const method = lines.find((l) => l.includes(' "MMM'));
    assert.match(method, / "M{32} \/m" \d{3} \S+ login=- model=- provider=- in=\d+ out=\d+ \d+\.\dms$/);
    const long = lines.find((l) => l.includes(' login=a%20b'));
    assert.ok(long.length <= 2048, `${long.length} bytes`);
    assert.match(long, / 200 ok login=a(%20ba)+(%20)? model=gpt-4o provider=openai in=\d+ out=\d+ \d+\.\dms$/);
    assert.ok(long.match(/login=(\S+)/)[1].length <= 384);
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

  it('SIGTERM: a request pipelined behind one in flight is served too, and the connection closes after it', async () => {
    const mock = await startMock();
    const db = join(tempDir('kl-pipe-'), 'r.db');
    const gw = await startGateway({ store: { path: db }, providers: providersFor(mock.url) });
    const { sock, closed, got } = await rawConn(gw);
    const body = JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'x' }] });
    const req = (mockHdr) => `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `x-mock: ${mockHdr}\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    sock.write(req('events=10;delay_events_ms=100') + req('text=second_answer'));
    await sleep(300);
    const exited = new Promise((r) => gw.proc.once('exit', (code) => r(code)));
    gw.proc.kill('SIGTERM');
    await closed;
    assert.equal(await exited, 0);
    assert.equal((got().match(/^HTTP\/1.1 200 /gm) || []).length, 2, gw.output());
    // the second, a stream too, says the connection ends with it
    assert.match(got().slice(got().lastIndexOf('HTTP/1.1 200 ')), /^HTTP\/1.1 200 OK\r\n[^]*Connection: close\r\n[^]*"content":"swer"/);
    const n = spawnSync('sqlite3', [db, "SELECT count(*) FROM requests WHERE status = 200"], { encoding: 'utf8' });
    assert.equal(n.stdout.trim(), '2');
    await mock.stop();
  });

  it('SIGTERM: a request whose head has begun to arrive is read to its end and served, and the connection closes after it', async () => {
    const mock = await startMock();
    const db = join(tempDir('kl-head-'), 'r.db');
    const gw = await startGateway({ store: { path: db }, providers: providersFor(mock.url) });
    const { sock, closed, got } = await rawConn(gw);
    const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] });
    const req = `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${body.length}\r\n\r\n${body}`;
    sock.write(req.slice(0, 40)); // the head's first bytes, as a slow link or a large head brings them
    await sleep(200);
    const exited = new Promise((r) => gw.proc.once('exit', (code) => r(code)));
    gw.proc.kill('SIGTERM');
    await sleep(200);
    if (!sock.destroyed) sock.write(req.slice(40));
    await closed;
    assert.equal(await exited, 0);
    assert.match(got(), /^HTTP\/1.1 200 OK\r\n[^]*Connection: close\r\n/, gw.output());
    const row = spawnSync('sqlite3', [db, 'SELECT status, error_class FROM requests'], { encoding: 'utf8' });
    assert.equal(row.stdout.trim(), '200|');
    await mock.stop();
  });

  it('a request still arriving when the shutdown grace ends is recorded as cut by the shutdown, not as a client that left', async () => {
    const mock = await startMock();
    const db = join(tempDir('kl-shut-'), 'r.db');
    const gw = await startGateway({ listen: { timeouts: { shutdown: '1s' } }, store: { path: db },
      providers: providersFor(mock.url) });
    const u = new URL(gw.url);
    const sock = net.connect(Number(u.port), u.hostname);
    sock.on('error', () => {});
    await new Promise((r) => sock.on('connect', r));
    sock.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"mo');
    await sleep(200);
    const exited = new Promise((r) => gw.proc.once('exit', (code) => r(code)));
    gw.proc.kill('SIGTERM');
    assert.equal(await exited, 0);
    sock.destroy();
    const row = spawnSync('sqlite3', [db, 'SELECT status, error_class, error_message FROM requests'], { encoding: 'utf8' });
    assert.equal(row.stdout.trim(), '503|shutdown|the gateway shut down before the request was served (timeouts.shutdown)');
    await mock.stop();
  });

  it('a store locked at shutdown: given up after ten seconds of failures, and a SIGHUP meanwhile does not kill', async () => {
    const mock = await startMock();
    const db = join(tempDir('kl-lock-'), 'r.db');
    const gw = await startGateway({ store: { path: db }, providers: providersFor(mock.url) });
    const chat = () => fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }) });
    const first = await chat();
    assert.equal(first.status, 200);
    await first.json();
    await finalRecord(gw, first.headers.get('x-keyless-request-id')); // written: the writer is between transactions
    // another process holds the database's write lock (its transaction open)
    const { lock, locked } = lockStore(db);
    await locked;
    for (let i = 0; i < 3; i++) assert.equal((await chat()).status, 200);
    const exited = new Promise((r) => gw.proc.once('exit', (code, signal) => r({ code, signal })));
    gw.proc.kill('SIGTERM');
    await sleep(500);
    gw.proc.kill('SIGHUP'); // while the writer still tries
    const end = await exited;
    lock.stdin.end('COMMIT;\n');
    assert.deepEqual(end, { code: 0, signal: null });
    assert.match(gw.output(), /records could not be written at shutdown/);
    await mock.stop();
  });

  it('a file size limit the store reaches is a write that fails (and is retried), not the end of the process', async () => {
    // ulimit -f, systemd's LimitFSIZE=: SIGXFSZ's default action killed keyless, and the records queued with it
    const mock = await startMock();
    const db = join(tempDir('kl-fsize-'), 'r.db');
    const gw = await startGateway({ store: { path: db, captures: 'full' }, providers: providersFor(mock.url) }, { fsize: 600 });
    const big = 'x'.repeat(60000);
    for (let i = 0; i < 12; i++) {
      const r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: big }] }) });
      assert.equal(r.status, 200, `request ${i}`);
      await r.arrayBuffer();
    }
    let failed = false;
    for (let i = 0; i < 100 && !failed; i++) {
      failed = /record store write failed/.test(gw.output());
      if (!failed) await sleep(50);
    }
    assert.ok(failed, gw.output());
    assert.match(gw.output(), /File too large|disk|full|I\/O/i);
    assert.equal(gw.proc.exitCode, null, 'still running');
    assert.equal((await fetch(`${gw.url}/`)).status, 200, 'still serving');
    await gw.stop('SIGKILL');
    await mock.stop();
  });

  it('records queued while the store is locked are bounded by their memory too: past store.queue_bytes, 503', async () => {
    const mock = await startMock();
    const db = join(tempDir('kl-qbytes-'), 'r.db');
    const gw = await startGateway({ store: { path: db, captures: 'full', queue_bytes: '300KiB' }, providers: providersFor(mock.url) });
    const big = 'x'.repeat(60000);
    const chat = () => fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: big }] }) });
    const first = await chat();
    assert.equal(first.status, 200);
    await first.json();
    await finalRecord(gw, first.headers.get('x-keyless-request-id')); // written: the writer is between transactions
    const { lock, locked } = lockStore(db);
    let answered;
    try {
      await locked;
      const statuses = [];
      for (let i = 0; i < 12; i++) {
        const r = await chat();
        statuses.push(r.status);
        const body = await r.json();
        if (r.status === 503) {
          assert.match(body.error.message, /cannot record more requests right now \(record queue full\)/);
          assert.equal(r.headers.get('retry-after'), '1', 'when to try again, as the SDKs read it');
        }
      }
      answered = statuses.filter((s) => s === 200).length;
      // about 60 KB a record: five fill 300 KiB, the rest are refused
      assert.ok(answered >= 4 && answered <= 6, JSON.stringify(statuses));
      assert.deepEqual(statuses.slice(answered), new Array(12 - answered).fill(503));
    } catch (e) {
      lock.kill();
      await gw.stop();
      await mock.stop();
      throw e;
    }
    lock.stdin.end('COMMIT;\n');
    let status = 0;
    for (let i = 0; i < 100 && status !== 200; i++) {
      status = (await chat()).status;
      if (status !== 200) await sleep(100);
    }
    assert.equal(status, 200, 'taken again once the queue is written');
    await gw.stop();
    const count = spawnSync('sqlite3', [db, 'SELECT count(*) FROM requests'], { encoding: 'utf8' }).stdout.trim();
    assert.ok(Number(count) >= 1 + answered + 1, `every answered request has its record: ${count}`);
    await mock.stop();
  });

  it('a SIGHUP finding something other than a regular file at the configuration\'s path (a FIFO) refuses it, never waits', async () => {
    const mock = await startMock();
    const gw = await startGateway({ providers: providersFor(mock.url) });
    rmSync(gw.configPath);
    assert.equal(spawnSync('mkfifo', [gw.configPath]).status, 0);
    assert.match(await gw.reload(), /has errors; keeping the running configuration/);
    assert.match(gw.output(), /cannot open: not a regular file/);
    assert.equal((await fetch(`${gw.url}/`)).status, 200);
    const code = await gw.stop();
    assert.deepEqual(code, { code: 0, signal: null }, 'SIGTERM is heard');
    await mock.stop();
  });

  it('out of descriptors: the listeners pause instead of spinning, the failure is logged once, serving resumes', async () => {
    const mock = await startMock();
    // a connection limit above what 64 descriptors allow: accept() itself fails (the default limit, half the
    // descriptors, would mostly keep it from failing)
    const gw = await startGateway({ providers: providersFor(mock.url), listen: { max_connections: 1000 } }, { nofile: 64 });
    const u = new URL(gw.url);
    const socks = [];
    for (let i = 0; i < 100; i++) {
      const s = net.connect(Number(u.port), u.hostname);
      s.on('error', () => {});
      socks.push(s);
    }
    await sleep(1500);
    for (const s of socks) s.destroy();
    let status = 0;
    for (let i = 0; i < 100 && status !== 200; i++) {
      status = await fetch(`${gw.url}/`).then((r) => r.status, () => 0);
      if (status !== 200) await sleep(50);
    }
    assert.equal(status, 200, 'serving resumes once descriptors are free');
    const warnings = gw.output().split('\n').filter((l) => /accept failed/.test(l));
    assert.ok(warnings.length >= 1 && warnings.length <= 2, `${warnings.length} warnings (one per worker at most)`);
    assert.match(warnings[0], /Too many open files .*not accepting for 100 ms at a time/);
    await gw.stop();
    await mock.stop();
  });

  it('provider connections kept idle for reuse give way to requests that need a descriptor (their share, then on EMFILE)', async () => {
    // 256 descriptors, one worker: bursts of 60 callers to five providers (each on its own port) had left 60 idle
    // connections to each, until requests found no descriptor left (503, "cannot open a connection") while a
    // hundred or more sat idle; then 90 callers at once to a sixth, more than the idle ones leave room for
    const mocks = [];
    for (let i = 0; i < 6; i++) mocks.push(await startMock());
    const providers = {};
    mocks.forEach((m, i) => {
      providers[`p${i}`] = { baseurl: m.url, apikey: `sk-p${i}-0123456789abcdef`, models: [`model-${i}`], compatibility: { openai_chat: true } };
    });
    const gw = await startGateway({ providers, listen: { max_connections: 1000 } }, { nofile: 256, workers: 1 });
    const ask = (model) => fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', connection: 'close' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: '[[mock delay_headers_ms=300]] hi' }] }),
    }).then(async (r) => `${r.status} ${r.status === 200 ? '' : await r.text()}`, (e) => `0 ${e.cause || e}`);
    try {
      for (const [i, n] of [[0, 60], [1, 60], [2, 60], [3, 60], [4, 60], [5, 90]]) {
        const rs = await Promise.all(Array.from({ length: n }, () => ask(`model-${i}`)));
        assert.deepEqual(rs.filter((r) => r !== '200 '), [], `provider p${i}`);
      }
    } finally {
      await gw.stop();
      for (const m of mocks) await m.stop();
    }
  });

  it('out of descriptors at the first name lookup: the resolver is made again once they are free, not given up for good', async () => {
    const mock = await startMock();
    // a provider named by host name: the worker's resolver is made on its first lookup, which 80 callers at once
    // under 64 descriptors make while none is left (it had failed for good: every later request to the provider
    // was "name resolution is not available" until a restart)
    const gw = await startGateway({ listen: { max_connections: 1000 }, providers: {
      local: { baseurl: `http://localhost:${new URL(mock.url).port}`, apikey: 'sk-local-0123456789abcdef', models: ['gpt-4o'],
        compatibility: { openai_chat: true } } } }, { nofile: 64, workers: 1 });
    const ask = () => fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', connection: 'close' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    }).then(async (r) => ({ status: r.status, body: await r.text() }), (e) => ({ status: 0, body: String(e) }));
    const burst = await Promise.all(Array.from({ length: 80 }, ask));
    for (const r of burst.filter((b) => b.status !== 200)) {
      assert.equal(r.status, 503, r.body);
      assert.match(JSON.parse(r.body).error.message, /^the gateway cannot open a connection to provider local now: /);
    }
    await sleep(200);
    const after = await ask();
    assert.equal(after.status, 200, after.body);
    await gw.stop();
    await mock.stop();
  });
});
