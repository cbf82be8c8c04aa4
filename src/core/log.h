/* Logging to stderr, one line per event. The level is set once at start-up,
 * before any worker thread exists, and only read afterwards. Callers must
 * never pass a credential: provider keys live in the route stage only and
 * are not formatted anywhere. */
#ifndef KL_LOG_H
#define KL_LOG_H

enum kl_log_level { KL_LOG_DEBUG, KL_LOG_INFO, KL_LOG_WARN, KL_LOG_ERROR };

void kl_log_set_level(enum kl_log_level level);
int  kl_log_parse_level(const char *name, enum kl_log_level *out);
void kl_log(enum kl_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define kl_debug(...) kl_log(KL_LOG_DEBUG, __VA_ARGS__)
#define kl_info(...)  kl_log(KL_LOG_INFO, __VA_ARGS__)
#define kl_warn(...)  kl_log(KL_LOG_WARN, __VA_ARGS__)
#define kl_error(...) kl_log(KL_LOG_ERROR, __VA_ARGS__)

#endif
