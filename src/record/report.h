/* Reading the records back: usage grouped by who/what/when, and request
 * listings. Shared by the /api/ endpoints (on the query thread) and the
 * `keyless usage` / `keyless export` commands. */
#ifndef KL_REPORT_H
#define KL_REPORT_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "record/store.h"

struct kl_report_filter {
    int64_t since_ms, until_ms;
    bool has_since, has_until;      /* false: unbounded (0 is the epoch, a bound like any) */
    const char *user, *model, *provider, *session, *error_class;
    int status;                     /* 0 = any */
    const char *before_id;          /* paging: ids sort by time */
    int limit;                      /* listings; 0 = default (50), at most 1000 */
};

/* group_by: comma-separated of user, model, provider, day, session, node,
 * endpoint. Rows: the groups, then requests, tokens, cost. max_rows > 0:
 * at most that many (the first in group order), *truncated saying whether
 * more were left out; 0: every one. */
int kl_report_usage(struct kl_store *s, const char *group_by, const struct kl_report_filter *f, int max_rows,
                    cJSON **rows, bool *truncated, char *err, size_t errlen);

/* A statement and its parameters (which point into it and into the filter). */
struct kl_report_sql {
    char sql[4096];
    char where[1024];
    const char *params[16];
    size_t n;
    char bufs[4][32];
    char ids[2][14];
};

/* The statement kl_report_usage runs (tests EXPLAIN it). -1 with a message
 * for a group_by kl_report_check_group_by refuses. */
int kl_report_usage_sql(struct kl_store *s, const char *group_by, const struct kl_report_filter *f,
                        struct kl_report_sql *out, char *err, size_t errlen);

/* 0 when group_by names known dimensions, each once, without empty items;
 * else -1 with a message ("cannot group by ..."). */
int kl_report_check_group_by(const char *group_by, char *err, size_t errlen);

/* Newest first. Without captures the body/header columns are left out. */
void kl_report_requests_sql(struct kl_store *s, const struct kl_report_filter *f, bool captures,
                            struct kl_report_sql *out);
int kl_report_requests(struct kl_store *s, const struct kl_report_filter *f, bool captures,
                       cJSON **rows, char *err, size_t errlen);

/* Oldest first, every column, for export; calls emit per row. */
int kl_report_export(struct kl_store *s, const struct kl_report_filter *f,
                     void (*emit)(void *arg, cJSON *row), void *arg, char *err, size_t errlen);

/* "7d", "24h", "30m" (ago), Unix milliseconds, "2026-11-01" or
 * "2026-11-01T12:00:00Z" (RFC 3339, with a fraction and an offset). A
 * blank anywhere is refused. */
int kl_parse_time(const char *s, int64_t now_ms, int64_t *out_ms);

/* "$12.345678901" from nanodollars. */
void kl_format_usd(int64_t nd, char *buf, size_t len);

#endif
