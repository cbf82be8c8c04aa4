/* core/decoded.h: a JSON text with its \u and \/ escapes decoded, and every
 * decoded offset mapped back to the original through sparse checkpoints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/decoded.h"

static void decodes_what_spells_findings(void **state)
{
    (void)state;
    struct kl_decoded d;
    const char *s = "A\\u0041 \\u00e9 \\ud83d\\ude00 \\ud83d x\\/y \\n \\\" \\u0022 \\u000a \\u12";
    kl_decode(s, strlen(s), true, &d);
    assert_string_equal(d.text, "AA \xc3\xa9 \xf0\x9f\x98\x80 \xef\xbf\xbd x/y "
                                "\\n \\\" \\u0022 \\u000a \\u12");
    kl_decoded_free(&d);
    /* a JSON text inside a JSON string (a tool call's arguments) escapes its
     * escapes' backslash: read as the SDK that parses the arguments reads
     * them; a pair spelt half one way, half the other, is two halves */
    s = "{\\\"k\\\":\\\"\\\\u0041KIA\\\\ud83d\\\\ude00 \\\\u0022 \\ud83d\\\\ude00\\\"}";
    kl_decode(s, strlen(s), true, &d);
    assert_string_equal(d.text, "{\\\"k\\\":\\\"AKIA\xf0\x9f\x98\x80 \\\\u0022 \xef\xbf\xbd\xef\xbf\xbd\\\"}");
    kl_decoded_free(&d);
    /* not nested (reading member names): "messag\\u0065s" is no "messages" */
    s = "{\"messag\\\\u0065s\":[], \"messag\\u0065s\":[]}";
    kl_decode(s, strlen(s), false, &d);
    assert_string_equal(d.text, "{\"messag\\\\u0065s\":[], \"messages\":[]}");
    kl_decoded_free(&d);
}

/* Every decoded offset of s maps back into it (see below). */
static void check_maps(const char *s, size_t n, bool nested)
{
    struct kl_decoded d;
    kl_decode(s, n, nested, &d);
    assert_true(d.n > 10 && d.n < 3000 / 16); /* sparse */
    size_t prev_start = 0;
    for (size_t x = 0; x <= d.len; x++) {
        size_t start = kl_decoded_raw(&d, x, false), end = kl_decoded_raw(&d, x, true);
        assert_true(start >= prev_start && start <= n && end <= n);
        prev_start = start;
        struct kl_decoded p;
        kl_decode(s, start, nested, &p);
        assert_true(p.len <= x);
        assert_memory_equal(p.text, d.text, p.len);
        if (x > 0) {
            struct kl_decoded q;
            kl_decode(s, end, nested, &q);
            assert_true(q.len >= x); /* the end covers the character before x */
            kl_decoded_free(&q);
        }
        kl_decoded_free(&p);
    }
    kl_decoded_free(&d);
}

/* Every decoded offset maps to the original: decoding the original up to a
 * start gives the decoded text up to the character holding the offset, and
 * an end lies past it; across many more escapes than one checkpoint's stride. */
static void maps_back_through_checkpoints(void **state)
{
    (void)state;
    static const char *const units[] = {"a", "\\u4e2d", "\\ud83d\\ude00", "\\n", "\\\\u0041", "\\/", "\\u0022", "bc"};
    char *s = malloc(200000);
    size_t n = 0;
    unsigned seed = 7;
    for (int i = 0; i < 3000; i++) {
        seed = seed * 1103515245u + 12345u;
        const char *u = units[(seed >> 16) % 8];
        memcpy(s + n, u, strlen(u));
        n += strlen(u);
    }
    s[n] = '\0';
    check_maps(s, n, false);
    check_maps(s, n, true);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decodes_what_spells_findings),
        cmocka_unit_test(maps_back_through_checkpoints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
