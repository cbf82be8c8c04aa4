/* OIDC workload identity tokens: offline verification of a compact JWS
 * against a configured JWKS, and the claim templates that turn a verified
 * token into an identity string.
 *
 * Only public-key algorithms are accepted (RS*, PS*, ES256/384/512, EdDSA);
 * "none" and HS* are refused whatever the policy lists, so a token can never
 * choose a symmetric check keyed with our public key. Signatures are checked
 * with libjose (EdDSA, which libjose 11 lacks, with OpenSSL directly); the
 * claims are read with cJSON. libjose's jansson types stay inside jwt.c. */
#ifndef KL_JWT_H
#define KL_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "core/arena.h"

#define KL_JWT_MAX_TOKEN (16u * 1024u)   /* bytes of compact serialization */

/* An immutable, parsed key set. Safe to share between worker threads. */
typedef struct kl_jwks kl_jwks;

/* Parse a JWKS document {"keys":[...]}. Keys keyless cannot use for
 * verifying (use other than "sig", key_ops without "verify", symmetric
 * "oct" keys, unknown kty or curve, RSA shorter than 2048 bits, an "alg"
 * that does not fit the key) are skipped; kl_jwks_count() says how many
 * were kept. Returns NULL with a reason in why when the document is not a
 * JWKS or keeps no key. Private members in the input are never retained. */
kl_jwks *kl_jwks_parse(const char *json, size_t len, char *why, size_t whylen);
/* Is name a JWS algorithm keyless verifies (RS*, PS*, ES*, EdDSA; exactly,
 * as JWS names are case-sensitive)? */
bool kl_jwt_alg_supported(const char *name);
void kl_jwks_free(kl_jwks *k);
size_t kl_jwks_count(const kl_jwks *k);

struct kl_jwt_policy {
    const char *issuer;          /* exact match of iss */
    const char *audience;        /* required: aud (string, or array containing it) */
    const char *const *algs;     /* allow-list, e.g. {"RS256","ES256"}; none and HS* never pass */
    size_t nalgs;
    int64_t leeway_s;            /* applied to exp, nbf, iat */
    int64_t max_lifetime_s;      /* exp - iat (else exp - nbf, else exp - now) must not
                                    exceed this; 0 = no cap */
};

/* Verify a compact JWS. On success returns 0 and *claims (a cJSON object,
 * the caller frees it with cJSON_Delete). On failure returns -1, *claims is
 * NULL, and why holds a short reason safe to show the caller ("token
 * expired", "audience mismatch", "bad signature", ...); it never contains
 * the token or any byte of it. now is seconds since the epoch. */
int kl_jwt_verify(const char *token, size_t len, const struct kl_jwt_policy *p,
                  const kl_jwks *keys, int64_t now, cJSON **claims,
                  char *why, size_t whylen);

/* Does the base64url segment s[0..n) decode to what begins a JSON object
 * (white space, then '{'), as a JWS header does? */
bool kl_jwt_segment_is_object(const char *s, size_t n);

/* The unverified payload's iss, to choose the issuer policy before
 * verifying. Returns an arena copy, or NULL when the token is malformed or
 * has no string iss. Never trust it for anything else. len is the
 * caller's to bound (KL_JWT_MAX_TOKEN before verifying; a request's head
 * bounds any other). */
const char *kl_jwt_peek_issuer(const char *token, size_t len, kl_arena *a);

/* Does a run of base64url characters in token[0..len) (a segment, cut at
 * '.' or at any other byte) decode to bytes that hold one of
 * needles[0..n), ASCII case ignored? For a token too malformed to name its
 * issuer: whatever it is, a provider could still read the claims in it,
 * or the whole token beside the bytes that spoilt it. */
bool kl_jwt_runs_hold(const char *token, size_t len, const char *const *needles, size_t n);

/* The run of base64 characters of either alphabet at s[0..n) decoded
 * leniently, up to the first other byte (padding included), whatever bits
 * end it dropped: out needs room for n / 4 * 3 + 3 bytes. Returns the bytes
 * written; *used (unless NULL) the characters read. */
size_t kl_b64_loose(const char *s, size_t n, unsigned char *out, size_t *used);

/* Expand a template such as "repo:{repository}@{ref}" or
 * "k8s:{kubernetes.io/namespace}/{kubernetes.io/serviceaccount/name}" from
 * claims: {name} is a top-level claim and '/' descends into objects; "{{"
 * and "}}" are literal braces. Strings are used as they are (control
 * characters refused), numbers and booleans printed. A missing or
 * non-scalar claim fails: returns -1 and why names the claim. On success
 * *out is an arena string. */
int kl_jwt_template(const cJSON *claims, const char *tmpl, kl_arena *a,
                    const char **out, char *why, size_t whylen);

/* The text of the claim at path ('/' descends into objects) as a template
 * would use it: a string as it is, a number or boolean printed into buf.
 * NULL when it is missing, not a scalar or holds control characters, with
 * *problem saying which. */
const char *kl_jwt_claim_text(const cJSON *claims, const char *path, char *buf, size_t buflen,
                              const char **problem);

/* A claim path for kl_jwt_claim_text: non-empty segments. 0, or -1 and why. */
int kl_jwt_claim_path_check(const char *path, char *why, size_t whylen);

/* Check a template's syntax without claims (for configuration checks).
 * Returns 0, or -1 with the problem in why. */
int kl_jwt_template_check(const char *tmpl, char *why, size_t whylen);

#endif
