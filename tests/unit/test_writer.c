/* The record writer: slots are reserved up front and a full queue refuses
 * instead of dropping; what is queued is written, in-progress rows that
 * meet their final row are coalesced; a final row updates the in-progress
 * row written before it (or is inserted when that row is not there). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "record/writer.h"

static struct kl_rec *rec(const char *id, enum kl_rec_state st)
{
    struct kl_rec r;
    memset(&r, 0, sizeof(r));
    snprintf(r.id, sizeof(r.id), "%s", id);
    r.state = st;
    r.started_ms = 1;
    r.latency_ms = r.ttft_ms = -1;
    r.status = st == KL_REC_DONE ? 200 : 0;
    r.begun = st == KL_REC_DONE; /* as record.c: the writer clears it when it coalesces */
    r.ended_ms = st == KL_REC_DONE ? 2 : 0;
    return kl_rec_pack(&r);
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
    char path[] = "/tmp/kl-writer-XXXXXX";
    close(mkstemp(path));
    char err[256];
    struct kl_store *s = kl_store_open(KL_STORE_SQLITE, path, true, err, sizeof(err));
    assert_non_null(s);

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

static void full_queue_refuses_and_nothing_is_lost(void **state)
{
    (void)state;
    char path[] = "/tmp/kl-writer-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    char err[256];
    struct kl_store *s = kl_store_open(KL_STORE_SQLITE, path, true, err, sizeof(err));
    assert_non_null(s);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_queue_refuses_and_nothing_is_lost),
        cmocka_unit_test(final_row_updates_or_inserts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
