/* The record store: SQLite (embedded default) or PostgreSQL (several
 * gateways share one), behind one small interface. Only the writer thread
 * and the query thread hold store connections; workers never touch them. */
#ifndef KL_STORE_H
#define KL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "record/rec.h"

enum kl_store_driver { KL_STORE_SQLITE, KL_STORE_POSTGRES };

struct kl_store;

/* Process-wide store settings; call once, first thing, while the process
 * has one thread (SQLite takes them only before its first connection). */
void kl_store_global_init(void);

struct kl_store *kl_store_open(enum kl_store_driver d, const char *target, bool migrate, char *err,
                               size_t errlen);
void kl_store_close(struct kl_store *s);
/* The newest migration the store has had (0: none), or -1 with err. */
int64_t kl_store_schema_version(struct kl_store *s, char *err, size_t errlen);
/* Does requests have this column? Those later migrations added (attempts,
 * guardrails) may be missing from a store an older keyless wrote, which a
 * reader is given as it is. Looked up once per connection. */
bool kl_store_has_column(struct kl_store *s, const char *column);
enum kl_store_driver kl_store_driver(const struct kl_store *s);

/* Insert or update (by id) every record in one transaction: 0; -1 when the
 * store cannot be written now (unreachable, full, busy: try again later);
 * KL_STORE_REFUSED when it works but refuses something the records hold
 * (written alone, the others would go in). Writing a record again is
 * harmless: every write is an upsert by id. */
#define KL_STORE_REFUSED (-2)
int kl_store_write(struct kl_store *s, struct kl_rec *const *v, size_t n, char *err, size_t errlen);

/* From now on, every final row written also goes on the export queue
 * (export_queue, migration 5), in the same transaction: with an exporter. */
void kl_store_set_export_queue(struct kl_store *s, bool on);

/* Hold the instance name for as long as s is open (PostgreSQL: an advisory
 * lock of the session, taken again after a reconnect): 1, or 0 when another
 * session holds it, -1 on error (err). SQLite: 1 (one file, one host). */
int kl_store_claim_instance(struct kl_store *s, const char *instance, char *err, size_t errlen);
/* Upkeep while s is idle (the writer calls it every second it has nothing
 * to write): on PostgreSQL, a session the server ended is replaced now and
 * the instance name held again, rather than at the next statement, which an
 * idle writer may not run for minutes while a stream goes on; meanwhile a
 * gateway starting finds the name free and marks this one's requests in
 * flight interrupted. */
void kl_store_keep(struct kl_store *s);
/* The class (first key) of those PostgreSQL advisory locks; the second is
 * hashtext(instance). */
#define KL_STORE_INSTANCE_LOCK "27500" /* 0x6b6c, "kl" */

/* Run a statement with '?' placeholders and text parameters (NULL = SQL
 * NULL). Rows come back as a JSON array of objects keyed by column name;
 * integer columns as numbers. rows may be NULL for statements. */
int kl_store_exec(struct kl_store *s, const char *sql, const char *const *params, size_t nparams,
                  cJSON **rows, char *err, size_t errlen);
/* How many rows the last kl_store_exec statement inserted, updated or
 * deleted. */
int64_t kl_store_changed(const struct kl_store *s);

/* The first 13 characters of a request id started at ms ("tttttttt-tttt",
 * see kl_schema_v4 and kl_request_id), in out[14]: id >= it exactly when the
 * request started at or after ms, id < it exactly when before, for starts
 * in 0 .. 2^48 - 1 ms (to the year 10889); outside that, both clamp. */
void kl_store_id_floor(char out[14], int64_t ms);

/* SQL expression for the UTC day ("YYYY-MM-DD") of a Unix-ms column. */
const char *kl_store_sql_day(const struct kl_store *s, const char *column);

/* Columns of the requests table, in schema order (for SELECT and export). */
extern const char *const kl_store_columns[];
extern const size_t kl_store_ncolumns;

#endif
