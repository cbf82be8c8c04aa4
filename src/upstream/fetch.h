/* Small asynchronous HTTP requests the gateway makes for itself (Tailscale
 * WhoIs over the LocalAPI unix socket, guardrail hooks), on the worker's
 * libcurl multi handle so they never block the event loop. */
#ifndef KL_FETCH_H
#define KL_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "core/worker.h"

struct kl_fetch;

/* status is the HTTP status (0 when no response arrived; error then says
 * why). body is NUL-terminated and valid only during the call. */
typedef void (*kl_fetch_done)(void *arg, int status, const char *body, size_t len,
                              const char *error);

struct kl_fetch_opts {
    const char *url;
    const char *unix_socket;    /* connect here instead of the URL's host, or NULL */
    uint32_t timeout_ms;        /* whole request; 0 = none */
    size_t max_body;            /* larger answers fail with error "response too large" */
    bool discard_body;          /* the answer's body is read and dropped (done gets none): only its status counts */
    const char *post;           /* a POST of these bytes (copied), else a GET */
    size_t post_len;
    const char *const *headers; /* "Name: value" lines to add, NULL-terminated, or NULL */
};

/* Start a GET or POST. done() runs exactly once unless kl_fetch_cancel()
 * comes first. Returns NULL (and does not call done) when the request cannot
 * start. */
struct kl_fetch *kl_fetch_start(kl_worker *w, const struct kl_fetch_opts *o, kl_fetch_done done,
                                void *arg);
void kl_fetch_cancel(struct kl_fetch *f);
/* Every request of the worker still waiting gets done() with status 0 and
 * why as its error (shutdown). */
void kl_fetch_fail_all(kl_worker *w, const char *why);

#endif
