#include "account/sse.h"

#include <stdlib.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Where the line starting at i ends: the first '\n' or '\r', or len.
 * Sixteen bytes at a time, since this runs over every streamed byte; one
 * pass whichever of the two a stream ends its lines with. */
static size_t line_break(const char *p, size_t i, size_t len)
{
#ifdef __SSE2__
    const __m128i nl = _mm_set1_epi8('\n'), cr = _mm_set1_epi8('\r');
    for (; i + 16 <= len; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(x, nl), _mm_cmpeq_epi8(x, cr)));
        if (m)
            return i + (size_t)__builtin_ctz(m);
    }
#endif
    while (i < len && p[i] != '\n' && p[i] != '\r')
        i++;
    return i;
}

/* Length of the first complete event in p[0..len), or 0 when there is none
 * yet; scanning starts at from, the start of a line, or (mid) a point
 * inside a line that is not empty. An event ends at an empty line; lines
 * end in \r\n, \n or \r. A line ending in '\r' at the very end may still be
 * followed by '\n', so it waits, unless it is the empty line: that event is
 * complete either way, and *cr_end says a '\n' arriving next belongs to it
 * (CR-only streams end every event so; holding each one until the next byte
 * would delay it by the provider's pause). With no event yet, *resume (and
 * *resume_mid) is where the next call goes on: how far this one got, even
 * inside a line, so that one large event (a data: line of megabytes, read a
 * piece at a time) is scanned once, not once per piece. */
static size_t event_end(const char *p, size_t len, size_t from, bool mid, size_t *resume, bool *resume_mid,
                        bool *cr_end)
{
    size_t i = from;
    *cr_end = false;
    while (i < len) {
        size_t b = line_break(p, i, len);   /* the line break, or len */
        if (b == len) {
            *resume = len;
            *resume_mid = true; /* i < len: the line so far holds something */
            return 0;
        }
        bool empty = b == i && !mid;
        mid = false;
        size_t next = b + 1;
        if (p[b] == '\r') {
            if (next == len) {
                *cr_end = empty;
                if (empty)
                    return next;
                *resume = b; /* at the '\r': a "\r\n" may be coming */
                *resume_mid = true;
                return 0;
            }
            if (p[next] == '\n')
                next++;
        }
        if (empty)
            return next;
        i = next;
    }
    *resume = i;
    *resume_mid = mid;
    return 0;
}

static void grow(kl_sse *s, size_t need)
{
    if (s->len + need <= s->cap)
        return;
    size_t cap = s->cap ? s->cap * 2 : 4096;
    while (cap < s->len + need)
        cap *= 2;
    s->buf = realloc(s->buf, cap);
    if (!s->buf)
        abort();
    s->cap = cap;
}

void kl_sse_feed(kl_sse *s, const char *data, size_t len, kl_sse_event_fn on_event, void *arg)
{
    size_t resume = 0;
    bool cr_end, resume_mid = false;
    if (s->len > 0) {
        grow(s, len);
        memcpy(s->buf + s->len, data, len);
        s->len += len;
        size_t off = 0, n, from = s->scanned;
        bool mid = s->scanned_mid;
        while ((n = event_end(s->buf + off, s->len - off, from, mid, &resume, &resume_mid, &cr_end)) > 0) {
            on_event(arg, s->buf + off, n);
            s->lf_pending = cr_end;
            off += n;
            from = 0;
            mid = false;
        }
        memmove(s->buf, s->buf + off, s->len - off);
        s->len -= off;
        s->scanned = resume;
        s->scanned_mid = resume_mid;
        return;
    }
    /* Common case: nothing carried over, so events are handed out straight
     * from the caller's buffer and only a tail is copied. The '\n' of a
     * "\r\n" the last event ended on, when it comes now, leads the next
     * event's bytes (an empty line there is skipped, not an event). */
    size_t off = 0, n, from = 0;
    if (s->lf_pending && len > 0) {
        from = data[0] == '\n';
        s->lf_pending = false;
    }
    while ((n = event_end(data + off, len - off, from, false, &resume, &resume_mid, &cr_end)) > 0) {
        on_event(arg, data + off, n);
        s->lf_pending = cr_end;
        off += n;
        from = 0;
    }
    if (off < len) {
        grow(s, len - off);
        memcpy(s->buf, data + off, len - off);
        s->len = len - off;
        s->scanned = resume;
        s->scanned_mid = resume_mid;
    }
}

void kl_sse_flush(kl_sse *s, kl_sse_event_fn on_event, void *arg)
{
    if (s->len > 0)
        on_event(arg, s->buf, s->len);
    s->len = s->scanned = 0;
    s->scanned_mid = s->lf_pending = false;
}

void kl_sse_discard(kl_sse *s)
{
    s->len = s->scanned = 0;
    s->scanned_mid = s->lf_pending = false;
}

void kl_sse_free(kl_sse *s)
{
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
}

void kl_sse_fields(const char *raw, size_t len, const char **event, size_t *event_len,
                   char **data, size_t *data_len)
{
    *event = NULL;
    *event_len = 0;
    if (data) {
        *data = NULL;
        *data_len = 0;
    }
    size_t cap = 0;
    size_t i = 0;
    if (len >= 3 && memcmp(raw, "\xef\xbb\xbf", 3) == 0)
        i = 3; /* a byte order mark before a stream's first event */
    while (i < len) {
        size_t start = i;
        i = line_break(raw, i, len);
        const char *line = raw + start;
        size_t ll = i - start;
        if (i < len && raw[i] == '\r' && i + 1 < len && raw[i + 1] == '\n')
            i++;
        i++;
        if (ll == 0 || line[0] == ':')
            continue;
        const char *colon = memchr(line, ':', ll);
        size_t nl = colon ? (size_t)(colon - line) : ll;
        const char *v = colon ? colon + 1 : line + ll;
        if (colon && v < line + ll && *v == ' ')
            v++;
        size_t vl = (size_t)(line + ll - v);
        if (nl == 5 && memcmp(line, "event", 5) == 0) {
            *event = v;
            *event_len = vl;
        } else if (data && nl == 4 && memcmp(line, "data", 4) == 0) {
            size_t need = *data_len + vl + 2;
            if (need > cap) {
                cap = need * 2;
                *data = realloc(*data, cap);
                if (!*data)
                    abort();
            }
            if (*data_len > 0)
                (*data)[(*data_len)++] = '\n';
            memcpy(*data + *data_len, v, vl);
            *data_len += vl;
            (*data)[*data_len] = '\0';
        }
    }
}

size_t kl_sse_bare_json(const char *raw, size_t len)
{
    size_t i = 0;
    while (i < len && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\r' || raw[i] == '\n'))
        i++;
    return i < len && raw[i] == '{' ? i : len;
}

bool kl_sse_unknown_field(const char *raw, size_t len)
{
    static const char *const fields[] = {"data", "event", "id", "retry"};
    size_t i = len >= 3 && memcmp(raw, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
    while (i < len) {
        size_t start = i;
        i = line_break(raw, i, len) + 1;
        size_t n = i - 1 - start;
        if (n == 0 || raw[start] == ':')
            continue;
        bool known = false;
        for (size_t k = 0; k < sizeof(fields) / sizeof(fields[0]) && !known; k++) {
            size_t fl = strlen(fields[k]);
            known = n >= fl && !memcmp(raw + start, fields[k], fl) && (n == fl || raw[start + fl] == ':');
        }
        if (!known)
            return true;
    }
    return false;
}
