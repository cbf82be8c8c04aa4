// Test harness: starts the real keyless binary and the real mockllm
// simulator on ephemeral ports, and gives tests handles on both.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import { after } from 'node:test';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const BUILD = resolve(root, process.env.KEYLESS_BUILD || 'build');
export const ROOT = root;

// Provider keys used by every test config. The suite proves none of them
// ever leaves the gateway anywhere but towards the provider.
export const KEYS = {
  openai: 'sk-test-openai-5f2c9d1e8a7b',
  anthropic: 'sk-ant-test-9c8b7a6d5e4f',
  gemini: 'AIza-test-gemini-1a2b3c4d',
  bedrock: 'ABSK-test-bedrock-7d6e5f4a3b2c',
};

// Every process a test starts dies with the test run, even when a test
// fails before its cleanup: a leftover simulator would eat a core.
const children = new Set();
function killAll() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
process.on('exit', killAll);
// A test that fails midway leaves its processes running, and their pipes
// would keep this file's process alive until the runner's timeout: when the
// file's tests are done, whatever is left is killed.
after(killAll);

// A test's temporary folders (gateway stores of up to 77 MB, agents' homes,
// clock shims) are removed when its file's tests are done, after its
// processes are killed: runs had left gigabytes in /tmp. Set
// KEYLESS_KEEP_TEST_DIRS=1 to keep them for a post-mortem.
const tempDirs = [];
export function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}
after(() => {
  if (process.env.KEYLESS_KEEP_TEST_DIRS) return;
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
});
function track(proc) {
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return proc;
}

// Stop a child and wait for it, but never forever: a process that has not
// exited 30 s after the signal (a sanitizer stuck in its exit-time leak
// check, say) is killed and the test fails instead of hanging CI.
export async function stopProcess(proc, what, signal = 'SIGTERM') {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = once(proc, 'exit');
  proc.kill(signal);
  let timer;
  const late = new Promise((res) => { timer = setTimeout(() => res('late'), 30000); });
  const r = await Promise.race([exited, late]);
  clearTimeout(timer);
  if (r === 'late') {
    proc.kill('SIGKILL');
    await exited;
    throw new Error(`${what} did not exit within 30 s of ${signal}`);
  }
}

// Test fixtures are not what we ship: under SAN=1 their exit-time leak check
// is off (it can stall in LeakSanitizer's stop-the-world); keyless keeps it.
const fixtureEnv = { ...process.env, ASAN_OPTIONS: `${process.env.ASAN_OPTIONS ? process.env.ASAN_OPTIONS + ':' : ''}detect_leaks=0` };

// Wait for a line matching re on a child's stream; resolves with the match.
function waitForLine(proc, stream, re, what, timeoutMs = 10000) {
  return new Promise((resolveP, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${buf}`)), timeoutMs);
    const onData = (d) => {
      buf += d.toString();
      const m = buf.match(re);
      if (m) {
        clearTimeout(timer);
        stream.off('data', onData);
        resolveP(m);
      }
    };
    stream.on('data', onData);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code} before starting: ${buf}`));
    });
  });
}

// Under SAN=1 a sanitizer report on stderr fails the test that caused it.
export function assertNoSanitizerReport(output, what) {
  const m = output.match(/(ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer|runtime error:)[^\n]*/);
  if (m) throw new Error(`${what}: sanitizer report: ${m[0]}\n${output.slice(-4000)}`);
}

export async function startMock(args = []) {
  const proc = track(spawn(join(BUILD, 'mockllm'), ['--listen', '127.0.0.1:0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: fixtureEnv,
  }));
  const m = await waitForLine(proc, proc.stdout, /mockllm listening on (\S+)/, 'mockllm');
  proc.stdout.resume();
  let errout = '';
  proc.stderr.on('data', (d) => (errout += d));
  const url = `http://${m[1]}`;
  const mock = {
    proc,
    url,
    async requests() {
      const r = await fetch(`${url}/_mock/requests`);
      return r.json();
    },
    async last() {
      const all = await mock.requests();
      return all[all.length - 1];
    },
    async clear() {
      await fetch(`${url}/_mock/requests`, { method: 'DELETE' });
    },
    async stats() {
      const r = await fetch(`${url}/_mock/stats`);
      return r.json();
    },
    async stop() {
      await stopProcess(proc, 'mockllm');
      assertNoSanitizerReport(errout, 'mockllm');
    },
  };
  return mock;
}

// The providers section every test uses: three real dialects on one mock.
export function providersFor(mockUrl, extra = {}) {
  return {
    openai: {
      baseurl: mockUrl,
      apikey: KEYS.openai,
      models: ['gpt-4o', 'gpt-4o-mini', 'text-embedding-3-small'],
      compatibility: { openai_chat: true, openai_responses: true },
    },
    anthropic: {
      baseurl: mockUrl,
      apikey: KEYS.anthropic,
      authorization: 'x-api-key',
      models: ['claude-sonnet-4-5', 'claude-haiku-4-5'],
      compatibility: { anthropic_messages: true },
    },
    gemini: {
      baseurl: mockUrl,
      apikey: KEYS.gemini,
      authorization: 'x-goog-api-key',
      models: ['gemini-2.5-flash', 'gemini-2.5-pro'],
      compatibility: { gemini_generate_content: true },
    },
    ...extra,
  };
}

export const OPEN_GRANTS = [
  { src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' }] } },
];

// Start keyless with config (an object, serialized as JSON, or a string of
// HuJSON). Its stdout/stderr are kept for the credential scan.
export async function startGateway(config, { env = {}, workers = 2, nofile, fsize } = {}) {
  const dir = tempDir('keyless-test-');
  const path = join(dir, 'keyless.hujson');
  let text = config;
  if (typeof config !== 'string') {
    const c = structuredClone(config);
    c.listen = { addresses: ['127.0.0.1:0'], workers, ...(c.listen || {}) };
    // Tests that are not about grants: everyone may use every model.
    if (!('grants' in c)) c.grants = OPEN_GRANTS;
    c.log = { level: 'info', access: true, ...(c.log || {}) };
    text = JSON.stringify(c, null, 2);
  }
  writeFileSync(path, text);
  // nofile: the process's descriptor limit; fsize: its file size limit, in
  // 512-byte blocks (the shell sets them, then becomes keyless)
  const limits = [nofile && `ulimit -n ${Number(nofile)}`, fsize && `ulimit -f ${Number(fsize)}`].filter(Boolean);
  const [cmd, args] = limits.length
    ? ['/bin/sh', ['-c', `${limits.join(' && ')} && exec "$0" "$@"`, join(BUILD, 'keyless'), 'serve', '--config', path]]
    : [join(BUILD, 'keyless'), ['serve', '--config', path]];
  const proc = track(spawn(cmd, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  }));
  let output = '';
  proc.stdout.on('data', (d) => (output += d));
  proc.stderr.on('data', (d) => (output += d));
  const m = await waitForLine(proc, proc.stdout, /keyless listening on (http:\/\/\S+)/, 'keyless');
  const gw = {
    proc,
    dir,
    configPath: path,
    url: m[1],
    output: () => output,
    // SIGHUP, and the line that says how it ended (reloaded, or kept the
    // running configuration); a reload can take seconds under the sanitizers
    async reload(ms = 30000) {
      const before = output.length;
      proc.kill('SIGHUP');
      const done = /SIGHUP: (configuration reloaded|.*has errors|.*takes a restart).*/;
      for (let waited = 0; waited < ms && !done.test(output.slice(before)); waited += 10)
        await new Promise((r) => setTimeout(r, 10));
      const m = output.slice(before).match(done);
      return m ? m[0] : '';
    },
    async stop(signal = 'SIGTERM') {
      await stopProcess(proc, 'keyless', signal);
      assertNoSanitizerReport(output, 'keyless');
      return { code: proc.exitCode, signal: proc.signalCode };
    },
  };
  return gw;
}

// Everything the gateway wrote must be free of provider keys.
export function assertNoKeys(assert, text, where) {
  for (const [name, key] of Object.entries(KEYS)) {
    assert.ok(!text.includes(key), `${name} provider key leaked into ${where}`);
  }
}

// Raw HTTP over a socket, for requests no SDK would send.
import net from 'node:net';
export function rawRequest(url, payload, { timeoutMs = 5000, localAddress } = {}) {
  const u = new URL(url);
  return new Promise((resolveP, reject) => {
    const sock = net.connect({ host: u.hostname, port: Number(u.port), localAddress });
    let data = Buffer.alloc(0);
    const timer = setTimeout(() => {
      sock.destroy();
      resolveP(data.toString('latin1'));
    }, timeoutMs);
    sock.on('connect', () => sock.write(payload));
    sock.on('data', (d) => (data = Buffer.concat([data, d])));
    sock.on('end', () => {
      clearTimeout(timer);
      resolveP(data.toString('latin1'));
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      if (data.length) resolveP(data.toString('latin1'));
      else reject(e);
    });
  });
}

export function headerMap(pairs) {
  const m = {};
  for (const [k, v] of pairs) m[k.toLowerCase()] = v;
  return m;
}

export function readJSON(p) {
  return JSON.parse(readFileSync(p, 'utf8'));
}

export { existsSync };

// ---- identity fixtures ----
import http from 'node:http';
import { cpSync } from 'node:fs';
import { Agent } from 'undici';

// A fetch dispatcher whose connections leave from a chosen local address,
// so the gateway sees a different TCP peer (127.0.0.2, 127.0.0.3, ...).
const agents = new Map();
export function from(ip) {
  if (!agents.has(ip)) agents.set(ip, new Agent({ localAddress: ip }));
  return agents.get(ip);
}

function unixGet(socketPath, path, method = 'GET') {
  return new Promise((resolveP, reject) => {
    const req = http.request({ socketPath, path, method, headers: { Host: 'local-tailscaled.sock' } }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolveP({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

// fake-tailscaled on a socket in a temp dir, serving a copy of
// tests/fixtures/whois (so a test may edit the table).
export async function startTailscaled(args = []) {
  const dir = tempDir('kl-ts-');
  cpSync(join(root, 'tests/fixtures/whois'), dir, { recursive: true });
  const socket = join(dir, 'tailscaled.sock');
  const ts = {
    dir,
    socket,
    table: join(dir, 'table.json'),
    proc: null,
    errout: '',
    async start() {
      const proc = track(spawn(join(BUILD, 'fake-tailscaled'), ['--socket', socket, '--table', ts.table, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: fixtureEnv,
      }));
      proc.stderr.on('data', (d) => (ts.errout += d));
      await waitForLine(proc, proc.stdout, /fake-tailscaled listening on/, 'fake-tailscaled');
      proc.stdout.resume();
      ts.proc = proc;
    },
    async stop() {
      if (ts.proc) await stopProcess(ts.proc, 'fake-tailscaled');
      ts.proc = null;
      assertNoSanitizerReport(ts.errout, 'fake-tailscaled');
    },
    async stats() {
      return JSON.parse((await unixGet(socket, '/fake/stats')).body);
    },
    async reset() {
      await unixGet(socket, '/fake/reset', 'POST');
    },
  };
  await ts.start();
  return ts;
}

// An IPv4 address of this machine that is not loopback, or null.
import os from 'node:os';
export function externalIPv4() {
  for (const list of Object.values(os.networkInterfaces()))
    for (const i of list) if (i.family === 'IPv4' && !i.internal) return i.address;
  return null;
}

// A provider that answers however respond(request, socket) writes, once a
// whole request (head and Content-Length body) has arrived: for answers
// mockllm will not give (compressed, malformed, cut). Close it when done.
export async function rawProvider(respond) {
  const up = net.createServer((sock) => {
    let req = '';
    sock.on('error', () => {}); // the gateway may close first (an answer it refuses): no error of the test's
    sock.on('data', (d) => {
      req += d.toString('latin1');
      const end = req.indexOf('\r\n\r\n');
      const len = Number((/content-length: (\d+)/i.exec(req) || [0, 0])[1]);
      if (end >= 0 && req.length >= end + 4 + len) respond(req, sock);
    });
  });
  await new Promise((r) => up.listen(0, '127.0.0.1', r));
  return up;
}

// A TCP server that reads HTTP/1.1 requests (Content-Length bodies) and lets
// the request's x-script header choose what to write back, byte for byte.
export function scriptedUpstream(scripts) {
  const seen = [];
  let nconns = 0;
  const server = net.createServer((sock) => {
    const conn = ++nconns;
    let onConn = 0;
    let buf = Buffer.alloc(0);
    sock.on('error', () => {});
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        const lines = head.split('\r\n');
        const headers = {};
        for (const l of lines.slice(1)) {
          const i = l.indexOf(':');
          headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
        }
        const len = Number(headers['content-length'] || 0);
        if (buf.length < end + 4 + len) return;
        const body = buf.subarray(end + 4, end + 4 + len).toString();
        buf = buf.subarray(end + 4 + len);
        const req = { line: lines[0], head, headers, body, conn, onConn: ++onConn };
        seen.push(req);
        const script = scripts[headers['x-script']] || scripts.ok;
        script(sock, req);
      }
    });
  });
  return {
    seen,
    conns: () => nconns,
    async listen() {
      await new Promise((r) => server.listen(0, '127.0.0.1', r));
      return server.address().port;
    },
    close: () => new Promise((r) => { server.close(r); }),
  };
}

// A plain HTTP forward proxy (absolute-form request targets). A gateway
// started with http_proxy pointing at it sends its provider requests
// through libcurl, the path every https:// provider takes. Close it when
// done; .seen counts the requests it forwarded.
export async function startProxy() {
  const http = await import('node:http');
  const proxy = http.createServer((req, res) => {
    proxy.seen++;
    const up = http.request(req.url, { method: req.method, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  proxy.seen = 0;
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  proxy.url = `http://127.0.0.1:${proxy.address().port}`;
  return proxy;
}

// Run a command to its end (killed after timeoutMs): { code, out, err }.
export function runCommand(cmd, args, env, { cwd, timeoutMs = 120000 } = {}) {
  return new Promise((resolveP) => {
    const p = spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
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

// The final record of request id from the records API (records are written
// asynchronously; waits ~3 s at most). The loopback caller must be allowed
// to read it.
export async function finalRecord(gw, id) {
  let rec;
  for (let i = 0; i < 100 && !(rec && rec.state === 'done'); i++) {
    await new Promise((res) => setTimeout(res, 30));
    rec = await (await fetch(`${gw.url}/api/requests/${id}`)).json();
  }
  return rec;
}

// A hook service on an ephemeral port: each JSON body it is sent goes in
// calls, in order, and is answered with answer(body) (default: allow).
export async function startHook(answer = () => ({ action: 'allow' })) {
  const calls = [];
  const srv = http.createServer((req, res) => {
    let data = '';
    req.on('data', (d) => (data += d));
    req.on('end', () => {
      const body = JSON.parse(data);
      calls.push(body);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer(body)));
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    calls,
    url: (path = '/hook') => `http://127.0.0.1:${srv.address().port}${path}`,
    close: () => new Promise((r) => srv.close(r)),
  };
}

// keyless reads the wall clock (kl_wall_ms: clock_gettime) for refill and
// idleness; a preloaded clock_gettime adds the milliseconds in a file to it
// (CLOCK_REALTIME only), so a test can let ten minutes pass at once.
const CLOCK_SHIM = `#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int clock_gettime(clockid_t id, struct timespec *ts)
{
    int rc = (int)syscall(SYS_clock_gettime, id, ts);
    const char *f = rc == 0 && id == CLOCK_REALTIME ? getenv("KL_TEST_CLOCK_OFFSET_FILE") : NULL;
    int fd = f ? open(f, O_RDONLY) : -1;
    if (fd >= 0) {
        char buf[32] = {0};
        long long ms = read(fd, buf, sizeof(buf) - 1) > 0 ? atoll(buf) : 0;
        close(fd);
        ts->tv_sec += ms / 1000;
        ts->tv_nsec += (ms % 1000) * 1000000;
        if (ts->tv_nsec >= 1000000000) {
            ts->tv_sec++;
            ts->tv_nsec -= 1000000000;
        }
    }
    return rc;
}
`;

// A directory with the shim built, the file of its offset (0 now) and the
// gateway's options preloading it; null (the test skipped) without a compiler.
export function clocked(t) {
  const dir = tempDir('kl-clock-');
  writeFileSync(join(dir, 'clock.c'), CLOCK_SHIM);
  const cc = spawnSync(process.env.CC || 'cc', ['-shared', '-fPIC', '-o', join(dir, 'clock.so'), join(dir, 'clock.c')]);
  if (cc.status !== 0) {
    t.skip('no C compiler for the clock shim');
    return null;
  }
  const offset = join(dir, 'offset');
  writeFileSync(offset, '0');
  const opts = { env: {
    LD_PRELOAD: join(dir, 'clock.so'), KL_TEST_CLOCK_OFFSET_FILE: offset,
    // under SAN=1 the shim is preloaded before the sanitizer's runtime
    ASAN_OPTIONS: `${process.env.ASAN_OPTIONS ? process.env.ASAN_OPTIONS + ':' : ''}verify_asan_link_order=0`,
  } };
  return { dir, offset, opts };
}
