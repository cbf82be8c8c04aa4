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

#include "core/buf.h"
#include "core/exchange.h"
#include "core/log.h"
#include "core/text.h"
#include "upstream/awscreds_int.h"
#include "upstream/syncfetch.h"

struct kl_aws_keeper {
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* a try finished, or stop */
    pthread_t thread;
    atomic_bool stop;
    char *region;
    bool have, tried;
    struct kl_aws_found cur;
    int failures;
    char error[512];
};

const char *kl_aws_json_str(const cJSON *o, const char *k)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
}

const char *kl_aws_env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

bool kl_aws_copy(char *dst, size_t cap, const char *s)
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
    if (kl_sync_read_file("the token file", path, 64 * 1024, &text, err, errlen) < 0)
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
static bool from_json(const char *text, struct kl_aws_found *f)
{
    cJSON *j = cJSON_Parse(text);
    const char *exp = kl_aws_json_str(j, "Expiration");
    bool ok = kl_aws_copy(f->key_id, sizeof(f->key_id), kl_aws_json_str(j, "AccessKeyId")) &&
              kl_aws_copy(f->secret, sizeof(f->secret), kl_aws_json_str(j, "SecretAccessKey")) &&
              kl_aws_copy(f->token, sizeof(f->token), kl_aws_json_str(j, "Token")) &&
              (f->expires_ms = kl_iso8601_ms(exp)) > 0;
    cJSON_Delete(j);
    return ok;
}

/* A GET whose answer is credentials in JSON (the container endpoint,
 * IMDS): 1, or -1 with err. */
static int get_credentials(const struct kl_sync_req *q, const atomic_bool *stop, struct kl_aws_found *f, char *err,
                           size_t errlen)
{
    struct kl_sync_reply r;
    if (kl_sync_fetch(q, stop, &r, err, errlen) < 0)
        return -1;
    int rc = r.status == 200 && from_json(r.body, f) ? 1 : -1;
    if (rc < 0)
        snprintf(err, errlen, "GET %.300s: HTTP %ld, no credentials", q->shown ? q->shown : q->url, r.status);
    kl_sync_reply_free(&r);
    return rc;
}

/* 2. The environment's keys: they never expire here. */
int kl_aws_from_env(struct kl_aws_found *f, char *err, size_t errlen)
{
    const char *id = kl_aws_env("AWS_ACCESS_KEY_ID"), *secret = kl_aws_env("AWS_SECRET_ACCESS_KEY");
    if (!id && !secret)
        return 0;
    f->source = "environment";
    const char *token = kl_aws_env("AWS_SESSION_TOKEN");
    if (!kl_aws_copy(f->key_id, sizeof(f->key_id), id) || !kl_aws_copy(f->secret, sizeof(f->secret), secret) ||
        (token && !kl_aws_copy(f->token, sizeof(f->token), token))) {
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

const char *kl_aws_sts_region(const char *fallback)
{
    return kl_aws_env("AWS_REGION") ? kl_aws_env("AWS_REGION")
           : kl_aws_env("AWS_DEFAULT_REGION") ? kl_aws_env("AWS_DEFAULT_REGION") : fallback;
}

/* A region's partition, as an ARN names it. */
static const char *partition(const char *region)
{
    return strncmp(region, "cn-", 3) == 0 ? "aws-cn" : strncmp(region, "us-gov-", 7) == 0 ? "aws-us-gov" : "aws";
}

const char *kl_aws_role_sts_region(const char *region, const char *role)
{
    static const char *const first[][2] = {{"aws", "us-east-1"}, {"aws-cn", "cn-north-1"},
                                           {"aws-us-gov", "us-gov-west-1"}};
    region = region ? region : "us-east-1";
    const char *p = role && strncmp(role, "arn:", 4) == 0 ? role + 4 : NULL;
    size_t n = p ? strcspn(p, ":") : 0;
    for (size_t i = 0; p && i < sizeof(first) / sizeof(first[0]); i++)
        if (strlen(first[i][0]) == n && strncmp(p, first[i][0], n) == 0 &&
            strcmp(partition(region), first[i][0]) != 0)
            return first[i][1];
    return region;
}

/* STS's regional endpoint, or AWS_ENDPOINT_URL_STS (as the AWS SDKs
 * allow). */
static void sts_url(char *url, size_t cap, const char *region)
{
    if (kl_aws_env("AWS_ENDPOINT_URL_STS"))
        snprintf(url, cap, "%s", kl_aws_env("AWS_ENDPOINT_URL_STS"));
    else
        snprintf(url, cap, "https://sts.%s.amazonaws.com%s/", region ? region : "us-east-1",
                 region && strncmp(region, "cn-", 3) == 0 ? ".cn" : "");
}

/* POSTs an STS Query API form (headers may sign it) and reads the
 * credentials of its XML answer: 1, or -1 with err naming the action, the
 * role and STS's own code and message. */
static int sts_call(const char *url, const char *action, const char *role, const char *body,
                    const char *const *headers, const atomic_bool *stop, struct kl_aws_found *f, char *err,
                    size_t errlen)
{
    struct kl_sync_req q = {.method = "POST", .url = url, .body = body, .headers = headers};
    struct kl_sync_reply r;
    if (kl_sync_fetch(&q, stop, &r, err, errlen) < 0)
        return -1;
    int rc = -1;
    char exp[64], code[128], msg[256];
    bool fits = kl_xml_field(r.body, "AccessKeyId", f->key_id, sizeof(f->key_id)) < sizeof(f->key_id) &&
                kl_xml_field(r.body, "SecretAccessKey", f->secret, sizeof(f->secret)) < sizeof(f->secret) &&
                kl_xml_field(r.body, "SessionToken", f->token, sizeof(f->token)) < sizeof(f->token);
    kl_xml_field(r.body, "Expiration", exp, sizeof(exp));
    f->expires_ms = kl_iso8601_ms(exp);
    if (r.status == 200 && !fits) {
        snprintf(err, errlen, "POST %.150s (%s): credentials longer than keyless holds", url, action);
    } else if (r.status == 200 && f->key_id[0] && f->secret[0] && f->token[0] && f->expires_ms) {
        rc = 1;
    } else {
        kl_xml_field(r.body, "Code", code, sizeof(code));
        kl_xml_field(r.body, "Message", msg, sizeof(msg));
        snprintf(err, errlen, "POST %.150s (%s for %.100s): HTTP %ld %.40s%s%.100s", url, action, role, r.status,
                 code, *msg ? ": " : "", msg);
    }
    kl_sync_reply_free(&r);
    return rc;
}

/* "&Name=value", the value percent-encoded, appended to b. */
static void form_field(struct kl_buf *b, const char *name, const char *value)
{
    char *e = escaped(value);
    kl_buf_str(b, "&");
    kl_buf_str(b, name);
    kl_buf_str(b, "=");
    kl_buf_str(b, e);
    OPENSSL_cleanse(e, strlen(e));
    curl_free(e);
}

/* The form both role actions begin with. */
static struct kl_buf role_form(const char *action, const char *role, const char *session)
{
    struct kl_buf b = {0};
    kl_buf_str(&b, "Action=");
    kl_buf_str(&b, action);
    kl_buf_str(&b, "&Version=2011-06-15");
    form_field(&b, "RoleArn", role);
    form_field(&b, "RoleSessionName", session ? session : "keyless");
    return b;
}

static void wipe_buf(struct kl_buf *b)
{
    if (b->p)
        OPENSSL_cleanse(b->p, b->len);
    free(b->p);
}

/* The token is the proof: no signature. The file is read on every try
 * (the kubelet rotates it). */
int kl_aws_web_identity(const char *region, const char *file, const char *role, const char *session,
                        const atomic_bool *stop, struct kl_aws_found *f, char *err, size_t errlen)
{
    char jwt[8192];
    if (!read_token_file(file, jwt, sizeof(jwt), err, errlen))
        return -1;
    char url[512];
    sts_url(url, sizeof(url), kl_aws_role_sts_region(region, role));
    struct kl_buf body = role_form("AssumeRoleWithWebIdentity", role, session);
    form_field(&body, "WebIdentityToken", jwt);
    OPENSSL_cleanse(jwt, sizeof(jwt));
    int rc = sts_call(url, "AssumeRoleWithWebIdentity", role, body.p, NULL, stop, f, err, errlen);
    wipe_buf(&body);
    return rc;
}

int kl_aws_assume_role(const char *region, const struct kl_aws_found *source, const char *role, const char *session,
                       const char *external_id, long duration_s, const atomic_bool *stop, struct kl_aws_found *f,
                       char *err, size_t errlen)
{
    char url[512];
    region = kl_aws_role_sts_region(region, role);
    sts_url(url, sizeof(url), region);
    struct kl_buf body = role_form("AssumeRole", role, session);
    if (external_id)
        form_field(&body, "ExternalId", external_id);
    if (duration_s > 0) {
        char d[24];
        snprintf(d, sizeof(d), "%ld", duration_s);
        form_field(&body, "DurationSeconds", d);
    }
    kl_arena a;
    kl_arena_init(&a);
    struct kl_sigv4_cred c = {source->key_id, source->secret, source->token[0] ? source->token : NULL, region,
                              "sts"};
    const char *sig[4] = {NULL};
    kl_sigv4_headers(&a, &c, "POST", url, body.p, body.len, time(NULL), sig);
    int rc = sts_call(url, "AssumeRole", role, body.p, sig, stop, f, err, errlen);
    for (size_t i = 0; sig[i]; i++)
        OPENSSL_cleanse((char *)sig[i], strlen(sig[i]));
    kl_arena_free(&a);
    wipe_buf(&body);
    return rc;
}

/* 3. A web identity in the environment (EKS's IRSA). */
static int from_web_identity(const kl_aws_keeper *k, const atomic_bool *stop, struct kl_aws_found *f, char *err,
                             size_t errlen)
{
    const char *file = kl_aws_env("AWS_WEB_IDENTITY_TOKEN_FILE"), *role = kl_aws_env("AWS_ROLE_ARN");
    if (!file || !role)
        return 0;
    f->source = "web identity";
    return kl_aws_web_identity(kl_aws_sts_region(k->region), file, role, kl_aws_env("AWS_ROLE_SESSION_NAME"), stop, f,
                               err, errlen);
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

/* The container endpoint as the log names it: a relative URI's path
 * identifies the task's credentials (whoever reaches the agent gets them
 * with it), and a full URI's query may carry a token, so neither is shown:
 * the scheme, host and path say which endpoint failed (kl_sync_url_shown). */
static void container_shown(char *out, size_t cap, const char *url, bool rel)
{
    if (rel)
        snprintf(out, cap, "http://169.254.170.2 (at AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)");
    else
        kl_sync_url_shown(out, cap, url);
}

/* 5. The container endpoint: ECS task roles, EKS Pod Identity. */
int kl_aws_from_container(const atomic_bool *stop, struct kl_aws_found *f, char *err, size_t errlen)
{
    const char *full = kl_aws_env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    const char *rel = kl_aws_env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    if (!full && !rel)
        return 0;
    f->source = "container";
    char url[1024], shown[1024], token[8192] = "", auth[8300];
    if (rel)
        snprintf(url, sizeof(url), "http://169.254.170.2%s", rel);
    else
        snprintf(url, sizeof(url), "%s", full);
    if ((rel && rel[0] != '/') || !container_uri_safe(url)) {
        snprintf(err, errlen, "AWS_CONTAINER_CREDENTIALS_%s must name the ECS or EKS Pod Identity agent: https, or "
                              "http to this machine or the agents' addresses", rel ? "RELATIVE_URI" : "FULL_URI");
        return -1;
    }
    if (kl_aws_env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")) {
        if (!read_token_file(kl_aws_env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"), token, sizeof(token), err, errlen))
            return -1;
    } else if (kl_aws_env("AWS_CONTAINER_AUTHORIZATION_TOKEN")) {
        snprintf(token, sizeof(token), "%s", kl_aws_env("AWS_CONTAINER_AUTHORIZATION_TOKEN"));
    }
    snprintf(auth, sizeof(auth), "Authorization: %s", token);
    const char *headers[] = {auth, NULL};
    container_shown(shown, sizeof(shown), url, rel);
    struct kl_sync_req q = {.method = "GET", .url = url, .shown = shown, .headers = token[0] ? headers : NULL,
                            .no_proxy = true, .timeout_ms = 5000};
    int rc = get_credentials(&q, stop, f, err, errlen);
    OPENSSL_cleanse(token, sizeof(token));
    OPENSSL_cleanse(auth, sizeof(auth));
    return rc;
}

/* 6. The EC2 instance metadata service, version 2: a session token first
 * (PUT), then the instance profile's role and its credentials. */
int kl_aws_from_imds(const atomic_bool *stop, struct kl_aws_found *f, char *err, size_t errlen)
{
    const char *off = kl_aws_env("AWS_EC2_METADATA_DISABLED");
    if (off && strcasecmp(off, "true") == 0)
        return 0;
    f->source = "instance metadata";
    const char *base = kl_aws_env("AWS_EC2_METADATA_SERVICE_ENDPOINT") ? kl_aws_env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
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
    bool ok = r.status == 200 && kl_aws_copy(session, sizeof(session), r.body);
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

/* The chain: the first source that is configured decides (one that
 * fails is an error, not a reason to try the next), in the AWS SDKs'
 * order with two choices where they differ. A profile that AWS_PROFILE
 * names comes first, before the environment's keys (as the JS SDK's
 * default chain does: a profile named outright is meant; its
 * credential_source may be those keys). The default profile comes after a
 * web identity in the environment (botocore puts one before a profile's
 * keys too: EKS put those variables there; a stray ~/.aws/credentials in
 * the image is not meant), and a default profile that fails lets the chain
 * go on, its error logged either way. */
static int fetch(const kl_aws_keeper *k, struct kl_aws_found *f, char *err, size_t errlen)
{
    bool named = kl_aws_env("AWS_PROFILE") != NULL;
    int rc = named ? kl_aws_from_profile(k->region, &k->stop, f, err, errlen) : 0;
    if (!rc)
        rc = kl_aws_from_env(f, err, errlen);
    if (!rc)
        rc = from_web_identity(k, &k->stop, f, err, errlen);
    char profile_err[512] = "";
    if (!rc && !named && (rc = kl_aws_from_profile(k->region, &k->stop, f, err, errlen)) < 0) {
        snprintf(profile_err, sizeof(profile_err), "%s", err);
        OPENSSL_cleanse(f, sizeof(*f));
        memset(f, 0, sizeof(*f));
        rc = 0;
    }
    if (!rc)
        rc = kl_aws_from_container(&k->stop, f, err, errlen);
    if (!rc)
        rc = kl_aws_from_imds(&k->stop, f, err, errlen);
    if (rc == 1 && profile_err[0])
        kl_warn("AWS credentials: the default profile failed (%s); the %s's are used", profile_err, f->source);
    if (!rc && profile_err[0])
        snprintf(err, errlen, "%s", profile_err);
    else if (!rc)
        snprintf(err, errlen, "no AWS credentials: no access key, web identity or container endpoint in the "
                              "environment, no profile with credentials in the shared config files, and the "
                              "instance metadata service is disabled");
    else if (rc < 0 && profile_err[0]) {
        char later[512];
        snprintf(later, sizeof(later), "%s", err);
        snprintf(err, errlen, "%.250s; and then %.250s", profile_err, later);
    }
    return rc == 1 ? 0 : -1;
}

/* the least life temporary credentials are renewed with */
#define RENEW_LEFT_MS 125000
/* temporary credentials are used until this long before they expire */
#define USED_UNTIL_MS 60000

/* Temporary credentials are renewed with a quarter of their life left, or
 * RENEW_LEFT_MS if that is more (but not more often than every 10 s): they
 * are used until a minute before they expire, so a quarter of a life under
 * four minutes came after that minute (two minutes' credentials went unused
 * for the last 30 s before the renewal), and credentials an agent serves
 * again unchanged must still have the two minutes the check below asks
 * for. A failed try is repeated after 1, 2, 4 ... 60 s while the old ones
 * last. Keys from the environment are read once, a file's again every few minutes (recheck_ms). The next try
 * is a wall-clock time (credentials expire by the wall clock, and a
 * suspended machine's monotonic clock stood still), so the thread wakes at
 * least once a minute to look at it. */
static void *keeper_main(void *arg)
{
    kl_aws_keeper *k = arg;
    pthread_mutex_lock(&k->lock);
    while (!k->stop) {
        pthread_mutex_unlock(&k->lock);
        struct kl_aws_found f;
        memset(&f, 0, sizeof(f));
        char err[512] = "";
        int rc = fetch(k, &f, err, sizeof(err));
        int64_t now = kl_wall_ms();
        if (rc == 0 && f.expires_ms && f.expires_ms <= now) {
            /* no source hands out expired credentials: the machine's clock is likely ahead */
            snprintf(err, sizeof(err), "%s credentials expired at %lld ms since the epoch, %lld s before this "
                     "machine's clock: is the clock right?", f.source, (long long)f.expires_ms,
                     (long long)((now - f.expires_ms) / 1000));
            rc = -1;
        } else if (rc == 0 && f.expires_ms && f.expires_ms - now < 120000) {
            /* an agent serving its cached credentials near their end (or a clock a little ahead) */
            snprintf(err, sizeof(err), "%s credentials came with %lld s left, less than the 2 minutes keyless needs to "
                     "use and renew them: not taken, asked for again", f.source,
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
            if (f.expires_ms - now - renew < RENEW_LEFT_MS)
                renew = f.expires_ms - now - RENEW_LEFT_MS;
            next = f.expires_ms ? now + (renew > 10000 ? renew : 10000)
                   : f.recheck_ms ? now + f.recheck_ms : INT64_MAX;
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
    if (k->have && (!k->cur.expires_ms || kl_wall_ms() < k->cur.expires_ms - USED_UNTIL_MS)) {
        out->access_key_id = kl_arena_strdup(a, k->cur.key_id);
        out->secret = kl_arena_strdup(a, k->cur.secret);
        out->session_token = k->cur.token[0] ? kl_arena_strdup(a, k->cur.token) : NULL;
        ok = true;
    } else {
        /* the log says why; the caller is not told AWS's words */
        *problem = k->error[0] ? "no AWS credentials: getting them failed (the gateway's log says why)"
                   : k->have   ? "no AWS credentials: the last ones expired, and no renewal has ended since"
                               : "no AWS credentials yet";
    }
    pthread_mutex_unlock(&k->lock);
    return ok;
}

void kl_aws_status(kl_aws_keeper *k, const char **source, long *seconds_left, int *failures)
{
    pthread_mutex_lock(&k->lock);
    *source = k->have ? k->cur.source : "none";
    /* the seconds they are still used, as Google's tokens' are counted (-1: they do not expire) */
    int64_t left_ms = k->cur.expires_ms - USED_UNTIL_MS - kl_wall_ms();
    *seconds_left = !k->have ? 0 : !k->cur.expires_ms ? -1 : left_ms > 0 ? (long)(left_ms / 1000) : 0;
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
