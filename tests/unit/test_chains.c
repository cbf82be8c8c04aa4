/* Remembered sizes of stored Responses context: per provider, exact ids,
 * a newer id in an older one's slot. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "admit/chains.h"

static void put_and_get(void **state)
{
    (void)state;
    struct kl_chains *t = kl_chains_new();
    assert_int_equal(kl_chains_get(t, "openai", "resp_1", 6), -1);
    kl_chains_put(t, "openai", "resp_1", 6, 50300);
    assert_int_equal(kl_chains_get(t, "openai", "resp_1", 6), 50300);
    /* another provider's resp_1 is another response */
    assert_int_equal(kl_chains_get(t, "azure", "resp_1", 6), -1);
    /* the id's whole bytes count, not a prefix */
    assert_int_equal(kl_chains_get(t, "openai", "resp_1", 5), -1);
    assert_int_equal(kl_chains_get(t, "openai", "resp_10", 7), -1);
    /* the provider and the id are not one run of bytes */
    assert_int_equal(kl_chains_get(t, "openaires", "p_1", 3), -1);
    /* a conversation's size is replaced by its latest */
    kl_chains_put(t, "openai", "conv_a", 6, 10);
    kl_chains_put(t, "openai", "conv_a", 6, 7);
    assert_int_equal(kl_chains_get(t, "openai", "conv_a", 6), 7);
    /* nothing for an empty id or a negative size */
    kl_chains_put(t, "openai", "", 0, 5);
    assert_int_equal(kl_chains_get(t, "openai", "", 0), -1);
    kl_chains_put(t, "openai", "resp_2", 6, -1);
    assert_int_equal(kl_chains_get(t, "openai", "resp_2", 6), -1);
    kl_chains_free(t);
}

/* Many more ids than slots: every answer is either exact or "unknown",
 * never another id's size. */
static void crowded(void **state)
{
    (void)state;
    struct kl_chains *t = kl_chains_new();
    char id[32];
    for (int i = 0; i < 200000; i++) {
        int n = snprintf(id, sizeof(id), "resp_%d", i);
        kl_chains_put(t, "openai", id, (size_t)n, i);
    }
    int known = 0;
    for (int i = 0; i < 200000; i++) {
        int n = snprintf(id, sizeof(id), "resp_%d", i);
        int64_t got = kl_chains_get(t, "openai", id, (size_t)n);
        assert_true(got == -1 || got == i);
        known += got == i;
    }
    assert_true(known > 30000);
    kl_chains_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(put_and_get),
        cmocka_unit_test(crowded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
