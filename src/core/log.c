#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/text.h"

_Static_assert(KL_LOG_BUF_SIZE <= PIPE_BUF, "a buffer must go out in one atomic write");
_Static_assert(KL_LOG_LINE_MAX <= KL_LOG_BUF_SIZE, "a line must fit a buffer");

/* Set at start-up and by a reload (SIGHUP, on the main thread) while
 * workers read it: atomic, relaxed (a line logged at the old level around a
 * reload is harmless). */
static _Atomic int log_level = KL_LOG_INFO;

static const char *const level_tags[] = {"debug", "info", "warn", "error"};

void kl_log_set_level(enum kl_log_level level)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

bool kl_log_enabled(enum kl_log_level level)
{
    return (int)level >= atomic_load_explicit(&log_level, memory_order_relaxed);
}

int kl_log_parse_level(const char *name, enum kl_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_tags[i]) == 0) {
            *out = (enum kl_log_level)i;
            return 0;
        }
    }
    return -1;
}

bool kl_log_every_due(struct kl_log_every *e, int64_t interval_ms, int64_t now_ms, uint64_t *held)
{
    int64_t next = atomic_load_explicit(&e->next_ms, memory_order_relaxed);
    /* of the threads that find it due at once, the one whose exchange wins says it */
    if ((next && now_ms < next) ||
        !atomic_compare_exchange_strong_explicit(&e->next_ms, &next, now_ms + interval_ms, memory_order_relaxed,
                                                 memory_order_relaxed)) {
        atomic_fetch_add_explicit(&e->held, 1, memory_order_relaxed);
        return false;
    }
    *held = atomic_exchange_explicit(&e->held, 0, memory_order_relaxed);
    return true;
}

/* "YYYY-MM-DDTHH:MM:SS." for a Unix second (UTC), without printf. */
static void format_second(time_t sec, char out[24])
{
    struct tm tm;
    gmtime_r(&sec, &tm);
    int f[] = {tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec};
    static const char sep[] = "--T::.";
    char *p = out;
    for (int i = 0; i < 6; i++) {
        int v = f[i];
        if (i == 0) {
            *p++ = (char)('0' + v / 1000 % 10);
            *p++ = (char)('0' + v / 100 % 10);
        }
        *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        *p++ = sep[i];
    }
    *p = '\0';
}

/* The line prefix, "2026-11-26T08:53:07.821Z info ", into out (>= 40
 * bytes); stamp caches the formatted second. Returns its length. */
static size_t prefix(char *out, enum kl_log_level level, time_t *stamp_sec, char stamp[24])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != *stamp_sec) {
        format_second(ts.tv_sec, stamp);
        *stamp_sec = ts.tv_sec;
    }
    size_t n = strlen(stamp);
    memcpy(out, stamp, n);
    long ms = ts.tv_nsec / 1000000;
    out[n++] = (char)('0' + ms / 100);
    out[n++] = (char)('0' + ms / 10 % 10);
    out[n++] = (char)('0' + ms % 10);
    out[n++] = 'Z';
    out[n++] = ' ';
    size_t t = strlen(level_tags[level]);
    memcpy(out + n, level_tags[level], t);
    n += t;
    out[n++] = ' ';
    return n;
}

/* All of buf to fd, retrying short writes; errors are dropped (there is
 * nowhere left to report them). */
static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        buf += w;
        len -= (size_t)w;
    }
}

/* How many bytes at s (of n) make a character that breaks or reorders a
 * line on screen (kl_log_line_word writes them as %XX, defang as '?'): a
 * C1 control (C2 80..9F), U+2028..U+202E, U+2066..U+2069; 0 for none. */
static size_t unsafe_run(const unsigned char *s, size_t n)
{
    if (n >= 2 && s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f)
        return 2;
    if (n >= 3 && s[0] == 0xe2 && ((s[1] == 0x80 && s[2] >= 0xa8 && s[2] <= 0xae) ||
                                   (s[1] == 0x81 && s[2] >= 0xa6 && s[2] <= 0xa9)))
        return 3;
    return 0;
}

/* Control bytes in text that callers, providers, hooks or key servers
 * wrote (a model or tool name, a header, an error message) would let them
 * forge or split log lines, or act on the terminal showing them: each C0
 * control and DEL, and each character unsafe_run names (a C1 control such
 * as NEL or CSI, a line separator, a bidirectional override), becomes one
 * '?'. Returns the new length (at most n). */
static size_t defang(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t run = unsafe_run((const unsigned char *)s + i, n - i);
        if (run) {
            s[o++] = '?';
            i += run;
            continue;
        }
        s[o++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
        i++;
    }
    return o;
}

void kl_log(enum kl_log_level level, const char *fmt, ...)
{
    if (!kl_log_enabled(level))
        return;
    char line[KL_LOG_LINE_MAX];
    time_t sec = 0;
    char stamp[24];
    size_t n = prefix(line, level, &sec, stamp);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    size_t len = n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    len = n + defang(line + n, len - n);
    line[len++] = '\n';
    /* One write per line keeps lines from different threads whole. */
    fwrite(line, 1, len, stderr);
}

void kl_log_line_str(struct kl_log_line *l, const char *s)
{
    size_t n = strlen(s), room = sizeof(l->text) - l->len;
    if (n > room)
        n = room;
    memcpy(l->text + l->len, s, n);
    l->len += defang(l->text + l->len, n);
}

/* s escaped into at most max bytes of l, cut before a character (or its
 * escapes) that would not fit whole: each byte escaped takes three, so a
 * field's own length says little of its room on the line. */
static void put_escaped(struct kl_log_line *l, const char *s, bool keep_percent, size_t max)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), end = sizeof(l->text) - l->len > max ? l->len + max : sizeof(l->text);
    for (size_t i = 0; i < n;) {
        size_t run = unsafe_run(p + i, n - i);
        /* A path's own %XX is kept as one piece, so a cut cannot split it;
         * any other '%' (a path cut inside an escape before it got here)
         * becomes %25, so the field still decodes to the bytes received. */
        bool escape = keep_percent && p[i] == '%' && n - i >= 3 && isxdigit(p[i + 1]) && isxdigit(p[i + 2]);
        /* a UTF-8 character is copied whole or not at all; a byte that
         * begins none is escaped, or a lead byte would carry the bytes
         * after it (a quote, a control, half of U+2028) onto the line */
        size_t c = escape ? 3 : kl_utf8_seq((const char *)p + i);
        if (!run && c && p[i] != ' ' && p[i] != '"' && (p[i] != '%' || escape) && p[i] >= 0x20 && p[i] != 0x7f) {
            if (l->len + c > end)
                return;
            memcpy(l->text + l->len, p + i, c);
            l->len += c;
            i += c;
            continue;
        }
        size_t k = run ? run : 1;
        if (l->len + 3 * k > end)
            return;
        for (; k > 0; k--, i++) {
            l->text[l->len++] = '%';
            l->text[l->len++] = hex[p[i] >> 4];
            l->text[l->len++] = hex[p[i] & 15];
        }
    }
}

void kl_log_line_word(struct kl_log_line *l, const char *s, size_t max)
{
    put_escaped(l, s, false, max);
}

void kl_log_line_path(struct kl_log_line *l, const char *s, size_t max)
{
    put_escaped(l, s, true, max);
}

void kl_log_line_u64(struct kl_log_line *l, uint64_t v)
{
    char d[24];
    size_t i = sizeof(d);
    d[--i] = '\0';
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    kl_log_line_str(l, d + i);
}

void kl_log_line_i64(struct kl_log_line *l, int64_t v)
{
    if (v < 0) {
        kl_log_line_str(l, "-");
        kl_log_line_u64(l, (uint64_t)0 - (uint64_t)v);
    } else {
        kl_log_line_u64(l, (uint64_t)v);
    }
}

void kl_log_line_ms(struct kl_log_line *l, int64_t ns)
{
    /* Rounding to tenths in integers agrees with printf on ns / 1e6 except
     * at an exact half (the double is then a hair above or below it) and
     * for negative values: leave those to printf. */
    if (ns < 0 || ns % 100000 == 50000) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%.1f", (double)ns / 1e6);
        kl_log_line_str(l, buf);
        return;
    }
    uint64_t tenths = ((uint64_t)ns + 50000) / 100000;
    kl_log_line_u64(l, tenths / 10);
    char frac[3] = {'.', (char)('0' + tenths % 10), '\0'};
    kl_log_line_str(l, frac);
}

void kl_log_flush(struct kl_log_buf *b)
{
    if (!b->len)
        return;
    flockfile(stderr);
    fflush(stderr); /* anything stdio holds goes first (kl_log leaves nothing) */
    write_all(fileno(stderr), b->data, b->len);
    funlockfile(stderr);
    b->len = 0;
}

bool kl_log_buffered(struct kl_log_buf *b, enum kl_log_level level, const struct kl_log_line *l)
{
    if (!kl_log_enabled(level))
        return false;
    char head[48];
    size_t h = prefix(head, level, &b->stamp_sec, b->stamp);
    size_t body = l->len;
    if (h + body + 1 > KL_LOG_LINE_MAX)
        body = KL_LOG_LINE_MAX - 1 - h;
    if (b->len + h + body + 1 > sizeof(b->data))
        kl_log_flush(b);
    bool was_empty = b->len == 0;
    memcpy(b->data + b->len, head, h);
    memcpy(b->data + b->len + h, l->text, body);
    b->data[b->len + h + body] = '\n';
    b->len += h + body + 1;
    return was_empty;
}
