// Identity from Tailscale WhoIs and `tailscale serve` headers, and grants
// from the configuration and from the tailnet CapMap. Clients appear as
// different tailnet peers by leaving from 127.0.0.2, 127.0.0.3, ...
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import OpenAI from 'openai';
import { Agent } from 'undici';
import { setTimeout as sleep } from 'node:timers/promises';
import { startMock, startGateway, startHook, providersFor, assertNoKeys, startTailscaled, from, externalIPv4, rawRequest, BUILD, tempDir } from './lib/harness.mjs';

const ALICE = '127.0.0.2', BOB = '127.0.0.3', CI = '127.0.0.4', PROD = '127.0.0.5', LEGACY = '127.0.0.6',
  NOBODY = '127.0.0.7', CAROL = '127.0.0.8', GARBAGE = '127.0.0.9', TS500 = '127.0.0.10', DAVE = '127.0.0.12',
  STRANGER = '127.0.0.50';

const GRANTS = [
  { src: ['tag:ci'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: 'openai/gpt-4o-mini' }] } },
  { src: ['tag:prod'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: ['gemini/*', 'openai/gpt-4o'] }] } },
  { src: ['(loopback)'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' }] } },
  { src: ['zed@example.com', 'group:wg'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: 'anthropic/claude-haiku-*' }] } },
];

// Headers that show a loopback request was relayed by a proxy on this host:
// Funnel, tailscale serve for a tagged device, any reverse proxy.
const PROXIED = [{ 'tailscale-funnel-request': '?1' }, { 'x-forwarded-for': '198.51.100.7' },
  { forwarded: 'for=198.51.100.7' }, { 'tailscale-headers-info': 'https://tailscale.com/s/serve-headers' }];

describe('identity and grants', () => {
  let mock, ts, gw, gwNoLoop, hook;
  let hookCalls;
  before(async () => {
    mock = await startMock();
    ts = await startTailscaled();
    // carol's CapMap sends her requests to hook "pii"
    hook = await startHook();
    hookCalls = hook.calls;
    const hookUrl = hook.url('/pii');
    const providers = providersFor(mock.url, {
      gpt5: { baseurl: mock.url, apikey: 'sk-gpt5-key-1234', models: ['gpt-5', 'gpt-5-mini'] },
    });
    gw = await startGateway({
      // carol's CapMap charges this bucket
      quotas: { 'daily:<user>': { capacity: '$100.00', rate: '$100.00/day' } },
      hooks: { pii: { url: hookUrl } },
      identity: {
        tailscale: { socket: ts.socket, cache_ttl: '60s' },
        serve_headers: true,
        cidr: [{ range: '127.0.0.30/31', login: 'wg-frank@example.com', groups: ['group:wg'] }],
      },
      grants: GRANTS,
      providers,
    });
    // the same without the loopback fallback, so strangers are refused
    gwNoLoop = await startGateway({
      hooks: { pii: { url: hookUrl, disabled: true } },
      identity: { tailscale: { socket: ts.socket }, loopback: false },
      grants: GRANTS,
      providers,
    });
  });
  after(async () => {
    await gw.stop();
    await gwNoLoop.stop();
    await ts.stop();
    await mock.stop();
    await hook.close();
    assertNoKeys(assert, gw.output() + gwNoLoop.output(), 'gateway log');
  });

  const chat = (g, ip, model, headers = {}) =>
    fetch(`${g.url}/v1/chat/completions`, {
      method: 'POST', dispatcher: from(ip),
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
    });
  const messages = (g, ip, model) =>
    fetch(`${g.url}/v1/messages`, {
      method: 'POST', dispatcher: from(ip),
      headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model, max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }),
    });
  // GET /api/whoami on a connection of its own from ip:port. The port is
  // free again once the kernel has finished closing the last connection
  // from it (EADDRNOTAVAIL until then).
  const whoFromPort = async (g, ip, port) => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await new Promise((resolve, reject) => {
          const u = new URL(`${g.url}/api/whoami`);
          const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, localAddress: ip,
            localPort: port, agent: false, headers: { connection: 'close' } }, (res) => {
            let b = '';
            res.on('data', (d) => (b += d));
            res.on('end', () => resolve({ status: res.statusCode, body: b ? JSON.parse(b) : null }));
          });
          req.on('error', reject);
          req.end();
        });
      } catch (e) {
        if (e.code !== 'EADDRNOTAVAIL' || attempt >= 50)
          throw e;
        await sleep(100);
      }
    }
  };
  const whoami = async (g, ip, headers = {}) => {
    const r = await fetch(`${g.url}/api/whoami`, { dispatcher: from(ip), headers });
    return { status: r.status, body: await r.json() };
  };

  it('alice (user node, grants only in her CapMap) reaches her models and gets 404 for others', async () => {
    const ok = await messages(gw, ALICE, 'claude-sonnet-4-5');
    assert.equal(ok.status, 200);
    const denied = await chat(gw, ALICE, 'gpt-4o');
    assert.equal(denied.status, 404);
    const j = await denied.json();
    assert.match(j.error.message, /does not exist or you do not have access/);
    const w = await whoami(gw, ALICE);
    assert.equal(w.body.login, 'alice@example.com');
    assert.equal(w.body.display_name, 'Alice Krūmiņa');
    assert.equal(w.body.node, 'alice-mbp.tail8c2a1.ts.net');
    assert.equal(w.body.stable_node_id, 'nQ7vWkz5Xn11CNTRL');
    assert.equal(w.body.source, 'tailscale');
    assert.equal(w.body.role, 'user');
    assert.deepEqual(w.body.groups, ['group:ai-users']);
    assert.ok(w.body.grants.some((g) => g.from === 'tailnet policy (CapMap)'));
    assert.deepEqual(w.body.models.sort(), ['anthropic/claude-haiku-4-5', 'anthropic/claude-sonnet-4-5']);
  });

  it('model lists show only the caller\'s models, in every shape, each the models its API can call', async () => {
    const list = async (who, path, headers = {}) => (await fetch(`${gw.url}${path}`, { dispatcher: from(who), headers })).json();
    const anthropic = { 'anthropic-version': '2023-06-01' };
    assert.deepEqual((await list(ALICE, '/v1/models', anthropic)).data.map((m) => m.id).sort(),
      ['claude-haiku-4-5', 'claude-sonnet-4-5']);
    assert.deepEqual((await list(ALICE, '/v1/models')).data, [], '/v1/chat/completions would refuse a Claude model');
    // the CI node: gpt-4o-mini from the config grant on tag:ci, claude-sonnet* from its CapMap
    assert.deepEqual((await list(CI, '/v1/models')).data.map((m) => m.id), ['gpt-4o-mini']);
    assert.deepEqual((await list(CI, '/v1/models', anthropic)).data.map((m) => m.id), ['claude-sonnet-4-5']);
    assert.deepEqual((await list(CI, '/v1beta/models')).models, []);
    // a lookup is the same: the model's API, the caller's grants
    assert.equal((await fetch(`${gw.url}/v1/models/gpt-4o-mini`, { dispatcher: from(CI) })).status, 200);
    assert.equal((await fetch(`${gw.url}/v1/models/claude-sonnet-4-5`, { dispatcher: from(CI) })).status, 404);
    assert.equal((await fetch(`${gw.url}/v1/models/anthropic%2Fclaude-sonnet-4-5`, { dispatcher: from(CI), headers: anthropic })).status, 200);
  });

  it('a tagged CI node is identified by its tags, never as tagged-devices', async () => {
    const w = await whoami(gw, CI);
    assert.equal(w.body.login, 'tag:ci');
    assert.deepEqual(w.body.tags, ['tag:ci']);
    assert.equal((await chat(gw, CI, 'gpt-4o-mini')).status, 200);
    assert.equal((await chat(gw, CI, 'gpt-4o')).status, 404);
    // tags sorted and comma-joined
    const p = await whoami(gw, PROD);
    assert.equal(p.body.login, 'tag:api,tag:prod');
    assert.equal((await chat(gw, PROD, 'gpt-4o')).status, 200);
    // the legacy (v1.80) WhoIs shape
    const l = await whoami(gw, LEGACY);
    assert.equal(l.body.login, 'tag:ci');
  });

  it('the most specific grant and the provider/model glob pick the provider', async () => {
    // dave's CapMap (old https:// name) grants openai/gpt-5*: gpt-5 lives at provider gpt5
    const w = await whoami(gw, DAVE);
    assert.equal(w.body.role, 'user');
    assert.equal((await chat(gw, DAVE, 'gpt-5')).status, 404, 'gpt5/gpt-5 is not openai/gpt-5*');
  });

  it('carol is an admin through CapMap; other capabilities are kept', async () => {
    const w = await whoami(gw, CAROL);
    assert.equal(w.body.role, 'admin');
    assert.ok(w.body.capabilities['example.com/cap/custom']);
    hookCalls.length = 0;
    assert.equal((await chat(gw, CAROL, 'openai/gpt-4o')).status, 200);
    // her CapMap's send_hooks: the pii hook was asked, with what it asks for
    assert.equal(hookCalls.length, 1);
    assert.equal(hookCalls[0].metadata.login_name, 'carol@example.com');
    assert.equal(hookCalls[0].metadata.tailnet_name, 'tail8c2a1.ts.net');
    assert.equal(hookCalls[0].user_message, 'hi');
    assert.equal(hookCalls[0].request_body.model, 'openai/gpt-4o');
    // a hook the policy asks for that this gateway does not define: refused, never forwarded unguarded
    const noHook = await startGateway({
      quotas: { 'daily:<user>': { capacity: '$100.00' } },
      identity: { tailscale: { socket: ts.socket } }, grants: GRANTS, providers: providersFor(mock.url),
    });
    try {
      const r = await chat(noHook, CAROL, 'openai/gpt-4o');
      assert.equal(r.status, 403);
      assert.match((await r.json()).error.message, /send_hooks names hook "pii", which hooks does not define/);
    } finally {
      await noHook.stop();
    }
    // where no quota of that name is defined, her CapMap grant fails closed
    const closed = await chat(gwNoLoop, CAROL, 'openai/gpt-4o');
    assert.equal(closed.status, 403);
    assert.match((await closed.json()).error.message, /quota bucket daily:<user>, which is not defined/);
  });

  it('no role -> 403 access denied: no role granted', async () => {
    const r = await chat(gw, BOB, 'gpt-4o');
    assert.equal(r.status, 403);
    assert.equal((await r.json()).error.message, 'access denied: no role granted');
    const a = await messages(gw, BOB, 'claude-sonnet-4-5');
    assert.equal(a.status, 403);
    const j = await a.json();
    assert.equal(j.error.type, 'permission_error');
    // whoami still answers, to explain why
    const w = await whoami(gw, BOB);
    assert.equal(w.status, 200);
    assert.equal(w.body.role, 'none');
    assert.equal(w.body.login, 'bob@example.com');
  });

  it('a device with neither user nor tags is denied', async () => {
    const r = await chat(gw, NOBODY, 'gpt-4o');
    assert.equal(r.status, 403);
    assert.match((await r.json()).error.message, /neither a user nor tags/);
    // its record names the device WhoIs knew, for whoever looks into what was refused
    const id = r.headers.get('x-keyless-request-id');
    let rec;
    for (let i = 0; i < 100 && !(rec && rec.state === 'done'); i++) {
      await sleep(30);
      rec = await (await fetch(`${gw.url}/api/requests/${id}`, { dispatcher: from(CAROL) })).json();
    }
    assert.equal(rec.status, 403, JSON.stringify(rec));
    assert.equal(rec.node, 'orphan-box.tail8c2a1.ts.net');
    assert.equal(rec.stable_node_id, 'nXQFiCQE4LuECNTRL');
    assert.equal(rec.identity_source, 'tailscale');
    assert.equal(rec.login, null);
  });

  it('an unknown peer is refused (401) and never forwarded', async () => {
    await mock.clear();
    const r = await chat(gwNoLoop, STRANGER, 'gpt-4o');
    assert.equal(r.status, 401);
    assert.match((await r.json()).error.message, /could not identify the caller/);
    const a = await messages(gwNoLoop, STRANGER, 'claude-sonnet-4-5');
    assert.equal(a.status, 401);
    assert.equal((await a.json()).error.type, 'authentication_error');
    assert.equal((await mock.requests()).length, 0);
    // with the loopback source, the same peer is "(loopback)"
    const w = await whoami(gw, STRANGER);
    assert.equal(w.body.login, '(loopback)');
  });

  it('a caller nobody lets in is refused before its body is read: no 100 Continue, nothing uploaded', async () => {
    // a head that announces 20 MB and waits for 100 Continue, and one that sends only part of its body: both are
    // answered 401 at once (WhoIs is asked first), with the connection closed, not after 20 MB
    const body = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 20,
      messages: [{ role: 'user', content: 'x'.repeat(1000) }] });
    const ask = (g, ip, head, part) => new Promise((resolveP) => {
      const u = new URL(g.url);
      const sock = net.connect({ host: u.hostname, port: Number(u.port), localAddress: ip });
      let data = '';
      const timer = setTimeout(() => { sock.destroy(); resolveP(data); }, 10000);
      sock.on('error', () => {});
      sock.on('data', (d) => {
        data += d.toString('latin1');
        if (/^HTTP\/1\.1 100 Continue\r\n\r\n$/.test(data)) sock.write(body); // told to go on: the body follows
      });
      sock.on('close', () => { clearTimeout(timer); resolveP(data); });
      sock.write(head + part);
    });
    const head = (len, expect) => `POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `anthropic-version: 2023-06-01\r\nConnection: close\r\n${expect ? 'Expect: 100-continue\r\n' : ''}` +
      `Content-Length: ${len}\r\n\r\n`;
    for (const [h, part] of [[head(20e6, true), ''], [head(20e6, false), body.slice(0, 100)]]) {
      const r = await ask(gwNoLoop, STRANGER, h, part);
      assert.match(r, /^HTTP\/1\.1 401 /, r.slice(0, 200));
      assert.doesNotMatch(r, /100 Continue/);
      assert.match(r, /\r\nconnection: close\r\n/i);
      assert.match(r, /could not identify the caller/);
    }
    // one identified, with no role granted: the same, 403
    const bob = await ask(gw, BOB, head(20e6, true), '');
    assert.match(bob, /^HTTP\/1\.1 403 [\s\S]*access denied: no role granted/, bob.slice(0, 300));
    // a model named in the path that the caller may not use: 404 before the body too (Gemini's API)
    const gem = await ask(gwNoLoop, ALICE, `POST /v1beta/models/gemini-2.5-flash:generateContent HTTP/1.1\r\n` +
      'Host: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 20000000\r\n\r\n', '');
    assert.match(gem, /^HTTP\/1\.1 404 [\s\S]*does not exist or you do not have access/, gem.slice(0, 300));
    // a caller let in is told to go on, and served
    const ok = await ask(gwNoLoop, ALICE, head(body.length, true), '');
    assert.match(ok, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /, JSON.stringify(ok.slice(0, 400)));
  });

  it('a static CIDR map identifies peers tailscaled does not know', async () => {
    for (const ip of ['127.0.0.30', '127.0.0.31']) {
      const w = await whoami(gw, ip);
      assert.equal(w.body.login, 'wg-frank@example.com');
      assert.equal(w.body.source, 'cidr');
      // a user sees why a grant applies to them, not who else it names
      const g = w.body.grants.find((x) => x.from === 'config grants[3]');
      assert.deepEqual(g.src, ['group:wg']);
    }
    assert.equal((await messages(gw, '127.0.0.31', 'claude-haiku-4-5')).status, 200);
    assert.equal((await messages(gw, '127.0.0.31', 'claude-sonnet-4-5')).status, 404);
    const outside = await whoami(gw, '127.0.0.32');
    assert.equal(outside.body.source, 'loopback');
  });

  it('tailscaled answering garbage, 500 or a 404 that is not its "no match" fails closed with 503', async () => {
    for (const ip of [GARBAGE, TS500]) {
      const r = await chat(gw, ip, 'gpt-4o');
      assert.equal(r.status, 503, ip);
      assert.match((await r.json()).error.message, /tailscaled|WhoIs/);
    }
    // a 404 from something that is not tailscaled's WhoIs (an older tailscaled,
    // another server on the socket) says nothing about the peer: taken for "not
    // a tailnet caller", the request would have gone on to (loopback)
    const r = await whoami(gw, '127.0.0.17');
    assert.equal(r.status, 503);
    assert.match(r.body.error.message, /cannot identify the caller: tailscaled answered WhoIs with HTTP 404 \(404 page not found\)/);
  });

  it('a tailscaled that never answers fails closed with 503 after the default timeout (3s)', async () => {
    // gw sets no identity.tailscale.timeout: the default bounds the WhoIs (without one, the client gives up first)
    const r = await fetch(`${gw.url}/api/whoami`, { dispatcher: from('127.0.0.13'), signal: AbortSignal.timeout(15000) });
    assert.equal(r.status, 503);
    assert.match((await r.json()).error.message, /tailscaled/);
  });

  it('tailscaled stopped -> 503; recovered when it returns', async () => {
    // Alice's connection used just now, so its cached identity is there (an
    // idle one the client closed would be a new connection, looked up again)
    assert.equal((await messages(gw, ALICE, 'claude-sonnet-4-5')).status, 200);
    await ts.stop();
    try {
      const r = await chat(gw, '127.0.0.20', 'gpt-4o');
      assert.equal(r.status, 503);
      assert.match((await r.json()).error.message, /tailscaled is unavailable/);
      // cached identities keep working meanwhile
      assert.equal((await messages(gw, ALICE, 'claude-sonnet-4-5')).status, 200);
    } finally {
      await ts.start(); // the tests after this one need it, whatever happened here
    }
    assert.equal((await chat(gw, '127.0.0.20', 'gpt-4o')).status, 200);
  });

  it('WhoIs is cached: many requests over a connection cost one lookup', async () => {
    // (an answer for a tailnet address is shared by all of its connections,
    // which a test cannot bind: test_identity.c covers that rule)
    await ts.reset();
    const ip = '127.0.0.21';
    const one = new Agent({ localAddress: ip, connections: 1 });
    const batch = Array.from({ length: 200 }, () => fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', dispatcher: one, headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    }).then(async (r) => { await r.arrayBuffer(); return r.status; }));
    const statuses = await Promise.all(batch);
    await one.close();
    assert.ok(statuses.every((s) => s === 200));
    const st = await ts.stats();
    assert.equal(st.by_addr[ip], 1, `WhoIs hits for ${ip}: ${st.by_addr[ip]}`);
  });

  it('callers that share an address are told apart by their port (tailscaled in userspace networking)', async () => {
    // tailscaled forwards every tailnet connection from 127.0.0.1 and knows its
    // caller by the port: an answer cached for the address gave the first
    // caller's identity, admin included, to the next
    const ip = '127.0.0.41';
    const base = 42000 + Math.floor(Math.random() * 5000);
    const [carolPort, bobPort, strangerPort, carolAgain] = [base, base + 1, base + 2, base + 3];
    const table = JSON.parse(readFileSync(ts.table, 'utf8'));
    table[`${ip}:${carolPort}`] = 'carol-admin.json';
    table[`${ip}:${carolAgain}`] = 'carol-admin.json';
    table[`${ip}:${bobPort}`] = 'bob.json';
    writeFileSync(ts.table, JSON.stringify(table));
    const who = (g, port) => whoFromPort(g, ip, port);
    const carol = await who(gw, carolPort);
    assert.equal(carol.body.login, 'carol@example.com');
    assert.equal(carol.body.role, 'admin');
    const bob = await who(gw, bobPort);
    assert.equal(bob.status, 200);
    assert.equal(bob.body.login, 'bob@example.com', 'not carol, whose answer was for her connection');
    assert.notEqual(bob.body.role, 'admin');
    // a port tailscaled does not know is not a tailnet caller; its 404 is not
    // carol's either
    assert.equal((await who(gwNoLoop, strangerPort)).status, 401);
    assert.equal((await who(gwNoLoop, carolAgain)).body.login, 'carol@example.com');
  });

  it('an answer for an address and port goes with its connection: the next one from that port is asked afresh', async () => {
    // with userspace networking a port is one connection: once carol's has
    // closed, tailscaled may give her port to bob's, and her answer (admin)
    // must not be his for the rest of the cache TTL
    const ip = '127.0.0.42';
    const port = 47000 + Math.floor(Math.random() * 5000);
    const table = JSON.parse(readFileSync(ts.table, 'utf8'));
    table[`${ip}:${port}`] = 'carol-admin.json';
    writeFileSync(ts.table, JSON.stringify(table));
    const carol = await whoFromPort(gw, ip, port);
    assert.equal(carol.body.login, 'carol@example.com');
    assert.equal(carol.body.role, 'admin');
    table[`${ip}:${port}`] = 'bob.json';
    writeFileSync(ts.table, JSON.stringify(table));
    const bob = await whoFromPort(gw, ip, port);
    assert.equal(bob.status, 200);
    assert.equal(bob.body.login, 'bob@example.com', 'not carol, whose connection has closed');
    assert.notEqual(bob.body.role, 'admin');
    delete table[`${ip}:${port}`];
    writeFileSync(ts.table, JSON.stringify(table));
    assert.equal((await whoFromPort(gwNoLoop, ip, port)).status, 401, 'a port tailscaled no longer knows');
  });

  it('a loopback caller behind a proxy (Funnel, tailscale serve without identity, X-Forwarded-For) is not (loopback)', async () => {
    const local = '127.0.0.60';
    assert.equal((await whoami(gw, local)).body.login, '(loopback)');
    for (const h of PROXIED) {
      const r = await whoami(gw, local, h);
      assert.equal(r.status, 401, JSON.stringify(h));
      assert.match(r.body.error.message, /could not identify the caller/);
    }
    assert.match(gw.output(), /came through a proxy: not \(loopback\)/);
  });

  it('a CIDR rule covering a loopback address does not name a caller a proxy on this host relayed', async () => {
    const mapped = '127.0.0.30'; // identity.cidr: wg-frank@example.com
    assert.equal((await whoami(gw, mapped)).body.login, 'wg-frank@example.com');
    for (const h of PROXIED) {
      const r = await whoami(gw, mapped, h);
      assert.equal(r.status, 401, JSON.stringify(h));
      assert.match(r.body.error.message, /could not identify the caller/);
    }
    assert.match(gw.output(), /came through a proxy: not wg-frank@example.com \(identity.cidr\)/);
  });

  it('a web page of another site cannot call keyless as the tailnet user whose browser opened it', async () => {
    const host = new URL(gw.url).host;
    // a "simple" cross-site POST a page may send without a preflight (text/plain)
    const send = (h, ip = ALICE) => fetch(`${gw.url}/v1/messages`, {
      method: 'POST', dispatcher: from(ip), headers: { 'content-type': 'text/plain', ...h },
      body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }),
    });
    for (const h of [{ 'sec-fetch-site': 'cross-site', origin: 'https://evil.example' }, { 'sec-fetch-site': 'same-site' },
      { origin: 'null' }, { origin: 'https://evil.example' }, { origin: `http://${host}.evil.example` },
      { 'sec-fetch-site': 'cross-site', origin: 'HTTPS://evil.example' }, { origin: 'file://' }]) {
      const r = await send(h);
      assert.equal(r.status, 403, JSON.stringify(h));
      const j = await r.json();
      assert.equal(j.error.type, 'permission_error');
      assert.match(j.error.message, /a web page of another site may not call keyless/);
    }
    const c = await chat(gw, '127.0.0.61', 'gpt-4o', { 'sec-fetch-site': 'cross-site' }); // (loopback), in OpenAI's shape
    assert.equal(c.status, 403);
    assert.match((await c.json()).error.message, /a web page of another site/);
    // the gateway's own origin, and an address typed by the user, are not another site's; nor is a
    // desktop app or an extension, whose Origin no web page can send (Tauri's HTTP client sends
    // tauri://localhost with no Sec-Fetch-Site; a webview or an extension may add cross-site)
    for (const h of [{ 'sec-fetch-site': 'same-origin', origin: `http://${host}` }, { 'sec-fetch-site': 'none' },
      { origin: `http://${host}` }, { origin: 'tauri://localhost' }, { origin: 'chrome-extension://abcdefghijklmnop' },
      { 'sec-fetch-site': 'cross-site', origin: 'moz-extension://0f1e2d3c' }]) {
      const r = await send(h);
      assert.equal(r.status, 200, JSON.stringify(h));
      await r.text();
    }
  });

  it('live table change is seen after the cache TTL, not before', async () => {
    const table = JSON.parse(readFileSync(ts.table, 'utf8'));
    table['127.0.0.22'] = 'bob.json';
    writeFileSync(ts.table, JSON.stringify(table));
    assert.equal((await chat(gw, '127.0.0.22', 'gpt-4o')).status, 403);
  });

  it('serve headers count only from a loopback peer; forged ones from elsewhere are ignored and logged', async () => {
    // from loopback (tailscale serve proxies from 127.0.0.1)
    const caps = JSON.stringify({ 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: 'gemini/**' }] });
    const hdrs = {
      'Tailscale-User-Login': 'erin@example.com',
      'Tailscale-User-Name': '=?utf-8?q?Kr=C5=ABmi=C5=86a?=',
      'Tailscale-App-Capabilities': caps,
    };
    const w = await whoami(gw, '127.0.0.1', hdrs);
    assert.equal(w.body.login, 'erin@example.com');
    assert.equal(w.body.display_name, 'Krūmiņa');
    assert.equal(w.body.source, 'serve');
    assert.deepEqual(w.body.models.sort(), ['gemini/gemini-2.5-flash', 'gemini/gemini-2.5-pro']);
    // the identity headers are not forwarded upstream
    await mock.clear();
    const r = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:generateContent`, {
      method: 'POST', dispatcher: from('127.0.0.1'), headers: { 'content-type': 'application/json', ...hdrs },
      body: JSON.stringify({ contents: [] }),
    });
    assert.equal(r.status, 200);
    const seen = JSON.stringify((await mock.last()).headers).toLowerCase();
    assert.ok(!seen.includes('tailscale-user-login'));

    const ext = externalIPv4();
    assert.ok(ext, 'this test needs a non-loopback address on the machine');
    const gwExt = await startGateway({
      listen: { addresses: ['0.0.0.0:0'] },
      identity: { tailscale: { socket: ts.socket }, serve_headers: true },
      grants: GRANTS,
      providers: providersFor(mock.url),
    });
    try {
      const port = new URL(gwExt.url).port;
      const f = await fetch(`http://${ext}:${port}/api/whoami`, { headers: hdrs });
      assert.equal(f.status, 401, 'forged headers from a non-loopback peer must not identify anyone');
      for (let i = 0; i < 50 && !/ignoring tailscale serve identity headers/.test(gwExt.output()); i++) await sleep(20);
      assert.match(gwExt.output(), /ignoring tailscale serve identity headers .* from non-loopback peer/);
    } finally {
      await gwExt.stop();
    }
  });

  it("a serve caller's display name is cut to 2,048 bytes between characters, in the record and /api/whoami", async () => {
    // tailscaled encodes a name that is not printable ASCII; the cut falls inside a two-byte character
    const name = `a${'ū'.repeat(1500)}`;
    const hdrs = { 'Tailscale-User-Login': 'erin@example.com',
      'Tailscale-User-Name': `=?utf-8?b?${Buffer.from(name).toString('base64')}?=`,
      'Tailscale-App-Capabilities': JSON.stringify({ 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' }] }) };
    const w = await whoami(gw, '127.0.0.1', hdrs);
    assert.equal(w.status, 200);
    assert.equal(w.body.display_name, name.slice(0, 1 + 1023));
    const r = await chat(gw, '127.0.0.1', 'gpt-4o', hdrs);
    assert.equal(r.status, 200);
    await r.text();
    // read as erin, whose record it is
    let rec;
    for (let i = 0; i < 100 && !(rec && rec.state === 'done'); i++) {
      await sleep(30);
      rec = await (await fetch(`${gw.url}/api/requests/${r.headers.get('x-keyless-request-id')}`,
        { dispatcher: from('127.0.0.1'), headers: hdrs })).json();
    }
    assert.equal(rec.login, 'erin@example.com');
    assert.equal(rec.display_name, name.slice(0, 1 + 1023));
  });

  it('a caller on this host connecting from one of its own addresses is no tailnet or CIDR caller', async () => {
    // WhoIs answers for tailscaled's own node when asked about the node's own address, and a CIDR rule covering
    // the host would name every local account: a process here connecting to the host's address (its tailnet one,
    // or tailscale serve pointed there) would pass as the node's owner. Here the host's address stands for it.
    const ext = externalIPv4();
    assert.ok(ext, 'this test needs a non-loopback address on the machine');
    const table = JSON.parse(readFileSync(ts.table, 'utf8'));
    table[ext] = 'carol-admin.json';
    writeFileSync(ts.table, JSON.stringify(table));
    const g = await startGateway({
      listen: { addresses: ['0.0.0.0:0'] },
      identity: { tailscale: { socket: ts.socket }, cidr: [{ range: `${ext}/32`, login: 'lan@example.com' }] },
      grants: [...GRANTS, { src: ['lan@example.com'], app: { 'tailscale.com/cap/aperture': [{ role: 'admin' }] } }],
      providers: providersFor(mock.url),
    });
    try {
      const port = new URL(g.url).port;
      const local = await fetch(`http://${ext}:${port}/api/whoami`, { dispatcher: from(ext) });
      const body = await local.json();
      assert.equal(local.status, 401, JSON.stringify(body));
      for (let i = 0; i < 50 && !/connected from its own address/.test(g.output()); i++) await sleep(20);
      assert.match(g.output(), new RegExp(`a caller on this host connected from its own address ${ext.replaceAll('.', '\\.')}`));
      // from 127.0.0.1 it is (loopback), as before
      const lo = await fetch(`http://127.0.0.1:${port}/api/whoami`);
      assert.equal((await lo.json()).login, '(loopback)');
    } finally {
      delete table[ext];
      writeFileSync(ts.table, JSON.stringify(table));
      await g.stop();
    }
  });

  it('serve headers are read as tailscaled encodes them; capabilities that cannot be read refuse, not lift limits', async () => {
    // Go's mime.QEncoding, as tailscaled applies it to a value that is not
    // printable ASCII: Q-encoded words of at most 75 characters, joined by spaces
    const qEncode = (s) => {
      const words = [];
      let cur = '';
      for (const b of Buffer.from(s, 'utf8')) {
        const ch = String.fromCharCode(b);
        const c = b === 0x20 ? '_' : b > 0x20 && b < 0x7f && !'=?_'.includes(ch) ? ch
          : `=${b.toString(16).toUpperCase().padStart(2, '0')}`;
        if (cur.length + c.length > 75 - '=?utf-8?q??='.length) {
          words.push(cur);
          cur = '';
        }
        cur += c;
      }
      words.push(cur);
      return words.map((w) => `=?utf-8?q?${w}?=`).join(' ');
    };
    const CAP = 'tailscale.com/cap/aperture';
    const as = (caps, login = 'erin@example.com', path = '/api/whoami', init = {}) =>
      fetch(`${gw.url}${path}`, {
        dispatcher: from('127.0.0.1'), ...init,
        headers: { 'Tailscale-User-Login': login, ...(caps === undefined ? {} : { 'Tailscale-App-Capabilities': caps }),
          ...(init.headers || {}) },
      });
    const chatAs = (caps) => as(caps, 'erin@example.com', '/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });

    // capabilities holding a non-ASCII character arrive encoded, in several words
    const caps = JSON.stringify({ [CAP]: [{ role: 'user' }, { models: 'gemini/**' }],
      'example.com/cap/notes': [{ owner: 'Krūmiņa', team: 'platform engineering, Rīga office' }] });
    const encoded = qEncode(caps);
    assert.ok(encoded.split(' ').length > 1, encoded);
    let r = await as(encoded);
    assert.equal(r.status, 200);
    let w = await r.json();
    assert.deepEqual(w.models.sort(), ['gemini/gemini-2.5-flash', 'gemini/gemini-2.5-pro']);
    assert.equal(w.capabilities['example.com/cap/notes'][0].owner, 'Krūmiņa');

    // tailscaled never encodes printable ASCII: a login that merely looks
    // encoded is that login (an e-mail address may hold '=' and '?')
    r = await as(undefined, '=?utf-8?q?boss@example.com?=');
    assert.equal((await r.json()).login, '=?utf-8?q?boss@example.com?=');

    // a header that is not one JSON object of capabilities refuses the caller:
    // left unread, its limits would be lifted
    for (const bad of ['{"tailscale.com/cap/aperture": [', `${JSON.stringify({ [CAP]: [{ role: 'user' }] })} {}`,
      '[]', `{"${CAP}": [{"role": "user"}], "${CAP}": [{"role": "user"}, {"models": "**"}]}`]) {
      await mock.clear();
      r = await chatAs(bad);
      assert.equal(r.status, 403, bad);
      assert.match((await r.json()).error.message,
        /access denied: the Tailscale-App-Capabilities header is not one JSON object of capabilities/);
      assert.equal((await mock.requests()).length, 0);
      // the record of the refusal is the caller's, who can read it
      const id = r.headers.get('x-keyless-request-id');
      let rec;
      for (let i = 0; i < 100 && !(rec && rec.state === 'done'); i++) {
        await sleep(30);
        rec = await (await as(JSON.stringify({ [CAP]: [{ role: 'user' }] }), 'erin@example.com', `/api/requests/${id}`)).json();
      }
      assert.equal(rec.status, 403, JSON.stringify(rec));
      assert.equal(rec.login, 'erin@example.com');
      assert.equal(rec.identity_source, 'serve');
    }
    // a login longer than any source accepts is not the record's: PostgreSQL
    // would refuse the whole record of the refusal (its login index)
    r = await as('[]', `${'x'.repeat(3000)}@example.com`, '/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(r.status, 403);
    const longId = r.headers.get('x-keyless-request-id');
    let longRec;
    for (let i = 0; i < 100 && !(longRec && longRec.state === 'done'); i++) {
      await sleep(30);
      longRec = await (await as(JSON.stringify({ [CAP]: [{ role: 'admin' }] }), 'auditor@example.com',
        `/api/requests/${longId}`)).json();
    }
    assert.equal(longRec.status, 403, JSON.stringify(longRec).slice(0, 300));
    assert.ok(longRec.login == null, `a login of ${String(longRec.login).length} bytes`);

    // a capability that cannot be read and carries a limit refuses; one that
    // only grants is skipped, with a warning
    const grant = [{ role: 'user' }, { models: 'openai/gpt-4o' }];
    for (const [cap, why] of [
      [{ role: 'owner', quotas: [{ bucket: 'daily:<user>' }] }, /"role" must be "admin" or "user"/],
      [{ models: 7, rate_limit: { requests_per_minute: 1 } }, /"models" must be a glob string/],
      [{ role: 'user', send_hooks: ['pii'], models: [1] }, /"models" must contain strings/],
      // Aperture's (Go's) reader matches names in any case: its quota, which unread would meter nothing
      [{ models: '**', Quotas: [{ bucket: 'daily:<user>' }] }, /names "Quotas", which Aperture reads as "quotas"/],
      [{ models: '**', RATE_LIMIT: { requests_per_minute: 1 } }, /names "RATE_LIMIT", which Aperture reads as "rate_limit"/],
    ]) {
      r = await chatAs(JSON.stringify({ [CAP]: [...grant, cap] }));
      assert.equal(r.status, 403, JSON.stringify(cap));
      const msg = (await r.json()).error.message;
      assert.match(msg, /access denied: a capability from the tailnet policy cannot be read/);
      assert.match(msg, why);
    }
    r = await chatAs(JSON.stringify({ [CAP]: [...grant, { role: 'superuser', models: '**' }] }));
    assert.equal(r.status, 200);
    // /api/whoami shows each unreadable capability, why, and what it does: one with a limit leaves no model reachable
    w = await (await as(JSON.stringify({ [CAP]: [...grant, { role: 'owner', quotas: [{ bucket: 'daily:<user>' }] }] }))).json();
    assert.deepEqual(w.capability_errors, [{ from: 'tailnet policy (CapMap)', capability: { role: 'owner',
      quotas: [{ bucket: 'daily:<user>' }] }, error: w.capability_errors[0]?.error, effect: 'every request is refused' }]);
    assert.match(w.capability_errors[0].error, /"role" must be "admin" or "user"/);
    assert.deepEqual(w.models, []);
    w = await (await as(JSON.stringify({ [CAP]: [...grant, { role: 'superuser', models: '**' }] }))).json();
    assert.equal(w.capability_errors.length, 1);
    assert.equal(w.capability_errors[0].effect, 'grants nothing');
    assert.deepEqual(w.capability_errors[0].capability, { role: 'superuser', models: '**' });
    assert.deepEqual(w.models, ['openai/gpt-4o']);
    w = await (await as(JSON.stringify({ [CAP]: grant }))).json();
    assert.deepEqual(w.capability_errors, []);
    // the warning reaches the log on its own pipe: waited for, not raced against the answer
    const warned = /capability of erin@example.com from the tailnet policy cannot be read and grants nothing: "role" must be/;
    for (let i = 0; i < 200 && !warned.test(gw.output()); i++) await new Promise((res) => setTimeout(res, 10));
    assert.match(gw.output(), warned);

    // a capability naming one member twice: which one counts? (Go's reader
    // takes the last, cJSON the first) Refused when it limits, else skipped
    const dupTools = `{"${CAP}": [{"role": "user"}, {"models": "gemini/**"}, ` +
      '{"tools": {"deny": ["Bash"]}, "tools": {"allow": ["**"]}}]}';
    r = await chatAs(dupTools);
    assert.equal(r.status, 403);
    assert.match((await r.json()).error.message, /cannot be read: a capability names one member twice/);
    r = await chatAs(`{"${CAP}": [{"role": "user"}, {"models": "openai/gpt-4o"}, {"role": "user", "role": "admin"}]}`);
    assert.equal(r.status, 200);
    r = await as(`{"${CAP}": [{"role": "user"}, {"models": "openai/gpt-4o"}, {"role": "user", "role": "admin"}]}`);
    assert.equal((await r.json()).role, 'user');
  });

  it('a tailscaled socket that is not there is a note at load, naming the path (not an error: tailscaled may start later)', async () => {
    const dir = tempDir('kl-ts-socket-');
    const check = (tailscale, ...more) => {
      const cfg = join(dir, 'keyless.hujson');
      writeFileSync(cfg, JSON.stringify({ identity: { tailscale }, grants: GRANTS, providers: providersFor(mock.url) }));
      return spawnSync(join(BUILD, 'keyless'), ['check', '--config', cfg, ...more], { encoding: 'utf8' });
    };
    const missing = join(dir, 'tailscaled.sock');
    let r = check({ socket: missing }, '--strict');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`keyless\\.hujson:\\d+:\\d+: note: on this machine, identity\\.tailscale\\.socket ${missing} cannot be reached: No such file or directory; tailnet callers get 503`));
    writeFileSync(missing, '');
    assert.match(check({ socket: missing }).stderr, /tailscaled\.sock is not a socket/);
    // tailscaled's own socket, or tailscale switched off: nothing said
    assert.doesNotMatch(check({ socket: ts.socket }).stderr, /identity\.tailscale\.socket/);
    assert.doesNotMatch(check({ socket: join(dir, 'gone.sock'), enabled: false }).stderr, /identity\.tailscale\.socket/);
    // and serve says it at start, then starts
    const g = await startGateway({ identity: { tailscale: { socket: join(dir, 'gone.sock') } }, grants: GRANTS,
      providers: providersFor(mock.url) });
    try {
      const said = /note: on this machine, identity\.tailscale\.socket \S*gone\.sock cannot be reached/;
      for (let i = 0; i < 100 && !said.test(g.output()); i++) await sleep(20); // stderr's pipe may come after stdout's
      assert.match(g.output(), said);
    } finally {
      await g.stop();
    }
  });

  it('keyless check warns when serve headers could be believed from a tailnet peer that reached the port directly', () => {
    // with tailscaled in userspace networking such a peer comes from loopback too
    const dir = tempDir('kl-serve-order-');
    const check = (identity) => {
      const cfg = join(dir, 'keyless.hujson');
      writeFileSync(cfg, JSON.stringify({ identity, grants: GRANTS, providers: providersFor('http://127.0.0.1:9') }));
      const r = spawnSync(join(BUILD, 'keyless'), ['check', '--config', cfg], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stdout + r.stderr);
      return r.stderr;
    };
    assert.match(check({ serve_headers: true }), /warning: serve_headers without tailscale: any local process, and with tailscaled in userspace networking any tailnet peer/);
    assert.match(check({ tailscale: {}, serve_headers: true, order: ['serve', 'tailscale'] }),
      /warning: identity.order puts serve before tailscale/);
    assert.doesNotMatch(check({ tailscale: {}, serve_headers: true }), /serve_headers|serve before/);
    assert.doesNotMatch(check({ tailscale: {}, serve_headers: true, order: ['tailscale', 'serve', 'loopback'] }), /serve before/);
    // a source listed twice is an error (it had pushed the sources after it out of the list)
    const cfg = join(dir, 'twice.hujson');
    writeFileSync(cfg, JSON.stringify({ identity: { cidr: [{ range: '10.0.0.0/8', login: 'x@example.com' }],
      order: ['loopback', 'loopback', 'loopback', 'loopback', 'loopback', 'loopback', 'cidr'] }, grants: GRANTS,
    providers: providersFor('http://127.0.0.1:9') }));
    const r = spawnSync(join(BUILD, 'keyless'), ['check', '--config', cfg], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /identity source "loopback" is in identity.order twice/);
    assert.doesNotMatch(r.stderr, /"cidr" is configured but not in identity.order/);
  });

  it('the official SDK works from a tailnet peer', async () => {
    const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: '-', maxRetries: 0, fetchOptions: { dispatcher: from(CAROL) } });
    const r = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(r.choices[0].message.content, 'Hello from mockllm.');
  });
});

describe('log lines quoting outside text', () => {
  it('a caller-chosen header with line separators, C1 controls or bidi overrides cannot forge or reorder a log line, nor flood the log', async () => {
    const ext = externalIPv4();
    assert.ok(ext, 'this test needs a non-loopback address on the machine');
    const mock = await startMock();
    const gw = await startGateway({
      listen: { addresses: ['0.0.0.0:0'] },
      identity: { serve_headers: true },
      grants: GRANTS,
      providers: providersFor(mock.url),
    });
    try {
      const port = new URL(gw.url).port;
      // U+2028, U+2029, NEL (U+0085), CSI (U+009B) "2J", RLO (U+202E): each
      // would start a forged line in a log viewer, reorder it, or act on the
      // operator's terminal (C0 controls are refused in a header already)
      const evil = Buffer.concat([Buffer.from('x'), Buffer.from([0xe2, 0x80, 0xa8]), Buffer.from('FORGED-A'),
        Buffer.from([0xe2, 0x80, 0xa9]), Buffer.from('FORGED-B'), Buffer.from([0xc2, 0x85]), Buffer.from('FORGED-C'),
        Buffer.from([0xc2, 0x9b]), Buffer.from('2J'), Buffer.from([0xe2, 0x80, 0xae]), Buffer.from('DEL')]);
      const req = Buffer.concat([Buffer.from(`GET /api/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTailscale-User-Login: `),
        evil, Buffer.from('\r\n\r\n')]);
      const ans = await rawRequest(`http://${ext}:${port}`, req, { timeoutMs: 3000 });
      assert.match(ans, /^HTTP\/1.1 401/);
      for (let i = 0; i < 50 && !/ignoring tailscale serve identity headers/.test(gw.output()); i++) await sleep(20);
      const line = gw.output().split('\n').find((l) => l.includes('ignoring tailscale serve identity headers'));
      assert.ok(line, gw.output());
      assert.match(line, /x\?FORGED-A\?FORGED-B\?FORGED-C\?2J\?DEL/);
      for (const bad of ['\u2028', '\u2029', '\u0085', '\u009b', '\u202e'])
        assert.ok(!gw.output().includes(bad), `the log holds U+${bad.codePointAt(0).toString(16)}`);
      // and any peer may send them with every request: warned about at most every 10 s, not once each
      for (let i = 0; i < 40; i++)
        assert.match(await rawRequest(`http://${ext}:${port}`, 'GET /api/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n' +
          'Tailscale-User-Login: mallory@example.com\r\n\r\n', { timeoutMs: 3000 }), /^HTTP\/1.1 401/);
      await sleep(100);
      const n = gw.output().split('\n').filter((l) => l.includes('ignoring tailscale serve identity headers')).length;
      assert.ok(n >= 1 && n <= 2, `${n} warnings for 41 requests`);
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });
});

describe('WhoIs failure warnings', () => {
  it('with tailscaled down, a WhoIs failure is warned about at most every 10 s, not once per request', async () => {
    const mock = await startMock();
    const dir = tempDir('kl-whois-down-');
    const gw = await startGateway({ identity: { tailscale: { socket: join(dir, 'tailscaled.sock') } }, providers: providersFor(mock.url) });
    try {
      for (let i = 0; i < 60; i += 20) {
        const rs = await Promise.all(Array.from({ length: 20 }, (_, k) =>
          fetch(`${gw.url}/api/whoami`, { dispatcher: from(`127.0.0.${60 + i + k}`) })));
        for (const r of rs) {
          assert.equal(r.status, 503);
          assert.match((await r.json()).error.message, /tailscaled is unavailable/);
        }
      }
      await sleep(200);
      const lines = gw.output().split('\n').filter((l) => /WhoIs for .* failed/.test(l));
      // the first is said; the rest wait for the next one, 10 s on (two, should this test take that long)
      assert.ok(lines.length >= 1 && lines.length <= 2, `${lines.length} WhoIs warnings for 60 requests:\n${lines.join('\n')}`);
      assert.match(lines[0], /^\S+ warn WhoIs for 127\.0\.0\.\d+:\d+ failed: tailscaled is unavailable/);
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });
});
