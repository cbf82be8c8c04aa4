/* Finding top-level members without building a tree. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <stdlib.h>

#include "core/jsoncheck.h"
#include "core/jsonscan.h"

/* One member of the top-level object: 0 with its value's bytes, or -1. */
static int find_member(const char *s, size_t len, const char *key, size_t *vs, size_t *ve)
{
    struct kl_json_want w = {.key = key};
    kl_json_scan_members(s, len, &w, 1);
    *vs = w.start;
    *ve = w.end;
    return w.end ? 0 : -1;
}

static void finds_members(void **state)
{
    (void)state;
    const char *s = " { \"messages\": [{\"model\":\"inner\"}, \"a}b\"], \"x\\\"\": {\"k\": [1,{}]},"
                    " \"model\" : \"openai/gpt-4o\" , \"n\": -1.5e3 }";
    size_t a, b;
    assert_int_equal(find_member(s, strlen(s), "model", &a, &b), 0);
    assert_int_equal(b - a, strlen("\"openai/gpt-4o\""));
    assert_memory_equal(s + a, "\"openai/gpt-4o\"", b - a);
    assert_int_equal(find_member(s, strlen(s), "n", &a, &b), 0);
    assert_memory_equal(s + a, "-1.5e3", b - a);
    assert_int_equal(find_member(s, strlen(s), "k", &a, &b), -1);
    assert_int_equal(find_member(s, strlen(s), "missing", &a, &b), -1);
    assert_int_equal(kl_json_object_open(s, strlen(s)), 2);
    assert_int_equal(kl_json_object_open("[1]", 3), (size_t)-1);
    /* an escaped spelling is the key; one with a NUL is another key, as
     * the provider's parser reads it, not the key cut short */
    const char *esc = "{\"max_tok\\u0065ns\": 10}";
    assert_int_equal(find_member(esc, strlen(esc), "max_tokens", &a, &b), 0);
    const char *nul = "{\"max_tokens\\u0000\": 10}";
    assert_int_equal(find_member(nul, strlen(nul), "max_tokens", &a, &b), -1);
}

static void truncated_input(void **state)
{
    (void)state;
    size_t a, b;
    assert_int_equal(find_member("{\"a\": [1, 2", 11, "b", &a, &b), -1);
    assert_int_equal(kl_json_skip_value("\"abc", 4, 0), (size_t)-1);
}

static void validates(void **state)
{
    (void)state;
    static const char *good[] = {
        "{}", " [ ] ", "0", "-0.5e+10", "1E3", "\"\"", "true", "null",
        "{\"a\":[1,2,{\"b\":false}],\"c\":\"\\u00e9\\n\\\"\\/\"}",
        "\t{\r\n\"k\" : \"v\" }\n", "\"\xc3\xa9 \xf0\x9f\x98\x80\"", "\"\\ud83d\\ude00\"",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        size_t at = 99;
        assert_int_equal(kl_json_validate(good[i], strlen(good[i]), &at), 0);
    }
    /* text, offset of the first wrong byte */
    static const struct { const char *s; size_t at; } bad[] = {
        {"", 0}, {" ", 1}, {"{", 1}, {"{\"a\"}", 4}, {"{\"a\":}", 5}, {"[1,]", 3},
        {"[1 2]", 3}, {"{\"a\":1,}", 7}, {"01", 1}, {"-", 1}, {"1.", 2}, {"1e", 2},
        {".5", 0}, {"+1", 0}, {"tru", 3}, {"nul!", 3}, {"\"a\x01\"", 2}, {"\"\\x\"", 2},
        {"\"\\u12g4\"", 5}, {"\"abc", 4}, {"{} {}", 3}, {"[1]]", 3}, {"{'a':1}", 1},
        {"\x0c{}", 0}, {"[NaN]", 1}, {"{\"a\" 1}", 5}, {"[\"\\", 3},
        {"\"\\ud83d\"", 1}, {"\"\\ude00\\ud83d\"", 1}, {"\"x\\ud83d\\u0041\"", 2},
        {"\"\\ud83d\\u00g1\"", 11},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t at = 99;
        assert_int_equal(kl_json_validate(bad[i].s, strlen(bad[i].s), &at), -1);
        if (at != bad[i].at)
            fail_msg("%s: error at %zu, expected %zu", bad[i].s, at, bad[i].at);
    }
    /* nesting: the limit is accepted, one more level is not */
    char deep[2 * KL_JSON_MAX_DEPTH + 4];
    size_t n = 0;
    for (int i = 0; i < KL_JSON_MAX_DEPTH; i++)
        deep[n++] = '[';
    for (int i = 0; i < KL_JSON_MAX_DEPTH; i++)
        deep[n++] = ']';
    assert_int_equal(kl_json_validate(deep, n, NULL), 0);
    char deeper[2 * KL_JSON_MAX_DEPTH + 4];
    deeper[0] = '[';
    memcpy(deeper + 1, deep, n);
    deeper[n + 1] = ']';
    size_t at;
    assert_int_equal(kl_json_validate(deeper, n + 2, &at), -1);
    assert_int_equal(at, KL_JSON_MAX_DEPTH);
}

/* Strings are checked 64 bytes at a time: put each kind of escape, a raw
 * control byte and the closing quote at every position across two blocks,
 * with the string followed by more text or ending the input. */
static void escapes_at_every_block_position(void **state)
{
    (void)state;
    static const struct { const char *seq; int ok; size_t bad; } k[] = {
        {"\\\"", 1, 0}, {"\\\\", 1, 0}, {"\\n", 1, 0}, {"\\/", 1, 0}, {"\\u00e9", 1, 0},
        {"\\ud83d\\ude00", 1, 0}, {"\\\\\\\"", 1, 0}, {"\\x", 0, 1}, {"\x01", 0, 0},
        {"\\ud83d", 0, 0}, {"\\u12g", 0, 4},
    };
    char buf[256];
    for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
        for (size_t pos = 0; pos < 140; pos++) {
            for (int tail = 0; tail < 2; tail++) {
                /* ["aaa<seq>aaa", 1] or ["aaa<seq>aaa"] */
                size_t n = 0;
                buf[n++] = '[';
                buf[n++] = '"';
                memset(buf + n, 'a', pos);
                n += pos;
                size_t at = n;
                memcpy(buf + n, k[i].seq, strlen(k[i].seq));
                n += strlen(k[i].seq);
                memset(buf + n, 'a', 70);
                n += 70;
                memcpy(buf + n, tail ? "\", 1]" : "\"]", tail ? 5 : 2);
                n += tail ? 5 : 2;
                size_t err = 0;
                int r = kl_json_validate(buf, n, &err);
                if (k[i].ok && r != 0)
                    fail_msg("%s at %zu: refused at %zu", k[i].seq, pos, err);
                if (!k[i].ok && (r != -1 || err != at + k[i].bad))
                    fail_msg("%s at %zu: r %d at %zu, expected -1 at %zu", k[i].seq, pos, r, err,
                             at + k[i].bad);
                if (k[i].ok)    /* the fast skip agrees on where the string ends */
                    assert_int_equal(kl_json_skip_value(buf, n, 1), n - (tail ? 4 : 1));
            }
        }
    }
}

static void scans_members_and_arrays(void **state)
{
    (void)state;
    const char *s = "{\"a\":1, \"b\":{\"a\":2}, \"\\u0061\":3, \"c\" : [ \"x\" , {\"t\":\"y\\\"z\"} ,[] ] }";
    struct kl_json_want w[] = {{.key = "a"}, {.key = "c"}, {.key = "d"}};
    assert_int_equal(kl_json_scan_members(s, strlen(s), w, 3), 0);
    assert_int_equal(w[0].count, 2);                    /* "\u0061" is "a" */
    assert_memory_equal(s + w[0].start, "1", 1);        /* the first one */
    assert_int_equal(w[1].count, 1);
    assert_int_equal(w[2].count, 0);
    assert_int_equal(w[2].end, 0);
    /* validation notes the same members in its own pass */
    struct kl_json_want v[] = {{.key = "a"}, {.key = "c"}, {.key = "d"}};
    assert_int_equal(kl_json_validate_members(s, strlen(s), NULL, v, 3), 0);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(v[i].start, w[i].start);
        assert_int_equal(v[i].end, w[i].end);
        assert_int_equal(v[i].count, w[i].count);
    }
    const char *arr = s + w[1].start;
    size_t alen = w[1].end - w[1].start, pos = 0, vs, ve;
    const char *want[] = {"\"x\"", "{\"t\":\"y\\\"z\"}", "[]"};
    for (size_t i = 0; i < 3; i++) {
        assert_true(kl_json_array_next(arr, alen, &pos, &vs, &ve, NULL, 0));
        assert_int_equal(ve - vs, strlen(want[i]));
        assert_memory_equal(arr + vs, want[i], ve - vs);
    }
    assert_false(kl_json_array_next(arr, alen, &pos, &vs, &ve, NULL, 0));
    /* members of object elements in the same pass */
    struct kl_json_want t = {.key = "t"};
    pos = 0;
    assert_true(kl_json_array_next(arr, alen, &pos, &vs, &ve, &t, 1));
    assert_int_equal(t.end, 0);
    assert_true(kl_json_array_next(arr, alen, &pos, &vs, &ve, &t, 1));
    assert_memory_equal(arr + vs + t.start, "\"y\\\"z\"", t.end - t.start);
    assert_int_equal(arr[ve - 1], '}');
    assert_true(kl_json_array_next(arr, alen, &pos, &vs, &ve, &t, 1));
    assert_int_equal(t.count, 0);
    pos = 0;
    assert_false(kl_json_array_next("[ ]", 3, &pos, &vs, &ve, NULL, 0));
    pos = 0;
    assert_false(kl_json_array_next("{}", 2, &pos, &vs, &ve, NULL, 0));
    const char *raw;
    size_t rl;
    assert_true(kl_json_string_prefix(" \"y\\\"z\"", 7, 100, &raw, &rl));
    assert_int_equal(rl, 4);
    assert_memory_equal(raw, "y\\\"z", 4);
    assert_false(kl_json_string_prefix("12", 2, 100, &raw, &rl));
    assert_int_equal(kl_json_scan_members("{ }", 3, w, 3), 0);
    assert_int_equal(kl_json_scan_members("[1]", 3, w, 3), -1);
}

static void walks_members_lazily(void **state)
{
    (void)state;
    const char *s = " { \"role\" : \"user\", \"content\": \"a\\\"b\", \"x\":[1,{\"y\":2}] } ,";
    size_t pos = 0, v, n = strlen(s);
    const char *k;
    size_t kl;
    const char *keys[] = {"role", "content", "x"};
    const char *vals[] = {"\"user\"", "\"a\\\"b\"", "[1,"};
    for (size_t i = 0; i < 3; i++) {
        assert_true(kl_json_member_next(s, n, &pos, &k, &kl, &v));
        assert_int_equal(kl, strlen(keys[i]));
        assert_memory_equal(k, keys[i], kl);
        assert_memory_equal(s + v, vals[i], strlen(vals[i]));
    }
    assert_false(kl_json_member_next(s, n, &pos, &k, &kl, &v));
    assert_int_equal(s[pos - 1], '}');
    pos = 0;
    assert_false(kl_json_member_next("{}", 2, &pos, &k, &kl, &v));
    assert_int_equal(pos, 2);

    /* a prefix of a string whose end is beyond what is looked at */
    const char *raw;
    size_t rl;
    assert_true(kl_json_string_prefix("\"abcdef\", 1", 12, 4, &raw, &rl));
    assert_int_equal(rl, 4);
    assert_memory_equal(raw, "abcd", 4);
    assert_true(kl_json_string_prefix("\"ab\" ,", 6, 4, &raw, &rl));
    assert_int_equal(rl, 2);
    assert_true(kl_json_string_prefix("\"abcd", 5, 100, &raw, &rl));   /* cut short */
    assert_int_equal(rl, 4);
    assert_false(kl_json_string_prefix("[1]", 3, 4, &raw, &rl));
}

/* The first byte of a member's value, from just past its name */
static void value_after_key(void **state)
{
    (void)state;
    const char *s = "{\"usage\" : \t{\"x\":1}, \"u\":null, \"v\"\n:\n\"s\", \"w\" 1, \"end\":";
    const char *end = s + strlen(s);
    assert_int_equal(kl_json_value_after_key(s + 8, end), '{');
    assert_int_equal(kl_json_value_after_key(strstr(s, "\"u\"") + 3, end), 'n');
    assert_int_equal(kl_json_value_after_key(strstr(s, "\"v\"") + 3, end), '"');
    assert_int_equal(kl_json_value_after_key(strstr(s, "\"w\"") + 3, end), 0);   /* no ':' */
    assert_int_equal(kl_json_value_after_key(strstr(s, "\"end\"") + 5, end), 0); /* nothing after the ':' */
    assert_int_equal(kl_json_value_after_key(end, end), 0);
}

/* Half a surrogate pair (a provider's stream may split one across events)
 * spells U+FFFD in a copy of the same length; pairs, other escapes and an
 * escaped backslash before "ud83d" stay. */
static void lone_surrogates_replaced(void **state)
{
    (void)state;
    const char *pairs = "{\"t\":\"\\ud83d\\ude00 \\\\ud83d \\u00e9\"}";
    assert_null(kl_json_lone_surrogates_replaced(pairs, strlen(pairs)));
    const char *s = "{\"t\":\"a \\ud83d\", \"u\":\"\\ude00 b \\ud83d\\ud83d\\ude00\"}";
    char *c = kl_json_lone_surrogates_replaced(s, strlen(s));
    assert_non_null(c);
    const char *want = "{\"t\":\"a \\ufffd\", \"u\":\"\\ufffd b \\ufffd\\ud83d\\ude00\"}";
    assert_memory_equal(c, want, strlen(want));
    free(c);
}

/* A raw control byte inside a string, which cJSON reads and a strict
 * reader refuses; white space between values is no such byte, nor is an
 * escaped one. */
static void raw_controls(void **state)
{
    (void)state;
    const char ok[] = "{\n\t\"a\": \"x\\n\\\"\\u0001\"\r\n}";
    assert_false(kl_json_has_raw_control(ok, sizeof(ok) - 1));
    const char bad[] = "{\"a\": \"x\001y\"}";
    assert_true(kl_json_has_raw_control(bad, sizeof(bad) - 1));
    const char nul[] = "{\"a\": \"x\0y\"}";
    assert_true(kl_json_has_raw_control(nul, sizeof(nul) - 1));
    const char after_escaped_quote[] = "{\"a\": \"\\\"\n\"}";
    assert_true(kl_json_has_raw_control(after_escaped_quote, sizeof(after_escaped_quote) - 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(finds_members),
        cmocka_unit_test(raw_controls),
        cmocka_unit_test(truncated_input),
        cmocka_unit_test(validates),
        cmocka_unit_test(escapes_at_every_block_position),
        cmocka_unit_test(scans_members_and_arrays),
        cmocka_unit_test(walks_members_lazily),
        cmocka_unit_test(value_after_key),
        cmocka_unit_test(lone_surrogates_replaced),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
