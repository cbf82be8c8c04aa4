/* OIDC workload identity tokens: compact JWS verification against a JWKS.
 *
 * Order of checks, cheapest and least trusting first: size, shape and
 * base64url of the three parts, the header (alg must be a public-key
 * algorithm the policy allows), the key (by kid, its type must fit alg),
 * the signature, and only then the claims, so a forged token never learns
 * more than "bad signature".
 *
 * Two JSON parsers read the token: cJSON (ours, for every decision) and
 * jansson (inside libjose, which re-reads the header to pick its algorithm).
 * To keep them from disagreeing, JSON with duplicate keys or a \u0000
 * escape is refused, and the alg libjose will use is compared with ours. */
#include "identity/jwt.h"

#include <jansson.h>
#include <jose/jose.h>
#include <jose/openssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/jsoncheck.h"

enum kty { KTY_RSA, KTY_EC, KTY_OKP };

struct alg_info {
    const char *name;
    enum kty kty;
    const char *crv;            /* required curve, NULL for RSA */
};

/* Every algorithm keyless can verify. HS* and none are deliberately absent:
 * they are refused before this table is consulted. */
static const struct alg_info kl_algs[] = {
    {"RS256", KTY_RSA, NULL},     {"RS384", KTY_RSA, NULL},     {"RS512", KTY_RSA, NULL},
    {"PS256", KTY_RSA, NULL},     {"PS384", KTY_RSA, NULL},     {"PS512", KTY_RSA, NULL},
    {"ES256", KTY_EC, "P-256"},   {"ES384", KTY_EC, "P-384"},   {"ES512", KTY_EC, "P-521"},
    {"EdDSA", KTY_OKP, "Ed25519"},
};

bool kl_jwt_alg_supported(const char *name)
{
    for (size_t i = 0; i < sizeof(kl_algs) / sizeof(kl_algs[0]); i++)
        if (strcmp(kl_algs[i].name, name) == 0)
            return true;
    return false;
}

#define RSA_MIN_BITS 2048       /* RFC 7518 3.3; libjose refuses less too */
#define RSA_MAX_BITS 8192       /* bounds the cost of one verification */
#define ED25519_LEN  32

struct kl_jwk {
    char *kid;                  /* owned; NULL when the key has none */
    enum kty kty;
    char crv[8];                /* EC and OKP */
    const struct alg_info *alg; /* the key's own "alg", NULL when absent */
    json_t *pub;                /* RSA/EC: public members only, for libjose */
    unsigned char okp[ED25519_LEN];
};

struct kl_jwks {
    size_t n;
    struct kl_jwk *keys;        /* owned */
    jose_cfg_t *cfg;            /* owned; silences libjose, read-only once built */
};

/* The three parts of a compact JWS, pointing into the caller's token. */
struct parts {
    const char *h, *p, *s;
    size_t hl, pl, sl;
};

__attribute__((format(printf, 3, 4)))
static int fail(char *why, size_t whylen, const char *fmt, ...)
{
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static const struct alg_info *alg_find(const char *name)
{
    for (size_t i = 0; i < sizeof(kl_algs) / sizeof(kl_algs[0]); i++)
        if (strcmp(kl_algs[i].name, name) == 0)
            return &kl_algs[i];
    return NULL;
}

/* Value of a base64url character, or -1. */
static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '-' ? 62 : c == '_' ? 63 : -1;
}

/* Split on exactly two dots; every other byte must be base64url. A length
 * of 1 mod 4 can never be base64url, so it is refused here as well. */
static int split(const char *t, size_t len, struct parts *pt)
{
    const char *dot[2];
    size_t ndots = 0;
    for (size_t i = 0; i < len; i++) {
        if (t[i] == '.') {
            if (ndots == 2)
                return -1;
            dot[ndots++] = t + i;
        } else if (b64_val((unsigned char)t[i]) < 0) {
            return -1;
        }
    }
    if (ndots != 2)
        return -1;
    pt->h = t;
    pt->hl = (size_t)(dot[0] - t);
    pt->p = dot[0] + 1;
    pt->pl = (size_t)(dot[1] - pt->p);
    pt->s = dot[1] + 1;
    pt->sl = (size_t)(t + len - pt->s);
    if (pt->hl == 0 || pt->pl == 0 || pt->hl % 4 == 1 || pt->pl % 4 == 1 || pt->sl % 4 == 1)
        return -1;
    return 0;
}

/* Strict base64url (no padding, canonical trailing bits) into a fresh,
 * NUL-terminated buffer the caller frees. Ours rather than libjose's
 * jose_b64_dec_buf, which searches the alphabet linearly for every
 * character and was a fifth of the time of a whole verification. */
static unsigned char *b64_decode(const char *s, size_t n, size_t *outlen)
{
    if (n % 4 == 1)
        return NULL;
    unsigned char *buf = malloc(n / 4 * 3 + 3);
    if (!buf)
        return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_val((unsigned char)s[i]);
        if (v < 0) {
            free(buf);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            buf[o++] = (unsigned char)(acc >> 16);
            buf[o++] = (unsigned char)(acc >> 8);
            buf[o++] = (unsigned char)acc;
            acc = 0;
        }
    }
    /* 2 or 3 leftover characters carry 1 or 2 bytes; the spare low bits
     * must be zero, or two spellings would decode to the same bytes. */
    if (n % 4 == 2) {
        if (acc & 0xf)
            goto bad;
        buf[o++] = (unsigned char)(acc >> 4);
    } else if (n % 4 == 3) {
        if (acc & 0x3)
            goto bad;
        buf[o++] = (unsigned char)(acc >> 10);
        buf[o++] = (unsigned char)(acc >> 2);
    }
    buf[o] = '\0';
    *outlen = o;
    return buf;
bad:
    free(buf);
    return NULL;
}

/* A JSON object occupying exactly buf[0..n) (whitespace around allowed),
 * without duplicate keys or NUL escapes. Caller owns the result. */
static cJSON *parse_object(const unsigned char *buf, size_t n)
{
    if (kl_json_has_nul_escape((const char *)buf, n))
        return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts((const char *)buf, n, &end, 0);
    if (!j)
        return NULL;
    const char *stop = (const char *)buf + n;
    while (end && end < stop && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (end != stop || !cJSON_IsObject(j) || kl_json_has_duplicate_keys(j)) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static cJSON *decode_object(const char *s, size_t n)
{
    size_t dl;
    unsigned char *raw = b64_decode(s, n, &dl);
    if (!raw)
        return NULL;
    cJSON *j = parse_object(raw, dl);
    free(raw);
    return j;
}

bool kl_jwt_segment_is_object(const char *s, size_t n)
{
    size_t dl;
    unsigned char *raw = b64_decode(s, n, &dl);
    if (!raw)
        return false;
    size_t i = 0;
    while (i < dl && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r'))
        i++;
    bool object = i < dl && raw[i] == '{';
    free(raw);
    return object;
}

/* ---- key sets ---------------------------------------------------------- */

/* libjose reports errors by printing to stderr unless given a handler; our
 * callers get their reasons from us instead. */
static void jose_quiet(void *misc, const char *file, int line, uint64_t err,
                       const char *fmt, va_list ap)
{
    (void)misc, (void)file, (void)line, (void)err, (void)fmt, (void)ap;
}

/* RSA public exponent must be odd and greater than 1: e = 1 makes every
 * "signature" equal to its message. */
static bool rsa_exponent_ok(const json_t *e)
{
    size_t n;
    unsigned char *b = e ? b64_decode(json_string_value(e), json_string_length(e), &n) : NULL;
    if (!b)
        return false;
    size_t i = 0;
    while (i < n && b[i] == 0)
        i++;
    bool ok = i < n && (b[n - 1] & 1) && (n - i > 1 || b[n - 1] > 1);
    free(b);
    return ok;
}

/* Load one JWK into out, keeping only what verification needs. Returns 0,
 * or -1 with the reason it was skipped. */
static int jwk_load(jose_cfg_t *cfg, const json_t *in, struct kl_jwk *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(in))
        return fail(why, whylen, "not an object");
    const char *kty = json_string_value(json_object_get(in, "kty"));
    if (!kty)
        return fail(why, whylen, "no kty");
    const json_t *use = json_object_get(in, "use");
    if (use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0))
        return fail(why, whylen, "use is not sig");
    const json_t *ops = json_object_get(in, "key_ops");
    if (ops) {
        bool verify = false;
        for (size_t i = 0; i < json_array_size(ops); i++) {
            const char *op = json_string_value(json_array_get(ops, i));
            verify = verify || (op && strcmp(op, "verify") == 0);
        }
        if (!verify)
            return fail(why, whylen, "key_ops lacks verify");
    }
    const json_t *alg = json_object_get(in, "alg");
    if (alg) {
        if (!json_is_string(alg) || !(out->alg = alg_find(json_string_value(alg))))
            return fail(why, whylen, "unsupported alg");
    }
    const json_t *kid = json_object_get(in, "kid");
    if (kid && !json_is_string(kid))
        return fail(why, whylen, "kid is not a string");

    if (strcmp(kty, "RSA") == 0) {
        const json_t *n = json_object_get(in, "n"), *e = json_object_get(in, "e");
        if (!json_is_string(n) || !json_is_string(e))
            return fail(why, whylen, "RSA key without n and e");
        if (!rsa_exponent_ok(e))
            return fail(why, whylen, "bad RSA exponent");
        out->kty = KTY_RSA;
        out->pub = json_pack("{s:s,s:O,s:O}", "kty", "RSA", "n", n, "e", e);
    } else if (strcmp(kty, "EC") == 0) {
        const char *crv = json_string_value(json_object_get(in, "crv"));
        const json_t *x = json_object_get(in, "x"), *y = json_object_get(in, "y");
        if (!crv || (strcmp(crv, "P-256") && strcmp(crv, "P-384") && strcmp(crv, "P-521")))
            return fail(why, whylen, "unsupported curve");
        if (!json_is_string(x) || !json_is_string(y))
            return fail(why, whylen, "EC key without x and y");
        out->kty = KTY_EC;
        snprintf(out->crv, sizeof(out->crv), "%s", crv);
        out->pub = json_pack("{s:s,s:s,s:O,s:O}", "kty", "EC", "crv", crv, "x", x, "y", y);
    } else if (strcmp(kty, "OKP") == 0) {
        const char *crv = json_string_value(json_object_get(in, "crv"));
        const json_t *x = json_object_get(in, "x");
        if (!crv || strcmp(crv, "Ed25519") != 0)
            return fail(why, whylen, "unsupported curve");
        size_t xl;
        unsigned char *raw = json_is_string(x)
            ? b64_decode(json_string_value(x), json_string_length(x), &xl) : NULL;
        bool ok = raw && xl == ED25519_LEN;
        if (ok)
            memcpy(out->okp, raw, ED25519_LEN);
        free(raw);
        if (!ok)
            return fail(why, whylen, "bad Ed25519 key");
        EVP_PKEY *pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, out->okp, ED25519_LEN);
        if (!pk)
            return fail(why, whylen, "bad Ed25519 key");
        EVP_PKEY_free(pk);
        out->kty = KTY_OKP;
        snprintf(out->crv, sizeof(out->crv), "%s", crv);
    } else if (strcmp(kty, "oct") == 0) {
        return fail(why, whylen, "symmetric key");
    } else {
        return fail(why, whylen, "unsupported kty");
    }

    if (out->kty != KTY_OKP) {
        /* Let libjose (through OpenSSL) build the key now, so a point off
         * the curve or a short modulus is found at load, not per request. */
        EVP_PKEY *pk = out->pub ? jose_openssl_jwk_to_EVP_PKEY(cfg, out->pub) : NULL;
        int bits = pk ? EVP_PKEY_get_bits(pk) : 0;
        int base = pk ? EVP_PKEY_get_base_id(pk) : 0;
        EVP_PKEY_free(pk);
        const char *bad = NULL;
        if (!pk)
            bad = "unusable key material";
        else if (out->kty == KTY_RSA && (base != EVP_PKEY_RSA || bits < RSA_MIN_BITS || bits > RSA_MAX_BITS))
            bad = "RSA key size outside 2048..8192 bits";
        else if (out->kty == KTY_EC && base != EVP_PKEY_EC)
            bad = "unusable key material";
        if (bad) {
            json_decref(out->pub);
            out->pub = NULL;
            return fail(why, whylen, "%s", bad);
        }
    }
    if (out->alg && (out->alg->kty != out->kty ||
                     (out->alg->crv && strcmp(out->alg->crv, out->crv) != 0))) {
        json_decref(out->pub);
        out->pub = NULL;
        return fail(why, whylen, "alg does not fit the key");
    }
    if (kid && !(out->kid = strdup(json_string_value(kid)))) {
        json_decref(out->pub);
        out->pub = NULL;
        return fail(why, whylen, "out of memory");
    }
    return 0;
}

kl_jwks *kl_jwks_parse(const char *json, size_t len, char *why, size_t whylen)
{
    json_error_t err;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
    if (!doc) {
        fail(why, whylen, "JWKS is not valid JSON: %s (line %d, column %d)", err.text, err.line, err.column);
        return NULL;
    }
    const json_t *arr = json_object_get(doc, "keys");
    if (!json_is_array(arr)) {
        json_decref(doc);
        fail(why, whylen, "JWKS has no \"keys\" array");
        return NULL;
    }
    if (json_array_size(arr) == 0) { /* well formed, and empty: kl_oidc_refresh reads it as a revocation */
        json_decref(doc);
        fail(why, whylen, "JWKS has no usable signing key (its \"keys\" array is empty)");
        return NULL;
    }
    kl_jwks *ks = calloc(1, sizeof(*ks));
    if (ks) {
        ks->keys = calloc(json_array_size(arr), sizeof(*ks->keys));
        if ((ks->cfg = jose_cfg()))
            jose_cfg_set_err_func(ks->cfg, jose_quiet, NULL);
    }
    if (!ks || !ks->keys || !ks->cfg) {
        kl_jwks_free(ks);
        json_decref(doc);
        fail(why, whylen, "out of memory");
        return NULL;
    }
    char first[80] = "";
    size_t first_i = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        char skip[64];
        if (jwk_load(ks->cfg, json_array_get(arr, i), &ks->keys[ks->n], skip, sizeof(skip)) == 0) {
            ks->n++;
        } else if (!first[0]) {
            snprintf(first, sizeof(first), "%s", skip);
            first_i = i;
        }
    }
    json_decref(doc);
    ERR_clear_error();
    if (ks->n == 0) {
        fail(why, whylen, "JWKS has no usable signing key (key %zu: %s)", first_i, first);
        kl_jwks_free(ks);
        return NULL;
    }
    return ks;
}

void kl_jwks_free(kl_jwks *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++) {
        free(k->keys[i].kid);
        json_decref(k->keys[i].pub);
    }
    free(k->keys);
    if (k->cfg)
        jose_cfg_decref(k->cfg);
    free(k);
}

size_t kl_jwks_count(const kl_jwks *k)
{
    return k ? k->n : 0;
}

/* ---- verification ------------------------------------------------------ */

static int check_alg(const char *name, const struct kl_jwt_policy *p,
                     const struct alg_info **out, char *why, size_t whylen)
{
    if (strcmp(name, "none") == 0)
        return fail(why, whylen, "algorithm none not allowed");
    if (!strcmp(name, "HS256") || !strcmp(name, "HS384") || !strcmp(name, "HS512"))
        return fail(why, whylen, "algorithm %s not allowed for this issuer", name);
    const struct alg_info *a = alg_find(name);
    if (!a)                     /* not echoed: the name is the caller's bytes */
        return fail(why, whylen, "unsupported algorithm");
    for (size_t i = 0; i < p->nalgs; i++) {
        if (p->algs[i] && strcmp(p->algs[i], a->name) == 0) {
            *out = a;
            return 0;
        }
    }
    return fail(why, whylen, "algorithm %s not allowed", a->name);
}

static bool key_fits(const struct kl_jwk *k, const struct alg_info *a)
{
    return k->kty == a->kty && (!a->crv || strcmp(k->crv, a->crv) == 0) && (!k->alg || k->alg == a);
}

/* By kid when the header names one (the kid must exist and its key must fit
 * the algorithm); otherwise the single key that fits. Never by trying every
 * key: that would let a kid-less token pick whichever key verifies. */
static const struct kl_jwk *pick_key(const kl_jwks *ks, const cJSON *hdr, const struct alg_info *a,
                                     char *why, size_t whylen)
{
    const cJSON *kid = cJSON_GetObjectItemCaseSensitive(hdr, "kid");
    if (kid) {
        if (!cJSON_IsString(kid)) {
            fail(why, whylen, "malformed token");
            return NULL;
        }
        const char *problem = "unknown key id";
        for (size_t i = 0; i < ks->n; i++) {
            const struct kl_jwk *k = &ks->keys[i];
            if (!k->kid || strcmp(k->kid, kid->valuestring) != 0)
                continue;
            if (key_fits(k, a))
                return k;
            problem = k->kty != a->kty || (a->crv && strcmp(k->crv, a->crv) != 0)
                ? "key type does not match algorithm" : "key is for another algorithm";
        }
        fail(why, whylen, "%s", problem);
        return NULL;
    }
    const struct kl_jwk *found = NULL;
    size_t nfit = 0;
    for (size_t i = 0; i < ks->n; i++) {
        if (key_fits(&ks->keys[i], a)) {
            found = &ks->keys[i];
            nfit++;
        }
    }
    if (nfit == 1)
        return found;
    if (nfit == 0)
        fail(why, whylen, "no key for algorithm %s", a->name);
    else
        fail(why, whylen, "token has no kid and several keys fit");
    return NULL;
}

/* RSA and EC through libjose. The JWS handed to it carries our header
 * bytes; libjose re-parses them with jansson to choose its algorithm, so we
 * make sure it chose the one we checked. The key object has no "alg",
 * "use" or "key_ops": those were enforced by us (libjose 11 compares a
 * key's alg with the header's using `strcmp(...) < 0`, i.e. only one way). */
static bool verify_jose(jose_cfg_t *cfg, const struct kl_jwk *k, const struct parts *pt,
                        const struct alg_info *a)
{
    json_t *jws = json_pack("{s:s%,s:s%,s:s%}", "protected", pt->h, pt->hl,
                            "payload", pt->p, pt->pl, "signature", pt->s, pt->sl);
    if (!jws)
        return false;
    bool ok = false;
    json_t *hdr = jose_jws_hdr(jws);
    const char *jalg = json_string_value(json_object_get(hdr, "alg"));
    if (jalg && strcmp(jalg, a->name) == 0)
        ok = jose_jws_ver(cfg, jws, NULL, k->pub, false);
    json_decref(hdr);
    json_decref(jws);
    return ok;
}

/* EdDSA through OpenSSL: libjose 11 has no EdDSA. */
static bool verify_ed25519(const struct kl_jwk *k, const struct parts *pt,
                           const unsigned char *sig, size_t siglen)
{
    if (siglen != 64)
        return false;
    EVP_PKEY *pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, k->okp, ED25519_LEN);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = pk && md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, pk) == 1 &&
              EVP_DigestVerify(md, sig, siglen, (const unsigned char *)pt->h, pt->hl + 1 + pt->pl) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pk);
    return ok;
}

/* 1 when present and a finite number, 0 when absent, -1 when invalid. */
static int numeric_claim(const cJSON *claims, const char *name, double *out)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(claims, name);
    if (!c)
        return 0;
    if (!cJSON_IsNumber(c) || !isfinite(c->valuedouble))
        return -1;
    *out = c->valuedouble;
    return 1;
}

static int check_claims(const cJSON *c, const struct kl_jwt_policy *p, int64_t now,
                        char *why, size_t whylen)
{
    const cJSON *iss = cJSON_GetObjectItemCaseSensitive(c, "iss");
    if (!iss)
        return fail(why, whylen, "token has no iss");
    if (!cJSON_IsString(iss) || strcmp(iss->valuestring, p->issuer) != 0)
        return fail(why, whylen, "issuer mismatch");

    const cJSON *aud = cJSON_GetObjectItemCaseSensitive(c, "aud");
    if (!aud)
        return fail(why, whylen, "token has no aud");
    bool aud_ok = false;
    if (cJSON_IsString(aud)) {
        aud_ok = strcmp(aud->valuestring, p->audience) == 0;
    } else if (cJSON_IsArray(aud)) {
        for (const cJSON *e = aud->child; e && !aud_ok; e = e->next)
            aud_ok = cJSON_IsString(e) && strcmp(e->valuestring, p->audience) == 0;
    }
    if (!aud_ok)
        return fail(why, whylen, "audience mismatch");

    double t = (double)now, lw = p->leeway_s > 0 ? (double)p->leeway_s : 0.0;
    double exp = 0, nbf = 0, iat = 0;
    int has_exp = numeric_claim(c, "exp", &exp);
    int has_nbf = numeric_claim(c, "nbf", &nbf);
    int has_iat = numeric_claim(c, "iat", &iat);
    if (has_exp == 0)
        return fail(why, whylen, "token has no exp");
    if (has_exp < 0)
        return fail(why, whylen, "invalid exp claim");
    if (has_nbf < 0)
        return fail(why, whylen, "invalid nbf claim");
    if (has_iat < 0)
        return fail(why, whylen, "invalid iat claim");
    if (t >= exp + lw)
        return fail(why, whylen, "token expired");
    if (has_nbf && t + lw < nbf)
        return fail(why, whylen, "token not yet valid");
    if (has_iat && iat > t + lw)
        return fail(why, whylen, "token issued in the future");
    if (p->max_lifetime_s > 0) {
        double start = has_iat ? iat : has_nbf ? nbf : t;
        if (exp - start > (double)p->max_lifetime_s)
            return fail(why, whylen, "token lifetime too long");
    }
    return 0;
}

int kl_jwt_verify(const char *token, size_t len, const struct kl_jwt_policy *p,
                  const kl_jwks *keys, int64_t now, cJSON **claims,
                  char *why, size_t whylen)
{
    *claims = NULL;
    if (!p || !p->issuer || !p->audience || !keys)
        return fail(why, whylen, "token verifier not configured");
    if (len > KL_JWT_MAX_TOKEN)
        return fail(why, whylen, "token too large");
    struct parts pt;
    if (!token || split(token, len, &pt) < 0)
        return fail(why, whylen, "malformed token");

    /* All three parts must be base64url now; the payload's JSON is read
     * only once its signature holds. */
    size_t rawlen = 0, siglen = 0;
    unsigned char *raw = b64_decode(pt.p, pt.pl, &rawlen);
    unsigned char *sig = b64_decode(pt.s, pt.sl, &siglen);
    cJSON *hdr = raw && sig ? decode_object(pt.h, pt.hl) : NULL;
    if (!hdr) {
        free(raw);
        free(sig);
        return fail(why, whylen, "malformed token");
    }
    int rc = -1;
    cJSON *payload = NULL;
    const struct alg_info *a = NULL;
    const struct kl_jwk *k = NULL;

    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
    if (!cJSON_IsString(alg)) {
        fail(why, whylen, "token header has no alg");
        goto out;
    }
    if (check_alg(alg->valuestring, p, &a, why, whylen) < 0)
        goto out;
    /* We implement no extensions (RFC 7515 4.1.11), so any crit is unknown. */
    if (cJSON_GetObjectItemCaseSensitive(hdr, "crit")) {
        fail(why, whylen, "unsupported critical header");
        goto out;
    }
    if (pt.sl == 0) {
        fail(why, whylen, "token has no signature");
        goto out;
    }
    if (!(k = pick_key(keys, hdr, a, why, whylen)))
        goto out;
    bool ok = k->kty == KTY_OKP ? verify_ed25519(k, &pt, sig, siglen) : verify_jose(keys->cfg, k, &pt, a);
    if (!ok) {
        fail(why, whylen, "bad signature");
        goto out;
    }
    if (!(payload = parse_object(raw, rawlen))) {
        fail(why, whylen, "malformed token");
        goto out;
    }
    if (check_claims(payload, p, now, why, whylen) < 0)
        goto out;
    *claims = payload;
    payload = NULL;
    rc = 0;
out:
    /* A failed check leaves entries in this thread's OpenSSL error queue,
     * where libcurl's TLS code on the same worker would find them. */
    ERR_clear_error();
    cJSON_Delete(payload);
    free(raw);
    free(sig);
    cJSON_Delete(hdr);
    return rc;
}

const char *kl_jwt_peek_issuer(const char *token, size_t len, kl_arena *a)
{
    struct parts pt;
    if (!token || split(token, len, &pt) < 0)
        return NULL;
    cJSON *c = decode_object(pt.p, pt.pl);
    if (!c)
        return NULL;
    const cJSON *iss = cJSON_GetObjectItemCaseSensitive(c, "iss");
    const char *out = cJSON_IsString(iss) ? kl_arena_strdup(a, iss->valuestring) : NULL;
    cJSON_Delete(c);
    return out;
}

/* Does hay[0..hl) hold needle, ASCII case ignored? */
static bool holds_nocase(const unsigned char *hay, size_t hl, const char *needle)
{
    size_t nl = strlen(needle);
    for (size_t i = 0; nl && i + nl <= hl; i++)
        if (strncasecmp((const char *)hay + i, needle, nl) == 0)
            return true;
    return false;
}

/* A base64 character of either alphabet (base64url, or standard as Basic
 * credentials use): its value, or -1. */
static int loose_val(unsigned char c)
{
    return c == '+' ? 62 : c == '/' ? 63 : b64_val(c);
}

size_t kl_b64_loose(const char *s, size_t n, unsigned char *out, size_t *used)
{
    size_t o = 0, i = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; i < n && loose_val((unsigned char)s[i]) >= 0; i++) {
        acc = (acc << 6) | (uint32_t)loose_val((unsigned char)s[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (used)
        *used = i;
    return o;
}

bool kl_jwt_runs_hold(const char *token, size_t len, const char *const *needles, size_t n)
{
    unsigned char *buf = malloc(len / 4 * 3 + 3);
    if (!buf)
        abort();
    bool found = false;
    for (size_t i = 0; i < len && !found;) {
        while (i < len && loose_val((unsigned char)token[i]) < 0)
            i++;
        size_t used, o = kl_b64_loose(token + i, len - i, buf, &used);
        i += used;
        for (size_t k = 0; k < n && !found; k++)
            found = holds_nocase(buf, o, needles[k]);
    }
    free(buf);
    return found;
}

/* ---- templates --------------------------------------------------------- */

/* Follow a '/'-separated path from the top-level claims. */
static const cJSON *claim_at(const cJSON *claims, const char *path, size_t n)
{
    const cJSON *cur = claims;
    size_t i = 0;
    while (cur) {
        const char *seg = path + i;
        const char *slash = memchr(seg, '/', n - i);
        size_t sl = slash ? (size_t)(slash - seg) : n - i;
        const cJSON *next = NULL;
        if (cJSON_IsObject(cur)) {
            for (const cJSON *c = cur->child; c && !next; c = c->next)
                if (c->string && strlen(c->string) == sl && memcmp(c->string, seg, sl) == 0)
                    next = c;
        }
        cur = next;
        if (!slash)
            return cur;
        i += sl + 1;
    }
    return NULL;
}

/* The text a scalar claim contributes, in buf (numbers, booleans) or as the
 * claim's own string. NULL when the claim cannot be used. */
static const char *scalar_text(const cJSON *c, char *buf, size_t buflen, const char **problem)
{
    if (cJSON_IsString(c)) {
        for (const unsigned char *s = (const unsigned char *)c->valuestring; *s; s++) {
            if (*s < 0x20 || *s == 0x7f) {
                *problem = "contains control characters";
                return NULL;
            }
        }
        return c->valuestring;
    }
    if (cJSON_IsBool(c))
        return cJSON_IsTrue(c) ? "true" : "false";
    if (cJSON_IsNumber(c) && isfinite(c->valuedouble)) {
        double v = c->valuedouble;
        if (fabs(v) < 9007199254740992.0 && v == (double)(long long)v)
            snprintf(buf, buflen, "%lld", (long long)v);
        else
            snprintf(buf, buflen, "%.17g", v);
        return buf;
    }
    *problem = c ? "is not a string, number or boolean" : "is missing";
    return NULL;
}

const char *kl_jwt_claim_text(const cJSON *claims, const char *path, char *buf, size_t buflen,
                              const char **problem)
{
    *problem = "is missing";
    return claims && path ? scalar_text(claim_at(claims, path, strlen(path)), buf, buflen, problem) : NULL;
}

int kl_jwt_claim_path_check(const char *path, char *why, size_t whylen)
{
    size_t n = path ? strlen(path) : 0;
    if (n == 0 || path[0] == '/' || path[n - 1] == '/' || strstr(path, "//"))
        return fail(why, whylen, "claim name %s has an empty path segment", path ? path : "");
    return 0;
}

/* One walk serves three purposes: with claims == NULL it only checks the
 * syntax; with out == NULL it measures; otherwise it writes. */
static int expand(const cJSON *claims, const char *t, char *out, size_t *outlen,
                  char *why, size_t whylen)
{
    size_t n = 0;
    while (*t) {
        const char *lit = NULL;
        size_t litlen = 0;
        char num[32];
        if ((t[0] == '{' && t[1] == '{') || (t[0] == '}' && t[1] == '}')) {
            lit = t;
            litlen = 1;
            t += 2;
        } else if (t[0] == '}') {
            return fail(why, whylen, "template has an unmatched }");
        } else if (t[0] != '{') {
            lit = t;
            litlen = strcspn(t, "{}");
            t += litlen;
        } else {
            const char *name = t + 1;
            const char *close = strchr(name, '}');
            if (!close)
                return fail(why, whylen, "template has an unterminated {");
            size_t nl = (size_t)(close - name);
            if (nl == 0 || memchr(name, '{', nl))
                return fail(why, whylen, "template has an empty or nested {}");
            if (name[0] == '/' || name[nl - 1] == '/' || memmem(name, nl, "//", 2))
                return fail(why, whylen, "template claim %.*s has an empty path segment", (int)nl, name);
            t = close + 1;
            if (!claims)
                continue;
            const char *problem = NULL;
            lit = scalar_text(claim_at(claims, name, nl), num, sizeof(num), &problem);
            if (!lit)
                return fail(why, whylen, "claim %.*s %s", (int)nl, name, problem);
            litlen = strlen(lit);
        }
        if (out)
            memcpy(out + n, lit, litlen);
        n += litlen;
    }
    *outlen = n;
    return 0;
}

int kl_jwt_template(const cJSON *claims, const char *tmpl, kl_arena *a,
                    const char **out, char *why, size_t whylen)
{
    *out = NULL;
    size_t n;
    if (!claims || !tmpl)
        return fail(why, whylen, "no claims or template");
    if (expand(claims, tmpl, NULL, &n, why, whylen) < 0)
        return -1;
    char *buf = kl_arena_alloc(a, n + 1);
    if (expand(claims, tmpl, buf, &n, why, whylen) < 0)
        return -1;
    buf[n] = '\0';
    *out = buf;
    return 0;
}

int kl_jwt_template_check(const char *tmpl, char *why, size_t whylen)
{
    size_t n;
    if (!tmpl)
        return fail(why, whylen, "no template");
    return expand(NULL, tmpl, NULL, &n, why, whylen);
}
