// keyless's own HTTP/1.1 client for plain http:// upstreams, against a
// scripted upstream that writes exact bytes: keep-alive reuse, a pooled
// connection the server closed (retried once, transparently), chunked and
// close-delimited bodies, interim 1xx answers, malformed answers, what the
// request looks like on the wire.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import { startGateway, providersFor, KEYS, assertNoKeys, scriptedUpstream, rawRequest } from './lib/harness.mjs';

let releaseCr = () => {};
const JSON_BODY = '{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}';

// An embeddings-sized answer: ~3 MB of JSON, built once.
let big = null;
function bigBody() {
  if (!big) {
    const vec = Array.from({ length: 1536 }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
    const n = Math.ceil(3 * 1024 * 1024 / JSON.stringify(vec).length);
    const data = Array.from({ length: n }, (_, index) => ({ object: 'embedding', index, embedding: vec }));
    big = Buffer.from(JSON.stringify({ object: 'list', data, model: 'gpt-4o',
      usage: { prompt_tokens: 5, total_tokens: 5 } }));
  }
  return big;
}

// Headers a Connection line names are hop-by-hop (RFC 9110 section 7.6.1): the line may come after them, there
// may be many such lines, and a name may be long.
const LONG = 'x'.repeat(70);
function listed(sock) {
  const nine = Array.from({ length: 8 }, (_, i) => `Connection: x-filler-${i}\r\n`).join('');
  sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Hop: secret\r\nConnection: X-HOP, ${LONG}\r\n` +
    `${nine}Connection: x-ninth\r\nX-Ninth: relayed\r\n${LONG}: long\r\nX-Kept: yes\r\n` +
    `Content-Length: ${JSON_BODY.length}\r\n\r\n${JSON_BODY}`);
}
// A whole chunked answer, then a trailer libcurl would refuse as a header line.
function trailer(sock) {
  sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n' +
    `${JSON_BODY.length.toString(16)}\r\n${JSON_BODY}\r\n0\r\nX-T: a\x01b\r\nContent-Length: 5\r\n\r\n`);
}
function assertListedDropped(r) {
  assert.equal(r.status, 200, r.text);
  assert.equal(r.text, JSON_BODY);
  for (const name of ['x-hop', 'x-ninth', LONG]) assert.equal(r.headers.get(name), null, name);
  assert.equal(r.headers.get('x-kept'), 'yes');
}

// A provider that grants the page's Origin the reading of its answer (a provider API that serves browsers).
function cors(sock, req) {
  sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nAccess-Control-Allow-Origin: ${req.headers.origin}\r\n` +
    `access-control-allow-credentials: true\r\nAccess-Control-Expose-Headers: x-request-id\r\n` +
    `Content-Length: ${JSON_BODY.length}\r\n\r\n${JSON_BODY}`);
}
// A plain-text POST from a web page. A page of another site is refused before anything is forwarded (identity.test.mjs);
// this one claims the gateway's own origin, so the provider's grant would reach a browser if it were relayed.
async function fromPage(url) {
  const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
  const raw = await rawRequest(url, `POST /v1/chat/completions HTTP/1.1\r\nHost: keyless\r\nOrigin: http://keyless\r\n` +
    `Content-Type: text/plain;charset=UTF-8\r\nx-script: cors\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
  assert.match(raw, /^HTTP\/1\.1 200 /);
  assert.ok(raw.endsWith(JSON_BODY), raw);
  assert.doesNotMatch(raw.slice(0, raw.indexOf('\r\n\r\n')), /access-control-/i, 'no CORS grant for the gateway\'s origin');
}

// A provider that sends the caller elsewhere (x-where: a server that counts who came).
function redirect(sock, req) {
  sock.write(`HTTP/1.1 307 Temporary Redirect\r\nLocation: ${req.headers['x-where']}\r\nContent-Location: /x\r\n` +
    'Refresh: 0; url=/x\r\nStrict-Transport-Security: max-age=63072000\r\nContent-Length: 0\r\n\r\n');
}
// The caller is not sent where the provider's redirect led: its fetch would follow it with the prompt.
async function notRedirected(chat) {
  let came = 0;
  const elsewhere = http.createServer((req, res) => { came++; res.end('{}'); });
  await new Promise((resolve) => elsewhere.listen(0, '127.0.0.1', resolve));
  try {
    const r = await chat('redirect', { headers: { 'x-where': `http://127.0.0.1:${elsewhere.address().port}/stolen` } });
    assert.equal(r.status, 307);
    for (const h of ['location', 'content-location', 'refresh', 'strict-transport-security'])
      assert.equal(r.headers.get(h), null, h);
    assert.equal(came, 0, 'the prompt went nowhere else');
  } finally {
    elsewhere.close();
  }
}

const scripts = {
  listed,
  trailer,
  cors,
  redirect,
  ok(sock) {
    sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${JSON_BODY.length}\r\n` +
      `x-upstream: yes\r\nSet-Cookie: s=1\r\nKeep-Alive: timeout=5\r\n\r\n${JSON_BODY}`);
  },
  // Answers the first request on a connection; closes the connection without
  // a word when a second request arrives on it (a server that dropped an idle
  // keep-alive connection just as it was reused).
  'drop-reused'(sock, req) {
    if (req.onConn > 1) { sock.destroy(); return; }
    scripts.ok(sock);
  },
  // Answers, then closes the idle connection a moment later.
  'ok-then-close'(sock) {
    scripts.ok(sock);
    setTimeout(() => sock.end(), 30);
  },
  // Echoes the request body's length and a checksum of it.
  echo(sock, req) {
    let sum = 0;
    for (let i = 0; i < req.body.length; i++) sum = (sum + req.body.charCodeAt(i)) % 1000003;
    const b = JSON.stringify({ len: Buffer.byteLength(req.body), sum });
    sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\n\r\n${b}`);
  },
  // Same, but with a reset (RST) instead of a clean close.
  'reset-reused'(sock, req) {
    if (req.onConn > 1) { sock.resetAndDestroy(); return; }
    scripts.ok(sock);
  },
  // Chunked SSE with a chunk extension, a trailer, and writes split at odd places.
  async chunked(sock) {
    const events = ['data: {"choices":[{"delta":{"content":"a"}}]}\n\n', 'data: {"choices":[{"delta":{"content":"b"}}]}\n\n', 'data: [DONE]\n\n'];
    let wire = 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n';
    for (const [i, e] of events.entries()) wire += `${Buffer.byteLength(e).toString(16)}${i === 0 ? ';ext=1' : ''}\r\n${e}\r\n`;
    wire += '0\r\nx-trailer: t\r\n\r\n';
    for (let i = 0; i < wire.length; i += 7) {
      sock.write(wire.slice(i, i + 7));
      await new Promise((r) => setTimeout(r, 1));
    }
  },
  // Events whose lines end in a lone CR; the second waits for releaseCr().
  'cr-only'(sock) {
    const chunk = (e) => `${Buffer.byteLength(e).toString(16)}\r\n${e}\r\n`;
    sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n' +
      chunk('data: {"choices":[{"delta":{"content":"a"}}]}\r\r'));
    new Promise((r) => { releaseCr = r; }).then(() => sock.write(chunk('data: [DONE]\r\r') + '0\r\n\r\n'));
  },
  // No length, no chunks: the body ends when the server closes.
  close(sock) {
    sock.write('HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n');
    sock.write(JSON_BODY.slice(0, 10));
    setTimeout(() => { sock.end(JSON_BODY.slice(10)); }, 20);
  },
  // A close-delimited body cut by a reset: data and the RST arrive together,
  // so libevent's read or keyless's larger read (read_more) may meet it.
  'close-reset'(sock) {
    sock.write('HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n');
    sock.write('x'.repeat(300000), () => sock.resetAndDestroy());
  },
  'conn-close'(sock) {
    sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: ${JSON_BODY.length}\r\n\r\n${JSON_BODY}`);
  },
  interim(sock) {
    sock.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n');
    scripts.ok(sock);
  },
  malformed(sock) {
    sock.end('HTTP/1.1 two hundred\r\n\r\n');
  },
  'bad-chunk'(sock) {
    sock.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcdeXX');
  },
  // Promises 1000 bytes, sends 10, closes.
  short(sock) {
    sock.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"partial"');
  },
  // A 3 MB answer, with a length or in 100 KB chunks, written in pieces.
  async big(sock, req) {
    const body = bigBody();
    const chunked = req.headers['x-framing'] === 'chunked';
    sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n' +
      (chunked ? 'Transfer-Encoding: chunked\r\n\r\n' : `Content-Length: ${body.length}\r\n\r\n`));
    for (let i = 0; i < body.length; i += 100000) {
      const piece = body.subarray(i, i + 100000);
      sock.write(chunked ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece,
        Buffer.from('\r\n')]) : piece);
      if (i % 1000000 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    if (chunked) sock.write('0\r\n\r\n');
  },
  // A 204 that announces a body, and sends one later: never the next caller's answer.
  late204(sock) {
    sock.write('HTTP/1.1 204 No Content\r\nContent-Length: 17\r\n\r\n');
    setTimeout(() => sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n' +
      '{"stale":"resp!"}'), 30);
  },
  // An answer that takes a while.
  slow(sock) {
    setTimeout(() => scripts.ok(sock), 80);
  },
  // An answer whose head carries x-pad of the length the request asked for (x-pad-len): the caller's head crosses
  // every buffer size there is.
  padded(sock, req) {
    const pad = 'p'.repeat(Number(req.headers['x-pad-len']));
    sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-pad: ${pad}\r\nx-after: 1\r\n` +
      `Content-Length: ${JSON_BODY.length}\r\n\r\n${JSON_BODY}`);
  },
  // A provider error, passed through with its status and body.
  teapot(sock) {
    const b = '{"error":{"message":"no","type":"invalid_request_error"}}';
    sock.write(`HTTP/1.1 418 I'm a teapot\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\n\r\n${b}`);
  },
};

// p, or a failure naming what after 5 s: a head cut short leaves both ends waiting for the rest.
function soon(p, what) {
  let timer;
  const late = new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error(`no answer: ${what}`)), 5000); });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

describe('upstream: the native HTTP/1.1 client', () => {
  let up, gw, gwLocal, port, responses = '';
  before(async () => {
    up = scriptedUpstream(scripts);
    port = await up.listen();
    // One worker: one pool, so reuse is deterministic.
    gw = await startGateway({ providers: providersFor(`http://127.0.0.1:${port}`) }, { workers: 1 });
    gwLocal = await startGateway({ providers: providersFor(`http://localhost:${port}/`) }, { workers: 1 });
  });
  after(async () => {
    await gw.stop();
    await gwLocal.stop();
    await up.close();
    assertNoKeys(assert, gw.output() + gwLocal.output() + responses, 'gateway log or responses');
  });

  async function chat(script, { url = gw.url, stream = false, headers = {} } = {}) {
    const r = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-script': script, ...headers },
      body: JSON.stringify({ model: 'gpt-4o', stream, messages: [{ role: 'user', content: 'hi' }] }),
    });
    let text;
    try { text = await r.text(); } catch (e) { text = null; }
    responses += JSON.stringify([...r.headers]) + (text || '');
    return { status: r.status, headers: r.headers, text };
  }

  it('sends a plain-text request with the body and the provider key, and reuses the connection', async () => {
    const c0 = up.conns();
    const n0 = up.seen.length;
    const a = await chat('ok', { headers: { 'accept-encoding': 'gzip, br' } });
    const b = await chat('ok');
    assert.equal(a.status, 200);
    assert.equal(a.text, JSON_BODY);
    assert.equal(b.text, JSON_BODY);
    assert.equal(a.headers.get('x-upstream'), 'yes');
    assert.equal(a.headers.get('set-cookie'), null);
    assert.equal(a.headers.get('keep-alive'), null);
    assert.equal(up.conns() - c0 <= 1, true, 'the second request reuses the first one\'s connection');
    const [r1, r2] = up.seen.slice(n0);
    assert.equal(r2.conn, r1.conn);
    assert.equal(r1.line, 'POST /v1/chat/completions HTTP/1.1');
    assert.equal(r1.headers['accept-encoding'], 'identity');
    assert.equal(r1.headers.host, `127.0.0.1:${port}`);
    assert.equal(r1.headers.authorization, `Bearer ${KEYS.openai}`);
    assert.equal(Number(r1.headers['content-length']), Buffer.byteLength(r1.body));
    assert.equal(JSON.parse(r1.body).messages[0].content, 'hi');
    assert.equal(r1.headers['transfer-encoding'], undefined);
  });

  it('a request head past 2 KiB (put together in pieces) reaches the provider whole and in order', async () => {
    const n0 = up.seen.length;
    const big = 'a'.repeat(3000), mid = 'b'.repeat(1500);
    const r = await chat('ok', { headers: { 'x-first': '1', 'x-big': big, 'x-mid': mid, 'x-last': 'z' } });
    assert.equal(r.status, 200);
    assert.equal(r.text, JSON_BODY);
    const [seen] = up.seen.slice(n0);
    assert.equal(seen.line, 'POST /v1/chat/completions HTTP/1.1');
    assert.equal(seen.headers['x-big'], big);
    assert.equal(seen.headers['x-mid'], mid);
    assert.equal(seen.headers['x-last'], 'z');
    assert.equal(seen.headers.authorization, `Bearer ${KEYS.openai}`);
    assert.equal(Number(seen.headers['content-length']), Buffer.byteLength(seen.body));
    assert.equal(JSON.parse(seen.body).messages[0].content, 'hi');
    const names = Object.keys(seen.headers);
    assert.ok(names.indexOf('x-first') < names.indexOf('x-big') && names.indexOf('x-big') < names.indexOf('x-mid') &&
      names.indexOf('x-mid') < names.indexOf('x-last'), names.join(','));
  });

  it('a request head of every length around 2 KiB (its stack buffer) reaches the provider byte for byte', async () => {
    const n0 = up.seen.length;
    await chat('ok', { headers: { 'x-pad': 'q', 'x-tail': 't' } });
    const base = up.seen[n0].head;
    const extra = 2048 - base.length;
    // the head from 2 KiB - 40 to 2 KiB + 40, each byte: the buffer fills at every piece (the pad, its CRLF, the
    // fixed lines, Content-Length)
    for (let len = extra - 40; len <= extra + 40; len++) {
      const pad = 'q'.repeat(len + 1);
      const n = up.seen.length;
      const r = await soon(chat('ok', { headers: { 'x-pad': pad, 'x-tail': 't' } }), `pad ${pad.length}`);
      assert.equal(r.status, 200);
      assert.equal(r.text, JSON_BODY);
      const seen = up.seen[n];
      assert.equal(seen.head, base.replace('x-pad: q\r\n', `x-pad: ${pad}\r\n`), `pad ${pad.length}`);
      assert.equal(JSON.parse(seen.body).messages[0].content, 'hi');
    }
  });

  it('a provider\'s response head of any length is relayed whole: around 2 and 4 KiB, near the 64 KiB limit', async () => {
    const lens = [0, 1];
    for (let i = 1900; i <= 2200; i += 3) lens.push(i);
    for (let i = 3990; i <= 4200; i += 3) lens.push(i);
    for (const len of lens) {
      const r = await soon(chat('padded', { headers: { 'x-pad-len': String(len) } }), `pad ${len}`);
      assert.equal(r.status, 200, `pad ${len}`);
      assert.equal(r.text, JSON_BODY);
      assert.equal(r.headers.get('x-pad'), 'p'.repeat(len), `pad ${len}`);
      assert.equal(r.headers.get('x-after'), '1');
      assert.ok(r.headers.get('x-keyless-request-id'));
    }
    // the same bytes on the wire, the head's framing last; heads past what fetch reads (16 KiB)
    const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    const esc = JSON_BODY.replace(/[.{}[\]]/g, '\\$&');
    for (const len of [4000, 16384, 32768, 65000]) {
      const raw = await rawRequest(gw.url, `POST /v1/chat/completions HTTP/1.1\r\nHost: keyless\r\nx-script: padded\r\n` +
        `x-pad-len: ${len}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n` +
        body);
      assert.match(raw, new RegExp(`^HTTP/1\\.1 200 OK\\r\\n(?:[^\\r\\n]+\\r\\n)*x-pad: p{${len}}\\r\\nx-after: 1\\r\\n` +
        `(?:[^\\r\\n]+\\r\\n)*x-keyless-request-id: [^\\r\\n]+\\r\\n\\r\\n${esc}$`), `pad ${len}`);
    }
  });

  it('a pooled connection the server closed is retried once on a fresh one', async () => {
    for (const script of ['drop-reused', 'reset-reused']) {
      await chat('ok'); // leaves an idle connection in the pool
      const n0 = up.seen.length;
      const r = await chat(script);
      assert.equal(r.status, 200, script);
      assert.equal(r.text, JSON_BODY, script);
      const tries = up.seen.slice(n0);
      assert.equal(tries.length, 2, `${script}: sent once more`);
      assert.notEqual(tries[1].conn, tries[0].conn, `${script}: on a new connection`);
      assert.equal(tries[1].body, tries[0].body);
    }
  });

  it('an idle connection the server closes leaves the pool at once (no retry needed)', async () => {
    await chat('ok-then-close');
    await new Promise((r) => setTimeout(r, 300));
    const n0 = up.seen.length;
    const r = await chat('ok');
    assert.equal(r.status, 200);
    assert.equal(up.seen.length - n0, 1, 'sent once, on a fresh connection');
  });

  it('an answer that starts before the connect completes is one answer, however its body reads', async () => {
    // The server writes its head and half the body as it accepts, before it
    // has read anything; the rest of the body, which spells a second head,
    // follows the request. libevent may report the connect after the first
    // bytes were read: the answer under way must keep its state.
    const rest = 'HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Injected: yes\r\nContent-Length: 2\r\n\r\nhi';
    const first = '{"id":"early","pad":"' + 'p'.repeat(40) + '",';
    const total = first.length + rest.length;
    const early = net.createServer((sock) => {
      sock.on('error', () => {});
      sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: ${total}\r\n\r\n${first}`);
      sock.once('data', () => setTimeout(() => sock.end(rest), 5));
    });
    await new Promise((r) => early.listen(0, '127.0.0.1', r));
    const g = await startGateway({ providers: providersFor(`http://127.0.0.1:${early.address().port}`) }, { workers: 1 });
    try {
      for (let i = 0; i < 40; i++) {
        const r = await fetch(`${g.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }) });
        assert.equal(r.headers.get('x-injected'), null, `try ${i}`);
        assert.equal(await r.text(), first + rest, `try ${i}`);
      }
    } finally {
      await g.stop();
      early.close();
    }
  });

  it('a multi-megabyte request body arrives intact, on a new and on a reused connection', async () => {
    const big = 'x'.repeat(3 * 1024 * 1024);
    let sum = 0;
    const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: big }] });
    for (let i = 0; i < body.length; i++) sum = (sum + body.charCodeAt(i)) % 1000003;
    for (let k = 0; k < 2; k++) {
      const r = await fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json', 'x-script': 'echo' }, body,
      });
      assert.equal(r.status, 200);
      assert.deepEqual(await r.json(), { len: body.length, sum });
    }
  });

  it('a large body sent in pieces, with a pipelined request behind it, arrives intact', async () => {
    // The body is read straight into its buffer past libevent's first 4 KiB;
    // that read must stop at Content-Length and leave the next request alone.
    const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'y'.repeat(600000) }] });
    let sum = 0;
    for (let i = 0; i < body.length; i++) sum = (sum + body.charCodeAt(i)) % 1000003;
    const head = (len, extra = '') => `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n` +
      `Content-Type: application/json\r\nx-script: echo\r\n${extra}Content-Length: ${len}\r\n\r\n`;
    const small = '{"model":"gpt-4o","messages":[]}';
    const url = new URL(gw.url);
    const text = await new Promise((resolve, reject) => {
      const sock = net.connect(Number(url.port), url.hostname);
      let got = '';
      sock.on('data', (d) => { got += d; });
      sock.on('end', () => resolve(got));
      sock.on('error', reject);
      sock.on('connect', async () => {
        const cut = [0, 3000, 250000, body.length - 10, body.length];
        sock.write(head(body.length));
        for (let k = 0; k + 1 < cut.length; k++) {
          await new Promise((r) => setTimeout(r, 30));
          const piece = body.slice(cut[k], cut[k + 1]);
          sock.write(k + 2 === cut.length ? piece + head(small.length, 'Connection: close\r\n') + small : piece);
        }
      });
    });
    const answers = text.match(/HTTP\/1.1 200 OK/g) || [];
    assert.equal(answers.length, 2, text.slice(0, 300));
    assert.ok(text.includes(JSON.stringify({ len: body.length, sum })), 'the large body arrived whole');
    let sum2 = 0;
    for (let i = 0; i < small.length; i++) sum2 = (sum2 + small.charCodeAt(i)) % 1000003;
    assert.ok(text.includes(JSON.stringify({ len: small.length, sum: sum2 })), 'the pipelined one too');
  });

  it('a 3 MB answer arrives intact, with a length and chunked', async () => {
    const want = bigBody();
    for (const framing of ['length', 'chunked']) {
      const r = await chat('big', { headers: { 'x-framing': framing } });
      assert.equal(r.status, 200);
      assert.equal(r.text.length, want.length, framing);
      assert.ok(r.text === want.toString(), framing);
    }
  });

  it('relays a chunked stream with extensions and trailers, event by event', async () => {
    const r = await chat('chunked', { stream: true });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /text\/event-stream/);
    assert.equal(r.text.match(/^data: /gm).length, 3);
    assert.match(r.text, /data: \[DONE\]\n\n$/);
    assert.ok(!r.text.includes('x-trailer'));
  });

  it('relays an event of a CR-only stream when its blank line arrives, not with the next one', async () => {
    const r = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-script': 'cr-only' },
      body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(r.status, 200);
    const reader = r.body.getReader();
    let got = '';
    const first = (async () => {
      while (!got.includes('\r\r')) {
        const { value, done } = await reader.read();
        if (done) break;
        got += Buffer.from(value).toString();
      }
    })();
    const late = new Promise((res) => setTimeout(res, 3000, 'late'));
    const held = await Promise.race([first, late]);
    releaseCr();
    assert.notEqual(held, 'late', 'the first event was held back until the provider sent more');
    assert.equal(got, 'data: {"choices":[{"delta":{"content":"a"}}]}\r\r');
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      got += Buffer.from(value).toString();
    }
    assert.equal(got, 'data: {"choices":[{"delta":{"content":"a"}}]}\r\rdata: [DONE]\r\r');
  });

  it('a close-delimited body arrives whole, and the connection is not reused', async () => {
    const n0 = up.seen.length;
    const r = await chat('close');
    assert.equal(r.status, 200);
    assert.equal(r.text, JSON_BODY);
    const r2 = await chat('ok');
    assert.equal(r2.status, 200);
    const [a, b] = up.seen.slice(n0);
    assert.notEqual(a.conn, b.conn);
  });

  it('a close-delimited answer cut by a reset is an error, not a complete answer', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await chat('close-reset');
      assert.equal(r.status, 200); // the head had gone out
      assert.equal(r.text, null, 'the body must end as broken, not complete');
    }
  });

  it('Connection: close is honoured', async () => {
    const n0 = up.seen.length;
    assert.equal((await chat('conn-close')).text, JSON_BODY);
    assert.equal((await chat('ok')).status, 200);
    const [a, b] = up.seen.slice(n0);
    assert.notEqual(a.conn, b.conn);
  });

  it('headers the provider\'s Connection lines name are not relayed, however many lines and however long the names', async () => {
    assertListedDropped(await chat('listed'));
    const t = await chat('trailer');
    assert.equal(t.status, 200);
    assert.equal(t.text, JSON_BODY, 'a trailer is no part of the answer');
  });

  it('a provider\'s redirect is not followed, nor handed on for the caller to follow', async () => {
    await notRedirected(chat);
  });

  it('a provider\'s CORS grant is not relayed: a web page cannot read an answer keyless gave its visitor', async () => {
    await fromPage(gw.url);
    assert.equal(up.seen.at(-1).headers.origin, 'http://keyless', 'the provider was asked with the page\'s Origin');
  });

  it('interim 1xx answers are skipped', async () => {
    const r = await chat('interim');
    assert.equal(r.status, 200);
    assert.equal(r.text, JSON_BODY);
    assert.equal(r.headers.get('link'), null);
  });

  it('provider errors pass through with their status and body', async () => {
    const r = await chat('teapot');
    assert.equal(r.status, 418);
    assert.equal(JSON.parse(r.text).error.message, 'no');
  });

  it('a malformed answer is a 502; a broken body is cut off; the gateway keeps serving', async () => {
    const m = await chat('malformed');
    assert.equal(m.status, 502);
    assert.equal(JSON.parse(m.text).error.type, 'server_error');
    assert.match(JSON.parse(m.text).error.message, /malformed/);
    const b = await chat('bad-chunk');
    assert.equal(b.status, 200);
    assert.notEqual(b.text, 'abcde', 'a body with a broken chunk must not look complete');
    const s = await chat('short');
    assert.equal(s.status, 200);
    assert.ok(s.text === null || s.text.length < 1000, 'a short body must not look complete');
    assert.equal((await chat('ok')).text, JSON_BODY);
  });

  it('a connection whose 204 announced a body is not reused: what it sends later is nobody\'s answer', async () => {
    assert.equal((await chat('late204')).status, 204);
    assert.equal((await chat('slow')).text, JSON_BODY); /* sent at once: on that connection, it would get the late bytes */
  });

  it('a provider named localhost is resolved without blocking, and works', async () => {
    const r = await chat('ok', { url: gwLocal.url });
    assert.equal(r.status, 200);
    assert.equal(r.text, JSON_BODY);
    assert.equal(up.seen[up.seen.length - 1].headers.host, `localhost:${port}`);
  });
});

// The same scripted upstream as a forward proxy (absolute-form targets):
// with http_proxy set, keyless sends its provider requests through
// libcurl, the path every https:// provider takes. What libcurl lets
// through is checked as the native client checks it.
const curlScripts = {
  redirect,
  ok: scripts.ok,
  cors,
  listed,
  trailer,
  // an obsolete folded header line: with a reused easy handle, libcurl
  // before 8.1.0 freed the last answer's headers twice (curl issue #11101)
  fold(sock) {
    sock.write('HTTP/1.1 200 OK\r\n Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}');
  },
  fold2(sock) {
    sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\n{}');
  },
  // a bare CR that would end a header line for the caller
  cr(sock) {
    sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-A: a\rSet-Cookie: injected=1\r\n' +
      'Content-Length: 2\r\n\r\n{}');
  },
  // a status libcurl reads as 100 (a final 1xx would reach the caller)
  badstatus(sock) {
    sock.write('HTTP/.1 100 Continue\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}');
  },
  // a head past 64 KiB, the native client's limit, in lines libcurl takes
  bighead(sock) {
    const lines = Array.from({ length: 9 }, (_, i) => `X-Big-${i}: ${'b'.repeat(8000)}\r\n`).join('');
    sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n${lines}Content-Length: 2\r\n\r\n{}`);
  },
  // an interim answer's head of 56 KiB, then a small one: each head is held to the limit alone
  nearhead(sock) {
    const lines = Array.from({ length: 7 }, (_, i) => `X-Big-${i}: ${'b'.repeat(8000)}\r\n`).join('');
    sock.write(`HTTP/1.1 100 Continue\r\n${lines}\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Near: 1\r\n` +
      'Content-Length: 2\r\n\r\n{}');
  },
  // a Content-Length past 2^63
  hugelength(sock) {
    sock.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 99999999999999999999\r\n\r\n{}');
  },
  // Transfer-Encoding and a Content-Length that lies: the chunked body wins
  // (RFC 9112 section 6.3), and is relayed chunked, never as "2 bytes" and
  // then a second response the caller would read as the next one
  split(sock) {
    const inner = '{}HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 25\r\n\r\n<script>alert(1)</script>';
    sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n' +
      `${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`);
  },
};

describe('upstream: libcurl (the https:// path) relays only what the native client would', () => {
  let up, gw, port;
  before(async () => {
    up = scriptedUpstream(curlScripts);
    port = await up.listen();
    gw = await startGateway({ providers: providersFor('http://provider.invalid') }, { workers: 1,
      env: { http_proxy: `http://127.0.0.1:${port}`, no_proxy: '' } });
  });
  after(async () => {
    await gw.stop();
    await up.close();
  });
  const chat = async (script, { headers = {} } = {}) => {
    const r = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-script': script, ...headers },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });
    return { status: r.status, headers: r.headers, text: await r.text() };
  };

  it('malformed heads are a 502 naming why, and the gateway lives on (a folded line after a reused handle)', async () => {
    for (const [script, why] of [['fold', /./], ['fold2', /obsolete line folding/], ['cr', /control character/],
      ['badstatus', /malformed status line/], ['hugelength', /invalid Content-Length/],
      ['bighead', /response head too large/]]) {
      const ok = await chat('ok');
      assert.equal(ok.status, 200, script);
      assert.equal(ok.text, JSON_BODY);
      const r = await chat(script);
      assert.equal(r.status, 502, `${script}: ${r.text}`);
      assert.match(JSON.parse(r.text).error.message, why);
      assert.equal(r.headers.get('set-cookie'), null);
    }
    assert.ok(up.seen.every((s) => s.line.startsWith('POST http://provider.invalid/')), 'through libcurl as a proxy');
    assert.equal((await chat('ok')).status, 200);
    const near = await chat('nearhead');
    assert.equal(near.status, 200, near.text);
    assert.equal(near.headers.get('x-near'), '1');
  });

  it('headers the provider\'s Connection lines name are not relayed; a trailer does not break a whole answer', async () => {
    assertListedDropped(await chat('listed'));
    const t = await chat('trailer');
    assert.equal(t.status, 200);
    assert.equal(t.text, JSON_BODY, 'the answer, whole, and no error after it');
  });

  it('a provider\'s redirect is not followed, nor handed on for the caller to follow', async () => {
    await notRedirected(chat);
  });

  it('a provider\'s CORS grant is not relayed', async () => {
    await fromPage(gw.url);
    assert.match(up.seen.at(-1).line, /^POST http:\/\/provider\.invalid\//);
  });

  it('Transfer-Encoding wins over a lying Content-Length: the caller gets the decoded body, chunked', async () => {
    const r = await chat('split');
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-length'), null);
    assert.match(r.text, /^\{\}HTTP\/1\.1 200 OK/);
    assert.ok(r.text.endsWith('<script>alert(1)</script>'));
  });
});

// An https:// provider behind a proxy is reached through a CONNECT tunnel: the proxy's own answer to CONNECT is
// not the provider's. Here the tunnel leads to a server that speaks no TLS (as one whose certificate keyless does not
// trust would fail): the provider is unreachable, and the request goes to the next provider.
describe('upstream: libcurl through a CONNECT proxy', () => {
  it('the proxy\'s "200 Connection established" is not relayed as the answer; a failed tunnel fails over', async () => {
    const http = await import('node:http');
    const proxy = http.createServer((req, res) => { res.writeHead(405); res.end(); });
    const tunnels = [];
    proxy.on('connect', (req, sock, head) => {
      tunnels.push(req.url);
      sock.on('error', () => {});
      if (req.url.startsWith('auth.test')) {
        sock.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      const up = net.connect(Number(req.url.split(':')[1]), '127.0.0.1', () => {
        sock.write('HTTP/1.1 200 Connection established\r\nProxy-Agent: test-proxy\r\n\r\n');
        up.write(head);
        up.pipe(sock);
        sock.pipe(up);
      });
      up.on('error', () => sock.destroy());
    });
    await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
    const notTls = net.createServer((sock) => { sock.on('error', () => {}); sock.end('HTTP/1.1 400 Bad Request\r\n\r\n'); });
    await new Promise((r) => notTls.listen(0, '127.0.0.1', r));
    const backup = scriptedUpstream(scripts);
    const backupPort = await backup.listen();
    const both = (primary) => ({
      primary: { baseurl: primary, apikey: KEYS.openai, models: ['gpt-4o'], preference: 10, compatibility: { openai_chat: true } },
      backup: { baseurl: `http://127.0.0.1:${backupPort}`, apikey: KEYS.anthropic, models: ['gpt-4o'], compatibility: { openai_chat: true } },
    });
    try {
      for (const primary of [`https://localhost:${notTls.address().port}`, 'https://auth.test']) {
        const gw = await startGateway({ providers: both(primary) }, { workers: 1,
          env: { https_proxy: `http://127.0.0.1:${proxy.address().port}`, no_proxy: '127.0.0.1' } });
        try {
          const n0 = backup.seen.length;
          const r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }) });
          assert.equal(r.status, 200, primary);
          assert.equal(await r.text(), JSON_BODY, primary);
          assert.equal(r.headers.get('proxy-agent'), null, primary);
          assert.equal(backup.seen.length - n0, 1, `${primary}: the backup answered`);
        } finally {
          await gw.stop();
        }
      }
      assert.equal(tunnels.length, 2, 'both through the proxy');
    } finally {
      proxy.close();
      notTls.close();
      await backup.close();
    }
  });
});

// upstream_idle "0" is no deadline between bytes: it must end the first
// byte's too, not leave it running to cut every long stream at
// upstream_first_byte. The same on the native client and on libcurl.
describe('upstream: timeouts', () => {
  const slow = {
    slowstream(sock) {
      sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n');
      let i = 0;
      const tick = setInterval(() => {
        const ev = i < 10
          ? `data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"${i}"},"finish_reason":null}]}\n\n`
          : 'data: [DONE]\n\n';
        sock.write(`${Buffer.byteLength(ev).toString(16)}\r\n${ev}\r\n`);
        if (i++ >= 10) {
          clearInterval(tick);
          sock.write('0\r\n\r\n');
        }
      }, 200);
      sock.on('close', () => clearInterval(tick));
    },
  };
  for (const path of ['native', 'libcurl']) {
    it(`upstream_idle "0" lets a stream run past upstream_first_byte (${path})`, async () => {
      const up = scriptedUpstream(slow);
      const port = await up.listen();
      const curl = path === 'libcurl';
      const gw = await startGateway({
        listen: { timeouts: { upstream_first_byte: '1s', upstream_idle: '0' } },
        providers: providersFor(curl ? 'http://provider.invalid' : `http://127.0.0.1:${port}`),
      }, { workers: 1, env: curl ? { http_proxy: `http://127.0.0.1:${port}`, no_proxy: '' } : {} });
      try {
        const r = await fetch(`${gw.url}/v1/chat/completions`, {
          method: 'POST', headers: { 'content-type': 'application/json', 'x-script': 'slowstream' },
          body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
        });
        const text = await r.text();
        assert.equal(r.status, 200);
        assert.doesNotMatch(text, /upstream_timeout/);
        assert.match(text, /"content":"9"[\s\S]*data: \[DONE\]/, 'every event, 2 s of them, and the end');
        if (curl) assert.ok(up.seen.every((s) => s.line.startsWith('POST http://provider.invalid/')));
      } finally {
        await gw.stop();
        await up.close();
      }
    });
  }
});

// With all_proxy alone, http:// providers go through it too, as libcurl would take it.
describe('upstream: all_proxy', () => {
  it('all_proxy alone is the proxy for http:// providers too', async () => {
    const up = scriptedUpstream(scripts);
    const port = await up.listen();
    const gw = await startGateway({ providers: providersFor('http://provider.invalid') }, { workers: 1,
      env: { all_proxy: `http://127.0.0.1:${port}`, http_proxy: '', HTTP_PROXY: '', no_proxy: '' } });
    try {
      const r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }) });
      assert.equal(r.status, 200);
      assert.equal(await r.text(), JSON_BODY);
      assert.match(up.seen[0].line, /^POST http:\/\/provider\.invalid\//);
    } finally {
      await gw.stop();
      await up.close();
    }
  });
});
