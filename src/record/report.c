#include "record/report.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"

struct dim {
    const char *name;           /* also the result column, quoted: "user" is reserved in PostgreSQL */
    const char *expr;           /* NULL: the day expression of the driver */
};

/* login and session_id are indexed. Grouped by the bare column, SQLite's
 * planner reads that whole index in order to save a sort, even when a time
 * range would have it read a few rows by primary key: on 2M rows over 30
 * days, a report by user for the last hour read 2M index entries (193 ms;
 * by session 4.5 s). As an expression (|| '') the column cannot order the
 * scan, so the time range bounds it (11 ms), and without a range a table
 * scan with a sort is faster than the index walk too (4.3 -> 1.7 s). */
static const struct dim dims[] = {
    {"user", "login || ''"},
    {"model", "COALESCE(model_served, model_requested)"},
    {"provider", "provider"},
    {"day", NULL},
    {"session", "session_id || ''"},
    {"node", "node"},
    {"endpoint", "endpoint"},
};

void kl_format_usd(int64_t nd, char *buf, size_t len)
{
    const char *sign = nd < 0 ? "-" : "";
    uint64_t a = nd < 0 ? (uint64_t)(-(nd + 1)) + 1 : (uint64_t)nd;
    snprintf(buf, len, "%s$%llu.%09llu", sign, (unsigned long long)(a / 1000000000ull),
             (unsigned long long)(a % 1000000000ull));
}

/* The end of an RFC 3339 time after its seconds: an optional fraction
 * (".123", as JavaScript's toISOString writes; digits past the millisecond
 * are dropped), then "Z", an offset ("+02:00", "-0530") or nothing (UTC).
 * Adds the fraction's milliseconds to *ms and the offset's to *off_s. */
static int parse_time_tail(const char *end, int64_t *ms, int64_t *off_s)
{
    *ms = 0;
    *off_s = 0;
    if (*end == '.') {
        end++;
        int digits = 0;
        for (; isdigit((unsigned char)*end); end++, digits++)
            if (digits < 3)
                *ms = *ms * 10 + (*end - '0');
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            *ms *= 10;
    }
    if (*end == '\0' || ((*end == 'Z' || *end == 'z') && end[1] == '\0'))
        return 0;
    if (*end != '+' && *end != '-')
        return -1;
    int sign = *end == '-' ? -1 : 1;
    const char *h = end + 1;
    if (!isdigit((unsigned char)h[0]) || !isdigit((unsigned char)h[1]))
        return -1;
    const char *m = h + 2 + (h[2] == ':');
    if (!isdigit((unsigned char)m[0]) || !isdigit((unsigned char)m[1]) || m[2] != '\0')
        return -1;
    int hh = (h[0] - '0') * 10 + (h[1] - '0'), mm = (m[0] - '0') * 10 + (m[1] - '0');
    if (hh > 23 || mm > 59)
        return -1;
    *off_s = sign * (int64_t)(hh * 3600 + mm * 60);
    return 0;
}

int kl_parse_time(const char *s, int64_t now_ms, int64_t *out)
{
    size_t n = strlen(s);
    if (n == 0)
        return -1;
    bool digits = true;
    for (size_t i = 0; i < n; i++) {
        /* strptime skips blanks, so " 2026-11-01" would pass as typed */
        if (isspace((unsigned char)s[i]))
            return -1;
        digits = digits && isdigit((unsigned char)s[i]);
    }
    /* "0" is the epoch (everything); other short digit strings are taken
     * for a duration missing its unit */
    if (digits && (n >= 10 || strcmp(s, "0") == 0)) {
        errno = 0;
        *out = strtoll(s, NULL, 10);
        return errno ? -1 : 0;
    }
    uint64_t ms;
    if (kl_parse_duration_ms(s, &ms) == 0 && !digits) {
        *out = now_ms - (int64_t)ms;
        return 0;
    }
    struct tm tm = {0};
    int64_t frac_ms = 0, off_s = 0;
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end) {
        if (parse_time_tail(end, &frac_ms, &off_s) < 0)
            return -1;
    } else {
        memset(&tm, 0, sizeof(tm));
        end = strptime(s, "%Y-%m-%d", &tm);
        if (!end || (*end && strcmp(end, "Z") != 0))
            return -1;
    }
    /* strptime takes February 31st; timegm would make it March 3rd */
    struct tm want = tm, back;
    time_t t = timegm(&tm);
    if (!gmtime_r(&t, &back) || back.tm_year != want.tm_year || back.tm_mon != want.tm_mon ||
        back.tm_mday != want.tm_mday || back.tm_hour != want.tm_hour || back.tm_min != want.tm_min)
        return -1;
    *out = ((int64_t)t - off_s) * 1000 + frac_ms;
    return 0;
}

static void where_add(struct kl_report_sql *w, const char *cond, const char *param)
{
    size_t len = strlen(w->where);
    snprintf(w->where + len, sizeof(w->where) - len, "%s%s", len ? " AND " : " WHERE ", cond);
    w->params[w->n++] = param;
}

/* The WHERE clause and its parameters for a filter (into w->where). */
static void build_where(const struct kl_report_filter *f, struct kl_report_sql *w)
{
    memset(w, 0, sizeof(*w));
    if (f->has_since) {
        snprintf(w->bufs[0], sizeof(w->bufs[0]), "%lld", (long long)f->since_ms);
        where_add(w, "started_at >= ?", w->bufs[0]);
        kl_store_id_floor(w->ids[0], f->since_ms);
        where_add(w, "id >= ?", w->ids[0]); /* the time range, on the primary key */
    }
    if (f->has_until) {
        snprintf(w->bufs[1], sizeof(w->bufs[1]), "%lld", (long long)f->until_ms);
        where_add(w, "started_at < ?", w->bufs[1]);
        kl_store_id_floor(w->ids[1], f->until_ms);
        where_add(w, "id < ?", w->ids[1]);
    }
    if (f->user)
        where_add(w, "login = ?", f->user);
    if (f->model) {
        where_add(w, "(model_requested = ? OR model_served = ?)", f->model);
        w->params[w->n++] = f->model;
    }
    if (f->provider)
        where_add(w, "provider = ?", f->provider);
    if (f->session)
        where_add(w, "session_id = ?", f->session);
    if (f->error_class)
        where_add(w, "error_class = ?", f->error_class);
    if (f->status) {
        snprintf(w->bufs[2], sizeof(w->bufs[2]), "%d", f->status);
        where_add(w, "status = CAST(? AS BIGINT)", w->bufs[2]);
    }
    if (f->before_id)
        where_add(w, "id < ?", f->before_id);
}

#define NDIMS (sizeof(dims) / sizeof(dims[0]))

/* The dimensions of a group_by list, in its order: each known, none twice,
 * no empty item. Their count, or -1 with a message. */
static int parse_groups(const char *group_by, size_t idx[NDIMS], char *err, size_t errlen)
{
    size_t n = 0;
    const char *p = group_by ? group_by : "";
    while (*p) {
        size_t len = strcspn(p, ",");
        size_t i;
        for (i = 0; i < NDIMS; i++)
            if (strlen(dims[i].name) == len && !strncmp(p, dims[i].name, len))
                break;
        if (i == NDIMS) {
            snprintf(err, errlen, "cannot group by \"%.*s\" (use user, model, provider, day, session, node, endpoint)",
                     (int)(len > 64 ? 64 : len), p);
            return -1;
        }
        for (size_t k = 0; k < n; k++)
            if (idx[k] == i) {
                snprintf(err, errlen, "cannot group by \"%s\" twice", dims[i].name);
                return -1;
            }
        idx[n++] = i;
        p += len;
        if (*p == ',' && !*++p) {
            snprintf(err, errlen, "cannot group by \"\" (a trailing comma)");
            return -1;
        }
    }
    return (int)n;
}

int kl_report_check_group_by(const char *group_by, char *err, size_t errlen)
{
    size_t idx[NDIMS];
    return parse_groups(group_by, idx, err, errlen) < 0 ? -1 : 0;
}

int kl_report_usage_sql(struct kl_store *s, const char *group_by, const struct kl_report_filter *f,
                        struct kl_report_sql *out, char *err, size_t errlen)
{
    /* at most every dimension once: these always fit */
    /* order: NULL groups first in both stores (PostgreSQL sorts them last) */
    char select[1024] = "", group[256] = "", order[512] = "";
    size_t idx[NDIMS];
    int n = parse_groups(group_by, idx, err, errlen);
    if (n < 0)
        return -1;
    for (int k = 0; k < n; k++) {
        const struct dim *d = &dims[idx[k]];
        const char *expr = d->expr ? d->expr : kl_store_sql_day(s, "started_at");
        size_t sl = strlen(select), gl = strlen(group);
        snprintf(select + sl, sizeof(select) - sl, "%s AS \"%s\", ", expr, d->name);
        snprintf(group + gl, sizeof(group) - gl, "%s\"%s\"", gl ? ", " : "", d->name);
        size_t ol = strlen(order);
        snprintf(order + ol, sizeof(order) - ol, "%s\"%s\" NULLS FIRST", ol ? ", " : "", d->name);
    }
    build_where(f, out);
    snprintf(out->sql, sizeof(out->sql),
             "SELECT %scount(*) AS requests,"
             " COALESCE(sum(input_tokens),0) AS input_tokens, COALESCE(sum(output_tokens),0) AS output_tokens,"
             " COALESCE(sum(cache_read_tokens),0) AS cache_read_tokens,"
             " COALESCE(sum(cache_write_tokens),0) AS cache_write_tokens,"
             " COALESCE(sum(reasoning_tokens),0) AS reasoning_tokens,"
             /* as text: a sum read as a number would pass through a double,
              * inexact above 2^53 nd ($9M) */
             " CAST(COALESCE(sum(CASE WHEN cost_known = 1 THEN cost_nanodollars ELSE 0 END),0) AS TEXT)"
             " AS cost_nanodollars,"
             " COALESCE(sum(CASE WHEN cost_known = 1 THEN 0 ELSE 1 END),0) AS unpriced_requests,"
             " COALESCE(sum(CASE WHEN error_class IS NULL THEN 0 ELSE 1 END),0) AS failed_requests"
             " FROM requests%s%s%s%s%s",
             select, out->where, group[0] ? " GROUP BY " : "", group, group[0] ? " ORDER BY " : "", order);
    return 0;
}

int kl_report_usage(struct kl_store *s, const char *group_by, const struct kl_report_filter *f, int max_rows,
                    cJSON **rows, bool *truncated, char *err, size_t errlen)
{
    struct kl_report_sql q;
    *truncated = false;
    if (kl_report_usage_sql(s, group_by, f, &q, err, errlen) < 0)
        return -1;
    if (max_rows > 0) { /* one more than shown tells whether there were more */
        size_t l = strlen(q.sql);
        snprintf(q.sql + l, sizeof(q.sql) - l, " LIMIT %d", max_rows + 1);
    }
    if (kl_store_exec(s, q.sql, q.params, q.n, rows, err, errlen) < 0)
        return -1;
    if (max_rows > 0 && cJSON_GetArraySize(*rows) > max_rows) {
        cJSON_DeleteItemFromArray(*rows, max_rows);
        *truncated = true;
    }
    cJSON *r;
    cJSON_ArrayForEach(r, *rows) {
        /* the exact sum, written as a JSON number digit for digit */
        const char *text = cJSON_GetStringValue(cJSON_GetObjectItem(r, "cost_nanodollars"));
        long long nd = text ? strtoll(text, NULL, 10) : 0;
        char digits[24], usd[48];
        snprintf(digits, sizeof(digits), "%lld", nd);
        cJSON_ReplaceItemInObject(r, "cost_nanodollars", cJSON_CreateRaw(digits));
        kl_format_usd((int64_t)nd, usd, sizeof(usd));
        cJSON_AddStringToObject(r, "cost_usd", usd);
    }
    return 0;
}

static void columns(struct kl_store *s, char *out, size_t len, bool captures)
{
    out[0] = '\0';
    for (size_t i = 0; i < kl_store_ncolumns; i++) {
        const char *c = kl_store_columns[i];
        if (!captures && (strstr(c, "_headers") || strstr(c, "_body")))
            continue;
        if (!kl_store_has_column(s, c))
            continue;
        size_t l = strlen(out);
        snprintf(out + l, len - l, "%s%s", l ? ", " : "", c);
    }
}

void kl_report_requests_sql(struct kl_store *s, const struct kl_report_filter *f, bool captures,
                            struct kl_report_sql *out)
{
    build_where(f, out);
    int limit = f->limit > 0 ? (f->limit > 1000 ? 1000 : f->limit) : 50;
    char cols[2048];
    columns(s, cols, sizeof(cols), captures);
    snprintf(out->sql, sizeof(out->sql), "SELECT %s FROM requests%s ORDER BY id DESC LIMIT %d", cols, out->where,
             limit);
}

int kl_report_requests(struct kl_store *s, const struct kl_report_filter *f, bool captures,
                       cJSON **rows, char *err, size_t errlen)
{
    struct kl_report_sql w;
    kl_report_requests_sql(s, f, captures, &w);
    return kl_store_exec(s, w.sql, w.params, w.n, rows, err, errlen);
}

int kl_report_export(struct kl_store *s, const struct kl_report_filter *f,
                     void (*emit)(void *arg, cJSON *row), void *arg, char *err, size_t errlen)
{
    /* In pages, so a large export does not hold every row at once. */
    char cols[2048];
    columns(s, cols, sizeof(cols), true);
    char after[48] = "";
    for (;;) {
        struct kl_report_sql w;
        build_where(f, &w);
        if (after[0])
            where_add(&w, "id > ?", after);
        snprintf(w.sql, sizeof(w.sql), "SELECT %s FROM requests%s ORDER BY id ASC LIMIT 1000", cols, w.where);
        cJSON *rows = NULL;
        if (kl_store_exec(s, w.sql, w.params, w.n, &rows, err, errlen) < 0)
            return -1;
        int n = cJSON_GetArraySize(rows);
        cJSON *r;
        cJSON_ArrayForEach(r, rows) {
            emit(arg, r);
            snprintf(after, sizeof(after), "%s", cJSON_GetObjectItem(r, "id")->valuestring);
        }
        cJSON_Delete(rows);
        if (n < 1000)
            return 0;
    }
}
