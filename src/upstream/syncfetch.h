/* Blocking HTTP requests, and reads of token files, for the threads that
 * keep credentials fresh (Google's access tokens, AWS's temporary
 * credentials): such a thread has nothing else to do while one runs, and a
 * stop flag ends a request early. */
#ifndef KL_SYNCFETCH_H
#define KL_SYNCFETCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/file.h"

struct kl_sync_req {
    const char *method;         /* "GET", "POST" or "PUT" */
    const char *url;
    const char *shown;          /* url as errors name it (without what identifies a credential), or NULL: url */
    const char *body;           /* POST or PUT body, or NULL */
    const char *const *headers; /* "Name: value" lines, NULL-terminated, or NULL */
    bool no_proxy;              /* a link-local metadata service: never through a proxy */
    long timeout_ms;            /* the whole request; 0: 15 s */
};

struct kl_sync_reply {
    long status;
    char *body;                 /* NUL-terminated (malloc), at most 64 KiB */
    size_t len;
};

/* 0 with the answer in *out (free it with kl_sync_reply_free), or -1 with
 * err ("METHOD URL: why"). A request ends after its timeout, or when stop
 * is set. */
int kl_sync_fetch(const struct kl_sync_req *r, const atomic_bool *stop, struct kl_sync_reply *out, char *err,
                  size_t errlen);
/* Frees the body, wiped first: it may hold a credential. */
void kl_sync_reply_free(struct kl_sync_reply *r);
/* Whether url, read by libcurl's own parser (so that
 * "http://127.0.0.1:80@elsewhere/" is judged by the host libcurl would
 * connect to; a URL with userinfo never is), is http:// to one of
 * http_hosts (NULL-terminated, IPv6 in brackets) or, when https_anywhere,
 * https:// to any host. */
bool kl_sync_url_ok(const char *url, const char *const *http_hosts, bool https_anywhere);
/* url as a log may name it (a kl_sync_req's shown): its scheme, host, port
 * and path, without a user and password or a query, either of which may be
 * a credential; cut to fit cap. */
void kl_sync_url_shown(char *out, size_t cap, const char *url);

#endif
