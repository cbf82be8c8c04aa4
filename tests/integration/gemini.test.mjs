// The official @google/genai SDK through keyless to the simulator.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { GoogleGenAI } from '@google/genai';
import { startMock, startGateway, providersFor, KEYS, assertNoKeys, headerMap } from './lib/harness.mjs';

describe('Gemini dialect', () => {
  let mock, gw, ai;
  before(async () => {
    mock = await startMock();
    gw = await startGateway({ providers: providersFor(mock.url) });
    ai = new GoogleGenAI({ apiKey: 'caller-placeholder-key', httpOptions: { baseUrl: gw.url } });
  });
  after(async () => {
    await gw.stop();
    await mock.stop();
    assertNoKeys(assert, gw.output(), 'gateway log');
  });

  it('generateContent: x-goog-api-key injected', async () => {
    await mock.clear();
    const r = await ai.models.generateContent({ model: 'gemini-2.5-flash', contents: 'hi' });
    assert.equal(r.text, 'Hello from mockllm.');
    const seen = await mock.last();
    const h = headerMap(seen.headers);
    assert.equal(h['x-goog-api-key'], KEYS.gemini);
    assert.ok(!JSON.stringify(seen).includes('caller-placeholder-key'));
    assert.equal(seen.path, '/v1beta/models/gemini-2.5-flash:generateContent');
  });

  it('a model qualified with its provider ("gemini/gemini-2.5-flash") is served; the provider sees the bare name', async () => {
    await mock.clear();
    const r = await ai.models.generateContent({ model: 'gemini/gemini-2.5-flash', contents: 'hi' });
    assert.equal(r.text, 'Hello from mockllm.');
    assert.equal((await mock.last()).path, '/v1beta/models/gemini-2.5-flash:generateContent');
    // another provider's prefix, or an empty segment, is no model at all
    for (const model of ['openai/gemini-2.5-flash', 'gemini//gemini-2.5-flash']) {
      await assert.rejects(ai.models.generateContent({ model, contents: 'hi' }), (e) => /404|not found|does not exist/i.test(e.message), model);
    }
  });

  it('generateContentStream (alt=sse)', async () => {
    await mock.clear();
    const s = await ai.models.generateContentStream({ model: 'gemini-2.5-pro', contents: 'hi' });
    let text = '';
    let n = 0;
    for await (const c of s) {
      text += c.text ?? '';
      n++;
    }
    assert.equal(text, 'Hello from mockllm.');
    assert.ok(n >= 2);
    assert.match((await mock.last()).path, /:streamGenerateContent\?alt=sse$/);
  });

  it('streamGenerateContent without alt=sse streams a JSON array', async () => {
    const r = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?key=caller-placeholder-key`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
    });
    assert.equal(r.status, 200);
    const arr = JSON.parse(await r.text());
    assert.ok(Array.isArray(arr) && arr.length >= 2);
    const text = arr.map((c) => c.candidates?.[0]?.content?.parts?.map((p) => p.text).join('') ?? '').join('');
    assert.equal(text, 'Hello from mockllm.');
    const seen = await mock.last();
    assert.ok(!seen.path.includes('key='), 'the caller key parameter must not be forwarded');
  });

  it('Google\'s system parameters a caller may not set (credentials, who pays, a field mask hiding usage) are not forwarded', async () => {
    const q = '%24key=CALLERKEY&access_token=ya29.caller&oauth_token=o&userProject=victim&%24userProject=v2&' +
      'fields=candidates&%24fields=candidates&prettyPrint=false';
    const r = await fetch(`${gw.url}/v1beta/models/gemini-2.5-flash:generateContent?${q}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-goog-fieldmask': 'candidates' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
    });
    assert.equal(r.status, 200);
    assert.ok((await r.json()).usageMetadata);
    const seen = await mock.last();
    assert.match(seen.path, /:generateContent\?prettyPrint=false$/);
    assert.ok(seen.headers.length > 3 && !seen.headers.some(([h]) => h.toLowerCase() === 'x-goog-fieldmask'));
  });

  it('passthrough: a caller\'s own key in ?key= (LiteLLM\'s way) goes alone, keyless\'s is not sent beside it', async () => {
    const g = await startGateway({ providers: { gemini: { ...providersFor(mock.url).gemini, auth_mode: 'passthrough' } } });
    try {
      const send = (q, headers = {}) => fetch(`${g.url}/v1beta/models/gemini-2.5-flash:generateContent${q}`, {
        method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-user-project': 'callers', ...headers },
        body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
      });
      for (const q of ['?key=AIzaCallersOwn', '?alt=json&%24key=AIzaCallersOwn', '?access_token=ya29.callers-own']) {
        await mock.clear();
        assert.equal((await send(q)).status, 200);
        const seen = await mock.last();
        assert.ok(seen.path.endsWith(q), seen.path);
        const h = headerMap(seen.headers);
        assert.equal(h['x-goog-api-key'], undefined, `${q}: keyless's key went beside the caller's own`);
        assert.equal(h['x-goog-user-project'], 'callers', 'who pays goes with the caller\'s own key');
      }
      // who pays alone is no credential: keyless's key goes, and that parameter does not
      await mock.clear();
      assert.equal((await send('?userProject=callers&prettyPrint=false')).status, 200);
      const seen = await mock.last();
      assert.match(seen.path, /:generateContent\?prettyPrint=false$/);
      assert.equal(headerMap(seen.headers)['x-goog-api-key'], KEYS.gemini);
      assert.equal(headerMap(seen.headers)['x-goog-user-project'], undefined);
    } finally {
      await g.stop();
    }
  });

  it('a "model" in the body, which Google\'s request message also has, is refused: keyless grants and prices the path\'s', async () => {
    const CAP = 'tailscale.com/cap/aperture';
    const g = await startGateway({ providers: providersFor(mock.url),
      grants: [{ src: ['*'], app: { [CAP]: [{ role: 'user' }, { models: 'gemini/gemini-2.5-flash' }] } }] });
    try {
      await mock.clear();
      const post = (body) => fetch(`${g.url}/v1beta/models/gemini-2.5-flash:generateContent`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      for (const model of ['models/gemini-2.5-pro', 'gemini-2.5-flash']) {
        const r = await post({ model, contents: [{ role: 'user', parts: [{ text: 'hi' }] }] });
        assert.equal(r.status, 400, model);
        const e = (await r.json()).error;
        assert.equal(e.status, 'INVALID_ARGUMENT');
        assert.match(e.message, /"model" in the request body/);
      }
      assert.equal((await mock.requests()).length, 0, 'not forwarded');
      assert.equal((await post({ model: null, contents: [{ role: 'user', parts: [{ text: 'hi' }] }] })).status, 200);
    } finally {
      await g.stop();
    }
  });

  it('countTokens', async () => {
    const r = await ai.models.countTokens({ model: 'gemini-2.5-flash', contents: 'hi' });
    assert.equal(typeof r.totalTokens, 'number');
  });

  it('model list in Gemini shape', async () => {
    const r = await fetch(`${gw.url}/v1beta/models`);
    const j = await r.json();
    assert.ok(j.models.some((m) => m.name === 'models/gemini-2.5-flash'));
  });

  it('model list paged as the SDK asks: pageSize and nextPageToken', async () => {
    const all = (await (await fetch(`${gw.url}/v1beta/models`)).json()).models.map((m) => m.name);
    assert.ok(all.length >= 2, JSON.stringify(all));
    const first = await (await fetch(`${gw.url}/v1beta/models?pageSize=1`)).json();
    assert.deepEqual(first.models.map((m) => m.name), [all[0]]);
    assert.equal(typeof first.nextPageToken, 'string');
    // the SDK's pager follows the tokens to the end, each model once
    const paged = [];
    for await (const m of await ai.models.list({ config: { pageSize: 1 } })) paged.push(m.name);
    assert.deepEqual(paged, all);
    const last = await (await fetch(`${gw.url}/v1beta/models?pageSize=${all.length}`)).json();
    assert.equal(last.models.length, all.length);
    assert.equal(last.nextPageToken, undefined, 'no token after the last page');
    for (const q of ['pageSize=0', 'pageSize=-1', 'pageSize=abc', 'pageToken=not-one-of-ours']) {
      const r = await fetch(`${gw.url}/v1beta/models?${q}`);
      assert.equal(r.status, 400, q);
      assert.equal((await r.json()).error.status, 'INVALID_ARGUMENT', q);
    }
  });

  it('the SDK with apiVersion v1 lists and looks up models in its own shape on the paths OpenAI shares', async () => {
    const v1 = new GoogleGenAI({ apiKey: 'caller-placeholder-key', apiVersion: 'v1', httpOptions: { baseUrl: gw.url } });
    const names = [];
    for await (const m of await v1.models.list()) names.push(m.name);
    assert.ok(names.includes('models/gemini-2.5-flash'), JSON.stringify(names));
    const one = await v1.models.get({ model: 'gemini-2.5-flash' });
    assert.equal(one.name, 'models/gemini-2.5-flash');
    // without the SDK's headers the path is OpenAI's
    const openai = await (await fetch(`${gw.url}/v1/models`)).json();
    assert.equal(openai.object, 'list');
  });
});
