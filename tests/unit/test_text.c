/* Text helpers: the printf-free number formatting must print exactly what
 * printf prints, and joins must refuse what does not fit. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "core/text.h"

/* Every power of ten and its neighbours, every power of two and its
 * neighbours, and a pseudo-random spread, including 0 and UINT64_MAX. */
static void decimal_like_printf(void **state)
{
    (void)state;
    uint64_t vals[400];
    size_t n = 0;
    for (uint64_t p = 1; n < 60; p *= 10) {
        vals[n++] = p - 1;
        vals[n++] = p;
        vals[n++] = p + 1;
        if (p > UINT64_MAX / 10)
            break;
    }
    for (int b = 0; b < 64; b++) {
        vals[n++] = (uint64_t)1 << b;
        vals[n++] = ((uint64_t)1 << b) - 1;
    }
    vals[n++] = UINT64_MAX;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    while (n < sizeof(vals) / sizeof(vals[0])) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        vals[n++] = x >> (x & 63);
    }
    for (size_t i = 0; i < n; i++) {
        char want[32], got[32];
        snprintf(want, sizeof(want), "%" PRIu64, vals[i]);
        memset(got, 'x', sizeof(got));
        size_t len = kl_fmt_u64(got, vals[i]);
        assert_int_equal(len, strlen(want));
        assert_int_equal(got[len], 'x'); /* no NUL, nothing past the digits */
        got[len] = '\0';
        assert_string_equal(got, want);
    }
}

static void hex_fixed_width(void **state)
{
    (void)state;
    char got[20];
    memset(got, 'x', sizeof(got));
    kl_fmt_hex(got, 0x1234abcdull, 8);
    assert_memory_equal(got, "1234abcd", 8);
    assert_int_equal(got[8], 'x');
    kl_fmt_hex(got, 0xfedcba9876543210ull, 4); /* the low bits only */
    assert_memory_equal(got, "3210", 4);
    kl_fmt_hex(got, 0x5, 12);                  /* zero-padded */
    assert_memory_equal(got, "000000000005", 12);
    kl_fmt_hex(got, UINT64_MAX, 16);
    assert_memory_equal(got, "ffffffffffffffff", 16);
}

static void join2_fits_or_refuses(void **state)
{
    (void)state;
    char out[8];
    assert_true(kl_join2(out, sizeof(out), "ab", '/', "cd"));
    assert_string_equal(out, "ab/cd");
    assert_true(kl_join2(out, sizeof(out), "abc", '/', "def")); /* 7 + NUL: exactly fits */
    assert_string_equal(out, "abc/def");
    assert_false(kl_join2(out, sizeof(out), "abcd", '/', "def"));
    assert_string_equal(out, "");
    assert_true(kl_join2(out, sizeof(out), "", ':', ""));
    assert_string_equal(out, ":");
}


/* Compact JSON between a prefix and a suffix, in the arena (the tree is
 * freed: the sanitizer run would report it otherwise). */
static void json_printed_into_the_arena(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "k", "v\"w");
    cJSON_AddNumberToObject(o, "n", 3);
    assert_string_equal(kl_json_print_arena(&a, o, "data: ", "\n\n"), "data: {\"k\":\"v\\\"w\",\"n\":3}\n\n");
    assert_string_equal(kl_json_print_arena(&a, cJSON_CreateArray(), "", ""), "[]");
    kl_arena_free(&a);
}

/* Expiry times as AWS, Google and credential helpers write them. */
static void iso8601_times(void **state)
{
    (void)state;
    const int64_t t = INT64_C(1893456000000); /* 2030-01-01T00:00:00Z */
    assert_int_equal(kl_iso8601_ms("2030-01-01T00:00:00Z"), t);
    assert_int_equal(kl_iso8601_ms("2030-01-01T00:00:00.123456Z"), t);
    assert_int_equal(kl_iso8601_ms("2030-01-01T00:00:00UTC"), t);
    assert_int_equal(kl_iso8601_ms("2030-01-01T00:00:00"), t);
    assert_int_equal(kl_iso8601_ms("2030-01-01T05:00:00+05:00"), t);
    assert_int_equal(kl_iso8601_ms("2030-01-01T05:30:00.5+0530"), t);
    assert_int_equal(kl_iso8601_ms("2029-12-31T16:00:00-08:00"), t);
    assert_int_equal(kl_iso8601_ms("2030-01-01T05:00:00+05"), t);
    assert_int_equal(kl_iso8601_ms("2030-01-01T00:00:00+5"), 0);
    assert_int_equal(kl_iso8601_ms("2030-01-01T00:00:00+05:x"), 0);
    assert_int_equal(kl_iso8601_ms("2030-01-01T00:00:00+"), 0);
    assert_int_equal(kl_iso8601_ms("2030-01-01T00:00:00+053"), 0);
    assert_int_equal(kl_iso8601_ms("2030-01-01T00:00:00+05300"), 0);
    assert_int_equal(kl_iso8601_ms("2030-01-01T00:00:00+24:00"), 0);
    assert_int_equal(kl_iso8601_ms("2030-01-01T00:00:00+23:60"), 0);
    /* never a time before the epoch */
    assert_int_equal(kl_iso8601_ms("1970-01-01T00:00:01+01:00"), 0);
    assert_int_equal(kl_iso8601_ms("not a time"), 0);
    assert_int_equal(kl_iso8601_ms(NULL), 0);
}

static void check_clean(const char *in, const char *want)
{
    char out[64];
    assert_int_equal(kl_utf8_clean_len(in), strlen(want));
    assert_int_equal(kl_utf8_clean_len_n(in, strlen(in)), strlen(want));
    assert_int_equal(kl_utf8_clean(out, in), strlen(want));
    assert_string_equal(out, want);
}

/* Well-formed UTF-8 passes unchanged; every byte that does not begin a
 * well-formed sequence becomes U+FFFD. */
static void utf8_clean_replaces_only_bad_bytes(void **state)
{
    (void)state;
    const char *R = "\xef\xbf\xbd";
    char want[64];
    check_clean("", "");
    check_clean("plain ascii", "plain ascii");
    check_clean("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf");
    snprintf(want, sizeof(want), "bad%s", R);
    check_clean("bad\xff", want);
    snprintf(want, sizeof(want), "%s%s", R, R); /* overlong NUL */
    check_clean("\xc0\x80", want);
    snprintf(want, sizeof(want), "%s%s%s", R, R, R); /* a surrogate, U+D800 */
    check_clean("\xed\xa0\x80", want);
    snprintf(want, sizeof(want), "%s%s%s%s", R, R, R, R); /* above U+10FFFF */
    check_clean("\xf4\x90\x80\x80", want);
    snprintf(want, sizeof(want), "%s%s%s", R, R, R); /* overlong U+0020 in three bytes */
    check_clean("\xe0\x80\xa0", want);
    /* a sequence cut short: each of its bytes is replaced */
    check_clean("a\xe2\x82" "b", "a\xef\xbf\xbd\xef\xbf\xbd" "b");
    check_clean("\xf0\x9f\x98", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    /* after an ASCII run read eight bytes at a time, at every offset */
    for (size_t k = 0; k < 20; k++) {
        char in[48], exp[64];
        memset(in, 'a', k);
        memcpy(in + k, "\xff\xc3\xa9z", 5);
        memset(exp, 'a', k);
        snprintf(exp + k, sizeof(exp) - k, "%s\xc3\xa9z", R);
        check_clean(in, exp);
    }
    snprintf(want, sizeof(want), "%sx", R); /* a lone continuation byte */
    check_clean("\x80x", want);
}

/* FNV-1a's published 64-bit values, and continuing a hash equals hashing the whole. */
/* A proxy's error page as one short line: tags go, white space folds,
 * a cut falls on a character's start and says so. */
static void text_gist(void **state)
{
    (void)state;
    char out[32];
    const char *page = "<html>\r\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad "
                       "Gateway</h1></center>\n<hr><center>nginx</center>\n</body>\n</html>\n";
    kl_text_gist(page, strlen(page), out, sizeof(out));
    assert_string_equal(out, "502 Bad Gateway 502 Bad Gate...");
    assert_int_equal(kl_text_gist("  upstream\tconnect error\n", 25, out, sizeof(out)), 22);
    assert_string_equal(out, "upstream connect error");
    /* a comparison is no tag; a cut inside a character drops all of it, not the one before */
    kl_text_gist("a < b", 5, out, sizeof(out));
    assert_string_equal(out, "a < b");
    char small[10];
    kl_text_gist("abcd\xc3\xa9\xc3\xa9xyz", 11, small, sizeof(small));
    assert_string_equal(small, "abcd\xc3\xa9...");
    kl_text_gist("abcde\xc3\xa9xyz", 10, small, sizeof(small));
    assert_string_equal(small, "abcde...");
    kl_text_gist("", 0, small, sizeof(small));
    assert_string_equal(small, "");
}

/* A caller's free text kept to its first bytes, never half a character. */
static void text_prefix_cuts_between_characters(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    const char *s = "abc";
    assert_ptr_equal(kl_text_prefix(&a, s, 3), s); /* short enough: itself */
    assert_null(kl_text_prefix(&a, NULL, 3));
    assert_string_equal(kl_text_prefix(&a, "abcd", 3), "abc");
    /* "a" then U+20AC (3 bytes) then U+1F600 (4 bytes) */
    const char *t = "a\xe2\x82\xac\xf0\x9f\x98\x80";
    assert_string_equal(kl_text_prefix(&a, t, 1), "a");
    assert_string_equal(kl_text_prefix(&a, t, 2), "a");
    assert_string_equal(kl_text_prefix(&a, t, 3), "a");
    assert_string_equal(kl_text_prefix(&a, t, 4), "a\xe2\x82\xac");
    assert_string_equal(kl_text_prefix(&a, t, 7), "a\xe2\x82\xac");
    assert_string_equal(kl_text_prefix(&a, t, 8), t);
    /* not UTF-8: at most three bytes given up */
    assert_string_equal(kl_text_prefix(&a, "ab\x80\x80\x80\x80\x80", 6), "ab\x80");
    kl_arena_free(&a);
}

static void fnv64(void **state)
{
    (void)state;
    assert_true(kl_fnv64(KL_FNV64_START, "", 0) == 0xcbf29ce484222325ull);
    assert_true(kl_fnv64(KL_FNV64_START, "a", 1) == 0xaf63dc4c8601ec8cull);
    assert_true(kl_fnv64(KL_FNV64_START, "foobar", 6) == 0x85944171f73967e8ull);
    assert_true(kl_fnv64(kl_fnv64(KL_FNV64_START, "foo", 3), "bar", 3) == kl_fnv64(KL_FNV64_START, "foobar", 6));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fnv64),
        cmocka_unit_test(text_gist),
        cmocka_unit_test(text_prefix_cuts_between_characters),
        cmocka_unit_test(decimal_like_printf),
        cmocka_unit_test(hex_fixed_width),
        cmocka_unit_test(join2_fits_or_refuses),
        cmocka_unit_test(json_printed_into_the_arena),
        cmocka_unit_test(utf8_clean_replaces_only_bad_bytes),
        cmocka_unit_test(iso8601_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
