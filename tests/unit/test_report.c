/* The records reports' time parameter (since/until of /api/requests,
 * /api/usage and `keyless usage`): every spelling the docs name, and blanks
 * and malformed ends refused rather than read as something else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "record/report.h"

static const int64_t now = 1800000000000; /* 2027-01-15T08:00:00Z */

static int64_t at(const char *s)
{
    int64_t t = -42;
    assert_int_equal(kl_parse_time(s, now, &t), 0);
    return t;
}

static void refused(const char *s)
{
    int64_t t = -42;
    assert_int_equal(kl_parse_time(s, now, &t), -1);
}

static void spellings(void **state)
{
    (void)state;
    assert_int_equal(at("2026-11-01"), 1793491200000);
    assert_int_equal(at("2026-11-01Z"), 1793491200000);
    assert_int_equal(at("2026-11-01T12:00:00Z"), 1793534400000);
    assert_int_equal(at("2026-11-01T12:00:00"), 1793534400000);
    assert_int_equal(at("1793534400123"), 1793534400123);
    assert_int_equal(at("24h"), now - 86400000);
    assert_int_equal(at("30m"), now - 1800000);
}

/* JavaScript's toISOString and RFC 3339 offsets, as a script would pass them. */
static void fractions_and_offsets(void **state)
{
    (void)state;
    assert_int_equal(at("2026-11-01T12:00:00.123Z"), 1793534400123);
    assert_int_equal(at("2026-11-01T12:00:00.5Z"), 1793534400500);
    assert_int_equal(at("2026-11-01T12:00:00.123456789Z"), 1793534400123);
    assert_int_equal(at("2026-11-01T14:00:00+02:00"), 1793534400000);
    assert_int_equal(at("2026-11-01T06:30:00-0530"), 1793534400000);
    assert_int_equal(at("2026-11-01T12:00:00.250+00:00"), 1793534400250);
}

static void malformed(void **state)
{
    (void)state;
    refused("");
    refused(" 2026-11-01");
    refused("2026-11-01 ");
    refused("2026-11-01T12:00:00 Z");
    refused("2026-11-01T12:00:00.Z");
    refused("2026-11-01T12:00:00+2");
    refused("2026-11-01T12:00:00+24:00");
    refused("2026-11-01T12:00:00+02:00junk");
    refused("2026-11-01T12:00:00Zjunk");
    refused("2026-02-31");
    refused("yesterday");
    refused(" 24h");
    refused("24");
    refused("00");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spellings),
        cmocka_unit_test(fractions_and_offsets),
        cmocka_unit_test(malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
