/* Internal to src/record: what the two drivers share. */
#ifndef KL_STORE_INT_H
#define KL_STORE_INT_H

#include "record/schema.h"
#include "record/store.h"

struct kl_value {
    enum { KL_V_NULL, KL_V_INT, KL_V_TEXT, KL_V_BLOB } t;
    int64_t i;
    const char *s;
    size_t len;
};

/* r's columns in kl_store_columns order. */
void kl_rec_values(const struct kl_rec *r, struct kl_value *out);

/* "INSERT ... ON CONFLICT (id) DO UPDATE ..." with placeholders written by
 * ph(i) ("?" or "$i"); malloc'd. Both SQLite >= 3.24 and PostgreSQL read it. */
char *kl_upsert_sql(const char *(*ph)(size_t i, char *buf));

/* "INSERT ... ON CONFLICT (id) DO NOTHING", for in-progress rows. */
char *kl_insert_sql(const char *(*ph)(size_t i, char *buf));

/* A final row whose in-progress row was written before is an UPDATE by id
 * of every column except those fixed when the request began: the key and
 * the indexed columns that never change (instance, started_at, login,
 * session_id), so their indexes are not touched a second time. map[k] is
 * the kl_rec_values index of the k-th parameter (id is the last); map has
 * room for kl_store_ncolumns entries; returns the parameter count. */
size_t kl_update_map(size_t *map);
char *kl_update_sql(const char *(*ph)(size_t i, char *buf));

/* A captured body (a BLOB / bytea column) as a JSON string, the same from
 * both drivers: its text up to any NUL byte, made UTF-8 (kl_utf8_clean). */
void kl_add_blob_text(cJSON *row, const char *name, const void *data, size_t len);

/* Migrations 6, 7 and 8 (schema.c): each late column that is missing is
 * added. SQLite has no ADD COLUMN IF NOT EXISTS, and PostgreSQL's takes an
 * exclusive lock on requests even when the column is there (every start
 * would queue behind a long report): the catalog is read first, through
 * the same lookup readers use (quota_buckets' directly). */
int kl_store_add_late_columns(struct kl_store *s, char *err, size_t errlen);

/* -1, saying so in err, when schema_migrations records a migration this
 * keyless does not know (a newer one wrote the store). */
int kl_store_refuse_newer(struct kl_store *s, char *err, size_t errlen);

struct kl_store *kl_sqlite_open(const char *path, bool migrate, char *err, size_t errlen);
struct kl_store *kl_pg_open(const char *url, bool migrate, char *err, size_t errlen);

struct kl_store {
    enum kl_store_driver driver;
    bool export_queue;          /* final rows also go on the export queue */
    signed char late_columns[KL_SCHEMA_NLATE]; /* kl_schema_late_columns: 0 not looked up yet, 1 there, -1 not */
    int64_t changed;            /* rows the last statement run by exec changed (kl_store_changed) */
    void (*close)(struct kl_store *s);
    int (*write)(struct kl_store *s, struct kl_rec *const *v, size_t n, char *err, size_t errlen);
    int (*exec)(struct kl_store *s, const char *sql, const char *const *params, size_t nparams,
                cJSON **rows, char *err, size_t errlen);
    int (*claim)(struct kl_store *s, const char *instance, char *err, size_t errlen); /* NULL: nothing to hold */
    void (*keep)(struct kl_store *s); /* NULL: no upkeep */
};

#endif
