/* HuJSON reading: comments, trailing commas, positions of values and errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "core/hujson.h"

static void parses_comments_and_trailing_commas(void **state)
{
    (void)state;
    const char *src = "// top\n{\n  \"a\": [1, 2,], /* x */\n  \"b\": {\"c\": \"//not a comment\",},\n}\n";
    kl_json_doc d;
    char err[128];
    size_t off;
    assert_int_equal(kl_hujson_parse(src, strlen(src), &d, err, sizeof(err), &off), 0);
    cJSON *a = cJSON_GetObjectItem(d.root, "a");
    assert_int_equal(cJSON_GetArraySize(a), 2);
    cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(d.root, "b"), "c");
    assert_string_equal(c->valuestring, "//not a comment");
    int line, col;
    kl_text_linecol(d.text, d.len, kl_json_doc_offset(&d, c), &line, &col);
    assert_int_equal(line, 4);
    assert_int_equal(col, 14);
    kl_json_doc_free(&d);
}

/* Every value's place, looked up through the document's indexes, is where
 * counting the text from the start puts it (the indexes exist so that a
 * file with tens of thousands of diagnostics is not quadratic). */
static void check_positions(const kl_json_doc *d, const cJSON *item, int *checked)
{
    size_t off = kl_json_doc_offset(d, item);
    assert_true(off != (size_t)-1);
    int l1, c1, l2, c2;
    kl_json_doc_linecol(d, off, &l1, &c1);
    kl_text_linecol(d->text, d->len, off, &l2, &c2);
    assert_int_equal(l1, l2);
    assert_int_equal(c1, c2);
    (*checked)++;
    for (const cJSON *c = item->child; c; c = c->next)
        check_positions(d, c, checked);
}

static void indexed_positions_match_counting(void **state)
{
    (void)state;
    char src[200000];
    size_t n = 0;
    n += (size_t)sprintf(src + n, "// many keys\n{\n");
    for (int i = 0; i < 2000; i++)
        n += (size_t)sprintf(src + n, "%s\"k%d\": %s,%s", i % 3 ? "  " : "\n\n  ", i,
                             i % 5 ? "[1, {\"x\": \"y\"},]" : "true", i % 7 ? "\n" : " /* c */ ");
    n += (size_t)sprintf(src + n, "}");
    kl_json_doc d;
    char err[128];
    size_t off;
    assert_int_equal(kl_hujson_parse(src, n, &d, err, sizeof(err), &off), 0);
    int checked = 0;
    check_positions(&d, d.root, &checked);
    assert_int_equal(checked, 1 + 400 + 1600 * 4); /* the root, 400 trues, 1600 arrays of 1 and {"x": "y"} */
    cJSON other;
    assert_true(kl_json_doc_offset(&d, &other) == (size_t)-1);
    kl_json_doc_free(&d);
}

static void reports_error_position(void **state)
{
    (void)state;
    const char *src = "{\n  \"a\": 1,\n  \"b\": tru\n}";
    kl_json_doc d;
    char err[128];
    size_t off;
    assert_int_equal(kl_hujson_parse(src, strlen(src), &d, err, sizeof(err), &off), -1);
    int line, col;
    kl_text_linecol(src, strlen(src), off, &line, &col);
    assert_int_equal(line, 3);
    kl_json_doc_free(&d);
}

static void rejects_unterminated_comment_and_string(void **state)
{
    (void)state;
    kl_json_doc d;
    char err[128];
    size_t off;
    assert_int_equal(kl_hujson_parse("{/* x", 5, &d, err, sizeof(err), &off), -1);
    assert_non_null(strstr(err, "comment"));
    kl_json_doc_free(&d);
    assert_int_equal(kl_hujson_parse("{\"a", 3, &d, err, sizeof(err), &off), -1);
    assert_non_null(strstr(err, "string"));
    kl_json_doc_free(&d);
    assert_int_equal(kl_hujson_parse("{} {}", 5, &d, err, sizeof(err), &off), -1);
    assert_int_equal(off, 3);
    kl_json_doc_free(&d);
}

static void escaped_quotes_inside_strings(void **state)
{
    (void)state;
    const char *src = "{\"a\": \"x\\\"/* y */\", \"b\": 2,}";
    kl_json_doc d;
    char err[128];
    size_t off;
    assert_int_equal(kl_hujson_parse(src, strlen(src), &d, err, sizeof(err), &off), 0);
    assert_string_equal(cJSON_GetObjectItem(d.root, "a")->valuestring, "x\"/* y */");
    assert_int_equal(cJSON_GetObjectItem(d.root, "b")->valueint, 2);
    kl_json_doc_free(&d);
}


/* A comma must follow a value ("[,]" had parsed as an empty list), and
 * \u0000 would end a string where it stands: both are errors, with where. */
static void commas_without_values_and_nul_escapes(void **state)
{
    (void)state;
    static const struct {
        const char *src, *message;
        size_t off;
    } bad[] = {
        {"[,]", "a comma with no value", 1},
        {"{,}", "a comma with no value", 1},
        {"[1,,2]", "a comma with no value", 3},
        {"{\"a\": [ /* c */ , 1]}", "a comma with no value", 16},
        {"{\"k\": \"ab\\u0000cd\"}", "\\u0000 is not allowed", 9},
        {"{\"k\": \"a\tb\"}", "a control character (0x09) in a string", 8},
        /* numbers as JSON has them, not as cJSON would read them */
        {"{\"w\": 01}", "a number JSON does not allow", 6},
        {"[1.]", "a number JSON does not allow", 1},
        {"[1.e2]", "a number JSON does not allow", 1},
        {"[-]", "a number JSON does not allow", 1},
        {"[1e]", "a number JSON does not allow", 1},
        {"[0x10]", "a number JSON does not allow", 1},
        {"[00012]", "a number JSON does not allow", 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        kl_json_doc d;
        char err[128];
        size_t off = 0;
        assert_int_equal(kl_hujson_parse(bad[i].src, strlen(bad[i].src), &d, err, sizeof(err), &off), -1);
        assert_non_null(strstr(err, bad[i].message));
        assert_int_equal(off, bad[i].off);
        kl_json_doc_free(&d);
    }
    /* a raw NUL would cut the value there: refused in a string and out of one */
    kl_json_doc dn;
    char errn[128];
    size_t offn = 0;
    assert_int_equal(kl_hujson_parse("{\"k\": \"sk-real\0-rest\"}", 22, &dn, errn, sizeof(errn), &offn), -1);
    assert_non_null(strstr(errn, "control character (0x00)"));
    kl_json_doc_free(&dn);
    assert_int_equal(kl_hujson_parse("{}\0", 3, &dn, errn, sizeof(errn), &offn), -1);
    assert_non_null(strstr(errn, "NUL byte"));
    kl_json_doc_free(&dn);
    /* a BOM is no text: positions are the file's */
    assert_int_equal(kl_hujson_parse("\xef\xbb\xbf{\n \"a\": 1}", 13, &dn, errn, sizeof(errn), &offn), 0);
    int line, col;
    kl_json_doc_linecol(&dn, kl_json_doc_offset(&dn, cJSON_GetObjectItem(dn.root, "a")), &line, &col);
    assert_int_equal(line, 2);
    kl_json_doc_free(&dn);
    static const char *const good[] = {"[1,]", "{\"a\": 1, /* x */ }", "[[],[],]", "{\"k\": \"a\\\\u0000\"}",
                                       "[0, -0, 10, -1.5e+3, 2E-2, 0.25]", "[1// c\n]", "[7/* c */]", "3"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        kl_json_doc d;
        char err[128];
        size_t off;
        assert_int_equal(kl_hujson_parse(good[i], strlen(good[i]), &d, err, sizeof(err), &off), 0);
        kl_json_doc_free(&d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_comments_and_trailing_commas),
        cmocka_unit_test(indexed_positions_match_counting),
        cmocka_unit_test(reports_error_position),
        cmocka_unit_test(rejects_unterminated_comment_and_string),
        cmocka_unit_test(escaped_quotes_inside_strings),
        cmocka_unit_test(commas_without_values_and_nul_escapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
