#include "core/jsonscan.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "core/jsoncheck.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* ---- validation ---- */

/* Prompts are long strings, so stepping through strings dominates every
 * pass over a body, and source code pasted into a prompt has an escape
 * every few dozen bytes. A mask of the bytes that may end or escape a string
 * (quote, backslash, and for validation control bytes), sixteen bytes per
 * SSE2 compare; the loops below consume every hit of a block without
 * leaving it. */
static unsigned special_mask(const unsigned char *p, bool controls)
{
#ifdef __SSE2__
    /* x86-64 always has SSE2 */
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i m = _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                             _mm_cmpeq_epi8(x, _mm_set1_epi8('\\')));
    if (controls) {     /* x <= 0x1f, unsigned: max(x, 0x1f) == 0x1f */
        __m128i c = _mm_set1_epi8(0x1f);
        m = _mm_or_si128(m, _mm_cmpeq_epi8(_mm_max_epu8(x, c), c));
    }
    return (unsigned)_mm_movemask_epi8(m);
#else
    unsigned m = 0;
    for (unsigned k = 0; k < 16; k++)
        m |= (unsigned)(p[k] == '"' || p[k] == '\\' || (controls && p[k] < 0x20)) << k;
    return m;
#endif
}

/* The mask of a block of width 16 or 64 bytes. A string's first block is
 * 16 bytes, since most strings (keys, roles, ids) end there; the following
 * ones are 64, one mask word, so a block's several escapes cost one loop
 * exit (one mispredicted branch) instead of one per 16 bytes. */
static uint64_t block_mask(const unsigned char *p, size_t width, bool controls)
{
    uint64_t m = special_mask(p, controls);
    if (width == 64)
        m |= (uint64_t)special_mask(p + 16, controls) << 16 | (uint64_t)special_mask(p + 32, controls) << 32 |
             (uint64_t)special_mask(p + 48, controls) << 48;
    return m;
}

/* The escapes that are one letter after the backslash. */
static bool simple_escape(unsigned char c)
{
    switch (c) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        return true;
    default:
        return false;
    }
}

static bool json_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static size_t strict_ws(const unsigned char *p, size_t len, size_t i)
{
    while (i < len && json_ws(p[i]))
        i++;
    return i;
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The four hex digits at i as a number, or -1 with *bad at the first
 * byte that is not one. */
static long hex4(const unsigned char *p, size_t len, size_t i, size_t *bad)
{
    long v = 0;
    for (size_t k = 0; k < 4; k++) {
        if (i + k >= len || !is_hex(p[i + k])) {
            *bad = i + k < len ? i + k : len;
            return -1;
        }
        unsigned char c = p[i + k];
        v = v * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

/* The string whose opening quote is at i: index past its closing quote, or
 * (size_t)-1 with *bad at the offending byte. */
static size_t check_string(const unsigned char *p, size_t len, size_t i, size_t *bad)
{
    i++;
    for (;;) {
        /* whole chunks (and one byte more, for an escape at a chunk's end);
         * stops at a quote, a control byte or a \u escape */
        for (size_t width = 16; i + width + 1 <= len; width = 64) {
            uint64_t mask = block_mask(p + i, width, true);
            unsigned k = 0;
            size_t step = width;
            for (; mask; mask &= ~(3ull << k)) {
                k = (unsigned)__builtin_ctzll(mask);
                if (p[i + k] != '\\' || !simple_escape(p[i + k + 1]))
                    break;
                if (k == width - 1)
                    step = width + 1;
            }
            if (mask) {
                i += k;
                break;
            }
            i += step;
        }
        while (i < len && p[i] >= 0x20 && p[i] != '"' && p[i] != '\\')
            i++;
        if (i >= len) {
            *bad = len;
            return (size_t)-1;
        }
        if (p[i] == '"')
            return i + 1;
        if (p[i] != '\\') {             /* a raw control character */
            *bad = i;
            return (size_t)-1;
        }
        if (++i >= len) {
            *bad = len;
            return (size_t)-1;
        }
        if (p[i] == 'u') {
            long cu = hex4(p, len, i + 1, bad);
            if (cu < 0)
                return (size_t)-1;
            i += 5;
            /* UTF-16 surrogates come in pairs; a lone half is no character */
            if (cu >= 0xdc00 && cu <= 0xdfff) {
                *bad = i - 6;
                return (size_t)-1;
            }
            if (cu >= 0xd800 && cu <= 0xdbff) {
                long lo = i + 1 < len && p[i] == '\\' && p[i + 1] == 'u' ? hex4(p, len, i + 2, bad) : -2;
                if (lo == -1)
                    return (size_t)-1;
                if (lo < 0xdc00 || lo > 0xdfff) {
                    *bad = i - 6;
                    return (size_t)-1;
                }
                i += 6;
            }
        } else if (simple_escape(p[i])) {
            i++;
        } else {
            *bad = i;
            return (size_t)-1;
        }
    }
}

static size_t digits(const unsigned char *p, size_t len, size_t i)
{
    while (i < len && p[i] >= '0' && p[i] <= '9')
        i++;
    return i;
}

/* -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static size_t check_number(const unsigned char *p, size_t len, size_t i, size_t *bad)
{
    if (i < len && p[i] == '-')
        i++;
    if (i < len && p[i] == '0') {
        i++;
    } else if (i < len && p[i] >= '1' && p[i] <= '9') {
        i = digits(p, len, i);
    } else {
        *bad = i;
        return (size_t)-1;
    }
    if (i < len && p[i] == '.') {
        size_t d = digits(p, len, i + 1);
        if (d == i + 1) {
            *bad = d;
            return (size_t)-1;
        }
        i = d;
    }
    if (i < len && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < len && (p[i] == '+' || p[i] == '-'))
            i++;
        size_t d = digits(p, len, i);
        if (d == i) {
            *bad = d;
            return (size_t)-1;
        }
        i = d;
    }
    return i;
}

static size_t check_literal(const unsigned char *p, size_t len, size_t i, const char *word,
                            size_t *bad)
{
    for (size_t k = 0; word[k]; k++)
        if (i + k >= len || p[i + k] != (unsigned char)word[k]) {
            *bad = i + k < len ? i + k : len;
            return (size_t)-1;
        }
    return i + strlen(word);
}

/* An explicit stack (one bit per level: object or array) instead of
 * recursion, so a body of a million '[' cannot exhaust the worker's stack. */
static bool key_equals(const char *raw, size_t n, const char *key);
static bool key_matches(const char *raw, size_t n, const char *key, bool fold);

int kl_json_validate(const char *s, size_t len, size_t *err_at)
{
    return kl_json_validate_members(s, len, err_at, NULL, 0);
}

int kl_json_validate_members(const char *s, size_t len, size_t *err_at,
                             struct kl_json_want *w, size_t nw)
{
    const unsigned char *p = (const unsigned char *)s;
    uint64_t is_object[KL_JSON_MAX_DEPTH / 64] = {0};
    size_t depth = 0, bad = 0;
    enum { VALUE, KEY, AFTER } want = VALUE;
    size_t i = strict_ws(p, len, 0);
    bool top_object = i < len && p[i] == '{';
    struct kl_json_want *member = NULL;     /* the top-level member being read */

    for (size_t k = 0; k < nw; k++) {
        w[k].start = w[k].end = 0;
        w[k].count = w[k].folded = 0;
    }
    for (;;) {
        if (want == KEY) {
            if (i >= len || p[i] != '"') {
                bad = i;
                break;
            }
            size_t kstart = i + 1;
            if ((i = check_string(p, len, i, &bad)) == (size_t)-1)
                break;
            if (depth == 1 && top_object) {
                member = NULL;
                bool known = false;
                for (size_t k = 0; k < nw && !known; k++)
                    if (key_equals(s + kstart, i - 1 - kstart, w[k].key)) {
                        known = true;
                        if (w[k].count++ == 0)
                            member = &w[k];
                    }
                for (size_t k = 0; k < nw && !known; k++)
                    if (key_matches(s + kstart, i - 1 - kstart, w[k].key, true)) {
                        known = true;
                        w[k].folded++;
                    }
            }
            i = strict_ws(p, len, i);
            if (i >= len || p[i] != ':') {
                bad = i;
                break;
            }
            i = strict_ws(p, len, i + 1);
            want = VALUE;
            continue;
        }
        if (want == AFTER) {
            if (depth == 1 && member) {         /* a top-level member's value ends */
                member->end = i;
                member = NULL;
            }
            i = strict_ws(p, len, i);
            if (depth == 0) {
                if (i == len)
                    return 0;
                bad = i;
                break;
            }
            bool obj = is_object[(depth - 1) / 64] >> ((depth - 1) % 64) & 1;
            if (i < len && p[i] == ',') {
                i = strict_ws(p, len, i + 1);
                want = obj ? KEY : VALUE;
            } else if (i < len && p[i] == (obj ? '}' : ']')) {
                depth--;
                i++;
            } else {
                bad = i;
                break;
            }
            continue;
        }
        /* a value starts at i */
        if (depth == 1 && member)
            member->start = i;
        if (i >= len) {
            bad = len;
            break;
        }
        switch (p[i]) {
        case '{':
        case '[': {
            if (depth == KL_JSON_MAX_DEPTH) {
                bad = i;
                goto fail;
            }
            bool obj = p[i] == '{';
            uint64_t bit = (uint64_t)1 << (depth % 64);
            if (obj)
                is_object[depth / 64] |= bit;
            else
                is_object[depth / 64] &= ~bit;
            depth++;
            i = strict_ws(p, len, i + 1);
            if (i < len && p[i] == (obj ? '}' : ']')) {
                depth--;
                i++;
                want = AFTER;
            } else {
                want = obj ? KEY : VALUE;
            }
            continue;
        }
        case '"':
            i = check_string(p, len, i, &bad);
            break;
        case 't':
            i = check_literal(p, len, i, "true", &bad);
            break;
        case 'f':
            i = check_literal(p, len, i, "false", &bad);
            break;
        case 'n':
            i = check_literal(p, len, i, "null", &bad);
            break;
        default:
            i = check_number(p, len, i, &bad);
            break;
        }
        if (i == (size_t)-1)
            break;
        want = AFTER;
    }
fail:
    if (err_at)
        *err_at = bad;
    return -1;
}

/* ---- scanning valid text ---- */

/* cJSON skips every byte up to 0x20 as white space. Response bodies reach
 * these functions without kl_json_validate, so they agree with cJSON. */
static size_t ws(const char *s, size_t len, size_t i)
{
    while (i < len && (unsigned char)s[i] <= 0x20)
        i++;
    return i;
}

static size_t skip_string(const char *s, size_t len, size_t i)
{
    const unsigned char *p = (const unsigned char *)s;
    i++;
    for (size_t width = 16; i + width + 1 <= len; width = 64) {
        uint64_t mask = block_mask(p + i, width, false);
        size_t step = width;
        for (; mask; mask &= ~(3ull << __builtin_ctzll(mask))) {
            unsigned k = (unsigned)__builtin_ctzll(mask);
            if (p[i + k] == '"')
                return i + k + 1;
            if (k == width - 1) /* a backslash escapes the next byte */
                step = width + 1;
        }
        i += step;
    }
    for (; i < len; i++) {
        if (p[i] == '\\')
            i++;
        else if (p[i] == '"')
            return i + 1;
    }
    return (size_t)-1;
}

const char *kl_json_value_at(const char *p, const char *end)
{
    while (p < end && (unsigned char)*p <= 0x20)
        p++;
    if (p >= end || *p != ':')
        return NULL;
    for (p++; p < end && (unsigned char)*p <= 0x20; p++)
        ;
    return p < end ? p : NULL;
}

char kl_json_value_after_key(const char *p, const char *end)
{
    const char *v = kl_json_value_at(p, end);
    return v ? *v : 0;
}

size_t kl_json_skip_value(const char *s, size_t len, size_t i)
{
    i = ws(s, len, i);
    if (i >= len)
        return (size_t)-1;
    if (s[i] == '"')
        return skip_string(s, len, i);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        for (; i < len; i++) {
            char c = s[i];
            if (c == '"') {
                i = skip_string(s, len, i);
                if (i == (size_t)-1)
                    return i;
                i--;
            } else if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return i + 1;
            }
        }
        return (size_t)-1;
    }
    while (i < len && s[i] != ',' && s[i] != '}' && s[i] != ']' && (unsigned char)s[i] > 0x20)
        i++;
    return i;
}

size_t kl_json_object_open(const char *s, size_t len)
{
    size_t i = ws(s, len, 0);
    return (i < len && s[i] == '{') ? i + 1 : (size_t)-1;
}

/* Does the decoded name s[0..n) equal the ASCII key as Go's JSON reader
 * folds names: ASCII letters in either case, and the two other letters
 * whose case folds to an ASCII one, the Kelvin sign (U+212A) for k and the
 * long s (U+017F) for s ("max_to\u212Aens" is max_tokens to Ollama). */
static bool go_fold_equal(const char *s, size_t n, const char *key)
{
    size_t i = 0;
    for (; *key; key++) {
        char k = (char)tolower((unsigned char)*key);
        if (i < n && tolower((unsigned char)s[i]) == k)
            i++;
        else if (k == 'k' && i + 3 <= n && memcmp(s + i, "\xe2\x84\xaa", 3) == 0)
            i += 3;
        else if (k == 's' && i + 2 <= n && memcmp(s + i, "\xc5\xbf", 2) == 0)
            i += 2;
        else
            return false;
    }
    return i == n;
}

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c | 0x20) : c;
}

/* key_matches past its first byte; apart, so that the first-byte test
 * below is inlined where keys are compared and a key turned away costs no
 * call (the registers this one saves cost more than the test). */
__attribute__((noinline)) static bool key_matches_rest(const char *raw, size_t n, const char *key, bool fold)
{
    if (!memchr(raw, '\\', n))
        return fold ? go_fold_equal(raw, n, key)
                    : (n == 0 || raw[0] == key[0]) && strnlen(key, n + 1) == n && memcmp(raw, key, n) == 0;
    if (kl_json_has_nul_escape(raw, n))
        return false;
    cJSON *k = cJSON_ParseWithLength(raw - 1, n + 2);
    bool eq = cJSON_IsString(k) && (fold ? go_fold_equal(k->valuestring, strlen(k->valuestring), key)
                                         : strcmp(k->valuestring, key) == 0);
    cJSON_Delete(k);
    return eq;
}

/* Does the key written as raw[0..n) (between its quotes) read as key, as a
 * JSON parser decodes it; with fold, as Go's reader folds it
 * (go_fold_equal)? A key spelled with a NUL ("max_tokens\u0000") is another
 * key to the provider's parser, not a shorter one: cJSON's C string would
 * stop at the NUL, and a cap the provider never reads would be taken for
 * the request's. */
static inline bool key_matches(const char *raw, size_t n, const char *key, bool fold)
{
    /* this runs for every member of every object scanned, against every
     * key wanted (~120 calls a request): most differ in their first byte,
     * which is the decoded key's first byte unless it starts an escape or,
     * above ASCII, a letter Go folds, so that is checked before anything is
     * searched or measured */
    if (n && raw[0] != '\\' && !((unsigned char)raw[0] & 0x80) &&
        (fold ? ascii_lower(raw[0]) != ascii_lower(key[0]) : raw[0] != key[0]))
        return false;
    return key_matches_rest(raw, n, key, fold);
}

static bool key_equals(const char *raw, size_t n, const char *key)
{
    return key_matches(raw, n, key, false);
}

/* kl_json_scan_members for an object that starts s[0..len) and may be
 * followed by more text (an array element): the index just past its closing
 * brace, or (size_t)-1. */
static size_t scan_object(const char *s, size_t len, struct kl_json_want *w, size_t nw)
{
    for (size_t k = 0; k < nw; k++) {
        w[k].start = w[k].end = 0;
        w[k].count = 0;
    }
    size_t i = kl_json_object_open(s, len);
    if (i == (size_t)-1)
        return i;
    i = ws(s, len, i);
    if (i < len && s[i] == '}')
        return i + 1;
    for (;;) {
        if (i >= len || s[i] != '"')
            return (size_t)-1;
        size_t kend = skip_string(s, len, i);
        if (kend == (size_t)-1)
            return kend;
        const char *key = s + i + 1;
        size_t klen = kend - i - 2;
        i = ws(s, len, kend);
        if (i >= len || s[i] != ':')
            return (size_t)-1;
        size_t v = ws(s, len, i + 1);
        size_t e = kl_json_skip_value(s, len, v);
        if (e == (size_t)-1 || e <= v)
            return (size_t)-1;
        for (size_t k = 0; k < nw; k++)
            if (key_equals(key, klen, w[k].key)) {
                if (w[k].count++ == 0) {
                    w[k].start = v;
                    w[k].end = e;
                }
                break;
            }
        i = ws(s, len, e);
        if (i < len && s[i] == '}')
            return i + 1;
        if (i >= len || s[i] != ',')
            return (size_t)-1;
        i = ws(s, len, i + 1);
    }
}

int kl_json_scan_members(const char *s, size_t len, struct kl_json_want *w, size_t nw)
{
    return scan_object(s, len, w, nw) == (size_t)-1 ? -1 : 0;
}

bool kl_json_array_next(const char *s, size_t len, size_t *pos, size_t *vstart, size_t *vend,
                        struct kl_json_want *w, size_t nw)
{
    size_t i = *pos;
    if (i == 0) {
        i = ws(s, len, 0);
        if (i >= len || s[i] != '[')
            return false;
        i++;
    } else {
        i = ws(s, len, i);
        if (i >= len || s[i] != ',')
            return false;
        i++;
    }
    i = ws(s, len, i);
    if (i >= len || s[i] == ']')
        return false;
    size_t e;
    if (nw && s[i] == '{') {
        e = scan_object(s + i, len - i, w, nw);
        e = e == (size_t)-1 ? e : i + e;
    } else {
        for (size_t k = 0; k < nw; k++)
            w[k].start = w[k].end = w[k].count = 0;
        e = kl_json_skip_value(s, len, i);
    }
    if (e == (size_t)-1 || e <= i)
        return false;
    *vstart = i;
    *vend = e;
    *pos = e;
    return true;
}

bool kl_json_member_next(const char *s, size_t len, size_t *pos, const char **key,
                         size_t *klen, size_t *vstart)
{
    size_t i = *pos;
    if (i == 0) {
        i = kl_json_object_open(s, len);
        if (i == (size_t)-1)
            return false;
    } else {
        i = kl_json_skip_value(s, len, i);      /* the previous member's value */
        if (i == (size_t)-1)
            return false;
        i = ws(s, len, i);
        if (i < len && s[i] == ',')
            i++;
        else if (i >= len || s[i] != '}')
            return false;
    }
    i = ws(s, len, i);
    if (i < len && s[i] == '}') {
        *pos = i + 1;
        return false;
    }
    if (i >= len || s[i] != '"')
        return false;
    size_t kend = skip_string(s, len, i);
    if (kend == (size_t)-1)
        return false;
    *key = s + i + 1;
    *klen = kend - i - 2;
    i = ws(s, len, kend);
    if (i >= len || s[i] != ':')
        return false;
    *vstart = *pos = ws(s, len, i + 1);
    return true;
}

bool kl_json_string_prefix(const char *s, size_t len, size_t max, const char **raw,
                           size_t *raw_len)
{
    size_t i = ws(s, len, 0);
    if (i >= len || s[i] != '"')
        return false;
    size_t bound = len - i > max + 2 ? i + max + 2 : len;
    size_t e = skip_string(s, bound, i);
    *raw = s + i + 1;
    *raw_len = e == (size_t)-1 ? bound - i - 1 : e - i - 2;
    if (*raw_len > max)
        *raw_len = max;
    return true;
}
