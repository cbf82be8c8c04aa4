/* The worker's mailbox: mail runs on the worker's loop in the order it was
 * posted; after the loop has ended, mail that must not be lost (a query's
 * answer, a lease's grant) still runs when the mailbox is freed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <event2/event.h>

#include "core/mailbox.h"

struct trail {
    char seen[8];
    size_t n;
};

struct mark {
    struct trail *t;
    char c;
};

static void note(void *arg)
{
    struct mark *m = arg;
    m->t->seen[m->t->n++] = m->c;
}

/* A worker with an event base and a mailbox, and no thread: its loop runs
 * when the test runs it. */
static void worker_with_mailbox(kl_worker *w)
{
    memset(w, 0, sizeof(*w));
    w->base = event_base_new();
    assert_non_null(w->base);
    assert_int_equal(kl_mailbox_init(w), 0);
}

static void delivered_in_order_on_the_loop(void **state)
{
    (void)state;
    kl_worker w;
    worker_with_mailbox(&w);
    struct trail t = {0};
    struct mark a = {&t, 'a'}, b = {&t, 'b'}, c = {&t, 'c'};
    kl_mailbox_post(&w, note, &a);
    kl_mailbox_post_always(&w, note, &b);
    kl_mailbox_post(&w, note, &c);
    assert_int_equal(t.n, 0); /* nothing runs on the poster's thread */
    event_base_loop(w.base, EVLOOP_NONBLOCK);
    assert_int_equal(t.n, 3);
    assert_memory_equal(t.seen, "abc", 3);
    kl_mailbox_free(&w); /* nothing left: nothing runs again */
    assert_int_equal(t.n, 3);
    event_base_free(w.base);
}

static void mail_that_must_run_runs_after_the_loop(void **state)
{
    (void)state;
    kl_worker w;
    worker_with_mailbox(&w);
    struct trail t = {0};
    struct mark dropped = {&t, 'x'}, kept = {&t, 'k'}, kept2 = {&t, 'l'};
    kl_mailbox_post(&w, note, &dropped);
    kl_mailbox_post_always(&w, note, &kept);
    kl_mailbox_post_always(&w, note, &kept2);
    kl_mailbox_free(&w); /* the loop never ran */
    assert_int_equal(t.n, 2);
    assert_memory_equal(t.seen, "kl", 2);
    assert_null(w.mailbox);
    event_base_free(w.base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(delivered_in_order_on_the_loop),
        cmocka_unit_test(mail_that_must_run_runs_after_the_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
