/* The per-exchange arena: alignment, zeroing, and printf at block edges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/arena.h"

static void aligned_and_zeroed(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    for (size_t n = 0; n < 300; n++) {
        unsigned char *p = kl_arena_alloc(&a, n);
        assert_int_equal((uintptr_t)p % 16, 0);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(p[i], 0);
        memset(p, 0xab, n);             /* dirty it for the next round */
        char *r = kl_arena_alloc_raw(&a, n);
        assert_int_equal((uintptr_t)r % 16, 0);
        memset(r, 0xcd, n);
    }
    char *big = kl_arena_alloc(&a, 100000);
    assert_int_equal(big[99999], 0);
    kl_arena_free(&a);
}

/* An arena of small blocks (a WhoIs answer kept per connection) takes
 * small blocks, and still serves what is larger than one, aligned and
 * whole; one zeroed rather than initialised has the default blocks. */
static void small_blocks(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init_blocks(&a, 500);        /* rounded up to 512 */
    char *s = kl_arena_strdup(&a, "alice@example.com");
    assert_int_equal(a.total, 512);
    char *big = kl_arena_alloc(&a, 2000); /* its own block */
    assert_int_equal((uintptr_t)big % 16, 0);
    memset(big, 'x', 2000);
    char *p = kl_arena_printf(&a, "%s/%0600d", s, 7); /* longer than a block */
    assert_int_equal(strlen(p), strlen(s) + 601);
    assert_string_equal(s, "alice@example.com");
    assert_true(a.total < 4096);
    kl_arena_free(&a);
    kl_arena z;
    memset(&z, 0, sizeof(z));
    kl_arena_strdup(&z, "x");
    assert_int_equal(z.total, 4096);
    kl_arena_free(&z);
}

/* Text that fits the current block is formatted in place; text that does
 * not (by one byte, or by far) gets new room and is still whole. */
static void printf_at_block_edges(void **state)
{
    (void)state;
    char want[9000];
    for (size_t fill = 0; fill < 4096; fill += 16) {
        for (size_t len = fill > 40 ? 4096 - fill - 40 : 0; len < 4096 - fill + 40 && len < 8000; len++) {
            kl_arena a;
            kl_arena_init(&a);
            if (fill)
                kl_arena_alloc(&a, fill);
            memset(want, 'x', len);
            want[len] = '\0';
            char *s = kl_arena_printf(&a, "%s", want);
            assert_int_equal(strlen(s), len);
            assert_int_equal((uintptr_t)s % 16, 0);
            char *after = kl_arena_strdup(&a, "after");
            assert_string_equal(s, want);       /* not overwritten by the next allocation */
            assert_string_equal(after, "after");
            kl_arena_free(&a);
        }
    }
    kl_arena a;
    kl_arena_init(&a);
    assert_string_equal(kl_arena_printf(&a, "%d-%s", 42, "x"), "42-x");
    kl_arena_free(&a);
}

/* Joined strings are whole and NUL-terminated wherever the block ends, and
 * the next allocation does not overwrite them. */
static void concat_at_block_edges(void **state)
{
    (void)state;
    char a[3000], b[3000];
    memset(a, 'a', sizeof(a) - 1);
    a[sizeof(a) - 1] = '\0';
    memset(b, 'b', sizeof(b) - 1);
    b[sizeof(b) - 1] = '\0';
    for (size_t fill = 0; fill < 4096; fill += 16 * 7) {
        kl_arena ar;
        kl_arena_init(&ar);
        if (fill)
            kl_arena_alloc(&ar, fill);
        char *s = kl_arena_concat(&ar, a, ": ", b, "", NULL);
        char *after = kl_arena_strdup(&ar, "after");
        assert_int_equal(strlen(s), 2 * (sizeof(a) - 1) + 2);
        assert_memory_equal(s, a, sizeof(a) - 1);
        assert_memory_equal(s + sizeof(a) - 1, ": ", 2);
        assert_memory_equal(s + sizeof(a) + 1, b, sizeof(b) - 1);
        assert_string_equal(after, "after");
        assert_string_equal(kl_arena_concat(&ar, NULL), "");
        assert_string_equal(kl_arena_concat(&ar, "x", "=", "1", NULL), "x=1");
        kl_arena_free(&ar);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(aligned_and_zeroed),
        cmocka_unit_test(small_blocks),
        cmocka_unit_test(printf_at_block_edges),
        cmocka_unit_test(concat_at_block_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
