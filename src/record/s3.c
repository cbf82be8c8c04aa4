#include "record/s3.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/sha.h>

#include "core/text.h"
#include "record/export.h"

char *kl_s3_url(const struct kl_export_cfg *e, const char *key)
{
    size_t n = strlen(key) + strlen(e->bucket) + strlen(e->region) + (e->endpoint ? strlen(e->endpoint) : 0) + 64;
    char *url = malloc(n);
    if (!url)
        abort();
    if (e->endpoint)
        snprintf(url, n, "%s/%s/%s", e->endpoint, e->bucket, key);
    else if (strchr(e->bucket, '.'))
        /* a dotted name does not match the *.s3.REGION.amazonaws.com certificate */
        snprintf(url, n, "https://s3.%s.amazonaws.com/%s/%s", e->region, e->bucket, key);
    else
        snprintf(url, n, "https://%s.s3.%s.amazonaws.com/%s", e->bucket, e->region, key);
    return url;
}

/* The bucket's answer, kept only up to a few KB (an error document). */
struct reply {
    char text[4096];
    size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct reply *r = arg;
    size_t len = size * n, room = sizeof(r->text) - 1 - r->len;
    size_t take = len < room ? len : room;
    memcpy(r->text + r->len, p, take);
    r->len += take;
    r->text[r->len] = '\0';
    return len;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    return atomic_load((const atomic_bool *)arg) ? 1 : 0;
}

int kl_s3_put(const struct kl_export_cfg *e, const char *key, const void *data, size_t len,
              const atomic_bool *stop, char *err, size_t errlen)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(data, len, digest);
    char sha[128] = "x-amz-content-sha256: ";
    size_t o = strlen(sha);
    for (size_t i = 0; i < sizeof(digest); i++)
        o += (size_t)snprintf(sha + o, sizeof(sha) - o, "%02x", digest[i]);
    char sigv4[128];
    snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:s3", e->region);

    CURL *c = curl_easy_init();
    if (!c)
        abort();
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, sha);
    h = curl_slist_append(h, "Content-Type: application/zstd");
    /* no "Expect:" to turn 100-continue off: libcurl 7.88 signs that empty
     * header although it does not send it, and the signature fails */
    char *url = kl_s3_url(e, key);
    struct reply r = {.len = 0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4);
    curl_easy_setopt(c, CURLOPT_USERNAME, e->access_key_id);
    curl_easy_setopt(c, CURLOPT_PASSWORD, e->access_secret);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)stop);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    /* no overall limit (a large object on a slow link still goes), but a
     * transfer slower than 1 KB/s for a minute is given up */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    int result = 0;
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "PUT %s: %s", url, curl_easy_strerror(rc));
        result = -1;
    } else if (status / 100 != 2) {
        char code[128], msg[512];
        kl_xml_field(r.text, "Code", code, sizeof(code));
        kl_xml_field(r.text, "Message", msg, sizeof(msg));
        snprintf(err, errlen, "PUT %s: HTTP %ld%s%s%s%s", url, status, code[0] ? " " : "", code,
                 msg[0] ? ": " : "", msg);
        result = -1;
    }
    free(url);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return result;
}
