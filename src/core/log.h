/* Logging to stderr, one line per event. The level is set once at start-up,
 * before any worker thread exists, and only read afterwards. Callers must
 * never pass a credential: provider keys live in the route stage only and
 * are not formatted anywhere. */
#ifndef KL_LOG_H
#define KL_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum kl_log_level { KL_LOG_DEBUG, KL_LOG_INFO, KL_LOG_WARN, KL_LOG_ERROR };

void kl_log_set_level(enum kl_log_level level);
int  kl_log_parse_level(const char *name, enum kl_log_level *out);
bool kl_log_enabled(enum kl_log_level level);
void kl_log(enum kl_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A warning that a failing dependency (tailscaled, say) could have said on
 * every request: kl_log_every_due is true at most once per interval_ms
 * (on any thread), with *held set to how many times it said false since
 * the last true, for the line to tell. now_ms is a monotonic clock
 * (kl_now_ns() / 1000000). Zero-initialised, one per warning, kept where
 * the threads that say it share it (kl_server's warn_*). */
struct kl_log_every {
    _Atomic int64_t next_ms;    /* when it may be said again (0: at once) */
    _Atomic uint64_t held;
};
bool kl_log_every_due(struct kl_log_every *e, int64_t interval_ms, int64_t now_ms, uint64_t *held);

#define kl_debug(...) kl_log(KL_LOG_DEBUG, __VA_ARGS__)
#define kl_info(...)  kl_log(KL_LOG_INFO, __VA_ARGS__)
#define kl_warn(...)  kl_log(KL_LOG_WARN, __VA_ARGS__)
#define kl_error(...) kl_log(KL_LOG_ERROR, __VA_ARGS__)

/* One line being built without printf (the access log, once per request):
 * the appenders truncate instead of overflowing; a line is at most
 * KL_LOG_LINE_MAX bytes, as kl_log's are. */
#define KL_LOG_LINE_MAX 2048
struct kl_log_line {
    size_t len;
    char text[KL_LOG_LINE_MAX];
};
void kl_log_line_str(struct kl_log_line *l, const char *s);
/* A field of the line that a caller chose (a login built from a token's
 * claims, a model name): written as one word, with space, '"', '%' and the
 * characters that break or reorder a line on screen (C1 controls, U+2028
 * and U+2029, bidirectional overrides) as %XX, so it cannot pass for the
 * fields after it; in at most max bytes, cut between characters, so it
 * cannot push them off the line either. */
void kl_log_line_word(struct kl_log_line *l, const char *s, size_t max);
/* A request's path, as any client may send it: as a word, but its '%'
 * kept (it is percent-encoded already, and %XX of a byte names the same
 * path), so that what it holds cannot break or reorder the line either. */
void kl_log_line_path(struct kl_log_line *l, const char *s, size_t max);
void kl_log_line_u64(struct kl_log_line *l, uint64_t v);
void kl_log_line_i64(struct kl_log_line *l, int64_t v);
/* a duration in nanoseconds as milliseconds, exactly like printf's "%.1f" */
void kl_log_line_ms(struct kl_log_line *l, int64_t ns);

/* Lines that may wait a moment before reaching stderr (the access log).
 * Each thread appends to its own buffer; a buffer goes out in one write(2)
 * of whole lines, at most PIPE_BUF bytes (so no writer, in this process or
 * another one sharing the pipe, can split a line), under stderr's lock (so
 * kl_log's lines never land inside it). Its owner flushes it when the next
 * line does not fit, on a short timer, and when it stops. */
#define KL_LOG_BUF_SIZE 4096
struct kl_log_buf {
    size_t len;
    time_t stamp_sec;           /* the second stamp holds (0: none yet) */
    char stamp[24];             /* "YYYY-MM-DDTHH:MM:SS." */
    char data[KL_LOG_BUF_SIZE];
};
/* Append l as a line at level (dropped below the configured level); true
 * when the buffer was empty before, i.e. the caller should arm its flush
 * timer. */
bool kl_log_buffered(struct kl_log_buf *b, enum kl_log_level level, const struct kl_log_line *l);
void kl_log_flush(struct kl_log_buf *b);

#endif
