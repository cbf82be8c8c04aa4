/* Log lines: the access log's printf-free formatting matches printf, and
 * buffered lines reach stderr whole, in order, in writes no larger than
 * PIPE_BUF, with kl_log's own lines never inside a buffered block. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/log.h"

/* l holds exactly want. */
static void expect_line(const struct kl_log_line *l, const char *want)
{
    assert_int_equal(l->len, strlen(want));
    assert_memory_equal(l->text, want, l->len);
}

static void line_formatting_matches_printf(void **state)
{
    (void)state;
    int64_t samples[] = {0, 1, 49999, 50000, 50001, 99999, 100000, 149999, 150000, 250000, 950000, 999999,
                         1000000, 8150000, 8250000, 12345678, 999950000, 1234567890123LL};
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        for (int64_t d = -2; d <= 2; d++) {
            int64_t ns = samples[i] + d * 50000;
            if (ns < 0)
                continue;
            struct kl_log_line l = {0};
            kl_log_line_ms(&l, ns);
            char want[64];
            snprintf(want, sizeof(want), "%.1f", (double)ns / 1e6);
            expect_line(&l, want);
        }
    }
    struct kl_log_line l = {0};
    kl_log_line_u64(&l, 0);
    kl_log_line_str(&l, " ");
    kl_log_line_u64(&l, UINT64_MAX);
    kl_log_line_str(&l, " ");
    kl_log_line_i64(&l, INT64_MIN);
    kl_log_line_str(&l, " ");
    kl_log_line_i64(&l, -7);
    const char *want = "0 18446744073709551615 -9223372036854775808 -7";
    expect_line(&l, want);

    /* text from callers cannot split or forge a line */
    struct kl_log_line c = {0};
    kl_log_line_str(&c, "model=gpt\n2026-11-26T00:00:00.000Z info forged\r\x1b[2J\x7f");
    expect_line(&c, "model=gpt?2026-11-26T00:00:00.000Z info forged??[2J?");
    /* nor can the characters a log viewer or terminal reads as a line break,
     * a control or a reordering: NEL, CSI, U+2028, U+2029, RLO, RLI */
    struct kl_log_line u = {0};
    kl_log_line_str(&u, "a\xc2\x85" "b\xc2\x9b" "2J\xe2\x80\xa8" "c\xe2\x80\xa9" "d\xe2\x80\xae" "e\xe2\x81\xa7"
                        "f \xc3\xa9\xe2\x82\xac\xc2\xa0");
    expect_line(&u, "a?b?2J?c?d?e?f \xc3\xa9\xe2\x82\xac\xc2\xa0");

    /* a path keeps its own %XX whole at a cut, and a '%' that starts no
     * escape (the path was cut inside one) is written %25 */
    struct kl_log_line pl = {0};
    kl_log_line_path(&pl, "/a%41%4", 7);
    expect_line(&pl, "/a%41");
    struct kl_log_line pc = {0};
    kl_log_line_path(&pc, "/a%41%4", 64);
    expect_line(&pc, "/a%41%254");
    struct kl_log_line pw = {0};
    kl_log_line_word(&pw, "50%41", 64); /* a word escapes every '%' */
    expect_line(&pw, "50%2541");

    /* a byte that begins no UTF-8 character is escaped alone, not copied
     * with the bytes after it as one: a caller's model or path cannot close
     * its field or add one (a space, a '"', a '%' after a lone lead byte),
     * nor carry a control, NEL or half of U+2028 onto the line */
    struct kl_log_line fw = {0};
    kl_log_line_word(&fw, "x\xc2 login=admin\xe2\x82\"a\xf0%41\xff\xc3\xa9", 128);
    expect_line(&fw, "x%C2%20login=admin%E2%82%22a%F0%2541%FF\xc3\xa9");
    struct kl_log_line fp = {0};
    kl_log_line_path(&fp, "/v1/x\xc2\"\xc3%zz\xe2\x82%41\xc3", 128);
    expect_line(&fp, "/v1/x%C2%22%C3%25zz%E2%82%41%C3");
    struct kl_log_line lb = {0};
    kl_log_line_path(&lb, "/x\xf0\" 1\xc3\n\xe0\x1b[2J\xf0\xe2\x80\xa8\xc3\xc2\x85\xff\xc3\xa9", 128);
    expect_line(&lb, "/x%F0%22%201%C3%0A%E0%1B[2J%F0%E2%80%A8%C3%C2%85%FF\xc3\xa9");
    struct kl_log_line lw = {0};
    kl_log_line_word(&lw, "m\xc3\n2026 info", 128);
    expect_line(&lw, "m%C3%0A2026%20info");

    /* appenders truncate at the line limit */
    struct kl_log_line big = {0};
    char chunk[1000];
    memset(chunk, 'x', sizeof(chunk) - 1);
    chunk[sizeof(chunk) - 1] = '\0';
    for (int i = 0; i < 5; i++)
        kl_log_line_str(&big, chunk);
    assert_int_equal(big.len, KL_LOG_LINE_MAX);
}

/* stderr redirected to a file for the duration of fn. */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    char path[] = "/tmp/kl-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fn(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_END);
    char *out = calloc(1, (size_t)size + 1);
    assert_int_equal(pread(fd, out, (size_t)size, 0), size);
    close(fd);
    unlink(path);
    return out;
}

static void write_lines(void *arg)
{
    struct kl_log_buf *b = arg;
    int empties = 0;
    for (int i = 0; i < 500; i++) {
        struct kl_log_line l = {0};
        kl_log_line_str(&l, "access ");
        kl_log_line_u64(&l, (uint64_t)i);
        kl_log_line_str(&l, " padding-padding-padding-padding-padding-padding-padding");
        empties += kl_log_buffered(b, KL_LOG_INFO, &l);
        assert_true(b->len <= PIPE_BUF);
        if (i == 250)
            kl_log(KL_LOG_ERROR, "an error at %d%s", i, "\n"); /* goes out at once, between blocks; its \n defanged */
    }
    assert_true(empties > 1); /* the buffer filled and went out on its own */
    kl_log_buffered(b, KL_LOG_DEBUG, &(struct kl_log_line){.len = 1, .text = "x"}); /* below the level */
    kl_log_flush(b);
    assert_int_equal(b->len, 0);
}

static void buffered_lines_reach_stderr_whole_and_in_order(void **state)
{
    (void)state;
    static struct kl_log_buf b;
    char *out = capture_stderr(write_lines, &b);
    int next = 0, errors = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        /* 2026-11-26T08:53:07.821Z info access 17 padding... */
        assert_true(strlen(line) > 30);
        assert_int_equal(line[4], '-');
        assert_int_equal(line[10], 'T');
        assert_int_equal(line[23], 'Z');
        if (strncmp(line + 25, "error ", 6) == 0) {
            assert_string_equal(line + 31, "an error at 250?");
            errors++;
            continue;
        }
        char want[128];
        snprintf(want, sizeof(want), "info access %d padding-padding-padding-padding-padding-padding-padding", next);
        assert_string_equal(line + 25, want);
        next++;
    }
    assert_int_equal(next, 500);
    assert_int_equal(errors, 1);
    free(out);
}

/* A repeating warning is due once per interval, telling how many it held back. */
static void every_is_due_once_per_interval(void **state)
{
    (void)state;
    struct kl_log_every e = {0};
    uint64_t held = 99;
    assert_true(kl_log_every_due(&e, 10000, 5, &held));
    assert_int_equal(held, 0);
    for (int i = 0; i < 7; i++)
        assert_false(kl_log_every_due(&e, 10000, 5 + i * 1000, &held));
    assert_false(kl_log_every_due(&e, 10000, 10004, &held));
    assert_true(kl_log_every_due(&e, 10000, 10005, &held));
    assert_int_equal(held, 8);
    assert_false(kl_log_every_due(&e, 10000, 10006, &held));
    assert_true(kl_log_every_due(&e, 10000, 50000, &held));
    assert_int_equal(held, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(line_formatting_matches_printf),
        cmocka_unit_test(buffered_lines_reach_stderr_whole_and_in_order),
        cmocka_unit_test(every_is_due_once_per_interval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
