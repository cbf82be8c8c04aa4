/* The skeleton of a large whole answer (account/skeleton.h): what the usage
 * reader looks for comes through whole, long strings and number arrays are
 * cut where the result is still JSON, and input that is not JSON stays
 * not JSON, however the bytes are split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "account/skeleton.h"
#include "core/buf.h"

/* The skeleton of in, fed whole and fed in pieces of every size up to 7
 * (each must give the same bytes); the caller frees it. */
static char *skeleton(const char *in, size_t n, size_t *out_len)
{
    struct kl_skeleton whole = {0};
    kl_skeleton_feed(&whole, in, n);
    for (size_t step = 1; step <= 7; step++) {
        struct kl_skeleton s = {0};
        for (size_t i = 0; i < n; i += step)
            kl_skeleton_feed(&s, in + i, n - i < step ? n - i : step);
        assert_int_equal(s.out.len, whole.out.len);
        assert_memory_equal(s.out.p ? s.out.p : "", whole.out.p ? whole.out.p : "", s.out.len);
        kl_skeleton_free(&s);
    }
    *out_len = whole.out.len;
    char *r = whole.out.p ? whole.out.p : calloc(1, 1);
    return r;
}

static bool valid(const char *s, size_t n)
{
    char *z = malloc(n + 1);
    memcpy(z, s, n);
    z[n] = 0;
    cJSON *j = cJSON_ParseWithLengthOpts(z, n + 1, NULL, true);
    bool ok = j != NULL;
    cJSON_Delete(j);
    free(z);
    return ok;
}

static void small_unchanged(void **state)
{
    (void)state;
    const char *in = "{\"id\":\"x\",\"data\":[1,2.5,-3e2],\"usage\":{\"prompt_tokens\":7},\"s\":\"caf\\u00e9 \\\"q\\\"\"}";
    size_t n;
    char *out = skeleton(in, strlen(in), &n);
    assert_int_equal(n, strlen(in));
    assert_memory_equal(out, in, n);
    free(out);
}

/* An embeddings batch: every vector cut to 16 numbers, the rest whole. */
static void number_arrays_cut(void **state)
{
    (void)state;
    struct kl_buf b = {0};
    kl_buf_str(&b, "{\"object\":\"list\",\"data\":[");
    for (int e = 0; e < 3; e++) {
        kl_buf_str(&b, e ? ",{\"embedding\":[" : "{\"embedding\":[");
        for (int i = 0; i < 1000; i++) {
            char num[32];
            snprintf(num, sizeof(num), "%s%s-0.%06d", i ? "," : "", i % 7 ? " " : "\n", i * 37 % 1000000);
            kl_buf_str(&b, num);
        }
        kl_buf_str(&b, "],\"index\":0}");
    }
    kl_buf_str(&b, "],\"model\":\"m\",\"usage\":{\"prompt_tokens\":1234,\"total_tokens\":1234}}");
    size_t n;
    char *out = skeleton(b.p, b.len, &n);
    assert_true(n < 1000);
    assert_true(valid(out, n));
    cJSON *j = cJSON_ParseWithLength(out, n);
    cJSON *data = cJSON_GetObjectItem(j, "data");
    assert_int_equal(cJSON_GetArraySize(data), 3);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(data, 2), "embedding")), 16);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens")->valueint, 1234);
    assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "m");
    cJSON_Delete(j);
    free(out);
    free(b.p);
}

/* A string of about KL_SKEL_STRING_KEEP bytes before a character of each kind: cut before it,
 * never inside it; a key is never cut. */
static void strings_cut_whole(void **state)
{
    (void)state;
    const char *tails[] = {"\xc3\xa9zzzz", "\xf0\x9f\x98\x80zz", "\\u00e9zz", "\\ud83d\\ude00zz", "\\\"zz", "\\\\zz"};
    for (size_t k = 0; k < sizeof(tails) / sizeof(tails[0]); k++) {
        for (size_t pad = KL_SKEL_STRING_KEEP - 6; pad <= KL_SKEL_STRING_KEEP + 4; pad++) {
            struct kl_buf b = {0};
            kl_buf_str(&b, "{\"text\":\"");
            for (size_t i = 0; i < pad; i++)
                kl_buf_put(&b, "a", 1);
            for (int r = 0; r < 50; r++)
                kl_buf_str(&b, tails[k]);
            kl_buf_str(&b, "\",\"usage\":{\"output_tokens\":5}}");
            size_t n;
            char *out = skeleton(b.p, b.len, &n);
            assert_true(valid(out, n));
            cJSON *j = cJSON_ParseWithLength(out, n);
            const char *t = cJSON_GetObjectItem(j, "text")->valuestring;
            assert_true(strlen(t) >= KL_SKEL_STRING_KEEP - 6 && strlen(t) <= KL_SKEL_STRING_KEEP + 12);
            assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "output_tokens")->valueint, 5);
            cJSON_Delete(j);
            free(out);
            free(b.p);
        }
    }
    /* a long key comes whole */
    struct kl_buf b = {0};
    kl_buf_str(&b, "{\"");
    for (int i = 0; i < 3 * KL_SKEL_STRING_KEEP; i++)
        kl_buf_put(&b, "k", 1);
    kl_buf_str(&b, "\":1}");
    size_t n;
    char *out = skeleton(b.p, b.len, &n);
    assert_int_equal(n, b.len);
    free(out);
    free(b.p);
}

/* Input cJSON refuses, also where a cut drops it, gives a skeleton cJSON
 * refuses. */
static void invalid_stays_invalid(void **state)
{
    (void)state;
    const char *tails[] = {"\\x", "\\ud83dz", "\\ud83d\\u0041", "\\ude00", "\\ud83d\""};
    for (size_t k = 0; k < sizeof(tails) / sizeof(tails[0]); k++) {
        struct kl_buf b = {0};
        kl_buf_str(&b, "{\"text\":\"");
        for (int i = 0; i < 2 * KL_SKEL_STRING_KEEP; i++)
            kl_buf_put(&b, "a", 1);
        kl_buf_str(&b, tails[k]);
        kl_buf_str(&b, "bbb\",\"usage\":{}}");
        assert_false(valid(b.p, b.len));
        size_t n;
        char *out = skeleton(b.p, b.len, &n);
        assert_false(valid(out, n));
        free(out);
        free(b.p);
    }
    const char *numbers[] = {"1.2.3", "-", "1e", "01x", "1 2", "1,,2"};
    for (size_t k = 0; k < sizeof(numbers) / sizeof(numbers[0]); k++) {
        struct kl_buf b = {0};
        kl_buf_str(&b, "[0");
        for (int i = 1; i < 40; i++)
            kl_buf_str(&b, ",1");
        kl_buf_str(&b, ",");
        kl_buf_str(&b, numbers[k]);
        kl_buf_str(&b, "]");
        assert_false(valid(b.p, b.len));
        size_t n;
        char *out = skeleton(b.p, b.len, &n);
        assert_false(valid(out, n));
        free(out);
        free(b.p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(small_unchanged),
        cmocka_unit_test(number_arrays_cut),
        cmocka_unit_test(strings_cut_whole),
        cmocka_unit_test(invalid_stays_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
