/* Control directives: `x-mock: k=v;k=v` headers and `[[mock k=v;k=v]]` body
 * markers that tell mockllm how to answer one request. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mockllm.h"

#define ML_EVENTS_MAX 10000000L
#define ML_COUNT_MAX 1000000000000L

void ml_directives_init(ml_directives *d)
{
    memset(d, 0, sizeof(*d));
    d->in = 100;
    d->out = 20;
    d->cache_read = 40;
    d->cache_write = 8;
    d->reasoning = 6;
    d->events = 4;
    d->size = -1;
    d->retry_after = -1;
    d->reset_after = -1;
    d->stream_error_at = -1;
}

void ml_directives_free(ml_directives *d)
{
    free(d->text);
    free(d->model);
    free(d->tool_buf);
    d->text = d->model = d->tool_buf = NULL;
    d->ntools = 0;
}

const char *ml_directives_text(const ml_directives *d)
{
    return d->text ? d->text : ML_DEFAULT_TEXT;
}

/* `size=N`: the reply text becomes exactly N bytes (a little less if that
 * would cut a UTF-8 character) of the text repeated, for large-body tests. */
int ml_directives_expand(ml_directives *d)
{
    const char *unit = ml_directives_text(d);
    size_t ulen = strlen(unit), n, o;
    char *big;

    if (d->size < 0)
        return 0;
    n = (size_t)d->size;
    big = malloc(n + 1);
    if (!big)
        return -1;
    for (o = 0; ulen > 0 && o < n; o += ulen)
        memcpy(big + o, unit, n - o < ulen ? n - o : ulen);
    if (ulen == 0)
        memset(big, ' ', n);
    if (n > 0) {
        /* do not end inside a UTF-8 sequence */
        size_t start = n - 1, need;
        unsigned char lead;

        while (start > 0 && ((unsigned char)big[start] & 0xC0) == 0x80)
            start--;
        lead = (unsigned char)big[start];
        need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
        if (n - start < need)
            n = start;
    }
    big[n] = '\0';
    free(d->text);
    d->text = big;
    return 0;
}

static int parse_count(const char *v, size_t n, long *out)
{
    char buf[24];
    char *end;
    long x;

    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    if (!isdigit((unsigned char)buf[0]))
        return -1;
    errno = 0;
    x = strtol(buf, &end, 10);
    if (errno || *end)
        return -1;
    /* keeps every sum and product of counts far from overflow */
    *out = x > ML_COUNT_MAX ? ML_COUNT_MAX : x;
    return 0;
}

/* `text=` values cannot hold spaces, so `_` stands for a space; `%XX` gives
 * any other byte (including a literal underscore as %5F). */
static char *decode_text(const char *v, size_t n)
{
    char *s = malloc(n + 1);

    if (s)
        ml_percent_decode(v, n, s, n + 1, 1);
    return s;
}

static char *dupn(const char *v, size_t n)
{
    char *s = malloc(n + 1);

    if (s) {
        memcpy(s, v, n);
        s[n] = '\0';
    }
    return s;
}

static int set_tools(ml_directives *d, const char *v, size_t n, int from_header)
{
    char *buf = dupn(v, n);
    char *p, *save = NULL;

    if (!buf)
        return -1;
    free(d->tool_buf);
    d->tool_buf = buf;
    d->ntools = 0;
    for (p = strtok_r(buf, ",", &save); p && d->ntools < ML_MAX_TOOLS;
         p = strtok_r(NULL, ",", &save))
        d->tool[d->ntools++] = p;
    d->tools_from_header = from_header;
    return 0;
}

static int key_is(const char *k, size_t kn, const char *name)
{
    return strlen(name) == kn && memcmp(k, name, kn) == 0;
}

/* Applies one key=value pair; returns -1 for an unknown key or bad value so
 * the caller can count what it ignored. */
static int apply_pair(ml_directives *d, const char *k, size_t kn, const char *v, size_t vn,
                      int from_header)
{
    long x;
    long *num = NULL;

    if (key_is(k, kn, "text")) {
        char *t = decode_text(v, vn);
        if (!t)
            return -1;
        free(d->text);
        d->text = t;
        return 0;
    }
    if (key_is(k, kn, "model")) {
        char *m;
        if (vn == 0 || !(m = dupn(v, vn)))
            return -1;
        free(d->model);
        d->model = m;
        return 0;
    }
    if (key_is(k, kn, "tools"))
        return set_tools(d, v, vn, from_header);

    if (key_is(k, kn, "in"))
        num = &d->in;
    else if (key_is(k, kn, "out"))
        num = &d->out;
    else if (key_is(k, kn, "cache_read"))
        num = &d->cache_read;
    else if (key_is(k, kn, "cache_write"))
        num = &d->cache_write;
    else if (key_is(k, kn, "reasoning"))
        num = &d->reasoning;
    else if (key_is(k, kn, "retry_after"))
        num = &d->retry_after;
    else if (key_is(k, kn, "delay_headers_ms"))
        num = &d->delay_headers_ms;
    else if (key_is(k, kn, "delay_events_ms"))
        num = &d->delay_events_ms;
    else if (key_is(k, kn, "reset_after"))
        num = &d->reset_after;

    if (parse_count(v, vn, &x) < 0)
        return -1;
    if (num) {
        *num = x;
        return 0;
    }
    if (key_is(k, kn, "size")) {
        d->size = x > ML_SIZE_MAX ? ML_SIZE_MAX : x;
        return 0;
    }
    if (key_is(k, kn, "events")) {
        d->events = x < 1 ? 1 : x > ML_EVENTS_MAX ? ML_EVENTS_MAX : x;
        return 0;
    }
    if (key_is(k, kn, "status")) {
        if (x < 100 || x > 599)
            return -1;
        d->status = (int)x;
        return 0;
    }
    if (key_is(k, kn, "stream_error")) {
        if (x < 400 || x > 599)
            return -1;
        d->stream_error = (int)x;
        return 0;
    }
    if (key_is(k, kn, "stream_error_at")) {
        if (x < 0 || x > ML_EVENTS_MAX)
            return -1;
        d->stream_error_at = x;
        return 0;
    }
    if (key_is(k, kn, "malformed")) {
        d->malformed = x != 0;
        return 0;
    }
    if (key_is(k, kn, "stall")) {
        d->stall = x != 0;
        return 0;
    }
    return -1;
}

static void trim(const char **s, size_t *n)
{
    while (*n && isspace((unsigned char)**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && isspace((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

/* Parses "k=v;k=v". Returns the number of pairs that were ignored. */
int ml_directives_apply(ml_directives *d, const char *spec, size_t len, int from_header)
{
    const char *p = spec, *end = spec + len;
    int bad = 0;

    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *stop = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *k = p, *v;
        size_t kn, vn;

        p = semi ? semi + 1 : end;
        if (!eq) {
            kn = (size_t)(stop - k);
            trim(&k, &kn);
            if (kn)
                bad++;
            continue;
        }
        kn = (size_t)(eq - k);
        v = eq + 1;
        vn = (size_t)(stop - v);
        trim(&k, &kn);
        trim(&v, &vn);
        if (apply_pair(d, k, kn, v, vn, from_header) < 0)
            bad++;
    }
    return bad;
}

/* Finds every `[[mock ...]]` marker in the raw body, in order, so a later
 * marker (the newest turn of a conversation) overrides an earlier one. */
int ml_directives_scan_body(ml_directives *d, const char *body, size_t len)
{
    static const char open[] = "[[mock";
    const char *p = body, *end = body + len;
    int bad = 0;

    while (p < end) {
        const char *m = memmem(p, (size_t)(end - p), open, sizeof(open) - 1);
        const char *s, *close;

        if (!m)
            break;
        s = m + sizeof(open) - 1;
        if (s >= end)
            break;
        if (*s != ' ' && *s != ']') {
            p = s;
            continue;
        }
        close = memmem(s, (size_t)(end - s), "]]", 2);
        if (!close)
            break;
        bad += ml_directives_apply(d, s, (size_t)(close - s), 0);
        p = close + 2;
    }
    return bad;
}
