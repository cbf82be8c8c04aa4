/* Small helpers shared by the dialects: ids, text splitting, JSON output. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "mockllm.h"

const char ml_alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const char ml_hex[] = "0123456789abcdef";

/* xorshift64*: each worker owns its state, so no locking. */
uint64_t ml_rand(ml_worker *w)
{
    uint64_t x = w->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* splitmix64 finalizer: turns (seed + salt) into well-spread bits, so ids of
 * one reply can be re-derived at any stream position without storing them. */
uint64_t ml_mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

int ml_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* URL percent-decoding of s[0..n) into out (NUL-terminated, cut at cap - 1);
 * a `%` not followed by two hex digits stays as it is. With underscore_space,
 * `_` decodes to a space (directive values cannot hold spaces). Returns the
 * length. */
size_t ml_percent_decode(const char *s, size_t n, char *out, size_t cap, int underscore_space)
{
    size_t i, o = 0;

    if (cap == 0)
        return 0;
    for (i = 0; i < n && o + 1 < cap; i++) {
        if (s[i] == '%' && i + 2 < n && ml_hexval(s[i + 1]) >= 0 && ml_hexval(s[i + 2]) >= 0) {
            out[o++] = (char)(ml_hexval(s[i + 1]) * 16 + ml_hexval(s[i + 2]));
            i += 2;
        } else {
            out[o++] = underscore_space && s[i] == '_' ? ' ' : s[i];
        }
    }
    out[o] = '\0';
    return o;
}

void ml_make_id(uint64_t seed, char *out, size_t cap, const char *prefix,
                const char *alphabet, int n)
{
    size_t plen = strlen(prefix), alen = strlen(alphabet), o;
    int i;

    if (cap == 0)
        return;
    if (plen >= cap)
        plen = cap - 1;
    memcpy(out, prefix, plen);
    o = plen;
    for (i = 0; i < n && o + 1 < cap; i++)
        out[o++] = alphabet[ml_mix(seed + (uint64_t)i * 0x100000001B3ULL) % alen];
    out[o] = '\0';
}

static size_t boundary(const char *s, size_t len, long k, long n)
{
    size_t b = (size_t)(((unsigned long long)k * len) / (unsigned long long)n);

    /* never cut a UTF-8 sequence in two */
    while (b < len && ((unsigned char)s[b] & 0xC0) == 0x80)
        b++;
    return b;
}

/* Piece i of n roughly equal pieces of s; the pieces concatenate to s. */
void ml_piece(const char *s, size_t len, long i, long n, size_t *start, size_t *plen)
{
    size_t a, b;

    if (n < 1)
        n = 1;
    a = boundary(s, len, i, n);
    b = i + 1 >= n ? len : boundary(s, len, i + 1, n);
    *start = a;
    *plen = b > a ? b - a : 0;
}

void ml_add_json(struct evbuffer *b, cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);

    if (s) {
        evbuffer_add(b, s, strlen(s));
        cJSON_free(s);
    }
}

void ml_add_sse(struct evbuffer *b, const char *event, cJSON *j, const char *sep)
{
    if (event)
        evbuffer_add_printf(b, "event: %s\n", event);
    evbuffer_add(b, "data: ", 6);
    ml_add_json(b, j);
    evbuffer_add(b, sep, strlen(sep));
}

/* Length of a valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t need, i;
    unsigned cp;

    if (s[0] < 0xC2 || s[0] > 0xF4)
        return 0;
    need = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : 2;
    if (n < need)
        return 0;
    cp = s[0] & (0x7F >> need);
    for (i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((need == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (need == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return need;
}

/* Writes s as a JSON string literal. Unlike cJSON it takes a length (bodies
 * may hold NUL bytes) and replaces invalid UTF-8 with U+FFFD, so the request
 * log is always valid JSON. */
void ml_json_escape(struct evbuffer *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n, *run = p;

    evbuffer_add(b, "\"", 1);
    while (p < end) {
        unsigned char c = *p;
        size_t u;

        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            p++;
            continue;
        }
        if (c >= 0x80 && (u = utf8_len(p, (size_t)(end - p))) > 0) {
            p += u;
            continue;
        }
        if (p > run)
            evbuffer_add(b, run, (size_t)(p - run));
        switch (c) {
        case '"': evbuffer_add(b, "\\\"", 2); break;
        case '\\': evbuffer_add(b, "\\\\", 2); break;
        case '\n': evbuffer_add(b, "\\n", 2); break;
        case '\r': evbuffer_add(b, "\\r", 2); break;
        case '\t': evbuffer_add(b, "\\t", 2); break;
        default:
            if (c < 0x20)
                evbuffer_add_printf(b, "\\u%04x", c);
            else
                evbuffer_add(b, "\\ufffd", 6);
        }
        p++;
        run = p;
    }
    if (p > run)
        evbuffer_add(b, run, (size_t)(p - run));
    evbuffer_add(b, "\"", 1);
}

/* Copies the value of query parameter name into out; returns 1 if present. */
int ml_query_param(const char *query, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    const char *p = query;

    while (p && *p) {
        const char *amp = strchr(p, '&');
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);

        if (seg > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
            size_t vlen = seg - nlen - 1;
            if (cap) {
                if (vlen >= cap)
                    vlen = cap - 1;
                memcpy(out, p + nlen + 1, vlen);
                out[vlen] = '\0';
            }
            return 1;
        }
        p = amp ? amp + 1 : NULL;
    }
    return 0;
}

/* Object builders with literal keys: cJSON's *CS variant stores the key
 * pointer instead of copying it, which saves a malloc per field. */
static cJSON *attach(cJSON *o, const char *k, cJSON *item)
{
    if (item)
        cJSON_AddItemToObjectCS(o, k, item);
    return item;
}

cJSON *ml_obj_add_str(cJSON *o, const char *k, const char *v)
{
    return attach(o, k, v ? cJSON_CreateString(v) : cJSON_CreateNull());
}

/* cJSON prints every number with "%1.15g" and reads it back with sscanf to
 * check the round trip, which dominated the profile of small responses.
 * Integers (nearly all our numbers) are written by hand as raw JSON. */
cJSON *ml_obj_add_num(cJSON *o, const char *k, double v)
{
    char buf[24], *p = buf + sizeof(buf) - 1;
    long long x;
    int neg;

    if (v != v || v > 1e15 || v < -1e15 || v != (double)(long long)v)
        return attach(o, k, cJSON_CreateNumber(v));
    x = (long long)v;
    neg = x < 0;
    if (neg)
        x = -x;
    *p = '\0';
    do {
        *--p = (char)('0' + x % 10);
        x /= 10;
    } while (x);
    if (neg)
        *--p = '-';
    return attach(o, k, cJSON_CreateRaw(p));
}

cJSON *ml_obj_add_bool(cJSON *o, const char *k, int v)
{
    return attach(o, k, cJSON_CreateBool(v));
}

cJSON *ml_obj_add_null(cJSON *o, const char *k)
{
    return attach(o, k, cJSON_CreateNull());
}

cJSON *ml_obj_add_obj(cJSON *o, const char *k)
{
    return attach(o, k, cJSON_CreateObject());
}

cJSON *ml_obj_add_arr(cJSON *o, const char *k)
{
    return attach(o, k, cJSON_CreateArray());
}

cJSON *ml_obj_add_strn(cJSON *o, const char *k, const char *v, size_t n)
{
    char stackbuf[256];
    char *tmp = n < sizeof(stackbuf) ? stackbuf : malloc(n + 1);
    cJSON *item;

    if (!tmp)
        return NULL;
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    item = cJSON_CreateString(tmp);
    if (tmp != stackbuf)
        free(tmp);
    return attach(o, k, item);
}

/* The content array of a body's newest message ("messages"[-1]."content"),
 * or NULL: Anthropic and Converse alike keep content blocks there. */
cJSON *ml_last_message_content(cJSON *body)
{
    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages"), *content;
    int n = cJSON_IsArray(msgs) ? cJSON_GetArraySize(msgs) : 0;

    if (n == 0)
        return NULL;
    content = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(msgs, n - 1), "content");
    return cJSON_IsArray(content) ? content : NULL;
}

/* A human name for a model id: "claude-sonnet-4-5" -> "Claude Sonnet 4.5". */
void ml_display_name(const char *id, char *out, size_t cap)
{
    size_t o = 0;
    int prev_digit = 0, first = 1;
    const char *p = id;

    while (*p && o + 2 < cap) {
        const char *end = strchr(p, '-');
        size_t n = end ? (size_t)(end - p) : strlen(p), i;
        int digit = n > 0;

        for (i = 0; i < n; i++)
            if (!isdigit((unsigned char)p[i]))
                digit = 0;
        if (!first && o + 1 < cap)
            out[o++] = digit && prev_digit ? '.' : ' ';
        for (i = 0; i < n && o + 1 < cap; i++)
            out[o++] = i == 0 ? (char)toupper((unsigned char)p[i]) : p[i];
        prev_digit = digit;
        first = 0;
        p = end ? end + 1 : p + n;
    }
    out[o] = '\0';
}


const char *ml_method_name(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "UNKNOWN";
    }
}
