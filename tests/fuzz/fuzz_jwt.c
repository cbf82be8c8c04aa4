/* libFuzzer: workload identity tokens. The first byte picks what the rest
 * is: a compact token (also peeked at for its issuer, and searched for
 * one's name, as any credential word is), a JWKS document, a header and
 * payload (newline between) that the harness signs so the claim checks are
 * reached, or a claim template. Keys are generated once per process. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <jose/jose.h>

#include "identity/jwt.h"

#define NOW INT64_C(1700000000)

static json_t *signer;          /* private EC P-256 JWK, without "alg" */
static kl_jwks *keys;           /* its public half, kid "k1" */
static cJSON *claims;           /* for template inputs */

static const char *const ALGS[] = {"RS256", "ES256", "EdDSA", "HS256", "none"};
static const struct kl_jwt_policy POLICY = {
    .issuer = "https://issuer.example", .audience = "keyless", .algs = ALGS, .nalgs = 5,
    .leeway_s = 60, .max_lifetime_s = 3600,
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    signer = json_pack("{s:s}", "alg", "ES256");
    if (!signer || !jose_jwk_gen(NULL, signer))
        abort();
    json_object_del(signer, "alg");
    json_t *pub = json_deep_copy(signer);
    jose_jwk_pub(NULL, pub);
    json_object_set_new(pub, "kid", json_string("k1"));
    json_t *doc = json_pack("{s:[o]}", "keys", pub);
    char *text = json_dumps(doc, 0);
    keys = kl_jwks_parse(text, strlen(text), NULL, 0);
    free(text);
    json_decref(doc);
    claims = cJSON_Parse("{\"iss\":\"x\",\"n\":42,\"f\":0.5,\"b\":true,\"z\":null,\"a\":[1],"
                         "\"kubernetes.io\":{\"namespace\":\"ns\",\"serviceaccount\":{\"name\":\"sa\"}}}");
    if (!keys || !claims)
        abort();
    return 0;
}

static void verify(const char *tok, size_t len)
{
    char why[128];
    cJSON *c = NULL;
    kl_arena a;
    kl_arena_init(&a);
    (void)kl_jwt_peek_issuer(tok, len, &a);
    /* as a credential too malformed to name its issuer is searched */
    static const char *const needles[] = {"https://issuer.example", "https:\\/\\/issuer.example", "x", ""};
    (void)kl_jwt_runs_hold(tok, len, needles, 4);
    if (kl_jwt_verify(tok, len, &POLICY, keys, NOW, &c, why, sizeof(why)) == 0) {
        const char *out;
        (void)kl_jwt_template(c, "{iss}:{sub}/{kubernetes.io/namespace}", &a, &out, why, sizeof(why));
        cJSON_Delete(c);
    }
    kl_arena_free(&a);
}

/* Sign hdr.payload with the harness key when libjose agrees to (the header
 * must be JSON naming ES256 or no alg); otherwise attach a junk signature. */
static void sign_and_verify(const uint8_t *d, size_t n)
{
    const uint8_t *nl = memchr(d, '\n', n);
    size_t hl = nl ? (size_t)(nl - d) : n;
    size_t pl = nl ? n - hl - 1 : 0;
    size_t h64l = jose_b64_enc_buf(d, hl, NULL, 0), p64l = jose_b64_enc_buf(nl ? nl + 1 : d, pl, NULL, 0);
    if (h64l == SIZE_MAX || p64l == SIZE_MAX)
        return;
    char *tok = malloc(h64l + p64l + 200);
    if (!tok)
        return;
    jose_b64_enc_buf(d, hl, tok, h64l);
    tok[h64l] = '\0';
    jose_b64_enc_buf(nl ? nl + 1 : d, pl, tok + h64l + 1, p64l);
    tok[h64l + 1 + p64l] = '\0';
    json_t *jws = json_pack("{s:s}", "payload", tok + h64l + 1);
    json_t *sig = json_pack("{s:s}", "protected", tok);
    const char *s = "AAAA";
    if (jws && sig && jose_jws_sig(NULL, jws, sig, signer))
        s = json_string_value(json_object_get(jws, "signature"));
    tok[h64l] = '.';
    size_t len = h64l + 1 + p64l;
    tok[len++] = '.';
    size_t sl = s ? strlen(s) : 0;
    if (sl > 190)
        sl = 190;
    memcpy(tok + len, s, sl);
    len += sl;
    json_decref(sig);
    json_decref(jws);
    verify(tok, len);
    free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0:
        verify((const char *)d, n);
        break;
    case 1: {
        kl_jwks *k = kl_jwks_parse((const char *)d, n, NULL, 0);
        (void)kl_jwks_count(k);
        kl_jwks_free(k);
        break;
    }
    case 2:
        sign_and_verify(d, n);
        break;
    case 3: {
        char *t = malloc(n + 1);
        if (!t)
            return 0;
        memcpy(t, d, n);
        t[n] = '\0';
        kl_arena a;
        kl_arena_init(&a);
        const char *out;
        char why[128];
        (void)kl_jwt_template(claims, t, &a, &out, why, sizeof(why));
        (void)kl_jwt_template_check(t, why, sizeof(why));
        kl_arena_free(&a);
        free(t);
        break;
    }
    }
    return 0;
}
