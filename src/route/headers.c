#include "route/route.h"

#include "core/text.h"
#include "core/urlquery.h"

#include <string.h>
#include <strings.h>

/* A name as a CGI, WSGI or PHP server reads it: case folded and '_' taken
 * for '-', so X_Api_Key is x-api-key there. A header dropped under its own
 * name must be dropped under that twin too, or it reaches such a server
 * anyway (nginx drops every name with '_'; that would also drop Codex's
 * session_id, which routes its prompt cache). */
static bool same_name(const char *name, const char *lower)
{
    for (; *name && *lower; name++, lower++) {
        char c = (char)(*name == '_' ? '-' : (*name | (*name >= 'A' && *name <= 'Z' ? 0x20 : 0)));
        if (c != *lower)
            return false;
    }
    return *name == *lower;
}

/* A listed name and its length. */
struct listed_name {
    const char *s;
    size_t len;
};
#define LISTED(s) {s, sizeof(s) - 1}

/* Every request header meets every name of a list: the length (a '_' twin
 * has its name's length) and then the first byte (| 0x20 folds ASCII case,
 * and maps equal bytes to equal bytes) turn most away before the whole
 * comparison; so every name listed is written lowercase. n is
 * strlen(name). */
static bool listed(const char *name, size_t n, const struct listed_name *list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (list[i].len == n && (name[0] | 0x20) == list[i].s[0] && same_name(name, list[i].s))
            return true;
    return false;
}

static bool credential(const char *name, size_t n)
{
    static const struct listed_name creds[] = {
        LISTED("authorization"), LISTED("proxy-authorization"), LISTED("x-api-key"),
        LISTED("x-goog-api-key"), LISTED("api-key"), LISTED("cookie"),
        /* an AWS SDK's SigV4 session token (a temporary credential) */
        LISTED("x-amz-security-token"),
    };
    return listed(name, n, creds, sizeof(creds) / sizeof(creds[0]));
}

bool kl_route_credential_header(const char *name)
{
    return credential(name, strlen(name));
}

/* Every request header passes here (~700 instructions a header while each
 * listed name was compared byte by byte up to its first difference). */
bool kl_route_drop_request_header(const char *name)
{
    static const struct listed_name drop[] = {
        /* the rest of a SigV4 signature: nothing without it */
        LISTED("x-amz-date"), LISTED("x-amz-content-sha256"),
        /* hop-by-hop (RFC 9110 section 7.6.1) and framing curl sets itself */
        LISTED("connection"), LISTED("keep-alive"), LISTED("proxy-connection"), LISTED("te"),
        LISTED("trailer"), LISTED("transfer-encoding"), LISTED("upgrade"), LISTED("host"),
        LISTED("content-length"), LISTED("expect"), LISTED("accept-encoding"),
        /* the body goes on plain: a compressed one was decoded (listen/body.h) */
        LISTED("content-encoding"),
        /* Google's response field mask: one without usageMetadata would
         * keep an answer's usage from its record */
        LISTED("x-goog-fieldmask"),
    };
    size_t n = strlen(name);
    /* the caller's credentials: the gateway holds the keys */
    if (credential(name, n) || listed(name, n, drop, sizeof(drop) / sizeof(drop[0])))
        return true;
    /* tailscale serve identity headers are for the gateway, not providers */
    return n > 9 && strncasecmp(name, "tailscale", 9) == 0 && (name[9] == '-' || name[9] == '_');
}

bool kl_route_billing_header(const char *name)
{
    static const struct listed_name billing[] = {
        LISTED("openai-organization"), LISTED("openai-project"), LISTED("x-goog-user-project"),
    };
    return listed(name, strlen(name), billing, sizeof(billing) / sizeof(billing[0]));
}

/* Which parameters a caller may not set, by the parameter p[0..len)'s
 * name as a server reads it: percent-decoded (%6Bey), in any case (KEY).
 * PARAM_CREDENTIAL: Gemini's "key", Google's system parameters "$key",
 * "access_token" and "oauth_token" (the query forms of x-goog-api-key and
 * Authorization), and every X-Amz-* parameter of a presigned AWS request
 * (its credential, signature and token, and the algorithm, date and signed
 * headers that go with them): keyless signs with its own key, and AWS
 * refuses a request authenticated both in its query and in its
 * Authorization header; and who pays, "userProject" and "$userProject"
 * (x-goog-user-project). PARAM_FIELD_MASK: "fields"/"$fields", the query
 * form of X-Goog-FieldMask: a mask without usageMetadata would keep an
 * answer's usage from its record, whoever's key it goes with. */
enum param_kind { PARAM_OTHER, PARAM_CREDENTIAL, PARAM_PAYER, PARAM_FIELD_MASK };

static enum param_kind param_kind(const char *p, size_t len)
{
    static const char *const creds[] = {"key", "$key", "access_token", "oauth_token"};
    static const char *const payers[] = {"userproject", "$userproject"};
    char name[24];
    size_t n = 0; /* the name's first 23 characters are enough to tell */
    for (size_t i = 0; i < len && p[i] != '=' && n < sizeof(name) - 1; i++) {
        char c = p[i];
        if (c == '%' && i + 2 < len && kl_hex_digit(p[i + 1]) >= 0 && kl_hex_digit(p[i + 2]) >= 0) {
            c = (char)(kl_hex_digit(p[i + 1]) * 16 + kl_hex_digit(p[i + 2]));
            i += 2;
        }
        name[n++] = c;
    }
    name[n] = '\0';
    if (strcasecmp(name, "fields") == 0 || strcasecmp(name, "$fields") == 0)
        return PARAM_FIELD_MASK;
    for (size_t i = 0; i < sizeof(creds) / sizeof(creds[0]); i++)
        if (strcasecmp(name, creds[i]) == 0)
            return PARAM_CREDENTIAL;
    for (size_t i = 0; i < sizeof(payers) / sizeof(payers[0]); i++)
        if (strcasecmp(name, payers[i]) == 0)
            return PARAM_PAYER;
    return strncasecmp(name, "x-amz-", 6) == 0 ? PARAM_CREDENTIAL : PARAM_OTHER;
}

const char *kl_route_strip_key_param(kl_arena *a, const char *query, bool credentials)
{
    if (!query || !*query)
        return NULL;
    size_t n = strlen(query);
    char *out = kl_arena_alloc(a, n + 1);
    size_t o = 0;
    const char *p = query;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        enum param_kind k = param_kind(p, len);
        bool drop = k == PARAM_FIELD_MASK || (credentials && (k == PARAM_CREDENTIAL || k == PARAM_PAYER));
        if (!drop && len > 0) {
            if (o)
                out[o++] = '&';
            memcpy(out + o, p, len);
            o += len;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    out[o] = '\0';
    return o ? out : NULL;
}

bool kl_route_query_credential(const char *query)
{
    for (const char *p = query; p && *p;) {
        size_t len = strcspn(p, "&");
        if (param_kind(p, len) == PARAM_CREDENTIAL)
            return true;
        p += len;
        if (*p == '&')
            p++;
    }
    return false;
}

const char **kl_route_query_credentials(kl_arena *a, const char *query)
{
    size_t n = 1;
    for (const char *q = query; q && *q; q++)
        n += *q == '&';
    const char **v = kl_arena_alloc(a, (n + 1) * sizeof(*v));
    n = 0;
    for (const char *p = query; p && *p;) {
        size_t len = strcspn(p, "&");
        const char *eq = memchr(p, '=', len);
        if (eq && param_kind(p, len) == PARAM_CREDENTIAL)
            v[n++] = kl_query_decode(a, eq + 1, len - (size_t)(eq + 1 - p));
        p += len;
        if (*p == '&')
            p++;
    }
    v[n] = NULL;
    return v;
}

const char *const *kl_route_key_spellings(kl_arena *a, const char *key)
{
    size_t kl = strlen(key);
    if (kl < KL_MASK_MIN_KEY)
        return NULL;
    const char **v = kl_arena_alloc(a, 7 * sizeof(char *));
    size_t n = 0;
    v[n++] = key;
    if (strchr(key, '/')) {
        char *j = kl_arena_alloc(a, 2 * kl + 1), *o = j;
        for (const char *k = key; *k; k++) {
            if (*k == '/')
                *o++ = '\\';
            *o++ = *k;
        }
        *o = '\0';
        v[n++] = j;
    }
    static const char unreserved[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
    if (strspn(key, unreserved) != kl) {
        /* every byte but the unreserved ones, in either case of hex digits;
         * and with '/' kept, as Python's urllib.parse.quote writes it */
        for (int form = 0; form < 3; form++) {
            char *u = kl_arena_alloc(a, 3 * kl + 1), *o = u;
            const char *hex = form == 1 ? "0123456789abcdef" : "0123456789ABCDEF";
            for (const unsigned char *k = (const unsigned char *)key; *k; k++) {
                if (strchr(unreserved, *k) || (form == 2 && *k == '/')) {
                    *o++ = (char)*k;
                } else {
                    *o++ = '%';
                    *o++ = hex[*k >> 4];
                    *o++ = hex[*k & 15];
                }
            }
            *o = '\0';
            bool seen = false;
            for (size_t i = 0; i < n; i++)
                seen |= strcmp(u, v[i]) == 0;
            if (!seen)
                v[n++] = u;
        }
    }
    v[n] = NULL;
    return v;
}

/* Does s[0..n) hold any of keys? */
static bool holds_any(const char *s, size_t n, const char *const *keys)
{
    for (size_t i = 0; keys && keys[i]; i++)
        if (memmem(s, n, keys[i], strlen(keys[i])))
            return true;
    return false;
}

/* Does a line of head start with x-keyless- (any case): one the copy below
 * drops? A look at each line's start, where strcasestr over the whole head
 * had cost ~1,300 instructions of every answer. */
static bool own_line(const char *head)
{
    for (const char *p = head;;) {
        if ((*p | 0x20) == 'x' && strncasecmp(p, "x-keyless-", 10) == 0)
            return true;
        const char *nl = strchr(p, '\n');
        if (!nl)
            return false;
        p = nl + 1;
    }
}

const char *kl_route_response_headers(kl_arena *a, const char *head, const char *const *keys, bool *had_key)
{
    *had_key = false;
    bool key = holds_any(head, strlen(head), keys);
    if (!key && !own_line(head))
        return head; /* the common case: one scan each, no copy */
    char *out = kl_arena_alloc(a, strlen(head) + 1);
    size_t o = 0;
    for (const char *p = head; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) + 1 : strlen(p);
        bool own = strncasecmp(p, "x-keyless-", 10) == 0;
        bool holds_key = key && holds_any(p, n, keys);
        if (holds_key)
            *had_key = true;
        if (!own && !holds_key) {
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
    }
    out[o] = '\0';
    return out;
}

/* The longest tail of s[0..n) that is a proper prefix of any of keys (0
 * when none). */
static size_t key_prefix_tail(const char *s, size_t n, const char *const *keys)
{
    size_t best = 0;
    for (size_t i = 0; keys[i]; i++) {
        size_t kl = strlen(keys[i]);
        for (size_t k = kl - 1 < n ? kl - 1 : n; k > best; k--)
            if (s[n - k] == keys[i][0] && memcmp(s + n - k, keys[i], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

const char *kl_route_mask_key(kl_arena *a, const char *const *keys, char **carry, size_t *carry_len,
                              const char *data, size_t len, size_t *out_len, bool *masked)
{
    *out_len = len;
    /* no keys: none set, or a "key" of a few characters (a placeholder for
     * a server that wants none), no secret, where masking every "k" would
     * garble the answer */
    if (!keys || (!data && !*carry_len))
        return data;
    /* the common case: nothing waits, no key in the piece, and its end
     * cannot begin one (an event ends "\n\n"): relayed as it came */
    if (!*carry_len && data && !holds_any(data, len, keys) && !key_prefix_tail(data, len, keys))
        return data;
    size_t total = *carry_len + len;
    char *buf = kl_arena_alloc(a, total + 1);
    if (*carry_len)
        memcpy(buf, *carry, *carry_len);
    if (len)
        memcpy(buf + *carry_len, data, len);
    for (size_t i = 0; keys[i]; i++) {
        size_t kl = strlen(keys[i]);
        for (char *p = buf; (p = memmem(p, (size_t)(buf + total - p), keys[i], kl)); p += kl) {
            memset(p, '*', kl);
            *masked = true;
        }
    }
    size_t keep = data ? key_prefix_tail(buf, total, keys) : 0;
    *carry = keep ? kl_arena_strndup(a, buf + total - keep, keep) : NULL;
    *carry_len = keep;
    *out_len = total - keep;
    return buf;
}
