/* The record writer: slots are reserved up front and a full queue refuses
 * instead of dropping; what is queued is written, in-progress rows that
 * meet their final row are coalesced. */
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
    r.ended_ms = st == KL_REC_DONE ? 2 : 0;
    return kl_rec_pack(&r);
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
    unlink(path);
    char wal[64];
    snprintf(wal, sizeof(wal), "%s-wal", path);
    unlink(wal);
    snprintf(wal, sizeof(wal), "%s-shm", path);
    unlink(wal);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_queue_refuses_and_nothing_is_lost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
