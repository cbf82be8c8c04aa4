/* The growing byte buffer: contents kept across growth, always
 * NUL-terminated, bytes with NULs inside kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/buf.h"

static void grows_and_terminates(void **state)
{
    (void)state;
    struct kl_buf b = {0};
    char expect[5000];
    size_t n = 0;
    for (int i = 0; i < 1000; i++) {
        char piece[8] = {(char)('a' + i % 26), 0, 'x', 'y', 0};
        kl_buf_put(&b, piece, 4);
        memcpy(expect + n, piece, 4);
        n += 4;
        assert_int_equal(b.len, n);
        assert_true(b.cap > b.len);
        assert_int_equal(b.p[b.len], '\0');
    }
    assert_memory_equal(b.p, expect, n);
    kl_buf_str(&b, "end");
    assert_string_equal(b.p + n, "end");
    kl_buf_reserve(&b, 100000);
    assert_true(b.cap >= b.len + 100001);
    assert_memory_equal(b.p, expect, n);
    free(b.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grows_and_terminates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
