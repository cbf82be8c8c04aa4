// Workload identity tokens for the integration tests: issuers with real
// keys, the JWKS files keyless reads, and tokens, good ones and every
// attack the verifier (src/identity/jwt.c) must refuse. node:crypto only.
//
//   const gh = makeIssuer({ alg: 'RS256', iss: 'https://token.actions.githubusercontent.com' });
//   const k8s = makeIssuer({ alg: 'ES256', iss: 'https://kubernetes.default.svc' });
//   writeJwks(join(dir, 'jwks.json'), gh, k8s);
//   const good = gh.sign(gh.claims({ aud: 'keyless', repository: 'acme/app' }));
//   const forged = gh.sign(claims, { alg: 'HS256-pubkey' });
//   for (const a of attackTokens(gh, { aud: 'keyless', other: k8s })) ... a.token, a.reason
import { constants, createHmac, generateKeyPairSync, randomBytes, sign as cryptoSign } from 'node:crypto';
import { writeFileSync } from 'node:fs';

export const b64url = (data) => Buffer.from(data).toString('base64url');
const part = (v) => b64url(typeof v === 'string' ? v : JSON.stringify(v));

export const nowSeconds = () => Math.floor(Date.now() / 1000);

// The key a JWS algorithm needs, as node:crypto generation arguments.
function keyParams(alg) {
  if (/^(RS|PS)(256|384|512)$/.test(alg)) return ['rsa', { modulusLength: 2048 }];
  if (alg === 'ES256') return ['ec', { namedCurve: 'P-256' }];
  if (alg === 'ES384') return ['ec', { namedCurve: 'P-384' }];
  if (alg === 'EdDSA') return ['ed25519', {}];
  throw new Error(`makeIssuer: unsupported alg ${alg}`);
}

// Sign the JWS signing input with a private key for alg. ECDSA signatures
// are JWS-style raw R||S unless der is set (an attack: keyless wants raw).
function signInput(alg, privateKey, input, { der = false } = {}) {
  const hash = `sha${alg.slice(2)}`;
  if (alg.startsWith('RS')) return cryptoSign(hash, input, privateKey);
  if (alg.startsWith('PS')) {
    return cryptoSign(hash, input, {
      key: privateKey,
      padding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength: constants.RSA_PSS_SALTLEN_DIGEST,
    });
  }
  if (alg.startsWith('ES')) return cryptoSign(hash, input, { key: privateKey, dsaEncoding: der ? 'der' : 'ieee-p1363' });
  if (alg === 'EdDSA') return cryptoSign(null, input, privateKey);
  throw new Error(`cannot sign ${alg}`);
}

// An issuer: one key pair, its JWKS, and sign(). Options:
//   alg      RS256 (default) | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384 | EdDSA
//   kid      key id (default random); null for a JWK without kid
//   iss      the issuer URL put in claims() (default https://issuer.test)
//   jwkAlg   include "alg" in the JWK (default true; JWKS keys without alg are valid)
//   use      the JWK's "use" (default 'sig'; null to leave it out)
export function makeIssuer({ alg = 'RS256', kid, iss = 'https://issuer.test', jwkAlg = true, use = 'sig' } = {}) {
  const [type, params] = keyParams(alg);
  const { publicKey, privateKey } = generateKeyPairSync(type, params);
  const keyId = kid === undefined ? `k-${randomBytes(6).toString('hex')}` : kid;
  const jwk = publicKey.export({ format: 'jwk' });
  if (keyId !== null) jwk.kid = keyId;
  if (use) jwk.use = use;
  if (jwkAlg) jwk.alg = alg;

  const issuer = {
    alg,
    kid: keyId,
    iss,
    jwk,
    publicKey,
    privateKey,
    jwks: { keys: [jwk] },

    // Standard claims: iss, aud, sub, iat/nbf = now, exp = now + ttl, plus extra.
    claims(extra = {}, { ttl = 300, now = nowSeconds() } = {}) {
      return { iss, sub: 'workload', iat: now, nbf: now, exp: now + ttl, ...extra };
    },

    // A compact JWS over claims. Options:
    //   header      fields merged over {alg, typ, kid}; a field set to undefined is removed
    //   alg         'none' (no signature) | 'HS256-pubkey' (HMAC keyed with our public key PEM)
    //               | any algorithm this key can sign (e.g. 'RS512' or 'PS256' for RSA)
    //   tamper      sign claims, then swap in a payload with sub and tampered changed
    //   der         ECDSA signature in DER instead of raw R||S
    //   signWith    another issuer whose private key signs (header still names ours)
    //   rawHeader   header JSON text used verbatim (duplicate keys, not JSON, ...)
    //   rawPayload  payload JSON text used verbatim
    //   signature   a fixed signature string (base64url) instead of signing
    sign(claimSet, opts = {}) {
      const mode = opts.alg ?? alg;
      const headerAlg = mode === 'HS256-pubkey' ? 'HS256' : mode;
      const header = { alg: headerAlg, typ: 'JWT', ...(keyId !== null ? { kid: keyId } : {}), ...(opts.header || {}) };
      for (const k of Object.keys(header)) if (header[k] === undefined) delete header[k];
      const h = part(opts.rawHeader ?? header);
      const p = part(opts.rawPayload ?? claimSet);
      const input = `${h}.${p}`;
      let sig;
      if (opts.signature !== undefined) sig = opts.signature;
      else if (mode === 'none') sig = '';
      else if (mode === 'HS256-pubkey') {
        const secret = publicKey.export({ type: 'spki', format: 'pem' });
        sig = b64url(createHmac('sha256', secret).update(input).digest());
      } else {
        const key = (opts.signWith || issuer).privateKey;
        sig = b64url(signInput(mode, key, input, { der: !!opts.der }));
      }
      if (opts.tamper) {
        const forged = { ...claimSet, sub: 'tampered', tampered: true };
        return `${h}.${part(forged)}.${sig}`;
      }
      return `${input}.${sig}`;
    },
  };
  return issuer;
}

// Write one JWKS holding every issuer's key; returns the document.
export function writeJwks(path, ...issuers) {
  const doc = { keys: issuers.flatMap((i) => i.jwks.keys) };
  writeFileSync(path, JSON.stringify(doc, null, 2));
  return doc;
}

// Every token keyless must refuse for this issuer, each with the reason
// kl_jwt_verify gives. The policy is assumed to be: this issuer's iss, the
// audience aud, algorithms [issuer.alg, other?.alg] (not RS512/PS256 unless
// you pass allowed), leeway at most leeway, lifetime at most maxLifetime.
//   other   a second issuer whose key is in the same JWKS, of another key
//           type: used for "kid points at a key of the wrong type"
export function attackTokens(issuer, { aud = 'keyless', other, now = nowSeconds(), leeway = 60, maxLifetime = 3600 } = {}) {
  const far = leeway + 600;
  const base = (extra = {}, ttl = 300) => issuer.claims({ aud, ...extra }, { ttl, now });
  const good = base();
  const t = (name, token, reason) => ({ name, token, reason });
  const list = [
    t('expired', issuer.sign(base({ iat: now - 2 * far, nbf: now - 2 * far, exp: now - far })), 'token expired'),
    t('not yet valid', issuer.sign(base({ nbf: now + far, iat: undefined })), 'token not yet valid'),
    t('iat in the future', issuer.sign(base({ iat: now + far, nbf: undefined, exp: now + far + 60 })), 'token issued in the future'),
    t('lifetime too long', issuer.sign(base({}, maxLifetime + far)), 'token lifetime too long'),
    t('wrong aud', issuer.sign(base({ aud: 'https://github.com/acme' })), 'audience mismatch'),
    t('wrong aud array', issuer.sign(base({ aud: ['a', `${aud}x`, aud.toUpperCase()] })), 'audience mismatch'),
    t('no aud', issuer.sign(base({ aud: undefined })), 'token has no aud'),
    t('wrong iss', issuer.sign(base({ iss: `${issuer.iss}.evil` })), 'issuer mismatch'),
    t('no exp', issuer.sign(base({ exp: undefined })), 'token has no exp'),
    t('unknown kid', issuer.sign(good, { header: { kid: 'no-such-key' } }), 'unknown key id'),
    t('tampered payload', issuer.sign(good, { tamper: true }), 'bad signature'),
    t('signed by another key', issuer.sign(good, { signWith: makeIssuer({ alg: issuer.alg }) }), 'bad signature'),
    t('alg none', issuer.sign(good, { alg: 'none' }), 'algorithm none not allowed'),
    t('alg none, no kid', issuer.sign(good, { alg: 'none', header: { kid: undefined } }), 'algorithm none not allowed'),
    t('HS256 keyed with the public key', issuer.sign(good, { alg: 'HS256-pubkey' }), 'algorithm HS256 not allowed for this issuer'),
    t('two parts', issuer.sign(good).split('.').slice(0, 2).join('.'), 'malformed token'),
    t('bad base64', issuer.sign(good).replace('.', '.*'), 'malformed token'),
    t('padded base64', `${issuer.sign(good)}=`, 'malformed token'),
    t('header not JSON', issuer.sign(good, { rawHeader: 'not json' }), 'malformed token'),
    t('duplicate alg in header', issuer.sign(good, { rawHeader: `{"alg":"${issuer.alg}","alg":"none","kid":"${issuer.kid}"}` }), 'malformed token'),
    t('oversized', issuer.sign(base({ pad: 'x'.repeat(17 * 1024) })), 'token too large'),
    t('crit header', issuer.sign(good, { header: { crit: ['b64'], b64: false } }), 'unsupported critical header'),
  ];
  if (issuer.alg.startsWith('RS') || issuer.alg.startsWith('PS')) {
    const off = issuer.alg === 'RS512' ? 'PS256' : 'RS512';
    list.push(t('alg not in allow-list', issuer.sign(good, { alg: off }), `algorithm ${off} not allowed`));
  } else {
    list.push(t('alg not in allow-list', issuer.sign(good, { alg: 'RS384', signature: 'c2lnbmF0dXJl' }), 'algorithm RS384 not allowed'));
  }
  if (issuer.alg.startsWith('ES')) {
    list.push(t('ECDSA signature in DER', issuer.sign(good, { der: true }), 'bad signature'));
  }
  if (other) {
    list.push(t(`${issuer.alg} header, kid of a ${other.alg} key`, issuer.sign(good, { header: { kid: other.kid } }),
      'key type does not match algorithm'));
  }
  return list;
}
