/* OIDC workload tokens: what is accepted, and every way a token must fail.
 * Keys are generated when the suite starts (libjose for RSA and EC, OpenSSL
 * for Ed25519); good tokens are signed with libjose, attack tokens are
 * assembled by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>
#include <jose/jose.h>
#include <jose/openssl.h>
#include <openssl/bio.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "identity/jwt.h"

#define NOW INT64_C(1700000000)
#define OMIT INT64_MIN
#define ISS "https://token.actions.githubusercontent.com"

struct fx {
    json_t *rsa, *rsa_b, *ec, *ec384;   /* private JWKs without "alg" */
    EVP_PKEY *ed;
    char *rsa_pem;                      /* the RSA public key, PEM, as an HMAC secret */
    size_t rsa_pem_len;
    kl_jwks *jwks;                      /* rsa1, ec1, ec384, ed1 (+ skipped keys) */
};

enum signer { S_RSA, S_RSA_B, S_EC, S_EC384, S_ED, S_NONE, S_JUNK, S_HMAC_PUB };

static const char *const ALGS[] = {"RS256", "ES256", "ES384", "EdDSA"};
static const struct kl_jwt_policy POLICY = {
    .issuer = ISS, .audience = "keyless", .algs = ALGS, .nalgs = 4,
    .leeway_s = 60, .max_lifetime_s = 3600,
};

/* ---- minting ----------------------------------------------------------- */

static char *b64(kl_arena *a, const void *in, size_t n)
{
    size_t el = jose_b64_enc_buf(in, n, NULL, 0);
    char *out = kl_arena_alloc(a, el + 1);
    assert_int_equal(jose_b64_enc_buf(in, n, out, el), el);
    return out;
}

static char *jose_signature(kl_arena *a, const json_t *key, const char *h64, const char *p64)
{
    json_t *jws = json_pack("{s:s}", "payload", p64);
    json_t *sig = json_pack("{s:s}", "protected", h64);
    assert_true(jose_jws_sig(NULL, jws, sig, key));
    char *out = kl_arena_strdup(a, json_string_value(json_object_get(jws, "signature")));
    json_decref(sig);
    json_decref(jws);
    return out;
}

static char *mint(kl_arena *a, const struct fx *f, const char *hdr, const char *payload, enum signer s)
{
    char *h64 = b64(a, hdr, strlen(hdr)), *p64 = b64(a, payload, strlen(payload));
    char *input = kl_arena_printf(a, "%s.%s", h64, p64);
    const char *sig = "";
    switch (s) {
    case S_RSA:   sig = jose_signature(a, f->rsa, h64, p64); break;
    case S_RSA_B: sig = jose_signature(a, f->rsa_b, h64, p64); break;
    case S_EC:    sig = jose_signature(a, f->ec, h64, p64); break;
    case S_EC384: sig = jose_signature(a, f->ec384, h64, p64); break;
    case S_ED: {
        unsigned char raw[64];
        size_t rl = sizeof(raw);
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        assert_int_equal(EVP_DigestSignInit(md, NULL, NULL, NULL, f->ed), 1);
        assert_int_equal(EVP_DigestSign(md, raw, &rl, (unsigned char *)input, strlen(input)), 1);
        EVP_MD_CTX_free(md);
        sig = b64(a, raw, rl);
        break;
    }
    case S_NONE:  sig = ""; break;
    case S_JUNK:  sig = "c2lnbmF0dXJl"; break;
    case S_HMAC_PUB: {
        /* The classic confusion attack: HMAC keyed with the public key. */
        unsigned char mac[32];
        unsigned int ml = sizeof(mac);
        assert_non_null(HMAC(EVP_sha256(), f->rsa_pem, (int)f->rsa_pem_len,
                             (unsigned char *)input, strlen(input), mac, &ml));
        sig = b64(a, mac, ml);
        break;
    }
    }
    return kl_arena_printf(a, "%s.%s", input, sig);
}

static char *hdr(kl_arena *a, const char *alg, const char *kid)
{
    if (!kid)
        return kl_arena_printf(a, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    return kl_arena_printf(a, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, kid);
}

/* Claims with chosen times (OMIT leaves one out) and extra members. */
static char *pay(kl_arena *a, int64_t iat, int64_t nbf, int64_t exp, const char *extra)
{
    char *s = kl_arena_printf(a, "{\"iss\":\"%s\",\"aud\":\"keyless\",\"sub\":\"repo:acme/app:ref:refs/heads/main\","
                                 "\"repository\":\"acme/app\"", ISS);
    if (iat != OMIT)
        s = kl_arena_printf(a, "%s,\"iat\":%lld", s, (long long)iat);
    if (nbf != OMIT)
        s = kl_arena_printf(a, "%s,\"nbf\":%lld", s, (long long)nbf);
    if (exp != OMIT)
        s = kl_arena_printf(a, "%s,\"exp\":%lld", s, (long long)exp);
    return kl_arena_printf(a, "%s%s%s}", s, extra ? "," : "", extra ? extra : "");
}

static char *good_claims(kl_arena *a)
{
    return pay(a, NOW - 10, NOW - 10, NOW + 300, NULL);
}

static char *good(kl_arena *a, const struct fx *f, const char *alg, const char *kid, enum signer s)
{
    return mint(a, f, hdr(a, alg, kid), good_claims(a), s);
}

/* ---- checking ---------------------------------------------------------- */

static void expect_ok_with(const struct fx *f, const kl_jwks *ks, const struct kl_jwt_policy *p, const char *tok)
{
    (void)f;
    char why[128] = "";
    cJSON *claims = NULL;
    int rc = kl_jwt_verify(tok, strlen(tok), p, ks, NOW, &claims, why, sizeof(why));
    if (rc != 0)
        fail_msg("refused: %s", why);
    assert_non_null(claims);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(claims, "repository")->valuestring, "acme/app");
    cJSON_Delete(claims);
}

static void expect_ok(const struct fx *f, const char *tok)
{
    expect_ok_with(f, f->jwks, &POLICY, tok);
}

static void expect_refused_with(const kl_jwks *ks, const struct kl_jwt_policy *p, const char *tok, size_t len,
                                const char *reason)
{
    char why[128] = "";
    cJSON *claims = (cJSON *)1;
    int rc = kl_jwt_verify(tok, len, p, ks, NOW, &claims, why, sizeof(why));
    assert_int_equal(rc, -1);
    assert_null(claims);
    assert_string_equal(why, reason);
}

static void expect_refused(const struct fx *f, const char *tok, const char *reason)
{
    expect_refused_with(f->jwks, &POLICY, tok, strlen(tok), reason);
}

/* ---- fixture ----------------------------------------------------------- */

static json_t *gen(const char *alg)
{
    json_t *k = json_pack("{s:s}", "alg", alg);
    assert_true(jose_jwk_gen(NULL, k));
    json_object_del(k, "alg");  /* so the same key can sign RS384, PS256, ... */
    return k;
}

static json_t *pub(const json_t *priv, const char *kid)
{
    json_t *p = json_deep_copy(priv);
    assert_true(jose_jwk_pub(NULL, p));
    json_object_set_new(p, "kid", json_string(kid));
    return p;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->rsa = gen("RS256");
    f->rsa_b = gen("RS256");
    f->ec = gen("ES256");
    f->ec384 = gen("ES384");
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    assert_int_equal(EVP_PKEY_keygen_init(pc), 1);
    assert_int_equal(EVP_PKEY_keygen(pc, &f->ed), 1);
    EVP_PKEY_CTX_free(pc);

    json_t *rp = pub(f->rsa, "rsa1");
    EVP_PKEY *rk = jose_openssl_jwk_to_EVP_PKEY(NULL, rp);
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(bio, rk), 1);
    char *pem;
    long pl = BIO_get_mem_data(bio, &pem);
    f->rsa_pem = malloc((size_t)pl);
    memcpy(f->rsa_pem, pem, (size_t)pl);
    f->rsa_pem_len = (size_t)pl;
    BIO_free(bio);
    EVP_PKEY_free(rk);

    unsigned char raw[32];
    size_t rl = sizeof(raw);
    assert_int_equal(EVP_PKEY_get_raw_public_key(f->ed, raw, &rl), 1);
    char x[64];
    assert_int_equal(jose_b64_enc_buf(raw, rl, x, 43), 43);
    x[43] = '\0';

    json_object_set_new(rp, "use", json_string("sig"));   /* no "alg": allowed */
    json_t *ep = pub(f->ec, "ec1");
    json_object_set_new(ep, "alg", json_string("ES256"));
    json_t *enc = pub(f->rsa_b, "rsa1");                    /* same kid, use enc: skipped */
    json_object_set_new(enc, "use", json_string("enc"));
    json_t *keys = json_pack("{s:[o,o,o,{s:s,s:s,s:s,s:s},o,{s:s,s:s,s:s}]}", "keys",
                             rp, ep, pub(f->ec384, "ec384"),
                             "kty", "OKP", "crv", "Ed25519", "x", x, "kid", "ed1",
                             enc, "kty", "oct", "k", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "kid", "hmac");
    assert_non_null(keys);
    char *text = json_dumps(keys, 0);
    char why[128] = "";
    f->jwks = kl_jwks_parse(text, strlen(text), why, sizeof(why));
    if (!f->jwks)
        fail_msg("jwks: %s", why);
    free(text);
    json_decref(keys);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    json_decref(f->rsa);
    json_decref(f->rsa_b);
    json_decref(f->ec);
    json_decref(f->ec384);
    EVP_PKEY_free(f->ed);
    free(f->rsa_pem);
    kl_jwks_free(f->jwks);
    free(f);
    return 0;
}

/* ---- accepted ---------------------------------------------------------- */

static void accepts_rs256(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    expect_ok(f, good(&a, f, "RS256", "rsa1", S_RSA));
    kl_arena_free(&a);
}

static void accepts_es256_es384_eddsa(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    expect_ok(f, good(&a, f, "ES256", "ec1", S_EC));
    expect_ok(f, good(&a, f, "ES384", "ec384", S_EC384));
    expect_ok(f, good(&a, f, "EdDSA", "ed1", S_ED));
    kl_arena_free(&a);
}

static void accepts_ps256_when_allowed(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    static const char *const algs[] = {"PS256", "RS512"};
    struct kl_jwt_policy p = POLICY;
    p.algs = algs;
    p.nalgs = 2;
    expect_ok_with(f, f->jwks, &p, good(&a, f, "PS256", "rsa1", S_RSA));
    expect_ok_with(f, f->jwks, &p, good(&a, f, "RS512", "rsa1", S_RSA));
    kl_arena_free(&a);
}

static void jwks_skips_unusable_keys(void **state)
{
    struct fx *f = *state;
    /* rsa1, ec1, ec384, ed1 kept; the use=enc key and the oct key skipped */
    assert_int_equal(kl_jwks_count(f->jwks), 4);
}

static void no_kid_uses_the_single_fitting_key(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    expect_ok(f, good(&a, f, "ES256", NULL, S_EC));
    expect_ok(f, good(&a, f, "RS256", NULL, S_RSA));
    kl_arena_free(&a);
}

static void no_kid_with_two_fitting_keys_is_refused(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    json_t *ka = json_deep_copy(f->rsa), *kb = json_deep_copy(f->rsa_b);
    jose_jwk_pub(NULL, ka);
    jose_jwk_pub(NULL, kb);
    json_t *doc = json_pack("{s:[o,o]}", "keys", ka, kb);
    char *text = json_dumps(doc, 0);
    kl_jwks *two = kl_jwks_parse(text, strlen(text), NULL, 0);
    assert_int_equal(kl_jwks_count(two), 2);
    const char *t = good(&a, f, "RS256", NULL, S_RSA);
    expect_refused_with(two, &POLICY, t, strlen(t), "token has no kid and several keys fit");
    kl_jwks_free(two);
    free(text);
    json_decref(doc);
    kl_arena_free(&a);
}

static void audience_in_array_is_accepted(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    char *claims = kl_arena_printf(&a, "{\"iss\":\"%s\",\"aud\":[\"other\",\"keyless\"],"
                                   "\"repository\":\"acme/app\",\"iat\":%lld,\"exp\":%lld}",
                                   ISS, (long long)NOW, (long long)NOW + 60);
    expect_ok(f, mint(&a, f, hdr(&a, "ES256", "ec1"), claims, S_EC));
    kl_arena_free(&a);
}

static void leeway_covers_small_clock_skew(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    /* expired 30 s ago, nbf and iat 30 s ahead: all inside 60 s of leeway */
    expect_ok(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), pay(&a, NOW + 30, NOW + 30, NOW - 30, NULL), S_RSA));
    kl_arena_free(&a);
}

/* ---- time and claims --------------------------------------------------- */

static void expired(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    expect_refused(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), pay(&a, NOW - 400, OMIT, NOW - 61, NULL), S_RSA),
                   "token expired");
    expect_refused(f, mint(&a, f, hdr(&a, "ES256", "ec1"), pay(&a, NOW - 400, OMIT, NOW - 60, NULL), S_EC),
                   "token expired");
    kl_arena_free(&a);
}

static void not_yet_valid(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    expect_refused(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), pay(&a, OMIT, NOW + 61, NOW + 300, NULL), S_RSA),
                   "token not yet valid");
    kl_arena_free(&a);
}

static void issued_in_the_future(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    expect_refused(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), pay(&a, NOW + 120, OMIT, NOW + 300, NULL), S_RSA),
                   "token issued in the future");
    kl_arena_free(&a);
}

static void lifetime_too_long(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    expect_refused(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), pay(&a, NOW, OMIT, NOW + 3601, NULL), S_RSA),
                   "token lifetime too long");
    /* without iat, nbf starts the lifetime; without both, now does */
    expect_refused(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), pay(&a, OMIT, NOW - 100, NOW + 3550, NULL), S_RSA),
                   "token lifetime too long");
    expect_refused(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), pay(&a, OMIT, OMIT, NOW + 3601, NULL), S_RSA),
                   "token lifetime too long");
    expect_ok(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), pay(&a, NOW, OMIT, NOW + 3600, NULL), S_RSA));
    /* 0 means no cap */
    struct kl_jwt_policy p = POLICY;
    p.max_lifetime_s = 0;
    expect_ok_with(f, f->jwks, &p, mint(&a, f, hdr(&a, "RS256", "rsa1"), pay(&a, NOW, OMIT, NOW + 86400 * 365, NULL), S_RSA));
    kl_arena_free(&a);
}

static void no_exp(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    expect_refused(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), pay(&a, NOW, OMIT, OMIT, NULL), S_RSA),
                   "token has no exp");
    const char *str_exp = kl_arena_printf(&a, "{\"iss\":\"%s\",\"aud\":\"keyless\",\"exp\":\"%lld\"}", ISS,
                                          (long long)NOW + 60);
    expect_refused(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), str_exp, S_RSA), "invalid exp claim");
    kl_arena_free(&a);
}

static void wrong_audience(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    const char *tmpl = "{\"iss\":\"%s\",\"aud\":%s,\"iat\":%lld,\"exp\":%lld}";
    const char *auds[] = {"\"https://github.com/acme\"", "[\"a\",\"b\"]", "[]", "[\"KEYLESS\"]", "7",
                          "\"keyless \"", "[[\"keyless\"]]"};
    for (size_t i = 0; i < sizeof(auds) / sizeof(auds[0]); i++) {
        const char *c = kl_arena_printf(&a, tmpl, ISS, auds[i], (long long)NOW, (long long)NOW + 60);
        expect_refused(f, mint(&a, f, hdr(&a, "ES256", "ec1"), c, S_EC), "audience mismatch");
    }
    const char *none = kl_arena_printf(&a, "{\"iss\":\"%s\",\"exp\":%lld}", ISS, (long long)NOW + 60);
    expect_refused(f, mint(&a, f, hdr(&a, "ES256", "ec1"), none, S_EC), "token has no aud");
    kl_arena_free(&a);
}

static void wrong_issuer(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    const char *isss[] = {"https://token.actions.githubusercontent.com/", "https://evil.example",
                          "HTTPS://TOKEN.ACTIONS.GITHUBUSERCONTENT.COM"};
    for (size_t i = 0; i < 3; i++) {
        const char *c = kl_arena_printf(&a, "{\"iss\":\"%s\",\"aud\":\"keyless\",\"exp\":%lld}", isss[i],
                                        (long long)NOW + 60);
        expect_refused(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), c, S_RSA), "issuer mismatch");
    }
    const char *none = kl_arena_printf(&a, "{\"aud\":\"keyless\",\"exp\":%lld}", (long long)NOW + 60);
    expect_refused(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), none, S_RSA), "token has no iss");
    kl_arena_free(&a);
}

static void nul_escape_is_refused(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    /* "keyless\u0000x" would read as "keyless" through a C string */
    const char *c = kl_arena_printf(&a, "{\"iss\":\"%s\",\"aud\":\"keyless\\u0000x\",\"exp\":%lld}", ISS,
                                    (long long)NOW + 60);
    expect_refused(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), c, S_RSA), "malformed token");
    /* an escaped backslash before u0000 is just text */
    const char *d = kl_arena_printf(&a, "{\"iss\":\"%s\",\"aud\":\"keyless\",\"note\":\"\\\\u0000\","
                                        "\"repository\":\"acme/app\",\"exp\":%lld}", ISS, (long long)NOW + 60);
    expect_ok(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), d, S_RSA));
    kl_arena_free(&a);
}

static void duplicate_claims_are_refused(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    const char *c = kl_arena_printf(&a, "{\"iss\":\"%s\",\"aud\":\"keyless\",\"aud\":\"other\",\"exp\":%lld}", ISS,
                                    (long long)NOW + 60);
    expect_refused(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), c, S_RSA), "malformed token");
    kl_arena_free(&a);
}

/* ---- keys and signatures ----------------------------------------------- */

static void unknown_kid(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    expect_refused(f, good(&a, f, "RS256", "rsa9", S_RSA), "unknown key id");
    expect_refused(f, good(&a, f, "RS256", "hmac", S_RSA), "unknown key id");  /* oct keys are not kept */
    const char *numkid = mint(&a, f, "{\"alg\":\"RS256\",\"kid\":1}", good_claims(&a), S_RSA);
    expect_refused(f, numkid, "malformed token");
    kl_arena_free(&a);
}

static void tampered_payload(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    const enum signer signers[] = {S_RSA, S_EC, S_ED};
    const char *algs[] = {"RS256", "ES256", "EdDSA"}, *kids[] = {"rsa1", "ec1", "ed1"};
    for (size_t i = 0; i < 3; i++) {
        char *t = good(&a, f, algs[i], kids[i], signers[i]);
        char *h = strchr(t, '.'), *s = strchr(h + 1, '.');
        const char *evil = pay(&a, NOW - 10, OMIT, NOW + 300, "\"repository\":\"acme/admin\"");
        char *forged = kl_arena_printf(&a, "%.*s.%s%s", (int)(h - t), t, b64(&a, evil, strlen(evil)), s);
        expect_refused(f, forged, "bad signature");
    }
    kl_arena_free(&a);
}

static void signed_by_another_key(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    /* rsa_b is in the JWKS under kid rsa1, but with use=enc, so it never verifies */
    expect_refused(f, good(&a, f, "RS256", "rsa1", S_RSA_B), "bad signature");
    /* keys carried by the token itself (jwk, jku, x5c) are never used */
    json_t *k = pub(f->rsa_b, "rsa1");
    char *kj = json_dumps(k, JSON_COMPACT);
    const char *h = kl_arena_printf(&a, "{\"alg\":\"RS256\",\"kid\":\"rsa1\",\"jwk\":%s,"
                                        "\"jku\":\"https://evil.example/jwks\"}", kj);
    expect_refused(f, mint(&a, f, h, good_claims(&a), S_RSA_B), "bad signature");
    free(kj);
    json_decref(k);
    kl_arena_free(&a);
}

static void alg_none(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    expect_refused(f, good(&a, f, "none", NULL, S_NONE), "algorithm none not allowed");
    expect_refused(f, good(&a, f, "none", "rsa1", S_JUNK), "algorithm none not allowed");
    /* listing none in the policy changes nothing */
    static const char *const algs[] = {"none", "RS256"};
    struct kl_jwt_policy p = POLICY;
    p.algs = algs;
    p.nalgs = 2;
    const char *t = good(&a, f, "none", "rsa1", S_NONE);
    expect_refused_with(f->jwks, &p, t, strlen(t), "algorithm none not allowed");
    /* and other spellings are not algorithms at all */
    expect_refused(f, good(&a, f, "None", NULL, S_NONE), "unsupported algorithm");
    kl_arena_free(&a);
}

static void hs256_signed_with_public_key(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    expect_refused(f, good(&a, f, "HS256", "rsa1", S_HMAC_PUB), "algorithm HS256 not allowed for this issuer");
    expect_refused(f, good(&a, f, "HS256", NULL, S_HMAC_PUB), "algorithm HS256 not allowed for this issuer");
    static const char *const algs[] = {"HS256", "RS256"};
    struct kl_jwt_policy p = POLICY;
    p.algs = algs;
    p.nalgs = 2;
    const char *t = good(&a, f, "HS256", "rsa1", S_HMAC_PUB);
    expect_refused_with(f->jwks, &p, t, strlen(t), "algorithm HS256 not allowed for this issuer");
    /* even when a symmetric key is in the JWKS under that kid */
    t = good(&a, f, "HS256", "hmac", S_HMAC_PUB);
    expect_refused_with(f->jwks, &p, t, strlen(t), "algorithm HS256 not allowed for this issuer");
    kl_arena_free(&a);
}

static void alg_not_in_allow_list(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    expect_refused(f, good(&a, f, "RS512", "rsa1", S_RSA), "algorithm RS512 not allowed");
    expect_refused(f, good(&a, f, "PS256", "rsa1", S_RSA), "algorithm PS256 not allowed");
    kl_arena_free(&a);
}

static void key_type_must_match_alg(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    expect_refused(f, good(&a, f, "ES256", "rsa1", S_JUNK), "key type does not match algorithm");
    expect_refused(f, good(&a, f, "RS256", "ec1", S_JUNK), "key type does not match algorithm");
    expect_refused(f, good(&a, f, "ES384", "ec1", S_JUNK), "key type does not match algorithm");
    expect_refused(f, good(&a, f, "EdDSA", "rsa1", S_JUNK), "key type does not match algorithm");
    /* a key that names its alg is used with that alg only */
    static const char *const algs[] = {"ES256", "ES384"};
    struct kl_jwt_policy p = POLICY;
    p.algs = algs;
    p.nalgs = 2;
    expect_ok_with(f, f->jwks, &p, good(&a, f, "ES256", "ec1", S_EC));
    kl_arena_free(&a);
}

/* libjose 11 compares a key's alg with the header's as strcmp(h, k) < 0, so
 * a PS256 key would verify an RS256 token through it; keyless checks itself. */
static void key_alg_must_match_token_alg(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    json_t *k = pub(f->rsa, "r");
    json_object_set_new(k, "alg", json_string("PS256"));
    json_t *doc = json_pack("{s:[o]}", "keys", k);
    char *text = json_dumps(doc, 0);
    kl_jwks *ks = kl_jwks_parse(text, strlen(text), NULL, 0);
    assert_int_equal(kl_jwks_count(ks), 1);
    static const char *const algs[] = {"RS256", "PS256"};
    struct kl_jwt_policy p = POLICY;
    p.algs = algs;
    p.nalgs = 2;
    const char *t = good(&a, f, "RS256", "r", S_RSA);
    expect_refused_with(ks, &p, t, strlen(t), "key is for another algorithm");
    t = good(&a, f, "RS256", NULL, S_RSA);
    expect_refused_with(ks, &p, t, strlen(t), "no key for algorithm RS256");
    expect_ok_with(f, ks, &p, good(&a, f, "PS256", "r", S_RSA));
    kl_jwks_free(ks);
    free(text);
    json_decref(doc);
    kl_arena_free(&a);
}

static void es256_signature_must_be_raw(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    char *t = good(&a, f, "ES256", "ec1", S_EC);
    char *s = strrchr(t, '.') + 1;
    unsigned char raw[64];
    assert_int_equal(jose_b64_dec_buf(s, strlen(s), raw, sizeof(raw)), 64);
    ECDSA_SIG *es = ECDSA_SIG_new();
    ECDSA_SIG_set0(es, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL));
    unsigned char *der = NULL;
    int dl = i2d_ECDSA_SIG(es, &der);
    assert_true(dl > 0);
    char *forged = kl_arena_printf(&a, "%.*s%s", (int)(s - t), t, b64(&a, der, (size_t)dl));
    expect_refused(f, forged, "bad signature");
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    kl_arena_free(&a);
}

static void crit_header_is_refused(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    expect_refused(f, mint(&a, f, "{\"alg\":\"RS256\",\"kid\":\"rsa1\",\"crit\":[\"b64\"],\"b64\":false}",
                           good_claims(&a), S_RSA), "unsupported critical header");
    kl_arena_free(&a);
}

/* ---- shape ------------------------------------------------------------- */

static void malformed(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    char *t = good(&a, f, "RS256", "rsa1", S_RSA);
    char *dot2 = strrchr(t, '.');
    const char *cases[] = {
        "", ".", "..", "a.b", "a.b.c.d",
        kl_arena_printf(&a, "%.*s", (int)(dot2 - t), t),                  /* two parts */
        kl_arena_printf(&a, "%s.", t),                                    /* four parts */
        kl_arena_printf(&a, "%s=", t),                                    /* padding */
        kl_arena_printf(&a, "%.*s.+%s", (int)(dot2 - t), t, dot2 + 2),    /* standard alphabet */
        kl_arena_printf(&a, " %s", t),
        kl_arena_printf(&a, "%s.%s", b64(&a, "not json", 8), strchr(t, '.') + 1),
        kl_arena_printf(&a, "%s.%s", b64(&a, "[\"RS256\"]", 9), strchr(t, '.') + 1),
        kl_arena_printf(&a, "%s.%s", b64(&a, "{\"alg\":\"RS256\"} x", 17), strchr(t, '.') + 1),
        kl_arena_printf(&a, "%s.%s", b64(&a, "{\"alg\":\"RS256\",\"alg\":\"none\"}", 29), strchr(t, '.') + 1),
        kl_arena_printf(&a, "%s.%s", b64(&a, "{\"alg\":\"RS256\"", 14), strchr(t, '.') + 1),
        "eyJhbGciOiJSUzI1NiJ9.e30.A",                                     /* 1 mod 4 */
        "eyJhbGciOiJSUzI1NiJ9.e31.AAAA",                                  /* non-canonical bits */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_refused(f, cases[i], "malformed token");
    /* a NUL byte inside the given length */
    size_t tl = strlen(t);
    char *withnul = kl_arena_strdup(&a, t);
    withnul[10] = '\0';
    expect_refused_with(f->jwks, &POLICY, withnul, tl, "malformed token");
    /* no alg, no signature */
    expect_refused(f, mint(&a, f, "{\"typ\":\"JWT\"}", good_claims(&a), S_JUNK), "token header has no alg");
    expect_refused(f, good(&a, f, "RS256", "rsa1", S_NONE), "token has no signature");
    /* a signed payload that is not an object */
    expect_refused(f, mint(&a, f, hdr(&a, "RS256", "rsa1"), "[1,2]", S_RSA), "malformed token");
    kl_arena_free(&a);
}

static void oversized(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    char *pad = kl_arena_alloc(&a, 13000);
    memset(pad, 'x', 12999);
    const char *extra = kl_arena_printf(&a, "\"pad\":\"%s\"", pad);
    const char *t = mint(&a, f, hdr(&a, "RS256", "rsa1"), pay(&a, NOW, OMIT, NOW + 60, extra), S_RSA);
    assert_true(strlen(t) > KL_JWT_MAX_TOKEN);
    expect_refused(f, t, "token too large");
    /* the size is checked before anything is read */
    expect_refused_with(f->jwks, &POLICY, "x", KL_JWT_MAX_TOKEN + 1, "token too large");
    kl_arena_free(&a);
}

static void unconfigured_policy_fails_closed(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_jwt_policy p = POLICY;
    p.audience = NULL;
    const char *t = good(&a, f, "RS256", "rsa1", S_RSA);
    expect_refused_with(f->jwks, &p, t, strlen(t), "token verifier not configured");
    expect_refused_with(NULL, &POLICY, t, strlen(t), "token verifier not configured");
    kl_arena_free(&a);
}

static void reason_never_echoes_the_token(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    const char *t = good(&a, f, "XX<script>", "rsa1", S_JUNK);
    expect_refused(f, t, "unsupported algorithm");
    kl_arena_free(&a);
}

/* ---- JWKS -------------------------------------------------------------- */

/* The reason a JWKS holding only key (consumed) is refused. */
static const char *refused_key(json_t *key)
{
    static char why[160];
    json_t *doc = json_pack("{s:[o]}", "keys", key);
    char *text = json_dumps(doc, 0);
    why[0] = '\0';
    kl_jwks *ks = kl_jwks_parse(text, strlen(text), why, sizeof(why));
    assert_null(ks);
    free(text);
    json_decref(doc);
    return why;
}

static void jwks_parse_errors(void **state)
{
    struct fx *f = *state;
    char why[160];
    const char *bad[] = {"", "{", "[]", "{\"keys\":{}}", "{\"keys\":[]}", "{\"keys\":[1]}",
                         "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}",
                         "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"AAAA\"}]}",
                         "{\"keys\":[],\"keys\":[]}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        assert_null(kl_jwks_parse(bad[i], strlen(bad[i]), why, sizeof(why)));
        assert_true(why[0] != '\0');
    }

    json_t *k;
    /* RSA exponent 1 */
    k = json_deep_copy(f->rsa);
    jose_jwk_pub(NULL, k);
    json_object_set_new(k, "e", json_string("AQ"));
    assert_string_equal(refused_key(k), "JWKS has no usable signing key (key 0: bad RSA exponent)");
    /* alg that does not fit the key */
    k = json_deep_copy(f->ec);
    jose_jwk_pub(NULL, k);
    json_object_set_new(k, "alg", json_string("RS256"));
    assert_string_equal(refused_key(k), "JWKS has no usable signing key (key 0: alg does not fit the key)");
    /* a point off the curve */
    k = json_deep_copy(f->ec);
    jose_jwk_pub(NULL, k);
    json_object_set(k, "x", json_object_get(k, "y"));
    assert_string_equal(refused_key(k), "JWKS has no usable signing key (key 0: unusable key material)");
    /* key_ops without verify */
    k = json_deep_copy(f->ec);
    json_object_set_new(k, "key_ops", json_pack("[s]", "sign"));
    assert_string_equal(refused_key(k), "JWKS has no usable signing key (key 0: key_ops lacks verify)");
    /* use other than sig */
    k = json_deep_copy(f->ec);
    jose_jwk_pub(NULL, k);
    json_object_set_new(k, "use", json_string("enc"));
    assert_string_equal(refused_key(k), "JWKS has no usable signing key (key 0: use is not sig)");
}

static void jwks_refuses_short_rsa(void **state)
{
    (void)state;
    EVP_PKEY *pk = EVP_RSA_gen(1024);
    assert_non_null(pk);
    json_t *k = jose_openssl_jwk_from_EVP_PKEY(NULL, pk);
    assert_non_null(k);
    jose_jwk_pub(NULL, k);
    json_t *doc = json_pack("{s:[o]}", "keys", k);
    char *text = json_dumps(doc, 0);
    char why[160];
    assert_null(kl_jwks_parse(text, strlen(text), why, sizeof(why)));
    assert_string_equal(why, "JWKS has no usable signing key (key 0: RSA key size outside 2048..8192 bits)");
    free(text);
    json_decref(doc);
    EVP_PKEY_free(pk);
}

static void jwks_private_members_are_dropped(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    /* an operator pasted the private JWK: still usable for verifying */
    json_t *k = json_deep_copy(f->ec);
    json_object_set_new(k, "kid", json_string("ec1"));
    json_t *doc = json_pack("{s:[o]}", "keys", k);
    char *text = json_dumps(doc, 0);
    kl_jwks *ks = kl_jwks_parse(text, strlen(text), NULL, 0);
    assert_int_equal(kl_jwks_count(ks), 1);
    expect_ok_with(f, ks, &POLICY, good(&a, f, "ES256", "ec1", S_EC));
    kl_jwks_free(ks);
    free(text);
    json_decref(doc);
    kl_arena_free(&a);
}

/* ---- peek and templates ------------------------------------------------ */

static void peek_issuer(void **state)
{
    struct fx *f = *state;
    kl_arena a;
    kl_arena_init(&a);
    const char *t = good(&a, f, "RS256", "rsa1", S_RSA);
    const char *iss = kl_jwt_peek_issuer(t, strlen(t), &a);
    assert_non_null(iss);
    assert_string_equal(iss, ISS);
    /* unverified: a forged token still names its issuer, which is the point */
    const char *n = good(&a, f, "none", NULL, S_NONE);
    assert_string_equal(kl_jwt_peek_issuer(n, strlen(n), &a), ISS);
    assert_null(kl_jwt_peek_issuer("a.b", 3, &a));
    assert_null(kl_jwt_peek_issuer("e30.e30.", 8, &a));          /* {} has no iss */
    const char *num = mint(&a, f, hdr(&a, "RS256", "rsa1"), "{\"iss\":5}", S_NONE);
    assert_null(kl_jwt_peek_issuer(num, strlen(num), &a));
    kl_arena_free(&a);
}

static void templates(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    cJSON *c = cJSON_Parse("{\"repository\":\"acme/app\",\"ref\":\"refs/heads/main\",\"run_number\":42,"
                           "\"ratio\":1.5,\"neg\":-3,\"ok\":true,\"no\":false,\"nul\":null,\"groups\":[\"a\"],"
                           "\"ctl\":\"a\\nb\",\"kubernetes.io\":{\"namespace\":\"prod\","
                           "\"serviceaccount\":{\"name\":\"builder\",\"uid\":\"u-1\"}}}");
    assert_non_null(c);
    struct { const char *tmpl, *want; } ok[] = {
        {"repo:{repository}@{ref}", "repo:acme/app@refs/heads/main"},
        {"k8s:{kubernetes.io/namespace}/{kubernetes.io/serviceaccount/name}", "k8s:prod/builder"},
        {"{run_number}|{ratio}|{neg}|{ok}|{no}", "42|1.5|-3|true|false"},
        {"{{literal}} {repository}", "{literal} acme/app"},
        {"plain", "plain"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        const char *out = NULL;
        char why[128] = "";
        if (kl_jwt_template(c, ok[i].tmpl, &a, &out, why, sizeof(why)) != 0)
            fail_msg("%s: %s", ok[i].tmpl, why);
        assert_string_equal(out, ok[i].want);
    }
    struct { const char *tmpl, *why; } bad[] = {
        {"repo:{missing}", "claim missing is missing"},
        {"{kubernetes.io/nope}", "claim kubernetes.io/nope is missing"},
        {"{repository/x}", "claim repository/x is missing"},
        {"{kubernetes.io}", "claim kubernetes.io is not a string, number or boolean"},
        {"{groups}", "claim groups is not a string, number or boolean"},
        {"{nul}", "claim nul is not a string, number or boolean"},
        {"{ctl}", "claim ctl contains control characters"},
        {"x{", "template has an unterminated {"},
        {"x}", "template has an unmatched }"},
        {"{}", "template has an empty or nested {}"},
        {"{a{b}", "template has an empty or nested {}"},
        {"{kubernetes.io//namespace}", "template claim kubernetes.io//namespace has an empty path segment"},
        {"{/x}", "template claim /x has an empty path segment"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *out = "unchanged";
        char why[128] = "";
        assert_int_equal(kl_jwt_template(c, bad[i].tmpl, &a, &out, why, sizeof(why)), -1);
        assert_null(out);
        assert_string_equal(why, bad[i].why);
    }
    char why[128];
    assert_int_equal(kl_jwt_template_check("repo:{repository}@{ref}", why, sizeof(why)), 0);
    assert_int_equal(kl_jwt_template_check("repo:{repository", why, sizeof(why)), -1);
    assert_string_equal(why, "template has an unterminated {");
    cJSON_Delete(c);
    kl_arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepts_rs256),
        cmocka_unit_test(accepts_es256_es384_eddsa),
        cmocka_unit_test(accepts_ps256_when_allowed),
        cmocka_unit_test(jwks_skips_unusable_keys),
        cmocka_unit_test(no_kid_uses_the_single_fitting_key),
        cmocka_unit_test(no_kid_with_two_fitting_keys_is_refused),
        cmocka_unit_test(audience_in_array_is_accepted),
        cmocka_unit_test(leeway_covers_small_clock_skew),
        cmocka_unit_test(expired),
        cmocka_unit_test(not_yet_valid),
        cmocka_unit_test(issued_in_the_future),
        cmocka_unit_test(lifetime_too_long),
        cmocka_unit_test(no_exp),
        cmocka_unit_test(wrong_audience),
        cmocka_unit_test(wrong_issuer),
        cmocka_unit_test(nul_escape_is_refused),
        cmocka_unit_test(duplicate_claims_are_refused),
        cmocka_unit_test(unknown_kid),
        cmocka_unit_test(tampered_payload),
        cmocka_unit_test(signed_by_another_key),
        cmocka_unit_test(alg_none),
        cmocka_unit_test(hs256_signed_with_public_key),
        cmocka_unit_test(alg_not_in_allow_list),
        cmocka_unit_test(key_type_must_match_alg),
        cmocka_unit_test(key_alg_must_match_token_alg),
        cmocka_unit_test(es256_signature_must_be_raw),
        cmocka_unit_test(crit_header_is_refused),
        cmocka_unit_test(malformed),
        cmocka_unit_test(oversized),
        cmocka_unit_test(unconfigured_policy_fails_closed),
        cmocka_unit_test(reason_never_echoes_the_token),
        cmocka_unit_test(jwks_parse_errors),
        cmocka_unit_test(jwks_refuses_short_rsa),
        cmocka_unit_test(jwks_private_members_are_dropped),
        cmocka_unit_test(peek_issuer),
        cmocka_unit_test(templates),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
