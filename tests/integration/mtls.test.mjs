// mTLS listener: the caller is the SPIFFE ID in its client certificate.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import https from 'node:https';
import tls from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { startMock, startGateway, providersFor, assertNoKeys, BUILD, tempDir } from './lib/harness.mjs';

const dir = tempDir('kl-mtls-');
const p = (f) => join(dir, f);
const openssl = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] });

function makeCA(name) {
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-keyout', p(`${name}.key`), '-out', p(`${name}.pem`), '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
}

// A certificate signed by ca with the given extensions.
function makeCert(name, ca, ext) {
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', `/CN=${name}`);
  writeFileSync(p(`${name}.ext`), ext);
  openssl('x509', '-req', '-in', p(`${name}.csr`), '-CA', p(`${ca}.pem`), '-CAkey', p(`${ca}.key`),
    '-CAcreateserial', '-days', '2', '-out', p(`${name}.pem`), '-extfile', p(`${name}.ext`));
  return { cert: readFileSync(p(`${name}.pem`)), key: readFileSync(p(`${name}.key`)) };
}

// A certificate signed by ca that is valid only until `seconds` from now
// (openssl x509 -req takes whole days; openssl ca takes an end date).
function makeShortCert(name, ca, ext, seconds) {
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', `/CN=${name}`);
  writeFileSync(p(`${name}.ext`), ext);
  writeFileSync(p(`${name}.index`), '');
  writeFileSync(p(`${name}.cnf`), `[ca]\ndefault_ca = d\n[d]\ndatabase = ${p(`${name}.index`)}\nnew_certs_dir = ${dir}\n` +
    `serial = ${p(`${name}.serial`)}\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n`);
  writeFileSync(p(`${name}.serial`), '1000\n');
  const at = (ms) => new Date(ms).toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z';
  openssl('ca', '-batch', '-config', p(`${name}.cnf`), '-cert', p(`${ca}.pem`), '-keyfile', p(`${ca}.key`),
    '-in', p(`${name}.csr`), '-out', p(`${name}.pem`), '-notext', '-extfile', p(`${name}.ext`),
    '-startdate', at(Date.now() - 60000), '-enddate', at(Date.now() + seconds * 1000));
  return { cert: readFileSync(p(`${name}.pem`)), key: readFileSync(p(`${name}.key`)) };
}

describe('mTLS / SPIFFE', () => {
  let mock, gw, tlsUrl, certs;
  before(async () => {
    makeCA('ca');
    makeCA('otherca');
    makeCA('spareca'); // issues nothing here: trusting it or not changes which CAs are trusted, not who gets in
    writeFileSync(p('ca+spare.pem'), Buffer.concat([readFileSync(p('ca.pem')), readFileSync(p('spareca.pem'))]));
    makeCert('server', 'ca', 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n');
    certs = {
      good: makeCert('good', 'ca', 'subjectAltName=URI:spiffe://example.org/ns/ci/sa/runner\nbasicConstraints=CA:FALSE\n'),
      two: makeCert('two', 'ca', 'subjectAltName=URI:spiffe://example.org/a,URI:spiffe://example.org/b\nbasicConstraints=CA:FALSE\n'),
      none: makeCert('none', 'ca', 'subjectAltName=DNS:client.example.org\nbasicConstraints=CA:FALSE\n'),
      dotdot: makeCert('dotdot', 'ca', 'subjectAltName=URI:spiffe://example.org/a/../b\nbasicConstraints=CA:FALSE\n'),
      isca: makeCert('isca', 'ca', 'subjectAltName=URI:spiffe://example.org/ca\nbasicConstraints=critical,CA:TRUE\n'),
      nopath: makeCert('nopath', 'ca', 'subjectAltName=URI:spiffe://example.org\nbasicConstraints=CA:FALSE\n'),
      signer: makeCert('signer', 'ca', 'subjectAltName=URI:spiffe://example.org/s\nbasicConstraints=CA:FALSE\n' +
        'keyUsage=critical,digitalSignature,keyCertSign,cRLSign\n'),
      stranger: makeCert('stranger', 'otherca', 'subjectAltName=URI:spiffe://example.org/ns/ci/sa/runner\nbasicConstraints=CA:FALSE\n'),
      partner: makeCert('partner', 'otherca', 'subjectAltName=URI:spiffe://partner.net/svc/reports\nbasicConstraints=CA:FALSE\n'),
      elsewhere: makeCert('elsewhere', 'ca', 'subjectAltName=URI:spiffe://elsewhere.org/x\nbasicConstraints=CA:FALSE\n'),
    };
    mock = await startMock();
    gw = await startGateway({
      identity: {
        mtls: { listen: ['127.0.0.1:0'], cert: p('server.pem'), key: p('server.key'), client_ca: p('ca.pem') },
        loopback: false,
      },
      grants: [{ src: ['spiffe://example.org/ns/ci/sa/runner'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: 'openai/*' }] } }],
      providers: providersFor(mock.url),
    });
    tlsUrl = gw.output().match(/keyless listening on (https:\/\/\S+)/)[1];
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  // A reload that changes which CAs are trusted (the spare one in, or out again): TLS connections verified under the
  // old settings are retired.
  let spare = false;
  async function retrust() {
    spare = !spare;
    const c = JSON.parse(readFileSync(gw.configPath, 'utf8'));
    c.identity.mtls.client_ca = p(spare ? 'ca+spare.pem' : 'ca.pem');
    writeFileSync(gw.configPath, JSON.stringify(c));
    assert.match(await gw.reload(), /configuration reloaded/);
  }

  function request(path, client, body, url = tlsUrl, agent = undefined) {
    const u = new URL(url);
    return new Promise((resolveP, reject) => {
      const req = https.request({
        host: u.hostname, port: u.port, path, method: body ? 'POST' : 'GET', agent,
        ca: readFileSync(p('ca.pem')), ...(client || {}),
        headers: { 'content-type': 'application/json' },
      }, (res) => {
        let data = '';
        res.on('data', (d) => (data += d));
        res.on('end', () => resolveP({ status: res.statusCode, body: data ? JSON.parse(data) : null }));
      });
      req.on('error', reject);
      req.end(body ? JSON.stringify(body) : undefined);
    });
  }

  it('a good SPIFFE certificate identifies the caller', async () => {
    const w = await request('/api/whoami', certs.good);
    assert.equal(w.status, 200);
    assert.equal(w.body.login, 'spiffe://example.org/ns/ci/sa/runner');
    assert.equal(w.body.source, 'mtls');
    assert.equal(w.body.issuer, 'example.org');
    const r = await request('/v1/chat/completions', certs.good, { model: 'gpt-4o', messages: [] });
    assert.equal(r.status, 200);
    assert.equal(r.body.choices[0].message.content, 'Hello from mockllm.');
  });

  it('no client certificate -> 401', async () => {
    const r = await request('/v1/chat/completions', null, { model: 'gpt-4o', messages: [] });
    assert.equal(r.status, 401);
    assert.match(r.body.error.message, /client certificate/);
  });

  it('two URI SANs, no URI SAN, a bad or no path, a CA or a signer as leaf -> 401 with the reason', async () => {
    for (const [name, re] of [['two', /more than one URI SAN/], ['none', /no URI SAN/],
      ['dotdot', /may not be \. or \.\./], ['isca', /CA certificate/], ['nopath', /names only a trust domain/],
      ['signer', /keyCertSign, cRLSign/]]) {
      const r = await request('/api/whoami', certs[name]);
      assert.equal(r.status, 401, name);
      assert.match(r.body.error.message, re, name);
    }
  });

  it('a certificate that expires while its connection is kept alive names its caller no more', async () => {
    // SPIFFE revokes by short lives: a kept-alive connection (or a resumed
    // TLS session) is not verified again, so each request checks the leaf
    const short = makeShortCert('short', 'ca', 'subjectAltName=URI:spiffe://example.org/ns/ci/sa/runner\nbasicConstraints=CA:FALSE\n', 3);
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const first = await request('/api/whoami', short, undefined, tlsUrl, agent);
    assert.equal(first.status, 200);
    assert.equal(first.body.login, 'spiffe://example.org/ns/ci/sa/runner');
    await sleep(3500);
    const later = await request('/api/whoami', short, undefined, tlsUrl, agent);
    assert.equal(later.status, 401);
    assert.match(later.body.error.message, /not valid now \(expired\)/);
    agent.destroy();
    await assert.rejects(request('/api/whoami', short), 'a new handshake refuses it too');
  });

  it('a certificate from another CA fails the handshake', async () => {
    await assert.rejects(request('/api/whoami', certs.stranger));
  });

  it('the plain listener does not accept client certificates as identity', async () => {
    const r = await fetch(`${gw.url}/api/whoami`);
    assert.equal(r.status, 401);
  });

  it('trust_domains: each SPIFFE trust domain only from its own CA (a partner CA cannot issue our IDs); a domain added by SIGHUP', async () => {
    const fed = await startGateway({
      identity: {
        mtls: { listen: ['127.0.0.1:0'], cert: p('server.pem'), key: p('server.key'),
          trust_domains: { 'example.org': p('ca.pem') } },
        loopback: false,
      },
      grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: 'openai/*' }] } }],
      providers: providersFor(mock.url),
    });
    const logged = async (re) => {
      for (let i = 0; i < 50 && !re.test(fed.output()); i++) await sleep(20); // the log pipe lags the alert
      assert.match(fed.output(), re);
    };
    try {
      const url = fed.output().match(/keyless listening on (https:\/\/\S+)/)[1];
      await assert.rejects(request('/api/whoami', certs.partner, undefined, url)); // its CA is in no bundle yet
      // the partner's domain and bundle added while running: new connections use the new TLS context
      const c = JSON.parse(readFileSync(fed.configPath, 'utf8'));
      c.identity.mtls.trust_domains['partner.net'] = p('otherca.pem');
      writeFileSync(fed.configPath, JSON.stringify(c));
      assert.match(await fed.reload(), /SIGHUP: configuration reloaded/);
      await sleep(50);
      let w = await request('/api/whoami', certs.good, undefined, url);
      assert.equal(w.status, 200);
      assert.equal(w.body.login, 'spiffe://example.org/ns/ci/sa/runner');
      w = await request('/api/whoami', certs.partner, undefined, url);
      assert.equal(w.status, 200);
      assert.equal(w.body.login, 'spiffe://partner.net/svc/reports');
      assert.equal(w.body.issuer, 'partner.net');
      // the partner's CA is trusted, but not for example.org; ours not for a domain never configured
      await assert.rejects(request('/api/whoami', certs.stranger, undefined, url));
      await assert.rejects(request('/api/whoami', certs.elsewhere, undefined, url));
      await logged(/refused the client certificate for spiffe:\/\/example\.org\/ns\/ci\/sa\/runner: its chain does not lead to a CA of that trust domain/);
      await logged(/refused the client certificate for spiffe:\/\/elsewhere\.org\/x: that trust domain is not accepted here/);
      // still a 401 with the reason for a leaf whose SPIFFE ID is unusable
      w = await request('/api/whoami', certs.two, undefined, url);
      assert.equal(w.status, 401);
      assert.match(w.body.error.message, /more than one URI SAN/);
      // the partner taken out again: a kept-alive connection verified under
      // the old bundles does not keep working
      const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
      assert.equal((await request('/api/whoami', certs.partner, undefined, url, agent)).status, 200);
      delete c.identity.mtls.trust_domains['partner.net'];
      writeFileSync(fed.configPath, JSON.stringify(c));
      assert.match(await fed.reload(), /configuration reloaded/);
      await sleep(50);
      for (let i = 0; i < 3; i++) {
        const again = await request('/api/whoami', certs.partner, undefined, url, agent).catch((e) => e);
        assert.ok(again instanceof Error || again.status === 401, `request ${i} after the reload: ${JSON.stringify(again)}`);
      }
      agent.destroy();
    } finally {
      await fed.stop();
    }
  });

  it('a reload lets a TLS connection finish writing the response it has already answered', async () => {
    const u = new URL(tlsUrl);
    const s = tls.connect({ host: u.hostname, port: +u.port, ca: readFileSync(p('ca.pem')), ...certs.good });
    await new Promise((r) => s.once('secureConnect', r));
    const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: '[[mock size=3500000]] hi' }] });
    s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    const chunks = [];
    let closed = false;
    s.on('data', (d) => chunks.push(d));
    s.on('close', () => { closed = true; });
    s.on('error', () => {});
    // the client reads nothing for a while: the gateway holds the rest of the
    // answer (finished or still relaying, depending on socket buffers)
    s.pause();
    await sleep(2000);
    await retrust();
    await sleep(200);
    s.resume();
    for (let i = 0; i < 250 && !closed; i++) await sleep(20);
    const got = Buffer.concat(chunks).toString('latin1');
    const head = got.indexOf('\r\n\r\n');
    const cl = Number((got.match(/content-length: (\d+)/i) || [])[1]);
    assert.ok(cl > 3000000, got.slice(0, 200));
    assert.equal(got.length - head - 4, cl, 'the whole answer, then the connection closes');
    assert.ok(closed);
  });

  it('a reload: a request pipelined over TLS behind one in flight is answered too (told to connect again), then the connection closes', async () => {
    const u = new URL(tlsUrl);
    const s = tls.connect({ host: u.hostname, port: +u.port, ca: readFileSync(p('ca.pem')), ...certs.good });
    await new Promise((r) => s.once('secureConnect', r));
    let got = '';
    s.on('data', (d) => (got += d.toString('latin1')));
    const closed = new Promise((r) => s.on('close', r));
    s.on('error', () => {});
    const req = (body, mockHdr) => `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `x-mock: ${mockHdr}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    const stream = JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'x' }] });
    const plain = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] });
    s.write(req(stream, 'events=10;delay_events_ms=100') + req(plain, 'text=second_answer'));
    await sleep(300);
    await retrust();
    await closed;
    // the stream ends whole; the request sent behind it is not left without
    // an answer (or a record): its connection's certificate was verified
    // under the old settings, so it is told to connect again
    assert.match(got, /^HTTP\/1.1 200 OK\r\n[^]*\r\n0\r\n\r\nHTTP\/1.1 401 /, got.slice(-400));
    const last = got.slice(got.lastIndexOf('HTTP/1.1 '));
    assert.match(last, /\r\nConnection: close\r\n/);
    assert.match(JSON.parse(last.slice(last.indexOf('\r\n\r\n') + 4)).error.message, /TLS settings were reloaded/);
  });

  it('a reload that trusts the same CAs keeps a verified TLS connection serving (grants changed, a bundle rewritten)', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set();
    agent.on('free', (sock) => sockets.add(sock));
    try {
      assert.equal((await request('/api/whoami', certs.good, undefined, tlsUrl, agent)).status, 200);
      const c = JSON.parse(readFileSync(gw.configPath, 'utf8'));
      c.grants[0].app['tailscale.com/cap/aperture'][1].models = ['openai/*', 'anthropic/*'];
      // the same certificates in another order, in another file: the same trust
      const bundle = spare ? 'spare+ca.pem' : 'ca-copy.pem';
      writeFileSync(p(bundle), spare ? Buffer.concat([readFileSync(p('spareca.pem')), readFileSync(p('ca.pem'))])
        : readFileSync(p('ca.pem')));
      c.identity.mtls.client_ca = p(bundle);
      writeFileSync(gw.configPath, JSON.stringify(c));
      assert.match(await gw.reload(), /configuration reloaded/);
      await sleep(100);
      for (let i = 0; i < 3; i++) {
        const w = await request('/api/whoami', certs.good, undefined, tlsUrl, agent);
        assert.equal(w.status, 200, JSON.stringify(w.body));
        assert.ok(w.body.models.some((m) => m.startsWith('anthropic/')), 'the new grants apply');
      }
      assert.equal(sockets.size, 1, 'one connection all along');
    } finally {
      agent.destroy();
    }
  });

  it('keyless check: client_ca or trust_domains, with valid domain names and readable bundles', () => {
    const check = (mtls, extra = {}) => {
      const f = p('check.hujson');
      writeFileSync(f, JSON.stringify({ identity: { mtls: { listen: ['127.0.0.1:0'], cert: p('server.pem'), key: p('server.key'), ...mtls }, ...extra } }));
      return spawnSync(join(BUILD, 'keyless'), ['check', '--config', f], { encoding: 'utf8' });
    };
    assert.equal(check({ trust_domains: { 'example.org': p('ca.pem') } }).status, 0);
    // left out of identity.order, the listener's certificates would identify no one: warned about
    const left = check({ client_ca: p('ca.pem') }, { order: ['loopback'] });
    assert.equal(left.status, 0, left.stderr);
    assert.match(left.stderr, /identity source "mtls" is configured but not in identity.order: it identifies no one/);
    for (const [mtls, msg] of [
      [{ client_ca: p('ca.pem'), trust_domains: { 'example.org': p('ca.pem') } }, /either "client_ca"/],
      [{}, /either "client_ca"/],
      [{ trust_domains: {} }, /must map each trust domain to its CA bundle/],
      [{ trust_domains: { 'Example.org': p('ca.pem') } }, /"Example\.org" is not a trust domain name/],
      [{ trust_domains: { 'example.org': p('missing.pem') } }, /cannot read certificates from the bundle/],
      [{ trust_domains: { 'example.org': p('good.key') } }, /cannot read certificates from the bundle/],
    ]) {
      const r = check(mtls);
      assert.equal(r.status, 1, `${JSON.stringify(mtls)}: ${r.stderr}`);
      assert.match(r.stderr, msg);
    }
  });
});
