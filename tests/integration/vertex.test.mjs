// Google Vertex AI through keyless: a service account's key file in the
// provider's apikey (Aperture's "keyfile::"), the access tokens keyless mints
// from it at a token endpoint that checks every assertion's signature, and the
// clients that speak Vertex: the Anthropic Vertex SDK, Claude Code in its
// Vertex mode, and Gemini's API under Vertex's paths. Also the two keyless
// sources: a user's application default credentials (a refresh token), the
// metadata server of a GCE VM or GKE pod ("gcp-metadata"), and workload
// identity federation (an external account: a Kubernetes or Azure token
// exchanged at Google's STS, then for a service account's).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import crypto from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AnthropicVertex } from '@anthropic-ai/vertex-sdk';
import { GoogleGenAI } from '@google/genai';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { startMock, startGateway, KEYS, assertNoKeys, headerMap, finalRecord, runCommand, ROOT, BUILD, tempDir } from './lib/harness.mjs';

const SONNET = 'claude-sonnet-4-5@20250929';
const EMAIL = 'keyless-vertex@p1.iam.gserviceaccount.com';
const CAP = 'tailscale.com/cap/aperture';

// An OAuth token endpoint on 127.0.0.1: each request's form body goes to
// answer(req, form, reply, srv), reply(status, object) answers it in JSON.
async function startFormServer(answer, port = 0) {
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => answer(req, new URLSearchParams(body),
      (status, obj) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(obj)), srv));
  });
  await new Promise((r, reject) => srv.once('error', reject).listen(port, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${srv.address().port}/token`, close: () => new Promise((r) => srv.close(r)) };
}

// Google's OAuth token endpoint as far as a service account sees it
// (RFC 7523 JWT bearer grant): the assertion must be signed by the account's
// key and name the account, the endpoint and the cloud-platform scope.
async function startTokenEndpoint(publicKeys, { lifetime = 3599, fail = false, port = 0, delayMs = {} } = {}) {
  const keys = publicKeys.asymmetricKeyType ? { 'kid-1': publicKeys } : publicKeys; // by kid
  const issued = [];
  const kids = [];
  let n = 0;
  const ep = await startFormServer((req, form, reply, srv) => {
    if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') return reply(400, { error: 'unsupported_grant_type' });
    const [h, c, s] = (form.get('assertion') || '').split('.');
    const head = JSON.parse(Buffer.from(h || '', 'base64url').toString() || '{}');
    const ok = s && keys[head.kid] &&
      crypto.verify('RSA-SHA256', Buffer.from(`${h}.${c}`), keys[head.kid], Buffer.from(s, 'base64url'));
    if (!ok) return reply(400, { error: 'invalid_grant', error_description: 'Invalid JWT Signature.' });
    const claims = JSON.parse(Buffer.from(c, 'base64url'));
    const aud = `http://127.0.0.1:${srv.address().port}/token`;
    if (head.alg !== 'RS256' || claims.iss !== EMAIL || claims.aud !== aud ||
        claims.scope !== 'https://www.googleapis.com/auth/cloud-platform' || claims.exp - claims.iat !== 3600 ||
        Math.abs(claims.iat - Date.now() / 1000) > 60)
      return reply(400, { error: 'invalid_grant', error_description: 'Invalid JWT: claims' });
    if (fail) return reply(400, { error: 'invalid_grant', error_description: 'Invalid JWT Signature.' });
    const token = `ya29.test-token-${++n}-${crypto.randomBytes(8).toString('hex')}`;
    issued.push(token);
    kids.push(head.kid);
    // delayMs: {kid: ms}, a slow answer for that key's tokens
    setTimeout(() => reply(200, { access_token: token, expires_in: lifetime, token_type: 'Bearer' }),
      delayMs[head.kid] || 0);
  }, port);
  return { ...ep, issued, kids };
}

// Google's OAuth token endpoint for a refresh token (gcloud's application
// default credentials of a user): grant_type=refresh_token with the client's
// id and secret; anything else is invalid_grant, as Google answers it.
async function startRefreshEndpoint(expect) {
  const issued = [];
  const ep = await startFormServer((req, form, reply) => {
    if (req.method !== 'POST' || form.get('grant_type') !== 'refresh_token') return reply(400, { error: 'unsupported_grant_type' });
    if (form.get('client_id') !== expect.client_id || form.get('client_secret') !== expect.client_secret)
      return reply(401, { error: 'invalid_client', error_description: 'Unauthorized' });
    if (form.get('refresh_token') !== expect.refresh_token) return reply(400, { error: 'invalid_grant', error_description: 'Bad Request' });
    const token = `ya29.user-${issued.length + 1}-${crypto.randomBytes(6).toString('hex')}`;
    issued.push(token);
    reply(200, { access_token: token, expires_in: 3599, scope: 'https://www.googleapis.com/auth/cloud-platform', token_type: 'Bearer' });
  });
  return { ...ep, issued };
}

// The metadata server of a Google VM or GKE pod, as Google documents it:
// GET /computeMetadata/v1/instance/service-accounts/{account}/token and
// /computeMetadata/v1/project/project-id, answered only to requests that say
// "Metadata-Flavor: Google" (403 otherwise), with that header on the answer.
async function startMetadataServer({ project = 'meta-proj', account = 'default' } = {}) {
  const issued = [];
  const seen = [];
  const srv = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://metadata.google.internal');
    seen.push({ method: req.method, path: u.pathname, scopes: u.searchParams.get('scopes'), flavor: req.headers['metadata-flavor'] });
    if (req.headers['metadata-flavor'] !== 'Google')
      return res.writeHead(403, { 'content-type': 'text/html; charset=UTF-8' }).end('Missing required header "Metadata-Flavor": "Google"');
    const h = { 'metadata-flavor': 'Google', server: 'Metadata Server for VM' };
    if (req.method === 'GET' && u.pathname === `/computeMetadata/v1/instance/service-accounts/${account}/token`) {
      const token = `ya29.c.meta-${issued.length + 1}-${crypto.randomBytes(6).toString('hex')}`;
      issued.push(token);
      return res.writeHead(200, { ...h, 'content-type': 'application/json' })
        .end(JSON.stringify({ access_token: token, expires_in: 3599, token_type: 'Bearer' }));
    }
    if (req.method === 'GET' && u.pathname === '/computeMetadata/v1/project/project-id')
      return res.writeHead(200, { ...h, 'content-type': 'application/text' }).end(project);
    res.writeHead(404, { ...h, 'content-type': 'text/html; charset=UTF-8' }).end('Not Found');
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { host: `127.0.0.1:${srv.address().port}`, issued, seen, close: () => new Promise((r) => srv.close(r)) };
}

// Google's Security Token Service (RFC 8693 token exchange, as workload
// identity federation uses it) and IAM credentials' generateAccessToken, as
// Google documents them: the STS takes a form with the subject token and
// answers a federated token; generateAccessToken takes that token as Bearer
// and a JSON body, and answers {accessToken, expireTime}. `subjects` are the
// subject tokens the pool's providers accept (in real life: a JWT they
// verify), `audiences` the pool providers'. An AWS provider's subject token
// is a signed AWS STS GetCallerIdentity request, percent-encoded JSON
// {url, method, headers: [{key, value}]}: it is accepted when its SigV4
// signature, checked here with the AWS SDK's own signer, is good for one of
// `awsKeys` and covers x-goog-cloud-target-resource naming the audience.
async function startFederation({ audiences, subjects, account, awsKeys = [] }) {
  const federated = [], impersonated = [], forms = [], asked = [], awsRequests = [];
  const signingDate = (d) => new Date(Date.UTC(+d.slice(0, 4), +d.slice(4, 6) - 1, +d.slice(6, 8), +d.slice(9, 11),
    +d.slice(11, 13), +d.slice(13, 15)));
  async function awsSubjectOk(token, audience) {
    let req;
    try {
      req = JSON.parse(decodeURIComponent(token));
    } catch {
      return false;
    }
    awsRequests.push(req);
    const h = Object.fromEntries(req.headers.map(({ key, value }) => [key, value]));
    const m = (h.authorization || '').match(/^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/sts\/aws4_request, SignedHeaders=([^,]+), Signature=[0-9a-f]{64}$/);
    const key = m && awsKeys.find((k) => k.accessKeyId === m[1]);
    const u = new URL(req.url);
    if (!key || req.method !== 'POST' || u.host !== `sts.${m[3]}.amazonaws.com` || h.host !== u.host ||
        u.searchParams.get('Action') !== 'GetCallerIdentity' || h['x-goog-cloud-target-resource'] !== audience ||
        !m[4].split(';').includes('x-goog-cloud-target-resource')) return false;
    const signer = new SignatureV4({ credentials: key, region: m[3], service: 'sts', sha256: Sha256, applyChecksum: false });
    const headers = {};
    for (const n of m[4].split(';')) headers[n] = h[n];
    const signed = await signer.sign({ method: 'POST', protocol: 'https:', hostname: u.hostname, path: u.pathname,
      query: Object.fromEntries(u.searchParams), headers, body: '' }, { signingDate: signingDate(h['x-amz-date']) });
    return signed.headers.authorization === h.authorization;
  }
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', async () => {
      const reply = (status, obj) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(obj));
      if (req.method === 'POST' && req.url === '/v1/token') {
        const f = new URLSearchParams(body);
        f.auth = req.headers.authorization; // a client's HTTP Basic, if any
        forms.push(f);
        const aws = f.get('subject_token_type') === 'urn:ietf:params:aws:token-type:aws4_request';
        if (f.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:token-exchange' ||
            f.get('requested_token_type') !== 'urn:ietf:params:oauth:token-type:access_token' ||
            f.get('scope') !== 'https://www.googleapis.com/auth/cloud-platform' ||
            (!aws && f.get('subject_token_type') !== 'urn:ietf:params:oauth:token-type:jwt'))
          return reply(400, { error: 'invalid_request', error_description: 'Invalid value for "grant_type" or a token type.' });
        if (!audiences.includes(f.get('audience')))
          return reply(400, { error: 'invalid_target', error_description: 'The target service indicated by the "audience" parameters is invalid.' });
        if (aws ? !(await awsSubjectOk(f.get('subject_token'), f.get('audience'))) : !subjects.includes(f.get('subject_token')))
          return reply(400, { error: 'invalid_grant', error_description: 'The given subject token could not be verified.' });
        const token = `ya29.d.federated-${federated.length + 1}-${crypto.randomBytes(6).toString('hex')}`;
        federated.push(token);
        return reply(200, { access_token: token, issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          token_type: 'Bearer', expires_in: 3599 });
      }
      const m = req.url.match(/^\/v1\/projects\/-\/serviceAccounts\/([^/:]+):generateAccessToken$/);
      if (req.method === 'POST' && m) {
        asked.push({ auth: req.headers.authorization, type: req.headers['content-type'], body: JSON.parse(body || '{}') });
        if (!federated.some((t) => req.headers.authorization === `Bearer ${t}`))
          return reply(401, { error: { code: 401, message: 'Request had invalid authentication credentials.', status: 'UNAUTHENTICATED' } });
        if (decodeURIComponent(m[1]) !== account)
          return reply(403, { error: { code: 403, message: "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).", status: 'PERMISSION_DENIED' } });
        const secs = parseInt(asked.at(-1).body.lifetime, 10) || 3600;
        const token = `ya29.c.impersonated-${impersonated.length + 1}-${crypto.randomBytes(6).toString('hex')}`;
        impersonated.push(token);
        return reply(200, { accessToken: token, expireTime: new Date(Date.now() + secs * 1000).toISOString().replace(/\.\d+Z$/, 'Z') });
      }
      reply(404, { error: { code: 404, message: 'Not Found', status: 'NOT_FOUND' } });
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${srv.address().port}`;
  return { base, federated, impersonated, forms, asked, awsRequests, close: () => new Promise((r) => srv.close(r)) };
}

// The EC2 instance metadata service as an "aws1" source reads it, IMDSv2
// only: a session token from PUT /latest/api/token, required on every GET
// (401 without), the availability zone, the instance profile's role name
// and its temporary credentials.
async function startImds({ zone = 'us-west-2b', role = 'keyless-vertex-role', creds }) {
  const seen = [];
  const tokens = new Set();
  const srv = http.createServer((req, res) => {
    seen.push({ method: req.method, path: req.url, token: req.headers['x-aws-ec2-metadata-token'] });
    if (req.method === 'PUT' && req.url === '/latest/api/token') {
      if (!req.headers['x-aws-ec2-metadata-token-ttl-seconds']) return res.writeHead(400).end();
      const t = `AQAEA-imds-${crypto.randomBytes(6).toString('hex')}==`;
      tokens.add(t);
      return res.writeHead(200, { 'content-type': 'text/plain' }).end(t);
    }
    if (!tokens.has(req.headers['x-aws-ec2-metadata-token'])) return res.writeHead(401).end();
    const text = { '/latest/meta-data/placement/availability-zone': zone,
      '/latest/meta-data/iam/security-credentials': role, '/latest/meta-data/iam/security-credentials/': role,
      [`/latest/meta-data/iam/security-credentials/${role}`]: JSON.stringify({ Code: 'Success', Type: 'AWS-HMAC',
        AccessKeyId: creds.accessKeyId, SecretAccessKey: creds.secretAccessKey, Token: creds.sessionToken,
        Expiration: new Date(Date.now() + 6 * 3600e3).toISOString().replace(/\.\d+Z$/, 'Z'), LastUpdated: new Date().toISOString() }) }[req.url];
    if (text === undefined) return res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'text/plain' }).end(text);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { base: `http://127.0.0.1:${srv.address().port}`, seen, close: () => new Promise((r) => srv.close(r)) };
}

// A key file as Google writes one: indented JSON over many lines
function serviceAccount(kid = 'kid-1') {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' });
  return { pem, publicKey, kid, file: (tokenUri) => JSON.stringify({ type: 'service_account', project_id: 'p1',
    private_key_id: kid, private_key: pem, client_email: EMAIL, client_id: '1', token_uri: tokenUri }, null, 2) };
}

const vertexProvider = (url, keyfile) => ({
  baseurl: url,
  apikey: `keyfile::${Buffer.from(keyfile).toString('base64')}`,
  models: [SONNET, 'gemini-2.5-pro'],
  compatibility: { google_raw_predict: true, google_generate_content: true },
});

// The Anthropic Vertex SDK gets its Authorization from a Google auth client;
// keyless drops it whatever it is
const callerAuth = { projectId: 'p1', getRequestHeaders: async () => new Headers({ authorization: 'Bearer caller-own-google-token' }) };

// grants for a gateway whose /metrics the test reads
const ADMIN_GRANTS = [{ src: ['*'], app: { [CAP]: [{ role: 'admin' }, { models: '**' }] } }];

// The Anthropic Vertex SDK, naming the caller's project, answered by mockllm
async function sdkCallerProject(g) {
  const c = new AnthropicVertex({ baseURL: `${g.url}/v1`, region: 'us-east5', projectId: 'callers-proj', authClient: callerAuth,
    maxRetries: 0 });
  const r = await c.messages.create({ model: SONNET, max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r.content[0].text, 'Hello from mockllm.');
}

// Waits until g's log has a line matching each of want, then checks that
// none of secrets ({what: text}) is in it.
async function logNames(g, want, secrets) {
  for (let i = 0; i < 500 && !want.every((re) => re.test(g.output())); i++) await new Promise((r) => setTimeout(r, 10));
  for (const re of want) assert.match(g.output(), re);
  for (const [what, text] of Object.entries(secrets)) assert.ok(!g.output().includes(text), `no ${what} in the log`);
}

describe('Vertex AI', () => {
  let mock, gw, tokens, sa;
  const noSecrets = (text, where) => {
    assertNoKeys(assert, text, where);
    assert.ok(!text.includes(sa.pem.split('\n')[1]), `the service account's key leaked into ${where}`);
    for (const t of tokens.issued) assert.ok(!text.includes(t), `an access token leaked into ${where}`);
  };
  before(async () => {
    mock = await startMock();
    sa = serviceAccount();
    tokens = await startTokenEndpoint(sa.publicKey);
    gw = await startGateway({ providers: {
      vertex: vertexProvider(mock.url, sa.file(tokens.url)),
      // Vertex AI Express: Gemini with an API key, no project in the path
      express: { baseurl: mock.url, apikey: KEYS.gemini, authorization: 'x-goog-api-key', models: ['gemini-2.5-flash'],
        compatibility: { google_generate_content: true } },
    } });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    await tokens.close();
    noSecrets(gw.output(), 'gateway log');
  });

  it('Anthropic Vertex SDK: the minted token goes upstream, the caller\'s does not; usage recorded', async () => {
    await mock.clear();
    const c = new AnthropicVertex({ baseURL: `${gw.url}/v1`, region: 'us-east5', projectId: 'p1', authClient: callerAuth,
      maxRetries: 0 });
    const r = await c.messages.create({ model: SONNET, max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] },
      { headers: { 'x-mock': 'in=40;out=9', 'x-session-id': 'vertex-1', 'x-goog-user-project': 'developers-own' } });
    assert.equal(r.content[0].text, 'Hello from mockllm.');
    const seen = await mock.last();
    assert.equal(headerMap(seen.headers)['x-goog-user-project'], undefined, 'the gateway\'s credentials decide who pays');
    assert.equal(seen.path, '/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict', 'the SDK writes the @ as it is, and keyless forwards the path it got');
    assert.equal(headerMap(seen.headers).authorization, `Bearer ${tokens.issued[0]}`);
    assert.equal(tokens.issued.length, 1, 'one token for every request until it ages');
    let list = [];
    for (let i = 0; i < 100 && !list.length; i++) { // the writer is asynchronous
      await new Promise((res) => setTimeout(res, 30));
      list = (await (await fetch(`${gw.url}/api/requests?session=vertex-1`)).json()).requests;
    }
    const rec = await finalRecord(gw, list[0].id);
    assert.equal(rec.endpoint, 'vertex.anthropic.messages');
    assert.equal(rec.model_requested, SONNET);
    assert.deepEqual([rec.input_tokens, rec.output_tokens], [40, 9]);
    assert.ok(Number(rec.cost_nanodollars) > 0, 'priced as claude-sonnet-4-5');

    const fin = await c.messages.stream({ model: SONNET, max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] },
      { headers: { 'x-mock': 'events=6;in=12;out=30' } }).finalMessage();
    assert.equal(fin.usage.output_tokens, 30);
    assert.match((await mock.last()).path, /:streamRawPredict$/);
    const n = await c.messages.countTokens({ model: SONNET, messages: [{ role: 'user', content: 'hi [[mock in=21]]' }] });
    assert.equal(n.input_tokens, 21);
    assert.match((await mock.last()).path, /count-tokens:rawPredict$/);
    noSecrets(JSON.stringify(await (await fetch(`${gw.url}/api/requests?limit=50`)).json()), 'records');
  });

  it('Gemini under Vertex\'s paths', async () => {
    const r = await fetch(`${gw.url}/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi [[mock in=8;out=3]]' }] }] }) });
    assert.equal(r.status, 200);
    const body = await r.json();
    assert.equal(body.usageMetadata.candidatesTokenCount, 3);
    const seen = await mock.last();
    assert.equal(headerMap(seen.headers).authorization, `Bearer ${tokens.issued.at(-1)}`);
    const id = r.headers.get('x-keyless-request-id');
    const rec = await finalRecord(gw, id);
    assert.deepEqual([rec.endpoint, rec.output_tokens],
      ['vertex.gemini.generate', 3 + (body.usageMetadata.thoughtsTokenCount || 0)], 'output counts the thoughts too');
  });

  it('Vertex AI Express: @google/genai and Gemini CLI in their Vertex modes, with the provider\'s API key', { timeout: 180000 }, async () => {
    await mock.clear();
    const ai = new GoogleGenAI({ vertexai: true, apiKey: 'caller-must-not-pass', httpOptions: { baseUrl: gw.url } });
    const r = await ai.models.generateContent({ model: 'gemini-2.5-flash', contents: 'hi [[mock out=4]]' });
    assert.equal(r.text, 'Hello from mockllm.');
    let text = '';
    for await (const c of await ai.models.generateContentStream({ model: 'gemini-2.5-flash', contents: 'hi' })) text += c.text || '';
    assert.equal(text, 'Hello from mockllm.');
    const home = tempDir('kl-gemini-vertex-');
    mkdirSync(join(home, '.gemini'));
    writeFileSync(join(home, '.gemini', 'settings.json'), JSON.stringify({ security: { auth: { selectedType: 'vertex-ai' } } }));
    const cli = await runCommand(join(ROOT, 'node_modules', '.bin', 'gemini'),
      ['-m', 'gemini-2.5-flash', '-p', 'Say hi. [[mock text=Hi_from_Vertex_Express;in=300;out=12]]'],
      { PATH: process.env.PATH, HOME: home, GOOGLE_GENAI_USE_VERTEXAI: 'true', GOOGLE_API_KEY: 'caller-must-not-pass',
        GOOGLE_VERTEX_BASE_URL: gw.url, GEMINI_CLI_TRUST_WORKSPACE: 'true' }, { cwd: home });
    assert.equal(cli.code, 0, `gemini failed: ${cli.out}\n${cli.err}`);
    assert.match(cli.out, /Hi from Vertex Express/);
    const reqs = await mock.requests();
    assert.ok(reqs.length >= 3);
    for (const q of reqs) {
      assert.match(q.path, /^\/v1beta1\/publishers\/google\/models\/gemini-2\.5-flash:(generateContent|streamGenerateContent)/);
      assert.equal(headerMap(q.headers)['x-goog-api-key'], KEYS.gemini);
    }
  });

  it('Claude Code in its Vertex mode answers through the gateway', { timeout: 180000 }, async () => {
    await mock.clear();
    const env = {
      PATH: process.env.PATH, HOME: tempDir('kl-claude-vertex-'),
      CLAUDE_CODE_USE_VERTEX: '1', CLAUDE_CODE_SKIP_VERTEX_AUTH: '1', ANTHROPIC_VERTEX_BASE_URL: `${gw.url}/v1`,
      ANTHROPIC_VERTEX_PROJECT_ID: 'p1', CLOUD_ML_REGION: 'us-east5', ANTHROPIC_MODEL: SONNET,
      ANTHROPIC_SMALL_FAST_MODEL: SONNET, ANTHROPIC_DEFAULT_HAIKU_MODEL: SONNET,
      DISABLE_TELEMETRY: '1', DISABLE_AUTOUPDATER: '1', DISABLE_ERROR_REPORTING: '1',
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    };
    const r = await runCommand(join(ROOT, 'node_modules', '.bin', 'claude'),
      ['-p', 'Say hello. [[mock text=Hello_from_Vertex_via_keyless;in=900;out=31]]'], env);
    assert.equal(r.code, 0, `claude failed: ${r.out}\n${r.err}`);
    assert.match(r.out, /Hello from Vertex via keyless/);
    const reqs = (await mock.requests()).filter((q) => q.path.includes('/publishers/anthropic/'));
    assert.ok(reqs.length >= 1, 'Claude Code reached Vertex through keyless');
    for (const q of reqs) assert.match(headerMap(q.headers).authorization, /^Bearer ya29\.test-token-/);
  });

  it('a token is renewed before it expires; a token endpoint that refuses gives 503s that say why', async () => {
    const key = serviceAccount();
    const short = await startTokenEndpoint(key.publicKey, { lifetime: 2 });
    const g = await startGateway({ providers: { vertex: vertexProvider(mock.url, key.file(short.url)) },
      grants: ADMIN_GRANTS });
    const ask = () => fetch(`${g.url}/v1/projects/p1/locations/global/publishers/anthropic/models/${encodeURIComponent(SONNET)}:rawPredict`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ anthropic_version: 'vertex-2023-10-16', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }) });
    try {
      assert.equal((await ask()).status, 200);
      const first = headerMap((await mock.last()).headers).authorization;
      await new Promise((res) => setTimeout(res, 2500)); // renewed at three quarters of its 2 s
      assert.equal((await ask()).status, 200);
      const second = headerMap((await mock.last()).headers).authorization;
      assert.notEqual(second, first);
      assert.ok(short.issued.length >= 2);
      const metrics = await (await fetch(`${g.url}/metrics`)).text();
      assert.match(metrics, new RegExp(`keyless_google_token_seconds_left\\{account="${EMAIL.replace(/\./g, '\\.')}"\\} [01]\n`));
      assert.match(metrics, /keyless_google_token_failures\{account="[^"]+"\} 0\n/);
    } finally {
      await g.stop();
      await short.close();
    }
    const refusing = await startTokenEndpoint(key.publicKey, { fail: true });
    const g2 = await startGateway({ providers: { vertex: vertexProvider(mock.url, key.file(refusing.url)) } });
    try {
      const res = await fetch(`${g2.url}/v1/projects/p1/locations/global/publishers/anthropic/models/${encodeURIComponent(SONNET)}:rawPredict`, {
        method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
        body: JSON.stringify({ anthropic_version: 'vertex-2023-10-16', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }) });
      assert.equal(res.status, 503);
      const err = await res.json();
      assert.equal(err.error.type, 'overloaded_error');
      assert.match(err.error.message, /provider vertex: no Google access token: the token endpoint refused/);
      assert.ok(!err.error.message.includes(EMAIL), 'the caller is not told the account');
      assert.match(g2.output(), /Google access token for keyless-vertex@p1\.iam\.gserviceaccount\.com: .*HTTP 400 invalid_grant/);
    } finally {
      await g2.stop();
      await refusing.close();
    }
  });

  it('an unreachable token endpoint: 503s that say so and are on record, until it answers; then tokens flow', async () => {
    const key = serviceAccount();
    // a port nothing listens on (yet)
    const probe = http.createServer();
    await new Promise((r) => probe.listen(0, '127.0.0.1', r));
    const port = probe.address().port;
    await new Promise((r) => probe.close(r));
    const g = await startGateway({ providers: { vertex: vertexProvider(mock.url, key.file(`http://127.0.0.1:${port}/token`)) },
      grants: ADMIN_GRANTS });
    const ask = () => fetch(`${g.url}/v1/projects/p1/locations/global/publishers/anthropic/models/${encodeURIComponent(SONNET)}:rawPredict`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ anthropic_version: 'vertex-2023-10-16', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }) });
    let later;
    try {
      const res = await ask();
      assert.equal(res.status, 503);
      const err = await res.json();
      assert.equal(err.type, 'error');
      assert.equal(err.error.type, 'overloaded_error');
      assert.match(err.error.message, /provider vertex: no Google access token: the token endpoint refused or failed/);
      assert.ok(!err.error.message.includes(String(port)), 'the caller is not told the token endpoint');
      const rec = await finalRecord(g, res.headers.get('x-keyless-request-id'));
      assert.equal(rec.state, 'done');
      assert.equal(rec.status, 503);
      assert.equal(rec.provider, 'vertex');
      assert.match(g.output(), new RegExp(`Google access token for ${EMAIL.replace(/\./g, '\\.')}: POST http://127\\.0\\.0\\.1:${port}/token: Could(n't| not) connect`));
      // the endpoint comes up: the keeper's next try (1, 2, 4, 8, 16 s apart) gets a token
      later = await startTokenEndpoint(key.publicKey, { port });
      let status = 0;
      for (let i = 0; i < 250 && status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 100));
        status = (await ask()).status;
      }
      assert.equal(status, 200);
      assert.equal(headerMap((await mock.last()).headers).authorization, `Bearer ${later.issued.at(-1)}`);
      assert.match(g.output(), /Google access token for keyless-vertex@p1\.iam\.gserviceaccount\.com: obtained again/);
    } finally {
      await g.stop();
      if (later) await later.close();
    }
    noSecrets(g.output(), 'gateway log');
    assert.ok(!g.output().includes(key.pem.split('\n')[1]), 'the key leaked into the gateway log');
    for (const t of later.issued) assert.ok(!g.output().includes(t), 'an access token leaked into the gateway log');
  });

  it('the account\'s project is used whatever the caller names; odd project or location segments are refused', async () => {
    const body = JSON.stringify({ anthropic_version: 'vertex-2023-10-16', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
    const ask = (where) => fetch(`${gw.url}/v1/${where}/publishers/anthropic/models/${SONNET}:rawPredict`,
      { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const r = await ask('projects/someone-elses/locations/europe-west1');
    assert.equal(r.status, 200);
    await r.json();
    assert.equal((await mock.last()).path, `/v1/projects/p1/locations/europe-west1/publishers/anthropic/models/${SONNET}:rawPredict`);
    for (const where of ['projects/../locations/x', 'projects/p/locations/x/y', 'projects/%2e%2e/locations/x', 'projects//locations/x']) {
      const bad = await ask(where);
      assert.equal(bad.status, 404, where);
      await bad.text();
    }
  });

  it('passthrough: a caller\'s own Google token keeps the caller\'s project; without one, the account\'s token and project', async () => {
    const g = await startGateway({ providers: { vertex: { ...vertexProvider(mock.url, sa.file(tokens.url)), auth_mode: 'passthrough' } } });
    const body = JSON.stringify({ anthropic_version: 'vertex-2023-10-16', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
    const ask = (headers) => fetch(`${g.url}/v1/projects/callers-proj/locations/us-east5/publishers/anthropic/models/${SONNET}:rawPredict`,
      { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    try {
      let r = await ask({ authorization: 'Bearer ya29.callers-own-token' });
      assert.equal(r.status, 200);
      await r.json();
      let seen = await mock.last();
      assert.equal(seen.path, `/v1/projects/callers-proj/locations/us-east5/publishers/anthropic/models/${SONNET}:rawPredict`);
      assert.equal(headerMap(seen.headers).authorization, 'Bearer ya29.callers-own-token');
      r = await ask({});
      assert.equal(r.status, 200);
      await r.json();
      seen = await mock.last();
      assert.equal(seen.path, `/v1/projects/p1/locations/us-east5/publishers/anthropic/models/${SONNET}:rawPredict`);
      assert.match(headerMap(seen.headers).authorization, /^Bearer ya29\.test-token-/);
    } finally {
      await g.stop();
    }
  });

  it('a user\'s application default credentials (authorized_user): the refresh token gets the token, the caller\'s project is kept', async () => {
    const user = { client_id: '764086051850-test.apps.googleusercontent.com', client_secret: 'd-FL95Q-test-secret', refresh_token: '1//0g-test-refresh' };
    const ep = await startRefreshEndpoint(user);
    const dir = tempDir('kl-adc-');
    const adc = (refresh) => {
      const f = join(dir, `adc-${refresh.length}.json`);
      writeFileSync(f, JSON.stringify({ account: '', ...user, refresh_token: refresh, quota_project_id: 'quota-proj',
        type: 'authorized_user', universe_domain: 'googleapis.com', token_uri: ep.url }, null, 2));
      return f;
    };
    const provider = (file) => ({ ...vertexProvider(mock.url, '{}'), apikey: `file:${file}` });
    const g = await startGateway({ providers: { vertex: provider(adc(user.refresh_token)) } });
    const body = JSON.stringify({ anthropic_version: 'vertex-2023-10-16', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
    const ask = (gw) => fetch(`${gw.url}/v1/projects/callers-proj/locations/us-east5/publishers/anthropic/models/${SONNET}:rawPredict`,
      { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    try {
      const r = await ask(g);
      assert.equal(r.status, 200);
      await r.json();
      const seen = await mock.last();
      assert.equal(seen.path, `/v1/projects/callers-proj/locations/us-east5/publishers/anthropic/models/${SONNET}:rawPredict`,
        'no project in the file: the caller\'s, not the quota project');
      assert.equal(headerMap(seen.headers).authorization, `Bearer ${ep.issued[0]}`);
      assert.equal(ep.issued.length, 1);
    } finally {
      await g.stop();
    }
    for (const secret of [user.client_secret, user.refresh_token, ...ep.issued])
      assert.ok(!g.output().includes(secret), 'no secret of the credentials in the log');
    // a revoked refresh token: Google's invalid_grant in the log, a 503 for the caller
    const g2 = await startGateway({ providers: { vertex: provider(adc('1//0g-revoked-refresh-token')) } });
    try {
      const r = await ask(g2);
      assert.equal(r.status, 503);
      assert.match((await r.json()).error.message, /no Google access token: the token endpoint refused/);
      assert.match(g2.output(), /Google access token for authorized_user:764086051850-test\.apps\.googleusercontent\.com: POST \S+: HTTP 400 invalid_grant: Bad Request/);
      assert.ok(!g2.output().includes('revoked-refresh'), 'the refresh token is not logged');
    } finally {
      await g2.stop();
      await ep.close();
    }
  });

  it('impersonated_service_account (gcloud auth application-default login --impersonate-service-account): the user\'s token gets the account\'s', async () => {
    const user = { client_id: '764086051850-imp.apps.googleusercontent.com', client_secret: 'd-FL95Q-imp-secret', refresh_token: '1//0g-imp-refresh' };
    const ep = await startRefreshEndpoint(user);
    const account = 'keyless-vertex@p1.iam.gserviceaccount.com';
    const delegate = 'projects/-/serviceAccounts/middle@p1.iam.gserviceaccount.com';
    // IAM credentials' generateAccessToken: the source's token, the scope, the chain of delegates
    const asked = [], issued = [];
    let refuse = false;
    const iam = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        const reply = (status, obj) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(obj));
        const m = req.url.match(/^\/v1\/projects\/-\/serviceAccounts\/([^/:]+):generateAccessToken$/);
        asked.push({ auth: req.headers.authorization, type: req.headers['content-type'], body: JSON.parse(body || '{}') });
        if (req.method !== 'POST' || !m) return reply(404, { error: { code: 404, message: 'Not Found', status: 'NOT_FOUND' } });
        if (![...ep.issued, ...tokens.issued].some((t) => req.headers.authorization === `Bearer ${t}`))
          return reply(401, { error: { code: 401, message: 'Request had invalid authentication credentials.', status: 'UNAUTHENTICATED' } });
        if (refuse || decodeURIComponent(m[1]) !== account)
          return reply(403, { error: { code: 403, message: "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).", status: 'PERMISSION_DENIED' } });
        const token = `ya29.c.imp-${issued.length + 1}-${crypto.randomBytes(6).toString('hex')}`;
        issued.push(token);
        reply(200, { accessToken: token, expireTime: new Date(Date.now() + 3600e3).toISOString().replace(/\.\d+Z$/, 'Z') });
      });
    });
    await new Promise((r) => iam.listen(0, '127.0.0.1', r));
    const dir = tempDir('kl-adc-imp-');
    const file = join(dir, 'application_default_credentials.json');
    writeFileSync(file, JSON.stringify({ delegates: [delegate],
      service_account_impersonation_url: `http://127.0.0.1:${iam.address().port}/v1/projects/-/serviceAccounts/${account}:generateAccessToken`,
      source_credentials: { account: '', ...user, type: 'authorized_user', universe_domain: 'googleapis.com', token_uri: ep.url },
      type: 'impersonated_service_account' }, null, 2));
    const provider = { ...vertexProvider(mock.url, '{}'), apikey: `file:${file}` };
    const body = JSON.stringify({ anthropic_version: 'vertex-2023-10-16', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
    const ask = (gw) => fetch(`${gw.url}/v1/projects/callers-proj/locations/us-east5/publishers/anthropic/models/${SONNET}:rawPredict`,
      { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const g = await startGateway({ providers: { vertex: provider }, grants: ADMIN_GRANTS });
    try {
      const r = await ask(g);
      assert.equal(r.status, 200);
      await r.json();
      const seen = await mock.last();
      assert.equal(headerMap(seen.headers).authorization, `Bearer ${issued[0]}`, 'the account\'s token, not the user\'s');
      assert.equal(seen.path, `/v1/projects/callers-proj/locations/us-east5/publishers/anthropic/models/${SONNET}:rawPredict`);
      assert.equal(ep.issued.length, 1);
      assert.deepEqual(asked, [{ auth: `Bearer ${ep.issued[0]}`, type: 'application/json',
        body: { scope: ['https://www.googleapis.com/auth/cloud-platform'], delegates: [delegate], lifetime: '3600s' } }]);
      const metrics = await (await fetch(`${g.url}/metrics`)).text();
      assert.match(metrics, /keyless_google_token_seconds_left\{account="impersonated:keyless-vertex@p1\.iam\.gserviceaccount\.com"\} (3[0-5]\d\d)\n/);
    } finally {
      await g.stop();
    }
    for (const secret of [user.client_secret, user.refresh_token, ...ep.issued, ...issued])
      assert.ok(!g.output().includes(secret), 'no secret of the credentials in the log');
    // a service account's key as the source (its JWT's token is the one IAM sees), and "delegates": null (none,
    // as Google's libraries read it)
    const keyed = join(dir, 'keyed.json');
    writeFileSync(keyed, JSON.stringify({ delegates: null, service_account_impersonation_url: JSON.parse(readFileSync(file, 'utf8')).service_account_impersonation_url,
      source_credentials: JSON.parse(sa.file(tokens.url)), type: 'impersonated_service_account' }));
    const g3 = await startGateway({ providers: { vertex: { ...provider, apikey: `file:${keyed}` } } });
    try {
      const r = await ask(g3);
      assert.equal(r.status, 200);
      await r.json();
      assert.equal(headerMap((await mock.last()).headers).authorization, `Bearer ${issued.at(-1)}`);
      assert.deepEqual(asked.at(-1), { auth: `Bearer ${tokens.issued.at(-1)}`, type: 'application/json',
        body: { scope: ['https://www.googleapis.com/auth/cloud-platform'], lifetime: '3600s' } });
    } finally {
      await g3.stop();
    }
    noSecrets(g3.output(), 'gateway log');
    // IAM refuses (the user may not act as the account): its words in the log, a 503 for the caller
    refuse = true;
    const g2 = await startGateway({ providers: { vertex: provider } });
    try {
      const r = await ask(g2);
      assert.equal(r.status, 503);
      await r.text();
      assert.match(g2.output(), /Google access token for impersonated:keyless-vertex@p1\.iam\.gserviceaccount\.com: POST \S+: HTTP 403 PERMISSION_DENIED: Permission 'iam\.serviceAccounts\.getAccessToken' denied/);
    } finally {
      await g2.stop();
      await ep.close();
      await new Promise((r) => iam.close(r));
    }
    // a file keyless cannot use is a configuration error
    const { execFileSync } = await import('node:child_process');
    for (const [bad, why] of [[{ source_credentials: { type: 'external_account' } }, /source_credentials must be an authorized_user's or a service_account's/],
      [{ service_account_impersonation_url: 'https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/' }, /needs a service_account_impersonation_url/],
      [{ service_account_impersonation_url: `http://iam.example.com/v1/projects/-/serviceAccounts/${account}:generateAccessToken` }, /service_account_impersonation_url must be https:\/\//],
      [{ delegates: 'middle' }, /delegates must be a list of service accounts/],
      [{ source_credentials: { type: 'authorized_user', client_id: 'c' } },
        /in the impersonated_service_account credentials file's source_credentials, the authorized_user credentials file has no client_id/]]) {
      const doc = JSON.parse(readFileSync(file, 'utf8'));
      const cfg = join(dir, 'k.json');
      writeFileSync(join(dir, 'bad.json'), JSON.stringify({ ...doc, ...bad }));
      writeFileSync(cfg, JSON.stringify({ providers: { vertex: { ...provider, apikey: `file:${join(dir, 'bad.json')}` } } }));
      let out = '';
      try {
        execFileSync(join(BUILD, 'keyless'), ['check', '--config', cfg], { encoding: 'utf8', stdio: 'pipe' });
      } catch (e) {
        out = e.stdout + e.stderr;
      }
      assert.match(out, why);
    }
  });

  it('the metadata server ("gcp-metadata", GKE workload identity): its token, asked with Metadata-Flavor, and its project', async () => {
    const md = await startMetadataServer({ project: 'meta-proj' });
    const g = await startGateway({ providers: { vertex: { ...vertexProvider(mock.url, '{}'), apikey: 'gcp-metadata' } },
      grants: ADMIN_GRANTS },
    { env: { GCE_METADATA_HOST: md.host } });
    const body = JSON.stringify({ anthropic_version: 'vertex-2023-10-16', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
    try {
      await sdkCallerProject(g);
      const seen = await mock.last();
      assert.equal(seen.path, `/v1/projects/meta-proj/locations/us-east5/publishers/anthropic/models/${SONNET}:rawPredict`,
        'the metadata server\'s project, whatever the caller names');
      assert.equal(headerMap(seen.headers).authorization, `Bearer ${md.issued[0]}`);
      assert.equal(md.issued.length, 1, 'one token for every request until it ages');
      assert.ok(md.seen.length >= 2 && md.seen.every((x) => x.flavor === 'Google' && x.method === 'GET'));
      assert.equal(md.seen.find((x) => x.path.endsWith('/token')).scopes, 'https://www.googleapis.com/auth/cloud-platform');
      const metrics = await (await fetch(`${g.url}/metrics`)).text();
      assert.match(metrics, /keyless_google_token_seconds_left\{account="metadata:default"\} [1-9]\d*\n/);
      const plain = await fetch(`${g.url}/v1/projects/x/locations/global/publishers/anthropic/models/${SONNET}:rawPredict`,
        { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      assert.equal(plain.status, 200);
      await plain.text();
      // an upstream (a debugging proxy) that echoes the token in a header and its error: the caller gets neither
      const echo = http.createServer((req, res) => res.writeHead(401, { 'content-type': 'application/json', 'x-echo': req.headers.authorization })
        .end(JSON.stringify({ error: { code: 401, message: `bad credential: ${req.headers.authorization}`, status: 'UNAUTHENTICATED' } })));
      await new Promise((r) => echo.listen(0, '127.0.0.1', r));
      const ge = await startGateway({ providers: { vertex: { ...vertexProvider(`http://127.0.0.1:${echo.address().port}`, '{}'),
        apikey: 'gcp-metadata' } } }, { env: { GCE_METADATA_HOST: md.host } });
      try {
        const r = await fetch(`${ge.url}/v1/projects/x/locations/global/publishers/anthropic/models/${SONNET}:rawPredict`,
          { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        assert.equal(r.status, 401);
        const text = await r.text();
        const token = md.issued.at(-1);
        assert.notEqual(token, md.issued[0], 'a token of its own');
        assert.match(text, /bad credential: Bearer \*+"/);
        assert.ok(!text.includes(token) && !r.headers.get('x-echo'), 'the token is masked in the body, the header dropped');
      } finally {
        await ge.stop();
        await new Promise((r) => echo.close(r));
      }
    } finally {
      await g.stop();
      await md.close();
    }
    assert.ok(!g.output().includes(md.issued[0]), 'the token is not logged');
    // a metadata server that does not know the account: 503, and the log says why
    const other = await startMetadataServer({ account: 'someone@p.iam.gserviceaccount.com' });
    const g2 = await startGateway({ providers: { vertex: { ...vertexProvider(mock.url, '{}'), apikey: 'gcp-metadata' } } },
      { env: { GCE_METADATA_HOST: other.host } });
    try {
      const r = await fetch(`${g2.url}/v1/projects/x/locations/global/publishers/anthropic/models/${SONNET}:rawPredict`,
        { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      assert.equal(r.status, 503);
      await r.text();
      assert.match(g2.output(), /Google access token for metadata:default: GET http:\/\/127\.0\.0\.1:\d+\/computeMetadata\/v1\/instance\/service-accounts\/default\/token\S*: HTTP 404/);
    } finally {
      await g2.stop();
      await other.close();
    }
  });

  it('the metadata server\'s tokens are renewed before they age, by one thread; a failed renewal keeps the old token until its last tenth, then 503 in the caller\'s dialect; a hanging server holds up no request', async () => {
    // tokens of four seconds: renewed after three, handed out for 3.6
    let mode = 'ok', then = null; // then: the mode after the next token served
    const issued = [];
    const hung = [];
    const md = http.createServer((req, res) => {
      const u = new URL(req.url, 'http://metadata.google.internal');
      const h = { 'metadata-flavor': 'Google' };
      if (req.headers['metadata-flavor'] !== 'Google')
        return res.writeHead(403).end();
      if (u.pathname === '/computeMetadata/v1/project/project-id')
        return res.writeHead(200, { ...h, 'content-type': 'application/text' }).end('meta-proj');
      if (u.pathname !== '/computeMetadata/v1/instance/service-accounts/default/token')
        return res.writeHead(404, h).end('Not Found');
      if (mode === 'fail')
        return res.writeHead(503, { ...h, 'content-type': 'text/plain' }).end('unavailable');
      if (mode === 'hang')
        return hung.push(res);
      const token = `ya29.c.short-${issued.length + 1}-${crypto.randomBytes(8).toString('hex')}`;
      issued.push(token);
      res.writeHead(200, { ...h, 'content-type': 'application/json' }).end(JSON.stringify({ access_token: token, expires_in: 4, token_type: 'Bearer' }));
      if (then)
        [mode, then] = [then, null];
    });
    await new Promise((r) => md.listen(0, '127.0.0.1', r));
    const g = await startGateway({ providers: { vertex: { ...vertexProvider(mock.url, '{}'), apikey: 'gcp-metadata' } },
      grants: ADMIN_GRANTS, store: { captures: 'full' } }, { env: { GCE_METADATA_HOST: `127.0.0.1:${md.address().port}` } });
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const ask = async (gemini) => {
      const t0 = Date.now();
      const r = await fetch(gemini ? `${g.url}/v1/projects/x/locations/us-east5/publishers/google/models/gemini-2.5-pro:generateContent`
        : `${g.url}/v1/projects/x/locations/us-east5/publishers/anthropic/models/${SONNET}:rawPredict`, { method: 'POST',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify(gemini ? { contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }
          : { anthropic_version: 'vertex-2023-10-16', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }) });
      const text = await r.text();
      return { status: r.status, text, ms: Date.now() - t0,
        auth: r.status === 200 ? headerMap((await mock.last()).headers).authorization : null };
    };
    try {
      let r = await ask();
      assert.equal(r.status, 200);
      assert.equal(r.auth, `Bearer ${issued[0]}`);
      // renewed before it ages: the next token is used, the first no longer
      await sleep(3300);
      r = await ask();
      assert.equal(r.status, 200);
      assert.equal(issued.length, 2);
      assert.equal(r.auth, `Bearer ${issued[1]}`);
      // twenty requests at once on two workers: no token of their own
      const all = await Promise.all(Array.from({ length: 20 }, () => ask()));
      assert.ok(all.every((x) => x.status === 200));
      assert.ok(issued.length <= 3, `${issued.length} tokens`);
      // the server hangs after its next token: requests meanwhile are served at once with it
      then = 'hang';
      for (let i = 0; i < 200 && !hung.length; i++) await sleep(50);
      assert.ok(hung.length, 'a renewal was tried');
      const held = issued.at(-1);
      r = await ask();
      assert.equal(r.status, 200);
      assert.equal(r.auth, `Bearer ${held}`);
      assert.ok(r.ms < 1000, `not held up by the hanging server (${r.ms} ms)`);
      // then it fails: the held token is no longer handed out in its last tenth; 503 in each caller's dialect
      mode = 'fail';
      for (const res of hung.splice(0)) res.destroy();
      await sleep(1500);
      r = await ask();
      assert.equal(r.status, 503);
      assert.deepEqual(JSON.parse(r.text).error.type, 'overloaded_error');
      assert.match(JSON.parse(r.text).error.message, /no Google access token: the token endpoint refused or failed/);
      r = await ask(true);
      assert.equal(r.status, 503);
      assert.equal(JSON.parse(r.text).error.status, 'UNAVAILABLE');
      assert.match(g.output(), /Google access token for metadata:default: GET \S+\/token\S*: HTTP 503/);
      // the server answers again: served again
      mode = 'ok';
      for (let i = 0; i < 100 && (r = await ask()).status !== 200; i++) await sleep(100);
      assert.equal(r.status, 200);
      assert.equal(r.auth, `Bearer ${issued.at(-1)}`);
      const list = await (await fetch(`${g.url}/api/requests?limit=1000`)).json();
      const ids = JSON.stringify(list).match(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g) || [];
      assert.ok(ids.length >= 20);
      let records = JSON.stringify(list);
      for (const id of new Set(ids)) records += await (await fetch(`${g.url}/api/requests/${id}`)).text();
      for (const t of issued) assert.ok(!records.includes(t.slice(8)), 'no token in the records or captures');
    } finally {
      mode = 'ok';
      for (const res of hung.splice(0)) res.destroy();
      await g.stop();
      await new Promise((r) => md.close(r));
    }
    for (const t of issued) assert.ok(!g.output().includes(t), 'no token in the log');
  });

  it('a hanging external account\'s executable holds up no other credential\'s renewal: no 503 for the metadata server\'s provider', async () => {
    // the metadata server's tokens live 6 s: renewed after 4.5, handed out for 5.4 (a real one's cached tokens may
    // have 5 minutes left, 45 s more than they are renewed with, against an executable's up to 120 s)
    const issued = [];
    const md = http.createServer((req, res) => {
      const u = new URL(req.url, 'http://metadata.google.internal');
      const h = { 'metadata-flavor': 'Google' };
      if (u.pathname === '/computeMetadata/v1/project/project-id')
        return res.writeHead(200, { ...h, 'content-type': 'application/text' }).end('meta-proj');
      const token = `ya29.c.six-${issued.length + 1}-${crypto.randomBytes(8).toString('hex')}`;
      issued.push(token);
      res.writeHead(200, { ...h, 'content-type': 'application/json' }).end(JSON.stringify({ access_token: token, expires_in: 6, token_type: 'Bearer' }));
    });
    await new Promise((r) => md.listen(0, '127.0.0.1', r));
    // an external account whose executable never answers within its 5 s
    const dir = tempDir('kl-wif-hang-');
    const exe = join(dir, 'get-token');
    writeFileSync(exe, '#!/bin/sh\nexec sleep 60\n', { mode: 0o755 });
    const f = join(dir, 'cred.json');
    writeFileSync(f, JSON.stringify({ type: 'external_account', audience: '//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x',
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', token_url: 'http://127.0.0.1:1/v1/token',
      credential_source: { executable: { command: exe, timeout_millis: 5000 } } }));
    const g = await startGateway({ providers: {
      meta: { ...vertexProvider(mock.url, '{}'), apikey: 'gcp-metadata', models: [SONNET] },
      fed: { ...vertexProvider(mock.url, '{}'), apikey: `file:${f}`, models: ['gemini-2.5-pro'] } }, grants: ADMIN_GRANTS },
    { env: { GCE_METADATA_HOST: `127.0.0.1:${md.address().port}`, GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES: '1' } });
    const ask = async () => {
      const r = await fetch(`${g.url}/v1/projects/x/locations/us-east5/publishers/anthropic/models/${SONNET}:rawPredict`, { method: 'POST',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify({ anthropic_version: 'vertex-2023-10-16', max_tokens: 10,
          messages: [{ role: 'user', content: 'hi' }] }) });
      await r.text();
      return r.status;
    };
    try {
      let status;
      for (let i = 0; i < 60 && (status = await ask()) !== 200; i++) await new Promise((r) => setTimeout(r, 200));
      assert.equal(status, 200);
      const statuses = [];
      for (const t0 = Date.now(); Date.now() - t0 < 14000;) {
        statuses.push(await ask());
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(statuses.every((s) => s === 200), `${statuses.filter((s) => s !== 200).length} of ${statuses.length} not served`);
      assert.ok(issued.length >= 3, `${issued.length} tokens`);
      assert.match(g.output(), /Google access token for \S+: .*no answer within 5 s/);
    } finally {
      await g.stop();
      await new Promise((r) => md.close(r));
    }
  });

  it('a reload that removes a credential whose try hangs leaves the keeper idle, not spinning until the try ends', async () => {
    const dir = tempDir('kl-wif-drop-');
    const exe = join(dir, 'get-token');
    const started = join(dir, 'started');
    writeFileSync(exe, `#!/bin/sh\necho $$ > ${started}\nexec sleep 60\n`, { mode: 0o755 });
    const f = join(dir, 'cred.json');
    writeFileSync(f, JSON.stringify({ type: 'external_account', audience: '//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x',
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', token_url: 'http://127.0.0.1:1/v1/token',
      credential_source: { executable: { command: exe, timeout_millis: 30000 } } }));
    const g = await startGateway({ providers: {
      fed: { ...vertexProvider(mock.url, '{}'), apikey: `file:${f}`, models: ['gemini-2.5-pro'] } } },
    { env: { GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES: '1' } });
    // the keeper's CPU time, in clock ticks (utime + stime of its thread)
    const { readdirSync } = await import('node:fs');
    const keeperTicks = () => {
      for (const tid of readdirSync(`/proc/${g.proc.pid}/task`)) {
        let comm;
        try { comm = readFileSync(`/proc/${g.proc.pid}/task/${tid}/comm`, 'utf8').trim(); } catch { continue; }
        if (comm !== 'kl-gcp-tokens') continue;
        const stat = readFileSync(`/proc/${g.proc.pid}/task/${tid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        return Number(fields[11]) + Number(fields[12]);
      }
      return null;
    };
    try {
      for (let i = 0; i < 100 && !existsSync(started); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(existsSync(started), 'the executable runs');
      const c = JSON.parse(readFileSync(g.configPath, 'utf8'));
      c.providers = { other: { ...vertexProvider(mock.url, '{}'), apikey: 'gcp-metadata', models: [SONNET] } };
      writeFileSync(g.configPath, JSON.stringify(c));
      assert.match(await g.reload(), /configuration reloaded/);
      const t0 = keeperTicks();
      assert.notEqual(t0, null, 'the keeper thread is found');
      await new Promise((r) => setTimeout(r, 2000));
      const spent = keeperTicks() - t0;
      assert.ok(spent <= 5, `the keeper spent ${spent} ticks of 200 while the removed credential's try hung`);
    } finally {
      await g.stop();
    }
  });

  it('workload identity federation (external_account): a token file exchanged at the STS, then for a service account', async () => {
    const audience = '//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/k8s/providers/cluster';
    const subject = `eyJhbGciOiJSUzI1NiJ9.k8s-${crypto.randomBytes(8).toString('hex')}.sig`;
    const azureToken = `eyJ0eXAiOiJKV1QifQ.azure-${crypto.randomBytes(8).toString('hex')}.sig`;
    const account = 'vertex@p1.iam.gserviceaccount.com';
    const workforce = '//iam.googleapis.com/locations/global/workforcePools/staff/providers/azure';
    const fed = await startFederation({ audiences: [audience, workforce], subjects: [subject, azureToken], account });
    const dir = tempDir('kl-wif-');
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, `${subject}\n`); // as the kubelet projects it
    const file = (extra) => {
      const f = join(dir, `cred-${crypto.randomBytes(4).toString('hex')}.json`);
      writeFileSync(f, JSON.stringify({ universe_domain: 'googleapis.com', type: 'external_account', audience,
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', token_url: `${fed.base}/v1/token`,
        credential_source: { file: tokenFile, format: { type: 'text' } }, ...extra }, null, 2));
      return f;
    };
    const provider = (f) => ({ ...vertexProvider(mock.url, '{}'), apikey: `file:${f}` });
    const body = JSON.stringify({ anthropic_version: 'vertex-2023-10-16', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
    const ask = (g) => fetch(`${g.url}/v1/projects/callers-proj/locations/us-east5/publishers/anthropic/models/${SONNET}:rawPredict`,
      { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const impersonation = {
      service_account_impersonation_url: `${fed.base}/v1/projects/-/serviceAccounts/${account}:generateAccessToken`,
      service_account_impersonation: { token_lifetime_seconds: 1800 },
    };
    const client = { client_id: 'wif-client', client_secret: `wif-secret-${crypto.randomBytes(6).toString('hex')}` };
    const g = await startGateway({ providers: { vertex: provider(file({ ...impersonation, ...client })) },
      grants: ADMIN_GRANTS });
    try {
      await sdkCallerProject(g);
      const seen = await mock.last();
      assert.equal(headerMap(seen.headers).authorization, `Bearer ${fed.impersonated[0]}`, 'the service account\'s token');
      assert.equal(seen.path, `/v1/projects/callers-proj/locations/us-east5/publishers/anthropic/models/${SONNET}:rawPredict`,
        'no project in the file: the caller\'s');
      assert.equal(fed.forms[0].get('subject_token'), subject, 'the file\'s token, without its line break');
      assert.equal(fed.forms[0].get('audience'), audience);
      assert.equal(fed.forms[0].get('options'), null);
      assert.equal(fed.forms[0].auth, `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64')}`,
        'the file\'s client, as HTTP Basic');
      assert.deepEqual(fed.asked[0], { auth: `Bearer ${fed.federated[0]}`, type: 'application/json',
        body: { scope: ['https://www.googleapis.com/auth/cloud-platform'], lifetime: '1800s' } });
      const again = await ask(g);
      assert.equal(again.status, 200);
      await again.json();
      assert.equal(fed.impersonated.length, 1, 'one token for every request until it ages');
      const metrics = await (await fetch(`${g.url}/metrics`)).text();
      const left = metrics.match(/keyless_google_token_seconds_left\{account="external_account:vertex@p1\.iam\.gserviceaccount\.com"\} (\d+)\n/);
      assert.ok(left && Number(left[1]) > 1500 && Number(left[1]) <= 1800, `the impersonated token's 30 minutes: ${left}`);
    } finally {
      await g.stop();
    }
    // a URL source (Azure's instance metadata: a JSON answer, a header it
    // needs), no impersonation: the federated token itself goes upstream,
    // and a workforce pool's user project goes to the STS
    const imds = http.createServer((req, res) => {
      if (req.headers.metadata !== 'True') return res.writeHead(400).end('{"error":"bad_request"}');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: azureToken, token_type: 'Bearer' }));
    });
    await new Promise((r) => imds.listen(0, '127.0.0.1', r));
    const viaUrl = file({ audience: workforce, workforce_pool_user_project: 'wf-proj', credential_source: {
      url: `http://127.0.0.1:${imds.address().port}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://x`,
      headers: { Metadata: 'True' }, format: { type: 'json', subject_token_field_name: 'access_token' } } });
    const g2 = await startGateway({ providers: { vertex: provider(viaUrl) } });
    try {
      const r = await ask(g2);
      assert.equal(r.status, 200);
      await r.json();
      assert.equal(headerMap((await mock.last()).headers).authorization, `Bearer ${fed.federated.at(-1)}`);
      assert.equal(fed.forms.at(-1).get('subject_token'), azureToken);
      assert.equal(fed.forms.at(-1).auth, undefined, 'no client in this file');
      assert.deepEqual(JSON.parse(fed.forms.at(-1).get('options')), { userProject: 'wf-proj' });
    } finally {
      await g2.stop();
      await new Promise((r) => imds.close(r));
    }
    // a token the pool does not accept, and a service account it may not
    // act as: 503s, and the log gives Google's reason without the token
    writeFileSync(tokenFile, 'eyJhbGciOiJSUzI1NiJ9.stale-token.sig');
    const g3 = await startGateway({ providers: { vertex: provider(file(impersonation)),
      other: { ...provider(file({ ...impersonation, service_account_impersonation_url:
        `${fed.base}/v1/projects/-/serviceAccounts/someone-else@p1.iam.gserviceaccount.com:generateAccessToken` })), models: ['claude-x@1'] },
      // a token file that is not there (a pod without its projected volume)
      missing: { ...provider(file({ audience: workforce, credential_source: { file: join(dir, 'no-such-token') } })),
        models: ['claude-y@1'] } } });
    try {
      const r = await ask(g3);
      assert.equal(r.status, 503);
      assert.match((await r.json()).error.message, /no Google access token: the token endpoint refused/);
      assert.match(g3.output(), /Google access token for external_account:vertex@p1\.iam\.gserviceaccount\.com: POST http:\/\/127\.0\.0\.1:\d+\/v1\/token: HTTP 400 invalid_grant: The given subject token could not be verified\./);
      writeFileSync(tokenFile, subject);
      const r2 = await fetch(`${g3.url}/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-x@1:rawPredict`,
        { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      assert.equal(r2.status, 503);
      await r2.text();
      for (let i = 0; i < 200 && !/someone-else.*PERMISSION_DENIED/.test(g3.output()); i++) await new Promise((res) => setTimeout(res, 10));
      assert.match(g3.output(), /Google access token for external_account:someone-else@p1\.iam\.gserviceaccount\.com: POST \S+:generateAccessToken: HTTP 403 PERMISSION_DENIED: Permission 'iam\.serviceAccounts\.getAccessToken' denied/);
      assert.match(g3.output(), /Google access token for external_account:locations\/global\/workforcePools\/staff\/providers\/azure: the token file \S+no-such-token: No such file or directory/);
    } finally {
      await g3.stop();
      await fed.close();
    }
    for (const out of [g.output(), g2.output(), g3.output()])
      for (const secret of [subject, azureToken, 'stale-token', client.client_secret, ...fed.federated, ...fed.impersonated])
        assert.ok(!out.includes(secret), 'no subject, federated or impersonated token in the log');
  });

  it('a URL source\'s user, password and query (each may be a credential) are not in the log when it fails', async () => {
    const pw = `pw-${crypto.randomBytes(6).toString('hex')}`, sig = `sig-${crypto.randomBytes(6).toString('hex')}`;
    const idp = http.createServer((req, res) => {
      if (req.url.startsWith('/down')) return res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"unavailable"}');
      res.writeHead(200, { 'content-type': 'text/plain' }).end('not json');
    });
    await new Promise((r) => idp.listen(0, '127.0.0.1', r));
    const dir = tempDir('kl-wif-url-');
    const cred = (name, url) => {
      const f = join(dir, `${name}.json`);
      writeFileSync(f, JSON.stringify({ type: 'external_account', audience: `//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/${name}`,
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', token_url: 'http://127.0.0.1:1/v1/token',
        credential_source: { url, format: { type: 'json', subject_token_field_name: 'access_token' } } }));
      return { ...vertexProvider(mock.url, '{}'), apikey: `file:${f}`, models: [`m-${name}`] };
    };
    const port = idp.address().port;
    const g = await startGateway({ providers: {
      refused: cred('refused', `http://svc:${pw}@127.0.0.1:1/token?sig=${sig}`),
      down: cred('down', `http://svc:${pw}@127.0.0.1:${port}/down?sig=${sig}#frag`),
      plain: cred('plain', `http://svc:${pw}@127.0.0.1:${port}/plain?sig=${sig}`) } });
    try {
      const want = [/providers\/refused: GET http:\/\/127\.0\.0\.1:1\/token: /, /providers\/down: GET http:\/\/127\.0\.0\.1:\d+\/down \(the subject token\): HTTP 500/,
        /providers\/plain: the subject token at http:\/\/127\.0\.0\.1:\d+\/plain: not JSON/];
      await logNames(g, want, { password: pw, query: sig });
    } finally {
      await g.stop();
      await new Promise((r) => idp.close(r));
    }
  });

  it('a token endpoint\'s user, password and query are not in the log when it refuses or cannot be reached', async () => {
    const pw = `pw-${crypto.randomBytes(6).toString('hex')}`, sig = `sig-${crypto.randomBytes(6).toString('hex')}`;
    const ep = http.createServer((req, res) => {
      if (req.url.startsWith('/tok')) // the impersonation's source gets its token; everything else is refused
        return res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: 'ya29.src', expires_in: 3600 }));
      res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"invalid_grant","error_description":"no"}');
    });
    await new Promise((r) => ep.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${ep.address().port}`;
    const dir = tempDir('kl-tok-url-');
    const subjectFile = join(dir, 'subject');
    writeFileSync(subjectFile, 'eyJhbGciOiJSUzI1NiJ9.subject.sig');
    const user = { type: 'authorized_user', client_id: 'cid', client_secret: 'csec', refresh_token: 'rtok' };
    const files = {
      refused: { ...user, token_uri: `https://svc:${pw}@127.0.0.1:1/token?sig=${sig}` },
      sts: { type: 'external_account', audience: '//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/sts',
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', token_url: `${base}/sts?sig=${sig}`,
        credential_source: { file: subjectFile } },
      imp: { type: 'impersonated_service_account', source_credentials: { ...user, token_uri: `${base}/tok` },
        service_account_impersonation_url: `${base}/v1/projects/-/serviceAccounts/imp@p.iam.gserviceaccount.com:generateAccessToken?sig=${sig}` },
    };
    const providers = {};
    for (const [name, body] of Object.entries(files)) {
      writeFileSync(join(dir, `${name}.json`), JSON.stringify(body));
      providers[name] = { ...vertexProvider(mock.url, '{}'), apikey: `file:${join(dir, `${name}.json`)}`, models: [`m-${name}`] };
    }
    const g = await startGateway({ providers });
    try {
      const want = [/authorized_user:cid: POST https:\/\/127\.0\.0\.1:1\/token: /, /providers\/sts: POST http:\/\/127\.0\.0\.1:\d+\/sts: HTTP 400 invalid_grant/,
        /impersonated:imp@p\.iam\.gserviceaccount\.com: POST http:\/\/127\.0\.0\.1:\d+\/v1\/projects\/-\/serviceAccounts\/imp@p\.iam\.gserviceaccount\.com:generateAccessToken: HTTP 400/];
      await logNames(g, want, { password: pw, query: sig });
    } finally {
      await g.stop();
      await new Promise((r) => ep.close(r));
    }
  });

  it('workload identity federation from an executable (pluggable auth): its answer, its cached answer, its refusals', async () => {
    const audience = '//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/okta/providers/saml';
    const subject = `eyJhbGciOiJSUzI1NiJ9.exe-${crypto.randomBytes(8).toString('hex')}.sig`;
    const cachedSubject = `eyJhbGciOiJSUzI1NiJ9.cached-${crypto.randomBytes(8).toString('hex')}.sig`;
    const account = 'vertex@p1.iam.gserviceaccount.com';
    const fed = await startFederation({ audiences: [audience], subjects: [subject, cachedSubject], account });
    const dir = tempDir('kl-wif-exe-');
    // the executable: records its arguments and the variables it was given, then answers as the answer file says
    const seenFile = join(dir, 'seen');
    const answerFile = join(dir, 'answer.json');
    const exe = join(dir, 'get-token');
    writeFileSync(exe, `#!/bin/sh\nprintf '%s\\n' "$(printf '%s|' "$@")" "$GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE" "$GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE" "$GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE" "$GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL" "$GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE" > '${seenFile}'\ncat '${answerFile}'\n`, { mode: 0o755 });
    const answer = (obj) => writeFileSync(answerFile, JSON.stringify(obj));
    const ok = (token, extra = {}) => ({ version: 1, success: true, token_type: 'urn:ietf:params:oauth:token-type:jwt',
      id_token: token, expiration_time: Math.floor(Date.now() / 1000) + 3600, ...extra });
    const file = (executable) => {
      const f = join(dir, `cred-${crypto.randomBytes(4).toString('hex')}.json`);
      writeFileSync(f, JSON.stringify({ universe_domain: 'googleapis.com', type: 'external_account', audience,
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', token_url: `${fed.base}/v1/token`,
        service_account_impersonation_url: `${fed.base}/v1/projects/-/serviceAccounts/${account}:generateAccessToken`,
        credential_source: { executable } }, null, 2));
      return f;
    };
    const provider = (f) => ({ ...vertexProvider(mock.url, '{}'), apikey: `file:${f}` });
    const body = JSON.stringify({ anthropic_version: 'vertex-2023-10-16', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
    const ask = (g) => fetch(`${g.url}/v1/projects/callers-proj/locations/us-east5/publishers/anthropic/models/${SONNET}:rawPredict`,
      { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const allow = { GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES: '1' };
    const expect503 = async (f, env, why) => {
      const g = await startGateway({ providers: { vertex: provider(f) } }, { env });
      try {
        const r = await ask(g);
        assert.equal(r.status, 503);
        await r.text();
        // the first try may still be running (a command given its whole time)
        for (let i = 0; i < 100 && !why.test(g.output()); i++) await new Promise((res) => setTimeout(res, 100));
        assert.match(g.output(), why);
      } finally {
        await g.stop();
      }
      return g;
    };
    try {
      // its answer, with the variables Google's libraries give it
      answer(ok(subject));
      // the command at white space, a quoted part whole (as Google's Node library splits it)
      const g = await startGateway({ providers: { vertex: provider(file({ command: `${exe}\t--profile  "dev team"`, timeout_millis: 5000 })) } },
        { env: allow });
      try {
        const r = await ask(g);
        assert.equal(r.status, 200);
        await r.json();
        assert.equal(headerMap((await mock.last()).headers).authorization, `Bearer ${fed.impersonated.at(-1)}`);
        assert.equal(fed.forms.at(-1).get('subject_token'), subject);
        assert.equal(fed.forms.at(-1).get('subject_token_type'), 'urn:ietf:params:oauth:token-type:jwt');
        assert.deepEqual(readFileSync(seenFile, 'utf8').split('\n').slice(0, 6),
          ['--profile|dev team|', audience, 'urn:ietf:params:oauth:token-type:jwt', '0', account, '']);
      } finally {
        await g.stop();
      }
      assert.ok(!g.output().includes(subject), 'the subject token is not logged');
      // a cached answer still good in the output file: used, the executable not run
      const cache = join(dir, 'cache.json');
      writeFileSync(cache, JSON.stringify(ok(cachedSubject)));
      answer({ version: 1, success: false, code: '401', message: 'not run' });
      const g2 = await startGateway({ providers: { vertex: provider(file({ command: exe, output_file: cache })) } }, { env: allow });
      try {
        const r = await ask(g2);
        assert.equal(r.status, 200);
        await r.json();
        assert.equal(fed.forms.at(-1).get('subject_token'), cachedSubject);
      } finally {
        await g2.stop();
      }
      // a stale cache: the executable runs (and is told where to cache), and its refusal (its JSON, a status
      // that is not 0, as Google's specification has it) is logged
      writeFileSync(cache, JSON.stringify(ok(cachedSubject, { expiration_time: Math.floor(Date.now() / 1000) - 10 })));
      answer({ version: 1, success: false, code: '401', message: 'Caller not authorized.' });
      writeFileSync(join(dir, 'refuses'), `#!/bin/sh\n'${exe}' "$@"\nexit 1\n`, { mode: 0o755 });
      await expect503(file({ command: join(dir, 'refuses'), output_file: cache }), allow,
        /the executable \S+refuses's answer: no token \(code 401: Caller not authorized\.\), status 1/);
      assert.equal(readFileSync(seenFile, 'utf8').split('\n')[5], cache);
      // answers Google's libraries refuse: a token type they do not take, no expiration_time with an output_file
      answer(ok(subject, { token_type: 'urn:ietf:params:oauth:token-type:access_token' }));
      await expect503(file({ command: exe }), allow, /token_type must be urn:ietf:params:oauth:token-type:jwt, id_token or saml2/);
      answer(ok(subject, { expiration_time: undefined }));
      await expect503(file({ command: exe, output_file: join(dir, 'none.json') }), allow, /no expiration_time, which an output_file needs/);
      // not allowed to run, a status that is not 0, no answer in time
      answer(ok(subject));
      await expect503(file({ command: exe }), {}, /runs only with GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1/);
      writeFileSync(join(dir, 'fails'), '#!/bin/sh\necho "no session: run okta login" >&2\nexit 2\n', { mode: 0o755 });
      await expect503(file({ command: join(dir, 'fails') }), allow, /fails exited with status 2: no session: run okta login/);
      writeFileSync(join(dir, 'hangs'), '#!/bin/sh\nsleep 30\n', { mode: 0o755 });
      await expect503(file({ command: join(dir, 'hangs'), timeout_millis: 5000 }), allow, /hangs: no answer within 5 s \(stopped\)/);
    } finally {
      await fed.close();
    }
  });

  it('workload identity federation from AWS ("aws1"): a GetCallerIdentity signed with the instance role, or the environment\'s keys', async () => {
    const audience = '//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/aws/providers/ec2';
    const role = { accessKeyId: 'ASIAKEYLESSTEST00001', secretAccessKey: `role-secret-${crypto.randomBytes(8).toString('hex')}`,
      sessionToken: `IQoJb3JpZ2luX2VjE-session-${crypto.randomBytes(8).toString('hex')}` };
    const keys = { accessKeyId: 'AKIAKEYLESSTEST00002', secretAccessKey: `env-secret-${crypto.randomBytes(8).toString('hex')}` };
    const account = 'vertex@p1.iam.gserviceaccount.com';
    const audience2 = '//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/aws/providers/second';
    const fed = await startFederation({ audiences: [audience, audience2], subjects: [], account, awsKeys: [role, keys] });
    const imds = await startImds({ zone: 'us-west-2b', creds: role });
    const dir = tempDir('kl-wif-aws-');
    const cred = join(dir, 'aws.json');
    writeFileSync(cred, JSON.stringify({ type: 'external_account', audience,
      subject_token_type: 'urn:ietf:params:aws:token-type:aws4_request', token_url: `${fed.base}/v1/token`,
      service_account_impersonation_url: `${fed.base}/v1/projects/-/serviceAccounts/${account}:generateAccessToken`,
      credential_source: { environment_id: 'aws1',
        region_url: `${imds.base}/latest/meta-data/placement/availability-zone`,
        url: `${imds.base}/latest/meta-data/iam/security-credentials`,
        regional_cred_verification_url: 'https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15',
        imdsv2_session_token_url: `${imds.base}/latest/api/token` } }, null, 2));
    const noAws = { AWS_REGION: '', AWS_DEFAULT_REGION: '', AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '', AWS_SESSION_TOKEN: '' };
    const config = { providers: { vertex: { ...vertexProvider(mock.url, '{}'), apikey: `file:${cred}` } } };
    const body = JSON.stringify({ anthropic_version: 'vertex-2023-10-16', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
    const ask = (g) => fetch(`${g.url}/v1/projects/callers-proj/locations/us-east5/publishers/anthropic/models/${SONNET}:rawPredict`,
      { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const outputs = [];
    // the instance profile, through IMDSv2
    const g = await startGateway(config, { env: noAws });
    try {
      const r = await ask(g);
      assert.equal(r.status, 200);
      await r.json();
      assert.equal(headerMap((await mock.last()).headers).authorization, `Bearer ${fed.impersonated.at(-1)}`);
      const req = fed.awsRequests.at(-1);
      assert.equal(req.url, 'https://sts.us-west-2.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15',
        'the region is the zone\'s');
      const h = Object.fromEntries(req.headers.map(({ key, value }) => [key, value]));
      assert.equal(h['x-amz-security-token'], role.sessionToken);
      assert.match(h.authorization, /SignedHeaders=host;x-amz-date;x-amz-security-token;x-goog-cloud-target-resource,/);
      assert.equal(imds.seen[0].method, 'PUT', 'an IMDSv2 session first');
      assert.ok(imds.seen.slice(1).every((x) => x.method === 'GET' && x.token), 'every read with the session token');
      assert.deepEqual(imds.seen.slice(1).map((x) => x.path), ['/latest/meta-data/placement/availability-zone',
        '/latest/meta-data/iam/security-credentials', '/latest/meta-data/iam/security-credentials/keyless-vertex-role']);
    } finally {
      await g.stop();
      outputs.push(g.output());
    }
    // the environment's keys and region: the metadata service is not asked;
    // a second account signs with the same keys (they are read, not used up)
    const before = imds.seen.length;
    const cred2 = join(dir, 'aws2.json');
    writeFileSync(cred2, JSON.stringify({ ...JSON.parse(readFileSync(cred, 'utf8')), audience: audience2,
      service_account_impersonation_url: undefined }));
    const g2 = await startGateway({ providers: { ...config.providers,
      second: { ...vertexProvider(mock.url, '{}'), apikey: `file:${cred2}`, models: ['claude-x@1'] } }, grants: ADMIN_GRANTS },
    { env: { ...noAws, AWS_REGION: 'eu-west-1', AWS_ACCESS_KEY_ID: keys.accessKeyId, AWS_SECRET_ACCESS_KEY: keys.secretAccessKey } });
    try {
      const r = await ask(g2);
      assert.equal(r.status, 200);
      await r.json();
      const req = fed.awsRequests.at(-1);
      assert.equal(req.url, 'https://sts.eu-west-1.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15');
      assert.ok(!req.headers.some((x) => x.key === 'x-amz-security-token'));
      assert.equal(imds.seen.length, before);
      const metrics = await (await fetch(`${g2.url}/metrics`)).text();
      assert.match(metrics, /keyless_google_token_seconds_left\{account="external_account:projects\/123456\/locations\/global\/workloadIdentityPools\/aws\/providers\/second"\} [1-9]/,
        'the second account got its token with the same environment keys');
    } finally {
      await g2.stop();
      outputs.push(g2.output());
    }
    // no AWS region nor keys anywhere (the file names no metadata URLs): the log says so
    const bare = join(dir, 'bare.json');
    const parsed = JSON.parse(readFileSync(cred, 'utf8'));
    writeFileSync(bare, JSON.stringify({ ...parsed, credential_source: { environment_id: 'aws1',
      regional_cred_verification_url: parsed.credential_source.regional_cred_verification_url } }));
    const g4 = await startGateway({ providers: { vertex: { ...vertexProvider(mock.url, '{}'), apikey: `file:${bare}` } } },
      { env: noAws });
    try {
      const r = await ask(g4);
      assert.equal(r.status, 503);
      await r.text();
      assert.match(g4.output(), /: no AWS region: AWS_REGION, AWS_DEFAULT_REGION, or the file's region_url/);
    } finally {
      await g4.stop();
    }
    // keys whose signature the STS cannot verify: a 503, Google's reason in the log
    const g3 = await startGateway(config, { env: { ...noAws, AWS_REGION: 'eu-west-1', AWS_ACCESS_KEY_ID: keys.accessKeyId,
      AWS_SECRET_ACCESS_KEY: 'not-the-secret' } });
    try {
      const r = await ask(g3);
      assert.equal(r.status, 503);
      await r.text();
      assert.match(g3.output(), /Google access token for external_account:vertex@p1\.iam\.gserviceaccount\.com: POST \S+\/v1\/token: HTTP 400 invalid_grant/);
    } finally {
      await g3.stop();
      outputs.push(g3.output());
      await fed.close();
      await imds.close();
    }
    for (const out of outputs)
      for (const secret of [role.secretAccessKey, role.sessionToken, keys.secretAccessKey, ...fed.federated, ...fed.impersonated])
        assert.ok(!out.includes(secret), 'no AWS secret, session token or Google token in the log');
  });

  it('a rotated key applies on SIGHUP with its first token minted before the reload ends', async () => {
    const a = serviceAccount('kid-a'), b = serviceAccount('kid-b');
    // the new key's first token is slow: "reloaded" in the log must still
    // mean the next request goes with it
    const ep = await startTokenEndpoint({ 'kid-a': a.publicKey, 'kid-b': b.publicKey }, { delayMs: { 'kid-b': 500 } });
    const g = await startGateway({ providers: { vertex: vertexProvider(mock.url, a.file(ep.url)) } });
    const ask = () => fetch(`${g.url}/v1/projects/p1/locations/global/publishers/anthropic/models/${SONNET}:rawPredict`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ anthropic_version: 'vertex-2023-10-16', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }) });
    try {
      assert.equal((await ask()).status, 200);
      assert.deepEqual(ep.kids, ['kid-a']);
      const c = JSON.parse(readFileSync(g.configPath, 'utf8'));
      c.providers.vertex = vertexProvider(mock.url, b.file(ep.url));
      writeFileSync(g.configPath, JSON.stringify(c));
      assert.match(await g.reload(), /configuration reloaded/);
      const r = await ask();
      assert.equal(r.status, 200, 'no window without a token');
      await r.json();
      assert.equal(headerMap((await mock.last()).headers).authorization, `Bearer ${ep.issued.at(-1)}`);
      assert.deepEqual(ep.kids, ['kid-a', 'kid-b'], 'the old key is no longer renewed');
    } finally {
      await g.stop();
      await ep.close();
    }
  });

  it('a key file that cannot be used (a bad key, a token endpoint over http elsewhere) is a configuration error at its position', async () => {
    const { execFileSync } = await import('node:child_process');
    const dir = tempDir('kl-vertex-bad-');
    const path = join(dir, 'k.json');
    writeFileSync(path, JSON.stringify({ providers: { vertex: { baseurl: 'https://aiplatform.googleapis.com',
      apikey: `keyfile::${JSON.stringify({ type: 'service_account', client_email: EMAIL, private_key: 'nope' })}`,
      models: [SONNET], compatibility: { google_raw_predict: true } } } }));
    let out = '';
    try {
      execFileSync(join(BUILD, 'keyless'), ['check', '--config', path], { encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      out = e.stdout + e.stderr;
    }
    assert.match(out, /k\.json:\d+:\d+: error: provider vertex: the service account key file's private_key is not a PEM private key/);
    assert.doesNotMatch(out, /has no apikey/); // the error says it once
    // a token endpoint over plain http elsewhere than this machine: the signed assertion would travel readable
    writeFileSync(path, JSON.stringify({ providers: { vertex: vertexProvider('https://aiplatform.googleapis.com',
      serviceAccount().file('http://oauth2.googleapis.com/token')) } }));
    out = '';
    try {
      execFileSync(join(BUILD, 'keyless'), ['check', '--config', path], { encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      out = e.stdout + e.stderr;
    }
    assert.match(out, /error: provider vertex: the service account key file's token_uri must be https:\/\//);
  });
});
