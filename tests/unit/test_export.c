/* The exporter's parts that need no bucket: the archive document (CBOR read
 * back with libcbor, zstd with libzstd) and the export queue the writer fills
 * (final rows only, once each, in the same transaction as the row). The
 * upload itself is tested end to end in tests/integration/export.test.mjs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <cbor.h>
#include <zstd.h>

#include "record/archive.h"
#include "record/store.h"

static const cbor_item_t *member(const cbor_item_t *map, const char *key)
{
    struct cbor_pair *p = cbor_map_handle(map);
    for (size_t i = 0; i < cbor_map_size(map); i++) {
        const cbor_item_t *k = p[i].key;
        if (cbor_isa_string(k) && cbor_string_length(k) == strlen(key) &&
            memcmp(cbor_string_handle(k), key, strlen(key)) == 0)
            return p[i].value;
    }
    return NULL;
}

static int64_t as_int(const cbor_item_t *v)
{
    assert_non_null(v);
    if (cbor_isa_uint(v))
        return (int64_t)cbor_get_int(v);
    assert_true(cbor_isa_negint(v));
    return -1 - (int64_t)cbor_get_int(v);
}

static void archive_is_cbor_in_zstd(void **state)
{
    (void)state;
    cJSON *rows = cJSON_Parse("[{\"id\":\"0193a1b2-0000-7000-8000-000000000001\",\"started_at\":1764210000123,"
                              "\"latency_ms\":-1,\"cost_nanodollars\":4200000000000,\"login\":\"zoë@example.com\","
                              "\"error_class\":null,\"ratio\":0.25},{\"id\":\"b\",\"status\":200}]");
    assert_non_null(rows);
    size_t len = 0;
    unsigned char *doc = kl_archive_cbor(rows, "gw-1", 1764210000999, &len);
    struct cbor_load_result res;
    cbor_item_t *root = cbor_load(doc, len, &res);
    assert_int_equal(res.error.code, CBOR_ERR_NONE);
    assert_int_equal(res.read, len);
    assert_true(cbor_isa_map(root));
    const cbor_item_t *fmt = member(root, "format");
    assert_int_equal(cbor_string_length(fmt), strlen("keyless.records"));
    assert_memory_equal(cbor_string_handle(fmt), "keyless.records", strlen("keyless.records"));
    assert_int_equal(as_int(member(root, "version")), 1);
    assert_int_equal(as_int(member(root, "exported_at")), 1764210000999);
    const cbor_item_t *recs = member(root, "records");
    assert_true(cbor_isa_array(recs));
    assert_int_equal(cbor_array_size(recs), 2);
    cbor_item_t **v = cbor_array_handle(recs);
    assert_int_equal(cbor_map_size(v[0]), 7);
    assert_int_equal(as_int(member(v[0], "started_at")), 1764210000123);
    assert_int_equal(as_int(member(v[0], "latency_ms")), -1);
    assert_int_equal(as_int(member(v[0], "cost_nanodollars")), 4200000000000);
    const cbor_item_t *login = member(v[0], "login");
    assert_true(cbor_isa_string(login));
    assert_memory_equal(cbor_string_handle(login), "zoë@example.com", strlen("zoë@example.com"));
    assert_true(cbor_is_null(member(v[0], "error_class")));
    assert_true(cbor_is_float(member(v[0], "ratio")));
    assert_true(cbor_float_get_float(member(v[0], "ratio")) == 0.25);
    assert_int_equal(as_int(member(v[1], "status")), 200);
    cbor_decref(&root);

    size_t zlen = 0;
    unsigned char *z = kl_archive_zstd(doc, len, &zlen);
    assert_non_null(z);
    assert_int_equal(ZSTD_getFrameContentSize(z, zlen), len);
    unsigned char *back = malloc(len);
    assert_int_equal(ZSTD_decompress(back, len, z, zlen), len);
    assert_memory_equal(back, doc, len);
    free(back);
    free(z);
    free(doc);
    cJSON_Delete(rows);
}

static struct kl_rec *rec(const char *id, enum kl_rec_state st, bool begun)
{
    struct kl_rec r;
    memset(&r, 0, sizeof(r));
    snprintf(r.id, sizeof(r.id), "%s", id);
    r.state = st;
    r.started_ms = 1;
    r.latency_ms = r.ttft_ms = -1;
    r.begun = begun;
    return kl_rec_pack(&r);
}

static long count(struct kl_store *s, const char *sql)
{
    cJSON *rows = NULL;
    char err[256];
    assert_int_equal(kl_store_exec(s, sql, NULL, 0, &rows, err, sizeof(err)), 0);
    long n = (long)cJSON_GetArrayItem(rows, 0)->child->valuedouble;
    cJSON_Delete(rows);
    return n;
}

static void writer_queues_final_rows_once(void **state)
{
    (void)state;
    char path[] = "/tmp/kl-export-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    unlink(path);
    char err[256];
    struct kl_store *s = kl_store_open(KL_STORE_SQLITE, path, true, err, sizeof(err));
    assert_non_null(s);
    struct kl_rec *v[2] = {rec("a", KL_REC_IN_PROGRESS, false), rec("b", KL_REC_DONE, false)};
    /* off: nothing is queued */
    assert_int_equal(kl_store_write(s, &v[1], 1, err, sizeof(err)), 0);
    assert_int_equal(count(s, "SELECT count(*) FROM export_queue"), 0);
    kl_store_set_export_queue(s, true);
    /* an in-progress row is not final: not queued; its final row is */
    assert_int_equal(kl_store_write(s, v, 1, err, sizeof(err)), 0);
    assert_int_equal(count(s, "SELECT count(*) FROM export_queue"), 0);
    struct kl_rec *fin = rec("a", KL_REC_DONE, true);
    struct kl_rec *c = rec("c", KL_REC_DONE, false);
    struct kl_rec *batch[2] = {fin, c};
    assert_int_equal(kl_store_write(s, batch, 2, err, sizeof(err)), 0);
    assert_int_equal(count(s, "SELECT count(*) FROM export_queue"), 2);
    assert_int_equal(count(s, "SELECT count(*) FROM export_queue WHERE id = 'a'"), 1);
    assert_int_equal(count(s, "SELECT count(*) FROM export_queue WHERE id = 'c'"), 1);
    /* positions never repeat, even after the queue is emptied */
    long last = count(s, "SELECT max(seq) FROM export_queue");
    assert_int_equal(kl_store_exec(s, "DELETE FROM export_queue", NULL, 0, NULL, err, sizeof(err)), 0);
    struct kl_rec *d = rec("d", KL_REC_DONE, false);
    assert_int_equal(kl_store_write(s, &d, 1, err, sizeof(err)), 0);
    assert_true(count(s, "SELECT max(seq) FROM export_queue") > last);
    kl_rec_free(v[0]);
    kl_rec_free(v[1]);
    kl_rec_free(fin);
    kl_rec_free(c);
    kl_rec_free(d);
    kl_store_close(s);
    unlink(path);
    char side[64];
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(archive_is_cbor_in_zstd),
        cmocka_unit_test(writer_queues_final_rows_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
