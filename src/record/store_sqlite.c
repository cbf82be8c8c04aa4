/* SQLite driver: WAL, NORMAL sync (a committed batch survives the process
 * being killed). Statements are prepared once: an insert for in-progress
 * rows, an update for the final row of a request already on record, and an
 * upsert for every other final row. */
#include "record/store_int.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "core/log.h"
#include "record/schema.h"

struct sqlite_store {
    struct kl_store base;
    char *path;                 /* as opened (reopen_if_moved) */
    bool writer;                /* opened to write (and migrate) */
    sqlite3 *db;
    sqlite3_stmt *upsert, *insert, *update, *begin, *commit, *enqueue;
    size_t update_map[64], nupdate;
};

static const char *qmark(size_t i, char *buf)
{
    (void)i;
    (void)buf;
    return "?";
}

static void sqlite_close(struct kl_store *s)
{
    struct sqlite_store *q = (struct sqlite_store *)s;
    sqlite3_finalize(q->upsert);
    sqlite3_finalize(q->insert);
    sqlite3_finalize(q->update);
    sqlite3_finalize(q->begin);
    sqlite3_finalize(q->commit);
    sqlite3_finalize(q->enqueue);
    sqlite3_close(q->db);
    free(q->path);
    free(q);
}

/* The database file removed or replaced while open (an operator's rm, a
 * restore): writing on would go to a file nobody can read, and every record
 * with it. So the file at the path is opened again (the writer makes a new
 * one there); the connection to the old one is closed. 0, or -1 with err
 * when the path cannot be opened now (the reader's, before the writer has
 * made the new file: then it asks again next time). */
static int reopen_if_moved(struct sqlite_store *q, char *err, size_t errlen)
{
    int moved = 0;
    if (sqlite3_file_control(q->db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK || !moved)
        return 0;
    struct kl_store *fresh = kl_sqlite_open(q->path, q->writer, err, errlen);
    if (!fresh)
        return -1;
    struct sqlite_store *f = (struct sqlite_store *)fresh;
    if (q->writer)
        kl_error("record store %s was removed or replaced while in use: a new one is made there, and the records "
                 "go on into it", q->path);
    /* the old connection's statements and handle go; the new ones take
     * their place (the base, which callers hold, stays) */
    struct sqlite_store old = *q;
    q->db = f->db;
    q->upsert = f->upsert, q->insert = f->insert, q->update = f->update;
    q->begin = f->begin, q->commit = f->commit, q->enqueue = f->enqueue;
    q->nupdate = f->nupdate;
    memcpy(q->update_map, f->update_map, sizeof(q->update_map));
    memset(q->base.late_columns, 0, sizeof(q->base.late_columns)); /* looked up again */
    free(f->path);
    free(f);
    old.path = NULL;
    sqlite3_finalize(old.upsert);
    sqlite3_finalize(old.insert);
    sqlite3_finalize(old.update);
    sqlite3_finalize(old.begin);
    sqlite3_finalize(old.commit);
    sqlite3_finalize(old.enqueue);
    sqlite3_close(old.db);
    return 0;
}

static int fail(struct sqlite_store *q, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "sqlite: %s: %s", what, sqlite3_errmsg(q->db));
    return -1;
}

static void bind(sqlite3_stmt *st, int col, const struct kl_value *v)
{
    switch (v->t) {
    case KL_V_NULL:
        sqlite3_bind_null(st, col);
        break;
    case KL_V_INT:
        sqlite3_bind_int64(st, col, v->i);
        break;
    case KL_V_TEXT:
        sqlite3_bind_text(st, col, v->s, (int)v->len, SQLITE_STATIC);
        break;
    case KL_V_BLOB:
        sqlite3_bind_blob64(st, col, v->s, v->len, SQLITE_STATIC);
        break;
    }
}

/* Run a statement to completion and reset it, whatever happened. */
static bool run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE;
}

/* After a failed write: the row itself was refused (a constraint, a value
 * too big), as opposed to the database being busy, full or unreadable. */
static bool row_refused(sqlite3 *db)
{
    int rc = sqlite3_errcode(db);
    return rc == SQLITE_CONSTRAINT || rc == SQLITE_TOOBIG || rc == SQLITE_MISMATCH || rc == SQLITE_RANGE;
}

/* A final row goes on the export queue with it, when an exporter runs. */
static bool enqueue(struct sqlite_store *q, const struct kl_rec *r)
{
    if (!q->base.export_queue || r->state == KL_REC_IN_PROGRESS)
        return true;
    /* prepared on first use: readers (keyless usage) may open a store of an
     * older schema, before a gateway has migrated it */
    if (!q->enqueue && sqlite3_prepare_v3(q->db, "INSERT INTO export_queue (id) VALUES (?)", -1,
                                          SQLITE_PREPARE_PERSISTENT, &q->enqueue, NULL) != SQLITE_OK)
        return false;
    sqlite3_bind_text(q->enqueue, 1, r->id, -1, SQLITE_STATIC);
    return run(q->enqueue);
}

static bool write_one(struct sqlite_store *q, const struct kl_rec *r)
{
    struct kl_value vals[64];
    kl_rec_values(r, vals);
    if (r->state == KL_REC_DONE && r->begun) {
        for (size_t k = 0; k < q->nupdate; k++)
            bind(q->update, (int)k + 1, &vals[q->update_map[k]]);
        if (!run(q->update))
            return false;
        if (sqlite3_changes(q->db) > 0)
            return enqueue(q, r);
        /* the in-progress row is not there after all: write the whole row */
    }
    sqlite3_stmt *st = r->state == KL_REC_IN_PROGRESS ? q->insert : q->upsert;
    for (size_t i = 0; i < kl_store_ncolumns; i++)
        bind(st, (int)i + 1, &vals[i]);
    return run(st) && enqueue(q, r);
}

/* Rows between two sched_yield() calls in a batch; see sqlite_write. */
#define KL_SQLITE_ROWS_PER_YIELD 16

/* One transaction per batch. Every KL_SQLITE_ROWS_PER_YIELD rows the writer
 * gives way to any thread waiting for its core: a batch of a hundred rows
 * is ~400 us of SQLite, and the kernel (no preemption in the kernels this
 * runs on, or a slice of ~1 ms) let a worker that had requests to read wait
 * that long, so callers and the provider sat idle in turn. With nothing else
 * to run, sched_yield returns at once (~0.3 us). Bench scenario 1: +6 % of
 * requests a second for ~1 us more CPU per request (BENCHMARKS.md). */
static int sqlite_write(struct kl_store *s, struct kl_rec *const *v, size_t n, char *err, size_t errlen)
{
    struct sqlite_store *q = (struct sqlite_store *)s;
    if (!q->begin) {
        snprintf(err, errlen, "sqlite: the store was opened for reading");
        return -1;
    }
    if (reopen_if_moved(q, err, errlen) < 0)
        return -1;
    if (!run(q->begin))
        return fail(q, "begin", err, errlen);
    for (size_t k = 0; k < n; k++) {
        if (k && k % KL_SQLITE_ROWS_PER_YIELD == 0)
            sched_yield();
        if (!write_one(q, v[k])) {
            fail(q, "insert", err, errlen);
            bool refused = row_refused(q->db);
            sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
            return refused ? KL_STORE_REFUSED : -1;
        }
    }
    if (!run(q->commit)) {
        fail(q, "commit", err, errlen);
        sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

static int sqlite_exec(struct kl_store *s, const char *sql, const char *const *params, size_t nparams,
                       cJSON **rows, char *err, size_t errlen)
{
    struct sqlite_store *q = (struct sqlite_store *)s;
    sqlite3_stmt *st;
    if (reopen_if_moved(q, err, errlen) < 0)
        return -1;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
        return fail(q, "prepare", err, errlen);
    for (size_t i = 0; i < nparams; i++) {
        if (params[i])
            sqlite3_bind_text(st, (int)i + 1, params[i], -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, (int)i + 1);
    }
    cJSON *out = rows ? cJSON_CreateArray() : NULL;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!out)
            continue;
        cJSON *row = cJSON_CreateObject();
        int nc = sqlite3_column_count(st);
        for (int c = 0; c < nc; c++) {
            const char *name = sqlite3_column_name(st, c);
            switch (sqlite3_column_type(st, c)) {
            case SQLITE_INTEGER:
                cJSON_AddNumberToObject(row, name, (double)sqlite3_column_int64(st, c));
                break;
            case SQLITE_FLOAT:
                cJSON_AddNumberToObject(row, name, sqlite3_column_double(st, c));
                break;
            case SQLITE_NULL:
                cJSON_AddNullToObject(row, name);
                break;
            case SQLITE_BLOB:
                kl_add_blob_text(row, name, sqlite3_column_blob(st, c), (size_t)sqlite3_column_bytes(st, c));
                break;
            default: {
                const char *t = (const char *)sqlite3_column_text(st, c);
                cJSON_AddStringToObject(row, name, t ? t : "");
            }
            }
        }
        cJSON_AddItemToArray(out, row);
    }
    if (rc != SQLITE_DONE) {
        fail(q, "query", err, errlen);
        sqlite3_finalize(st);
        cJSON_Delete(out);
        return -1;
    }
    sqlite3_finalize(st);
    q->base.changed = sqlite3_changes64(q->db);
    if (rows)
        *rows = out;
    return 0;
}

static int migrate(struct sqlite_store *q, char *err, size_t errlen)
{
    char sql[4096];
    snprintf(sql, sizeof(sql), kl_schema_v1, "BLOB", "BLOB");
    char *msg = NULL;
    err[0] = '\0'; /* set by the steps that are not sqlite3_exec */
    if (sqlite3_exec(q->db,
                     "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT)",
                     NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(q->db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK ||
        kl_store_refuse_newer(&q->base, err, errlen) < 0 ||
        sqlite3_exec(q->db, sql, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(q->db, kl_schema_v2, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(q->db, kl_schema_v3_drop, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(q->db, kl_schema_v3_index, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(q->db, kl_schema_v4, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(q->db, kl_schema_v5_sqlite, NULL, NULL, &msg) != SQLITE_OK ||
        kl_store_add_late_columns(&q->base, err, errlen) < 0 ||
        sqlite3_exec(q->db, kl_schema_v9_drop, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(q->db, kl_schema_v9_index, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(q->db, kl_schema_v10, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(q->db,
                     "INSERT INTO schema_migrations VALUES (1, CAST(strftime('%s','now') AS BIGINT) * 1000), "
                     "(2, CAST(strftime('%s','now') AS BIGINT) * 1000), "
                     "(3, CAST(strftime('%s','now') AS BIGINT) * 1000), "
                     "(4, CAST(strftime('%s','now') AS BIGINT) * 1000), "
                     "(5, CAST(strftime('%s','now') AS BIGINT) * 1000), "
                     "(6, CAST(strftime('%s','now') AS BIGINT) * 1000), "
                     "(7, CAST(strftime('%s','now') AS BIGINT) * 1000), "
                     "(8, CAST(strftime('%s','now') AS BIGINT) * 1000), "
                     "(9, CAST(strftime('%s','now') AS BIGINT) * 1000), "
                     "(10, CAST(strftime('%s','now') AS BIGINT) * 1000) ON CONFLICT DO NOTHING",
                     NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(q->db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
        if (msg || !err[0])
            snprintf(err, errlen, "sqlite: migrating the schema: %s", msg ? msg : sqlite3_errmsg(q->db));
        sqlite3_free(msg);
        sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

struct kl_store *kl_sqlite_open(const char *path, bool do_migrate, char *err, size_t errlen)
{
    struct sqlite_store *q = calloc(1, sizeof(*q));
    if (!q)
        abort();
    q->base = (struct kl_store){.driver = KL_STORE_SQLITE, .close = sqlite_close, .write = sqlite_write,
                                .exec = sqlite_exec};
    q->path = strdup(path);
    if (!q->path)
        abort();
    q->writer = do_migrate;
    /* readers (the query thread, keyless usage/export) never create the file */
    int flags = SQLITE_OPEN_READWRITE | (do_migrate ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &q->db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: cannot open %s: %s", path, q->db ? sqlite3_errmsg(q->db) : "out of memory");
        sqlite_close(&q->base);
        return NULL;
    }
    sqlite3_busy_timeout(q->db, 5000);
    char *msg = NULL;
    /* Checkpoints every 200 WAL pages instead of SQLite's 1,000: each one
     * fsyncs less at a time. At one connection in bench scenario 2 that took
     * p99 from 0.8-1.2 ms to 0.5-0.7 ms (the disk's completions land on
     * the load generator's core there); the writer pays ~1 us more per row
     * for copying hot pages back more often (bench/recbench.c). */
    /* only the writer sets the journal mode: a reader's PRAGMA would turn a
     * file that is no store yet (zero bytes) into a WAL database */
    if (do_migrate &&
        sqlite3_exec(q->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=200;",
                     NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: %s: %s", path, msg ? msg : "cannot enable WAL");
        sqlite3_free(msg);
        sqlite_close(&q->base);
        return NULL;
    }
    if (do_migrate && migrate(q, err, errlen) < 0) {
        sqlite_close(&q->base);
        return NULL;
    }
    int rc;
    if (!do_migrate) {
        /* a reader (the query thread, keyless usage/export) writes no rows:
         * it may read a store an older keyless wrote, without later columns */
        sqlite3_stmt *st = NULL;
        rc = sqlite3_prepare_v2(q->db, "SELECT id FROM requests LIMIT 0", -1, &st, NULL);
        sqlite3_finalize(st);
    } else {
        char *upsert = kl_upsert_sql(qmark), *insert = kl_insert_sql(qmark), *update = kl_update_sql(qmark);
        q->nupdate = kl_update_map(q->update_map);
        rc = sqlite3_prepare_v3(q->db, upsert, -1, SQLITE_PREPARE_PERSISTENT, &q->upsert, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v3(q->db, insert, -1, SQLITE_PREPARE_PERSISTENT, &q->insert, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v3(q->db, update, -1, SQLITE_PREPARE_PERSISTENT, &q->update, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v3(q->db, "BEGIN IMMEDIATE", -1, SQLITE_PREPARE_PERSISTENT, &q->begin, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v3(q->db, "COMMIT", -1, SQLITE_PREPARE_PERSISTENT, &q->commit, NULL);
        free(upsert);
        free(insert);
        free(update);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: %s: %s (is the schema there? run the gateway once)", path,
                 sqlite3_errmsg(q->db));
        sqlite_close(&q->base);
        return NULL;
    }
    return &q->base;
}
