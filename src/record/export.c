#include "record/export.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/exchange.h"
#include "core/log.h"
#include "record/archive.h"
#include "record/record.h"
#include "record/s3.h"

#define KL_EXPORT_LOCK 0x6b6c6578706f7274 /* "klexport": one exporting gateway at a time on PostgreSQL */

/* ---- configuration ---- */

static bool name_chars(const char *s, const char *extra)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || strchr(extra, *s)))
            return false;
    return true;
}

/* An object name prefix that names the same key in every client and
 * service: no "." or ".." segments (libcurl would resolve them), no "//". */
static bool prefix_ok(const char *p)
{
    if (!name_chars(p, "/._-") || p[0] == '/')
        return false;
    for (const char *seg = p; *seg;) {
        const char *end = strchr(seg, '/');
        size_t n = end ? (size_t)(end - seg) : strlen(seg);
        if (end && (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.')))
            return false;
        if (!end)
            return !(n == 1 && seg[0] == '.') && !(n == 2 && seg[0] == '.' && seg[1] == '.');
        seg = end + 1;
    }
    return true;
}

static const char *string_member(kl_cfg_ctx *c, const cJSON *m)
{
    if (cJSON_IsString(m))
        return kl_arena_strdup(&c->cfg->arena, m->valuestring);
    kl_cfg_report(c, KL_SEV_ERROR, m, "exporters.s3.%s must be a string", m->string);
    return NULL;
}

/* A credential: "${NAME}", "file:/path" or the text. An unset variable or
 * unreadable file is an error here (a provider without its key can still
 * start; an archive that cannot be written should not go unnoticed). */
static const char *credential(kl_cfg_ctx *c, const cJSON *m)
{
    if (!cJSON_IsString(m)) {
        kl_cfg_report(c, KL_SEV_ERROR, m, "exporters.s3.%s must be a string", m->string);
        return NULL;
    }
    const char *problem;
    const char *s = kl_cfg_secret_named(c, m, "exporters.s3",
                                        strcmp(m->string, "access_key_id") == 0 ? "access key id" : "secret access key",
                                        &problem);
    if (!s && problem)
        kl_cfg_report(c, c->lenient ? KL_SEV_NOTE : KL_SEV_ERROR, m, "%s", problem);
    return s;
}

static void read_s3(kl_cfg_ctx *c, const cJSON *v)
{
    if (!cJSON_IsObject(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "exporters.s3 must be an object");
        return;
    }
    struct kl_export_cfg *e = kl_arena_alloc(&c->cfg->arena, sizeof(*e));
    e->prefix = "";
    e->every_ms = 60000;
    e->max_records = 1000;
    const cJSON *m, *bucket = NULL;
    cJSON_ArrayForEach(m, v) {
        const char *k = m->string;
        if (strcmp(k, "bucket_name") == 0) {
            bucket = m;
            e->bucket = string_member(c, m);
        } else if (strcmp(k, "region") == 0) {
            e->region = string_member(c, m);
        } else if (strcmp(k, "endpoint") == 0) {
            e->endpoint = string_member(c, m);
        } else if (strcmp(k, "access_key_id") == 0) {
            e->access_key_id = credential(c, m);
        } else if (strcmp(k, "access_secret") == 0) {
            e->access_secret = credential(c, m);
        } else if (strcmp(k, "prefix") == 0) {
            e->prefix = string_member(c, m);
            if (e->prefix && strlen(e->prefix) > 256)
                kl_cfg_report(c, KL_SEV_ERROR, m, "exporters.s3.prefix is longer than 256 bytes");
            else if (e->prefix && !prefix_ok(e->prefix))
                kl_cfg_report(c, KL_SEV_ERROR, m, "exporters.s3.prefix may hold letters, digits and / . _ -, "
                              "must not start with / and has no empty, \".\" or \"..\" segment");
        } else if (strcmp(k, "every") == 0) {
            uint64_t ms;
            if (kl_cfg_duration_value(m, &ms) < 0 || ms < 1000)
                kl_cfg_report(c, KL_SEV_ERROR, m, "exporters.s3.every must be a duration of at least \"1s\", "
                              "such as \"5m\"");
            else
                e->every_ms = (int64_t)ms;
        } else if (strcmp(k, "max_records") == 0) {
            if (!cJSON_IsNumber(m) || m->valuedouble < 1 || m->valuedouble > 100000 ||
                m->valuedouble != (double)(size_t)m->valuedouble)
                kl_cfg_report(c, KL_SEV_ERROR, m, "exporters.s3.max_records must be a whole number from 1 to 100000");
            else
                e->max_records = (size_t)m->valuedouble;
        } else {
            kl_cfg_report(c, KL_SEV_WARNING, m, "unknown key \"%s\" in exporters.s3 (ignored)", k);
        }
    }
    /* Aperture: an empty bucket_name leaves the exporter off */
    if (!e->bucket || !e->bucket[0])
        return;
    if (!name_chars(e->bucket, ".-_"))
        kl_cfg_report(c, KL_SEV_ERROR, bucket, "exporters.s3.bucket_name may hold letters, digits, '.', '-' and '_'");
    if (!e->region || !e->region[0] || !name_chars(e->region, "-_"))
        kl_cfg_report(c, KL_SEV_ERROR, v, "exporters.s3 needs \"region\" (e.g. \"us-east-1\"; any value the service "
                      "accepts for one that has none)");
    /* one set but unavailable was said above */
    if (!cJSON_GetObjectItemCaseSensitive(v, "access_key_id") || !cJSON_GetObjectItemCaseSensitive(v, "access_secret"))
        kl_cfg_report(c, KL_SEV_ERROR, v, "exporters.s3 needs \"access_key_id\" and \"access_secret\"");
    if (e->endpoint) {
        size_t n = strlen(e->endpoint);
        if (strncmp(e->endpoint, "http://", 7) != 0 && strncmp(e->endpoint, "https://", 8) != 0)
            kl_cfg_report(c, KL_SEV_ERROR, v, "exporters.s3.endpoint must be an http:// or https:// URL");
        else if (strchr(e->endpoint, '@'))
            kl_cfg_report(c, KL_SEV_ERROR, v, "exporters.s3.endpoint must not hold credentials (user:password@): "
                          "they would be shown wherever the URL is");
        while (n > 0 && e->endpoint[n - 1] == '/')
            n--;
        e->endpoint = kl_arena_strndup(&c->cfg->arena, e->endpoint, n);
    }
    kl_record_read_store(c, NULL);
    c->cfg->store->exporter = e;
}

void kl_export_read_config(kl_cfg_ctx *c, const cJSON *v)
{
    if (!cJSON_IsObject(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "exporters must be an object");
        return;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        if (strcmp(m->string, "s3") == 0)
            read_s3(c, m);
        else
            kl_cfg_report(c, KL_SEV_WARNING, m, "exporter \"%s\" is not supported (only \"s3\"; ignored)", m->string);
    }
}

static bool str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

bool kl_export_cfg_differs(const struct kl_export_cfg *a, const struct kl_export_cfg *b)
{
    if (!a || !b)
        return a != b;
    /* credentials are not compared: a reload hands new ones to the running
     * exporter (kl_exporter_set_credentials), so a rotated secret does not
     * block every later SIGHUP */
    return str_differs(a->endpoint, b->endpoint) || str_differs(a->bucket, b->bucket) ||
           str_differs(a->region, b->region) || str_differs(a->prefix, b->prefix) ||
           a->every_ms != b->every_ms || a->max_records != b->max_records;
}

/* ---- one round ---- */

/* head + list + tail, run as one statement (list: numbers keyless read). */
static int exec_around(struct kl_store *s, const char *head, const char *list, const char *tail, char *err,
                       size_t errlen)
{
    struct kl_buf b = {0};
    kl_buf_str(&b, head);
    kl_buf_str(&b, list);
    kl_buf_str(&b, tail);
    int rc = kl_store_exec(s, b.p, NULL, 0, NULL, err, errlen);
    free(b.p);
    return rc;
}

/* Takes the sent positions off the queue and, with zero retention, their
 * records out of the store, at once: a stop between the two must not leave
 * records that the next round would take for removed by retention. One
 * statement on PostgreSQL (a transaction there could be cut silently by the
 * driver's reconnect), a transaction on SQLite. */
static int dequeue(struct kl_store *s, const char *seqs, bool delete_records, char *err, size_t errlen)
{
    if (!delete_records)
        return exec_around(s, "DELETE FROM export_queue WHERE seq IN (", seqs, ")", err, errlen);
    if (kl_store_driver(s) == KL_STORE_POSTGRES)
        return exec_around(s, "WITH q AS (DELETE FROM export_queue WHERE seq IN (", seqs,
                           ") RETURNING id) DELETE FROM requests WHERE id IN (SELECT id FROM q)", err, errlen);
    char ignore[128];
    if (kl_store_exec(s, "BEGIN", NULL, 0, NULL, err, errlen) < 0)
        return -1;
    if (exec_around(s, "DELETE FROM requests WHERE id IN (SELECT id FROM export_queue WHERE seq IN (", seqs, "))",
                    err, errlen) < 0 ||
        exec_around(s, "DELETE FROM export_queue WHERE seq IN (", seqs, ")", err, errlen) < 0 ||
        kl_store_exec(s, "COMMIT", NULL, 0, NULL, err, errlen) < 0) {
        kl_store_exec(s, "ROLLBACK", NULL, 0, NULL, ignore, sizeof(ignore));
        return -1;
    }
    return 0;
}

/* "SELECT q.seq AS export_seq, r.id, r.instance, ... FROM export_queue q
 * LEFT JOIN requests r ...": a queued id whose row is gone (retention
 * without require_export removed it) comes back with a NULL id. */
static char *queue_sql(size_t limit)
{
    struct kl_buf b = {0};
    kl_buf_str(&b, "SELECT q.seq AS export_seq");
    for (size_t i = 0; i < kl_store_ncolumns; i++) {
        kl_buf_str(&b, ", r.");
        kl_buf_str(&b, kl_store_columns[i]);
    }
    char tail[160];
    snprintf(tail, sizeof(tail), " FROM export_queue q LEFT JOIN requests r ON r.id = q.id ORDER BY q.seq LIMIT %zu",
             limit);
    kl_buf_str(&b, tail);
    return b.p;
}

/* Instance names are host names in practice; anything else becomes '_'
 * in an object name. */
static bool object_name(char *out, size_t outlen, const struct kl_export_cfg *e, const char *instance,
                        int64_t started_ms, long long first, long long last, int64_t exported_ms)
{
    char inst[128];
    size_t n = 0;
    for (const char *s = instance ? instance : "keyless"; *s && n < sizeof(inst) - 1; s++)
        inst[n++] = name_chars((char[]){*s, 0}, "._-") ? *s : '_';
    inst[n] = '\0';
    if (strcmp(inst, ".") == 0 || strcmp(inst, "..") == 0 || n == 0)
        snprintf(inst, sizeof(inst), "_");
    time_t t = (time_t)(started_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    int n_out = snprintf(out, outlen, "%skeyless/%s/%04d/%02d/%02d/%012lld-%012lld-%lld.cbor.zst", e->prefix, inst,
                         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, first, last, (long long)exported_ms);
    return n_out > 0 && (size_t)n_out < outlen;
}

/* Sends up to max_records queued records as one object and dequeues them:
 * how many were taken off the queue (0: it was empty), or -1. */
static long one_object(struct kl_store *s, const struct kl_export_cfg *e, const char *instance, bool delete_exported,
                       const atomic_bool *stop, struct kl_export_counts *counts, char *err, size_t errlen)
{
    char *sql = queue_sql(e->max_records);
    cJSON *rows = NULL;
    int rc = kl_store_exec(s, sql, NULL, 0, &rows, err, errlen);
    free(sql);
    if (rc < 0)
        return -1;
    long taken = cJSON_GetArraySize(rows);
    if (taken == 0) {
        cJSON_Delete(rows);
        return 0;
    }
    /* the positions taken, for the dequeue; rows whose record is gone leave */
    struct kl_buf seqs = {0};
    long long first = -1, last = -1;
    int64_t started = 0;
    cJSON *row = rows->child;
    while (row) {
        cJSON *next = row->next;
        cJSON *seq = cJSON_DetachItemFromObjectCaseSensitive(row, "export_seq");
        long long q = cJSON_IsNumber(seq) ? (long long)seq->valuedouble : -1;
        cJSON_Delete(seq);
        char num[32];
        snprintf(num, sizeof(num), "%s%lld", seqs.len ? "," : "", q);
        kl_buf_str(&seqs, num);
        if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(row, "id"))) {
            cJSON_Delete(cJSON_DetachItemViaPointer(rows, row));
        } else {
            if (first < 0) {
                first = q;
                const cJSON *st = cJSON_GetObjectItemCaseSensitive(row, "started_at");
                started = cJSON_IsNumber(st) ? (int64_t)st->valuedouble : 0;
            }
            last = q;
        }
        row = next;
    }
    long sent = cJSON_GetArraySize(rows);
    if (taken > sent)
        kl_warn("export: %ld queued records were removed by retention before they could be exported "
                "(database.retention.require_export keeps them until they are)", taken - sent);
    if (sent > 0) {
        size_t clen = 0, zlen = 0;
        int64_t now = kl_wall_ms();
        unsigned char *doc = kl_archive_cbor(rows, instance, now, &clen);
        unsigned char *z = kl_archive_zstd(doc, clen, &zlen);
        free(doc);
        char key[512];
        if (!object_name(key, sizeof(key), e, instance, started, first, last, now)) {
            snprintf(err, errlen, "the object name is too long (prefix and store.instance)");
            rc = -1;
        } else if (!z) {
            snprintf(err, errlen, "compressing %s failed", key);
            rc = -1;
        } else {
            rc = kl_s3_put(e, key, z, zlen, stop, err, errlen);
            if (rc == 0)
                kl_info("export: %ld records to s3://%s/%s (%zu bytes)", sent, e->bucket, key, zlen);
        }
        free(z);
    }
    cJSON_Delete(rows);
    if (rc == 0)
        rc = dequeue(s, seqs.p, delete_exported && sent > 0, err, errlen);
    free(seqs.p);
    if (rc == 0) {
        counts->sent += sent;
        counts->lost += taken - sent;
    }
    return rc < 0 ? -1 : taken;
}

int kl_export_round(struct kl_store *s, const struct kl_export_cfg *e, const char *instance, bool delete_exported,
                    const atomic_bool *halt, struct kl_export_counts *counts, char *err, size_t errlen)
{
    counts->sent = counts->lost = 0;
    bool pg = kl_store_driver(s) == KL_STORE_POSTGRES;
    char sql[96];
    if (pg) {
        /* another gateway on this store is exporting: its turn */
        snprintf(sql, sizeof(sql), "SELECT pg_try_advisory_lock(%lld) AS ok", (long long)KL_EXPORT_LOCK);
        cJSON *rows = NULL;
        if (kl_store_exec(s, sql, NULL, 0, &rows, err, errlen) < 0)
            return -1;
        const cJSON *ok = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(rows, 0), "ok");
        bool mine = cJSON_IsString(ok) && strcmp(ok->valuestring, "t") == 0;
        cJSON_Delete(rows);
        if (!mine)
            return 0;
    }
    long n;
    do
        n = atomic_load(halt) ? 0 : one_object(s, e, instance, delete_exported, halt, counts, err, errlen);
    while (n >= (long)e->max_records);
    if (pg) {
        char ignore[128];
        snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%lld)", (long long)KL_EXPORT_LOCK);
        kl_store_exec(s, sql, NULL, 0, NULL, ignore, sizeof(ignore));
    }
    return n < 0 ? -1 : 0;
}

/* ---- the thread ---- */

struct kl_exporter {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    atomic_bool stop;
    struct kl_store *store;
    struct kl_export_cfg cfg;   /* a copy: the snapshot it came from may be freed on reload */
    char *instance;
    bool delete_exported;
    char *strings[7];
    struct kl_export_stats stats;   /* under lock */
};

/* Records still queued (for the stats), or -1. */
static long backlog(struct kl_store *s)
{
    cJSON *rows = NULL;
    char err[256];
    if (kl_store_exec(s, "SELECT count(*) AS n FROM export_queue", NULL, 0, &rows, err, sizeof(err)) < 0)
        return -1;
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(rows, 0), "n");
    long v = cJSON_IsNumber(n) ? (long)n->valuedouble : -1;
    cJSON_Delete(rows);
    return v;
}

void kl_exporter_stats(struct kl_exporter *x, struct kl_export_stats *out)
{
    pthread_mutex_lock(&x->lock);
    *out = x->stats;
    pthread_mutex_unlock(&x->lock);
}

/* The credentials for one round, copied under the lock: a reload may
 * replace them meanwhile (kl_exporter_set_credentials). */
static void take_credentials(struct kl_exporter *x, struct kl_export_cfg *round)
{
    pthread_mutex_lock(&x->lock);
    *round = x->cfg;
    round->access_key_id = strdup(x->cfg.access_key_id);
    round->access_secret = strdup(x->cfg.access_secret);
    pthread_mutex_unlock(&x->lock);
    if (!round->access_key_id || !round->access_secret)
        abort();
}

static void *export_main(void *arg)
{
    struct kl_exporter *x = arg;
    unsigned failing = 0;
    for (;;) {
        char err[768];
        struct kl_export_cfg round;
        take_credentials(x, &round);
        struct kl_export_counts counts;
        int rc = kl_export_round(x->store, &round, x->instance, x->delete_exported, &x->stop, &counts, err,
                                 sizeof(err));
        free((char *)round.access_key_id);
        free((char *)round.access_secret);
        long queued = atomic_load(&x->stop) ? -1 : backlog(x->store);
        pthread_mutex_lock(&x->lock);
        x->stats.records += (uint64_t)counts.sent;
        x->stats.lost += (uint64_t)counts.lost;
        if (rc >= 0) {
            x->stats.last_ok_ms = kl_wall_ms();
            x->stats.failing = 0;
        } else if (!atomic_load(&x->stop)) {
            x->stats.last_error_ms = kl_wall_ms();
            x->stats.failing++;
            snprintf(x->stats.last_error, sizeof(x->stats.last_error), "%.500s", err);
        }
        x->stats.queued = queued;
        pthread_mutex_unlock(&x->lock);
        if (rc < 0 && !atomic_load(&x->stop)) {
            if (failing++ % 10 == 0)
                kl_error("export to s3://%s failed (%u times in a row; the records stay queued and are sent "
                         "again in %lld s): %s",
                         x->cfg.bucket, failing, (long long)(x->cfg.every_ms / 1000), err);
        } else if (rc >= 0 && failing) {
            kl_info("export to s3://%s works again after %u failures", x->cfg.bucket, failing);
            failing = 0;
        }
        pthread_mutex_lock(&x->lock);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += x->cfg.every_ms / 1000;
        until.tv_nsec += (x->cfg.every_ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        while (!atomic_load(&x->stop) &&
               pthread_cond_timedwait(&x->cond, &x->lock, &until) == 0)
            ;
        pthread_mutex_unlock(&x->lock);
        if (atomic_load(&x->stop))
            break;
    }
    return NULL;
}

static const char *keep(struct kl_exporter *x, size_t i, const char *s)
{
    if (!s)
        return NULL;
    x->strings[i] = strdup(s);
    if (!x->strings[i])
        abort();
    return x->strings[i];
}

/* Records per object: max_records, fewer when captures make rows large,
 * so an object (held three times: rows, CBOR, zstd) stays near 64 MiB. */
static size_t rows_per_object(const struct kl_store_cfg *sc)
{
    size_t row = 8192;
    if (sc->captures != KL_CAPTURE_NONE)
        row += 16384;
    if (sc->captures == KL_CAPTURE_FULL)
        row += 2 * sc->capture_max;
    size_t fit = ((size_t)64 << 20) / row;
    fit = fit ? fit : 1;
    return sc->exporter->max_records < fit ? sc->exporter->max_records : fit;
}

struct kl_exporter *kl_exporter_start(struct kl_store *store, const struct kl_store_cfg *sc)
{
    const struct kl_export_cfg *cfg = sc->exporter;
    struct kl_exporter *x = calloc(1, sizeof(*x));
    if (!x)
        abort();
    x->store = store;
    x->cfg = *cfg;
    x->cfg.endpoint = keep(x, 0, cfg->endpoint);
    x->cfg.bucket = keep(x, 1, cfg->bucket);
    x->cfg.region = keep(x, 2, cfg->region);
    x->cfg.access_key_id = keep(x, 3, cfg->access_key_id);
    x->cfg.access_secret = keep(x, 4, cfg->access_secret);
    x->cfg.prefix = keep(x, 5, cfg->prefix);
    x->cfg.max_records = rows_per_object(sc);
    x->instance = (char *)keep(x, 6, sc->instance);
    x->delete_exported = sc->zero_retention;
    atomic_init(&x->stop, false);
    x->stats.queued = -1;
    pthread_mutex_init(&x->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&x->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_create(&x->thread, NULL, export_main, x);
    pthread_setname_np(x->thread, "kl-export");
    return x;
}

void kl_exporter_set_credentials(struct kl_exporter *x, const struct kl_export_cfg *cfg)
{
    char *id = strdup(cfg->access_key_id), *secret = strdup(cfg->access_secret);
    if (!id || !secret)
        abort();
    pthread_mutex_lock(&x->lock);
    free(x->strings[3]);
    free(x->strings[4]);
    x->cfg.access_key_id = x->strings[3] = id;
    x->cfg.access_secret = x->strings[4] = secret;
    pthread_mutex_unlock(&x->lock);
}

void kl_exporter_stop(struct kl_exporter *x)
{
    if (!x)
        return;
    pthread_mutex_lock(&x->lock);
    atomic_store(&x->stop, true);
    pthread_cond_signal(&x->cond);
    pthread_mutex_unlock(&x->lock);
    pthread_join(x->thread, NULL);
    kl_store_close(x->store);
    pthread_cond_destroy(&x->cond);
    pthread_mutex_destroy(&x->lock);
    for (size_t i = 0; i < sizeof(x->strings) / sizeof(x->strings[0]); i++)
        free(x->strings[i]);
    free(x);
}
