#include "upstream/awscreds.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/crypto.h>

#include "core/exchange.h"
#include "core/log.h"
#include "core/text.h"
#include "upstream/syncfetch.h"

/* Credentials as one source gives them. */
struct found {
    char key_id[128], secret[256], token[8192];
    const char *source;
    int64_t expires_ms;         /* wall clock; 0: they do not expire */
};

struct kl_aws_keeper {
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* a try finished, or stop */
    pthread_t thread;
    atomic_bool stop;
    char *region;
    bool have, tried;
    struct found cur;
    int failures;
    char error[512];
};

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* A credential into dst: false when absent, too long, or holding a
 * control byte (it goes into a header line). */
static bool copy(char *dst, size_t cap, const char *s)
{
    if (!s || !*s || strlen(s) >= cap)
        return false;
    for (const char *c = s; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return false;
    memcpy(dst, s, strlen(s) + 1);
    return true;
}

/* A file's first line (a token a kubelet or an agent writes), in out. */
static bool read_token_file(const char *path, char *out, size_t cap, char *err, size_t errlen)
{
    char *text;
    out[0] = '\0';
    if (kl_sync_read_file(path, 64 * 1024, &text, err, errlen) < 0)
        return false;
    size_t line = strcspn(text, "\r\n");
    if (line >= cap)
        snprintf(err, errlen, "the token in %.300s is longer than %zu bytes", path, cap - 1);
    else if (!line)
        snprintf(err, errlen, "the token file %.300s: empty", path);
    else {
        memcpy(out, text, line);
        out[line] = '\0';
    }
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    return out[0];
}

/* The JSON the container endpoint and the instance metadata service give:
 * AccessKeyId, SecretAccessKey, Token, Expiration. */
static bool from_json(const char *text, struct found *f)
{
    cJSON *j = cJSON_Parse(text);
    const char *exp = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "Expiration"));
    bool ok = copy(f->key_id, sizeof(f->key_id), cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "AccessKeyId"))) &&
              copy(f->secret, sizeof(f->secret),
                   cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "SecretAccessKey"))) &&
              copy(f->token, sizeof(f->token), cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "Token"))) &&
              (f->expires_ms = kl_iso8601_ms(exp)) > 0;
    cJSON_Delete(j);
    return ok;
}

/* A GET whose answer is credentials in JSON (the container endpoint,
 * IMDS): 1, or -1 with err. */
static int get_credentials(const struct kl_sync_req *q, const atomic_bool *stop, struct found *f, char *err,
                           size_t errlen)
{
    struct kl_sync_reply r;
    if (kl_sync_fetch(q, stop, &r, err, errlen) < 0)
        return -1;
    int rc = r.status == 200 && from_json(r.body, f) ? 1 : -1;
    if (rc < 0)
        snprintf(err, errlen, "GET %.300s: HTTP %ld, no credentials", q->url, r.status);
    kl_sync_reply_free(&r);
    return rc;
}

/* 1. The environment's keys: they never expire here. */
static int from_env(struct found *f, char *err, size_t errlen)
{
    const char *id = env("AWS_ACCESS_KEY_ID"), *secret = env("AWS_SECRET_ACCESS_KEY");
    if (!id && !secret)
        return 0;
    f->source = "environment";
    if (!copy(f->key_id, sizeof(f->key_id), id) || !copy(f->secret, sizeof(f->secret), secret) ||
        (env("AWS_SESSION_TOKEN") && !copy(f->token, sizeof(f->token), env("AWS_SESSION_TOKEN")))) {
        snprintf(err, errlen, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set (and not too long)");
        return -1;
    }
    return 1;
}

static char *escaped(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    if (!e)
        abort();
    return e;
}

/* 2. A web identity (EKS's IRSA): the token file's token for the role's
 * credentials, from STS's AssumeRoleWithWebIdentity (no signature: the
 * token is the proof). The file is read on every try: the kubelet rotates
 * it. */
static int from_web_identity(const kl_aws_keeper *k, const atomic_bool *stop, struct found *f, char *err,
                             size_t errlen)
{
    const char *file = env("AWS_WEB_IDENTITY_TOKEN_FILE"), *role = env("AWS_ROLE_ARN");
    if (!file || !role)
        return 0;
    f->source = "web identity";
    char jwt[8192];
    if (!read_token_file(file, jwt, sizeof(jwt), err, errlen))
        return -1;
    const char *region = env("AWS_REGION") ? env("AWS_REGION") : env("AWS_DEFAULT_REGION") ? env("AWS_DEFAULT_REGION")
                                                                                          : k->region;
    char url[512];
    if (env("AWS_ENDPOINT_URL_STS"))
        snprintf(url, sizeof(url), "%s", env("AWS_ENDPOINT_URL_STS"));
    else
        snprintf(url, sizeof(url), "https://sts.%s.amazonaws.com%s/", region ? region : "us-east-1",
                 region && strncmp(region, "cn-", 3) == 0 ? ".cn" : "");
    char *er = escaped(role), *en = escaped(env("AWS_ROLE_SESSION_NAME") ? env("AWS_ROLE_SESSION_NAME") : "keyless"),
         *et = escaped(jwt);
    size_t blen = strlen(er) + strlen(en) + strlen(et) + 128;
    char *body = malloc(blen);
    if (!body)
        abort();
    snprintf(body, blen, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=%s&RoleSessionName=%s"
                         "&WebIdentityToken=%s", er, en, et);
    curl_free(er);
    curl_free(en);
    curl_free(et);
    struct kl_sync_req q = {.method = "POST", .url = url, .body = body};
    struct kl_sync_reply r;
    int rc = -1;
    if (kl_sync_fetch(&q, stop, &r, err, errlen) == 0) {
        char exp[64], code[128], msg[256];
        bool fits = kl_xml_field(r.body, "AccessKeyId", f->key_id, sizeof(f->key_id)) < sizeof(f->key_id) &&
                    kl_xml_field(r.body, "SecretAccessKey", f->secret, sizeof(f->secret)) < sizeof(f->secret) &&
                    kl_xml_field(r.body, "SessionToken", f->token, sizeof(f->token)) < sizeof(f->token);
        kl_xml_field(r.body, "Expiration", exp, sizeof(exp));
        f->expires_ms = kl_iso8601_ms(exp);
        if (r.status == 200 && !fits) {
            snprintf(err, errlen, "POST %.150s (AssumeRoleWithWebIdentity): credentials longer than keyless holds",
                     url);
        } else if (r.status == 200 && f->key_id[0] && f->secret[0] && f->token[0] && f->expires_ms) {
            rc = 1;
        } else {
            kl_xml_field(r.body, "Code", code, sizeof(code));
            kl_xml_field(r.body, "Message", msg, sizeof(msg));
            snprintf(err, errlen, "POST %.150s (AssumeRoleWithWebIdentity for %.100s): HTTP %ld %.40s%s%.100s", url, role, r.status,
                     code, *msg ? ": " : "", msg);
        }
        kl_sync_reply_free(&r);
    }
    OPENSSL_cleanse(body, strlen(body));
    free(body);
    OPENSSL_cleanse(jwt, sizeof(jwt));
    return rc;
}

/* The container endpoint may be https anywhere, or http only to this
 * machine or the addresses ECS and EKS Pod Identity serve it on: its answer
 * is a credential, and its authorization token is sent to it. */
static bool container_uri_safe(const char *u)
{
    static const char *const hosts[] = {"127.0.0.1",      "localhost", "169.254.170.2", "169.254.170.23",
                                        "[fd00:ec2::23]", "[::1]",     NULL};
    return kl_sync_url_ok(u, hosts, true);
}

/* 3. The container endpoint: ECS task roles, EKS Pod Identity. */
static int from_container(const atomic_bool *stop, struct found *f, char *err, size_t errlen)
{
    const char *full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI"), *rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    if (!full && !rel)
        return 0;
    f->source = "container";
    char url[1024], token[8192] = "", auth[8300];
    if (rel)
        snprintf(url, sizeof(url), "http://169.254.170.2%s", rel);
    else
        snprintf(url, sizeof(url), "%s", full);
    if ((rel && rel[0] != '/') || !container_uri_safe(url)) {
        snprintf(err, errlen, "AWS_CONTAINER_CREDENTIALS_%s must name the ECS or EKS Pod Identity agent: https, or "
                              "http to this machine or the agents' addresses", rel ? "RELATIVE_URI" : "FULL_URI");
        return -1;
    }
    if (env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")) {
        if (!read_token_file(env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"), token, sizeof(token), err, errlen))
            return -1;
    } else if (env("AWS_CONTAINER_AUTHORIZATION_TOKEN")) {
        snprintf(token, sizeof(token), "%s", env("AWS_CONTAINER_AUTHORIZATION_TOKEN"));
    }
    snprintf(auth, sizeof(auth), "Authorization: %s", token);
    const char *headers[] = {auth, NULL};
    struct kl_sync_req q = {.method = "GET", .url = url, .headers = token[0] ? headers : NULL, .no_proxy = true,
                            .timeout_ms = 5000};
    int rc = get_credentials(&q, stop, f, err, errlen);
    OPENSSL_cleanse(token, sizeof(token));
    OPENSSL_cleanse(auth, sizeof(auth));
    return rc;
}

/* 4. The EC2 instance metadata service, version 2: a session token first
 * (PUT), then the instance profile's role and its credentials. */
static int from_imds(const atomic_bool *stop, struct found *f, char *err, size_t errlen)
{
    const char *off = env("AWS_EC2_METADATA_DISABLED");
    if (off && strcasecmp(off, "true") == 0)
        return 0;
    f->source = "instance metadata";
    const char *base = env("AWS_EC2_METADATA_SERVICE_ENDPOINT") ? env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                                                                 : "http://169.254.169.254";
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/')
        bl--;
    char url[1024], session[512], role[256], hdr[600];
    snprintf(url, sizeof(url), "%.*s/latest/api/token", (int)bl, base);
    const char *ttl[] = {"X-aws-ec2-metadata-token-ttl-seconds: 21600", NULL};
    struct kl_sync_req q = {.method = "PUT", .url = url, .headers = ttl, .no_proxy = true, .timeout_ms = 2000};
    struct kl_sync_reply r;
    if (kl_sync_fetch(&q, stop, &r, err, errlen) < 0)
        return -1;
    bool ok = r.status == 200 && copy(session, sizeof(session), r.body);
    kl_sync_reply_free(&r);
    if (!ok) {
        snprintf(err, errlen, "PUT %.300s: HTTP %ld, no session token", url, r.status);
        return -1;
    }
    snprintf(hdr, sizeof(hdr), "X-aws-ec2-metadata-token: %s", session);
    const char *auth[] = {hdr, NULL};
    snprintf(url, sizeof(url), "%.*s/latest/meta-data/iam/security-credentials/", (int)bl, base);
    q = (struct kl_sync_req){.method = "GET", .url = url, .headers = auth, .no_proxy = true, .timeout_ms = 2000};
    int rc = -1;
    if (kl_sync_fetch(&q, stop, &r, err, errlen) == 0) {
        ok = r.status == 200 && r.body && r.body[0];
        if (ok) {
            snprintf(role, sizeof(role), "%s", r.body);
            role[strcspn(role, "\r\n")] = '\0';
            ok = role[0] && strspn(role, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+=,.@_-") ==
                                strlen(role);
        }
        if (!ok)
            snprintf(err, errlen, "GET %.300s: HTTP %ld, no instance profile", url, r.status);
        kl_sync_reply_free(&r);
        if (ok) {
            snprintf(url, sizeof(url), "%.*s/latest/meta-data/iam/security-credentials/%s", (int)bl, base, role);
            rc = get_credentials(&q, stop, f, err, errlen);
        }
    }
    OPENSSL_cleanse(session, sizeof(session));
    OPENSSL_cleanse(hdr, sizeof(hdr));
    return rc;
}

/* The chain, in the AWS SDKs' order: the first source that is configured
 * decides (one that fails is an error, not a reason to try the next). */
static int fetch(const kl_aws_keeper *k, struct found *f, char *err, size_t errlen)
{
    int rc = from_env(f, err, errlen);
    if (!rc)
        rc = from_web_identity(k, &k->stop, f, err, errlen);
    if (!rc)
        rc = from_container(&k->stop, f, err, errlen);
    if (!rc)
        rc = from_imds(&k->stop, f, err, errlen);
    if (!rc)
        snprintf(err, errlen, "no AWS credentials: no access key, web identity or container endpoint in the "
                              "environment, and the instance metadata service is disabled");
    return rc == 1 ? 0 : -1;
}

/* Temporary credentials are renewed with a quarter of their life left
 * (but not more often than every 10 s); a failed try is repeated after 1,
 * 2, 4 ... 60 s while the old ones last. Keys from the environment are
 * read once. The next try is a wall-clock time (credentials expire by the
 * wall clock, and a suspended machine's monotonic clock stood still), so
 * the thread wakes at least once a minute to look at it. */
static void *keeper_main(void *arg)
{
    kl_aws_keeper *k = arg;
    pthread_mutex_lock(&k->lock);
    while (!k->stop) {
        pthread_mutex_unlock(&k->lock);
        struct found f;
        memset(&f, 0, sizeof(f));
        char err[512] = "";
        int rc = fetch(k, &f, err, sizeof(err));
        int64_t now = kl_wall_ms();
        if (rc == 0 && f.expires_ms && f.expires_ms - now < 120000) {
            /* expired, or about to: the machine's clock is likely wrong */
            snprintf(err, sizeof(err), "%s credentials expire at %lld ms since the epoch, %lld s from this machine's "
                     "clock: is the clock right?", f.source, (long long)f.expires_ms,
                     (long long)((f.expires_ms - now) / 1000));
            rc = -1;
        }
        pthread_mutex_lock(&k->lock);
        int64_t next;
        if (rc == 0) {
            OPENSSL_cleanse(&k->cur, sizeof(k->cur));
            k->cur = f;
            k->have = true;
            if (k->error[0])
                kl_info("AWS credentials (%s): obtained again", f.source);
            k->error[0] = '\0';
            k->failures = 0;
            int64_t renew = (f.expires_ms - now) / 4 * 3;
            next = !f.expires_ms ? INT64_MAX : now + (renew > 10000 ? renew : 10000);
        } else {
            int64_t delay = (int64_t)1000 << (k->failures < 6 ? k->failures : 6);
            next = now + (delay < 60000 ? delay : 60000);
            /* the first failure, a new reason, and every tenth: not the same line every minute for ever */
            if (!atomic_load(&k->stop) && (!k->failures || strcmp(err, k->error) != 0 || k->failures % 10 == 0))
                kl_warn("AWS credentials: %s", err);
            k->failures++;
            snprintf(k->error, sizeof(k->error), "%s", err);
        }
        OPENSSL_cleanse(&f, sizeof(f));
        k->tried = true;
        pthread_cond_broadcast(&k->cond);
        while (!k->stop && (now = kl_wall_ms()) < next) {
            int64_t left = next - now;
            struct timespec until = kl_mono_deadline(left < 60000 ? left : 60000);
            pthread_cond_timedwait(&k->cond, &k->lock, &until);
        }
    }
    pthread_mutex_unlock(&k->lock);
    return NULL;
}

kl_aws_keeper *kl_aws_keeper_start(const char *region)
{
    kl_aws_keeper *k = calloc(1, sizeof(*k));
    if (!k)
        abort();
    k->region = region ? strdup(region) : NULL;
    pthread_mutex_init(&k->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&k->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&k->thread, NULL, keeper_main, k) != 0)
        abort();
    pthread_setname_np(k->thread, "kl-aws-creds");
    return k;
}

void kl_aws_keeper_wait(kl_aws_keeper *k, int ms)
{
    struct timespec ts = kl_mono_deadline(ms);
    pthread_mutex_lock(&k->lock);
    while (!k->tried && pthread_cond_timedwait(&k->cond, &k->lock, &ts) == 0)
        ;
    pthread_mutex_unlock(&k->lock);
}

bool kl_aws_current(kl_aws_keeper *k, kl_arena *a, struct kl_sigv4_cred *out, const char **problem)
{
    bool ok = false;
    pthread_mutex_lock(&k->lock);
    /* used until a minute before they expire */
    if (k->have && (!k->cur.expires_ms || kl_wall_ms() < k->cur.expires_ms - 60000)) {
        out->access_key_id = kl_arena_strdup(a, k->cur.key_id);
        out->secret = kl_arena_strdup(a, k->cur.secret);
        out->session_token = k->cur.token[0] ? kl_arena_strdup(a, k->cur.token) : NULL;
        ok = true;
    } else {
        /* the log says why; the caller is not told AWS's words */
        *problem = k->error[0] ? "no AWS credentials: getting them failed (the gateway's log says why)"
                               : "no AWS credentials yet";
    }
    pthread_mutex_unlock(&k->lock);
    return ok;
}

void kl_aws_status(kl_aws_keeper *k, const char **source, long *seconds_left, int *failures)
{
    pthread_mutex_lock(&k->lock);
    *source = k->have ? k->cur.source : "none";
    *seconds_left = !k->have ? 0 : !k->cur.expires_ms ? -1 : (long)((k->cur.expires_ms - kl_wall_ms()) / 1000);
    if (*seconds_left < -1)
        *seconds_left = 0;
    *failures = k->failures;
    pthread_mutex_unlock(&k->lock);
}

void kl_aws_keeper_stop(kl_aws_keeper *k)
{
    if (!k)
        return;
    pthread_mutex_lock(&k->lock);
    atomic_store(&k->stop, true);
    pthread_cond_broadcast(&k->cond);
    pthread_mutex_unlock(&k->lock);
    pthread_join(k->thread, NULL); /* a try in flight ends at the stop flag (kl_sync_fetch) */
    OPENSSL_cleanse(&k->cur, sizeof(k->cur));
    free(k->region);
    pthread_cond_destroy(&k->cond);
    pthread_mutex_destroy(&k->lock);
    free(k);
}
