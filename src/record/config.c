/* The `store` section (keyless) and `database` (Aperture: retention). */
#include "record/record.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "record/schema.h"
#include "record/store.h"

static void store_defaults(kl_cfg_ctx *c)
{
    if (c->cfg->store)
        return;
    struct kl_store_cfg *s = kl_arena_alloc(&c->cfg->arena, sizeof(*s));
    s->driver = KL_STORE_SQLITE;
    /* next to the configuration file, so `make run` and tests never share one */
    const char *slash = strrchr(c->cfg->path, '/');
    s->target = slash ? kl_arena_printf(&c->cfg->arena, "%.*s/keyless.db", (int)(slash - c->cfg->path),
                                        c->cfg->path)
                      : "keyless.db";
    char host[256] = "keyless";
    gethostname(host, sizeof(host) - 1);
    s->instance = kl_arena_strdup(&c->cfg->arena, host);
    s->capture_max = 64 * 1024;
    s->queue = 65536;
    s->queue_bytes = 256u << 20;
    s->batch = 512;
    c->cfg->store = s;
}

void kl_record_read_store(kl_cfg_ctx *c, const cJSON *v)
{
    store_defaults(c);
    struct kl_store_cfg *s = c->cfg->store;
    if (!v)
        return;
    if (!cJSON_IsObject(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "store must be an object");
        return;
    }
    const cJSON *m;
    bool target_given = false;
    cJSON_ArrayForEach(m, v) {
        const char *k = m->string;
        if (strcmp(k, "driver") == 0) {
            if (cJSON_IsString(m) && strcmp(m->valuestring, "sqlite") == 0)
                s->driver = KL_STORE_SQLITE;
            else if (cJSON_IsString(m) && strcmp(m->valuestring, "postgres") == 0)
                s->driver = KL_STORE_POSTGRES;
            else
                kl_cfg_report(c, KL_SEV_ERROR, m, "store.driver must be \"sqlite\" or \"postgres\"");
        } else if ((strcmp(k, "path") == 0 || strcmp(k, "url") == 0) && cJSON_IsString(m)) {
            s->target = kl_arena_strdup(&c->cfg->arena, m->valuestring);
            target_given = true;
        } else if (strcmp(k, "instance") == 0 && cJSON_IsString(m) && m->valuestring[0]) {
            s->instance = kl_arena_strdup(&c->cfg->arena, m->valuestring);
        } else if (strcmp(k, "captures") == 0 && cJSON_IsString(m)) {
            if (strcmp(m->valuestring, "none") == 0)
                s->captures = KL_CAPTURE_NONE;
            else if (strcmp(m->valuestring, "metadata") == 0)
                s->captures = KL_CAPTURE_METADATA;
            else if (strcmp(m->valuestring, "full") == 0)
                s->captures = KL_CAPTURE_FULL;
            else
                kl_cfg_report(c, KL_SEV_ERROR, m, "store.captures must be \"none\", \"metadata\" or \"full\"");
        } else if (strcmp(k, "capture_max") == 0) {
            /* a number is bytes, as for every size: it had been warned
             * about as a mistyped key and the default kept */
            if (kl_cfg_size_value(m, &s->capture_max) < 0)
                kl_cfg_report(c, KL_SEV_ERROR, m, "store.capture_max must be a size such as \"64KiB\" or a number of bytes");
        } else if (strcmp(k, "queue") == 0) {
            /* the queue is allocated whole at start: a number past this
             * would take the memory it asks for, or fail to start */
            if (cJSON_IsNumber(m) && m->valuedouble >= 16 && m->valuedouble <= (1 << 24))
                s->queue = (size_t)m->valuedouble;
            else
                kl_cfg_report(c, KL_SEV_ERROR, m, "store.queue must be a number of records from 16 to 16777216");
        } else if (strcmp(k, "queue_bytes") == 0) {
            size_t b;
            if (kl_cfg_size_value(m, &b) < 0 || b > ((size_t)1 << 40))
                kl_cfg_report(c, KL_SEV_ERROR, m, "store.queue_bytes must be a size such as \"256MiB\" (\"0\": no bound)");
            else
                s->queue_bytes = (size_t)b;
        } else if (strcmp(k, "batch") == 0) {
            if (cJSON_IsNumber(m) && m->valuedouble >= 1 && m->valuedouble <= 65536)
                s->batch = (size_t)m->valuedouble;
            else
                kl_cfg_report(c, KL_SEV_ERROR, m, "store.batch must be a number of records from 1 to 65536");
        } else {
            kl_cfg_report(c, KL_SEV_WARNING, m, "unknown or mistyped key \"%s\" in store (ignored)", k);
        }
    }
    if (s->driver == KL_STORE_POSTGRES && !target_given)
        kl_cfg_report(c, KL_SEV_ERROR, v, "store.driver \"postgres\" needs \"url\" (e.g. \"postgresql://user@host/db\")");
}

void kl_record_read_database(kl_cfg_ctx *c, const cJSON *v)
{
    store_defaults(c);
    struct kl_store_cfg *s = c->cfg->store;
    if (!cJSON_IsObject(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "database must be an object");
        return;
    }
    const cJSON *ret = cJSON_GetObjectItemCaseSensitive(v, "retention");
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        if (strcmp(m->string, "retention") != 0)
            kl_cfg_report(c, KL_SEV_WARNING, m, "database.%s is not supported by keyless (ignored)", m->string);
    }
    if (!ret)
        return;
    if (!cJSON_IsObject(ret)) {
        kl_cfg_report(c, KL_SEV_ERROR, ret, "database.retention must be an object");
        return;
    }
    cJSON_ArrayForEach(m, ret) {
        const char *k = m->string;
        if (strcmp(k, "duration") == 0 && cJSON_IsString(m)) {
            uint64_t ms;
            if (m->valuestring[0] == '\0') {
                s->retention_ms = 0;
            } else if (strcmp(m->valuestring, "0") == 0) {
                s->zero_retention = true;
            } else if (kl_parse_duration_ms(m->valuestring, &ms) == 0 && ms > 0) {
                s->retention_ms = (int64_t)ms;
            } else {
                kl_cfg_report(c, KL_SEV_ERROR, m,
                              "database.retention.duration must be \"30d\", \"720h\", \"\" (forever) or \"0\"");
            }
        } else if (strcmp(k, "purge") == 0 && cJSON_IsArray(m)) {
            const cJSON *e;
            cJSON_ArrayForEach(e, m) {
                bool captures = cJSON_IsString(e) && strcmp(e->valuestring, "captures") == 0;
                /* "tools": tool names are metric data here; tool arguments
                 * only ever live in captures, which "captures" purges. */
                bool tools = cJSON_IsString(e) && strcmp(e->valuestring, "tools") == 0;
                if (captures || tools)
                    s->purge_captures_only = true;
                else
                    kl_cfg_report(c, KL_SEV_ERROR, e, "database.retention.purge entries are \"captures\" or \"tools\"");
            }
        } else if (strcmp(k, "require_export") == 0 && cJSON_IsBool(m)) {
            s->require_export = cJSON_IsTrue(m);
        } else if (!strcmp(k, "duration") || !strcmp(k, "purge") || !strcmp(k, "require_export")) {
            /* a mistyped retention setting must not start a gateway that
             * keeps, or deletes, other than what was meant: "purge":
             * "captures" read as no purge list deleted whole rows */
            kl_cfg_report(c, KL_SEV_ERROR, m, "database.retention.%s has the wrong type (duration: a string such as "
                          "\"30d\"; purge: an array such as [\"captures\"]; require_export: true or false)", k);
        } else {
            kl_cfg_report(c, KL_SEV_WARNING, m, "unknown key \"%s\" in database.retention (ignored)", k);
        }
    }
}

/* Only what can be told without creating or changing anything: a SQLite
 * file serve could not open for writing, or a directory it could not
 * create one in (SQLite also writes its -wal and -shm files there). Notes,
 * not errors: check may run on another machine than serve (a deploy
 * pipeline), where the path need not exist. A PostgreSQL server is not
 * contacted, for the same reason. */
/* A store a newer keyless migrated, which serve refuses to write to
 * (kl_store_refuse_newer): read, not migrated. */
static void probe_version(const char *path, kl_diags *d)
{
    char err[256];
    struct kl_store *st = kl_store_open(KL_STORE_SQLITE, path, false, err, sizeof(err));
    int64_t v = st ? kl_store_schema_version(st, err, sizeof(err)) : -1;
    kl_store_close(st);
    if (v > KL_SCHEMA_VERSION)
        kl_diags_add(d, KL_SEV_NOTE, 0, 0, "on this machine, serve would refuse store.path %s: it was migrated by a "
                     "newer keyless (schema version %lld; this one knows up to %d)", path, (long long)v,
                     KL_SCHEMA_VERSION);
}

void kl_record_probe_store(const struct kl_store_cfg *s, kl_diags *d)
{
    if (s->driver != KL_STORE_SQLITE || strcmp(s->target, ":memory:") == 0)
        return;
    struct stat st;
    if (stat(s->target, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            kl_diags_add(d, KL_SEV_NOTE, 0, 0, "on this machine, serve could not open store.path %s: it is a directory",
                         s->target);
        else if (access(s->target, R_OK | W_OK) != 0)
            kl_diags_add(d, KL_SEV_NOTE, 0, 0, "on this machine, serve could not open store.path %s for writing: %s",
                         s->target, strerror(errno));
        else
            probe_version(s->target, d);
    } else if (errno != ENOENT) {
        kl_diags_add(d, KL_SEV_NOTE, 0, 0, "on this machine, serve could not open store.path %s: %s", s->target,
                     strerror(errno));
        return;
    }
    const char *slash = strrchr(s->target, '/');
    char dir[4096] = ".";
    if (slash == s->target)
        snprintf(dir, sizeof(dir), "/");
    else if (slash)
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - s->target), s->target);
    if (access(dir, W_OK | X_OK) != 0)
        kl_diags_add(d, KL_SEV_NOTE, 0, 0, "on this machine, serve could not create store.path %s in %s: %s",
                     s->target, dir, strerror(errno));
}

/* What the two sections say together, once both are read. */
void kl_record_check_config(kl_cfg_ctx *c)
{
    const struct kl_store_cfg *s = c->cfg->store;
    if (s->require_export && !s->exporter && s->retention_ms)
        kl_cfg_report(c, KL_SEV_WARNING, NULL, "database.retention.require_export is set but no exporter is "
                      "configured: retention removes nothing until one is");
    if (!s->require_export && s->exporter && s->retention_ms)
        kl_cfg_report(c, KL_SEV_WARNING, NULL, "exporters.s3 with retention but without "
                      "database.retention.require_export: records the bucket has not taken by the time retention "
                      "removes them never reach it");
}
