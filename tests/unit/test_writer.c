/* The record writer: slots are reserved up front and a full queue refuses
 * instead of dropping; a request waits for a writer that is behind but
 * working, not for a stuck one; what is queued is written; a final row updates the
 * in-progress row written before it (or is inserted when that row is not there); a
 * database of the previous schema opens and is migrated. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "core/exchange.h"
#include "record/report.h"
#include "record/writer.h"

static struct kl_rec *rec_at(const char *id, enum kl_rec_state st, int64_t started_ms)
{
    struct kl_rec r;
    memset(&r, 0, sizeof(r));
    snprintf(r.id, sizeof(r.id), "%s", id);
    r.state = st;
    r.started_ms = started_ms;
    r.latency_ms = r.ttft_ms = -1;
    r.status = st == KL_REC_DONE ? 200 : 0;
    r.begun = st == KL_REC_DONE; /* an update first; with no row to update, an insert */
    r.ended_ms = st == KL_REC_DONE ? started_ms + 1 : 0;
    return kl_rec_pack(&r);
}

/* A record of a request that started long ago. */
static struct kl_rec *rec(const char *id, enum kl_rec_state st)
{
    return rec_at(id, st, 1);
}

static void remove_db(const char *path)
{
    char side[64];
    unlink(path);
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
}

/* A new store in a fresh temporary file, whose name goes to path. */
static struct kl_store *temp_store(char *path)
{
    strcpy(path, "/tmp/kl-writer-XXXXXX");
    close(mkstemp(path));
    char err[256];
    struct kl_store *s = kl_store_open(KL_STORE_SQLITE, path, true, err, sizeof(err));
    assert_non_null(s);
    return s;
}

/* One row of the requests table as JSON (NULL when it is not there). */
static cJSON *row(struct kl_store *s, const char *id)
{
    char err[256];
    cJSON *rows = NULL;
    const char *params[] = {id};
    assert_int_equal(kl_store_exec(s, "SELECT * FROM requests WHERE id = ?", params, 1, &rows, err, sizeof(err)), 0);
    cJSON *r = cJSON_DetachItemFromArray(rows, 0);
    cJSON_Delete(rows);
    return r;
}

static const char *str(const cJSON *r, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(r, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num(const cJSON *r, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(r, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static struct kl_rec *full(const char *id, enum kl_rec_state st, bool begun)
{
    struct kl_rec r;
    memset(&r, 0, sizeof(r));
    snprintf(r.id, sizeof(r.id), "%s", id);
    r.state = st;
    r.instance = "gw1";
    r.started_ms = 1000;
    r.latency_ms = r.ttft_ms = -1;
    r.login = "bob@example.com";
    r.session_id = "s1";
    r.method = "POST";
    r.path = "/v1/chat/completions";
    r.model_requested = "gpt-4o";
    r.provider = "openai";
    r.bytes_in = 10;
    if (st == KL_REC_DONE) {
        r.ended_ms = 1500;
        r.latency_ms = 500;
        r.first_byte_ms = 1400;
        r.ttft_ms = 400;
        r.status = 200;
        r.upstream_status = 200;
        r.usage_known = true;
        r.input_tokens = 7;
        r.output_tokens = 3;
        r.model_served = "gpt-4o-2024-08-06";
        r.bytes_out = 99;
        r.begun = begun;
    }
    return kl_rec_pack(&r);
}

static void write1(struct kl_store *s, struct kl_rec *r)
{
    char err[256];
    assert_int_equal(kl_store_write(s, &r, 1, err, sizeof(err)), 0);
    kl_rec_free(r);
}

/* In-progress row in one batch, final row in a later one: the final row
 * updates it in place; a final row whose in-progress row is missing (or was
 * never written) is inserted whole. Either way one complete row. */
static void final_row_updates_or_inserts(void **state)
{
    (void)state;
    char path[32], err[256];
    struct kl_store *s = temp_store(path);

    write1(s, full("a", KL_REC_IN_PROGRESS, false));
    cJSON *r = row(s, "a");
    assert_non_null(r);
    assert_string_equal(str(r, "state"), "in_progress");
    assert_int_equal((int)num(r, "status"), 0);
    cJSON_Delete(r);
    write1(s, full("a", KL_REC_DONE, true));
    write1(s, full("b", KL_REC_DONE, true));   /* no in-progress row: inserted */
    write1(s, full("c", KL_REC_DONE, false));
    write1(s, full("c", KL_REC_IN_PROGRESS, false)); /* a late duplicate changes nothing */

    const char *ids[] = {"a", "b", "c"};
    for (size_t i = 0; i < 3; i++) {
        r = row(s, ids[i]);
        assert_non_null(r);
        assert_string_equal(str(r, "state"), "done");
        assert_string_equal(str(r, "instance"), "gw1");
        assert_string_equal(str(r, "login"), "bob@example.com");
        assert_string_equal(str(r, "session_id"), "s1");
        assert_string_equal(str(r, "model_served"), "gpt-4o-2024-08-06");
        assert_int_equal((int)num(r, "started_at"), 1000);
        assert_int_equal((int)num(r, "ended_at"), 1500);
        assert_int_equal((int)num(r, "latency_ms"), 500);
        assert_int_equal((int)num(r, "status"), 200);
        assert_int_equal((int)num(r, "output_tokens"), 3);
        assert_int_equal((int)num(r, "bytes_out"), 99);
        cJSON_Delete(r);
    }
    cJSON *rows = NULL;
    assert_int_equal(kl_store_exec(s, "SELECT count(*) AS n FROM requests", NULL, 0, &rows, err, sizeof(err)), 0);
    assert_int_equal((int)num(cJSON_GetArrayItem(rows, 0), "n"), 3);
    cJSON_Delete(rows);
    kl_store_close(s);
    remove_db(path);
}

/* A database written by the previous schema (every row's state indexed)
 * opens: its rows are kept, the old index is replaced by the in-progress
 * one, and start-up recovery finds in-progress rows through it. */
static void previous_schema_is_migrated(void **state)
{
    (void)state;
    char path[] = "/tmp/kl-writer-XXXXXX";
    close(mkstemp(path));
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *old = sqlite3_mprintf(
        "PRAGMA journal_mode=WAL;"
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT);"
        "CREATE TABLE requests (id TEXT PRIMARY KEY, instance TEXT, state TEXT NOT NULL, started_at BIGINT NOT NULL,"
        " first_byte_at BIGINT, ended_at BIGINT, latency_ms BIGINT, ttft_ms BIGINT,"
        " login TEXT, display_name TEXT, node TEXT, stable_node_id TEXT, tags TEXT,"
        " identity_source TEXT, source_addr TEXT, method TEXT, path TEXT, endpoint TEXT, dialect TEXT,"
        " model_requested TEXT, model_served TEXT, provider TEXT, stream BIGINT,"
        " status BIGINT, upstream_status BIGINT, error_class TEXT, error_message TEXT,"
        " usage_known BIGINT, input_tokens BIGINT, output_tokens BIGINT, cache_read_tokens BIGINT,"
        " cache_write_tokens BIGINT, reasoning_tokens BIGINT, cost_known BIGINT, cost_nanodollars BIGINT,"
        " bytes_in BIGINT, bytes_out BIGINT, tool_calls BIGINT, tool_names TEXT, stop_reason TEXT, session_id TEXT,"
        " user_agent TEXT, request_headers TEXT, response_headers TEXT, request_body BLOB, response_body BLOB);"
        "CREATE INDEX requests_started ON requests (started_at);"
        "CREATE INDEX requests_login ON requests (login, started_at);"
        "CREATE INDEX requests_session ON requests (session_id);"
        "CREATE INDEX requests_state ON requests (state, instance);"
        "CREATE TABLE quota_buckets (name TEXT PRIMARY KEY, level BIGINT NOT NULL, updated_at BIGINT NOT NULL);"
        "INSERT INTO schema_migrations VALUES (1, 0), (2, 0);"
        "INSERT INTO requests (id, instance, state, started_at, status) VALUES"
        " ('old-done', 'gw1', 'done', 5, 200), ('old-running', 'gw1', 'in_progress', 6, 0);");
    assert_int_equal(sqlite3_exec(db, old, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_free(old);
    sqlite3_close(db);

    char err[256];
    /* a reader (keyless usage/export) reads it as it is, without the columns
     * of later migrations */
    struct kl_store *s = kl_store_open(KL_STORE_SQLITE, path, false, err, sizeof(err));
    assert_non_null(s);
    struct kl_report_filter f;
    memset(&f, 0, sizeof(f));
    cJSON *rows = NULL;
    assert_int_equal(kl_report_requests(s, &f, true, &rows, err, sizeof(err)), 0);
    assert_int_equal(cJSON_GetArraySize(rows), 2);
    assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "attempts"));
    assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "guardrails"));
    cJSON_Delete(rows);
    kl_store_close(s);

    s = kl_store_open(KL_STORE_SQLITE, path, true, err, sizeof(err));
    assert_non_null(s);
    rows = NULL;
    assert_int_equal(kl_store_exec(s,
                                   "SELECT (SELECT count(*) FROM sqlite_master WHERE name = 'requests_state') AS old,"
                                   " (SELECT count(*) FROM sqlite_master WHERE name = 'requests_in_progress') AS new,"
                                   " (SELECT count(*) FROM sqlite_master WHERE name = 'requests_started') AS started,"
                                   " (SELECT count(*) FROM sqlite_master WHERE name = 'export_queue') AS queue,"
                                   " (SELECT max(version) FROM schema_migrations) AS version,"
                                   " (SELECT count(*) FROM pragma_table_info('requests') WHERE name = 'attempts')"
                                   " AS attempts,"
                                   " (SELECT count(*) FROM pragma_table_info('requests') WHERE name = 'guardrails')"
                                   " AS guardrails,"
                                   " (SELECT count(*) FROM pragma_table_info('quota_buckets') WHERE name = 'capacity')"
                                   " AS capacity,"
                                   " (SELECT count(*) FROM sqlite_master WHERE name = 'requests_login') AS login_started,"
                                   " (SELECT count(*) FROM sqlite_master WHERE name = 'requests_login_id') AS login_id,"
                                   " (SELECT count(*) FROM pragma_table_info('requests') WHERE name = 'response_id')"
                                   " AS response_id,"
                                   " (SELECT count(*) FROM sqlite_master WHERE name = 'requests_response') AS by_response",
                                   NULL, 0, &rows, err, sizeof(err)), 0);
    const cJSON *m = cJSON_GetArrayItem(rows, 0);
    assert_int_equal((int)num(m, "old"), 0);
    assert_int_equal((int)num(m, "new"), 1);
    assert_int_equal((int)num(m, "started"), 0);
    assert_int_equal((int)num(m, "queue"), 1);
    assert_int_equal((int)num(m, "version"), 10);
    assert_int_equal((int)num(m, "attempts"), 1);
    assert_int_equal((int)num(m, "guardrails"), 1);
    assert_int_equal((int)num(m, "capacity"), 1);
    assert_int_equal((int)num(m, "login_started"), 0);
    assert_int_equal((int)num(m, "login_id"), 1);
    assert_int_equal((int)num(m, "response_id"), 1);
    assert_int_equal((int)num(m, "by_response"), 1);
    cJSON_Delete(rows);

    /* the start-up recovery statement, as record.c runs it, uses the index */
    rows = NULL;
    assert_int_equal(kl_store_exec(s, "EXPLAIN QUERY PLAN UPDATE requests SET state = 'interrupted' "
                                      "WHERE state = 'in_progress' AND instance = ?",
                                   (const char *[]){"gw1"}, 1, &rows, err, sizeof(err)), 0);
    char *plan = cJSON_PrintUnformatted(rows);
    assert_non_null(strstr(plan, "requests_in_progress"));
    free(plan);
    cJSON_Delete(rows);

    /* retention's time range is bounded on the primary key, not scanned */
    rows = NULL;
    assert_int_equal(kl_store_exec(s, "EXPLAIN QUERY PLAN DELETE FROM requests WHERE id < ? AND started_at < ? "
                                      "AND state <> 'in_progress'",
                                   (const char *[]){"01a2abcd-1234", "1000"}, 2, &rows, err, sizeof(err)), 0);
    plan = cJSON_PrintUnformatted(rows);
    assert_non_null(strstr(plan, "sqlite_autoindex_requests_1 (id<?)"));
    free(plan);
    cJSON_Delete(rows);

    write1(s, full("old-running", KL_REC_DONE, true));
    cJSON *r = row(s, "old-running");
    assert_string_equal(str(r, "state"), "done");
    cJSON_Delete(r);
    r = row(s, "old-done");
    assert_int_equal((int)num(r, "status"), 200);
    cJSON_Delete(r);
    kl_store_close(s);

    /* opened again: the migrations run again, the column is not added twice */
    s = kl_store_open(KL_STORE_SQLITE, path, true, err, sizeof(err));
    assert_non_null(s);
    struct kl_rec *rec = full("with-attempts", KL_REC_DONE, false);
    rec->attempts = "[{\"provider\":\"a\",\"status\":503}]";
    rec->guardrails = "[{\"stage\":\"request\",\"by\":\"guardrails\",\"action\":\"log\"}]";
    write1(s, kl_rec_pack(rec));
    kl_rec_free(rec);
    r = row(s, "with-attempts");
    assert_string_equal(str(r, "attempts"), "[{\"provider\":\"a\",\"status\":503}]");
    assert_string_equal(str(r, "guardrails"), "[{\"stage\":\"request\",\"by\":\"guardrails\",\"action\":\"log\"}]");
    cJSON_Delete(r);
    kl_store_close(s);
    remove_db(path);
}

/* A store migration 6 left (attempts there, guardrails not) gains only the
 * missing column; a reader sees it without guardrails until then. */
static void version_6_store_gains_guardrails(void **state)
{
    (void)state;
    char path[] = "/tmp/kl-writer-XXXXXX";
    close(mkstemp(path));
    char err[256];
    struct kl_store *s = kl_store_open(KL_STORE_SQLITE, path, true, err, sizeof(err));
    assert_non_null(s);
    kl_store_close(s);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "ALTER TABLE requests DROP COLUMN guardrails;"
                                      "DELETE FROM schema_migrations WHERE version = 7;"
                                      "INSERT INTO requests (id, state, started_at, attempts) VALUES"
                                      " ('v6-row', 'done', 5, '[]')", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    s = kl_store_open(KL_STORE_SQLITE, path, false, err, sizeof(err));
    assert_non_null(s);
    assert_true(kl_store_has_column(s, "attempts"));
    assert_false(kl_store_has_column(s, "guardrails"));
    assert_true(kl_store_has_column(s, "login"));
    struct kl_report_filter f;
    memset(&f, 0, sizeof(f));
    cJSON *rows = NULL;
    assert_int_equal(kl_report_requests(s, &f, false, &rows, err, sizeof(err)), 0);
    assert_string_equal(str(cJSON_GetArrayItem(rows, 0), "attempts"), "[]");
    assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "guardrails"));
    cJSON_Delete(rows);
    kl_store_close(s);

    s = kl_store_open(KL_STORE_SQLITE, path, true, err, sizeof(err));
    assert_non_null(s);
    assert_true(kl_store_has_column(s, "guardrails"));
    cJSON *r = row(s, "v6-row");
    assert_string_equal(str(r, "attempts"), "[]");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r, "guardrails")));
    cJSON_Delete(r);
    rows = NULL;
    assert_int_equal(kl_store_exec(s, "SELECT max(version) AS v FROM schema_migrations", NULL, 0, &rows, err,
                                   sizeof(err)), 0);
    assert_int_equal((int)num(cJSON_GetArrayItem(rows, 0), "v"), 10);
    cJSON_Delete(rows);
    kl_store_close(s);
    remove_db(path);
}

/* A store a newer keyless migrated (a migration this one does not know) is
 * refused for writing, saying why, and left as it was; it can still be read
 * (keyless usage/export). */
static void newer_schema_is_refused(void **state)
{
    (void)state;
    char path[] = "/tmp/kl-writer-XXXXXX";
    close(mkstemp(path));
    char err[256];
    struct kl_store *s = kl_store_open(KL_STORE_SQLITE, path, true, err, sizeof(err));
    assert_non_null(s);
    write1(s, full("kept", KL_REC_DONE, false));
    kl_store_close(s);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "INSERT INTO schema_migrations VALUES (11, 0)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    err[0] = '\0';
    assert_null(kl_store_open(KL_STORE_SQLITE, path, true, err, sizeof(err)));
    assert_non_null(strstr(err, "migrated by a newer keyless (schema version 11; this one knows up to 10)"));

    s = kl_store_open(KL_STORE_SQLITE, path, false, err, sizeof(err));
    assert_non_null(s);
    cJSON *r = row(s, "kept");
    assert_string_equal(str(r, "state"), "done");
    cJSON_Delete(r);
    cJSON *rows = NULL;
    assert_int_equal(kl_store_exec(s, "SELECT count(*) AS n FROM schema_migrations", NULL, 0, &rows, err,
                                   sizeof(err)), 0);
    assert_int_equal((int)num(cJSON_GetArrayItem(rows, 0), "n"), 11);
    cJSON_Delete(rows);
    kl_store_close(s);
    remove_db(path);
}

/* kl_store_id_floor splits request ids (kl_request_id, as the gateway makes
 * them) exactly at a millisecond, across the edges of each field. */
static void id_floor_splits_ids_by_start_time(void **state)
{
    (void)state;
    const int64_t times[] = {0, 1, 0xffff, 0x10000, 1764000000000, 1764000065535, 1764000065536, 0xffffffffffffll};
    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        int64_t t = times[i];
        char at[14];
        kl_store_id_floor(at, t);
        for (int64_t d = -1; d <= 1; d++) {
            int64_t ms = t + d;
            if (ms < 0 || ms > 0xffffffffffffll)
                continue;
            for (unsigned tail = 0; tail < 2; tail++) {
                char id[40];
                kl_request_id(id, ms, tail ? 0xffff : 0, tail ? UINT64_MAX : 0);
                assert_int_equal(strlen(id), 36);
                if (d < 0)
                    assert_true(strcmp(id, at) < 0);
                else
                    assert_true(strcmp(id, at) >= 0);
            }
        }
    }
    char at[14];
    kl_store_id_floor(at, -5); /* clamped, not wrapped */
    assert_string_equal(at, "00000000-0000");
    kl_store_id_floor(at, 0x7fffffffffffffffll);
    assert_string_equal(at, "ffffffff-ffff");
    char id[40];
    kl_request_id(id, -5, 0, 0); /* and so are ids */
    assert_memory_equal(id, "00000000-0000-7000-8000-000000000000", 37);
    kl_request_id(id, 0x4000000000000ll, 0xfff, UINT64_MAX);
    assert_memory_equal(id, "ffffffff-ffff-7fff-bfff-ffffffffffff", 37);
}

/* Report time filters (now also bounded by id) keep exactly the rows that
 * started in [since, until), at millisecond edges. */
static void report_time_range_is_exact(void **state)
{
    (void)state;
    char path[32], err[256], id[3][40];
    struct kl_store *s = temp_store(path);
    const int64_t t = 1764000065536; /* a carry in the id's second field */
    for (int i = 0; i < 3; i++) {
        kl_request_id(id[i], t - 1 + i, (uint16_t)i, 0x1234);
        write1(s, rec_at(id[i], KL_REC_DONE, t - 1 + i));
    }
    const struct {
        int64_t since, until;
        int first, n; /* rows id[first .. first + n) */
    } cases[] = {{t, -1, 1, 2}, {-1, t, 0, 1}, {t, t + 1, 1, 1}, {t - 1, t + 2, 0, 3}, {t + 2, -1, 0, 0},
                 {-1, 0, 0, 0} /* until the epoch: nothing (0 is a bound, not "none") */, {0, -1, 0, 3}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct kl_report_filter f = {.since_ms = cases[c].since, .until_ms = cases[c].until,
                                     .has_since = cases[c].since >= 0, .has_until = cases[c].until >= 0};
        cJSON *rows = NULL;
        assert_int_equal(kl_report_requests(s, &f, false, &rows, err, sizeof(err)), 0);
        assert_int_equal(cJSON_GetArraySize(rows), cases[c].n);
        for (int i = 0; i < cases[c].n; i++) /* newest first */
            assert_string_equal(str(cJSON_GetArrayItem(rows, i), "id"), id[cases[c].first + cases[c].n - 1 - i]);
        cJSON_Delete(rows);
    }
    kl_store_close(s);
    remove_db(path);
}

/* The API caps a report's rows, and says when it did (the CLI does not). */
static void usage_report_rows_are_capped(void **state)
{
    (void)state;
    char path[32], err[256], id[40];
    struct kl_store *s = temp_store(path);
    for (int i = 0; i < 3; i++) { /* three days, three groups */
        kl_request_id(id, 1764000000000 + i * 86400000LL, (uint16_t)i, 0x1234);
        write1(s, rec_at(id, KL_REC_DONE, 1764000000000 + i * 86400000LL));
    }
    struct kl_report_filter f = {0};
    const struct { int max, rows; bool truncated; } cases[] = {{2, 2, true}, {3, 3, false}, {0, 3, false}, {1, 1, true}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        cJSON *rows = NULL;
        bool truncated = !cases[c].truncated;
        assert_int_equal(kl_report_usage(s, "day", &f, cases[c].max, &rows, &truncated, err, sizeof(err)), 0);
        assert_int_equal(cJSON_GetArraySize(rows), cases[c].rows);
        assert_int_equal(truncated, cases[c].truncated);
        cJSON_Delete(rows);
    }
    kl_store_close(s);
    remove_db(path);
}

/* SQLite's plan for a report statement: its rows' details. */
static cJSON *plan_of(struct kl_store *s, const struct kl_report_sql *q)
{
    char explain[sizeof(q->sql) + 32], err[256];
    snprintf(explain, sizeof(explain), "EXPLAIN QUERY PLAN %s", q->sql);
    cJSON *rows = NULL;
    assert_int_equal(kl_store_exec(s, explain, q->params, q->n, &rows, err, sizeof(err)), 0);
    return rows;
}

/* A usage report with a time range reads that range by primary key, whatever
 * it is grouped by: grouped by an indexed column, SQLite's planner had
 * walked the whole (login) or (session_id) index instead, to save a sort. */
static void grouped_report_reads_the_time_range_only(void **state)
{
    (void)state;
    char path[32], err[256];
    struct kl_store *s = temp_store(path);
    const char *groups[] = {"user", "session", "user,model", "model", "day", "provider,node,endpoint", ""};
    struct kl_report_filter f = {.since_ms = kl_wall_ms() - 3600000, .has_since = true};
    for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) {
        struct kl_report_sql q;
        assert_int_equal(kl_report_usage_sql(s, groups[g], &f, &q, err, sizeof(err)), 0);
        cJSON *rows = plan_of(s, &q), *r;
        bool by_id = false;
        cJSON_ArrayForEach(r, rows) {
            const char *d = str(r, "detail");
            assert_non_null(d);
            assert_null(strstr(d, "requests_login"));
            assert_null(strstr(d, "requests_session"));
            by_id = by_id || strstr(d, "sqlite_autoindex_requests_1 (id>?)") != NULL;
        }
        assert_true(by_id);
        cJSON_Delete(rows);
        /* and it runs */
        bool truncated;
        assert_int_equal(kl_report_usage(s, groups[g], &f, 0, &rows, &truncated, err, sizeof(err)), 0);
        cJSON_Delete(rows);
    }
    struct kl_report_sql q;
    assert_int_equal(kl_report_usage_sql(s, "user,colour", &f, &q, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "colour"));
    kl_store_close(s);
    remove_db(path);
}

/* A user's listing (/api/requests, always filtered by their login) reads
 * their newest rows in id order from an index: with (login, started_at)
 * SQLite found every row of the login and sorted them all for each page. */
static void users_listing_reads_in_id_order(void **state)
{
    (void)state;
    char path[32], err[256];
    struct kl_store *s = temp_store(path);
    struct kl_report_filter filters[] = {
        {.user = "uma@example.com", .limit = 50},
        {.user = "uma@example.com", .limit = 50, .before_id = "01a22701-8de5-7101-8d15-865017f8c5f0"},
        {.user = "uma@example.com", .limit = 50, .since_ms = kl_wall_ms() - 3600000, .has_since = true},
    };
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++) {
        struct kl_report_sql q;
        kl_report_requests_sql(s, &filters[i], false, &q);
        cJSON *rows = plan_of(s, &q), *r;
        bool by_login = false;
        cJSON_ArrayForEach(r, rows) {
            const char *d = str(r, "detail");
            assert_non_null(d);
            assert_null(strstr(d, "TEMP B-TREE"));
            by_login = by_login || strstr(d, "requests_login_id (login=?") != NULL;
        }
        assert_true(by_login);
        cJSON_Delete(rows);
        assert_int_equal(kl_report_requests(s, &filters[i], false, &rows, err, sizeof(err)), 0);
        cJSON_Delete(rows);
    }
    kl_store_close(s);
    remove_db(path);
}

/* A record the store refuses (here a trigger refuses it, as PostgreSQL
 * refused text that was not UTF-8) is logged and dropped alone: the records
 * batched with it and after it are written. */
static void refused_record_does_not_block_the_rest(void **state)
{
    (void)state;
    char path[32], err[256];
    struct kl_store *s = temp_store(path);
    assert_int_equal(kl_store_exec(s, "CREATE TRIGGER refuse BEFORE INSERT ON requests WHEN new.id = 'poison'"
                                      " BEGIN SELECT RAISE(ABORT, 'refused for the test'); END",
                                   NULL, 0, NULL, err, sizeof(err)), 0);
    struct kl_store *reader = kl_store_open(KL_STORE_SQLITE, path, false, err, sizeof(err));
    assert_non_null(reader);
    struct kl_writer_opts o = {.queue = 16, .batch = 8};
    struct kl_writer *w = kl_writer_start(s, &o);
    assert_true(kl_writer_reserve(w, 4));
    kl_writer_push(w, rec("before", KL_REC_DONE));
    kl_writer_push(w, rec("poison", KL_REC_DONE));
    kl_writer_push(w, rec("after", KL_REC_DONE));
    cJSON *r = NULL;
    for (int i = 0; i < 400 && !r; i++) {
        usleep(5 * 1000);
        r = row(reader, "after");
    }
    assert_non_null(r);
    cJSON_Delete(r);
    r = row(reader, "before");
    assert_non_null(r);
    cJSON_Delete(r);
    assert_null(row(reader, "poison"));
    struct kl_writer_stats st;
    kl_writer_stats(w, &st);
    assert_int_equal(st.refused, 1);
    /* and the writer goes on */
    kl_writer_push(w, rec("later", KL_REC_DONE));
    kl_writer_stop(w);
    r = row(reader, "later");
    assert_non_null(r);
    cJSON_Delete(r);
    kl_store_close(reader);
    remove_db(path);
}

/* Retention deletes by start time through the writer's own purge (which
 * bounds the primary key): the old row goes, the recent one stays. */
static void retention_purges_old_rows(void **state)
{
    (void)state;
    char path[32], err[256], old_id[40], new_id[40];
    struct kl_store *s = temp_store(path);
    int64_t now = kl_wall_ms();
    kl_request_id(old_id, now - 120000, 1, 1);
    kl_request_id(new_id, now - 10000, 2, 2);
    write1(s, rec_at(old_id, KL_REC_DONE, now - 120000));
    write1(s, rec_at(new_id, KL_REC_DONE, now - 10000));
    struct kl_writer_opts o = {.queue = 16, .batch = 8, .retention_ms = 60000};
    struct kl_writer *w = kl_writer_start(s, &o); /* purges on its first idle wake, within a second */
    struct kl_store *reader = kl_store_open(KL_STORE_SQLITE, path, false, err, sizeof(err));
    assert_non_null(reader);
    cJSON *r = NULL;
    for (int i = 0; i < 60; i++) {
        cJSON_Delete(r);
        r = row(reader, old_id);
        if (!r)
            break;
        usleep(50 * 1000);
    }
    assert_null(r);
    r = row(reader, new_id);
    assert_non_null(r);
    cJSON_Delete(r);
    kl_store_close(reader);
    kl_writer_stop(w);
    remove_db(path);
}

/* A backlog larger than one purge step (50,000 rows) is purged pass after
 * pass, not one step a minute (a gateway serving more than that a minute
 * would fall behind for ever). */
static void retention_catches_up_with_a_backlog(void **state)
{
    (void)state;
    char path[32], err[256];
    struct kl_store *s = temp_store(path);
    assert_int_equal(kl_store_exec(s,
                                   "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 120001) "
                                   "INSERT INTO requests (id, state, started_at) "
                                   "SELECT printf('00000000-0000-%06d', n), 'done', 5 FROM c",
                                   NULL, 0, NULL, err, sizeof(err)), 0);
    assert_int_equal(kl_store_changed(s), 120001);
    struct kl_writer_opts o = {.queue = 16, .batch = 8, .retention_ms = 60000};
    struct kl_writer *w = kl_writer_start(s, &o);
    struct kl_store *reader = kl_store_open(KL_STORE_SQLITE, path, false, err, sizeof(err));
    assert_non_null(reader);
    double left = -1;
    for (int i = 0; i < 400 && left != 0; i++) { /* three passes, a second apart: not 120 s */
        usleep(50 * 1000);
        cJSON *rows = NULL;
        assert_int_equal(kl_store_exec(reader, "SELECT count(*) AS n FROM requests", NULL, 0, &rows, err,
                                       sizeof(err)), 0);
        left = num(cJSON_GetArrayItem(rows, 0), "n");
        cJSON_Delete(rows);
    }
    assert_true(left == 0);
    kl_store_close(reader);
    kl_writer_stop(w);
    remove_db(path);
}

static void full_queue_refuses_and_nothing_is_lost(void **state)
{
    (void)state;
    char path[32], err[256];
    struct kl_store *s = temp_store(path);
    struct kl_writer_opts o = {.queue = 16, .batch = 8};
    struct kl_writer *w = kl_writer_start(s, &o);
    assert_true(kl_writer_reserve(w, 16));
    assert_false(kl_writer_reserve(w, 1)); /* reserved slots count: refuse */
    kl_writer_unreserve(w, 6);
    char id[32];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "r%d", i);
        kl_writer_push(w, rec(id, KL_REC_IN_PROGRESS));
        kl_writer_push(w, rec(id, KL_REC_DONE));
    }
    kl_writer_stop(w); /* writes everything queued */
    s = kl_store_open(KL_STORE_SQLITE, path, false, err, sizeof(err));
    assert_non_null(s);
    cJSON *rows = NULL;
    assert_int_equal(kl_store_exec(s, "SELECT state, count(*) AS n FROM requests GROUP BY state", NULL, 0, &rows,
                                   err, sizeof(err)), 0);
    assert_int_equal(cJSON_GetArraySize(rows), 1);
    const cJSON *r = cJSON_GetArrayItem(rows, 0);
    assert_string_equal(cJSON_GetObjectItem(r, "state")->valuestring, "done");
    assert_int_equal(cJSON_GetObjectItem(r, "n")->valueint, 5);
    cJSON_Delete(rows);
    kl_store_close(s);
    remove_db(path);
}

/* Another connection's write lock on the database holds the writer up, as
 * a busy core or disk would (its writes wait up to the busy timeout, 5 s). */
static sqlite3 *hold_write_lock(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    return db;
}

static void release_write_lock(sqlite3 *db)
{
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* Twelve records queued for a writer of 4-record batches: more than two
 * batches, the mark above which a new request waits. */
static void queue_twelve(struct kl_writer *w)
{
    char id[32];
    assert_true(kl_writer_reserve(w, 12));
    for (int i = 0; i < 12; i++) {
        snprintf(id, sizeof(id), "q%d", i);
        kl_writer_push(w, rec(id, KL_REC_DONE));
    }
}

struct admit_call {
    struct kl_writer *w;
    bool ok;
    uint64_t written;           /* records written when kl_writer_admit returned */
    atomic_bool done;
};

static void *admit_thread(void *arg)
{
    struct admit_call *a = arg;
    a->ok = kl_writer_admit(a->w);
    struct kl_writer_stats st;
    kl_writer_stats(a->w, &st);
    a->written = st.written;
    atomic_store(&a->done, true);
    return NULL;
}

/* A writer that is behind but working: a new request waits for its next
 * batch instead of filling the queue further, then gets its slot. */
static void request_waits_for_a_writer_behind(void **state)
{
    (void)state;
    char path[32];
    struct kl_store *s = temp_store(path);
    sqlite3 *lock = hold_write_lock(path);
    struct kl_writer_opts o = {.queue = 16, .batch = 4, .wait_ms = 60000};
    struct kl_writer *w = kl_writer_start(s, &o);
    queue_twelve(w);
    struct admit_call a = {.w = w};
    pthread_t t;
    pthread_create(&t, NULL, admit_thread, &a);
    usleep(200 * 1000);
    assert_false(atomic_load(&a.done)); /* no batch can be written yet */
    release_write_lock(lock);
    pthread_join(t, NULL);
    assert_true(a.ok);
    assert_true(a.written >= 4);
    struct kl_writer_stats st;
    kl_writer_stats(w, &st);
    assert_int_equal(st.waits, 1);
    kl_writer_unreserve(w, 1);
    kl_writer_stop(w);
    remove_db(path);
}

/* A writer that writes no batch within wait_ms: the request that waited
 * gets its slot then, and later requests do not wait at all (until a batch
 * is written), so a stuck store costs one wait, not one per request. */
static void stuck_writer_is_waited_for_once(void **state)
{
    (void)state;
    char path[32];
    struct kl_store *s = temp_store(path);
    sqlite3 *lock = hold_write_lock(path);
    struct kl_writer_opts o = {.queue = 16, .batch = 4, .wait_ms = 50};
    struct kl_writer *w = kl_writer_start(s, &o);
    queue_twelve(w);
    assert_true(kl_writer_admit(w));
    assert_true(kl_writer_admit(w));
    struct kl_writer_stats st;
    kl_writer_stats(w, &st);
    assert_int_equal(st.written, 0); /* the lock still holds */
    assert_int_equal(st.waits, 1);   /* the first waited, the second did not */
    release_write_lock(lock);
    kl_writer_unreserve(w, 2);
    kl_writer_stop(w);
    remove_db(path);
}

/* A packed record's text is UTF-8: fields that are already (ASCII or
 * not) come out as they were, a stray byte becomes U+FFFD, and the bodies
 * are copied as bytes. */
static void packed_record_text_is_utf8(void **state)
{
    (void)state;
    struct kl_rec r;
    memset(&r, 0, sizeof(r));
    char body[] = "{\"a\":\"\xff\"}";
    r.login = "bob@example.com";
    r.display_name = "Zo\xc3\xab";                  /* U+00EB */
    r.user_agent = "curl\xff/8\xc3";                 /* a stray byte, a cut sequence */
    r.path = "";
    r.request_body = body;
    r.request_body_len = sizeof(body) - 1;
    struct kl_rec *p = kl_rec_pack(&r);
    assert_string_equal(p->login, "bob@example.com");
    assert_string_equal(p->display_name, "Zo\xc3\xab");
    assert_string_equal(p->user_agent, "curl\xef\xbf\xbd/8\xef\xbf\xbd");
    assert_string_equal(p->path, "");
    assert_null(p->node);
    assert_memory_equal(p->request_body, body, sizeof(body));
    assert_true(p->login != r.login && p->display_name != r.display_name);
    assert_true(p->request_body > (char *)p && p->request_body < (char *)p + p->packed_size);
    kl_rec_free(p);
}

/* A field is copied as it is only when it is UTF-8 (RFC 3629): an overlong
 * form, a surrogate, a code point past U+10FFFF or a cut sequence has each
 * of its bytes replaced, and the longest well-formed sequences pass. */
static void packed_record_text_strict_utf8(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                   /* overlong '/' */
        {"\xe0\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},     /* overlong, 3 bytes */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},     /* U+D800 */
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* U+110000 */
        {"\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"},                   /* U+10FFFF */
        {"a\xf0\x9f\x98\x80" "b", "a\xf0\x9f\x98\x80" "b"},       /* U+1F600 */
        {"\xef\xbf\xbd", "\xef\xbf\xbd"},                             /* U+FFFD itself */
        {"abcdefgh\xe2\x82", "abcdefgh\xef\xbf\xbd\xef\xbf\xbd"},       /* cut after 8 ASCII bytes */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct kl_rec r;
        memset(&r, 0, sizeof(r));
        r.user_agent = cases[i].in;
        r.login = "x";
        struct kl_rec *p = kl_rec_pack(&r);
        assert_string_equal(p->user_agent, cases[i].want);
        assert_string_equal(p->login, "x");
        kl_rec_free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(packed_record_text_is_utf8),
        cmocka_unit_test(packed_record_text_strict_utf8),
        cmocka_unit_test(full_queue_refuses_and_nothing_is_lost),
        cmocka_unit_test(request_waits_for_a_writer_behind),
        cmocka_unit_test(stuck_writer_is_waited_for_once),
        cmocka_unit_test(final_row_updates_or_inserts),
        cmocka_unit_test(previous_schema_is_migrated),
        cmocka_unit_test(version_6_store_gains_guardrails),
        cmocka_unit_test(newer_schema_is_refused),
        cmocka_unit_test(id_floor_splits_ids_by_start_time),
        cmocka_unit_test(report_time_range_is_exact),
        cmocka_unit_test(usage_report_rows_are_capped),
        cmocka_unit_test(grouped_report_reads_the_time_range_only),
        cmocka_unit_test(users_listing_reads_in_id_order),
        cmocka_unit_test(retention_purges_old_rows),
        cmocka_unit_test(retention_catches_up_with_a_backlog),
        cmocka_unit_test(refused_record_does_not_block_the_rest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
