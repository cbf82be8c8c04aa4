#include "upstream/syncfetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#define MAX_REPLY (64 * 1024)

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct kl_sync_reply *r = arg;
    size_t add = size * n;
    if (r->len + add > MAX_REPLY)
        return 0;
    char *t = realloc(r->body, r->len + add + 1);
    if (!t)
        abort();
    memcpy(t + r->len, p, add);
    r->len += add;
    t[r->len] = '\0';
    r->body = t;
    return add;
}

/* A request in flight ends when its thread is told to stop. */
static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    return atomic_load((const atomic_bool *)arg) ? 1 : 0;
}

int kl_sync_fetch(const struct kl_sync_req *r, const atomic_bool *stop, struct kl_sync_reply *out, char *err,
                  size_t errlen)
{
    memset(out, 0, sizeof(*out));
    CURL *c = curl_easy_init();
    if (!c)
        abort();
    struct curl_slist *h = NULL;
    for (size_t i = 0; r->headers && r->headers[i]; i++)
        h = curl_slist_append(h, r->headers[i]);
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    if (strcmp(r->method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body ? r->body : "");
        if (strcmp(r->method, "POST") != 0)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    }
    if (h)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, r->timeout_ms > 0 ? r->timeout_ms : 15000L);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)stop);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (r->no_proxy)
        curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_cleanup(c);
    for (struct curl_slist *i = h; i; i = i->next) /* an Authorization line, a credential source's header */
        OPENSSL_cleanse(i->data, strlen(i->data));
    curl_slist_free_all(h);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s %s: %s", r->method, r->shown ? r->shown : r->url, curl_easy_strerror(rc));
        kl_sync_reply_free(out);
        return -1;
    }
    return 0;
}

void kl_sync_reply_free(struct kl_sync_reply *r)
{
    if (r->body)
        OPENSSL_cleanse(r->body, r->len);
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

bool kl_sync_url_ok(const char *url, const char *const *http_hosts, bool https_anywhere)
{
    CURLU *h = curl_url();
    char *scheme = NULL, *host = NULL, *user = NULL;
    bool ok = h && curl_url_set(h, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
              curl_url_get(h, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
              curl_url_get(h, CURLUPART_USER, &user, 0) == CURLUE_NO_USER;
    if (ok && !(https_anywhere && strcasecmp(scheme, "https") == 0)) {
        bool listed = false;
        for (size_t i = 0; http_hosts[i]; i++)
            listed |= strcasecmp(host, http_hosts[i]) == 0;
        ok = strcasecmp(scheme, "http") == 0 && listed;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_url_cleanup(h);
    return ok;
}

void kl_sync_url_shown(char *out, size_t cap, const char *url)
{
    const char *sep = strstr(url, "://");
    const char *host = sep ? sep + 3 : url;
    size_t authority = strcspn(host, "/?#");
    for (const char *at; (at = memchr(host, '@', authority));) {
        authority -= (size_t)(at + 1 - host);
        host = at + 1;
    }
    snprintf(out, cap, "%.*s%.*s", sep ? (int)(sep + 3 - url) : 0, url, (int)strcspn(host, "?#"), host);
}
