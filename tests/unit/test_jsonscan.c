/* Finding top-level members without building a tree. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/jsonscan.h"

static void finds_members(void **state)
{
    (void)state;
    const char *s = " { \"messages\": [{\"model\":\"inner\"}, \"a}b\"], \"x\\\"\": {\"k\": [1,{}]},"
                    " \"model\" : \"openai/gpt-4o\" , \"n\": -1.5e3 }";
    size_t a, b;
    assert_int_equal(kl_json_find_member(s, strlen(s), "model", &a, &b), 0);
    assert_int_equal(b - a, strlen("\"openai/gpt-4o\""));
    assert_memory_equal(s + a, "\"openai/gpt-4o\"", b - a);
    assert_int_equal(kl_json_find_member(s, strlen(s), "n", &a, &b), 0);
    assert_memory_equal(s + a, "-1.5e3", b - a);
    assert_int_equal(kl_json_find_member(s, strlen(s), "k", &a, &b), -1);
    assert_int_equal(kl_json_find_member(s, strlen(s), "missing", &a, &b), -1);
    assert_int_equal(kl_json_object_open(s, strlen(s)), 2);
    assert_int_equal(kl_json_object_open("[1]", 3), (size_t)-1);
}

static void truncated_input(void **state)
{
    (void)state;
    size_t a, b;
    assert_int_equal(kl_json_find_member("{\"a\": [1, 2", 11, "b", &a, &b), -1);
    assert_int_equal(kl_json_skip_value("\"abc", 4, 0), (size_t)-1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(finds_members),
        cmocka_unit_test(truncated_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
