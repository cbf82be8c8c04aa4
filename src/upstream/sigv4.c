/* AWS Signature Version 4, written out rather than left to libcurl's
 * CURLOPT_AWS_SIGV4 (which the S3 exporter uses): libcurl signs the path as
 * it is sent, where every AWS service but S3 signs each path segment
 * encoded once more, and a Bedrock model id always holds a ':' (sent as
 * %3A, signed as %253A); the native HTTP/1.1 client needs the headers too.
 * The steps and names follow AWS's "Create a signed AWS API request". */
#include "upstream/sigv4.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/urlquery.h"

static char *hex(kl_arena *a, const unsigned char *d, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char *s = kl_arena_alloc_raw(a, 2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = digits[d[i] >> 4];
        s[2 * i + 1] = digits[d[i] & 15];
    }
    s[2 * n] = '\0';
    return s;
}

static char *sha256_hex(kl_arena *a, const void *d, size_t n)
{
    unsigned char md[32];
    unsigned int ml = 0;
    if (EVP_Digest(d, n, md, &ml, EVP_sha256(), NULL) != 1)
        abort();
    return hex(a, md, ml);
}

static void hmac(const unsigned char *key, size_t kl, const char *msg, unsigned char out[32])
{
    unsigned int ol = 32;
    if (!HMAC(EVP_sha256(), key, (int)kl, (const unsigned char *)msg, strlen(msg), out, &ol))
        abort();
}

/* The path as signed: each byte but the unreserved ones and '/' escaped,
 * '%' included (the path is sent escaped already). */
static char *canonical_uri(kl_arena *a, const char *path, size_t n)
{
    if (!n)
        return "/";
    char *p = kl_arena_strndup(a, path, n);
    char *out = kl_arena_strdup(a, "");
    for (char *seg = p, *slash; seg; seg = slash ? slash + 1 : NULL) {
        slash = strchr(seg, '/');
        if (slash)
            *slash = '\0';
        out = kl_arena_concat(a, out, kl_path_segment_encode(a, seg), slash ? "/" : "", NULL);
    }
    return out;
}

struct param {
    const char *k, *v;          /* encoded as signed */
};

static int by_name_then_value(const void *x, const void *y)
{
    const struct param *a = x, *b = y;
    int c = strcmp(a->k, b->k);
    return c ? c : strcmp(a->v, b->v);
}

/* One name or value of the query as signed: decoded, then escaped as a
 * path segment is ('+' is taken as a plus sign, not a space). Text the
 * decoder refuses (an escaped control byte, a broken escape) is signed as
 * it was sent. */
static const char *query_part(kl_arena *a, const char *s, size_t n)
{
    const char *d = kl_path_segment_decode(a, s, n);
    return d ? kl_path_segment_encode(a, d) : kl_arena_strndup(a, s, n);
}

/* The query as signed: its parameters sorted by name, then value. */
static char *canonical_query(kl_arena *a, const char *q)
{
    if (!q || !*q)
        return "";
    size_t n = 1;
    for (const char *c = q; *c; c++)
        n += *c == '&';
    struct param *v = kl_arena_alloc(a, n * sizeof(*v));
    size_t np = 0;
    for (const char *s = q; *s;) {
        size_t len = strcspn(s, "&");
        if (len) {
            const char *eq = memchr(s, '=', len);
            size_t kl = eq ? (size_t)(eq - s) : len;
            v[np].k = query_part(a, s, kl);
            v[np].v = eq ? query_part(a, eq + 1, len - kl - 1) : "";
            np++;
        }
        s += len + (s[len] == '&');
    }
    qsort(v, np, sizeof(*v), by_name_then_value);
    char *out = kl_arena_strdup(a, "");
    for (size_t i = 0; i < np; i++)
        out = kl_arena_concat(a, out, i ? "&" : "", v[i].k, "=", v[i].v, NULL);
    return out;
}

/* The host is signed as the URL writes it: the configuration leaves a
 * provider's baseurl without its scheme's default port and in lower case
 * (kl_config), which is how both HTTP clients send it. */
size_t kl_sigv4_headers(kl_arena *a, const struct kl_sigv4_cred *c, const char *method, const char *url,
                        const char *body, size_t len, time_t now, const char *out[3])
{
    return kl_sigv4_headers_with(a, c, method, url, body, len, now, NULL, out);
}

size_t kl_sigv4_headers_with(kl_arena *a, const struct kl_sigv4_cred *c, const char *method, const char *url,
                             const char *body, size_t len, time_t now, const char *extra, const char *out[3])
{
    const char *auth = strstr(url, "://");
    auth = auth ? auth + 3 : url;
    size_t hl = strcspn(auth, "/?#");
    const char *path = auth + hl;
    size_t pl = strcspn(path, "?#");
    const char *query = path[pl] == '?' ? kl_arena_strndup(a, path + pl + 1, strcspn(path + pl + 1, "#")) : NULL;
    const char *host = kl_arena_strndup(a, auth, hl);

    struct tm tm;
    gmtime_r(&now, &tm);
    char amz_date[17], day[9];
    strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm);
    strftime(day, sizeof(day), "%Y%m%d", &tm);

    const char *token = c->session_token && *c->session_token ? c->session_token : NULL;
    const char *signed_headers = token ? "host;x-amz-date;x-amz-security-token" : "host;x-amz-date";
    if (extra)
        signed_headers = kl_arena_printf(a, "%s;%.*s", signed_headers, (int)strcspn(extra, ":"), extra);
    char *canonical = kl_arena_concat(a, method, "\n", canonical_uri(a, path, pl), "\n", canonical_query(a, query),
                                      "\n", "host:", host, "\n", "x-amz-date:", amz_date, "\n", NULL);
    if (token)
        canonical = kl_arena_concat(a, canonical, "x-amz-security-token:", token, "\n", NULL);
    if (extra)
        canonical = kl_arena_concat(a, canonical, extra, "\n", NULL);
    canonical = kl_arena_concat(a, canonical, "\n", signed_headers, "\n", sha256_hex(a, body ? body : "", len), NULL);

    const char *scope = kl_arena_concat(a, day, "/", c->region, "/", c->service, "/aws4_request", NULL);
    const char *to_sign = kl_arena_concat(a, "AWS4-HMAC-SHA256\n", amz_date, "\n", scope, "\n",
                                          sha256_hex(a, canonical, strlen(canonical)), NULL);
    unsigned char k[32];
    const char *first = kl_arena_concat(a, "AWS4", c->secret, NULL);
    hmac((const unsigned char *)first, strlen(first), day, k);
    hmac(k, sizeof(k), c->region, k);
    hmac(k, sizeof(k), c->service, k);
    hmac(k, sizeof(k), "aws4_request", k);
    OPENSSL_cleanse((char *)first, strlen(first)); /* the secret's copy in the arena */
    unsigned char sig[32];
    hmac(k, sizeof(k), to_sign, sig);

    size_t n = 0;
    out[n++] = kl_arena_concat(a, "X-Amz-Date: ", amz_date, NULL);
    if (token)
        out[n++] = kl_arena_concat(a, "X-Amz-Security-Token: ", token, NULL);
    out[n++] = kl_arena_concat(a, "Authorization: AWS4-HMAC-SHA256 Credential=", c->access_key_id, "/", scope,
                               ", SignedHeaders=", signed_headers, ", Signature=", hex(a, sig, sizeof(sig)), NULL);
    return n;
}

const char *kl_sigv4_region_of(kl_arena *a, const char *url)
{
    const char *h = strstr(url, "://");
    h = h ? h + 3 : url;
    size_t n = strcspn(h, ":/?#");
    /* service[-fips].REGION.amazonaws.com[.cn], or a VPC endpoint's
     * vpce-….service.REGION.vpce.amazonaws.com */
    const char *end = h + n;
    const char *dot = NULL;
    for (const char *p = h; p + 14 <= end; p++)
        if (!strncmp(p, ".amazonaws.com", 14)) {
            dot = p;
            break;
        }
    if (!dot)
        return NULL;
    if (dot - h > 5 && !strncmp(dot - 5, ".vpce", 5))
        dot -= 5;
    const char *start = dot;
    while (start > h && start[-1] != '.')
        start--;
    if (start == h || start == dot)
        return NULL;
    return kl_arena_strndup(a, start, (size_t)(dot - start));
}
