// Streams are relayed as they arrive, a slow client pauses the provider
// instead of growing memory, and a client that leaves cancels the upstream.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { startMock, startGateway, providersFor, assertNoKeys, rawProvider } from './lib/harness.mjs';

// Resume a paused socket and read it to its end: the bytes it brought, and its last 200.
function readToEnd(sock) {
  let total = 0;
  let tail = '';
  sock.on('data', (d) => {
    total += d.length;
    tail = (tail + d.toString('latin1')).slice(-200);
  });
  sock.resume();
  return new Promise((r) => sock.once('end', () => r({ total, tail })));
}

function rssKiB(pid) {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
  return Number(m[1]);
}

// Poll until check() is truthy (bounded); returns its last value.
async function eventually(check, what, tries = 100) {
  for (let i = 0; i < tries; i++) {
    const v = await check();
    if (v) return v;
    await sleep(50);
  }
  assert.fail(`never happened: ${what}`);
}

describe('streaming', () => {
  let mock, gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({
      listen: { timeouts: { upstream_idle: '60s' } },
      providers: providersFor(mock.url),
    });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  it('the first event reaches the client while the provider is still silent', async () => {
    const ctl = new AbortController();
    const r = await fetch(`${gw.url}/v1/messages`, {
      method: 'POST',
      signal: ctl.signal,
      headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-mock': 'stall=1' },
      body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 5, stream: true, messages: [] }),
    });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /text\/event-stream/);
    const reader = r.body.getReader();
    let got = '';
    while (!got.includes('\n\n')) {
      const { value, done } = await reader.read();
      assert.equal(done, false, 'the stream must not end: the provider is stalled, not finished');
      got += Buffer.from(value).toString();
    }
    assert.match(got, /event: message_start/);
    ctl.abort();
  });

  it('a client that disconnects cancels the upstream request', async () => {
    const before = (await mock.stats()).streams_aborted;
    const ctl = new AbortController();
    const r = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      signal: ctl.signal,
      headers: { 'content-type': 'application/json', 'x-mock': 'events=50;delay_events_ms=200' },
      body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [] }),
    });
    const reader = r.body.getReader();
    await reader.read();
    ctl.abort();
    await eventually(async () => (await mock.stats()).streams_aborted > before, 'mockllm saw the stream aborted');
  });

  it('a client that does not read pauses the provider; memory stays bounded; nothing is lost', async () => {
    const u = new URL(gw.url);
    const sock = net.connect({ host: u.hostname, port: Number(u.port) });
    // shrink our receive buffer so the gateway feels the back-pressure early
    sock.setNoDelay(true);
    await new Promise((r) => sock.once('connect', r));
    sock.pause();
    const body = JSON.stringify({ model: 'gpt-4o', stream: true, messages: [] });
    const rss0 = rssKiB(gw.proc.pid);
    sock.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `x-mock: size=60000000;events=3000\r\nConnection: close\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    // let the provider push as much as the gateway will take
    await sleep(1500);
    const rssPaused = rssKiB(gw.proc.pid);
    assert.ok(rssPaused - rss0 < 32 * 1024,
      `gateway RSS grew by ${rssPaused - rss0} KiB while the client read nothing`);
    const { total, tail } = await readToEnd(sock);
    assert.ok(total > 60000000, `received ${total} bytes`);
    assert.match(tail, /data: \[DONE\]/);
  });

  it('a compressed stream is inflated a little at a time: memory stays bounded for a client that does not read', async () => {
    // 64 gzip members of 1 MiB of events each: ~64 KiB on the wire, one read, which was inflated whole (64 MiB)
    // into the client's backlog before the high-water mark was looked at again
    const ev = 'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"x"}}]}\n\n';
    const mib = Buffer.from(ev.repeat(Math.ceil((1 << 20) / ev.length)));
    const member = gzipSync(mib);
    const wire = Buffer.concat([...Array(64).fill(member), gzipSync(Buffer.from('data: [DONE]\n\n'))]);
    const up = await rawProvider((req, sock) => {
      sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n' +
        `Content-Length: ${wire.length}\r\n\r\n`);
      sock.write(wire);
    });
    const g = await startGateway({ providers: providersFor(`http://127.0.0.1:${up.address().port}`) }, { workers: 1 });
    let sock;
    try {
      const u = new URL(g.url);
      sock = net.connect({ host: u.hostname, port: Number(u.port) });
      await new Promise((r) => sock.once('connect', r));
      sock.pause();
      const body = JSON.stringify({ model: 'gpt-4o', stream: true, messages: [] });
      const rss0 = rssKiB(g.proc.pid);
      sock.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        `Connection: close\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      await sleep(1500);
      // ~1 MiB bounded, tens of MiB unbounded; under the sanitizers RSS also holds ASan's quarantine of freed
      // blocks, which grows with what is allocated, not with what is held
      const grown = rssKiB(g.proc.pid) - rss0;
      const bound = /-san$/.test(process.env.KEYLESS_BUILD || '') ? 48 : 16;
      assert.ok(grown < bound * 1024, `gateway RSS grew by ${grown} KiB while the client read nothing`);
      const { total, tail } = await readToEnd(sock);
      assert.ok(total > 64 * mib.length, `received ${total} bytes`);
      assert.match(tail, /data: \[DONE\]/);
    } finally {
      sock?.destroy();
      await g.stop();
      up.close();
    }
  });
});
