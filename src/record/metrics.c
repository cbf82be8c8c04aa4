#include "record/metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account/account.h"
#include "account/usage.h"
#include "admit/buckets.h"
#include "core/text.h"
#include "dialect/dialect.h"
#include "record/export.h"
#include "record/writer.h"
#include "route/health.h"
#include "upstream/awscreds.h"
#include "upstream/gcp.h"

/* What a series counts; its labels are fixed per kind. */
enum kind { K_REQUESTS, K_USAGE, K_FAILOVERS, K_FIRST_BYTE };

enum { U_INPUT, U_OUTPUT, U_CACHE_READ, U_CACHE_WRITE, U_REASONING, U_SPEND, U_UNPRICED };

#define NLABELS 5
#define NBUCKETS 16
/* counters per series: the usage kinds, or a histogram's buckets, +Inf
 * and its sum in microseconds */
#define NV (NBUCKETS + 2)
#define NSLOTS 256

static const double bounds[NBUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                        5, 10, 30, 60, 120, 300, 600};

struct series {
    struct series *next;        /* in its hash slot */
    struct series *all;         /* every series of the worker, oldest first */
    enum kind kind;
    uint32_t hash;
    const char *label[NLABELS]; /* owned (one block with the node) */
    _Atomic uint64_t v[NV];
};

struct kl_metrics {
    pthread_mutex_t lock;       /* held to add a series, and by a scrape walking them */
    struct series *slot[NSLOTS];
    struct series *all, *last;  /* oldest first: past the scrape's cap, the newest are left out */
    _Atomic uint64_t duration[KL_ENDPOINT_SLOTS][NBUCKETS + 1];    /* last: +Inf */
    _Atomic uint64_t duration_us[KL_ENDPOINT_SLOTS];
};

struct kl_metrics *kl_metrics_new(void)
{
    struct kl_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        abort();
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void kl_metrics_free(struct kl_metrics *m)
{
    if (!m)
        return;
    for (struct series *s = m->all, *n; s; s = n) {
        n = s->all;
        free(s);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static void add(_Atomic uint64_t *c, uint64_t n)
{
    kl_owner_add(c, n); /* only the owning worker writes a counter */
}

static uint32_t hash_of(enum kind k, const char *const *label)
{
    uint32_t h = 2166136261u ^ (uint32_t)k;
    for (int i = 0; i < NLABELS; i++) {
        for (const char *p = label[i] ? label[i] : ""; *p; p++)
            h = (h ^ (unsigned char)*p) * 16777619u;
        h = (h ^ 0xff) * 16777619u;
    }
    return h;
}

static bool same(const struct series *s, enum kind k, uint32_t h, const char *const *label)
{
    if (s->kind != k || s->hash != h)
        return false;
    for (int i = 0; i < NLABELS; i++)
        if (strcmp(s->label[i], label[i] ? label[i] : "") != 0)
            return false;
    return true;
}

/* The series of these labels, made on first use. Lookups are the owner's
 * alone (only it adds), so they take no lock. */
static struct series *series(struct kl_metrics *m, enum kind k, const char *const *label)
{
    uint32_t h = hash_of(k, label);
    for (struct series *s = m->slot[h % NSLOTS]; s; s = s->next)
        if (same(s, k, h, label))
            return s;
    size_t len[NLABELS], size = sizeof(struct series);
    for (int i = 0; i < NLABELS; i++)
        size += (len[i] = strlen(label[i] ? label[i] : "")) + 1;
    struct series *s = calloc(1, size);
    if (!s)
        abort();
    char *p = (char *)(s + 1);
    for (int i = 0; i < NLABELS; i++) {
        memcpy(p, label[i] ? label[i] : "", len[i] + 1);
        s->label[i] = p;
        p += len[i] + 1;
    }
    s->kind = k;
    s->hash = h;
    pthread_mutex_lock(&m->lock);
    s->next = m->slot[h % NSLOTS];
    m->slot[h % NSLOTS] = s;
    if (m->last)
        m->last->all = s;
    else
        m->all = s;
    m->last = s;
    pthread_mutex_unlock(&m->lock);
    return s;
}

static uint64_t micros(int64_t ns)
{
    return ns > 0 ? (uint64_t)ns / 1000 : 0;
}

/* The histogram bucket of a time: the first bound it does not exceed,
 * NBUCKETS for +Inf. */
static int bucket(uint64_t us)
{
    int b = 0;
    while (b < NBUCKETS && (double)us > bounds[b] * 1e6)
        b++;
    return b;
}

void kl_metrics_exchange(const kl_exchange *ex)
{
    struct kl_metrics *m = ex->worker->metrics;
    if (!m)
        return;
    size_t ep = ex->ep ? kl_endpoint_slot(ex->ep) : KL_EP_UNKNOWN;
    const char *provider = ex->provider ? ex->provider->id : "";
    /* ex->model is the caller's text until a provider that lists it is found */
    const char *model = ex->provider && ex->model ? ex->model : "";
    char status[16];
    status[kl_fmt_u64(status, (uint64_t)(ex->status > 0 ? ex->status : 0))] = '\0';
    const char *req[NLABELS] = {ex->ep ? ex->ep->name : "unknown", provider, model, status,
                                ex->error_class ? kl_error_class_name(ex->error_class) : ""};
    add(&series(m, K_REQUESTS, req)->v[0], 1);

    uint64_t us = micros(ex->t_end_ns - ex->t_start_ns);
    add(&m->duration[ep][bucket(us)], 1);
    add(&m->duration_us[ep], us);

    const struct kl_usage *u = ex->acct ? kl_account_usage(ex) : NULL;
    if (!ex->provider || !ex->upstream_status)
        return;
    if (ex->t_first_byte_ns) {
        const char *p[NLABELS] = {provider};
        struct series *f = series(m, K_FIRST_BYTE, p);
        uint64_t fb = micros(ex->t_first_byte_ns - ex->t_start_ns);
        add(&f->v[bucket(fb)], 1);
        add(&f->v[NBUCKETS + 1], fb);
    }
    const char *pm[NLABELS] = {provider, model};
    struct series *s = series(m, K_USAGE, pm);
    if (u && u->known) {
        add(&s->v[U_INPUT], (uint64_t)u->input);
        add(&s->v[U_OUTPUT], (uint64_t)u->output);
        add(&s->v[U_CACHE_READ], (uint64_t)u->cache_read);
        add(&s->v[U_CACHE_WRITE], (uint64_t)u->cache_write);
        add(&s->v[U_REASONING], (uint64_t)u->reasoning);
    }
    if (ex->cost_known)
        add(&s->v[U_SPEND], (uint64_t)ex->cost_nd);
    else if (ex->upstream_status < 400)
        add(&s->v[U_UNPRICED], 1);
}

void kl_metrics_failover(kl_worker *w, const char *provider)
{
    if (!w->metrics)
        return;
    const char *l[NLABELS] = {provider};
    add(&series(w->metrics, K_FAILOVERS, l)->v[0], 1);
}

/* ---- the scrape ---- */

static uint64_t get(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* A label value as the text format wants it: \, " and newline escaped. */
static void put_value(struct kl_buf *o, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            kl_buf_put(o, "\\", 1);
        if (*v == '\n')
            kl_buf_put(o, "\\n", 2);
        else
            kl_buf_put(o, v, 1);
    }
}

static void put_u64(struct kl_buf *o, uint64_t v)
{
    char num[24];
    kl_buf_put(o, num, kl_fmt_u64(num, v));
}

static void family(struct kl_buf *o, const char *name, const char *type, const char *help)
{
    kl_buf_str(o, "# HELP ");
    kl_buf_str(o, name);
    kl_buf_str(o, " ");
    kl_buf_str(o, help);
    kl_buf_str(o, "\n# TYPE ");
    kl_buf_str(o, name);
    kl_buf_str(o, " ");
    kl_buf_str(o, type);
    kl_buf_str(o, "\n");
}

/* name{k0="v0",...} value\n; names NULL-terminated, values as many */
static void sample(struct kl_buf *o, const char *name, const char *const *keys, const char *const *values,
                   uint64_t v)
{
    kl_buf_str(o, name);
    for (int i = 0; keys && keys[i]; i++) {
        kl_buf_str(o, i ? "," : "{");
        kl_buf_str(o, keys[i]);
        kl_buf_str(o, "=\"");
        put_value(o, values[i]);
        kl_buf_str(o, "\"");
    }
    if (keys && keys[0])
        kl_buf_str(o, "}");
    kl_buf_str(o, " ");
    put_u64(o, v);
    kl_buf_str(o, "\n");
}

/* The series of every worker, summed by labels: one merged list, built in
 * a scratch table the scrape owns. */
struct merged {
    struct merged *next;
    const struct series *first;     /* labels from here */
    uint64_t v[NV];
};

struct merge {
    struct merged *slot[NSLOTS];
    struct merged *order[4096];
    size_t n;
    bool truncated;
};

static void merge_in(struct merge *g, const struct series *s)
{
    struct merged *e;
    for (e = g->slot[s->hash % NSLOTS]; e; e = e->next)
        if (same(e->first, s->kind, s->hash, (const char *const *)s->label))
            break;
    if (!e) {
        if (g->n == sizeof(g->order) / sizeof(g->order[0])) {
            g->truncated = true;
            return;
        }
        e = calloc(1, sizeof(*e));
        if (!e)
            abort();
        e->first = s;
        e->next = g->slot[s->hash % NSLOTS];
        g->slot[s->hash % NSLOTS] = e;
        g->order[g->n++] = e;
    }
    for (int i = 0; i < NV; i++)
        e->v[i] += get(&s->v[i]);
}

static void write_series(struct kl_buf *o, struct merge *g)
{
    static const char *const req_keys[] = {"endpoint", "provider", "model", "status", "error_class", NULL};
    static const char *const pm_keys[] = {"provider", "model", NULL};
    static const char *const tok_keys[] = {"provider", "model", "kind", NULL};
    static const char *const kinds[] = {"input", "output", "cache_read", "cache_write", "reasoning"};
    static const char *const prov_keys[] = {"provider", NULL};

    family(o, "keyless_requests_total", "counter",
           "Requests answered, by endpoint, provider, model, status sent and error class.");
    for (size_t i = 0; i < g->n; i++)
        if (g->order[i]->first->kind == K_REQUESTS)
            sample(o, "keyless_requests_total", req_keys, g->order[i]->first->label, g->order[i]->v[0]);
    family(o, "keyless_tokens_total", "counter", "Tokens the providers reported, by kind.");
    for (size_t i = 0; i < g->n; i++) {
        const struct merged *e = g->order[i];
        if (e->first->kind != K_USAGE)
            continue;
        for (int k = U_INPUT; k <= U_REASONING; k++) {
            const char *v[] = {e->first->label[0], e->first->label[1], kinds[k]};
            sample(o, "keyless_tokens_total", tok_keys, v, e->v[k]);
        }
    }
    family(o, "keyless_spend_nanodollars_total", "counter", "What the answered requests cost, in nanodollars.");
    for (size_t i = 0; i < g->n; i++)
        if (g->order[i]->first->kind == K_USAGE)
            sample(o, "keyless_spend_nanodollars_total", pm_keys, g->order[i]->first->label, g->order[i]->v[U_SPEND]);
    family(o, "keyless_unpriced_requests_total", "counter",
           "Answered requests whose cost is unknown (no usage, or no price).");
    for (size_t i = 0; i < g->n; i++)
        if (g->order[i]->first->kind == K_USAGE)
            sample(o, "keyless_unpriced_requests_total", pm_keys, g->order[i]->first->label,
                   g->order[i]->v[U_UNPRICED]);
    family(o, "keyless_failovers_total", "counter", "Requests sent on to another provider after this one failed.");
    for (size_t i = 0; i < g->n; i++)
        if (g->order[i]->first->kind == K_FAILOVERS)
            sample(o, "keyless_failovers_total", prov_keys, g->order[i]->first->label, g->order[i]->v[0]);
}

/* One histogram's samples: name_bucket (cumulative, le), name_sum (from
 * microseconds) and name_count, labelled key=value. n: NBUCKETS + 1
 * counts, the last +Inf. */
static void histogram(struct kl_buf *o, const char *name, const char *key, const char *value, const uint64_t *n,
                      uint64_t us)
{
    char bname[96], sname[96], cname[96];
    snprintf(bname, sizeof(bname), "%s_bucket", name);
    snprintf(sname, sizeof(sname), "%s_sum", name);
    snprintf(cname, sizeof(cname), "%s_count", name);
    uint64_t cum = 0;
    for (int b = 0; b <= NBUCKETS; b++) {
        cum += n[b];
        char le[32];
        if (b < NBUCKETS)
            snprintf(le, sizeof(le), "%g", bounds[b]);
        else
            snprintf(le, sizeof(le), "+Inf");
        const char *keys[] = {key, "le", NULL};
        const char *v[] = {value, le};
        sample(o, bname, keys, v, cum);
    }
    char sum[48];
    snprintf(sum, sizeof(sum), "%" PRIu64 ".%06" PRIu64, us / 1000000, us % 1000000);
    kl_buf_str(o, sname);
    kl_buf_str(o, "{");
    kl_buf_str(o, key);
    kl_buf_str(o, "=\"");
    put_value(o, value);
    kl_buf_str(o, "\"} ");
    kl_buf_str(o, sum);
    kl_buf_str(o, "\n");
    const char *keys[] = {key, NULL};
    const char *v[] = {value};
    sample(o, cname, keys, v, cum);
}

static void write_durations(struct kl_buf *o, kl_server *srv, struct merge *g)
{
    family(o, "keyless_request_duration_seconds", "histogram",
           "Time from a request's arrival to its end, by endpoint.");
    for (size_t ep = 0; ep < KL_ENDPOINT_SLOTS; ep++) {
        uint64_t n[NBUCKETS + 1] = {0}, us = 0, total = 0;
        for (int i = 0; i < srv->nworkers; i++) {
            struct kl_metrics *m = srv->workers[i].metrics;
            for (int b = 0; m && b <= NBUCKETS; b++)
                n[b] += get(&m->duration[ep][b]);
            if (m)
                us += get(&m->duration_us[ep]);
        }
        for (int b = 0; b <= NBUCKETS; b++)
            total += n[b];
        if (total)
            histogram(o, "keyless_request_duration_seconds", "endpoint", kl_endpoint_by_slot(ep)->name, n, us);
    }
    family(o, "keyless_time_to_first_byte_seconds", "histogram",
           "Time from a request's arrival to the first byte of its provider's answer relayed to the caller, by provider.");
    for (size_t i = 0; i < g->n; i++)
        if (g->order[i]->first->kind == K_FIRST_BYTE)
            histogram(o, "keyless_time_to_first_byte_seconds", "provider", g->order[i]->first->label[0],
                      g->order[i]->v, g->order[i]->v[NBUCKETS + 1]);
}

static void cooling(void *arg, const char *provider, bool down)
{
    static const char *const keys[] = {"provider", NULL};
    const char *v[] = {provider};
    sample(arg, "keyless_provider_cooling_down", keys, v, down);
}

static void token_left(void *arg, const char *account, int64_t seconds_left, int failures)
{
    static const char *const keys[] = {"account", NULL};
    const char *v[] = {account};
    sample(arg, "keyless_google_token_seconds_left", keys, v, (uint64_t)seconds_left);
}

static void token_failures(void *arg, const char *account, int64_t seconds_left, int failures)
{
    static const char *const keys[] = {"account", NULL};
    const char *v[] = {account};
    sample(arg, "keyless_google_token_failures", keys, v, (uint64_t)failures);
}

static void gauge(struct kl_buf *o, const char *name, const char *help, uint64_t v)
{
    family(o, name, "gauge", help);
    sample(o, name, NULL, NULL, v);
}

static void counter(struct kl_buf *o, const char *name, const char *help, uint64_t v)
{
    family(o, name, "counter", help);
    sample(o, name, NULL, NULL, v);
}

void kl_metrics_write(kl_server *srv, struct kl_buf *out)
{
    struct merge *g = calloc(1, sizeof(*g));
    if (!g)
        abort();
    uint64_t inflight = 0, conns = 0, bodies = 0, told = 0, skipped = 0, cut = 0;
    for (int i = 0; i < srv->nworkers; i++) {
        struct kl_metrics *m = srv->workers[i].metrics;
        if (!m)
            continue;
        pthread_mutex_lock(&m->lock);
        for (const struct series *s = m->all; s; s = s->all)
            merge_in(g, s);
        pthread_mutex_unlock(&m->lock);
        inflight += get(&srv->workers[i].inflight);
        conns += get(&srv->workers[i].nconns);
        bodies += get(&srv->workers[i].body_bytes);
        told += get(&srv->workers[i].hooks_told);
        skipped += get(&srv->workers[i].hooks_skipped);
        cut += get(&srv->workers[i].hooks_cut);
    }
    write_series(out, g);
    write_durations(out, srv, g);
    family(out, "keyless_provider_cooling_down", "gauge",
           "1 while a provider is passed over after failures in a row (failover.cooldown); providers that never failed are not listed.");
    kl_health_each(srv, kl_wall_ms(), cooling, out);
    if (srv->gcp) {
        family(out, "keyless_google_token_seconds_left", "gauge",
               "Seconds the service account's access token is still used (0: none; renewed with a quarter left).");
        kl_gcp_tokens_each(srv->gcp, token_left, out);
        family(out, "keyless_google_token_failures", "gauge", "Failed tries in a row to get the account's token.");
        kl_gcp_tokens_each(srv->gcp, token_failures, out);
    }
    struct kl_aws_keeper *aws = atomic_load_explicit(&srv->aws, memory_order_acquire);
    if (aws) {
        const char *source;
        long left;
        int failures;
        kl_aws_status(aws, &source, &left, &failures);
        static const char *const keys[] = {"source", NULL};
        const char *v[] = {source};
        if (left >= 0) { /* keys from the environment or a profile do not expire: no such line */
            family(out, "keyless_aws_credentials_seconds_left", "gauge",
                   "Seconds the temporary AWS credentials keyless found are still used (0: none; renewed with a "
                   "quarter of their life, or 125 s, left).");
            sample(out, "keyless_aws_credentials_seconds_left", keys, v, (uint64_t)left);
        }
        family(out, "keyless_aws_credentials_failures", "gauge",
               "Failed tries in a row to get AWS credentials (from the environment, a profile, the container or "
               "the instance).");
        sample(out, "keyless_aws_credentials_failures", keys, v, (uint64_t)failures);
    }
    gauge(out, "keyless_config_last_reload_successful",
          "1 when the last SIGHUP loaded the configuration (or none came yet); 0 when it kept the running one "
          "(errors in the file, or a setting only a restart applies: see the log).",
          !atomic_load(&srv->reload_failed));
    gauge(out, "keyless_config_last_reload_success_timestamp_seconds",
          "When the running configuration was loaded (start-up or the last successful reload).",
          (uint64_t)(atomic_load(&srv->config_loaded_ms) / 1000));
    counter(out, "keyless_config_reload_failures_total", "SIGHUPs that kept the running configuration.",
            atomic_load(&srv->reload_failures));
    gauge(out, "keyless_inflight_requests", "Requests between arrival and record.", inflight);
    gauge(out, "keyless_open_connections", "Client connections open.", conns);
    gauge(out, "keyless_request_body_bytes",
          "Memory the request bodies, and answers held to be checked, of requests in flight take, with the "
          "payloads of hook calls told after the answer (held to listen.max_body_memory).", bodies);
    gauge(out, "keyless_hook_calls_in_flight",
          "Calls to hooks told after the answer (entire_request, tool_call_entire_request) not answered yet.", told);
    counter(out, "keyless_hook_calls_skipped_total",
            "Calls to hooks told after the answer that were not made: the worker had as many in flight as it "
            "keeps.",
            skipped);
    counter(out, "keyless_hook_calls_cut_total",
            "Calls to hooks told after the answer made with the request body, the answer or other parts cut "
            "(keyless.cut in the payload): the whole payload had no room in half the worker's share of "
            "listen.max_body_memory.",
            cut);
    if (srv->buckets)
        gauge(out, "keyless_quota_buckets",
              "Quota and rate-limit buckets in memory (one per caller and limit; forgotten when idle and full).",
              (uint64_t)kl_buckets_count(srv->buckets));
    if (srv->writer) {
        struct kl_writer_stats st;
        kl_writer_stats(srv->writer, &st);
        counter(out, "keyless_records_written_total", "Records the store has written.", st.written);
        gauge(out, "keyless_records_queued", "Records waiting for the writer.", st.queued);
        counter(out, "keyless_record_write_failures_total", "Batches the store could not write (kept and retried).",
                st.failures);
        counter(out, "keyless_records_refused_total", "Records the store refused (logged, not kept).", st.refused);
        counter(out, "keyless_record_waits_total", "Requests that waited for the record writer to catch up.",
                st.waits);
    }
    if (srv->exporter) {
        struct kl_export_stats st;
        kl_exporter_stats(srv->exporter, &st);
        counter(out, "keyless_export_records_total", "Records sent to the S3 bucket.", st.records);
        counter(out, "keyless_export_lost_total", "Records retention removed before they could be exported.", st.lost);
        gauge(out, "keyless_export_failing_rounds", "Export rounds failed in a row.", st.failing);
        gauge(out, "keyless_export_last_success_timestamp_seconds", "When an export round last succeeded (0: never).",
              (uint64_t)(st.last_ok_ms / 1000));
    }
    if (g->truncated)
        kl_buf_str(out, "# keyless: more than 4096 series; the rest are left out\n");
    for (size_t i = 0; i < g->n; i++)
        free(g->order[i]);
    free(g);
}
