#include "upstream/fetch.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "upstream/pool.h"

struct kl_fetch {
    struct kl_curl_job job;     /* first: CURLOPT_PRIVATE points here */
    struct kl_upstream_pool *pool;
    struct kl_fetch *prev, *next;
    uint64_t seq;               /* order of starting, per worker */
    CURL *easy;
    struct curl_slist *headers;
    struct kl_buf body;
    size_t max;
    bool too_large, discard;
    kl_fetch_done done;
    void *arg;
};

static void fetch_free(struct kl_fetch *f)
{
    struct kl_upstream_pool *p = f->pool;
    curl_multi_remove_handle(p->multi, f->easy);
    kl_upstream_easy_put(p, f->easy);
    if (f->prev)
        f->prev->next = f->next;
    else
        p->fetches = f->next;
    if (f->next)
        f->next->prev = f->prev;
    curl_slist_free_all(f->headers);
    free(f->body.p);
    free(f);
}

static size_t on_body(char *buf, size_t size, size_t n, void *arg)
{
    struct kl_fetch *f = arg;
    size_t len = size * n;
    if (f->discard)
        return len;
    if (f->body.len + len > f->max) {
        f->too_large = true;
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    }
    kl_buf_put(&f->body, buf, len);
    return len;
}

static void on_done(struct kl_curl_job *job, CURLcode rc)
{
    struct kl_fetch *f = (struct kl_fetch *)job;
    long status = 0;
    const char *error = NULL;
    if (rc == CURLE_OK)
        curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &status);
    else
        error = f->too_large ? "response too large" : curl_easy_strerror(rc);
    kl_fetch_done done = f->done;
    void *arg = f->arg;
    char *body = f->body.p;
    size_t len = f->body.len;
    f->body.p = NULL;
    fetch_free(f);
    done(arg, (int)status, body ? body : "", len, error);
    free(body);
}

struct kl_fetch *kl_fetch_start(kl_worker *w, const struct kl_fetch_opts *o, kl_fetch_done done,
                                void *arg)
{
    struct kl_upstream_pool *p = w->upstream;
    struct kl_fetch *f = calloc(1, sizeof(*f));
    if (!f)
        abort();
    f->job.done = on_done;
    f->pool = p;
    f->max = o->max_body ? o->max_body : (1u << 20);
    f->discard = o->discard_body;
    f->done = done;
    f->arg = arg;
    f->easy = kl_upstream_easy_get(p);
    if (!f->easy) {
        free(f);
        return NULL;
    }
    CURL *e = f->easy;
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, &f->job);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (o->unix_socket) {
        curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, o->unix_socket);
        curl_easy_setopt(e, CURLOPT_PROXY, ""); /* never through an HTTP proxy */
    }
    if (o->timeout_ms)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
    if (o->post) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->post_len);
        curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, o->post);
        /* no "Expect: 100-continue" wait before a large body */
        f->headers = curl_slist_append(f->headers, "Expect:");
    }
    for (size_t i = 0; o->headers && o->headers[i]; i++)
        f->headers = curl_slist_append(f->headers, o->headers[i]);
    if (f->headers)
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->headers);
    f->seq = ++p->fetch_seq;
    f->next = p->fetches;
    if (p->fetches)
        p->fetches->prev = f;
    p->fetches = f;
    if (curl_multi_add_handle(p->multi, e) != CURLM_OK) {
        fetch_free(f);
        return NULL;
    }
    return f;
}

void kl_fetch_fail_all(kl_worker *w, const char *why)
{
    struct kl_upstream_pool *p = w->upstream;
    if (!p)
        return;
    /* those pending now only: one a done() starts is not failed, and one a
     * done() cancels is gone from the list before the next look */
    uint64_t last = p->fetch_seq;
    for (;;) {
        struct kl_fetch *f = p->fetches;
        while (f && f->seq > last)
            f = f->next;
        if (!f)
            break;
        kl_fetch_done done = f->done;
        void *arg = f->arg;
        fetch_free(f);
        done(arg, 0, "", 0, why);
    }
}

void kl_fetch_cancel(struct kl_fetch *f)
{
    if (f)
        fetch_free(f);
}
