// Workload identity: OIDC JWTs (GitHub Actions style RS256, Kubernetes
// style ES256) verified against JWKS files; every attack refused.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, providersFor, assertNoKeys, finalRecord, rawRequest, BUILD, tempDir } from './lib/harness.mjs';
import { makeIssuer, writeJwks, attackTokens } from './lib/jwt.mjs';

const GH = 'https://token.actions.githubusercontent.com';
const K8S = 'https://kubernetes.default.svc.cluster.local';


// The status read every 100 ms, up to tries times, until it is want: the
// last one read (a rotated key is picked up by the 2 s reload check).
async function statusBecomes(read, want, tries) {
  let s = 0;
  for (let i = 0; i < tries && s !== want; i++) {
    await sleep(100);
    s = await read();
  }
  return s;
}

describe('OIDC workload tokens', () => {
  let mock, gw, gh, k8s, dir;
  before(async () => {
    dir = tempDir('kl-oidc-');
    gh = makeIssuer({ alg: 'RS256', iss: GH });
    k8s = makeIssuer({ alg: 'ES256', iss: K8S });
    writeJwks(join(dir, 'gh.json'), gh, k8s);
    writeJwks(join(dir, 'k8s.json'), k8s, gh);
    mock = await startMock();
    gw = await startGateway({
      identity: {
        oidc: {
          issuers: [
            {
              issuer: GH, jwks_file: join(dir, 'gh.json'), audience: 'keyless', algorithms: ['RS256'],
              leeway: '60s', max_lifetime: '1h',
              login: 'repo:{repository}@{ref}', tags: ['tag:ci'], groups: ['group:{repository_owner}'],
              // GitHub mints tokens for every repository, with any audience: only ours are callers
              claims: { repository_owner: 'acme', ref: ['refs/heads/main', 'refs/tags/v*'] },
            },
            {
              // the same issuer, a partner's repositories, mapped another way
              issuer: GH, jwks_file: join(dir, 'gh.json'), audience: 'keyless-partner', algorithms: ['RS256'],
              login: 'partner:{repository}', tags: ['tag:partner'],
              claims: { repository: 'partner-org/*', 'runner_environment': 'github-hosted' },
            },
            {
              issuer: K8S, jwks_file: join(dir, 'k8s.json'), audience: 'keyless', algorithms: ['ES256'],
              max_lifetime: '1h',
              login: 'k8s:{kubernetes.io/namespace}/{kubernetes.io/serviceaccount/name}',
            },
          ],
        },
        loopback: false,
      },
      grants: [
        { src: ['tag:ci'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: ['anthropic/*', 'pass/*', 'gpass/*'] }] } },
        { src: ['k8s:payments/billing-bot'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: 'openai/*' }] } },
      ],
      providers: providersFor(mock.url, {
        pass: { baseurl: mock.url, apikey: 'sk-pass-provider-000', auth_mode: 'passthrough', models: ['pass-model'],
                compatibility: { openai_chat: true } },
        gpass: { baseurl: mock.url, apikey: 'AIza-gpass-provider-000', auth_mode: 'passthrough', authorization: 'x-goog-api-key',
                 models: ['gpass-model'], compatibility: { gemini_generate_content: true } },
      }),
    });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  const whoami = async (token, header = 'authorization') => {
    const r = await fetch(`${gw.url}/api/whoami`, {
      headers: { [header]: header === 'authorization' ? `Bearer ${token}` : token },
    });
    return { status: r.status, body: await r.json() };
  };

  it('a valid RS256 GitHub Actions token is accepted and mapped by its claims', async () => {
    const tok = gh.sign(gh.claims({ aud: 'keyless', repository: 'acme/app', ref: 'refs/heads/main', repository_owner: 'acme' }));
    const w = await whoami(tok);
    assert.equal(w.status, 200, JSON.stringify(w.body));
    assert.equal(w.body.login, 'repo:acme/app@refs/heads/main');
    assert.equal(w.body.source, 'oidc');
    assert.equal(w.body.issuer, GH);
    assert.deepEqual(w.body.tags, ['tag:ci']);
    assert.deepEqual(w.body.groups, ['group:acme']);
    // the Anthropic SDK sends its "API key" as x-api-key: a token works there too
    const client = new Anthropic({ baseURL: gw.url, apiKey: tok, maxRetries: 0 });
    const m = await client.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(m.content[0].text, 'Hello from mockllm.');
    const seen = JSON.stringify(await mock.last());
    assert.ok(!seen.includes(tok), 'the workload token must not reach the provider');
  });

  it('claims conditions: only the repositories and refs configured are callers, each mapped by its own entry', async () => {
    const tok = (c) => gh.sign(gh.claims(c));
    const acme = { aud: 'keyless', repository: 'acme/app', repository_owner: 'acme' };
    // an organisation that happens to be called like a group gets nothing
    let w = await whoami(tok({ aud: 'keyless', repository: 'eng/x', repository_owner: 'eng', ref: 'refs/heads/main' }));
    assert.equal(w.status, 401, JSON.stringify(w.body));
    assert.match(w.body.error.message, /claim repository_owner has a value this gateway does not accept/);
    w = await whoami(tok({ ...acme, ref: 'refs/heads/feature' }));
    assert.equal(w.status, 401);
    assert.match(w.body.error.message, /claim ref has a value/);
    w = await whoami(tok({ aud: 'keyless', repository: 'acme/app', ref: 'refs/heads/main' }));
    assert.equal(w.status, 401);
    assert.match(w.body.error.message, /claim repository_owner is missing/);
    w = await whoami(tok({ ...acme, ref: 'refs/tags/v1.2' }));
    assert.equal(w.status, 200, JSON.stringify(w.body));
    assert.equal(w.body.login, 'repo:acme/app@refs/tags/v1.2');
    // "*" stays within one path segment
    w = await whoami(tok({ ...acme, ref: 'refs/tags/v1/evil' }));
    assert.equal(w.status, 401);
    // the partner entry: its own audience, login and tags
    const partner = { aud: 'keyless-partner', repository: 'partner-org/tool', runner_environment: 'github-hosted' };
    w = await whoami(tok(partner));
    assert.equal(w.status, 200, JSON.stringify(w.body));
    assert.equal(w.body.login, 'partner:partner-org/tool');
    assert.deepEqual(w.body.tags, ['tag:partner']);
    w = await whoami(tok({ ...partner, runner_environment: 'self-hosted' }));
    assert.equal(w.status, 401);
    assert.match(w.body.error.message, /claim runner_environment has a value/);
    // a partner token for our audience: the reason is the entry it got furthest with
    w = await whoami(tok({ ...partner, aud: 'keyless' }));
    assert.equal(w.status, 401);
    assert.match(w.body.error.message, /claim repository_owner is missing/);
  });

  it('keyless check: a shared issuer without claims is warned about; malformed claims are errors', () => {
    const check = (issuer, ...more) => {
      const f = join(dir, 'claims.hujson');
      writeFileSync(f, JSON.stringify({ identity: { oidc: { issuers: [issuer, ...more] } } }));
      return spawnSync(join(BUILD, 'keyless'), ['check', '--config', f], { encoding: 'utf8' });
    };
    const base = { issuer: GH, jwks_file: join(dir, 'gh.json'), audience: 'keyless', login: '{repository}' };
    let r = check(base);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /warning: issuer https:\/\/token\.actions\.githubusercontent\.com mints tokens for every repository/);
    for (const claims of [{ repository_owner: 'acme' }, { repository: ['acme/*', 'acme/tools'] }, { sub: 'repo:acme/app:*' },
      { ref: 'refs/heads/main', repository_owner_id: '1234' }]) {
      r = check({ ...base, claims });
      assert.equal(r.status, 0);
      assert.doesNotMatch(r.stderr, /mints tokens/, JSON.stringify(claims));
    }
    // conditions that still admit every owner's workflows are warned about too
    for (const claims of [{ ref: 'refs/heads/main' }, { repository_owner: '*' }, { repository_owner: 'acme-*' },
      { repository: ['acme/*', '*/tools'] }, { sub: 'repo:*' },
      { job_workflow_ref: 'acme/shared/.github/workflows/deploy.yml@refs/heads/main' }]) {
      r = check({ ...base, claims });
      assert.equal(r.status, 0);
      assert.match(r.stderr, /without a "claims" condition that fixes their owner/, JSON.stringify(claims));
    }
    for (const [claims, msg] of [[{}, /claims must be an object/], ['acme', /claims must be an object/],
      [{ ref: [] }, /claims\.ref allows no value/], [{ ref: 5 }, /allowed values are non-empty strings/],
      [{ 'a//b': 'x' }, /empty path segment/]]) {
      r = check({ ...base, claims });
      assert.equal(r.status, 1, `${JSON.stringify(claims)}: ${r.stderr}`);
      assert.match(r.stderr, msg);
    }
    // an entry refused after reading many claims, then another: its slot is
    // reused without writing past the new entry's rules (the sanitizer run
    // of this suite sees any overflow; the release build crashed)
    const many = (n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`c${i}`, 'x']));
    r = check({ issuer: 'https://a.example', audience: 'k', login: '{sub}', claims: many(100) }, { ...base, claims: many(90) });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /an OIDC issuer needs/);
  });

  it('keyless check: Buildkite, HCP Terraform and Google, which mint tokens for anyone, are shared issuers too', () => {
    const f = join(dir, 'shared.hujson');
    const check = (issuer, claims) => {
      writeFileSync(f, JSON.stringify({ identity: { oidc: { issuers: [{ issuer, jwks_file: join(dir, 'gh.json'),
        audience: 'keyless', login: 'x:{sub}', ...(claims ? { claims } : {}) }] } } }));
      const r = spawnSync(join(BUILD, 'keyless'), ['check', '--config', f], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return /without a "claims" condition that fixes their owner/.test(r.stderr);
    };
    const cases = {
      'https://agent.buildkite.com': [[{ organization_slug: 'acme' }, { sub: 'organization:acme:pipeline:*' },
        { organization_id: '0190c0de-0000-7000-8000-000000000000' }],
      [undefined, { pipeline_slug: 'deploy' }, { organization_slug: 'acme*' }, { sub: 'organization:*:pipeline:deploy:*' },
        { repository_owner: 'acme' }]],
      'https://app.terraform.io': [[{ terraform_organization_name: 'acme' }, { sub: 'organization:acme:project:*' },
        { terraform_organization_id: 'org-abc123' }],
      [undefined, { terraform_workspace_name: 'prod' }, { sub: 'organization:*:workspace:prod:*' }]],
      'https://accounts.google.com': [[{ email: '*@acme-prod.iam.gserviceaccount.com' }, { email: 'bot@acme-prod.iam.gserviceaccount.com' },
        { sub: '117000000000000000000' }, { hd: 'acme.com' }, { email: 'alice@gmail.com' }],
      [undefined, { email: '*@gmail.com' }, { email: '*@developer.gserviceaccount.com' }, { email: '*.iam.gserviceaccount.com' },
        { email: 'bot@*.iam.gserviceaccount.com' }, { sub: '1170*' }, { email_verified: 'true' }]],
      'accounts.google.com': [[{ hd: 'acme.com' }], [undefined]],
    };
    for (const [iss, [pinned, open]] of Object.entries(cases)) {
      for (const claims of pinned) assert.equal(check(iss, claims), false, `${iss} ${JSON.stringify(claims)}`);
      for (const claims of open) assert.equal(check(iss, claims), true, `${iss} ${JSON.stringify(claims)}`);
    }
    // the warning reads as a sentence for each family
    writeFileSync(f, JSON.stringify({ identity: { oidc: { issuers: [{ issuer: 'https://accounts.google.com',
      jwks_file: join(dir, 'gh.json'), audience: 'keyless', login: 'x:{sub}' }] } } }));
    assert.match(spawnSync(join(BUILD, 'keyless'), ['check', '--config', f], { encoding: 'utf8' }).stderr,
      /issuer https:\/\/accounts\.google\.com mints tokens for every account \(every project's service accounts included\) it hosts, with any audience asked for: without/);
    // CircleCI's issuer is one organization's
    assert.equal(check('https://oidc.circleci.com/org/0190c0de-0000-7000-8000-000000000000'), false);
  });

  it('a passthrough provider gets its own key, never the workload token that identified the caller', async () => {
    const tok = gh.sign(gh.claims({ aud: 'keyless', repository: 'acme/app', ref: 'refs/heads/main', repository_owner: 'acme' }));
    const r = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'pass-model', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(r.status, 200, await r.text());
    const seen = JSON.stringify(await mock.last());
    assert.ok(!seen.includes(tok), 'the workload token must not reach a passthrough provider');
    assert.ok(seen.includes('sk-pass-provider-000'), 'the provider key is sent instead');
  });

  // a CIDR rule before oidc in identity.order, and a passthrough provider
  const startCidrFirst = () => startGateway({
    identity: { order: ['cidr', 'oidc'], cidr: [{ range: '127.0.0.0/8', login: 'lan@example.com' }],
      oidc: { issuers: [{ issuer: K8S, jwks_file: join(dir, 'k8s.json'), audience: 'keyless', login: 'k8s:{sub}' }] },
      loopback: false },
    grants: [{ src: ['*'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' }] } }],
    providers: providersFor(mock.url, {
      pass: { baseurl: mock.url, apikey: 'sk-pass-provider-000', auth_mode: 'passthrough', models: ['pass-model'],
              compatibility: { openai_chat: true } },
    }),
  });

  it('a workload token reaches no passthrough provider when a source before oidc identified the caller', async () => {
    const g = await startCidrFirst();
    try {
      const tok = k8s.sign(k8s.claims({ aud: 'keyless' }));
      for (const [headers, query] of [[{ authorization: `Bearer ${tok}` }, ''], [{ 'api-key': tok }, ''], [{}, `?key=${tok}`]]) {
        await mock.clear();
        const r = await fetch(`${g.url}/v1/chat/completions${query}`, {
          method: 'POST', headers: { ...headers, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'pass-model', messages: [{ role: 'user', content: 'hi' }] }),
        });
        assert.equal(r.status, 200, await r.text());
        const seen = JSON.stringify(await mock.last());
        assert.ok(!seen.includes(tok), `the workload token must not reach a passthrough provider (${JSON.stringify(headers)}${query})`);
        assert.ok(seen.includes('sk-pass-provider-000'), 'the provider key is sent instead');
      }
      // the caller is who the first source says
      const w = await (await fetch(`${g.url}/api/whoami`, { headers: { authorization: `Bearer ${tok}` } })).json();
      assert.equal(w.login, 'lan@example.com');
      // a JWT of no configured issuer is the caller's own credential, and goes on
      const entra = makeIssuer({ alg: 'RS256', iss: 'https://login.microsoftonline.com/0000-tenant/v2.0' });
      const az = entra.sign(entra.claims({ aud: 'https://cognitiveservices.azure.com' }));
      await mock.clear();
      const r = await fetch(`${g.url}/v1/chat/completions`, {
        method: 'POST', headers: { authorization: `Bearer ${az}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'pass-model', messages: [{ role: 'user', content: 'hi' }] }),
      });
      assert.equal(r.status, 200);
      assert.ok(JSON.stringify(await mock.last()).includes(az));
    } finally {
      await g.stop();
    }
  });

  it('a workload token in a second copy of a credential header or ?key= is seen, and reaches no passthrough provider', async () => {
    // an SDK's own key plus a header (or query) the user added: the token is
    // in the second copy, which a passthrough provider gets as well
    const g = await startCidrFirst();
    try {
      const tok = k8s.sign(k8s.claims({ aud: 'keyless' }));
      const body = JSON.stringify({ model: 'pass-model', messages: [{ role: 'user', content: 'hi' }] });
      const host = new URL(g.url).host;
      for (const [heads, query] of [
        [['authorization: Bearer sk-own-000', `authorization: Bearer ${tok}`], ''],
        [['x-api-key: sk-own-000', `x-api-key: ${tok}`], ''],
        [[], `?key=AIza-own-000&key=${tok}`],
      ]) {
        await mock.clear();
        const raw = await rawRequest(g.url, `POST /v1/chat/completions${query} HTTP/1.1\r\nHost: ${host}\r\n` +
          `${heads.map((h) => `${h}\r\n`).join('')}content-type: application/json\r\ncontent-length: ${body.length}\r\n` +
          `connection: close\r\n\r\n${body}`);
        assert.match(raw, /^HTTP\/1\.1 200/, raw);
        const seen = JSON.stringify(await mock.last());
        assert.ok(!seen.includes(tok), `the workload token must not reach a passthrough provider (${heads[1] || query})`);
      }
      // with oidc first, the token in the second copy is the one checked
      const o = await startGateway({
        identity: { order: ['oidc', 'cidr'], cidr: [{ range: '127.0.0.0/8', login: 'lan@example.com' }],
          oidc: { issuers: [{ issuer: K8S, jwks_file: join(dir, 'k8s.json'), audience: 'keyless', login: 'k8s:{sub}' }] },
          loopback: false },
        providers: providersFor(mock.url),
      });
      try {
        const raw = await rawRequest(o.url, `GET /api/whoami HTTP/1.1\r\nHost: ${new URL(o.url).host}\r\n` +
          `x-api-key: sk-own-000\r\nx-api-key: ${tok}\r\nconnection: close\r\n\r\n`);
        assert.match(raw, /"login":\s*"k8s:/, raw);
      } finally {
        await o.stop();
      }
    } finally {
      await g.stop();
    }
  });

  it('a workload token reaches no passthrough provider in any credential form, however malformed or large', async () => {
    // a source before oidc identified the caller; the token it sent as well is keyless's in any
    // scheme, query name or shape a provider (which could replay it here, or log it) reads
    const g = await startCidrFirst();
    try {
      const tok = k8s.sign(k8s.claims({ aud: 'keyless' }));
      const big = k8s.sign(k8s.claims({ aud: 'keyless', pad: 'x'.repeat(17 * 1024) }));
      const slashes = k8s.sign(k8s.claims({ aud: 'keyless' }), { rawPayload: JSON.stringify(k8s.claims({ aud: 'keyless' })).replaceAll('/', '\\/') });
      const body = JSON.stringify({ model: 'pass-model', messages: [{ role: 'user', content: 'hi' }] });
      const host = new URL(g.url).host;
      // each case sent as given; what the provider got, or why it got nothing
      const send = async ([heads, query]) => {
        await mock.clear();
        const raw = await rawRequest(g.url, `POST /v1/chat/completions${query} HTTP/1.1\r\nHost: ${host}\r\n` +
          `${heads.map((h) => `${h}\r\n`).join('')}content-type: application/json\r\ncontent-length: ${body.length}\r\n` +
          `connection: close\r\n\r\n${body}`);
        return /^HTTP\/1\.1 200/.test(raw) ? JSON.stringify(await mock.last()) : `refused: ${raw.slice(0, 200)}`;
      };
      const what = ([heads, query]) => `${(heads[0] || query).slice(0, 40)}…`;
      const leaked = [];
      for (const c of [
        [[`authorization: ${tok}`], '', tok], [[`authorization: Token ${tok}`], '', tok],
        [[`x-api-key: Bearer ${tok}`], '', tok], [[], `?access_token=${tok}`, tok], [[], `?oauth_token=${tok}`, tok],
        [[], `?%6Bey=${tok}`, tok], [[], `?KEY=${tok}`, tok], [[], `?%24key=${tok}`, tok],
        [[`authorization: Bearer ${big}`], '', big], [[], `?key=${big}`, big],
        [[`authorization: Bearer ${tok}=`], '', tok], [[`api-key: ${tok}.`], '', tok],
        [[`authorization: Bearer ${tok}.AAAA`], '', tok], [[`authorization: Bearer ${slashes}.`], '', slashes],
      ]) {
        const seen = await send(c);
        if (seen.includes(c[2].split('.')[1].slice(0, 200)) || !seen.includes('sk-pass-provider-000')) leaked.push(what(c));
      }
      assert.deepEqual(leaked, [], 'the workload token must not reach a passthrough provider; its key is sent instead');
      // the caller's own credentials that merely look odd still go on: another scheme, a key
      // that begins like a JWT, a foreign issuer's JWT however large or malformed
      const entra = makeIssuer({ alg: 'RS256', iss: 'https://login.microsoftonline.com/0000-tenant/v2.0' });
      const az = entra.sign(entra.claims({ aud: 'https://cognitiveservices.azure.com' }));
      const azBig = entra.sign(entra.claims({ aud: 'https://cognitiveservices.azure.com', pad: 'x'.repeat(17 * 1024) }));
      const kept = [];
      for (const c of [
        [['authorization: Token sk-own-000'], '', 'sk-own-000'], [['authorization: eyJown-key-000'], '', 'eyJown-key-000'],
        [[`authorization: ${az}`], '', az], [[`api-key: ${az}.`], '', az], [[], `?access_token=${az}`, az],
        [[`authorization: Bearer ${azBig}`], '', azBig],
      ]) {
        const seen = await send(c);
        if (!seen.includes(c[2]) || seen.includes('sk-pass-provider-000')) kept.push(what(c));
      }
      assert.deepEqual(kept, [], "the caller's own credential goes on, without keyless's key beside it");
    } finally {
      await g.stop();
    }
  });

  it('a workload token reaches no passthrough provider in quotes, after other bytes or in Basic credentials', async () => {
    // a provider (or whoever reads its logs) takes the token out of whatever surrounds it: quotes a
    // script added, "Bearer=", a user:password Basic pair; the caller's own credentials still go on
    const g = await startCidrFirst();
    try {
      const tok = k8s.sign(k8s.claims({ aud: 'keyless' }));
      const body = JSON.stringify({ model: 'pass-model', messages: [{ role: 'user', content: 'hi' }] });
      const host = new URL(g.url).host;
      const send = async (heads, query = '') => {
        await mock.clear();
        const raw = await rawRequest(g.url, `POST /v1/chat/completions${query} HTTP/1.1\r\nHost: ${host}\r\n` +
          `${heads.map((h) => `${h}\r\n`).join('')}content-type: application/json\r\ncontent-length: ${body.length}\r\n` +
          `connection: close\r\n\r\n${body}`);
        return /^HTTP\/1\.1 200/.test(raw) ? JSON.stringify(await mock.last()) : `refused: ${raw.slice(0, 200)}`;
      };
      const b64 = (s) => Buffer.from(s).toString('base64');
      const leaked = [];
      for (const [heads, query] of [
        [[`authorization: Bearer "${tok}"`]], [[`authorization: Bearer '${tok}'`]], [[`authorization: Bearer <${tok}>`]],
        [[`authorization: Bearer=${tok}`]], [[`x-api-key: key:${tok}`]], [[`authorization: Bearer x;${tok}`]],
        [[`authorization: Basic ${b64(`user:${tok}`)}`]], [[`authorization: Basic ${b64(`:${tok}`).replace(/=+$/, '')}`]],
        [[], `?key=%22${tok}%22`], [[], `?access_token=${b64(`x:${tok}`)}`],
      ]) {
        const seen = await send(heads, query);
        if (!seen.includes('sk-pass-provider-000')) leaked.push(`${(heads[0] || query).slice(0, 40)}…`);
      }
      assert.deepEqual(leaked, [], 'the workload token must not reach a passthrough provider; its key is sent instead');
      // a foreign issuer's JWT that names ours (an audience), quoted or in Basic; provider keys of every shape
      const entra = makeIssuer({ alg: 'RS256', iss: 'https://login.microsoftonline.com/0000-tenant/v2.0' });
      const az = entra.sign(entra.claims({ aud: K8S, note: K8S }));
      const kept = [];
      for (const own of [`Bearer "${az}"`, `Basic ${b64(`user:${az}`)}`, 'Bearer sk-proj-Ab12_cd-34.efGH',
        'Bearer sk-ant-api03-AAAA_bbbb-CCCC', 'Bearer AIzaSyA-000000000000000000000000000000',
        '0123456789abcdef0123456789abcdef', `Basic ${b64('user:sk-own-000')}`,
        'AWS4-HMAC-SHA256 Credential=AKIA0000/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00ff']) {
        const seen = await send([`authorization: ${own}`]);
        if (!seen.includes(JSON.stringify(own).slice(1, -1)) || seen.includes('sk-pass-provider-000')) kept.push(own.slice(0, 40));
      }
      assert.deepEqual(kept, [], "the caller's own credential goes on, without keyless's key beside it");
    } finally {
      await g.stop();
    }
  });

  it("a token in Gemini's ?key= identifies the caller, and reaches no passthrough provider", async () => {
    // LiteLLM and Google's REST examples send the Gemini key as ?key=
    const tok = gh.sign(gh.claims({ aud: 'keyless', repository: 'acme/app', ref: 'refs/heads/main', repository_owner: 'acme' }));
    const body = JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] });
    for (const headers of [{}, { 'x-goog-api-key': tok }]) {
      await mock.clear();
      const r = await fetch(`${gw.url}/v1beta/models/gpass-model:generateContent?alt=json&key=${tok}`, {
        method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body,
      });
      assert.equal(r.status, 200, await r.text());
      const seen = await mock.last();
      assert.ok(!JSON.stringify(seen).includes(tok), `the workload token must not reach the provider: ${seen.path}`);
      assert.equal(seen.path, '/v1beta/models/gpass-model:generateContent?alt=json');
      assert.ok(JSON.stringify(seen.headers).includes('AIza-gpass-provider-000'), 'the provider key is sent instead');
    }
    // an invalid token there is refused, not skipped for the next source
    const r = await fetch(`${gw.url}/v1beta/models/gpass-model:generateContent?key=${tok.slice(0, -4)}AAAA`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body,
    });
    assert.equal(r.status, 401);
    assert.match((await r.json()).error.message, /invalid workload token: bad signature/);
  });

  it('a login differing only in case is another login: no grant of the first', async () => {
    const claims = (ns) => k8s.claims({ aud: 'keyless', 'kubernetes.io': { namespace: ns, serviceaccount: { name: 'billing-bot' } } });
    const ok = await whoami(k8s.sign(claims('payments')));
    assert.equal(ok.body.role, 'user');
    const other = await whoami(k8s.sign(claims('Payments')));
    assert.equal(other.body.login, 'k8s:Payments/billing-bot');
    assert.equal(other.body.role, 'none', JSON.stringify(other.body));
  });

  it('a login built from claims cannot pass for other fields of the access log line', async () => {
    const ns = 'ns model=gpt-4o provider=openai in=1 out=1 0.1ms\u2028';
    const w = await whoami(k8s.sign(k8s.claims({ aud: 'keyless', 'kubernetes.io': { namespace: ns,
      serviceaccount: { name: 'sa "x' } } })));
    assert.equal(w.body.login, `k8s:${ns}/sa "x`, 'the login itself is what the claims say');
    let line;
    for (let i = 0; i < 50 && !line; i++) {
      line = gw.output().split('\n').find((l) => l.includes('"GET /api/whoami"') && l.includes('login=k8s:ns'));
      if (!line) await sleep(20);
    }
    assert.ok(line, gw.output().slice(-2000));
    assert.match(line, /login=k8s:ns%20model=gpt-4o%20provider=openai%20in=1%20out=1%200\.1ms%E2%80%A8\/sa%20%22x model=- /);
  });

  it('a valid ES256 Kubernetes token is accepted', async () => {
    const tok = k8s.sign(k8s.claims({
      aud: ['keyless', 'https://kubernetes.default.svc'],
      sub: 'system:serviceaccount:payments:billing-bot',
      'kubernetes.io': { namespace: 'payments', serviceaccount: { name: 'billing-bot', uid: 'u-1' } },
    }));
    const w = await whoami(tok);
    assert.equal(w.status, 200, JSON.stringify(w.body));
    assert.equal(w.body.login, 'k8s:payments/billing-bot');
    const r = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [] }),
    });
    assert.equal(r.status, 200);
  });

  it('every forged, expired or misdirected token is refused with a clear 401', async () => {
    const cases = [...attackTokens(gh, { aud: 'keyless', other: k8s, maxLifetime: 3600 }),
      ...attackTokens(k8s, { aud: 'keyless', other: gh, maxLifetime: 3600 })];
    for (const a of cases) {
      const w = await whoami(a.token);
      assert.equal(w.status, 401, `${a.name}: ${JSON.stringify(w.body)}`);
      // tokens that are not JWT-shaped at all fall through to "could not identify", as does one of an
      // issuer not configured (no workload token: a provider's own credential)
      const msg = w.body.error.message;
      if (a.name === 'wrong iss') assert.match(msg, /could not identify the caller/);
      assert.ok(msg.includes(a.reason) || /could not identify the caller/.test(msg), `${a.name}: ${msg}`);
      assert.ok(!msg.includes(a.token.slice(0, 40)), 'the token must not be echoed');
    }
  });

  it('a token from an issuer that is not configured identifies nobody', async () => {
    // no other source knows this caller (loopback: false): refused as unidentified
    const evil = makeIssuer({ alg: 'RS256', iss: 'https://evil.example' });
    const w = await whoami(evil.sign(evil.claims({ aud: 'keyless' })));
    assert.equal(w.status, 401);
    assert.match(w.body.error.message, /could not identify the caller/);
  });

  it("a provider's own JWT (Entra ID, Google ID token) is no workload token: the caller is who the network says", async () => {
    const mine = join(dir, 'mine.json');
    writeJwks(mine, k8s, gh);
    const g = await startGateway({
      identity: { oidc: { issuers: [{ issuer: K8S, jwks_file: mine, audience: 'keyless', max_lifetime: '1h',
        algorithms: ['ES256'], login: 'k8s:{sub}' }] }, loopback: true },
      grants: [{ src: ['(loopback)', 'k8s:workload'], app: { 'tailscale.com/cap/aperture': [{ role: 'user' }, { models: '**' }] } }],
      providers: providersFor(mock.url, {
        azure: { baseurl: mock.url, apikey: 'sk-azure-provider-000', auth_mode: 'passthrough', models: ['azure-model'],
                 compatibility: { openai_chat: true } },
      }),
    });
    try {
      const who = async (headers) => {
        const r = await fetch(`${g.url}/api/whoami`, { headers });
        return { status: r.status, body: await r.json() };
      };
      const entra = makeIssuer({ alg: 'RS256', iss: 'https://login.microsoftonline.com/0000-tenant/v2.0' });
      const google = makeIssuer({ alg: 'RS256', iss: 'https://accounts.google.com' });
      const az = entra.sign(entra.claims({ aud: 'https://cognitiveservices.azure.com' }));
      const gid = google.sign(google.claims({ aud: 'keyless' }));
      // a prefix of the configured issuer's name, or one that extends it, is another issuer
      const longer = makeIssuer({ alg: 'ES256', iss: `${K8S}.evil` });
      const shorter = makeIssuer({ alg: 'ES256', iss: 'https://kubernetes.default.svc' });
      for (const headers of [{ authorization: `Bearer ${az}` }, { 'api-key': az }, { 'x-goog-api-key': gid },
        { authorization: `Bearer ${longer.sign(longer.claims({ aud: 'keyless' }))}` },
        { authorization: `Bearer ${shorter.sign(shorter.claims({ aud: 'keyless' }))}` }]) {
        const w = await who(headers);
        assert.equal(w.status, 200, `${Object.keys(headers)}: ${JSON.stringify(w.body)}`);
        assert.equal(w.body.login, '(loopback)');
        assert.equal(w.body.source, 'loopback');
      }
      // with passthrough it goes to the provider as the caller's own credential; the record
      // says how the caller was identified
      await mock.clear();
      const r = await fetch(`${g.url}/v1/chat/completions`, {
        method: 'POST', headers: { authorization: `Bearer ${az}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'azure-model', messages: [{ role: 'user', content: 'hi' }] }),
      });
      assert.equal(r.status, 200, await r.text());
      const seen = JSON.stringify((await mock.last()).headers);
      assert.ok(seen.includes(az), 'the caller\'s own token goes to a passthrough provider');
      assert.ok(!seen.includes('sk-azure-provider-000'), 'keyless\'s key does not go beside it');
      const rec = await finalRecord(g, r.headers.get('x-keyless-request-id'));
      assert.equal(rec.login, '(loopback)');
      assert.equal(rec.identity_source, 'loopback');
      // an override provider gets keyless's key, never the caller's token
      await mock.clear();
      const o = await fetch(`${g.url}/v1/chat/completions`, {
        method: 'POST', headers: { authorization: `Bearer ${az}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
      });
      assert.equal(o.status, 200, await o.text());
      assert.ok(!JSON.stringify(await mock.last()).includes(az));
      // a token of the configured issuer is still checked, and refused when invalid, with the reason as before
      for (const a of attackTokens(k8s, { aud: 'keyless', other: gh, maxLifetime: 3600 })) {
        const w = await who({ authorization: `Bearer ${a.token}` });
        if (a.name === 'wrong iss' || !a.token.startsWith('eyJ')) { // ${K8S}.evil: another issuer; no JWT at all
          assert.equal(w.body.source, 'loopback', a.name);
          continue;
        }
        assert.equal(w.status, 401, `${a.name}: ${JSON.stringify(w.body)}`);
        assert.ok(w.body.error.message.includes(`invalid workload token: ${a.reason}`), `${a.name}: ${w.body.error.message}`);
      }
      // one that names the configured issuer but for case or a trailing '/' was meant for keyless: refused
      for (const iss of [`${K8S}/`, K8S.toUpperCase(), `${K8S.replace('https', 'HTTPS')}//`]) {
        const w = await who({ authorization: `Bearer ${k8s.sign(k8s.claims({ aud: 'keyless', iss }))}` });
        assert.equal(w.status, 401, `${iss}: ${JSON.stringify(w.body)}`);
        assert.match(w.body.error.message, /invalid workload token: issuer is not trusted/, iss);
      }
      // a foreign token beside the workload's: the workload's is the one checked, wherever it is
      const good = k8s.sign(k8s.claims({ aud: 'keyless' }));
      let w = await who({ authorization: `Bearer ${az}`, 'x-api-key': good });
      assert.equal(w.status, 200, JSON.stringify(w.body));
      assert.equal(w.body.source, 'oidc');
      assert.equal(w.body.login, 'k8s:workload');
      w = await who({ authorization: `Bearer ${az}`, 'x-api-key': `${good.slice(0, -4)}AAAA` });
      assert.equal(w.status, 401);
      assert.match(w.body.error.message, /invalid workload token: bad signature/);
      w = await (await fetch(`${g.url}/api/whoami?key=${good.slice(0, -4)}AAAA`, { headers: { 'api-key': az } }));
      assert.equal(w.status, 401);
      // a token too malformed to name its issuer is refused as before
      w = await who({ authorization: 'Bearer eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln' });
      assert.equal(w.status, 401);
      assert.match(w.body.error.message, /invalid workload token: malformed token/);
    } finally {
      await g.stop();
    }
  });

  it('a token presented in any shape is checked and refused when invalid, never skipped for the next source', async () => {
    // skipped, it fell through to loopback or a CIDR login, which may carry more grants than the token
    const g = await startGateway({
      identity: { oidc: { issuers: [{ issuer: K8S, jwks_file: join(dir, 'k8s.json'), audience: 'keyless',
        login: 'k8s:{sub}' }] }, loopback: true },
      providers: providersFor(mock.url),
    });
    try {
      const spaced = k8s.sign(k8s.claims({ aud: 'keyless' }), { rawHeader: ` {"alg":"ES256","kid":"${k8s.kid}"}` });
      assert.doesNotMatch(spaced, /^eyJ/);
      const good = k8s.sign(k8s.claims({ aud: 'keyless' }));
      // a valid token whose header begins with white space is the workload's, not loopback's
      const s = await (await fetch(`${g.url}/api/whoami`, { headers: { authorization: `Bearer ${spaced}` } })).json();
      assert.equal(s.source, 'oidc');
      assert.equal(s.login, 'k8s:workload');
      for (const [name, auth] of [['spaced, its signature spoilt', `Bearer ${spaced.slice(0, -4)}AAAA`],
        ['a tab after Bearer', `Bearer\t${good.slice(0, -4)}AAAA`], ['cut short', `Bearer ${good.split('.')[0]}`]]) {
        const r = await fetch(`${g.url}/api/whoami`, { headers: { authorization: auth } });
        const body = await r.json();
        assert.equal(r.status, 401, `${name}: ${JSON.stringify(body)}`);
        assert.match(body.error.message, /invalid workload token/, name);
      }
      // a placeholder key (no dots) is still no token: that caller is loopback
      const w = await (await fetch(`${g.url}/api/whoami`, { headers: { authorization: 'Bearer sk-placeholder' } })).json();
      assert.equal(w.login, '(loopback)');
      // nor is a Google service account's access token (three segments, no JSON header), which a
      // caller sends to Vertex (its own project with passthrough; Claude Code, google-genai)
      const ya29 = `ya29.c.c0ASRK0G${randomBytes(300).toString('base64url')}`;
      for (const headers of [{ authorization: `Bearer ${ya29}` }, { 'x-goog-api-key': ya29 }]) {
        const r = await fetch(`${g.url}/api/whoami`, { headers });
        const body = await r.json();
        assert.equal(r.status, 200, JSON.stringify(body));
        assert.equal(body.login, '(loopback)');
      }
    } finally {
      await g.stop();
    }
  });

  it('keyless check: algorithms that no token carries, an empty list, or an empty audience are errors', () => {
    const f = join(dir, 'algs.hujson');
    const check = (extra) => {
      writeFileSync(f, JSON.stringify({ identity: { oidc: { issuers: [{ issuer: K8S, jwks_file: join(dir, 'k8s.json'),
        audience: 'keyless', login: 'k8s:{sub}', claims: { sub: 'x' }, ...extra }] } } }));
      return spawnSync(join(BUILD, 'keyless'), ['check', '--config', f], { encoding: 'utf8' });
    };
    for (const [extra, msg] of [[{ algorithms: ['es256'] }, /algorithm "es256" is not one keyless verifies/],
      [{ algorithms: ['RS265'] }, /algorithm "RS265" is not one keyless verifies/],
      [{ algorithms: [] }, /algorithms is empty: no token could be verified/],
      [{ audience: '' }, /none of them empty/], [{ login: '' }, /none of them empty/],
      [{ max_lifetime: '0s' }, /max_lifetime must be at least "1s"/]]) {
      const r = check(extra);
      assert.equal(r.status, 1, `${JSON.stringify(extra)}: ${r.stderr}`);
      assert.match(r.stderr, msg);
    }
    assert.equal(check({ algorithms: ['ES256', 'EdDSA'] }).status, 0);
    // two clusters whose logins can be the same: a namespace in one would be the other's
    writeFileSync(f, JSON.stringify({ identity: { oidc: { issuers: [
      { issuer: K8S, jwks_file: join(dir, 'k8s.json'), audience: 'keyless', login: 'k8s:{kubernetes.io/namespace}' },
      { issuer: 'https://dev.k8s.example', jwks_file: join(dir, 'k8s.json'), audience: 'keyless',
        login: 'k8s:{kubernetes.io/namespace}' }] } } }));
    let r = spawnSync(join(BUILD, 'keyless'), ['check', '--config', f], { encoding: 'utf8' });
    assert.match(r.stderr, /warning: OIDC issuers \S+ and https:\/\/dev\.k8s\.example may give one login to workloads of both/);
    writeFileSync(f, readFileSync(f, 'utf8').replace('"login":"k8s:{kubernetes.io/namespace}"}]', '"login":"k8s-dev:{kubernetes.io/namespace}"}]'));
    r = spawnSync(join(BUILD, 'keyless'), ['check', '--config', f], { encoding: 'utf8' });
    assert.doesNotMatch(r.stderr, /may give one login/, r.stderr);
    // two clusters that both keep kubeadm's default issuer name: one name, two key sets, two authorities
    writeFileSync(f, JSON.stringify({ identity: { oidc: { issuers: [
      { issuer: K8S, jwks_file: join(dir, 'k8s.json'), audience: 'keyless', login: 'k8s:{kubernetes.io/namespace}' },
      { issuer: K8S, jwks_file: join(dir, 'gh.json'), audience: 'keyless', login: 'k8s:{kubernetes.io/namespace}' }] } } }));
    r = spawnSync(join(BUILD, 'keyless'), ['check', '--config', f], { encoding: 'utf8' });
    assert.match(r.stderr, /may give one login to workloads of both/, r.stderr);
    assert.match(r.stderr, /one name, two key sets/);
    // one issuer and one key set mapped twice (the partner entries above) is one authority
    writeFileSync(f, readFileSync(f, 'utf8').replace(join(dir, 'gh.json'), join(dir, 'k8s.json')));
    r = spawnSync(join(BUILD, 'keyless'), ['check', '--config', f], { encoding: 'utf8' });
    assert.doesNotMatch(r.stderr, /may give one login/, r.stderr);
  });

  it('a placeholder API key is not a token: the caller is just unidentified', async () => {
    const w = await whoami('sk-placeholder');
    assert.equal(w.status, 401);
    assert.match(w.body.error.message, /could not identify the caller/);
  });

  it('JWKS files are re-read when they change (key rotation)', async () => {
    const rotated = makeIssuer({ alg: 'ES256', iss: K8S });
    const claims = rotated.claims({ aud: 'keyless', 'kubernetes.io': { namespace: 'payments', serviceaccount: { name: 'billing-bot' } } });
    const tok = rotated.sign(claims);
    assert.equal((await whoami(tok)).status, 401);
    writeJwks(join(dir, 'k8s.json'), k8s, gh, rotated);
    let status = 0;
    for (let i = 0; i < 50 && status !== 200; i++) {
      await sleep(100);
      status = (await whoami(tok)).status;
    }
    assert.equal(status, 200, 'the rotated key was not picked up');
    assert.match(gw.output(), /reloaded 3 key\(s\)/);
  });

  it('a JWKS rewritten in place with the same size and modification time is re-read', async () => {
    // a deploy tool that keeps modification times (rsync -t, cp -p, tar) writes the new key over the old
    const file = join(dir, 'inplace.json'), ref = join(dir, 'inplace.ref');
    const before = makeIssuer({ alg: 'ES256', iss: K8S, kid: 'rot' }), after = makeIssuer({ alg: 'ES256', iss: K8S, kid: 'rot' });
    writeJwks(file, before);
    spawnSync('cp', ['-p', file, ref]);
    await sleep(3100); // written well before the gateway reads it
    const g = await startGateway({
      identity: { oidc: { issuers: [{ issuer: K8S, jwks_file: file, audience: 'keyless', algorithms: ['ES256'],
        login: 'k8s:{sub}' }] }, loopback: false },
      providers: providersFor(mock.url),
    });
    try {
      const status = async (iss) => (await fetch(`${g.url}/api/whoami`, {
        headers: { authorization: `Bearer ${iss.sign(iss.claims({ aud: 'keyless' }))}` } })).status;
      assert.equal(await status(before), 200);
      assert.equal(await status(after), 401);
      await sleep(2500);
      const size = statSync(file).size;
      writeJwks(file, after);
      assert.equal(spawnSync('touch', ['-r', ref, file]).status, 0);
      assert.equal(statSync(file).size, size, 'the same size');
      assert.equal(statSync(file, { bigint: true }).mtimeNs, statSync(ref, { bigint: true }).mtimeNs, 'the same mtime');
      const s = await statusBecomes(() => status(after), 200, 60);
      assert.equal(s, 200, 'the new key was not picked up');
      assert.equal(await status(before), 401, 'the old key is gone');
    } finally {
      await g.stop();
    }
  });

  it('a JWKS that could not be opened when it changed (no descriptor left) is read once it can be', async () => {
    const file = join(dir, 'emfile.json');
    const before = makeIssuer({ alg: 'ES256', iss: K8S, kid: 'old' }), after = makeIssuer({ alg: 'ES256', iss: K8S, kid: 'new' });
    writeJwks(file, before);
    const g = await startGateway({
      identity: { oidc: { issuers: [{ issuer: K8S, jwks_file: file, audience: 'keyless', algorithms: ['ES256'],
        login: 'k8s:{sub}' }] }, loopback: false },
      providers: providersFor(mock.url),
    });
    const status = async (iss) => (await fetch(`${g.url}/api/whoami`, {
      headers: { authorization: `Bearer ${iss.sign(iss.claims({ aud: 'keyless' }))}` } })).status;
    // the soft limit only: the hard one, once lowered, cannot be raised again without privilege
    const nofile = (n) => assert.equal(spawnSync('prlimit', [`--pid=${g.proc.pid}`, `--nofile=${n}:`]).status, 0);
    const soft = spawnSync('prlimit', [`--pid=${g.proc.pid}`, '--nofile', '--raw', '--noheadings', '-o', 'SOFT'],
      { encoding: 'utf8' }).stdout.trim();
    try {
      assert.equal(await status(before), 200);
      // the key is rotated while keyless has no descriptor to spare (a connection flood), for longer than a few seconds
      nofile(4);
      writeJwks(file, after);
      await sleep(7500);
      nofile(soft);
      const s = await statusBecomes(() => status(after), 200, 40);
      assert.equal(s, 200, 'the rotated key was never read');
      assert.equal(await status(before), 401, 'the key rotated out is still accepted');
      assert.match(g.output(), /keeping the previous keys: cannot open .*emfile\.json/);
    } finally {
      await g.stop();
    }
  });

  it('a JWKS emptied of keys revokes them; an unreadable one keeps them', async () => {
    const claims = k8s.claims({ aud: 'keyless', 'kubernetes.io': { namespace: 'payments', serviceaccount: { name: 'billing-bot' } } });
    const tok = k8s.sign(claims);
    assert.equal((await whoami(tok)).status, 200);
    const { writeFileSync } = await import('node:fs');
    const poll = async (want) => {
      let status = 0;
      for (let i = 0; i < 50 && status !== want; i++) {
        await sleep(100);
        status = (await whoami(tok)).status;
      }
      return status;
    };
    writeFileSync(join(dir, 'k8s.json'), '{"keys": ['); // half written: the keys stay
    await sleep(2500);
    assert.equal((await whoami(tok)).status, 200);
    // a member named twice is read two ways (the last "keys" empty): broken too, not a revocation
    writeJwks(join(dir, 'k8s.json'), k8s, gh);
    const whole = readFileSync(join(dir, 'k8s.json'), 'utf8').trim();
    writeFileSync(join(dir, 'k8s.json'), `${whole.slice(0, -1)}, "keys": []}`);
    await sleep(2500);
    assert.equal((await whoami(tok)).status, 200);
    assert.match(gw.output(), /duplicate object key/);
    writeFileSync(join(dir, 'k8s.json'), '{"keys": []}');
    assert.equal(await poll(401), 401, 'an empty key set must revoke');
    writeJwks(join(dir, 'k8s.json'), k8s, gh);
    assert.equal(await poll(200), 200, 'keys that come back are used again');
    // any whole JSON document without a usable key revokes: {}, a lone JWK
    writeFileSync(join(dir, 'k8s.json'), '{}');
    assert.equal(await poll(401), 401, '{} must revoke');
    writeJwks(join(dir, 'k8s.json'), k8s, gh);
    assert.equal(await poll(200), 200);
    writeFileSync(join(dir, 'k8s.json'), JSON.stringify(JSON.parse(readFileSync(join(dir, 'gh.json'), 'utf8')).keys[0]));
    assert.equal(await poll(401), 401, 'a lone JWK must revoke');
    // a revoked issuer is a state to start or reload in, not an error that keeps everyone out
    const check = spawnSync(join(BUILD, 'keyless'), ['check', '--config', gw.configPath], { encoding: 'utf8' });
    assert.equal(check.status, 0, check.stdout + check.stderr);
    assert.match(check.stdout + check.stderr, /its tokens are refused until .*k8s\.json holds a usable key/);
    assert.match(await gw.reload(), /SIGHUP: configuration reloaded/);
    assert.equal((await whoami(tok)).status, 401);
    writeJwks(join(dir, 'k8s.json'), k8s, gh);
    assert.equal(await poll(200), 200);
  });
});
